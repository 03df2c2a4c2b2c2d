//! Federation with other trust domains (SPIFFE_Federation.md): serving our bundle
//! ([`endpoint`]) and fetching theirs ([`fetcher`]).

pub mod endpoint;
pub mod fetcher;

pub use fetcher::{BundleFetcher, Federation, FederationError, FetchError, FetchOutcome};
