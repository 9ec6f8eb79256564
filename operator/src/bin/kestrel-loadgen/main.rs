//! `kestrel-loadgen`: the operator under load, on its real path.
//!
//! The operator runs in this process exactly as `kestrel-operator` runs it
//! (`kestrel_operator::serve::run`): the gRPC server over loopback mutual
//! TLS, the pipeline with the real engine (profile learning and matching),
//! the real embedding model behind its argument cache, rule-pack scoring, and
//! the directory-of-YAML store (profiles, alerts, `status.json`) in a
//! temporary folder. Simulated agents run in a second process (this binary,
//! `agents`), so CPU time and RSS are the operator's alone.
//!
//! Two measured phases:
//!
//! - **learning**: fresh profiles (mode `Auto`, learning window 1 s, minimum
//!   learning time = warm-up + measured seconds + 2 s), every event goes
//!   through `learn`;
//! - **detection**: the harness keeps the same traffic flowing until every
//!   profile converged (no growth in 2 windows of 1 s) and switched to
//!   `Detecting` by the engine's own convergence rule, then measures again
//!   with a fraction `--anomaly` of anomalous events (miner exec, write under
//!   `/etc`, pool connection), which are scored and stored as alerts.
//!
//! Events count when the pipeline has handled them (`ServeCounters::handled`).
//! With `--rate auto` the offered rate follows what the pipeline sustains
//! (the operator's queue stays short and nothing is dropped), so the CPU
//! time is not spent on events that are then dropped.
//!
//! ```text
//! cargo run --release -p kestrel-operator --bin kestrel-loadgen -- --seconds 10
//! ```

mod agents;
mod mix;
mod usage;

use anyhow::Context as _;
use clap::Parser;
use kestrel_embed::Embedder;
use kestrel_embed_onnx::{ArgEmbedder, EmbedConfig};
use kestrel_events::WorkloadSpec;
use kestrel_operator::config::{load_arg_embedder, LearningSettings, OperatorConfig};
use kestrel_operator::engine::WorkloadStatus;
use kestrel_operator::output::Line;
use kestrel_operator::serve::{ServeConfig, ServeCounters};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The operator's real path under load: gRPC (mutual TLS) → engine → scoring → store.
#[derive(Parser, Debug)]
#[command(name = "kestrel-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// The simulated agents' process (started by the harness).
    #[command(hide = true)]
    Agents(agents::AgentsArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Simulated agents (one TLS stream and client certificate each).
    #[arg(long, default_value_t = 8)]
    agents: usize,
    /// Workloads (each with 3 replicas spread over the agents).
    #[arg(long, default_value_t = 50)]
    workloads: usize,
    /// Measured seconds of each phase.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of traffic before the learning measurement (ramp-up, first
    /// model calls, first compactions).
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Offered events/s, all agents together; `auto`: the most the pipeline
    /// sustains without a growing queue.
    #[arg(long, default_value = "auto")]
    rate: String,
    /// Most events per `send` of an agent (the node agent's batch size).
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Fraction of anomalous events during detection.
    #[arg(long, default_value_t = 0.001)]
    anomaly: f64,
    /// Folder of the embedding model (default: `$KESTREL_MODEL_DIR`, else
    /// /var/cache/kestrel/models; `make deps` installs it).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Use the test embedder (character trigrams) instead of the model; the
    /// output says so.
    #[arg(long)]
    test_embedder: bool,
    /// Tokio worker threads of the agents' process.
    #[arg(long, default_value_t = 2)]
    agent_threads: usize,
    /// Longest wait for every profile to converge before detection.
    #[arg(long, default_value_t = 60.0)]
    converge_timeout: f64,
    /// Seed of the event mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the operator's output lines (alerts, phases, progress) here
    /// instead of /dev/null.
    #[arg(long)]
    lines: Option<PathBuf>,
    /// Keep the state folder (profiles, alerts, status.json) and say where.
    #[arg(long)]
    keep: bool,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    output: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Agents(a)) => agents::run(a),
        None => run(cli.run),
    }
}

/// What the operator printed, tallied on the engine thread.
struct Tally {
    sink: std::fs::File,
    alert_updates: u64,
    alert_ids: HashSet<String>,
    detecting: HashSet<String>,
    phase_changes: u64,
    errors: u64,
    last_error: Option<String>,
    progress: Vec<WorkloadStatus>,
}

impl Tally {
    fn emit(&mut self, line: &Line) {
        // the operator prints every line as JSON: do the same work
        if let Ok(mut text) = serde_json::to_vec(line) {
            text.push(b'\n');
            let _ = self.sink.write_all(&text);
        }
        match line {
            Line::Alert(a) => {
                self.alert_updates += 1;
                self.alert_ids.insert(a.id.clone());
            }
            Line::Phase { workload, to, .. } => {
                self.phase_changes += 1;
                if to == "Detecting" {
                    self.detecting.insert(workload.clone());
                } else {
                    self.detecting.remove(workload);
                }
            }
            Line::Progress(p) => self.progress = p.clone(),
            Line::Relearn { .. } | Line::Taught { .. } => {}
            Line::Error { kind, message } => {
                self.errors += 1;
                self.last_error = Some(format!("{kind}: {message}"));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The embedder and how the output names it.
struct Embedding {
    embedder: Arc<dyn Embedder>,
    cached: Option<Arc<ArgEmbedder>>,
    label: String,
}

fn embedder(args: &RunArgs, cfg: &OperatorConfig) -> anyhow::Result<Embedding> {
    if args.test_embedder {
        let e = kestrel_profile::testing::TestEmbedder::new();
        return Ok(Embedding {
            label: format!("TEST EMBEDDER ({}, not the production model)", e.model_id()),
            embedder: Arc::new(e),
            cached: None,
        });
    }
    let ecfg = match &args.model_dir {
        Some(d) => EmbedConfig::from_dir(d),
        None => EmbedConfig::from_env(),
    };
    if !ecfg.model_path.is_file() {
        anyhow::bail!(
            "no embedding model at {}: run `make deps` (or `scripts/fetch-model.sh`), \
             pass --model-dir, or measure with --test-embedder",
            ecfg.model_path.display()
        );
    }
    eprintln!(
        "kestrel-loadgen: loading the embedding model from {}",
        ecfg.model_path.display()
    );
    let cached = load_arg_embedder(cfg)?;
    Ok(Embedding {
        label: format!(
            "{} (ONNX, {}), argument cache",
            cached.model_id(),
            ecfg.model_path.display()
        ),
        embedder: cached.clone(),
        cached: Some(cached),
    })
}

/// The operator's config: the workloads, and learning that converges within
/// the run (see the crate docs).
fn operator_config(args: &RunArgs) -> OperatorConfig {
    OperatorConfig {
        workloads: (0..args.workloads)
            .map(|w| WorkloadSpec {
                name: mix::workload_name(w),
                image: Some(mix::workload_image(w).into()),
                containers: kestrel_events::Glob::new(&mix::workload_glob(w))
                    .expect("a prefix and `*` is a valid glob"),
            })
            .collect(),
        learning: LearningSettings {
            window: Some("1s".into()),
            min_learning_time: Some(format!(
                "{}ms",
                ((args.warmup + args.seconds + 2.0) * 1000.0) as u64
            )),
            clean_windows: Some(2),
            max_new_per_window: Some(0),
        },
        mode: Some("Auto".into()),
        model_dir: args.model_dir.clone(),
        ..OperatorConfig::default()
    }
}

/// Everything read at one instant.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    handled: u64,
    received: u64,
    backpressure_waits: u64,
    cpu: f64,
    engine_cpu: f64,
    threads: BTreeMap<String, f64>,
    agents_cpu: f64,
    agents: agents::AgentsReport,
    alert_updates: u64,
    alerts: usize,
    rss_mib: f64,
    cache: kestrel_embed_onnx::CacheStats,
}

/// One measured phase.
#[derive(Debug, serde::Serialize)]
struct PhaseResult {
    seconds: f64,
    handled: u64,
    events_per_second: f64,
    operator_cores: f64,
    events_per_core_second: f64,
    engine_thread_cores: f64,
    events_per_engine_cpu_second: f64,
    threads_cores: BTreeMap<String, f64>,
    agents_cores: f64,
    offered: u64,
    received: u64,
    dropped_at_agents: u64,
    backpressure_waits: u64,
    anomalies: u64,
    alerts_created: usize,
    alert_updates: u64,
    embed_lookups: u64,
    embed_model_calls: u64,
    vm_rss_mib: f64,
    load_average: f64,
}

fn phase(a: &Snapshot, b: &Snapshot) -> PhaseResult {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let handled = b.handled - a.handled;
    let cpu = b.cpu - a.cpu;
    let engine = b.engine_cpu - a.engine_cpu;
    let mut threads = BTreeMap::new();
    for (name, t) in &b.threads {
        let d = t - a.threads.get(name).copied().unwrap_or(0.0);
        let key = match name.as_str() {
            "kestrel-engine" => "engine",
            // the server's runtime (tokio's default thread name)
            "tokio-runtime-w" | "tokio-rt-worker" => "grpc",
            "kestrel-io" => "io",
            "kestrel-embed" => "embed",
            _ => "other",
        };
        *threads.entry(key.to_string()).or_insert(0.0) += d / secs;
    }
    PhaseResult {
        seconds: secs,
        handled,
        events_per_second: handled as f64 / secs,
        operator_cores: cpu / secs,
        events_per_core_second: handled as f64 / cpu,
        engine_thread_cores: engine / secs,
        events_per_engine_cpu_second: handled as f64 / engine,
        threads_cores: threads,
        agents_cores: (b.agents_cpu - a.agents_cpu) / secs,
        offered: b.agents.offered - a.agents.offered,
        received: b.received - a.received,
        dropped_at_agents: b.agents.dropped - a.agents.dropped,
        backpressure_waits: b.backpressure_waits - a.backpressure_waits,
        anomalies: b.agents.anomalies.iter().sum::<u64>() - a.agents.anomalies.iter().sum::<u64>(),
        alerts_created: b.alerts - a.alerts,
        alert_updates: b.alert_updates - a.alert_updates,
        embed_lookups: (b.cache.hits + b.cache.misses) - (a.cache.hits + a.cache.misses),
        embed_model_calls: b.cache.batches - a.cache.batches,
        vm_rss_mib: b.rss_mib,
        load_average: usage::load_average(),
    }
}

/// The agents' process and the offered rate.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    auto: bool,
    rate: f64,
    counters: Arc<ServeCounters>,
    /// (when, received, queue-dropped) over the last second.
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Driver {
    fn send(&mut self, command: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{command}").context("the agents' process is gone")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn report(&mut self) -> anyhow::Result<agents::AgentsReport> {
        self.send("report")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("agents' report {line:?}"))
    }

    /// Every 100 ms with `--rate auto`: more while the operator's queue is
    /// short and nothing is dropped, less when it fills, never far above
    /// what actually arrived over the last second (the agents' own limit).
    fn steer(&mut self) -> anyhow::Result<()> {
        if !self.auto {
            return Ok(());
        }
        let now = Instant::now();
        if self
            .samples
            .back()
            .is_some_and(|s| now.duration_since(s.0) < Duration::from_millis(100))
        {
            return Ok(());
        }
        let c = &self.counters;
        let received = c.received.load(Ordering::Relaxed);
        let handled = c.handled.load(Ordering::Relaxed);
        // A batch that waited for room means the queue was full.
        let waits = c.backpressure_waits.load(Ordering::Relaxed);
        let backlog = received.saturating_sub(handled);
        let newly_dropped = self.samples.back().is_some_and(|s| waits > s.2);
        self.samples.push_back((now, received, waits));
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.0) > Duration::from_secs(1))
        {
            self.samples.pop_front();
        }
        let arriving = match (self.samples.front(), self.samples.len()) {
            (Some(first), n) if n > 5 => {
                (received - first.1) as f64 / now.duration_since(first.0).as_secs_f64()
            }
            _ => f64::INFINITY,
        };
        let old = self.rate;
        // the queue holds 65 536; a few batches of 512 from 8 agents
        // arrive together, so up to 16 384 waiting is still keeping up
        if newly_dropped || backlog > 32_768 {
            self.rate *= 0.85;
        } else if backlog < 16_384 {
            self.rate = (self.rate * 1.04 + 1_000.0).min(arriving * 1.25 + 10_000.0);
        }
        self.rate = self.rate.max(1_000.0);
        if (self.rate - old).abs() > old * 0.005 {
            let r = self.rate as u64;
            self.send(&format!("rate {r}"))?;
        }
        Ok(())
    }

    fn run_for(&mut self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
            self.steer()?;
        }
        Ok(())
    }
}

struct Harness {
    tally: Arc<Mutex<Tally>>,
    counters: Arc<ServeCounters>,
    engine_tid: u32,
    cache: Option<Arc<ArgEmbedder>>,
}

impl Harness {
    fn snapshot(&self, driver: &mut Driver) -> anyhow::Result<Snapshot> {
        let agents = driver.report()?;
        let (alert_updates, alerts) = {
            let t = lock(&self.tally);
            (t.alert_updates, t.alert_ids.len())
        };
        let (rss_mib, _) = usage::memory_mib();
        let c = &self.counters;
        Ok(Snapshot {
            at: Instant::now(),
            handled: c.handled.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            backpressure_waits: c.backpressure_waits.load(Ordering::Relaxed),
            cpu: usage::process_cpu(),
            engine_cpu: usage::thread_cpu(self.engine_tid),
            threads: usage::threads_by_name(),
            agents_cpu: usage::pid_cpu(driver.child.id()),
            agents,
            alert_updates,
            alerts,
            rss_mib,
            cache: self.cache.as_ref().map(|c| c.stats()).unwrap_or_default(),
        })
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kestrel-loadgen-{}", std::process::id()));
    let result = measure(&args, &dir);
    if args.keep {
        eprintln!("kestrel-loadgen: state kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn measure(args: &RunArgs, dir: &Path) -> anyhow::Result<()> {
    let (state_dir, tls_dir) = (dir.join("state"), dir.join("tls"));
    std::fs::create_dir_all(&state_dir)?;
    let cfg = operator_config(args);
    let embedding = embedder(args, &cfg)?;
    let load_start = usage::load_average();
    let names: Vec<String> = (0..args.agents).map(agents::node_name).collect();
    let counters = Arc::new(ServeCounters::default());
    let serve = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        tls_dir: tls_dir.clone(),
        agent_names: names,
        mutual_tls: true,
        progress_every: Duration::from_secs(5),
        counters: Arc::clone(&counters),
        kubernetes: None,
        http_listen: None,
        server_names: Vec::new(),
    };
    let sink = match &args.lines {
        Some(p) => std::fs::File::create(p).with_context(|| p.display().to_string())?,
        None => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
    };
    let tally = Arc::new(Mutex::new(Tally {
        sink,
        alert_updates: 0,
        alert_ids: HashSet::new(),
        detecting: HashSet::new(),
        phase_changes: 0,
        errors: 0,
        last_error: None,
        progress: Vec::new(),
    }));

    // the operator, on its own thread, as `kestrel-operator` runs it
    let stop = Arc::new(AtomicBool::new(false));
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let engine = {
        let (stop, tally, state_dir) = (Arc::clone(&stop), Arc::clone(&tally), state_dir.clone());
        let embedder = Arc::clone(&embedding.embedder);
        std::thread::Builder::new()
            .name("kestrel-engine".into())
            .spawn(move || {
                let tid = usage::gettid();
                let tx = up_tx.clone();
                kestrel_operator::serve::run(
                    &cfg,
                    &serve,
                    &state_dir,
                    &stop,
                    embedder,
                    |line| lock(&tally).emit(line),
                    move |started| {
                        if let kestrel_operator::serve::Started::Listening(addr) = started {
                            let _ = tx.send((tid, addr));
                        }
                    },
                )
            })?
    };
    let Ok((engine_tid, addr)) = up_rx.recv_timeout(Duration::from_secs(60)) else {
        stop.store(true, Ordering::Relaxed);
        return match engine.join() {
            Ok(Err(e)) => Err(e.context("the operator did not start")),
            _ => Err(anyhow::anyhow!("the operator did not start")),
        };
    };

    let (auto, rate) = match args.rate.as_str() {
        "auto" => (true, 20_000.0),
        r => (false, r.parse::<f64>().context("--rate: auto or events/s")?),
    };
    let mut child = Command::new(std::env::current_exe()?)
        .arg("agents")
        .args(["--endpoint", &format!("https://127.0.0.1:{}", addr.port())])
        .arg("--tls-dir")
        .arg(&tls_dir)
        .args(["--agents", &args.agents.to_string()])
        .args(["--workloads", &args.workloads.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--threads", &args.agent_threads.to_string()])
        .args(["--rate", &(rate as u64).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the agents' process")?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        anyhow::bail!("the agents' process has no pipes");
    };
    let mut driver = Driver {
        child,
        stdin,
        stdout: BufReader::new(stdout),
        auto,
        rate,
        counters: Arc::clone(&counters),
        samples: VecDeque::new(),
    };
    let h = Harness {
        tally: Arc::clone(&tally),
        counters: Arc::clone(&counters),
        engine_tid,
        cache: embedding.cached.clone(),
    };

    let outcome = (|| -> anyhow::Result<(PhaseResult, PhaseResult, usize, f64)> {
        eprintln!("kestrel-loadgen: learning, {:.0} s warm-up", args.warmup);
        driver.run_for(Duration::from_secs_f64(args.warmup))?;
        let l0 = h.snapshot(&mut driver)?;
        eprintln!("kestrel-loadgen: learning, measuring {:.0} s", args.seconds);
        driver.run_for(Duration::from_secs_f64(args.seconds))?;
        let l1 = h.snapshot(&mut driver)?;

        let wait = Instant::now();
        let mut last_note = Instant::now();
        loop {
            let n = lock(&tally).detecting.len();
            if n >= args.workloads {
                break;
            }
            if wait.elapsed().as_secs_f64() > args.converge_timeout {
                eprintln!(
                    "kestrel-loadgen: only {n} of {} profiles detecting after {:.0} s; measuring anyway",
                    args.workloads, args.converge_timeout
                );
                break;
            }
            if last_note.elapsed() >= Duration::from_secs(2) {
                last_note = Instant::now();
                eprintln!(
                    "kestrel-loadgen: waiting for convergence, {n} of {} profiles detecting",
                    args.workloads
                );
            }
            driver.run_for(Duration::from_millis(200))?;
        }
        let converge_s = wait.elapsed().as_secs_f64();
        let detecting = lock(&tally).detecting.len();

        driver.send(&format!("anomaly {}", args.anomaly))?;
        driver.run_for(Duration::from_secs(2))?;
        let d0 = h.snapshot(&mut driver)?;
        eprintln!(
            "kestrel-loadgen: detection, measuring {:.0} s",
            args.seconds
        );
        driver.run_for(Duration::from_secs_f64(args.seconds))?;
        let d1 = h.snapshot(&mut driver)?;
        Ok((phase(&l0, &l1), phase(&d0, &d1), detecting, converge_s))
    })();

    let _ = driver.send("stop");
    let mut last = String::new();
    let _ = driver.stdout.read_line(&mut last);
    let _ = driver.child.wait();
    stop.store(true, Ordering::Relaxed);
    match engine.join() {
        Ok(r) => r.context("the operator failed")?,
        Err(_) => anyhow::bail!("the operator thread panicked"),
    }
    let (learning, detection, detecting, converge_s) = outcome?;
    let (_, hwm) = usage::memory_mib();
    let t = lock(&tally);
    let profile = (
        t.progress.iter().map(|p| p.branches).sum::<usize>(),
        t.progress.iter().map(|p| p.exemplars).sum::<usize>(),
    );
    let cache = embedding.cached.as_ref().map(|c| c.stats());
    let report = Report {
        embedder: embedding.label.clone(),
        agents: args.agents,
        workloads: args.workloads,
        batch: args.batch,
        rate: args.rate.clone(),
        anomaly_fraction: args.anomaly,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load_average_start: load_start,
        learning,
        detection,
        detecting_workloads: detecting,
        convergence_wait_seconds: converge_s,
        vm_hwm_mib: hwm,
        profile_branches: profile.0,
        profile_exemplars: profile.1,
        embed_hit_ratio: cache.map(|c| c.hit_ratio()),
        embed_cache_entries: cache.map(|c| c.entries),
        phase_changes: t.phase_changes,
        errors: t.errors,
        last_error: t.last_error.clone(),
    };
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => print_table(&report),
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct Report {
    embedder: String,
    agents: usize,
    workloads: usize,
    batch: usize,
    rate: String,
    anomaly_fraction: f64,
    cpus: usize,
    load_average_start: f64,
    learning: PhaseResult,
    detection: PhaseResult,
    detecting_workloads: usize,
    convergence_wait_seconds: f64,
    vm_hwm_mib: f64,
    profile_branches: usize,
    profile_exemplars: usize,
    embed_hit_ratio: Option<f64>,
    embed_cache_entries: Option<usize>,
    phase_changes: u64,
    errors: u64,
    last_error: Option<String>,
}

fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn print_table(r: &Report) {
    println!("kestrel-loadgen: the operator's real path (gRPC mutual TLS -> engine -> scoring -> YAML store)");
    println!("embedder      {}", r.embedder);
    println!(
        "agents        {} in a separate process, {} workloads x 3 replicas, batch {}, rate {}",
        r.agents, r.workloads, r.batch, r.rate
    );
    println!(
        "machine       {} CPUs, load average {:.2} at start",
        r.cpus, r.load_average_start
    );
    println!();
    let (l, d) = (&r.learning, &r.detection);
    let row = |name: &str, a: String, b: String| println!("{name:<34} {a:>14} {b:>14}");
    row("", "learning".into(), "detection".into());
    row(
        "measured",
        format!("{:.1} s", l.seconds),
        format!("{:.1} s", d.seconds),
    );
    row(
        "events handled by the pipeline",
        thousands(l.handled as f64),
        thousands(d.handled as f64),
    );
    row(
        "events/s",
        thousands(l.events_per_second),
        thousands(d.events_per_second),
    );
    row(
        "events/s per core (operator CPU)",
        thousands(l.events_per_core_second),
        thousands(d.events_per_core_second),
    );
    row(
        "events per engine-thread CPU-s",
        thousands(l.events_per_engine_cpu_second),
        thousands(d.events_per_engine_cpu_second),
    );
    row(
        "operator CPU, cores",
        format!("{:.2}", l.operator_cores),
        format!("{:.2}", d.operator_cores),
    );
    for key in ["engine", "grpc", "io", "embed", "other"] {
        let a = l.threads_cores.get(key).copied().unwrap_or(0.0);
        let b = d.threads_cores.get(key).copied().unwrap_or(0.0);
        row(
            &format!("  {key} threads"),
            format!("{a:.2}"),
            format!("{b:.2}"),
        );
    }
    row(
        "agents' process CPU, cores",
        format!("{:.2}", l.agents_cores),
        format!("{:.2}", d.agents_cores),
    );
    row(
        "offered / dropped at agents",
        format!("{}/{}", thousands(l.offered as f64), l.dropped_at_agents),
        format!("{}/{}", thousands(d.offered as f64), d.dropped_at_agents),
    );
    row(
        "received by the operator",
        thousands(l.received as f64),
        thousands(d.received as f64),
    );
    row(
        "batches that waited for the operator's queue",
        l.backpressure_waits.to_string(),
        d.backpressure_waits.to_string(),
    );
    row(
        "anomalous events sent",
        l.anomalies.to_string(),
        d.anomalies.to_string(),
    );
    row(
        "alerts new / updates stored",
        format!("{}/{}", l.alerts_created, l.alert_updates),
        format!("{}/{}", d.alerts_created, d.alert_updates),
    );
    row(
        "argument lookups / model calls",
        format!(
            "{}/{}",
            thousands(l.embed_lookups as f64),
            l.embed_model_calls
        ),
        format!(
            "{}/{}",
            thousands(d.embed_lookups as f64),
            d.embed_model_calls
        ),
    );
    row(
        "VmRSS at the end, MiB",
        format!("{:.0}", l.vm_rss_mib),
        format!("{:.0}", d.vm_rss_mib),
    );
    row(
        "load average at the end",
        format!("{:.2}", l.load_average),
        format!("{:.2}", d.load_average),
    );
    println!();
    println!(
        "VmHWM {:.0} MiB; {} of {} profiles detecting after {:.1} s of convergence wait; profiles hold {} branches, {} exemplars",
        r.vm_hwm_mib,
        r.detecting_workloads,
        r.workloads,
        r.convergence_wait_seconds,
        r.profile_branches,
        r.profile_exemplars
    );
    if let (Some(h), Some(e)) = (r.embed_hit_ratio, r.embed_cache_entries) {
        println!(
            "argument cache: {:.2} % hits over the run, {e} entries",
            100.0 * h
        );
    }
    if r.errors > 0 {
        println!(
            "ERRORS: {} (last: {})",
            r.errors,
            r.last_error.as_deref().unwrap_or("")
        );
    }
}
