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
        // The length first: no work in proportion to an oversized input.
        check_length(s)?;
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_len);
        validate_trust_domain(td)?;
        validate_path(path)?;
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
    if let Some(position) = name.bytes().position(|b| !is_trust_domain_byte(b)) {
        return Err(SpiffeIdError::BadTrustDomainChar {
            found: char_at(name, position),
            position,
        });
    }
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LENGTH {
        return Err(SpiffeIdError::TrustDomainTooLong { length: name.len() });
    }
    Ok(())
}

/// Checks a path that is empty or starts with `/`, in one pass from left to right so that the
/// first broken rule is the one reported. An empty last segment is a trailing slash; an empty
/// one elsewhere is an empty segment.
fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return Ok(()); // the callers have ruled out a path without a leading slash
    }
    let mut segment_start = 1;
    for position in 1..=bytes.len() {
        match bytes.get(position) {
            Some(b'/') | None => {
                let segment = &bytes[segment_start..position];
                match segment {
                    [] if position == bytes.len() => return Err(SpiffeIdError::TrailingSlash),
                    [] => return Err(SpiffeIdError::EmptySegment),
                    b"." | b".." => return Err(SpiffeIdError::DotSegment),
                    _ => segment_start = position + 1,
                }
            }
            Some(&b) if !is_path_byte(b) => {
                return Err(SpiffeIdError::BadPathChar {
                    found: char_at(path, position),
                    position,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks one path segment given to a builder, which starts at byte `offset` of the path.
fn validate_segment(segment: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if let Some(position) = segment.bytes().position(|b| !is_path_byte(b)) {
        return Err(SpiffeIdError::BadPathChar {
            found: char_at(segment, position),
            position: offset + position,
        });
    }
    match segment {
        "" => Err(SpiffeIdError::EmptySegment),
        "." | ".." => Err(SpiffeIdError::DotSegment),
        _ => Ok(()),
    }
}

/// The character at a byte position found by a byte scan. Every byte before it was ASCII, so
/// the position is a character boundary.
fn char_at(s: &str, position: usize) -> char {
    s[position..]
        .chars()
        .next()
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn check_length(full: &str) -> Result<(), SpiffeIdError> {
    if full.len() > MAX_ID_LENGTH {
        return Err(SpiffeIdError::TooLong { length: full.len() });
    }
    Ok(())
}

fn is_trust_domain_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

#[cfg(test)]
mod tests {
    use super::SpiffeIdError as E;
    use super::*;

    fn bad_td(found: char, position: usize) -> E {
        E::BadTrustDomainChar { found, position }
    }

    fn bad_path(found: char, position: usize) -> E {
        E::BadPathChar { found, position }
    }

    /// Every SPIFFE ID row of the conformance checklist (§1.1 items 1-7, §2.1), with the
    /// checklist's own wording of the rule beside it.
    #[test]
    fn spiffe_id_parsing_follows_every_checklist_row() {
        let long_path = format!("/{}", "a".repeat(MAX_ID_LENGTH - "spiffe://td/".len()));
        let too_long_path = format!("{long_path}a");
        let long_td = "a".repeat(MAX_TRUST_DOMAIN_LENGTH);
        let too_long_td = "a".repeat(MAX_TRUST_DOMAIN_LENGTH + 1);
        // (input, Ok((trust domain, path)) or the error)
        type Case<'a> = (String, Result<(&'a str, &'a str), E>);
        let cases: Vec<Case<'_>> = vec![
            // §2.1: empty input.
            ("".into(), Err(E::Empty)),
            // Item 7: a root ID is valid; plain paths are valid.
            ("spiffe://trustdomain".into(), Ok(("trustdomain", ""))),
            (
                "spiffe://trustdomain/path".into(),
                Ok(("trustdomain", "/path")),
            ),
            (
                "spiffe://trustdomain/a/b/c".into(),
                Ok(("trustdomain", "/a/b/c")),
            ),
            // Item 1 and 5: scheme exactly `spiffe://`, never normalised.
            ("s".into(), Err(E::WrongScheme)),
            ("spiffe:/".into(), Err(E::WrongScheme)),
            ("spiffe:/trustdomain/path".into(), Err(E::WrongScheme)),
            ("Spiffe://trustdomain".into(), Err(E::WrongScheme)),
            ("SPIFFE://td".into(), Err(E::WrongScheme)),
            ("BAD".into(), Err(E::WrongScheme)),
            ("invalid subject".into(), Err(E::WrongScheme)),
            ("https://trustdomain/path".into(), Err(E::WrongScheme)),
            (" spiffe://trustdomain".into(), Err(E::WrongScheme)),
            // Item 2: the trust domain must be present.
            ("spiffe://".into(), Err(E::MissingTrustDomain)),
            ("spiffe:///".into(), Err(E::MissingTrustDomain)),
            ("spiffe:///path".into(), Err(E::MissingTrustDomain)),
            // Item 3 and 5: lowercase `a-z 0-9 . - _` only; the character is reported before
            // any path rule (`spiffe://TD/` fails on `T`).
            ("spiffe://Trustdomain/path".into(), Err(bad_td('T', 0))),
            ("spiffe://TD/".into(), Err(bad_td('T', 0))),
            ("spiffe://trust$domain".into(), Err(bad_td('$', 5))),
            ("spiffe://%F0%9F%A4%AF/path".into(), Err(bad_td('%', 0))),
            ("spiffe://%62%61%64/path".into(), Err(bad_td('%', 0))),
            ("spiffe://tr~ust".into(), Err(bad_td('~', 2))),
            ("spiffe://trust domain".into(), Err(bad_td(' ', 5))),
            ("spiffe://trüst".into(), Err(bad_td('ü', 2))),
            // Item 2: no port, no userinfo; item 3: no IPv6 literal; IPv4 is just characters.
            ("spiffe://td:8443/x".into(), Err(bad_td(':', 2))),
            ("spiffe://u@td/x".into(), Err(bad_td('@', 1))),
            ("spiffe://u:p@td/x".into(), Err(bad_td(':', 1))),
            ("spiffe://[::1]/x".into(), Err(bad_td('[', 0))),
            ("spiffe://127.0.0.1/x".into(), Ok(("127.0.0.1", "/x"))),
            ("spiffe://a-b_c.d/x".into(), Ok(("a-b_c.d", "/x"))),
            // Item 1: no query, no fragment (they fall on the trust domain or the path).
            ("spiffe://td?q=1".into(), Err(bad_td('?', 2))),
            ("spiffe://td#f".into(), Err(bad_td('#', 2))),
            ("spiffe://td/x?q=1".into(), Err(bad_path('?', 2))),
            ("spiffe://td/x#f".into(), Err(bad_path('#', 2))),
            // Item 4: no percent-encoding and only `A-Z a-z 0-9 . - _` in segments.
            (
                "spiffe://trustdomain/%F0%9F%A4%AF".into(),
                Err(bad_path('%', 1)),
            ),
            (
                "spiffe://trustdomain/%62%61%64".into(),
                Err(bad_path('%', 1)),
            ),
            ("spiffe://trustdomain/path$".into(), Err(bad_path('$', 5))),
            ("spiffe://trustdomain/pa th".into(), Err(bad_path(' ', 3))),
            ("spiffe://trustdomain/a/b~".into(), Err(bad_path('~', 4))),
            ("spiffe://trustdomain/ü".into(), Err(bad_path('ü', 1))),
            // Item 4: no trailing slash, no empty segment.
            ("spiffe://trustdomain/".into(), Err(E::TrailingSlash)),
            ("spiffe://trustdomain/path/".into(), Err(E::TrailingSlash)),
            ("spiffe://trustdomain//".into(), Err(E::EmptySegment)),
            ("spiffe://trustdomain//path".into(), Err(E::EmptySegment)),
            ("spiffe://trustdomain/a//b".into(), Err(E::EmptySegment)),
            // Item 4: no `.` or `..` segment; other dot-only segments are fine.
            ("spiffe://trustdomain/.".into(), Err(E::DotSegment)),
            ("spiffe://trustdomain/./path".into(), Err(E::DotSegment)),
            (
                "spiffe://trustdomain/path/./other".into(),
                Err(E::DotSegment),
            ),
            ("spiffe://trustdomain/path/..".into(), Err(E::DotSegment)),
            ("spiffe://trustdomain/..".into(), Err(E::DotSegment)),
            ("spiffe://trustdomain/../path".into(), Err(E::DotSegment)),
            (
                "spiffe://trustdomain/path/../other".into(),
                Err(E::DotSegment),
            ),
            (
                "spiffe://trustdomain/.path".into(),
                Ok(("trustdomain", "/.path")),
            ),
            (
                "spiffe://trustdomain/..path".into(),
                Ok(("trustdomain", "/..path")),
            ),
            (
                "spiffe://trustdomain/...".into(),
                Ok(("trustdomain", "/...")),
            ),
            // Item 4: the path is case-sensitive and kept as written.
            ("spiffe://td/AbC".into(), Ok(("td", "/AbC"))),
            // Item 6: IDs up to 2048 bytes are accepted, longer ones refused; trust domains
            // up to 255 bytes.
            (
                format!("spiffe://td{long_path}"),
                Ok(("td", long_path.as_str())),
            ),
            (
                format!("spiffe://td{too_long_path}"),
                Err(E::TooLong {
                    length: MAX_ID_LENGTH + 1,
                }),
            ),
            (
                format!("spiffe://{long_td}/x"),
                Ok((long_td.as_str(), "/x")),
            ),
            (
                format!("spiffe://{too_long_td}/x"),
                Err(E::TrustDomainTooLong {
                    length: MAX_TRUST_DOMAIN_LENGTH + 1,
                }),
            ),
        ];
        for (input, expected) in cases {
            let got = input.parse::<SpiffeId>();
            match (got, expected) {
                (Ok(id), Ok((td, path))) => {
                    assert_eq!(id.trust_domain_name(), td, "{input}");
                    assert_eq!(id.path(), path, "{input}");
                    assert_eq!(id.to_string(), input, "display must give back the input");
                    assert_eq!(id.is_root(), path.is_empty(), "{input}");
                }
                (got, expected) => assert_eq!(got.map(|_| ()), expected.map(|_| ()), "{input:?}"),
            }
        }
    }

    /// Every byte outside the allowed sets is refused, in the trust domain and in the path
    /// (checklist §2.1, "TD + any byte 0x00-0xFF").
    #[test]
    fn every_disallowed_byte_is_refused() {
        for b in 0u8..=0x7f {
            let c = char::from(b);
            let td_ok = c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
            if c != '/' {
                let td = format!("spiffe://a{c}b/x");
                assert_eq!(td.parse::<SpiffeId>().is_ok(), td_ok, "td byte {b:#x}");
            }
            let path_ok = c.is_ascii_alphanumeric() || "._-".contains(c);
            if c != '/' {
                let path = format!("spiffe://td/a{c}b");
                assert_eq!(
                    path.parse::<SpiffeId>().is_ok(),
                    path_ok,
                    "path byte {b:#x}"
                );
            }
        }
        for c in ['é', 'ß', '\u{fffd}', '😀'] {
            assert!(format!("spiffe://a{c}/x").parse::<SpiffeId>().is_err());
            assert!(format!("spiffe://td/{c}").parse::<SpiffeId>().is_err());
        }
    }

    #[test]
    fn errors_name_the_rule() {
        let message = |s: &str| s.parse::<SpiffeId>().unwrap_err().to_string();
        assert_eq!(message(""), "spiffe id cannot be empty");
        assert!(message("SPIFFE://td").starts_with("scheme is missing or invalid"));
        assert_eq!(message("spiffe:///x"), "trust domain is missing");
        assert_eq!(
            message("spiffe://TD/x"),
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, \
             and underscores (found 'T' at byte 0)"
        );
        assert_eq!(
            message("spiffe://td/a$"),
            "path segment characters are limited to letters, numbers, dots, dashes, and \
             underscores (found '$' at byte 2)"
        );
        assert_eq!(
            message("spiffe://td//a"),
            "path cannot contain empty segments"
        );
        assert_eq!(
            message("spiffe://td/./a"),
            "path cannot contain dot segments"
        );
        assert_eq!(
            message("spiffe://td/a/"),
            "path cannot have a trailing slash"
        );
    }

    /// Checklist §2.2: trust domains from a bare name or an ID.
    #[test]
    fn trust_domain_from_name_or_id() {
        let td = |s: &str| TrustDomain::from_name_or_id(s).map(|t| t.to_string());
        assert_eq!(td(""), Err(E::MissingTrustDomain));
        assert_eq!(td("trustdomain").unwrap(), "trustdomain");
        assert_eq!(td("spiffe://trustdomain").unwrap(), "trustdomain");
        assert_eq!(td("spiffe://trustdomain/path").unwrap(), "trustdomain");
        assert_eq!(td("spiffe:/trustdomain/path"), Err(E::WrongScheme));
        assert_eq!(td("spiffe:///path"), Err(E::MissingTrustDomain));
        assert_eq!(td("spiffe://trustdomain/"), Err(E::TrailingSlash));
        assert_eq!(td("BAD"), Err(bad_td('B', 0)));
        // The strict constructor takes only a bare name.
        assert!(TrustDomain::new("spiffe://trustdomain").is_err());
        assert!("spiffe://trustdomain".parse::<TrustDomain>().is_err());
        assert_eq!(
            TrustDomain::new("trustdomain").unwrap().id().to_string(),
            "spiffe://trustdomain"
        );
    }

    /// Checklist §2.2: building IDs from a trust domain and a path, or from segments.
    #[test]
    fn builders_check_what_they_build() {
        let td = TrustDomain::new("trustdomain").unwrap();
        let new = |path: &str| SpiffeId::new(&td, path).map(|id| id.to_string());
        assert_eq!(new("").unwrap(), "spiffe://trustdomain");
        assert_eq!(new("/path").unwrap(), "spiffe://trustdomain/path");
        assert_eq!(new("foo"), Err(E::NoLeadingSlash));
        assert_eq!(new("/"), Err(E::TrailingSlash));
        assert_eq!(new("/a/../b"), Err(E::DotSegment));

        let seg =
            |segments: &[&str]| SpiffeId::from_segments(&td, segments).map(|id| id.to_string());
        assert_eq!(seg(&[]).unwrap(), "spiffe://trustdomain");
        assert_eq!(seg(&["a", "b"]).unwrap(), "spiffe://trustdomain/a/b");
        assert_eq!(seg(&[""]), Err(E::EmptySegment));
        assert_eq!(seg(&["/"]), Err(bad_path('/', 1)));
        assert_eq!(seg(&["/foo"]), Err(bad_path('/', 1)));
        assert_eq!(seg(&["$"]), Err(bad_path('$', 1)));
        assert_eq!(seg(&["."]), Err(E::DotSegment));
        assert_eq!(seg(&[".."]), Err(E::DotSegment));
        assert_eq!(
            seg(&["a".repeat(MAX_ID_LENGTH).as_str()]),
            Err(E::TooLong {
                length: MAX_ID_LENGTH + "spiffe://trustdomain/".len()
            })
        );

        let base = td.id_with_path("/path").unwrap();
        assert_eq!(
            base.join("foo").unwrap().to_string(),
            "spiffe://trustdomain/path/foo"
        );
        assert_eq!(base.join(""), Err(E::EmptySegment));
        assert_eq!(base.join("a/b"), Err(bad_path('/', 7)));
        assert_eq!(
            base.segments().collect::<Vec<_>>(),
            vec!["path"],
            "segments of a one-segment path"
        );
        assert_eq!(td.id().segments().count(), 0);
    }

    #[test]
    fn membership_and_ordering() {
        let td = TrustDomain::new("example.org").unwrap();
        let other = TrustDomain::new("example.com").unwrap();
        let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&other));
        // A trust domain that is a prefix of another is not the same trust domain.
        let prefix: SpiffeId = "spiffe://example.orga/web".parse().unwrap();
        assert!(!prefix.is_member_of(&td));
        assert_eq!(id.trust_domain(), td);
    }

    #[test]
    fn serde_uses_the_string_form_and_checks_it() {
        let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://example.org/web\"");
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SpiffeId>("\"BAD\"").is_err());
        assert!(serde_json::from_str::<SpiffeId>("\"\"").is_err());
        assert!(serde_json::from_str::<TrustDomain>("\"BAD\"").is_err());
        assert_eq!(
            serde_json::from_str::<TrustDomain>("\"example.org\"").unwrap(),
            TrustDomain::new("example.org").unwrap()
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn trust_domain() -> impl Strategy<Value = String> {
            "[a-z0-9._-]{1,40}"
        }

        fn segment() -> impl Strategy<Value = String> {
            "[A-Za-z0-9._-]{1,20}"
                .prop_filter("dot segments are invalid", |s| s != "." && s != "..")
        }

        proptest! {
            /// Every valid ID prints back exactly as parsed, and its parts rebuild it.
            #[test]
            fn valid_ids_round_trip(td in trust_domain(), segs in prop::collection::vec(segment(), 0..8)) {
                let text = format!("spiffe://{td}{}", segs.iter().map(|s| format!("/{s}")).collect::<String>());
                let id: SpiffeId = text.parse().unwrap();
                prop_assert_eq!(id.to_string(), text);
                prop_assert_eq!(id.trust_domain_name(), td.as_str());
                let rebuilt = SpiffeId::from_segments(&id.trust_domain(), &segs).unwrap();
                prop_assert_eq!(&rebuilt, &id);
                prop_assert_eq!(id.segments().collect::<Vec<_>>(), segs.iter().map(String::as_str).collect::<Vec<_>>());
                let reparsed: SpiffeId = id.as_str().parse().unwrap();
                prop_assert_eq!(reparsed, id);
            }

            /// Arbitrary text never panics, and whatever parses prints back identically.
            #[test]
            fn arbitrary_text_parses_or_errs(text in "\\PC{0,80}", tail in "(spiffe://)?[a-zA-Z0-9./%:@?#_~ -]{0,40}") {
                for input in [text, tail] {
                    if let Ok(id) = input.parse::<SpiffeId>() {
                        prop_assert_eq!(id.to_string(), input);
                    }
                }
            }
        }
    }
}
