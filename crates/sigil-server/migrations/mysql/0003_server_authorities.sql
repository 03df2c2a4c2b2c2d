-- Sigil datastore, schema version 3 (MySQL / MariaDB): the signing authorities each server
-- instance publishes. The trust domain's own bundle (in bundles) is the union of every
-- instance's authorities that have not expired; kind is 'x509' (material: the DER certificate,
-- key: its SHA-256 in hex) or 'jwt' (material: the JWK as JSON, key: the kid).
CREATE TABLE server_authorities (
    instance_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    authority_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    material LONGBLOB NOT NULL,
    not_after BIGINT NOT NULL,
    PRIMARY KEY (instance_id, kind, authority_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
