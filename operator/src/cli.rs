//! The operator's command line, shared by `kestrel operator` and the
//! `kestrel-operator` binary (the operator image's entry point), and the
//! process plumbing both binaries use: stop signals and the config file.

use crate::config::{load_embedder, OperatorConfig};
use crate::output::print_line;
use crate::serve::ServeConfig;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Flags of the operator.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: std::net::SocketAddr,
    /// Where profiles, alerts and status.json are kept.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// TLS material: the CA (created when there is none, never replaced),
    /// the server certificate, and agents' certificates (`kestrel certs
    /// issue`).
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Do not require client certificates (TLS without mutual authentication).
    #[arg(long)]
    pub no_mutual_tls: bool,
    /// The nodes allowed to connect (comma separated); a name without a
    /// certificate in --tls-dir gets one. `--agents ''`: any node whose
    /// certificate the CA signed.
    #[arg(long, value_delimiter = ',', default_value = "localhost")]
    pub agents: Vec<String>,
    /// YAML config (workloads, learning, thresholds, scoring).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5.0)]
    pub progress_every: f64,
    /// Run against the Kubernetes API server (KUBECONFIG, else in-cluster):
    /// profiles and alerts as custom resources, workloads from watches.
    #[arg(long)]
    pub kubernetes: bool,
    /// Namespaces whose pods are ignored (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "kube-system")]
    pub exclude_namespaces: Vec<String>,
    /// Least seconds between two writes of one profile (phase changes go
    /// at once).
    #[arg(long, default_value_t = 60.0)]
    pub profile_flush_secs: f64,
    /// Least seconds between two writes of one alert's repeats.
    #[arg(long, default_value_t = 30.0)]
    pub alert_update_secs: f64,
    /// Mutating API calls per second, all objects together.
    #[arg(long, default_value_t = 5.0)]
    pub api_writes_per_sec: f64,
    /// Mutating API calls that may go at once.
    #[arg(long, default_value_t = 10.0)]
    pub api_burst: f64,
    /// Delete alerts whose last occurrence is older than this many seconds
    /// (0: keep them until a cap needs the room).
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub alert_ttl_secs: u64,
    /// Most SecurityAlerts kept per namespace (0: no cap); past it the
    /// oldest go, resolved ones first.
    #[arg(long, default_value_t = 1_000)]
    pub max_alerts_per_namespace: usize,
    /// Most SecurityAlerts kept in the cluster (0: no cap).
    #[arg(long, default_value_t = 10_000)]
    pub max_alerts: usize,
    /// Seconds between two runs of the alert TTL and caps.
    #[arg(long, default_value_t = 60.0)]
    pub retention_every_secs: f64,
    /// Serve `/healthz`, `/readyz` and `/metrics` on this address (the
    /// Helm chart sets `0.0.0.0:8080`); not served when unset.
    #[arg(long)]
    pub http_listen: Option<std::net::SocketAddr>,
    /// With `--kubernetes`: run without leader election (one replica only;
    /// two such processes would both write).
    #[arg(long)]
    pub no_leader_elect: bool,
    /// Namespace of the leader-election Lease (default: `$POD_NAMESPACE`,
    /// else `default`).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// With `--kubernetes`: also serve agent enrollment here (TLS without
    /// client certificates): a node agent trades its pod's projected
    /// ServiceAccount token (audience `kestrel`) for a short-lived
    /// certificate for the node its pod runs on. Needs the CA's key in
    /// --tls-dir and `--agent-service-account`.
    #[arg(long, requires = "agent_service_account")]
    pub enroll_listen: Option<std::net::SocketAddr>,
    /// The agents' ServiceAccount, `namespace/name`: only its tokens enroll.
    #[arg(long, value_parser = parse_service_account)]
    pub agent_service_account: Option<(String, String)>,
    /// Hours an enrolled agent's certificate is valid (the agent renews it
    /// at two thirds).
    #[arg(long, default_value_t = 24.0)]
    pub agent_cert_hours: f64,
    /// More names for the server certificate when it is created (comma
    /// separated; a cluster's Service DNS names).
    #[arg(long, value_delimiter = ',')]
    pub server_names: Vec<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "kestrel-operator")]
    pub lease_name: String,
    /// Seconds the leader's claim lasts without renewal: a killed leader is
    /// replaced within this time.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// Seconds before expiry at which the leader renews its claim.
    #[arg(long, default_value_t = 5)]
    pub lease_renew_before_secs: u64,
}

impl OperatorArgs {
    /// The leader-election settings these flags give (none outside a
    /// cluster or with `--no-leader-elect`).
    pub fn lease(&self) -> Option<crate::k8s::LeaseSettings> {
        if !self.kubernetes || self.no_leader_elect {
            return None;
        }
        let namespace = self
            .lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| "default".into());
        Some(crate::k8s::LeaseSettings {
            namespace,
            name: self.lease_name.clone(),
            identity: crate::k8s::LeaseSettings::default_identity(),
            duration_secs: self.lease_duration_secs,
            grace_secs: self.lease_renew_before_secs,
        })
    }
}

/// A flag the first SIGINT or SIGTERM sets (the run then stops cleanly and
/// persists its state); a second one ends the process at once.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Reads the config file (defaults without one).
pub fn read_config(config: Option<&Path>) -> anyhow::Result<OperatorConfig> {
    match config {
        Some(p) => OperatorConfig::load(p),
        None => Ok(OperatorConfig::default()),
    }
}

/// `RUST_LOG`, or warnings and errors when it is unset (a lost operator, a
/// refused certificate, a failed write must show without asking).
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::WARN.into())
        .from_env_lossy()
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings and errors).
/// `KESTREL_LOG_FORMAT=json` writes one JSON object per line (`timestamp`,
/// `level`, `target`, `message` and the event's fields at the top level),
/// what log shippers in a cluster read; anything else but `text` is
/// reported and text is used.
pub fn init_logging() {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        // a closed stderr must not make logging panic (it would report
        // the failed write with eprintln!, which panics on a closed pipe)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match std::env::var("KESTREL_LOG_FORMAT").ok().as_deref() {
        Some("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        None | Some("" | "text") => builder.init(),
        Some(other) => {
            builder.init();
            tracing::warn!(
                "KESTREL_LOG_FORMAT={other:?} is neither `text` nor `json`: logging as text"
            );
        }
    }
}

/// `namespace/name` of a ServiceAccount.
fn parse_service_account(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?}: expected namespace/name")),
    }
}

/// Runs the operator until SIGINT or SIGTERM.
pub fn run_operator(args: OperatorArgs) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let cfg = read_config(args.config.as_deref())?;
    let embedder = load_embedder(&cfg)?;
    let lease = args.lease();
    let serve = ServeConfig {
        listen: args.listen,
        tls_dir: args.tls_dir,
        agent_names: args.agents.into_iter().filter(|a| !a.is_empty()).collect(),
        mutual_tls: !args.no_mutual_tls,
        progress_every: Duration::from_secs_f64(progress_seconds(args.progress_every)),
        counters: Default::default(),
        kubernetes: args.kubernetes.then(|| crate::serve::KubeSettings {
            store: crate::k8s::KubeStoreConfig {
                profile_interval: seconds(args.profile_flush_secs),
                alert_interval: seconds(args.alert_update_secs),
                writes_per_sec: args.api_writes_per_sec.max(0.1),
                burst: args.api_burst.max(1.0),
                alert_ttl: Duration::from_secs(args.alert_ttl_secs),
                max_alerts_per_namespace: args.max_alerts_per_namespace,
                max_alerts: args.max_alerts,
                retention_every: seconds(args.retention_every_secs).max(Duration::from_secs(1)),
                ..Default::default()
            },
            excluded_namespaces: args.exclude_namespaces.clone(),
            lease,
            enroll: args
                .enroll_listen
                .zip(args.agent_service_account.clone())
                .map(|(listen, service_account)| {
                    (
                        listen,
                        crate::k8s::EnrollSettings {
                            service_account,
                            lifetime: Duration::from_secs_f64(
                                (args.agent_cert_hours * 3600.0).clamp(600.0, 30.0 * 86_400.0),
                            ),
                        },
                    )
                }),
        }),
        http_listen: args.http_listen,
        server_names: args
            .server_names
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
    };
    crate::serve::run(
        &cfg,
        &serve,
        &args.state_dir,
        &stop,
        embedder,
        print_line,
        |started| {
            use crate::serve::Started;
            let line = match started {
                Started::Http(a) => serde_json::json!({ "http": a.to_string() }),
                Started::Standby => serde_json::json!({ "leader": false }),
                Started::Leading => serde_json::json!({ "leader": true }),
                Started::Listening(a) => serde_json::json!({ "listening": a.to_string() }),
                Started::Enrolling(a) => serde_json::json!({ "enrolling": a.to_string() }),
            };
            eprintln!("{line}");
        },
    )
    .context("operator failed")
}

/// A duration from seconds, finite and non-negative (else zero).
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// A progress interval in seconds, kept finite and at least 0.1 s.
pub fn progress_seconds(s: f64) -> f64 {
    if s.is_finite() {
        s.max(0.1)
    } else {
        3600.0
    }
}
