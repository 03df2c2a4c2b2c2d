//! The X.509-SVID cache: keys generated here, CSRs sent to the server in batches, SVIDs
//! re-signed before they age, and the result published to the Workload API as a
//! [`WorkloadView`].
//!
//! An SVID is (re-)signed when its entry first arrives, when the entry changes (new
//! revision), when its chain no longer verifies against the trust domain's bundle (the
//! signing authority changed), and when between 45% and 50% of its lifetime is gone (the
//! jitter spreads the load of many SVIDs signed together). Whenever some SVID is due, every
//! SVID past 40% of its lifetime is re-signed with it: one batch and one Workload API
//! message per rotation round instead of one per SVID (each stream message carries every
//! SVID of its caller, so a message per SVID would cost O(SVIDs²)). The cache holds about
//! `cache_size` SVIDs: those workloads want first ([`Demand`]), then the oldest entries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigil_core::RegistrationEntry;
use sigil_proto::server::v1 as pb;
use sigil_proto::server::v1::svid_client::SvidClient;
use sigil_spiffe::x509::create_csr;
use sigil_spiffe::{
    Bundle, BundleSet, KeyType, PrivateKey, SvidUsage, TrustDomain, X509Svid, verify_chain,
};
use tokio::sync::watch;

use crate::backoff::{Backoff, unit_random};
use crate::demand::{Demand, Wanted};
use crate::identity::now;
use crate::server::ServerChannel;
use crate::sync::Authorized;

/// The most CSRs in one `BatchNewX509SVID` call (the server accepts 1,000).
const BATCH: usize = 500;

/// What the Workload API serves from: the authorized entries, their SVIDs, every known
/// bundle.
#[derive(Clone, Debug, Default)]
pub struct WorkloadView {
    /// The authorized entries that have not expired, oldest first (so a workload's default
    /// SVID does not change when an entry is added).
    pub entries: Vec<Arc<RegistrationEntry>>,
    /// X.509-SVIDs by entry ID; an entry without one is still being signed (or beyond the
    /// cache size).
    pub svids: HashMap<String, Arc<X509Svid>>,
    /// Bundles by trust domain name (ours and federated).
    pub bundles: BTreeMap<String, Bundle>,
    /// Whether the first sync has completed.
    pub synced: bool,
}

impl WorkloadView {
    /// The entries whose selectors are all among `selectors`, oldest first.
    pub fn matching<'a>(
        &'a self,
        selectors: &'a sigil_core::SelectorSet,
    ) -> impl Iterator<Item = &'a Arc<RegistrationEntry>> + 'a {
        self.entries
            .iter()
            .filter(move |entry| entry.selectors.is_subset_of(selectors))
    }
}

struct Cached {
    revision: u64,
    svid: Arc<X509Svid>,
    rotation: Rotation,
}

/// When a cached SVID is re-signed.
#[derive(Clone, Copy, Debug)]
struct Rotation {
    /// From then on it goes along when another SVID is re-signed.
    eligible_at: SystemTime,
    /// It is re-signed then at the latest.
    due_at: SystemTime,
}

/// Keeps the SVIDs of the authorized entries signed and publishes the view.
pub struct SvidCache {
    server: Arc<ServerChannel>,
    trust_domain: TrustDomain,
    key_type: KeyType,
    cache_size: usize,
    cached: HashMap<String, Cached>,
    /// What workloads asked for.
    demand: Arc<Demand>,
    /// The own bundle the cached SVIDs were last checked against.
    checked_against: Option<Bundle>,
    view: watch::Sender<Arc<WorkloadView>>,
}

impl SvidCache {
    /// A cache signing through `channel`, publishing on `view`.
    pub fn new(
        server: Arc<ServerChannel>,
        trust_domain: TrustDomain,
        key_type: KeyType,
        cache_size: usize,
        demand: Arc<Demand>,
        view: watch::Sender<Arc<WorkloadView>>,
    ) -> Self {
        Self {
            server,
            trust_domain,
            key_type,
            cache_size,
            cached: HashMap::new(),
            checked_against: None,
            demand,
            view,
        }
    }

    /// Runs until `shutdown`: follows `authorized`, signs what is due, publishes the view.
    pub async fn run(
        mut self,
        mut authorized: watch::Receiver<Arc<Authorized>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let current = authorized.borrow_and_update().clone();
            let ordered = ordered(&current);
            let due = self.refresh(&current, &ordered);
            if !due.is_empty() && retry_at.is_none_or(|at| at <= tokio::time::Instant::now()) {
                match self.sign(due).await {
                    Ok(()) => {
                        backoff.reset();
                        retry_at = None;
                    }
                    Err(status) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            "signing workload SVIDs failed: {}: {}; retrying in {delay:?}",
                            status.code(),
                            status.message()
                        );
                        retry_at = Some(tokio::time::Instant::now() + delay);
                    }
                }
            }
            self.publish(&current, &ordered);
            let wake = self.next_rotation().map(|at| {
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::Instant::now() + wait
            });
            let wake = match (wake, retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = authorized.changed() => if changed.is_err() { return },
                () = self.demand.grown() => {}
                () = sleep => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Drops what no longer applies; returns the entries to sign now, oldest first.
    fn refresh(
        &mut self,
        authorized: &Authorized,
        ordered: &[&Arc<RegistrationEntry>],
    ) -> Vec<Arc<RegistrationEntry>> {
        let demand = self.demand.wanted();
        let wanted = wanted(ordered, self.cache_size, &demand);
        let keep: HashMap<&str, u64> = wanted
            .iter()
            .map(|entry| (entry.id.as_str(), entry.revision))
            .collect();
        self.cached
            .retain(|id, cached| keep.get(id.as_str()) == Some(&cached.revision));
        let own = authorized.bundles.get(self.trust_domain.as_str());
        if own != self.checked_against.as_ref() {
            // The bundle changed: SVIDs whose authority left it are re-signed. Checked only on
            // a bundle change, since each check is a signature verification per SVID.
            let own_set: BundleSet = own.cloned().into_iter().collect();
            let now = now();
            self.cached.retain(|_, cached| {
                !own_set.is_empty()
                    && verify_chain(
                        cached.svid.cert_chain(),
                        &own_set,
                        now,
                        SvidUsage::ServerAuth,
                    )
                    .is_ok()
            });
            self.checked_against = own.cloned();
        }
        due(&wanted, SystemTime::now(), |id| {
            self.cached.get(id).map(|cached| cached.rotation)
        })
    }

    async fn sign(&mut self, due: Vec<Arc<RegistrationEntry>>) -> Result<(), tonic::Status> {
        for chunk in due.chunks(BATCH) {
            let chunk = chunk.to_vec();
            let key_type = self.key_type;
            // Key generation and CSR signing are CPU work: off the async threads.
            let prepared = tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .filter_map(|entry| {
                        let key = PrivateKey::generate(key_type).ok()?;
                        let csr = create_csr(&key, &entry.spiffe_id).ok()?;
                        Some((entry, key, csr))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|_| tonic::Status::internal("key generation task failed"))?;
            let request = pb::BatchNewX509svidRequest {
                params: prepared
                    .iter()
                    .map(|(entry, _, csr)| pb::batch_new_x509svid_request::Params {
                        entry_id: entry.id.as_str().to_owned(),
                        csr: csr.clone(),
                    })
                    .collect(),
            };
            let answer = SvidClient::new(self.server.get())
                .batch_new_x509svid(request)
                .await?
                .into_inner();
            if answer.results.len() != prepared.len() {
                return Err(tonic::Status::internal(
                    "the server answered a different number of results than CSRs sent",
                ));
            }
            for ((entry, key, _), result) in prepared.into_iter().zip(answer.results) {
                let code = result.status.as_ref().map_or(0, |s| s.code);
                if code != 0 {
                    let message = result.status.map(|s| s.message).unwrap_or_default();
                    tracing::warn!(
                        entry = entry.id.as_str(),
                        code,
                        "SVID not signed: {message}"
                    );
                    continue;
                }
                let Some(svid) = result.svid else { continue };
                let chain = svid.cert_chain.into_iter().map(Into::into).collect();
                match X509Svid::new(chain, key) {
                    Ok(svid) if svid.spiffe_id() == &entry.spiffe_id => {
                        let rotation = rotation(&svid);
                        tracing::debug!(
                            entry = entry.id.as_str(),
                            spiffe_id = %entry.spiffe_id,
                            "SVID signed"
                        );
                        self.cached.insert(
                            entry.id.as_str().to_owned(),
                            Cached {
                                revision: entry.revision,
                                svid: Arc::new(svid),
                                rotation,
                            },
                        );
                    }
                    Ok(svid) => tracing::warn!(
                        entry = entry.id.as_str(),
                        "the server signed {} for an entry of {}; dropped",
                        svid.spiffe_id(),
                        entry.spiffe_id
                    ),
                    Err(error) => tracing::warn!(
                        entry = entry.id.as_str(),
                        "the server returned an unusable SVID: {error}"
                    ),
                }
            }
        }
        Ok(())
    }

    fn publish(&self, authorized: &Authorized, ordered: &[&Arc<RegistrationEntry>]) {
        let svids: HashMap<String, Arc<X509Svid>> = self
            .cached
            .iter()
            .map(|(id, cached)| (id.clone(), cached.svid.clone()))
            .collect();
        let unchanged = {
            let view = self.view.borrow();
            view.synced == authorized.synced
                && view.bundles == authorized.bundles
                && view.entries.len() == ordered.len()
                // Unchanged entries are the same allocations from one sync state to the next.
                && view.entries.iter().zip(ordered).all(|(a, b)| Arc::ptr_eq(a, b))
                && view.svids.len() == svids.len()
                && view
                    .svids
                    .iter()
                    .all(|(id, svid)| svids.get(id).is_some_and(|other| Arc::ptr_eq(svid, other)))
        };
        if !unchanged {
            self.view.send_replace(Arc::new(WorkloadView {
                entries: ordered.iter().map(|entry| Arc::clone(entry)).collect(),
                svids,
                bundles: authorized.bundles.clone(),
                synced: authorized.synced,
            }));
        }
    }

    fn next_rotation(&self) -> Option<SystemTime> {
        self.cached
            .values()
            .map(|cached| cached.rotation.due_at)
            .min()
    }
}

/// The entries the cache signs, oldest first: every entry an open stream sees (even beyond
/// `cache_size`: a soft limit, as SPIRE's), then recently requested ones, then the oldest
/// others, up to `cache_size`.
fn wanted<'a>(
    ordered: &[&'a Arc<RegistrationEntry>],
    cache_size: usize,
    demand: &Wanted,
) -> Vec<&'a Arc<RegistrationEntry>> {
    if ordered.len() <= cache_size {
        return ordered.to_vec();
    }
    let mut chosen: HashSet<&str> = ordered
        .iter()
        .map(|entry| entry.id.as_str())
        .filter(|id| demand.subscribed.contains(*id))
        .collect();
    let known: HashSet<&str> = ordered.iter().map(|entry| entry.id.as_str()).collect();
    for id in &demand.recent {
        if chosen.len() >= cache_size {
            break;
        }
        if known.contains(id.as_str()) {
            chosen.insert(id.as_str());
        }
    }
    for entry in ordered {
        if chosen.len() >= cache_size {
            break;
        }
        chosen.insert(entry.id.as_str());
    }
    ordered
        .iter()
        .filter(|entry| chosen.contains(entry.id.as_str()))
        .copied()
        .collect()
}

/// The entries of `wanted` to sign at `now`: none unless one has no SVID or its SVID is
/// due; then it and every one whose SVID is eligible, so a round of rotations is one batch.
fn due(
    wanted: &[&Arc<RegistrationEntry>],
    now: SystemTime,
    rotation: impl Fn(&str) -> Option<Rotation>,
) -> Vec<Arc<RegistrationEntry>> {
    let rotations: Vec<Option<Rotation>> = wanted
        .iter()
        .map(|entry| rotation(entry.id.as_str()))
        .collect();
    let any_due = rotations.iter().any(|r| r.is_none_or(|r| r.due_at <= now));
    if !any_due {
        return Vec::new();
    }
    wanted
        .iter()
        .zip(rotations)
        .filter(|(_, r)| r.is_none_or(|r| r.eligible_at <= now))
        .map(|(entry, _)| Arc::clone(entry))
        .collect()
}

/// The entries that have not expired, oldest first.
fn ordered(authorized: &Authorized) -> Vec<&Arc<RegistrationEntry>> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut entries: Vec<&Arc<RegistrationEntry>> = authorized
        .entries
        .values()
        .filter(|entry| entry.expires_at.is_none_or(|at| at > now))
        .collect();
    entries.sort_by(|a, b| (a.created_at, a.id.as_str()).cmp(&(b.created_at, b.id.as_str())));
    entries
}

/// When to re-sign: after 45% to 50% of the lifetime (random in that range), or along with
/// another after 40%.
fn rotation(svid: &X509Svid) -> Rotation {
    let not_after = svid.not_after();
    let not_before = not_before(svid).unwrap_or_else(SystemTime::now);
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    Rotation {
        eligible_at: not_before + lifetime.mul_f64(0.4),
        due_at: not_before + lifetime.mul_f64(0.5 - 0.05 * unit_random()),
    }
}

fn not_before(svid: &X509Svid) -> Option<SystemTime> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(svid.leaf()).ok()?;
    let seconds = u64::try_from(cert.validity().not_before.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sigil_core::{EntryId, SelectorSet};

    use super::*;

    fn authorized(count: i64) -> Authorized {
        let mut authorized = Authorized::default();
        for n in 0..count {
            let id: EntryId = format!("entry-{n}").parse().unwrap();
            let entry = RegistrationEntry {
                id: id.clone(),
                spiffe_id: format!("spiffe://example.org/w{n}").parse().unwrap(),
                parent_id: "spiffe://example.org/sigil/agent/x".parse().unwrap(),
                selectors: SelectorSet::new(),
                x509_svid_ttl: None,
                jwt_svid_ttl: None,
                dns_names: Vec::new(),
                federates_with: Vec::new(),
                admin: false,
                downstream: false,
                hint: String::new(),
                expires_at: (n == 0).then_some(1),
                revision: 1,
                created_at: 1000 - n,
            };
            authorized
                .entries
                .insert(id.as_str().to_owned(), Arc::new(entry));
        }
        authorized
    }

    fn ids(entries: &[&Arc<RegistrationEntry>]) -> Vec<String> {
        entries.iter().map(|e| e.id.as_str().to_owned()).collect()
    }

    #[test]
    fn the_cache_keeps_the_oldest_entries_and_skips_expired_ones() {
        let authorized = authorized(5);
        // entry-0 expired; the oldest (smallest created_at) are entry-4, entry-3.
        let ordered = ordered(&authorized);
        let chosen = wanted(&ordered, 2, &Wanted::default());
        assert_eq!(ids(&chosen), ["entry-4", "entry-3"]);
        assert_eq!(wanted(&ordered, 10, &Wanted::default()).len(), 4);
    }

    #[test]
    fn a_due_svid_takes_the_eligible_ones_along_and_nothing_is_signed_early_alone() {
        let authorized = authorized(5);
        let ordered = ordered(&authorized);
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        // entry-4 due at 150, entry-3 eligible from 120, entry-2 from 200, entry-1 at 300.
        let rotations: HashMap<&str, Rotation> = [
            ("entry-4", (100, 150)),
            ("entry-3", (120, 160)),
            ("entry-2", (200, 250)),
            ("entry-1", (110, 300)),
        ]
        .into_iter()
        .map(|(id, (eligible, due))| {
            let rotation = Rotation {
                eligible_at: t(eligible),
                due_at: t(due),
            };
            (id, rotation)
        })
        .collect();
        let at = |now| {
            ids(&due(&ordered, t(now), |id| rotations.get(id).copied())
                .iter()
                .collect::<Vec<_>>())
        };
        // Eligible but none due: nothing.
        assert!(at(140).is_empty());
        // entry-4 due: entry-3 and entry-1 (eligible) go along, entry-2 (not yet) does not.
        assert_eq!(at(150), ["entry-4", "entry-3", "entry-1"]);
        // An entry without an SVID is due at once and takes the eligible ones along.
        let mut without = rotations.clone();
        without.remove("entry-2");
        let signed = due(&ordered, t(130), |id| without.get(id).copied());
        assert_eq!(
            ids(&signed.iter().collect::<Vec<_>>()),
            ["entry-4", "entry-3", "entry-2", "entry-1"]
        );
        let signed = due(&ordered, t(105), |id| without.get(id).copied());
        assert_eq!(
            ids(&signed.iter().collect::<Vec<_>>()),
            ["entry-4", "entry-2"]
        );
    }

    #[test]
    fn entries_workloads_want_are_signed_beyond_the_cache_size() {
        let authorized = authorized(6);
        let demand = Wanted {
            subscribed: ["entry-1".to_owned(), "entry-2".to_owned()].into(),
            recent: vec!["entry-3".to_owned(), "entry-0".to_owned()],
        };
        // Subscribed entries always (a soft limit), then recent ones while room is left;
        // entry-0 has expired and is never signed.
        let ordered = ordered(&authorized);
        let chosen = wanted(&ordered, 2, &demand);
        assert_eq!(ids(&chosen), ["entry-2", "entry-1"]);
        let chosen = wanted(&ordered, 4, &demand);
        assert_eq!(ids(&chosen), ["entry-5", "entry-3", "entry-2", "entry-1"]);
    }
}
