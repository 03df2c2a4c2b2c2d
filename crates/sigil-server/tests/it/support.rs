//! Shared fixtures: a server state over a real SQLite datastore and an in-memory CA.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_server::ca::{CaSettings, CertificateAuthority, MemoryKeyManager};
use sigil_server::datastore::DataStore;
use sigil_server::state::{ServerState, StateSettings};
use sigil_spiffe::{KeyType, TrustDomain};

/// A server state for `example.org` in a temporary directory (kept alive by the fixture).
#[allow(dead_code)] // `dir` keeps the temporary directory alive; some tests read it.
pub(crate) struct TestState {
    pub(crate) state: Arc<ServerState>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) fn trust_domain() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// A fresh state: SQLite datastore, a new CA (P-256, 24h), SVID TTLs 1h / 5m.
pub(crate) async fn state() -> TestState {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite3").display());
    let store = DataStore::open(&url).await.unwrap();
    let state = state_on(store).await;
    TestState { state, dir }
}

/// A state over an existing datastore with a new CA.
pub(crate) async fn state_on(store: DataStore) -> Arc<ServerState> {
    let (ca, _) = CertificateAuthority::start(
        CaSettings {
            trust_domain: trust_domain(),
            key_type: KeyType::EcP256,
            ttl: Duration::from_secs(24 * 3600),
        },
        Arc::new(MemoryKeyManager::new()),
        None,
        None,
        SystemTime::now(),
    )
    .unwrap();
    let settings = StateSettings {
        trust_domain: trust_domain(),
        default_x509_ttl: Duration::from_secs(3600),
        default_jwt_ttl: Duration::from_secs(300),
        jwt_issuer: None,
    };
    Arc::new(ServerState::load(settings, store, ca).await.unwrap())
}
