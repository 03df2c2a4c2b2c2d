//! The SPIFFE Workload API (`SpiffeWorkloadAPI`, checklist §1.5-1.6): every call checks the
//! `workload.spiffe.io: true` header, attests the caller, and answers from the current
//! [`WorkloadView`]. Streams send the whole current state first and again on every change
//! that alters what this caller sees (rotation, entry change, bundle change), never a delta
//! and never the same message twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost_types::value::Kind;
use sigil_core::{RegistrationEntry, SelectorSet};
use sigil_proto::workload as pb;
use sigil_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use sigil_spiffe::{BundleSet, JwtSvid, SpiffeId};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::fingerprint::{Digest, Fingerprint};
use crate::demand::Demand;
use crate::jwt::JwtCache;
use crate::view::WorkloadView;

/// How long a first answer waits for the agent's first sync or for SVIDs still being
/// signed, before a caller with no identity gets PermissionDenied.
const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Finds out who is calling: runs the workload attestors on the connection the request came
/// in on. Blocking work (reading `/proc`) is allowed: it runs on a blocking thread.
pub trait CallerAttestor: Send + Sync + 'static {
    /// The caller's selectors, or the status to answer (PermissionDenied when the caller
    /// cannot be attested).
    fn attest(&self, extensions: &http::Extensions) -> Result<SelectorSet, Status>;
}

/// The Workload API service.
#[derive(Clone)]
pub struct WorkloadApi {
    inner: Arc<Inner>,
}

struct Inner {
    trust_domain: String,
    view: watch::Receiver<Arc<WorkloadView>>,
    demand: Arc<Demand>,
    jwt: Arc<JwtCache>,
    attestor: Arc<dyn CallerAttestor>,
    shutdown: watch::Receiver<bool>,
}

impl WorkloadApi {
    /// Serves `view` (and JWT-SVIDs through `jwt`) to the callers `attestor` identifies; open
    /// streams end with Unavailable when `shutdown` turns true.
    pub fn new(
        trust_domain: &sigil_spiffe::TrustDomain,
        view: watch::Receiver<Arc<WorkloadView>>,
        demand: Arc<Demand>,
        jwt: Arc<JwtCache>,
        attestor: Arc<dyn CallerAttestor>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                trust_domain: trust_domain.to_string(),
                view,
                demand,
                jwt,
                attestor,
                shutdown,
            }),
        }
    }

    /// Checks the security header, then attests the caller (on a blocking thread).
    async fn caller<T>(&self, request: &Request<T>) -> Result<SelectorSet, Status> {
        check_header(request.metadata())?;
        let extensions = request.extensions().clone();
        let attestor = self.inner.attestor.clone();
        tokio::task::spawn_blocking(move || attestor.attest(&extensions))
            .await
            .map_err(|_| Status::unavailable("workload attestation failed"))?
    }

    /// The view once it can answer this caller: synced, and no entry of the caller still
    /// waiting for its SVID (bounded by [`FIRST_ANSWER_WAIT`]).
    async fn first_view(&self, selectors: &SelectorSet) -> Arc<WorkloadView> {
        let mut view = self.inner.view.clone();
        // The caller's entries are wanted now: beyond the cache size they are signed for it.
        let current = view.borrow_and_update().clone();
        self.inner
            .demand
            .touch(current.matching(selectors).map(|entry| entry.id.as_str()));
        let settled = |v: &Arc<WorkloadView>| {
            v.synced
                && v.matching(selectors)
                    .all(|entry| v.svids.contains_key(entry.id.as_str()))
        };
        let settled_view =
            match tokio::time::timeout(FIRST_ANSWER_WAIT, view.wait_for(settled)).await {
                Ok(Ok(view)) => Some(view.clone()),
                _ => None,
            };
        settled_view.unwrap_or_else(|| self.inner.view.borrow().clone())
    }

    /// The view once the first sync is done (bounded by [`FIRST_ANSWER_WAIT`]).
    async fn synced_view(&self) -> Arc<WorkloadView> {
        let mut view = self.inner.view.clone();
        let synced =
            match tokio::time::timeout(FIRST_ANSWER_WAIT, view.wait_for(|v| v.synced)).await {
                Ok(Ok(view)) => Some(view.clone()),
                _ => None,
            };
        synced.unwrap_or_else(|| self.inner.view.borrow().clone())
    }

    /// Runs a stream: `make` turns the view into the next message (or the status that ends
    /// the stream); a message equal to the last one sent (the same [`Fingerprint`]) is
    /// skipped.
    fn stream<M, F>(&self, selectors: SelectorSet, first: Arc<WorkloadView>, make: F) -> Stream_<M>
    where
        M: Fingerprint + Send + 'static,
        F: Fn(&WorkloadView, &SelectorSet) -> Result<M, Status> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(1);
        let mut view = self.inner.view.clone();
        let mut subscription = self.inner.demand.subscribe(Vec::new());
        let mut shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            let mut current = first;
            let mut last: Option<Digest> = None;
            loop {
                // While this stream is open, the SVIDs it shows stay signed and rotated.
                subscription.set(
                    current
                        .matching(&selectors)
                        .map(|entry| entry.id.as_str().to_owned())
                        .collect(),
                );
                match make(&current, &selectors) {
                    Ok(message) => {
                        let digest = message.fingerprint();
                        if last != Some(digest) {
                            // The caller went away: nothing more to do.
                            if sender.send(Ok(message)).await.is_err() {
                                return;
                            }
                            last = Some(digest);
                        }
                    }
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                }
                tokio::select! {
                    changed = view.changed() => if changed.is_err() {
                        let _ = sender.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    },
                    () = sender.closed() => return,
                    // Streams never end by themselves: the agent's graceful stop ends them, or
                    // it would wait for every open stream's client to leave.
                    () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                        let _ = sender.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    }
                }
                current = view.borrow_and_update().clone();
            }
        });
        Box::pin(ReceiverStream::new(receiver))
    }
}

type Stream_<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// `workload.spiffe.io` must be present exactly once, with the value `true` (checklist 44).
fn check_header(metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
    let mut values = metadata.get_all("workload.spiffe.io").iter();
    match (values.next(), values.next()) {
        (Some(value), None) if value.as_bytes() == b"true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

/// The X.509 response for a caller: its SVIDs (oldest entry first: the default), each with our
/// bundle, and the federated bundles its entries name.
fn x509_response(
    view: &WorkloadView,
    selectors: &SelectorSet,
    own: &str,
) -> Result<pb::X509svidResponse, Status> {
    let own_bundle = view
        .bundles
        .get(own)
        .map(|bundle| bundle.x509().to_der())
        .unwrap_or_default();
    let mut hints = HashSet::new();
    let mut ids: HashSet<&SpiffeId> = HashSet::new();
    let mut svids = Vec::new();
    let mut federated = HashMap::new();
    for entry in view.matching(selectors) {
        let Some(svid) = view.svids.get(entry.id.as_str()) else {
            continue;
        };
        // Two entries can name one SPIFFE ID; a workload needs it once. A hint must be
        // unique in a response (checklist 59): a repeated one is left out.
        if !ids.insert(&entry.spiffe_id) {
            continue;
        }
        let hint = if entry.hint.is_empty() || hints.insert(entry.hint.as_str()) {
            entry.hint.clone()
        } else {
            String::new()
        };
        svids.push(pb::X509svid {
            spiffe_id: entry.spiffe_id.to_string(),
            x509_svid: svid.chain_der(),
            x509_svid_key: svid.private_key().pkcs8_der().to_vec(),
            bundle: own_bundle.clone(),
            hint,
        });
        add_federated(view, entry, own, &mut federated, |b| b.x509().to_der());
    }
    if svids.is_empty() {
        return Err(no_identity());
    }
    Ok(pb::X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles: federated,
    })
}

fn add_federated(
    view: &WorkloadView,
    entry: &RegistrationEntry,
    own: &str,
    into: &mut HashMap<String, Vec<u8>>,
    encode: impl Fn(&sigil_spiffe::Bundle) -> Vec<u8>,
) {
    for td in &entry.federates_with {
        if td.as_str() == own {
            continue;
        }
        if let Some(bundle) = view.bundles.get(td.as_str()) {
            into.entry(format!("spiffe://{td}"))
                .or_insert_with(|| encode(bundle));
        }
    }
}

/// The bundles a caller sees (ours plus its entries' federated ones), encoded by `encode`;
/// PermissionDenied when it has no entry.
fn bundles_response(
    view: &WorkloadView,
    selectors: &SelectorSet,
    own: &str,
    encode: impl Fn(&sigil_spiffe::Bundle) -> Vec<u8> + Copy,
) -> Result<HashMap<String, Vec<u8>>, Status> {
    let mut bundles = HashMap::new();
    let mut any = false;
    for entry in view.matching(selectors) {
        any = true;
        add_federated(view, entry, own, &mut bundles, encode);
    }
    if !any {
        return Err(no_identity());
    }
    if let Some(bundle) = view.bundles.get(own) {
        bundles.insert(format!("spiffe://{own}"), encode(bundle));
    }
    Ok(bundles)
}

/// The bundles a caller may validate JWT-SVIDs with: ours and its entries' federated ones.
fn validation_bundles(view: &WorkloadView, selectors: &SelectorSet, own: &str) -> BundleSet {
    let mut names: Vec<&str> = vec![own];
    for entry in view.matching(selectors) {
        names.extend(entry.federates_with.iter().map(|td| td.as_str()));
    }
    names
        .into_iter()
        .filter_map(|name| view.bundles.get(name).cloned())
        .collect()
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream_<pb::X509svidResponse>;
    type FetchX509BundlesStream = Stream_<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let selectors = self.caller(&request).await?;
        let first = self.first_view(&selectors).await;
        let own = self.inner.trust_domain.clone();
        // The first answer is computed here so that a caller with no identity gets its
        // PermissionDenied as the call's status, not as a stream item.
        x509_response(&first, &selectors, &own)?;
        Ok(Response::new(self.stream(
            selectors,
            first,
            move |view, selectors| x509_response(view, selectors, &own),
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let selectors = self.caller(&request).await?;
        let first = self.first_view(&selectors).await;
        let own = self.inner.trust_domain.clone();
        let make = move |view: &WorkloadView, selectors: &SelectorSet| {
            Ok(pb::X509BundlesResponse {
                crl: Vec::new(),
                bundles: bundles_response(view, selectors, &own, |b| b.x509().to_der())?,
            })
        };
        make(&first, &selectors)?;
        Ok(Response::new(self.stream(selectors, first, make)))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        let selectors = self.caller(&request).await?;
        let request = request.into_inner();
        if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let wanted = match request.spiffe_id.as_str() {
            "" => None,
            id => Some(id.parse::<SpiffeId>().map_err(|e| {
                Status::invalid_argument(format!("invalid requested SPIFFE ID {id:?}: {e}"))
            })?),
        };
        // JWT-SVIDs need the entries, not their X.509-SVIDs: wait only for the first sync.
        let view = self.synced_view().await;
        let mut entries: Vec<&RegistrationEntry> = Vec::new();
        for entry in view.matching(&selectors) {
            if wanted.as_ref().is_some_and(|id| *id != entry.spiffe_id) {
                continue;
            }
            if !entries.iter().any(|e| e.spiffe_id == entry.spiffe_id) {
                entries.push(entry);
            }
        }
        if entries.is_empty() {
            return Err(no_identity());
        }
        let mut svids = Vec::with_capacity(entries.len());
        let mut hints = HashSet::new();
        for entry in entries {
            let token = self.inner.jwt.fetch(entry, &request.audience).await?;
            let hint = if entry.hint.is_empty() || hints.insert(entry.hint.clone()) {
                entry.hint.clone()
            } else {
                String::new()
            };
            svids.push(pb::Jwtsvid {
                spiffe_id: entry.spiffe_id.to_string(),
                svid: token,
                hint,
            });
        }
        Ok(Response::new(pb::JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let selectors = self.caller(&request).await?;
        let first = self.first_view(&selectors).await;
        let own = self.inner.trust_domain.clone();
        let make = move |view: &WorkloadView, selectors: &SelectorSet| {
            Ok(pb::JwtBundlesResponse {
                bundles: bundles_response(view, selectors, &own, |b| {
                    b.jwt().to_jwks().into_bytes()
                })?,
            })
        };
        make(&first, &selectors)?;
        Ok(Response::new(self.stream(selectors, first, make)))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        let selectors = self.caller(&request).await?;
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if request.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let view = self.inner.view.borrow().clone();
        let bundles = validation_bundles(&view, &selectors, &self.inner.trust_domain);
        let svid = JwtSvid::parse_and_validate(
            &request.svid,
            &bundles,
            &[request.audience.as_str()],
            SystemTime::now(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::ValidateJwtsvidResponse {
            spiffe_id: svid.spiffe_id().to_string(),
            claims: Some(to_struct(svid.claims())),
        }))
    }
}

fn to_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(name, value)| (name.clone(), to_value(value)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn to_value(value: &serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        J::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}
