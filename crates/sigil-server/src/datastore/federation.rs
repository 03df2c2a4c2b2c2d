//! Federation relationships made through the admin API (`[[federation.federates_with]]` in the
//! config file are not stored). Only what a relationship needs to fetch is kept: the trust
//! domain, the endpoint URL and the profile with its endpoint SPIFFE ID. An initial bundle is
//! stored as the trust domain's bundle, not here; file paths (`bundle_path`, `ca_file`) are
//! never stored, so a stored relationship always reads back with both unset.

use sigil_spiffe::{SpiffeId, TrustDomain};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{DataStore, DataStoreError, EventKind, Result};
use crate::config::{FederatesWith, RemoteProfile};

impl DataStore {
    /// Stores a new relationship; [`DataStoreError::AlreadyExists`] when its trust domain has
    /// one.
    pub async fn create_federation_relationship(&self, relationship: &FederatesWith) -> Result<()> {
        let (profile, endpoint) = columns(relationship)?;
        let trust_domain = relationship.trust_domain.as_str();
        let now = self.now();
        let mut tx = self.begin().await?;
        let exists = sqlx::query(
            self.sql("SELECT 1 AS found FROM federation_relationships WHERE trust_domain = ?"),
        )
        .bind(trust_domain)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if exists {
            return Err(DataStoreError::AlreadyExists {
                kind: "federation relationship",
                key: trust_domain.to_owned(),
            });
        }
        sqlx::query(self.sql(
            "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, \
             endpoint_spiffe_id, ca_roots, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(trust_domain)
        .bind(relationship.url.as_str())
        .bind(profile)
        .bind(endpoint)
        .bind(ca_roots(relationship))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.record_event(
            &mut tx,
            EventKind::FederationRelationshipCreated,
            trust_domain,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Replaces a stored relationship; [`DataStoreError::NotFound`] when there is none.
    pub async fn update_federation_relationship(&self, relationship: &FederatesWith) -> Result<()> {
        let (profile, endpoint) = columns(relationship)?;
        let trust_domain = relationship.trust_domain.as_str();
        let mut tx = self.begin().await?;
        let updated = sqlx::query(self.sql(
            "UPDATE federation_relationships SET bundle_endpoint_url = ?, profile = ?, \
             endpoint_spiffe_id = ?, ca_roots = ?, updated_at = ? WHERE trust_domain = ?",
        ))
        .bind(relationship.url.as_str())
        .bind(profile)
        .bind(endpoint)
        .bind(ca_roots(relationship))
        .bind(self.now())
        .bind(trust_domain)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(DataStoreError::NotFound {
                kind: "federation relationship",
                key: trust_domain.to_owned(),
            });
        }
        self.record_event(
            &mut tx,
            EventKind::FederationRelationshipUpdated,
            trust_domain,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// The stored relationship with `trust_domain`, if any.
    pub async fn federation_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederatesWith>> {
        let row = sqlx::query(self.sql(
            "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, ca_roots \
             FROM federation_relationships WHERE trust_domain = ?",
        ))
        .bind(trust_domain.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(relationship_from_row).transpose()
    }

    /// Every stored relationship, in trust domain order.
    pub async fn list_federation_relationships(&self) -> Result<Vec<FederatesWith>> {
        let rows = sqlx::query(
            "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, ca_roots \
             FROM federation_relationships ORDER BY trust_domain",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(relationship_from_row).collect()
    }

    /// Deletes the relationship with `trust_domain` (its bundle stays);
    /// [`DataStoreError::NotFound`] when there is none.
    pub async fn delete_federation_relationship(&self, trust_domain: &TrustDomain) -> Result<()> {
        let mut tx = self.begin().await?;
        let deleted =
            sqlx::query(self.sql("DELETE FROM federation_relationships WHERE trust_domain = ?"))
                .bind(trust_domain.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if deleted == 0 {
            return Err(DataStoreError::NotFound {
                kind: "federation relationship",
                key: trust_domain.to_string(),
            });
        }
        self.record_event(
            &mut tx,
            EventKind::FederationRelationshipDeleted,
            trust_domain.as_str(),
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }
}

/// The profile column and the endpoint SPIFFE ID column. A relationship with a file path
/// cannot be stored: the path would name a file of whichever machine runs the server next.
fn columns(relationship: &FederatesWith) -> Result<(&'static str, Option<String>)> {
    let refused = |what: &str| DataStoreError::InvalidRelationship {
        trust_domain: relationship.trust_domain.to_string(),
        reason: format!("{what} is a file path of the config file and is not stored"),
    };
    match &relationship.profile {
        RemoteProfile::HttpsSpiffe {
            bundle_path: Some(_),
            ..
        } => Err(refused("bundle_path")),
        RemoteProfile::HttpsWeb {
            ca_file: Some(_), ..
        } => Err(refused("ca_file")),
        RemoteProfile::HttpsSpiffe {
            endpoint_spiffe_id, ..
        } => Ok(("https_spiffe", Some(endpoint_spiffe_id.as_str().to_owned()))),
        RemoteProfile::HttpsWeb { .. } => Ok(("https_web", None)),
    }
}

/// The `ca_roots` column: the PEM roots given through the API, empty for none.
fn ca_roots(relationship: &FederatesWith) -> Vec<u8> {
    match &relationship.profile {
        RemoteProfile::HttpsWeb {
            ca_roots: Some(pem),
            ..
        } => pem.clone(),
        _ => Vec::new(),
    }
}

fn relationship_from_row(row: &AnyRow) -> Result<FederatesWith> {
    let name: String = row.try_get("trust_domain")?;
    let url: String = row.try_get("bundle_endpoint_url")?;
    let profile: String = row.try_get("profile")?;
    let endpoint: Option<String> = row.try_get("endpoint_spiffe_id")?;
    let roots: Vec<u8> = row.try_get("ca_roots")?;
    let corrupt = |field: &'static str, reason: String| DataStoreError::Corrupt { field, reason };
    let trust_domain = TrustDomain::new(&name)
        .map_err(|e| corrupt("federation_relationships.trust_domain", e.to_string()))?;
    let profile = match (profile.as_str(), endpoint) {
        ("https_spiffe", Some(endpoint)) => RemoteProfile::HttpsSpiffe {
            endpoint_spiffe_id: endpoint.parse::<SpiffeId>().map_err(|e| {
                corrupt("federation_relationships.endpoint_spiffe_id", e.to_string())
            })?,
            bundle_path: None,
        },
        ("https_web", None) => RemoteProfile::HttpsWeb {
            ca_file: None,
            ca_roots: (!roots.is_empty()).then_some(roots),
        },
        (profile, endpoint) => {
            return Err(corrupt(
                "federation_relationships.profile",
                format!("profile {profile:?} with endpoint_spiffe_id {endpoint:?}"),
            ));
        }
    };
    Ok(FederatesWith::new(trust_domain, url, profile))
}
