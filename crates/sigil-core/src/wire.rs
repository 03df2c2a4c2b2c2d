//! Conversions between the model and the `sigil.server.v1` protobuf messages, both ways.
//! Reading a message checks every field and names the one that is wrong; writing never fails.

use std::time::Duration;

use sigil_proto::server::v1 as pb;
use sigil_spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

use crate::entry::{EntryError, EntryId, RegistrationEntry};
use crate::node::AttestedNode;
use crate::selector::{Selector, SelectorError, SelectorSet};

/// Why a protobuf message could not be read into the model.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A SPIFFE ID field is malformed.
    #[error("{field}: {source}")]
    SpiffeId {
        /// The field.
        field: &'static str,
        /// Why.
        source: SpiffeIdError,
    },
    /// A selector is malformed.
    #[error("selectors: {0}")]
    Selector(#[from] SelectorError),
    /// The entry ID is malformed.
    #[error("id: {0}")]
    EntryId(EntryError),
    /// A negative duration or time.
    #[error("{0} cannot be negative")]
    Negative(&'static str),
}

/// Reads a SPIFFE ID field.
pub fn spiffe_id(field: &'static str, value: &str) -> Result<SpiffeId, WireError> {
    value
        .parse()
        .map_err(|source| WireError::SpiffeId { field, source })
}

/// Reads selectors.
pub fn selectors(selectors: &[pb::Selector]) -> Result<SelectorSet, WireError> {
    selectors
        .iter()
        .map(|s| Selector::new(&s.r#type, &s.value).map_err(WireError::from))
        .collect()
}

/// Writes selectors.
pub fn selectors_to_wire(selectors: &SelectorSet) -> Vec<pb::Selector> {
    selectors
        .iter()
        .map(|s| pb::Selector {
            r#type: s.kind().to_owned(),
            value: s.value().to_owned(),
        })
        .collect()
}

fn ttl(field: &'static str, seconds: i64) -> Result<Option<Duration>, WireError> {
    match u64::try_from(seconds) {
        Ok(0) => Ok(None),
        Ok(s) => Ok(Some(Duration::from_secs(s))),
        Err(_) => Err(WireError::Negative(field)),
    }
}

fn ttl_to_wire(ttl: Option<Duration>) -> i64 {
    ttl.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Reads an entry. The ID may be empty only when `allow_empty_id` (the server fills it in on
/// create). The result is not validated against a trust domain: call
/// [`RegistrationEntry::validate`].
pub fn entry(
    message: &pb::RegistrationEntry,
    allow_empty_id: bool,
) -> Result<(Option<EntryId>, RegistrationEntry), WireError> {
    let id = match (message.id.as_str(), allow_empty_id) {
        ("", true) => None,
        (id, _) => Some(id.parse().map_err(WireError::EntryId)?),
    };
    if message.expires_at < 0 {
        return Err(WireError::Negative("expires_at"));
    }
    if message.created_at < 0 {
        return Err(WireError::Negative("created_at"));
    }
    let entry = RegistrationEntry {
        // A placeholder the caller replaces when `id` is None; it never reaches storage.
        id: id.clone().unwrap_or_else(placeholder_id),
        spiffe_id: spiffe_id("spiffe_id", &message.spiffe_id)?,
        parent_id: spiffe_id("parent_id", &message.parent_id)?,
        selectors: selectors(&message.selectors)?,
        x509_svid_ttl: ttl("x509_svid_ttl", message.x509_svid_ttl)?,
        jwt_svid_ttl: ttl("jwt_svid_ttl", message.jwt_svid_ttl)?,
        dns_names: message.dns_names.clone(),
        federates_with: message
            .federates_with
            .iter()
            .map(|td| {
                TrustDomain::new(td).map_err(|source| WireError::SpiffeId {
                    field: "federates_with",
                    source,
                })
            })
            .collect::<Result<_, _>>()?,
        admin: message.admin,
        downstream: message.downstream,
        hint: message.hint.clone(),
        expires_at: (message.expires_at != 0).then_some(message.expires_at),
        revision: message.revision,
        created_at: message.created_at,
    };
    Ok((id, entry))
}

fn placeholder_id() -> EntryId {
    EntryId::placeholder()
}

/// Writes an entry.
pub fn entry_to_wire(entry: &RegistrationEntry) -> pb::RegistrationEntry {
    pb::RegistrationEntry {
        id: entry.id.to_string(),
        spiffe_id: entry.spiffe_id.to_string(),
        parent_id: entry.parent_id.to_string(),
        selectors: selectors_to_wire(&entry.selectors),
        x509_svid_ttl: ttl_to_wire(entry.x509_svid_ttl),
        jwt_svid_ttl: ttl_to_wire(entry.jwt_svid_ttl),
        dns_names: entry.dns_names.clone(),
        federates_with: entry
            .federates_with
            .iter()
            .map(ToString::to_string)
            .collect(),
        admin: entry.admin,
        downstream: entry.downstream,
        hint: entry.hint.clone(),
        expires_at: entry.expires_at.unwrap_or(0),
        revision: entry.revision,
        created_at: entry.created_at,
    }
}

/// Writes an attested node.
pub fn agent_to_wire(node: &AttestedNode) -> pb::AttestedAgent {
    pb::AttestedAgent {
        spiffe_id: node.spiffe_id.to_string(),
        attestation_type: node.attestation_type.clone(),
        x509_svid_serial: node.cert_serial.clone(),
        x509_svid_expires_at: node.cert_not_after,
        selectors: selectors_to_wire(&node.selectors),
        banned: node.banned,
        can_reattest: node.can_reattest,
        created_at: node.created_at,
    }
}

/// Reads an attested node.
pub fn agent(message: &pb::AttestedAgent) -> Result<AttestedNode, WireError> {
    Ok(AttestedNode {
        spiffe_id: spiffe_id("spiffe_id", &message.spiffe_id)?,
        attestation_type: message.attestation_type.clone(),
        cert_serial: message.x509_svid_serial.clone(),
        cert_not_after: message.x509_svid_expires_at,
        banned: message.banned,
        can_reattest: message.can_reattest,
        selectors: selectors(&message.selectors)?,
        created_at: message.created_at,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> RegistrationEntry {
        RegistrationEntry {
            id: "e-1".parse().unwrap(),
            spiffe_id: "spiffe://example.org/web".parse().unwrap(),
            parent_id: "spiffe://example.org/sigil/agent/join_token/a"
                .parse()
                .unwrap(),
            selectors: [
                "unix:uid:1000".parse().unwrap(),
                "k8s:ns:default".parse().unwrap(),
            ]
            .into_iter()
            .collect(),
            x509_svid_ttl: Some(Duration::from_secs(3600)),
            jwt_svid_ttl: None,
            dns_names: vec!["web.example.org".into()],
            federates_with: vec![TrustDomain::new("b.test").unwrap()],
            admin: true,
            downstream: false,
            hint: "external".into(),
            expires_at: Some(1_900_000_000),
            revision: 7,
            created_at: 1_800_000_000,
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = sample();
        let (id, back) = entry(&entry_to_wire(&e), false).unwrap();
        assert_eq!(id, Some(e.id.clone()));
        assert_eq!(back, e);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut m = entry_to_wire(&sample());
        m.parent_id = "spiffe://Bad/x".into();
        assert!(
            entry(&m, false)
                .unwrap_err()
                .to_string()
                .starts_with("parent_id: ")
        );
        let mut m = entry_to_wire(&sample());
        m.selectors[0].r#type = String::new();
        assert!(
            entry(&m, false)
                .unwrap_err()
                .to_string()
                .starts_with("selectors: ")
        );
        let mut m = entry_to_wire(&sample());
        m.x509_svid_ttl = -1;
        assert_eq!(
            entry(&m, false).unwrap_err().to_string(),
            "x509_svid_ttl cannot be negative"
        );
        let mut m = entry_to_wire(&sample());
        m.id = String::new();
        assert!(
            entry(&m, false)
                .unwrap_err()
                .to_string()
                .starts_with("id: ")
        );
        let (id, _) = entry(&m, true).unwrap();
        assert_eq!(id, None);
        let mut m = entry_to_wire(&sample());
        m.federates_with = vec!["spiffe://b.test".into()];
        assert!(
            entry(&m, false)
                .unwrap_err()
                .to_string()
                .starts_with("federates_with: ")
        );
    }

    #[test]
    fn agents_round_trip() {
        let node = AttestedNode {
            spiffe_id: "spiffe://example.org/sigil/agent/join_token/a"
                .parse()
                .unwrap(),
            attestation_type: "join_token".into(),
            cert_serial: "0a1b".into(),
            cert_not_after: 5,
            banned: true,
            can_reattest: false,
            selectors: ["join_token:abc".parse().unwrap()].into_iter().collect(),
            created_at: 3,
        };
        assert_eq!(agent(&agent_to_wire(&node)).unwrap(), node);
    }

    proptest! {
        #[test]
        fn any_valid_entry_round_trips(
            path in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,3}",
            uids in prop::collection::btree_set(0u32..100_000, 1..5),
            ttl in prop::option::of(10u64..86_400),
            hint in "[ -~]{0,20}",
            revision in any::<u64>(),
        ) {
            let mut e = sample();
            e.spiffe_id = format!("spiffe://example.org/{path}").parse().unwrap();
            e.selectors = uids.iter().map(|u| format!("unix:uid:{u}").parse().unwrap()).collect();
            e.jwt_svid_ttl = ttl.map(Duration::from_secs);
            e.hint = hint;
            e.revision = revision;
            let (_, back) = entry(&entry_to_wire(&e), false).unwrap();
            prop_assert_eq!(back, e);
        }
    }
}
