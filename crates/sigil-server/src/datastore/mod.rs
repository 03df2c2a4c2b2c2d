//! The server's SQL datastore: bundles, attested nodes, registration entries, join tokens, the
//! CA journals and published authorities of every server instance, federation relationships
//! and the change feed (`events`), on SQLite, PostgreSQL or MySQL/MariaDB.
//!
//! One code path serves the three backends through sqlx's `Any` driver with runtime queries.
//! Queries are written with `?` placeholders; [`DataStore::sql`] rewrites them to `$1, $2, ...`
//! for PostgreSQL, the one place where dialects differ at run time. Columns are portable: times
//! are `i64` Unix seconds, flags are `0`/`1` integers, blobs are bytes.
//!
//! Every change writes a row to `events` in the same transaction, so a reader of the feed never
//! sees an event for a change that was rolled back, nor a change without its event.
//!
//! The store stores what it is given: validation of entries (`RegistrationEntry::validate`)
//! belongs to the API layer. It does enforce what needs the database to decide: duplicate
//! entries, single-use join tokens, schema versions.

mod authority;
mod bundle;
mod entry;
mod event;
mod federation;
mod feed;
mod node;
mod peer;
mod schema;
mod token;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};
use tokio::sync::watch;

pub use authority::PublishedAuthority;
pub use entry::{EntryFilter, EntryPage, MAX_PAGE_SIZE};
pub use event::{Event, EventKind};
pub use feed::{
    ChangeNotices, FeedCursor, FeedRead, HOLE_SWEEP_EVERY, HOLE_SWEEP_FOR, POLL_INTERVAL,
    PeerNotices, SWEEP_INTERVAL, StreamGuard, Wake,
};
pub use node::NodeFilter;
pub use peer::PeerRecord;
pub use schema::SCHEMA_VERSION;

/// How long a connection waits for SQLite's write lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a datastore call failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DataStoreError {
    /// The record does not exist.
    #[error("{kind} {key} not found")]
    NotFound {
        /// What was looked for: `entry`, `node`, `bundle`, `join token`.
        kind: &'static str,
        /// Its key (never a secret: a join token is not named).
        key: String,
    },
    /// An entry with the same SPIFFE ID, parent ID and selectors exists already.
    #[error("an entry with the same spiffe_id, parent_id and selectors exists: {existing}")]
    DuplicateEntry {
        /// The ID of the entry already there.
        existing: String,
    },
    /// A record with this key exists already.
    #[error("{kind} {key} already exists")]
    AlreadyExists {
        /// `entry`, `node` or `join token`.
        kind: &'static str,
        /// Its key (a join token is not named).
        key: String,
    },
    /// The join token has expired (it is deleted, so it cannot be used later either).
    #[error("join token expired")]
    TokenExpired,
    /// The database holds a newer schema than this build knows: refuse rather than corrupt it.
    #[error(
        "database schema version {found} is newer than version {supported} known to this build; \
         run a newer sigil"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build has migrations for.
        supported: i64,
    },
    /// A bundle that cannot be written as a SPIFFE bundle document.
    #[error("bundle of {trust_domain} cannot be stored: {reason}")]
    InvalidBundle {
        /// Its trust domain.
        trust_domain: String,
        /// Why the document could not be written.
        reason: String,
    },
    /// A federation relationship that cannot be stored.
    #[error("federation relationship with {trust_domain} cannot be stored: {reason}")]
    InvalidRelationship {
        /// Its trust domain.
        trust_domain: String,
        /// Why.
        reason: String,
    },
    /// The URL names no supported backend.
    #[error("datastore url must start with sqlite:, postgres:, postgresql: or mysql:, got {0:?}")]
    UnsupportedUrl(String),
    /// A stored value could not be read back into the model (the database was edited by hand
    /// or by another program).
    #[error("stored {field} is invalid: {reason}")]
    Corrupt {
        /// Table and column.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The database reported an error.
    #[error("database error: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for DataStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Backend(error.to_string())
    }
}

/// Short for results of this module.
pub type Result<T, E = DataStoreError> = std::result::Result<T, E>;

/// Which database a store talks to.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: one file (or memory), one server.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl Backend {
    /// The backend a URL names.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::Mysql),
            _ => Err(DataStoreError::UnsupportedUrl(redact_url(url))),
        }
    }
}

/// Where the store reads the time for `created_at`, `updated_at` and token expiry. Tests set a
/// fixed one.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The datastore. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct DataStore {
    pool: AnyPool,
    backend: Backend,
    clock: Clock,
    /// The URL it was opened with (a PostgreSQL listener needs a connection of its own).
    url: Arc<str>,
    /// Counts this process's commits: what the other servers on a MySQL datastore are told.
    commits: Arc<watch::Sender<u64>>,
}

impl fmt::Debug for DataStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl DataStore {
    /// Connects to the database a URL names and brings its schema up to date.
    ///
    /// `sqlite://path` creates the file when missing and turns on WAL, a busy timeout and
    /// foreign keys; `sqlite::memory:` is a private in-memory database (one connection, so
    /// that every query sees the same data). Fails with [`DataStoreError::SchemaTooNew`] when
    /// the database was migrated by a newer build.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut options = AnyPoolOptions::new();
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if in_memory {
                // Each connection to `:memory:` is its own database.
                options = options.max_connections(1);
            } else if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("mode=rwc");
            }
            options = options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if !in_memory {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                    }
                    let busy = format!("PRAGMA busy_timeout = {}", SQLITE_BUSY_TIMEOUT.as_millis());
                    conn.execute(AssertSqlSafe(busy)).await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let store = Self {
            pool,
            backend,
            clock: Arc::new(unix_now),
            url: Arc::from(url.as_str()),
            commits: Arc::new(watch::Sender::new(0)),
        };
        schema::migrate(&store).await?;
        Ok(store)
    }

    /// The same store reading time from `clock` (tests pin it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<i64> {
        schema::recorded_version(self).await
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The CA journal of one server instance, if it saved one.
    pub async fn ca_journal(&self, server_id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(self.sql("SELECT journal FROM ca_journals WHERE server_id = ?"))
            .bind(server_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("journal")).transpose()?)
    }

    /// Saves (replaces) the CA journal of one server. The journal is opaque to the store.
    pub async fn set_ca_journal(&self, server_id: &str, journal: &[u8]) -> Result<()> {
        sqlx::query(self.upsert("ca_journals", "server_id", &["journal", "updated_at"]))
            .bind(server_id)
            .bind(journal.to_vec())
            .bind(self.now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the CA journal of one server (absent: nothing to do).
    pub async fn delete_ca_journal(&self, server_id: &str) -> Result<()> {
        sqlx::query(self.sql("DELETE FROM ca_journals WHERE server_id = ?"))
            .bind(server_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rewrites `?` placeholders for the backend: PostgreSQL wants `$1, $2, ...`; SQLite and
    /// MySQL take `?`. No query of this module has a `?` inside a string literal.
    fn sql(&self, query: &str) -> AssertSqlSafe<String> {
        if self.backend != Backend::Postgres {
            return AssertSqlSafe(query.to_owned());
        }
        let mut out = String::with_capacity(query.len() + 8);
        let mut n = 0;
        for c in query.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        AssertSqlSafe(out)
    }

    /// One statement that inserts a row of `table` keyed by `key`, or replaces `columns` of
    /// the row already there; the values bind in order: the key, then `columns`.
    ///
    /// Not an UPDATE followed by an INSERT when nothing was updated: on InnoDB, two servers
    /// doing that for two new keys at once lock the same gap with the UPDATE and deadlock on
    /// the INSERTs (two servers starting together did).
    fn upsert(&self, table: &str, key: &str, columns: &[&str]) -> AssertSqlSafe<String> {
        let names = std::iter::once(key)
            .chain(columns.iter().copied())
            .collect::<Vec<_>>()
            .join(", ");
        let values = placeholders(columns.len() + 1);
        let update = match self.backend {
            Backend::Mysql => {
                let set: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!("ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
            Backend::Postgres | Backend::Sqlite => {
                let set: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                format!("ON CONFLICT ({key}) DO UPDATE SET {}", set.join(", "))
            }
        };
        self.sql(&format!(
            "INSERT INTO {table} ({names}) VALUES ({values}) {update}"
        ))
    }

    /// Starts a write transaction. SQLite takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a deferred transaction that reads and then writes can fail with SQLITE_BUSY when another
    /// writer got in between, which the busy timeout does not cure.
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _ => self.pool.begin().await?,
        })
    }

    /// Commits `tx`, then counts the commit for [`DataStore::commits`]. Every write
    /// transaction ends here, so a watcher hears of each change only once it is visible.
    async fn commit(&self, tx: Transaction<'static, Any>) -> Result<()> {
        tx.commit().await?;
        self.commits
            .send_modify(|count| *count = count.wrapping_add(1));
        Ok(())
    }

    /// Changes after each commit this process makes (several commits between two looks count
    /// as one change): the other servers on a MySQL datastore are told of each.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }
}

/// `?, ?, ?` for an `IN (...)` list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

fn get_flag(row: &AnyRow, column: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Lowercase hex SHA-256 of `data`.
fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://***@{}", &url[..start], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_by_url() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("mysql://root@h/db").unwrap(),
            Backend::Mysql
        );
        let err = Backend::from_url("redis://user:pw@host").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn token_hash_is_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
