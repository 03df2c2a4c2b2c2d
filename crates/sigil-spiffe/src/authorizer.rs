//! Deciding whether a peer's SPIFFE ID is allowed, once its SVID has been verified.
//!
//! Verification answers "is this a genuine SVID of its trust domain"; an [`Authorizer`]
//! answers "is this the peer I meant to talk to". Keeping them apart means a TLS config never
//! accepts a peer merely because some trusted domain vouched for it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::id::{SpiffeId, TrustDomain};

/// A rule over verified peer IDs. Cheap to clone (the predicate form is shared).
#[derive(Clone)]
pub struct Authorizer {
    rule: Rule,
}

#[derive(Clone)]
enum Rule {
    Any,
    Exact(SpiffeId),
    OneOf(BTreeSet<SpiffeId>),
    MemberOf(BTreeSet<TrustDomain>),
    Predicate(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl Authorizer {
    /// Accepts any peer whose SVID verified. Use only where every trusted domain is equally
    /// trusted for this connection.
    pub fn any() -> Self {
        Self { rule: Rule::Any }
    }

    /// Accepts exactly this ID.
    pub fn exact(id: SpiffeId) -> Self {
        Self {
            rule: Rule::Exact(id),
        }
    }

    /// Accepts any of these IDs; an empty set accepts nobody.
    pub fn one_of(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self {
            rule: Rule::OneOf(ids.into_iter().collect()),
        }
    }

    /// Accepts any ID in one of these trust domains; an empty set accepts nobody.
    pub fn member_of(trust_domains: impl IntoIterator<Item = TrustDomain>) -> Self {
        Self {
            rule: Rule::MemberOf(trust_domains.into_iter().collect()),
        }
    }

    /// Accepts the IDs for which `predicate` returns true.
    pub fn predicate(predicate: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static) -> Self {
        Self {
            rule: Rule::Predicate(Arc::new(predicate)),
        }
    }

    /// True when `id` is allowed.
    pub fn authorize(&self, id: &SpiffeId) -> bool {
        match &self.rule {
            Rule::Any => true,
            Rule::Exact(expected) => expected == id,
            Rule::OneOf(ids) => ids.contains(id),
            Rule::MemberOf(domains) => domains.contains(id.trust_domain_name()),
            Rule::Predicate(predicate) => predicate(id),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Rule::Any => f.write_str("Authorizer::Any"),
            Rule::Exact(id) => write!(f, "Authorizer::Exact({id})"),
            Rule::OneOf(ids) => f.debug_tuple("Authorizer::OneOf").field(ids).finish(),
            Rule::MemberOf(tds) => f.debug_tuple("Authorizer::MemberOf").field(tds).finish(),
            Rule::Predicate(_) => f.write_str("Authorizer::Predicate(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    #[test]
    fn each_rule_accepts_what_it_names_and_nothing_else() {
        let web = id("spiffe://a.test/web");
        let db = id("spiffe://a.test/db");
        let foreign = id("spiffe://b.test/web");
        let td = |s: &str| TrustDomain::new(s).unwrap();

        let exact = Authorizer::exact(web.clone());
        assert!(exact.authorize(&web));
        assert!(!exact.authorize(&db));
        assert!(!exact.authorize(&foreign));

        let one_of = Authorizer::one_of([web.clone(), foreign.clone()]);
        assert!(one_of.authorize(&web) && one_of.authorize(&foreign));
        assert!(!one_of.authorize(&db));
        assert!(!Authorizer::one_of([]).authorize(&web));

        let member = Authorizer::member_of([td("a.test")]);
        assert!(member.authorize(&web) && member.authorize(&db));
        assert!(!member.authorize(&foreign));
        assert!(!Authorizer::member_of([]).authorize(&web));
        // A trust domain whose name is a prefix of another's is a different trust domain.
        assert!(!Authorizer::member_of([td("a.tes")]).authorize(&web));

        let predicate = Authorizer::predicate(|id| id.path().starts_with("/db"));
        assert!(predicate.authorize(&db));
        assert!(!predicate.authorize(&web));

        assert!(Authorizer::any().authorize(&foreign));
    }
}
