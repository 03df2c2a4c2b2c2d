//! Schema migrations, one folder per dialect, applied at start; the database records the
//! versions applied in `schema_version`, and a database newer than this build is refused.

use sqlx::{AssertSqlSafe, Row};

use super::{Backend, DataStore, DataStoreError, Result};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One migration per version, in order: (SQLite, PostgreSQL, MySQL).
const MIGRATIONS: &[(&str, &str, &str)] = &[
    (
        include_str!("../../migrations/sqlite/0001_initial.sql"),
        include_str!("../../migrations/postgres/0001_initial.sql"),
        include_str!("../../migrations/mysql/0001_initial.sql"),
    ),
    (
        include_str!("../../migrations/sqlite/0002_federation_relationships.sql"),
        include_str!("../../migrations/postgres/0002_federation_relationships.sql"),
        include_str!("../../migrations/mysql/0002_federation_relationships.sql"),
    ),
    (
        include_str!("../../migrations/sqlite/0003_server_authorities.sql"),
        include_str!("../../migrations/postgres/0003_server_authorities.sql"),
        include_str!("../../migrations/mysql/0003_server_authorities.sql"),
    ),
    (
        include_str!("../../migrations/sqlite/0004_server_peers.sql"),
        include_str!("../../migrations/postgres/0004_server_peers.sql"),
        include_str!("../../migrations/mysql/0004_server_peers.sql"),
    ),
];

/// Brings the schema up to [`SCHEMA_VERSION`], or refuses a newer one. Servers sharing a
/// database may start together: PostgreSQL and MySQL migrate under a database lock, SQLite
/// under its write lock, and each step re-reads the version once it holds the lock.
pub(super) async fn migrate(store: &DataStore) -> Result<()> {
    // SQLite needs no extra lock (and an in-memory pool has a single connection to lend).
    let mut lock = match store.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let mut conn = store.pool.acquire().await?;
            sqlx::query(AssertSqlSafe(format!("SELECT pg_advisory_lock({LOCK_ID})")))
                .execute(&mut *conn)
                .await?;
            Some(conn)
        }
        Backend::Mysql => {
            let mut conn = store.pool.acquire().await?;
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT GET_LOCK('sigil_schema_{LOCK_ID}', 60) AS got"
            )))
            .fetch_one(&mut *conn)
            .await?;
            if row.try_get::<Option<i64>, _>("got")? != Some(1) {
                return Err(DataStoreError::Backend(
                    "timed out waiting for another server's schema migration".into(),
                ));
            }
            Some(conn)
        }
    };
    let result = migrate_locked(store).await;
    if let Some(conn) = lock.as_mut() {
        let unlock = match store.backend {
            Backend::Postgres => format!("SELECT pg_advisory_unlock({LOCK_ID})"),
            _ => format!("SELECT RELEASE_LOCK('sigil_schema_{LOCK_ID}')"),
        };
        // Closing the session releases the lock too; an error here only delays others.
        let _ = sqlx::query(AssertSqlSafe(unlock))
            .execute(&mut **conn)
            .await;
    }
    result
}

/// An arbitrary constant naming Sigil's migration lock.
const LOCK_ID: i64 = 5_160_117_001;

async fn migrate_locked(store: &DataStore) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&store.pool)
    .await?;
    let found = recorded_version(store).await?;
    if found > SCHEMA_VERSION {
        return Err(DataStoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, (sqlite, postgres, mysql)) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= found {
            continue;
        }
        let script = match store.backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
            Backend::Mysql => mysql,
        };
        // PostgreSQL and SQLite run DDL inside the transaction, so a failed migration leaves
        // nothing behind; MySQL commits each DDL statement implicitly.
        let mut tx = store.begin().await?;
        let current = sqlx::query("SELECT MAX(version) AS version FROM schema_version")
            .fetch_one(&mut *tx)
            .await?
            .try_get::<Option<i64>, _>("version")?
            .unwrap_or(0);
        if current >= version {
            // Another server applied it while we waited for the lock.
            continue;
        }
        for statement in statements(script) {
            sqlx::query(AssertSqlSafe(statement.to_owned()))
                .execute(&mut *tx)
                .await
                .map_err(|e| DataStoreError::Backend(format!("migration {version} failed: {e}")))?;
        }
        sqlx::query(store.sql("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"))
            .bind(version)
            .bind(store.now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The highest version recorded, 0 for a new database.
pub(super) async fn recorded_version(store: &DataStore) -> Result<i64> {
    let row = sqlx::query("SELECT MAX(version) AS version FROM schema_version")
        .fetch_one(&store.pool)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("version")?.unwrap_or(0))
}

/// The statements of a script: split at `;` that end a line, comments dropped. Our migration
/// files keep to that shape (no `;` inside literals or bodies).
fn statements(script: &str) -> impl Iterator<Item = &str> {
    script
        .split(";\n")
        .map(|chunk| {
            let start = chunk
                .lines()
                .take_while(|l| l.trim_start().starts_with("--") || l.trim().is_empty())
                .map(|l| l.len() + 1)
                .sum::<usize>();
            chunk
                .get(start.min(chunk.len())..)
                .unwrap_or("")
                .trim()
                .trim_end_matches(';')
        })
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dialect_has_the_same_tables() {
        for (sqlite, postgres, mysql) in MIGRATIONS {
            let count = |s: &str| {
                statements(s)
                    .filter(|s| s.starts_with("CREATE TABLE"))
                    .count()
            };
            assert_eq!(count(sqlite), count(postgres));
            assert_eq!(count(sqlite), count(mysql));
            assert!(statements(sqlite).all(|s| !s.starts_with("--") && !s.ends_with(';')));
        }
    }
}
