//! Enrollment over real sockets: a token buys a node certificate on the
//! enrollment listener (TLS without client certificates), the stream
//! listener accepts that certificate, bad requests are refused in words,
//! and a renewed certificate takes over the stream without losing events.

mod common;

use common::{
    backoff_error, every_kind, fast_config, hello, material, next, url, with_workload, Record,
    Recorder,
};
use kestrel_proto::client::{enroll, AgentClient};
use kestrel_proto::server::{
    serve, serve_with, AgentHandler, AgentIdentity, Disconnect, OperatorSender, Refusal,
    RefusalCode, ServerConfig, ServerHandle,
};
use kestrel_proto::wire::{EnrollRequest, EnrollResponse};
use kestrel_proto::{
    certificate_names, new_key_and_request, CertSigner, ClientTls, Counters, EventBatch, ServerTls,
    TlsMaterial,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The recorder, plus `Enroll`: token `good-<node>` gets a certificate for
/// `<node>`, anything else is refused as an operator refuses a token.
struct Enrolling {
    rec: Arc<Recorder>,
    signer: CertSigner,
}

#[tonic::async_trait]
impl AgentHandler for Enrolling {
    async fn on_connect(&self, a: &AgentIdentity, o: OperatorSender) -> Result<(), Refusal> {
        self.rec.on_connect(a, o).await
    }
    async fn on_batch(&self, a: &AgentIdentity, b: EventBatch) -> Result<(), Refusal> {
        self.rec.on_batch(a, b).await
    }
    async fn on_counters(&self, a: &AgentIdentity, c: Counters) -> Result<(), Refusal> {
        self.rec.on_counters(a, c).await
    }
    async fn on_disconnect(&self, a: &AgentIdentity, d: Disconnect) {
        self.rec.on_disconnect(a, d).await
    }
    async fn enroll(
        &self,
        r: EnrollRequest,
        _peer: Option<SocketAddr>,
    ) -> Result<EnrollResponse, Refusal> {
        let Some(node) = r.token.strip_prefix("good-") else {
            return Err(Refusal::new(
                RefusalCode::Unauthenticated,
                "the API server did not accept the token",
            ));
        };
        let (certificate_pem, not_after_unix) = self
            .signer
            .sign_client(&r.csr_pem, node, Duration::from_secs(3600))
            .map_err(|e| Refusal::new(RefusalCode::InvalidArgument, e.to_string()))?;
        Ok(EnrollResponse {
            certificate_pem,
            ca_pem: self.signer.ca_pem().to_string(),
            node_name: node.to_string(),
            not_after_unix,
        })
    }
}

struct Servers {
    stream: ServerHandle,
    enroll: ServerHandle,
    rx: tokio::sync::mpsc::UnboundedReceiver<Record>,
    ca: Vec<u8>,
}

async fn servers(m: &TlsMaterial) -> Servers {
    let (rec, rx) = Recorder::new();
    let h: Arc<dyn AgentHandler> = Arc::new(Enrolling {
        rec,
        signer: CertSigner::load(&m.dir).unwrap(),
    });
    let stream = serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ServerTls::from_material(m, true).unwrap(),
        Arc::clone(&h),
    )
    .await
    .unwrap();
    let enroll = serve_with(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ServerTls::from_material(m, false).unwrap(),
        h,
        ServerConfig {
            enroll_only: true,
            max_message_bytes: 64 * 1024,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Servers {
        stream,
        enroll,
        rx,
        ca: std::fs::read(&m.ca.cert).unwrap(),
    }
}

/// Enrolls `node` with `token`: the client TLS with the new identity.
async fn enrolled(
    s: &Servers,
    token: &str,
    node: &str,
) -> Result<(ClientTls, EnrollResponse), String> {
    let (key, csr_pem) = new_key_and_request(node).unwrap();
    let trust = ClientTls::from_pem(s.ca.clone());
    let resp = enroll(
        &url(s.enroll.local_addr()),
        &trust,
        EnrollRequest {
            token: token.into(),
            csr_pem,
        },
        Duration::from_secs(5),
    )
    .await?;
    Ok((trust.with_identity(resp.certificate_pem.clone(), key), resp))
}

fn names_of(pem: &str) -> Vec<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    certificate_names(&p.contents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_buys_a_node_certificate_that_the_stream_listener_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let mut s = servers(&m).await;
    let (tls, resp) = enrolled(&s, "good-node-e", "node-e").await.unwrap();
    assert_eq!(resp.node_name, "node-e");
    assert_eq!(names_of(&resp.certificate_pem), vec!["node-e".to_string()]);
    assert!(resp.not_after_unix > kestrel_proto::unix_now() + 3000);
    assert_eq!(resp.ca_pem.as_bytes(), s.ca.as_slice());

    let (client, _inbound) = stream_client(&s, tls, "node-e").await;
    let agent = next(&mut s.rx, |r| match r {
        Record::Connect(a) => Some(a),
        _ => None,
    })
    .await;
    assert_eq!(agent.hello.node_name, "node-e");
    assert_eq!(agent.cert_names, vec!["node-e".to_string()]);
    client.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollments_are_refused_in_words_and_the_enrollment_port_never_streams() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let s = servers(&m).await;
    let err = enrolled(&s, "stolen", "node-e").await.unwrap_err();
    assert!(
        err.contains("Unauthenticated") && err.contains("did not accept the token"),
        "{err}"
    );
    let huge = "x".repeat(17 * 1024);
    let err = enrolled(&s, &huge, "node-e").await.unwrap_err();
    assert!(
        err.contains("InvalidArgument") && err.contains("token: 17408 bytes"),
        "{err}"
    );
    let trust = ClientTls::from_pem(s.ca.clone());
    let err = enroll(
        &url(s.enroll.local_addr()),
        &trust,
        EnrollRequest {
            token: "good-node-e".into(),
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(err.contains("not a valid signed PKCS#10 request"), "{err}");
    // a CA the client does not trust: refused before any token is sent
    let other = tempfile::tempdir().unwrap();
    let foreign = material(other.path());
    let err = enroll(
        &url(s.enroll.local_addr()),
        &ClientTls::from_pem(std::fs::read(&foreign.ca.cert).unwrap()),
        EnrollRequest {
            token: "good-node-e".into(),
            csr_pem: new_key_and_request("node-e").unwrap().1,
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // the enrollment listener does not take event streams, even with a
    // valid certificate
    let (tls, _) = enrolled(&s, "good-node-e", "node-e").await.unwrap();
    let (client, _inbound) =
        AgentClient::connect_with(fast_config(s.enroll.local_addr()), tls, hello("node-e"))
            .await
            .unwrap();
    let why = backoff_error(&client, |_| true).await;
    assert!(why.contains("enrollment listener"), "{why}");
    client.close(Duration::from_secs(1)).await;
}

/// An agent client on the stream listener with an enrolled identity.
async fn stream_client(
    s: &Servers,
    tls: ClientTls,
    node: &str,
) -> (
    AgentClient,
    tokio::sync::mpsc::Receiver<kestrel_proto::OperatorMessage>,
) {
    AgentClient::connect_with(
        fast_config(s.stream.local_addr()),
        tls.with_domain("localhost"),
        hello(node),
    )
    .await
    .unwrap()
}

/// Waits until `n` events arrived in batches.
async fn receive(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Record>, n: usize) {
    let mut got = 0;
    while got < n {
        got += next(rx, |r| match r {
            Record::Batch(_, b) => Some(b.events.len()),
            _ => None,
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_takes_over_the_stream_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let mut s = servers(&m).await;
    let (tls, _) = enrolled(&s, "good-node-e", "node-e").await.unwrap();
    let (client, _inbound) = stream_client(&s, tls, "node-e").await;
    let events = with_workload("web", every_kind());
    let n = events.len();
    client.send(events.clone()).unwrap();
    receive(&mut s.rx, n).await;
    assert_eq!(client.stats().sessions, 1);
    // renewal: a new key and certificate; the stream reconnects with it
    let (renewed, _) = enrolled(&s, "good-node-e", "node-e").await.unwrap();
    client.renew_tls(renewed.with_domain("localhost"));
    let again = next(&mut s.rx, |r| match r {
        Record::Connect(a) => Some(a),
        _ => None,
    })
    .await;
    assert_eq!(again.cert_names, vec!["node-e".to_string()]);
    client.send(events).unwrap();
    receive(&mut s.rx, n).await;
    assert_eq!(client.stats().sessions, 2);
    assert_eq!(client.counters().drops.queue_dropped, 0);
    // a renewed certificate for another node is presented too: the
    // operator then refuses the Hello, which proves the new one is used
    let (other, _) = enrolled(&s, "good-node-f", "node-f").await.unwrap();
    client.renew_tls(other.with_domain("localhost"));
    let why = backoff_error(&client, |e| e.contains("PermissionDenied")).await;
    assert!(
        why.contains("not a name of the client certificate"),
        "{why}"
    );
    client.close(Duration::from_secs(1)).await;
}
