//! The JWT-SVID type: minting (JWS compact, JWT-SVID.md §2–3) and parsing with validation.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{Algorithm, DEFAULT_LEEWAY, JwtError, JwtSigner, JwtSvidError, MAX_TOKEN_LEN};
use crate::bundle::BundleSet;
use crate::id::SpiffeId;

/// The longest raw signature any allowed algorithm produces: RSA with an 8192-bit modulus.
const MAX_SIGNATURE_LEN: usize = 1024;

/// Claims the JWT-SVID writes itself; extra claims may not replace them.
const RESERVED_CLAIMS: [&str; 5] = ["aud", "exp", "iat", "iss", "sub"];

/// A JWT-SVID that was minted here or parsed (and, unless it came from
/// [`danger::parse_insecure`](super::danger::parse_insecure), validated).
///
/// The token is a bearer credential: `Debug` leaves it out and it is zeroized on drop.
#[derive(Clone)]
pub struct JwtSvid {
    token: Zeroizing<String>,
    spiffe_id: SpiffeId,
    audience: Vec<String>,
    expiry: SystemTime,
    issued_at: Option<SystemTime>,
    key_id: String,
    algorithm: Algorithm,
    claims: Map<String, Value>,
    hint: Option<String>,
}

impl JwtSvid {
    /// Parses and validates `token` against the bundle of its subject's trust domain, for a
    /// validator that is (one of) `expected_audience`, with [`DEFAULT_LEEWAY`]. The checks and
    /// their order are in the [module documentation](super).
    pub fn parse_and_validate<A: AsRef<str>>(
        token: &str,
        bundles: &BundleSet,
        expected_audience: &[A],
        now: SystemTime,
    ) -> Result<Self, JwtSvidError> {
        parse(token, Some(bundles), expected_audience, now, DEFAULT_LEEWAY)
    }

    /// [`parse_and_validate`](Self::parse_and_validate) with another clock-skew leeway, applied
    /// to `exp`, `nbf` and `iat` (whole seconds; a fraction is dropped).
    pub fn parse_and_validate_with_leeway<A: AsRef<str>>(
        token: &str,
        bundles: &BundleSet,
        expected_audience: &[A],
        now: SystemTime,
        leeway: Duration,
    ) -> Result<Self, JwtSvidError> {
        parse(token, Some(bundles), expected_audience, now, leeway)
    }

    /// The compact JWS.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The subject (`sub`).
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The audiences (`aud`), in token order.
    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// The expiry (`exp`), in whole seconds.
    pub fn expiry(&self) -> SystemTime {
        self.expiry
    }

    /// The issue time (`iat`), when present.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// The header's `kid`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The header's `alg`.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Every claim of the token, registered and private.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The Workload API's `hint` for this SVID, an operator's label telling several apart;
    /// `None` when empty or not set.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Attaches a hint (the empty string clears it).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        let hint = hint.into();
        self.hint = (!hint.is_empty()).then_some(hint);
        self
    }
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("audience", &self.audience)
            .field("expiry", &self.expiry)
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("hint", &self.hint)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What goes into a JWT-SVID: the subject, audiences, lifetime, and optional issuer and extra
/// claims. Signed with [`mint`].
#[derive(Clone, Debug)]
pub struct JwtSvidParams {
    spiffe_id: SpiffeId,
    audience: Vec<String>,
    issued_at: SystemTime,
    expiry: SystemTime,
    issuer: Option<String>,
    extra_claims: Map<String, Value>,
}

impl JwtSvidParams {
    /// A JWT-SVID for `spiffe_id`, valid for `audience`, issued at `issued_at` and expiring at
    /// `expiry`. Both times are written in whole seconds, rounded down, so the token never
    /// outlives `expiry` (a CA's own expiry, say).
    pub fn new<I, S>(
        spiffe_id: SpiffeId,
        audience: I,
        issued_at: SystemTime,
        expiry: SystemTime,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            spiffe_id,
            audience: audience.into_iter().map(Into::into).collect(),
            issued_at,
            expiry,
            issuer: None,
            extra_claims: Map::new(),
        }
    }

    /// Sets the `iss` claim (SPIRE writes the server's URL when configured to).
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Adds a claim. `aud`, `exp`, `iat`, `iss` and `sub` are refused by [`mint`].
    pub fn with_claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.extra_claims.insert(name.into(), value);
        self
    }
}

/// Signs a JWT-SVID. The header is exactly `{"alg":..,"kid":..,"typ":"JWT"}`; `aud` is a
/// string for one audience and an array for several (see the [module documentation](super)).
pub fn mint<S: JwtSigner + ?Sized>(signer: &S, params: JwtSvidParams) -> Result<JwtSvid, JwtError> {
    let key_id = signer.key_id();
    if key_id.is_empty() {
        return Err(JwtError::EmptyKeyId);
    }
    if params.audience.is_empty() {
        return Err(JwtError::EmptyAudience);
    }
    if params.audience.iter().any(String::is_empty) {
        return Err(JwtError::EmptyAudienceValue);
    }
    if let Some(name) = RESERVED_CLAIMS
        .iter()
        .find(|name| params.extra_claims.contains_key(**name))
    {
        return Err(JwtError::ReservedClaim((*name).to_owned()));
    }
    let seconds = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs());
    let (Ok(iat), Ok(exp)) = (seconds(params.issued_at), seconds(params.expiry)) else {
        return Err(JwtError::InvalidLifetime);
    };
    if exp <= iat {
        return Err(JwtError::InvalidLifetime);
    }
    let algorithm = signer.algorithm();

    let mut claims = params.extra_claims;
    let aud = match params.audience.as_slice() {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    };
    claims.insert("aud".into(), aud);
    claims.insert("exp".into(), exp.into());
    claims.insert("iat".into(), iat.into());
    if let Some(issuer) = params.issuer {
        claims.insert("iss".into(), Value::String(issuer));
    }
    claims.insert(
        "sub".into(),
        Value::String(params.spiffe_id.as_str().into()),
    );

    // Written by hand so the header carries exactly these three parameters in this order
    // (JWT-SVID.md §2.1); serde_json escapes the key ID.
    let header = format!(
        r#"{{"alg":"{}","kid":{},"typ":"JWT"}}"#,
        algorithm.as_str(),
        Value::from(key_id)
    );
    let claims_json = Value::Object(claims);
    let payload = claims_json.to_string();
    let Value::Object(claims) = claims_json else {
        unreachable!("built as an object just above")
    };

    let mut token = Zeroizing::new(String::with_capacity(
        (header.len() + payload.len()) * 4 / 3 + 200,
    ));
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = signer.sign(token.as_bytes())?;
    if let Some(curve) = algorithm.curve() {
        let expected = 2 * curve.coordinate_len();
        if signature.len() != expected {
            return Err(JwtError::SignatureLength {
                algorithm,
                expected,
                actual: signature.len(),
            });
        }
    }
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);

    Ok(JwtSvid {
        token,
        spiffe_id: params.spiffe_id,
        audience: params.audience,
        expiry: UNIX_EPOCH + Duration::from_secs(exp),
        issued_at: Some(UNIX_EPOCH + Duration::from_secs(iat)),
        key_id: key_id.to_owned(),
        algorithm,
        claims,
        hint: None,
    })
}

/// The whole parse; `bundles` is `None` only for the `danger` path.
pub(super) fn parse<A: AsRef<str>>(
    token: &str,
    bundles: Option<&BundleSet>,
    expected_audience: &[A],
    now: SystemTime,
    leeway: Duration,
) -> Result<JwtSvid, JwtSvidError> {
    if expected_audience.is_empty() || expected_audience.iter().any(|a| a.as_ref().is_empty()) {
        return Err(JwtSvidError::NoExpectedAudience);
    }

    // 1. Compact serialization (JWT-SVID.md §2: the JSON serialization MUST NOT be used).
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtSvidError::TooLong { len: token.len() });
    }
    if token.trim_start().starts_with('{') {
        return Err(JwtSvidError::JsonSerialization);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtSvidError::NotCompact {
            parts: token.split('.').count(),
        });
    };
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| JwtSvidError::InvalidEncoding { part: "header" })?;
    let claims_json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| JwtSvidError::InvalidEncoding { part: "claims" })?;
    let mut signature_buf = [0u8; MAX_SIGNATURE_LEN];
    if base64::decoded_len_estimate(signature_b64.len()) > MAX_SIGNATURE_LEN {
        return Err(JwtSvidError::SignatureTooLong);
    }
    let signature_len = URL_SAFE_NO_PAD
        .decode_slice(signature_b64, &mut signature_buf)
        .map_err(|_| JwtSvidError::InvalidEncoding { part: "signature" })?;
    let signature = &signature_buf[..signature_len];

    // 2–6. The header: alg first, then strictness, typ, kid.
    let header: Header<'_> = serde_json::from_slice(&header_json)
        .map_err(|e| JwtSvidError::InvalidHeader(e.to_string()))?;
    let algorithm = match header.alg {
        None => return Err(JwtSvidError::MissingAlgorithm),
        Some(Param::Other) => return Err(JwtSvidError::HeaderParameterType("alg")),
        Some(Param::Str(name)) => Algorithm::from_name(&name)
            .ok_or_else(|| JwtSvidError::UnsupportedAlgorithm(name.into_owned()))?,
    };
    if let Some(name) = header.unexpected {
        return Err(JwtSvidError::UnexpectedHeaderParameter(name.into_owned()));
    }
    match header.typ {
        None => {}
        Some(Param::Other) => return Err(JwtSvidError::HeaderParameterType("typ")),
        Some(Param::Str(typ)) if typ == "JWT" || typ == "JOSE" => {}
        Some(Param::Str(typ)) => return Err(JwtSvidError::InvalidType(typ.into_owned())),
    }
    let key_id = match header.kid {
        None => return Err(JwtSvidError::MissingKeyId),
        Some(Param::Other) => return Err(JwtSvidError::HeaderParameterType("kid")),
        Some(Param::Str(kid)) if kid.is_empty() => return Err(JwtSvidError::MissingKeyId),
        Some(Param::Str(kid)) => kid,
    };

    // 7. Claims.
    let StrictObject(claims) = serde_json::from_slice(&claims_json)
        .map_err(|e| JwtSvidError::InvalidClaims(e.to_string()))?;
    let spiffe_id = match claims.get("sub") {
        None => return Err(JwtSvidError::MissingSubject),
        Some(Value::String(sub)) => sub
            .parse::<SpiffeId>()
            .map_err(JwtSvidError::InvalidSubject)?,
        Some(_) => {
            return Err(JwtSvidError::InvalidClaim {
                claim: "sub",
                reason: "must be a string",
            });
        }
    };
    let expiry = numeric_date(&claims, "exp")?.ok_or(JwtSvidError::MissingExpiry)?;
    let not_before = numeric_date(&claims, "nbf")?;
    let issued_at = numeric_date(&claims, "iat")?;
    let audience = audience(&claims)?;

    // 8–11. Key and signature.
    if let Some(bundles) = bundles {
        let trust_domain = spiffe_id.trust_domain_name();
        let bundle = bundles
            .get(trust_domain)
            .ok_or_else(|| JwtSvidError::NoBundle(trust_domain.to_owned()))?;
        let authority =
            bundle
                .jwt()
                .authority(&key_id)
                .ok_or_else(|| JwtSvidError::NoAuthority {
                    key_id: key_id.clone().into_owned(),
                    trust_domain: trust_domain.to_owned(),
                })?;
        if !algorithm.accepts_key(authority.public_key()) {
            return Err(JwtSvidError::KeyMismatch {
                key_id: key_id.into_owned(),
                key: authority.public_key().family(),
                algorithm,
            });
        }
        let verifier = authority
            .verifier(algorithm)
            .ok_or_else(|| JwtSvidError::InvalidAuthorityKey(key_id.clone().into_owned()))?;
        verifier
            .verify_sig(signing_input.as_bytes(), signature)
            .map_err(|_| JwtSvidError::InvalidSignature)?;
    }

    // 12. Times, with leeway (RFC 7519 §4.1.4–4.1.6).
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let leeway = leeway.as_secs();
    if now >= expiry.saturating_add(leeway) {
        return Err(JwtSvidError::Expired {
            expiry,
            now,
            leeway,
        });
    }
    if let Some(not_before) = not_before
        && not_before > now.saturating_add(leeway)
    {
        return Err(JwtSvidError::NotYetValid {
            not_before,
            now,
            leeway,
        });
    }
    if let Some(issued_at) = issued_at
        && issued_at > now.saturating_add(leeway)
    {
        return Err(JwtSvidError::IssuedInFuture {
            issued_at,
            now,
            leeway,
        });
    }

    // 13. Audience (JWT-SVID.md §3.2).
    let audience = audience.ok_or(JwtSvidError::MissingAudience)?;
    if audience.is_empty() {
        return Err(JwtSvidError::EmptyAudience);
    }
    if !expected_audience
        .iter()
        .any(|expected| audience.iter().any(|a| a == expected.as_ref()))
    {
        return Err(JwtSvidError::AudienceMismatch {
            actual: audience,
            expected: expected_audience
                .iter()
                .map(|a| a.as_ref().to_owned())
                .collect(),
        });
    }

    Ok(JwtSvid {
        token: Zeroizing::new(token.to_owned()),
        spiffe_id,
        audience,
        expiry: to_system_time(expiry),
        issued_at: issued_at.map(to_system_time),
        key_id: key_id.into_owned(),
        algorithm,
        claims,
        hint: None,
    })
}

/// A NumericDate claim: RFC 7519 allows fractions, but Sigil, like PyJWT (py-spiffe) and the
/// `spiffe` crate, accepts only non-negative integers.
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<u64>, JwtSvidError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(JwtSvidError::InvalidClaim {
            claim,
            reason: "must be a non-negative integer",
        }),
        Some(_) => Err(JwtSvidError::InvalidClaim {
            claim,
            reason: "must be a non-negative integer",
        }),
    }
}

/// `aud` as a string or an array of strings (RFC 7519 §4.1.3); `None` when absent.
fn audience(claims: &Map<String, Value>) -> Result<Option<Vec<String>>, JwtSvidError> {
    const INVALID: JwtSvidError = JwtSvidError::InvalidClaim {
        claim: "aud",
        reason: "must be a string or an array of strings",
    };
    match claims.get("aud") {
        None => Ok(None),
        Some(Value::String(aud)) => Ok(Some(vec![aud.clone()])),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(INVALID))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(INVALID),
    }
}

/// Seconds since 1970 as a time; values past what `SystemTime` holds saturate far in the future.
fn to_system_time(seconds: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2))
}

/// The JOSE header, borrowed from the decoded bytes. Unknown parameters are remembered, not
/// refused, so that `alg` is judged first whatever order the JSON has.
#[derive(Default)]
struct Header<'a> {
    alg: Option<Param<'a>>,
    kid: Option<Param<'a>>,
    typ: Option<Param<'a>>,
    unexpected: Option<Cow<'a, str>>,
}

/// A header value: a string (borrowed when it has no escapes) or anything else.
enum Param<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for Param<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamVisitor)
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Param::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Param::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Param::Str(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Param::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Param::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Param::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Param::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Param::Other)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Param::Other)
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Param::Other)
    }
}

impl<'de> Deserialize<'de> for Header<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a jose header object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut header = Header::default();
        while let Some(key) = map.next_key::<Param<'de>>()? {
            // JSON object keys are always strings.
            let Param::Str(key) = key else {
                return Err(de::Error::custom("header parameter name is not a string"));
            };
            let slot = match key.as_ref() {
                "alg" => &mut header.alg,
                "kid" => &mut header.kid,
                "typ" => &mut header.typ,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    header.unexpected.get_or_insert(key);
                    continue;
                }
            };
            // RFC 7515 §4: parameter names must be unique; reject rather than pick one.
            if slot.is_some() {
                return Err(de::Error::custom(format_args!(
                    "duplicate header parameter {key:?}"
                )));
            }
            *slot = Some(map.next_value()?);
        }
        Ok(header)
    }
}

/// A JSON object whose top-level names are unique: a repeated claim (two `sub`s, say) is
/// refused instead of silently keeping the last, which other parsers might not agree on.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StrictObjectVisitor)
    }
}

struct StrictObjectVisitor;

impl<'de> Visitor<'de> for StrictObjectVisitor {
    type Value = StrictObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate claim {key:?}")));
            }
            object.insert(key, value);
        }
        Ok(StrictObject(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Bundle, JwtAuthority};
    use crate::jwt::PrivateKeySigner;
    use crate::key::{KeyType, PrivateKey};

    const NOW: u64 = 1_800_000_000;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn signer() -> PrivateKeySigner {
        PrivateKeySigner::with_default_algorithm(
            "kid-1",
            PrivateKey::generate(KeyType::EcP256).unwrap(),
        )
        .unwrap()
    }

    fn bundles(signer: &PrivateKeySigner) -> BundleSet {
        let mut bundle = Bundle::new("example.org".parse().unwrap());
        bundle
            .jwt_mut()
            .add_authority(JwtAuthority::new("kid-1", signer.public_key()).unwrap());
        [bundle].into_iter().collect()
    }

    fn params() -> JwtSvidParams {
        JwtSvidParams::new(
            "spiffe://example.org/web".parse().unwrap(),
            ["aud-1"],
            at(NOW),
            at(NOW + 300),
        )
    }

    fn decode_part(token: &str, index: usize) -> Value {
        let part = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Signs arbitrary header and claims JSON with the signer's key.
    fn craft(signer: &PrivateKeySigner, header: &str, claims: &str) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = signer.sign(token.as_bytes()).unwrap();
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        token
    }

    #[test]
    fn several_audiences_are_written_as_an_array() {
        let signer = signer();
        let params = JwtSvidParams::new(
            "spiffe://example.org/web".parse().unwrap(),
            ["aud-1", "aud-2"],
            at(NOW),
            at(NOW + 300),
        );
        let svid = mint(&signer, params).unwrap();
        assert_eq!(
            decode_part(svid.token(), 1)["aud"],
            serde_json::json!(["aud-1", "aud-2"])
        );
        let parsed =
            JwtSvid::parse_and_validate(svid.token(), &bundles(&signer), &["aud-2"], at(NOW))
                .unwrap();
        assert_eq!(parsed.audience(), ["aud-1", "aud-2"]);
    }

    #[test]
    fn minted_header_is_exactly_alg_kid_typ() {
        let signer = signer();
        let svid = mint(&signer, params().with_issuer("https://issuer")).unwrap();
        let header_b64 = svid.token().split('.').next().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header_b64).unwrap(),
            br#"{"alg":"ES256","kid":"kid-1","typ":"JWT"}"#
        );
        assert_eq!(
            decode_part(svid.token(), 1),
            serde_json::json!({
                "aud": "aud-1", "exp": NOW + 300, "iat": NOW,
                "iss": "https://issuer", "sub": "spiffe://example.org/web",
            })
        );
        assert!(!svid.token().contains('='));
        let parsed =
            JwtSvid::parse_and_validate(svid.token(), &bundles(&signer), &["aud-1"], at(NOW))
                .unwrap();
        assert_eq!(parsed.claims(), svid.claims());
        assert_eq!(parsed.expiry(), svid.expiry());
        assert_eq!(parsed.issued_at(), Some(at(NOW)));
    }

    #[test]
    fn mint_refuses_bad_parameters() {
        let signer = signer();
        let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
        let empty: [&str; 0] = [];
        let cases = [
            (
                JwtSvidParams::new(id.clone(), empty, at(NOW), at(NOW + 1)),
                "a jwt-svid needs at least one audience",
            ),
            (
                JwtSvidParams::new(id.clone(), [""], at(NOW), at(NOW + 1)),
                "jwt-svid audience values cannot be empty",
            ),
            (
                JwtSvidParams::new(id, ["a"], at(NOW), at(NOW)),
                "jwt-svid expiry must be at least one second after its issue time, both after 1970",
            ),
            (
                params().with_claim("sub", "spiffe://example.org/admin".into()),
                "claim \"sub\" is set by the jwt-svid itself and cannot be given as an extra claim",
            ),
        ];
        for (params, message) in cases {
            assert_eq!(mint(&signer, params).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn alg_is_judged_before_other_header_parameters_in_any_order() {
        let signer = signer();
        let claims = format!(
            r#"{{"sub":"spiffe://example.org/web","aud":"aud-1","exp":{}}}"#,
            NOW + 60
        );
        for header in [
            r#"{"x5u":"https://evil","alg":"HS256","kid":"kid-1"}"#,
            r#"{"alg":"HS256","x5u":"https://evil","kid":"kid-1"}"#,
            r#"{"kid":7,"alg":"HS256"}"#,
        ] {
            let token = craft(&signer, header, &claims);
            let err = danger_parse(&token).unwrap_err();
            assert_eq!(
                err,
                JwtSvidError::UnsupportedAlgorithm("HS256".into()),
                "{header}"
            );
        }
        let token = craft(
            &signer,
            r#"{"alg":"ES256","kid":"kid-1","x5u":"u","jku":"v"}"#,
            &claims,
        );
        assert_eq!(
            danger_parse(&token).unwrap_err(),
            JwtSvidError::UnexpectedHeaderParameter("x5u".into())
        );
        // Escaped strings are read like plain ones.
        let token = craft(
            &signer,
            r#"{"alg":"ES\u0032\u0035\u0036","kid":"kid\u002d1"}"#,
            &claims,
        );
        assert_eq!(danger_parse(&token).unwrap().key_id(), "kid-1");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let signer = signer();
        let claims = format!(
            r#"{{"sub":"spiffe://example.org/web","aud":"aud-1","exp":{}}}"#,
            NOW + 60
        );
        let token = craft(
            &signer,
            r#"{"alg":"ES256","alg":"ES256","kid":"kid-1"}"#,
            &claims,
        );
        assert!(matches!(
            danger_parse(&token).unwrap_err(),
            JwtSvidError::InvalidHeader(m) if m.contains("duplicate header parameter \"alg\"")
        ));
        let claims = format!(
            r#"{{"sub":"spiffe://example.org/web","sub":"spiffe://example.org/admin","aud":"aud-1","exp":{}}}"#,
            NOW + 60
        );
        let token = craft(&signer, r#"{"alg":"ES256","kid":"kid-1"}"#, &claims);
        assert!(matches!(
            danger_parse(&token).unwrap_err(),
            JwtSvidError::InvalidClaims(m) if m.contains("duplicate claim \"sub\"")
        ));
    }

    #[test]
    fn numeric_dates_must_be_non_negative_integers() {
        let signer = signer();
        for (exp, ok) in [
            ("1800000060", true),
            ("1800000060.5", false),
            ("-1", false),
            ("\"1800000060\"", false),
        ] {
            let claims =
                format!(r#"{{"sub":"spiffe://example.org/web","aud":"aud-1","exp":{exp}}}"#);
            let token = craft(&signer, r#"{"alg":"ES256","kid":"kid-1"}"#, &claims);
            let result = danger_parse(&token);
            assert_eq!(result.is_ok(), ok, "{exp}: {result:?}");
        }
    }

    #[test]
    fn leeway_bounds_are_exact() {
        let signer = signer();
        let svid = mint(&signer, params()).unwrap();
        let bundles = bundles(&signer);
        let validate = |now, leeway| {
            JwtSvid::parse_and_validate_with_leeway(
                svid.token(),
                &bundles,
                &["aud-1"],
                at(now),
                Duration::from_secs(leeway),
            )
        };
        // exp = NOW + 300: valid strictly before exp + leeway.
        assert!(validate(NOW + 299, 0).is_ok());
        assert!(matches!(
            validate(NOW + 300, 0),
            Err(JwtSvidError::Expired { .. })
        ));
        assert!(validate(NOW + 309, 10).is_ok());
        assert!(matches!(
            validate(NOW + 310, 10),
            Err(JwtSvidError::Expired { .. })
        ));
        // iat = NOW: not in the future beyond the leeway.
        assert!(validate(NOW - 10, 10).is_ok());
        assert!(matches!(
            validate(NOW - 11, 10),
            Err(JwtSvidError::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn debug_redacts_the_token() {
        let svid = mint(&signer(), params()).unwrap();
        let debug = format!("{svid:?}");
        assert!(!debug.contains(svid.token()));
        assert!(!debug.contains(svid.token().split('.').nth(2).unwrap()));
        assert!(debug.contains("<redacted>"));
    }

    fn danger_parse(token: &str) -> Result<JwtSvid, JwtSvidError> {
        crate::jwt::danger::parse_insecure(token, &["aud-1"], at(NOW))
    }
}
