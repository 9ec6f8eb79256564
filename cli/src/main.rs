//! `kestrel`: standalone mode, the operator, and state inspection.
use anyhow::Context;
use clap::{Parser, Subcommand};
use kestrel_operator::cli::{
    init_logging, progress_seconds, read_config, run_operator, stop_on_signals, OperatorArgs,
};
use kestrel_operator::config::load_embedder;
use kestrel_operator::output::print_line;
use kestrel_operator::store::{DirStore, Store};
use std::path::PathBuf;
use std::time::Duration;

use kestrel_cli::standalone;

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
    Operator(Box<OperatorArgs>),
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

fn main() -> anyhow::Result<()> {
    init_logging();
    match Cli::parse().command {
        Command::Standalone {
            state_dir,
            config,
            progress_every,
        } => {
            let stop = stop_on_signals()?;
            let cfg = read_config(config.as_deref())?;
            eprintln!("kestrel: loading the embedding model");
            let embedder = load_embedder(&cfg)?;
            eprintln!(
                "kestrel: model {} loaded; starting capture",
                embedder.model_id()
            );
            let summary = standalone::run(
                &cfg,
                &state_dir,
                &stop,
                embedder,
                print_line,
                Duration::from_secs_f64(progress_seconds(progress_every)),
            )
            .context("standalone run failed")?;
            eprintln!("{}", serde_json::json!({ "summary": summary }));
            Ok(())
        }
        Command::Operator(args) => run_operator(*args),
        Command::Status { state_dir, output } => status(&state_dir, &output),
    }
}

fn status(dir: &std::path::Path, output: &str) -> anyhow::Result<()> {
    let store = DirStore::open(dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let profiles = runtime.block_on(store.load_profiles())?;
    let alerts = runtime.block_on(store.load_alerts())?;
    let rows: Vec<(String, Result<kestrel_api::BehaviorProfile, String>)> = profiles
        .into_iter()
        .map(|p| match p {
            Ok(p) => (p.workload, Ok(p.object)),
            Err(e) => (String::new(), Err(e.to_string())),
        })
        .collect();
    if output == "json" {
        let v = serde_json::json!({
            "workloads": rows.iter().map(|(n, r)| match r {
                Ok(doc) => serde_json::json!({"workload": n, "phase": doc.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}"))}),
                Err(e) => serde_json::json!({"error": e}),
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
            Err(e) => println!("ERROR {e}"),
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
