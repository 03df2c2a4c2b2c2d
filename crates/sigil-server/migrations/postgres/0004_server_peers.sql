-- Sigil datastore, schema version 4 (PostgreSQL): the running server instances and where the
-- others reach each one for change notices (used on MySQL/MariaDB; PostgreSQL servers notify
-- each other with LISTEN/NOTIFY and leave this empty). address is HOST:PORT, NULL for an
-- instance with none to offer; seen_at (Unix seconds) is refreshed while the instance runs.
CREATE TABLE server_peers (
    instance_id TEXT NOT NULL PRIMARY KEY,
    address TEXT,
    seen_at BIGINT NOT NULL
);
