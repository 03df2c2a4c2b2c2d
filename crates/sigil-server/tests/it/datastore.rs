//! The datastore conformance suite: every case runs on SQLite (a file in a temporary
//! directory), on PostgreSQL when `SIGIL_TEST_POSTGRES_URL` is set and on MySQL/MariaDB when
//! `SIGIL_TEST_MYSQL_URL` is set. Those URLs point at a server with admin rights; each test
//! creates a fresh database through it and drops it afterwards.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_core::{AttestedNode, EntryId, JoinToken, RegistrationEntry, Selector, SelectorSet};
use sigil_server::config::{FederatesWith, RemoteProfile};
use sigil_server::datastore::{
    DataStore, DataStoreError, EntryFilter, Event, EventKind, FeedCursor, NodeFilter, PeerRecord,
    PublishedAuthority, SCHEMA_VERSION,
};
use sigil_spiffe::x509::{CaParams, X509Authority};
use sigil_spiffe::{Bundle, JwtAuthority, KeyType, PrivateKey, SpiffeId, TrustDomain};
use sqlx::{AssertSqlSafe, Connection};
use zeroize::Zeroizing;

/// The start of every test's clock (2026-11-23).
const T0: i64 = 1_795_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

/// What a case gets: the store, its URL (to reopen it) and the clock it reads.
struct Ctx {
    store: DataStore,
    url: String,
    clock: Arc<AtomicI64>,
    /// The admin URL (PostgreSQL, MySQL) or the temporary directory (SQLite) where
    /// `spare_url` makes more databases.
    admin: Option<String>,
    dir: std::path::PathBuf,
    spares: Arc<Mutex<Vec<String>>>,
}

impl Ctx {
    fn set_now(&self, now: i64) {
        self.clock.store(now, Ordering::SeqCst);
    }

    /// A new, empty database (dropped with the test's own).
    async fn spare_url(&self) -> String {
        let name = format!("sigil_test_{}", uuid::Uuid::new_v4().simple());
        match &self.admin {
            None => format!("sqlite://{}", self.dir.join(name).display()),
            Some(admin) => {
                admin_exec(admin, &format!("CREATE DATABASE {name}")).await;
                self.spares.lock().unwrap().push(name.clone());
                with_database(admin, &name)
            }
        }
    }

    /// Opens the same database again, with the same clock.
    async fn reopen(&self) -> Result<DataStore, DataStoreError> {
        let clock = self.clock.clone();
        Ok(DataStore::open(&self.url)
            .await?
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst))))
    }
}

/// Runs one case on one backend in a fresh database, then drops the database (also when the
/// case panicked: it runs in its own task so that cleanup still happens).
async fn run<F, Fut>(kind: Kind, case: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let env = match kind {
        Kind::Sqlite => None,
        Kind::Postgres => Some("SIGIL_TEST_POSTGRES_URL"),
        Kind::Mysql => Some("SIGIL_TEST_MYSQL_URL"),
    };
    let admin_url = match env {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!("skipped: {var} not set");
                return;
            }
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let name = format!("sigil_test_{}", uuid::Uuid::new_v4().simple());
    let url = match &admin_url {
        None => format!(
            "sqlite://{}",
            dir.path().join("datastore.sqlite3").display()
        ),
        Some(admin) => {
            admin_exec(admin, &format!("CREATE DATABASE {name}")).await;
            with_database(admin, &name)
        }
    };
    let clock = Arc::new(AtomicI64::new(T0));
    let clock2 = clock.clone();
    let store = DataStore::open(&url)
        .await
        .unwrap()
        .with_clock(Arc::new(move || clock2.load(Ordering::SeqCst)));
    let spares = Arc::new(Mutex::new(Vec::new()));
    let ctx = Ctx {
        store: store.clone(),
        url,
        clock,
        admin: admin_url.clone(),
        dir: dir.path().to_owned(),
        spares: spares.clone(),
    };
    let outcome = tokio::spawn(case(ctx)).await;
    store.close().await;
    if let Some(admin) = &admin_url {
        let spares = spares.lock().unwrap().clone();
        for name in std::iter::once(name).chain(spares) {
            admin_exec(admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
        }
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// The admin URL with its database name replaced.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').unwrap();
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

async fn admin_exec(admin: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin).await.unwrap();
    sqlx::query(AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// One `#[tokio::test]` per (case, backend).
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run(super::Kind::Sqlite, super::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run(super::Kind::Postgres, super::$case).await;
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run(super::Kind::Mysql, super::$case).await;
                }
            )*
        }
    };
}

suite!(
    bundles_round_trip_through_the_document,
    bundle_not_found,
    nodes_create_get_list_update,
    nodes_ban_and_delete,
    node_not_found,
    entries_round_trip_every_field,
    duplicate_entries_are_refused_and_change_nothing,
    duplicate_entries_refused_under_concurrency,
    update_bumps_revision_and_refuses_duplicates,
    entry_not_found,
    entry_filters,
    entry_paging,
    join_tokens_are_single_use,
    join_tokens_single_use_under_concurrency,
    expired_join_tokens_are_refused_and_pruned,
    join_tokens_are_stored_hashed,
    ca_journal_round_trip,
    events_follow_every_change_in_order,
    events_prune,
    schema_newer_than_the_build_is_refused,
    servers_starting_together_migrate_once,
    reopen_keeps_data,
    federation_relationships_create_get_list_update_delete,
    federation_relationship_errors_change_nothing,
    version_1_database_is_migrated_to_the_current_schema,
    published_authorities_make_one_bundle_of_every_instance,
    publishers_at_once_lose_no_authority,
    the_feed_waits_for_an_event_that_commits_late,
    a_batch_of_entries_is_one_transaction_and_a_refused_one_changes_nothing,
    racing_batches_store_a_registration_once,
    new_servers_saving_their_rows_at_once_all_succeed,
    a_federated_bundle_first_stored_by_servers_at_once_is_stored_once,
    the_sweep_applies_an_event_committed_after_its_hole_was_given_up,
    server_peers_are_live_while_refreshed_and_withdrawn_at_stop,
);

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn sel(s: &str) -> Selector {
    s.parse().unwrap()
}

fn selectors(list: &[&str]) -> SelectorSet {
    list.iter().map(|s| sel(s)).collect()
}

fn entry(entry_id: &str, spiffe_id: &str, parent: &str, sels: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: entry_id.parse().unwrap(),
        spiffe_id: id(spiffe_id),
        parent_id: id(parent),
        selectors: selectors(sels),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        dns_names: vec![],
        federates_with: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        revision: 0,
        created_at: T0,
    }
}

const AGENT: &str = "spiffe://example.org/sigil/agent/join_token/n1";

fn node(spiffe_id: &str, attestation_type: &str) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(spiffe_id),
        attestation_type: attestation_type.into(),
        cert_serial: "0a1b".into(),
        cert_not_after: T0 + 3600,
        banned: false,
        can_reattest: false,
        selectors: selectors(&["join_token:n1", "region:eu:west"]),
        created_at: T0,
    }
}

fn token(secret: &str, expires_at: i64) -> JoinToken {
    JoinToken {
        token: Zeroizing::new(secret.into()),
        expires_at,
        spiffe_id: Some(id(AGENT)),
    }
}

fn kinds(events: &[Event]) -> Vec<(EventKind, &str)> {
    events.iter().map(|e| (e.kind, e.key.as_str())).collect()
}

async fn bundles_round_trip_through_the_document(ctx: Ctx) {
    let s = &ctx.store;
    let mut bundle = Bundle::new(td("example.org"));
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    bundle
        .jwt_mut()
        .add_authority(JwtAuthority::new("k1", key.public_key()).unwrap());
    bundle.set_sequence(Some(7));
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));
    s.set_bundle(&bundle).await.unwrap();
    assert_eq!(
        s.bundle(&td("example.org")).await.unwrap(),
        Some(bundle.clone())
    );

    let federated = Bundle::new(td("b.test"));
    s.set_bundle(&federated).await.unwrap();
    let listed = s.list_bundles().await.unwrap();
    assert_eq!(listed, vec![federated.clone(), bundle.clone()]);

    bundle.set_sequence(Some(8));
    s.set_bundle(&bundle).await.unwrap();
    let got = s.bundle(&td("example.org")).await.unwrap().unwrap();
    assert_eq!(got.sequence(), Some(8));

    s.delete_bundle(&td("b.test")).await.unwrap();
    assert_eq!(s.bundle(&td("b.test")).await.unwrap(), None);
    assert_eq!(s.list_bundles().await.unwrap(), vec![bundle]);
}

async fn bundle_not_found(ctx: Ctx) {
    let err = ctx
        .store
        .delete_bundle(&td("nowhere.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DataStoreError::NotFound { kind: "bundle", key } if key == "nowhere.test"),
        "{err}"
    );
    assert_eq!(err.to_string(), "bundle nowhere.test not found");
    assert_eq!(ctx.store.latest_event_id().await.unwrap(), 0);
}

async fn nodes_create_get_list_update(ctx: Ctx) {
    let s = &ctx.store;
    let n1 = node(AGENT, "join_token");
    s.create_node(&n1).await.unwrap();
    assert_eq!(s.node(&n1.spiffe_id).await.unwrap(), Some(n1.clone()));
    let err = s.create_node(&n1).await.unwrap_err();
    assert!(
        matches!(err, DataStoreError::AlreadyExists { kind: "node", .. }),
        "{err}"
    );

    let mut n2 = node("spiffe://example.org/sigil/agent/x509pop/n2", "x509pop");
    n2.selectors = SelectorSet::new();
    n2.can_reattest = true;
    s.create_node(&n2).await.unwrap();

    assert_eq!(
        s.list_nodes(&NodeFilter::all()).await.unwrap(),
        vec![n1.clone(), n2.clone()]
    );
    assert_eq!(
        s.list_nodes(&NodeFilter::all().attestation_type("x509pop"))
            .await
            .unwrap(),
        vec![n2.clone()]
    );

    s.update_node_certificate(&n1.spiffe_id, "ffee", T0 + 7200)
        .await
        .unwrap();
    let got = s.node(&n1.spiffe_id).await.unwrap().unwrap();
    assert_eq!(
        (got.cert_serial.as_str(), got.cert_not_after),
        ("ffee", T0 + 7200)
    );
    assert_eq!(
        s.list_nodes(&NodeFilter::all().expires_before(T0 + 7000))
            .await
            .unwrap(),
        vec![n2.clone()]
    );

    let new = selectors(&["join_token:n1", "tpm:pub_hash:abc"]);
    s.set_node_selectors(&n1.spiffe_id, &new).await.unwrap();
    assert_eq!(s.node_selectors(&n1.spiffe_id).await.unwrap(), new);
    assert_eq!(s.node(&n1.spiffe_id).await.unwrap().unwrap().selectors, new);
    assert_eq!(
        s.node_selectors(&n2.spiffe_id).await.unwrap(),
        SelectorSet::new()
    );
}

async fn nodes_ban_and_delete(ctx: Ctx) {
    let s = &ctx.store;
    let n1 = node(AGENT, "join_token");
    let n2 = node(
        "spiffe://example.org/sigil/agent/join_token/n2",
        "join_token",
    );
    s.create_node(&n1).await.unwrap();
    s.create_node(&n2).await.unwrap();
    s.set_node_banned(&n1.spiffe_id, true).await.unwrap();
    // Banning twice is not an error (MySQL reports matched, not changed, rows).
    s.set_node_banned(&n1.spiffe_id, true).await.unwrap();
    assert!(s.node(&n1.spiffe_id).await.unwrap().unwrap().banned);
    let banned = s.list_nodes(&NodeFilter::all().banned(true)).await.unwrap();
    assert_eq!(
        banned.iter().map(|n| &n.spiffe_id).collect::<Vec<_>>(),
        [&n1.spiffe_id]
    );
    let fine = s
        .list_nodes(&NodeFilter::all().banned(false))
        .await
        .unwrap();
    assert_eq!(fine, vec![n2.clone()]);
    s.set_node_banned(&n1.spiffe_id, false).await.unwrap();
    assert!(!s.node(&n1.spiffe_id).await.unwrap().unwrap().banned);

    s.delete_node(&n1.spiffe_id).await.unwrap();
    assert_eq!(s.node(&n1.spiffe_id).await.unwrap(), None);
    assert_eq!(s.list_nodes(&NodeFilter::all()).await.unwrap(), vec![n2]);
    // The node may attest again, with fresh selectors.
    let mut again = n1.clone();
    again.selectors = selectors(&["join_token:other"]);
    s.create_node(&again).await.unwrap();
    assert_eq!(s.node(&n1.spiffe_id).await.unwrap(), Some(again));
}

async fn node_not_found(ctx: Ctx) {
    let s = &ctx.store;
    let missing = id("spiffe://example.org/sigil/agent/join_token/missing");
    assert_eq!(s.node(&missing).await.unwrap(), None);
    let errors = [
        s.update_node_certificate(&missing, "01", T0)
            .await
            .unwrap_err(),
        s.set_node_banned(&missing, true).await.unwrap_err(),
        s.set_node_selectors(&missing, &selectors(&["a:b"]))
            .await
            .unwrap_err(),
        s.node_selectors(&missing).await.unwrap_err(),
        s.delete_node(&missing).await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(
            err.to_string(),
            "node spiffe://example.org/sigil/agent/join_token/missing not found"
        );
    }
    assert_eq!(s.latest_event_id().await.unwrap(), 0);
}

fn full_entry() -> RegistrationEntry {
    let mut e = entry(
        "full-1",
        "spiffe://example.org/web",
        AGENT,
        &["unix:uid:1000", "unix:gid:50", "k8s:ns:Default"],
    );
    e.x509_svid_ttl = Some(Duration::from_secs(3600));
    e.jwt_svid_ttl = Some(Duration::from_secs(300));
    e.dns_names = vec!["web.example.org".into(), "a.example.org".into()];
    e.federates_with = vec![td("z.test"), td("b.test")];
    e.admin = true;
    e.downstream = true;
    e.hint = "external: ünïcode".into();
    e.expires_at = Some(T0 + 86_400);
    e
}

async fn entries_round_trip_every_field(ctx: Ctx) {
    let s = &ctx.store;
    let e = full_entry();
    let stored = s.create_entry(&e).await.unwrap();
    let mut expected = e.clone();
    expected.revision = 1;
    assert_eq!(stored, expected);
    assert_eq!(s.entry(&e.id).await.unwrap(), Some(expected.clone()));

    let mut plain = entry("x", "spiffe://example.org/db", AGENT, &["unix:uid:0"]);
    plain.id = DataStore::generate_entry_id();
    assert_eq!(plain.id.as_str().len(), 36);
    s.create_entry(&plain).await.unwrap();
    plain.revision = 1;
    let mut all = vec![expected, plain];
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(s.all_entries().await.unwrap(), all);

    let err = s.create_entry(&full_entry()).await.unwrap_err();
    assert!(
        matches!(err, DataStoreError::AlreadyExists { kind: "entry", .. }),
        "{err}"
    );
}

async fn duplicate_entries_are_refused_and_change_nothing(ctx: Ctx) {
    let s = &ctx.store;
    let first = entry(
        "e1",
        "spiffe://example.org/web",
        AGENT,
        &["unix:uid:1", "unix:gid:2"],
    );
    s.create_entry(&first).await.unwrap();
    let before_events = s.latest_event_id().await.unwrap();
    let before = s.all_entries().await.unwrap();

    // Same registration, other ID, other fields, selectors in another order.
    let mut dup = entry(
        "e2",
        "spiffe://example.org/web",
        AGENT,
        &["unix:gid:2", "unix:uid:1"],
    );
    dup.admin = true;
    dup.dns_names = vec!["x.example.org".into()];
    let err = s.create_entry(&dup).await.unwrap_err();
    assert!(
        matches!(&err, DataStoreError::DuplicateEntry { existing } if existing == "e1"),
        "{err}"
    );
    assert!(err.to_string().contains("e1"), "{err}");
    assert_eq!(s.all_entries().await.unwrap(), before);
    assert_eq!(s.latest_event_id().await.unwrap(), before_events);

    // A subset or superset of the selectors is another registration.
    s.create_entry(&entry(
        "e3",
        "spiffe://example.org/web",
        AGENT,
        &["unix:uid:1"],
    ))
    .await
    .unwrap();
    s.create_entry(&entry(
        "e4",
        "spiffe://example.org/web",
        "spiffe://example.org/sigil/agent/join_token/n2",
        &["unix:uid:1", "unix:gid:2"],
    ))
    .await
    .unwrap();
    // Selector values are compared exactly (case matters).
    s.create_entry(&entry(
        "e5",
        "spiffe://example.org/web",
        AGENT,
        &["unix:uid:1", "unix:gid:2", "k8s:ns:A"],
    ))
    .await
    .unwrap();
    s.create_entry(&entry(
        "e6",
        "spiffe://example.org/web",
        AGENT,
        &["unix:uid:1", "unix:gid:2", "k8s:ns:a"],
    ))
    .await
    .unwrap();
    assert_eq!(s.all_entries().await.unwrap().len(), 5);
}

async fn duplicate_entries_refused_under_concurrency(ctx: Ctx) {
    // Two writers racing with the same registration: the check in each transaction may pass
    // for both, and the unique index must then turn the loser into DuplicateEntry.
    for round in 0..5 {
        let spiffe_id = format!("spiffe://example.org/race{round}");
        let tasks: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|side| {
                let store = ctx.store.clone();
                let e = entry(
                    &format!("{side}{round}"),
                    &spiffe_id,
                    AGENT,
                    &["unix:uid:1"],
                );
                tokio::spawn(async move { (e.id.to_string(), store.create_entry(&e).await) })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (id, Ok(_)) => winners.push(id),
                (_, Err(DataStoreError::DuplicateEntry { existing })) => losers.push(existing),
                (_, Err(other)) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(losers, winners, "the loser names the winner");
        let filter = EntryFilter::all().spiffe_id(id(&spiffe_id));
        assert_eq!(count_entries(&ctx.store, &filter).await, 1);
    }
}

async fn count_entries(store: &DataStore, filter: &EntryFilter) -> usize {
    store
        .list_entries(filter, None, 0)
        .await
        .unwrap()
        .entries
        .len()
}

async fn update_bumps_revision_and_refuses_duplicates(ctx: Ctx) {
    let s = &ctx.store;
    let a = entry("a", "spiffe://example.org/a", AGENT, &["unix:uid:1"]);
    let b = entry("b", "spiffe://example.org/b", AGENT, &["unix:uid:2"]);
    s.create_entry(&a).await.unwrap();
    s.create_entry(&b).await.unwrap();

    let mut changed = full_entry();
    changed.id = a.id.clone();
    changed.revision = 99; // ignored: the store counts
    let stored = s.update_entry(&changed).await.unwrap();
    assert_eq!(stored.revision, 2);
    let mut expected = changed.clone();
    expected.revision = 2;
    assert_eq!(s.entry(&a.id).await.unwrap(), Some(expected.clone()));
    assert_eq!(s.update_entry(&expected).await.unwrap().revision, 3);

    // Fewer children after an update: the old ones are gone.
    let mut smaller = expected.clone();
    smaller.dns_names = vec![];
    smaller.federates_with = vec![td("b.test")];
    smaller.selectors = selectors(&["unix:uid:1000"]);
    s.update_entry(&smaller).await.unwrap();
    let got = s.entry(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            got.dns_names.len(),
            got.federates_with.len(),
            got.selectors.len()
        ),
        (0, 1, 1)
    );

    // Turning b into a copy of a's registration is refused, and b stays as it was.
    let before = s.entry(&b.id).await.unwrap().unwrap();
    let mut clash = got.clone();
    clash.id = b.id.clone();
    let err = s.update_entry(&clash).await.unwrap_err();
    assert!(
        matches!(&err, DataStoreError::DuplicateEntry { existing } if existing == "a"),
        "{err}"
    );
    assert_eq!(s.entry(&b.id).await.unwrap(), Some(before));
}

async fn entry_not_found(ctx: Ctx) {
    let s = &ctx.store;
    let missing: EntryId = "missing".parse().unwrap();
    assert_eq!(s.entry(&missing).await.unwrap(), None);
    let mut e = entry("missing", "spiffe://example.org/a", AGENT, &["unix:uid:1"]);
    e.revision = 1;
    for err in [
        s.update_entry(&e).await.unwrap_err(),
        s.delete_entry(&missing).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, DataStoreError::NotFound { kind: "entry", key } if key == "missing"),
            "{err}"
        );
        assert_eq!(err.to_string(), "entry missing not found");
    }
    assert_eq!(s.all_entries().await.unwrap(), vec![]);
    assert_eq!(s.latest_event_id().await.unwrap(), 0);
}

async fn entry_filters(ctx: Ctx) {
    let s = &ctx.store;
    let other_agent = "spiffe://example.org/sigil/agent/join_token/n2";
    for e in [
        entry(
            "1",
            "spiffe://example.org/web",
            AGENT,
            &["unix:uid:1", "unix:gid:1"],
        ),
        entry(
            "2",
            "spiffe://example.org/web",
            other_agent,
            &["unix:uid:1"],
        ),
        entry(
            "3",
            "spiffe://example.org/db",
            AGENT,
            &["unix:uid:2", "unix:gid:1"],
        ),
        entry(
            "4",
            "spiffe://example.org/Web",
            AGENT,
            &["unix:uid:1", "unix:gid:1", "k8s:ns:x"],
        ),
    ] {
        s.create_entry(&e).await.unwrap();
    }
    let ids = |page: sigil_server::datastore::EntryPage| {
        page.entries
            .into_iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>()
    };
    let list = |f: EntryFilter| async move { ids(s.list_entries(&f, None, 0).await.unwrap()) };
    assert_eq!(list(EntryFilter::all()).await, ["1", "2", "3", "4"]);
    assert_eq!(
        list(EntryFilter::all().spiffe_id(id("spiffe://example.org/web"))).await,
        ["1", "2"]
    );
    assert_eq!(
        list(EntryFilter::all().parent_id(id(other_agent))).await,
        ["2"]
    );
    assert_eq!(
        list(
            EntryFilter::all()
                .spiffe_id(id("spiffe://example.org/web"))
                .parent_id(id(AGENT))
        )
        .await,
        ["1"]
    );
    assert_eq!(
        list(EntryFilter::all().selector(sel("unix:uid:1"))).await,
        ["1", "2", "4"]
    );
    assert_eq!(
        list(
            EntryFilter::all()
                .selector(sel("unix:uid:1"))
                .selector(sel("unix:gid:1"))
        )
        .await,
        ["1", "4"]
    );
    assert_eq!(
        list(
            EntryFilter::all()
                .selector(sel("unix:gid:1"))
                .parent_id(id(AGENT))
                .selector(sel("k8s:ns:x"))
        )
        .await,
        ["4"]
    );
    assert_eq!(
        list(EntryFilter::all().selector(sel("unix:uid:3"))).await,
        Vec::<String>::new()
    );
    // Values compare exactly.
    assert_eq!(
        list(EntryFilter::all().selector(sel("k8s:ns:X"))).await,
        Vec::<String>::new()
    );
}

async fn entry_paging(ctx: Ctx) {
    let s = &ctx.store;
    for i in 0..25 {
        let e = entry(
            &format!("e{i:02}"),
            &format!("spiffe://example.org/w{i}"),
            AGENT,
            &[
                "unix:uid:1",
                if i % 2 == 0 {
                    "parity:even"
                } else {
                    "parity:odd"
                },
            ],
        );
        s.create_entry(&e).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<EntryId> = None;
    let mut pages = 0;
    loop {
        let page = s
            .list_entries(&EntryFilter::all(), after.as_ref(), 10)
            .await
            .unwrap();
        pages += 1;
        assert!(page.entries.len() <= 10);
        seen.extend(page.entries.iter().map(|e| e.id.to_string()));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.entries.last().map(|e| &e.id));
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("e{i:02}")).collect();
    assert_eq!(seen, expected);

    // The start-up reader, by ID range: the same entries with all their children, whatever
    // the page size (25 is a multiple of 5: the last full page is followed by an empty one).
    let all = s.all_entries().await.unwrap();
    for limit in [1, 5, 7, 25, 100] {
        let mut read = Vec::new();
        let mut after: Option<EntryId> = None;
        loop {
            let page = s.entries_after(after.as_ref(), limit).await.unwrap();
            assert!(page.entries.len() <= limit as usize);
            read.extend(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(read, all, "page size {limit}");
    }

    // Exactly one full page: no next page.
    let filter = EntryFilter::all().selector(sel("parity:odd"));
    let page = s.list_entries(&filter, None, 12).await.unwrap();
    assert_eq!(page.entries.len(), 12);
    assert_eq!(page.next, None);
    let page = s.list_entries(&filter, None, 5).await.unwrap();
    assert_eq!(page.next.as_ref().map(EntryId::as_str), Some("e09"));
    let rest = s
        .list_entries(&filter, page.next.as_ref(), 5)
        .await
        .unwrap();
    assert_eq!(rest.entries.first().map(|e| e.id.as_str()), Some("e11"));
}

async fn join_tokens_are_single_use(ctx: Ctx) {
    let s = &ctx.store;
    s.create_join_token(&token("t0k3n", T0 + 600))
        .await
        .unwrap();
    let err = s
        .create_join_token(&token("t0k3n", T0 + 600))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DataStoreError::AlreadyExists {
                kind: "join token",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("t0k3n"));
    let taken = s.take_join_token("t0k3n").await.unwrap();
    assert_eq!(taken, token("t0k3n", T0 + 600));
    let err = s.take_join_token("t0k3n").await.unwrap_err();
    assert!(
        matches!(
            err,
            DataStoreError::NotFound {
                kind: "join token",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("t0k3n"));
    assert!(matches!(
        s.take_join_token("never-issued").await.unwrap_err(),
        DataStoreError::NotFound { .. }
    ));
    let mut anonymous = token("anon", T0 + 1);
    anonymous.spiffe_id = None;
    s.create_join_token(&anonymous).await.unwrap();
    assert_eq!(s.take_join_token("anon").await.unwrap(), anonymous);
}

async fn join_tokens_single_use_under_concurrency(ctx: Ctx) {
    for round in 0..10 {
        let secret = format!("race-{round}");
        ctx.store
            .create_join_token(&token(&secret, T0 + 600))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let store = ctx.store.clone();
                let secret = secret.clone();
                tokio::spawn(async move { store.take_join_token(&secret).await })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(DataStoreError::NotFound { .. }) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

async fn expired_join_tokens_are_refused_and_pruned(ctx: Ctx) {
    let s = &ctx.store;
    s.create_join_token(&token("soon", T0 + 10)).await.unwrap();
    s.create_join_token(&token("later", T0 + 100))
        .await
        .unwrap();
    s.create_join_token(&token("old", T0 + 5)).await.unwrap();
    ctx.set_now(T0 + 10);
    let err = s.take_join_token("soon").await.unwrap_err();
    assert!(matches!(err, DataStoreError::TokenExpired), "{err}");
    // Refused once, gone for good.
    assert!(matches!(
        s.take_join_token("soon").await.unwrap_err(),
        DataStoreError::NotFound { .. }
    ));
    assert_eq!(s.prune_join_tokens().await.unwrap(), 1); // "old"
    assert!(matches!(
        s.take_join_token("old").await.unwrap_err(),
        DataStoreError::NotFound { .. }
    ));
    assert_eq!(
        s.take_join_token("later").await.unwrap().expires_at,
        T0 + 100
    );
}

async fn join_tokens_are_stored_hashed(ctx: Ctx) {
    ctx.store
        .create_join_token(&token("plain-secret-value", T0 + 60))
        .await
        .unwrap();
    ctx.store.close().await;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&ctx.url).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM join_tokens")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"plain-secret-value");
    let hex: String = expected
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(rows, vec![(hex,)]);
}

async fn ca_journal_round_trip(ctx: Ctx) {
    let s = &ctx.store;
    assert_eq!(s.ca_journal("server-a").await.unwrap(), None);
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    s.set_ca_journal("server-a", &blob).await.unwrap();
    s.set_ca_journal("server-b", b"b").await.unwrap();
    assert_eq!(s.ca_journal("server-a").await.unwrap(), Some(blob));
    s.set_ca_journal("server-a", b"\x00second").await.unwrap();
    assert_eq!(
        s.ca_journal("server-a").await.unwrap(),
        Some(b"\x00second".to_vec())
    );
    assert_eq!(s.ca_journal("server-b").await.unwrap(), Some(b"b".to_vec()));
}

async fn events_follow_every_change_in_order(ctx: Ctx) {
    let s = &ctx.store;
    let n = node(AGENT, "join_token");
    let e = entry("e1", "spiffe://example.org/web", AGENT, &["unix:uid:1"]);
    s.create_node(&n).await.unwrap();
    s.create_entry(&e).await.unwrap();
    ctx.set_now(T0 + 1);
    s.update_entry(&e).await.unwrap();
    s.set_bundle(&Bundle::new(td("example.org"))).await.unwrap();
    s.set_bundle(&Bundle::new(td("example.org"))).await.unwrap();
    s.update_node_certificate(&n.spiffe_id, "02", T0 + 99)
        .await
        .unwrap();
    s.set_node_banned(&n.spiffe_id, true).await.unwrap();
    s.set_node_selectors(&n.spiffe_id, &selectors(&["a:b"]))
        .await
        .unwrap();
    s.delete_entry(&e.id).await.unwrap();
    s.delete_bundle(&td("example.org")).await.unwrap();
    s.delete_node(&n.spiffe_id).await.unwrap();
    // Failed changes record nothing; tokens and journals are not in the feed.
    s.delete_entry(&e.id).await.unwrap_err();
    s.create_join_token(&token("t", T0 + 9)).await.unwrap();
    s.set_ca_journal("s", b"j").await.unwrap();

    let events = s.events_after(0, 100).await.unwrap();
    use EventKind::*;
    assert_eq!(
        kinds(&events),
        vec![
            (NodeCreated, AGENT),
            (EntryCreated, "e1"),
            (EntryUpdated, "e1"),
            (BundleCreated, "example.org"),
            (BundleUpdated, "example.org"),
            (NodeUpdated, AGENT),
            (NodeUpdated, AGENT),
            (NodeUpdated, AGENT),
            (EntryDeleted, "e1"),
            (BundleDeleted, "example.org"),
            (NodeDeleted, AGENT),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!((events[1].created_at, events[2].created_at), (T0, T0 + 1));
    assert_eq!(s.latest_event_id().await.unwrap(), events[10].id);
    let tail = s.events_after(events[7].id, 2).await.unwrap();
    assert_eq!(tail, events[8..10].to_vec());
    assert_eq!(s.events_after(events[10].id, 10).await.unwrap(), vec![]);
}

async fn events_prune(ctx: Ctx) {
    let s = &ctx.store;
    s.set_bundle(&Bundle::new(td("a.test"))).await.unwrap();
    ctx.set_now(T0 + 100);
    s.set_bundle(&Bundle::new(td("b.test"))).await.unwrap();
    assert_eq!(s.prune_events(T0 + 100).await.unwrap(), 1);
    let left = s.events_after(0, 10).await.unwrap();
    assert_eq!(kinds(&left), vec![(EventKind::BundleCreated, "b.test")]);
    // Ids keep increasing after a prune.
    s.delete_bundle(&td("a.test")).await.unwrap();
    assert!(s.latest_event_id().await.unwrap() > left[0].id);
}

async fn schema_newer_than_the_build_is_refused(ctx: Ctx) {
    assert_eq!(ctx.store.schema_version().await.unwrap(), SCHEMA_VERSION);
    // Opening again migrates nothing and works.
    ctx.reopen().await.unwrap().close().await;
    ctx.store.close().await;
    let newer = SCHEMA_VERSION + 1;
    let mut conn = sqlx::AnyConnection::connect(&ctx.url).await.unwrap();
    let bump =
        format!("UPDATE schema_version SET version = {newer} WHERE version = {SCHEMA_VERSION}");
    sqlx::query(AssertSqlSafe(bump))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = ctx.reopen().await.unwrap_err();
    assert!(
        matches!(err, DataStoreError::SchemaTooNew { found, supported } if found == newer && supported == SCHEMA_VERSION),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&newer.to_string()) && message.contains(&SCHEMA_VERSION.to_string()),
        "{message}"
    );
}

async fn servers_starting_together_migrate_once(ctx: Ctx) {
    // Three servers open the same empty database at once: one migrates, the others wait for
    // it and find the schema current.
    let url = ctx.spare_url().await;
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { DataStore::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap());
    }
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let versions: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM schema_version ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    // Each version recorded once.
    let expected: Vec<(i64,)> = (1..=SCHEMA_VERSION).map(|v| (v,)).collect();
    assert_eq!(versions, expected);
    stores[0]
        .create_entry(&entry(
            "e1",
            "spiffe://example.org/a",
            AGENT,
            &["unix:uid:1"],
        ))
        .await
        .unwrap();
    assert_eq!(stores[2].all_entries().await.unwrap().len(), 1);
    for store in stores {
        store.close().await;
    }
}

async fn reopen_keeps_data(ctx: Ctx) {
    let s = &ctx.store;
    let e = full_entry();
    s.create_entry(&e).await.unwrap();
    s.create_node(&node(AGENT, "join_token")).await.unwrap();
    s.set_bundle(&Bundle::new(td("example.org"))).await.unwrap();
    s.create_join_token(&token("kept", T0 + 600)).await.unwrap();
    s.set_ca_journal("srv", b"journal").await.unwrap();
    let events = s.events_after(0, 100).await.unwrap();
    s.close().await;

    let again = ctx.reopen().await.unwrap();
    let mut expected = e.clone();
    expected.revision = 1;
    assert_eq!(again.entry(&e.id).await.unwrap(), Some(expected));
    assert_eq!(
        again.node(&id(AGENT)).await.unwrap(),
        Some(node(AGENT, "join_token"))
    );
    assert_eq!(again.list_bundles().await.unwrap().len(), 1);
    assert_eq!(
        again.ca_journal("srv").await.unwrap(),
        Some(b"journal".to_vec())
    );
    assert_eq!(again.events_after(0, 100).await.unwrap(), events);
    assert!(again.take_join_token("kept").await.is_ok());
    again.close().await;
}

/// The in-memory SQLite store works too (one connection, so every query sees the same data).
#[tokio::test]
async fn sqlite_in_memory() {
    let store = DataStore::open("sqlite::memory:").await.unwrap();
    let e = entry("m1", "spiffe://example.org/web", AGENT, &["unix:uid:1"]);
    store.create_entry(&e).await.unwrap();
    assert_eq!(
        store.entry(&e.id).await.unwrap().map(|e| e.revision),
        Some(1)
    );
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1);
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let err = DataStore::open("redis://user:secret@host/0")
        .await
        .unwrap_err();
    assert!(matches!(err, DataStoreError::UnsupportedUrl(_)), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
}

fn spiffe_relationship(name: &str, url: &str) -> FederatesWith {
    FederatesWith::new(
        td(name),
        url,
        RemoteProfile::HttpsSpiffe {
            endpoint_spiffe_id: id(&format!("spiffe://{name}/sigil/server")),
            bundle_path: None,
        },
    )
}

fn web_relationship(name: &str, url: &str) -> FederatesWith {
    FederatesWith::new(
        td(name),
        url,
        RemoteProfile::HttpsWeb {
            ca_file: None,
            ca_roots: None,
        },
    )
}

async fn federation_relationships_create_get_list_update_delete(ctx: Ctx) {
    let s = &ctx.store;
    let after = s.latest_event_id().await.unwrap();
    let b = spiffe_relationship("b.test", "https://b.test:8443/");
    let a = web_relationship("a.test", "https://a.test/bundle");
    s.create_federation_relationship(&b).await.unwrap();
    s.create_federation_relationship(&a).await.unwrap();
    assert_eq!(
        s.federation_relationship(&td("b.test")).await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(
        s.list_federation_relationships().await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    // Update replaces every field, the profile included; roots given by value are stored.
    let b2 = FederatesWith::new(
        td("b.test"),
        "https://b.example.com/".to_owned(),
        RemoteProfile::HttpsWeb {
            ca_file: None,
            ca_roots: Some(b"-----BEGIN CERTIFICATE-----\nroots\n".to_vec()),
        },
    );
    s.update_federation_relationship(&b2).await.unwrap();
    assert_eq!(
        s.federation_relationship(&td("b.test")).await.unwrap(),
        Some(b2.clone())
    );
    let a2 = spiffe_relationship("a.test", "https://a.test:9443/");
    s.update_federation_relationship(&a2).await.unwrap();
    assert_eq!(
        s.list_federation_relationships().await.unwrap(),
        vec![a2.clone(), b2]
    );

    s.delete_federation_relationship(&td("b.test"))
        .await
        .unwrap();
    assert_eq!(
        s.federation_relationship(&td("b.test")).await.unwrap(),
        None
    );
    assert_eq!(s.list_federation_relationships().await.unwrap(), vec![a2]);

    let events = s.events_after(after, 100).await.unwrap();
    assert_eq!(
        kinds(&events),
        vec![
            (EventKind::FederationRelationshipCreated, "b.test"),
            (EventKind::FederationRelationshipCreated, "a.test"),
            (EventKind::FederationRelationshipUpdated, "b.test"),
            (EventKind::FederationRelationshipUpdated, "a.test"),
            (EventKind::FederationRelationshipDeleted, "b.test"),
        ]
    );
    // A reopened store reads the same relationships.
    let reopened = ctx.reopen().await.unwrap();
    assert_eq!(
        reopened.list_federation_relationships().await.unwrap(),
        s.list_federation_relationships().await.unwrap()
    );
    reopened.close().await;
}

async fn federation_relationship_errors_change_nothing(ctx: Ctx) {
    let s = &ctx.store;
    let b = spiffe_relationship("b.test", "https://b.test/");
    s.create_federation_relationship(&b).await.unwrap();
    let after = s.latest_event_id().await.unwrap();

    let err = s
        .create_federation_relationship(&web_relationship("b.test", "https://other/"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DataStoreError::AlreadyExists { key, .. } if key == "b.test"),
        "create over an existing one"
    );
    let err = s
        .update_federation_relationship(&web_relationship("c.test", "https://c.test/"))
        .await
        .unwrap_err();
    assert!(matches!(err, DataStoreError::NotFound { key, .. } if key == "c.test"));
    let err = s
        .delete_federation_relationship(&td("c.test"))
        .await
        .unwrap_err();
    assert!(matches!(err, DataStoreError::NotFound { .. }));
    // A file path of a config file is not something the store keeps.
    let with_path = FederatesWith::new(
        td("d.test"),
        "https://d.test/",
        RemoteProfile::HttpsWeb {
            ca_file: Some("/etc/ca.pem".into()),
            ca_roots: None,
        },
    );
    let err = s
        .create_federation_relationship(&with_path)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ca_file"),
        "the error names the field: {err}"
    );

    assert_eq!(s.list_federation_relationships().await.unwrap(), vec![b]);
    assert!(s.events_after(after, 100).await.unwrap().is_empty());
}

async fn version_1_database_is_migrated_to_the_current_schema(ctx: Ctx) {
    // Bring the database back to what a version-1 build left, with the own bundle a single
    // server of that build wrote: no later table, version 1 recorded.
    let example = td("example.org");
    let ca = ca_certificate();
    let mut legacy = Bundle::new(example.clone());
    legacy.x509_mut().add_authority(ca.clone());
    legacy.set_sequence(Some(41));
    ctx.store.set_bundle(&legacy).await.unwrap();
    ctx.store.close().await;
    let mut conn = sqlx::AnyConnection::connect(&ctx.url).await.unwrap();
    for statement in [
        "DROP TABLE federation_relationships",
        "DROP TABLE server_authorities",
        "DROP TABLE server_peers",
        "DELETE FROM schema_version WHERE version > 1",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = ctx.reopen().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let b = spiffe_relationship("b.test", "https://b.test/");
    store.create_federation_relationship(&b).await.unwrap();
    assert_eq!(
        store.list_federation_relationships().await.unwrap(),
        vec![b]
    );
    // The upgraded server publishes the authorities it had: the same content, the same
    // sequence number, so nobody sees a change.
    let published = store
        .publish_authorities(&example, "upgraded", &[x509(&ca, T0 + 100)])
        .await
        .unwrap();
    assert_eq!(published, legacy);
    store.announce_peer("upgraded", None).await.unwrap();
    assert_eq!(store.live_peers("other", 60).await.unwrap().len(), 1);
    store.close().await;
}

/// A self-signed CA certificate of example.org, as a server's X.509 authority.
fn ca_certificate() -> rustls_pki_types::CertificateDer<'static> {
    let now = std::time::SystemTime::now();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    X509Authority::self_signed(
        Arc::new(key),
        &CaParams::new(td("example.org"), now, now + Duration::from_secs(3600)),
    )
    .unwrap()
    .certificate()
    .clone()
}

fn x509(
    certificate: &rustls_pki_types::CertificateDer<'static>,
    not_after: i64,
) -> PublishedAuthority {
    PublishedAuthority::X509 {
        certificate: certificate.clone(),
        not_after,
    }
}

fn jwt(kid: &str, not_after: i64) -> PublishedAuthority {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    PublishedAuthority::Jwt {
        authority: JwtAuthority::new(kid, key.public_key()).unwrap(),
        not_after,
    }
}

fn x509_count(bundle: &Bundle) -> usize {
    bundle.x509().authorities().len()
}

fn kids(bundle: &Bundle) -> Vec<&str> {
    bundle
        .jwt()
        .authorities()
        .map(JwtAuthority::key_id)
        .collect()
}

async fn published_authorities_make_one_bundle_of_every_instance(ctx: Ctx) {
    let s = &ctx.store;
    let example = td("example.org");
    let (ca_a, ca_b, ca_b2) = (ca_certificate(), ca_certificate(), ca_certificate());
    let a = [x509(&ca_a, T0 + 100), jwt("ka", T0 + 100)];
    let first = s.publish_authorities(&example, "a", &a).await.unwrap();
    assert_eq!(first.sequence(), Some(1));
    assert_eq!((x509_count(&first), kids(&first)), (1, vec!["ka"]));
    assert_eq!(s.bundle(&example).await.unwrap(), Some(first.clone()));
    assert_eq!(s.other_publishers("a").await.unwrap(), 0);

    // Publishing the same again changes nothing, not even the sequence number or the feed.
    let events = s.latest_event_id().await.unwrap();
    assert_eq!(
        s.publish_authorities(&example, "a", &a).await.unwrap(),
        first
    );
    assert_eq!(s.latest_event_id().await.unwrap(), events);

    // A second instance: the bundle holds both, and each sees the other.
    let b = [x509(&ca_b, T0 + 200), jwt("kb", T0 + 200)];
    let both = s.publish_authorities(&example, "b", &b).await.unwrap();
    assert_eq!(both.sequence(), Some(2));
    assert_eq!((x509_count(&both), kids(&both)), (2, vec!["ka", "kb"]));
    assert_eq!(s.other_publishers("a").await.unwrap(), 1);
    assert_eq!(s.other_publishers("b").await.unwrap(), 1);
    assert_eq!(s.other_publishers("c").await.unwrap(), 2);
    let events_after = s.events_after(events, 10).await.unwrap();
    assert_eq!(
        kinds(&events_after),
        [(EventKind::BundleUpdated, "example.org")]
    );

    // b rotates (a new CA, the old one stays until it expires): a's authorities stay.
    let b = [
        x509(&ca_b, T0 + 200),
        x509(&ca_b2, T0 + 300),
        jwt("kb", T0 + 200),
    ];
    let rotated = s.publish_authorities(&example, "b", &b).await.unwrap();
    assert_eq!(rotated.sequence(), Some(3));
    assert_eq!(x509_count(&rotated), 3);
    assert!(rotated.x509().authorities().contains(&ca_a));

    // Past a's end, a's authorities leave with the next publication, whoever makes it.
    ctx.set_now(T0 + 150);
    let later = s.publish_authorities(&example, "b", &b).await.unwrap();
    assert_eq!(later.sequence(), Some(4));
    assert_eq!((x509_count(&later), kids(&later)), (2, vec!["kb"]));
    assert!(!later.x509().authorities().contains(&ca_a));
    assert_eq!(s.other_publishers("b").await.unwrap(), 0);
    // An authority already expired when published is not stored.
    let stale = s
        .publish_authorities(&example, "c", &[jwt("kc", T0 + 150)])
        .await
        .unwrap();
    assert_eq!(stale, later);
    // Other trust domains' bundles are not touched.
    s.set_bundle(&Bundle::new(td("peer.test"))).await.unwrap();
    s.publish_authorities(&example, "b", &b[..1]).await.unwrap();
    assert_eq!(
        s.bundle(&td("peer.test")).await.unwrap(),
        Some(Bundle::new(td("peer.test")))
    );
}

async fn publishers_at_once_lose_no_authority(ctx: Ctx) {
    // Eight servers on their own connections publish at the same moment, with no bundle
    // stored yet: every authority ends up in the bundle.
    let example = td("example.org");
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = ctx.reopen().await.unwrap();
        let example = example.clone();
        tasks.push(tokio::spawn(async move {
            let mine = [
                x509(&ca_certificate(), T0 + 100),
                jwt(&format!("k{n}"), T0 + 100),
            ];
            store
                .publish_authorities(&example, &format!("i{n}"), &mine)
                .await
                .unwrap();
            store.close().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let bundle = ctx.store.bundle(&example).await.unwrap().unwrap();
    assert_eq!(x509_count(&bundle), 8);
    assert_eq!(kids(&bundle).len(), 8);
    // Each publication that changed the content bumped the sequence once.
    assert_eq!(bundle.sequence(), Some(8));
}

async fn the_feed_waits_for_an_event_that_commits_late(ctx: Ctx) {
    let s = &ctx.store;
    let mut cursor = FeedCursor::new(s.latest_event_id().await.unwrap(), Duration::from_secs(60));
    s.create_entry(&entry(
        "e1",
        "spiffe://example.org/a",
        AGENT,
        &["unix:uid:1"],
    ))
    .await
    .unwrap();
    let read = s.follow(&mut cursor).await.unwrap();
    assert_eq!(kinds(&read.events), [(EventKind::EntryCreated, "e1")]);
    if ctx.admin.is_none() {
        // SQLite has one writer at a time: a transaction cannot commit around another.
        return;
    }
    // Another server's transaction takes the next event id and stays open while a later
    // change commits with a higher id.
    let mut conn = sqlx::AnyConnection::connect(&ctx.url).await.unwrap();
    let mut late = conn.begin().await.unwrap();
    insert_event(&mut late, &ctx.url, "late").await;
    s.create_entry(&entry(
        "e2",
        "spiffe://example.org/b",
        AGENT,
        &["unix:uid:2"],
    ))
    .await
    .unwrap();
    let read = s.follow(&mut cursor).await.unwrap();
    assert_eq!(kinds(&read.events), [(EventKind::EntryCreated, "e2")]);
    assert_eq!(
        cursor.gaps().count(),
        1,
        "the open transaction's id is a hole"
    );
    // It commits: the next read applies it, once.
    late.commit().await.unwrap();
    conn.close().await.unwrap();
    let read = s.follow(&mut cursor).await.unwrap();
    assert_eq!(kinds(&read.events), [(EventKind::EntryCreated, "late")]);
    assert_eq!(cursor.gaps().count(), 0);
    assert!(s.follow(&mut cursor).await.unwrap().events.is_empty());
}

async fn a_batch_of_entries_is_one_transaction_and_a_refused_one_changes_nothing(ctx: Ctx) {
    let s = &ctx.store;
    s.create_entry(&entry(
        "old",
        "spiffe://example.org/old",
        AGENT,
        &["unix:uid:9"],
    ))
    .await
    .unwrap();
    let before = s.latest_event_id().await.unwrap();
    let mut with_children = entry("b1", "spiffe://example.org/b1", AGENT, &["unix:uid:1"]);
    with_children.dns_names = vec!["b1.example.org".into()];
    with_children.federates_with = vec![td("peer.test")];
    let batch = [
        with_children.clone(),
        // The same registration as the first, in the same batch.
        entry("b2", "spiffe://example.org/b1", AGENT, &["unix:uid:1"]),
        // An ID in use.
        entry("old", "spiffe://example.org/other", AGENT, &["unix:uid:3"]),
        entry("b3", "spiffe://example.org/b3", AGENT, &["unix:uid:3"]),
    ];
    let results = s.create_entries(&batch).await.unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().revision, 1);
    assert!(
        matches!(&results[1], Err(DataStoreError::DuplicateEntry { existing }) if existing == "b1"),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(
            &results[2],
            Err(DataStoreError::AlreadyExists { kind: "entry", .. })
        ),
        "{:?}",
        results[2]
    );
    assert!(results[3].is_ok());
    // What was created is stored whole; what was refused left nothing, not even an event.
    let mut stored = s.entry(&"b1".parse().unwrap()).await.unwrap().unwrap();
    stored.revision = 0;
    let mut expected = with_children;
    expected.revision = 0;
    assert_eq!(stored, expected);
    assert!(s.entry(&"b2".parse().unwrap()).await.unwrap().is_none());
    assert_eq!(
        s.entry(&"old".parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .spiffe_id,
        id("spiffe://example.org/old")
    );
    let events = s.events_after(before, 10).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            (EventKind::EntryCreated, "b1"),
            (EventKind::EntryCreated, "b3")
        ]
    );
    // An empty batch is nothing.
    assert!(s.create_entries(&[]).await.unwrap().is_empty());
}

async fn racing_batches_store_a_registration_once(ctx: Ctx) {
    // Batches on their own connections at once, all with one shared registration and one of
    // their own: the shared one is stored once (the others are told which entry has it, by the
    // checks or, when they raced past them, by the unique index and the retry one by one).
    let mut tasks = Vec::new();
    for n in 0..6 {
        let store = ctx.reopen().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let batch = [
                entry(
                    &format!("own{n}"),
                    &format!("spiffe://example.org/own{n}"),
                    AGENT,
                    &["unix:uid:1"],
                ),
                entry(
                    &format!("shared{n}"),
                    "spiffe://example.org/shared",
                    AGENT,
                    &["unix:uid:2"],
                ),
            ];
            let results = store.create_entries(&batch).await.unwrap();
            store.close().await;
            results
        }));
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    for task in tasks {
        let results = task.await.unwrap();
        assert!(results[0].is_ok(), "{:?}", results[0]);
        match &results[1] {
            Ok(stored) => winners.push(stored.id.to_string()),
            Err(DataStoreError::DuplicateEntry { .. }) => losers += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(losers, 5);
    let shared = ctx
        .store
        .list_entries(&EntryFilter::default(), None, 0)
        .await
        .unwrap()
        .entries
        .into_iter()
        .filter(|e| e.spiffe_id == id("spiffe://example.org/shared"))
        .count();
    assert_eq!(shared, 1);
}

async fn new_servers_saving_their_rows_at_once_all_succeed(ctx: Ctx) {
    // Servers starting together each write their first CA journal and server_peers row, keys
    // new to the table, on their own connections at the same moment. InnoDB once deadlocked
    // two of them (an UPDATE of a missing row locks the gap the other's INSERT needs).
    for round in 0..5 {
        let mut tasks = Vec::new();
        // Connected first, then released together: the writes overlap.
        let start = Arc::new(tokio::sync::Barrier::new(8));
        for n in 0..8 {
            let store = ctx.reopen().await.unwrap();
            let start = Arc::clone(&start);
            tasks.push(tokio::spawn(async move {
                let instance = format!("r{round}i{n}");
                // A pooled connection open before the barrier.
                store.ca_journal("warm-up").await.unwrap();
                start.wait().await;
                store.set_ca_journal(&instance, b"journal").await.unwrap();
                store
                    .announce_peer(&instance, Some("127.0.0.1:8081"))
                    .await
                    .unwrap();
                store.close().await;
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    assert_eq!(
        ctx.store.ca_journal("r4i7").await.unwrap(),
        Some(b"journal".to_vec())
    );
    assert_eq!(ctx.store.live_peers("none", 60).await.unwrap().len(), 40);
}

async fn a_federated_bundle_first_stored_by_servers_at_once_is_stored_once(ctx: Ctx) {
    // Every server fetches each federated bundle on its own and stores what it got: the first
    // time, several insert the same new row at once. An UPDATE of the missing row and then an
    // INSERT failed one of them (PostgreSQL: a duplicate key; InnoDB: a deadlock).
    for round in 0..5 {
        let mut tasks = Vec::new();
        let start = Arc::new(tokio::sync::Barrier::new(8));
        for _ in 0..8 {
            let store = ctx.reopen().await.unwrap();
            let start = Arc::clone(&start);
            tasks.push(tokio::spawn(async move {
                store.ca_journal("warm-up").await.unwrap();
                start.wait().await;
                let mut bundle = Bundle::new(td(&format!("partner{round}.test")));
                bundle.set_sequence(Some(1));
                store.set_bundle(&bundle).await.unwrap();
                store.close().await;
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    let stored = ctx.store.list_bundles().await.unwrap();
    assert_eq!(stored.len(), 5);
    assert_eq!(
        ctx.store.bundle(&td("partner4.test")).await.unwrap(),
        Some({
            let mut bundle = Bundle::new(td("partner4.test"));
            bundle.set_sequence(Some(1));
            bundle
        })
    );
}

async fn server_peers_are_live_while_refreshed_and_withdrawn_at_stop(ctx: Ctx) {
    let s = &ctx.store;
    let peer = |id: &str, address: Option<&str>| PeerRecord {
        instance_id: id.to_owned(),
        address: address.map(str::to_owned),
    };
    s.announce_peer("a", Some("10.0.0.1:8081")).await.unwrap();
    s.announce_peer("b", None).await.unwrap();
    assert_eq!(s.live_peers("a", 20).await.unwrap(), [peer("b", None)]);
    assert_eq!(
        s.live_peers("b", 20).await.unwrap(),
        [peer("a", Some("10.0.0.1:8081"))]
    );
    // A refresh replaces the address; a row not refreshed goes stale.
    ctx.set_now(T0 + 30);
    s.announce_peer("a", Some("10.0.0.9:8081")).await.unwrap();
    assert_eq!(
        s.live_peers("b", 20).await.unwrap(),
        [peer("a", Some("10.0.0.9:8081"))]
    );
    assert_eq!(s.live_peers("a", 20).await.unwrap(), []);
    // Stopping deletes the own row; a stale one stays until it is old enough.
    s.withdraw_peer("a", 3600).await.unwrap();
    assert_eq!(s.live_peers("x", 100).await.unwrap(), [peer("b", None)]);
    ctx.set_now(T0 + 4000);
    s.withdraw_peer("c", 3600).await.unwrap();
    assert_eq!(s.live_peers("x", 10_000).await.unwrap(), []);
}

async fn the_sweep_applies_an_event_committed_after_its_hole_was_given_up(ctx: Ctx) {
    let Some(_) = &ctx.admin else {
        // SQLite has one writer at a time: a transaction cannot commit around another.
        return;
    };
    let s = &ctx.store;
    // Holes given up on at once, and the sweep due at every read.
    let mut cursor = FeedCursor::new(s.latest_event_id().await.unwrap(), Duration::ZERO)
        .with_sweep(Duration::ZERO, Duration::from_secs(3600));
    let mut conn = sqlx::AnyConnection::connect(&ctx.url).await.unwrap();
    let mut late = conn.begin().await.unwrap();
    insert_event(&mut late, &ctx.url, "very-late").await;
    s.create_entry(&entry(
        "e1",
        "spiffe://example.org/a",
        AGENT,
        &["unix:uid:1"],
    ))
    .await
    .unwrap();
    let read = s.follow(&mut cursor).await.unwrap();
    assert_eq!(kinds(&read.events), [(EventKind::EntryCreated, "e1")]);
    assert_eq!((read.abandoned, read.forgotten), (1, 0));
    assert_eq!(cursor.gaps().count(), 0);
    assert_eq!(cursor.swept().count(), 1);
    late.commit().await.unwrap();
    conn.close().await.unwrap();
    let read = s.follow(&mut cursor).await.unwrap();
    assert_eq!(
        kinds(&read.events),
        [(EventKind::EntryCreated, "very-late")]
    );
    assert_eq!(cursor.swept().count(), 0);
    assert!(s.follow(&mut cursor).await.unwrap().events.is_empty());
}

/// Inserts an `entry_created` event for `key` in an open transaction of another connection,
/// as another server's change would.
async fn insert_event(tx: &mut sqlx::AnyConnection, url: &str, key: &str) {
    let insert = if url.starts_with("postgres") {
        "INSERT INTO events (kind, event_key, created_at) VALUES ($1, $2, $3)"
    } else {
        "INSERT INTO events (kind, event_key, created_at) VALUES (?, ?, ?)"
    };
    sqlx::query(insert)
        .bind("entry_created")
        .bind(key)
        .bind(T0)
        .execute(tx)
        .await
        .unwrap();
}
