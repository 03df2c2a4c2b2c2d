//! The integration tests of sigil-spiffe: one binary, one module per part of the crate.

// Test helpers outside `#[test]` functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod bundle;
mod jwt;
mod tls;
mod workload_api;
mod workload_server;
mod x509;
