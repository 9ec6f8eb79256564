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

use kestrel_cli::{profile, standalone};

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
    /// Profiles for Git: export one as a promoted profile, or compare two
    /// (docs/gitops.md).
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Agent certificates for the operator's gRPC listener (bare metal and
    /// standalone hosts; docs/transport.md, "Credentials").
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
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

#[derive(Subcommand)]
enum CertsCommand {
    /// Issue (or renew) one agent's client certificate with the operator's
    /// CA. Writes `client-NODE.pem`, `client-NODE-key.pem` (0600) and
    /// `ca.pem` into `--out`: copy the three to the node's `--tls-dir`.
    /// Neither the CA nor any other agent's certificate is touched.
    Issue {
        /// The node's name (the agent's `--node`).
        #[arg(long)]
        node: String,
        /// The operator's TLS directory (holds `ca.pem` and `ca-key.pem`).
        #[arg(long)]
        tls_dir: PathBuf,
        /// Where to write the agent's files (default: `--tls-dir`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days the certificate is valid (renew before; the agent warns when
        /// a third of its life or a week is left).
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// Print a certificate's names and validity.
    Show {
        /// The PEM file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Print a profile as a promoted one (`source: Promoted`, its behaviour
    /// as `spec.baseline`, no status or cluster fields), ready for Git.
    Export {
        /// Object name (`deployment-web`) or workload (`Deployment/web`;
        /// standalone: `web`).
        name: String,
        #[command(flatten)]
        from: From,
        /// The exported profile's mode: `Detect` (default), `Auto` or
        /// `Learn` (learn on top of the baseline).
        #[arg(long, default_value = "Detect")]
        mode: String,
        /// `yaml` (default) or `json`.
        #[arg(long, short, default_value = "yaml")]
        output: String,
    },
    /// What a promoted profile's workload did beyond its baseline: the
    /// learned shadow (`status.learned`) against `spec.baseline` (`+`: done
    /// but not in Git; `-`: in Git but not seen since the promotion). Exit
    /// status 0 when nothing is outside, 1 otherwise.
    Drift {
        /// The promoted profile, named as for `export`, or a file.
        name: String,
        #[command(flatten)]
        from: From,
    },
    /// What differs between two profiles' behaviour: branches and
    /// exemplars, paths and ports only in one of them. Exit status 0 when
    /// they are the same, 1 when they differ.
    Diff {
        /// A file (`-`: stdin), or a profile named as for `export`.
        a: String,
        /// The same for the second profile.
        b: String,
        #[command(flatten)]
        from: From,
    },
}

/// Where named profiles are looked up.
#[derive(clap::Args)]
struct From {
    /// A standalone state directory (else: the cluster of the current
    /// kubeconfig).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The namespace in the cluster.
    #[arg(long, short, default_value = "default")]
    namespace: String,
}

impl From {
    fn source(&self) -> profile::Source {
        match &self.state_dir {
            Some(d) => profile::Source::Dir(d.clone()),
            None => profile::Source::Cluster {
                namespace: self.namespace.clone(),
            },
        }
    }
}

fn profile_command(command: ProfileCommand) -> anyhow::Result<()> {
    match command {
        ProfileCommand::Export {
            name,
            from,
            mode,
            output,
        } => {
            let mode: kestrel_api::ProfileMode = serde_json::from_value(serde_json::json!(mode))
                .map_err(|_| anyhow::anyhow!("--mode {mode:?}: want Detect, Auto or Learn"))?;
            if mode == kestrel_api::ProfileMode::Enforce {
                anyhow::bail!("--mode Enforce is reserved and not supported yet (use Detect)");
            }
            let exported = profile::export(&profile::fetch(&from.source(), &name)?, mode)?;
            match output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&exported)?),
                "yaml" => print!("{}", kestrel_api::to_yaml(&exported)?),
                other => anyhow::bail!("--output {other:?}: want yaml or json"),
            }
            Ok(())
        }
        ProfileCommand::Drift { name, from } => {
            let p = profile::load(&name, &from.source())?;
            if p.spec.source != kestrel_api::ProfileSource::Promoted {
                anyhow::bail!(
                    "{name}: a learned profile has no drift (only a promoted profile is compared \
                     with what its workload does)"
                );
            }
            let empty = kestrel_api::ProfileBody::default();
            let shadow = p.status.as_ref().and_then(|s| s.learned.as_ref());
            if let Some(c) = p
                .status
                .as_ref()
                .and_then(|s| kestrel_api::find_condition(&s.conditions, "Drift"))
            {
                println!("Drift {:?} {}: {}", c.status, c.reason, c.message);
            }
            let d = profile::diff(
                p.spec.baseline.as_ref().unwrap_or(&empty),
                shadow.unwrap_or(&empty),
            );
            println!(
                "--- {name} spec.baseline (Git)\n+++ {name} status.learned (what the workload did)"
            );
            if d.is_empty() {
                println!("no drift");
                Ok(())
            } else {
                print!("{d}");
                std::process::exit(1)
            }
        }
        ProfileCommand::Diff { a, b, from } => {
            let load = |arg: &str| -> anyhow::Result<(String, kestrel_api::BehaviorProfile)> {
                let p = profile::load(arg, &from.source())?;
                let label = format!(
                    "{arg} ({} {})",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.body_path()
                );
                Ok((label, p))
            };
            let (la, pa) = load(&a)?;
            let (lb, pb) = load(&b)?;
            let empty = kestrel_api::ProfileBody::default();
            let d = profile::diff(pa.body().unwrap_or(&empty), pb.body().unwrap_or(&empty));
            println!("--- {la}\n+++ {lb}");
            if d.is_empty() {
                println!("same behaviour");
                Ok(())
            } else {
                print!("{d}");
                std::process::exit(1)
            }
        }
    }
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
        Command::Profile { command } => profile_command(command),
        Command::Certs { command } => certs(command),
        Command::Status { state_dir, output } => status(&state_dir, &output),
    }
}

fn certs(command: CertsCommand) -> anyhow::Result<()> {
    use kestrel_proto::{unix_now, CertInfo};
    let show = |path: &std::path::Path| -> anyhow::Result<()> {
        let info = CertInfo::read(path)?;
        let date = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t).map_or_else(
                |_| t.to_string(),
                |d| format!("{} {:02}:{:02} UTC", d.date(), d.hour(), d.minute()),
            )
        };
        let left = info.remaining(unix_now());
        println!(
            "{}\n  names:     {}\n  valid:     {} to {}\n  left:      {}{}",
            path.display(),
            info.names.join(", "),
            date(info.not_before),
            date(info.not_after),
            if left > 0 {
                format!("{} days", left / 86_400)
            } else {
                "expired".into()
            },
            if left > 0 && info.renew_due(unix_now()) {
                " (renew now)"
            } else {
                ""
            }
        );
        Ok(())
    };
    match command {
        CertsCommand::Issue {
            node,
            tls_dir,
            out,
            days,
        } => {
            let out = out.unwrap_or_else(|| tls_dir.clone());
            let files = kestrel_proto::TlsMaterial::issue_client(
                &tls_dir,
                &node,
                Duration::from_secs(days.saturating_mul(86_400)),
                &out,
            )
            .with_context(|| format!("issuing the certificate of node {node:?}"))?;
            show(&files.cert)?;
            println!(
                "  key:       {}\n  CA:        {}",
                files.key.display(),
                out.join("ca.pem").display()
            );
            Ok(())
        }
        CertsCommand::Show { file } => show(&file),
    }
}

fn status(dir: &std::path::Path, output: &str) -> anyhow::Result<()> {
    let store = DirStore::open_read_only(dir)?;
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
