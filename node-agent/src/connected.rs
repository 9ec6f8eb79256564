//! The agent in the cluster shape: capture → edge filter → gRPC stream to the
//! operator. The operator sends back the target set (which containers belong
//! to which workload, with its image) and each workload's profile digest; the
//! agent forwards only what the digests do not know, with its process context,
//! and reports what it matched and what it dropped.

use crate::capture::{self, CaptureConfig, CaptureStats, Scope};
use crate::edge::{EdgeCounters, EdgeFilter};
use kestrel_events::{Glob, WorkloadMap, WorkloadSpec};
use kestrel_profile::Digest;
use kestrel_proto::client::AgentClient;
use kestrel_proto::{ClientTls, TlsMaterial};
use kestrel_proto::{Hello, OperatorMessage, WorkloadEvent};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Settings of a connected agent.
#[derive(Debug, Clone)]
pub struct ConnectedConfig {
    /// Operator endpoint (`https://host:port`).
    pub operator: String,
    /// TLS material directory (CA, this node's client certificate).
    pub tls_dir: PathBuf,
    /// This node's name (must be a name of its client certificate).
    pub node_name: String,
    /// Capture settings.
    pub capture: CaptureConfig,
    /// Most events per batch.
    pub batch_size: usize,
}

/// Counters of a connected run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnectedStats {
    /// Capture counters.
    pub capture: CaptureStats,
    /// Edge-filter counters.
    pub edge: EdgeCounters,
    /// Events refused by the full outbound queue (reported to the operator too).
    pub queue_full: u64,
    /// What reached the operator: `forwarded` above counts what the edge
    /// filter let through, this what was sent and acknowledged.
    pub delivery: Delivery,
}

/// What reached the operator, from the client's own counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Streams the operator accepted (0: it never saw this agent).
    pub sessions: u64,
    /// Events sent on a stream.
    pub events_sent: u64,
    /// Batches sent and acknowledged: `acked_seq` of `sent_seq`.
    pub acked_seq: u64,
    /// Highest batch sequence number sent.
    pub sent_seq: u64,
    /// Events still queued when closing began (the close sends them if the
    /// operator is there).
    pub queued_at_close: usize,
    /// Sent once, then pushed out of the resend buffer before acknowledged.
    pub resend_evicted: u64,
}

/// Why a connected run failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectedError {
    /// TLS material or endpoint.
    #[error("transport: {0}")]
    Transport(#[from] kestrel_proto::Error),
    /// Capture.
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    /// The async runtime could not start.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

enum Update {
    Targets(Vec<WorkloadSpec>),
    Digest(String, Digest),
}

/// Runs until `stop` is set.
pub fn run(cfg: &ConnectedConfig, stop: &AtomicBool) -> Result<ConnectedStats, ConnectedError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let material = TlsMaterial::load_agent(&cfg.tls_dir, &cfg.node_name)?;
    let tls = ClientTls::from_material(&material, Some(&cfg.node_name))?;
    let hello = Hello {
        node_name: cfg.node_name.clone(),
        agent_id: format!("{}-{}", cfg.node_name, std::process::id()),
        version: env!("CARGO_PKG_VERSION").into(),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim()
            .into(),
        instance: 0,
    };
    let (client, mut incoming) =
        runtime.block_on(AgentClient::connect(cfg.operator.clone(), tls, hello))?;
    let (up_tx, up_rx) = crossbeam_channel::unbounded::<Update>();
    runtime.spawn(async move {
        while let Some(msg) = incoming.recv().await {
            let update = match msg {
                OperatorMessage::Targets(t) => Update::Targets(
                    t.targets
                        .into_iter()
                        .filter_map(|t| match Glob::new(&t.container_id_glob) {
                            Ok(containers) => Some(WorkloadSpec {
                                name: t.workload,
                                image: (!t.image.is_empty()).then_some(t.image),
                                containers,
                            }),
                            Err(e) => {
                                tracing::warn!(workload = %t.workload, error = %e, "target skipped");
                                None
                            }
                        })
                        .collect(),
                ),
                OperatorMessage::Digest(d) => {
                    Update::Digest(d.workload, Digest::from_hashes(d.seed, d.path_hashes))
                }
            };
            if up_tx.send(update).is_err() {
                break;
            }
        }
    });

    let mut edge = EdgeFilter::new(WorkloadMap::default());
    let mut batch: Vec<WorkloadEvent> = Vec::with_capacity(cfg.batch_size);
    let queue_full = std::cell::Cell::new(0u64);
    let mut reported = EdgeCounters::default();
    let mut reported_ring_drops = 0u64;
    let mut last_report = Instant::now();
    let flush = |batch: &mut Vec<WorkloadEvent>| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if client.send(std::mem::take(batch)).is_err() {
            queue_full.set(queue_full.get() + n);
        }
    };
    let batch_size = cfg.batch_size.max(1);
    let edge_cell = std::cell::RefCell::new(&mut edge);
    let batch_cell = std::cell::RefCell::new(&mut batch);
    let capture_stats = capture::run_with(
        &CaptureConfig {
            scope: Scope::AllContainers,
            cgroup_events: false,
            ..cfg.capture.clone()
        },
        stop,
        |event| {
            let mut edge = edge_cell.borrow_mut();
            while let Ok(u) = up_rx.try_recv() {
                match u {
                    Update::Targets(specs) => edge.set_workloads(WorkloadMap::new(specs)),
                    Update::Digest(w, d) => edge.set_digest(&w, d),
                }
            }
            if let Some(f) = edge.process(event) {
                let mut batch = batch_cell.borrow_mut();
                batch.push(WorkloadEvent {
                    workload: f.workload.name,
                    image: f.workload.image,
                    event: f.event,
                    process: f.process,
                    chain: f.chain,
                });
                if batch.len() >= batch_size {
                    flush(&mut batch);
                }
            }
        },
        || (),
        |sensors| {
            flush(&mut batch_cell.borrow_mut());
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                let edge = edge_cell.borrow();
                for (w, n) in &edge.counters().matched {
                    let before = reported.matched.get(w).copied().unwrap_or(0);
                    if *n > before {
                        client.add_matched(w, n - before);
                    }
                }
                reported = edge.counters().clone();
                let drops = sensors.stats().dropped;
                if drops > reported_ring_drops {
                    client.add_ring_dropped(drops - reported_ring_drops);
                    reported_ring_drops = drops;
                }
            }
        },
        |_| (),
    )?;
    flush(&mut batch_cell.borrow_mut());
    let edge_counters = edge_cell.borrow().counters().clone();
    let drops = client.counters().drops;
    let stats_before_close = client.stats();
    runtime.block_on(client.close(Duration::from_secs(2)));
    let s = stats_before_close;
    if s.sessions == 0 {
        tracing::error!(
            operator = %cfg.operator,
            forwarded = edge_counters.forwarded,
            "the operator never accepted this agent: nothing was delivered"
        );
    }
    Ok(ConnectedStats {
        capture: capture_stats,
        edge: edge_counters,
        queue_full: queue_full.get(),
        delivery: Delivery {
            sessions: s.sessions,
            events_sent: s.events_sent,
            acked_seq: s.acked_seq,
            sent_seq: s.sent_seq,
            queued_at_close: s.queued,
            resend_evicted: drops.unacked_evicted,
        },
    })
}
