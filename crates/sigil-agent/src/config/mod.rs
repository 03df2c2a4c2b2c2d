//! The agent config (`agent.toml`): TOML read into [`RawConfig`], then checked into [`Config`].
//!
//! As for the server, loading reads the config file (and, for `node_attestor.token_file`,
//! nothing yet: the token file is read when the agent attests) and opens nothing. Relative
//! paths are relative to the config file's directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sigil_core::config::{
    ConfigError, ConfigErrorKind, host_port, parse_toml, place, positive_duration, quoted,
    read_config_file, resolve_path,
};
use sigil_spiffe::{KeyType, SpiffeId, TrustDomain};
use zeroize::Zeroizing;

/// The longest path a Unix socket address holds on Linux (`sun_path` minus its NUL).
pub const MAX_SOCKET_PATH_LENGTH: usize = 107;

/// The agent's X.509-SVID cache holds at most this many SVIDs unless configured otherwise.
pub const DEFAULT_X509_CACHE_SIZE: usize = 1000;
/// The JWT-SVID cache holds at most this many tokens unless configured otherwise.
pub const DEFAULT_JWT_CACHE_SIZE: usize = 1000;
/// How often the agent looks for a preferred server that is back, unless configured otherwise.
pub const DEFAULT_REBALANCE_INTERVAL: Duration = Duration::from_secs(30);

/// The whole `agent.toml`, as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawConfig {
    /// Required: the trust domain of the server.
    pub trust_domain: String,
    /// Required: the servers' agent API, `HOST:PORT` or a list of them; a name may resolve to
    /// several addresses.
    #[serde(deserialize_with = "one_or_many")]
    pub server_address: Vec<String>,
    /// How often the agent checks whether a server it prefers to the one it uses is back;
    /// `30s` when absent.
    #[serde(default)]
    pub server_rebalance_interval: Option<String>,
    /// Required: where the agent keeps its SVID, key and last bundle.
    pub data_dir: String,
    /// The Workload API socket; `<data_dir>/api.sock` when absent.
    #[serde(default)]
    pub socket_path: Option<String>,
    /// A file holding the trust domain's bundle, to authenticate the server at first contact.
    #[serde(default)]
    pub trust_bundle_path: Option<String>,
    /// An HTTPS URL serving that bundle.
    #[serde(default)]
    pub trust_bundle_url: Option<String>,
    /// `pem` (default) or `spiffe` (a SPIFFE bundle document).
    #[serde(default)]
    pub trust_bundle_format: Option<String>,
    /// Development only: trust whatever server answers at first contact.
    #[serde(default)]
    pub insecure_bootstrap: bool,
    /// `[node_attestor]`
    pub node_attestor: RawNodeAttestor,
    /// `[[workload_attestor]]`; a `unix` attestor with default options when absent.
    #[serde(default)]
    pub workload_attestor: Vec<RawWorkloadAttestor>,
    /// `[svid]`
    #[serde(default)]
    pub svid: RawSvid,
}

/// `[node_attestor]`
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawNodeAttestor {
    /// `join_token`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The join token itself.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the join token.
    #[serde(default)]
    pub token_file: Option<String>,
}

// The token is a secret: Debug must not print it (architecture.md §7).
impl fmt::Debug for RawNodeAttestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawNodeAttestor")
            .field("kind", &self.kind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// One `[[workload_attestor]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawWorkloadAttestor {
    /// `unix`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `unix`: also produce `unix:path` (reads the process's executable link).
    #[serde(default)]
    pub discover_workload_path: bool,
    /// `unix`: also produce `unix:sha256` of the executable (implies reading it).
    #[serde(default)]
    pub workload_sha256: bool,
    /// `unix`: executables larger than this many bytes are not hashed (0: no limit).
    #[serde(default)]
    pub workload_size_limit: u64,
}

/// `[svid]`
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawSvid {
    /// The key type of workload X.509-SVIDs: `ec-p256` (default), `ec-p384`, `rsa-2048`.
    #[serde(default)]
    pub key_type: Option<String>,
    /// The most X.509-SVIDs kept signed at once.
    #[serde(default)]
    pub x509_cache_size: Option<usize>,
    /// The most JWT-SVIDs kept.
    #[serde(default)]
    pub jwt_cache_size: Option<usize>,
}

/// A checked agent config. Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The servers' agent API addresses, each `HOST:PORT` (resolved at each connection).
    pub server_addresses: Vec<String>,
    /// How often the agent looks for a preferred server that is back.
    pub server_rebalance_interval: Duration,
    /// The agent's own state.
    pub data_dir: PathBuf,
    /// The Workload API socket.
    pub socket_path: PathBuf,
    /// How the agent first learns to trust the server.
    pub bootstrap: Bootstrap,
    /// How the agent proves its node's identity.
    pub node_attestor: NodeAttestor,
    /// The workload attestors, in order.
    pub workload_attestors: Vec<WorkloadAttestor>,
    /// `[svid]`
    pub svid: SvidConfig,
}

/// Where the first trust bundle comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bootstrap {
    /// A file (absolute path) in this format.
    Path {
        /// The bundle file.
        path: PathBuf,
        /// How it is written.
        format: BundleFormat,
    },
    /// An HTTPS URL in this format (checked against the system's web roots).
    Url {
        /// `https://...`
        url: String,
        /// How it is written.
        format: BundleFormat,
    },
    /// Trust the first server that answers (development only; logged as a warning).
    Insecure,
}

/// How a bootstrap bundle is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleFormat {
    /// PEM certificates: X.509 authorities only.
    Pem,
    /// A SPIFFE bundle document (JWKS).
    Spiffe,
}

/// The node attestor and its secret.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeAttestor {
    /// A single-use join token.
    JoinToken(TokenSource),
}

impl NodeAttestor {
    /// The attestor's name on the wire and in agent IDs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::JoinToken(_) => "join_token",
        }
    }
}

impl fmt::Debug for NodeAttestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::JoinToken(source) => f.debug_tuple("JoinToken").field(source).finish(),
        }
    }
}

/// Where a join token is.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Written in the config.
    Inline(Zeroizing<String>),
    /// In a file (absolute path), read when the agent attests.
    File(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A workload attestor and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkloadAttestor {
    /// Unix process facts from the socket's peer credentials and `/proc`.
    Unix {
        /// Produce `unix:path`.
        discover_workload_path: bool,
        /// Produce `unix:sha256`.
        workload_sha256: bool,
        /// Largest executable hashed, in bytes (0: no limit).
        workload_size_limit: u64,
    },
}

/// `[svid]`
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SvidConfig {
    /// Key type of workload X.509-SVIDs.
    pub key_type: KeyType,
    /// The most X.509-SVIDs kept signed at once.
    pub x509_cache_size: usize,
    /// The most JWT-SVIDs kept.
    pub jwt_cache_size: usize,
}

impl Default for SvidConfig {
    fn default() -> Self {
        Self {
            key_type: KeyType::EcP256,
            x509_cache_size: DEFAULT_X509_CACHE_SIZE,
            jwt_cache_size: DEFAULT_JWT_CACHE_SIZE,
        }
    }
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, base_dir) = read_config_file(path)?;
        Self::parse(&text, &base_dir).map_err(|e| e.in_file(path))
    }

    /// Parses and checks config text; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_toml(text)?;
        Self::from_raw(raw, base_dir).map_err(|error| place(text, error))
    }

    /// Checks a raw config.
    pub fn from_raw(raw: RawConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        let trust_domain = TrustDomain::new(&raw.trust_domain)
            .map_err(|e| ConfigError::invalid("trust_domain", quoted(&raw.trust_domain, e)))?;
        let server_addresses = server_addresses(&raw.server_address)?;
        let server_rebalance_interval = match &raw.server_rebalance_interval {
            Some(text) => positive_duration("server_rebalance_interval", text)?,
            None => DEFAULT_REBALANCE_INTERVAL,
        };
        let data_dir = resolve_path("data_dir", &raw.data_dir, base_dir)?;
        let socket_path = match &raw.socket_path {
            Some(path) => resolve_path("socket_path", path, base_dir)?,
            None => data_dir.join("api.sock"),
        };
        let length = socket_path.as_os_str().len();
        if length > MAX_SOCKET_PATH_LENGTH {
            return Err(ConfigError::invalid(
                "socket_path",
                format!(
                    "{:?} is {length} bytes long; a Unix socket path is limited to \
                     {MAX_SOCKET_PATH_LENGTH} bytes (choose a shorter path)",
                    socket_path.display().to_string()
                ),
            ));
        }
        let bootstrap = bootstrap(&raw, base_dir)?;
        let node_attestor = node_attestor(&raw.node_attestor, base_dir)?;
        let workload_attestors = workload_attestors(&raw.workload_attestor)?;
        let svid = svid_config(&raw.svid)?;
        Ok(Self {
            trust_domain,
            server_addresses,
            server_rebalance_interval,
            data_dir,
            socket_path,
            bootstrap,
            node_attestor,
            workload_attestors,
            svid,
        })
    }

    /// The server's SPIFFE ID, `spiffe://<trust domain>/sigil/server`: the only identity the
    /// agent accepts from the other end of its server connection.
    pub fn server_spiffe_id(&self) -> SpiffeId {
        sigil_core::server_spiffe_id(&self.trust_domain)
            .expect("the server id of a valid trust domain is valid")
    }

    /// Settings that are legal but deserve a word at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.bootstrap == Bootstrap::Insecure {
            warnings.push(
                "insecure_bootstrap: the agent trusts whichever server answers first; use it \
                 for development only"
                    .to_owned(),
            );
        }
        warnings
    }
}

/// `server_address` as written: one string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct Addresses;
    impl<'de> serde::de::Visitor<'de> for Addresses {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address HOST:PORT or a list of them")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(vec![text.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut addresses = Vec::new();
            while let Some(address) = seq.next_element::<String>()? {
                addresses.push(address);
            }
            Ok(addresses)
        }
    }
    deserializer.deserialize_any(Addresses)
}

/// Every address checked; a list that names one address twice is a mistake worth saying.
fn server_addresses(raw: &[String]) -> Result<Vec<String>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid(
            "server_address",
            "the list is empty: name at least one server, HOST:PORT",
        ));
    }
    let mut addresses: Vec<String> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let key = if raw.len() == 1 {
            "server_address".to_owned()
        } else {
            format!("server_address[{i}]")
        };
        let address = host_port(&key, text)?;
        if addresses.contains(&address) {
            return Err(ConfigError::invalid(
                key,
                format!("{text:?} is listed twice"),
            ));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

fn bootstrap(raw: &RawConfig, base_dir: &Path) -> Result<Bootstrap, ConfigError> {
    let format = match raw.trust_bundle_format.as_deref() {
        None | Some("pem") => BundleFormat::Pem,
        Some("spiffe") => BundleFormat::Spiffe,
        Some(other) => {
            return Err(ConfigError::invalid(
                "trust_bundle_format",
                format!("unknown format {other:?}: expected pem or spiffe"),
            ));
        }
    };
    let given = [
        raw.trust_bundle_path.is_some(),
        raw.trust_bundle_url.is_some(),
        raw.insecure_bootstrap,
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if given != 1 {
        let key = if given == 0 || raw.trust_bundle_path.is_some() {
            "trust_bundle_path"
        } else if raw.trust_bundle_url.is_some() {
            "trust_bundle_url"
        } else {
            "insecure_bootstrap"
        };
        let reason = if given == 0 {
            "no way to trust the server: set trust_bundle_path, trust_bundle_url or (for \
             development only) insecure_bootstrap = true"
        } else {
            "set exactly one of trust_bundle_path, trust_bundle_url and insecure_bootstrap"
        };
        return Err(ConfigError::invalid(key, reason));
    }
    if let Some(path) = &raw.trust_bundle_path {
        return Ok(Bootstrap::Path {
            path: resolve_path("trust_bundle_path", path, base_dir)?,
            format,
        });
    }
    if let Some(url) = &raw.trust_bundle_url {
        let parsed = url::Url::parse(url)
            .map_err(|e| ConfigError::invalid("trust_bundle_url", quoted(url, e)))?;
        if parsed.scheme() != "https" || parsed.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid(
                "trust_bundle_url",
                format!("{url:?} must be an https:// URL with a host"),
            ));
        }
        return Ok(Bootstrap::Url {
            url: url.clone(),
            format,
        });
    }
    Ok(Bootstrap::Insecure)
}

fn node_attestor(raw: &RawNodeAttestor, base_dir: &Path) -> Result<NodeAttestor, ConfigError> {
    match raw.kind.as_str() {
        "join_token" => {
            let source = match (&raw.token, &raw.token_file) {
                (Some(token), None) => {
                    if token.trim().is_empty() {
                        return Err(ConfigError::invalid("node_attestor.token", "is empty"));
                    }
                    TokenSource::Inline(Zeroizing::new(token.trim().to_owned()))
                }
                (None, Some(file)) => {
                    TokenSource::File(resolve_path("node_attestor.token_file", file, base_dir)?)
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        "node_attestor.token_file",
                        "set token or token_file, not both",
                    ));
                }
                (None, None) => {
                    return Err(ConfigError::new(ConfigErrorKind::MissingKey(
                        "node_attestor.token".to_owned(),
                    )));
                }
            };
            Ok(NodeAttestor::JoinToken(source))
        }
        other => Err(ConfigError::invalid(
            "node_attestor.type",
            format!("unknown node attestor {other:?}: this version has join_token"),
        )),
    }
}

fn workload_attestors(raw: &[RawWorkloadAttestor]) -> Result<Vec<WorkloadAttestor>, ConfigError> {
    if raw.is_empty() {
        return Ok(vec![WorkloadAttestor::Unix {
            discover_workload_path: false,
            workload_sha256: false,
            workload_size_limit: 0,
        }]);
    }
    let mut attestors = Vec::with_capacity(raw.len());
    for (i, attestor) in raw.iter().enumerate() {
        match attestor.kind.as_str() {
            "unix" => {
                if attestors
                    .iter()
                    .any(|a| matches!(a, WorkloadAttestor::Unix { .. }))
                {
                    return Err(ConfigError::invalid(
                        format!("workload_attestor[{i}].type"),
                        "the unix attestor is configured twice",
                    ));
                }
                attestors.push(WorkloadAttestor::Unix {
                    discover_workload_path: attestor.discover_workload_path,
                    workload_sha256: attestor.workload_sha256,
                    workload_size_limit: attestor.workload_size_limit,
                });
            }
            other => {
                return Err(ConfigError::invalid(
                    format!("workload_attestor[{i}].type"),
                    format!("unknown workload attestor {other:?}: this version has unix"),
                ));
            }
        }
    }
    Ok(attestors)
}

fn svid_config(raw: &RawSvid) -> Result<SvidConfig, ConfigError> {
    let defaults = SvidConfig::default();
    let key_type = match &raw.key_type {
        Some(text) => text
            .parse()
            .map_err(|e| ConfigError::invalid("svid.key_type", quoted(text, e)))?,
        None => defaults.key_type,
    };
    let mut sizes = [defaults.x509_cache_size, defaults.jwt_cache_size];
    for (slot, (key, value)) in sizes.iter_mut().zip([
        ("svid.x509_cache_size", raw.x509_cache_size),
        ("svid.jwt_cache_size", raw.jwt_cache_size),
    ]) {
        match value {
            Some(0) => return Err(ConfigError::invalid(key, "must be at least 1")),
            Some(size) => *slot = size,
            None => {}
        }
    }
    let [x509_cache_size, jwt_cache_size] = sizes;
    Ok(SvidConfig {
        key_type,
        x509_cache_size,
        jwt_cache_size,
    })
}

#[cfg(test)]
mod tests;
