//! The server config as written in TOML: strings and tables, checked by serde for shape only.
//!
//! Every struct refuses unknown keys, so a misspelt key is an error rather than a silently
//! ignored setting. Values stay strings here; `Config::from_raw` turns them into types.

use serde::Deserialize;

/// The whole `server.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawConfig {
    /// Required: the trust domain this server signs for.
    pub trust_domain: String,
    /// Required: where the server keeps its keys and, by default, its database and socket.
    pub data_dir: String,
    /// The agent API's TCP address.
    #[serde(default = "default_bind_address")]
    pub bind_address: String,
    /// Where the other servers on a MySQL datastore reach this one's agent API, `HOST:PORT`.
    #[serde(default)]
    pub advertise_address: Option<String>,
    /// The admin API's Unix socket; `<data_dir>/admin.sock` when absent.
    #[serde(default)]
    pub admin_socket: Option<String>,
    /// `[datastore]`
    #[serde(default)]
    pub datastore: RawDatastore,
    /// `[ca]`
    #[serde(default)]
    pub ca: RawCa,
    /// `[svid]`
    #[serde(default)]
    pub svid: RawSvid,
    /// `[health]`: no health listener when absent.
    #[serde(default)]
    pub health: Option<RawHealth>,
    /// `[federation]`
    #[serde(default)]
    pub federation: RawFederation,
    /// `[oidc_discovery]`: no OIDC discovery listener when absent.
    #[serde(default)]
    pub oidc_discovery: Option<RawOidcDiscovery>,
}

/// `[datastore]`
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawDatastore {
    /// `sqlite://PATH`, `postgres://...` or `mysql://...`; SQLite in `data_dir` when absent.
    #[serde(default)]
    pub url: Option<String>,
}

/// `[ca]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawCa {
    /// `ec-p256`, `ec-p384` or `rsa-2048`.
    #[serde(default = "default_key_type")]
    pub key_type: String,
    /// The lifetime of each CA certificate and JWT signing key.
    #[serde(default = "default_ca_ttl")]
    pub ttl: String,
    /// `[ca.upstream]`: sign our CA with this certificate and key instead of self-signing.
    #[serde(default)]
    pub upstream: Option<RawUpstream>,
}

impl Default for RawCa {
    fn default() -> Self {
        Self {
            key_type: default_key_type(),
            ttl: default_ca_ttl(),
            upstream: None,
        }
    }
}

/// `[ca.upstream]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawUpstream {
    /// PEM: the upstream CA certificate (then any chain up to its root).
    pub cert_file: String,
    /// PEM: the upstream CA's PKCS#8 private key.
    pub key_file: String,
}

/// `[svid]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawSvid {
    /// The X.509-SVID lifetime of entries that set none.
    #[serde(default = "default_x509_ttl")]
    pub default_x509_ttl: String,
    /// The JWT-SVID lifetime of entries that set none.
    #[serde(default = "default_jwt_ttl")]
    pub default_jwt_ttl: String,
    /// The `iss` claim of every JWT-SVID minted (an https URL); no `iss` when absent.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
}

impl Default for RawSvid {
    fn default() -> Self {
        Self {
            default_x509_ttl: default_x509_ttl(),
            default_jwt_ttl: default_jwt_ttl(),
            jwt_issuer: None,
        }
    }
}

/// `[oidc_discovery]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawOidcDiscovery {
    /// The HTTPS listener.
    #[serde(default = "default_oidc_bind_address")]
    pub bind_address: String,
    /// The serving certificate chain (PEM).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key_file: Option<String>,
}

/// `[health]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawHealth {
    /// Where `/live` and `/ready` are served over plain HTTP.
    #[serde(default = "default_health_bind_address")]
    pub bind_address: String,
}

/// `[federation]`
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawFederation {
    /// `[federation.bundle_endpoint]`: serve our bundle to other trust domains.
    #[serde(default)]
    pub bundle_endpoint: Option<RawBundleEndpoint>,
    /// `[[federation.federates_with]]`: fetch other trust domains' bundles.
    #[serde(default)]
    pub federates_with: Vec<RawFederatesWith>,
}

/// `[federation.bundle_endpoint]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawBundleEndpoint {
    /// The HTTPS listener.
    #[serde(default = "default_bundle_endpoint_address")]
    pub bind_address: String,
    /// `https_spiffe` (our server SVID) or `https_web` (a web PKI certificate).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// `https_web` only: the serving certificate chain (PEM).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// `https_web` only: its private key (PEM).
    #[serde(default)]
    pub key_file: Option<String>,
    /// The `spiffe_refresh_hint` written into the served bundle.
    #[serde(default = "default_refresh_hint")]
    pub refresh_hint: String,
}

/// One `[[federation.federates_with]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
#[non_exhaustive]
pub struct RawFederatesWith {
    /// The foreign trust domain.
    pub trust_domain: String,
    /// Its bundle endpoint; `https://` only.
    pub url: String,
    /// `https_spiffe` or `https_web`; required, since it must match the other side.
    pub profile: String,
    /// `https_spiffe` only (and required there): the endpoint server's SPIFFE ID.
    #[serde(default)]
    pub endpoint_spiffe_id: Option<String>,
    /// `https_spiffe` only: the first bundle of that trust domain to trust (PEM or SPIFFE).
    #[serde(default)]
    pub bundle_path: Option<String>,
    /// `https_web` only: trust these roots instead of the system's web PKI roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_bind_address() -> String {
    "0.0.0.0:8081".to_owned()
}

fn default_key_type() -> String {
    "ec-p256".to_owned()
}

fn default_ca_ttl() -> String {
    "24h".to_owned()
}

fn default_x509_ttl() -> String {
    "1h".to_owned()
}

fn default_jwt_ttl() -> String {
    "5m".to_owned()
}

fn default_health_bind_address() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_bundle_endpoint_address() -> String {
    "0.0.0.0:8443".to_owned()
}

fn default_oidc_bind_address() -> String {
    "0.0.0.0:8444".to_owned()
}

fn default_profile() -> String {
    "https_spiffe".to_owned()
}

fn default_refresh_hint() -> String {
    "5m".to_owned()
}
