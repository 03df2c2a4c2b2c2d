//! Schema migrations, one folder per dialect, applied at start; the database records the
//! versions applied in `schema_version`, and a database newer than this build is refused.

use sqlx::{AssertSqlSafe, Row};

use super::{Backend, DataStore, DataStoreError, Result};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One migration per version, in order: (SQLite, PostgreSQL, MySQL).
const MIGRATIONS: &[(&str, &str, &str)] = &[(
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/mysql/0001_initial.sql"),
)];

/// Brings the schema up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) async fn migrate(store: &DataStore) -> Result<()> {
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
