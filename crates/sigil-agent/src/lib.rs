//! The Sigil agent: one per node. It proves the node's identity to the server, keeps the
//! registration entries the server authorizes for this node in sync, has their X.509-SVIDs
//! signed and rotates them, and serves the SPIFFE Workload API on a Unix socket to the local
//! processes it attests.
//!
//! The `sigil` binary is a thin layer over this crate. The agent never depends on the server
//! crate: everything it knows of the server comes over the `sigil.server.v1` agent API.

pub mod attestor;
mod backoff;
pub mod bootstrap;
pub mod config;
pub mod demand;
pub mod identity;
pub mod jwt;
pub mod run;
mod schedule;
pub mod server;
pub mod svids;
pub mod sync;
pub mod view;
pub mod workload;
