//! SPIFFE IDs and trust domains, exactly per the SPIFFE-ID standard (SPIFFE-ID.md §2).
//!
//! Parsing follows the same order as go-spiffe so that the rule that fails is the one a
//! reader expects: empty, scheme, trust domain characters, trust domain present, then the path
//! from left to right. Nothing is normalised: an upper-case scheme or trust domain is an error,
//! not something to lower-case (checklist item 5).

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The scheme and separator every SPIFFE ID starts with.
const SCHEME_PREFIX: &str = "spiffe://";

/// Implementations must accept IDs of this many bytes; Sigil refuses longer ones
/// (SPIFFE-ID.md §2.3).
pub const MAX_ID_LENGTH: usize = 2048;

/// The longest trust domain name, in bytes (SPIFFE-ID.md §2.1, following DNS).
pub const MAX_TRUST_DOMAIN_LENGTH: usize = 255;

/// Why a SPIFFE ID or trust domain was refused. Each variant names one rule of the standard.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The input was the empty string.
    #[error("spiffe id cannot be empty")]
    Empty,
    /// The input does not start with exactly `spiffe://`.
    #[error("scheme is missing or invalid: a spiffe id starts with exactly \"spiffe://\"")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// A trust domain byte outside `a-z 0-9 . - _` (this also catches ports, userinfo, IPv6
    /// literals, upper case and percent-encoding).
    #[error(
        "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and \
         underscores (found {found:?} at byte {position})"
    )]
    BadTrustDomainChar {
        /// The offending character.
        found: char,
        /// Its byte offset within the trust domain name.
        position: usize,
    },
    /// A path byte outside `A-Z a-z 0-9 . - _` and `/` (this also catches queries, fragments
    /// and percent-encoding).
    #[error(
        "path segment characters are limited to letters, numbers, dots, dashes, and underscores \
         (found {found:?} at byte {position})"
    )]
    BadPathChar {
        /// The offending character.
        found: char,
        /// Its byte offset within the path.
        position: usize,
    },
    /// Two consecutive slashes, or an empty segment given to a builder.
    #[error("path cannot contain empty segments")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("path cannot contain dot segments")]
    DotSegment,
    /// The path ends in `/`.
    #[error("path cannot have a trailing slash")]
    TrailingSlash,
    /// A non-empty path given to a builder that does not start with `/`.
    #[error("path must have a leading slash")]
    NoLeadingSlash,
    /// The whole ID is longer than [`MAX_ID_LENGTH`] bytes.
    #[error("spiffe id is {length} bytes long; the limit is {MAX_ID_LENGTH}")]
    TooLong {
        /// The length that was found.
        length: usize,
    },
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LENGTH`] bytes.
    #[error("trust domain is {length} bytes long; the limit is {MAX_TRUST_DOMAIN_LENGTH}")]
    TrustDomainTooLong {
        /// The length that was found.
        length: usize,
    },
}

/// A trust domain name such as `example.org`: the authority of SPIFFE IDs and the scope of a
/// trust bundle.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain {
    name: Box<str>,
}

impl TrustDomain {
    /// Checks a bare trust domain name (`example.org`, not `spiffe://example.org`).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(Self { name: name.into() })
    }

    /// Reads either a bare name or a SPIFFE ID, whose trust domain is taken. Bundle maps and
    /// the Workload API key trust domains both ways (`td` and `spiffe://td`).
    pub fn from_name_or_id(input: &str) -> Result<Self, SpiffeIdError> {
        if input.contains(":/") {
            Ok(SpiffeId::from_str(input)?.trust_domain())
        } else {
            Self::new(input)
        }
    }

    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The SPIFFE ID of the trust domain itself, `spiffe://<name>` (no path).
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            full: format!("{SCHEME_PREFIX}{}", self.name).into(),
            td_end: SCHEME_PREFIX.len() + self.name.len(),
        }
    }

    /// Builds `spiffe://<name><path>`; `path` is empty or starts with `/`.
    pub fn id_with_path(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(self, path)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    /// Accepts a bare name only; see [`TrustDomain::from_name_or_id`] for the lenient form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.name)
    }
}

impl Borrow<str> for TrustDomain {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

/// A SPIFFE ID, `spiffe://<trust domain><path>`, known to be valid.
///
/// Held as one string with the offset of the path, so that printing and comparing cost
/// nothing and the trust domain can be borrowed without allocating.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    full: Box<str>,
    /// Byte offset where the trust domain ends and the path begins.
    td_end: usize,
}

impl SpiffeId {
    /// Builds `spiffe://<td><path>`, checking the path. `path` is empty (the trust domain's own
    /// ID) or starts with `/`.
    pub fn new(trust_domain: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(SpiffeIdError::NoLeadingSlash);
        }
        validate_path(path)?;
        let full = format!("{SCHEME_PREFIX}{}{path}", trust_domain.as_str());
        check_length(&full)?;
        Ok(Self {
            td_end: SCHEME_PREFIX.len() + trust_domain.as_str().len(),
            full: full.into(),
        })
    }

    /// Builds `spiffe://<td>/<seg1>/<seg2>...`, checking each segment. No segments gives the
    /// trust domain's own ID.
    pub fn from_segments<S: AsRef<str>>(
        trust_domain: &TrustDomain,
        segments: &[S],
    ) -> Result<Self, SpiffeIdError> {
        let mut path = String::new();
        for segment in segments {
            let segment = segment.as_ref();
            validate_segment(segment, path.len() + 1)?;
            path.push('/');
            path.push_str(segment);
        }
        let full = format!("{SCHEME_PREFIX}{}{path}", trust_domain.as_str());
        check_length(&full)?;
        Ok(Self {
            td_end: SCHEME_PREFIX.len() + trust_domain.as_str().len(),
            full: full.into(),
        })
    }

    /// The whole ID as written.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The trust domain name, borrowed.
    pub fn trust_domain_name(&self) -> &str {
        &self.full[SCHEME_PREFIX.len()..self.td_end]
    }

    /// The trust domain, as an owned value.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain {
            name: self.trust_domain_name().into(),
        }
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.full[self.td_end..]
    }

    /// The path's segments, without slashes. Empty for a trust domain's own ID.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// True when the ID has no path, i.e. it names a trust domain or its signing authority
    /// rather than a workload. Such an ID may not be an X.509-SVID leaf (X509-SVID.md §2).
    pub fn is_root(&self) -> bool {
        self.td_end == self.full.len()
    }

    /// True when the ID belongs to `trust_domain`.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain_name() == trust_domain.as_str()
    }

    /// A new ID with `segment` appended to the path.
    pub fn join(&self, segment: &str) -> Result<Self, SpiffeIdError> {
        validate_segment(segment, self.path().len() + 1)?;
        let full = format!("{}/{segment}", self.full);
        check_length(&full)?;
        Ok(Self {
            full: full.into(),
            td_end: self.td_end,
        })
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        let Some(rest) = s.strip_prefix(SCHEME_PREFIX) else {
            return Err(SpiffeIdError::WrongScheme);
        };
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_len);
        validate_trust_domain(td)?;
        validate_path(path)?;
        check_length(s)?;
        Ok(Self {
            full: s.into(),
            td_end: SCHEME_PREFIX.len() + td_len,
        })
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.full)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    // Characters first, as go-spiffe does, so `spiffe://TD/` reports the character.
    if let Some((position, found)) = name.char_indices().find(|&(_, c)| !is_trust_domain_char(c)) {
        return Err(SpiffeIdError::BadTrustDomainChar { found, position });
    }
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LENGTH {
        return Err(SpiffeIdError::TrustDomainTooLong { length: name.len() });
    }
    Ok(())
}

/// Checks a path that is empty or starts with `/`.
fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    let Some(body) = path.strip_prefix('/') else {
        return Ok(()); // empty: the callers have ruled out anything else
    };
    // Walk segment by segment, left to right, so the first broken rule is reported. An empty
    // last segment is a trailing slash; an empty one elsewhere is an empty segment.
    let mut offset = 1;
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_none() {
            return Err(SpiffeIdError::TrailingSlash);
        }
        validate_segment(segment, offset)?;
        offset += segment.len() + 1;
    }
    Ok(())
}

/// Checks one path segment that starts at byte `offset` of the path.
fn validate_segment(segment: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if let Some((position, found)) = segment.char_indices().find(|&(_, c)| !is_path_char(c)) {
        return Err(SpiffeIdError::BadPathChar {
            found,
            position: offset + position,
        });
    }
    match segment {
        "" => Err(SpiffeIdError::EmptySegment),
        "." | ".." => Err(SpiffeIdError::DotSegment),
        _ => Ok(()),
    }
}

fn check_length(full: &str) -> Result<(), SpiffeIdError> {
    if full.len() > MAX_ID_LENGTH {
        return Err(SpiffeIdError::TooLong { length: full.len() });
    }
    Ok(())
}

fn is_trust_domain_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}
