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
//!
//! The work per sync change is proportional to the change: the synced entries are a
//! persistent map, diffed with the last one taken in (shared parts are skipped), and the
//! view, the rotation [`Schedule`] and the SVID map are updated entry by entry. Only an
//! agent with more entries than `cache_size` chooses which to sign by a pass over all of
//! them, and a change of our bundle re-verifies every cached SVID.

use std::collections::{BTreeSet, HashMap, HashSet};
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
use crate::schedule::{Rotation, Schedule};
use crate::server::ServerChannel;
use crate::sync::Authorized;
use crate::view::{OrderKey, WorkloadView};

/// An entry as it was and as it is (`None`: absent).
type Change = (
    Option<Arc<RegistrationEntry>>,
    Option<Arc<RegistrationEntry>>,
);

/// The most CSRs in one `BatchNewX509SVID` call (the server accepts 1,000).
const BATCH: usize = 500;

struct Cached {
    revision: u64,
    svid: Arc<X509Svid>,
    rotation: Rotation,
    key: OrderKey,
}

/// What the cache knows, apart from the network: the entries as last taken in, the view
/// built from them, the cached SVIDs and when each is re-signed.
#[derive(Default)]
struct Book {
    /// Our trust domain's name: its bundle is what the SVIDs chain to.
    trust_domain: String,
    cache_size: usize,
    /// The synced entries last taken in, to diff the next ones with.
    seen: imbl::OrdMap<String, Arc<RegistrationEntry>>,
    /// What the Workload API is shown (changed in place, published by a cheap clone).
    current: WorkloadView,
    /// Whether `current` changed since it was published.
    unpublished: bool,
    /// Entries with an expiry time, by that time: they leave the view then.
    expiring: BTreeSet<(i64, OrderKey)>,
    cached: HashMap<String, Cached>,
    schedule: Schedule,
    /// Whether the view had more entries than `cache_size` at the last round.
    over_cache: bool,
    /// The own bundle the cached SVIDs were last checked against.
    checked_against: Option<Bundle>,
}

impl Book {
    fn new(trust_domain: &TrustDomain, cache_size: usize) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            cache_size,
            ..Self::default()
        }
    }

    /// Takes in the synced state: the entries that changed since the last one, the bundles,
    /// whether the first sync is done. `now` is in Unix seconds, for expiry.
    fn take_in(&mut self, authorized: &Authorized, now: i64) {
        if self.current.synced != authorized.synced {
            self.current.synced = authorized.synced;
            self.unpublished = true;
        }
        if self.current.bundles != authorized.bundles {
            self.current.bundles = authorized.bundles.clone();
            self.unpublished = true;
        }
        let before = std::mem::replace(&mut self.seen, authorized.entries.clone());
        // Collected first: the diff borrows both maps. Shared subtrees are not visited.
        let changes: Vec<Change> = before
            .diff(&self.seen)
            .map(|item| match item {
                imbl::ordmap::DiffItem::Add(_, new) => (None, Some(Arc::clone(new))),
                imbl::ordmap::DiffItem::Update { old, new } => {
                    (Some(Arc::clone(old.1)), Some(Arc::clone(new.1)))
                }
                imbl::ordmap::DiffItem::Remove(_, old) => (Some(Arc::clone(old)), None),
            })
            .collect();
        for (old, new) in changes {
            if let Some(old) = old {
                // A changed entry keeps its SVID while its revision stays (checked in add).
                self.remove(&old, new.is_some());
            }
            if let Some(new) = new {
                self.add(new);
            }
        }
        self.expire(now);
        self.check_bundle();
    }

    fn add(&mut self, entry: Arc<RegistrationEntry>) {
        let key = OrderKey::of(&entry);
        if let Some(at) = entry.expires_at {
            self.expiring.insert((at, key.clone()));
        }
        let id = entry.id.as_str();
        match self.cached.get_mut(id) {
            Some(cached) if cached.revision == entry.revision => {
                cached.key = key.clone();
                self.schedule.signed(key.clone(), cached.rotation);
            }
            _ => {
                self.cached.remove(id);
                self.current.svids.remove(id);
                self.schedule.unsigned(key.clone());
            }
        }
        self.current.insert_keyed(key, entry);
        self.unpublished = true;
    }

    /// Takes `old` out of the view; its SVID stays cached when `replaced` (the new version
    /// decides whether it is still good).
    fn remove(&mut self, old: &RegistrationEntry, replaced: bool) {
        let key = OrderKey::of(old);
        if let Some(at) = old.expires_at {
            self.expiring.remove(&(at, key.clone()));
        }
        self.current.remove(&key);
        self.schedule.forget(&key);
        if !replaced {
            self.cached.remove(old.id.as_str());
            self.current.svids.remove(old.id.as_str());
        }
        self.unpublished = true;
    }

    /// Entries whose expiry time has come leave the view, with their SVIDs.
    fn expire(&mut self, now: i64) {
        while let Some((at, key)) = self.expiring.first().cloned() {
            if at > now {
                break;
            }
            self.expiring.pop_first();
            if self.current.remove(&key).is_some() {
                self.schedule.forget(&key);
                self.cached.remove(key.id());
                self.current.svids.remove(key.id());
                self.unpublished = true;
            }
        }
    }

    /// When the own bundle changed, SVIDs whose authority left it are re-signed. Checked only
    /// on a bundle change, since each check is a signature verification per SVID.
    fn check_bundle(&mut self) {
        let own = self.current.bundles.get(&self.trust_domain).cloned();
        if own == self.checked_against {
            return;
        }
        let own_set: BundleSet = own.clone().into_iter().collect();
        let now = now();
        let stale: Vec<String> = self
            .cached
            .iter()
            .filter(|(_, cached)| {
                own_set.is_empty()
                    || verify_chain(
                        cached.svid.cert_chain(),
                        &own_set,
                        now,
                        SvidUsage::ServerAuth,
                    )
                    .is_err()
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(cached) = self.cached.remove(&id) {
                self.current.svids.remove(&id);
                self.schedule.unsigned(cached.key);
                self.unpublished = true;
            }
        }
        self.checked_against = own;
    }

    /// Beyond `cache_size` entries, only the wanted ones are scheduled: those open streams
    /// see, then recently asked ones, then the oldest. A pass over every entry, made only
    /// when the agent has more than `cache_size` of them (or has just come back under it).
    fn choose_wanted(&mut self, demand: impl FnOnce() -> Wanted) {
        let over = self.current.len() > self.cache_size;
        if !over && !self.over_cache {
            return;
        }
        self.over_cache = over;
        let ordered: Vec<Arc<RegistrationEntry>> = self.current.entries().cloned().collect();
        let demand = if over { demand() } else { Wanted::default() };
        let chosen: HashSet<String> = wanted(&ordered, self.cache_size, &demand)
            .iter()
            .map(|entry| entry.id.as_str().to_owned())
            .collect();
        for entry in &ordered {
            let key = OrderKey::of(entry);
            let id = entry.id.as_str();
            if !chosen.contains(id) {
                self.schedule.forget(&key);
                if self.cached.remove(id).is_some() {
                    self.current.svids.remove(id);
                    self.unpublished = true;
                }
            } else if !self.schedule.contains(&key) {
                self.schedule.unsigned(key);
            }
        }
    }

    /// Records a signed SVID for `entry`.
    fn signed(&mut self, entry: &RegistrationEntry, svid: X509Svid) {
        // The entry may have left while its SVID was being signed.
        let key = match self.current.get_key_value(&OrderKey::of(entry)) {
            Some((key, now)) if now.revision == entry.revision => key.clone(),
            _ => return,
        };
        let rotation = rotation(&svid);
        let svid = Arc::new(svid);
        self.schedule.signed(key.clone(), rotation);
        self.current
            .svids
            .insert(entry.id.as_str().to_owned(), Arc::clone(&svid));
        self.cached.insert(
            entry.id.as_str().to_owned(),
            Cached {
                revision: entry.revision,
                svid,
                rotation,
                key,
            },
        );
        self.unpublished = true;
    }

    /// The entries to sign at `now`, oldest first.
    fn due(&self, now: SystemTime) -> Vec<Arc<RegistrationEntry>> {
        self.schedule
            .take_due(now)
            .iter()
            .filter_map(|key| self.current.get(key).cloned())
            .collect()
    }

    /// When the loop must look again by itself: the next rotation or expiry.
    fn next_wake(&self) -> Option<SystemTime> {
        let expiry = self.expiring.first().map(|(at, _)| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(*at).unwrap_or(0) + 1)
        });
        match (self.schedule.next_due(), expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Keeps the SVIDs of the authorized entries signed and publishes the view.
pub struct SvidCache {
    server: Arc<ServerChannel>,
    key_type: KeyType,
    book: Book,
    /// What workloads asked for.
    demand: Arc<Demand>,
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
            key_type,
            book: Book::new(&trust_domain, cache_size),
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
            self.book.take_in(&current, unix_now());
            let demand = &self.demand;
            self.book.choose_wanted(|| demand.wanted());
            let due = self.book.due(SystemTime::now());
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
            if std::mem::take(&mut self.book.unpublished) {
                // Persistent maps: the clone shares everything with the view before.
                self.view.send_replace(Arc::new(self.book.current.clone()));
            }
            let wake = self.book.next_wake().map(|at| {
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
                        tracing::debug!(
                            entry = entry.id.as_str(),
                            spiffe_id = %entry.spiffe_id,
                            "SVID signed"
                        );
                        self.book.signed(&entry, svid);
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
}

/// The entries the cache signs, oldest first, when there are more than `cache_size`: every
/// entry an open stream sees (even beyond `cache_size`: a soft limit, as SPIRE's), then
/// recently requested ones, then the oldest others, up to `cache_size`.
fn wanted<'a>(
    ordered: &'a [Arc<RegistrationEntry>],
    cache_size: usize,
    demand: &Wanted,
) -> Vec<&'a Arc<RegistrationEntry>> {
    if ordered.len() <= cache_size {
        return ordered.iter().collect();
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
        .collect()
}

/// Now in Unix seconds (entry expiry times are).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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

    use super::*;

    /// `entry-N`, older the larger N; `entry-0` expired long ago.
    fn entry(n: i64, revision: u64) -> Arc<RegistrationEntry> {
        let mut entry = (*crate::view::tests::entry(n, 1000 - n, &[])).clone();
        entry.expires_at = (n == 0).then_some(1);
        entry.revision = revision;
        Arc::new(entry)
    }

    fn authorized(count: i64) -> Authorized {
        let mut authorized = Authorized::default();
        for n in 0..count {
            let entry = entry(n, 1);
            authorized
                .entries
                .insert(entry.id.as_str().to_owned(), entry);
        }
        authorized
    }

    fn ids<'a>(entries: impl IntoIterator<Item = &'a Arc<RegistrationEntry>>) -> Vec<String> {
        entries
            .into_iter()
            .map(|e| e.id.as_str().to_owned())
            .collect()
    }

    fn book(cache_size: usize) -> Book {
        Book::new(&TrustDomain::new("example.org").unwrap(), cache_size)
    }

    /// An SVID for `entry` that rotates at `rotation`, without signing anything: the book
    /// only stores it.
    fn svid_for(book: &mut Book, entry: &RegistrationEntry, rotation: Rotation) {
        let key = OrderKey::of(entry);
        book.schedule.signed(key.clone(), rotation);
        book.cached.insert(
            entry.id.as_str().to_owned(),
            Cached {
                revision: entry.revision,
                svid: Arc::new(test_svid(&entry.spiffe_id)),
                rotation,
                key,
            },
        );
    }

    fn test_svid(id: &sigil_spiffe::SpiffeId) -> X509Svid {
        use sigil_spiffe::x509::{CaParams, SvidParams, X509Authority};
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let ca_key = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
        let params = CaParams::new(id.trust_domain(), now, now + hour);
        let ca = X509Authority::self_signed(ca_key, &params).unwrap();
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let csr = create_csr(&key, id).unwrap();
        let issued = ca
            .sign_csr(&csr, &SvidParams::new(id.clone(), now, now + hour))
            .unwrap();
        X509Svid::new(issued.into_cert_chain(), key).unwrap()
    }

    fn later(secs: u64) -> Rotation {
        let at = SystemTime::now() + Duration::from_secs(secs);
        Rotation {
            eligible_at: at,
            due_at: at,
        }
    }

    #[test]
    fn the_view_holds_the_unexpired_entries_oldest_first_and_each_is_scheduled() {
        let mut book = book(10);
        book.take_in(&authorized(5), 100);
        // entry-0 expired (at 1); the oldest (smallest created_at) first.
        assert_eq!(
            ids(book.current.entries()),
            ["entry-4", "entry-3", "entry-2", "entry-1"]
        );
        assert!(!book.current.synced && book.unpublished);
        assert_eq!(ids(&book.due(SystemTime::now())).len(), 4);
    }

    #[test]
    fn a_change_touches_its_entry_only() {
        let mut book = book(10);
        let mut state = authorized(4);
        book.take_in(&state, 100);
        for n in 1..4 {
            let entry = book
                .current
                .entries()
                .find(|e| e.id.as_str() == format!("entry-{n}"));
            let entry = Arc::clone(entry.unwrap());
            svid_for(&mut book, &entry, later(3600));
        }
        assert!(book.due(SystemTime::now()).is_empty());
        // The same entry again (a new allocation, same revision) keeps its SVID; a new
        // revision loses it and is signed again; a removed entry takes its SVID along.
        state.entries.insert("entry-1".to_owned(), entry(1, 1));
        state.entries.insert("entry-2".to_owned(), entry(2, 2));
        state.entries.remove("entry-3");
        book.take_in(&state, 100);
        assert_eq!(ids(&book.due(SystemTime::now())), ["entry-2"]);
        assert!(book.cached.contains_key("entry-1") && !book.cached.contains_key("entry-3"));
        assert_eq!(ids(book.current.entries()), ["entry-2", "entry-1"]);
        // A new entry is signed alone: the others are not eligible yet.
        state.entries.insert("entry-7".to_owned(), entry(7, 1));
        book.take_in(&state, 100);
        assert_eq!(ids(&book.due(SystemTime::now())), ["entry-7", "entry-2"]);
    }

    #[test]
    fn an_entry_leaves_the_view_when_it_expires() {
        let mut book = book(10);
        let mut state = Authorized::default();
        let mut expiring = (*entry(5, 1)).clone();
        expiring.expires_at = Some(500);
        state
            .entries
            .insert("entry-5".to_owned(), Arc::new(expiring));
        book.take_in(&state, 100);
        assert_eq!(book.current.len(), 1);
        assert_eq!(
            book.next_wake(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(501))
        );
        book.take_in(&state, 500);
        assert!(book.current.is_empty());
        assert!(book.due(SystemTime::now()).is_empty());
    }

    #[test]
    fn entries_workloads_want_are_signed_beyond_the_cache_size() {
        let state = authorized(6);
        let demand = || Wanted {
            subscribed: ["entry-1".to_owned(), "entry-2".to_owned()].into(),
            recent: vec!["entry-3".to_owned(), "entry-0".to_owned()],
        };
        // Subscribed entries always (a soft limit), then recent ones while room is left;
        // entry-0 has expired and is never signed.
        let mut small = book(2);
        small.take_in(&state, 100);
        small.choose_wanted(demand);
        assert_eq!(ids(&small.due(SystemTime::now())), ["entry-2", "entry-1"]);
        let mut larger = book(4);
        larger.take_in(&state, 100);
        larger.choose_wanted(demand);
        assert_eq!(
            ids(&larger.due(SystemTime::now())),
            ["entry-5", "entry-3", "entry-2", "entry-1"]
        );
        // Without demand, the oldest.
        let mut plain = book(2);
        plain.take_in(&state, 100);
        plain.choose_wanted(Wanted::default);
        assert_eq!(ids(&plain.due(SystemTime::now())), ["entry-5", "entry-4"]);
        // Back under the cache size, every entry is scheduled again.
        let mut fewer = state.clone();
        for n in 3..6 {
            fewer.entries.remove(&format!("entry-{n}"));
        }
        plain.take_in(&fewer, 100);
        plain.choose_wanted(Wanted::default);
        assert_eq!(ids(&plain.due(SystemTime::now())), ["entry-2", "entry-1"]);
    }
}
