//! The operator as a gRPC server: node agents stream what their edge filters
//! could not match; the operator runs the same pipeline as standalone mode and
//! pushes each workload's digest and the target set back to every agent.
//!
//! Without `kubernetes`, state is the same directory of YAML files as
//! standalone mode and workloads come from the same config. With it
//! ([`KubeSettings`]), profiles and alerts are custom resources on the API
//! server ([`crate::k8s::KubeStore`]), and each event's workload and pod
//! come from the operator's own watches: an event whose container no
//! watched pod has, or whose pod runs on another node than the sending
//! agent's, is counted and dropped, never attributed by what the agent
//! claims.

use crate::config::OperatorConfig;
use crate::engine::WorkloadDigest;
use crate::output::Line;
use crate::pipeline::{Parts, Pipeline};
use anyhow::Context as _;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use kestrel_embed::Embedder;
use kestrel_events::Forwarded;
use kestrel_events::Workload;
use kestrel_profile::activity_of;
use kestrel_proto::server::{
    AgentHandler, AgentIdentity, Disconnect, OperatorSender, Refusal, RefusalCode,
};
use kestrel_proto::{
    ContainerTarget, Counters, DigestUpdate, EventBatch, OperatorMessage, Phase, ServerTls,
    TargetSet, TlsMaterial,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS material ([`TlsMaterial::ensure`]: a CA created only when there
    /// is none, a server certificate, a client certificate for each name in
    /// `agent_names` that has none; nothing existing is replaced).
    pub tls_dir: PathBuf,
    /// The nodes allowed to connect (each gets a certificate when it has
    /// none); empty: any node with a certificate from the CA.
    pub agent_names: Vec<String>,
    /// Require client certificates (mutual TLS) and check Hello names.
    pub mutual_tls: bool,
    /// Interval of the progress lines.
    pub progress_every: Duration,
    /// Counters of the running server (share the `Arc` to read them while
    /// it runs).
    pub counters: Arc<ServeCounters>,
    /// Run against the API server (None: the state directory only).
    pub kubernetes: Option<KubeSettings>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (none: not
    /// served); see [`crate::health`].
    pub http_listen: Option<SocketAddr>,
    /// Names the server certificate gets when it is created, besides
    /// `localhost`, `127.0.0.1` and the listen address (the Service's DNS
    /// names in a cluster).
    pub server_names: Vec<String>,
}

/// The operator in a cluster.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// Write cadence and budget of the custom resources.
    pub store: crate::k8s::KubeStoreConfig,
    /// Namespaces whose pods are not watched (events from them are dropped).
    pub excluded_namespaces: Vec<String>,
    /// Leader election (None: this process always leads); see
    /// [`crate::k8s::leader`].
    pub lease: Option<crate::k8s::LeaseSettings>,
    /// Agent enrollment (`Enroll` for a ServiceAccount token; see
    /// [`crate::k8s::enroll`]): the address of its listener (TLS, no client
    /// certificate) and who may enroll. None: agents bring certificates.
    pub enroll: Option<(SocketAddr, crate::k8s::EnrollSettings)>,
}

/// What the server has done so far; cheap relaxed atomics, read at any time.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Forwarded events received from agents that carry a profile activity.
    pub received: AtomicU64,
    /// Events the pipeline handled (engine, scoring, store).
    pub handled: AtomicU64,
    /// Batches that waited for room in the pipeline's queue (the agent's
    /// stream was read no further meanwhile: back-pressure, nothing lost).
    pub backpressure_waits: AtomicU64,
    /// Cluster mode: events whose container no watched pod has.
    pub unattributed: AtomicU64,
    /// Cluster mode: events for a pod on another node than the agent's.
    pub foreign_node: AtomicU64,
}

struct Handler {
    forward: Sender<Forwarded>,
    agents: Mutex<HashMap<u64, (String, OperatorSender)>>,
    /// Cluster mode: the target set each node's agents got last, and the
    /// identity generation it was computed at.
    node_targets: Mutex<(u64, HashMap<String, Vec<ContainerTarget>>)>,
    digests: Mutex<BTreeMap<String, DigestUpdate>>,
    targets: TargetSet,
    /// Node names allowed to connect (empty: any).
    allowed: Vec<String>,
    counters: Arc<ServeCounters>,
    matched: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// The last drop counters each node reported.
    agent_drops: Mutex<BTreeMap<String, kestrel_proto::DropCounters>>,
    /// Cluster mode: who each container belongs to.
    identity: Option<Arc<Mutex<crate::k8s::Identity>>>,
    /// Cluster mode: certificates for agents' ServiceAccount tokens.
    enroller: Option<Arc<crate::k8s::Enroller>>,
}

#[tonic::async_trait]
impl AgentHandler for Handler {
    async fn enroll(
        &self,
        request: kestrel_proto::wire::EnrollRequest,
        peer_addr: Option<SocketAddr>,
    ) -> Result<kestrel_proto::wire::EnrollResponse, Refusal> {
        match &self.enroller {
            Some(e) => e.enroll(request, peer_addr).await,
            None => Err(Refusal::new(
                RefusalCode::Unimplemented,
                "this operator does not enroll agents (it runs without --enroll-listen); \
                 issue a certificate with `kestrel certs issue`",
            )),
        }
    }

    async fn on_connect(
        &self,
        agent: &AgentIdentity,
        outbound: OperatorSender,
    ) -> Result<(), Refusal> {
        let node = &agent.hello.node_name;
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == node) {
            tracing::warn!(node = %node, peer = ?agent.peer_addr, "agent refused: not in --agents");
            return Err(Refusal::new(
                RefusalCode::PermissionDenied,
                format!("node {node:?} is not among the operator's allowed agents (--agents)"),
            ));
        }
        let targets = match &self.identity {
            // this node's containers and their workloads, so the agent
            // filters per workload at the edge as in standalone mode
            Some(identity) => TargetSet {
                targets: identity
                    .lock()
                    .map(|i| i.targets_by_node().remove(node).unwrap_or_default())
                    .unwrap_or_default(),
            },
            None => self.targets.clone(),
        };
        let _ = outbound.try_send(&OperatorMessage::Targets(targets));
        let digests: Vec<DigestUpdate> = self
            .digests
            .lock()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default();
        for d in digests {
            let _ = outbound.try_send(&OperatorMessage::Digest(d));
        }
        if let Ok(mut a) = self.agents.lock() {
            a.insert(agent.connection, (node.clone(), outbound));
        }
        tracing::info!(node = %agent.hello.node_name, "agent connected");
        Ok(())
    }

    /// Offers each event to the pipeline's bounded queue, waiting while it
    /// is full: the batch is acknowledged only once every event is queued,
    /// and meanwhile this agent's stream is read no further, so HTTP/2 flow
    /// control and the agent's own queue and resend buffer take the strain
    /// (and count what they must drop). A stopping pipeline refuses the
    /// batch with `UNAVAILABLE`: unacknowledged, the agent sends it again.
    async fn on_batch(&self, agent: &AgentIdentity, batch: EventBatch) -> Result<(), Refusal> {
        let mut received = 0;
        let mut waited = false;
        for e in batch.events {
            let Some(activity) = activity_of(&e.event) else {
                continue;
            };
            let workload = match &self.identity {
                None => Workload {
                    name: e.workload,
                    image: e.image,
                    pod: String::new(),
                    node: String::new(),
                },
                Some(identity) => {
                    let id = e.event.container.as_ref().map(|c| c.id.as_str());
                    let resolved = id.and_then(|id| identity.lock().ok()?.resolve(id));
                    let Some(r) = resolved else {
                        self.counters.unattributed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if r.node != agent.hello.node_name {
                        self.counters.foreign_node.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            node = %agent.hello.node_name, pod = %r.pod, pod_node = %r.node,
                            "event for a pod on another node dropped"
                        );
                        continue;
                    }
                    Workload {
                        name: r.key,
                        image: r.image,
                        pod: r.pod,
                        node: r.node,
                    }
                }
            };
            let f = Forwarded {
                workload,
                activity,
                process: e.process,
                chain: e.chain,
                event: e.event,
            };
            received += 1;
            let mut f = f;
            loop {
                match self.forward.try_send(f) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        f = back;
                        if !waited {
                            waited = true;
                            self.counters
                                .backpressure_waits
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(Refusal::new(
                            RefusalCode::Unavailable,
                            "the operator is stopping; send this batch again",
                        ));
                    }
                }
            }
        }
        self.counters
            .received
            .fetch_add(received, Ordering::Relaxed);
        Ok(())
    }

    async fn on_counters(&self, agent: &AgentIdentity, counters: Counters) -> Result<(), Refusal> {
        if let Ok(mut m) = self.matched.lock() {
            m.insert(agent.hello.node_name.clone(), counters.matched);
        }
        if let Ok(mut r) = self.agent_drops.lock() {
            let before = r.insert(agent.hello.node_name.clone(), counters.drops.clone());
            let lost = |d: &kestrel_proto::DropCounters| {
                d.ring_dropped + d.queue_dropped + d.oversize_dropped + d.unacked_evicted
            };
            let now = lost(&counters.drops);
            if now > before.as_ref().map_or(0, lost) {
                tracing::warn!(
                    node = %agent.hello.node_name,
                    ring = counters.drops.ring_dropped,
                    queue = counters.drops.queue_dropped,
                    oversize = counters.drops.oversize_dropped,
                    resend_evicted = counters.drops.unacked_evicted,
                    "the agent reports events it could not deliver"
                );
            }
        }
        Ok(())
    }

    async fn on_disconnect(&self, agent: &AgentIdentity, reason: Disconnect) {
        if let Ok(mut a) = self.agents.lock() {
            a.remove(&agent.connection);
        }
        tracing::info!(node = %agent.hello.node_name, ?reason, "agent disconnected");
    }
}

impl Handler {
    fn publish(&self, d: WorkloadDigest) {
        let WorkloadDigest {
            workload,
            phase,
            digest,
        } = d;
        let phase = match phase {
            kestrel_profile::Phase::Learning => Phase::Learning,
            kestrel_profile::Phase::Converged => Phase::Converged,
            kestrel_profile::Phase::Detecting => Phase::Detecting,
        };
        let update = {
            let Ok(mut all) = self.digests.lock() else {
                return;
            };
            let generation = all.get(&workload).map(|d| d.generation + 1).unwrap_or(1);
            let update = DigestUpdate {
                workload: workload.clone(),
                phase,
                path_hashes: digest.hashes(),
                generation,
                full: true,
                seed: digest.seed(),
            };
            all.insert(workload, update.clone());
            update
        };
        if let Ok(agents) = self.agents.lock() {
            for (_, a) in agents.values() {
                let _ = a.try_send(&OperatorMessage::Digest(update.clone()));
            }
        }
    }

    /// Cluster mode: sends each connected node's agents its new target set
    /// when pods or owners changed since the last call (cheap otherwise).
    fn refresh_targets(&self) {
        let Some(identity) = &self.identity else {
            return;
        };
        let Ok(mut last) = self.node_targets.lock() else {
            return;
        };
        let (generation, mut by_node) = match identity.lock() {
            Ok(i) if i.generation() != last.0 => (i.generation(), i.targets_by_node()),
            _ => return,
        };
        let Ok(agents) = self.agents.lock() else {
            return;
        };
        let nodes: std::collections::BTreeSet<&String> = agents.values().map(|(n, _)| n).collect();
        let mut sent = HashMap::new();
        for node in nodes {
            let now = by_node.remove(node).unwrap_or_default();
            if last.1.get(node) != Some(&now) {
                let msg = OperatorMessage::Targets(TargetSet {
                    targets: now.clone(),
                });
                for (n, a) in agents.values() {
                    if n == node {
                        let _ = a.try_send(&msg);
                    }
                }
            }
            sent.insert(node.clone(), now);
        }
        *last = (generation, sent);
    }
}

/// Carries a spec change from the profile watch into the engine: a promoted
/// profile is applied, a learned profile's mode is set when it differs
/// from the engine's (a learned profile the engine has not met yet gets its
/// mode when it is first written); what cannot be used is reported.
fn apply_spec_change(
    pipeline: &mut Pipeline,
    store: &crate::k8s::KubeStore,
    runtime: &tokio::runtime::Runtime,
    change: crate::k8s::profiles::SpecChange,
    emit: &mut impl FnMut(&Line),
) {
    use crate::engine::Command;
    use crate::k8s::profiles::SpecChange;
    let command = match change {
        SpecChange::Invalid { object, reason } => {
            tracing::error!(%object, %reason, "BehaviorProfile spec not used");
            emit(&Line::error(&crate::error::Error::Config(format!(
                "behaviorprofile {object}: {reason}"
            ))));
            return;
        }
        SpecChange::Command(c) => c,
    };
    if let Command::SetMode { workload, mode } = &command {
        match pipeline.profile_mode(workload) {
            Some((kestrel_api::ProfileSource::Learned, current)) if current != *mode => {}
            _ => return,
        }
    }
    // a promoted profile that does not load is said on its own status
    let object = match &command {
        Command::Apply { document, .. } => document
            .metadata
            .namespace
            .clone()
            .zip(document.metadata.name.clone()),
        _ => None,
    };
    if let Err(e) = pipeline.command(command, &mut *emit) {
        tracing::error!(error = %e, "a BehaviorProfile spec could not be applied");
        emit(&Line::error(&e));
        if let Some((ns, name)) = object {
            let reported =
                runtime.block_on(store.report_baseline_invalid(&ns, &name, &e.to_string()));
            if let Err(e) = reported {
                tracing::warn!(error = %e, "BaselineInvalid not written");
            }
        }
    }
}

/// Carries a person's verdict from the alert watch into the pipeline and
/// records the outcome on the object (`status.state` and the `Triaged`
/// condition); an annotation that is no verdict is reported.
fn apply_triage(
    pipeline: &mut Pipeline,
    store: &crate::k8s::KubeStore,
    runtime: &tokio::runtime::Runtime,
    change: crate::k8s::alerts::TriageChange,
    emit: &mut impl FnMut(&Line),
) {
    use crate::k8s::alerts::TriageChange;
    let (namespace, name, alert, triage) = match change {
        TriageChange::Invalid { object, reason } => {
            tracing::error!(%object, %reason, "SecurityAlert triage not used");
            emit(&Line::error(&crate::error::Error::Config(format!(
                "securityalert {object}: {reason}"
            ))));
            return;
        }
        TriageChange::Verdict {
            namespace,
            name,
            alert,
            triage,
        } => (namespace, name, alert, triage),
    };
    let (state, condition) = pipeline.triage(&namespace, &name, &alert, triage, &mut *emit);
    tracing::info!(%namespace, %name, ?state, verdict = triage.reason(), message = %condition.message, "alert triaged");
    if let Err(e) =
        runtime.block_on(store.set_alert_state(&namespace, &name, state, Some(condition)))
    {
        tracing::warn!(error = %e, "triage not recorded on the alert");
        emit(&Line::error(&crate::error::Error::from(e)));
    }
}

/// What the server reports as it comes up (JSON lines on stderr from the
/// binaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// `/healthz`, `/readyz` and `/metrics` are served there.
    Http(SocketAddr),
    /// Another operator holds the Lease; this one waits.
    Standby,
    /// This process took the Lease.
    Leading,
    /// The gRPC port for agents is open there.
    Listening(SocketAddr),
    /// The enrollment port (certificates for ServiceAccount tokens) is
    /// open there.
    Enrolling(SocketAddr),
}

/// Serves agents until `stop` is set; `on_started` hears each step of the
/// start (the probes' address, standby and leading, the bound gRPC
/// address).
///
/// With leader election a process that does not hold the Lease waits
/// before it loads anything; one that loses the Lease stops writing at
/// once and returns an error without flushing (the new leader holds the
/// state); one that stops on `stop` flushes, then releases the Lease.
#[allow(clippy::too_many_lines)]
pub fn run(
    cfg: &OperatorConfig,
    serve: &ServeConfig,
    state_dir: &Path,
    stop: &AtomicBool,
    embedder: Arc<dyn Embedder>,
    mut emit: impl FnMut(&Line),
    mut on_started: impl FnMut(Started),
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let health = Arc::new(crate::health::Health::default());
    health
        .synced
        .store(serve.kubernetes.is_none(), Ordering::Relaxed);
    health
        .cluster
        .store(serve.kubernetes.is_some(), Ordering::Relaxed);
    if let Some(addr) = serve.http_listen {
        let bound = runtime
            .block_on(crate::health::serve(addr, Arc::clone(&health)))
            .with_context(|| format!("probes and metrics on {addr}"))?;
        on_started(Started::Http(bound));
    }
    let counting = Arc::clone(&health);
    let mut emit = move |l: &Line| {
        if let Line::Error { kind, .. } = l {
            counting.count_error(kind);
        }
        emit(l);
    };
    let mut parts = Parts::state_dir(state_dir, embedder, "default")?;
    parts.status = Box::new(crate::health::StatusTee {
        inner: parts.status,
        health: Arc::clone(&health),
    });
    let mut cluster = None;
    let mut leadership = None;
    let mut enroll_client: Option<kube::Client> = None;
    if let Some(k) = &serve.kubernetes {
        let client = runtime
            .block_on(crate::k8s::client())
            .context("no Kubernetes API server (KUBECONFIG or in-cluster)")?;
        if let Some(lease) = &k.lease {
            health.elected.store(true, Ordering::Relaxed);
            if let Ok(mut l) = health.lease.lock() {
                *l = format!("{}/{}", lease.namespace, lease.name);
            }
            let elected = runtime
                .block_on(crate::k8s::Leadership::join(client.clone(), lease.clone()))
                .context("leader election")?;
            if !elected.is_leader() {
                on_started(Started::Standby);
            }
            while !elected.is_leader() {
                if stop.load(Ordering::Relaxed) {
                    runtime.block_on(elected.release(Duration::from_secs(5)));
                    return Ok(());
                }
                health.beat();
                std::thread::sleep(Duration::from_millis(200));
            }
            health.leader.store(true, Ordering::Relaxed);
            on_started(Started::Leading);
            leadership = Some(elected);
        }
        let gate = leadership.as_ref().map(crate::k8s::Leadership::gate);
        let store = runtime.block_on(async {
            crate::k8s::KubeStore::gated(client.clone(), k.store.clone(), gate)
        });
        parts.store = Arc::new(store.clone());
        if let Ok(mut s) = health.api_stats.lock() {
            *s = Some(store.stats());
        }
        let view = runtime.block_on(async {
            crate::k8s::watch::start(client.clone(), k.excluded_namespaces.clone())
        });
        let specs = runtime.block_on(async { crate::k8s::profiles::start(client.clone()) });
        enroll_client = Some(client.clone());
        let verdicts = runtime.block_on(async { crate::k8s::alerts::start(client) });
        cluster = Some((store, view, specs, verdicts));
    }
    let mut pipeline = Pipeline::build(cfg, parts, &mut emit)?;
    let mut server_names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        serve.listen.ip().to_string(),
    ];
    server_names.extend(serve.server_names.iter().cloned());
    let material = TlsMaterial::ensure(&serve.tls_dir, &server_names, &serve.agent_names)?;
    kestrel_proto::check_validity(&material.server.cert, "server certificate")?;
    let tls = ServerTls::from_material(&material, serve.mutual_tls)?;
    let (fwd_tx, fwd_rx): (Sender<Forwarded>, Receiver<Forwarded>) = bounded(65_536);
    let targets = TargetSet {
        targets: cfg
            .workloads
            .iter()
            .map(|w| ContainerTarget {
                container_id_glob: w.containers.to_string(),
                workload: w.name.clone(),
                image: w.image.clone().unwrap_or_else(|| w.name.clone()),
            })
            .collect(),
    };
    let handler = Arc::new(Handler {
        forward: fwd_tx,
        agents: Mutex::new(HashMap::new()),
        node_targets: Mutex::new((0, HashMap::new())),
        digests: Mutex::new(BTreeMap::new()),
        targets,
        allowed: serve.agent_names.clone(),
        counters: Arc::clone(&serve.counters),
        matched: Mutex::new(BTreeMap::new()),
        agent_drops: Mutex::new(BTreeMap::new()),
        identity: cluster.as_ref().map(|(_, v, _, _)| Arc::clone(&v.identity)),
        enroller: match (
            serve.kubernetes.as_ref().and_then(|k| k.enroll.as_ref()),
            enroll_client,
        ) {
            (Some((_, settings)), Some(client)) => {
                let signer = kestrel_proto::CertSigner::load(&serve.tls_dir)
                    .context("agent enrollment needs the CA's key in --tls-dir")?;
                Some(Arc::new(crate::k8s::Enroller::new(
                    client,
                    signer,
                    settings.clone(),
                )))
            }
            _ => None,
        },
    });
    for d in pipeline.all_digests() {
        handler.publish(d);
    }
    let server = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(serve.listen).await?;
        let h: Arc<dyn AgentHandler> = handler.clone();
        anyhow::Ok(kestrel_proto::server::serve(listener, tls, h).await?)
    })?;
    on_started(Started::Listening(server.local_addr()));
    let enroll_server = match serve.kubernetes.as_ref().and_then(|k| k.enroll.as_ref()) {
        Some((addr, _)) => {
            let s = runtime
                .block_on(async {
                    let listener = tokio::net::TcpListener::bind(addr).await?;
                    let h: Arc<dyn AgentHandler> = handler.clone();
                    let config = kestrel_proto::server::ServerConfig {
                        enroll_only: true,
                        max_message_bytes: 64 * 1024,
                        ..Default::default()
                    };
                    let tls = ServerTls::from_material(&material, false)?;
                    anyhow::Ok(kestrel_proto::server::serve_with(listener, tls, h, config).await?)
                })
                .with_context(|| format!("enrollment listener on {addr}"))?;
            on_started(Started::Enrolling(s.local_addr()));
            Some(s)
        }
        None => None,
    };
    let listener = server.stats();
    health.running.store(true, Ordering::Relaxed);

    let handled = &serve.counters.handled;
    let mut lost = false;
    let mut last_targets = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        health.beat();
        if let Some(l) = &leadership {
            if !l.is_leader() {
                health.leader.store(false, Ordering::Relaxed);
                lost = true;
                break;
            }
        }
        match fwd_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(f) => {
                pipeline.handle(&f, &mut emit);
                handled.fetch_add(1, Ordering::Relaxed);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        if let Some((store, view, specs, verdicts)) = &cluster {
            if last_targets.elapsed() >= Duration::from_millis(250) {
                last_targets = Instant::now();
                handler.refresh_targets();
            }
            health.synced.store(
                view.synced.load(Ordering::Relaxed) >= crate::k8s::watch::KINDS,
                Ordering::Relaxed,
            );
            while let Ok(changes) = view.changes.try_recv() {
                for (workload, pods) in &changes.pods_gone {
                    pipeline.pods_gone(workload, pods.iter().map(String::as_str));
                }
                pipeline.set_facts(changes.facts);
            }
            while let Ok(change) = specs.try_recv() {
                apply_spec_change(&mut pipeline, store, &runtime, change, &mut emit);
            }
            while let Ok(change) = verdicts.try_recv() {
                apply_triage(&mut pipeline, store, &runtime, change, &mut emit);
            }
        }
        let h = &handler;
        let c = &cluster;
        let status = || {
            let mut s = serde_json::json!({
                "agents": h.agents.lock().map(|a| a.len()).unwrap_or(0),
                "eventsHandled": h.counters.handled.load(Ordering::Relaxed),
                "edge": { "matchedByNode": h.matched.lock().map(|m| m.clone()).unwrap_or_default() },
                "agentDrops": h.agent_drops.lock().map(|m| m.iter().map(|(node, d)| (node.clone(), serde_json::json!({
                    "ring": d.ring_dropped,
                    "queue": d.queue_dropped,
                    "oversize": d.oversize_dropped,
                    "resendEvicted": d.unacked_evicted,
                }))).collect::<serde_json::Map<_, _>>()).unwrap_or_default(),
                "backpressureWaits": h.counters.backpressure_waits.load(Ordering::Relaxed),
                "listener": {
                    "handshakes": listener.handshakes.load(Ordering::Relaxed),
                    "handshakesFailed": listener.handshakes_failed.load(Ordering::Relaxed),
                    "handshakeTimeouts": listener.handshake_timeouts.load(Ordering::Relaxed),
                    "overLimit": listener.over_limit.load(Ordering::Relaxed),
                },
            });
            if let Some((store, view, _, _)) = c {
                s["kubernetes"] = serde_json::json!({
                    "api": store.stats().to_json(),
                    "pending": store.pending(),
                    "pods": view.identity.lock().map(|i| i.pods()).unwrap_or(0),
                    "watchesSynced": view.synced.load(Ordering::Relaxed),
                    "unattributed": h.counters.unattributed.load(Ordering::Relaxed),
                    "foreignNode": h.counters.foreign_node.load(Ordering::Relaxed),
                    "enrollments": h.enroller.as_ref().map(|e| serde_json::json!({
                        "issued": e.stats.issued.load(Ordering::Relaxed),
                        "refused": e.stats.refused.load(Ordering::Relaxed),
                        "failed": e.stats.failed.load(Ordering::Relaxed),
                    })),
                });
            }
            s
        };
        for d in pipeline.periodic(serve.progress_every, status, &mut emit) {
            handler.publish(d);
        }
    }
    health.running.store(false, Ordering::Relaxed);
    if let Some(s) = enroll_server {
        let _ = runtime.block_on(s.shutdown());
    }
    if let Err(e) = runtime.block_on(server.shutdown()) {
        tracing::warn!(error = %e, "server shutdown");
    }
    if lost {
        let lease = health.lease.lock().map(|l| l.clone()).unwrap_or_default();
        anyhow::bail!(
            "lost the lease {lease} to another operator: stopped writing and exiting; \
             the new leader loads what was written (at most one flush interval of learning is relearned)"
        );
    }
    while let Ok(f) = fwd_rx.try_recv() {
        pipeline.handle(&f, &mut emit);
        handled.fetch_add(1, Ordering::Relaxed);
    }
    let saved = pipeline.shutdown(serde_json::json!({}), &mut emit);
    if let Some(l) = leadership {
        runtime.block_on(l.release(Duration::from_secs(5)));
    }
    Ok(saved?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_events::{Argv, ByteStr, ContainerRef, Event, EventKind, Exec, Namespaces, Task};
    use kestrel_proto::client::{AgentClient, ClientConfig, ConnectionState};
    use kestrel_proto::{ClientTls, Hello, WorkloadEvent};

    fn exec(n: u32) -> WorkloadEvent {
        WorkloadEvent::new(
            "web",
            Event {
                ts_ns: u64::from(n),
                cgroup_id: 1,
                task: Some(Task {
                    pid: n,
                    tid: n,
                    ppid: 1,
                    uid: 0,
                    comm: "sh".into(),
                }),
                ns: Namespaces::default(),
                container: Some(ContainerRef {
                    id: "web-1".into(),
                    runtime: kestrel_events::Runtime::Plain,
                }),
                kind: EventKind::Exec(Exec {
                    filename: ByteStr::from("/bin/date"),
                    exe: "date".into(),
                    parent_comm: "sh".into(),
                    ns_pid: n,
                    argv: Argv {
                        args: vec!["date".into(), ByteStr::from(n.to_string().as_str())],
                        size: 12,
                        truncated: false,
                        read_failed: false,
                    },
                    from_proc_scan: false,
                    dir: None,
                }),
            },
        )
    }

    /// The engine is blocked (nobody reads the pipeline's queue): the agent
    /// goes on streaming into its own queue and resend buffer, and only when
    /// those are full does it refuse events, which it counts and reports.
    /// Once the engine runs again, every event the agent accepted reaches
    /// it, in order; the operator shows the agent's count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_engine_holds_agents_back_and_loses_only_what_they_count() {
        let (fwd_tx, fwd_rx) = bounded::<Forwarded>(64);
        let counters = Arc::new(ServeCounters::default());
        let handler = Arc::new(Handler {
            forward: fwd_tx,
            agents: Mutex::new(HashMap::new()),
            node_targets: Mutex::new((0, HashMap::new())),
            digests: Mutex::new(BTreeMap::new()),
            targets: TargetSet::default(),
            allowed: Vec::new(),
            counters: Arc::clone(&counters),
            matched: Mutex::new(BTreeMap::new()),
            agent_drops: Mutex::new(BTreeMap::new()),
            identity: None,
            enroller: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h: Arc<dyn AgentHandler> = handler.clone();
        let server = kestrel_proto::server::serve(listener, ServerTls::plaintext(), h)
            .await
            .unwrap();
        let mut config = ClientConfig::new(format!("http://{}", server.local_addr()));
        config.queue_capacity = 1_000;
        config.max_unacked_events = 500;
        config.max_batch_events = 50;
        config.counters_interval = Duration::from_millis(50);
        let hello = Hello {
            node_name: "node-a".into(),
            agent_id: "a".into(),
            version: "0".into(),
            boot_id: "b".into(),
            instance: 0,
        };
        let (client, _in) = AgentClient::connect_with(config, ClientTls::plaintext(), hello)
            .await
            .unwrap();
        let mut state = client.state();
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
        )
        .await
        .unwrap()
        .unwrap();

        let (mut accepted, mut refused) = (Vec::new(), 0u64);
        let mut accepted_before_first_refusal = None;
        for chunk in 0..2_000u32 {
            let events: Vec<WorkloadEvent> = (0..10).map(|i| exec(chunk * 10 + i + 1)).collect();
            let pids: Vec<u32> = (0..10).map(|i| chunk * 10 + i + 1).collect();
            match client.send(events) {
                Ok(()) => accepted.extend(pids),
                Err(e) => {
                    refused += e.dropped as u64;
                    accepted_before_first_refusal.get_or_insert(accepted.len());
                }
            }
            if chunk % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let first = accepted_before_first_refusal.expect("the buffers never filled");
        assert!(
            first >= 1_000,
            "events refused after only {first} were accepted"
        );
        assert!(counters.backpressure_waits.load(Ordering::Relaxed) > 0);

        // The engine runs again.
        let engine = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(f) = fwd_rx.recv_timeout(Duration::from_secs(3)) {
                got.push(f.event.task.map_or(0, |t| t.pid));
            }
            got
        });
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let s = client.stats();
                if s.queued == 0 && s.acked_seq == s.sent_seq {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the agent's backlog never drained");
        let got = engine.join().unwrap();
        assert_eq!(got.len(), accepted.len());
        assert_eq!(
            got, accepted,
            "the engine got other events than the agent accepted"
        );
        let drops = client.counters().drops;
        assert_eq!(drops.queue_dropped, refused);
        assert_eq!(accepted.len() as u64 + refused, 20_000);
        // The operator shows what the agent lost.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = handler.agent_drops.lock().unwrap()["node-a"].queue_dropped;
        assert_eq!(seen, refused);
        client.close(Duration::from_secs(1)).await;
        server.shutdown().await.unwrap();
    }
}
