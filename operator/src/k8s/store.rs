//! [`KubeStore`]: profiles and alerts as custom resources on the API server.
//!
//! The pipeline hands the store whole documents as often as it likes; the
//! store decides what reaches the API server and when (the write-behind
//! queue below), so that etcd sees bounded objects at a bounded rate:
//!
//! - **What is written.** A learned profile is created once with its spec
//!   (`source: Learned`) and from then on only its `/status` is applied
//!   (server-side apply, field manager [`FIELD_MANAGER`]); a person's
//!   `spec.mode: Detect` is never overwritten. An alert is created once with
//!   its spec (what happened, evidence, breakdown, recommendation); its
//!   `/status` (count, last seen, pods) is applied on repeats, and its spec
//!   again only when its severity changes (an LLM answer, a rule).
//! - **When.** A profile is written only when its content changed (a digest
//!   that leaves out the one field that moves on every flush,
//!   `status.convergence.nowUnixNanos`, and the size), at most once per flush
//!   interval (with up to 20 % jitter so a thousand profiles do not flush
//!   together), except that a phase change goes out at once. An alert's
//!   first write goes out at once; its repeats at most once per
//!   [`KubeStoreConfig::alert_interval`] (30 s).
//! - **How fast.** Every mutating call takes a token from one bucket
//!   ([`KubeStoreConfig::writes_per_sec`], [`KubeStoreConfig::burst`]),
//!   served in priority order: new alerts, phase changes, alert repeats,
//!   profile flushes. What has no token waits for the next round; newer
//!   versions of a waiting document replace older ones (never two writes of
//!   one object queued).
//! - **Size.** Each profile is measured as the API server stores it before
//!   every write. Past [`kestrel_api::limits::PROFILE_MAX_BYTES`] it is not
//!   written; a merge patch sets `phase: SizeLimited` and a `SizeLimited`
//!   condition instead, so the last good learned copy stays and the API
//!   server never rejects the object.
//! - **Failures.** A failed write stays queued and is retried next round
//!   (a conflict, the API server gone, a timeout), counted in
//!   [`KubeStoreStats`]; nothing the engine learned is dropped for it, and
//!   the engine keeps the whole profile in memory meanwhile.
//!
//! - **Who.** With leader election ([`super::leader`]) only the Lease
//!   holder writes: every round (and each write in it) first checks the
//!   gate.
//!
//! Also here: retention (TTL and caps, resolved alerts first) and people's
//! triage written into an alert's status ([`KubeStore::set_alert_state`]).
//! Every mutating call takes a token, so the budget bounds calls, not jobs.

use super::{api_error, Limiter};
use crate::store::{AlertDocument, Listed, Store, StoreError, StoredProfile};
use kestrel_api::{
    limits, BehaviorProfile, Condition, ConditionStatus, ProfilePhase, ProfileSource,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The one field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "kestrel-operator";

/// Settings of the write-behind queue.
#[derive(Debug, Clone)]
pub struct KubeStoreConfig {
    /// Least time between two writes of one profile (phase changes excepted).
    pub profile_interval: Duration,
    /// Least time between two writes of one alert's repeats.
    pub alert_interval: Duration,
    /// Mutating calls per second, all objects together.
    pub writes_per_sec: f64,
    /// Calls that may go at once.
    pub burst: f64,
    /// How often the queue is looked at.
    pub round: Duration,
    /// Alerts whose last occurrence is older than this are deleted (zero:
    /// kept until a cap needs the room).
    pub alert_ttl: Duration,
    /// Most alerts kept in one namespace (0: no cap); past it the oldest
    /// go, resolved ones first.
    pub max_alerts_per_namespace: usize,
    /// Most alerts kept in the cluster (0: no cap).
    pub max_alerts: usize,
    /// How often the TTL and the caps are applied.
    pub retention_every: Duration,
}

impl Default for KubeStoreConfig {
    fn default() -> Self {
        KubeStoreConfig {
            profile_interval: Duration::from_secs(60),
            alert_interval: Duration::from_secs(30),
            writes_per_sec: 5.0,
            burst: 10.0,
            round: Duration::from_millis(200),
            alert_ttl: Duration::from_secs(7 * 24 * 3600),
            max_alerts_per_namespace: 1_000,
            max_alerts: 10_000,
            retention_every: Duration::from_secs(60),
        }
    }
}

/// What the store has done (read at any time; exported as metrics).
#[derive(Debug, Default)]
pub struct KubeStoreStats {
    /// Mutating calls that succeeded.
    pub writes: AtomicU64,
    /// Mutating calls that failed (retried).
    pub failures: AtomicU64,
    /// Writes the API server refused as invalid (422): not retried, logged
    /// as errors with the server's message.
    pub rejected: AtomicU64,
    /// Profile saves that changed nothing and were not sent.
    pub unchanged: AtomicU64,
    /// Saves folded into a later write of the same object.
    pub coalesced: AtomicU64,
    /// Profile writes held back because the object would pass the size cap.
    pub size_limited: AtomicU64,
    /// Rounds that ended with writes waiting for tokens.
    pub throttled: AtomicU64,
    /// Alerts deleted by the TTL.
    pub alerts_expired: AtomicU64,
    /// Alerts deleted to keep a namespace or the cluster under its cap.
    pub alerts_capped: AtomicU64,
}

impl KubeStoreStats {
    /// The counters as JSON (for the status and `/metrics`).
    pub fn to_json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "writes": g(&self.writes),
            "failures": g(&self.failures),
            "rejected": g(&self.rejected),
            "unchanged": g(&self.unchanged),
            "coalesced": g(&self.coalesced),
            "sizeLimited": g(&self.size_limited),
            "throttled": g(&self.throttled),
            "alertsExpired": g(&self.alerts_expired),
            "alertsCapped": g(&self.alerts_capped),
        })
    }
}

/// `namespace/name` of an object.
type ObjKey = (String, String);

#[derive(Debug, Default)]
struct ProfileSlot {
    /// Waiting to be written.
    pending: Option<BehaviorProfile>,
    /// The pending version changes the phase.
    phase_change: bool,
    /// Digest and phase of what the API server has.
    written_digest: Option<u64>,
    written_phase: Option<ProfilePhase>,
    last_write: Option<Instant>,
    /// Created (or found) on the API server.
    exists: bool,
    /// Jitter of this profile's interval, 0..=0.2.
    jitter: f64,
    /// Marked SizeLimited on the API server.
    size_limited: bool,
    /// When someone deleted the object (a learned profile is created again
    /// only after [`RECREATE_GRACE`], so an export, delete and re-apply as
    /// promoted is not raced).
    deleted_at: Option<Instant>,
}

/// How long a deleted learned profile stays deleted before the operator
/// writes it again (unless a promoted profile took its name meanwhile).
pub const RECREATE_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct AlertSlot {
    pending: Option<AlertDocument>,
    exists: bool,
    written_severity: Option<kestrel_api::Severity>,
    last_write: Option<Instant>,
    /// Last occurrence the API server has (ns since the epoch), and the
    /// triage state: what retention orders by.
    last_seen_ns: u64,
    state: kestrel_api::AlertState,
}

impl AlertSlot {
    /// Records what the API server holds of the alert now.
    fn note_written(&mut self, doc: &AlertDocument) {
        self.exists = true;
        self.written_severity = Some(doc.spec.severity);
        let status = doc.status.as_ref();
        self.last_seen_ns = status
            .and_then(|s| s.last_seen.as_deref())
            .and_then(kestrel_api::parse_rfc3339_ns)
            .unwrap_or(doc.spec.incident.last_seen_ns)
            .max(self.last_seen_ns);
        self.state = status.map(|s| s.state).unwrap_or_default();
    }
}

/// Why retention deletes an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Doom {
    Expired,
    Capped,
}

/// The alerts retention deletes, in order: those past the TTL, then, per
/// namespace and for the cluster, the ones past the cap (resolved first,
/// then the longest quiet). Alerts with a write waiting are never expired.
fn doomed(
    slots: &HashMap<ObjKey, AlertSlot>,
    cfg: &KubeStoreConfig,
    now_ns: u64,
) -> Vec<(ObjKey, Doom)> {
    let ttl = u64::try_from(cfg.alert_ttl.as_nanos()).unwrap_or(u64::MAX);
    let mut out = Vec::new();
    let mut live: Vec<(&ObjKey, &AlertSlot)> = Vec::new();
    for (k, s) in slots.iter().filter(|(_, s)| s.exists) {
        if ttl > 0
            && s.pending.is_none()
            && s.last_seen_ns > 0
            && now_ns.saturating_sub(s.last_seen_ns) > ttl
        {
            out.push((k.clone(), Doom::Expired));
        } else {
            live.push((k, s));
        }
    }
    // the first to go first: resolved, then the longest quiet
    live.sort_by_key(|(k, s)| {
        (
            s.state != kestrel_api::AlertState::Resolved,
            s.last_seen_ns,
            (*k).clone(),
        )
    });
    let mut kept: Vec<&ObjKey> = Vec::new();
    if cfg.max_alerts_per_namespace > 0 {
        let mut per_ns: HashMap<&str, usize> = HashMap::new();
        for (k, _) in &live {
            *per_ns.entry(k.0.as_str()).or_default() += 1;
        }
        for (k, _) in &live {
            let n = per_ns.entry(k.0.as_str()).or_default();
            if *n > cfg.max_alerts_per_namespace {
                *n -= 1;
                out.push(((*k).clone(), Doom::Capped));
            } else {
                kept.push(k);
            }
        }
    } else {
        kept = live.iter().map(|(k, _)| *k).collect();
    }
    if cfg.max_alerts > 0 && kept.len() > cfg.max_alerts {
        let extra = kept.len() - cfg.max_alerts;
        out.extend(
            kept.into_iter()
                .take(extra)
                .map(|k| (k.clone(), Doom::Capped)),
        );
    }
    out
}

#[derive(Default)]
struct Queue {
    profiles: HashMap<ObjKey, ProfileSlot>,
    alerts: HashMap<ObjKey, AlertSlot>,
}

struct Inner {
    client: Client,
    cfg: KubeStoreConfig,
    queue: Mutex<Queue>,
    limiter: Mutex<Limiter>,
    stats: Arc<KubeStoreStats>,
    /// Serialises rounds (the background task and `flush`).
    round: tokio::sync::Mutex<()>,
    /// When retention last ran.
    retained_at: Mutex<Option<Instant>>,
    /// With leader election: `true` while this process holds the Lease;
    /// nothing is written otherwise (see [`super::leader`]).
    gate: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Profiles and alerts as custom resources (see the module docs).
#[derive(Clone)]
pub struct KubeStore {
    inner: Arc<Inner>,
}

fn key_of(meta: &kube::api::ObjectMeta) -> Result<ObjKey, StoreError> {
    match (&meta.namespace, &meta.name) {
        (Some(ns), Some(name)) => Ok((ns.clone(), name.clone())),
        _ => Err(StoreError::Format {
            path: "<object>".into(),
            message: "an object without a namespace or a name cannot be stored".into(),
        }),
    }
}

/// The digest of a profile's content: everything but the fields that move
/// on their own (the convergence clock, the measured size).
fn content_digest(p: &BehaviorProfile) -> u64 {
    let mut p = p.clone();
    if let Some(s) = p.status.as_mut() {
        s.size_bytes = None;
        if let Some(c) = s.convergence.as_mut() {
            c.now_unix_nanos = 0;
        }
    }
    let bytes = serde_json::to_vec(&p).unwrap_or_default();
    kestrel_events::hash::stable_hash(&bytes)
}

fn phase_of(p: &BehaviorProfile) -> Option<ProfilePhase> {
    p.status.as_ref().and_then(|s| s.phase)
}

impl KubeStore {
    /// A store on `client`; its write-behind task runs on the current tokio
    /// runtime until the store's last clone is dropped.
    pub fn new(client: Client, cfg: KubeStoreConfig) -> Self {
        Self::gated(client, cfg, None)
    }

    /// A store that writes only while `gate` reads `true` (the leader's
    /// [`super::Leadership::gate`]); what waits stays queued meanwhile.
    pub fn gated(
        client: Client,
        cfg: KubeStoreConfig,
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Self {
        let limiter = Limiter::new(cfg.writes_per_sec, cfg.burst);
        let inner = Arc::new(Inner {
            client,
            cfg,
            queue: Mutex::new(Queue::default()),
            limiter: Mutex::new(limiter),
            stats: Arc::new(KubeStoreStats::default()),
            round: tokio::sync::Mutex::new(()),
            retained_at: Mutex::new(None),
            gate,
        });
        let weak = Arc::downgrade(&inner);
        let every = inner.cfg.round;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.round(false).await;
            }
        });
        KubeStore { inner }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<KubeStoreStats> {
        Arc::clone(&self.inner.stats)
    }

    /// Says on a profile object that its spec cannot be used
    /// (`BaselineInvalid`, with the loader's message naming the field); the
    /// object itself is left alone. A merge patch of `status.conditions`.
    pub async fn report_baseline_invalid(
        &self,
        namespace: &str,
        name: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        if !self.inner.may_write() {
            return Err(StoreError::Api {
                object: format!("behaviorprofile {namespace}/{name}"),
                message: "not the leader: nothing is written".into(),
            });
        }
        let condition = Condition::new(
            Condition::BASELINE_INVALID,
            ConditionStatus::True,
            "BaselineInvalid",
            cut(message, 4096),
            kestrel_api::rfc3339_ns(
                u64::try_from(crate::clock::wall_now().as_nanos()).unwrap_or(u64::MAX),
            ),
        );
        let patch = serde_json::json!({ "status": { "conditions": [condition] } });
        let api: Api<BehaviorProfile> = Api::namespaced(self.inner.client.clone(), namespace);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        api.patch_status(name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Api {
                object: format!("behaviorprofile {namespace}/{name}"),
                message: e.to_string(),
            })
    }

    /// Writes a person's triage into an alert's status: `status.state`, and
    /// the condition that says what the verdict did (a false positive
    /// taught to the profile, or why not). A merge patch on `/status` by
    /// the operator's field manager, outside the write queue (a person's
    /// action, rare); the queue's copy is brought in line so the next
    /// repeat's write keeps it. Only the leader writes.
    pub async fn set_alert_state(
        &self,
        namespace: &str,
        name: &str,
        state: kestrel_api::AlertState,
        condition: Option<Condition>,
    ) -> Result<(), StoreError> {
        let object = format!("securityalert {namespace}/{name}");
        if !self.inner.may_write() {
            return Err(StoreError::Api {
                object,
                message: "not the leader: nothing is written".into(),
            });
        }
        let mut status = serde_json::json!({ "state": state });
        if let Some(c) = condition {
            status["conditions"] = serde_json::json!([c]);
        }
        let patch = serde_json::json!({ "status": status });
        let api: Api<AlertDocument> = Api::namespaced(self.inner.client.clone(), namespace);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        // not retried: the watch hands the verdict over again when the
        // annotation changes, and a restart re-reads every annotation
        if let Err(e) = api.patch_status(name, &pp, &Patch::Merge(&patch)).await {
            self.inner.stats.failures.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Api {
                object,
                message: e.to_string(),
            });
        }
        self.inner.stats.writes.fetch_add(1, Ordering::Relaxed);
        let key = (namespace.to_string(), name.to_string());
        let mut q = self.inner.queue.lock().expect("queue lock");
        if let Some(slot) = q.alerts.get_mut(&key) {
            slot.state = state;
            if let Some(st) = slot.pending.as_mut().and_then(|p| p.status.as_mut()) {
                st.state = state;
            }
        }
        Ok(())
    }

    /// Objects waiting to be written.
    pub fn pending(&self) -> usize {
        let q = self.inner.queue.lock().expect("queue lock");
        q.profiles.values().filter(|s| s.pending.is_some()).count()
            + q.alerts.values().filter(|s| s.pending.is_some()).count()
    }
}

/// What a mutating call wrote (its label in logs; which queue a refused
/// version is dropped from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    Profile,
    ProfileSizeMark,
    Alert,
    Event,
}

impl Wrote {
    fn label(self) -> &'static str {
        match self {
            Wrote::Profile => "profile",
            Wrote::ProfileSizeMark => "profile size mark",
            Wrote::Alert => "alert",
            Wrote::Event => "event",
        }
    }
}

/// The body of a server-side apply of `part` (`spec` or `status`) of the
/// object `key` of `kind`: only what the operator owns.
fn apply_body(
    kind: &str,
    key: &ObjKey,
    part: &str,
    value: &impl serde::Serialize,
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "apiVersion": kestrel_api::API_VERSION,
        "kind": kind,
        "metadata": { "name": key.1, "namespace": key.0 },
    });
    body[part] = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    body
}

/// What one round will write, in order.
enum Job {
    Alert(ObjKey, Box<AlertDocument>),
    Profile(ObjKey, Box<BehaviorProfile>),
}

impl Inner {
    /// Not gated, or the gate is open (this process leads).
    fn may_write(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| *g.borrow())
    }

    /// Writes what is due (everything waiting when `all`), in priority
    /// order, as far as the tokens go; nothing while another process leads.
    async fn round(&self, all: bool) {
        let _one = self.round.lock().await;
        if !self.may_write() {
            return;
        }
        let now = Instant::now();
        // (priority, mutating API calls it makes, the job): every call
        // takes a token
        let mut jobs: Vec<(u8, u32, Job)> = Vec::new();
        {
            let mut q = self.queue.lock().expect("queue lock");
            for (k, s) in &mut q.alerts {
                let Some(doc) = &s.pending else { continue };
                let due = all
                    || !s.exists
                    || s.last_write
                        .is_none_or(|t| now.duration_since(t) >= self.cfg.alert_interval);
                if due {
                    let prio = if s.exists { 2 } else { 0 };
                    // new: create, status (and the pod's Event when High);
                    // a repeat: status (and the spec when the severity moved)
                    let cost = if s.exists {
                        1 + u32::from(s.written_severity != Some(doc.spec.severity))
                    } else {
                        2 + u32::from(doc.spec.severity >= kestrel_api::Severity::High)
                    };
                    jobs.push((prio, cost, Job::Alert(k.clone(), Box::new(doc.clone()))));
                }
            }
            for (k, s) in &mut q.profiles {
                let Some(doc) = &s.pending else { continue };
                if doc.spec.source == ProfileSource::Learned
                    && s.deleted_at
                        .is_some_and(|t| now.duration_since(t) < RECREATE_GRACE)
                {
                    continue;
                }
                let interval = self.cfg.profile_interval.mul_f64(1.0 + s.jitter);
                let due = all
                    || s.phase_change
                    || s.last_write
                        .is_none_or(|t| now.duration_since(t) >= interval);
                if due {
                    let prio = if s.phase_change || !s.exists { 1 } else { 3 };
                    // create (first time), status, and the phase's Event
                    let cost =
                        u32::from(!s.exists) + 1 + u32::from(phase_of(doc) != s.written_phase);
                    jobs.push((prio, cost, Job::Profile(k.clone(), Box::new(doc.clone()))));
                }
            }
        }
        jobs.sort_by_key(|(p, _, _)| *p);
        let mut throttled = false;
        for (_, cost, job) in jobs {
            if !self.may_write() {
                break;
            }
            if !all && !self.limiter.lock().expect("limiter lock").take_n(now, cost) {
                throttled = true;
                break;
            }
            match job {
                Job::Alert(k, doc) => self.write_alert(k, *doc).await,
                Job::Profile(k, doc) => self.write_profile(k, *doc).await,
            }
        }
        if throttled {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if !all && !throttled {
            self.retain(now).await;
        }
    }

    /// Applies the alert TTL and caps (every `retention_every`), within the
    /// write budget; a deletion without a token waits for the next run.
    async fn retain(&self, now: Instant) {
        {
            let mut at = self.retained_at.lock().expect("retention lock");
            if at.is_some_and(|t| now.duration_since(t) < self.cfg.retention_every) {
                return;
            }
            *at = Some(now);
        }
        let now_ns = u64::try_from(crate::clock::wall_now().as_nanos()).unwrap_or(u64::MAX);
        let victims = {
            let q = self.queue.lock().expect("queue lock");
            doomed(&q.alerts, &self.cfg, now_ns)
        };
        for (key, why) in victims {
            if !self.may_write() || !self.limiter.lock().expect("limiter lock").take(now) {
                break;
            }
            let api: Api<AlertDocument> = Api::namespaced(self.client.clone(), &key.0);
            match api.delete(&key.1, &Default::default()).await {
                Ok(_) => {
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if api_error(&e).is_some_and(|s| s.is_not_found()) => {}
                Err(e) => {
                    self.counted::<()>(Err(e), Wrote::Alert, &key);
                    continue;
                }
            }
            let counter = match why {
                Doom::Expired => &self.stats.alerts_expired,
                Doom::Capped => &self.stats.alerts_capped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::info!(namespace = %key.0, name = %key.1, reason = ?why, "alert deleted by retention");
            let mut q = self.queue.lock().expect("queue lock");
            if q.alerts.get(&key).is_some_and(|s| s.pending.is_none()) {
                q.alerts.remove(&key);
            } else if let Some(s) = q.alerts.get_mut(&key) {
                // a repeat arrived meanwhile: written afresh
                s.exists = false;
            }
        }
    }

    fn counted<T>(&self, r: Result<T, kube::Error>, what: Wrote, key: &ObjKey) -> Option<T> {
        match r {
            Ok(v) => {
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(e) if api_error(&e).is_some_and(|s| s.code == 422) => {
                // the same document would be refused again: drop this
                // version (a later one may differ) and say why
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    namespace = %key.0, name = %key.1, error = %e,
                    "{} refused by the API server as invalid; this version is not retried",
                    what.label()
                );
                let mut q = self.queue.lock().expect("queue lock");
                match what {
                    Wrote::Profile | Wrote::ProfileSizeMark => {
                        if let Some(s) = q.profiles.get_mut(key) {
                            s.pending = None;
                            s.phase_change = false;
                            s.last_write = Some(Instant::now());
                        }
                    }
                    Wrote::Alert => {
                        if let Some(s) = q.alerts.get_mut(key) {
                            s.pending = None;
                            s.last_write = Some(Instant::now());
                        }
                    }
                    // a notice: nothing queued stands behind it
                    Wrote::Event => {}
                }
                None
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    namespace = %key.0, name = %key.1, error = %e,
                    "{} not written; retried next round",
                    what.label()
                );
                None
            }
        }
    }

    async fn write_profile(&self, key: ObjKey, mut doc: BehaviorProfile) {
        let api: Api<BehaviorProfile> = Api::namespaced(self.client.clone(), &key.0);
        let exists = {
            let q = self.queue.lock().expect("queue lock");
            q.profiles.get(&key).is_some_and(|s| s.exists)
        };
        if !exists {
            let mut fresh = doc.clone();
            fresh.status = None;
            fresh.metadata.resource_version = None;
            let created = match api.create(&post_params(), &fresh).await {
                Ok(_) => {
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(e) if api_error(&e).is_some_and(|s| s.is_already_exists()) => true,
                Err(e) if api_error(&e).is_some_and(is_namespace_gone) => {
                    self.namespace_gone(&key);
                    false
                }
                Err(e) => {
                    self.counted::<()>(Err(e), Wrote::Profile, &key);
                    false
                }
            };
            if !created {
                return;
            }
            // someone else's object of that name: never write a learned
            // status into a promoted profile
            if doc.spec.source == ProfileSource::Learned {
                match api.get(&key.1).await {
                    Ok(existing) if existing.spec.source != ProfileSource::Learned => {
                        tracing::warn!(
                            namespace = %key.0, name = %key.1,
                            "a promoted profile holds this name: the learned profile is kept in memory only"
                        );
                        self.done_profile(&key, &doc, true);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.counted::<()>(Err(e), Wrote::Profile, &key);
                        return;
                    }
                }
            }
            self.queue
                .lock()
                .expect("queue lock")
                .profiles
                .entry(key.clone())
                .or_default()
                .exists = true;
        }
        doc.measure_size();
        let size = doc.status.as_ref().and_then(|s| s.size_bytes).unwrap_or(0);
        if size > limits::PROFILE_MAX_BYTES {
            self.stats.size_limited.fetch_add(1, Ordering::Relaxed);
            let already = {
                let q = self.queue.lock().expect("queue lock");
                q.profiles.get(&key).is_some_and(|s| s.size_limited)
            };
            if !already {
                let mut conditions = doc
                    .status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default();
                conditions.retain(|c| c.type_ != Condition::SIZE_LIMITED);
                conditions.push(Condition::new(
                    Condition::SIZE_LIMITED,
                    ConditionStatus::True,
                    "OverSizeCap",
                    format!(
                        "the learned profile would take {size} bytes, past the cap of {} bytes: \
                         the last copy that fitted is kept here and learning goes on in the operator",
                        limits::PROFILE_MAX_BYTES
                    ),
                    kestrel_api::rfc3339_ns(
                        u64::try_from(crate::clock::wall_now().as_nanos()).unwrap_or(u64::MAX),
                    ),
                ));
                let patch = serde_json::json!({
                    "status": { "phase": "SizeLimited", "conditions": conditions }
                });
                let pp = PatchParams::default();
                let r = api.patch_status(&key.1, &pp, &Patch::Merge(&patch)).await;
                if self.counted(r, Wrote::ProfileSizeMark, &key).is_none() {
                    return;
                }
            }
            let mut q = self.queue.lock().expect("queue lock");
            let s = q.profiles.entry(key).or_default();
            s.size_limited = true;
            s.pending = None;
            s.phase_change = false;
            s.last_write = Some(Instant::now());
            return;
        }
        let status = apply_body(
            kestrel_api::BEHAVIOR_PROFILE_KIND,
            &key,
            "status",
            &doc.status,
        );
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let r = api.patch_status(&key.1, &pp, &Patch::Apply(&status)).await;
        match r {
            Err(e) if api_error(&e).is_some_and(|s| s.is_not_found()) => {
                // deleted meanwhile: created again next round
                tracing::info!(
                    namespace = %key.0, name = %key.1,
                    "profile was deleted; written again in {}s unless a promoted profile takes its name",
                    RECREATE_GRACE.as_secs()
                );
                let mut q = self.queue.lock().expect("queue lock");
                if let Some(s) = q.profiles.get_mut(&key) {
                    s.exists = false;
                    s.deleted_at = Some(Instant::now());
                }
            }
            r => {
                if let Some(written) = self.counted(r, Wrote::Profile, &key) {
                    let before = {
                        let q = self.queue.lock().expect("queue lock");
                        q.profiles.get(&key).and_then(|s| s.written_phase)
                    };
                    self.done_profile(&key, &doc, false);
                    if before != phase_of(&doc) {
                        self.phase_event(&key, &written, before).await;
                    }
                }
            }
        }
    }

    /// A core Event on the alert's pod (severity High and above), so
    /// `kubectl describe pod` and event exporters show it. Events are
    /// notices (they expire after about an hour); the alert is the record.
    async fn pod_event(&self, key: &ObjKey, alert: &AlertDocument) {
        let pod = &alert.spec.evidence.pod;
        if pod.is_empty() {
            return;
        }
        let message = format!(
            "{} ({} {:.0}): kubectl describe securityalert -n {} {}",
            alert.spec.title,
            alert.spec.severity.as_str(),
            alert.spec.score,
            key.0,
            key.1
        );
        let involved = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.clone()),
            namespace: Some(key.0.clone()),
            ..Default::default()
        };
        self.event(key, involved, "Warning", "SecurityAlert", message)
            .await;
    }

    /// A core Event on a profile whose phase changed.
    async fn phase_event(&self, key: &ObjKey, doc: &BehaviorProfile, from: Option<ProfilePhase>) {
        let Some(to) = phase_of(doc) else { return };
        let reason = doc
            .status
            .as_ref()
            .and_then(|s| kestrel_api::find_condition(&s.conditions, Condition::CONVERGED))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let message = match from {
            Some(from) => format!("{from:?} → {to:?}. {reason}"),
            None => format!("{to:?}. {reason}"),
        };
        let involved = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(kestrel_api::API_VERSION.into()),
            kind: Some(kestrel_api::BEHAVIOR_PROFILE_KIND.into()),
            name: Some(key.1.clone()),
            namespace: Some(key.0.clone()),
            uid: doc.metadata.uid.clone(),
            ..Default::default()
        };
        self.event(key, involved, "Normal", &format!("{to:?}"), message)
            .await;
    }

    async fn event(
        &self,
        key: &ObjKey,
        involved: k8s_openapi::api::core::v1::ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        use k8s_openapi::api::core::v1::{Event, EventSource};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}.", involved.name.clone().unwrap_or_default())),
                namespace: Some(key.0.clone()),
                ..Default::default()
            },
            involved_object: involved,
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            message: Some(cut(&message, 1024).to_string()),
            source: Some(EventSource {
                component: Some(FIELD_MANAGER.into()),
                host: None,
            }),
            reporting_component: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(crate::clock::hostname()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.into()),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &key.0);
        let r = api.create(&post_params(), &event).await;
        let _ = self.counted(r, Wrote::Event, key);
    }

    /// A create answered 404: the namespace is gone (deleted with its
    /// workloads). Nothing is retried for it; a later version of the object
    /// (the namespace made anew) is tried afresh.
    fn namespace_gone(&self, key: &ObjKey) {
        tracing::info!(namespace = %key.0, name = %key.1, "namespace is gone; object not written");
        let mut q = self.queue.lock().expect("queue lock");
        if let Some(s) = q.profiles.get_mut(key) {
            s.pending = None;
            s.phase_change = false;
        }
        if let Some(s) = q.alerts.get_mut(key) {
            s.pending = None;
        }
    }

    /// Records a written profile; a newer pending version stays queued.
    fn done_profile(&self, key: &ObjKey, doc: &BehaviorProfile, shadowed: bool) {
        let digest = content_digest(doc);
        let mut q = self.queue.lock().expect("queue lock");
        let s = q.profiles.entry(key.clone()).or_default();
        s.written_digest = Some(digest);
        s.written_phase = phase_of(doc);
        s.last_write = Some(Instant::now());
        s.size_limited = false;
        s.exists = !shadowed;
        s.deleted_at = None;
        if s.pending
            .as_ref()
            .is_some_and(|p| content_digest(p) == digest)
        {
            s.pending = None;
        }
        s.phase_change = s
            .pending
            .as_ref()
            .is_some_and(|p| phase_of(p) != s.written_phase);
    }

    /// Brings an existing alert's spec up to date (server-side apply);
    /// whether it was written.
    async fn apply_alert_spec(
        &self,
        api: &Api<AlertDocument>,
        key: &ObjKey,
        doc: &AlertDocument,
    ) -> bool {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let spec = apply_body(kestrel_api::SECURITY_ALERT_KIND, key, "spec", &doc.spec);
        let r = api.patch(&key.1, &pp, &Patch::Apply(&spec)).await;
        self.counted(r, Wrote::Alert, key).is_some()
    }

    async fn write_alert(&self, key: ObjKey, doc: AlertDocument) {
        let api: Api<AlertDocument> = Api::namespaced(self.client.clone(), &key.0);
        let (exists, severity) = {
            let q = self.queue.lock().expect("queue lock");
            q.alerts
                .get(&key)
                .map_or((false, None), |s| (s.exists, s.written_severity))
        };
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        if !exists {
            let mut fresh = doc.clone();
            fresh.status = None;
            match api.create(&post_params(), &fresh).await {
                Ok(created) => {
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    if doc.spec.severity >= kestrel_api::Severity::High {
                        self.pod_event(&key, &created).await;
                    }
                }
                // the same incident written before a restart: its spec is
                // brought up to date below
                Err(e) if api_error(&e).is_some_and(|s| s.is_already_exists()) => {
                    if !self.apply_alert_spec(&api, &key, &doc).await {
                        return;
                    }
                }
                Err(e) if api_error(&e).is_some_and(is_namespace_gone) => {
                    self.namespace_gone(&key);
                    return;
                }
                Err(e) => {
                    self.counted::<()>(Err(e), Wrote::Alert, &key);
                    return;
                }
            }
        } else if severity != Some(doc.spec.severity)
            && !self.apply_alert_spec(&api, &key, &doc).await
        {
            return;
        }
        let status = apply_body(
            kestrel_api::SECURITY_ALERT_KIND,
            &key,
            "status",
            &doc.status,
        );
        let r = api.patch_status(&key.1, &pp, &Patch::Apply(&status)).await;
        if self.counted(r, Wrote::Alert, &key).is_none() {
            let mut q = self.queue.lock().expect("queue lock");
            let s = q.alerts.entry(key).or_default();
            s.exists = true;
            s.written_severity = Some(doc.spec.severity);
            return;
        }
        let mut q = self.queue.lock().expect("queue lock");
        let s = q.alerts.entry(key).or_default();
        s.note_written(&doc);
        s.last_write = Some(Instant::now());
        if s.pending
            .as_ref()
            .is_some_and(|p| p.status == doc.status && p.spec == doc.spec)
        {
            s.pending = None;
        }
    }
}

#[async_trait::async_trait]
impl Store for KubeStore {
    /// An Event `RelearnSuggested` on the workload's BehaviorProfile
    /// (`kubectl describe bp` shows it), outside the write budget: it comes
    /// at most once per rollout grace period per workload.
    async fn note_relearn(&self, workload: &str, reason: &str) {
        let (Some(ns), rest) = kestrel_api::split_cluster_key(workload) else {
            return;
        };
        let key: ObjKey = (ns.to_string(), kestrel_api::object_name(rest));
        let involved = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(kestrel_api::API_VERSION.into()),
            kind: Some(kestrel_api::BEHAVIOR_PROFILE_KIND.into()),
            name: Some(key.1.clone()),
            namespace: Some(key.0.clone()),
            ..Default::default()
        };
        self.inner
            .event(
                &key,
                involved,
                "Normal",
                "RelearnSuggested",
                reason.to_string(),
            )
            .await;
    }

    async fn load_profiles(&self) -> Result<Vec<Listed<StoredProfile>>, StoreError> {
        let api: Api<BehaviorProfile> = Api::all(self.inner.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| StoreError::Api {
                object: "behaviorprofiles".into(),
                message: e.to_string(),
            })?;
        let mut out = Vec::new();
        let mut q = self.inner.queue.lock().expect("queue lock");
        for object in list.items {
            let key = match key_of(&object.metadata) {
                Ok(k) => k,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let workload = object.workload_name().unwrap_or_default();
            let exact = kestrel_api::WorkloadRef::parse(&workload);
            if exact.kind == kestrel_api::WorkloadKind::Container {
                out.push(Err(StoreError::Format {
                    path: format!("behaviorprofile {}/{}", key.0, key.1).into(),
                    message: format!(
                        "workload {workload:?} is not Kind/name of a Kubernetes workload"
                    ),
                }));
                continue;
            }
            let slot = q.profiles.entry(key.clone()).or_default();
            slot.exists = object.spec.source == ProfileSource::Learned;
            slot.written_digest = Some(content_digest(&object));
            slot.written_phase = phase_of(&object);
            slot.jitter = jitter_of(&key);
            out.push(Ok(StoredProfile::new(
                &kestrel_api::cluster_key(&key.0, &exact),
                object,
            )));
        }
        Ok(out)
    }

    async fn save_profile(&self, profile: &StoredProfile) -> Result<(), StoreError> {
        let key = key_of(&profile.object.metadata)?;
        let digest = content_digest(&profile.object);
        let phase = phase_of(&profile.object);
        let mut q = self.inner.queue.lock().expect("queue lock");
        let s = q
            .profiles
            .entry(key.clone())
            .or_insert_with(|| ProfileSlot {
                jitter: jitter_of(&key),
                ..ProfileSlot::default()
            });
        if s.written_digest == Some(digest) {
            if s.pending.take().is_some() {
                s.phase_change = false;
            }
            self.inner.stats.unchanged.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if s.pending.is_some() {
            self.inner.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        s.phase_change |= s.written_phase != phase;
        s.pending = Some(profile.object.clone());
        Ok(())
    }

    async fn delete_profile(&self, workload: &str) -> Result<(), StoreError> {
        let (ns, local) = match kestrel_api::split_cluster_key(workload) {
            (Some(ns), local) => (ns.to_string(), local.to_string()),
            (None, _) => {
                return Err(StoreError::NotFound {
                    what: "profile",
                    name: workload.into(),
                })
            }
        };
        let name = kestrel_api::object_name(&local);
        self.inner
            .queue
            .lock()
            .expect("queue lock")
            .profiles
            .remove(&(ns.clone(), name.clone()));
        let api: Api<BehaviorProfile> = Api::namespaced(self.inner.client.clone(), &ns);
        match api.delete(&name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(e) if api_error(&e).is_some_and(|s| s.is_not_found()) => {
                Err(StoreError::NotFound {
                    what: "profile",
                    name: workload.into(),
                })
            }
            Err(e) => Err(StoreError::Api {
                object: format!("behaviorprofile {ns}/{name}"),
                message: e.to_string(),
            }),
        }
    }

    async fn load_alerts(&self) -> Result<Vec<Listed<AlertDocument>>, StoreError> {
        let api: Api<AlertDocument> = Api::all(self.inner.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| StoreError::Api {
                object: "securityalerts".into(),
                message: e.to_string(),
            })?;
        let mut q = self.inner.queue.lock().expect("queue lock");
        let mut out = Vec::new();
        for a in list.items {
            match key_of(&a.metadata) {
                Ok(k) => {
                    q.alerts.entry(k).or_default().note_written(&a);
                    out.push(Ok(a));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        Ok(out)
    }

    async fn save_alert(&self, alert: &AlertDocument) -> Result<(), StoreError> {
        let key = key_of(&alert.metadata)?;
        let mut q = self.inner.queue.lock().expect("queue lock");
        let s = q.alerts.entry(key).or_default();
        if s.pending.is_some() {
            self.inner.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        s.pending = Some(alert.clone());
        Ok(())
    }

    async fn delete_alert(&self, name: &str) -> Result<(), StoreError> {
        let found = {
            let q = self.inner.queue.lock().expect("queue lock");
            q.alerts.keys().find(|(_, n)| n == name).cloned()
        };
        let Some((ns, name)) = found else {
            return Err(StoreError::NotFound {
                what: "alert",
                name: name.into(),
            });
        };
        self.inner
            .queue
            .lock()
            .expect("queue lock")
            .alerts
            .remove(&(ns.clone(), name.clone()));
        let api: Api<AlertDocument> = Api::namespaced(self.inner.client.clone(), &ns);
        api.delete(&name, &Default::default())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Api {
                object: format!("securityalert {ns}/{name}"),
                message: e.to_string(),
            })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.round(true).await;
        match self.pending() {
            0 => Ok(()),
            n => Err(StoreError::Api {
                object: "store".into(),
                message: format!("{n} objects could not be written at shutdown"),
            }),
        }
    }
}

/// A 404 that names the namespace (`namespaces "x" not found`), not the
/// resource: a missing CRD stays a failure that is retried and logged.
fn is_namespace_gone(s: &kube::core::Status) -> bool {
    s.is_not_found() && s.details.as_ref().is_some_and(|d| d.kind == "namespaces")
}

/// The longest prefix of `s` of at most `max` bytes, on a character boundary.
fn cut(s: &str, mut max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    while !s.is_char_boundary(max) {
        max -= 1;
    }
    &s[..max]
}

/// Creates carry the one field manager too.
fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// A stable jitter in 0..=0.2 for an object, so restarts keep the spread.
fn jitter_of(key: &ObjKey) -> f64 {
    let h = kestrel_events::hash::stable_hash32(format!("{}/{}", key.0, key.1).as_bytes());
    f64::from(h % 1000) / 5000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(v: serde_json::Value) -> kube::core::Status {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_gone_namespace_is_told_from_a_missing_resource() {
        // as the API server answers a create in a deleted namespace
        let gone = status(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound",
            "message": "namespaces \"e2e\" not found",
            "details": {"name": "e2e", "kind": "namespaces"}
        }));
        assert!(is_namespace_gone(&gone));
        // and a create when the CRD is not installed: retried, not dropped
        let no_crd = status(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound",
            "message": "the server could not find the requested resource"
        }));
        assert!(!is_namespace_gone(&no_crd));
    }

    fn slot(last_seen_s: u64, state: kestrel_api::AlertState) -> AlertSlot {
        AlertSlot {
            exists: true,
            last_seen_ns: last_seen_s * 1_000_000_000,
            state,
            ..AlertSlot::default()
        }
    }

    fn key(ns: &str, name: &str) -> ObjKey {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn retention_expires_quiet_alerts_then_caps_namespaces_and_the_cluster_oldest_and_resolved_first(
    ) {
        use kestrel_api::AlertState::{Open, Resolved};
        let cfg = KubeStoreConfig {
            alert_ttl: Duration::from_secs(100),
            max_alerts_per_namespace: 2,
            max_alerts: 3,
            ..KubeStoreConfig::default()
        };
        let mut slots = HashMap::new();
        // now is t=1000 s
        slots.insert(key("shop", "quiet"), slot(850, Open));
        slots.insert(key("shop", "a"), slot(990, Open));
        slots.insert(key("shop", "b"), slot(995, Open));
        slots.insert(key("shop", "done"), slot(999, Resolved));
        slots.insert(key("pay", "c"), slot(950, Open));
        slots.insert(key("pay", "d"), slot(960, Open));
        // a quiet alert with a write waiting is not expired
        let mut waiting = slot(800, Open);
        waiting.pending = Some(AlertDocument::from_spec(crate::engine::tests::miner_alert()));
        slots.insert(key("ops", "waiting"), waiting);
        // not on the API server: nothing to delete
        slots.insert(key("ops", "unwritten"), AlertSlot::default());
        let mut got = doomed(&slots, &cfg, 1_000 * 1_000_000_000);
        got.sort();
        let mut want = vec![
            (key("shop", "quiet"), Doom::Expired),
            // shop keeps 2 of a, b and done: the resolved one goes first
            (key("shop", "done"), Doom::Capped),
            // 5 left (ops/waiting, pay/c, pay/d, shop/a, shop/b) for a
            // cluster cap of 3: the two quietest go
            (key("ops", "waiting"), Doom::Capped),
            (key("pay", "c"), Doom::Capped),
        ];
        want.sort();
        assert_eq!(got, want);
        // no TTL and no caps: nothing goes
        let none = KubeStoreConfig {
            alert_ttl: Duration::ZERO,
            max_alerts_per_namespace: 0,
            max_alerts: 0,
            ..KubeStoreConfig::default()
        };
        assert!(doomed(&slots, &none, u64::MAX).is_empty());
    }

    #[test]
    fn the_digest_ignores_the_convergence_clock_and_the_size() {
        let mut a: BehaviorProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "kestrel.dev/v1alpha1", "kind": "BehaviorProfile",
            "metadata": {"name": "deployment-web", "namespace": "shop"},
            "spec": {"source": "Learned", "workload": {"kind": "Deployment", "name": "web"}},
            "status": {"phase": "Learning", "sizeBytes": 10, "convergence": {
                "phase": "Learning", "phaseSinceUnixNanos": 1, "learningSinceUnixNanos": 1,
                "nowUnixNanos": 5, "bucketIndex": 0, "buckets": [0], "totalGrowth": 0
            }}
        }))
        .unwrap();
        let d = content_digest(&a);
        let s = a.status.as_mut().unwrap();
        s.size_bytes = Some(99);
        s.convergence.as_mut().unwrap().now_unix_nanos = 77;
        assert_eq!(content_digest(&a), d);
        a.status.as_mut().unwrap().phase = Some(ProfilePhase::Detecting);
        assert_ne!(content_digest(&a), d);
    }
}
