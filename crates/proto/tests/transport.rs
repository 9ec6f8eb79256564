//! The transport over real sockets on 127.0.0.1 with real (mutual) TLS.

mod common;

use common::{
    every_kind, fast_config, hello, material, next, url, with_workload, Record, Recorder,
};
use kestrel_proto::client::{AgentClient, ConnectionState};
use kestrel_proto::server::{serve, serve_with, Disconnect, ServerConfig, ServerHandle};
use kestrel_proto::wire::agent_service_client::AgentServiceClient;
use kestrel_proto::{
    wire, ClientTls, ContainerTarget, DigestUpdate, Hello, OperatorMessage, Phase, ServerTls,
    TargetSet, TlsMaterial, WorkloadEvent,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::Code;

async fn mtls_server(
    m: &TlsMaterial,
) -> (ServerHandle, Arc<Recorder>, mpsc::UnboundedReceiver<Record>) {
    let (rec, rx) = Recorder::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = serve(
        listener,
        ServerTls::from_material(m, true).unwrap(),
        rec.clone(),
    )
    .await
    .unwrap();
    (h, rec, rx)
}

async fn wait_state(client: &AgentClient, mut ok: impl FnMut(&ConnectionState) -> bool) {
    let mut st = client.state();
    tokio::time::timeout(Duration::from_secs(10), st.wait_for(|s| ok(s)))
        .await
        .expect("timed out waiting for a connection state")
        .expect("client task ended");
}

async fn wait_acked(client: &AgentClient, seq: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.stats().acked_seq < seq {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the batch was never acknowledged");
}

/// A raw gRPC channel presenting client certificate `node`.
async fn raw_channel(m: &TlsMaterial, node: &str, addr: SocketAddr) -> tonic::transport::Channel {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&m.ca.cert).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&m.client(node).unwrap().cert).unwrap(),
            std::fs::read(&m.client(node).unwrap().key).unwrap(),
        ));
    let ch = tonic::transport::Endpoint::from_shared(url(addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    ch
}

/// The generated client, with no encoding limit of its own.
async fn raw_client(
    m: &TlsMaterial,
    node: &str,
    addr: SocketAddr,
) -> AgentServiceClient<tonic::transport::Channel> {
    AgentServiceClient::new(raw_channel(m, node, addr).await).max_encoding_message_size(64 << 20)
}

fn hello_msg(node: &str) -> wire::AgentMessage {
    wire::AgentMessage {
        msg: Some(wire::agent_message::Msg::Hello(wire::Hello::from(&hello(
            node,
        )))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_kind_crosses_a_mutual_tls_stream_unchanged_including_non_utf8_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (server, rec, mut rx) = mtls_server(&m).await;
    let digest = OperatorMessage::Digest(DigestUpdate {
        seed: 7,
        workload: "web".into(),
        phase: Phase::Detecting,
        path_hashes: vec![1, u64::MAX],
        generation: 3,
        full: true,
    });
    let targets = OperatorMessage::Targets(TargetSet {
        targets: vec![ContainerTarget {
            image: "webapp:v1".into(),
            container_id_glob: "web-*".into(),
            workload: "web".into(),
        }],
    });
    *rec.greeting.lock().unwrap() = vec![digest.clone(), targets.clone()];

    let tls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let (client, mut inbound) =
        AgentClient::connect_with(fast_config(server.local_addr()), tls, hello("node-a"))
            .await
            .unwrap();
    let who = next(&mut rx, |r| match r {
        Record::Connect(a) => Some(a),
        _ => None,
    })
    .await;
    assert_ne!(who.hello.instance, 0, "the client picks an instance");
    assert_eq!(
        Hello {
            instance: 0,
            ..who.hello.clone()
        },
        hello("node-a")
    );
    assert_eq!(who.cert_names, ["node-a"]);

    let sent = with_workload("web", every_kind());
    client.send(sent.clone()).unwrap();
    let got = next(&mut rx, |r| match r {
        Record::Batch(_, b) => Some(b),
        _ => None,
    })
    .await;
    assert_eq!(got.events, sent);
    assert_eq!(got.seq, 1);

    let first = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
        .await
        .unwrap();
    assert_eq!((first, second), (Some(digest), Some(targets)));

    tokio::time::timeout(Duration::from_secs(5), async {
        while client.stats().acked_seq < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the batch was never acknowledged");

    client.add_matched("web", 1000);
    client.close(Duration::from_secs(5)).await;
    let counters = next(&mut rx, |r| match r {
        Record::Counters(_, c) => Some(c),
        _ => None,
    })
    .await;
    assert_eq!(counters.matched.get("web"), Some(&1000));
    let reason = next(&mut rx, |r| match r {
        Record::Disconnect(_, d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(reason, Disconnect::Closed);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_rejected_with_out_of_range_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (server, _rec, mut rx) = mtls_server(&m).await;

    let mut raw = raw_client(&m, "node-a", server.local_addr()).await;
    let (tx, out) = mpsc::channel(4);
    tx.send(hello_msg("node-a")).await.unwrap();
    let mut inbound = raw
        .connect(tokio_stream::wrappers::ReceiverStream::new(out))
        .await
        .unwrap()
        .into_inner();
    let mut big = common::base(kestrel_events::EventKind::Fork(kestrel_events::Fork {
        parent_pid: 1,
    }));
    big.task.as_mut().unwrap().comm = kestrel_events::ByteStr::new(vec![b'x'; 5 << 20]);
    let batch = wire::EventBatch {
        events: vec![wire::Event::from(&big)],
        seq: 1,
    };
    tx.send(wire::AgentMessage {
        msg: Some(wire::agent_message::Msg::Events(batch)),
    })
    .await
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .unwrap()
        .expect_err("an oversized frame must end the stream");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    let reason = next(&mut rx, |r| match r {
        Record::Disconnect(_, d) => Some(d),
        _ => None,
    })
    .await;
    assert!(matches!(reason, Disconnect::Malformed(_)), "{reason:?}");

    // Another agent is still served.
    let tls = ClientTls::from_material(&m, Some("node-b")).unwrap();
    let (client, _in) =
        AgentClient::connect_with(fast_config(server.local_addr()), tls, hello("node-b"))
            .await
            .unwrap();
    client.send(with_workload("web", every_kind())).unwrap();
    let b = next(&mut rx, |r| match r {
        Record::Batch(a, b) if a.hello.node_name == "node-b" => Some(b),
        _ => None,
    })
    .await;
    assert_eq!(b.events.len(), every_kind().len());
    client.close(Duration::from_secs(5)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_splits_batches_below_the_limit_and_counts_an_event_that_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (rec, mut rx) = Recorder::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig {
        max_message_bytes: 64 * 1024,
        ..ServerConfig::default()
    };
    let server = serve_with(
        listener,
        ServerTls::from_material(&m, true).unwrap(),
        rec,
        config,
    )
    .await
    .unwrap();
    let mut cc = fast_config(server.local_addr());
    cc.max_message_bytes = 64 * 1024;
    let tls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let (client, _in) = AgentClient::connect_with(cc, tls, hello("node-a"))
        .await
        .unwrap();

    let mut events = Vec::new();
    for i in 0..200u32 {
        // 1000 bytes of argument each (a comm that long would be refused)
        let mut e = common::base(kestrel_events::EventKind::Exec(kestrel_events::Exec {
            filename: "/bin/c".into(),
            exe: "c".into(),
            parent_comm: "sh".into(),
            ns_pid: i,
            argv: kestrel_events::Argv {
                args: vec![kestrel_events::ByteStr::new(vec![b'c'; 1000])],
                size: 1000,
                truncated: false,
                read_failed: false,
            },
            from_proc_scan: false,
            dir: None,
        }));
        e.task.as_mut().unwrap().pid = i;
        events.push(WorkloadEvent {
            image: String::new(),
            process: None,
            chain: Vec::new(),
            workload: "web".into(),
            event: e,
        });
    }
    let mut huge = events[0].clone();
    if let kestrel_events::EventKind::Exec(x) = &mut huge.event.kind {
        x.argv.args = vec![kestrel_events::ByteStr::new(vec![b'h'; 100 * 1024])];
    }
    events.insert(100, huge);
    client.send(events).unwrap();

    let mut received = 0;
    let mut batches = 0;
    while received < 200 {
        let b = next(&mut rx, |r| match r {
            Record::Batch(_, b) => Some(b),
            _ => None,
        })
        .await;
        received += b.events.len();
        batches += 1;
    }
    assert_eq!(received, 200);
    assert!(
        batches >= 4,
        "200 KB must take several 64 KiB messages, took {batches}"
    );
    let c = next(&mut rx, |r| match r {
        Record::Counters(_, c) if c.drops.oversize_dropped > 0 => Some(c),
        _ => None,
    })
    .await;
    assert_eq!(c.drops.oversize_dropped, 1);
    client.close(Duration::from_secs(5)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_naming_another_node_is_refused_with_permission_denied_under_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (server, _rec, mut rx) = mtls_server(&m).await;

    // The generated client sees the status itself.
    let mut raw = raw_client(&m, "node-a", server.local_addr()).await;
    let (tx, out) = mpsc::channel(4);
    tx.send(hello_msg("node-b")).await.unwrap();
    let err = raw
        .connect(tokio_stream::wrappers::ReceiverStream::new(out))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("node-b"), "{err:?}");

    // The agent client reports it and keeps retrying with backoff.
    let tls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let (client, _in) =
        AgentClient::connect_with(fast_config(server.local_addr()), tls, hello("node-c"))
            .await
            .unwrap();
    wait_state(&client, |s| {
        matches!(s, ConnectionState::Backoff { last_error, .. } if last_error.starts_with("PermissionDenied"))
    })
    .await;
    assert_eq!(client.stats().sessions, 0);
    client.close(Duration::from_secs(1)).await;

    // Nobody got through.
    assert!(rx.try_recv().is_err());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_client_certificate_cannot_connect_when_mutual_tls_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (server, _rec, _rx) = mtls_server(&m).await;
    let tls = ClientTls::from_material(&m, None).unwrap();
    let (client, _in) =
        AgentClient::connect_with(fast_config(server.local_addr()), tls, hello("node-a"))
            .await
            .unwrap();
    wait_state(&client, |s| matches!(s, ConnectionState::Backoff { .. })).await;
    assert_eq!(client.stats().sessions, 0);
    client.close(Duration::from_secs(1)).await;
    server.shutdown().await.unwrap();
}

/// Sends bytes as they are, to reach the server's decoder with garbage.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = wire::OperatorMessage;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<wire::OperatorMessage>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(&mut tonic_prost::ProstCodec::<
            wire::AgentMessage,
            wire::OperatorMessage,
        >::default())
    }
}

async fn raw_stream(m: &TlsMaterial, addr: SocketAddr, frames: Vec<Vec<u8>>) -> tonic::Status {
    use prost::Message as _;
    let mut grpc = tonic::client::Grpc::new(raw_channel(m, "node-a", addr).await);
    grpc.ready().await.unwrap();
    let mut all = vec![hello_msg("node-a").encode_to_vec()];
    all.extend(frames);
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/kestrel.v1.AgentService/Connect");
    let req = tonic::Request::new(tokio_stream::iter(all));
    let resp = grpc.streaming(req, path, RawCodec).await.unwrap();
    let mut inbound = resp.into_inner();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended cleanly"),
            Err(s) => return s,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_end_only_their_own_stream_with_invalid_argument() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (server, _rec, mut rx) = mtls_server(&m).await;

    // A healthy agent, connected throughout.
    let tls = ClientTls::from_material(&m, Some("node-b")).unwrap();
    let (client, _in) =
        AgentClient::connect_with(fast_config(server.local_addr()), tls, hello("node-b"))
            .await
            .unwrap();
    next(&mut rx, |r| match r {
        Record::Connect(a) if a.hello.node_name == "node-b" => Some(()),
        _ => None,
    })
    .await;

    // Bytes that are not protobuf at all (field 1 with wire type 7).
    let st = raw_stream(&m, server.local_addr(), vec![vec![0x0f, 0xff, 0xff, 0xff]]).await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("malformed message"), "{st:?}");

    // Valid protobuf with an enum value this version does not know.
    let mut e = wire::Event::from(&every_kind()[3]);
    if let Some(wire::event::Kind::File(f)) = e.kind.as_mut() {
        f.op = 99;
    }
    let batch = wire::EventBatch {
        events: vec![wire::Event::from(&every_kind()[0]), e],
        seq: 1,
    };
    let frame = wire::AgentMessage {
        msg: Some(wire::agent_message::Msg::Events(batch)),
    };
    let st = raw_stream(&m, server.local_addr(), vec![frame.encode_to_vec()]).await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(
        st.message()
            .contains("events[1].file.op: unknown enum value 99"),
        "{st:?}"
    );

    // A message with no content, and a second Hello.
    let empty = wire::AgentMessage { msg: None }.encode_to_vec();
    let st = raw_stream(&m, server.local_addr(), vec![empty]).await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    let st = raw_stream(
        &m,
        server.local_addr(),
        vec![hello_msg("node-a").encode_to_vec()],
    )
    .await;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");

    // The healthy agent's stream is untouched.
    client.send(with_workload("web", every_kind())).unwrap();
    let b = next(&mut rx, |r| match r {
        Record::Batch(a, b) if a.hello.node_name == "node-b" => Some(b),
        _ => None,
    })
    .await;
    assert_eq!(b.events.len(), every_kind().len());
    assert_eq!(client.stats().sessions, 1);
    client.close(Duration::from_secs(5)).await;
    server.shutdown().await.unwrap();
}

/// A server on its own runtime and thread, so that killing it is a crash:
/// every task and socket vanishes at once, nothing shuts down gracefully.
struct CrashableServer {
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl CrashableServer {
    fn start(addr: SocketAddr, tls: ServerTls, rec: Arc<Recorder>) -> (Self, SocketAddr) {
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // the crashed server's socket may take a moment to close:
                // retry the bind of the same port for a while
                let mut tries = 0;
                let listener = loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("bind {addr}: {e}"),
                    }
                };
                let h = serve(listener, tls, rec).await.unwrap();
                ready_tx.send(h.local_addr()).unwrap();
                let _ = tokio::task::spawn_blocking(move || killed.recv()).await;
                std::mem::forget(h);
            });
            rt.shutdown_background();
        });
        let addr = ready.recv().unwrap();
        (CrashableServer { kill, thread }, addr)
    }

    fn crash(self) {
        let _ = self.kill.send(());
        self.thread.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_operator_crash_the_client_reconnects_says_hello_again_and_goes_on_sending() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let tls = ServerTls::from_material(&m, true).unwrap();
    let (rec1, mut rx1) = Recorder::new();
    let (first, addr) = CrashableServer::start("127.0.0.1:0".parse().unwrap(), tls.clone(), rec1);

    let ctls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let (client, _in) = AgentClient::connect_with(fast_config(addr), ctls, hello("node-a"))
        .await
        .unwrap();
    let before = next(&mut rx1, |r| match r {
        Record::Connect(a) => Some(a),
        _ => None,
    })
    .await;
    client
        .send(with_workload("web", every_kind()[..2].to_vec()))
        .unwrap();
    let b1 = next(&mut rx1, |r| match r {
        Record::Batch(_, b) => Some(b),
        _ => None,
    })
    .await;
    assert_eq!(b1.seq, 1);
    wait_acked(&client, 1).await;

    first.crash();
    wait_state(&client, |s| matches!(s, ConnectionState::Backoff { .. })).await;
    // Sent while the operator is away: queued, not lost.
    client
        .send(with_workload("web", every_kind()[2..5].to_vec()))
        .unwrap();

    let (rec2, mut rx2) = Recorder::new();
    let (second, _) = CrashableServer::start(addr, tls, rec2);
    let again = next(&mut rx2, |r| match r {
        Record::Connect(a) => Some(a),
        _ => None,
    })
    .await;
    assert_eq!(again.hello, before.hello);
    let b2 = next(&mut rx2, |r| match r {
        Record::Batch(_, b) => Some(b),
        _ => None,
    })
    .await;
    assert_eq!(b2.events, with_workload("web", every_kind()[2..5].to_vec()));
    assert_eq!(b2.seq, 2, "sequence numbers continue across reconnects");
    assert_eq!(client.stats().sessions, 2);
    client.close(Duration::from_secs(5)).await;
    second.crash();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_ends_streams_with_unavailable_and_clients_retry() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (server, _rec, mut rx) = mtls_server(&m).await;
    let tls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let (client, _in) =
        AgentClient::connect_with(fast_config(server.local_addr()), tls, hello("node-a"))
            .await
            .unwrap();
    next(&mut rx, |r| matches!(r, Record::Connect(_)).then_some(())).await;
    server.shutdown().await.unwrap();
    let reason = next(&mut rx, |r| match r {
        Record::Disconnect(_, d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(reason, Disconnect::Shutdown);
    wait_state(&client, |s| matches!(s, ConnectionState::Backoff { .. })).await;
    client.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_without_blocking_and_the_drops_reach_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    // A port with nobody listening yet: the operator is away.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cc = fast_config(addr);
    cc.queue_capacity = 10;
    let tls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let (client, _in) = AgentClient::connect_with(cc, tls, hello("node-a"))
        .await
        .unwrap();

    client
        .send(with_workload("web", every_kind()[..8].to_vec()))
        .unwrap();
    let full = client
        .send(with_workload("web", every_kind()[..4].to_vec()))
        .unwrap_err();
    assert_eq!(full.dropped, 4);
    client
        .send(with_workload("db", every_kind()[..2].to_vec()))
        .unwrap();
    let full = client
        .send(with_workload("db", every_kind()[..1].to_vec()))
        .unwrap_err();
    assert_eq!(full.dropped, 1);
    client.add_ring_dropped(5);
    client.add_aggregated(3);
    assert_eq!(client.stats().queued, 10);

    let (rec, mut rx) = Recorder::new();
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = serve(listener, ServerTls::from_material(&m, true).unwrap(), rec)
        .await
        .unwrap();
    let c = next(&mut rx, |r| match r {
        Record::Counters(_, c) => Some(c),
        _ => None,
    })
    .await;
    assert_eq!(c.drops.queue_dropped, 5);
    assert_eq!(c.drops.queue_dropped_by_workload.get("web"), Some(&4));
    assert_eq!(c.drops.queue_dropped_by_workload.get("db"), Some(&1));
    assert_eq!(c.drops.ring_dropped, 5);
    assert_eq!(c.drops.aggregated, 3);
    // What was queued is delivered after the counters.
    let mut got = 0;
    while got < 10 {
        got += next(&mut rx, |r| match r {
            Record::Batch(_, b) => Some(b.events.len()),
            _ => None,
        })
        .await;
    }
    assert_eq!(got, 10);
    client.close(Duration::from_secs(5)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_endpoint_with_tls_settings_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let tls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let err = AgentClient::connect("http://127.0.0.1:1", tls, hello("node-a"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_crashed_operator_never_acknowledged_is_resent_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let tls = ServerTls::from_material(&m, true).unwrap();
    let (rec1, mut rx1) = Recorder::new();
    rec1.hang_on_batch
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (first, addr) = CrashableServer::start("127.0.0.1:0".parse().unwrap(), tls.clone(), rec1);
    let ctls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let (client, _in) = AgentClient::connect_with(fast_config(addr), ctls, hello("node-a"))
        .await
        .unwrap();
    let sent = with_workload("web", every_kind());
    client.send(sent.clone()).unwrap();
    let b1 = next(&mut rx1, |r| match r {
        Record::Batch(_, b) => Some(b),
        _ => None,
    })
    .await;
    assert_eq!(b1.events, sent);
    assert_eq!(client.stats().acked_seq, 0);
    first.crash();

    let (rec2, mut rx2) = Recorder::new();
    let (second, _) = CrashableServer::start(addr, tls, rec2);
    let b2 = next(&mut rx2, |r| match r {
        Record::Batch(_, b) => Some(b),
        _ => None,
    })
    .await;
    assert_eq!((b2.seq, b2.events), (1, sent));
    wait_acked(&client, 1).await;
    assert_eq!(client.stats().resent_batches, 1);
    client.close(Duration::from_secs(5)).await;
    second.crash();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_that_never_speak_tls_are_closed_and_a_real_agent_is_still_served() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let (rec, mut rx) = Recorder::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig {
        handshake_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = serve_with(
        listener,
        ServerTls::from_material(&m, true).unwrap(),
        rec.clone(),
        config,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    // 300 connections that never start TLS.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // A real agent connects and its batch arrives while they hang on.
    let tls = ClientTls::from_material(&m, Some("node-a")).unwrap();
    let started = std::time::Instant::now();
    let (client, _in) = AgentClient::connect_with(fast_config(addr), tls, hello("node-a"))
        .await
        .unwrap();
    client
        .send(with_workload("web", every_kind()[..1].to_vec()))
        .unwrap();
    let batch = next(&mut rx, |r| match r {
        Record::Batch(a, b) => Some((a, b)),
        _ => None,
    })
    .await;
    assert_eq!(batch.0.hello.node_name, "node-a");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the agent waited behind the idle connections: {:?}",
        started.elapsed()
    );
    // Every idle connection is closed by the server after the timeout.
    for mut c in idle {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
            .await
            .expect("an idle connection was still open 5 s later");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    let stats = server.stats();
    assert_eq!(
        stats
            .handshake_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        300
    );
    // The agent is still connected on its first stream.
    assert_eq!(
        client.state().borrow().clone(),
        ConnectionState::Connected { session: 1 }
    );
    client.close(Duration::from_secs(1)).await;
}
