//! `kestrel-transport-load`: the agent ⇄ operator transport alone under
//! load. Starts an in-process server with a COUNTING handler (no engine, no
//! scoring, no store) and N simulated agents that stream events to it over
//! loopback (mutual) TLS, then prints events/s ingested and the process's
//! memory (VmRSS and VmHWM from /proc/self/status). It is the ceiling the
//! transport puts on the operator; the operator's real path is measured by
//! `kestrel-loadgen` (crate `kestrel-operator`).
//!
//! ```text
//! cargo run --release -p kestrel-proto --bin kestrel-transport-load -- --agents 50 --seconds 10
//! ```

use anyhow::Context as _;
use clap::Parser;
use kestrel_events::{
    Argv, ByteStr, ContainerRef, Endpoint, Event, EventKind, Exec, FileOp, FileOpKind, Namespaces,
    NetOp, NetOpKind, Runtime, Task,
};
use kestrel_proto::client::{AgentClient, ClientConfig};
use kestrel_proto::server::{
    serve, AgentHandler, AgentIdentity, Disconnect, OperatorSender, Refusal,
};
use kestrel_proto::{
    wire, ClientTls, Counters, EventBatch, Hello, ServerTls, TlsMaterial, WorkloadEvent,
};
use prost::Message as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Load generator for the agent ⇄ operator transport alone (counting handler).
#[derive(Parser, Debug)]
#[command(name = "kestrel-transport-load", version)]
struct Args {
    /// Simulated agents (one stream and one client certificate each).
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events per `send` call of a simulated agent.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Events per second each agent offers (0: as many as the pipeline takes).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Server-only TLS instead of mutual TLS.
    #[arg(long)]
    no_mtls: bool,
    /// Runtime worker threads (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Default)]
struct Counting {
    events: AtomicU64,
    batches: AtomicU64,
    streams: AtomicU64,
    queue_dropped: AtomicU64,
}

#[tonic::async_trait]
impl AgentHandler for Counting {
    async fn on_connect(&self, _: &AgentIdentity, _: OperatorSender) -> Result<(), Refusal> {
        self.streams.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn on_batch(&self, _: &AgentIdentity, batch: EventBatch) -> Result<(), Refusal> {
        self.events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn on_counters(&self, _: &AgentIdentity, c: Counters) -> Result<(), Refusal> {
        self.queue_dropped
            .fetch_max(c.drops.queue_dropped, Ordering::Relaxed);
        Ok(())
    }
    async fn on_disconnect(&self, _: &AgentIdentity, _: Disconnect) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A realistic mix: an exec with arguments, file opens, an outbound connect.
fn sample_events(agent: usize, n: usize) -> Vec<WorkloadEvent> {
    let workload = format!("default/deployment/web-{}", agent % 10);
    let task = Task {
        pid: 1000 + agent as u32,
        tid: 1000,
        ppid: 1,
        uid: 0,
        comm: "nginx".into(),
    };
    (0..n)
        .map(|i| {
            let kind = match i % 4 {
                0 => EventKind::Exec(Exec {
                    filename: "/usr/bin/curl".into(),
                    exe: "curl".into(),
                    parent_comm: "sh".into(),
                    ns_pid: 42,
                    argv: Argv {
                        args: vec![
                            "curl".into(),
                            "-s".into(),
                            ByteStr::new(format!(
                                "http://backend:8080/api/v1/items?id={i}&req=9f1c2e7a"
                            )),
                        ],
                        size: 64,
                        truncated: false,
                        read_failed: false,
                    },
                    from_proc_scan: false,
                    dir: None,
                }),
                1 | 2 => EventKind::File(FileOp {
                    op: FileOpKind::Open,
                    syscall_nr: 257,
                    dfd: -100,
                    path: ByteStr::new(format!("/var/cache/nginx/proxy_temp/{}/{i}", i % 10)),
                    new_path: None,
                    new_dfd: None,
                    flags: 0o1101,
                    mode: 0o600,
                    truncated: false,
                    read_failed: false,
                    dir: None,
                    new_dir: None,
                }),
                _ => EventKind::Net(NetOp {
                    op: NetOpKind::Connect,
                    family: 2,
                    protocol: 6,
                    local: None,
                    remote: Some(Endpoint::Ip {
                        addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
                        port: 53,
                    }),
                    fd: 7,
                    sock: 0xffff_8880_0000_0000 + i as u64,
                    tcp_state: None,
                    read_failed: false,
                }),
            };
            WorkloadEvent {
                image: String::new(),
                process: None,
                chain: Vec::new(),
                workload: workload.clone(),
                event: Event {
                    ts_ns: 1_000_000 + i as u64,
                    cgroup_id: 5000 + agent as u64,
                    task: Some(task.clone()),
                    ns: Namespaces {
                        pid: 4_026_532_000,
                        mnt: 4_026_532_001,
                    },
                    container: Some(ContainerRef {
                        id: format!("{:064x}", agent + 1),
                        runtime: Runtime::Containerd,
                    }),
                    kind,
                },
            }
        })
        .collect()
}

fn memory() -> (String, String) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) this process has used, all threads.
fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given; the
    // buffer is a zeroed `rusage` we own, valid for the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: rc == 0: the kernel filled it (and zeroed is a valid rusage anyway).
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kestrel-transport-load-{}", std::process::id()));
    let names: Vec<String> = (0..args.agents).map(|i| format!("node-{i}")).collect();
    let material = TlsMaterial::generate(&dir, &["localhost", "127.0.0.1"], &names)
        .context("generating TLS material")?;
    let counting = Arc::new(Counting::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = serve(
        listener,
        ServerTls::from_material(&material, !args.no_mtls)?,
        counting.clone(),
    )
    .await?;
    let endpoint = format!("https://127.0.0.1:{}", server.local_addr().port());

    let sample = sample_events(0, args.batch);
    let bytes_per_event = sample
        .iter()
        .map(|e| wire::Event::from(e).encoded_len())
        .sum::<usize>() as f64
        / sample.len().max(1) as f64;

    let stop = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    let mut producers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let tls = ClientTls::from_material(&material, (!args.no_mtls).then_some(name.as_str()))?;
        let hello = Hello {
            node_name: name.clone(),
            agent_id: format!("loadgen-{i}"),
            version: env!("CARGO_PKG_VERSION").into(),
            boot_id: "loadgen".into(),
            instance: 0,
        };
        let (client, _inbound) =
            AgentClient::connect_with(ClientConfig::new(endpoint.clone()), tls, hello).await?;
        let client = Arc::new(client);
        clients.push(Arc::clone(&client));
        let template = sample_events(i, args.batch);
        let (stop, offered, dropped) = (stop.clone(), offered.clone(), dropped.clone());
        let pause = if args.rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(args.batch as f64 / args.rate as f64)
        };
        producers.push(tokio::spawn(async move {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let n = template.len() as u64;
                offered.fetch_add(n, Ordering::Relaxed);
                match client.send(template.clone()) {
                    Ok(()) => {}
                    Err(full) => {
                        dropped.fetch_add(full.dropped as u64, Ordering::Relaxed);
                        // The queue is full: give the sender time to drain it.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                if pause.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    next += pause;
                    tokio::time::sleep_until(next.into()).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let streams = counting.streams.load(Ordering::Relaxed);
    let (e0, b0, o0, d0) = (
        counting.events.load(Ordering::Relaxed),
        counting.batches.load(Ordering::Relaxed),
        offered.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let events = counting.events.load(Ordering::Relaxed) - e0;
    let batches = counting.batches.load(Ordering::Relaxed) - b0;
    let offered_n = offered.load(Ordering::Relaxed) - o0;
    let dropped_n = dropped.load(Ordering::Relaxed) - d0;
    let (rss, hwm) = memory();

    stop.store(true, Ordering::Relaxed);
    for p in producers {
        let _ = p.await;
    }
    drop(clients);
    server.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);

    let rate = events as f64 / secs;
    println!("kestrel-transport-load (counting handler, transport only): {} agents ({} streams up), {}, batch {} events, {:.0} B/event on the wire",
        args.agents, streams, if args.no_mtls { "server TLS" } else { "mutual TLS" }, args.batch, bytes_per_event);
    println!("measured     {secs:.1} s");
    println!("ingested     {events} events, {batches} batches");
    println!("events/s     {rate:.0}");
    println!("MB/s         {:.1}", rate * bytes_per_event / 1e6);
    println!("offered      {offered_n} events, dropped at agents (queue full) {dropped_n}");
    println!(
        "cpu          {cpu:.1} s in {secs:.1} s ({:.0} % of one core; agents and server together), {:.0} events per cpu-second",
        100.0 * cpu / secs,
        events as f64 / cpu
    );
    println!("VmRSS        {rss}");
    println!("VmHWM        {hwm}");
    println!(
        "cpus         {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    Ok(())
}
