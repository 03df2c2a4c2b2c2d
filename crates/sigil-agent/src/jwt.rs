//! JWT-SVIDs: minted by the server on demand (`NewJWTSVID`) and cached per (SPIFFE ID,
//! audience set) until half their lifetime is gone. The cache is bounded: when it is full,
//! expired tokens go first, then the ones closest to their refresh time.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sigil_core::RegistrationEntry;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::svid_client::SvidClient;
use sigil_spiffe::jwt::danger::parse_insecure;

use crate::server::ServerChannel;

type Key = (String, BTreeSet<String>);

struct Cached {
    token: String,
    refresh_at: SystemTime,
}

/// The JWT-SVID cache of one agent.
pub struct JwtCache {
    server: Arc<ServerChannel>,
    capacity: usize,
    tokens: Mutex<HashMap<Key, Cached>>,
}

impl JwtCache {
    /// A cache of at most `capacity` tokens, minting through `channel`.
    pub fn new(server: Arc<ServerChannel>, capacity: usize) -> Self {
        Self {
            server,
            capacity,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A JWT-SVID for `entry` with `audience`: cached while under half its life, else new.
    pub async fn fetch(
        &self,
        entry: &RegistrationEntry,
        audience: &[String],
    ) -> Result<String, tonic::Status> {
        let key: Key = (
            entry.spiffe_id.to_string(),
            audience.iter().cloned().collect(),
        );
        let now = SystemTime::now();
        if let Some(cached) = self.lock().get(&key)
            && cached.refresh_at > now
        {
            return Ok(cached.token.clone());
        }
        let answer = SvidClient::new(self.server.get())
            .new_jwtsvid(pb::NewJwtsvidRequest {
                entry_id: entry.id.as_str().to_owned(),
                audience: audience.to_vec(),
            })
            .await?
            .into_inner();
        // The server is authenticated by mTLS; the parse checks the token is well formed and
        // is what was asked for before a workload gets it.
        let parsed = parse_insecure(&answer.token, audience, now).map_err(|e| {
            tonic::Status::internal(format!("the server returned an unusable JWT-SVID: {e}"))
        })?;
        if parsed.spiffe_id() != &entry.spiffe_id {
            return Err(tonic::Status::internal(
                "the server returned a JWT-SVID for another SPIFFE ID",
            ));
        }
        let issued = parsed.issued_at().unwrap_or(now);
        let lifetime = parsed.expiry().duration_since(issued).unwrap_or_default();
        let refresh_at = issued + lifetime / 2;
        let mut tokens = self.lock();
        if tokens.len() >= self.capacity && !tokens.contains_key(&key) {
            tokens.retain(|_, cached| cached.refresh_at > now);
            if tokens.len() >= self.capacity
                && let Some(oldest) = tokens
                    .iter()
                    .min_by_key(|(_, cached)| cached.refresh_at)
                    .map(|(key, _)| key.clone())
            {
                tokens.remove(&oldest);
            }
        }
        tokens.insert(
            key,
            Cached {
                token: answer.token.clone(),
                refresh_at,
            },
        );
        Ok(answer.token)
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
