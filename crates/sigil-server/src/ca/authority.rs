//! The trust domain's signing authorities and their rotation: an X.509 CA and a JWT signing
//! key, each moving through prepared → active → old.
//!
//! Rules (issue 3 item 3; SPIRE's model, spire-notes §2.5):
//! - The next authority is **prepared** once the active one has lived half its lifetime, and
//!   it enters the bundle at once, so agents and federated peers learn it before it signs
//!   anything (SPIFFE Federation: publish new keys before use).
//! - It is **activated** when a sixth of the active one's lifetime is left. The previous one
//!   becomes **old**: it signs nothing, but stays in the bundle until it expires, since SVIDs it
//!   signed are still in use.
//! - Every change of the bundle's content bumps `spiffe_sequence`.
//! - No SVID outlives its authority: lifetimes are cut to the authority's end, and the result
//!   says so, for the caller to log.
//!
//! Everything here is a function of `now`, which the caller passes: the rotation cycle is
//! tested with a forced clock. The state persists as a journal (JSON bytes) that the server
//! keeps in its datastore; the keys stay in the [`KeyManager`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sigil_spiffe::jwt::{self, JwtError, JwtSvidParams, PrivateKeySigner};
use sigil_spiffe::x509::{CaParams, IssuedX509Svid, SvidParams, X509Authority, X509SvidError};
use sigil_spiffe::{
    Bundle, BundleDocumentError, JwtAuthority, JwtBundle, JwtSvid, KeyType, PrivateKey, PublicKey,
    SpiffeId, TrustDomain,
};

use super::key_manager::{KeyId, KeyManager, KeyManagerError};
use crate::datastore::PublishedAuthority;

/// How far back SVIDs are dated, for clocks that run a little behind ours.
const BACKDATE: Duration = Duration::from_secs(10);

/// The journal format this build writes and reads.
const JOURNAL_VERSION: u32 = 1;

/// Why the CA could not start, rotate or sign.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The key manager failed.
    #[error(transparent)]
    KeyManager(#[from] KeyManagerError),
    /// Creating or using an X.509 authority failed.
    #[error("x509 authority: {0}")]
    X509(#[from] X509SvidError),
    /// Creating a JWT signer or minting failed.
    #[error("jwt authority: {0}")]
    Jwt(#[from] JwtError),
    /// The journal could not be read.
    #[error("ca journal is unreadable: {0}")]
    Journal(String),
    /// The journal names a key the key manager no longer has.
    #[error("ca journal names key {0} but the key manager does not have it")]
    MissingKey(KeyId),
    /// No authority can sign at this time (all expired and none could be made).
    #[error("no active {0} authority")]
    NoActiveAuthority(&'static str),
}

impl From<BundleDocumentError> for CaError {
    fn from(error: BundleDocumentError) -> Self {
        Self::Journal(error.to_string())
    }
}

/// Where an authority is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    /// In the bundle, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// In the bundle until it expires, no longer signing.
    Old,
}

/// What a rotation step did, for the caller to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaEvent {
    /// A new X.509 CA was created and published in the bundle.
    X509Prepared {
        /// Its end of validity.
        not_after: SystemTime,
    },
    /// The prepared X.509 CA now signs.
    X509Activated {
        /// Its end of validity.
        not_after: SystemTime,
    },
    /// An old X.509 CA expired and left the bundle.
    X509Retired,
    /// A new JWT key was created and published in the bundle.
    JwtPrepared {
        /// Its key ID.
        kid: String,
    },
    /// The prepared JWT key now signs.
    JwtActivated {
        /// Its key ID.
        kid: String,
    },
    /// An old JWT key expired and left the bundle.
    JwtRetired {
        /// Its key ID.
        kid: String,
    },
    /// The next authorities are due to sign, but the bundle holding them has not reached the
    /// datastore yet (other servers, and their agents, would not trust them): the active ones
    /// go on signing while they are valid.
    ActivationAwaitsPublication,
}

/// What the CA is configured with.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Key type of X.509 CAs and JWT keys.
    pub key_type: KeyType,
    /// Lifetime of each X.509 CA and JWT key.
    pub ttl: Duration,
}

/// An upstream CA that signs our intermediate, and the root it chains to (which goes in the
/// bundle instead of our own CA certificates).
#[derive(Clone)]
pub struct Upstream {
    /// The upstream CA, able to sign.
    pub authority: Arc<X509Authority>,
    /// The root certificate to publish.
    pub root: CertificateDer<'static>,
}

struct X509Slot {
    key_id: KeyId,
    status: SlotStatus,
    /// The CA certificate followed by any upstream intermediates.
    chain: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
    /// Present while the slot can sign (prepared or active).
    authority: Option<Arc<X509Authority>>,
}

struct JwtSlot {
    key_id: KeyId,
    status: SlotStatus,
    kid: String,
    public_key: PublicKey,
    not_before: SystemTime,
    not_after: SystemTime,
    /// Present while the slot can sign (prepared or active).
    signer: Option<Arc<PrivateKeySigner>>,
}

/// The CA of one trust domain: X.509 and JWT authorities and their rotation.
pub struct CertificateAuthority {
    settings: CaSettings,
    key_manager: Arc<dyn KeyManager>,
    upstream: Option<Upstream>,
    x509: Vec<X509Slot>,
    jwt: Vec<JwtSlot>,
    sequence: u64,
    /// Whether an authority signs only once the bundle holding it is published (several
    /// servers on one datastore), and the newest sequence published.
    publication: Option<u64>,
}

impl CertificateAuthority {
    /// Starts the CA: resumes the authorities of `journal` when given, then rotates to `now`
    /// (which creates the first authorities of a new server).
    pub fn start(
        settings: CaSettings,
        key_manager: Arc<dyn KeyManager>,
        upstream: Option<Upstream>,
        journal: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<(Self, Vec<CaEvent>), CaError> {
        let mut ca = Self {
            settings,
            key_manager,
            upstream,
            x509: Vec::new(),
            jwt: Vec::new(),
            sequence: 0,
            publication: None,
        };
        if let Some(journal) = journal {
            ca.restore(journal)?;
        }
        let events = ca.rotate(now)?;
        Ok((ca, events))
    }

    /// Moves every authority along its life at `now`. Call it periodically (every few seconds);
    /// it does nothing when nothing is due.
    pub fn rotate(&mut self, now: SystemTime) -> Result<Vec<CaEvent>, CaError> {
        let mut events = Vec::new();

        // Closures borrow only the fields they use, so the slots can be borrowed mutably.
        let gate = match self.publication {
            None => Gate::Off,
            Some(published) if published >= self.sequence => Gate::Published,
            Some(_) => Gate::Unpublished,
        };
        let key_id = next_key_id("x509-ca", self.x509.iter().map(|s| &s.key_id))?;
        let x509 = advance(&mut self.x509, now, gate, || {
            new_x509_slot(
                &self.settings,
                self.key_manager.as_ref(),
                self.upstream.as_ref(),
                key_id,
                now,
            )
        })?;
        events.extend(x509.retired.iter().map(|_| CaEvent::X509Retired));
        if x509.prepared
            && let Some(slot) = newest(&self.x509, x509.activated)
        {
            events.push(CaEvent::X509Prepared {
                not_after: slot.not_after,
            });
        }
        if x509.activated
            && let Some(slot) = newest(&self.x509, true)
        {
            events.push(CaEvent::X509Activated {
                not_after: slot.not_after,
            });
        }

        let key_id = next_key_id("jwt", self.jwt.iter().map(|s| &s.key_id))?;
        let jwt = advance(&mut self.jwt, now, gate, || {
            new_jwt_slot(&self.settings, self.key_manager.as_ref(), key_id, now)
        })?;
        events.extend(
            jwt.retired
                .iter()
                .map(|s| CaEvent::JwtRetired { kid: s.kid.clone() }),
        );
        if jwt.prepared
            && let Some(slot) = newest(&self.jwt, jwt.activated)
        {
            events.push(CaEvent::JwtPrepared {
                kid: slot.kid.clone(),
            });
        }
        if jwt.activated
            && let Some(slot) = newest(&self.jwt, true)
        {
            events.push(CaEvent::JwtActivated {
                kid: slot.kid.clone(),
            });
        }

        if x509.waiting || jwt.waiting {
            events.push(CaEvent::ActivationAwaitsPublication);
        }
        // Activation moves nothing in or out of the bundle; preparing and retiring do.
        if x509.changed_bundle() || jwt.changed_bundle() {
            self.sequence += 1;
        }
        Ok(events)
    }

    /// The trust bundle: every prepared, active and unexpired old authority.
    pub fn bundle(&self) -> Bundle {
        let mut bundle = Bundle::new(self.settings.trust_domain.clone());
        match &self.upstream {
            Some(upstream) => bundle.x509_mut().add_authority(upstream.root.clone()),
            None => {
                for slot in &self.x509 {
                    if let Some(cert) = slot.chain.first() {
                        bundle.x509_mut().add_authority(cert.clone());
                    }
                }
            }
        }
        for slot in &self.jwt {
            // A kid is never empty: we generate it.
            if let Ok(authority) = JwtAuthority::new(slot.kid.clone(), slot.public_key.clone()) {
                bundle.jwt_mut().add_authority(authority);
            }
        }
        bundle.set_sequence(Some(self.sequence));
        bundle
    }

    /// What this CA contributes to the trust domain's bundle (the authorities of
    /// [`Self::bundle`]), each with the end of its validity: several servers on one
    /// datastore publish theirs, and the bundle is the union.
    pub fn published(&self) -> Vec<PublishedAuthority> {
        let mut published = Vec::new();
        match &self.upstream {
            Some(upstream) => {
                // The root outlives our intermediates; when it cannot be read, it stays as
                // long as the newest of them.
                let not_after = validity(Some(&upstream.root)).map_or_else(
                    |_| {
                        self.x509
                            .iter()
                            .map(|s| s.not_after)
                            .max()
                            .unwrap_or(UNIX_EPOCH)
                    },
                    |(_, not_after)| not_after,
                );
                published.push(PublishedAuthority::X509 {
                    certificate: upstream.root.clone(),
                    not_after: unix(not_after),
                });
            }
            None => {
                for slot in &self.x509 {
                    if let Some(cert) = slot.chain.first() {
                        published.push(PublishedAuthority::X509 {
                            certificate: cert.clone(),
                            not_after: unix(slot.not_after),
                        });
                    }
                }
            }
        }
        for slot in &self.jwt {
            if let Ok(authority) = JwtAuthority::new(slot.kid.clone(), slot.public_key.clone()) {
                published.push(PublishedAuthority::Jwt {
                    authority,
                    not_after: unix(slot.not_after),
                });
            }
        }
        published
    }

    /// The bundle's `spiffe_sequence`.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// From now on a prepared authority is activated only once the bundle holding it has
    /// been published ([`CertificateAuthority::mark_published`]), while the active one is
    /// valid: servers sharing a datastore serve each other's authorities from it, so an
    /// authority that never reached it (the database down from preparation to activation)
    /// would sign SVIDs that the other servers' agents reject. The bundle as it is now counts
    /// as published (the caller has just written it).
    pub fn require_publication(&mut self) {
        self.publication = Some(self.sequence);
    }

    /// The bundle of `sequence` (or a later one) is in the datastore.
    pub fn mark_published(&mut self, sequence: u64) {
        if let Some(published) = &mut self.publication {
            *published = (*published).max(sequence);
        }
    }

    /// Makes the bundle's sequence follow `previous` (that of a bundle this CA replaces), so
    /// that peers never see it go back.
    pub fn follow_sequence(&mut self, previous: u64) {
        self.sequence = self.sequence.max(previous.saturating_add(1));
    }

    /// The X.509 CA that signs now.
    pub fn active_x509(&self) -> Result<&Arc<X509Authority>, CaError> {
        self.x509
            .iter()
            .find(|s| s.status == SlotStatus::Active)
            .and_then(|s| s.authority.as_ref())
            .ok_or(CaError::NoActiveAuthority("x509"))
    }

    /// Signs an X.509-SVID for a CSR, valid from `now` (backdated a little) for `ttl`, cut to
    /// the CA's own end ([`IssuedX509Svid::capped`] says so).
    pub fn sign_x509_svid(
        &self,
        csr_der: &[u8],
        spiffe_id: SpiffeId,
        dns_names: Vec<String>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedX509Svid, CaError> {
        let mut params = SvidParams::new(spiffe_id, now - BACKDATE, now + ttl);
        params.dns_names = dns_names;
        Ok(self.active_x509()?.sign_csr(csr_der, &params)?)
    }

    /// Mints a JWT-SVID with the active JWT key, valid for `ttl` but never past the key's own
    /// end. Returns the token and whether its lifetime was cut.
    pub fn mint_jwt_svid(
        &self,
        spiffe_id: SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(JwtSvid, bool), CaError> {
        self.mint_jwt_svid_issued_by(spiffe_id, audience, ttl, now, None)
    }

    /// [`mint_jwt_svid`](Self::mint_jwt_svid), with `issuer` as the `iss` claim when given.
    pub fn mint_jwt_svid_issued_by(
        &self,
        spiffe_id: SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
        issuer: Option<&str>,
    ) -> Result<(JwtSvid, bool), CaError> {
        let slot = self
            .jwt
            .iter()
            .find(|s| s.status == SlotStatus::Active)
            .ok_or(CaError::NoActiveAuthority("jwt"))?;
        let signer = slot
            .signer
            .as_ref()
            .ok_or(CaError::NoActiveAuthority("jwt"))?;
        let wanted = now + ttl;
        let capped = wanted > slot.not_after;
        let expiry = if capped { slot.not_after } else { wanted };
        let mut params = JwtSvidParams::new(spiffe_id, audience.iter().cloned(), now, expiry);
        if let Some(issuer) = issuer {
            params = params.with_issuer(issuer);
        }
        Ok((jwt::mint(signer.as_ref(), params)?, capped))
    }

    /// The state to persist, as JSON bytes.
    pub fn journal(&self) -> Vec<u8> {
        let journal = Journal {
            version: JOURNAL_VERSION,
            sequence: self.sequence,
            x509: self
                .x509
                .iter()
                .map(|s| X509Entry {
                    key_id: s.key_id.as_str().to_owned(),
                    status: s.status,
                    chain: s.chain.iter().map(|c| STANDARD.encode(c)).collect(),
                })
                .collect(),
            jwt: self
                .jwt
                .iter()
                .map(|s| JwtEntry {
                    key_id: s.key_id.as_str().to_owned(),
                    status: s.status,
                    kid: s.kid.clone(),
                    not_before: unix(s.not_before),
                    not_after: unix(s.not_after),
                })
                .collect(),
            jwt_keys: self.jwt_public_keys().to_jwks(),
        };
        // Serializing plain strings, numbers and vectors cannot fail.
        serde_json::to_vec(&journal).unwrap_or_default()
    }

    fn jwt_public_keys(&self) -> JwtBundle {
        let mut keys = JwtBundle::new(self.settings.trust_domain.clone());
        for slot in &self.jwt {
            if let Ok(authority) = JwtAuthority::new(slot.kid.clone(), slot.public_key.clone()) {
                keys.add_authority(authority);
            }
        }
        keys
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), CaError> {
        let journal: Journal =
            serde_json::from_slice(bytes).map_err(|e| CaError::Journal(e.to_string()))?;
        if journal.version != JOURNAL_VERSION {
            return Err(CaError::Journal(format!(
                "version {} is not the version {JOURNAL_VERSION} this build knows",
                journal.version
            )));
        }
        self.sequence = journal.sequence;
        for entry in journal.x509 {
            let key_id = KeyId::new(&entry.key_id)?;
            let chain = entry
                .chain
                .iter()
                .map(|c| STANDARD.decode(c).map(CertificateDer::from))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CaError::Journal(e.to_string()))?;
            let authority = match entry.status {
                SlotStatus::Old => None,
                _ => {
                    let key = self
                        .key_manager
                        .get(&key_id)?
                        .ok_or_else(|| CaError::MissingKey(key_id.clone()))?;
                    Some(Arc::new(X509Authority::from_certificate(
                        key,
                        chain.clone(),
                    )?))
                }
            };
            let (not_before, not_after) = match &authority {
                Some(a) => (a.not_before(), a.not_after()),
                None => validity(chain.first())?,
            };
            self.x509.push(X509Slot {
                key_id,
                status: entry.status,
                chain,
                not_before,
                not_after,
                authority,
            });
        }
        let keys = JwtBundle::from_jwks(
            self.settings.trust_domain.clone(),
            journal.jwt_keys.as_bytes(),
        )?;
        for entry in journal.jwt {
            let key_id = KeyId::new(&entry.key_id)?;
            let public_key = keys
                .authority(&entry.kid)
                .ok_or_else(|| CaError::Journal(format!("no public key for kid {}", entry.kid)))?
                .public_key()
                .clone();
            let signer = match entry.status {
                SlotStatus::Old => None,
                _ => {
                    let key = self
                        .key_manager
                        .get(&key_id)?
                        .ok_or_else(|| CaError::MissingKey(key_id.clone()))?;
                    if key.public_key() != public_key {
                        return Err(CaError::Journal(format!(
                            "key {key_id} no longer matches jwt key {}",
                            entry.kid
                        )));
                    }
                    Some(Arc::new(jwt_signer(&entry.kid, &key)?))
                }
            };
            self.jwt.push(JwtSlot {
                key_id,
                status: entry.status,
                kid: entry.kid,
                public_key,
                not_before: from_unix(entry.not_before),
                not_after: from_unix(entry.not_after),
                signer,
            });
        }
        Ok(())
    }
}

/// A new prepared X.509 CA valid over `[now, now + ttl]` (cut to the upstream's end).
fn new_x509_slot(
    settings: &CaSettings,
    key_manager: &dyn KeyManager,
    upstream: Option<&Upstream>,
    key_id: KeyId,
    now: SystemTime,
) -> Result<X509Slot, CaError> {
    let key = key_manager.generate(&key_id, settings.key_type)?;
    let params = CaParams::new(
        settings.trust_domain.clone(),
        now - BACKDATE,
        now + settings.ttl,
    );
    let authority = match upstream {
        Some(upstream) => X509Authority::intermediate(key, &params, &upstream.authority)?,
        None => X509Authority::self_signed(key, &params)?,
    };
    let mut chain = vec![authority.certificate().clone()];
    chain.extend(authority.chain().iter().skip(1).cloned());
    Ok(X509Slot {
        key_id,
        status: SlotStatus::Prepared,
        chain,
        not_before: authority.not_before(),
        not_after: authority.not_after(),
        authority: Some(Arc::new(authority)),
    })
}

/// A new prepared JWT key valid over `[now, now + ttl]`.
fn new_jwt_slot(
    settings: &CaSettings,
    key_manager: &dyn KeyManager,
    key_id: KeyId,
    now: SystemTime,
) -> Result<JwtSlot, CaError> {
    let key = key_manager.generate(&key_id, settings.key_type)?;
    let kid = random_kid();
    let signer = jwt_signer(&kid, &key)?;
    Ok(JwtSlot {
        key_id,
        status: SlotStatus::Prepared,
        public_key: key.public_key(),
        kid,
        not_before: now,
        not_after: now + settings.ttl,
        signer: Some(Arc::new(signer)),
    })
}

/// The slot a rotation step just started signing with (`active`), or just prepared.
fn newest<S: Slot>(slots: &[S], active: bool) -> Option<&S> {
    let wanted = if active {
        SlotStatus::Active
    } else {
        SlotStatus::Prepared
    };
    slots.iter().find(|s| s.status() == wanted)
}

/// An authority slot of either kind, as rotation sees it.
trait Slot {
    fn status(&self) -> SlotStatus;
    fn validity(&self) -> (SystemTime, SystemTime);
    /// Demotes an active slot to old and drops its signer.
    fn retire_from_signing(&mut self);
    fn activate(&mut self);
}

impl Slot for X509Slot {
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn validity(&self) -> (SystemTime, SystemTime) {
        (self.not_before, self.not_after)
    }
    fn retire_from_signing(&mut self) {
        self.status = SlotStatus::Old;
        self.authority = None;
    }
    fn activate(&mut self) {
        self.status = SlotStatus::Active;
    }
}

impl Slot for JwtSlot {
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn validity(&self) -> (SystemTime, SystemTime) {
        (self.not_before, self.not_after)
    }
    fn retire_from_signing(&mut self) {
        self.status = SlotStatus::Old;
        self.signer = None;
    }
    fn activate(&mut self) {
        self.status = SlotStatus::Active;
    }
}

/// What one rotation step did to the slots of one kind.
/// Whether activation waits for the bundle's publication.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// One server: what it serves is what it holds.
    Off,
    /// Every change of the bundle so far is published.
    Published,
    /// The latest change is not published yet.
    Unpublished,
}

struct Advance<S> {
    /// Slots that expired and left the bundle.
    retired: Vec<S>,
    /// A slot was created and published: the prepared one, or the active one when it was
    /// created and activated at once.
    prepared: bool,
    /// The active slot changed.
    activated: bool,
    /// Activation was due but waits for the bundle's publication.
    waiting: bool,
}

impl<S> Advance<S> {
    fn changed_bundle(&self) -> bool {
        !self.retired.is_empty() || self.prepared
    }
}

/// One rotation step for one kind of authority: retire what expired, activate the prepared
/// slot (or a fresh one, when there is none) once the active one is due, prepare the next one
/// once half the active one's life has passed. Under a publication [`Gate`], a valid active
/// slot keeps signing past its due time until the next one is published: that one is prepared
/// if need be, and activated on a later step.
fn advance<S: Slot>(
    slots: &mut Vec<S>,
    now: SystemTime,
    gate: Gate,
    make: impl FnOnce() -> Result<S, CaError>,
) -> Result<Advance<S>, CaError> {
    let mut out = Advance {
        retired: retire_expired(slots, now),
        prepared: false,
        activated: false,
        waiting: false,
    };
    let active = slots.iter().position(|s| s.status() == SlotStatus::Active);
    let prepared = slots
        .iter()
        .position(|s| s.status() == SlotStatus::Prepared);
    let due = active.is_none_or(|i| {
        let (not_before, not_after) = slots[i].validity();
        activation_due(not_before, not_after, now)
    });
    // A slot prepared on this step is not published yet either.
    let wait = match gate {
        Gate::Off => false,
        Gate::Published => prepared.is_none(),
        Gate::Unpublished => true,
    };
    let active_valid = active.is_some_and(|i| slots[i].validity().1 > now);
    if due && active_valid && wait {
        if prepared.is_none() {
            slots.push(make()?);
            out.prepared = true;
        }
        out.waiting = true;
    } else if due {
        let next = match prepared {
            Some(i) => i,
            None => {
                slots.push(make()?);
                out.prepared = true;
                slots.len() - 1
            }
        };
        for slot in slots.iter_mut() {
            if slot.status() == SlotStatus::Active {
                slot.retire_from_signing();
            }
        }
        slots[next].activate();
        out.activated = true;
        // An active slot that had already expired (a server down for long) goes at once.
        out.retired.extend(retire_expired(slots, now));
    } else if let Some(i) = active
        && prepared.is_none()
    {
        let (not_before, not_after) = slots[i].validity();
        if preparation_due(not_before, not_after, now) {
            slots.push(make()?);
            out.prepared = true;
        }
    }
    Ok(out)
}

/// Removes the slots that no longer sign and have expired, and returns them.
fn retire_expired<S: Slot>(slots: &mut Vec<S>, now: SystemTime) -> Vec<S> {
    let (retired, kept) = std::mem::take(slots)
        .into_iter()
        .partition(|s| s.status() != SlotStatus::Active && s.validity().1 <= now);
    *slots = kept;
    retired
}

/// Prepare once half the lifetime has passed.
fn preparation_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    now >= not_before + lifetime / 2
}

/// Activate the next one when a sixth of the lifetime is left.
fn activation_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    now >= not_after - lifetime / 6
}

/// Slots alternate between two key IDs (`<prefix>-a`, `<prefix>-b`), plus more while several
/// old authorities are still in the bundle. A key ID still held by a slot is never reused.
fn next_key_id<'a>(
    prefix: &str,
    used: impl Iterator<Item = &'a KeyId> + Clone,
) -> Result<KeyId, CaError> {
    let free = (b'a'..=b'z')
        .map(|c| format!("{prefix}-{}", c as char))
        .find(|candidate| !used.clone().any(|id| id.as_str() == candidate))
        .ok_or_else(|| CaError::Journal(format!("every {prefix} key slot is in use")))?;
    Ok(KeyId::new(&free)?)
}

fn jwt_signer(kid: &str, key: &PrivateKey) -> Result<PrivateKeySigner, CaError> {
    // The signer owns its key; the key manager keeps its own copy.
    let copy =
        PrivateKey::from_pkcs8_der(key.pkcs8_der()).map_err(|e| CaError::Journal(e.to_string()))?;
    Ok(PrivateKeySigner::with_default_algorithm(kid, copy)?)
}

fn random_kid() -> String {
    let mut bytes = [0u8; 24];
    // The system random source failing is not recoverable, and a predictable kid would only
    // be a name, not a secret; fall back to the time so the server keeps running.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        bytes[..16].copy_from_slice(
            &SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_be_bytes(),
        );
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

fn validity(cert: Option<&CertificateDer<'_>>) -> Result<(SystemTime, SystemTime), CaError> {
    use x509_parser::prelude::FromDer;
    let cert = cert.ok_or_else(|| CaError::Journal("an x509 slot has no certificate".into()))?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert)
        .map_err(|e| CaError::Journal(e.to_string()))?;
    let validity = parsed.validity();
    Ok((
        from_unix(validity.not_before.timestamp()),
        from_unix(validity.not_after.timestamp()),
    ))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

#[derive(Serialize, Deserialize)]
struct Journal {
    version: u32,
    sequence: u64,
    x509: Vec<X509Entry>,
    jwt: Vec<JwtEntry>,
    /// The public keys of every JWT slot, as a JWKS.
    jwt_keys: String,
}

#[derive(Serialize, Deserialize)]
struct X509Entry {
    key_id: String,
    status: SlotStatus,
    /// Base64 DER: the CA certificate, then upstream intermediates.
    chain: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct JwtEntry {
    key_id: String,
    status: SlotStatus,
    kid: String,
    not_before: i64,
    not_after: i64,
}
