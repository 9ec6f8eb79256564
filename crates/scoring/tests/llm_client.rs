//! The OpenAI-compatible client against a scripted in-process server.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kestrel_scoring::{
    build_prompt, Error, LlmClient, LlmEngine, LlmEngineConfig, LlmOutcome, OpenAiClient,
    OpenAiConfig, Verdict,
};
use support::{completion, verdict_json, web_pod, MockServer, Reply, T0};

fn config(server: &MockServer) -> OpenAiConfig {
    OpenAiConfig {
        endpoint: server.base_url(),
        model: "test-model".into(),
        timeout_ms: 2_000,
        requests_per_second: 0.0,
        max_retries: 2,
        backoff_base_ms: 10,
        backoff_max_ms: 2_000,
        ..OpenAiConfig::default()
    }
}

fn prompt() -> kestrel_scoring::Prompt {
    build_prompt(
        &web_pod(0, "/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]),
        &["miner-tool"],
    )
}

#[tokio::test]
async fn a_valid_answer_is_parsed_and_the_request_has_the_expected_shape() {
    let server = MockServer::start(Reply::Content(verdict_json(
        "malicious",
        97,
        "XMRig miner.",
    )))
    .await;
    let client = OpenAiClient::with_api_key(config(&server), Some("sk-test".into())).unwrap();
    let v = client.judge(&prompt()).await.unwrap();
    assert_eq!(v.verdict, Verdict::Malicious);
    assert_eq!(v.score, 97.0);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["stream"], false);
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
}

#[tokio::test]
async fn no_api_key_means_no_authorization_header() {
    let server = MockServer::start(Reply::Content(verdict_json("benign", 5, "nginx worker"))).await;
    let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
    client.judge(&prompt()).await.unwrap();
    assert_eq!(server.requests()[0].authorization, None);
}

#[tokio::test]
async fn malformed_prose_out_of_range_and_truncated_answers_are_rejected_without_retry() {
    let bad_contents = [
        "{\"verdict\": \"malicious\", \"score\": 9",
        "I think this is probably a crypto miner.",
        &verdict_json("malicious", 150, "x"),
        &verdict_json("malicious", 10, "x"),
    ];
    for content in bad_contents {
        let server = MockServer::start(Reply::Content(content.to_string())).await;
        let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
        let err = client.judge(&prompt()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidAnswer(_)), "{content}: {err}");
        assert_eq!(server.requests().len(), 1, "answers are not retried");
    }
    // Garbage that is not even a completion, and a cut-off completion.
    let server = MockServer::start(Reply::Raw(200, "<html>oops</html>".into())).await;
    let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
    assert!(matches!(
        client.judge(&prompt()).await,
        Err(Error::InvalidAnswer(_))
    ));
    let cut = serde_json::json!({"choices": [{"message": {"content": "{\"verdict\":"}, "finish_reason": "length"}]});
    let server = MockServer::start(Reply::Raw(200, cut.to_string())).await;
    let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
    let err = client.judge(&prompt()).await.unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_succeed() {
    let server = MockServer::start(Reply::Content(verdict_json("malicious", 90, "miner"))).await;
    server.push(Reply::Raw(500, "{\"error\":\"boom\"}".into()));
    server.push(Reply::Raw(503, "{\"error\":\"busy\"}".into()));
    let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
    let v = client.judge(&prompt()).await.unwrap();
    assert_eq!(v.score, 90.0);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_fail_after_the_retry_limit() {
    let server = MockServer::start(Reply::Raw(500, "{\"error\":\"boom\"}".into())).await;
    let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
    let err = client.judge(&prompt()).await.unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 500, .. }),
        "{err}"
    );
    assert_eq!(server.requests().len(), 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn a_429_is_retried_after_the_servers_retry_after() {
    let server = MockServer::start(Reply::Content(verdict_json("suspicious", 60, "odd"))).await;
    server.push(Reply::RetryAfter(429, 1));
    let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
    let t = Instant::now();
    client.judge(&prompt()).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn client_errors_other_than_429_are_not_retried() {
    let server = MockServer::start(Reply::Raw(400, "{\"error\":\"bad model\"}".into())).await;
    let client = OpenAiClient::with_api_key(config(&server), None).unwrap();
    let err = client.judge(&prompt()).await.unwrap_err();
    assert!(matches!(err, Error::HttpStatus { status: 400, .. }));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let server = MockServer::start(Reply::Delay(
        Duration::from_secs(5),
        Box::new(Reply::Content(verdict_json("malicious", 99, "late"))),
    ))
    .await;
    let cfg = OpenAiConfig {
        timeout_ms: 200,
        max_retries: 1,
        ..config(&server)
    };
    let client = OpenAiClient::with_api_key(cfg, None).unwrap();
    let t = Instant::now();
    let err = client.judge(&prompt()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(200)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(server.requests().len(), 2, "a timeout is retried");
}

#[tokio::test]
async fn a_slow_stream_times_out_while_reading_the_body() {
    let server = MockServer::start(Reply::SlowBody(Duration::from_millis(50))).await;
    let cfg = OpenAiConfig {
        timeout_ms: 300,
        max_retries: 0,
        ..config(&server)
    };
    let client = OpenAiClient::with_api_key(cfg, None).unwrap();
    let err = client.judge(&prompt()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(300)), "{err}");
}

#[tokio::test]
async fn a_closed_endpoint_is_a_connection_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = OpenAiConfig {
        endpoint: format!("http://127.0.0.1:{port}/v1"),
        max_retries: 1,
        backoff_base_ms: 1,
        ..OpenAiConfig::default()
    };
    let client = OpenAiClient::with_api_key(cfg, None).unwrap();
    assert!(matches!(client.judge(&prompt()).await, Err(Error::Http(_))));
}

#[tokio::test]
async fn concurrency_is_limited() {
    let server = MockServer::start(Reply::Delay(
        Duration::from_millis(200),
        Box::new(Reply::Content(verdict_json("benign", 1, "fine"))),
    ))
    .await;
    let cfg = OpenAiConfig {
        max_concurrency: 1,
        ..config(&server)
    };
    let client = Arc::new(OpenAiClient::with_api_key(cfg, None).unwrap());
    let p = prompt();
    let t = Instant::now();
    let (a, b, c) = tokio::join!(client.judge(&p), client.judge(&p), client.judge(&p));
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    assert!(
        t.elapsed() >= Duration::from_millis(590),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn requests_are_rate_limited() {
    let server = MockServer::start(Reply::Content(verdict_json("benign", 1, "fine"))).await;
    let cfg = OpenAiConfig {
        requests_per_second: 10.0,
        ..config(&server)
    };
    let client = OpenAiClient::with_api_key(cfg, None).unwrap();
    let p = prompt();
    let t = Instant::now();
    for _ in 0..4 {
        client.judge(&p).await.unwrap();
    }
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn the_engine_reports_failures_as_unavailable_and_never_invents_a_verdict() {
    let server = MockServer::start(Reply::Raw(500, "boom".into())).await;
    let client = OpenAiClient::with_api_key(
        OpenAiConfig {
            max_retries: 0,
            ..config(&server)
        },
        None,
    )
    .unwrap();
    let engine = LlmEngine::new(Arc::new(client), LlmEngineConfig::default());
    let c = web_pod(0, "/tmp/xmrig", &["xmrig"]);
    match engine.judge(&c, &[], &c.shape(), T0).await {
        LlmOutcome::Unavailable { reason } => assert!(reason.contains("500"), "{reason}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn the_endpoint_may_be_given_as_the_full_completions_url() {
    let server = MockServer::start(Reply::Raw(
        200,
        completion(&verdict_json("benign", 0, "ok")),
    ))
    .await;
    let cfg = OpenAiConfig {
        endpoint: format!("http://{}/v1/chat/completions", server.addr),
        ..config(&server)
    };
    let client = OpenAiClient::with_api_key(cfg, None).unwrap();
    client.judge(&prompt()).await.unwrap();
    assert_eq!(server.requests()[0].path, "/v1/chat/completions");
    assert!(OpenAiClient::with_api_key(
        OpenAiConfig {
            endpoint: "ftp://x".into(),
            ..OpenAiConfig::default()
        },
        None
    )
    .is_err());
}
