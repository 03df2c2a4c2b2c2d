//! rustls configurations for mutual TLS on X.509-SVIDs.
//!
//! Both sides verify the peer's chain against the bundle of the peer's own trust domain (no
//! DNS-name check: SPIFFE authenticates an ID, not a host name), then ask an [`Authorizer`]
//! whether that ID is the intended peer. The SVID presented and the bundles trusted live in a
//! [`TlsMaterial`] that the configs read on every handshake, so rotating the SVID or updating a
//! bundle takes effect at once, without rebuilding the config or any connection pool. Session
//! resumption is off on both sides, since a resumed session would skip that verification.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sigil_spiffe::{Authorizer, BundleSet, SpiffeId, tls::{self, TlsMaterial}, x509::X509Svid};
//! # fn f(svid: X509Svid, bundles: BundleSet, server: SpiffeId) -> Result<(), tls::TlsError> {
//! let material = Arc::new(TlsMaterial::new(&svid, bundles)?);
//! let client = tls::client_config(material.clone(), Authorizer::exact(server))?;
//! // Later, on rotation: every new handshake presents the new SVID.
//! material.set_svid(&svid)?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as RustlsError,
    SignatureScheme,
};

use crate::authorizer::Authorizer;
use crate::bundle::BundleSet;
use crate::id::SpiffeId;
use crate::x509::{SvidUsage, X509Svid, X509SvidError, verify_end_entity};

/// Why a TLS configuration could not be built or updated.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the SVID's private key.
    #[error("the svid's private key cannot be used for tls: {0}")]
    UnusableKey(RustlsError),
    /// rustls refused to build the configuration.
    #[error("cannot build the tls configuration: {0}")]
    Config(RustlsError),
}

/// The SVID a config presents and the bundles it trusts, swappable while in use.
pub struct TlsMaterial {
    /// `None` until an SVID is set: a node that has not attested yet trusts its bootstrap
    /// bundle but has no identity to present.
    certified_key: ArcSwapOption<CertifiedKey>,
    spiffe_id: ArcSwapOption<SpiffeId>,
    bundles: ArcSwap<BundleSet>,
}

impl TlsMaterial {
    /// Material presenting `svid` and trusting `bundles`.
    pub fn new(svid: &X509Svid, bundles: BundleSet) -> Result<Self, TlsError> {
        Ok(Self {
            certified_key: ArcSwapOption::from_pointee(certified_key(svid)?),
            spiffe_id: ArcSwapOption::from_pointee(svid.spiffe_id().clone()),
            bundles: ArcSwap::from_pointee(bundles),
        })
    }

    /// Material trusting `bundles` and presenting nothing, for a client that has no SVID yet
    /// (an agent attesting its node). Only servers that do not require a client certificate
    /// accept it; [`set_svid`](Self::set_svid) gives it one later.
    pub fn without_svid(bundles: BundleSet) -> Self {
        Self {
            certified_key: ArcSwapOption::empty(),
            spiffe_id: ArcSwapOption::empty(),
            bundles: ArcSwap::from_pointee(bundles),
        }
    }

    /// Presents `svid` from the next handshake on (rotation). On error nothing changes.
    pub fn set_svid(&self, svid: &X509Svid) -> Result<(), TlsError> {
        let key = certified_key(svid)?;
        self.certified_key.store(Some(Arc::new(key)));
        self.spiffe_id
            .store(Some(Arc::new(svid.spiffe_id().clone())));
        Ok(())
    }

    /// Trusts `bundles` from the next handshake on.
    pub fn set_bundles(&self, bundles: BundleSet) {
        self.bundles.store(Arc::new(bundles));
    }

    /// The SPIFFE ID currently presented, if any.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.spiffe_id.load_full().map(|id| SpiffeId::clone(&id))
    }

    /// The bundles currently trusted.
    pub fn bundles(&self) -> Arc<BundleSet> {
        self.bundles.load_full()
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("spiffe_id", &self.spiffe_id.load_full())
            .field("trust_domains", &self.bundles.load().len())
            .finish_non_exhaustive()
    }
}

/// A client config that presents the material's SVID and accepts a server whose SVID verifies
/// against its own trust domain's bundle and whose ID `authorizer` allows.
///
/// The server name given to rustls when connecting is not checked; any valid name will do.
pub fn client_config(
    material: Arc<TlsMaterial>,
    authorizer: Authorizer,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = SpiffeVerifier::new(material.clone(), authorizer, &provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SvidResolver(material)));
    // A resumed session skips certificate verification, so a peer would keep the identity and
    // trust of its first handshake after a rotation or a bundle change. Every connection
    // verifies afresh instead.
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// A server config that presents the material's SVID, requires a client certificate, and
/// accepts a client whose SVID verifies against its own trust domain's bundle and whose ID
/// `authorizer` allows.
pub fn server_config(
    material: Arc<TlsMaterial>,
    authorizer: Authorizer,
) -> Result<ServerConfig, TlsError> {
    server_config_inner(material, authorizer, true)
}

/// Like [`server_config`], but a client may also connect without a certificate: the
/// application then decides per call what an anonymous peer may do (an agent attests its node
/// before it has an SVID). A client that does present a certificate is verified and authorized
/// exactly as by [`server_config`]; [`peer_spiffe_id`] is `None` for an anonymous one.
pub fn server_config_client_optional(
    material: Arc<TlsMaterial>,
    authorizer: Authorizer,
) -> Result<ServerConfig, TlsError> {
    server_config_inner(material, authorizer, false)
}

/// A server config that presents the material's SVID and asks no client certificate: for an
/// endpoint anyone may read, such as a federation bundle endpoint (`https_spiffe` profile),
/// whose clients authenticate the server by its SPIFFE ID and are not authenticated
/// themselves.
pub fn server_config_no_client_auth(material: Arc<TlsMaterial>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SvidResolver(material)));
    // No resumption, for the reason given in `client_config`.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn server_config_inner(
    material: Arc<TlsMaterial>,
    authorizer: Authorizer,
    client_auth_mandatory: bool,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let mut verifier = SpiffeVerifier::new(material.clone(), authorizer, &provider);
    verifier.client_auth_mandatory = client_auth_mandatory;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SvidResolver(material)));
    // No resumption, for the reason given in `client_config`.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The SPIFFE ID of a TLS peer, read from the leaf of the chain rustls verified
/// (`Connection::peer_certificates()`). `None` when there is no chain or no valid ID.
pub fn peer_spiffe_id(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = peer_certificates?.first()?;
    crate::x509::profile::check_leaf_der(leaf).ok()
}

fn provider() -> Arc<CryptoProvider> {
    // Always aws-lc-rs, whatever process default another crate may have installed.
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certified_key(svid: &X509Svid) -> Result<CertifiedKey, TlsError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.private_key().pkcs8_der()));
    let signing_key =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(TlsError::UnusableKey)?;
    Ok(CertifiedKey::new(svid.cert_chain().to_vec(), signing_key))
}

/// Hands rustls the material's current SVID on both sides of the handshake.
#[derive(Debug)]
struct SvidResolver(Arc<TlsMaterial>);

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key.load_full()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key.load_full()
    }

    fn has_certs(&self) -> bool {
        self.0.certified_key.load().is_some()
    }
}

/// Verifies the peer's chain against its own trust domain's bundle, then authorizes its ID.
struct SpiffeVerifier {
    material: Arc<TlsMaterial>,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
    /// As a server: whether a client without a certificate is refused.
    client_auth_mandatory: bool,
}

impl SpiffeVerifier {
    fn new(material: Arc<TlsMaterial>, authorizer: Authorizer, provider: &CryptoProvider) -> Self {
        Self {
            material,
            authorizer,
            algorithms: provider.signature_verification_algorithms,
            client_auth_mandatory: true,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: SvidUsage,
    ) -> Result<(), RustlsError> {
        let bundles = self.material.bundles.load();
        let verified = verify_end_entity(end_entity, intermediates, &bundles, now, usage)
            .map_err(certificate_error)?;
        if self.authorizer.authorize(verified.spiffe_id()) {
            Ok(())
        } else {
            Err(RustlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeVerifier")
            .field("authorizer", &self.authorizer)
            .finish_non_exhaustive()
    }
}

/// Maps a verification failure to the closest rustls certificate error, so that the peer gets
/// a meaningful alert (expired, unknown issuer, bad certificate).
fn certificate_error(error: X509SvidError) -> RustlsError {
    let certificate_error = match &error {
        X509SvidError::Chain(webpki::Error::CertExpired { .. }) => CertificateError::Expired,
        X509SvidError::Chain(webpki::Error::CertNotValidYet { .. }) => {
            CertificateError::NotValidYet
        }
        X509SvidError::Chain(webpki::Error::UnknownIssuer)
        | X509SvidError::NoBundle(_)
        | X509SvidError::EmptyBundle(_) => CertificateError::UnknownIssuer,
        _ => CertificateError::Other(rustls::OtherError(Arc::new(error))),
    };
    RustlsError::InvalidCertificate(certificate_error)
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        self.verify(end_entity, intermediates, now, SvidUsage::ServerAuth)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.client_auth_mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the client presents its one SVID whatever the server trusts.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        self.verify(end_entity, intermediates, now, SvidUsage::ClientAuth)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
