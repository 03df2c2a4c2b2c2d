//! The server config (`server.toml`): TOML read into [`RawConfig`], then checked into [`Config`].
//!
//! Loading reads the config file and nothing else: no socket is bound, no other file is opened
//! and no directory is created, so `sigil server validate` is exactly this step. Relative paths
//! (including a relative SQLite path in `datastore.url`) are relative to the directory of the
//! config file, so a config means the same thing whatever the working directory.

mod raw;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_core::config::{
    host_port, parse_toml, place, positive_duration, quoted, read_config_file, resolve_path,
    socket_addr,
};
use sigil_core::entry::{MAX_SVID_TTL, MIN_SVID_TTL};
use sigil_core::format_duration;
use sigil_spiffe::{KeyType, SpiffeId, TrustDomain};

pub use raw::{
    RawBundleEndpoint, RawCa, RawConfig, RawDatastore, RawFederatesWith, RawFederation, RawHealth,
    RawOidcDiscovery, RawSvid, RawUpstream,
};
pub use sigil_core::config::{ConfigError, ConfigErrorKind};

/// The longest path a Unix socket address holds on Linux (`sun_path` is 108 bytes with the
/// terminating NUL); a longer admin socket path would only fail when the server binds it.
pub const MAX_SOCKET_PATH_LENGTH: usize = 107;

/// A checked server config. Paths are absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The trust domain this server signs for.
    pub trust_domain: TrustDomain,
    /// Keys, and by default the database and the admin socket.
    pub data_dir: PathBuf,
    /// The agent API (TCP, mTLS).
    pub bind_address: SocketAddr,
    /// Where the other servers on a MySQL/MariaDB datastore reach this one for its change
    /// notices (`HOST:PORT`); `None`: worked out at start (`notices::address`).
    pub advertise_address: Option<String>,
    /// The admin API (Unix socket).
    pub admin_socket: PathBuf,
    /// The SQL datastore.
    pub datastore: Datastore,
    /// `[ca]`
    pub ca: CaConfig,
    /// `[svid]`
    pub svid: SvidConfig,
    /// `[health]`; `None`: no HTTP health listener.
    pub health: Option<HealthConfig>,
    /// `[federation]`: the bundle endpoint is served (`federation::endpoint`) and
    /// `federates_with` is fetched (`federation::fetcher`).
    pub federation: FederationConfig,
    /// `[oidc_discovery]`; `None`: no OIDC discovery listener.
    pub oidc_discovery: Option<OidcDiscoveryConfig>,
}

/// Which SQL database holds the server's state.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Datastore {
    /// A SQLite database file (absolute path).
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// PostgreSQL; the URL as written (it may hold a password: see [`Datastore::redacted`]).
    Postgres {
        /// `postgres://` or `postgresql://` URL.
        url: String,
    },
    /// MySQL or MariaDB; the URL as written.
    Mysql {
        /// `mysql://` URL.
        url: String,
    },
}

impl Datastore {
    /// `sqlite`, `postgres` or `mysql`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
            Self::Mysql { .. } => "mysql",
        }
    }

    /// The datastore as it may be printed or logged: any password in the URL is replaced
    /// by `***`.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("sqlite://{}", path.display()),
            Self::Postgres { url } | Self::Mysql { url } => redact_url(url),
        }
    }
}

// A URL may carry a password: Debug must not print it (architecture.md §7).
impl fmt::Debug for Datastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Datastore").field(&self.redacted()).finish()
    }
}

/// `[ca]`
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaConfig {
    /// The key type of the X.509 CA and the JWT signing keys.
    pub key_type: KeyType,
    /// The lifetime of each CA certificate and JWT key.
    pub ttl: Duration,
    /// An upstream CA that signs ours; `None`: self-signed root.
    pub upstream: Option<UpstreamConfig>,
}

/// `[ca.upstream]`
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// The upstream CA certificate (absolute path).
    pub cert_file: PathBuf,
    /// Its private key (absolute path).
    pub key_file: PathBuf,
}

/// `[svid]`
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SvidConfig {
    /// X.509-SVID lifetime of entries that set none.
    pub default_x509_ttl: Duration,
    /// JWT-SVID lifetime of entries that set none.
    pub default_jwt_ttl: Duration,
    /// The `iss` of every JWT-SVID minted (an https URL as written); `None`: no `iss`.
    pub jwt_issuer: Option<String>,
}

/// `[oidc_discovery]`: `/.well-known/openid-configuration` and `/keys` over HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OidcDiscoveryConfig {
    /// The HTTPS listener.
    pub bind_address: SocketAddr,
    /// Serving certificate chain (PEM, absolute path).
    pub cert_file: PathBuf,
    /// Its private key (PEM, absolute path).
    pub key_file: PathBuf,
}

/// `[health]`
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Where `/live` and `/ready` are served.
    pub bind_address: SocketAddr,
}

/// `[federation]`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederationConfig {
    /// Our bundle endpoint, if we serve one.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// The trust domains whose bundles we fetch.
    pub federates_with: Vec<FederatesWith>,
}

impl FederationConfig {
    /// Whether the config asks for any federation at all.
    pub fn is_configured(&self) -> bool {
        self.bundle_endpoint.is_some() || !self.federates_with.is_empty()
    }
}

/// `[federation.bundle_endpoint]`
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BundleEndpointConfig {
    /// The HTTPS listener.
    pub bind_address: SocketAddr,
    /// How the endpoint authenticates itself.
    pub profile: EndpointProfile,
    /// The `spiffe_refresh_hint` of the served bundle.
    pub refresh_hint: Duration,
}

/// How our bundle endpoint authenticates itself to its clients.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointProfile {
    /// With the server's own X.509-SVID.
    HttpsSpiffe,
    /// With a web PKI certificate from files (absolute paths).
    HttpsWeb {
        /// Certificate chain (PEM).
        cert_file: PathBuf,
        /// Private key (PEM).
        key_file: PathBuf,
    },
}

impl EndpointProfile {
    /// The config name: `https_spiffe` or `https_web`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::HttpsSpiffe => "https_spiffe",
            Self::HttpsWeb { .. } => "https_web",
        }
    }
}

/// One `[[federation.federates_with]]`: a trust domain whose bundle we fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederatesWith {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// Its bundle endpoint (`https://`).
    pub url: String,
    /// How to authenticate the endpoint.
    pub profile: RemoteProfile,
}

/// How we authenticate a foreign bundle endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteProfile {
    /// The endpoint presents an X.509-SVID for `endpoint_spiffe_id`, checked against the
    /// foreign trust domain's bundle (first taken from `bundle_path`, or set by an operator).
    HttpsSpiffe {
        /// The endpoint server's SPIFFE ID, a member of the foreign trust domain.
        endpoint_spiffe_id: SpiffeId,
        /// The first bundle to trust (absolute path), if given.
        bundle_path: Option<PathBuf>,
    },
    /// The endpoint presents a web PKI certificate for the URL's host.
    HttpsWeb {
        /// Roots to use instead of the system's (absolute path), if given (config file).
        ca_file: Option<PathBuf>,
        /// Roots to use instead of the system's, PEM, if given (admin API: stored by value,
        /// since a path would name a file of whichever machine runs the server next).
        ca_roots: Option<Vec<u8>>,
    },
}

impl FederatesWith {
    /// A relationship with `trust_domain`, whose bundle endpoint is `url`.
    pub fn new(trust_domain: TrustDomain, url: impl Into<String>, profile: RemoteProfile) -> Self {
        Self {
            trust_domain,
            url: url.into(),
            profile,
        }
    }
}

impl RemoteProfile {
    /// The config name: `https_spiffe` or `https_web`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::HttpsSpiffe { .. } => "https_spiffe",
            Self::HttpsWeb { .. } => "https_web",
        }
    }
}

/// Something legal but probably not what the operator wants; `validate` prints these and
/// the server logs them at start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigWarning {
    /// The key the warning is about.
    pub key: String,
    /// What to know.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Reads and checks the config file at `path`. Relative paths in it are taken relative to
    /// the directory holding it. Reads only this file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, base_dir) = read_config_file(path)?;
        Self::parse(&text, &base_dir).map_err(|e| e.in_file(path))
    }

    /// Parses and checks config text; relative paths are resolved against `base_dir`, which
    /// should be absolute.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        Self::from_raw(RawConfig::parse(text)?, base_dir).map_err(|error| place(text, error))
    }

    /// Checks a raw config. This is the `TryFrom<RawConfig>` of style.md with the one extra
    /// input it needs: the directory that relative paths are relative to.
    pub fn from_raw(raw: RawConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        let trust_domain = TrustDomain::new(&raw.trust_domain)
            .map_err(|e| ConfigError::invalid("trust_domain", quoted(&raw.trust_domain, e)))?;
        let data_dir = resolve_path("data_dir", &raw.data_dir, base_dir)?;
        let bind_address = socket_addr("bind_address", &raw.bind_address)?;
        let advertise_address = match &raw.advertise_address {
            Some(text) => Some(host_port("advertise_address", text)?),
            None => None,
        };
        let admin_socket = match &raw.admin_socket {
            Some(path) => resolve_path("admin_socket", path, base_dir)?,
            None => data_dir.join("admin.sock"),
        };
        let length = admin_socket.as_os_str().len();
        if length > MAX_SOCKET_PATH_LENGTH {
            return Err(ConfigError::invalid(
                "admin_socket",
                format!(
                    "{:?} is {length} bytes long; a Unix socket path is limited to \
                     {MAX_SOCKET_PATH_LENGTH} bytes (choose a shorter path)",
                    admin_socket.display().to_string()
                ),
            ));
        }
        let datastore = match &raw.datastore.url {
            Some(url) => datastore_url(url, base_dir)?,
            None => Datastore::Sqlite {
                path: data_dir.join("datastore.sqlite3"),
            },
        };
        let ca = ca_config(&raw.ca, base_dir)?;
        let svid = svid_config(&raw.svid, &ca)?;
        let health = match &raw.health {
            Some(health) => Some(HealthConfig {
                bind_address: socket_addr("health.bind_address", &health.bind_address)?,
            }),
            None => None,
        };
        let federation = federation_config(&raw.federation, &trust_domain, base_dir)?;
        let oidc_discovery = match &raw.oidc_discovery {
            Some(oidc) => Some(oidc_discovery_config(oidc, &svid, base_dir)?),
            None => None,
        };
        let config = Self {
            trust_domain,
            data_dir,
            bind_address,
            advertise_address,
            admin_socket,
            datastore,
            ca,
            svid,
            health,
            federation,
            oidc_discovery,
        };
        config.check_listeners()?;
        Ok(config)
    }

    /// The server's own SPIFFE ID, `spiffe://<trust domain>/sigil/server`.
    pub fn server_spiffe_id(&self) -> SpiffeId {
        // A valid trust domain plus two fixed valid segments always makes a valid ID.
        sigil_core::server_spiffe_id(&self.trust_domain)
            .expect("the server id of a valid trust domain is valid")
    }

    /// Settings that are legal but probably unintended.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        // The next CA activates when a sixth of the current one's life is left (spire-notes
        // §2.5), so an SVID signed just before that is cut short to ca.ttl / 6.
        let sixth = self.ca.ttl / 6;
        for (key, ttl) in [
            ("svid.default_x509_ttl", self.svid.default_x509_ttl),
            ("svid.default_jwt_ttl", self.svid.default_jwt_ttl),
        ] {
            if ttl > sixth {
                warnings.push(ConfigWarning {
                    key: key.to_owned(),
                    message: format!(
                        "{} is more than a sixth of ca.ttl ({}): SVIDs signed late in a CA's \
                         life will be cut short to {}",
                        format_duration(ttl),
                        format_duration(self.ca.ttl),
                        format_duration(sixth)
                    ),
                });
            }
        }
        warnings
    }

    /// Two listeners on one port would only fail when the server binds them.
    fn check_listeners(&self) -> Result<(), ConfigError> {
        let mut listeners = vec![("bind_address", self.bind_address)];
        if let Some(health) = &self.health {
            listeners.push(("health.bind_address", health.bind_address));
        }
        if let Some(endpoint) = &self.federation.bundle_endpoint {
            listeners.push((
                "federation.bundle_endpoint.bind_address",
                endpoint.bind_address,
            ));
        }
        if let Some(oidc) = &self.oidc_discovery {
            listeners.push(("oidc_discovery.bind_address", oidc.bind_address));
        }
        for (i, (key, addr)) in listeners.iter().enumerate() {
            for (other_key, other) in &listeners[..i] {
                let overlap = addr.ip() == other.ip()
                    || addr.ip().is_unspecified()
                    || other.ip().is_unspecified();
                // Port 0 asks the kernel for a free port, so it never conflicts.
                if addr.port() != 0 && addr.port() == other.port() && overlap {
                    return Err(ConfigError::invalid(
                        *key,
                        format!("{addr} conflicts with {other_key} ({other})"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl RawConfig {
    /// Parses TOML text; errors name the key path and carry the line and column.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        parse_toml(text)
    }
}

fn ca_config(raw: &RawCa, base_dir: &Path) -> Result<CaConfig, ConfigError> {
    let key_type: KeyType = raw
        .key_type
        .parse()
        .map_err(|e| ConfigError::invalid("ca.key_type", e))?;
    let ttl = positive_duration("ca.ttl", &raw.ttl)?;
    let upstream = match &raw.upstream {
        Some(upstream) => Some(UpstreamConfig {
            cert_file: resolve_path("ca.upstream.cert_file", &upstream.cert_file, base_dir)?,
            key_file: resolve_path("ca.upstream.key_file", &upstream.key_file, base_dir)?,
        }),
        None => None,
    };
    Ok(CaConfig {
        key_type,
        ttl,
        upstream,
    })
}

fn svid_config(raw: &RawSvid, ca: &CaConfig) -> Result<SvidConfig, ConfigError> {
    let mut ttls = [Duration::ZERO; 2];
    for (slot, (key, text)) in ttls.iter_mut().zip([
        ("svid.default_x509_ttl", &raw.default_x509_ttl),
        ("svid.default_jwt_ttl", &raw.default_jwt_ttl),
    ]) {
        let ttl = positive_duration(key, text)?;
        // The same bounds as an entry's own TTLs (sigil-core's entry rules).
        if !(MIN_SVID_TTL..=MAX_SVID_TTL).contains(&ttl) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{text} is outside the allowed range {} to {}",
                    format_duration(MIN_SVID_TTL),
                    format_duration(MAX_SVID_TTL)
                ),
            ));
        }
        // An SVID never outlives its CA, so a default at or above the CA's lifetime could
        // never be honoured: refused rather than silently capped on every SVID.
        if ttl >= ca.ttl {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{text} must be shorter than ca.ttl ({}): no SVID outlives the CA that \
                     signed it",
                    format_duration(ca.ttl)
                ),
            ));
        }
        *slot = ttl;
    }
    let [default_x509_ttl, default_jwt_ttl] = ttls;
    let jwt_issuer = match &raw.jwt_issuer {
        Some(issuer) => Some(jwt_issuer(issuer)?),
        None => None,
    };
    Ok(SvidConfig {
        default_x509_ttl,
        default_jwt_ttl,
        jwt_issuer,
    })
}

/// An OIDC issuer is an https URL without query or fragment (OpenID Connect Discovery 1.0
/// §3); relying parties compare it byte for byte with `iss`, so it is kept as written.
fn jwt_issuer(text: &str) -> Result<String, ConfigError> {
    const KEY: &str = "svid.jwt_issuer";
    let url = url::Url::parse(text).map_err(|e| ConfigError::invalid(KEY, quoted(text, e)))?;
    if url.scheme() != "https" {
        return Err(ConfigError::invalid(
            KEY,
            format!(
                "scheme {:?} is not allowed: an OIDC issuer is an https URL",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(KEY, format!("{text:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            KEY,
            format!("{text:?} has a query or fragment, which an OIDC issuer may not have"),
        ));
    }
    Ok(text.to_owned())
}

fn oidc_discovery_config(
    raw: &RawOidcDiscovery,
    svid: &SvidConfig,
    base_dir: &Path,
) -> Result<OidcDiscoveryConfig, ConfigError> {
    const PREFIX: &str = "oidc_discovery";
    if svid.jwt_issuer.is_none() {
        return Err(ConfigError::invalid(
            PREFIX,
            "needs svid.jwt_issuer: the discovery document names the issuer that JWT-SVIDs \
             carry as iss",
        ));
    }
    let bind_address = socket_addr(&format!("{PREFIX}.bind_address"), &raw.bind_address)?;
    let file = |key: &str, value: &Option<String>| {
        let key = format!("{PREFIX}.{key}");
        match value {
            Some(path) => resolve_path(&key, path, base_dir),
            None => Err(ConfigError::new(ConfigErrorKind::MissingKey(key))),
        }
    };
    Ok(OidcDiscoveryConfig {
        bind_address,
        cert_file: file("cert_file", &raw.cert_file)?,
        key_file: file("key_file", &raw.key_file)?,
    })
}

fn federation_config(
    raw: &RawFederation,
    own: &TrustDomain,
    base_dir: &Path,
) -> Result<FederationConfig, ConfigError> {
    let bundle_endpoint = match &raw.bundle_endpoint {
        Some(endpoint) => Some(bundle_endpoint_config(endpoint, base_dir)?),
        None => None,
    };
    let mut federates_with: Vec<FederatesWith> = Vec::with_capacity(raw.federates_with.len());
    for (i, remote) in raw.federates_with.iter().enumerate() {
        let prefix = format!("federation.federates_with[{i}]");
        let remote = federates_with_config(remote, &prefix, own, base_dir)?;
        if let Some(j) = federates_with
            .iter()
            .position(|r| r.trust_domain == remote.trust_domain)
        {
            return Err(ConfigError::invalid(
                format!("{prefix}.trust_domain"),
                format!(
                    "\"{}\" is already listed at federation.federates_with[{j}]",
                    remote.trust_domain
                ),
            ));
        }
        federates_with.push(remote);
    }
    Ok(FederationConfig {
        bundle_endpoint,
        federates_with,
    })
}

fn bundle_endpoint_config(
    raw: &RawBundleEndpoint,
    base_dir: &Path,
) -> Result<BundleEndpointConfig, ConfigError> {
    const PREFIX: &str = "federation.bundle_endpoint";
    let bind_address = socket_addr(&format!("{PREFIX}.bind_address"), &raw.bind_address)?;
    let refresh_hint = positive_duration(&format!("{PREFIX}.refresh_hint"), &raw.refresh_hint)?;
    let profile = match raw.profile.as_str() {
        "https_spiffe" => {
            for (key, value) in [("cert_file", &raw.cert_file), ("key_file", &raw.key_file)] {
                if value.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{PREFIX}.{key}"),
                        "only the https_web profile takes a certificate file; https_spiffe \
                         serves the server's own SVID",
                    ));
                }
            }
            EndpointProfile::HttpsSpiffe
        }
        "https_web" => {
            let file = |key: &str, value: &Option<String>| {
                let key = format!("{PREFIX}.{key}");
                match value {
                    Some(path) => resolve_path(&key, path, base_dir),
                    None => Err(ConfigError::new(ConfigErrorKind::MissingKey(key))),
                }
            };
            EndpointProfile::HttpsWeb {
                cert_file: file("cert_file", &raw.cert_file)?,
                key_file: file("key_file", &raw.key_file)?,
            }
        }
        other => return Err(unknown_profile(&format!("{PREFIX}.profile"), other)),
    };
    Ok(BundleEndpointConfig {
        bind_address,
        profile,
        refresh_hint,
    })
}

fn federates_with_config(
    raw: &RawFederatesWith,
    prefix: &str,
    own: &TrustDomain,
    base_dir: &Path,
) -> Result<FederatesWith, ConfigError> {
    let key = |name: &str| format!("{prefix}.{name}");
    let trust_domain = TrustDomain::new(&raw.trust_domain)
        .map_err(|e| ConfigError::invalid(key("trust_domain"), quoted(&raw.trust_domain, e)))?;
    if &trust_domain == own {
        return Err(ConfigError::invalid(
            key("trust_domain"),
            format!("\"{trust_domain}\" is this server's own trust domain"),
        ));
    }
    let url = https_url(&key("url"), &raw.url)?;
    let refuse = |name: &str, value: &Option<String>, profile: &str| match value {
        Some(_) => Err(ConfigError::invalid(
            key(name),
            format!("not used with the {profile} profile"),
        )),
        None => Ok(()),
    };
    let profile = match raw.profile.as_str() {
        "https_spiffe" => {
            refuse("ca_file", &raw.ca_file, "https_spiffe")?;
            let Some(id) = &raw.endpoint_spiffe_id else {
                return Err(ConfigError::new(ConfigErrorKind::MissingKey(key(
                    "endpoint_spiffe_id",
                ))));
            };
            let endpoint_spiffe_id: SpiffeId = id
                .parse()
                .map_err(|e| ConfigError::invalid(key("endpoint_spiffe_id"), quoted(id, e)))?;
            // The endpoint is authenticated with the foreign trust domain's bundle, the one
            // `bundle_path` gives, so its ID must belong to that trust domain.
            if !endpoint_spiffe_id.is_member_of(&trust_domain) {
                return Err(ConfigError::invalid(
                    key("endpoint_spiffe_id"),
                    format!("\"{endpoint_spiffe_id}\" is not in trust domain \"{trust_domain}\""),
                ));
            }
            let bundle_path = match &raw.bundle_path {
                Some(path) => Some(resolve_path(&key("bundle_path"), path, base_dir)?),
                None => None,
            };
            RemoteProfile::HttpsSpiffe {
                endpoint_spiffe_id,
                bundle_path,
            }
        }
        "https_web" => {
            refuse("endpoint_spiffe_id", &raw.endpoint_spiffe_id, "https_web")?;
            refuse("bundle_path", &raw.bundle_path, "https_web")?;
            let ca_file = match &raw.ca_file {
                Some(path) => Some(resolve_path(&key("ca_file"), path, base_dir)?),
                None => None,
            };
            RemoteProfile::HttpsWeb {
                ca_file,
                ca_roots: None,
            }
        }
        other => return Err(unknown_profile(&key("profile"), other)),
    };
    Ok(FederatesWith {
        trust_domain,
        url,
        profile,
    })
}

fn unknown_profile(key: &str, value: &str) -> ConfigError {
    ConfigError::invalid(
        key,
        format!("unknown profile {value:?}: expected https_spiffe or https_web"),
    )
}

fn https_url(key: &str, text: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(text).map_err(|e| ConfigError::invalid(key, quoted(text, e)))?;
    if url.scheme() != "https" {
        return Err(ConfigError::invalid(
            key,
            format!(
                "scheme {:?} is not allowed: bundle endpoints are https only",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, format!("{text:?} has no host")));
    }
    Ok(text.to_owned())
}

/// Checks a datastore URL without connecting. Errors never print the URL itself: it may hold
/// a password.
fn datastore_url(text: &str, base_dir: &Path) -> Result<Datastore, ConfigError> {
    const KEY: &str = "datastore.url";
    let Some((scheme, rest)) = text.split_once(':') else {
        return Err(ConfigError::invalid(
            KEY,
            "not a URL: write sqlite://PATH, postgres://... or mysql://...",
        ));
    };
    match scheme {
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(ConfigError::invalid(KEY, "the sqlite URL has no file path"));
            }
            if path.starts_with(':') {
                return Err(ConfigError::invalid(
                    KEY,
                    "in-memory sqlite is not supported: the server's state must survive a \
                     restart",
                ));
            }
            if path.contains(['?', '#']) {
                return Err(ConfigError::invalid(
                    KEY,
                    "sqlite URL options are not supported: Sigil sets the journal mode and \
                     busy timeout itself",
                ));
            }
            Ok(Datastore::Sqlite {
                path: base_dir.join(path),
            })
        }
        "postgres" | "postgresql" | "mysql" => {
            let url = url::Url::parse(text)
                .map_err(|e| ConfigError::invalid(KEY, format!("not a valid {scheme} URL: {e}")))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(ConfigError::invalid(
                    KEY,
                    format!("the {scheme} URL has no host"),
                ));
            }
            let url = text.to_owned();
            Ok(if scheme == "mysql" {
                Datastore::Mysql { url }
            } else {
                Datastore::Postgres { url }
            })
        }
        other => Err(ConfigError::invalid(
            KEY,
            format!("unsupported scheme {other:?}: expected sqlite, postgres, postgresql or mysql"),
        )),
    }
}

fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            // Only fails for URLs that cannot have a password, and this one has one.
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "(invalid url)".to_owned(),
    }
}
