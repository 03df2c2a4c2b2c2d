//! Several `sigil server run` on one PostgreSQL or MariaDB database: each server instance has
//! its own CA (its instance ID, its journal), every server's authorities are in the one bundle
//! each of them serves, an SVID signed by one verifies (with `openssl verify`, a JWT library)
//! against the bundle another serves, and a restarted server resumes its own CA.
//!
//! Each test makes a fresh database through the admin URL `scripts/test` sets
//! (`SIGIL_TEST_POSTGRES_URL`, `SIGIL_TEST_MYSQL_URL`) and drops it afterwards; without the
//! variable it says so and passes.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sqlx::{AssertSqlSafe, Connection};

use crate::agent_run::{Agent, own_uid};
use crate::harness::{POLL_PAUSE, POLLS, Server, json};
use crate::text;

/// A database of its own on the server an admin URL names, dropped with this.
struct Database {
    admin: String,
    name: String,
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Database {
    fn create(var: &str) -> Option<Self> {
        let Some(admin) = std::env::var(var).ok().filter(|url| !url.is_empty()) else {
            eprintln!("skipped: {var} not set");
            return None;
        };
        let name = format!("sigil_ha_{}", std::process::id() ^ rand_suffix());
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = match query {
            Some(q) => format!("{server}/{name}?{q}"),
            None => format!("{server}/{name}"),
        };
        let database = Self {
            admin: admin.clone(),
            name,
            url,
            runtime: tokio::runtime::Runtime::new().unwrap(),
        };
        database.exec(&format!("CREATE DATABASE {}", database.name));
        Some(database)
    }

    fn exec(&self, statement: &str) {
        self.runtime.block_on(async {
            sqlx::any::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(&self.admin).await.unwrap();
            sqlx::query(AssertSqlSafe(statement.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        });
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.exec(&format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// A few random bits, so that two test runs at once get different databases.
fn rand_suffix() -> u32 {
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    u32::from_le_bytes(bytes)
}

/// A server of example.org in `dir` on the database at `url`, its agent API on `port` (0:
/// any).
fn start_on(dir: &Path, url: &str, port: u16) -> Server {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("server.toml"),
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"data\"\n\
             bind_address = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\n\
             [datastore]\nurl = \"{url}\"\n",
            dir.join("run/admin.sock").display()
        ),
    )
    .unwrap();
    Server::start(dir)
}

fn start(dir: &Path, url: &str) -> Server {
    start_on(dir, url, 0)
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The PEM bundle a server serves, once it holds `count` X.509 authorities (another server's
/// are read back within the servers' 10 s tick: polled, not timed).
fn bundle_with(server: &Server, count: usize) -> String {
    for _ in 0..POLLS * 2 {
        let pem = ok(&server.cli(&["bundle", "show", "--format", "pem"]));
        if pem.matches("BEGIN CERTIFICATE").count() == count {
            return pem;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!(
        "the bundle never held {count} x509 authorities: {}",
        server.log()
    );
}

fn sequence(server: &Server) -> u64 {
    json(&server.cli(&["bundle", "show", "--output", "json"]))["sequence"]
        .as_u64()
        .unwrap()
}

/// Mints an X.509-SVID on `signer` and checks it with openssl against `bundle_pem`.
fn verifies_against(signer: &Server, bundle_pem: &str, dir: &Path) {
    let out_dir = dir.join("svid");
    let _ = fs::remove_dir_all(&out_dir);
    json(&signer.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--write",
        out_dir.to_str().unwrap(),
        "--output",
        "json",
    ]));
    let bundle_file = dir.join("other-bundle.pem");
    fs::write(&bundle_file, bundle_pem).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&bundle_file)
        .arg(out_dir.join("svid.0.pem"))
        .output()
        .unwrap();
    assert!(ok(&verify).ends_with(": OK\n"));
}

/// Mints a JWT-SVID on `signer` and validates it with the key `other`'s bundle document has.
fn jwt_verifies_against(signer: &Server, other: &Server) {
    let token = json(&signer.cli(&[
        "jwt",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--audience",
        "ha",
        "--output",
        "json",
    ]));
    let token = token["token"].as_str().unwrap();
    let document = ok(&other.cli(&["bundle", "show", "--format", "spiffe"]));
    let keys: JwkSet = serde_json::from_str(&document).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = keys
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} not in the other server's bundle: {document}"));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["ha"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "spiffe://example.org/web");
}

fn instance_id(dir: &Path) -> String {
    fs::read_to_string(dir.join("data/instance_id"))
        .unwrap()
        .trim()
        .to_owned()
}

fn two_servers_share_one_database(var: &str) {
    let Some(database) = Database::create(var) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = start(&dir_a, &database.url);
    let alone = bundle_with(&a, 1);
    let b = start(&dir_b, &database.url);
    // B found A's authorities and waited before signing with its own.
    assert!(
        b.log().contains("waiting 20s for the other servers"),
        "{}",
        b.log()
    );
    assert_ne!(instance_id(&dir_a), instance_id(&dir_b));
    // Both serve both CAs: B at once (its publication read A's), A after its next tick.
    let from_b = bundle_with(&b, 2);
    let from_a = bundle_with(&a, 2);
    assert!(from_a.contains(alone.trim()), "A's own CA left the bundle");
    assert_eq!(sequence(&a), sequence(&b));
    // An SVID of either verifies against the bundle the other serves.
    verifies_against(&a, &from_b, &dir_a);
    verifies_against(&b, &from_a, &dir_b);
    jwt_verifies_against(&a, &b);
    jwt_verifies_against(&b, &a);

    // A restarted A resumes its own CA (no new authority, no wait) and keeps B's in the bundle.
    let before = sequence(&a);
    assert!(a.terminate().success());
    let a = start(&dir_a, &database.url);
    assert!(!a.log().contains("waiting"), "{}", a.log());
    assert!(a.log().contains("resumed=true"), "{}", a.log());
    let again = bundle_with(&a, 2);
    assert!(again.contains(alone.trim()));
    assert_eq!(sequence(&a), before);
    verifies_against(&b, &again, &dir_b);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// What `sigil fetch x509` gets from the agent at `socket`: the SPIFFE IDs, or none when the
/// agent has no identity for this workload.
fn fetched_ids(socket: &Path) -> Vec<String> {
    let out = crate::sigil(&[
        "fetch",
        "x509",
        "--socket",
        &format!("unix:{}", socket.display()),
        "--output",
        "json",
    ]);
    if out.status.code() != Some(0) {
        return Vec::new();
    }
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    document["svids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|svid| svid["spiffe_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until the agent's workload sees exactly `ids` (changes travel through the feed:
/// polled, not timed).
fn wait_for_ids(agent: &Agent, ids: &[&str]) {
    for _ in 0..POLLS * 2 {
        if fetched_ids(&agent.socket) == ids {
            return;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!(
        "the workload never saw {ids:?} (last: {:?}): {}",
        fetched_ids(&agent.socket),
        agent.log()
    );
}

/// Polls until the server's log has `needle`.
fn wait_for_line(server: &Server, needle: &str) {
    for _ in 0..POLLS * 2 {
        if server.log().contains(needle) {
            return;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!("never logged {needle:?}: {}", server.log());
}

/// Polls until the server's log has `needle` with `peer.test` on the same line.
fn wait_for_log(server: &Server, needle: &str) {
    for _ in 0..POLLS * 2 {
        if server
            .log()
            .lines()
            .any(|line| line.contains(needle) && line.contains("peer.test"))
        {
            return;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!("never logged {needle:?}: {}", server.log());
}

/// Entries and federation relationships written through one server reach another through the
/// change feed (PostgreSQL: LISTEN/NOTIFY; MariaDB: the feed read every 200 ms): a workload on
/// the other server's agent sees each entry change.
fn changes_through_one_server_reach_the_agents_of_another(var: &str) {
    let Some(database) = Database::create(var) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let port_b = crate::free_port();
    let a = start(&dir_a, &database.url);
    let b = start_on(&dir_b, &database.url, port_b);
    if var == "SIGIL_TEST_MYSQL_URL" {
        // MariaDB cannot announce commits: each server follows the other's notices over
        // their mutual TLS (found through server_peers), and serves its own to the other.
        wait_for_line(&b, "following another server's change notices");
        wait_for_line(&a, "following another server's change notices");
        wait_for_line(&a, "another server follows this one's changes");
    }
    // An agent of B, attested with a token made on B.
    let (agent, agent_id) = start_agent(&dir.path().join("agent"), &b, &b, 2, &[port_b]);
    let selector = format!("unix:uid:{}", own_uid());
    // Created through A: the workload on B's agent gets it.
    let created = json(&a.entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/ha/web",
        "--parent-id",
        &agent_id,
        "--selector",
        &selector,
        "--output",
        "json",
    ]));
    wait_for_ids(&agent, &["spiffe://example.org/ha/web"]);
    // Changed through A (a new SPIFFE ID): B follows.
    let id = created["id"].as_str().unwrap();
    json(&a.entry(&[
        "update",
        "--id",
        id,
        "--spiffe-id",
        "spiffe://example.org/ha/api",
        "--output",
        "json",
    ]));
    wait_for_ids(&agent, &["spiffe://example.org/ha/api"]);
    // Deleted through A: the workload on B's agent has no identity left.
    let deleted = a.entry(&["delete", "--id", id]);
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted.stderr));
    wait_for_ids(&agent, &[]);

    // A federation relationship made through A: B starts fetching it too (its fetcher's
    // failures, against a port nobody listens on, are in B's log), and stops when A deletes it.
    let nowhere = format!("https://127.0.0.1:{}/", crate::free_port());
    json(&a.cli(&[
        "federation",
        "create",
        "--trust-domain",
        "peer.test",
        "--url",
        &nowhere,
        "--profile",
        "https_web",
        "--output",
        "json",
    ]));
    wait_for_log(&b, "federation relationship from another server started");
    wait_for_log(&b, "federated bundle not updated");
    let deleted = a.cli(&["federation", "delete", "--trust-domain", "peer.test"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted.stderr));
    wait_for_log(
        &b,
        "federation relationship deleted through another server stopped",
    );
    agent.terminate();
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// An agent in `dir` given the servers on `ports` (checking every second for a preferred one
/// that is back), attested with a token made on `attest_on` and trusting the bundle `trust`
/// serves once it holds `cas` CAs; returns it with its SPIFFE ID.
fn start_agent(
    dir: &Path,
    attest_on: &Server,
    trust: &Server,
    cas: usize,
    ports: &[u16],
) -> (Agent, String) {
    let token = json(&attest_on.cli(&["token", "generate", "--output", "json"]));
    let addresses: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("bootstrap.pem"), bundle_with(trust, cas)).unwrap();
    fs::write(
        dir.join("agent.toml"),
        format!(
            "trust_domain = \"example.org\"\nserver_address = [{}]\n\
             server_rebalance_interval = \"1s\"\n\
             data_dir = \"agent\"\ntrust_bundle_path = \"bootstrap.pem\"\n\
             [node_attestor]\ntype = \"join_token\"\ntoken = \"{}\"\n",
            addresses.join(", "),
            token["token"].as_str().unwrap()
        ),
    )
    .unwrap();
    let agent = Agent::start(dir);
    (agent, token["spiffe_id"].as_str().unwrap().to_owned())
}

/// `kill -9`: the server gets no chance to close its connections or finish anything.
fn kill(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// The servers the agent's log says it connected to, in order (`connected to server
/// server=ADDR`, logged when the server it connects to changes).
fn connections(agent: &Agent) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|line| line.contains("connected to server"))
        .filter_map(|line| line.split("server=").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Polls until the agent's `count`th connection is known, and returns it.
fn nth_connection(agent: &Agent, count: usize) -> String {
    for _ in 0..POLLS * 2 {
        if let Some(address) = connections(agent).get(count - 1) {
            return address.clone();
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!("the agent never made connection {count}: {}", agent.log());
}

/// An agent given both servers' addresses connects to the one it prefers; when that one is
/// killed (`kill -9`) it fails over to the other without its workload losing its SVID, and
/// follows changes made there; when the preferred server is back it moves back to it, and
/// keeps working through it alone once the other is killed too.
fn an_agent_fails_over_and_returns_to_its_preferred_server(var: &str) {
    let Some(database) = Database::create(var) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ports = [crate::free_port(), crate::free_port()];
    let dirs = [dir.path().join("a"), dir.path().join("b")];
    let mut servers = [
        Some(start_on(&dirs[0], &database.url, ports[0])),
        Some(start_on(&dirs[1], &database.url, ports[1])),
    ];
    let first = servers[0].as_ref().unwrap();
    let (agent, agent_id) = start_agent(
        &dir.path().join("agent"),
        first,
        servers[1].as_ref().unwrap(),
        2,
        &ports,
    );
    let index_of = |address: &str| {
        ports
            .iter()
            .position(|port| address == format!("127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("connected to an unknown server {address}"))
    };
    let preferred = index_of(&nth_connection(&agent, 1));
    let other = 1 - preferred;

    let selector = format!("unix:uid:{}", own_uid());
    let created = json(&servers[other].as_ref().unwrap().entry(&[
        "create",
        "--spiffe-id",
        "spiffe://example.org/ha/web",
        "--parent-id",
        &agent_id,
        "--selector",
        &selector,
        "--output",
        "json",
    ]));
    wait_for_ids(&agent, &["spiffe://example.org/ha/web"]);
    let id = created["id"].as_str().unwrap().to_owned();
    let rename = |server: &Server, to: &str| {
        json(&server.entry(&["update", "--id", &id, "--spiffe-id", to, "--output", "json"]));
    };

    // The preferred server dies: the agent moves to the other and follows its changes.
    kill(servers[preferred].take().unwrap());
    rename(
        servers[other].as_ref().unwrap(),
        "spiffe://example.org/ha/api",
    );
    wait_for_all(&agent, &["spiffe://example.org/ha/api"]);
    assert_eq!(index_of(&nth_connection(&agent, 2)), other);

    // It comes back (resuming its CA): the agent moves back within its rebalance interval.
    servers[preferred] = Some(start_on(&dirs[preferred], &database.url, ports[preferred]));
    assert_eq!(index_of(&nth_connection(&agent, 3)), preferred);
    assert!(
        agent
            .log()
            .contains("a preferred server answers; moving to it")
    );
    // And depends on the other no longer: killed too, changes through the preferred one
    // still reach the workload.
    kill(servers[other].take().unwrap());
    rename(
        servers[preferred].as_ref().unwrap(),
        "spiffe://example.org/ha/db",
    );
    wait_for_all(&agent, &["spiffe://example.org/ha/db"]);
    assert_eq!(connections(&agent).len(), 3, "{}", agent.log());
    agent.terminate();
    assert!(servers[preferred].take().unwrap().terminate().success());
}

/// Two servers joining a running one at the same time: each published its authorities before
/// the other, so neither's publication held the other's; each reads the stored bundle after its
/// wait, and so serves all three CAs from its start (asked once, not polled), and on MariaDB
/// they trust each other at once for their change notices.
fn two_servers_joining_together(var: &str) {
    let Some(database) = Database::create(var) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = start(&dir.path().join("a"), &database.url);
    bundle_with(&first, 1);
    let (dir_b, dir_c) = (dir.path().join("b"), dir.path().join("c"));
    let url = database.url.clone();
    let joining = std::thread::spawn(move || start(&dir_c, &url));
    let b = start(&dir_b, &database.url);
    let c = joining.join().unwrap();
    for server in [&b, &c] {
        let pem = ok(&server.cli(&["bundle", "show", "--format", "pem"]));
        assert_eq!(
            pem.matches("BEGIN CERTIFICATE").count(),
            3,
            "{}",
            server.log()
        );
    }
    if var == "SIGIL_TEST_MYSQL_URL" {
        for server in [&b, &c] {
            for _ in 0..POLLS * 2 {
                if server
                    .log()
                    .matches("following another server's change notices")
                    .count()
                    == 2
                {
                    break;
                }
                std::thread::sleep(POLL_PAUSE);
            }
            assert_eq!(
                server
                    .log()
                    .matches("following another server's change notices")
                    .count(),
                2,
                "{}",
                server.log()
            );
        }
    }
    for server in [first, b, c] {
        assert!(server.terminate().success());
    }
}

/// The SVIDs the workload of the agent at `socket` gets now: (SPIFFE ID, expiry in Unix
/// seconds), sorted by ID; the error when it gets none. A slow answer (a loaded machine) is
/// waited for: only a refusal counts.
fn fetched_svids(socket: &Path) -> Result<Vec<(String, i64)>, String> {
    let out = crate::sigil(&[
        "fetch",
        "x509",
        "--socket",
        &format!("unix:{}", socket.display()),
        "--timeout",
        "60s",
        "--output",
        "json",
    ]);
    if out.status.code() != Some(0) {
        return Err(text(&out.stderr));
    }
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut svids: Vec<(String, i64)> = document["svids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|svid| {
            (
                svid["spiffe_id"].as_str().unwrap().to_owned(),
                svid["expires_at"].as_i64().unwrap(),
            )
        })
        .collect();
    svids.sort();
    Ok(svids)
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The workload has an SVID, and every SVID it gets is unexpired; returns them.
fn assert_served(agent: &Agent) -> Vec<(String, i64)> {
    let svids = fetched_svids(&agent.socket)
        .unwrap_or_else(|error| panic!("the workload lost its SVIDs ({error}): {}", agent.log()));
    assert!(
        !svids.is_empty(),
        "the workload lost its SVIDs: {}",
        agent.log()
    );
    let now = unix_now();
    for (id, expires_at) in &svids {
        assert!(*expires_at > now, "{id} served expired: {}", agent.log());
    }
    svids
}

/// Polls until the workload's first SVID, `id`, is served (before it, "no identity" is the
/// right answer, not a loss).
fn wait_for_first(agent: &Agent, id: &str) {
    for _ in 0..POLLS * 2 {
        if fetched_svids(&agent.socket).is_ok_and(|svids| svids.iter().any(|(seen, _)| seen == id))
        {
            return;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!("the workload never got {id}: {}", agent.log());
}

/// Polls (checking [`assert_served`] each time) until the workload has exactly `ids`.
fn wait_for_all<S: AsRef<str>>(agent: &Agent, ids: &[S]) -> Vec<(String, i64)> {
    let mut wanted: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    wanted.sort();
    for _ in 0..POLLS * 2 {
        let svids = assert_served(agent);
        if svids.iter().map(|(id, _)| id).eq(wanted.iter()) {
            return svids;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    panic!(
        "the workload never saw {wanted:?} (last: {:?}): {}",
        fetched_svids(&agent.socket),
        agent.log()
    );
}

/// Three servers on one database and an agent given all three. A burst of entry changes goes
/// through the servers in turn while SVIDs rotate every ~10 s (20 s TTLs); in its middle the
/// agent's server is killed (`kill -9`): the agent moves, no change is lost, the workload is
/// never without an unexpired SVID, and rotation goes on. Then a rolling restart (each server
/// stopped, a change made through the others, the server started again and a change made
/// through it): every change arrives, and the workload keeps its SVIDs throughout.
fn three_servers_survive_a_kill_and_a_rolling_restart(var: &str) {
    let Some(database) = Database::create(var) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ports = [crate::free_port(), crate::free_port(), crate::free_port()];
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| dir.path().join(n)).collect();
    let mut servers: [Option<Server>; 3] = [None, None, None];
    servers[0] = Some(start_on(&dirs[0], &database.url, ports[0]));
    let joining = {
        let (dir, url, port) = (dirs[2].clone(), database.url.clone(), ports[2]);
        std::thread::spawn(move || start_on(&dir, &url, port))
    };
    servers[1] = Some(start_on(&dirs[1], &database.url, ports[1]));
    servers[2] = Some(joining.join().unwrap());

    let first = servers[0].as_ref().unwrap();
    let (agent, agent_id) = start_agent(&dir.path().join("agent"), first, first, 3, &ports);
    let index_of = |address: &str| {
        ports
            .iter()
            .position(|port| address == format!("127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("connected to an unknown server {address}"))
    };
    let preferred = index_of(&nth_connection(&agent, 1));

    let selector = format!("unix:uid:{}", own_uid());
    let create = |server: &Server, id: &str| {
        json(&server.entry(&[
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            &agent_id,
            "--selector",
            &selector,
            "--x509-ttl",
            "20s",
            "--output",
            "json",
        ]));
    };
    let mut ids = vec!["spiffe://example.org/burst/0".to_owned()];
    create(servers[preferred].as_ref().unwrap(), &ids[0]);
    wait_for_first(&agent, &ids[0]);

    // The burst, through every server alive in turn; the agent's server dies in its middle.
    for i in 1..=30 {
        if i == 10 {
            kill(servers[preferred].take().unwrap());
        }
        let alive: Vec<&Server> = servers.iter().flatten().collect();
        let id = format!("spiffe://example.org/burst/{i}");
        create(alive[i % alive.len()], &id);
        ids.push(id);
        assert_served(&agent);
    }
    let before = wait_for_all(&agent, &ids);
    assert_ne!(
        index_of(&nth_connection(&agent, 2)),
        preferred,
        "{}",
        agent.log()
    );
    // Rotation goes on through the servers left: every SVID is replaced by a later one.
    for _ in 0..POLLS * 2 {
        let now = wait_for_all(&agent, &ids);
        if now.iter().zip(&before).all(|(n, b)| n.1 > b.1) {
            break;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    let after = wait_for_all(&agent, &ids);
    assert!(
        after.iter().zip(&before).all(|(n, b)| n.1 > b.1),
        "not every SVID rotated: {before:?} -> {after:?}"
    );
    servers[preferred] = Some(start_on(&dirs[preferred], &database.url, ports[preferred]));

    // The rolling restart.
    for k in 0..3 {
        assert!(servers[k].take().unwrap().terminate().success());
        let other = servers.iter().flatten().next().unwrap();
        let id = format!("spiffe://example.org/rolling/{k}/while-down");
        create(other, &id);
        ids.push(id);
        wait_for_all(&agent, &ids);
        servers[k] = Some(start_on(&dirs[k], &database.url, ports[k]));
        let id = format!("spiffe://example.org/rolling/{k}/restarted");
        create(servers[k].as_ref().unwrap(), &id);
        ids.push(id);
        wait_for_all(&agent, &ids);
    }
    agent.terminate();
    for server in servers.into_iter().flatten() {
        assert!(server.terminate().success());
    }
}

#[test]
fn three_servers_survive_a_kill_and_a_rolling_restart_on_postgres() {
    three_servers_survive_a_kill_and_a_rolling_restart("SIGIL_TEST_POSTGRES_URL");
}

#[test]
fn three_servers_survive_a_kill_and_a_rolling_restart_on_mariadb() {
    three_servers_survive_a_kill_and_a_rolling_restart("SIGIL_TEST_MYSQL_URL");
}

/// The database restarted under load: two servers, an agent given both, entries created
/// through both servers in turn all along and SVIDs of 20 s rotating. While the database is
/// down the workload keeps unexpired SVIDs (signing needs no database); afterwards both servers
/// write again, and every entry whose creation succeeded reaches the workload.
///
/// Every other test's database goes down with it, so it is `#[ignore]`d and `scripts/test`
/// runs it alone after the rest, giving `SIGIL_TEST_SERVICES`, the path of
/// `scripts/test-services`: `stop postgres|mariadb` stops the database, which stays down for
/// 3 s, and the script without arguments starts it again.
fn servers_ride_out_a_database_restart(var: &str, backend: &str) {
    let Some(services) = std::env::var("SIGIL_TEST_SERVICES")
        .ok()
        .filter(|path| !path.is_empty())
    else {
        eprintln!("skipped: SIGIL_TEST_SERVICES not set");
        return;
    };
    let Some(database) = Database::create(var) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ports = [crate::free_port(), crate::free_port()];
    let dirs = [dir.path().join("a"), dir.path().join("b")];
    let servers = std::sync::Arc::new([
        start_on(&dirs[0], &database.url, ports[0]),
        start_on(&dirs[1], &database.url, ports[1]),
    ]);
    let (agent, agent_id) = start_agent(
        &dir.path().join("agent"),
        &servers[0],
        &servers[1],
        2,
        &ports,
    );
    let selector = format!("unix:uid:{}", own_uid());
    let create = move |server: &Server, agent_id: &str, id: &str| {
        server.entry(&[
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            agent_id,
            "--selector",
            &selector,
            "--x509-ttl",
            "20s",
            "--output",
            "json",
        ])
    };
    let first = "spiffe://example.org/db/first".to_owned();
    ok(&create(&servers[0], &agent_id, &first));
    wait_for_first(&agent, &first);

    // The load: entries through both servers in turn, kept when their creation succeeded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (servers, stop, agent_id, create) = (
            std::sync::Arc::clone(&servers),
            std::sync::Arc::clone(&stop),
            agent_id.clone(),
            create.clone(),
        );
        std::thread::spawn(move || {
            let (mut created, mut failed) = (Vec::new(), 0);
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let id = format!("spiffe://example.org/db/{i}");
                if create(&servers[i % 2], &agent_id, &id).status.success() {
                    created.push(id);
                } else {
                    failed += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            (created, failed)
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(1));
    let backend = backend.to_owned();
    let restarting = std::thread::spawn(move || {
        let stopped = Command::new(&services)
            .args(["stop", &backend])
            .output()
            .unwrap();
        if !stopped.status.success() {
            return stopped;
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
        Command::new(&services).output().unwrap()
    });
    while !restarting.is_finished() {
        assert_served(&agent);
        std::thread::sleep(POLL_PAUSE);
    }
    let restarted = restarting.join().unwrap();
    assert!(restarted.status.success(), "{}", text(&restarted.stderr));
    // Writes succeed again through both servers.
    for (n, server) in servers.iter().enumerate() {
        let id = format!("spiffe://example.org/db/after/{n}");
        let mut written = false;
        for _ in 0..POLLS {
            if create(server, &agent_id, &id).status.success() {
                written = true;
                break;
            }
            std::thread::sleep(POLL_PAUSE);
        }
        assert!(written, "server {n} never wrote again: {}", server.log());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (created, failed) = writer.join().unwrap();
    eprintln!(
        "{} entries created under load, {failed} refused during the restart",
        created.len()
    );
    let mut expected = vec![
        first,
        "spiffe://example.org/db/after/0".to_owned(),
        "spiffe://example.org/db/after/1".to_owned(),
    ];
    expected.extend(created);
    // Every creation that succeeded is served (one whose answer was lost may be too).
    for _ in 0..POLLS * 2 {
        let served = assert_served(&agent);
        if expected
            .iter()
            .all(|id| served.iter().any(|(seen, _)| seen == id))
        {
            break;
        }
        std::thread::sleep(POLL_PAUSE);
    }
    let served = assert_served(&agent);
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !served.iter().any(|(seen, _)| seen == *id))
        .collect();
    assert!(
        missing.is_empty(),
        "never served: {missing:?}: {}",
        agent.log()
    );
    agent.terminate();
    let servers = std::sync::Arc::into_inner(servers).unwrap();
    for server in servers {
        assert!(server.terminate().success());
    }
}

#[test]
#[ignore = "restarts the shared PostgreSQL: scripts/test runs it alone"]
fn servers_ride_out_a_database_restart_on_postgres() {
    servers_ride_out_a_database_restart("SIGIL_TEST_POSTGRES_URL", "postgres");
}

#[test]
#[ignore = "restarts the shared MariaDB: scripts/test runs it alone"]
fn servers_ride_out_a_database_restart_on_mariadb() {
    servers_ride_out_a_database_restart("SIGIL_TEST_MYSQL_URL", "mariadb");
}

#[test]
fn two_servers_joining_together_on_postgres() {
    two_servers_joining_together("SIGIL_TEST_POSTGRES_URL");
}

#[test]
fn two_servers_joining_together_on_mariadb() {
    two_servers_joining_together("SIGIL_TEST_MYSQL_URL");
}

#[test]
fn an_agent_fails_over_and_returns_to_its_preferred_server_on_postgres() {
    an_agent_fails_over_and_returns_to_its_preferred_server("SIGIL_TEST_POSTGRES_URL");
}

#[test]
fn an_agent_fails_over_and_returns_to_its_preferred_server_on_mariadb() {
    an_agent_fails_over_and_returns_to_its_preferred_server("SIGIL_TEST_MYSQL_URL");
}

#[test]
fn changes_through_one_server_reach_the_agents_of_another_on_postgres() {
    changes_through_one_server_reach_the_agents_of_another("SIGIL_TEST_POSTGRES_URL");
}

#[test]
fn changes_through_one_server_reach_the_agents_of_another_on_mariadb() {
    changes_through_one_server_reach_the_agents_of_another("SIGIL_TEST_MYSQL_URL");
}

#[test]
fn two_servers_share_one_postgres_database() {
    two_servers_share_one_database("SIGIL_TEST_POSTGRES_URL");
}

#[test]
fn two_servers_share_one_mariadb_database() {
    two_servers_share_one_database("SIGIL_TEST_MYSQL_URL");
}
