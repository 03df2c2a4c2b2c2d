//! The certificate authority of the trust domain: its keys (through a [`KeyManager`]), and
//! later the X.509 CA and JWT key slots and their rotation journal.

pub mod authority;
pub mod key_manager;

pub use authority::{CaError, CaEvent, CaSettings, CertificateAuthority, SlotStatus, Upstream};
pub use key_manager::{DiskKeyManager, KeyId, KeyManager, KeyManagerError, MemoryKeyManager};
