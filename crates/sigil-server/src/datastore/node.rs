//! Attested nodes (agents) and their node selectors.

use std::collections::HashMap;

use sigil_core::{AttestedNode, Selector, SelectorSet};
use sigil_spiffe::SpiffeId;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{DataStore, DataStoreError, EventKind, Result, flag, get_flag, placeholders};

/// Which nodes [`DataStore::list_nodes`] returns; every field set must match.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// Only banned (`Some(true)`) or only not banned (`Some(false)`) nodes.
    pub banned: Option<bool>,
    /// Only nodes attested by this attestor.
    pub attestation_type: Option<String>,
    /// Only nodes whose certificate expires before this time (Unix seconds).
    pub expires_before: Option<i64>,
}

impl NodeFilter {
    /// Every node.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only banned or only not-banned nodes.
    pub fn banned(mut self, banned: bool) -> Self {
        self.banned = Some(banned);
        self
    }

    /// Only nodes of one attestation type.
    pub fn attestation_type(mut self, attestation_type: &str) -> Self {
        self.attestation_type = Some(attestation_type.to_owned());
        self
    }

    /// Only nodes whose certificate expires before `time`.
    pub fn expires_before(mut self, time: i64) -> Self {
        self.expires_before = Some(time);
        self
    }
}

const NODE_COLUMNS: &str = "spiffe_id, attestation_type, cert_serial, cert_not_after, banned, \
                            can_reattest, created_at";

impl DataStore {
    /// Records a newly attested node with its selectors.
    pub async fn create_node(&self, node: &AttestedNode) -> Result<()> {
        let key = node.spiffe_id.as_str();
        let mut tx = self.begin().await?;
        if self.node_exists(&mut tx, key).await? {
            return Err(DataStoreError::AlreadyExists {
                kind: "node",
                key: key.to_owned(),
            });
        }
        sqlx::query(self.sql(
            "INSERT INTO attested_nodes (spiffe_id, attestation_type, cert_serial, cert_not_after, \
             banned, can_reattest, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(key)
        .bind(node.attestation_type.as_str())
        .bind(node.cert_serial.as_str())
        .bind(node.cert_not_after)
        .bind(flag(node.banned))
        .bind(flag(node.can_reattest))
        .bind(node.created_at)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        self.insert_node_selectors(&mut tx, key, &node.selectors)
            .await?;
        self.record_event(&mut tx, EventKind::NodeCreated, key)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// One node with its selectors, if attested.
    pub async fn node(&self, spiffe_id: &SpiffeId) -> Result<Option<AttestedNode>> {
        let query = format!("SELECT {NODE_COLUMNS} FROM attested_nodes WHERE spiffe_id = ?");
        let Some(row) = sqlx::query(self.sql(&query))
            .bind(spiffe_id.as_str())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut node = node_from_row(&row)?;
        node.selectors = self.node_selectors(spiffe_id).await?;
        Ok(Some(node))
    }

    /// The nodes that pass `filter`, with their selectors, by SPIFFE ID.
    pub async fn list_nodes(&self, filter: &NodeFilter) -> Result<Vec<AttestedNode>> {
        let mut query = format!("SELECT {NODE_COLUMNS} FROM attested_nodes WHERE 1 = 1");
        if filter.banned.is_some() {
            query.push_str(" AND banned = ?");
        }
        if filter.attestation_type.is_some() {
            query.push_str(" AND attestation_type = ?");
        }
        if filter.expires_before.is_some() {
            query.push_str(" AND cert_not_after < ?");
        }
        query.push_str(" ORDER BY spiffe_id");
        let sql = self.sql(&query);
        let mut q = sqlx::query(sql);
        if let Some(banned) = filter.banned {
            q = q.bind(flag(banned));
        }
        if let Some(kind) = &filter.attestation_type {
            q = q.bind(kind.clone());
        }
        if let Some(time) = filter.expires_before {
            q = q.bind(time);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut nodes = rows.iter().map(node_from_row).collect::<Result<Vec<_>>>()?;
        let mut selectors = self
            .selectors_of(
                nodes
                    .iter()
                    .map(|n| n.spiffe_id.as_str().to_owned())
                    .collect(),
            )
            .await?;
        for node in &mut nodes {
            node.selectors = selectors
                .remove(node.spiffe_id.as_str())
                .unwrap_or_default();
        }
        Ok(nodes)
    }

    /// Records a renewal: the serial and expiry of the node's new certificate.
    pub async fn update_node_certificate(
        &self,
        spiffe_id: &SpiffeId,
        cert_serial: &str,
        cert_not_after: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(self.sql(
            "UPDATE attested_nodes SET cert_serial = ?, cert_not_after = ?, updated_at = ? \
             WHERE spiffe_id = ?",
        ))
        .bind(cert_serial)
        .bind(cert_not_after)
        .bind(self.now())
        .bind(spiffe_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_node_update(tx, spiffe_id, updated).await
    }

    /// Bans or unbans a node.
    pub async fn set_node_banned(&self, spiffe_id: &SpiffeId, banned: bool) -> Result<()> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            self.sql("UPDATE attested_nodes SET banned = ?, updated_at = ? WHERE spiffe_id = ?"),
        )
        .bind(flag(banned))
        .bind(self.now())
        .bind(spiffe_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.finish_node_update(tx, spiffe_id, updated).await
    }

    /// Replaces a node's selectors.
    pub async fn set_node_selectors(
        &self,
        spiffe_id: &SpiffeId,
        selectors: &SelectorSet,
    ) -> Result<()> {
        let key = spiffe_id.as_str();
        let mut tx = self.begin().await?;
        let updated =
            sqlx::query(self.sql("UPDATE attested_nodes SET updated_at = ? WHERE spiffe_id = ?"))
                .bind(self.now())
                .bind(key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(node_not_found(spiffe_id));
        }
        sqlx::query(self.sql("DELETE FROM node_selectors WHERE spiffe_id = ?"))
            .bind(key)
            .execute(&mut *tx)
            .await?;
        self.insert_node_selectors(&mut tx, key, selectors).await?;
        self.finish_node_update(tx, spiffe_id, updated).await
    }

    /// A node's selectors.
    pub async fn node_selectors(&self, spiffe_id: &SpiffeId) -> Result<SelectorSet> {
        let mut tx = self.pool.begin().await?;
        if !self.node_exists(&mut tx, spiffe_id.as_str()).await? {
            return Err(node_not_found(spiffe_id));
        }
        self.commit(tx).await?;
        Ok(self
            .selectors_of(vec![spiffe_id.as_str().to_owned()])
            .await?
            .remove(spiffe_id.as_str())
            .unwrap_or_default())
    }

    /// Deletes a node and its selectors (eviction: the agent must attest again).
    pub async fn delete_node(&self, spiffe_id: &SpiffeId) -> Result<()> {
        let key = spiffe_id.as_str();
        let mut tx = self.begin().await?;
        sqlx::query(self.sql("DELETE FROM node_selectors WHERE spiffe_id = ?"))
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(self.sql("DELETE FROM attested_nodes WHERE spiffe_id = ?"))
            .bind(key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(node_not_found(spiffe_id));
        }
        self.record_event(&mut tx, EventKind::NodeDeleted, key)
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn finish_node_update(
        &self,
        mut tx: Transaction<'static, Any>,
        spiffe_id: &SpiffeId,
        updated: u64,
    ) -> Result<()> {
        if updated == 0 {
            return Err(node_not_found(spiffe_id));
        }
        self.record_event(&mut tx, EventKind::NodeUpdated, spiffe_id.as_str())
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn node_exists(&self, tx: &mut Transaction<'static, Any>, key: &str) -> Result<bool> {
        Ok(
            sqlx::query(self.sql("SELECT 1 AS found FROM attested_nodes WHERE spiffe_id = ?"))
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?
                .is_some(),
        )
    }

    async fn insert_node_selectors(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &str,
        selectors: &SelectorSet,
    ) -> Result<()> {
        for selector in selectors {
            sqlx::query(
                self.sql("INSERT INTO node_selectors (spiffe_id, kind, value) VALUES (?, ?, ?)"),
            )
            .bind(key)
            .bind(selector.kind())
            .bind(selector.value())
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The selectors of the given nodes, by SPIFFE ID, in chunks small enough for every
    /// backend's parameter limit.
    async fn selectors_of(&self, keys: Vec<String>) -> Result<HashMap<String, SelectorSet>> {
        let mut out: HashMap<String, SelectorSet> = HashMap::new();
        for chunk in keys.chunks(500) {
            let query = format!(
                "SELECT spiffe_id, kind, value FROM node_selectors WHERE spiffe_id IN ({})",
                placeholders(chunk.len())
            );
            let sql = self.sql(&query);
            let mut q = sqlx::query(sql);
            for key in chunk {
                q = q.bind(key.clone());
            }
            for row in q.fetch_all(&self.pool).await? {
                let key: String = row.try_get("spiffe_id")?;
                out.entry(key)
                    .or_default()
                    .insert(selector_from_row(&row, "node_selectors")?);
            }
        }
        Ok(out)
    }
}

fn node_not_found(spiffe_id: &SpiffeId) -> DataStoreError {
    DataStoreError::NotFound {
        kind: "node",
        key: spiffe_id.to_string(),
    }
}

fn node_from_row(row: &AnyRow) -> Result<AttestedNode> {
    let id: String = row.try_get("spiffe_id")?;
    Ok(AttestedNode {
        spiffe_id: id.parse().map_err(|e: sigil_spiffe::SpiffeIdError| {
            DataStoreError::Corrupt {
                field: "attested_nodes.spiffe_id",
                reason: e.to_string(),
            }
        })?,
        attestation_type: row.try_get("attestation_type")?,
        cert_serial: row.try_get("cert_serial")?,
        cert_not_after: row.try_get("cert_not_after")?,
        banned: get_flag(row, "banned")?,
        can_reattest: get_flag(row, "can_reattest")?,
        selectors: SelectorSet::new(),
        created_at: row.try_get("created_at")?,
    })
}

/// A selector from a row with `kind` and `value` columns.
pub(super) fn selector_from_row(row: &AnyRow, table: &'static str) -> Result<Selector> {
    let kind: String = row.try_get("kind")?;
    let value: String = row.try_get("value")?;
    Selector::new(&kind, &value).map_err(|e| DataStoreError::Corrupt {
        field: table,
        reason: e.to_string(),
    })
}
