-- Sigil datastore, schema version 3 (SQLite): the signing authorities each server instance
-- publishes. The trust domain's own bundle (in bundles) is the union of every instance's
-- authorities that have not expired; kind is 'x509' (material: the DER certificate, key: its
-- SHA-256 in hex) or 'jwt' (material: the JWK as JSON, key: the kid).
CREATE TABLE server_authorities (
    instance_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    authority_key TEXT NOT NULL,
    material BLOB NOT NULL,
    not_after INTEGER NOT NULL,
    PRIMARY KEY (instance_id, kind, authority_key)
);
