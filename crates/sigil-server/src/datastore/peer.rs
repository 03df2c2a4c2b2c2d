//! The running server instances (`server_peers`) and where the others reach each one for
//! change notices: on MySQL/MariaDB, which cannot announce a commit to other connections,
//! each server tells the others itself ([`crate::notices`]).
//!
//! An instance refreshes its row every few seconds while it runs and deletes it when it stops;
//! a row not refreshed for a while belongs to a server that died, and is ignored (then pruned).

use sqlx::Row;

use super::{DataStore, Result};

/// Another running server instance as its row says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// Its instance ID.
    pub instance_id: String,
    /// Where it takes `WatchChanges`, `HOST:PORT`; `None` when it has no address to offer.
    pub address: Option<String>,
}

impl DataStore {
    /// Writes (or refreshes) this instance's row: it runs, and others reach it at `address`.
    pub async fn announce_peer(&self, instance_id: &str, address: Option<&str>) -> Result<()> {
        sqlx::query(self.upsert("server_peers", "instance_id", &["address", "seen_at"]))
            .bind(instance_id)
            .bind(address)
            .bind(self.now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The instances other than `instance_id` whose rows were refreshed in the last
    /// `fresh_for_secs` seconds, by instance ID.
    pub async fn live_peers(
        &self,
        instance_id: &str,
        fresh_for_secs: i64,
    ) -> Result<Vec<PeerRecord>> {
        let rows = sqlx::query(self.sql(
            "SELECT instance_id, address FROM server_peers \
             WHERE instance_id <> ? AND seen_at >= ? ORDER BY instance_id",
        ))
        .bind(instance_id)
        .bind(self.now() - fresh_for_secs)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PeerRecord {
                    instance_id: row.try_get("instance_id")?,
                    address: row.try_get("address")?,
                })
            })
            .collect()
    }

    /// Deletes this instance's row (it stops), and the rows of instances not seen for
    /// `stale_after_secs` seconds (they died without deleting theirs).
    pub async fn withdraw_peer(&self, instance_id: &str, stale_after_secs: i64) -> Result<()> {
        sqlx::query(self.sql("DELETE FROM server_peers WHERE instance_id = ? OR seen_at < ?"))
            .bind(instance_id)
            .bind(self.now() - stale_after_secs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
