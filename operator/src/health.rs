//! The operator's HTTP side (`--http-listen`): `/healthz`, `/readyz` and
//! Prometheus `/metrics`, as a kubelet's probes and a Prometheus scrape
//! expect them.
//!
//! - `/healthz` is 200 while the process's main loop turns (a loop stuck
//!   for [`STALL_SECS`] makes it 500, so the kubelet restarts the pod); a
//!   standby waiting for the Lease is healthy.
//! - `/readyz` is 200 only when this process leads (or runs without leader
//!   election), its pipeline runs and, in a cluster, its watches have
//!   synced; otherwise 503 with the reason, so a Service sends agents to
//!   the leader only.
//! - `/metrics` renders the status the pipeline publishes every second
//!   (the same numbers as `status.json`) plus the errors by kind, in the
//!   Prometheus text format (0.0.4). Names are `kestrel_operator_…`;
//!   counters end in `_total`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Seconds without a turn of the main loop after which `/healthz` fails.
pub const STALL_SECS: u64 = 60;

/// What the probes and the scrape read; the main loop writes it.
#[derive(Debug, Default)]
pub struct Health {
    /// Runs against an API server (its API families are rendered even
    /// before the first status, at 0, so a standby reads as writing
    /// nothing).
    pub cluster: AtomicBool,
    /// Leader election is on (else this process always leads).
    pub elected: AtomicBool,
    /// Holds the Lease.
    pub leader: AtomicBool,
    /// The pipeline runs (profiles loaded, gRPC port open).
    pub running: AtomicBool,
    /// In a cluster: the watches have listed everything once (`None`
    /// outside a cluster is `true`).
    pub synced: AtomicBool,
    /// Unix seconds of the main loop's latest turn.
    pub heartbeat: AtomicU64,
    /// The Lease, for the standby's reason (`namespace/name`).
    pub lease: Mutex<String>,
    /// The store's API counters, read live (the published status is up to
    /// a second old).
    pub api_stats: Mutex<Option<Arc<crate::k8s::KubeStoreStats>>>,
    status: Mutex<Value>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Health {
    /// Records a turn of the main loop.
    pub fn beat(&self) {
        self.heartbeat.store(unix_secs(), Ordering::Relaxed);
    }

    /// The status the pipeline published last.
    pub fn set_status(&self, status: &Value) {
        if let Ok(mut s) = self.status.lock() {
            s.clone_from(status);
        }
    }

    /// Counts an error of `kind` (the error's stable label).
    pub fn count_error(&self, kind: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// `Ok` when the main loop turned within [`STALL_SECS`] (or has not
    /// started yet: loading the model comes first).
    pub fn healthy(&self) -> Result<(), String> {
        let beat = self.heartbeat.load(Ordering::Relaxed);
        let now = unix_secs();
        if beat != 0 && now.saturating_sub(beat) > STALL_SECS {
            return Err(format!(
                "the main loop has not turned for {}s",
                now.saturating_sub(beat)
            ));
        }
        Ok(())
    }

    /// `Ok` when this process should receive agents (see the module docs).
    pub fn ready(&self) -> Result<(), String> {
        self.healthy()?;
        if self.elected.load(Ordering::Relaxed) && !self.leader.load(Ordering::Relaxed) {
            let lease = self.lease.lock().map(|l| l.clone()).unwrap_or_default();
            return Err(format!("standby: another operator holds the lease {lease}"));
        }
        if !self.running.load(Ordering::Relaxed) {
            return Err("starting: profiles are loading".into());
        }
        if !self.synced.load(Ordering::Relaxed) {
            return Err("the watches have not synced yet".into());
        }
        Ok(())
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        let mut m = Metrics::default();
        let flag = |b: &AtomicBool| f64::from(u8::from(b.load(Ordering::Relaxed)));
        m.gauge(
            "leader",
            "1 while this process holds the Lease (or runs without leader election)",
            &[],
            if self.elected.load(Ordering::Relaxed) {
                flag(&self.leader)
            } else {
                1.0
            },
        );
        m.gauge(
            "ready",
            "1 while /readyz answers 200",
            &[],
            f64::from(u8::from(self.ready().is_ok())),
        );
        m.counter(
            "events_total",
            "Forwarded events the pipeline handled",
            &[],
            num(&status["eventsHandled"]),
        );
        m.counter(
            "backpressure_waits_total",
            "Agent batches that waited for room in the pipeline's queue (their stream was held back)",
            &[],
            num(&status["backpressureWaits"]),
        );
        let st = &status["store"];
        m.gauge(
            "store_pending_writes",
            "Profiles and alerts whose write failed, retried every second until it lands",
            &[],
            num(&st["pendingWrites"]),
        );
        m.counter(
            "store_write_failures_total",
            "Failed write attempts of profiles and alerts",
            &[],
            num(&st["writeFailures"]),
        );
        m.gauge(
            "store_quarantined",
            "State files set aside at start because they could not be used",
            &[],
            st["quarantined"].as_array().map_or(0.0, |a| a.len() as f64),
        );
        let l = &status["listener"];
        m.counter(
            "tls_handshakes_failed_total",
            "TLS handshakes refused (certificate not from the CA, not TLS)",
            &[],
            num(&l["handshakesFailed"]),
        );
        m.counter(
            "tls_handshake_timeouts_total",
            "Connections closed because their TLS handshake did not finish in time",
            &[],
            num(&l["handshakeTimeouts"]),
        );
        m.gauge(
            "agents",
            "Node agents connected now",
            &[],
            num(&status["agents"]),
        );
        if let Some(nodes) = status["agentDrops"].as_object() {
            m.family(
                "agent_dropped_total",
                "counter",
                "Events agents could not deliver, by node and where: ring (kernel ring buffer), \
                 queue (agent queue full), oversize (larger than a message), resendEvicted (out of \
                 the resend buffer before acknowledged)",
            );
            for (node, d) in nodes {
                for stage in ["ring", "queue", "oversize", "resendEvicted"] {
                    m.sample(
                        "agent_dropped_total",
                        &[("node", node), ("stage", stage)],
                        num(&d[stage]),
                    );
                }
            }
        }
        let a = &status["alerts"];
        m.counter(
            "candidates_total",
            "Anomaly candidates scored",
            &[],
            num(&a["candidates"]),
        );
        m.counter(
            "alerts_created_total",
            "Alerts raised (new incidents past the threshold)",
            &[],
            num(&a["alertsCreated"]),
        );
        m.counter(
            "alerts_updated_total",
            "Updates of existing alerts (repeats, LLM answers)",
            &[],
            num(&a["alertsUpdated"]),
        );
        m.counter(
            "candidates_below_threshold_total",
            "Candidates that stayed below the alert threshold",
            &[],
            num(&a["belowThreshold"]),
        );
        m.gauge(
            "incidents_open",
            "Incidents open now",
            &[],
            num(&a["openIncidents"]),
        );
        m.gauge(
            "llm_pending",
            "LLM judgements awaited now",
            &[],
            num(&a["llmPending"]),
        );
        let mut phases: BTreeMap<String, u64> = ["Learning", "Converged", "Detecting"]
            .iter()
            .map(|p| ((*p).to_string(), 0))
            .collect();
        for w in status["workloads"].as_array().into_iter().flatten() {
            if let Some(p) = w["phase"].as_str() {
                *phases.entry(p.to_string()).or_default() += 1;
            }
        }
        m.family("profiles", "gauge", "Profiles held, by phase");
        for (phase, n) in &phases {
            m.sample("profiles", &[("phase", phase)], *n as f64);
        }
        let k = &status["kubernetes"];
        if k.is_object() || self.cluster.load(Ordering::Relaxed) {
            let live = self
                .api_stats
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(|s| s.to_json()));
            let api = live.as_ref().unwrap_or(&k["api"]);
            m.counter(
                "api_writes_total",
                "Mutating API calls that succeeded",
                &[],
                num(&api["writes"]),
            );
            m.counter(
                "api_write_failures_total",
                "Mutating API calls that failed (retried)",
                &[],
                num(&api["failures"]),
            );
            m.counter(
                "api_writes_rejected_total",
                "Writes the API server refused as invalid (not retried)",
                &[],
                num(&api["rejected"]),
            );
            m.counter(
                "api_writes_unchanged_total",
                "Profile saves with unchanged content, not sent",
                &[],
                num(&api["unchanged"]),
            );
            m.counter(
                "api_writes_coalesced_total",
                "Saves folded into a later write of the same object",
                &[],
                num(&api["coalesced"]),
            );
            m.counter(
                "api_size_limited_total",
                "Profile writes held back past the size cap",
                &[],
                num(&api["sizeLimited"]),
            );
            m.counter(
                "api_throttled_rounds_total",
                "Write rounds that ended with writes waiting for the token bucket",
                &[],
                num(&api["throttled"]),
            );
            m.gauge(
                "api_pending",
                "Objects waiting to be written",
                &[],
                num(&k["pending"]),
            );
            m.counter(
                "alerts_expired_total",
                "SecurityAlerts deleted by the TTL",
                &[],
                num(&api["alertsExpired"]),
            );
            m.counter(
                "alerts_capped_total",
                "SecurityAlerts deleted to keep a namespace or the cluster under its cap",
                &[],
                num(&api["alertsCapped"]),
            );
            m.gauge(
                "pods_watched",
                "Pods the identity knows",
                &[],
                num(&k["pods"]),
            );
            m.counter(
                "events_unattributed_total",
                "Events whose container no watched pod has (dropped)",
                &[],
                num(&k["unattributed"]),
            );
            m.counter(
                "events_foreign_node_total",
                "Events for a pod on another node than the sending agent's (dropped)",
                &[],
                num(&k["foreignNode"]),
            );
            if k["enrollments"].is_object() {
                m.family(
                    "enrollments_total",
                    "counter",
                    "Agent enrollments (a ServiceAccount token for a node certificate), by result",
                );
                for result in ["issued", "refused", "failed"] {
                    m.sample(
                        "enrollments_total",
                        &[("result", result)],
                        num(&k["enrollments"][result]),
                    );
                }
            }
        }
        m.family(
            "edge_matched_total",
            "counter",
            "Events the agents' edge filters matched against profile digests (never sent), by node",
        );
        for (node, by_workload) in status["edge"]["matchedByNode"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let n: f64 = by_workload
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, v)| v.as_f64().unwrap_or(0.0))
                .sum();
            m.sample("edge_matched_total", &[("node", node)], n);
        }
        m.family("errors_total", "counter", "Errors by kind");
        for (kind, n) in &errors {
            m.sample("errors_total", &[("kind", kind)], *n as f64);
        }
        m.0
    }
}

/// A status sink that also hands each published status to [`Health`] (for
/// `/metrics`).
pub struct StatusTee {
    /// Where the status goes as well (`status.json`).
    pub inner: Box<dyn crate::store::StatusSink>,
    /// What `/metrics` reads.
    pub health: Arc<Health>,
}

impl crate::store::StatusSink for StatusTee {
    fn publish(&mut self, status: &Value) {
        self.health.set_status(status);
        self.inner.publish(status);
    }
}

/// Serves the three paths on `addr` until the runtime stops; returns the
/// bound address.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let answer = |r: Result<(), String>| match r {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    let (h1, h2, h3) = (Arc::clone(&health), Arc::clone(&health), health);
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || async move {
                match h1.healthy() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                    Err(why) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")),
                }
            }),
        )
        .route("/readyz", get(move || async move { answer(h2.ready()) }))
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    h3.metrics(),
                )
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics and probes server stopped");
        }
    });
    Ok(bound)
}

fn unix_secs() -> u64 {
    crate::clock::wall_now().as_secs()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The text format, one family at a time.
#[derive(Default)]
struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP kestrel_operator_{name} {help}");
        let _ = writeln!(self.0, "# TYPE kestrel_operator_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.0, "kestrel_operator_{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, "counter", help);
        self.sample(name, labels, value);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, labels, value);
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines
/// escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status as the pipeline publishes it in a cluster (the shape of
    /// `status.json`).
    fn published() -> Value {
        serde_json::json!({
            "workloads": [
                {"workload": "shop/Deployment/web", "phase": "Detecting", "branches": 12, "exemplars": 3, "windowNew": 0},
                {"workload": "shop/Deployment/api", "phase": "Learning", "branches": 40, "exemplars": 9, "windowNew": 2},
                {"workload": "shop/StatefulSet/db", "phase": "Learning", "branches": 7, "exemplars": 1, "windowNew": 0}
            ],
            "alerts": {"candidates": 624, "alertsCreated": 25, "alertsUpdated": 130, "belowThreshold": 469,
                       "openIncidents": 4, "llmPending": 0, "llmAnswers": 0},
            "eventsHandled": 10230,
            "agents": 2,
            "agentDrops": {"node-a": {"ring": 0, "queue": 3, "oversize": 0, "resendEvicted": 0},
                           "node-\"b\"": {"ring": 17, "queue": 0, "oversize": 1, "resendEvicted": 2}},
            "backpressureWaits": 4,
            "store": {"pendingWrites": 2, "writeFailures": 7, "quarantined": [{"file": "x", "movedTo": "y", "reason": "z"}]},
            "listener": {"handshakes": 9, "handshakesFailed": 2, "handshakeTimeouts": 300, "overLimit": 0},
            "kubernetes": {"api": {"writes": 311, "failures": 2, "rejected": 0, "unchanged": 40,
                                    "coalesced": 900, "sizeLimited": 1, "throttled": 6},
                           "pending": 3, "pods": 14, "watchesSynced": true,
                           "unattributed": 5, "foreignNode": 1}
        })
    }

    #[test]
    fn the_published_status_becomes_prometheus_text() {
        let h = Health::default();
        h.set_status(&published());
        h.count_error("store_api");
        h.count_error("store_api");
        h.count_error("config");
        let text = h.metrics();
        for line in [
            "kestrel_operator_events_total 10230",
            "kestrel_operator_alerts_created_total 25",
            "kestrel_operator_profiles{phase=\"Learning\"} 2",
            "kestrel_operator_profiles{phase=\"Detecting\"} 1",
            "kestrel_operator_profiles{phase=\"Converged\"} 0",
            "kestrel_operator_api_writes_total 311",
            "kestrel_operator_api_throttled_rounds_total 6",
            "kestrel_operator_api_pending 3",
            "kestrel_operator_events_unattributed_total 5",
            "kestrel_operator_errors_total{kind=\"store_api\"} 2",
            "kestrel_operator_errors_total{kind=\"config\"} 1",
            "kestrel_operator_agent_dropped_total{node=\"node-\\\"b\\\"\",stage=\"ring\"} 17",
            "kestrel_operator_agent_dropped_total{node=\"node-a\",stage=\"queue\"} 3",
            "kestrel_operator_agent_dropped_total{node=\"node-\\\"b\\\"\",stage=\"resendEvicted\"} 2",
            "kestrel_operator_backpressure_waits_total 4",
            "kestrel_operator_store_pending_writes 2",
            "kestrel_operator_store_write_failures_total 7",
            "kestrel_operator_store_quarantined 1",
            "kestrel_operator_tls_handshake_timeouts_total 300",
            "kestrel_operator_tls_handshakes_failed_total 2",
            "kestrel_operator_leader 1",
            "# TYPE kestrel_operator_api_writes_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        // every sample line belongs to a family declared before it
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{name} has no TYPE line");
                let value = l.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{l}");
            }
        }
    }

    #[test]
    fn a_standby_is_alive_but_not_ready_and_says_whose_lease_it_waits_for() {
        let h = Health::default();
        h.elected.store(true, Ordering::Relaxed);
        *h.lease.lock().unwrap() = "kestrel-system/kestrel-operator".into();
        h.beat();
        assert_eq!(h.healthy(), Ok(()));
        let why = h.ready().unwrap_err();
        assert!(
            why.contains("standby") && why.contains("kestrel-system/kestrel-operator"),
            "{why}"
        );
        assert!(h
            .metrics()
            .lines()
            .any(|l| l == "kestrel_operator_leader 0"));
        // a standby in a cluster has published no status: it reads as
        // writing nothing
        h.cluster.store(true, Ordering::Relaxed);
        assert!(h
            .metrics()
            .lines()
            .any(|l| l == "kestrel_operator_api_writes_total 0"));
        // the leader with its pipeline running and watches synced
        h.leader.store(true, Ordering::Relaxed);
        assert_eq!(h.ready().unwrap_err(), "starting: profiles are loading");
        h.running.store(true, Ordering::Relaxed);
        assert_eq!(h.ready().unwrap_err(), "the watches have not synced yet");
        h.synced.store(true, Ordering::Relaxed);
        assert_eq!(h.ready(), Ok(()));
        assert!(h.metrics().lines().any(|l| l == "kestrel_operator_ready 1"));
    }

    #[test]
    fn a_stalled_main_loop_fails_the_liveness_probe() {
        let h = Health::default();
        assert_eq!(h.healthy(), Ok(()), "before the first turn: loading");
        h.heartbeat
            .store(unix_secs() - STALL_SECS - 5, Ordering::Relaxed);
        let why = h.healthy().unwrap_err();
        assert!(why.contains("has not turned"), "{why}");
        h.beat();
        assert_eq!(h.healthy(), Ok(()));
    }
}
