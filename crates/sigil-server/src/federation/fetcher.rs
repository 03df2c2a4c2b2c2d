//! Fetching the bundles of federated trust domains from their bundle endpoints
//! (SPIFFE_Federation.md; checklist §1.7, §3.3, §3.6).
//!
//! [`Federation`] holds one task per relationship. Each task GETs the peer's bundle document,
//! checks it ([`check_document`]) and stores it through [`ServerState::set_federated_bundle`],
//! which also hands it to the agents whose entries federate with that trust domain. A fetch or
//! check that fails changes nothing: the last good bundle keeps being served.
//!
//! Schedule: the next fetch follows the document's `spiffe_refresh_hint`, clamped to
//! [`MIN_REFRESH`, `MAX_REFRESH`], or [`DEFAULT_REFRESH`] without one. After a failure the task
//! retries after [`FIRST_RETRY`], doubling up to the refresh interval, so a peer that is down
//! is polled no more often than it asked once it has been down for a while.
//!
//! `https_spiffe` authenticates the endpoint with the bundle stored for its trust domain *at
//! the time of each fetch*, so a peer that publishes its next CA before it uses it (as the
//! spec requires) stays reachable across its CA rotations.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::RootCertStore;
use sigil_spiffe::tls::{self, TlsError, TlsMaterial};
use sigil_spiffe::x509::X509SvidError;
use sigil_spiffe::x509::profile::check_signing_der;
use sigil_spiffe::{
    Authorizer, Bundle, BundleDocumentError, BundleError, BundleSet, JwtBundle, SpiffeId,
    TrustDomain, X509Bundle,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::{FederatesWith, RemoteProfile};
use crate::datastore::DataStoreError;
use crate::state::ServerState;

/// The largest bundle document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// The shortest interval between fetches, whatever the peer's hint. SPIRE's floor is one
/// minute; a lower one lets a peer ask for quick polls while it rotates, and a GET per second
/// costs little.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The longest interval between fetches, whatever the peer's hint, so that a hint of days
/// cannot leave us on a stale bundle.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// The interval when the document has no hint (SPIFFE_Federation.md: about five minutes).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// The first retry after a failure; later ones double up to the refresh interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest a whole fetch (connect, TLS, request, body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a relationship could not be set up.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The `bundle_path` or `ca_file` could not be read.
    #[error("federation with {trust_domain}: cannot read {}: {source}", path.display())]
    Read {
        /// The relationship.
        trust_domain: TrustDomain,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The `bundle_path` does not hold a usable bundle of the trust domain.
    #[error("federation with {trust_domain}: bundle_path {}: {source}", path.display())]
    InitialBundle {
        /// The relationship.
        trust_domain: TrustDomain,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: FetchError,
    },
    /// The `ca_file` holds no usable root certificate.
    #[error("federation with {trust_domain}: ca_file {}: {reason}", path.display())]
    CaFile {
        /// The relationship.
        trust_domain: TrustDomain,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The initial bundle could not be stored.
    #[error("federation with {trust_domain}: cannot store the initial bundle: {source}")]
    Store {
        /// The relationship.
        trust_domain: TrustDomain,
        /// The datastore error.
        source: DataStoreError,
    },
}

/// Why one fetch did not produce a bundle to store. Nothing is stored on any of these.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `https_spiffe` with no bundle of the trust domain yet (no `bundle_path`, nothing set by
    /// an operator): the endpoint cannot be authenticated.
    #[error("no bundle of {0} is known to authenticate its bundle endpoint")]
    NoTrustBundle(TrustDomain),
    /// The HTTPS client could not be built.
    #[error("cannot build the https client: {0}")]
    Client(String),
    /// The rustls configuration could not be built.
    #[error("cannot build the tls configuration: {0}")]
    Tls(#[from] TlsError),
    /// Connecting, TLS, sending or reading failed; the text holds the whole cause chain.
    #[error("request failed: {0}")]
    Request(String),
    /// The endpoint answered with a status other than 200.
    #[error("the endpoint answered HTTP status {0}")]
    Status(u16),
    /// The body is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// The body is not a well-formed SPIFFE bundle document (or PEM bundle, for a file).
    #[error("malformed bundle: {0}")]
    Malformed(#[from] BundleDocumentError),
    /// The bundle could not be assembled.
    #[error("malformed bundle: {0}")]
    Bundle(#[from] BundleError),
    /// The bundle has no X.509 authority, so nothing of the trust domain could be verified.
    #[error("the bundle holds no X.509 authority")]
    NoX509Authority,
    /// An X.509 authority is not a CA certificate.
    #[error("X.509 authority {index} is not a CA certificate: {source}")]
    NotCa {
        /// Its position in the bundle.
        index: usize,
        /// The profile check that failed.
        source: X509SvidError,
    },
    /// An X.509 authority's SPIFFE ID names another trust domain: the document is some other
    /// trust domain's bundle.
    #[error("X.509 authority {index} belongs to trust domain {found}, not {expected}")]
    WrongTrustDomain {
        /// Its position in the bundle.
        index: usize,
        /// The trust domain in its SPIFFE ID.
        found: TrustDomain,
        /// The trust domain fetched.
        expected: TrustDomain,
    },
    /// The document's `spiffe_sequence` is lower than the stored bundle's.
    #[error("spiffe_sequence {fetched} is older than the stored bundle's {stored}")]
    OlderSequence {
        /// The fetched document's sequence.
        fetched: u64,
        /// The stored bundle's sequence.
        stored: u64,
    },
    /// The checked bundle could not be stored.
    #[error("cannot store the bundle: {0}")]
    Store(#[from] DataStoreError),
}

/// What a successful fetch did.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A new bundle was stored.
    Stored {
        /// Its sequence, if it has one.
        sequence: Option<u64>,
    },
    /// The document equals the stored bundle; nothing was written.
    Unchanged,
}

/// The federation relationships of a running server, one fetching task each.
///
/// Relationships can be added, replaced and removed while the server runs; the tasks stop
/// when [`stop`](Self::stop) is called, or soon after the handle is dropped.
pub struct Federation {
    state: Arc<ServerState>,
    relationships: Mutex<BTreeMap<TrustDomain, Running>>,
}

struct Running {
    relationship: FederatesWith,
    refresh: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Federation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Federation")
            .field("trust_domains", &self.trust_domains())
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// No relationships yet.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self {
            state,
            relationships: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts fetching for every relationship of the config; see [`add`](Self::add).
    pub async fn start(
        state: Arc<ServerState>,
        relationships: &[FederatesWith],
    ) -> Result<Self, FederationError> {
        let federation = Self::new(state);
        for relationship in relationships {
            federation.add(relationship.clone()).await?;
        }
        Ok(federation)
    }

    /// Starts fetching for `relationship`, replacing any relationship with the same trust
    /// domain. For `https_spiffe`, when no bundle of the trust domain is stored yet, the
    /// `bundle_path` (a SPIFFE bundle document or PEM certificates) is checked and stored
    /// first, so agents have it at once and the first fetch can authenticate the endpoint. The
    /// first fetch starts at once.
    pub async fn add(&self, relationship: FederatesWith) -> Result<(), FederationError> {
        let fetcher = BundleFetcher::new(Arc::clone(&self.state), relationship)?;
        fetcher.store_initial_bundle().await?;
        let trust_domain = fetcher.relationship.trust_domain.clone();
        let relationship = fetcher.relationship.clone();
        let refresh = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(fetch_forever(fetcher, Arc::clone(&refresh), stopped));
        let running = Running {
            relationship,
            refresh,
            stop,
            task,
        };
        let old = lock(&self.relationships).insert(trust_domain, running);
        if let Some(old) = old {
            old.stop().await;
        }
        Ok(())
    }

    /// Stops fetching for `trust_domain` and waits for its task to end, so that nothing is
    /// stored for it afterwards; the stored bundle stays. Whether it was federated.
    pub async fn remove(&self, trust_domain: &TrustDomain) -> bool {
        let removed = lock(&self.relationships).remove(trust_domain);
        match removed {
            Some(running) => {
                running.stop().await;
                true
            }
            None => false,
        }
    }

    /// Fetches `trust_domain`'s bundle now instead of at its next scheduled time (which is
    /// then counted from this fetch). Whether it is federated.
    pub fn refresh_now(&self, trust_domain: &TrustDomain) -> bool {
        match lock(&self.relationships).get(trust_domain) {
            Some(running) => {
                running.refresh.notify_one();
                true
            }
            None => false,
        }
    }

    /// The relationship running for `trust_domain`, if any.
    pub fn relationship(&self, trust_domain: &TrustDomain) -> Option<FederatesWith> {
        lock(&self.relationships)
            .get(trust_domain)
            .map(|running| running.relationship.clone())
    }

    /// The federated trust domains, in name order.
    pub fn trust_domains(&self) -> Vec<TrustDomain> {
        lock(&self.relationships).keys().cloned().collect()
    }

    /// Stops every task and waits for them. A task in the middle of storing a bundle finishes
    /// that first, so the datastore and memory never disagree.
    pub async fn stop(&self) {
        let running: Vec<Running> = std::mem::take(&mut *lock(&self.relationships))
            .into_values()
            .collect();
        for relationship in &running {
            let _ = relationship.stop.send(true);
        }
        for relationship in running {
            relationship.stop().await;
        }
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        for (_, running) in std::mem::take(&mut *lock(&self.relationships)) {
            running.detach();
        }
    }
}

impl Running {
    /// Asks the task to stop at its next wait or fetch (it never stops in the middle of a
    /// store) and waits for it.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Asks the task to stop, without waiting.
    fn detach(self) {
        let _ = self.stop.send(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The loop of one relationship: fetch, then wait for the next time or a refresh request.
async fn fetch_forever(
    fetcher: BundleFetcher,
    refresh: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let trust_domain = fetcher.relationship.trust_domain.clone();
    let mut failures: u32 = 0;
    loop {
        let fetched = tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => return,
            fetched = fetcher.fetch() => fetched,
        };
        // Storing is not raced against the stop signal: it runs to the end.
        let outcome = match fetched {
            Ok(bundle) => fetcher.store(bundle).await,
            Err(error) => Err(error),
        };
        let wait = match outcome {
            Ok(outcome) => {
                match outcome {
                    FetchOutcome::Stored { sequence } => {
                        tracing::info!(%trust_domain, ?sequence, "federated bundle updated");
                    }
                    FetchOutcome::Unchanged => {
                        tracing::debug!(%trust_domain, "federated bundle unchanged");
                    }
                }
                failures = 0;
                fetcher.refresh_interval()
            }
            Err(error) => {
                let wait = retry_delay(failures, fetcher.refresh_interval());
                tracing::warn!(
                    %trust_domain,
                    url = %fetcher.relationship.url,
                    error = %error,
                    retry_in = ?wait,
                    "federated bundle not updated; keeping the last good bundle"
                );
                failures = failures.saturating_add(1);
                wait
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(wait) => {}
            () = refresh.notified() => {}
        }
    }
}

/// One relationship's fetching, checking and storing, one fetch at a time: what each task of
/// [`Federation`] runs in a loop, and what a one-off refresh can call directly to see why a
/// fetch failed.
pub struct BundleFetcher {
    state: Arc<ServerState>,
    relationship: FederatesWith,
    /// `https_web` with a `ca_file`: the roots to use instead of the system's.
    web_roots: Option<Arc<RootCertStore>>,
}

impl fmt::Debug for BundleFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleFetcher")
            .field("relationship", &self.relationship)
            .finish_non_exhaustive()
    }
}

impl BundleFetcher {
    /// A fetcher for `relationship`; reads its `ca_file`, if any.
    pub fn new(
        state: Arc<ServerState>,
        relationship: FederatesWith,
    ) -> Result<Self, FederationError> {
        let web_roots = match &relationship.profile {
            RemoteProfile::HttpsWeb {
                ca_file: Some(path),
                ..
            } => {
                let bytes = std::fs::read(path).map_err(|source| FederationError::Read {
                    trust_domain: relationship.trust_domain.clone(),
                    path: path.to_owned(),
                    source,
                })?;
                Some(Arc::new(parse_roots(
                    &relationship.trust_domain,
                    path,
                    &bytes,
                )?))
            }
            RemoteProfile::HttpsWeb {
                ca_roots: Some(pem),
                ..
            } => Some(Arc::new(parse_roots(
                &relationship.trust_domain,
                Path::new("(roots given through the admin API)"),
                pem,
            )?)),
            _ => None,
        };
        Ok(Self {
            state,
            relationship,
            web_roots,
        })
    }

    /// The relationship fetched.
    pub fn relationship(&self) -> &FederatesWith {
        &self.relationship
    }

    fn trust_domain(&self) -> &TrustDomain {
        &self.relationship.trust_domain
    }

    /// For `https_spiffe` without a stored bundle: the `bundle_path`, checked, as the first
    /// bundle. A stored bundle (from an earlier run or an operator) is newer than the file.
    pub async fn store_initial_bundle(&self) -> Result<(), FederationError> {
        let RemoteProfile::HttpsSpiffe {
            bundle_path: Some(path),
            ..
        } = &self.relationship.profile
        else {
            return Ok(());
        };
        if self.state.federated_bundle(self.trust_domain()).is_some() {
            return Ok(());
        }
        let trust_domain = self.trust_domain().clone();
        let bytes = std::fs::read(path).map_err(|source| FederationError::Read {
            trust_domain: trust_domain.clone(),
            path: path.clone(),
            source,
        })?;
        let bundle = read_bundle_file(&trust_domain, &bytes)
            .and_then(|bundle| check_bundle(&trust_domain, bundle))
            .map_err(|source| FederationError::InitialBundle {
                trust_domain: trust_domain.clone(),
                path: path.clone(),
                source,
            })?;
        self.state
            .set_federated_bundle(bundle)
            .await
            .map_err(|source| FederationError::Store {
                trust_domain: trust_domain.clone(),
                source,
            })?;
        tracing::info!(%trust_domain, path = %path.display(), "initial federated bundle stored");
        Ok(())
    }

    /// The wait after a good fetch: the stored bundle's hint, clamped.
    pub fn refresh_interval(&self) -> Duration {
        refresh_interval(
            self.state
                .federated_bundle(self.trust_domain())
                .and_then(|bundle| bundle.refresh_hint()),
        )
    }

    /// GETs the document and checks it; stores nothing.
    pub async fn fetch(&self) -> Result<Bundle, FetchError> {
        let client = self.client()?;
        let response = client
            .get(&self.relationship.url)
            .send()
            .await
            .map_err(|e| FetchError::Request(error_chain(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let body = read_capped(response).await?;
        let bundle = Bundle::from_document(self.trust_domain().clone(), &body)?;
        check_bundle(self.trust_domain(), bundle)
    }

    /// A client for one fetch. For `https_spiffe` it trusts the bundle stored right now, so a
    /// bundle that the previous fetch brought (a peer's new CA) is used from this fetch on.
    fn client(&self) -> Result<reqwest::Client, FetchError> {
        let builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(FETCH_TIMEOUT)
            // A redirect would have to be authenticated like the URL itself (checklist §3.6);
            // following none is simpler and the spec does not require it.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        let builder = match &self.relationship.profile {
            RemoteProfile::HttpsSpiffe {
                endpoint_spiffe_id, ..
            } => builder.use_preconfigured_tls(self.spiffe_tls(endpoint_spiffe_id)?),
            RemoteProfile::HttpsWeb { .. } => match &self.web_roots {
                Some(roots) => builder.use_preconfigured_tls(web_tls(roots)?),
                None => builder,
            },
        };
        builder
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))
    }

    fn spiffe_tls(&self, endpoint: &SpiffeId) -> Result<rustls::ClientConfig, FetchError> {
        let bundle = self
            .state
            .federated_bundle(self.trust_domain())
            .ok_or_else(|| FetchError::NoTrustBundle(self.trust_domain().clone()))?;
        let mut bundles = BundleSet::new();
        bundles.insert(bundle);
        let material = Arc::new(TlsMaterial::without_svid(bundles));
        Ok(tls::client_config(
            material,
            Authorizer::exact(endpoint.clone()),
        )?)
    }

    /// [`fetch`](Self::fetch), then [`store`](Self::store).
    pub async fn fetch_and_store(&self) -> Result<FetchOutcome, FetchError> {
        let bundle = self.fetch().await?;
        self.store(bundle).await
    }

    /// Stores `bundle` unless its sequence is lower than the stored one's, or it equals the
    /// stored bundle. The sequences are compared only when both bundles have one
    /// (SPIFFE_Federation.md: without a sequence the last fetched bundle wins); an equal
    /// sequence with other content is stored too, for the same reason.
    pub async fn store(&self, bundle: Bundle) -> Result<FetchOutcome, FetchError> {
        let stored = self.state.federated_bundle(self.trust_domain());
        if let Some(stored) = &stored {
            if let (Some(fetched), Some(stored)) = (bundle.sequence(), stored.sequence())
                && fetched < stored
            {
                return Err(FetchError::OlderSequence { fetched, stored });
            }
            if *stored == bundle {
                return Ok(FetchOutcome::Unchanged);
            }
        }
        let sequence = bundle.sequence();
        self.state.set_federated_bundle(bundle).await?;
        Ok(FetchOutcome::Stored { sequence })
    }
}

/// The wait after a failure that followed `failures` failures in a row: [`FIRST_RETRY`],
/// doubling, never more than `interval`.
pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
    FIRST_RETRY
        .saturating_mul(2_u32.saturating_pow(failures))
        .min(interval)
}

/// The refresh interval for a document's hint.
pub fn refresh_interval(hint: Option<Duration>) -> Duration {
    hint.map_or(DEFAULT_REFRESH, |hint| hint.clamp(MIN_REFRESH, MAX_REFRESH))
}

/// The checks every bundle of a federated trust domain passes before it is stored (beyond
/// the document's own, done by [`Bundle::from_document`]): at least one X.509 authority, and
/// every X.509 authority a CA certificate (the signing profile: cA, keyCertSign) whose SPIFFE
/// ID, if it has one, names `trust_domain`.
///
/// The document carries no trust domain name, so a CA's ID is the only place where a document
/// of another trust domain shows. A CA without a SPIFFE ID (an upstream root of another PKI)
/// is accepted, as SPIRE accepts it in its own bundle. go-spiffe and SPIRE do not look at the
/// certificates at all.
pub fn check_bundle(trust_domain: &TrustDomain, bundle: Bundle) -> Result<Bundle, FetchError> {
    if bundle.x509().is_empty() {
        return Err(FetchError::NoX509Authority);
    }
    for (index, authority) in bundle.x509().authorities().iter().enumerate() {
        let id = check_signing_der(authority.as_ref())
            .map_err(|source| FetchError::NotCa { index, source })?;
        if let Some(id) = id {
            let found = id.trust_domain();
            if &found != trust_domain {
                return Err(FetchError::WrongTrustDomain {
                    index,
                    found,
                    expected: trust_domain.clone(),
                });
            }
        }
    }
    Ok(bundle)
}

/// A bundle file, or an initial bundle sent to the admin API: a SPIFFE bundle document when it
/// starts with `{`, PEM certificates otherwise.
pub fn read_bundle_file(trust_domain: &TrustDomain, bytes: &[u8]) -> Result<Bundle, FetchError> {
    let document = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if document {
        return Ok(Bundle::from_document(trust_domain.clone(), bytes)?);
    }
    let x509 = X509Bundle::from_pem(trust_domain.clone(), bytes)?;
    Ok(Bundle::from_parts(
        x509,
        JwtBundle::new(trust_domain.clone()),
    )?)
}

/// The roots in `bytes` (PEM), read from `from` (a file, or the admin API).
pub fn parse_roots(
    trust_domain: &TrustDomain,
    from: &Path,
    bytes: &[u8],
) -> Result<RootCertStore, FederationError> {
    let path = from;
    let ca_file_error = |reason: String| FederationError::CaFile {
        trust_domain: trust_domain.clone(),
        path: path.to_owned(),
        reason,
    };
    let certificates = X509Bundle::from_pem(trust_domain.clone(), bytes)
        .map_err(|e| ca_file_error(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for (i, certificate) in certificates.authorities().iter().enumerate() {
        roots
            .add(certificate.clone())
            .map_err(|e| ca_file_error(format!("certificate {i}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_file_error("no certificates".to_owned()));
    }
    Ok(roots)
}

fn web_tls(roots: &Arc<RootCertStore>) -> Result<rustls::ClientConfig, FetchError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Tls(TlsError::Config(e)))?
        .with_root_certificates(Arc::clone(roots))
        .with_no_client_auth();
    Ok(config)
}

/// The body, refused as soon as it passes [`MAX_DOCUMENT_BYTES`] (a `Content-Length` is not
/// trusted to be present or true).
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Request(error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes: reqwest's own message ("error sending request") hides whether
/// DNS, TCP or the certificate failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_clamped_and_defaults_to_five_minutes() {
        assert_eq!(refresh_interval(None), Duration::from_secs(300));
        assert_eq!(refresh_interval(Some(Duration::ZERO)), MIN_REFRESH);
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(86_400))),
            MAX_REFRESH
        );
    }

    #[test]
    fn retries_double_from_one_second_up_to_the_interval() {
        let interval = Duration::from_secs(300);
        let waits: Vec<u64> = (0..11)
            .map(|failures| retry_delay(failures, interval).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX, interval), interval);
        assert_eq!(
            retry_delay(3, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_bundle_file_is_a_document_when_it_starts_with_a_brace() {
        let td = TrustDomain::new("peer.test").unwrap();
        let empty_document = read_bundle_file(&td, b"  \n{\"keys\": []}").unwrap();
        assert!(empty_document.x509().is_empty());
        assert!(matches!(
            read_bundle_file(&td, b"{\"keys\": ["),
            Err(FetchError::Malformed(BundleDocumentError::Json(_)))
        ));
        assert!(matches!(
            read_bundle_file(&td, b"not pem"),
            Err(FetchError::Malformed(BundleDocumentError::NoPemBlocks))
        ));
        assert!(matches!(
            check_bundle(&td, empty_document),
            Err(FetchError::NoX509Authority)
        ));
    }
}
