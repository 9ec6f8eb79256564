//! Outputs besides the custom resource: a falcosidekick-compatible JSON
//! payload, a small async webhook sender, and one-line JSON for stdout.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Uri;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::alert::{rfc3339_ns, SecurityAlert, Severity};
use crate::candidate::{PeerAddress, Signal};
use crate::error::{Error, Result};
use crate::http::{snippet, HttpClient};

/// The payload falcosidekick accepts on its input (`POST /`), so its
/// outputs (Slack, Loki, Elasticsearch, ...) can be reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalcoPayload {
    /// Unique id of this event.
    pub uuid: String,
    /// One human-readable line.
    pub output: String,
    /// Falco priority (`Critical`, `Error`, `Warning`, `Notice`, `Informational`).
    pub priority: String,
    /// Rule name (`Kestrel: <top rule id>` or `Kestrel: anomaly`).
    pub rule: String,
    /// Event time, RFC 3339.
    pub time: String,
    /// Structured fields, Falco names where one exists.
    pub output_fields: BTreeMap<String, Value>,
    /// Event source.
    pub source: String,
    /// Tags: MITRE ids, `kestrel`, the severity.
    pub tags: Vec<String>,
    /// Node name.
    pub hostname: String,
}

/// Falco's priority name for a severity.
pub fn falco_priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::High => "Error",
        Severity::Medium => "Warning",
        Severity::Low => "Notice",
        Severity::Info => "Informational",
    }
}

/// Formats an alert for falcosidekick.
pub fn falco_payload(a: &SecurityAlert) -> FalcoPayload {
    let e = &a.evidence;
    let priority = falco_priority(a.severity);
    let time = rfc3339_ns(a.incident.last_seen_ns);
    let exe_name = e.exe.rsplit('/').next().unwrap_or(&e.exe).to_string();
    let cmdline = e.args.join(" ");
    let mut f: BTreeMap<String, Value> = BTreeMap::new();
    f.insert("evt.time".into(), json!(a.incident.last_seen_ns));
    f.insert("k8s.ns.name".into(), json!(e.namespace));
    f.insert("k8s.pod.name".into(), json!(e.pod));
    f.insert("container.id".into(), json!(e.container_id));
    f.insert("container.image".into(), json!(e.image));
    f.insert("proc.name".into(), json!(exe_name));
    f.insert("proc.exepath".into(), json!(e.exe));
    f.insert("proc.cmdline".into(), json!(cmdline));
    f.insert("proc.pid".into(), json!(e.pid));
    if let Some(p) = e.process_chain.first() {
        f.insert("proc.pexepath".into(), json!(p.exe));
        f.insert(
            "proc.pname".into(),
            json!(p.exe.rsplit('/').next().unwrap_or(&p.exe)),
        );
    }
    for s in &e.signals {
        match s {
            Signal::UnknownFile { path, .. } => {
                f.insert("fd.name".into(), json!(path));
            }
            // Falco's execve exit event: the attempted path and the result
            Signal::FailedExec { path, error, .. } => {
                f.insert("fd.name".into(), json!(path));
                f.insert("evt.res".into(), json!(error));
            }
            Signal::UnknownPeer {
                addr, port, proto, ..
            } => {
                match addr {
                    PeerAddress::Ip(ip) => {
                        f.insert("fd.rip".into(), json!(ip.to_string()));
                        f.insert("fd.rport".into(), json!(port));
                        f.insert("fd.l4proto".into(), json!(proto.key().as_str()));
                    }
                    // Falco names a unix socket's path fd.name
                    PeerAddress::Name(name) => {
                        f.insert("fd.name".into(), json!(name));
                        f.insert("fd.typechar".into(), json!("u"));
                    }
                }
            }
            Signal::UnknownProcess | Signal::UnusualArguments { .. } => {}
        }
    }
    f.insert("kestrel.alert.id".into(), json!(a.id));
    f.insert("kestrel.workload".into(), json!(e.workload));
    f.insert("kestrel.node".into(), json!(e.node));
    f.insert("kestrel.score".into(), json!(a.score));
    f.insert("kestrel.severity".into(), json!(a.severity.as_str()));
    f.insert(
        "kestrel.rules".into(),
        json!(a
            .rule_hits
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>()),
    );
    f.insert("kestrel.llm".into(), json!(a.llm.explanation));
    f.insert(
        "kestrel.recommendation".into(),
        json!(a.recommendation.summary),
    );
    f.insert("kestrel.incident.count".into(), json!(a.incident.count));
    f.insert(
        "kestrel.incident.first_seen".into(),
        json!(a.incident.first_seen),
    );
    f.insert(
        "kestrel.signals".into(),
        json!(e.signals.iter().map(Signal::kind).collect::<Vec<_>>()),
    );
    let rule = match a
        .rule_hits
        .iter()
        .max_by(|x, y| x.score.total_cmp(&y.score))
    {
        Some(r) => format!("Kestrel: {}", r.id),
        None => "Kestrel: anomaly".to_string(),
    };
    let mut tags: Vec<String> = vec!["kestrel".into(), a.severity.as_str().into()];
    tags.extend(a.mitre.iter().cloned());
    let output = format!(
        "{time}: {priority} {} (pod={}/{} node={} exe={} cmdline={:?} pid={} score={} count={})",
        a.title, e.namespace, e.pod, e.node, e.exe, cmdline, e.pid, a.score, a.incident.count
    );
    FalcoPayload {
        uuid: format!("{}-{}", a.id, a.incident.count),
        output,
        priority: priority.to_string(),
        rule,
        time,
        output_fields: f,
        source: "kestrel".into(),
        tags,
        hostname: e.node.clone(),
    }
}

/// One line of JSON for stdout (`--output json`).
pub fn json_line(a: &SecurityAlert) -> Result<String> {
    serde_json::to_string(a).map_err(|e| Error::Serialize(e.to_string()))
}

/// Webhook settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (falcosidekick listens on `http://falcosidekick:2801/`).
    pub url: String,
    /// Per-attempt timeout (ms).
    pub timeout_ms: u64,
    /// Retries on timeouts, connection errors and 5xx/429.
    pub max_retries: u32,
    /// Extra headers (name → value).
    pub headers: BTreeMap<String, String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: "http://falcosidekick:2801/".into(),
            timeout_ms: 5_000,
            max_retries: 2,
            headers: BTreeMap::new(),
        }
    }
}

/// A small async webhook sender.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    uri: Uri,
    timeout: Duration,
    max_retries: u32,
    headers: Vec<(HeaderName, HeaderValue)>,
    http: HttpClient,
}

impl WebhookSink {
    /// A sink for the configured URL.
    pub fn new(config: &WebhookConfig) -> Result<Self> {
        let uri: Uri = config
            .url
            .parse()
            .map_err(|e| Error::Config(format!("webhook url {:?}: {e}", config.url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(Error::Config(format!(
                "webhook url {:?}: needs http:// or https://",
                config.url
            )));
        }
        let headers = config
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| Error::Config(format!("header {k:?}: {e}")))?,
                    HeaderValue::from_str(v)
                        .map_err(|e| Error::Config(format!("header {k:?} value: {e}")))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            uri,
            timeout: Duration::from_millis(config.timeout_ms),
            max_retries: config.max_retries,
            headers,
            http: HttpClient::new()?,
        })
    }

    /// POSTs any serialisable payload as JSON, retrying transient failures.
    pub async fn send<T: Serialize + ?Sized>(&self, payload: &T) -> Result<()> {
        let body =
            Bytes::from(serde_json::to_vec(payload).map_err(|e| Error::Serialize(e.to_string()))?);
        let mut retry = 0u32;
        loop {
            let r = self
                .http
                .post_json(
                    &self.uri,
                    &self.headers,
                    body.clone(),
                    self.timeout,
                    64 * 1024,
                )
                .await;
            let err = match r {
                Ok(resp) if resp.status.is_success() => return Ok(()),
                Ok(resp) => Error::HttpStatus {
                    status: resp.status.as_u16(),
                    body: snippet(&resp.body),
                    retry_after_secs: resp.retry_after.map(|d| d.as_secs()),
                },
                Err(e) => e,
            };
            let transient = match &err {
                Error::Timeout(_) | Error::Http(_) => true,
                Error::HttpStatus { status, .. } => *status == 429 || *status >= 500,
                _ => false,
            };
            if !transient || retry >= self.max_retries {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(200u64 << retry.min(5))).await;
            retry += 1;
        }
    }

    /// Sends an alert in falcosidekick's format.
    pub async fn send_alert(&self, a: &SecurityAlert) -> Result<()> {
        self.send(&falco_payload(a)).await
    }
}
