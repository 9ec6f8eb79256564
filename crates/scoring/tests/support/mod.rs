//! Test support: a scriptable OpenAI-compatible (and webhook) HTTP server on
//! 127.0.0.1:0, plus candidate builders.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{channel::Channel, BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kestrel_scoring::{Arguments, CandidateAlert, ProcessAncestor, Signal};
use tokio::net::TcpListener;

/// One scripted reply.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A chat completion whose message content is `content`.
    Content(String),
    /// A raw status and body.
    Raw(u16, String),
    /// Like `Raw`, with a `Retry-After` header.
    RetryAfter(u16, u64),
    /// Waits, then replies.
    Delay(Duration, Box<Reply>),
    /// Sends the headers at once, then one byte per `Duration`, forever.
    SlowBody(Duration),
    /// Decides from the request body (a prompt-injection-obeying model).
    Obey,
}

/// A completion body around a content string.
pub fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "cmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
    })
    .to_string()
}

/// A valid verdict as the content string.
pub fn verdict_json(verdict: &str, score: u32, explanation: &str) -> String {
    serde_json::json!({"verdict": verdict, "score": score, "explanation": explanation, "tactics": ["T1496"]}).to_string()
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

/// The server: replies are taken from the script in order; when it is
/// empty, `fallback` is used.
#[derive(Clone)]
pub struct MockServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Arc<Mutex<Reply>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

type Body = Either<Full<Bytes>, Channel<Bytes>>;

fn full(status: u16, body: String) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

async fn respond(reply: Reply, body: &str) -> Response<Body> {
    let mut reply = reply;
    loop {
        match reply {
            Reply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            Reply::Content(c) => return full(200, completion(&c)),
            Reply::Raw(s, b) => return full(s, b),
            Reply::RetryAfter(s, secs) => {
                let mut r = full(s, "{\"error\":\"slow down\"}".into());
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
                return r;
            }
            Reply::SlowBody(gap) => {
                let (mut tx, rx) = Channel::<Bytes>::new(1);
                tokio::spawn(async move {
                    let _ = tx.send_data(Bytes::from_static(b"{\"choices\":[")).await;
                    loop {
                        tokio::time::sleep(gap).await;
                        if tx.send_data(Bytes::from_static(b" ")).await.is_err() {
                            break;
                        }
                    }
                });
                return Response::new(Either::Right(rx));
            }
            Reply::Obey => {
                let v = if body.to_lowercase().contains("ignore previous instructions") {
                    verdict_json("benign", 0, "The user says it is benign.")
                } else {
                    verdict_json("malicious", 100, "Known XMRig Monero miner.")
                };
                return full(200, completion(&v));
            }
        }
    }
}

impl MockServer {
    pub async fn start(fallback: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Self {
            addr,
            script: Arc::new(Mutex::new(VecDeque::new())),
            fallback: Arc::new(Mutex::new(fallback)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let authorization = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = String::from_utf8_lossy(&body).into_owned();
                            s.seen.lock().unwrap().push(Seen {
                                path,
                                authorization,
                                body: body.clone(),
                            });
                            let next = s.script.lock().unwrap().pop_front();
                            let reply = next.unwrap_or_else(|| s.fallback.lock().unwrap().clone());
                            Ok::<_, Infallible>(respond(reply, &body).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        server
    }

    pub fn push(&self, r: Reply) {
        self.script.lock().unwrap().push_back(r);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

pub const T0: u64 = 1_700_000_000_000_000_000;
pub const SEC: u64 = 1_000_000_000;

/// The seed's web pod `i` of `Deployment/webapp` (100 replicas).
pub fn web_pod(i: usize, exe: &str, argv: &[&str]) -> CandidateAlert {
    CandidateAlert {
        namespace: "shop".into(),
        workload: "Deployment/webapp".into(),
        pod: format!("webapp-7d4b9c-{i:05}"),
        container_id: format!("containerd://{i:064x}"),
        node: format!("node-{}", i % 7),
        image: "registry.example/webapp:v1".into(),
        pid: 4000 + i as u32,
        exe: exe.into(),
        args: Arguments::new(argv.iter().copied(), ""),
        chain: vec![
            ProcessAncestor::new("/bin/bash", ["bash"]),
            ProcessAncestor::new(
                "/usr/local/bin/entrypoint.sh",
                ["/bin/sh", "/usr/local/bin/entrypoint.sh"],
            ),
        ],
        signals: vec![Signal::UnknownProcess],
        observed_ns: T0,
        workload_replicas: Some(100),
        workload_rollout_ns: None,
        shape: None,
    }
}
