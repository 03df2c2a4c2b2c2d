-- Sigil datastore, schema version 4 (SQLite): the running server instances and where the
-- others reach each one for change notices (MySQL/MariaDB only; SQLite has one server, the
-- table stays empty). address is HOST:PORT, NULL for an instance with none to offer; seen_at
-- (Unix seconds) is refreshed every few seconds while the instance runs.
CREATE TABLE server_peers (
    instance_id TEXT NOT NULL PRIMARY KEY,
    address TEXT,
    seen_at INTEGER NOT NULL
);
