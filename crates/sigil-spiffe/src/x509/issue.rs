//! Issuing X.509 certificates: self-signed and intermediate CA certificates of a trust domain,
//! and leaf X.509-SVIDs for a CSR or a public key (X509-SVID.md; SPIRE's profiles, checklist
//! §1.2).
//!
//! Signing goes through the [`X509Signer`] trait, the seam where a CA key that is not in
//! memory (a KMS, an HSM, a TPM) plugs in; [`PrivateKey`] implements it. rcgen only ever sees
//! an adapter over that trait, so rcgen types never appear in this API.
//!
//! Rules every issued certificate follows:
//! - the profile checks of [`profile`](crate::x509::profile) run on every certificate produced;
//! - an SVID never outlives the CA that signs it: `not_after` is capped to the CA's and the cap
//!   is reported in [`IssuedX509Svid::capped`] (architecture.md §7);
//! - from a CSR only the public key is used, after its signature verifies; the SPIFFE ID, DNS
//!   names, validity and subject come from the caller;
//! - no URI name constraints are ever written: rustls-webpki rejects every URI-SAN leaf under
//!   them (crates.md pitfall 2);
//! - serial numbers are 128 random bits.

use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::id::{SpiffeId, TrustDomain};
use crate::key::{EcCurve, KeyError, KeyPair, PrivateKey, PublicKey};
use crate::x509::svid::unix_to_system;
use crate::x509::{X509SvidError, profile};

/// A signature algorithm an [`X509Signer`] produces, in the X.509 encoding (ASN.1 DER for
/// ECDSA).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384Sha384,
    /// ECDSA on P-521 with SHA-512.
    EcdsaP521Sha512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// Ed25519.
    Ed25519,
}

impl SignatureAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::EcdsaP521Sha512 => &rcgen::PKCS_ECDSA_P521_SHA512,
            Self::RsaPkcs1Sha256 => &rcgen::PKCS_RSA_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A key that signs certificates. The CA's key sits behind this trait so that it may later
/// live outside the process (KMS, HSM, TPM); [`PrivateKey`] is the in-memory implementation.
pub trait X509Signer: Send + Sync {
    /// The algorithm [`sign`](Self::sign) produces.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The signing key's public key as a DER SubjectPublicKeyInfo.
    fn subject_public_key_info(&self) -> Vec<u8>;
    /// Signs `message` (the DER TBSCertificate or CertificationRequestInfo) and returns the
    /// signature as X.509 carries it.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
}

impl X509Signer for PrivateKey {
    fn algorithm(&self) -> SignatureAlgorithm {
        match self.pair() {
            KeyPair::Ec(_, EcCurve::P256) => SignatureAlgorithm::EcdsaP256Sha256,
            KeyPair::Ec(_, EcCurve::P384) => SignatureAlgorithm::EcdsaP384Sha384,
            KeyPair::Ec(_, EcCurve::P521) => SignatureAlgorithm::EcdsaP521Sha512,
            KeyPair::Rsa(_) => SignatureAlgorithm::RsaPkcs1Sha256,
            KeyPair::Ed25519(_) => SignatureAlgorithm::Ed25519,
        }
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        let der = match self.pair() {
            KeyPair::Ec(pair, _) => pair.public_key().as_der(),
            KeyPair::Rsa(pair) => pair.public_key().as_der(),
            KeyPair::Ed25519(pair) => pair.public_key().as_der(),
        };
        // Encoding a public key we hold cannot fail short of allocation failure; an empty
        // SPKI would then make every certificate fail its checks rather than panic here.
        der.map(|d| d.as_ref().to_vec()).unwrap_or_default()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match self.pair() {
            KeyPair::Ec(pair, _) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Signing),
            KeyPair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(|_| KeyError::Signing)?;
                Ok(signature)
            }
            KeyPair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl<T: X509Signer + ?Sized> X509Signer for Arc<T> {
    fn algorithm(&self) -> SignatureAlgorithm {
        (**self).algorithm()
    }
    fn subject_public_key_info(&self) -> Vec<u8> {
        (**self).subject_public_key_info()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        (**self).sign(message)
    }
}

impl<T: X509Signer + ?Sized> X509Signer for &T {
    fn algorithm(&self) -> SignatureAlgorithm {
        (**self).algorithm()
    }
    fn subject_public_key_info(&self) -> Vec<u8> {
        (**self).subject_public_key_info()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        (**self).sign(message)
    }
}

/// The subject distinguished name of a certificate. Empty is allowed (the SAN is then
/// critical, RFC 5280 §4.1.2.6).
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// `C`, written as a PrintableString.
    pub country: Option<String>,
    /// `O`.
    pub organization: Option<String>,
    /// `OU`.
    pub organizational_unit: Option<String>,
    /// `CN`.
    pub common_name: Option<String>,
}

impl Subject {
    /// An empty subject.
    pub fn empty() -> Self {
        Self::default()
    }

    /// `C=US, O=SPIFFE`, the subject SPIRE gives its CA by default.
    pub fn spiffe() -> Self {
        Self {
            country: Some("US".into()),
            organization: Some("SPIFFE".into()),
            ..Self::default()
        }
    }

    /// The same subject with this common name.
    pub fn with_common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    fn to_rcgen(&self) -> Result<DistinguishedName, X509SvidError> {
        let mut dn = DistinguishedName::new();
        if let Some(c) = &self.country {
            let printable = rcgen::string::PrintableString::try_from(c.as_str()).map_err(|_| {
                X509SvidError::Generation("country is not a printable string".into())
            })?;
            dn.push(DnType::CountryName, DnValue::PrintableString(printable));
        }
        if let Some(o) = &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        if let Some(ou) = &self.organizational_unit {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        if let Some(cn) = &self.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        Ok(dn)
    }
}

/// What a CA certificate says.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaParams {
    /// The trust domain; the certificate's URI SAN is `spiffe://<trust domain>`, no path.
    pub trust_domain: TrustDomain,
    /// The subject; [`Subject::spiffe`] by default. A `serialNumber` attribute holding the
    /// certificate's serial is always appended, so that no two CAs share a name.
    pub subject: Subject,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity (capped to the upstream CA's for an intermediate).
    pub not_after: SystemTime,
    /// `pathLenConstraint`; none by default.
    pub path_len: Option<u8>,
}

impl CaParams {
    /// A CA of `trust_domain` valid over `[not_before, not_after]`.
    pub fn new(trust_domain: TrustDomain, not_before: SystemTime, not_after: SystemTime) -> Self {
        Self {
            trust_domain,
            subject: Subject::spiffe(),
            not_before,
            not_after,
            path_len: None,
        }
    }
}

/// What a leaf X.509-SVID says; nothing comes from the CSR but its public key.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvidParams {
    /// The SPIFFE ID: a non-root path in the authority's trust domain.
    pub spiffe_id: SpiffeId,
    /// DNS SANs; the first also becomes the common name when the subject has none, as SPIRE
    /// does.
    pub dns_names: Vec<String>,
    /// The subject; `C=US, O=SPIFFE` by default.
    pub subject: Subject,
    /// Start of validity.
    pub not_before: SystemTime,
    /// Requested end of validity; capped to the CA's.
    pub not_after: SystemTime,
}

impl SvidParams {
    /// An SVID for `spiffe_id` valid over `[not_before, not_after]`.
    pub fn new(spiffe_id: SpiffeId, not_before: SystemTime, not_after: SystemTime) -> Self {
        Self {
            spiffe_id,
            dns_names: Vec::new(),
            subject: Subject::spiffe(),
            not_before,
            not_after,
        }
    }
}

/// An X.509-SVID as issued, without a private key (the key stays with whoever made the CSR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedX509Svid {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
    capped: bool,
}

impl IssuedX509Svid {
    /// The SPIFFE ID in the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The leaf followed by the authority's chain (its intermediates, never a root).
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // Built with the leaf first; never empty.
        &self.chain[0]
    }

    /// The chain as concatenated DER (the Workload API's `x509_svid`).
    pub fn chain_der(&self) -> Vec<u8> {
        self.chain
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect()
    }

    /// Takes the chain out.
    pub fn into_cert_chain(self) -> Vec<CertificateDer<'static>> {
        self.chain
    }

    /// The leaf's `notAfter`, after any cap.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// True when the requested `not_after` was past the CA's and was cut back to it.
    pub fn capped(&self) -> bool {
        self.capped
    }
}

/// A certificate authority of one trust domain: its signer, its certificate, and the chain it
/// hands out with every SVID.
pub struct X509Authority {
    issuer: Issuer<'static, RcgenKey<Arc<dyn X509Signer>>>,
    certificate: CertificateDer<'static>,
    /// Certificates sent after a leaf: empty for a self-signed root, otherwise this CA's own
    /// certificate followed by the upstream intermediates.
    chain: Vec<CertificateDer<'static>>,
    /// From the CA's SPIFFE ID; `None` for an upstream CA of another PKI, which may sign
    /// intermediates but not SVIDs.
    trust_domain: Option<TrustDomain>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl X509Authority {
    /// Creates a self-signed root CA for `params.trust_domain`.
    pub fn self_signed(
        signer: Arc<dyn X509Signer>,
        params: &CaParams,
    ) -> Result<Self, X509SvidError> {
        let key = RcgenKey::new(signer)?;
        let rcgen_params = ca_params(params, None)?;
        let cert = rcgen_params.self_signed(&key).map_err(generation)?;
        Self::finish(key, rcgen_params, cert.der().clone(), Vec::new(), params)
    }

    /// Creates an intermediate CA for `params.trust_domain`, signed by `upstream`. Its
    /// validity is cut back to the upstream CA's.
    pub fn intermediate(
        signer: Arc<dyn X509Signer>,
        params: &CaParams,
        upstream: &Self,
    ) -> Result<Self, X509SvidError> {
        let key = RcgenKey::new(signer)?;
        let (not_after, _) = cap(params.not_before, params.not_after, upstream)?;
        let rcgen_params = ca_params(params, Some(not_after))?;
        let cert = rcgen_params
            .signed_by(&key, &upstream.issuer)
            .map_err(generation)?;
        let der = cert.der().clone();
        let mut chain = vec![der.clone()];
        chain.extend(upstream.chain.iter().cloned());
        Self::finish(key, rcgen_params, der, chain, params)
    }

    /// Loads an existing CA: `chain` is its certificate followed by any upstream
    /// intermediates. The certificate must pass the signing profile and hold the signer's
    /// public key. Its SPIFFE ID (no path) names the trust domain it signs SVIDs for; a CA
    /// without one (an upstream CA of another PKI) can only sign intermediates.
    pub fn from_certificate(
        signer: Arc<dyn X509Signer>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Self, X509SvidError> {
        let key = RcgenKey::new(signer)?;
        let der = chain.first().ok_or(X509SvidError::EmptyChain)?.clone();
        let cert = profile::parse_one(&der, 0)?;
        let id = profile::check_signing(&cert)?;
        if cert.public_key().raw != key.spki.as_slice() {
            return Err(X509SvidError::SignerMismatch);
        }
        let self_signed = is_self_signed(&cert);
        let not_before = unix_to_system(cert.validity().not_before.timestamp());
        let not_after = unix_to_system(cert.validity().not_after.timestamp());
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(generation)?;
        Ok(Self {
            issuer,
            certificate: der,
            chain: if self_signed { Vec::new() } else { chain },
            trust_domain: id.map(|id| id.trust_domain()),
            not_before,
            not_after,
        })
    }

    fn finish(
        key: RcgenKey<Arc<dyn X509Signer>>,
        rcgen_params: CertificateParams,
        der: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        params: &CaParams,
    ) -> Result<Self, X509SvidError> {
        // Check what we produce with the rules we apply to others.
        let cert = profile::parse_one(&der, 0)?;
        profile::check_signing(&cert)?;
        let not_before = unix_to_system(cert.validity().not_before.timestamp());
        let not_after = unix_to_system(cert.validity().not_after.timestamp());
        Ok(Self {
            issuer: Issuer::new(rcgen_params, key),
            certificate: der,
            chain,
            trust_domain: Some(params.trust_domain.clone()),
            not_before,
            not_after,
        })
    }

    /// The CA certificate (the one to publish in the bundle when this is a root).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The certificates that follow every leaf this CA signs.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The trust domain this CA signs SVIDs for; `None` for a CA without a SPIFFE ID.
    pub fn trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    /// Start of the CA's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the CA's validity; no SVID it signs outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs an SVID for the key in a PKCS#10 CSR. The CSR's signature must verify; apart from
    /// its public key, everything it asks for is ignored.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        params: &SvidParams,
    ) -> Result<IssuedX509Svid, X509SvidError> {
        let Ok(([], csr)) = X509CertificationRequest::from_der(csr_der) else {
            return Err(X509SvidError::CsrMalformed);
        };
        csr.verify_signature()
            .map_err(|_| X509SvidError::CsrSignature)?;
        let subject_key = SubjectKey::from_spki(&csr.certification_request_info.subject_pki)?;
        self.sign_leaf(&subject_key, params)
    }

    /// Signs an SVID for a public key directly (no proof of possession: the caller vouches
    /// for the key).
    pub fn sign_public_key(
        &self,
        public_key: &PublicKey,
        params: &SvidParams,
    ) -> Result<IssuedX509Svid, X509SvidError> {
        self.sign_leaf(&SubjectKey::from_public_key(public_key)?, params)
    }

    fn sign_leaf(
        &self,
        subject_key: &SubjectKey,
        params: &SvidParams,
    ) -> Result<IssuedX509Svid, X509SvidError> {
        if params.spiffe_id.is_root() {
            return Err(X509SvidError::LeafRootId);
        }
        let Some(trust_domain) = &self.trust_domain else {
            return Err(X509SvidError::AuthorityWithoutTrustDomain);
        };
        if !params.spiffe_id.is_member_of(trust_domain) {
            return Err(X509SvidError::WrongTrustDomain {
                id: params.spiffe_id.to_string(),
                authority: trust_domain.to_string(),
            });
        }
        let (not_after, capped) = cap(params.not_before, params.not_after, self)?;

        let mut rcgen_params = CertificateParams::default();
        rcgen_params.not_before = to_offset(params.not_before)?;
        rcgen_params.not_after = to_offset(not_after)?;
        rcgen_params.serial_number = Some(random_serial()?);
        let mut subject = params.subject.clone();
        if subject.common_name.is_none()
            && let Some(first) = params.dns_names.first()
        {
            subject.common_name = Some(first.clone());
        }
        rcgen_params.distinguished_name = subject.to_rcgen()?;
        rcgen_params.subject_alt_names = vec![uri_san(&params.spiffe_id)?];
        for name in &params.dns_names {
            if rustls_pki_types::DnsName::try_from(name.as_str()).is_err() {
                return Err(X509SvidError::InvalidDnsName(name.clone()));
            }
            let ia5 = rcgen::string::Ia5String::try_from(name.as_str())
                .map_err(|_| X509SvidError::InvalidDnsName(name.clone()))?;
            rcgen_params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        rcgen_params.is_ca = IsCa::ExplicitNoCa;
        rcgen_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        rcgen_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        rcgen_params.use_authority_key_identifier_extension = true;

        let cert = rcgen_params
            .signed_by(subject_key, &self.issuer)
            .map_err(generation)?;
        let der = cert.der().clone();
        let produced = profile::check_leaf_der(&der)?;
        if produced != params.spiffe_id {
            return Err(X509SvidError::Generation(
                "issued certificate does not carry the requested SPIFFE ID".into(),
            ));
        }
        let mut chain = Vec::with_capacity(1 + self.chain.len());
        chain.push(der);
        chain.extend(self.chain.iter().cloned());
        Ok(IssuedX509Svid {
            spiffe_id: produced,
            chain,
            not_after: truncate_to_seconds(not_after),
            capped,
        })
    }
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Authority")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Reads a PKCS#10 CSR (DER), checks its signature (proof that the requester holds the key)
/// and returns the public key it asks a certificate for, refusing key types and sizes we do
/// not issue for. Nothing else in the CSR is looked at. Lets a server check a CSR before it
/// spends something single-use (a join token) on the request.
pub fn csr_public_key(csr_der: &[u8]) -> Result<PublicKey, X509SvidError> {
    let Ok(([], csr)) = X509CertificationRequest::from_der(csr_der) else {
        return Err(X509SvidError::CsrMalformed);
    };
    csr.verify_signature()
        .map_err(|_| X509SvidError::CsrSignature)?;
    let spki = &csr.certification_request_info.subject_pki;
    // The same checks signing makes.
    SubjectKey::from_spki(spki)?;
    PublicKey::from_spki(spki).map_err(|e| X509SvidError::UnsupportedPublicKey(e.to_string()))
}

/// Creates a PKCS#10 CSR (DER) for `key` naming `spiffe_id` (what an agent sends; the server
/// uses only the key).
pub fn create_csr(key: &PrivateKey, spiffe_id: &SpiffeId) -> Result<Vec<u8>, X509SvidError> {
    let signer = RcgenKey::new(key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri_san(spiffe_id)?];
    let csr = params.serialize_request(&signer).map_err(generation)?;
    Ok(csr.der().as_ref().to_vec())
}

/// rcgen's view of an [`X509Signer`]: the algorithm, the raw public key bits and the SPKI,
/// computed once.
struct RcgenKey<S> {
    signer: S,
    algorithm: &'static rcgen::SignatureAlgorithm,
    spki: Vec<u8>,
    public_key: Vec<u8>,
}

impl<S: X509Signer> RcgenKey<S> {
    fn new(signer: S) -> Result<Self, X509SvidError> {
        let spki = signer.subject_public_key_info();
        let public_key = match SubjectPublicKeyInfo::from_der(&spki) {
            Ok(([], parsed)) => parsed.subject_public_key.data.to_vec(),
            _ => {
                return Err(X509SvidError::Key(KeyError::InvalidPublicKey(
                    "signer returned a malformed SubjectPublicKeyInfo",
                )));
            }
        };
        Ok(Self {
            algorithm: signer.algorithm().rcgen(),
            signer,
            spki,
            public_key,
        })
    }
}

impl<S> rcgen::PublicKeyData for RcgenKey<S> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl<S: X509Signer> rcgen::SigningKey for RcgenKey<S> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer
            .sign(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The subject's public key for a leaf: the algorithm family (for the SPKI's OIDs) and the
/// raw key bits.
struct SubjectKey {
    algorithm: &'static rcgen::SignatureAlgorithm,
    bits: Vec<u8>,
}

/// webpki (and so every rustls peer) refuses RSA keys below this size.
const MIN_RSA_BITS: usize = 2048;

impl SubjectKey {
    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, X509SvidError> {
        let public_key = PublicKey::from_spki(spki)
            .map_err(|e| X509SvidError::UnsupportedPublicKey(e.to_string()))?;
        let algorithm = Self::algorithm(&public_key)?;
        Ok(Self {
            algorithm,
            bits: spki.subject_public_key.data.to_vec(),
        })
    }

    fn from_public_key(public_key: &PublicKey) -> Result<Self, X509SvidError> {
        let algorithm = Self::algorithm(public_key)?;
        let bits = match public_key {
            PublicKey::Ec { point, .. } => point.to_vec(),
            PublicKey::Ed25519(raw) => raw.to_vec(),
            PublicKey::Rsa { n, e } => rsa_public_key_der(n, e),
        };
        Ok(Self { algorithm, bits })
    }

    fn algorithm(
        public_key: &PublicKey,
    ) -> Result<&'static rcgen::SignatureAlgorithm, X509SvidError> {
        Ok(match public_key {
            PublicKey::Ec { curve, .. } => match curve {
                EcCurve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                EcCurve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
                EcCurve::P521 => &rcgen::PKCS_ECDSA_P521_SHA512,
            },
            PublicKey::Rsa { n, .. } => {
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if bits < MIN_RSA_BITS {
                    return Err(X509SvidError::UnsupportedPublicKey(format!(
                        "RSA modulus of {bits} bits; at least {MIN_RSA_BITS} are required"
                    )));
                }
                &rcgen::PKCS_RSA_SHA256
            }
            PublicKey::Ed25519(_) => &rcgen::PKCS_ED25519,
        })
    }
}

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

fn ca_params(
    params: &CaParams,
    capped_not_after: Option<SystemTime>,
) -> Result<CertificateParams, X509SvidError> {
    if params.not_after <= params.not_before {
        return Err(X509SvidError::InvalidValidity(
            "not_after must be after not_before",
        ));
    }
    let mut out = CertificateParams::default();
    out.not_before = to_offset(params.not_before)?;
    out.not_after = to_offset(capped_not_after.unwrap_or(params.not_after))?;
    let serial = random_serial()?;
    out.distinguished_name = params.subject.to_rcgen()?;
    // Like SPIRE, make every CA's name unique with a serialNumber attribute (X.520, OID
    // 2.5.4.5) holding its certificate serial. Path builders pick issuer candidates by name:
    // with a root and an intermediate (or an old and a new CA) sharing `C=US, O=SPIFFE`, every
    // verification would first try the wrong key, a wasted signature check.
    let serial_hex: String = serial.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let serial_attr = rcgen::string::PrintableString::try_from(serial_hex)
        .map_err(|_| X509SvidError::Generation("serial is not a printable string".into()))?;
    out.distinguished_name.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        DnValue::PrintableString(serial_attr),
    );
    out.serial_number = Some(serial);
    out.subject_alt_names = vec![uri_san(&params.trust_domain.id())?];
    out.is_ca = IsCa::Ca(match params.path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    out.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    out.use_authority_key_identifier_extension = capped_not_after.is_some();
    // Never name constraints: see the module docs (crates.md pitfall 2).
    out.name_constraints = None;
    Ok(out)
}

/// Validity of a certificate signed by `authority`: `not_after` cut back to the authority's.
fn cap(
    not_before: SystemTime,
    not_after: SystemTime,
    authority: &X509Authority,
) -> Result<(SystemTime, bool), X509SvidError> {
    if not_after <= not_before {
        return Err(X509SvidError::InvalidValidity(
            "not_after must be after not_before",
        ));
    }
    if not_before >= authority.not_after {
        return Err(X509SvidError::AuthorityNotValid);
    }
    if not_after > authority.not_after {
        Ok((authority.not_after, true))
    } else {
        Ok((not_after, false))
    }
}

fn to_offset(t: SystemTime) -> Result<OffsetDateTime, X509SvidError> {
    let t = OffsetDateTime::from(truncate_to_seconds(t));
    if t.year() < 1950 || t.year() > 9999 {
        return Err(X509SvidError::InvalidValidity(
            "time outside what X.509 can encode",
        ));
    }
    Ok(t)
}

/// Certificates carry whole seconds.
fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(e) => {
            let d = e.duration();
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(secs)
        }
    }
}

fn random_serial() -> Result<SerialNumber, X509SvidError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| X509SvidError::Generation("random serial number".into()))?;
    // Positive, and exactly 16 bytes long once encoded (RFC 5280 §4.1.2.2).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn uri_san(id: &SpiffeId) -> Result<SanType, X509SvidError> {
    rcgen::string::Ia5String::try_from(id.as_str())
        .map(SanType::URI)
        .map_err(|_| X509SvidError::Generation("SPIFFE ID is not an IA5 string".into()))
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

fn generation(error: rcgen::Error) -> X509SvidError {
    X509SvidError::Generation(error.to_string())
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = der_integer(n);
    body.extend(der_integer(e));
    der_tlv(0x30, &body)
}

fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let magnitude = &magnitude[start..];
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der_tlv(0x02, &content)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_public_key_encoding_matches_aws_lc() {
        let key = PrivateKey::generate(crate::key::KeyType::Rsa2048).unwrap();
        let PublicKey::Rsa { n, e } = key.public_key() else {
            panic!("not rsa")
        };
        let KeyPair::Rsa(pair) = key.pair() else {
            panic!("not rsa")
        };
        // aws-lc's RSA public key AsRef is the PKCS#1 RSAPublicKey DER.
        assert_eq!(rsa_public_key_der(&n, &e), pair.public_key().as_ref());
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.as_ref()[0] & 0x80 == 0);
    }
}
