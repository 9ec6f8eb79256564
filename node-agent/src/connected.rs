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

/// Where a connected agent's client certificate comes from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Files issued by `kestrel certs issue`: `ca.pem` and this node's
    /// certificate and key in this directory.
    Files(PathBuf),
    /// Enrollment in a cluster: the pod's projected ServiceAccount token
    /// traded for a short-lived certificate, renewed at two thirds of its
    /// life (`Enroll`; docs/kubernetes.md, "Agent identity").
    Enroll(EnrollConfig),
}

/// How to enroll.
#[derive(Debug, Clone)]
pub struct EnrollConfig {
    /// The operator's enrollment endpoint (`https://host:port`).
    pub endpoint: String,
    /// The projected token (re-read at each enrollment: the kubelet
    /// rotates it).
    pub token_file: PathBuf,
    /// The CA that signed the operator's server certificate.
    pub ca_file: PathBuf,
}

/// Settings of a connected agent.
#[derive(Debug, Clone)]
pub struct ConnectedConfig {
    /// Operator endpoint (`https://host:port`).
    pub operator: String,
    /// Where the client certificate comes from.
    pub credentials: Credentials,
    /// The name to verify the operator's certificate against (default: the
    /// endpoint's host), e.g. its Service's DNS name when connecting to an
    /// address.
    pub server_name: Option<String>,
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
    /// Stopped before the operator issued a certificate.
    #[error("stopped before enrollment succeeded (last error: {0})")]
    NotEnrolled(String),
}

/// A certificate from enrollment.
struct Enrolled {
    tls: ClientTls,
    node: String,
    renew_at: Instant,
    expires_at: Instant,
}

fn read_small(path: &std::path::Path, what: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if bytes.len() > kestrel_proto::server::MAX_ENROLL_FIELD_BYTES {
        return Err(format!(
            "{what} {}: {} bytes, too large",
            path.display(),
            bytes.len()
        ));
    }
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("{what} {}: not UTF-8", path.display()))
}

/// One enrollment: a new key, its request, the token, the answer.
async fn enroll_once(
    e: &EnrollConfig,
    node: &str,
    server_name: Option<&str>,
) -> Result<Enrolled, String> {
    let ca = read_small(&e.ca_file, "CA file")?;
    let token = read_small(&e.token_file, "token file")?;
    let (key_pem, csr_pem) =
        kestrel_proto::new_key_and_request(node).map_err(|e| format!("key: {e}"))?;
    let mut trust = ClientTls::from_pem(ca.clone());
    if let Some(n) = server_name {
        trust = trust.with_domain(n);
    }
    let resp = kestrel_proto::client::enroll(
        &e.endpoint,
        &trust,
        kestrel_proto::wire::EnrollRequest { token, csr_pem },
        Duration::from_secs(10),
    )
    .await?;
    let now_unix = kestrel_proto::unix_now();
    let left = Duration::from_secs(resp.not_after_unix.saturating_sub(now_unix).max(0) as u64);
    let now = Instant::now();
    Ok(Enrolled {
        tls: trust.with_identity(resp.certificate_pem, key_pem),
        node: resp.node_name,
        renew_at: now + left * 2 / 3,
        expires_at: now + left,
    })
}

/// Enrolls, retrying with back-off (1 s doubling to 30 s) until it works,
/// `stop` is set or `deadline` passes.
async fn enroll_until(
    e: &EnrollConfig,
    node: &str,
    server_name: Option<&str>,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<Enrolled, ConnectedError> {
    let mut delay = Duration::from_secs(1);
    loop {
        match enroll_once(e, node, server_name).await {
            Ok(x) => {
                tracing::info!(node = %x.node, endpoint = %e.endpoint, "enrolled: the operator issued this node's certificate");
                return Ok(x);
            }
            Err(why) => {
                tracing::warn!(endpoint = %e.endpoint, error = %why, retry_in = ?delay, "enrollment failed");
                let mut slept = Duration::ZERO;
                while slept < delay {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Err(ConnectedError::NotEnrolled(why));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    slept += Duration::from_millis(100);
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
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
    let server_name = cfg.server_name.as_deref();
    let (tls, node_name, mut renewal) = match &cfg.credentials {
        Credentials::Files(dir) => {
            let material = TlsMaterial::load_agent(dir, &cfg.node_name)?;
            let mut tls = ClientTls::from_material(&material, Some(&cfg.node_name))?;
            if let Some(n) = server_name {
                tls = tls.with_domain(n);
            }
            (tls, cfg.node_name.clone(), None)
        }
        Credentials::Enroll(e) => {
            let got = runtime.block_on(enroll_until(e, &cfg.node_name, server_name, stop, None))?;
            if got.node != cfg.node_name {
                tracing::warn!(given = %cfg.node_name, certified = %got.node, "the operator certified another node name than --node; using the certified one");
            }
            let next = (got.renew_at, got.expires_at);
            (got.tls, got.node, Some((e.clone(), next)))
        }
    };
    let (renew_tx, renew_rx) = crossbeam_channel::unbounded::<ClientTls>();
    if let Some((e, (mut renew_at, mut expires_at))) = renewal.take() {
        let node = node_name.clone();
        let server_name = cfg.server_name.clone();
        runtime.spawn(async move {
            let never = AtomicBool::new(false);
            loop {
                tokio::time::sleep_until(renew_at.into()).await;
                match enroll_until(&e, &node, server_name.as_deref(), &never, Some(expires_at)).await {
                    Ok(got) => {
                        (renew_at, expires_at) = (got.renew_at, got.expires_at);
                        if renew_tx.send(got.tls).is_err() {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "the client certificate expired before it could be renewed; still trying");
                        (renew_at, expires_at) = (Instant::now(), Instant::now() + Duration::from_secs(3600));
                    }
                }
            }
        });
    }
    let hello = Hello {
        node_name: node_name.clone(),
        agent_id: format!("{}-{}", node_name, std::process::id()),
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
            while let Ok(tls) = renew_rx.try_recv() {
                client.renew_tls(tls);
            }
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
