//! Registration entries with their selectors, DNS names and federated trust domains.
//!
//! Duplicates (same SPIFFE ID, parent ID and selector set) are refused: each entry row holds a
//! `registration_key`, the SHA-256 of those three, under a unique index in every dialect, and
//! writes check it first inside their transaction so the error can name the entry in the way.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sigil_core::{EntryId, RegistrationEntry, Selector, SelectorSet};
use sigil_spiffe::{SpiffeId, TrustDomain};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::node::selector_from_row;
use super::{
    DataStore, DataStoreError, EventKind, Result, flag, get_flag, placeholders, sha256_hex,
};

/// The most entries one page returns, whatever the caller asks.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Which entries [`DataStore::list_entries`] returns; every field set must match.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Only entries handing out this SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Only entries under this parent.
    pub parent_id: Option<SpiffeId>,
    /// Only entries having all of these selectors (and maybe more).
    pub selectors: Vec<Selector>,
}

impl EntryFilter {
    /// Every entry.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only entries handing out `id`.
    pub fn spiffe_id(mut self, id: SpiffeId) -> Self {
        self.spiffe_id = Some(id);
        self
    }

    /// Only entries under `id`.
    pub fn parent_id(mut self, id: SpiffeId) -> Self {
        self.parent_id = Some(id);
        self
    }

    /// Only entries having `selector` too.
    pub fn selector(mut self, selector: Selector) -> Self {
        self.selectors.push(selector);
        self
    }
}

/// One page of entries, ordered by ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPage {
    /// The entries of this page.
    pub entries: Vec<RegistrationEntry>,
    /// Pass this as `after` for the next page; `None` on the last page.
    pub next: Option<EntryId>,
}

/// IDs or keys per check query of a batch.
const CHECK_CHUNK: usize = 500;

/// Rows per multi-row insert: 13 columns of an entry make 1,300 placeholders, well within
/// every backend's limit (SQLite's is 32,766).
const ROWS_PER_INSERT: usize = 100;

/// `(?, ?, ...), (?, ?, ...)`: `count` rows of `columns` placeholders.
fn rows(count: usize, columns: usize) -> String {
    let row = format!("({})", placeholders(columns));
    vec![row; count].join(", ")
}

const ENTRY_COLUMNS: &str = "id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, \
                             downstream, hint, expires_at, revision, created_at";

impl DataStore {
    /// A fresh entry ID (a UUID v4), for callers that did not choose one.
    pub fn generate_entry_id() -> EntryId {
        EntryId::try_from(uuid::Uuid::new_v4().to_string())
            // A hyphenated UUID is 36 hex digits and hyphens: always a valid entry ID.
            .unwrap_or_else(|_| unreachable!("a UUID is a valid entry id"))
    }

    /// Stores a new entry and returns it as stored (revision 1). Refuses an ID in use
    /// ([`DataStoreError::AlreadyExists`]) and a duplicate registration
    /// ([`DataStoreError::DuplicateEntry`]).
    pub async fn create_entry(&self, entry: &RegistrationEntry) -> Result<RegistrationEntry> {
        let mut tx = self.begin().await?;
        match self.insert_entry(&mut tx, entry).await {
            Ok(stored) => {
                self.commit(tx).await?;
                Ok(stored)
            }
            Err(InsertFailure::Store(error)) => Err(error),
            Err(InsertFailure::Unique(error, key)) => {
                drop(tx);
                Err(self.unique_violation(error, &key).await)
            }
        }
    }

    /// Creates entries in one transaction: one answer per entry, in order, an entry refused (a
    /// duplicate of a stored entry or of one before it in the batch, an ID in use) changing
    /// nothing and not stopping the others. The checks are two set queries and the writes
    /// multi-row inserts. Should another writer store a duplicate between the checks and the
    /// writes, the unique index refuses the batch and it is made again one entry at a time.
    /// The outer `Err` is the database failing the whole batch.
    pub async fn create_entries(
        &self,
        entries: &[RegistrationEntry],
    ) -> Result<Vec<Result<RegistrationEntry>>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        match self.try_create_entries(entries).await {
            Err(DataStoreError::Backend(reason)) => {
                tracing::debug!(%reason, "batch refused; creating its entries one at a time");
                let mut results = Vec::with_capacity(entries.len());
                for entry in entries {
                    results.push(match self.create_entry(entry).await {
                        Err(DataStoreError::Backend(reason)) => {
                            return Err(DataStoreError::Backend(reason));
                        }
                        result => result,
                    });
                }
                Ok(results)
            }
            result => result,
        }
    }

    async fn try_create_entries(
        &self,
        entries: &[RegistrationEntry],
    ) -> Result<Vec<Result<RegistrationEntry>>> {
        let keys: Vec<String> = entries.iter().map(registration_key).collect();
        let mut tx = self.begin().await?;
        let mut ids_in_use: HashSet<String> = HashSet::new();
        let mut keys_in_use: HashMap<String, String> = HashMap::new();
        for chunk in entries.chunks(CHECK_CHUNK) {
            let query = format!(
                "SELECT id FROM entries WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let mut select = sqlx::query(self.sql(&query));
            for entry in chunk {
                select = select.bind(entry.id.as_str());
            }
            for row in select.fetch_all(&mut *tx).await? {
                ids_in_use.insert(row.try_get("id")?);
            }
        }
        for chunk in keys.chunks(CHECK_CHUNK) {
            let query = format!(
                "SELECT id, registration_key FROM entries WHERE registration_key IN ({})",
                placeholders(chunk.len())
            );
            let mut select = sqlx::query(self.sql(&query));
            for key in chunk {
                select = select.bind(key.as_str());
            }
            for row in select.fetch_all(&mut *tx).await? {
                keys_in_use.insert(row.try_get("registration_key")?, row.try_get("id")?);
            }
        }
        // In order: an entry is checked against the stored ones and those accepted before it.
        let mut results = Vec::with_capacity(entries.len());
        let mut accepted: Vec<(&RegistrationEntry, &str)> = Vec::new();
        for (entry, key) in entries.iter().zip(&keys) {
            if !ids_in_use.insert(entry.id.as_str().to_owned()) {
                results.push(Err(DataStoreError::AlreadyExists {
                    kind: "entry",
                    key: entry.id.to_string(),
                }));
            } else if let Some(existing) = keys_in_use.get(key) {
                // The ID was taken above for nothing: give it back.
                ids_in_use.remove(entry.id.as_str());
                results.push(Err(DataStoreError::DuplicateEntry {
                    existing: existing.clone(),
                }));
            } else {
                keys_in_use.insert(key.clone(), entry.id.as_str().to_owned());
                let mut stored = entry.clone();
                stored.revision = 1;
                results.push(Ok(stored));
                accepted.push((entry, key.as_str()));
            }
        }
        if !accepted.is_empty() {
            self.insert_entry_rows(&mut tx, &accepted).await?;
            self.record_events(
                &mut tx,
                EventKind::EntryCreated,
                accepted.iter().map(|(entry, _)| entry.id.as_str()),
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(results)
    }

    /// The rows of new entries (with their registration keys) and their child rows, in
    /// multi-row inserts. The error is the database's, for the caller to tell a unique
    /// violation (a duplicate that slipped past the checks) from others.
    async fn insert_entry_rows(
        &self,
        tx: &mut AnyConnection,
        entries: &[(&RegistrationEntry, &str)],
    ) -> Result<(), sqlx::Error> {
        let now = self.now();
        for chunk in entries.chunks(ROWS_PER_INSERT) {
            let query = format!(
                "INSERT INTO entries (id, registration_key, spiffe_id, parent_id, x509_svid_ttl, \
                 jwt_svid_ttl, admin, downstream, hint, expires_at, revision, created_at, \
                 updated_at) VALUES {}",
                rows(chunk.len(), 13)
            );
            let mut insert = sqlx::query(self.sql(&query));
            for (entry, key) in chunk {
                insert = insert
                    .bind(entry.id.as_str())
                    .bind(*key)
                    .bind(entry.spiffe_id.as_str())
                    .bind(entry.parent_id.as_str())
                    .bind(entry.x509_svid_ttl.map(secs))
                    .bind(entry.jwt_svid_ttl.map(secs))
                    .bind(flag(entry.admin))
                    .bind(flag(entry.downstream))
                    .bind(entry.hint.as_str())
                    .bind(entry.expires_at)
                    .bind(1_i64)
                    .bind(entry.created_at)
                    .bind(now);
            }
            insert.execute(&mut *tx).await?;
        }
        let selectors: Vec<(&str, &str, &str)> = entries
            .iter()
            .flat_map(|(entry, _)| {
                entry
                    .selectors
                    .iter()
                    .map(|s| (entry.id.as_str(), s.kind(), s.value()))
            })
            .collect();
        for chunk in selectors.chunks(ROWS_PER_INSERT) {
            let query = format!(
                "INSERT INTO entry_selectors (entry_id, kind, value) VALUES {}",
                rows(chunk.len(), 3)
            );
            let mut insert = sqlx::query(self.sql(&query));
            for (id, kind, value) in chunk {
                insert = insert.bind(*id).bind(*kind).bind(*value);
            }
            insert.execute(&mut *tx).await?;
        }
        let listed = |list: fn(&RegistrationEntry) -> Vec<&str>| -> Vec<(&str, i64, &str)> {
            entries
                .iter()
                .flat_map(|(entry, _)| {
                    list(entry)
                        .into_iter()
                        .enumerate()
                        .map(|(position, value)| (entry.id.as_str(), position as i64, value))
                })
                .collect()
        };
        for (table, column, values) in [
            (
                "entry_dns_names",
                "name",
                listed(|e| e.dns_names.iter().map(String::as_str).collect()),
            ),
            (
                "entry_federates_with",
                "trust_domain",
                listed(|e| e.federates_with.iter().map(|td| td.as_str()).collect()),
            ),
        ] {
            for chunk in values.chunks(ROWS_PER_INSERT) {
                let query = format!(
                    "INSERT INTO {table} (entry_id, position, {column}) VALUES {}",
                    rows(chunk.len(), 3)
                );
                let mut insert = sqlx::query(self.sql(&query));
                for (id, position, value) in chunk {
                    insert = insert.bind(*id).bind(*position).bind(*value);
                }
                insert.execute(&mut *tx).await?;
            }
        }
        Ok(())
    }

    /// The writes of one new entry, inside the caller's transaction.
    async fn insert_entry(
        &self,
        tx: &mut AnyConnection,
        entry: &RegistrationEntry,
    ) -> Result<RegistrationEntry, InsertFailure> {
        let mut stored = entry.clone();
        stored.revision = 1;
        let key = registration_key(entry);
        if self.entry_revision(tx, &entry.id).await?.is_some() {
            return Err(InsertFailure::Store(DataStoreError::AlreadyExists {
                kind: "entry",
                key: entry.id.to_string(),
            }));
        }
        self.check_duplicate(tx, &key, None).await?;
        if let Err(error) = self.insert_entry_rows(tx, &[(entry, key.as_str())]).await {
            return Err(InsertFailure::Unique(error, key));
        }
        self.record_event(tx, EventKind::EntryCreated, entry.id.as_str())
            .await?;
        Ok(stored)
    }

    /// One entry, if it exists.
    pub async fn entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>> {
        let query = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?");
        let rows = sqlx::query(self.sql(&query))
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(self.assemble(rows).await?.pop())
    }

    /// The entries that pass `filter`, in ID order, starting after `after`, at most `limit`
    /// (capped at [`MAX_PAGE_SIZE`]; 0 means the cap).
    pub async fn list_entries(
        &self,
        filter: &EntryFilter,
        after: Option<&EntryId>,
        limit: u32,
    ) -> Result<EntryPage> {
        let limit = if limit == 0 {
            MAX_PAGE_SIZE
        } else {
            limit.min(MAX_PAGE_SIZE)
        };
        let mut query = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(id) = &filter.spiffe_id {
            query.push_str(" AND spiffe_id = ?");
            binds.push(id.as_str().to_owned());
        }
        if let Some(id) = &filter.parent_id {
            query.push_str(" AND parent_id = ?");
            binds.push(id.as_str().to_owned());
        }
        for selector in &filter.selectors {
            query.push_str(
                " AND id IN (SELECT entry_id FROM entry_selectors WHERE kind = ? AND value = ?)",
            );
            binds.push(selector.kind().to_owned());
            binds.push(selector.value().to_owned());
        }
        if let Some(after) = after {
            query.push_str(" AND id > ?");
            binds.push(after.as_str().to_owned());
        }
        // One row more than asked tells whether another page follows.
        query.push_str(" ORDER BY id LIMIT ?");
        let sql = self.sql(&query);
        let mut q = sqlx::query(sql);
        for value in binds {
            q = q.bind(value);
        }
        let rows = q.bind(i64::from(limit) + 1).fetch_all(&self.pool).await?;
        let mut entries = self.assemble(rows).await?;
        let next = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(EntryPage { entries, next })
    }

    /// Up to `limit` entries after `after`, in ID order, and the ID to continue after (when
    /// more follow). Unlike [`list_entries`](Self::list_entries) there is no filter and no
    /// page-size cap, and child rows are read by ID range rather than `IN` lists: three range
    /// scans a page, for reading the whole table in bounded memory (the server's start-up).
    pub async fn entries_after(&self, after: Option<&EntryId>, limit: u32) -> Result<EntryPage> {
        let limit = limit.max(1);
        let (query, binds) = match after {
            Some(after) => (
                format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id > ? ORDER BY id LIMIT ?"),
                vec![after.as_str().to_owned()],
            ),
            None => (
                format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY id LIMIT ?"),
                Vec::new(),
            ),
        };
        let mut q = sqlx::query(self.sql(&query));
        for value in &binds {
            q = q.bind(value.clone());
        }
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        let mut entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>>>()?;
        drop(rows);
        let Some(last) = entries.last().map(|e| e.id.as_str().to_owned()) else {
            return Ok(EntryPage {
                entries,
                next: None,
            });
        };
        let mut children = Children::default();
        match after {
            Some(after) => {
                children
                    .load(
                        self,
                        "WHERE entry_id > ? AND entry_id <= ?",
                        &[after.as_str().to_owned(), last],
                    )
                    .await?;
            }
            None => children.load(self, "WHERE entry_id <= ?", &[last]).await?,
        }
        children.attach(&mut entries)?;
        let next = if entries.len() == limit as usize {
            entries.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(EntryPage { entries, next })
    }

    /// Every entry, in ID order: what the server loads to build its authorized-entry index.
    pub async fn all_entries(&self) -> Result<Vec<RegistrationEntry>> {
        let query = format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY id");
        let rows = sqlx::query(self.sql(&query)).fetch_all(&self.pool).await?;
        self.assemble_all(rows).await
    }

    /// Replaces an entry's fields (all but `id` and `created_at`), bumps its revision and
    /// returns it as stored. Refuses a change that would duplicate another entry.
    pub async fn update_entry(&self, entry: &RegistrationEntry) -> Result<RegistrationEntry> {
        let key = registration_key(entry);
        let mut tx = self.begin().await?;
        let Some(revision) = self.entry_revision(&mut tx, &entry.id).await? else {
            return Err(entry_not_found(&entry.id));
        };
        self.check_duplicate(&mut tx, &key, Some(&entry.id)).await?;
        let revision = revision + 1;
        let updated = sqlx::query(self.sql(
            "UPDATE entries SET registration_key = ?, spiffe_id = ?, parent_id = ?, \
             x509_svid_ttl = ?, jwt_svid_ttl = ?, admin = ?, downstream = ?, hint = ?, \
             expires_at = ?, revision = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(key.as_str())
        .bind(entry.spiffe_id.as_str())
        .bind(entry.parent_id.as_str())
        .bind(entry.x509_svid_ttl.map(secs))
        .bind(entry.jwt_svid_ttl.map(secs))
        .bind(flag(entry.admin))
        .bind(flag(entry.downstream))
        .bind(entry.hint.as_str())
        .bind(entry.expires_at)
        .bind(revision)
        .bind(self.now())
        .bind(entry.id.as_str())
        .execute(&mut *tx)
        .await;
        if let Err(error) = updated {
            drop(tx);
            return Err(self.unique_violation(error, &key).await);
        }
        self.delete_children(&mut tx, &entry.id).await?;
        self.insert_children(&mut tx, entry).await?;
        self.record_event(&mut tx, EventKind::EntryUpdated, entry.id.as_str())
            .await?;
        self.commit(tx).await?;
        let mut stored = self
            .entry(&entry.id)
            .await?
            .ok_or_else(|| entry_not_found(&entry.id))?;
        // Another writer may have changed it since our commit; report what we wrote.
        stored.revision = u64::try_from(revision).unwrap_or(u64::MAX);
        Ok(stored)
    }

    /// Deletes an entry with its selectors, DNS names and federated trust domains.
    pub async fn delete_entry(&self, id: &EntryId) -> Result<()> {
        let mut tx = self.begin().await?;
        self.delete_children(&mut tx, id).await?;
        let deleted = sqlx::query(self.sql("DELETE FROM entries WHERE id = ?"))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(entry_not_found(id));
        }
        self.record_event(&mut tx, EventKind::EntryDeleted, id.as_str())
            .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn entry_revision(&self, tx: &mut AnyConnection, id: &EntryId) -> Result<Option<i64>> {
        let row = sqlx::query(self.sql("SELECT revision FROM entries WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        Ok(row.map(|r| r.try_get("revision")).transpose()?)
    }

    /// Fails with the ID of another entry holding the same registration key.
    async fn check_duplicate(
        &self,
        tx: &mut AnyConnection,
        key: &str,
        except: Option<&EntryId>,
    ) -> Result<()> {
        let row = sqlx::query(self.sql("SELECT id FROM entries WHERE registration_key = ?"))
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            let existing: String = row.try_get("id")?;
            if except.is_none_or(|id| id.as_str() != existing) {
                return Err(DataStoreError::DuplicateEntry { existing });
            }
        }
        Ok(())
    }

    /// Turns a failed write into `DuplicateEntry` when another writer got the same
    /// registration in between our check and our write.
    async fn unique_violation(&self, error: sqlx::Error, key: &str) -> DataStoreError {
        let is_unique = matches!(&error, sqlx::Error::Database(e) if e.is_unique_violation());
        if is_unique {
            let row = sqlx::query(self.sql("SELECT id FROM entries WHERE registration_key = ?"))
                .bind(key)
                .fetch_optional(&self.pool)
                .await;
            if let Ok(Some(row)) = row
                && let Ok(existing) = row.try_get::<String, _>("id")
            {
                return DataStoreError::DuplicateEntry { existing };
            }
        }
        error.into()
    }

    async fn insert_children(
        &self,
        tx: &mut AnyConnection,
        entry: &RegistrationEntry,
    ) -> Result<()> {
        let id = entry.id.as_str();
        for selector in &entry.selectors {
            sqlx::query(
                self.sql("INSERT INTO entry_selectors (entry_id, kind, value) VALUES (?, ?, ?)"),
            )
            .bind(id)
            .bind(selector.kind())
            .bind(selector.value())
            .execute(&mut *tx)
            .await?;
        }
        for (position, name) in entry.dns_names.iter().enumerate() {
            sqlx::query(
                self.sql("INSERT INTO entry_dns_names (entry_id, position, name) VALUES (?, ?, ?)"),
            )
            .bind(id)
            .bind(position as i64)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        }
        for (position, td) in entry.federates_with.iter().enumerate() {
            sqlx::query(self.sql(
                "INSERT INTO entry_federates_with (entry_id, position, trust_domain) \
                 VALUES (?, ?, ?)",
            ))
            .bind(id)
            .bind(position as i64)
            .bind(td.as_str())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    async fn delete_children(&self, tx: &mut AnyConnection, id: &EntryId) -> Result<()> {
        for table in ["entry_selectors", "entry_dns_names", "entry_federates_with"] {
            let query = format!("DELETE FROM {table} WHERE entry_id = ?");
            sqlx::query(self.sql(&query))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Entries from their rows plus their child rows, fetched by ID in chunks.
    async fn assemble(&self, rows: Vec<AnyRow>) -> Result<Vec<RegistrationEntry>> {
        let mut entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<String> = entries.iter().map(|e| e.id.as_str().to_owned()).collect();
        let mut children = Children::default();
        for chunk in ids.chunks(500) {
            let list = placeholders(chunk.len());
            children
                .load(self, &format!("WHERE entry_id IN ({list})"), chunk)
                .await?;
        }
        children.attach(&mut entries)?;
        Ok(entries)
    }

    /// Like `assemble`, reading every child row at once (no `IN` lists).
    async fn assemble_all(&self, rows: Vec<AnyRow>) -> Result<Vec<RegistrationEntry>> {
        let mut entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>>>()?;
        let mut children = Children::default();
        children.load(self, "", &[]).await?;
        children.attach(&mut entries)?;
        Ok(entries)
    }
}

/// Child rows by entry ID.
#[derive(Default)]
struct Children {
    selectors: HashMap<String, SelectorSet>,
    dns_names: HashMap<String, Vec<(i64, String)>>,
    federates_with: HashMap<String, Vec<(i64, String)>>,
}

impl Children {
    async fn load(&mut self, store: &DataStore, clause: &str, ids: &[String]) -> Result<()> {
        let query = format!("SELECT entry_id, kind, value FROM entry_selectors {clause}");
        let sql = store.sql(&query);
        let mut q = sqlx::query(sql);
        for id in ids {
            q = q.bind(id.clone());
        }
        for row in q.fetch_all(&store.pool).await? {
            let id: String = row.try_get("entry_id")?;
            let selector = selector_from_row(&row, "entry_selectors")?;
            self.selectors.entry(id).or_default().insert(selector);
        }
        for (table, column, map) in [
            ("entry_dns_names", "name", &mut self.dns_names),
            (
                "entry_federates_with",
                "trust_domain",
                &mut self.federates_with,
            ),
        ] {
            let query = format!("SELECT entry_id, position, {column} FROM {table} {clause}");
            let sql = store.sql(&query);
            let mut q = sqlx::query(sql);
            for id in ids {
                q = q.bind(id.clone());
            }
            for row in q.fetch_all(&store.pool).await? {
                let id: String = row.try_get("entry_id")?;
                map.entry(id)
                    .or_default()
                    .push((row.try_get("position")?, row.try_get(column)?));
            }
        }
        Ok(())
    }

    fn attach(mut self, entries: &mut [RegistrationEntry]) -> Result<()> {
        for entry in entries {
            let id = entry.id.as_str();
            entry.selectors = self.selectors.remove(id).unwrap_or_default();
            let mut names = self.dns_names.remove(id).unwrap_or_default();
            names.sort();
            entry.dns_names = names.into_iter().map(|(_, n)| n).collect();
            let mut tds = self.federates_with.remove(id).unwrap_or_default();
            tds.sort();
            entry.federates_with = tds
                .into_iter()
                .map(|(_, td)| {
                    TrustDomain::new(&td).map_err(|e| DataStoreError::Corrupt {
                        field: "entry_federates_with.trust_domain",
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}

/// The SHA-256 of what makes two entries duplicates: SPIFFE ID, parent ID and the (ordered)
/// selector set, each part length-prefixed so that no two inputs share an encoding.
fn registration_key(entry: &RegistrationEntry) -> String {
    let mut data = Vec::new();
    let mut part = |s: &str| {
        data.extend_from_slice(&(s.len() as u64).to_be_bytes());
        data.extend_from_slice(s.as_bytes());
    };
    part(entry.spiffe_id.as_str());
    part(entry.parent_id.as_str());
    for selector in &entry.selectors {
        part(selector.kind());
        part(selector.value());
    }
    sha256_hex(&data)
}

fn entry_not_found(id: &EntryId) -> DataStoreError {
    DataStoreError::NotFound {
        kind: "entry",
        key: id.to_string(),
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn entry_from_row(row: &AnyRow) -> Result<RegistrationEntry> {
    let corrupt = |field: &'static str, reason: String| DataStoreError::Corrupt { field, reason };
    let id: String = row.try_get("id")?;
    let spiffe_id: String = row.try_get("spiffe_id")?;
    let parent_id: String = row.try_get("parent_id")?;
    let ttl = |column: &str| -> Result<Option<Duration>> {
        Ok(row
            .try_get::<Option<i64>, _>(column)?
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))))
    };
    Ok(RegistrationEntry {
        id: id
            .parse()
            .map_err(|e: sigil_core::EntryError| corrupt("entries.id", e.to_string()))?,
        spiffe_id: spiffe_id
            .parse()
            .map_err(|e: sigil_spiffe::SpiffeIdError| {
                corrupt("entries.spiffe_id", e.to_string())
            })?,
        parent_id: parent_id
            .parse()
            .map_err(|e: sigil_spiffe::SpiffeIdError| {
                corrupt("entries.parent_id", e.to_string())
            })?,
        selectors: SelectorSet::new(),
        x509_svid_ttl: ttl("x509_svid_ttl")?,
        jwt_svid_ttl: ttl("jwt_svid_ttl")?,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: get_flag(row, "admin")?,
        downstream: get_flag(row, "downstream")?,
        hint: row.try_get("hint")?,
        expires_at: row.try_get("expires_at")?,
        revision: u64::try_from(row.try_get::<i64, _>("revision")?).unwrap_or(0),
        created_at: row.try_get("created_at")?,
    })
}

/// Why the writes of a new entry failed: a refusal to answer, or the insert itself failing
/// (a unique violation when another writer got the same registration in between our check and
/// our write, named once the transaction is out of the way).
enum InsertFailure {
    Store(DataStoreError),
    Unique(sqlx::Error, String),
}

impl From<DataStoreError> for InsertFailure {
    fn from(error: DataStoreError) -> Self {
        Self::Store(error)
    }
}
