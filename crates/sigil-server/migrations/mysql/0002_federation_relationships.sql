-- Sigil datastore, schema version 2 (MySQL / MariaDB): federation relationships made through
-- the admin API. endpoint_spiffe_id is NULL for https_web;
-- ca_roots holds the PEM roots of an https_web endpoint given through the API (empty: the
-- system roots).
CREATE TABLE federation_relationships (
    trust_domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    endpoint_spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin,
    ca_roots LONGBLOB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
