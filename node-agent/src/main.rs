//! `kestrel-agent`: the Kestrel node agent.
use anyhow::Context;
use clap::{Parser, Subcommand};
use kestrel_agent::capture::{self, CaptureConfig, Scope};
use kestrel_agent::sensors::SensorConfig;
use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kestrel-agent",
    version,
    about = "Kestrel node agent (eBPF capture)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print kernel events as JSON lines (containers only unless --all).
    Capture(CaptureArgs),
    /// Stream to the operator: capture, filter by the profile digests, forward the rest.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Operator endpoint.
    #[arg(
        long,
        env = "KESTREL_OPERATOR",
        default_value = "https://127.0.0.1:7443"
    )]
    operator: String,
    /// TLS material (CA and this node's client certificate, from `kestrel
    /// certs issue`). Not with --enroll.
    #[arg(
        long,
        env = "KESTREL_TLS_DIR",
        required_unless_present = "enroll",
        conflicts_with = "enroll"
    )]
    tls_dir: Option<std::path::PathBuf>,
    /// In a cluster: get this node's certificate from the operator's
    /// enrollment endpoint (`https://host:port`) for the pod's projected
    /// ServiceAccount token, and renew it before it expires.
    #[arg(long, env = "KESTREL_ENROLL", requires_all = ["token_file", "ca_file"])]
    enroll: Option<String>,
    /// The projected ServiceAccount token (audience `kestrel`), with --enroll.
    #[arg(long, env = "KESTREL_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The CA that signed the operator's certificate, with --enroll.
    #[arg(long, env = "KESTREL_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Verify the operator's certificate against this name instead of the
    /// endpoint's host (its Service's DNS name when connecting to an IP).
    #[arg(long, env = "KESTREL_SERVER_NAME")]
    server_name: Option<String>,
    /// This node's name (a name of its client certificate).
    #[arg(long, env = "KESTREL_NODE_NAME", default_value = "localhost")]
    node: String,
    /// Ring buffer size in bytes.
    #[arg(long, default_value_t = 8 << 20, env = "KESTREL_RING_BYTES")]
    ring_bytes: u32,
}

#[derive(clap::Args)]
struct CaptureArgs {
    /// Include host processes (no in-kernel filter).
    #[arg(long, conflicts_with = "container")]
    all: bool,
    /// Only this container (id or unique id prefix); repeatable.
    #[arg(long, short = 'c')]
    container: Vec<String>,
    /// Ring buffer size in bytes (power of two, ≥ page size).
    #[arg(long, default_value_t = 8 << 20, env = "KESTREL_RING_BYTES")]
    ring_bytes: u32,
    /// Do not load the file programs.
    #[arg(long)]
    no_file: bool,
    /// Do not load the network programs.
    #[arg(long)]
    no_network: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Decode but print nothing except the final counters (for load tests).
    #[arg(long)]
    quiet: bool,
}

/// A flag the first SIGINT or SIGTERM sets; a second one ends the process
/// at once.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // warnings by default: a lost operator or a refused certificate
        // must show without RUST_LOG
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing::level_filters::LevelFilter::WARN.into())
                .from_env_lossy(),
        )
        // a closed stderr must not make logging panic
        .log_internal_errors(false)
        // no colour codes in a pod's log or a file
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Capture(args) => capture_cmd(args),
        Command::Run(args) => run_cmd(args),
    }
}

fn capture_cmd(args: CaptureArgs) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let scope = if args.all {
        Scope::Everything
    } else if !args.container.is_empty() {
        Scope::Containers(args.container.clone())
    } else {
        Scope::AllContainers
    };
    let cfg = CaptureConfig {
        scope,
        sensors: SensorConfig {
            ring_bytes: args.ring_bytes,
            file: !args.no_file,
            network: !args.no_network,
            ..SensorConfig::default()
        },
        duration: args.duration.map(Duration::from_secs_f64),
        ..CaptureConfig::default()
    };
    let stdout = std::io::stdout();
    let out = RefCell::new(std::io::BufWriter::with_capacity(1 << 16, stdout.lock()));
    let quiet = args.quiet;
    let stop_writing = |_| {
        // stdout closed (e.g. piped into `head`): stop quietly
        stop.store(true, Ordering::Relaxed);
    };
    let stats = capture::run_with(
        &cfg,
        &stop,
        |event| {
            if quiet || stop.load(Ordering::Relaxed) {
                return;
            }
            let mut out = out.borrow_mut();
            if let Err(e) = serde_json::to_writer(&mut *out, &event)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
            {
                stop_writing(e);
            }
        },
        || eprintln!("{{\"ready\":true}}"),
        |_| {
            if let Err(e) = out.borrow_mut().flush() {
                stop_writing(e);
            }
        },
        |_| (),
    )
    .context("capture failed (run as root on a kernel with BTF)")?;
    drop(out);
    eprintln!("{}", serde_json::json!({ "stats": stats }));
    Ok(())
}

fn run_cmd(args: RunArgs) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let cfg = kestrel_agent::connected::ConnectedConfig {
        operator: args.operator,
        credentials: match (args.enroll, args.tls_dir) {
            (Some(endpoint), _) => kestrel_agent::connected::Credentials::Enroll(
                kestrel_agent::connected::EnrollConfig {
                    endpoint,
                    token_file: args.token_file.unwrap_or_default(),
                    ca_file: args.ca_file.unwrap_or_default(),
                },
            ),
            (None, Some(dir)) => kestrel_agent::connected::Credentials::Files(dir),
            (None, None) => anyhow::bail!("give --tls-dir or --enroll"),
        },
        server_name: args.server_name,
        node_name: args.node,
        capture: CaptureConfig {
            sensors: SensorConfig {
                ring_bytes: args.ring_bytes,
                ..SensorConfig::default()
            },
            ..CaptureConfig::default()
        },
        batch_size: 512,
    };
    eprintln!("{{\"ready\":true}}");
    let stats = kestrel_agent::connected::run(&cfg, &stop).context("agent failed")?;
    eprintln!("{}", serde_json::json!({ "stats": stats }));
    Ok(())
}
