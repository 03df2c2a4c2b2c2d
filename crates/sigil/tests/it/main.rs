//! Integration tests of the `sigil` binary: they run the real built program.

// Tests fail by panicking; unwrap is how they say "this must work".
#![allow(clippy::unwrap_used)]

mod agent_admin;
mod agent_api;
mod agent_run;
mod bundle_mint;
mod dev;
mod federation;
mod federation_cli;
mod federation_e2e;
mod go;
mod go_spiffe;
mod ha;
mod harness;
mod health;
mod java;
mod rotation;
mod server_run;
mod server_validate;
mod spire;
// Shared with the side-by-side benchmark, which uses more of it.
#[allow(dead_code)]
mod spire_process;
mod usage;
mod workload_cli;
mod workloads;

use std::process::{Command, Output};

/// Runs the built `sigil` with `args` and no inherited config variable.
pub(crate) fn sigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .env_remove("SIGIL_SERVER_CONFIG")
        .output()
        .unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A loopback port for a server a test starts and must name in its config beforehand.
///
/// Not "bind port 0, read it, release it": Linux hands out port-0 binds from the ephemeral
/// range (32768 and up), so another test's server binding port 0 could take that port before
/// ours binds it (seen in a full run). These ports come from below that range, from a sequence
/// of this test process (tests run as threads of one process), skipping any port in use.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    // Different processes (a rerun while an old server lingers) start at different places.
    let start = u16::try_from(std::process::id() % u32::from(SPAN)).unwrap();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start.wrapping_add(n) % SPAN);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
