//! Federation with other trust domains (SPIFFE_Federation.md): fetching their bundles.

pub mod fetcher;

pub use fetcher::{BundleFetcher, Federation, FederationError, FetchError, FetchOutcome};
