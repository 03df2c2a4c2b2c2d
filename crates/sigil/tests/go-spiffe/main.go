// Command gospiffe is a SPIFFE workload written with go-spiffe v2, the reference client
// library. Sigil's end-to-end tests (crates/sigil/tests/it/go_spiffe.rs) run it against real
// `sigil server run` and `sigil agent run` processes; each subcommand does one thing through
// go-spiffe's public API only and reports on stdout, one JSON document per line, so the test
// judges go-spiffe's view of what Sigil served. Errors go to stderr with exit status 1.
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

var commands = map[string]func(args []string) error{
	"context":          runContext,
	"watch":            runWatch,
	"mtls-server":      runMTLSServer,
	"mtls-client":      runMTLSClient,
	"federation-fetch": runFederationFetch,
	"federation-serve": runFederationServe,
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: gospiffe context|watch|mtls-server|mtls-client|federation-fetch|federation-serve [flags]")
		os.Exit(64)
	}
	if err := commands[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "gospiffe:", err)
		os.Exit(1)
	}
}

// emit prints one JSON document on a line of its own.
func emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}
