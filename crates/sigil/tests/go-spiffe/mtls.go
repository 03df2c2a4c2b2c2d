package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// authorizerFlags are the two go-spiffe authorizers the tests use: -authorize-id (AuthorizeID)
// or -authorize-member-of (AuthorizeMemberOf).
type authorizerFlags struct {
	id       *string
	memberOf *string
}

func addAuthorizerFlags(flags *flag.FlagSet) authorizerFlags {
	return authorizerFlags{
		id:       flags.String("authorize-id", "", "accept only this peer SPIFFE ID"),
		memberOf: flags.String("authorize-member-of", "", "accept any peer of this trust domain"),
	}
}

func (a authorizerFlags) authorizer() (tlsconfig.Authorizer, error) {
	switch {
	case *a.id != "" && *a.memberOf == "":
		id, err := spiffeid.FromString(*a.id)
		if err != nil {
			return nil, err
		}
		return tlsconfig.AuthorizeID(id), nil
	case *a.memberOf != "" && *a.id == "":
		td, err := spiffeid.TrustDomainFromString(*a.memberOf)
		if err != nil {
			return nil, err
		}
		return tlsconfig.AuthorizeMemberOf(td), nil
	}
	return nil, errors.New("exactly one of -authorize-id and -authorize-member-of is needed")
}

// runMTLSServer listens with spiffetls (mTLS on the X509Source's SVID) and answers each
// connection's first line with "<line> from <own ID> to <peer ID>". It prints
// {"listening": ADDR} once it accepts, then one line per connection: the peer it served, or
// the handshake error of a peer it refused.
func runMTLSServer(args []string) error {
	flags := flag.NewFlagSet("mtls-server", flag.ContinueOnError)
	addr := flags.String("socket", "", "Workload API address (unix:///path)")
	listen := flags.String("listen", "127.0.0.1:0", "address to listen on")
	auth := addAuthorizerFlags(flags)
	if err := flags.Parse(args); err != nil {
		return err
	}
	authorizer, err := auth.authorizer()
	if err != nil {
		return err
	}
	ctx := context.Background()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(*addr)))
	if err != nil {
		return fmt.Errorf("X509Source: %w", err)
	}
	defer source.Close()
	listener, err := spiffetls.ListenWithMode(ctx, "tcp", *listen, spiffetls.MTLSServerWithSource(authorizer, source))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	emit(map[string]any{"listening": listener.Addr().String()})
	for {
		conn, err := listener.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go serveOne(conn, source)
	}
}

func serveOne(conn net.Conn, source *workloadapi.X509Source) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	// The handshake runs on the first read; a refused peer fails it here.
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		emit(map[string]any{"refused": err.Error()})
		return
	}
	peer, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		emit(map[string]any{"refused": err.Error()})
		return
	}
	own, err := source.GetX509SVID()
	if err != nil {
		emit(map[string]any{"refused": err.Error()})
		return
	}
	reply := fmt.Sprintf("%s from %s to %s\n", strings.TrimSpace(line), own.ID, peer)
	if _, err := conn.Write([]byte(reply)); err != nil {
		emit(map[string]any{"refused": err.Error()})
		return
	}
	emit(map[string]any{"served": peer.String()})
}

// runMTLSClient dials with spiffetls (mTLS on the X509Source's SVID), sends "ping" and prints
// {"peer": ID, "reply": LINE}. A refused server is an error (exit 1).
func runMTLSClient(args []string) error {
	flags := flag.NewFlagSet("mtls-client", flag.ContinueOnError)
	addr := flags.String("socket", "", "Workload API address (unix:///path)")
	connect := flags.String("connect", "", "server address")
	auth := addAuthorizerFlags(flags)
	if err := flags.Parse(args); err != nil {
		return err
	}
	authorizer, err := auth.authorizer()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(*addr)))
	if err != nil {
		return fmt.Errorf("X509Source: %w", err)
	}
	defer source.Close()
	conn, err := spiffetls.DialWithMode(ctx, "tcp", *connect, spiffetls.MTLSClientWithSource(authorizer, source))
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	peer, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		return err
	}
	emit(map[string]any{"peer": peer.String(), "reply": strings.TrimSpace(reply)})
	return nil
}
