//! The workload side of the agent: the Unix socket, who is calling, and the Workload API.

pub mod api;
pub mod authority;
pub mod caller;
mod fingerprint;
pub mod listener;
pub mod peer;

pub use peer::PeerCredentials;
