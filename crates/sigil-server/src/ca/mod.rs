//! The certificate authority of the trust domain: its keys (through a [`KeyManager`]), and
//! the X.509 CA and JWT key slots and their rotation journal, and an optional upstream CA.

pub mod authority;
pub mod key_manager;
pub mod upstream;

pub use authority::{CaError, CaEvent, CaSettings, CertificateAuthority, SlotStatus, Upstream};
pub use key_manager::{DiskKeyManager, KeyId, KeyManager, KeyManagerError, MemoryKeyManager};
pub use upstream::UpstreamError;
