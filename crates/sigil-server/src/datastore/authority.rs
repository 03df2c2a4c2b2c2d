//! The signing authorities each server instance publishes, and the trust domain's own bundle
//! made of them: several servers share one database, each with its own CA, and every
//! authority of every server must be in the one bundle that agents, workloads and federation
//! peers get.
//!
//! A server replaces its own rows whenever its CA changes; in the same transaction the union
//! of every instance's unexpired authorities becomes the stored own bundle, its sequence
//! number bumped only when the content changed. Publishers queue on the bundle row's lock, so
//! each one's union includes the ones committed before it, and one server's rotation never
//! drops another's authorities: those leave the bundle when they expire.

use std::collections::BTreeMap;

use rustls_pki_types::CertificateDer;
use sigil_spiffe::{Bundle, JwtAuthority, JwtBundle, TrustDomain};
use sqlx::Row;

use super::{DataStore, DataStoreError, Result, sha256_hex};

/// How often a publication is tried when the database refuses it: servers inserting the first
/// own bundle at once (one hits the primary key), or a deadlock InnoDB broke by rolling one
/// back. Once the bundle row exists, publishers queue on its lock and do not collide.
const ATTEMPTS: usize = 5;

/// One signing authority as a server publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishedAuthority {
    /// An X.509 root of our SVIDs' chains (a CA certificate, or the upstream root).
    X509 {
        /// The certificate.
        certificate: CertificateDer<'static>,
        /// Unix seconds after which it leaves the bundle.
        not_after: i64,
    },
    /// A JWT signing key.
    Jwt {
        /// Its key ID and public key.
        authority: JwtAuthority,
        /// Unix seconds after which it leaves the bundle.
        not_after: i64,
    },
}

impl PublishedAuthority {
    fn kind(&self) -> &'static str {
        match self {
            Self::X509 { .. } => "x509",
            Self::Jwt { .. } => "jwt",
        }
    }

    /// The row's `authority_key`: the certificate's SHA-256, or the kid.
    fn key(&self) -> String {
        match self {
            Self::X509 { certificate, .. } => sha256_hex(certificate),
            Self::Jwt { authority, .. } => authority.key_id().to_owned(),
        }
    }

    fn not_after(&self) -> i64 {
        match self {
            Self::X509 { not_after, .. } | Self::Jwt { not_after, .. } => *not_after,
        }
    }

    fn material(&self, trust_domain: &TrustDomain) -> Vec<u8> {
        match self {
            Self::X509 { certificate, .. } => certificate.to_vec(),
            Self::Jwt { authority, .. } => {
                let mut one = JwtBundle::new(trust_domain.clone());
                one.add_authority(authority.clone());
                one.to_jwks().into_bytes()
            }
        }
    }
}

impl DataStore {
    /// Replaces the authorities `instance_id` publishes and returns the trust domain's own
    /// bundle after it: every instance's authorities that have not expired, with the stored
    /// sequence number (bumped when the content changed). Expired rows of any instance are
    /// deleted on the way.
    pub async fn publish_authorities(
        &self,
        trust_domain: &TrustDomain,
        instance_id: &str,
        authorities: &[PublishedAuthority],
    ) -> Result<Bundle> {
        let mut attempt = 1;
        loop {
            match self
                .try_publish(trust_domain, instance_id, authorities)
                .await
            {
                Err(DataStoreError::Backend(reason)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, %reason, "publishing the ca's authorities again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_publish(
        &self,
        trust_domain: &TrustDomain,
        instance_id: &str,
        authorities: &[PublishedAuthority],
    ) -> Result<Bundle> {
        let now = self.now();
        let td = trust_domain.as_str();
        let mut tx = self.begin().await?;
        // The row lock first (SQLite: the write lock, taken by BEGIN IMMEDIATE): concurrent
        // publishers queue here, and each one reads the union after the others committed.
        sqlx::query(self.sql("UPDATE bundles SET updated_at = updated_at WHERE trust_domain = ?"))
            .bind(td)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            self.sql("DELETE FROM server_authorities WHERE instance_id = ? OR not_after <= ?"),
        )
        .bind(instance_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut mine: BTreeMap<(&'static str, String), &PublishedAuthority> = BTreeMap::new();
        for authority in authorities.iter().filter(|a| a.not_after() > now) {
            mine.insert((authority.kind(), authority.key()), authority);
        }
        for ((kind, key), authority) in &mine {
            sqlx::query(self.sql(
                "INSERT INTO server_authorities \
                 (instance_id, kind, authority_key, material, not_after) VALUES (?, ?, ?, ?, ?)",
            ))
            .bind(instance_id)
            .bind(*kind)
            .bind(key.as_str())
            .bind(authority.material(trust_domain))
            .bind(authority.not_after())
            .execute(&mut *tx)
            .await?;
        }
        let rows = sqlx::query(
            "SELECT kind, authority_key, material FROM server_authorities \
             ORDER BY not_after, kind, authority_key",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut union = Bundle::new(trust_domain.clone());
        for row in &rows {
            let kind: String = row.try_get("kind")?;
            let material: Vec<u8> = row.try_get("material")?;
            match kind.as_str() {
                "x509" => union
                    .x509_mut()
                    .add_authority(CertificateDer::from(material)),
                "jwt" => {
                    let keys = JwtBundle::from_jwks(trust_domain.clone(), &material)
                        .map_err(|e| corrupt(e.to_string()))?;
                    for authority in keys.authorities() {
                        // A kid is random: two instances never publish the same one.
                        if union.jwt().authority(authority.key_id()).is_none() {
                            union.jwt_mut().add_authority(authority.clone());
                        }
                    }
                }
                other => return Err(corrupt(format!("unknown kind {other:?}"))),
            }
        }
        let stored = sqlx::query(
            self.sql("SELECT document, sequence_number FROM bundles WHERE trust_domain = ?"),
        )
        .bind(td)
        .fetch_optional(&mut *tx)
        .await?;
        let previous = match &stored {
            Some(row) => {
                let document: Vec<u8> = row.try_get("document")?;
                let sequence: i64 = row.try_get("sequence_number")?;
                let bundle =
                    Bundle::from_document(trust_domain.clone(), &document).map_err(|e| {
                        DataStoreError::Corrupt {
                            field: "bundles.document",
                            reason: e.to_string(),
                        }
                    })?;
                Some((bundle, u64::try_from(sequence).unwrap_or(0)))
            }
            None => None,
        };
        if let Some((bundle, sequence)) = &previous
            && same_authorities(bundle, &union)
        {
            union.set_sequence(Some(*sequence));
            self.commit(tx).await?;
            return Ok(union);
        }
        let sequence = previous.as_ref().map_or(1, |(_, s)| s.saturating_add(1));
        union.set_sequence(Some(sequence));
        self.write_bundle_row(&mut tx, &union).await?;
        self.commit(tx).await?;
        Ok(union)
    }

    /// How many instances publish unexpired authorities besides `instance_id`.
    pub async fn other_publishers(&self, instance_id: &str) -> Result<u64> {
        let row = sqlx::query(self.sql(
            "SELECT COUNT(DISTINCT instance_id) AS n FROM server_authorities \
             WHERE instance_id <> ? AND not_after > ?",
        ))
        .bind(instance_id)
        .bind(self.now())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }
}

/// Whether two bundles hold the same authorities, in any order.
fn same_authorities(a: &Bundle, b: &Bundle) -> bool {
    sorted_x509(a) == sorted_x509(b) && a.jwt() == b.jwt()
}

fn sorted_x509(bundle: &Bundle) -> Vec<&[u8]> {
    let mut certs: Vec<&[u8]> = bundle
        .x509()
        .authorities()
        .iter()
        .map(|c| c.as_ref())
        .collect();
    certs.sort_unstable();
    certs
}

fn corrupt(reason: String) -> DataStoreError {
    DataStoreError::Corrupt {
        field: "server_authorities.material",
        reason,
    }
}
