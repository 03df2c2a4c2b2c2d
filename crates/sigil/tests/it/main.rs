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
mod harness;
mod health;
mod rotation;
mod server_run;
mod server_validate;
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
