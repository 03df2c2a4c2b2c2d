//! Generated gRPC code, nothing hand-written: the SPIFFE Workload API and Sigil's own server
//! APIs, from the `.proto` files in the repository's `proto/` directory.

/// The SPIFFE Workload API. Its proto has no package, so its gRPC paths are
/// `/SpiffeWorkloadAPI/<Method>`.
pub mod workload {
    #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
    tonic::include_proto!("_");
}

/// Sigil's server APIs, version 1 (`sigil.server.v1`): agent attestation and sync, entries,
/// SVID signing, bundles. Shaped like SPIRE's server API so an operator recognises it.
pub mod server {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
        tonic::include_proto!("sigil.server.v1");
    }
}
