//! `sigil server run`: brings a server up from its config and serves until told to stop.
//!
//! Startup order: data directory and instance ID, datastore, key manager, CA (resumed from
//! this instance's journal in the datastore), its authorities published into the trust
//! domain's bundle, the shared [`ServerState`] (entry index, agents, federated bundles), admin
//! socket. The CA rotates every [`ROTATE_INTERVAL`]; its journal and authorities are written
//! back whenever they change, and the own bundle is read back on the same tick to learn the
//! authorities other servers on the datastore published.

use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_core::server_spiffe_id;
use sigil_proto::server::v1::trust_domain_server::TrustDomainServer;
use sigil_spiffe::{Bundle, SpiffeIdError, TrustDomain};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;

use crate::agent_api::{self, AgentApiError};
use crate::api;
use crate::ca::{
    CaError, CaEvent, CaSettings, CertificateAuthority, DiskKeyManager, KeyManagerError,
    UpstreamError, upstream,
};
use crate::config::{Config, Datastore, FederatesWith};
use crate::datastore::{Backend, DataStore, DataStoreError, FeedCursor, PeerNotices};
use crate::federation::endpoint::{self, EndpointError};
use crate::federation::{Federation, FederationError};
use crate::follower;
use crate::health::HealthServer;
use crate::https::HttpsServer;
use crate::instance::{self, InstanceError};
use crate::notices;
use crate::oidc::{self, OidcError};
use crate::state::{ServerState, StateSettings};

/// How often the CA is asked to rotate, and the own bundle read back from the datastore.
pub const ROTATE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a new server instance waits, when other servers share its datastore, between
/// publishing its first authorities and signing with them: the others read the bundle back
/// within one [`ROTATE_INTERVAL`] and push it to their agents at once; twice that leaves room.
pub const JOIN_DELAY: Duration = Duration::from_secs(2 * ROTATE_INTERVAL.as_secs());

/// Why the server could not start or stopped with an error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file system step failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The admin socket's directory is writable by others, who could replace the socket.
    #[error(
        "admin socket directory {} is writable by group or others (mode {mode:o}); \
         make it 0700 or choose another admin_socket",
        path.display()
    )]
    InsecureSocketDir {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another server answers on the admin socket.
    #[error("admin socket {} is in use by a running server", .0.display())]
    SocketInUse(PathBuf),
    /// Something that is not a socket sits where the admin socket goes.
    #[error("admin socket {} exists and is not a socket; refusing to remove it", .0.display())]
    NotASocket(PathBuf),
    /// A path that is not UTF-8 cannot be put in a datastore URL.
    #[error("datastore path {} is not valid UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    /// `[ca.upstream]` could not be loaded (the message names the file).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The `[health]` listener could not be bound.
    #[error("cannot bind the health listener on {address}: {source}")]
    HealthBind {
        /// The configured address.
        address: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The datastore failed.
    #[error("datastore: {0}")]
    DataStore(#[from] DataStoreError),
    /// The key manager failed.
    #[error("key manager: {0}")]
    KeyManager(#[from] KeyManagerError),
    /// The CA failed.
    #[error("ca: {0}")]
    Ca(#[from] CaError),
    /// The instance ID could not be read or made.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The trust domain has no valid server ID (cannot happen for a loaded config).
    #[error("server spiffe id: {0}")]
    ServerId(#[from] SpiffeIdError),
    /// The gRPC server failed.
    #[error("admin api: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The agent API failed.
    #[error(transparent)]
    AgentApi(#[from] AgentApiError),
    /// A federation relationship could not be set up.
    #[error(transparent)]
    Federation(#[from] FederationError),
    /// The agent API's address cannot be bound.
    #[error("cannot listen on bind_address {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// A public HTTPS listener (bundle endpoint, OIDC discovery) cannot be bound.
    #[error("cannot listen on {key} {address}: {source}")]
    PublicBind {
        /// The config key of the address.
        key: &'static str,
        /// The address.
        address: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The bundle endpoint could not be set up.
    #[error(transparent)]
    BundleEndpoint(#[from] EndpointError),
    /// OIDC discovery could not be set up.
    #[error(transparent)]
    Oidc(#[from] OidcError),
}

/// Runs the server of `config` until `shutdown` completes, then stops accepting, lets the
/// calls in flight finish, removes the admin socket and returns.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let server_id = server_spiffe_id(&config.trust_domain)?;
    tracing::info!(
        trust_domain = %config.trust_domain,
        datastore = %config.datastore.redacted(),
        "starting sigil server"
    );
    // Refuse what cannot work before anything is created or written: a second server on
    // the same config must not touch the CA state of the running one.
    let upstream = match &config.ca.upstream {
        Some(files) => Some(upstream::load(
            &files.cert_file,
            &files.key_file,
            SystemTime::now(),
        )?),
        None => None,
    };
    check_admin_socket(&config.admin_socket)?;
    let health_listener = match &config.health {
        Some(health) => Some((
            health.bind_address,
            HealthServer::bind(health.bind_address)
                .await
                .map_err(|source| RunError::HealthBind {
                    address: health.bind_address,
                    source,
                })?,
        )),
        None => None,
    };
    // Like the health port, a taken agent port fails before anything is created.
    let agent_listener = TcpListener::bind(config.bind_address)
        .await
        .map_err(|source| RunError::Bind {
            address: config.bind_address,
            source,
        })?;
    let public = PublicListeners::bind(config).await?;
    create_private_dir(&config.data_dir)?;
    let (instance, new_instance) = instance::load_or_create(&config.data_dir)?;
    let datastore = DataStore::open(&datastore_url(&config.datastore)?).await?;
    let key_manager = Arc::new(DiskKeyManager::open(&config.data_dir)?);
    let settings = CaSettings {
        trust_domain: config.trust_domain.clone(),
        key_type: config.ca.key_type,
        ttl: config.ca.ttl,
    };
    let start_ca = |journal: Option<&[u8]>| {
        CertificateAuthority::start(
            settings.clone(),
            Arc::clone(&key_manager) as _,
            upstream.clone(),
            journal,
            SystemTime::now(),
        )
    };
    let journal = datastore.ca_journal(&instance).await?;
    let mut resumed = journal.is_some();
    let mut adopted_legacy = false;
    let (mut ca, mut events) = match journal {
        Some(journal) => start_ca(Some(journal.as_slice()))?,
        // Before instance IDs, the one server kept its journal under the server ID. Its keys
        // are in this data directory if this is that server (upgraded): then it is adopted;
        // otherwise it is another server's, and this one starts its own authorities.
        None => match datastore.ca_journal(server_id.as_str()).await? {
            Some(legacy) if new_instance => match start_ca(Some(legacy.as_slice())) {
                Ok(started) => {
                    tracing::info!("ca state of this server adopted from before instance ids");
                    resumed = true;
                    adopted_legacy = true;
                    started
                }
                Err(CaError::MissingKey(_)) => start_ca(None)?,
                Err(error) => return Err(error.into()),
            },
            _ => start_ca(None)?,
        },
    };
    // A journal written under another upstream (or none) holds CAs that the bundle this
    // upstream publishes does not trust: start new ones instead.
    if resumed
        && !ca
            .active_x509()
            .is_ok_and(|active| upstream::fits(active.certificate(), upstream.as_ref()))
    {
        tracing::warn!(
            "the ca state in the datastore was made under another upstream ca (or none); \
             starting new authorities"
        );
        let previous = ca.sequence();
        (ca, events) = start_ca(None)?;
        ca.follow_sequence(previous);
        resumed = false;
    }
    tracing::info!(%instance, resumed, sequence = ca.sequence(), "ca started");
    log_events(&events);
    let (persisted, own_bundle) = persist(&datastore, &config.trust_domain, &instance, &ca).await?;
    if datastore.backend() != Backend::Sqlite {
        // Other servers serve our authorities from the datastore only.
        ca.require_publication();
    }
    if adopted_legacy {
        datastore.delete_ca_journal(server_id.as_str()).await?;
    }
    let others = datastore.other_publishers(&instance).await?;
    if !resumed && others > 0 {
        // The other servers' agents must have these authorities before anything signed by
        // them reaches a workload (SPIFFE Federation: publish new keys before use).
        tracing::info!(
            servers = others,
            "new authorities published; waiting {}s for the other servers to serve them before \
             signing with them",
            JOIN_DELAY.as_secs()
        );
        tokio::time::sleep(JOIN_DELAY).await;
    }
    let settings = StateSettings {
        trust_domain: config.trust_domain.clone(),
        default_x509_ttl: config.svid.default_x509_ttl,
        default_jwt_ttl: config.svid.default_jwt_ttl,
        jwt_issuer: config.svid.jwt_issuer.clone(),
    };
    // Where following the other servers' changes starts: before the load, so that a change
    // committed during it is applied again rather than missed (applying is idempotent).
    // SQLite has one server: nothing to follow.
    let shared = datastore.backend() != Backend::Sqlite;
    let feed_start = if shared {
        Some(datastore.latest_event_id().await?)
    } else {
        None
    };
    // The own bundle as stored now, not as this server published it: a server that joined
    // while this one waited (both new, publishing at once) is in it, and its later changes
    // come through the feed from the cursor read above.
    let own_bundle = if shared {
        datastore
            .bundle(&config.trust_domain)
            .await?
            .unwrap_or(own_bundle)
    } else {
        own_bundle
    };
    let state = Arc::new(ServerState::load(settings, datastore.clone(), ca).await?);
    state.set_stored_own_bundle(own_bundle);
    // A bad initial bundle stops the start, like any other config file that cannot be used.
    let federation =
        Arc::new(Federation::start(Arc::clone(&state), &config.federation.federates_with).await?);
    start_stored_relationships(&datastore, &federation, &config.federation.federates_with).await?;
    let rotation = tokio::spawn(rotate_forever(
        Arc::clone(&state),
        instance.clone(),
        persisted,
    ));

    let health = match health_listener {
        Some((address, listener)) => {
            let server = HealthServer::spawn(listener, Arc::clone(&state))
                .map_err(|source| RunError::HealthBind { address, source })?;
            tracing::info!(address = %server.local_addr(), "health listening");
            Some(server)
        }
        None => None,
    };
    let identity = agent_api::ServerIdentity::start(&state).map_err(AgentApiError::from)?;
    let public = public.spawn(config, &state, &identity)?;
    let listener = bind_admin_socket(&config.admin_socket)?;
    tracing::info!(admin_socket = %config.admin_socket.display(), "admin api listening");
    if let Ok(address) = agent_listener.local_addr() {
        tracing::info!(%address, "agent api listening");
    }

    // One shutdown signal for every listener; open sync streams are ended first, since the
    // graceful shutdown waits for calls in flight and a stream never ends by itself.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    // MySQL/MariaDB cannot announce a commit to other connections: the servers tell each
    // other themselves (`notices`).
    let peer_notices = (feed_start.is_some() && datastore.backend() == Backend::Mysql)
        .then(|| Arc::new(PeerNotices::default()));
    let follower = match feed_start {
        Some(last) => {
            let notices = datastore.change_notices(peer_notices.clone()).await?;
            let target = follower::FederationTarget {
                federation: Arc::clone(&federation),
                configured: config
                    .federation
                    .federates_with
                    .iter()
                    .map(|r| r.trust_domain.clone())
                    .collect(),
            };
            Some(tokio::spawn(follower::follow(
                Arc::clone(&state),
                target,
                FeedCursor::new(last, follower::GAP_TIMEOUT),
                notices,
                stop.clone(),
            )))
        }
        None => None,
    };
    let admin = tonic::transport::Server::builder()
        .add_routes(
            api::admin_routes(&state).add_service(TrustDomainServer::new(
                api::TrustDomainApi::new(
                    Arc::clone(&state),
                    Arc::clone(&federation),
                    config.federation.federates_with.clone(),
                ),
            )),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop.clone()));
    let arrivals = Arc::new(tokio::sync::Notify::new());
    let subscriber = match &peer_notices {
        Some(peer_notices) => {
            let bound = agent_listener
                .local_addr()
                .map_err(|source| RunError::Bind {
                    address: config.bind_address,
                    source,
                })?;
            let url = datastore_url(&config.datastore)?;
            let address = match notices::advertised_address(
                config.advertise_address.as_deref(),
                bound,
                &url,
            )
            .await
            {
                Ok(address) => {
                    tracing::info!(%address, "the other servers reach this one for change notices here");
                    Some(address)
                }
                Err(reason) => {
                    tracing::warn!(
                        "no address for change notices ({reason}): the other servers read the \
                         change feed every 200 ms instead; set advertise_address"
                    );
                    None
                }
            };
            let me = notices::subscriber::Subscriber {
                datastore: datastore.clone(),
                instance: instance.clone(),
                address,
                material: Arc::clone(identity.material()),
                server_id: state.server_id().clone(),
            };
            Some(tokio::spawn(notices::subscribe_to_peers(
                me,
                Arc::clone(peer_notices),
                Arc::clone(&arrivals),
                stop.clone(),
            )))
        }
        None => None,
    };
    let peer_endpoint = peer_notices
        .is_some()
        .then(|| notices::PeerEndpoint::new(Arc::clone(&state), &instance, stop.clone(), arrivals));
    let agents = agent_api::serve_as(
        Arc::clone(&state),
        agent_listener,
        agent_api::AgentApiOptions::default(),
        &identity,
        peer_endpoint,
        stopped(stop.clone()),
    );
    let signal = async {
        shutdown.await;
        tracing::info!("shutting down");
        state.hub().close();
        let _ = stopping.send(true);
    };
    let (admin, agents, ()) = tokio::join!(admin, agents, signal);

    rotation.abort();
    if let Some(follower) = follower {
        follower.abort();
    }
    // It saw the stop: its row in server_peers is being deleted.
    if let Some(subscriber) = subscriber {
        let _ = subscriber.await;
    }
    federation.stop().await;
    if let Some(health) = health {
        health.stop().await;
    }
    for server in public {
        server.stop().await;
    }
    if let Err(error) = fs::remove_file(&config.admin_socket) {
        tracing::warn!(%error, "cannot remove the admin socket");
    }
    datastore.close().await;
    admin?;
    agents?;
    tracing::info!("sigil server stopped");
    Ok(())
}

/// Starts the relationships made through the admin API. One that the config file also names
/// is skipped: the config file wins, since the API refuses to create such a relationship and
/// the overlap can only come from a config edited afterwards.
async fn start_stored_relationships(
    datastore: &DataStore,
    federation: &Federation,
    configured: &[FederatesWith],
) -> Result<(), RunError> {
    for relationship in datastore.list_federation_relationships().await? {
        let trust_domain = relationship.trust_domain.clone();
        if configured.iter().any(|r| r.trust_domain == trust_domain) {
            tracing::warn!(
                %trust_domain,
                "federation relationship in both the config file and the datastore: \
                 the config file's is used"
            );
            continue;
        }
        federation.add(relationship).await?;
        tracing::info!(%trust_domain, "federation relationship started from the datastore");
    }
    Ok(())
}

/// The datastore URL of the config.
fn datastore_url(datastore: &Datastore) -> Result<String, RunError> {
    match datastore {
        Datastore::Sqlite { path } => path
            .to_str()
            .map(|p| format!("sqlite://{p}"))
            .ok_or_else(|| RunError::NonUtf8Path(path.clone())),
        Datastore::Postgres { url } | Datastore::Mysql { url } => Ok(url.clone()),
    }
}

/// Writes this instance's CA journal and publishes its authorities; returns the journal
/// written and the own bundle after it.
async fn persist(
    datastore: &DataStore,
    trust_domain: &TrustDomain,
    instance: &str,
    ca: &CertificateAuthority,
) -> Result<(Vec<u8>, Bundle), RunError> {
    let journal = ca.journal();
    datastore.set_ca_journal(instance, &journal).await?;
    let bundle = datastore
        .publish_authorities(trust_domain, instance, &ca.published())
        .await?;
    Ok((journal, bundle))
}

/// Every [`ROTATE_INTERVAL`]: rotates the CA, writes its journal and publishes its
/// authorities when they changed, and reads the own bundle back when another server changed
/// it.
async fn rotate_forever(state: Arc<ServerState>, instance: String, mut persisted: Vec<u8>) {
    let mut ticks = tokio::time::interval(ROTATE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; start() has just rotated.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let rotating = Arc::clone(&state);
        // Rotation may generate keys (RSA takes a while): keep it off the async workers.
        let rotated =
            tokio::task::spawn_blocking(move || rotating.rotate_ca(SystemTime::now())).await;
        let rotated = match rotated {
            Ok(rotated) => rotated,
            Err(error) => {
                tracing::error!(%error, "ca rotation task failed");
                continue;
            }
        };
        let datastore = state.datastore();
        match rotated {
            Ok(rotation) if rotation.journal != persisted => {
                log_events(&rotation.events);
                let written = match datastore.set_ca_journal(&instance, &rotation.journal).await {
                    Ok(()) => {
                        datastore
                            .publish_authorities(
                                state.trust_domain(),
                                &instance,
                                &rotation.published,
                            )
                            .await
                    }
                    Err(error) => Err(error),
                };
                match written {
                    Ok(bundle) => {
                        persisted = rotation.journal;
                        state.ca_published(rotation.sequence);
                        state.set_stored_own_bundle(bundle);
                        continue;
                    }
                    // Retried on the next tick, since `persisted` is unchanged.
                    Err(error) => tracing::error!(%error, "cannot persist the ca state"),
                }
            }
            Ok(rotation) => log_events(&rotation.events),
            Err(error) => tracing::error!(%error, "ca rotation failed"),
        }
        // Other servers on the datastore publish theirs: read the own bundle back.
        match datastore.bundle(state.trust_domain()).await {
            Ok(Some(stored)) if stored.sequence() != state.stored_own_sequence() => {
                tracing::info!(
                    sequence = stored.sequence(),
                    "own bundle changed in the datastore (another server's authorities)"
                );
                state.set_stored_own_bundle(stored);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the own bundle back"),
        }
    }
}

fn log_events(events: &[CaEvent]) {
    for event in events {
        match event {
            CaEvent::X509Prepared { not_after } => {
                tracing::info!(not_after = unix_seconds(*not_after), "x509 ca prepared");
            }
            CaEvent::X509Activated { not_after } => {
                tracing::info!(not_after = unix_seconds(*not_after), "x509 ca activated");
            }
            CaEvent::X509Retired => tracing::info!("x509 ca retired"),
            CaEvent::JwtPrepared { kid } => tracing::info!(%kid, "jwt key prepared"),
            CaEvent::JwtActivated { kid } => tracing::info!(%kid, "jwt key activated"),
            CaEvent::JwtRetired { kid } => tracing::info!(%kid, "jwt key retired"),
            CaEvent::ActivationAwaitsPublication => tracing::warn!(
                "the next ca is due to sign, but its bundle has not reached the datastore; \
                 the active ca signs on until it has"
            ),
        }
    }
}

/// A time as seconds since the Unix epoch, for logs (0 before the epoch).
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Creates `dir` (and its parents) with mode 0700 when missing.
fn create_private_dir(dir: &Path) -> Result<(), RunError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| RunError::Io {
            action: "cannot create directory",
            path: dir.to_owned(),
            source,
        })
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RunError {
    let path = path.to_owned();
    move |source| RunError::Io {
        action,
        path,
        source,
    }
}

/// Prepares the admin socket's place: its directory is created 0700 when missing and must
/// not be writable by group or others; the path must hold nothing, or a socket that nobody
/// answers on (a stale one).
fn check_admin_socket(path: &Path) -> Result<(), RunError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            create_private_dir(dir)?;
        }
        let mode = fs::metadata(dir)
            .map_err(io_error("cannot read admin socket directory", dir))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(RunError::InsecureSocketDir {
                path: dir.to_owned(),
                mode: mode & 0o7777,
            });
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(RunError::SocketInUse(path.to_owned()));
            }
            Ok(())
        }
        Ok(_) => Err(RunError::NotASocket(path.to_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("cannot inspect admin socket", path)(error)),
    }
}

/// Binds the admin socket (after [`check_admin_socket`], run again since the CA start came
/// in between): a stale socket is removed; the socket is made 0600.
fn bind_admin_socket(path: &Path) -> Result<UnixListener, RunError> {
    check_admin_socket(path)?;
    if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path).map_err(io_error("cannot remove stale admin socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_error("cannot bind admin socket", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_error("cannot set the mode of admin socket", path))?;
    Ok(listener)
}

/// The public HTTPS listeners, bound before anything is created so that a taken port fails
/// early, like the others.
struct PublicListeners {
    bundle_endpoint: Option<TcpListener>,
    oidc_discovery: Option<TcpListener>,
}

impl PublicListeners {
    async fn bind(config: &Config) -> Result<Self, RunError> {
        let bind = async |key, address| {
            TcpListener::bind(address)
                .await
                .map_err(|source| RunError::PublicBind {
                    key,
                    address,
                    source,
                })
        };
        let bundle_endpoint = match &config.federation.bundle_endpoint {
            Some(endpoint) => Some(
                bind(
                    "federation.bundle_endpoint.bind_address",
                    endpoint.bind_address,
                )
                .await?,
            ),
            None => None,
        };
        let oidc_discovery = match &config.oidc_discovery {
            Some(oidc) => Some(bind("oidc_discovery.bind_address", oidc.bind_address).await?),
            None => None,
        };
        Ok(Self {
            bundle_endpoint,
            oidc_discovery,
        })
    }

    /// Starts serving; the servers returned run until stopped.
    fn spawn(
        self,
        config: &Config,
        state: &Arc<ServerState>,
        identity: &agent_api::ServerIdentity,
    ) -> Result<Vec<HttpsServer>, RunError> {
        let mut servers = Vec::new();
        if let (Some(listener), Some(endpoint)) =
            (self.bundle_endpoint, &config.federation.bundle_endpoint)
        {
            let address = endpoint.bind_address;
            let tls = endpoint::tls_config(endpoint, identity.material())?;
            let server = endpoint::spawn(listener, tls, Arc::clone(state), endpoint.refresh_hint)
                .map_err(|source| RunError::PublicBind {
                key: "federation.bundle_endpoint.bind_address",
                address,
                source,
            })?;
            tracing::info!(
                address = %server.local_addr(),
                profile = endpoint.profile.as_str(),
                "bundle endpoint listening"
            );
            servers.push(server);
        }
        if let (Some(listener), Some(discovery), Some(issuer)) = (
            self.oidc_discovery,
            &config.oidc_discovery,
            &config.svid.jwt_issuer,
        ) {
            let server = oidc::spawn(listener, discovery, issuer.clone(), Arc::clone(state))?;
            tracing::info!(address = %server.local_addr(), %issuer, "oidc discovery listening");
            servers.push(server);
        }
        Ok(servers)
    }
}
