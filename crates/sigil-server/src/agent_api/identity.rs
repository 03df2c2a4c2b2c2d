//! The server's own X.509-SVID (`spiffe://<td>/sigil/server`), which it presents to agents:
//! signed by its own CA with a key that never leaves memory, renewed at half its life, and
//! trusting our current bundle, both swapped in place while connections are served.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_spiffe::tls::{TlsError, TlsMaterial};
use sigil_spiffe::x509::{X509Svid, X509SvidError, create_csr};
use sigil_spiffe::{BundleSet, KeyError, KeyType, PrivateKey};

use crate::ca::CaError;
use crate::state::ServerState;

/// Why the server's own SVID could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A key could not be generated.
    #[error("cannot generate the server's key: {0}")]
    Key(#[from] KeyError),
    /// The CSR or the SVID was refused.
    #[error("server svid: {0}")]
    Svid(#[from] X509SvidError),
    /// The CA could not sign.
    #[error("server svid: {0}")]
    Ca(#[from] CaError),
    /// rustls refused the SVID.
    #[error("server svid: {0}")]
    Tls(#[from] TlsError),
}

/// The server's own SVID as TLS material, kept current by a task of its own until this is
/// dropped. The agent API presents it, and so does the bundle endpoint in the `https_spiffe`
/// profile: one identity, rotated once, for both.
#[derive(Debug)]
pub struct ServerIdentity {
    material: Arc<TlsMaterial>,
    keeper: tokio::task::JoinHandle<()>,
}

impl ServerIdentity {
    /// Signs the server's SVID now and starts keeping it current.
    pub fn start(state: &Arc<ServerState>) -> Result<Self, IdentityError> {
        let svid = issue_server_svid(state)?;
        let material = Arc::new(TlsMaterial::new(&svid, own_bundle_set(state))?);
        let keeper = tokio::spawn(keep_current(
            Arc::clone(state),
            Arc::clone(&material),
            svid.not_after(),
        ));
        Ok(Self { material, keeper })
    }

    /// The SVID and the bundle it trusts, swapped in place on renewal.
    pub fn material(&self) -> &Arc<TlsMaterial> {
        &self.material
    }
}

impl Drop for ServerIdentity {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Signs a new SVID for the server.
pub(super) fn issue_server_svid(state: &ServerState) -> Result<X509Svid, IdentityError> {
    let key = PrivateKey::generate(KeyType::EcP256)?;
    let csr = create_csr(&key, state.server_id())?;
    let issued = state.ca().sign_x509_svid(
        &csr,
        state.server_id().clone(),
        Vec::new(),
        state.default_x509_ttl(),
        SystemTime::now(),
    )?;
    Ok(X509Svid::new(issued.into_cert_chain(), key)?)
}

/// Our own trust domain's bundle, the only one agents' SVIDs chain to.
pub(super) fn own_bundle_set(state: &ServerState) -> BundleSet {
    [state.own_bundle()].into_iter().collect()
}

/// Keeps `material` current until the task is dropped: a new SVID at half the current one's
/// remaining life (retried every few seconds on failure), the bundle whenever it changes.
pub(super) async fn keep_current(
    state: Arc<ServerState>,
    material: Arc<TlsMaterial>,
    svid_ends: SystemTime,
) {
    let mut bundles = state.hub().subscribe_bundles();
    let mut renew_at = half_life(svid_ends);
    loop {
        tokio::select! {
            () = tokio::time::sleep(renew_at) => {
                let issued = {
                    let state = Arc::clone(&state);
                    tokio::task::spawn_blocking(move || issue_server_svid(&state)).await
                };
                renew_at = match issued {
                    Ok(Ok(svid)) => match material.set_svid(&svid) {
                        Ok(()) => {
                            tracing::info!(not_after = ?svid.not_after(), "server svid renewed");
                            half_life(svid.not_after())
                        }
                        Err(error) => retry(&error),
                    },
                    Ok(Err(error)) => retry(&error),
                    Err(error) => retry(&error),
                };
            }
            changed = bundles.changed() => {
                if changed.is_err() {
                    return;
                }
                material.set_bundles(own_bundle_set(&state));
            }
        }
    }
}

fn half_life(ends: SystemTime) -> Duration {
    ends.duration_since(SystemTime::now()).unwrap_or_default() / 2
}

fn retry(error: &dyn std::fmt::Display) -> Duration {
    tracing::error!(%error, "cannot renew the server svid; retrying");
    Duration::from_secs(5)
}
