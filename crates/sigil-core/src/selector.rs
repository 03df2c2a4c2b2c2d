//! Selectors: `type:value` facts about a node or a workload (`unix:uid:1000`,
//! `k8s:ns:default`), produced by attestors and matched against registration entries.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest selector value accepted, in bytes.
pub const MAX_VALUE_LENGTH: usize = 1024;

/// Why a selector was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// No `:` between type and value.
    #[error("selector {0:?} must be written type:value")]
    MissingSeparator(String),
    /// Nothing before the `:`.
    #[error("selector {0:?} has an empty type")]
    EmptyType(String),
    /// A type character outside `a-z 0-9 _ -`.
    #[error("selector type {0:?} may hold only lowercase letters, digits, '_' and '-'")]
    BadType(String),
    /// Nothing after the `:`.
    #[error("selector {0:?} has an empty value")]
    EmptyValue(String),
    /// A control character in the value, or a value over the length limit.
    #[error("selector value of {0:?} holds control characters or is over {MAX_VALUE_LENGTH} bytes")]
    BadValue(String),
}

/// One selector, `type:value`. The value may itself contain `:` (`k8s:ns:default`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    kind: String,
    value: String,
}

impl Selector {
    /// A selector of this type and value, checked.
    pub fn new(kind: &str, value: &str) -> Result<Self, SelectorError> {
        let whole = || format!("{kind}:{value}");
        if kind.is_empty() {
            return Err(SelectorError::EmptyType(whole()));
        }
        if !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(SelectorError::BadType(kind.to_owned()));
        }
        if value.is_empty() {
            return Err(SelectorError::EmptyValue(whole()));
        }
        if value.len() > MAX_VALUE_LENGTH || value.chars().any(char::is_control) {
            return Err(SelectorError::BadValue(whole()));
        }
        Ok(Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The type: the attestor that produces it (`unix`, `join_token`, `k8s`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The value, everything after the first `:`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| SelectorError::MissingSeparator(s.to_owned()))?;
        Self::new(kind, value)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of selectors, ordered and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SelectorSet(BTreeSet<Selector>);

impl SelectorSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a selector; returns false when it was already there.
    pub fn insert(&mut self, selector: Selector) -> bool {
        self.0.insert(selector)
    }

    /// True when every selector of `self` is in `other`: the matching rule of registration
    /// entries (an entry applies to a workload or node that has all of its selectors).
    pub fn is_subset_of(&self, other: &Self) -> bool {
        self.0.is_subset(&other.0)
    }

    /// True when the selector is in the set.
    pub fn contains(&self, selector: &Selector) -> bool {
        self.0.contains(selector)
    }

    /// The selectors, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Selector> {
        self.0.iter()
    }

    /// The number of selectors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a SelectorSet {
    type Item = &'a Selector;
    type IntoIter = std::collections::btree_set::Iter<'a, Selector>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_with_colons_in_the_value() {
        let s: Selector = "k8s:ns:default".parse().unwrap();
        assert_eq!((s.kind(), s.value()), ("k8s", "ns:default"));
        assert_eq!(s.to_string(), "k8s:ns:default");
        let s: Selector = "unix:uid:1000".parse().unwrap();
        assert_eq!(s.value(), "uid:1000");
    }

    #[test]
    fn bad_selectors_are_refused_by_rule() {
        use SelectorError as E;
        let cases = [
            ("unix", E::MissingSeparator("unix".into())),
            (":uid:1", E::EmptyType(":uid:1".into())),
            ("unix:", E::EmptyValue("unix:".into())),
            ("Unix:uid:1", E::BadType("Unix".into())),
            ("un ix:uid:1", E::BadType("un ix".into())),
            ("unix:uid:\n1", E::BadValue("unix:uid:\n1".into())),
        ];
        for (input, error) in cases {
            assert_eq!(input.parse::<Selector>(), Err(error), "{input:?}");
        }
        let long = format!("unix:{}", "a".repeat(MAX_VALUE_LENGTH + 1));
        assert!(matches!(long.parse::<Selector>(), Err(E::BadValue(_))));
    }

    #[test]
    fn subset_is_the_matching_rule() {
        let set =
            |items: &[&str]| -> SelectorSet { items.iter().map(|s| s.parse().unwrap()).collect() };
        let workload = set(&["unix:uid:1000", "unix:gid:1000", "unix:user:alice"]);
        assert!(set(&["unix:uid:1000"]).is_subset_of(&workload));
        assert!(set(&["unix:uid:1000", "unix:gid:1000"]).is_subset_of(&workload));
        assert!(!set(&["unix:uid:1000", "unix:gid:0"]).is_subset_of(&workload));
        assert!(set(&[]).is_subset_of(&workload));
        assert_eq!(set(&["a:1", "a:1"]).len(), 1);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let s: Selector = "unix:uid:1000".parse().unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"unix:uid:1000\"");
        assert!(serde_json::from_str::<Selector>("\"nocolon\"").is_err());
    }
}
