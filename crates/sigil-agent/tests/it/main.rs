//! The agent's integration tests: one binary, one module per subject.

mod authority;
mod health_socket;
mod python;
