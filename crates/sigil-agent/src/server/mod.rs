//! The agent's side of the agent API: the mutual-TLS channel to the servers (which one, in
//! what order, and moving back to a preferred one), node attestation and renewal of the
//! agent's own SVID.

mod addresses;
mod attest;
mod channel;
mod rebalance;

pub use addresses::{ServerAddresses, in_preference_order};
pub use attest::{AttestError, Attested, attest, renew};
pub use channel::{CONNECT_TIMEOUT, ServerChannel, connect, connect_insecure};
pub use rebalance::keep_preferred;
