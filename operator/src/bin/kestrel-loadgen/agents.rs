//! The simulated agents, in a process of their own (`kestrel-loadgen
//! agents …`, started by the harness) so that the operator's CPU time and
//! memory are measured alone.
//!
//! Each agent is a real [`AgentClient`] (own TLS connection, client
//! certificate, stream, bounded queue) that sends batches of
//! [`crate::mix::Mix`] events, as the node agent's forwarder does: a batch of
//! at most `batch` events per `send`, dropped and counted when the queue is
//! full. The harness steers them over stdin, one command per line:
//!
//! - `rate N`: offer N events/s in total (split evenly; 0: as fast as possible)
//! - `anomaly F`: make fraction F of the events anomalous
//! - `report`: print the counters as one JSON line on stdout
//! - `stop`: close the streams (flushing queued events), print the counters, exit

use crate::mix::{Anomalies, Mix};
use anyhow::Context as _;
use kestrel_proto::client::{AgentClient, ClientConfig};
use kestrel_proto::{ClientTls, Hello, TlsMaterial};
use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flags of the agents' process (set by the harness).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentsArgs {
    /// The operator, `https://127.0.0.1:PORT`.
    #[arg(long)]
    pub endpoint: String,
    /// TLS material the operator generated (CA and client certificates).
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Simulated agents (`node-0` …).
    #[arg(long)]
    pub agents: usize,
    /// Workloads.
    #[arg(long)]
    pub workloads: usize,
    /// Most events per `send`.
    #[arg(long)]
    pub batch: usize,
    /// Seed of the event mix.
    #[arg(long)]
    pub seed: u64,
    /// Tokio worker threads of this process.
    #[arg(long)]
    pub threads: usize,
    /// Initial total rate, events/s (0: as fast as possible).
    #[arg(long)]
    pub rate: u64,
}

/// Node name of agent `i` (a name of its client certificate).
pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Total offered rate (events/s); 0: unpaced.
    rate: AtomicU64,
    /// Anomalous fraction, as f64 bits.
    anomaly: AtomicU64,
    offered: AtomicU64,
    dropped: AtomicU64,
    anomalies: Mutex<Anomalies>,
}

/// What the agents did so far (one JSON line per `report`).
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AgentsReport {
    /// Events handed to `send`.
    pub offered: u64,
    /// Of those, dropped because an agent's queue was full.
    pub dropped: u64,
    /// Anomalous events offered: miner execs, writes under /etc, pool connections.
    pub anomalies: [u64; 3],
}

impl Shared {
    fn report(&self) -> AgentsReport {
        let a = *self
            .anomalies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        AgentsReport {
            offered: self.offered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            anomalies: [a.exec, a.etc_write, a.pool_connect],
        }
    }
}

fn print_report(shared: &Shared) {
    println!(
        "{}",
        serde_json::to_string(&shared.report()).unwrap_or_default()
    );
}

/// Runs the agents until `stop` arrives on stdin (or stdin closes).
pub fn run(args: AgentsArgs) -> anyhow::Result<()> {
    let names: Vec<String> = (0..args.agents).map(node_name).collect();
    let material = TlsMaterial::ensure(&args.tls_dir, &["localhost", "127.0.0.1"], &names)
        .context("TLS material of the agents")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .thread_name("loadgen-agent")
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared::default());
    shared.rate.store(args.rate, Ordering::Relaxed);
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let tls = ClientTls::from_material(&material, Some(name))?;
        let hello = Hello {
            node_name: name.clone(),
            agent_id: format!("loadgen-{i}"),
            version: env!("CARGO_PKG_VERSION").into(),
            boot_id: "loadgen".into(),
            instance: 0,
        };
        let config = ClientConfig::new(args.endpoint.clone());
        let (client, mut inbound) =
            runtime.block_on(AgentClient::connect_with(config, tls, hello))?;
        // digests and targets come back; a real agent applies them at the
        // edge, these agents model what passes the edge, so they only drain
        runtime.spawn(async move { while inbound.recv().await.is_some() {} });
        let mix = Mix::new(i, args.agents, args.workloads, args.seed);
        tasks.push(runtime.spawn(agent(
            client,
            mix,
            Arc::clone(&shared),
            args.agents,
            args.batch.max(1),
        )));
    }

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("rate"), Some(n)) => {
                shared
                    .rate
                    .store(n.parse::<f64>().unwrap_or(0.0) as u64, Ordering::Relaxed);
            }
            (Some("anomaly"), Some(f)) => {
                let f: f64 = f.parse().unwrap_or(0.0);
                shared.anomaly.store(f.to_bits(), Ordering::Relaxed);
            }
            (Some("report"), _) => print_report(&shared),
            (Some("stop"), _) => break,
            _ => eprintln!("kestrel-loadgen agents: unknown command {line:?}"),
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    print_report(&shared);
    Ok(())
}

async fn agent(
    client: AgentClient,
    mut mix: Mix,
    shared: Arc<Shared>,
    agents: usize,
    batch: usize,
) {
    let mut next = Instant::now();
    let mut seen = Anomalies::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let anomaly = f64::from_bits(shared.anomaly.load(Ordering::Relaxed));
        let mut events = Vec::with_capacity(batch);
        let before = seen;
        for _ in 0..batch {
            if let Some(e) = mix.next(anomaly, &mut seen) {
                events.push(e);
            }
        }
        if seen.total() != before.total() {
            let mut a = shared
                .anomalies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            a.exec += seen.exec - before.exec;
            a.etc_write += seen.etc_write - before.etc_write;
            a.pool_connect += seen.pool_connect - before.pool_connect;
        }
        let n = events.len();
        shared.offered.fetch_add(n as u64, Ordering::Relaxed);
        if let Err(full) = client.send(events) {
            shared
                .dropped
                .fetch_add(full.dropped as u64, Ordering::Relaxed);
        }
        let rate = shared.rate.load(Ordering::Relaxed) as f64 / agents.max(1) as f64;
        if rate <= 0.0 {
            tokio::task::yield_now().await;
            continue;
        }
        next += Duration::from_secs_f64(n.max(1) as f64 / rate);
        let now = Instant::now();
        // after a stall, do not burst to catch up more than 50 ms
        if next + Duration::from_millis(50) < now {
            next = now;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    client.close(Duration::from_secs(5)).await;
}
