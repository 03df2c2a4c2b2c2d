//! The gRPC services of the server. Today the admin `Entry` service, served on the admin Unix
//! socket; the agent API (mTLS) comes next.

pub mod entry;
pub mod status;

pub use entry::EntryApi;
