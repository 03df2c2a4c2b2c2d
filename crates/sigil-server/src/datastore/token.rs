//! Join tokens. Only a SHA-256 hash of each token is stored, so a copy of the database holds
//! no usable token; taking a token deletes it, which makes it single-use.

use sigil_core::JoinToken;
use sigil_spiffe::SpiffeId;
use sqlx::Row;
use zeroize::Zeroizing;

use super::{DataStore, DataStoreError, Result, sha256_hex};

impl DataStore {
    /// Stores a new token (its hash, expiry and optional agent ID).
    pub async fn create_join_token(&self, token: &JoinToken) -> Result<()> {
        let hash = sha256_hex(token.token.as_bytes());
        let mut tx = self.begin().await?;
        let exists =
            sqlx::query(self.sql("SELECT 1 AS found FROM join_tokens WHERE token_hash = ?"))
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if exists {
            return Err(DataStoreError::AlreadyExists {
                kind: "join token",
                key: "(redacted)".into(),
            });
        }
        sqlx::query(self.sql(
            "INSERT INTO join_tokens (token_hash, spiffe_id, expires_at, created_at) \
             VALUES (?, ?, ?, ?)",
        ))
        .bind(hash)
        .bind(token.spiffe_id.as_ref().map(|id| id.as_str().to_owned()))
        .bind(token.expires_at)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Consumes a token: exactly one caller ever gets it back, however many race for it. An
    /// expired token is deleted and refused with [`DataStoreError::TokenExpired`]; an unknown
    /// or already used one is [`DataStoreError::NotFound`].
    pub async fn take_join_token(&self, token: &str) -> Result<JoinToken> {
        let hash = sha256_hex(token.as_bytes());
        let not_found = || DataStoreError::NotFound {
            kind: "join token",
            key: "(redacted)".into(),
        };
        let row = sqlx::query(
            self.sql("SELECT spiffe_id, expires_at FROM join_tokens WHERE token_hash = ?"),
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(not_found)?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let spiffe_id = row
            .try_get::<Option<String>, _>("spiffe_id")?
            .map(|id| {
                id.parse::<SpiffeId>().map_err(|e| DataStoreError::Corrupt {
                    field: "join_tokens.spiffe_id",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        // The DELETE decides: the database lets one statement remove the row, and every other
        // caller sees zero rows affected.
        let deleted = sqlx::query(self.sql("DELETE FROM join_tokens WHERE token_hash = ?"))
            .bind(&hash)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(not_found());
        }
        if expires_at <= self.now() {
            return Err(DataStoreError::TokenExpired);
        }
        Ok(JoinToken {
            token: Zeroizing::new(token.to_owned()),
            expires_at,
            spiffe_id,
        })
    }

    /// Deletes expired tokens; returns how many.
    pub async fn prune_join_tokens(&self) -> Result<u64> {
        Ok(
            sqlx::query(self.sql("DELETE FROM join_tokens WHERE expires_at <= ?"))
                .bind(self.now())
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
