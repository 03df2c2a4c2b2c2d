-- Sigil datastore, schema version 4 (MySQL / MariaDB): the running server instances and where
-- the others reach each one for change notices, which this database cannot deliver itself.
-- address is HOST:PORT, NULL for an instance with none to offer; seen_at (Unix seconds) is
-- refreshed every few seconds while the instance runs.
CREATE TABLE server_peers (
    instance_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    address VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    seen_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
