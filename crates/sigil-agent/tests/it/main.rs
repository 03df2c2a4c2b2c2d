//! The agent's integration tests: one binary, one module per subject.

// Test helpers outside `#[test]` functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod authority;
mod health_socket;
mod python;
mod unix_attestor;
