//! The running server's shared state: the datastore, the CA, the authorized-entry index, the
//! attested agents, the federated bundles and the sync hub, behind one type that every API
//! holds an `Arc` of.
//!
//! Every write that the index or the agents' streams must see goes through here, datastore
//! first, then memory, then a wake-up of the affected streams, under one writer lock: the
//! index applies changes in the datastore's order, and a stream woken up always finds the
//! change in place. Reads (signing, authorization) take read locks on memory only and never
//! wait for the datastore.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use sigil_core::{
    AttestedNode, EntryId, JoinToken, RegistrationEntry, agent_spiffe_id, is_agent_id,
    server_spiffe_id,
};
use sigil_spiffe::{Bundle, JwtSvid, SpiffeId, SpiffeIdError, TrustDomain};
use zeroize::Zeroizing;

use crate::ca::{CaError, CaEvent, CertificateAuthority};
use crate::datastore::{DataStore, DataStoreError, NodeFilter, PublishedAuthority};
use crate::hub::SyncHub;
use crate::index::{Affected, EntryIndex, Scope};

/// Entries read per query when the state is loaded.
const LOAD_PAGE_SIZE: u32 = 10_000;

/// The join-token lifetime when the caller does not give one (SPIRE's default too).
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);

/// What the state is configured with.
#[derive(Clone, Debug)]
pub struct StateSettings {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// X.509-SVID lifetime for entries without their own (and for agents' SVIDs).
    pub default_x509_ttl: Duration,
    /// JWT-SVID lifetime for entries without their own.
    pub default_jwt_ttl: Duration,
    /// The `iss` claim of every JWT-SVID minted (`svid.jwt_issuer`); `None`: no `iss`.
    pub jwt_issuer: Option<String>,
}

/// What the server knows of an attested agent to authenticate its calls without the
/// datastore.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AgentRecord {
    /// Serial (hex) of the agent's current X.509-SVID.
    serial: String,
    /// The serial before the last renewal, accepted until the agent shows the new one: the
    /// renewal's answer may be lost on the way, and the agent would be locked out.
    previous_serial: Option<String>,
    banned: bool,
}

/// Why an agent's call is refused. The peer only ever hears "permission denied"; this goes to
/// the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    /// The ID is not an agent ID of this trust domain.
    #[error("{0} is not an agent of this trust domain")]
    NotAnAgent(SpiffeId),
    /// No attested agent has this ID (never attested, or evicted).
    #[error("agent {0} is not attested")]
    Unknown(SpiffeId),
    /// The agent is banned.
    #[error("agent {0} is banned")]
    Banned(SpiffeId),
    /// The certificate is not the agent's current one.
    #[error("agent {agent} presented certificate {presented}, not its current one")]
    StaleCertificate {
        /// The agent.
        agent: SpiffeId,
        /// The serial it presented.
        presented: String,
    },
}

/// Why a join token cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The fixed agent ID is not `spiffe://<td>/sigil/agent/...`.
    #[error(
        "agent id {0} must be an agent ID of this trust domain, spiffe://{1}/sigil/agent/<attestor>/<node>"
    )]
    NotAnAgentId(SpiffeId, TrustDomain),
    /// The TTL is zero or too large to represent.
    #[error("join token ttl must be between 1s and 10 years")]
    BadTtl,
    /// The datastore failed.
    #[error(transparent)]
    DataStore(#[from] DataStoreError),
}

/// The result of one CA rotation step.
#[derive(Debug)]
pub struct Rotation {
    /// What happened, for the log.
    pub events: Vec<CaEvent>,
    /// The journal after the step.
    pub journal: Vec<u8>,
    /// What this server's CA publishes after the step.
    pub published: Vec<PublishedAuthority>,
    /// Our bundle after the step (as served: every server's authorities and ours).
    pub bundle: Bundle,
    /// Whether the served bundle changed (and the streams were woken).
    pub bundle_changed: bool,
    /// The CA's bundle sequence after the step: what `published` is the state of.
    pub sequence: u64,
}

/// The server's shared state.
pub struct ServerState {
    trust_domain: TrustDomain,
    server_id: SpiffeId,
    default_x509_ttl: Duration,
    default_jwt_ttl: Duration,
    jwt_issuer: Option<String>,
    datastore: DataStore,
    ca: RwLock<CertificateAuthority>,
    /// The own bundle as the datastore last gave it: the authorities of every server instance
    /// on it.
    stored_own: RwLock<Bundle>,
    /// The own bundle served: `stored_own` with this CA's authorities added (the same, once
    /// they are published).
    own: RwLock<Bundle>,
    index: RwLock<EntryIndex>,
    agents: RwLock<HashMap<SpiffeId, AgentRecord>>,
    federated: RwLock<BTreeMap<TrustDomain, Bundle>>,
    /// Serializes writes so that memory applies them in the datastore's order.
    writer: tokio::sync::Mutex<()>,
    hub: SyncHub,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl ServerState {
    /// Builds the state from the datastore: every entry into the index, every attested agent
    /// (banned ones are remembered but get no entries), every federated bundle.
    pub async fn load(
        settings: StateSettings,
        datastore: DataStore,
        ca: CertificateAuthority,
    ) -> Result<Self, DataStoreError> {
        let server_id = server_spiffe_id(&settings.trust_domain).map_err(corrupt_td)?;
        let mut index = EntryIndex::new(&settings.trust_domain).map_err(corrupt_td)?;
        // Page by page: reading every row at once held all of them beside the index being
        // built, and the freed buffers stayed resident (about 100 MiB at 100,000 entries).
        let mut after = None;
        loop {
            let page = datastore
                .entries_after(after.as_ref(), LOAD_PAGE_SIZE)
                .await?;
            for entry in page.entries {
                index.upsert_entry(entry);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut agents = HashMap::new();
        for node in datastore.list_nodes(&NodeFilter::all()).await? {
            if !node.banned {
                index.set_agent(node.spiffe_id.clone(), node.selectors.clone());
            }
            agents.insert(
                node.spiffe_id,
                AgentRecord {
                    serial: node.cert_serial,
                    previous_serial: None,
                    banned: node.banned,
                },
            );
        }
        let federated = datastore
            .list_bundles()
            .await?
            .into_iter()
            .filter(|b| b.trust_domain() != &settings.trust_domain)
            .map(|b| (b.trust_domain().clone(), b))
            .collect();
        tracing::info!(
            entries = index.entry_count(),
            agents = agents.len(),
            "server state loaded"
        );
        // Until `set_stored_own_bundle`, the CA's bundle alone: a server by itself.
        let own = ca.bundle();
        Ok(Self {
            trust_domain: settings.trust_domain,
            server_id,
            default_x509_ttl: settings.default_x509_ttl,
            default_jwt_ttl: settings.default_jwt_ttl,
            jwt_issuer: settings.jwt_issuer,
            datastore,
            ca: RwLock::new(ca),
            stored_own: RwLock::new(own.clone()),
            own: RwLock::new(own),
            index: RwLock::new(index),
            agents: RwLock::new(agents),
            federated: RwLock::new(federated),
            writer: tokio::sync::Mutex::new(()),
            hub: SyncHub::new(),
        })
    }

    /// The `iss` every JWT-SVID carries, if configured.
    pub fn jwt_issuer(&self) -> Option<&str> {
        self.jwt_issuer.as_deref()
    }

    /// Mints a JWT-SVID with the active JWT key and the configured issuer (see
    /// [`CertificateAuthority::mint_jwt_svid`]); every JWT-SVID the server hands out is made
    /// here, so all carry the same `iss`.
    pub fn mint_jwt_svid(
        &self,
        spiffe_id: SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(JwtSvid, bool), CaError> {
        self.ca()
            .mint_jwt_svid_issued_by(spiffe_id, audience, ttl, now, self.jwt_issuer())
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The server's own ID, `spiffe://<td>/sigil/server`.
    pub fn server_id(&self) -> &SpiffeId {
        &self.server_id
    }

    /// The default X.509-SVID lifetime.
    pub fn default_x509_ttl(&self) -> Duration {
        self.default_x509_ttl
    }

    /// The default JWT-SVID lifetime.
    pub fn default_jwt_ttl(&self) -> Duration {
        self.default_jwt_ttl
    }

    /// The datastore.
    pub fn datastore(&self) -> &DataStore {
        &self.datastore
    }

    /// The sync hub.
    pub fn hub(&self) -> &SyncHub {
        &self.hub
    }

    /// The CA, for signing. Signing needs only this read lock, so it runs in parallel.
    pub fn ca(&self) -> RwLockReadGuard<'_, CertificateAuthority> {
        read(&self.ca)
    }

    /// Moves the CA along its life at `now`; wakes every stream when the bundle changed. The
    /// caller publishes [`Rotation::published`] and gives the result to
    /// [`Self::set_stored_own_bundle`].
    pub fn rotate_ca(&self, now: SystemTime) -> Result<Rotation, CaError> {
        let (events, journal, published, sequence) = {
            let mut ca = write(&self.ca);
            let events = ca.rotate(now)?;
            (events, ca.journal(), ca.published(), ca.sequence())
        };
        let (bundle, bundle_changed) = self.refresh_own();
        Ok(Rotation {
            events,
            journal,
            published,
            bundle,
            bundle_changed,
            sequence,
        })
    }

    /// The CA's authorities as of bundle `sequence` are in the datastore (see
    /// [`CertificateAuthority::require_publication`]).
    pub fn ca_published(&self, sequence: u64) {
        write(&self.ca).mark_published(sequence);
    }

    /// Takes the own bundle as the datastore has it now (after a publication, or read back to
    /// see other servers' changes); wakes every stream when the served bundle changed, and
    /// says whether it did.
    pub fn set_stored_own_bundle(&self, stored: Bundle) -> bool {
        *write(&self.stored_own) = stored;
        self.refresh_own().1
    }

    /// The own bundle's sequence number as the datastore last gave it.
    pub fn stored_own_sequence(&self) -> Option<u64> {
        read(&self.stored_own).sequence()
    }

    /// Recomputes the served own bundle; wakes the streams when it changed.
    fn refresh_own(&self) -> (Bundle, bool) {
        let served = served_own(&read(&self.stored_own), &self.ca().bundle());
        let changed = {
            let mut own = write(&self.own);
            let changed = *own != served;
            if changed {
                own.clone_from(&served);
            }
            changed
        };
        if changed {
            self.hub.notify_bundles();
        }
        (served, changed)
    }

    /// Our own bundle: every server instance's authorities (as the datastore last had them)
    /// and this server's.
    pub fn own_bundle(&self) -> Bundle {
        read(&self.own).clone()
    }

    /// The federated bundle of `trust_domain`, if any.
    pub fn federated_bundle(&self, trust_domain: &TrustDomain) -> Option<Bundle> {
        read(&self.federated).get(trust_domain).cloned()
    }

    /// Every federated bundle, by trust domain.
    pub fn federated_bundles(&self) -> Vec<Bundle> {
        read(&self.federated).values().cloned().collect()
    }

    /// Stores a federated bundle and wakes the streams. The caller has checked it (not our
    /// own trust domain, sequence not going back).
    pub async fn set_federated_bundle(&self, bundle: Bundle) -> Result<(), DataStoreError> {
        let _writer = self.writer.lock().await;
        self.datastore.set_bundle(&bundle).await?;
        write(&self.federated).insert(bundle.trust_domain().clone(), bundle);
        self.hub.notify_bundles();
        Ok(())
    }

    /// Deletes a federated bundle and wakes the streams.
    pub async fn delete_federated_bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<(), DataStoreError> {
        let _writer = self.writer.lock().await;
        self.datastore.delete_bundle(trust_domain).await?;
        write(&self.federated).remove(trust_domain);
        self.hub.notify_bundles();
        Ok(())
    }

    /// The entries `agent` may have.
    pub fn authorized_entries(&self, agent: &SpiffeId) -> Vec<Arc<RegistrationEntry>> {
        read(&self.index).authorized_entries(agent)
    }

    /// Each of the entries `ids` as `agent` may have it now (`None`: it may not, or it is
    /// gone), under one read of the index.
    pub fn authorized_subset(
        &self,
        agent: &SpiffeId,
        ids: &HashSet<EntryId>,
    ) -> Vec<(EntryId, Option<Arc<RegistrationEntry>>)> {
        let index = read(&self.index);
        ids.iter()
            .map(|id| {
                let entry = index
                    .is_authorized(agent, id)
                    .then(|| index.entry(id).cloned())
                    .flatten();
                (id.clone(), entry)
            })
            .collect()
    }

    /// The entry `id` when `agent` may have it.
    pub fn authorized_entry(
        &self,
        agent: &SpiffeId,
        id: &EntryId,
    ) -> Option<Arc<RegistrationEntry>> {
        let index = read(&self.index);
        if index.is_authorized(agent, id) {
            index.entry(id).cloned()
        } else {
            None
        }
    }

    /// The entry `id`, from the index.
    pub fn entry(&self, id: &EntryId) -> Option<Arc<RegistrationEntry>> {
        read(&self.index).entry(id).cloned()
    }

    /// The number of entries in the index.
    pub fn entry_count(&self) -> usize {
        read(&self.index).entry_count()
    }

    /// Creates an entry (already validated; `id` and `created_at` set by the caller).
    pub async fn create_entry(
        &self,
        entry: &RegistrationEntry,
    ) -> Result<RegistrationEntry, DataStoreError> {
        let _writer = self.writer.lock().await;
        let stored = self.datastore.create_entry(entry).await?;
        let change = upsert_indexed(&mut write(&self.index), stored.clone());
        self.hub.notify_changes(&[change]);
        Ok(stored)
    }

    /// Creates entries (already validated, IDs and creation times set) in one datastore
    /// transaction: one answer per entry, in order; the streams of every affected agent are
    /// woken once.
    pub async fn create_entries(
        &self,
        entries: &[RegistrationEntry],
    ) -> Result<Vec<Result<RegistrationEntry, DataStoreError>>, DataStoreError> {
        let _writer = self.writer.lock().await;
        let results = self.datastore.create_entries(entries).await?;
        let changes: Vec<_> = {
            let mut index = write(&self.index);
            results
                .iter()
                .flatten()
                .map(|stored| upsert_indexed(&mut index, stored.clone()))
                .collect()
        };
        self.hub.notify_changes(&changes);
        Ok(results)
    }

    /// Replaces an entry (already validated), keeping its creation time.
    pub async fn update_entry(
        &self,
        mut entry: RegistrationEntry,
    ) -> Result<RegistrationEntry, DataStoreError> {
        let _writer = self.writer.lock().await;
        let existing =
            self.datastore
                .entry(&entry.id)
                .await?
                .ok_or_else(|| DataStoreError::NotFound {
                    kind: "entry",
                    key: entry.id.to_string(),
                })?;
        // The creation time is the server's record, not the caller's to change.
        entry.created_at = existing.created_at;
        let stored = self.datastore.update_entry(&entry).await?;
        let change = upsert_indexed(&mut write(&self.index), stored.clone());
        self.hub.notify_changes(&[change]);
        Ok(stored)
    }

    /// Deletes an entry.
    pub async fn delete_entry(&self, id: &EntryId) -> Result<(), DataStoreError> {
        let _writer = self.writer.lock().await;
        self.datastore.delete_entry(id).await?;
        let change = remove_indexed(&mut write(&self.index), id);
        self.hub.notify_changes(&[change]);
        Ok(())
    }

    /// Makes a single-use join token valid for `ttl` from `now`. Without a fixed agent ID the
    /// server picks `spiffe://<td>/sigil/agent/join_token/<random>` now, so the operator
    /// learns the agent's ID (to register its workloads) before the agent attests, and the
    /// token itself never becomes part of an ID (IDs are logged; tokens must not be).
    pub async fn create_join_token(
        &self,
        ttl: Duration,
        agent_id: Option<SpiffeId>,
        now: SystemTime,
    ) -> Result<JoinToken, TokenError> {
        if ttl.is_zero() || ttl > Duration::from_secs(10 * 365 * 86_400) {
            return Err(TokenError::BadTtl);
        }
        let spiffe_id = match agent_id {
            Some(id) if is_agent_id(&id, &self.trust_domain) => id,
            Some(id) => return Err(TokenError::NotAnAgentId(id, self.trust_domain.clone())),
            None => agent_spiffe_id(&self.trust_domain, "join_token", &random_hex(16))
                .map_err(|e| TokenError::DataStore(corrupt_td(e)))?,
        };
        let expires_at = unix(now).saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(0));
        let token = JoinToken {
            token: Zeroizing::new(random_hex(16)),
            expires_at,
            spiffe_id: Some(spiffe_id),
        };
        self.datastore.create_join_token(&token).await?;
        Ok(token)
    }

    /// Checks that `agent` is an attested agent that is not banned.
    pub fn agent_standing(&self, agent: &SpiffeId) -> Result<(), AgentAuthError> {
        self.agent_record(agent).map(|_| ())
    }

    fn agent_record(&self, agent: &SpiffeId) -> Result<AgentRecord, AgentAuthError> {
        if !is_agent_id(agent, &self.trust_domain) {
            return Err(AgentAuthError::NotAnAgent(agent.clone()));
        }
        let record = read(&self.agents)
            .get(agent)
            .cloned()
            .ok_or_else(|| AgentAuthError::Unknown(agent.clone()))?;
        if record.banned {
            return Err(AgentAuthError::Banned(agent.clone()));
        }
        Ok(record)
    }

    /// Checks that `agent` may call the agent API with the certificate of serial `serial`:
    /// attested, not banned, and that certificate is its current (or just-replaced) one.
    pub fn authenticate_agent(&self, agent: &SpiffeId, serial: &str) -> Result<(), AgentAuthError> {
        let record = self.agent_record(agent)?;
        if record.serial == serial || record.previous_serial.as_deref() == Some(serial) {
            Ok(())
        } else {
            Err(AgentAuthError::StaleCertificate {
                agent: agent.clone(),
                presented: serial.to_owned(),
            })
        }
    }

    /// True when `agent` is attested and banned.
    pub fn is_banned(&self, agent: &SpiffeId) -> bool {
        read(&self.agents).get(agent).is_some_and(|r| r.banned)
    }

    /// Records a successful attestation. A node seen before (an agent that lost its SVID and
    /// attested again with a new token for the same ID) is replaced, unless it is banned.
    pub async fn record_attestation(&self, node: AttestedNode) -> Result<(), AttestError> {
        let _writer = self.writer.lock().await;
        if let Some(existing) = self.datastore.node(&node.spiffe_id).await? {
            if existing.banned {
                return Err(AttestError::Banned(node.spiffe_id));
            }
            self.datastore.delete_node(&node.spiffe_id).await?;
        }
        self.datastore.create_node(&node).await?;
        write(&self.agents).insert(
            node.spiffe_id.clone(),
            AgentRecord {
                serial: node.cert_serial.clone(),
                previous_serial: None,
                banned: false,
            },
        );
        let mut index = write(&self.index);
        index.remove_agent(&node.spiffe_id);
        index.set_agent(node.spiffe_id.clone(), node.selectors);
        drop(index);
        // Whatever the agent's streams hold is stale: it starts over.
        self.hub.notify([&node.spiffe_id]);
        Ok(())
    }

    /// Records a renewal: `serial` becomes current, the one before stays accepted until the
    /// agent presents the new one.
    pub async fn record_renewal(
        &self,
        agent: &SpiffeId,
        presented: &str,
        serial: String,
        not_after: i64,
    ) -> Result<(), AttestError> {
        let _writer = self.writer.lock().await;
        // Re-checked under the writer lock: a ban or eviction may have come in between.
        self.authenticate_agent(agent, presented)?;
        self.datastore
            .update_node_certificate(agent, &serial, not_after)
            .await?;
        let mut agents = write(&self.agents);
        if let Some(record) = agents.get_mut(agent) {
            record.previous_serial = Some(std::mem::replace(&mut record.serial, serial));
        }
        Ok(())
    }

    /// Marks the agent presented `serial`; once it uses its new certificate the old one is
    /// no longer accepted.
    pub fn confirm_serial(&self, agent: &SpiffeId, serial: &str) {
        let confirmed = read(&self.agents)
            .get(agent)
            .is_some_and(|r| r.serial == serial && r.previous_serial.is_some());
        if confirmed && let Some(record) = write(&self.agents).get_mut(agent) {
            record.previous_serial = None;
        }
    }

    /// Bans an agent: it can neither attest nor renew, loses its entries, and its streams end.
    pub async fn ban_agent(&self, agent: &SpiffeId) -> Result<(), DataStoreError> {
        let _writer = self.writer.lock().await;
        self.datastore.set_node_banned(agent, true).await?;
        if let Some(record) = write(&self.agents).get_mut(agent) {
            record.banned = true;
        }
        write(&self.index).remove_agent(agent);
        self.hub.notify([agent]);
        Ok(())
    }

    /// Evicts an agent: it is forgotten and must attest again; its streams end. A banned
    /// agent that is evicted is no longer banned (SPIRE's behaviour: delete clears a ban).
    pub async fn evict_agent(&self, agent: &SpiffeId) -> Result<(), DataStoreError> {
        let _writer = self.writer.lock().await;
        self.datastore.delete_node(agent).await?;
        write(&self.agents).remove(agent);
        write(&self.index).remove_agent(agent);
        self.hub.notify([agent]);
        Ok(())
    }
}

/// Applying what other servers wrote: the feed follower reads an event, and the record as the
/// datastore has it now goes into memory (an event says which record changed, not how; reading
/// the current row also makes a repeated or out-of-order event harmless). Under the writer
/// lock, like this server's own writes; a change already in memory (this server's own, read
/// back) wakes no stream.
impl ServerState {
    /// Brings the entry `id` in memory to what the datastore holds.
    pub async fn apply_stored_entry(&self, id: &EntryId) -> Result<(), DataStoreError> {
        let _writer = self.writer.lock().await;
        let stored = self.datastore.entry(id).await?;
        let change = {
            let mut index = write(&self.index);
            match stored {
                Some(entry) if index.entry(id).is_some_and(|known| **known == entry) => {
                    return Ok(());
                }
                Some(entry) => upsert_indexed(&mut index, entry),
                None if index.entry(id).is_none() => return Ok(()),
                None => remove_indexed(&mut index, id),
            }
        };
        self.hub.notify_changes(&[change]);
        Ok(())
    }

    /// Brings the attested agent `agent` in memory to what the datastore holds: attested
    /// (with its selectors and certificate), banned, or gone.
    pub async fn apply_stored_node(&self, agent: &SpiffeId) -> Result<(), DataStoreError> {
        let _writer = self.writer.lock().await;
        let stored = self.datastore.node(agent).await?;
        let mut agents = write(&self.agents);
        let known = agents.get(agent).cloned();
        match stored {
            None => {
                if known.is_none() {
                    return Ok(());
                }
                agents.remove(agent);
                drop(agents);
                write(&self.index).remove_agent(agent);
            }
            Some(node) => {
                let unchanged = known
                    .as_ref()
                    .is_some_and(|k| k.serial == node.cert_serial && k.banned == node.banned)
                    && read(&self.index).agent_selectors(agent)
                        == (!node.banned).then_some(&node.selectors);
                if unchanged {
                    return Ok(());
                }
                // Renewed through another server: the serial before stays accepted until the
                // agent shows the new one, as after a renewal here.
                let previous_serial = match &known {
                    Some(k) if k.serial != node.cert_serial => Some(k.serial.clone()),
                    Some(k) => k.previous_serial.clone(),
                    None => None,
                };
                agents.insert(
                    agent.clone(),
                    AgentRecord {
                        serial: node.cert_serial.clone(),
                        previous_serial,
                        banned: node.banned,
                    },
                );
                drop(agents);
                let mut index = write(&self.index);
                index.remove_agent(agent);
                if !node.banned {
                    index.set_agent(agent.clone(), node.selectors);
                }
            }
        }
        self.hub.notify([agent]);
        Ok(())
    }

    /// Brings the bundle of `trust_domain` in memory to what the datastore holds: our own (the
    /// authorities every server published) or a federated one.
    pub async fn apply_stored_bundle(&self, trust_domain: &str) -> Result<(), DataStoreError> {
        let Ok(trust_domain) = TrustDomain::new(trust_domain) else {
            return Err(DataStoreError::Corrupt {
                field: "events.event_key",
                reason: format!("{trust_domain:?} is not a trust domain"),
            });
        };
        let _writer = self.writer.lock().await;
        let stored = self.datastore.bundle(&trust_domain).await?;
        if trust_domain == self.trust_domain {
            if let Some(stored) = stored {
                self.set_stored_own_bundle(stored);
            }
            return Ok(());
        }
        let changed = {
            let mut federated = write(&self.federated);
            match stored {
                Some(bundle) if federated.get(&trust_domain) == Some(&bundle) => false,
                Some(bundle) => {
                    federated.insert(trust_domain, bundle);
                    true
                }
                None => federated.remove(&trust_domain).is_some(),
            }
        };
        if changed {
            self.hub.notify_bundles();
        }
        Ok(())
    }
}

/// Why recording an attestation or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The node is banned.
    #[error("agent {0} is banned")]
    Banned(SpiffeId),
    /// The agent may not renew.
    #[error(transparent)]
    Auth(#[from] AgentAuthError),
    /// The datastore failed.
    #[error(transparent)]
    DataStore(#[from] DataStoreError),
}

/// The own bundle to serve: `stored` with the authorities of `ca` that it lacks. When it lacks
/// some (they are not published yet, or the datastore could not be written), the sequence
/// number is one past the stored one, since the content is not the stored content.
fn served_own(stored: &Bundle, ca: &Bundle) -> Bundle {
    let mut served = stored.clone();
    for authority in ca.x509().authorities() {
        served.x509_mut().add_authority(authority.clone());
    }
    for authority in ca.jwt().authorities() {
        if served.jwt().authority(authority.key_id()).is_none() {
            served.jwt_mut().add_authority(authority.clone());
        }
    }
    let grew = served.x509().authorities().len() != stored.x509().authorities().len()
        || served.jwt().authorities().len() != stored.jwt().authorities().len();
    if grew {
        let next = stored.sequence().unwrap_or(0).saturating_add(1);
        served.set_sequence(Some(next));
    }
    served
}

/// Writes an entry into the index; returns who it affects and what it may change for them.
fn upsert_indexed(index: &mut EntryIndex, entry: RegistrationEntry) -> (Affected, Scope) {
    let scope = index.change_scope(&entry.id, Some(&entry));
    (index.upsert_entry(entry), scope)
}

/// Removes an entry from the index; returns who it affects and what it may change for them.
fn remove_indexed(index: &mut EntryIndex, id: &EntryId) -> (Affected, Scope) {
    let scope = index.change_scope(id, None);
    (index.remove_entry(id), scope)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Writers build new values before swapping them in, so a panicking writer leaves the last
    // consistent state; keep serving rather than poisoning every call.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn corrupt_td(error: SpiffeIdError) -> DataStoreError {
    DataStoreError::Corrupt {
        field: "trust_domain",
        reason: error.to_string(),
    }
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The system random source failing is not something a server can go on without.
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sigil_spiffe::{JwtAuthority, KeyType, PrivateKey};

    use super::*;

    fn jwt_bundle(kids: &[&str], sequence: u64) -> Bundle {
        let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
        for kid in kids {
            let key = PrivateKey::generate(KeyType::EcP256).unwrap();
            bundle
                .jwt_mut()
                .add_authority(JwtAuthority::new(*kid, key.public_key()).unwrap());
        }
        bundle.set_sequence(Some(sequence));
        bundle
    }

    #[test]
    fn the_served_bundle_is_the_stored_one_once_it_holds_this_ca() {
        // The datastore's bundle holds another server's key and ours: served as it is, with
        // its sequence number (our CA's own counter does not matter).
        let ca = jwt_bundle(&["ours"], 9);
        let mut stored = jwt_bundle(&["theirs"], 4);
        stored
            .jwt_mut()
            .add_authority(ca.jwt().authority("ours").unwrap().clone());
        assert_eq!(served_own(&stored, &ca), stored);
    }

    #[test]
    fn an_unpublished_authority_is_served_under_the_next_sequence_number() {
        // Our CA prepared a key the datastore does not have yet (or could not be written):
        // served anyway, and not under the sequence number of the other content.
        let ca = jwt_bundle(&["ours"], 1);
        let stored = jwt_bundle(&["theirs"], 4);
        let served = served_own(&stored, &ca);
        let mut kids: Vec<&str> = served.jwt().authorities().map(|a| a.key_id()).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ours", "theirs"]);
        assert_eq!(served.sequence(), Some(5));
    }
}
