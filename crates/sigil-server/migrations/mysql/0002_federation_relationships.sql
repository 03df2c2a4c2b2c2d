-- Sigil datastore, schema version 2 (MySQL / MariaDB): federation relationships made through
-- the admin API. endpoint_spiffe_id is NULL for https_web.
CREATE TABLE federation_relationships (
    trust_domain VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    endpoint_spiffe_id VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
