//! When the SVID cache signs: entries without a usable SVID at once, and each cached SVID
//! when it is due, together with every SVID that is eligible by then (one batch and one
//! Workload API message per round of rotations).
//!
//! Kept as ordered queues, so finding what is due costs what is due, not a pass over every
//! cached SVID.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use crate::view::OrderKey;

/// When a cached SVID is re-signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// From then on it goes along when another SVID is re-signed.
    pub(crate) eligible_at: SystemTime,
    /// It is re-signed then at the latest.
    pub(crate) due_at: SystemTime,
}

/// The entries to sign, and when.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// Entries the cache wants that have no usable SVID.
    unsigned: BTreeSet<OrderKey>,
    due: BTreeSet<(SystemTime, OrderKey)>,
    eligible: BTreeSet<(SystemTime, OrderKey)>,
    rotations: HashMap<OrderKey, Rotation>,
}

impl Schedule {
    /// `key` has no usable SVID: it is signed in the next round.
    pub(crate) fn unsigned(&mut self, key: OrderKey) {
        self.forget(&key);
        self.unsigned.insert(key);
    }

    /// `key` got an SVID that rotates at `rotation`.
    pub(crate) fn signed(&mut self, key: OrderKey, rotation: Rotation) {
        self.forget(&key);
        self.due.insert((rotation.due_at, key.clone()));
        self.eligible.insert((rotation.eligible_at, key.clone()));
        self.rotations.insert(key, rotation);
    }

    /// `key` is signed no more (gone, expired, or no longer wanted).
    pub(crate) fn forget(&mut self, key: &OrderKey) {
        self.unsigned.remove(key);
        if let Some(rotation) = self.rotations.remove(key) {
            self.due.remove(&(rotation.due_at, key.clone()));
            self.eligible.remove(&(rotation.eligible_at, key.clone()));
        }
    }

    /// Whether `key` is scheduled at all (signed or waiting to be).
    pub(crate) fn contains(&self, key: &OrderKey) -> bool {
        self.unsigned.contains(key) || self.rotations.contains_key(key)
    }

    /// The entries to sign at `now`, oldest first: none unless one has no SVID or its SVID
    /// is due; then those and every one whose SVID is eligible. Nothing leaves the schedule
    /// until it is [`signed`](Self::signed), so a failed round is tried again.
    pub(crate) fn take_due(&self, now: SystemTime) -> Vec<OrderKey> {
        let any_due = self.due.first().is_some_and(|(at, _)| *at <= now);
        if self.unsigned.is_empty() && !any_due {
            return Vec::new();
        }
        let mut keys: BTreeSet<&OrderKey> = self.unsigned.iter().collect();
        keys.extend(
            self.eligible
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, key)| key),
        );
        keys.into_iter().cloned().collect()
    }

    /// When the next cached SVID is due.
    pub(crate) fn next_due(&self) -> Option<SystemTime> {
        self.due.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn key(n: u32) -> OrderKey {
        OrderKey::test(i64::from(100 - n), &format!("entry-{n}"))
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn ids(keys: Vec<OrderKey>) -> Vec<String> {
        keys.iter().map(|k| k.id().to_owned()).collect()
    }

    #[test]
    fn a_due_svid_takes_the_eligible_ones_along_and_nothing_is_signed_early_alone() {
        let mut schedule = Schedule::default();
        // entry-4 due at 150, entry-3 eligible from 120, entry-2 from 200, entry-1 at 300.
        for (n, eligible, due) in [(4, 100, 150), (3, 120, 160), (2, 200, 250), (1, 110, 300)] {
            let rotation = Rotation {
                eligible_at: t(eligible),
                due_at: t(due),
            };
            schedule.signed(key(n), rotation);
        }
        // Eligible but none due: nothing.
        assert!(schedule.take_due(t(140)).is_empty());
        assert_eq!(schedule.next_due(), Some(t(150)));
        // entry-4 due: entry-3 and entry-1 (eligible) go along, entry-2 (not yet) does not;
        // oldest (smallest created_at) first.
        assert_eq!(
            ids(schedule.take_due(t(150))),
            ["entry-4", "entry-3", "entry-1"]
        );
        // An entry without an SVID is signed at once and takes the eligible ones along.
        schedule.unsigned(key(2));
        assert_eq!(
            ids(schedule.take_due(t(130))),
            ["entry-4", "entry-3", "entry-2", "entry-1"]
        );
        assert_eq!(ids(schedule.take_due(t(105))), ["entry-4", "entry-2"]);
        // Signed again, it leaves the unsigned set; forgotten, it leaves every queue.
        schedule.signed(
            key(2),
            Rotation {
                eligible_at: t(400),
                due_at: t(500),
            },
        );
        assert!(schedule.take_due(t(105)).is_empty());
        schedule.forget(&key(4));
        assert_eq!(schedule.next_due(), Some(t(160)));
        assert!(!schedule.contains(&key(4)) && schedule.contains(&key(2)));
    }
}
