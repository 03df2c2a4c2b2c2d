//! The admin `Bundle` service: our own trust bundle, and the federated bundles an operator
//! sets by hand (SPIFFE bundle documents, SPIFFE_Trust_Domain_and_Bundle.md §4).
//!
//! A federated bundle is checked before anything is stored: the trust domain is not ours, the
//! document reads as a bundle of that trust domain with at least one authority, and its
//! sequence does not go back. A refused bundle changes nothing.

use std::sync::Arc;

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::bundle_server::Bundle as BundleService;
use sigil_spiffe::{Bundle, SpiffeId, TrustDomain};
use tonic::{Request, Response, Status};

use super::status;
use crate::state::ServerState;

/// The admin `Bundle` service over the running server's state.
#[derive(Debug)]
pub struct BundleApi {
    state: Arc<ServerState>,
    /// Holds a set from its sequence check to its store, so that two concurrent sets cannot
    /// both pass the check and store out of order.
    setting: tokio::sync::Mutex<()>,
}

impl BundleApi {
    /// The service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self {
            state,
            setting: tokio::sync::Mutex::new(()),
        }
    }

    /// The trust domain of a request: a bare name, or `spiffe://<name>` without a path; never
    /// our own.
    fn foreign_trust_domain(&self, input: &str) -> Result<TrustDomain, Status> {
        let trust_domain = parse_trust_domain(input)?;
        if &trust_domain == self.state.trust_domain() {
            return Err(Status::invalid_argument(format!(
                "trust_domain {trust_domain} is this server's own trust domain: its bundle is \
                 managed by the CA, not set or deleted by hand"
            )));
        }
        Ok(trust_domain)
    }
}

#[tonic::async_trait]
impl BundleService for BundleApi {
    async fn get_bundle(
        &self,
        _request: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::TrustBundle>, Status> {
        Ok(Response::new(to_wire(&self.state.own_bundle())?))
    }

    async fn list_federated_bundles(
        &self,
        _request: Request<pb::ListFederatedBundlesRequest>,
    ) -> Result<Response<pb::ListFederatedBundlesResponse>, Status> {
        let bundles = self
            .state
            .federated_bundles()
            .iter()
            .map(to_wire)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListFederatedBundlesResponse { bundles }))
    }

    async fn set_federated_bundle(
        &self,
        request: Request<pb::TrustBundle>,
    ) -> Result<Response<pb::SetFederatedBundleResponse>, Status> {
        let message = request.into_inner();
        let trust_domain = self.foreign_trust_domain(&message.trust_domain)?;
        let mut bundle =
            Bundle::from_document(trust_domain.clone(), &message.document).map_err(|e| {
                Status::invalid_argument(format!(
                    "document: not a SPIFFE bundle document for {trust_domain}: {e}"
                ))
            })?;
        if bundle.x509().is_empty() && bundle.jwt().is_empty() {
            return Err(Status::invalid_argument(format!(
                "document: the bundle for {trust_domain} has no X.509 or JWT authorities"
            )));
        }
        // The message's `sequence` and the document's `spiffe_sequence` say the same thing;
        // either may be left out, but they may not disagree.
        match (bundle.sequence(), message.sequence) {
            (_, 0) => {}
            (None, sequence) => bundle.set_sequence(Some(sequence)),
            (Some(document), sequence) if document == sequence => {}
            (Some(document), sequence) => {
                return Err(Status::invalid_argument(format!(
                    "sequence {sequence} differs from the document's spiffe_sequence {document}"
                )));
            }
        }
        let _setting = self.setting.lock().await;
        // A bundle without a sequence counts as sequence 0.
        let sequence = bundle.sequence().unwrap_or(0);
        if let Some(stored) = self.state.federated_bundle(&trust_domain) {
            let stored = stored.sequence().unwrap_or(0);
            if sequence < stored {
                return Err(Status::failed_precondition(format!(
                    "sequence {sequence} is lower than the stored bundle's sequence {stored} \
                     for {trust_domain}"
                )));
            }
        }
        self.state
            .set_federated_bundle(bundle)
            .await
            .map_err(|e| status::datastore(&e))?;
        tracing::info!(%trust_domain, sequence, "federated bundle set");
        Ok(Response::new(pb::SetFederatedBundleResponse {}))
    }

    async fn delete_federated_bundle(
        &self,
        request: Request<pb::DeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::DeleteFederatedBundleResponse>, Status> {
        let trust_domain = self.foreign_trust_domain(&request.get_ref().trust_domain)?;
        let _setting = self.setting.lock().await;
        if self.state.federated_bundle(&trust_domain).is_none() {
            return Err(Status::not_found(format!(
                "no federated bundle for trust domain {trust_domain}"
            )));
        }
        self.state
            .delete_federated_bundle(&trust_domain)
            .await
            .map_err(|e| status::datastore(&e))?;
        tracing::info!(%trust_domain, "federated bundle deleted");
        Ok(Response::new(pb::DeleteFederatedBundleResponse {}))
    }
}

/// A bundle as the wire message: its bare trust domain name, document and sequence.
fn to_wire(bundle: &Bundle) -> Result<pb::TrustBundle, Status> {
    let document = bundle.to_document().map_err(|error| {
        tracing::error!(trust_domain = %bundle.trust_domain(), %error, "bundle cannot be written");
        Status::internal(format!(
            "the bundle of {} cannot be written as a document: {error}",
            bundle.trust_domain()
        ))
    })?;
    Ok(pb::TrustBundle {
        trust_domain: bundle.trust_domain().to_string(),
        document: document.into_bytes(),
        sequence: bundle.sequence().unwrap_or(0),
    })
}

/// A trust domain as a bare name or as `spiffe://<name>`; an ID with a path is refused, since
/// it names a workload, not a trust domain.
pub(super) fn parse_trust_domain(input: &str) -> Result<TrustDomain, Status> {
    let bad = |reason: String| {
        Status::invalid_argument(format!(
            "trust_domain {input:?} is not a trust domain: {reason}"
        ))
    };
    if input.contains(":/") {
        let id = input.parse::<SpiffeId>().map_err(|e| bad(e.to_string()))?;
        if !id.is_root() {
            return Err(bad("a SPIFFE ID with a path names a workload".to_owned()));
        }
        Ok(id.trust_domain())
    } else {
        TrustDomain::new(input).map_err(|e| bad(e.to_string()))
    }
}
