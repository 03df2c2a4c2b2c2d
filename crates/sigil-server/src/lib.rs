//! The Sigil server: the signing authority of one trust domain. It keeps the CA, the
//! datastore of registration entries, attested nodes and bundles, attests agents, and serves
//! the agent API (mTLS gRPC) and the admin API (a local Unix socket).
//!
//! The `sigil` binary is a thin layer over this crate.

pub mod agent_api;
pub mod api;
pub mod ca;
pub mod config;
pub mod datastore;
pub mod federation;
pub mod follower;
pub mod health;
pub mod https;
pub mod hub;
pub mod index;
pub mod instance;
pub mod notices;
pub mod oidc;
pub mod run;
pub mod state;
