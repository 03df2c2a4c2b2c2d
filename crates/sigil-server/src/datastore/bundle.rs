//! Bundles by trust domain (our own and federated ones), stored as SPIFFE bundle documents.

use sigil_spiffe::{Bundle, TrustDomain};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{DataStore, DataStoreError, EventKind, Result};

impl DataStore {
    /// Stores the bundle of its trust domain, replacing any previous one.
    pub async fn set_bundle(&self, bundle: &Bundle) -> Result<()> {
        let mut tx = self.begin().await?;
        self.write_bundle_row(&mut tx, bundle).await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Writes (replaces or inserts) the row of `bundle`'s trust domain and its event, inside
    /// the caller's transaction.
    pub(super) async fn write_bundle_row(
        &self,
        tx: &mut AnyConnection,
        bundle: &Bundle,
    ) -> Result<()> {
        let document = bundle
            .to_document()
            .map_err(|e| DataStoreError::InvalidBundle {
                trust_domain: bundle.trust_domain().to_string(),
                reason: e.to_string(),
            })?
            .into_bytes();
        let sequence = bundle
            .sequence()
            .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let trust_domain = bundle.trust_domain().as_str();
        let now = self.now();
        // Only the event's name depends on this read: servers storing a new bundle at once
        // may each record a creation, which the followers treat as any other change.
        let existed = sqlx::query(self.sql("SELECT 1 FROM bundles WHERE trust_domain = ?"))
            .bind(trust_domain)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        // One statement: every server stores each federated bundle it fetches, so several
        // insert the same new row at once.
        sqlx::query(self.upsert(
            "bundles",
            "trust_domain",
            &["document", "sequence_number", "updated_at"],
        ))
        .bind(trust_domain)
        .bind(document)
        .bind(sequence)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let kind = if existed {
            EventKind::BundleUpdated
        } else {
            EventKind::BundleCreated
        };
        self.record_event(tx, kind, trust_domain).await
    }

    /// The bundle of a trust domain, if stored.
    pub async fn bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Bundle>> {
        let row = sqlx::query(
            self.sql("SELECT trust_domain, document FROM bundles WHERE trust_domain = ?"),
        )
        .bind(trust_domain.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(bundle_from_row).transpose()
    }

    /// Every stored bundle, by trust domain.
    pub async fn list_bundles(&self) -> Result<Vec<Bundle>> {
        let rows = sqlx::query("SELECT trust_domain, document FROM bundles ORDER BY trust_domain")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(bundle_from_row).collect()
    }

    /// Deletes the bundle of a trust domain.
    pub async fn delete_bundle(&self, trust_domain: &TrustDomain) -> Result<()> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(self.sql("DELETE FROM bundles WHERE trust_domain = ?"))
            .bind(trust_domain.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(DataStoreError::NotFound {
                kind: "bundle",
                key: trust_domain.to_string(),
            });
        }
        self.record_event(&mut tx, EventKind::BundleDeleted, trust_domain.as_str())
            .await?;
        self.commit(tx).await?;
        Ok(())
    }
}

fn bundle_from_row(row: &AnyRow) -> Result<Bundle> {
    let name: String = row.try_get("trust_domain")?;
    let document: Vec<u8> = row.try_get("document")?;
    let corrupt = |reason: String| DataStoreError::Corrupt {
        field: "bundles.document",
        reason,
    };
    let trust_domain = TrustDomain::new(&name).map_err(|e| corrupt(e.to_string()))?;
    Bundle::from_document(trust_domain, &document).map_err(|e| corrupt(e.to_string()))
}
