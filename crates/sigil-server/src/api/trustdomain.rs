//! The admin `TrustDomain` service: federation relationships made at run time, next to the
//! static ones of `[[federation.federates_with]]`.
//!
//! A relationship named in the config file cannot be created, updated or deleted here (the
//! file is the operator's source of truth for it); it is listed and shown with `from_config`,
//! and it can be refreshed. Changes go to the datastore first, then to the running
//! [`Federation`], so a relationship that was answered OK survives a restart. Deleting a
//! relationship stops its fetching but keeps the stored bundle, as SPIRE does: it is deleted
//! with the `Bundle` service.

use std::path::Path;
use std::sync::Arc;

use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::trust_domain_server::TrustDomain as TrustDomainService;
use sigil_spiffe::{Bundle, SpiffeId, TrustDomain};
use tonic::{Request, Response, Status};

use super::bundle::parse_trust_domain;
use super::status;
use crate::config::{FederatesWith, RemoteProfile};
use crate::federation::fetcher::{check_bundle, parse_roots, read_bundle_file};
use crate::federation::{BundleFetcher, Federation, FetchOutcome};
use crate::state::ServerState;

/// The admin `TrustDomain` service over the running server's state and fetchers.
#[derive(Debug)]
pub struct TrustDomainApi {
    state: Arc<ServerState>,
    federation: Arc<Federation>,
    configured: Vec<FederatesWith>,
    /// Serializes changes, so that the datastore and the running fetchers are changed in the
    /// same order.
    changing: tokio::sync::Mutex<()>,
}

/// A checked relationship of a create or update, with its initial bundle if one was sent.
struct Checked {
    relationship: FederatesWith,
    bundle: Option<Bundle>,
}

impl TrustDomainApi {
    /// The service; `configured` are the config file's relationships (already running in
    /// `federation`).
    pub fn new(
        state: Arc<ServerState>,
        federation: Arc<Federation>,
        configured: Vec<FederatesWith>,
    ) -> Self {
        Self {
            state,
            federation,
            configured,
            changing: tokio::sync::Mutex::new(()),
        }
    }

    fn configured(&self, trust_domain: &TrustDomain) -> Option<&FederatesWith> {
        self.configured
            .iter()
            .find(|r| &r.trust_domain == trust_domain)
    }

    fn foreign_trust_domain(&self, input: &str) -> Result<TrustDomain, Status> {
        let trust_domain = parse_trust_domain(input)?;
        if &trust_domain == self.state.trust_domain() {
            return Err(Status::invalid_argument(format!(
                "trust_domain {trust_domain} is this server's own trust domain"
            )));
        }
        Ok(trust_domain)
    }

    fn not_in_config(&self, trust_domain: &TrustDomain) -> Result<(), Status> {
        match self.configured(trust_domain) {
            Some(_) => Err(Status::failed_precondition(format!(
                "the federation relationship with {trust_domain} is set in the config file \
                 ([[federation.federates_with]]); change it there"
            ))),
            None => Ok(()),
        }
    }

    /// Reads and checks a relationship of a create or update message.
    fn check(&self, message: &pb::FederationRelationship) -> Result<Checked, Status> {
        let trust_domain = self.foreign_trust_domain(&message.trust_domain)?;
        let url = https_url(&message.bundle_endpoint_url)?;
        let unused = |field: &str, profile: &str| {
            Status::invalid_argument(format!("{field} is not used with the {profile} profile"))
        };
        let profile = match message.profile.as_str() {
            "https_spiffe" => {
                if !message.ca_roots.is_empty() {
                    return Err(unused("ca_roots", "https_spiffe"));
                }
                if message.endpoint_spiffe_id.is_empty() {
                    return Err(Status::invalid_argument(
                        "endpoint_spiffe_id is required with the https_spiffe profile",
                    ));
                }
                let id = message
                    .endpoint_spiffe_id
                    .parse::<SpiffeId>()
                    .map_err(|e| {
                        Status::invalid_argument(format!(
                            "endpoint_spiffe_id {:?} is not a SPIFFE ID: {e}",
                            message.endpoint_spiffe_id
                        ))
                    })?;
                // The endpoint is authenticated with the foreign trust domain's bundle.
                if !id.is_member_of(&trust_domain) {
                    return Err(Status::invalid_argument(format!(
                        "endpoint_spiffe_id {id} is not in trust domain {trust_domain}"
                    )));
                }
                RemoteProfile::HttpsSpiffe {
                    endpoint_spiffe_id: id,
                    bundle_path: None,
                }
            }
            "https_web" => {
                if !message.endpoint_spiffe_id.is_empty() {
                    return Err(unused("endpoint_spiffe_id", "https_web"));
                }
                if !message.trust_domain_bundle.is_empty() {
                    return Err(unused("trust_domain_bundle", "https_web"));
                }
                let ca_roots = if message.ca_roots.is_empty() {
                    None
                } else {
                    // Checked now, so a bad PEM is the caller's error, not a failed start.
                    parse_roots(&trust_domain, Path::new("ca_roots"), &message.ca_roots)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    Some(message.ca_roots.clone())
                };
                RemoteProfile::HttpsWeb {
                    ca_file: None,
                    ca_roots,
                }
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "profile {other:?} is not known: expected https_spiffe or https_web"
                )));
            }
        };
        let bundle = if message.trust_domain_bundle.is_empty() {
            None
        } else {
            let bundle = read_bundle_file(&trust_domain, &message.trust_domain_bundle)
                .and_then(|bundle| check_bundle(&trust_domain, bundle))
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "trust_domain_bundle: not a usable bundle of {trust_domain}: {e}"
                    ))
                })?;
            Some(bundle)
        };
        Ok(Checked {
            relationship: FederatesWith::new(trust_domain, url, profile),
            bundle,
        })
    }

    /// Stores the initial bundle unless one is stored (a stored one is as new or newer),
    /// then starts or replaces the relationship's fetcher.
    async fn start(&self, checked: Checked) -> Result<(), Status> {
        let trust_domain = checked.relationship.trust_domain.clone();
        if let Some(bundle) = checked.bundle
            && self.state.federated_bundle(&trust_domain).is_none()
        {
            self.state
                .set_federated_bundle(bundle)
                .await
                .map_err(|e| status::datastore(&e))?;
            tracing::info!(%trust_domain, "initial federated bundle stored");
        }
        self.federation
            .add(checked.relationship)
            .await
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn create_one(
        &self,
        message: &pb::FederationRelationship,
    ) -> Result<pb::FederationRelationship, Status> {
        let checked = self.check(message)?;
        let trust_domain = checked.relationship.trust_domain.clone();
        if self.configured(&trust_domain).is_some() {
            return Err(Status::already_exists(format!(
                "a federation relationship with {trust_domain} is set in the config file"
            )));
        }
        self.state
            .datastore()
            .create_federation_relationship(&checked.relationship)
            .await
            .map_err(|e| status::datastore(&e))?;
        let stored = to_wire(&checked.relationship, false);
        if let Err(error) = self.start(checked).await {
            // An item answered with an error must not come back at the next start.
            if let Err(undo) = self
                .state
                .datastore()
                .delete_federation_relationship(&trust_domain)
                .await
            {
                tracing::error!(%trust_domain, error = %undo, "cannot undo a failed create");
            }
            return Err(error);
        }
        tracing::info!(%trust_domain, "federation relationship created");
        Ok(stored)
    }

    async fn update_one(
        &self,
        message: &pb::FederationRelationship,
    ) -> Result<pb::FederationRelationship, Status> {
        let checked = self.check(message)?;
        let trust_domain = checked.relationship.trust_domain.clone();
        self.not_in_config(&trust_domain)?;
        self.state
            .datastore()
            .update_federation_relationship(&checked.relationship)
            .await
            .map_err(|e| status::datastore(&e))?;
        let stored = to_wire(&checked.relationship, false);
        self.start(checked).await?;
        tracing::info!(%trust_domain, "federation relationship updated");
        Ok(stored)
    }

    async fn delete_one(&self, input: &str) -> Result<TrustDomain, Status> {
        let trust_domain = self.foreign_trust_domain(input)?;
        self.not_in_config(&trust_domain)?;
        self.state
            .datastore()
            .delete_federation_relationship(&trust_domain)
            .await
            .map_err(|e| status::datastore(&e))?;
        self.federation.remove(&trust_domain).await;
        tracing::info!(%trust_domain, "federation relationship deleted");
        Ok(trust_domain)
    }

    /// The relationship with `trust_domain` that is in effect: the config file's, else the
    /// datastore's.
    async fn find(&self, trust_domain: &TrustDomain) -> Result<(FederatesWith, bool), Status> {
        if let Some(configured) = self.configured(trust_domain) {
            return Ok((configured.clone(), true));
        }
        match self
            .state
            .datastore()
            .federation_relationship(trust_domain)
            .await
            .map_err(|e| status::datastore(&e))?
        {
            Some(stored) => Ok((stored, false)),
            None => Err(Status::not_found(format!(
                "no federation relationship with {trust_domain}"
            ))),
        }
    }
}

#[tonic::async_trait]
impl TrustDomainService for TrustDomainApi {
    async fn list_federation_relationships(
        &self,
        _request: Request<pb::ListFederationRelationshipsRequest>,
    ) -> Result<Response<pb::ListFederationRelationshipsResponse>, Status> {
        let stored = self
            .state
            .datastore()
            .list_federation_relationships()
            .await
            .map_err(|e| status::datastore(&e))?;
        let mut relationships: Vec<_> = self
            .configured
            .iter()
            .map(|r| to_wire(r, true))
            .chain(
                stored
                    .iter()
                    .filter(|r| self.configured(&r.trust_domain).is_none())
                    .map(|r| to_wire(r, false)),
            )
            .collect();
        relationships.sort_by(|a, b| a.trust_domain.cmp(&b.trust_domain));
        Ok(Response::new(pb::ListFederationRelationshipsResponse {
            relationships,
        }))
    }

    async fn get_federation_relationship(
        &self,
        request: Request<pb::GetFederationRelationshipRequest>,
    ) -> Result<Response<pb::FederationRelationship>, Status> {
        let trust_domain = self.foreign_trust_domain(&request.get_ref().trust_domain)?;
        let (relationship, from_config) = self.find(&trust_domain).await?;
        Ok(Response::new(to_wire(&relationship, from_config)))
    }

    async fn batch_create_federation_relationship(
        &self,
        request: Request<pb::BatchCreateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchFederationRelationshipResponse>, Status> {
        let _changing = self.changing.lock().await;
        let mut results = Vec::new();
        for message in &request.get_ref().relationships {
            results.push(result(self.create_one(message).await));
        }
        Ok(Response::new(pb::BatchFederationRelationshipResponse {
            results,
        }))
    }

    async fn batch_update_federation_relationship(
        &self,
        request: Request<pb::BatchUpdateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchFederationRelationshipResponse>, Status> {
        let _changing = self.changing.lock().await;
        let mut results = Vec::new();
        for message in &request.get_ref().relationships {
            results.push(result(self.update_one(message).await));
        }
        Ok(Response::new(pb::BatchFederationRelationshipResponse {
            results,
        }))
    }

    async fn batch_delete_federation_relationship(
        &self,
        request: Request<pb::BatchDeleteFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchDeleteFederationRelationshipResponse>, Status> {
        let _changing = self.changing.lock().await;
        let mut results = Vec::new();
        for input in &request.get_ref().trust_domains {
            let outcome =
                self.delete_one(input)
                    .await
                    .map(|trust_domain| pb::FederationRelationship {
                        trust_domain: trust_domain.to_string(),
                        ..Default::default()
                    });
            results.push(result(outcome));
        }
        Ok(Response::new(
            pb::BatchDeleteFederationRelationshipResponse { results },
        ))
    }

    async fn refresh_bundle(
        &self,
        request: Request<pb::RefreshBundleRequest>,
    ) -> Result<Response<pb::RefreshBundleResponse>, Status> {
        let trust_domain = self.foreign_trust_domain(&request.get_ref().trust_domain)?;
        let (relationship, _) = self.find(&trust_domain).await?;
        let url = relationship.url.clone();
        let fetcher = BundleFetcher::new(Arc::clone(&self.state), relationship)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let outcome = fetcher.fetch_and_store().await.map_err(|e| {
            tracing::warn!(%trust_domain, %url, error = %e, "bundle refresh failed");
            Status::unavailable(format!(
                "fetching the bundle of {trust_domain} from {url} failed: {e}"
            ))
        })?;
        let sequence = self
            .state
            .federated_bundle(&trust_domain)
            .and_then(|bundle| bundle.sequence())
            .unwrap_or(0);
        tracing::info!(%trust_domain, ?outcome, "bundle refreshed");
        Ok(Response::new(pb::RefreshBundleResponse {
            changed: matches!(outcome, FetchOutcome::Stored { .. }),
            sequence,
        }))
    }
}

fn result(outcome: Result<pb::FederationRelationship, Status>) -> pb::FederationRelationshipResult {
    match outcome {
        Ok(relationship) => pb::FederationRelationshipResult {
            status: Some(status::ok()),
            relationship: Some(relationship),
        },
        Err(error) => pb::FederationRelationshipResult {
            status: Some(status::to_proto(&error)),
            relationship: None,
        },
    }
}

/// A relationship as the wire message (the initial bundle is never sent back).
fn to_wire(relationship: &FederatesWith, from_config: bool) -> pb::FederationRelationship {
    let endpoint_spiffe_id = match &relationship.profile {
        RemoteProfile::HttpsSpiffe {
            endpoint_spiffe_id, ..
        } => endpoint_spiffe_id.to_string(),
        _ => String::new(),
    };
    let ca_roots = match &relationship.profile {
        RemoteProfile::HttpsWeb {
            ca_roots: Some(pem),
            ..
        } => pem.clone(),
        _ => Vec::new(),
    };
    pb::FederationRelationship {
        trust_domain: relationship.trust_domain.to_string(),
        bundle_endpoint_url: relationship.url.clone(),
        profile: relationship.profile.as_str().to_owned(),
        endpoint_spiffe_id,
        trust_domain_bundle: Vec::new(),
        from_config,
        ca_roots,
    }
}

/// The bundle endpoint URL: absolute, `https`, with a host.
fn https_url(text: &str) -> Result<String, Status> {
    let bad = |reason: String| {
        Status::invalid_argument(format!("bundle_endpoint_url {text:?}: {reason}"))
    };
    let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if url.scheme() != "https" {
        return Err(bad(format!(
            "scheme {:?} is not allowed: bundle endpoints are https only",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".to_owned()));
    }
    Ok(text.to_owned())
}
