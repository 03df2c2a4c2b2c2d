//! Following the change feed with its gaps. Event ids come from an identity column or an
//! auto-increment counter, taken when a transaction inserts its event, not when it commits: a
//! long transaction's event can appear after higher ids are already visible, and a rolled-back
//! one leaves its id unused forever. A reader that only asked for "ids above the highest seen"
//! would lose the late ones; one that waited for every hole would stop at the first rollback.
//!
//! [`FeedCursor`] remembers the highest id seen and every hole below it, asks for the holes
//! again on each read, and gives a hole up after `gap_timeout` (longer than any transaction
//! should run): its transaction was most likely rolled back. A hole given up on is still looked
//! for by a slow sweep, every [`HOLE_SWEEP_EVERY`] for as long as events are kept
//! ([`HOLE_SWEEP_FOR`]), so a transaction that commits very late is applied after all; only
//! after that (or beyond the sweep's bound) is a hole forgotten, and the reader's next restart,
//! which loads everything, is what heals it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::event::event_from_row;
use super::{DataStore, Event, Result, placeholders};

/// The most events one read returns.
const READ_LIMIT: u32 = 1_000;

/// The most holes a cursor waits for. MySQL's auto-increment can jump far (it reserves ranges
/// for bulk inserts), and a hole per skipped id would grow without bound: holes beyond this
/// are given up at once.
const MAX_GAPS: usize = 10_000;

/// How often the holes given up on are looked for again.
pub const HOLE_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long a hole given up on is swept for: as long as events are kept.
pub const HOLE_SWEEP_FOR: Duration = Duration::from_secs(3600);
/// The most holes the sweep keeps; more given up at once are forgotten.
const MAX_SWEPT: usize = 10_000;

/// Where a reader of the feed stands.
#[derive(Clone, Debug)]
pub struct FeedCursor {
    /// The highest event id seen.
    last: i64,
    /// Ids below `last` not seen yet, with when each was first missed.
    gaps: BTreeMap<i64, Instant>,
    gap_timeout: Duration,
    /// Holes given up on, with when: looked for by the slow sweep.
    swept: BTreeMap<i64, Instant>,
    sweep_every: Duration,
    sweep_for: Duration,
    /// When the sweep last looked.
    swept_at: Option<Instant>,
}

/// What one read of the feed found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedRead {
    /// Events to apply, in id order: new ones and late ones that filled a hole.
    pub events: Vec<Event>,
    /// How many holes were given up on by the fast reads: the slow sweep looks for them now.
    pub abandoned: u64,
    /// How many holes the sweep gave up on too (or had no room for): their changes, if they
    /// ever commit, reach this reader at its next restart.
    pub forgotten: u64,
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
            swept: BTreeMap::new(),
            sweep_every: HOLE_SWEEP_EVERY,
            sweep_for: HOLE_SWEEP_FOR,
            swept_at: None,
        }
    }

    /// The same cursor sweeping its given-up holes every `every` for `keep_for` (tests).
    pub fn with_sweep(mut self, every: Duration, keep_for: Duration) -> Self {
        self.sweep_every = every;
        self.sweep_for = keep_for;
        self
    }

    /// The highest event id seen.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// The holes below [`Self::last`] still waited for.
    pub fn gaps(&self) -> impl Iterator<Item = i64> + '_ {
        self.gaps.keys().copied()
    }

    /// The holes given up on that the sweep still looks for.
    pub fn swept(&self) -> impl Iterator<Item = i64> + '_ {
        self.swept.keys().copied()
    }

    /// The ids to look for at `now`: every hole waited for, and the given-up ones when the
    /// sweep is due (which this records).
    pub fn wanted(&mut self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<i64> = self.gaps.keys().copied().collect();
        let due = !self.swept.is_empty()
            && self
                .swept_at
                .is_none_or(|at| now.saturating_duration_since(at) >= self.sweep_every);
        if due {
            ids.extend(self.swept.keys().copied());
            self.swept_at = Some(now);
        }
        ids
    }

    /// Takes `after` (events above `last`, in id order) and `late` (events found among the
    /// holes), at `now`: returns what to apply, in id order, and the holes given up on.
    pub fn advance(&mut self, after: Vec<Event>, late: Vec<Event>, now: Instant) -> FeedRead {
        let mut events = Vec::with_capacity(after.len() + late.len());
        let (mut abandoned, mut forgotten) = (0u64, 0u64);
        for event in late {
            if self.gaps.remove(&event.id).is_some() || self.swept.remove(&event.id).is_some() {
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
            forgotten += missing.saturating_sub(room);
            self.last = event.id;
            events.push(event);
        }
        events.sort_by_key(|e| e.id);
        let timeout = self.gap_timeout;
        let given_up: Vec<i64> = self
            .gaps
            .iter()
            .filter(|(_, missed)| now.saturating_duration_since(**missed) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in given_up {
            self.gaps.remove(&id);
            if self.swept.len() < MAX_SWEPT {
                self.swept.insert(id, now);
                abandoned += 1;
            } else {
                forgotten += 1;
            }
        }
        let keep_for = self.sweep_for;
        let before = self.swept.len();
        self.swept
            .retain(|_, given_up| now.saturating_duration_since(*given_up) < keep_for);
        forgotten += (before - self.swept.len()) as u64;
        FeedRead {
            events,
            abandoned,
            forgotten,
            more: false,
        }
    }
}

/// How often the feed is read when changes may go unannounced: on MySQL/MariaDB while some
/// running server cannot notify this one, and at the latest on PostgreSQL, should a notice be
/// lost with a dropped listener connection.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How often the feed is read on MySQL/MariaDB when every running server notifies this one:
/// a safety sweep, for a notice lost some way nothing here noticed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What the follower waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A notice: PostgreSQL's, or another server's.
    Notice,
    /// The interval passed with none.
    Timer,
}

/// Notices that come from outside the database (the other servers, on MySQL/MariaDB), and
/// whether they cover every running server: only then may the follower wait a whole sweep.
#[derive(Debug)]
pub struct PeerNotices {
    notify: Notify,
    /// Running servers that should notify this one; `usize::MAX` when one of them cannot.
    expected: AtomicUsize,
    /// Notice streams open now.
    connected: AtomicUsize,
}

impl Default for PeerNotices {
    /// Nothing known yet: not covered, until the servers running are read.
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            expected: AtomicUsize::new(usize::MAX),
            connected: AtomicUsize::new(0),
        }
    }
}

impl PeerNotices {
    /// Another server committed a change (or a stream to one opened): read the feed.
    pub fn notice(&self) {
        self.notify.notify_one();
    }

    /// How many running servers should notify this one (`None`: some cannot).
    pub fn expect(&self, servers: Option<usize>) {
        self.expected
            .store(servers.unwrap_or(usize::MAX), Ordering::SeqCst);
    }

    /// A notice stream opened; it counts until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.connected.fetch_add(1, Ordering::SeqCst);
        StreamGuard(Arc::clone(self))
    }

    /// Whether every running server's notices reach this one now.
    pub fn covered(&self) -> bool {
        self.connected.load(Ordering::SeqCst) >= self.expected.load(Ordering::SeqCst)
    }
}

/// Counts one open notice stream in [`PeerNotices`] while it lives.
#[derive(Debug)]
pub struct StreamGuard(Arc<PeerNotices>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wakes a follower of the feed: a PostgreSQL `LISTEN` on the channel every change notifies,
/// the other servers' notices, or a timer.
pub struct ChangeNotices {
    listener: Option<sqlx::postgres::PgListener>,
    peers: Option<Arc<PeerNotices>>,
}

impl ChangeNotices {
    /// Waits for the next notice, or the interval. A broken PostgreSQL listener reconnects by
    /// itself (sqlx's `PgListener`); while it is down the timer still fires.
    pub async fn next(&mut self) -> Wake {
        if let Some(listener) = &mut self.listener {
            return match tokio::time::timeout(POLL_INTERVAL, listener.try_recv()).await {
                Ok(Ok(Some(_))) => Wake::Notice,
                Err(_) => Wake::Timer,
                // The connection broke (it reconnects on the next call) or cannot be made:
                // wait, rather than spin on a database that is down.
                Ok(Ok(None) | Err(_)) => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    Wake::Timer
                }
            };
        }
        let Some(peers) = &self.peers else {
            tokio::time::sleep(POLL_INTERVAL).await;
            return Wake::Timer;
        };
        let interval = if peers.covered() {
            SWEEP_INTERVAL
        } else {
            POLL_INTERVAL
        };
        tokio::select! {
            () = peers.notify.notified() => Wake::Notice,
            () = tokio::time::sleep(interval) => Wake::Timer,
        }
    }
}

impl DataStore {
    /// What wakes a follower of this store's feed: on PostgreSQL its own `LISTEN`; on the
    /// others `peers`, the notices of the other servers, when given.
    pub async fn change_notices(&self, peers: Option<Arc<PeerNotices>>) -> Result<ChangeNotices> {
        let listener = match self.backend {
            super::Backend::Postgres => {
                let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
                listener.listen(super::event::NOTIFY_CHANNEL).await?;
                Some(listener)
            }
            _ => None,
        };
        let peers = if listener.is_some() { None } else { peers };
        Ok(ChangeNotices { listener, peers })
    }

    /// Reads the feed past `cursor`: the events above its last id (at most 1,000) and any of
    /// its holes that have appeared since, and moves it on.
    pub async fn follow(&self, cursor: &mut FeedCursor) -> Result<FeedRead> {
        let after = self.events_after(cursor.last(), READ_LIMIT).await?;
        let more = after.len() == READ_LIMIT as usize;
        let now = Instant::now();
        let wanted = cursor.wanted(now);
        let mut late = Vec::new();
        // In chunks: an IN list of thousands of ids is slow to plan on every backend.
        for chunk in wanted.chunks(500) {
            late.extend(self.events_with_ids(chunk).await?);
        }
        let mut read = cursor.advance(after, late, now);
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

    async fn timed(notices: &mut ChangeNotices) -> (Wake, Duration) {
        let start = Instant::now();
        (notices.next().await, start.elapsed())
    }

    /// Time is paused: each wait is measured exactly, whatever the machine's load.
    #[tokio::test(start_paused = true)]
    async fn peer_notices_wake_at_once_and_only_full_coverage_slows_the_timer() {
        let peers = Arc::new(PeerNotices::default());
        let mut notices = ChangeNotices {
            listener: None,
            peers: Some(Arc::clone(&peers)),
        };
        // Before the running servers are known: the short interval.
        assert_eq!(timed(&mut notices).await, (Wake::Timer, POLL_INTERVAL));
        // A notice wakes at once, even one given while nobody waited.
        peers.notice();
        assert_eq!(timed(&mut notices).await, (Wake::Notice, Duration::ZERO));
        // Two servers run, one stream is open: still the short interval.
        peers.expect(Some(2));
        let first = peers.stream_opened();
        assert_eq!(timed(&mut notices).await, (Wake::Timer, POLL_INTERVAL));
        // Both streams open: only the sweep.
        let second = peers.stream_opened();
        assert!(peers.covered());
        assert_eq!(timed(&mut notices).await, (Wake::Timer, SWEEP_INTERVAL));
        // One breaks: back to the short interval at once.
        drop(second);
        assert_eq!(timed(&mut notices).await, (Wake::Timer, POLL_INTERVAL));
        // A running server that cannot notify: never covered.
        let _second = peers.stream_opened();
        peers.expect(None);
        assert_eq!(timed(&mut notices).await, (Wake::Timer, POLL_INTERVAL));
        drop(first);
    }

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
        assert_eq!((read.abandoned, read.forgotten), (2, 0));
        assert_eq!(cursor.gaps().count(), 0);
        assert_eq!(cursor.swept().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn the_sweep_finds_a_hole_given_up_on_and_forgets_it_after_the_retention() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut cursor = FeedCursor::new(0, minute);
        cursor.advance(vec![event(3)], vec![], t0);
        assert_eq!(
            cursor.wanted(t0),
            [1, 2],
            "holes are asked for at every read"
        );
        cursor.advance(vec![], vec![], t0 + minute);
        // Given up: asked for only when the sweep is due, every HOLE_SWEEP_EVERY.
        assert_eq!(cursor.wanted(t0 + minute), [1, 2]);
        assert!(
            cursor
                .wanted(t0 + minute + Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(cursor.wanted(t0 + minute + HOLE_SWEEP_EVERY), [1, 2]);
        // 1 commits at last: the sweep applies it, once.
        let read = cursor.advance(vec![], vec![event(1)], t0 + 2 * minute);
        assert_eq!(ids(&read), [1]);
        let read = cursor.advance(vec![], vec![event(1)], t0 + 2 * minute);
        assert!(read.events.is_empty());
        // 2 never does: forgotten once events of its age are pruned anyway.
        let read = cursor.advance(vec![], vec![], t0 + minute + HOLE_SWEEP_FOR);
        assert_eq!(read.forgotten, 1);
        assert_eq!(cursor.swept().count(), 0);
        assert!(cursor.wanted(t0 + 3 * HOLE_SWEEP_FOR).is_empty());
    }

    #[test]
    fn a_far_jump_waits_for_a_bounded_number_of_holes() {
        let t0 = Instant::now();
        let mut cursor = FeedCursor::new(0, Duration::from_secs(60));
        let jump = i64::try_from(MAX_GAPS).unwrap() + 5_001;
        let read = cursor.advance(vec![event(jump)], vec![], t0);
        assert_eq!(ids(&read), [jump]);
        assert_eq!(cursor.gaps().count(), MAX_GAPS);
        assert_eq!((read.abandoned, read.forgotten), (0, 5_000));
        // The holes waited for are the oldest ones, right after the old last id.
        assert_eq!(cursor.gaps().next(), Some(1));
    }
}
