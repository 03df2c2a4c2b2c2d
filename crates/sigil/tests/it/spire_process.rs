//! SPIRE v1.13.3 processes for the tests and the side-by-side benchmark (which includes this
//! file with `#[path]`): `spire-server run` and `spire-agent run` on generated HCL configs
//! (SQLite datastore, in-memory keys, join tokens, the unix workload attestor), on loopback and
//! in a directory of the caller's. The binaries come from `scripts/build-spire`; nothing of
//! SPIRE is in this repository.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// How long a SPIRE process may take to come up before the caller fails: far more than it
/// needs, so only a hang trips it.
const START_LIMIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(20);

/// SPIRE's fastest settings for a new entry to reach a workload: the server's events-based
/// entry cache polled every 100 ms (default: the whole cache rebuilt every 5 s) and the
/// agent's sync every 200 ms (default 5 s).
pub(crate) const FAST_SERVER: &str =
    "experimental {\n cache_reload_interval = \"100ms\"\n events_based_cache = true\n}\n";
pub(crate) const FAST_AGENT: &str = "experimental {\n sync_interval = \"200ms\"\n}\n";

/// The directory holding `spire-server` and `spire-agent`, built (or found current) by
/// `scripts/build-spire` once per process.
pub(crate) fn spire_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-spire");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "{} failed", script.display());
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().unwrap())
    })
}

/// A running process, killed when dropped, its stdout and stderr in `log`.
pub(crate) struct Process {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Process {
    pub(crate) fn spawn(mut command: Command, log: PathBuf) -> Self {
        let file = File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the log when the process has exited.
    pub(crate) fn check_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{what} exited ({status}): {}", self.log());
        }
    }

    /// SIGTERM, then waits for the exit.
    pub(crate) fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `spire-server run` of `trust_domain`.
pub(crate) struct SpireServer {
    pub(crate) process: Process,
    config: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    pub(crate) port: u16,
    pub(crate) trust_domain: String,
}

impl SpireServer {
    /// Writes the config (with `server_extra` inside its `server { }` block: federation,
    /// experimental settings) in `dir`, starts the server on `port` and waits for its
    /// healthcheck.
    pub(crate) fn start(dir: &Path, trust_domain: &str, port: u16, server_extra: &str) -> Self {
        let socket = dir.join("spire-server.sock");
        let data = dir.join("spire-server-data");
        let config = dir.join("spire-server.conf");
        fs::write(
            &config,
            format!(
                "server {{\n bind_address = \"127.0.0.1\"\n bind_port = \"{port}\"\n\
                 socket_path = \"{socket}\"\n trust_domain = \"{trust_domain}\"\n\
                 data_dir = \"{data}\"\n log_level = \"INFO\"\n{server_extra}}}\n\
                 plugins {{\n DataStore \"sql\" {{\n plugin_data {{\n\
                 database_type = \"sqlite3\"\n\
                 connection_string = \"{data}/datastore.sqlite3\"\n }}\n }}\n\
                 NodeAttestor \"join_token\" {{\n plugin_data {{}}\n }}\n\
                 KeyManager \"disk\" {{\n plugin_data {{\n keys_path = \"{data}/keys.json\"\n }}\n }}\n}}\n",
                socket = socket.display(),
                data = data.display(),
            ),
        )
        .unwrap();
        let log = dir.join("spire-server.log");
        let mut server = Self {
            process: Self::spawn(&config, &log),
            config,
            log,
            socket,
            port,
            trust_domain: trust_domain.to_owned(),
        };
        server.wait_healthy();
        server
    }

    fn spawn(config: &Path, log: &Path) -> Process {
        let mut command = Command::new(spire_bin().join("spire-server"));
        command.args(["run", "-config"]).arg(config);
        Process::spawn(command, log.to_owned())
    }

    /// Stops the server and starts it again on the same config and data; returns the time
    /// from the start to a passing healthcheck.
    pub(crate) fn restart(&mut self) -> Duration {
        self.process.terminate();
        let started = Instant::now();
        self.process = Self::spawn(&self.config, &self.log);
        self.wait_healthy();
        started.elapsed()
    }

    pub(crate) fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        while !self.cli(&["healthcheck"]).status.success() {
            self.process.check_running("spire-server");
            assert!(
                Instant::now() < deadline,
                "spire-server never became healthy"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Runs `spire-server <args> -socketPath SOCKET`.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(spire_bin().join("spire-server"))
            .args(args)
            .arg("-socketPath")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    /// [`Self::cli`] that must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "spire-server {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A join token for an agent that will be `agent_id` (SPIRE makes the alias entry from
    /// the token's own agent ID to it).
    pub(crate) fn join_token(&self, agent_id: &str) -> String {
        let out = self.ok(&["token", "generate", "-spiffeID", agent_id]);
        out.lines()
            .find_map(|l| l.strip_prefix("Token: "))
            .unwrap_or_else(|| panic!("no token in {out}"))
            .trim()
            .to_owned()
    }

    /// Registers entries, `(spiffe_id, selector, x509_ttl_seconds or 0)`, parented to
    /// `parent_id`, through `spire-server entry create -data` in batches of 5,000.
    pub(crate) fn create_entries(
        &self,
        dir: &Path,
        parent_id: &str,
        entries: &[(String, String, u32)],
    ) {
        for (n, chunk) in entries.chunks(5_000).enumerate() {
            let list: Vec<serde_json::Value> = chunk
                .iter()
                .map(|(spiffe_id, selector, ttl)| {
                    let (kind, value) = selector.split_once(':').unwrap();
                    let mut entry = serde_json::json!({
                        "spiffe_id": spiffe_id,
                        "parent_id": parent_id,
                        "selectors": [{"type": kind, "value": value}],
                    });
                    if *ttl > 0 {
                        entry["x509_svid_ttl"] = (*ttl).into();
                    }
                    entry
                })
                .collect();
            let file = dir.join(format!("entries-{n}.json"));
            fs::write(&file, serde_json::json!({ "entries": list }).to_string()).unwrap();
            let out = self.cli(&["entry", "create", "-data", file.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "spire-server entry create -data: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            fs::remove_file(&file).unwrap();
        }
    }

    pub(crate) fn log(&self) -> String {
        self.process.log()
    }
}

/// A running `spire-agent run` attested with a join token.
pub(crate) struct SpireAgent {
    pub(crate) process: Process,
    pub(crate) socket: PathBuf,
}

impl SpireAgent {
    /// Starts an agent of `server` in `dir` (its own subdirectories) as `agent_id`, with
    /// `agent_extra` inside its `agent { }` block, and waits for its Workload API socket.
    pub(crate) fn start(
        dir: &Path,
        server: &SpireServer,
        agent_id: &str,
        agent_extra: &str,
    ) -> Self {
        let token = server.join_token(agent_id);
        let bundle = dir.join("spire-bootstrap.pem");
        fs::write(&bundle, server.ok(&["bundle", "show"])).unwrap();
        // The agent's admin socket may not share the Workload API socket's directory, so the
        // Workload API gets a directory of its own.
        let api_dir = dir.join("spire-agent-api");
        fs::create_dir_all(&api_dir).unwrap();
        let socket = api_dir.join("api.sock");
        let config = dir.join("spire-agent.conf");
        fs::write(
            &config,
            format!(
                "agent {{\n data_dir = \"{data}\"\n log_level = \"INFO\"\n\
                 server_address = \"127.0.0.1\"\n server_port = \"{port}\"\n\
                 socket_path = \"{socket}\"\n trust_domain = \"{td}\"\n\
                 trust_bundle_path = \"{bundle}\"\n{agent_extra}}}\n\
                 plugins {{\n NodeAttestor \"join_token\" {{\n plugin_data {{}}\n }}\n\
                 KeyManager \"memory\" {{\n plugin_data {{}}\n }}\n\
                 WorkloadAttestor \"unix\" {{\n plugin_data {{}}\n }}\n}}\n",
                data = dir.join("spire-agent-data").display(),
                port = server.port,
                socket = socket.display(),
                td = server.trust_domain,
                bundle = bundle.display(),
            ),
        )
        .unwrap();
        let mut command = Command::new(spire_bin().join("spire-agent"));
        command
            .args(["run", "-config"])
            .arg(&config)
            .args(["-joinToken", &token]);
        let mut agent = Self {
            process: Process::spawn(command, dir.join("spire-agent.log")),
            socket,
        };
        let deadline = Instant::now() + START_LIMIT;
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            agent.process.check_running("spire-agent");
            assert!(
                Instant::now() < deadline,
                "spire-agent never opened its socket"
            );
            std::thread::sleep(POLL);
        }
        agent
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}
