//! Node attestation (`AttestAgent`) and agent SVID renewal (`RenewAgent`).
//!
//! The key of the agent's SVID is generated here and never leaves the agent; the server sees
//! only a CSR. What comes back is checked before it is used: the SVID must chain to the
//! bundle that came with it (or that the agent already trusts) and name an agent of our trust
//! domain.

use std::time::SystemTime;

use rustls::pki_types::UnixTime;
use sigil_core::is_agent_id;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::agent_client::AgentClient;
use sigil_proto::server::v1::{attest_agent_request, attest_agent_response};
use sigil_spiffe::x509::create_csr;
use sigil_spiffe::{
    Bundle, BundleDocumentError, BundleSet, KeyError, KeyType, PrivateKey, SpiffeId, SvidUsage,
    TrustDomain, X509Svid, X509SvidError, verify_chain,
};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::config::{NodeAttestor, TokenSource};

/// What a successful attestation gives the agent.
#[derive(Debug)]
pub struct Attested {
    /// The agent's X.509-SVID, with the key generated here.
    pub svid: X509Svid,
    /// The trust domain's bundle as the server sent it.
    pub bundle: Bundle,
    /// Whether this node may attest again with the same attestor.
    pub reattestable: bool,
}

/// Why attestation or renewal failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The join token file could not be read.
    #[error("cannot read the join token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server refused or could not be reached; the status says which.
    #[error("the server refused the agent: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The server answered something that is not an attestation result.
    #[error("the server's answer is malformed: {0}")]
    Protocol(&'static str),
    /// The SVID the server returned is not usable.
    #[error("the server returned an unusable SVID: {0}")]
    Svid(#[from] X509SvidError),
    /// The bundle the server returned is not usable.
    #[error("the server returned an unusable bundle: {0}")]
    Bundle(#[from] BundleDocumentError),
    /// The SVID names something other than an agent of our trust domain.
    #[error("the server returned an SVID for {0}, which is not an agent ID of this trust domain")]
    NotAnAgentId(SpiffeId),
    /// Generating the key failed.
    #[error("cannot generate the agent key: {0}")]
    Key(#[from] KeyError),
}

impl From<tonic::Status> for AttestError {
    fn from(status: tonic::Status) -> Self {
        Self::Refused(status)
    }
}

/// Attests this node over `channel` and returns the agent's first SVID.
pub async fn attest(
    channel: Channel,
    attestor: &NodeAttestor,
    trust_domain: &TrustDomain,
    key_type: KeyType,
) -> Result<Attested, AttestError> {
    let NodeAttestor::JoinToken(source) = attestor;
    let token = read_token(source)?;
    let key = generate(key_type).await?;
    // The server uses only the key of the CSR; the name is a placeholder of our domain.
    let placeholder =
        SpiffeId::from_segments(trust_domain, &["sigil", "agent"]).expect("fixed valid segments");
    let csr = create_csr(&key, &placeholder)?;
    let request = pb::AttestAgentRequest {
        step: Some(attest_agent_request::Step::Params(
            attest_agent_request::Params {
                data: Some(pb::AttestationData {
                    r#type: attestor.name().to_owned(),
                    payload: token.as_bytes().to_vec(),
                }),
                csr,
            },
        )),
    };
    let mut answers = AgentClient::new(channel)
        .attest_agent(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let result = match answers.message().await?.and_then(|answer| answer.step) {
        Some(attest_agent_response::Step::Result(result)) => result,
        Some(attest_agent_response::Step::Challenge(_)) => {
            return Err(AttestError::Protocol(
                "a challenge to a join_token attestation",
            ));
        }
        None => return Err(AttestError::Protocol("no result")),
    };
    let bundle = result
        .bundle
        .as_ref()
        .ok_or(AttestError::Protocol("no bundle in the result"))?;
    let bundle = Bundle::from_document(trust_domain.clone(), &bundle.document)?;
    let svid = checked_svid(result.svid, key, &bundle, trust_domain)?;
    Ok(Attested {
        svid,
        bundle,
        reattestable: result.reattestable,
    })
}

/// Renews the agent's SVID over `channel` (which presents the current one); the new SVID must
/// chain to `bundle`.
pub async fn renew(
    channel: Channel,
    bundle: &Bundle,
    key_type: KeyType,
) -> Result<X509Svid, AttestError> {
    let trust_domain = bundle.trust_domain().clone();
    let key = generate(key_type).await?;
    let placeholder =
        SpiffeId::from_segments(&trust_domain, &["sigil", "agent"]).expect("fixed valid segments");
    let csr = create_csr(&key, &placeholder)?;
    let answer = AgentClient::new(channel)
        .renew_agent(pb::RenewAgentRequest { csr })
        .await?
        .into_inner();
    checked_svid(answer.svid, key, bundle, &trust_domain)
}

fn read_token(source: &TokenSource) -> Result<Zeroizing<String>, AttestError> {
    match source {
        TokenSource::Inline(token) => Ok(token.clone()),
        TokenSource::File(path) => std::fs::read_to_string(path)
            .map(|text| Zeroizing::new(text.trim().to_owned()))
            .map_err(|source| AttestError::TokenFile {
                path: path.display().to_string(),
                source,
            }),
    }
}

async fn generate(key_type: KeyType) -> Result<PrivateKey, AttestError> {
    // RSA key generation takes long enough to stall a runtime thread.
    tokio::task::spawn_blocking(move || PrivateKey::generate(key_type))
        .await
        .map_err(|_| AttestError::Protocol("key generation task failed"))?
        .map_err(AttestError::Key)
}

fn checked_svid(
    svid: Option<pb::X509svid>,
    key: PrivateKey,
    bundle: &Bundle,
    trust_domain: &TrustDomain,
) -> Result<X509Svid, AttestError> {
    let svid = svid.ok_or(AttestError::Protocol("no SVID in the result"))?;
    let chain = svid.cert_chain.into_iter().map(Into::into).collect();
    let svid = X509Svid::new(chain, key)?;
    if !is_agent_id(svid.spiffe_id(), trust_domain) {
        return Err(AttestError::NotAnAgentId(svid.spiffe_id().clone()));
    }
    let bundles: BundleSet = [bundle.clone()].into_iter().collect();
    verify_chain(
        svid.cert_chain(),
        &bundles,
        UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        ),
        SvidUsage::ClientAuth,
    )?;
    Ok(svid)
}
