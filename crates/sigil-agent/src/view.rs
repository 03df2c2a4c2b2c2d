//! What the Workload API serves from: the authorized entries that have not expired, their
//! X.509-SVIDs and every known bundle, published by the SVID cache as one [`WorkloadView`]
//! per change.
//!
//! The view is made of persistent maps: a new view shares every part the change did not touch
//! with the one before, so publishing costs O(log n) per changed entry, not a copy of 10,000
//! entries, and streams still holding the old view are unaffected. Entries are also indexed by
//! selector, so a caller's entries are found by looking under its own selectors instead of
//! testing every entry the agent has.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use sigil_core::{RegistrationEntry, Selector, SelectorSet};
use sigil_spiffe::{Bundle, X509Svid};

/// An entry's place in the order workloads see entries in: oldest first, ties by entry ID, so
/// a workload's default SVID (its first) does not change when an entry is added. The ID is
/// shared: the view, the selector index and the rotation queues each hold the key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    created_at: i64,
    id: Arc<str>,
}

impl OrderKey {
    /// The key of `entry`.
    pub fn of(entry: &RegistrationEntry) -> Self {
        Self {
            created_at: entry.created_at,
            id: Arc::from(entry.id.as_str()),
        }
    }

    /// The entry ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    #[cfg(test)]
    pub(crate) fn test(created_at: i64, id: &str) -> Self {
        Self {
            created_at,
            id: Arc::from(id),
        }
    }
}

/// The entries, SVIDs and bundles the Workload API answers from.
#[derive(Clone, Debug, Default)]
pub struct WorkloadView {
    entries: OrdMap<OrderKey, Arc<RegistrationEntry>>,
    /// Each entry under one of its selectors: the one with the fewest entries when it was
    /// added. A caller has every selector of an entry it matches, so looking under each of
    /// the caller's selectors finds all of them, and few others.
    by_selector: OrdMap<Selector, OrdSet<OrderKey>>,
    /// Entries without selectors (they match every caller).
    unselected: OrdSet<OrderKey>,
    /// X.509-SVIDs by entry ID; an entry without one is still being signed (or beyond the
    /// cache size).
    pub svids: imbl::HashMap<String, Arc<X509Svid>>,
    /// Bundles by trust domain name (ours and federated).
    pub bundles: BTreeMap<String, Bundle>,
    /// Whether the first sync has completed.
    pub synced: bool,
}

impl WorkloadView {
    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<RegistrationEntry>> {
        self.entries.values()
    }

    /// The entry at `key`.
    pub fn get(&self, key: &OrderKey) -> Option<&Arc<RegistrationEntry>> {
        self.entries.get(key)
    }

    /// The key as stored (sharing its ID) and the entry at `key`.
    pub fn get_key_value(&self, key: &OrderKey) -> Option<(&OrderKey, &Arc<RegistrationEntry>)> {
        self.entries.get_key_value(key)
    }

    /// Adds an entry, or replaces the one with its key.
    pub fn insert(&mut self, entry: Arc<RegistrationEntry>) {
        self.insert_keyed(OrderKey::of(&entry), entry);
    }

    /// [`WorkloadView::insert`] with the entry's key made already (`OrderKey::of(&entry)`).
    pub fn insert_keyed(&mut self, key: OrderKey, entry: Arc<RegistrationEntry>) {
        self.remove(&key);
        let rarest = entry
            .selectors
            .iter()
            .min_by_key(|s| self.by_selector.get(*s).map_or(0, OrdSet::len));
        match rarest {
            Some(selector) => {
                self.by_selector
                    .entry(selector.clone())
                    .or_default()
                    .insert(key.clone());
            }
            None => {
                self.unselected.insert(key.clone());
            }
        }
        self.entries.insert(key, entry);
    }

    /// Removes the entry at `key`; returns it.
    pub fn remove(&mut self, key: &OrderKey) -> Option<Arc<RegistrationEntry>> {
        let old = self.entries.remove(key)?;
        // It is under one of its selectors; which one depended on the counts then.
        for selector in &old.selectors {
            if let Some(keys) = self.by_selector.get_mut(selector)
                && keys.remove(key).is_some()
            {
                if keys.is_empty() {
                    self.by_selector.remove(selector);
                }
                break;
            }
        }
        self.unselected.remove(key);
        Some(old)
    }

    /// The entries whose selectors are all among `selectors`, oldest first. Costs the
    /// entries filed under the caller's selectors, not all entries.
    pub fn matching<'a>(
        &'a self,
        selectors: &'a SelectorSet,
    ) -> impl Iterator<Item = &'a Arc<RegistrationEntry>> + 'a {
        let mut found: BTreeSet<&OrderKey> = self.unselected.iter().collect();
        for selector in selectors {
            found.extend(self.by_selector.get(selector).into_iter().flatten());
        }
        found
            .into_iter()
            .filter_map(|key| self.entries.get(key))
            .filter(move |entry| entry.selectors.is_subset_of(selectors))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `entry-N` for `spiffe://example.org/wN`, created at `created_at`, revision 1, for the
    /// agent's unit tests.
    pub(crate) fn entry(n: i64, created_at: i64, selectors: &[&str]) -> Arc<RegistrationEntry> {
        Arc::new(RegistrationEntry {
            id: format!("entry-{n}").parse().unwrap(),
            spiffe_id: format!("spiffe://example.org/w{n}").parse().unwrap(),
            parent_id: "spiffe://example.org/sigil/agent/x".parse().unwrap(),
            selectors: selectors.iter().map(|s| s.parse().unwrap()).collect(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            dns_names: Vec::new(),
            federates_with: Vec::new(),
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            revision: 1,
            created_at,
        })
    }

    fn caller(selectors: &[&str]) -> SelectorSet {
        selectors.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn matching(view: &WorkloadView, selectors: &[&str]) -> Vec<String> {
        let selectors = caller(selectors);
        view.matching(&selectors)
            .map(|e| e.id.as_str().to_owned())
            .collect()
    }

    /// The rule `matching` must give, by testing every entry.
    fn scan(view: &WorkloadView, selectors: &[&str]) -> Vec<String> {
        let selectors = caller(selectors);
        view.entries()
            .filter(|e| e.selectors.is_subset_of(&selectors))
            .map(|e| e.id.as_str().to_owned())
            .collect()
    }

    #[test]
    fn a_caller_finds_exactly_its_entries_oldest_first() {
        let mut view = WorkloadView::default();
        view.insert(entry(1, 30, &["unix:uid:1"]));
        view.insert(entry(2, 10, &["unix:uid:1", "unix:gid:5"]));
        view.insert(entry(3, 20, &["unix:uid:2"]));
        view.insert(entry(4, 20, &[]));
        // Many entries share a selector: each is filed under its other, rarer one.
        for n in 10..40 {
            view.insert(entry(n, 5, &["k8s:ns:default", &format!("k8s:sa:s{n}")]));
        }
        let callers: [&[&str]; 5] = [
            &["unix:uid:1"],
            &["unix:uid:1", "unix:gid:5"],
            &["unix:uid:2", "unix:gid:5"],
            &["k8s:ns:default", "k8s:sa:s12"],
            &["k8s:sa:s12"],
        ];
        for selectors in callers {
            assert_eq!(
                matching(&view, selectors),
                scan(&view, selectors),
                "{selectors:?}"
            );
        }
        assert_eq!(
            matching(&view, &["unix:uid:1", "unix:gid:5"]),
            ["entry-2", "entry-4", "entry-1"]
        );
        assert_eq!(matching(&view, &["k8s:sa:s12"]), ["entry-4"]);
    }

    #[test]
    fn replaced_and_removed_entries_leave_the_index() {
        let mut view = WorkloadView::default();
        view.insert(entry(1, 1, &["unix:uid:1"]));
        let snapshot = view.clone();
        view.insert(entry(1, 1, &["unix:uid:2"]));
        assert!(matching(&view, &["unix:uid:1"]).is_empty());
        assert_eq!(matching(&view, &["unix:uid:2"]), ["entry-1"]);
        // The view published before is untouched.
        assert_eq!(matching(&snapshot, &["unix:uid:1"]), ["entry-1"]);
        let removed = view.remove(&OrderKey::of(&entry(1, 1, &[])));
        assert!(removed.is_some());
        assert!(view.is_empty() && view.by_selector.is_empty() && view.unselected.is_empty());
        assert!(matching(&view, &["unix:uid:2"]).is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// After any inserts and removals, every caller finds what a scan of every entry
        /// finds, in the same order.
        #[test]
        fn matching_agrees_with_a_scan(
            ops in proptest::collection::vec(
                (0..12i64, 0..4i64, proptest::collection::vec(0..5usize, 0..3), proptest::bool::ANY),
                1..60,
            ),
            callers in proptest::collection::vec(proptest::collection::vec(0..5usize, 0..4), 1..6),
        ) {
            const SELECTORS: [&str; 5] = ["u:a", "u:b", "u:c", "k:ns:x", "k:sa:y"];
            let mut view = WorkloadView::default();
            for (n, created_at, selectors, remove) in ops {
                let names: Vec<&str> = selectors.iter().map(|i| SELECTORS[*i]).collect();
                if remove {
                    view.remove(&OrderKey::test(created_at, &format!("entry-{n}")));
                } else {
                    view.insert(entry(n, created_at, &names));
                }
            }
            for caller in callers {
                let names: Vec<&str> = caller.iter().map(|i| SELECTORS[*i]).collect();
                proptest::prop_assert_eq!(matching(&view, &names), scan(&view, &names));
            }
        }
    }
}
