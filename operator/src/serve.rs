//! The operator as a gRPC server: node agents stream what their edge filters
//! could not match; the operator runs the same pipeline as standalone mode and
//! pushes each workload's digest and the target set back to every agent.
//!
//! Kubernetes custom resources are not wired yet: state is the same directory
//! of YAML files as standalone mode, and workloads come from the same config.

use crate::config::OperatorConfig;
use crate::engine::WorkloadDigest;
use crate::output::Line;
use crate::pipeline::{Parts, Pipeline};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use kestrel_embed::Embedder;
use kestrel_events::Forwarded;
use kestrel_events::Workload;
use kestrel_profile::activity_of;
use kestrel_proto::server::{AgentHandler, AgentIdentity, Disconnect, OperatorSender, Refusal};
use kestrel_proto::{
    ContainerTarget, Counters, DigestUpdate, EventBatch, OperatorMessage, Phase, ServerTls,
    TargetSet, TlsMaterial,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS material (generated there when missing: CA, server, one client
    /// certificate per name in `agent_names`).
    pub tls_dir: PathBuf,
    /// Node names that get client certificates.
    pub agent_names: Vec<String>,
    /// Require client certificates (mutual TLS) and check Hello names.
    pub mutual_tls: bool,
    /// Interval of the progress lines.
    pub progress_every: Duration,
    /// Counters of the running server (share the `Arc` to read them while
    /// it runs).
    pub counters: Arc<ServeCounters>,
}

/// What the server has done so far; cheap relaxed atomics, read at any time.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Forwarded events received from agents that carry a profile activity.
    pub received: AtomicU64,
    /// Events the pipeline handled (engine, scoring, store).
    pub handled: AtomicU64,
    /// Events dropped because the pipeline's queue was full.
    pub queue_dropped: AtomicU64,
}

struct Handler {
    forward: Sender<Forwarded>,
    agents: Mutex<HashMap<u64, OperatorSender>>,
    digests: Mutex<BTreeMap<String, DigestUpdate>>,
    targets: TargetSet,
    counters: Arc<ServeCounters>,
    matched: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    ring_dropped: Mutex<BTreeMap<String, u64>>,
}

#[tonic::async_trait]
impl AgentHandler for Handler {
    async fn on_connect(
        &self,
        agent: &AgentIdentity,
        outbound: OperatorSender,
    ) -> Result<(), Refusal> {
        let _ = outbound.try_send(&OperatorMessage::Targets(self.targets.clone()));
        let digests: Vec<DigestUpdate> = self
            .digests
            .lock()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default();
        for d in digests {
            let _ = outbound.try_send(&OperatorMessage::Digest(d));
        }
        if let Ok(mut a) = self.agents.lock() {
            a.insert(agent.connection, outbound);
        }
        tracing::info!(node = %agent.hello.node_name, "agent connected");
        Ok(())
    }

    async fn on_batch(&self, _agent: &AgentIdentity, batch: EventBatch) -> Result<(), Refusal> {
        let (mut received, mut dropped) = (0, 0);
        for e in batch.events {
            let Some(activity) = activity_of(&e.event) else {
                continue;
            };
            let f = Forwarded {
                workload: Workload {
                    name: e.workload,
                    image: e.image,
                },
                activity,
                process: e.process,
                chain: e.chain,
                event: e.event,
            };
            received += 1;
            if let Err(TrySendError::Full(_)) = self.forward.try_send(f) {
                dropped += 1;
            }
        }
        let c = &self.counters;
        c.received.fetch_add(received, Ordering::Relaxed);
        if dropped > 0 {
            c.queue_dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn on_counters(&self, agent: &AgentIdentity, counters: Counters) -> Result<(), Refusal> {
        if let Ok(mut m) = self.matched.lock() {
            m.insert(agent.hello.node_name.clone(), counters.matched);
        }
        if let Ok(mut r) = self.ring_dropped.lock() {
            r.insert(agent.hello.node_name.clone(), counters.drops.ring_dropped);
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
            for a in agents.values() {
                let _ = a.try_send(&OperatorMessage::Digest(update.clone()));
            }
        }
    }
}

/// Serves agents until `stop` is set; `on_listening` gets the bound address.
pub fn run(
    cfg: &OperatorConfig,
    serve: &ServeConfig,
    state_dir: &Path,
    stop: &AtomicBool,
    embedder: Arc<dyn Embedder>,
    mut emit: impl FnMut(&Line),
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let parts = Parts::state_dir(state_dir, embedder, "default")?;
    let mut pipeline = Pipeline::build(cfg, parts, &mut emit)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server_names = [
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        serve.listen.ip().to_string(),
    ];
    let material =
        TlsMaterial::load_or_generate(&serve.tls_dir, &server_names, &serve.agent_names)?;
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
        digests: Mutex::new(BTreeMap::new()),
        targets,
        counters: Arc::clone(&serve.counters),
        matched: Mutex::new(BTreeMap::new()),
        ring_dropped: Mutex::new(BTreeMap::new()),
    });
    for d in pipeline.all_digests() {
        handler.publish(d);
    }
    let server = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(serve.listen).await?;
        let h: Arc<dyn AgentHandler> = handler.clone();
        anyhow::Ok(kestrel_proto::server::serve(listener, tls, h).await?)
    })?;
    on_listening(server.local_addr());

    let handled = &serve.counters.handled;
    while !stop.load(Ordering::Relaxed) {
        match fwd_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(f) => {
                pipeline.handle(&f, &mut emit);
                handled.fetch_add(1, Ordering::Relaxed);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        let h = &handler;
        let status = || {
            serde_json::json!({
                "agents": h.agents.lock().map(|a| a.len()).unwrap_or(0),
                "edge": { "matchedByNode": h.matched.lock().map(|m| m.clone()).unwrap_or_default() },
                "ringDroppedByNode": h.ring_dropped.lock().map(|m| m.clone()).unwrap_or_default(),
                "queueDropped": h.counters.queue_dropped.load(Ordering::Relaxed),
            })
        };
        for d in pipeline.periodic(serve.progress_every, status, &mut emit) {
            handler.publish(d);
        }
    }
    if let Err(e) = runtime.block_on(server.shutdown()) {
        tracing::warn!(error = %e, "server shutdown");
    }
    while let Ok(f) = fwd_rx.try_recv() {
        pipeline.handle(&f, &mut emit);
        handled.fetch_add(1, Ordering::Relaxed);
    }
    pipeline.shutdown(serde_json::json!({}), &mut emit);
    Ok(())
}
