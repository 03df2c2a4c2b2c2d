//! Digests of Workload API stream messages: a stream skips a message equal to the last one it
//! sent, and keeping that last message to compare would hold a second copy of every chain,
//! key and bundle of the caller (at 10,000 SVIDs, about a fifth of the agent's memory). Two
//! equal messages have the same digest whatever the order of their maps (prost maps are
//! `HashMap`s: the same content can encode in different orders).

use std::collections::HashMap;

use aws_lc_rs::digest::{Context, SHA256};
use sigil_proto::workload as pb;

/// A SHA-256 over a message's fields, each length-prefixed, maps in key order.
pub(super) type Digest = [u8; 32];

/// A message a stream sends.
pub(super) trait Fingerprint {
    /// The digest that equal messages share.
    fn fingerprint(&self) -> Digest;
}

struct Hasher(Context);

impl Hasher {
    fn new() -> Self {
        Self(Context::new(&SHA256))
    }

    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }

    fn list(&mut self, list: &[Vec<u8>]) {
        self.count(list.len());
        for item in list {
            self.bytes(item);
        }
    }

    fn map(&mut self, map: &HashMap<String, Vec<u8>>) {
        let mut entries: Vec<(&String, &Vec<u8>)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.count(entries.len());
        for (key, value) in entries {
            self.bytes(key.as_bytes());
            self.bytes(value);
        }
    }

    fn finish(self) -> Digest {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(self.0.finish().as_ref());
        digest
    }
}

impl Fingerprint for pb::X509svidResponse {
    fn fingerprint(&self) -> Digest {
        let mut h = Hasher::new();
        h.count(self.svids.len());
        for svid in &self.svids {
            h.bytes(svid.spiffe_id.as_bytes());
            h.bytes(&svid.x509_svid);
            h.bytes(&svid.x509_svid_key);
            h.bytes(&svid.bundle);
            h.bytes(svid.hint.as_bytes());
        }
        h.list(&self.crl);
        h.map(&self.federated_bundles);
        h.finish()
    }
}

impl Fingerprint for pb::X509BundlesResponse {
    fn fingerprint(&self) -> Digest {
        let mut h = Hasher::new();
        h.list(&self.crl);
        h.map(&self.bundles);
        h.finish()
    }
}

impl Fingerprint for pb::JwtBundlesResponse {
    fn fingerprint(&self) -> Digest {
        let mut h = Hasher::new();
        h.map(&self.bundles);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid(id: &str, cert: &[u8]) -> pb::X509svid {
        pb::X509svid {
            spiffe_id: id.to_owned(),
            x509_svid: cert.to_vec(),
            x509_svid_key: b"key".to_vec(),
            bundle: b"bundle".to_vec(),
            hint: String::new(),
        }
    }

    #[test]
    fn equal_messages_share_a_digest_whatever_their_map_order() {
        let mut a = pb::X509svidResponse {
            svids: vec![svid("spiffe://example.org/a", b"one")],
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        };
        let mut b = a.clone();
        // Inserted in opposite orders; many keys, so two maps very likely iterate apart.
        for n in 0..32 {
            a.federated_bundles
                .insert(format!("spiffe://td{n}.test"), vec![n]);
        }
        for n in (0..32).rev() {
            b.federated_bundles
                .insert(format!("spiffe://td{n}.test"), vec![n]);
        }
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn any_change_changes_the_digest() {
        let base = pb::X509svidResponse {
            svids: vec![svid("spiffe://example.org/a", b"one")],
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        };
        let rotated = pb::X509svidResponse {
            svids: vec![svid("spiffe://example.org/a", b"two")],
            ..base.clone()
        };
        // The same bytes split differently between fields are not the same message.
        let shifted = pb::X509svidResponse {
            svids: vec![svid("spiffe://example.org/ao", b"ne")],
            ..base.clone()
        };
        let mut hinted = base.clone();
        hinted.svids[0].hint = "internal".to_owned();
        let mut federated = base.clone();
        federated
            .federated_bundles
            .insert("spiffe://peer.test".to_owned(), b"peer".to_vec());
        let digests = [&base, &rotated, &shifted, &hinted, &federated].map(|m| m.fingerprint());
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let bundles = pb::JwtBundlesResponse {
            bundles: [("spiffe://example.org".to_owned(), b"{}".to_vec())].into(),
        };
        assert_ne!(
            bundles.fingerprint(),
            pb::JwtBundlesResponse::default().fingerprint()
        );
    }
}
