//! The integration tests of sigil-server: one binary, one module per topic.

// Test helpers outside `#[test]` functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod agent_admin;
mod agent_api;
mod agent_client;
mod bundle_api;
mod ca;
mod config;
mod datastore;
mod entry_api;
mod federation_fetcher;
mod health;
mod index;
mod run;
mod support;
mod svid_admin;
mod trustdomain_api;
mod upstream;
