//! Generated gRPC code, nothing hand-written: the SPIFFE Workload API (from `proto/`), and
//! later Sigil's own server APIs.

/// The SPIFFE Workload API. Its proto has no package, so its gRPC paths are
/// `/SpiffeWorkloadAPI/<Method>`.
pub mod workload {
    #![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
    tonic::include_proto!("_");
}
