-- Sigil datastore, schema version 1 (PostgreSQL). Times are Unix seconds, flags 0/1.
CREATE TABLE bundles (
    trust_domain TEXT NOT NULL PRIMARY KEY,
    document BYTEA NOT NULL,
    sequence_number BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE attested_nodes (
    spiffe_id TEXT NOT NULL PRIMARY KEY,
    attestation_type TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_not_after BIGINT NOT NULL,
    banned BIGINT NOT NULL,
    can_reattest BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX attested_nodes_attestation_type ON attested_nodes (attestation_type);
CREATE TABLE node_selectors (
    spiffe_id TEXT NOT NULL REFERENCES attested_nodes (spiffe_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX node_selectors_spiffe_id ON node_selectors (spiffe_id);
CREATE TABLE entries (
    id TEXT NOT NULL PRIMARY KEY,
    registration_key TEXT NOT NULL UNIQUE,
    spiffe_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    x509_svid_ttl BIGINT,
    jwt_svid_ttl BIGINT,
    admin BIGINT NOT NULL,
    downstream BIGINT NOT NULL,
    hint TEXT NOT NULL,
    expires_at BIGINT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE TABLE entry_selectors (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX entry_selectors_entry_id ON entry_selectors (entry_id);
CREATE INDEX entry_selectors_selector ON entry_selectors (kind, value);
CREATE TABLE entry_dns_names (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    name TEXT NOT NULL
);
CREATE INDEX entry_dns_names_entry_id ON entry_dns_names (entry_id);
CREATE TABLE entry_federates_with (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    trust_domain TEXT NOT NULL
);
CREATE INDEX entry_federates_with_entry_id ON entry_federates_with (entry_id);
CREATE TABLE join_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    spiffe_id TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE ca_journals (
    server_id TEXT NOT NULL PRIMARY KEY,
    journal BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    event_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);
