//! The agent's side of the agent API: the mutual-TLS channel to the server, node attestation
//! and renewal of the agent's own SVID.

mod attest;
mod channel;

pub use attest::{AttestError, Attested, attest, renew};
pub use channel::{ServerChannel, connect, connect_insecure};
