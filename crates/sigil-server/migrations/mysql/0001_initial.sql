-- Sigil datastore, schema version 1 (MySQL / MariaDB). Times are Unix seconds, flags 0/1.
-- IDs are ASCII (SPIFFE IDs, trust domains, entry IDs, hex hashes), so ASCII VARCHARs keep keys
-- within InnoDB's 3072-byte limit. InnoDB ignores inline REFERENCES: foreign keys are table
-- constraints here.
-- Binary collations: IDs and selector values compare case-sensitively, as everywhere else.
CREATE TABLE bundles (
    trust_domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    document LONGBLOB NOT NULL,
    sequence_number BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE attested_nodes (
    spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    attestation_type VARCHAR(255) NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_not_after BIGINT NOT NULL,
    banned BIGINT NOT NULL,
    can_reattest BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX attested_nodes_attestation_type ON attested_nodes (attestation_type);
CREATE TABLE node_selectors (
    spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind VARCHAR(255) NOT NULL,
    value TEXT NOT NULL,
    FOREIGN KEY (spiffe_id) REFERENCES attested_nodes (spiffe_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX node_selectors_spiffe_id ON node_selectors (spiffe_id);
CREATE TABLE entries (
    id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    registration_key CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL UNIQUE,
    spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    parent_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    x509_svid_ttl BIGINT,
    jwt_svid_ttl BIGINT,
    admin BIGINT NOT NULL,
    downstream BIGINT NOT NULL,
    hint TEXT NOT NULL,
    expires_at BIGINT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE TABLE entry_selectors (
    entry_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind VARCHAR(255) NOT NULL,
    value TEXT NOT NULL,
    FOREIGN KEY (entry_id) REFERENCES entries (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX entry_selectors_entry_id ON entry_selectors (entry_id);
CREATE INDEX entry_selectors_selector ON entry_selectors (kind, value(255));
CREATE TABLE entry_dns_names (
    entry_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    FOREIGN KEY (entry_id) REFERENCES entries (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX entry_dns_names_entry_id ON entry_dns_names (entry_id);
CREATE TABLE entry_federates_with (
    entry_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    position BIGINT NOT NULL,
    trust_domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    FOREIGN KEY (entry_id) REFERENCES entries (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX entry_federates_with_entry_id ON entry_federates_with (entry_id);
CREATE TABLE join_tokens (
    token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE ca_journals (
    server_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    journal LONGBLOB NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE events (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind VARCHAR(255) NOT NULL,
    event_key VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX events_created_at ON events (created_at);
