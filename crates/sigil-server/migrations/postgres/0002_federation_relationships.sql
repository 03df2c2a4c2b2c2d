-- Sigil datastore, schema version 2 (PostgreSQL): federation relationships made through the
-- admin API. endpoint_spiffe_id is NULL for https_web;
-- ca_roots holds the PEM roots of an https_web endpoint given through the API (empty: the
-- system roots).
CREATE TABLE federation_relationships (
    trust_domain TEXT NOT NULL PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile TEXT NOT NULL,
    endpoint_spiffe_id TEXT,
    ca_roots BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
