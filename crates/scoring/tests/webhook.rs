//! The falcosidekick payload and the webhook sender.

mod support;

use std::collections::BTreeMap;

use kestrel_scoring::{
    falco_payload, json_line, LlmOutcome, RuleSet, Scorer, ScoringConfig, WebhookConfig,
    WebhookSink,
};
use support::{web_pod, MockServer, Reply, T0};

fn seed_alert() -> kestrel_scoring::SecurityAlert {
    let mut s = Scorer::new(ScoringConfig::default(), RuleSet::default_pack().unwrap()).unwrap();
    let c = web_pod(2, "/tmp/xmrig", &["./xmrig", "-o", "pool.minexmr.com"]);
    s.assess(&c, LlmOutcome::not_configured(), T0)
        .alert()
        .cloned()
        .unwrap()
}

#[test]
fn the_falco_payload_has_falcosidekicks_input_fields() {
    let a = seed_alert();
    let p = falco_payload(&a);
    let v = serde_json::to_value(&p).unwrap();
    for k in [
        "output",
        "priority",
        "rule",
        "time",
        "output_fields",
        "source",
        "tags",
        "hostname",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["priority"], "Error");
    assert_eq!(v["source"], "kestrel");
    assert_eq!(v["hostname"], "node-2");
    assert_eq!(v["time"], "2023-11-14T22:13:20.000000000Z");
    assert!(v["rule"].as_str().unwrap().starts_with("Kestrel: "));
    let f = &v["output_fields"];
    assert_eq!(f["k8s.ns.name"], "shop");
    assert_eq!(f["k8s.pod.name"], "webapp-7d4b9c-00002");
    assert_eq!(f["proc.name"], "xmrig");
    assert_eq!(f["proc.cmdline"], "./xmrig -o pool.minexmr.com");
    assert_eq!(f["kestrel.incident.count"], 1);
    assert!(v["tags"].as_array().unwrap().iter().any(|t| t == "T1496"));
    assert!(p.output.contains("pod=shop/webapp-7d4b9c-00002"));
}

#[test]
fn alerts_serialise_to_one_json_line() {
    let line = json_line(&seed_alert()).unwrap();
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["llm"]["explanation"], "LLM: unavailable (not configured)");
    assert!(v["breakdown"]["rules"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("hit "));
}

#[tokio::test]
async fn the_webhook_sink_posts_the_payload_and_retries_server_errors() {
    let server = MockServer::start(Reply::Raw(200, "{}".into())).await;
    server.push(Reply::Raw(502, "bad gateway".into()));
    let mut headers = BTreeMap::new();
    headers.insert("x-kestrel-token".to_string(), "t0k".to_string());
    let sink = WebhookSink::new(&WebhookConfig {
        url: format!("http://{}/", server.addr),
        timeout_ms: 2_000,
        max_retries: 2,
        headers,
    })
    .unwrap();
    sink.send_alert(&seed_alert()).await.unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    let v: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(v["source"], "kestrel");
}

#[tokio::test]
async fn the_webhook_sink_gives_up_on_client_errors() {
    let server = MockServer::start(Reply::Raw(400, "no".into())).await;
    let sink = WebhookSink::new(&WebhookConfig {
        url: format!("http://{}/", server.addr),
        ..WebhookConfig::default()
    })
    .unwrap();
    assert!(sink.send(&serde_json::json!({"a": 1})).await.is_err());
    assert_eq!(server.requests().len(), 1);
    assert!(WebhookSink::new(&WebhookConfig {
        url: "not a url".into(),
        ..WebhookConfig::default()
    })
    .is_err());
}
