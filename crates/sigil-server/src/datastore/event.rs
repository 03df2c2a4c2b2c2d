//! The change feed: one `events` row per change, written in the change's own transaction, read
//! back in id order by servers that keep in-memory caches.

use std::fmt;
use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::{Backend, DataStore, DataStoreError, Result};

/// The PostgreSQL channel every change is announced on.
pub(super) const NOTIFY_CHANNEL: &str = "sigil_events";

/// What changed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A registration entry was created; the key is its ID.
    EntryCreated,
    /// A registration entry was updated; the key is its ID.
    EntryUpdated,
    /// A registration entry was deleted; the key is its ID.
    EntryDeleted,
    /// An agent attested for the first time; the key is its SPIFFE ID.
    NodeCreated,
    /// An agent's certificate, ban flag or selectors changed; the key is its SPIFFE ID.
    NodeUpdated,
    /// An agent was deleted (evicted); the key is its SPIFFE ID.
    NodeDeleted,
    /// A bundle was stored for a new trust domain; the key is the trust domain.
    BundleCreated,
    /// A bundle was replaced; the key is the trust domain.
    BundleUpdated,
    /// A bundle was deleted; the key is the trust domain.
    BundleDeleted,
    /// A federation relationship was created; the key is its trust domain.
    FederationRelationshipCreated,
    /// A federation relationship was replaced; the key is its trust domain.
    FederationRelationshipUpdated,
    /// A federation relationship was deleted; the key is its trust domain.
    FederationRelationshipDeleted,
}

impl EventKind {
    const ALL: [Self; 12] = [
        Self::EntryCreated,
        Self::EntryUpdated,
        Self::EntryDeleted,
        Self::NodeCreated,
        Self::NodeUpdated,
        Self::NodeDeleted,
        Self::BundleCreated,
        Self::BundleUpdated,
        Self::BundleDeleted,
        Self::FederationRelationshipCreated,
        Self::FederationRelationshipUpdated,
        Self::FederationRelationshipDeleted,
    ];

    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EntryCreated => "entry_created",
            Self::EntryUpdated => "entry_updated",
            Self::EntryDeleted => "entry_deleted",
            Self::NodeCreated => "node_created",
            Self::NodeUpdated => "node_updated",
            Self::NodeDeleted => "node_deleted",
            Self::BundleCreated => "bundle_created",
            Self::BundleUpdated => "bundle_updated",
            Self::BundleDeleted => "bundle_deleted",
            Self::FederationRelationshipCreated => "federation_relationship_created",
            Self::FederationRelationshipUpdated => "federation_relationship_updated",
            Self::FederationRelationshipDeleted => "federation_relationship_deleted",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = DataStoreError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| DataStoreError::Corrupt {
                field: "events.kind",
                reason: format!("unknown event kind {s:?}"),
            })
    }
}

/// One change, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Increasing; a reader remembers the last one it applied. Ids of transactions still in
    /// flight may appear later than higher ids (HA readers must allow for gaps).
    pub id: i64,
    /// What changed.
    pub kind: EventKind,
    /// Which record: an entry ID, a SPIFFE ID or a trust domain.
    pub key: String,
    /// When, in Unix seconds.
    pub created_at: i64,
}

/// An event from a row of `id, kind, event_key, created_at`.
pub(super) fn event_from_row(row: &AnyRow) -> Result<Event> {
    Ok(Event {
        id: row.try_get("id")?,
        kind: row.try_get::<String, _>("kind")?.parse()?,
        key: row.try_get("event_key")?,
        created_at: row.try_get("created_at")?,
    })
}

impl DataStore {
    /// Events with an id above `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(self.sql(
            "SELECT id, kind, event_key, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?",
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The highest event id, 0 when there is none: where a reader that has just loaded
    /// everything starts following the feed.
    pub async fn latest_event_id(&self) -> Result<i64> {
        let row = sqlx::query("SELECT MAX(id) AS id FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("id")?.unwrap_or(0))
    }

    /// Deletes events created before `before` (Unix seconds); returns how many.
    pub async fn prune_events(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query(self.sql("DELETE FROM events WHERE created_at < ?"))
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Records one event of `kind` per key inside the transaction of the changes, in
    /// multi-row inserts, and one notice.
    pub(super) async fn record_events<'a>(
        &self,
        tx: &mut AnyConnection,
        kind: EventKind,
        keys: impl Iterator<Item = &'a str>,
    ) -> Result<()> {
        let keys: Vec<&str> = keys.collect();
        let now = self.now();
        for chunk in keys.chunks(300) {
            let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let query = format!("INSERT INTO events (kind, event_key, created_at) VALUES {values}");
            let mut insert = sqlx::query(self.sql(&query));
            for key in chunk {
                insert = insert.bind(kind.as_str()).bind(*key).bind(now);
            }
            insert.execute(&mut *tx).await?;
        }
        self.notify(tx).await
    }

    /// Records an event inside the transaction of the change.
    pub(super) async fn record_event(
        &self,
        tx: &mut AnyConnection,
        kind: EventKind,
        key: &str,
    ) -> Result<()> {
        sqlx::query(self.sql("INSERT INTO events (kind, event_key, created_at) VALUES (?, ?, ?)"))
            .bind(kind.as_str())
            .bind(key)
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        self.notify(tx).await
    }

    /// On PostgreSQL, a notice on [`NOTIFY_CHANNEL`]: delivered when the transaction commits,
    /// never for one rolled back, so the other servers' followers read the feed at once.
    async fn notify(&self, tx: &mut AnyConnection) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
            )))
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
