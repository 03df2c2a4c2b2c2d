//! Following the change feed with its gaps. Event ids come from an identity column or an
//! auto-increment counter, taken when a transaction inserts its event, not when it commits: a
//! long transaction's event can appear after higher ids are already visible, and a rolled-back
//! one leaves its id unused forever. A reader that only asked for "ids above the highest seen"
//! would lose the late ones; one that waited for every hole would stop at the first rollback.
//!
//! [`FeedCursor`] remembers the highest id seen and every hole below it, asks for the holes
//! again on each read, and gives a hole up after `gap_timeout` (longer than any transaction
//! may run): its transaction was rolled back, or the reader's safety sweep heals what it
//! missed.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::event::event_from_row;
use super::{DataStore, Event, Result, placeholders};

/// The most events one read returns.
const READ_LIMIT: u32 = 1_000;

/// The most holes a cursor waits for. MySQL's auto-increment can jump far (it reserves ranges
/// for bulk inserts), and a hole per skipped id would grow without bound: holes beyond this
/// are given up at once.
const MAX_GAPS: usize = 10_000;

/// Where a reader of the feed stands.
#[derive(Clone, Debug)]
pub struct FeedCursor {
    /// The highest event id seen.
    last: i64,
    /// Ids below `last` not seen yet, with when each was first missed.
    gaps: BTreeMap<i64, Instant>,
    gap_timeout: Duration,
}

/// What one read of the feed found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedRead {
    /// Events to apply, in id order: new ones and late ones that filled a hole.
    pub events: Vec<Event>,
    /// How many holes were given up on: their changes, if they ever commit, are the sweep's
    /// to find.
    pub abandoned: u64,
    /// Whether the read stopped at its limit (read again at once).
    pub more: bool,
}

impl FeedCursor {
    /// A cursor after `last` (the latest id when the reader loaded everything), giving holes
    /// up after `gap_timeout`.
    pub fn new(last: i64, gap_timeout: Duration) -> Self {
        Self {
            last,
            gaps: BTreeMap::new(),
            gap_timeout,
        }
    }

    /// The highest event id seen.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The holes below [`Self::last`] still waited for.
    pub fn gaps(&self) -> impl Iterator<Item = i64> + '_ {
        self.gaps.keys().copied()
    }

    /// Takes `after` (events above `last`, in id order) and `late` (events found among the
    /// holes), at `now`: returns what to apply, in id order, and the holes given up on.
    pub fn advance(&mut self, after: Vec<Event>, late: Vec<Event>, now: Instant) -> FeedRead {
        let mut events = Vec::with_capacity(after.len() + late.len());
        let mut abandoned = 0u64;
        for event in late {
            if self.gaps.remove(&event.id).is_some() {
                events.push(event);
            }
        }
        for event in after {
            if event.id <= self.last {
                continue;
            }
            let missing = u64::try_from(event.id - self.last - 1).unwrap_or(0);
            let room = MAX_GAPS.saturating_sub(self.gaps.len()) as u64;
            for id in (self.last + 1..event.id).take(usize::try_from(room).unwrap_or(0)) {
                self.gaps.insert(id, now);
            }
            abandoned += missing.saturating_sub(room);
            self.last = event.id;
            events.push(event);
        }
        events.sort_by_key(|e| e.id);
        let timeout = self.gap_timeout;
        let before = self.gaps.len();
        self.gaps
            .retain(|_, missed| now.saturating_duration_since(*missed) < timeout);
        abandoned += (before - self.gaps.len()) as u64;
        FeedRead {
            events,
            abandoned,
            more: false,
        }
    }
}

/// How often the feed is read when nothing announces changes (MySQL/MariaDB for now), and
/// at the latest on PostgreSQL, should a notice be lost with a dropped listener connection.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Wakes a follower of the feed: a PostgreSQL `LISTEN` on the channel every change notifies,
/// or a timer.
pub struct ChangeNotices {
    listener: Option<sqlx::postgres::PgListener>,
}

impl ChangeNotices {
    /// Waits for the next notice, or [`POLL_INTERVAL`]. A broken listener reconnects by itself
    /// (sqlx's `PgListener`); while it is down the timer still fires.
    pub async fn next(&mut self) {
        match &mut self.listener {
            Some(listener) => {
                match tokio::time::timeout(POLL_INTERVAL, listener.try_recv()).await {
                    // A notice, or the interval is over.
                    Ok(Ok(Some(_))) | Err(_) => {}
                    // The connection broke (it reconnects on the next call) or cannot be made:
                    // wait, rather than spin on a database that is down.
                    Ok(Ok(None) | Err(_)) => tokio::time::sleep(POLL_INTERVAL).await,
                }
            }
            None => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

impl DataStore {
    /// What wakes a follower of this store's feed.
    pub async fn change_notices(&self) -> Result<ChangeNotices> {
        let listener = match self.backend {
            super::Backend::Postgres => {
                let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
                listener.listen(super::event::NOTIFY_CHANNEL).await?;
                Some(listener)
            }
            _ => None,
        };
        Ok(ChangeNotices { listener })
    }

    /// Reads the feed past `cursor`: the events above its last id (at most 1,000) and any of
    /// its holes that have appeared since, and moves it on.
    pub async fn follow(&self, cursor: &mut FeedCursor) -> Result<FeedRead> {
        let after = self.events_after(cursor.last(), READ_LIMIT).await?;
        let more = after.len() == READ_LIMIT as usize;
        let gaps: Vec<i64> = cursor.gaps().collect();
        let mut late = Vec::new();
        // In chunks: an IN list of thousands of ids is slow to plan on every backend.
        for chunk in gaps.chunks(500) {
            late.extend(self.events_with_ids(chunk).await?);
        }
        let mut read = cursor.advance(after, late, Instant::now());
        read.more = more;
        Ok(read)
    }

    /// The events among `ids` that exist.
    async fn events_with_ids(&self, ids: &[i64]) -> Result<Vec<Event>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = format!(
            "SELECT id, kind, event_key, created_at FROM events WHERE id IN ({}) ORDER BY id",
            placeholders(ids.len())
        );
        let mut statement = sqlx::query(self.sql(&query));
        for id in ids {
            statement = statement.bind(*id);
        }
        let rows = statement.fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::EventKind;

    fn event(id: i64) -> Event {
        Event {
            id,
            kind: EventKind::EntryCreated,
            key: format!("e{id}"),
            created_at: 0,
        }
    }

    fn ids(read: &FeedRead) -> Vec<i64> {
        read.events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_late_event_fills_its_hole_and_is_applied_once() {
        let t0 = Instant::now();
        let mut cursor = FeedCursor::new(10, Duration::from_secs(60));
        // 11 and 13 are visible, 12 is still in flight.
        let read = cursor.advance(vec![event(11), event(13)], vec![], t0);
        assert_eq!(ids(&read), [11, 13]);
        assert_eq!(cursor.last(), 13);
        assert_eq!(cursor.gaps().collect::<Vec<_>>(), [12]);
        // 12 commits; 14 arrives with it: both applied, in id order.
        let read = cursor.advance(vec![event(14)], vec![event(12)], t0);
        assert_eq!(ids(&read), [12, 14]);
        assert_eq!(cursor.gaps().count(), 0);
        // Seen again (a repeated read): nothing to apply twice.
        let read = cursor.advance(vec![event(14)], vec![event(12)], t0);
        assert!(read.events.is_empty());
    }

    #[test]
    fn a_hole_is_given_up_after_the_timeout() {
        let t0 = Instant::now();
        let mut cursor = FeedCursor::new(0, Duration::from_secs(60));
        cursor.advance(vec![event(3)], vec![], t0);
        assert_eq!(cursor.gaps().collect::<Vec<_>>(), [1, 2]);
        let read = cursor.advance(vec![], vec![], t0 + Duration::from_secs(59));
        assert_eq!(read.abandoned, 0);
        let read = cursor.advance(vec![], vec![], t0 + Duration::from_secs(60));
        assert_eq!(read.abandoned, 2);
        assert_eq!(cursor.gaps().count(), 0);
        // A hole given up on that commits after all is not applied by the cursor.
        let read = cursor.advance(vec![], vec![event(1)], t0 + Duration::from_secs(61));
        assert!(read.events.is_empty());
    }

    #[test]
    fn a_far_jump_waits_for_a_bounded_number_of_holes() {
        let t0 = Instant::now();
        let mut cursor = FeedCursor::new(0, Duration::from_secs(60));
        let jump = i64::try_from(MAX_GAPS).unwrap() + 5_001;
        let read = cursor.advance(vec![event(jump)], vec![], t0);
        assert_eq!(ids(&read), [jump]);
        assert_eq!(cursor.gaps().count(), MAX_GAPS);
        assert_eq!(read.abandoned, 5_000);
        // The holes waited for are the oldest ones, right after the old last id.
        assert_eq!(cursor.gaps().next(), Some(1));
    }
}
