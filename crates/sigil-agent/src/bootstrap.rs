//! The first trust bundle: how an agent that has never talked to its server learns which
//! certificates the server's SVID must chain to. From a file, or from an HTTPS URL verified
//! with the system's web roots (as SPIRE's `trust_bundle_url`); PEM or SPIFFE format.

use std::path::Path;
use std::time::Duration;

use sigil_spiffe::{Bundle, JwtBundle, TrustDomain, X509Bundle};

use crate::config::BundleFormat;

/// The largest bootstrap bundle accepted from a URL.
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Why the bootstrap bundle could not be had.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file could not be read.
    #[error("cannot read the bootstrap bundle {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The URL could not be fetched (network, TLS, HTTP status, size).
    #[error("cannot fetch the bootstrap bundle from {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The bytes are not a usable bundle.
    #[error("the bootstrap bundle from {from} is not usable: {reason}")]
    Invalid {
        /// The file or URL.
        from: String,
        /// Why.
        reason: String,
    },
}

/// Reads the bundle in `path`.
pub fn from_file(
    path: &Path,
    format: BundleFormat,
    trust_domain: &TrustDomain,
) -> Result<Bundle, BootstrapError> {
    let bytes = std::fs::read(path).map_err(|source| BootstrapError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes, format, trust_domain, &path.display().to_string())
}

/// Fetches the bundle at `url` (HTTPS, system roots).
pub async fn from_url(
    url: &str,
    format: BundleFormat,
    trust_domain: &TrustDomain,
) -> Result<Bundle, BootstrapError> {
    let failed = |reason: String| BootstrapError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let client = reqwest::Client::builder()
        .https_only(true)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP status {}", response.status())));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BUNDLE_BYTES as u64)
    {
        return Err(failed(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(failed(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
    }
    parse(&bytes, format, trust_domain, url)
}

fn parse(
    bytes: &[u8],
    format: BundleFormat,
    trust_domain: &TrustDomain,
    from: &str,
) -> Result<Bundle, BootstrapError> {
    let invalid = |reason: String| BootstrapError::Invalid {
        from: from.to_owned(),
        reason,
    };
    let bundle = match format {
        BundleFormat::Pem => X509Bundle::from_pem(trust_domain.clone(), bytes)
            .map_err(|e| e.to_string())
            .and_then(|x509| {
                Bundle::from_parts(x509, JwtBundle::new(trust_domain.clone()))
                    .map_err(|e| e.to_string())
            }),
        BundleFormat::Spiffe => {
            Bundle::from_document(trust_domain.clone(), bytes).map_err(|e| e.to_string())
        }
    }
    .map_err(invalid)?;
    if bundle.x509().is_empty() {
        return Err(invalid("it holds no X.509 authority".to_owned()));
    }
    Ok(bundle)
}

/// An error with its causes: reqwest's own message alone ("error sending request") hides
/// whether DNS, TCP or the certificate failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
