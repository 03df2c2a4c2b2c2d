//! OIDC discovery (`[oidc_discovery]`): `/.well-known/openid-configuration` and the JWKS of
//! our JWT signing keys at `/keys`, over HTTPS with a serving certificate from files, so that
//! any OpenID Connect relying party (a cloud provider's workload identity federation, a JWT
//! library) can verify JWT-SVIDs, which then carry `svid.jwt_issuer` as `iss`.
//!
//! The discovery document has the shape of SPIRE's oidc-discovery-provider: `issuer`,
//! `jwks_uri` (`<issuer>/keys`), `response_types_supported` (`id_token`),
//! `subject_types_supported` (`public`) and the signing algorithms of the current keys.

use std::io;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
use serde_json::{Map, Value, json};
use sigil_spiffe::Bundle;
use sigil_spiffe::jwt::Algorithm;
use tokio::net::TcpListener;

use crate::config::OidcDiscoveryConfig;
use crate::https::{self, FileCertResolver, HttpsServer, ServingCertError};
use crate::state::ServerState;

/// The discovery document's path.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The JWKS's path, under the issuer.
pub const KEYS_PATH: &str = "/keys";

/// Serves discovery for `issuer` on `listener` until the returned server is stopped. The
/// serving certificate is loaded now (an error stops the start) and reloaded when its files
/// change.
pub fn spawn(
    listener: TcpListener,
    config: &OidcDiscoveryConfig,
    issuer: String,
    state: Arc<ServerState>,
) -> Result<HttpsServer, OidcError> {
    let resolver = Arc::new(FileCertResolver::load(&config.cert_file, &config.key_file)?);
    let tls = resolver.server_config()?;
    let server = HttpsServer::spawn(
        listener,
        Arc::new(tls),
        "oidc discovery",
        Arc::new(move |method: &Method, path: &str| respond(&state, &issuer, method, path)),
    )?;
    Ok(server)
}

/// Why OIDC discovery could not be served.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The serving certificate or key could not be loaded.
    #[error("oidc_discovery: {0}")]
    ServingCert(#[from] ServingCertError),
    /// The listener failed.
    #[error("oidc_discovery: {0}")]
    Io(#[from] io::Error),
}

fn respond(
    state: &ServerState,
    issuer: &str,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    let body = match path {
        DISCOVERY_PATH => discovery_document(issuer, &state.own_bundle()),
        KEYS_PATH => jwks(&state.own_bundle()),
        _ => return https::text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if !https::is_read(method) {
        return https::method_not_allowed();
    }
    https::json(StatusCode::OK, body.to_string())
}

/// The discovery document for `issuer`, listing the algorithms of `bundle`'s JWT keys.
pub fn discovery_document(issuer: &str, bundle: &Bundle) -> Value {
    let mut algorithms: Vec<&str> = bundle
        .jwt()
        .authorities()
        .filter_map(|a| Algorithm::default_for(a.public_key()))
        .map(Algorithm::as_str)
        .collect();
    algorithms.sort_unstable();
    algorithms.dedup();
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{}{KEYS_PATH}", issuer.trim_end_matches('/')),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
    })
}

/// The JWKS of `bundle`'s JWT keys as a relying party wants it: each key with its `kid`, its
/// parameters, `use: sig` and the `alg` we sign with.
pub fn jwks(bundle: &Bundle) -> Value {
    // The bundle writes the key parameters; `use` and `alg` are added here, since the
    // Workload API's JWKS carries neither.
    let written: Value =
        serde_json::from_str(&bundle.jwt().to_jwks()).unwrap_or_else(|_| json!({"keys": []}));
    let keys = bundle
        .jwt()
        .authorities()
        .zip(
            written
                .get("keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .filter_map(|(authority, key)| {
            let alg = Algorithm::default_for(authority.public_key())?;
            let mut key: Map<String, Value> = key.as_object()?.clone();
            key.insert("use".into(), "sig".into());
            key.insert("alg".into(), alg.as_str().into());
            Some(Value::Object(key))
        })
        .collect::<Vec<_>>();
    json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sigil_spiffe::bundle::JwtAuthority;
    use sigil_spiffe::{KeyType, PrivateKey, TrustDomain};

    use super::*;

    fn bundle() -> Bundle {
        let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
        for (kid, key_type) in [("p384", KeyType::EcP384), ("rsa", KeyType::Rsa2048)] {
            let key = PrivateKey::generate(key_type).unwrap().public_key();
            bundle
                .jwt_mut()
                .add_authority(JwtAuthority::new(kid, key).unwrap());
        }
        bundle
    }

    #[test]
    fn the_jwks_carries_use_and_alg_for_each_key_type() {
        let jwks = jwks(&bundle());
        let keys = jwks["keys"].as_array().unwrap();
        let summary: Vec<(&str, &str, &str, &str)> = keys
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap(),
                    k["kty"].as_str().unwrap(),
                    k["use"].as_str().unwrap(),
                    k["alg"].as_str().unwrap(),
                )
            })
            .collect();
        let mut summary = summary;
        summary.sort_unstable();
        assert_eq!(
            summary,
            [
                ("p384", "EC", "sig", "ES384"),
                ("rsa", "RSA", "sig", "RS256")
            ]
        );
        let ec = keys.iter().find(|k| k["kid"] == "p384").unwrap();
        assert_eq!(ec["crv"], "P-384");
        assert!(ec["x"].is_string() && ec["y"].is_string());
        let rsa = keys.iter().find(|k| k["kid"] == "rsa").unwrap();
        assert!(rsa["n"].is_string() && rsa["e"].is_string());
    }

    #[test]
    fn the_discovery_document_names_the_issuer_keys_and_algorithms() {
        let document = discovery_document("https://oidc.example.org/", &bundle());
        assert_eq!(
            document,
            json!({
                "issuer": "https://oidc.example.org/",
                "jwks_uri": "https://oidc.example.org/keys",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES384", "RS256"],
            })
        );
    }
}
