//! `run(config, shutdown)`: the whole agent. It finds or obtains its identity, opens the
//! channel to the server, starts the sync stream, the SVID cache, the renewal of its own SVID,
//! and serves the Workload API until `shutdown` says stop.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use sigil_spiffe::tls::TlsMaterial;
use sigil_spiffe::{Bundle, BundleSet, X509Svid};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::backoff::{Backoff, unit_random};
use crate::bootstrap::{self, BootstrapError};
use crate::config::{Bootstrap, Config};
use crate::demand::Demand;
use crate::identity::{self, IdentityError};
use crate::jwt::JwtCache;
use crate::server::{self, AttestError, ServerAddresses, ServerChannel};
use crate::svids::SvidCache;
use crate::sync::{self, Authorized};
use crate::view::WorkloadView;
use crate::workload::api::{CallerAttestor, WorkloadApi};
use crate::workload::caller::Attestors;
use crate::workload::listener;

/// Why the agent could not start or had to stop.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory or a stored file.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The bootstrap bundle could not be had.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// Node attestation failed for good.
    #[error("node attestation failed: {0}")]
    Attestation(#[from] AttestError),
    /// The TLS setup failed.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] sigil_spiffe::tls::TlsError),
    /// The Workload API socket could not be bound.
    #[error("cannot serve the Workload API on {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The Workload API server failed.
    #[error("the Workload API server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the agent until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let attestors = Arc::new(Attestors::from_config(&config.workload_attestors));
    run_with(config, shutdown, attestors).await
}

/// [`run`] with another caller attestor.
pub async fn run_with(
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    attestor: Arc<dyn CallerAttestor>,
) -> Result<(), RunError> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    identity::prepare_data_dir(&config.data_dir)?;
    let (svid, bundle) = identity_at_start(&config, &mut shutdown).await?;
    tracing::info!(spiffe_id = %svid.spiffe_id(), "agent identity ready");

    let material = Arc::new(TlsMaterial::new(
        &svid,
        [bundle.clone()].into_iter().collect(),
    )?);
    let server = Arc::new(ServerChannel::new(
        ServerAddresses::new(config.server_addresses.clone()),
        svid.spiffe_id().as_str(),
        material.clone(),
        config.server_spiffe_id(),
    )?);

    let mut initial = Authorized::default();
    initial
        .bundles
        .insert(config.trust_domain.to_string(), bundle.clone());
    let (authorized_tx, authorized_rx) = watch::channel(Arc::new(initial));
    let (view_tx, view_rx) = watch::channel(Arc::new(WorkloadView::default()));
    let demand = Arc::new(Demand::default());

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sync::run(
        server.clone(),
        config.trust_domain.clone(),
        authorized_tx,
        shutdown.clone(),
    ));
    tasks.spawn(
        SvidCache::new(
            server.clone(),
            config.trust_domain.clone(),
            config.svid.key_type,
            config.svid.x509_cache_size,
            demand.clone(),
            view_tx,
        )
        .run(authorized_rx.clone(), shutdown.clone()),
    );
    tasks.spawn(keep_own_bundle(
        config.data_dir.clone(),
        config.trust_domain.to_string(),
        material.clone(),
        authorized_rx,
        shutdown.clone(),
    ));
    tasks.spawn(server::keep_preferred(
        server.clone(),
        config.server_rebalance_interval,
        shutdown.clone(),
    ));
    tasks.spawn(renew_own_svid(
        config.clone(),
        server.clone(),
        svid,
        shutdown.clone(),
    ));

    let jwt = Arc::new(JwtCache::new(server, config.svid.jwt_cache_size));
    let api = WorkloadApi::new(
        &config.trust_domain,
        view_rx,
        demand,
        jwt,
        attestor,
        shutdown.clone(),
    );
    let listener = bind_socket(&config.socket_path)?;
    tracing::info!(socket = %config.socket_path.display(), "serving the Workload API");
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let mut stop = shutdown.clone();
    let served = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(SpiffeWorkloadApiServer::new(api))
        .serve_with_incoming_shutdown(listener::incoming(listener), async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    let _ = std::fs::remove_file(&config.socket_path);
    tasks.shutdown().await;
    served?;
    Ok(())
}

/// The stored identity if it is still good, else a new one from node attestation.
async fn identity_at_start(
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(X509Svid, Bundle), RunError> {
    match identity::load(&config.data_dir, &config.trust_domain) {
        Ok(Some(stored)) => {
            tracing::info!("reusing the stored agent SVID");
            return Ok((stored.svid, stored.bundle));
        }
        Ok(None) => {}
        Err(error @ IdentityError::Expired { .. }) => {
            tracing::warn!(
                "{error}; attesting again (a join token is single use: if this one was \
                 used, generate a new one with `sigil token generate`)"
            );
        }
        Err(error) => return Err(error.into()),
    }
    let addresses = ServerAddresses::new(config.server_addresses.clone());
    let channel = match &config.bootstrap {
        Bootstrap::Insecure => server::connect_insecure(&addresses),
        Bootstrap::Path { path, format } => {
            let bundle = bootstrap::from_file(path, *format, &config.trust_domain)?;
            let material = Arc::new(TlsMaterial::without_svid([bundle].into_iter().collect()));
            server::connect(&addresses, material, config.server_spiffe_id())?
        }
        Bootstrap::Url { url, format } => {
            let bundle = bootstrap::from_url(url, *format, &config.trust_domain).await?;
            tracing::info!(url, "bootstrap bundle fetched");
            let material = Arc::new(TlsMaterial::without_svid([bundle].into_iter().collect()));
            server::connect(&addresses, material, config.server_spiffe_id())?
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match server::attest(
            channel.clone(),
            &config.node_attestor,
            &config.trust_domain,
            config.svid.key_type,
        )
        .await
        {
            Ok(attested) => {
                identity::store_svid(&config.data_dir, &attested.svid)?;
                identity::store_bundle(&config.data_dir, &attested.bundle)?;
                tracing::info!(
                    spiffe_id = %attested.svid.spiffe_id(),
                    reattestable = attested.reattestable,
                    "node attested"
                );
                return Ok((attested.svid, attested.bundle));
            }
            // The server is not there yet: wait for it.
            Err(AttestError::Refused(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::DeadlineExceeded
                ) =>
            {
                let delay = backoff.next_delay();
                tracing::warn!(
                    "cannot reach the server to attest ({}: {}); retrying in {delay:?}",
                    status.code(),
                    status.message()
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => {
                        return Err(RunError::Attestation(AttestError::Refused(status)));
                    }
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The Workload API socket: any stale file is replaced, and the socket is world-connectable
/// by design (architecture.md §7): who may have what is decided by attestation.
fn bind_socket(path: &Path) -> Result<UnixListener, RunError> {
    let failed = |source| RunError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    // A socket left by an earlier run is replaced; anything else at that path is the
    // operator's file and is never deleted.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(failed)?,
        Ok(_) => {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(failed)?;
    Ok(listener)
}

/// Follows our own trust domain's bundle: the server is authenticated with the newest, and
/// it is stored so a restart starts from it.
async fn keep_own_bundle(
    data_dir: std::path::PathBuf,
    own: String,
    material: Arc<TlsMaterial>,
    mut authorized: watch::Receiver<Arc<Authorized>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last: Option<Bundle> = None;
    loop {
        let bundle = authorized.borrow_and_update().bundles.get(&own).cloned();
        if let Some(bundle) = bundle
            && last.as_ref() != Some(&bundle)
        {
            let set: BundleSet = [bundle.clone()].into_iter().collect();
            material.set_bundles(set);
            if let Err(error) = identity::store_bundle(&data_dir, &bundle) {
                tracing::warn!("cannot store the trust bundle: {error}");
            }
            last = Some(bundle);
        }
        tokio::select! {
            changed = authorized.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Renews the agent's own SVID after 45-50% of its life; on failure keeps the current one
/// and retries with backoff until it expires.
async fn renew_own_svid(
    config: Config,
    server: Arc<ServerChannel>,
    mut svid: X509Svid,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut due = renewal_time(&svid);
    loop {
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let material = server.material();
        let bundle = material
            .bundles()
            .get(config.trust_domain.as_str())
            .cloned();
        let Some(bundle) = bundle else {
            due = SystemTime::now() + backoff.next_delay();
            continue;
        };
        match server::renew(server.get(), &bundle, config.svid.key_type).await {
            Ok(renewed) => {
                if let Err(error) = material.set_svid(&renewed) {
                    tracing::warn!("cannot use the renewed agent SVID: {error}");
                } else {
                    // New connections present the new SVID; the old connection's calls
                    // would go on presenting the old one (see ServerChannel).
                    if let Err(error) = server.reconnect() {
                        tracing::warn!("cannot reconnect with the renewed agent SVID: {error}");
                    }
                    if let Err(error) = identity::store_svid(&config.data_dir, &renewed) {
                        tracing::warn!("cannot store the renewed agent SVID: {error}");
                    }
                }
                tracing::info!(spiffe_id = %renewed.spiffe_id(), "agent SVID renewed");
                svid = renewed;
                due = renewal_time(&svid);
                backoff.reset();
            }
            Err(error) => {
                let delay = backoff.next_delay();
                if svid.not_after() <= SystemTime::now() {
                    tracing::error!(
                        "the agent SVID has expired and renewal failed ({error}): the agent \
                         must attest again (restart it with a new join token)"
                    );
                } else {
                    tracing::warn!("agent SVID renewal failed: {error}; retrying in {delay:?}");
                }
                due = SystemTime::now() + delay;
            }
        }
    }
}

fn renewal_time(svid: &X509Svid) -> SystemTime {
    let now = SystemTime::now();
    let remaining = svid.not_after().duration_since(now).unwrap_or_default();
    // Without the start time at hand, half of what is left, minus up to 10% jitter, is at or
    // before the half-life point of an SVID read just after it was issued.
    now + remaining.mul_f64(0.5 - 0.05 * unit_random())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_but_no_other_file_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777, "world-connectable by design");
        drop(listener);

        let file = dir.path().join("precious");
        std::fs::write(&file, "keep me").unwrap();
        let error = bind_socket(&file).unwrap_err().to_string();
        assert!(error.contains("not a socket"), "{error}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
