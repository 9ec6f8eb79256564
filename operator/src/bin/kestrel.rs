//! `kestrel`: standalone mode and state inspection.
use anyhow::Context;
use clap::{Parser, Subcommand};
use kestrel_operator::standalone::{self, Line, StandaloneConfig};
use kestrel_operator::store::{DirStore, Store};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kestrel",
    version,
    about = "Kestrel: learn what containers normally do, alert on the rest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Agent and operator in one process on this host (root, BTF kernel).
    Standalone {
        /// Where profiles, alerts and status.json are kept.
        #[arg(long)]
        state_dir: PathBuf,
        /// YAML config (workloads, learning, thresholds).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seconds between progress lines.
        #[arg(long, default_value_t = 5.0)]
        progress_every: f64,
    },
    /// The operator: serves node agents over gRPC (mutual TLS) and runs the
    /// profile/detection/scoring pipeline; state as in standalone mode.
    Operator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: std::net::SocketAddr,
        /// Where profiles, alerts and status.json are kept.
        #[arg(long)]
        state_dir: PathBuf,
        /// TLS material (generated when missing).
        #[arg(long)]
        tls_dir: PathBuf,
        /// Do not require client certificates (TLS without mutual authentication).
        #[arg(long)]
        no_mutual_tls: bool,
        /// Node names to issue client certificates for (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "localhost")]
        agents: Vec<String>,
        /// YAML config (workloads, learning, thresholds, scoring).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seconds between progress lines.
        #[arg(long, default_value_t = 5.0)]
        progress_every: f64,
    },
    /// Print the workloads and alerts kept in a state directory.
    Status {
        /// The state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table")]
        output: String,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Stops on SIGINT/SIGTERM and reads the config file (defaults without one).
fn prepare(config: Option<&std::path::Path>) -> anyhow::Result<StandaloneConfig> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    match config {
        Some(p) => StandaloneConfig::load(p),
        None => Ok(StandaloneConfig::default()),
    }
}

/// One JSON object per line on stdout, flushed at once.
fn print_line(line: &Line) {
    let mut out = std::io::stdout().lock();
    if serde_json::to_writer(&mut out, line).is_ok() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Standalone {
            state_dir,
            config,
            progress_every,
        } => {
            let cfg = prepare(config.as_deref())?;
            eprintln!("kestrel: loading the embedding model");
            let embedder = standalone::load_embedder(&cfg)?;
            eprintln!(
                "kestrel: model {} loaded; starting capture",
                embedder.model_id()
            );
            let summary = standalone::run(
                &cfg,
                &state_dir,
                &STOP,
                embedder,
                print_line,
                Duration::from_secs_f64(progress_every.max(0.1)),
            )
            .context("standalone run failed")?;
            eprintln!("{}", serde_json::json!({ "summary": summary }));
            Ok(())
        }
        Command::Operator {
            listen,
            state_dir,
            tls_dir,
            no_mutual_tls,
            agents,
            config,
            progress_every,
        } => {
            let cfg = prepare(config.as_deref())?;
            let embedder = standalone::load_embedder(&cfg)?;
            let serve = kestrel_operator::serve::ServeConfig {
                listen,
                tls_dir,
                agent_names: agents,
                mutual_tls: !no_mutual_tls,
                progress_every: Duration::from_secs_f64(progress_every.max(0.1)),
            };
            kestrel_operator::serve::run(
                &cfg,
                &serve,
                &state_dir,
                &STOP,
                embedder,
                print_line,
                |addr| eprintln!("{}", serde_json::json!({ "listening": addr.to_string() })),
            )
            .context("operator failed")
        }
        Command::Status { state_dir, output } => status(&state_dir, &output),
    }
}

fn status(dir: &std::path::Path, output: &str) -> anyhow::Result<()> {
    let store = DirStore::open(dir)?;
    let mut rows = Vec::new();
    for (name, yaml) in store.load_profiles() {
        let row = yaml.map_err(|e| e.to_string()).and_then(|y| {
            kestrel_profile::parse_yaml(&y)
                .map(|s| s.object)
                .map_err(|e| format!("{name}: {e}"))
        });
        // The workload's exact name is in the object; the file name is lossy.
        let name = match &row {
            Ok(doc) => doc.workload_name().unwrap_or(name),
            Err(_) => name,
        };
        rows.push((name, row));
    }
    let alerts = store.load_alerts();
    if output == "json" {
        let v = serde_json::json!({
            "workloads": rows.iter().map(|(n, r)| match r {
                Ok(doc) => serde_json::json!({"workload": n, "phase": doc.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"))}),
                Err(e) => serde_json::json!({"workload": n, "error": e}),
            }).collect::<Vec<_>>(),
            "alerts": alerts.iter().filter_map(|a| a.as_ref().ok()).map(|a| serde_json::json!({
                "name": a.metadata.name, "severity": format!("{:?}", a.spec.severity), "score": a.spec.score,
                "count": a.status.as_ref().map_or(a.spec.incident.count, |s| s.count), "title": a.spec.title,
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<24} {:<12} {:>9} {:>10}",
        "WORKLOAD", "PHASE", "PROCESSES", "FILES"
    );
    for (name, row) in &rows {
        match row {
            Ok(doc) => {
                let counts = doc.body().map(|b| b.summary()).unwrap_or_default();
                println!(
                    "{:<24} {:<12} {:>9} {:>10}",
                    name,
                    doc.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .map(|p| format!("{p:?}"))
                        .unwrap_or_else(|| "-".into()),
                    counts.processes,
                    counts.files,
                )
            }
            Err(e) => println!("{name:<24} ERROR {e}"),
        }
    }
    println!();
    println!("{:<8} {:>5} {:>6}  ALERT", "SEVERITY", "SCORE", "COUNT");
    for a in &alerts {
        match a {
            Ok(a) => println!(
                "{:<8} {:>5.1} {:>6}  {}",
                format!("{:?}", a.spec.severity),
                a.spec.score,
                a.status.as_ref().map_or(a.spec.incident.count, |s| s.count),
                a.spec.title
            ),
            Err(e) => println!("ERROR {e}"),
        }
    }
    Ok(())
}
