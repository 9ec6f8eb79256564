//! The operator side of the agent stream: [`serve`] accepts agents over TLS
//! and hands what they send to an [`AgentHandler`].
//!
//! Per stream: the first message must be a Hello (within
//! [`ServerConfig::hello_timeout`]); when the agent presented a client
//! certificate, the Hello's node name must be one of the certificate's names
//! (CN or SAN) or the stream is refused with `PERMISSION_DENIED`. Messages
//! above [`ServerConfig::max_message_bytes`] end the stream with
//! `OUT_OF_RANGE`; messages that do not decode or convert end it with
//! `INVALID_ARGUMENT` naming the field. Either way only that stream ends.
//! Every batch the handler accepted is acknowledged (`Ack { seq }`,
//! cumulative, best effort).

use crate::error::{Error, Result};
use crate::messages::{Counters, EventBatch, Hello, OperatorMessage};
use crate::tls::{certificate_names, ServerTls};
use crate::wire;
use crate::wire::agent_message::Msg;
use crate::wire::agent_service_server::{AgentService, AgentServiceServer};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Code, Request, Response, Status, Streaming};

/// Who is on the other end of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Unique per accepted stream (a reconnecting agent gets a new one).
    pub connection: u64,
    /// What the agent said about itself.
    pub hello: Hello,
    /// The peer's socket address.
    pub peer_addr: Option<SocketAddr>,
    /// Names of the verified client certificate (empty without one).
    pub cert_names: Vec<String>,
}

/// How a handler turns a stream away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalCode {
    /// The agent may not do this (`PERMISSION_DENIED`).
    PermissionDenied,
    /// The agent sent something unacceptable (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The operator cannot take it now; the agent should retry (`UNAVAILABLE`).
    Unavailable,
    /// The operator is over a limit (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
    /// The credential was not accepted (`UNAUTHENTICATED`).
    Unauthenticated,
    /// This operator does not offer it (`UNIMPLEMENTED`).
    Unimplemented,
}

/// A handler's reason to end a stream; the agent receives it as a gRPC status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    /// The status code.
    pub code: RefusalCode,
    /// The status message.
    pub message: String,
}

impl Refusal {
    /// A refusal with this code.
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn into_status(self) -> Status {
        let code = match self.code {
            RefusalCode::PermissionDenied => Code::PermissionDenied,
            RefusalCode::InvalidArgument => Code::InvalidArgument,
            RefusalCode::Unavailable => Code::Unavailable,
            RefusalCode::ResourceExhausted => Code::ResourceExhausted,
            RefusalCode::Unauthenticated => Code::Unauthenticated,
            RefusalCode::Unimplemented => Code::Unimplemented,
        };
        Status::new(code, self.message)
    }
}

/// Why a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The agent closed its side.
    Closed,
    /// The agent sent a malformed or oversized message.
    Malformed(String),
    /// The handler refused a message.
    Refused(Refusal),
    /// The connection failed (reset, keepalive timeout).
    Transport(String),
    /// The server is shutting down.
    Shutdown,
}

/// What the operator does with agent streams. One instance serves every
/// stream; the methods of one stream are called in order, never concurrently.
///
/// A method that takes its time holds back that agent only: its stream is
/// read no further, HTTP/2 flow control pushes back, and the agent's bounded
/// queue counts what it has to drop.
#[tonic::async_trait]
pub trait AgentHandler: Send + Sync + 'static {
    /// An agent said Hello (its identity checked). `outbound` pushes digests
    /// and target sets to it for as long as the stream lives.
    ///
    /// The stream starts flowing only after this returns: send at most
    /// [`ServerConfig::outbound_capacity`] messages from here (or use
    /// [`OperatorSender::try_send`], or send from another task).
    async fn on_connect(
        &self,
        agent: &AgentIdentity,
        outbound: OperatorSender,
    ) -> Result<(), Refusal>;
    /// A batch of events arrived (acknowledged when this returns `Ok`).
    async fn on_batch(&self, agent: &AgentIdentity, batch: EventBatch) -> Result<(), Refusal>;
    /// The agent's cumulative counters arrived.
    async fn on_counters(&self, agent: &AgentIdentity, counters: Counters) -> Result<(), Refusal>;
    /// The stream ended (called once per accepted stream).
    async fn on_disconnect(&self, agent: &AgentIdentity, reason: Disconnect);
    /// An agent asks for a client certificate, proving itself with a
    /// token (`Enroll`; the request's sizes are already checked). The
    /// default refuses: only the cluster operator enrolls.
    async fn enroll(
        &self,
        request: crate::wire::EnrollRequest,
        peer_addr: Option<SocketAddr>,
    ) -> Result<crate::wire::EnrollResponse, Refusal> {
        let _ = (request, peer_addr);
        Err(Refusal::new(
            RefusalCode::Unimplemented,
            "this operator does not enroll agents; issue a certificate with `kestrel certs issue`",
        ))
    }
}

/// Largest token or certificate request `Enroll` takes (16 KiB each).
pub const MAX_ENROLL_FIELD_BYTES: usize = 16 * 1024;

/// The stream's far end is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the agent stream is closed")]
pub struct StreamClosed;

/// Why [`OperatorSender::try_send`] did not send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// The outbound buffer is full (the agent reads slowly).
    #[error("the agent's outbound buffer is full")]
    Full,
    /// The stream is closed.
    #[error("the agent stream is closed")]
    Closed,
}

type OutItem = std::result::Result<wire::OperatorMessage, Status>;

/// Sends [`OperatorMessage`]s down one agent's stream. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OperatorSender {
    tx: mpsc::Sender<OutItem>,
}

impl OperatorSender {
    /// Sends, waiting while the outbound buffer is full.
    pub async fn send(&self, msg: &OperatorMessage) -> Result<(), StreamClosed> {
        self.tx
            .send(Ok(wire::OperatorMessage::from(msg)))
            .await
            .map_err(|_| StreamClosed)
    }

    /// Sends if there is room now.
    pub fn try_send(&self, msg: &OperatorMessage) -> Result<(), TrySendError> {
        self.tx
            .try_send(Ok(wire::OperatorMessage::from(msg)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => TrySendError::Full,
                mpsc::error::TrySendError::Closed(_) => TrySendError::Closed,
            })
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Limits and timers of the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest message accepted or sent, in bytes (default 4 MiB).
    pub max_message_bytes: usize,
    /// How long a new stream may take to send its Hello (default 10 s).
    pub hello_timeout: Duration,
    /// Operator messages buffered per stream (default 256).
    pub outbound_capacity: usize,
    /// HTTP/2 keepalive ping interval (default 10 s).
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered (default 20 s).
    pub keepalive_timeout: Duration,
    /// How long [`ServerHandle::shutdown`] waits for streams to end (default 5 s).
    pub shutdown_grace: Duration,
    /// How long a new connection may take to complete its TLS handshake
    /// (default 5 s); then it is closed.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once, all peers together (default 4096);
    /// connections beyond it are closed at once.
    pub max_pending_handshakes: usize,
    /// Handshakes in progress at once from one IP address (default 512).
    pub max_pending_handshakes_per_ip: usize,
    /// HTTP/2 streams one connection may have open at once (default 8; an
    /// agent uses one).
    pub max_concurrent_streams: u32,
    /// Serve `Enroll` only, refusing `Connect` (the enrollment listener,
    /// where clients have no certificate yet). Default false.
    pub enroll_only: bool,
}

/// Default largest message: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            hello_timeout: Duration::from_secs(10),
            outbound_capacity: 256,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 4096,
            max_pending_handshakes_per_ip: 512,
            max_concurrent_streams: 8,
            enroll_only: false,
        }
    }
}

/// A running server. Dropping it shuts the server down too (without waiting).
#[must_use = "dropping the handle shuts the server down"]
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    grace: Duration,
    stats: Arc<ListenerStats>,
}

/// What the listener turned away; cumulative, read at any time.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// TLS handshakes completed.
    pub handshakes: AtomicU64,
    /// TLS handshakes that failed (a certificate refused, not TLS at all).
    pub handshakes_failed: AtomicU64,
    /// Connections closed because their handshake took too long.
    pub handshake_timeouts: AtomicU64,
    /// Connections closed at once because too many handshakes were pending.
    pub over_limit: AtomicU64,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener's counters (handshakes failed, timed out, over limit).
    pub fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.stats)
    }

    /// Ends every stream with `UNAVAILABLE` (agents reconnect elsewhere or
    /// later), stops accepting and waits for the server to finish (at most the
    /// shutdown grace, then it is aborted).
    pub async fn shutdown(self) -> Result<()> {
        self.stop.send_replace(true);
        let mut task = self.task;
        match tokio::time::timeout(self.grace, &mut task).await {
            Ok(r) => Ok(r??),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

/// Serves agents on `listener` with the default [`ServerConfig`].
pub async fn serve(
    listener: TcpListener,
    tls: ServerTls,
    handler: Arc<dyn AgentHandler>,
) -> Result<ServerHandle> {
    serve_with(listener, tls, handler, ServerConfig::default()).await
}

/// Serves agents on `listener`.
pub async fn serve_with(
    listener: TcpListener,
    tls: ServerTls,
    handler: Arc<dyn AgentHandler>,
    config: ServerConfig,
) -> Result<ServerHandle> {
    let local_addr = listener.local_addr().map_err(Error::Listener)?;
    let (stop, stop_rx) = watch::channel(false);
    let service = Service {
        handler,
        config: config.clone(),
        next_connection: AtomicU64::new(1),
        stop: stop_rx.clone(),
        seen: Arc::default(),
    };
    let svc = AgentServiceServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_concurrent_streams(Some(config.max_concurrent_streams.max(1)))
        .add_service(svc);
    let stats = Arc::new(ListenerStats::default());
    let mut stop_signal = stop_rx.clone();
    let signal = async move {
        // Also ends when the handle is dropped (the sender goes away).
        let _ = stop_signal.wait_for(|s| *s).await;
    };
    let task = match tls.rustls_config()? {
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
                if let Ok(s) = &s {
                    // Small messages (acks, digests) should not wait for Nagle.
                    let _ = s.set_nodelay(true);
                }
                s
            });
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, signal))
        }
        Some(rustls) => {
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(accept_tls(
                listener,
                tokio_rustls::TlsAcceptor::from(rustls),
                tx,
                config.clone(),
                Arc::clone(&stats),
                stop_rx,
            ));
            let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, signal))
        }
    };
    Ok(ServerHandle {
        local_addr,
        stop,
        task,
        grace: config.shutdown_grace,
        stats,
    })
}

type TlsConn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accepts TCP connections and completes each one's TLS handshake in its own
/// task, within [`ServerConfig::handshake_timeout`] and the pending-handshake
/// limits, so that connections that never speak TLS hold nobody up. A
/// handshake that fails is logged with the peer and the reason; the socket
/// is then closed gracefully, so that the agent reads the TLS alert (which
/// says why) instead of a reset.
async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    out: mpsc::Sender<std::io::Result<TlsConn>>,
    config: ServerConfig,
    stats: Arc<ListenerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let pending: Arc<Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::default();
    let total = Arc::new(AtomicU64::new(0));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            () = out.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let ip = peer.ip();
        let admitted = {
            let mut p = pending.lock().unwrap_or_else(PoisonError::into_inner);
            let n = p.entry(ip).or_insert(0);
            if *n >= config.max_pending_handshakes_per_ip
                || total.load(Ordering::Relaxed) >= config.max_pending_handshakes as u64
            {
                false
            } else {
                *n += 1;
                total.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        if !admitted {
            stats.over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "too many pending TLS handshakes; connection closed");
            continue;
        }
        let (acceptor, out, stats) = (acceptor.clone(), out.clone(), Arc::clone(&stats));
        let (pending, total) = (Arc::clone(&pending), Arc::clone(&total));
        let limit = config.handshake_timeout;
        tokio::spawn(async move {
            let r = tokio::time::timeout(limit, acceptor.accept(tcp).into_fallible()).await;
            {
                let mut p = pending.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(n) = p.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        p.remove(&ip);
                    }
                }
                total.fetch_sub(1, Ordering::Relaxed);
            }
            match r {
                Ok(Ok(conn)) => {
                    stats.handshakes.fetch_add(1, Ordering::Relaxed);
                    let _ = out.send(Ok(conn)).await;
                }
                Ok(Err((e, tcp))) => {
                    stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    close_gracefully(tcp).await;
                }
                Err(_) => {
                    stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, ?limit, "no TLS handshake in time; connection closed");
                }
            }
        });
    }
}

/// Half-closes and reads what the peer still sends (at most a second, 64
/// KiB), so that the alert already written reaches it before the socket
/// goes away: closing with unread data would reset the connection and the
/// peer would lose the alert.
async fn close_gracefully(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let mut left = 64 * 1024usize;
    let drain = async {
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

struct Service {
    handler: Arc<dyn AgentHandler>,
    config: ServerConfig,
    next_connection: AtomicU64,
    stop: watch::Receiver<bool>,
    seen: Arc<Seen>,
}

/// The highest batch handed to the handler per node: `(instance, seq)`.
/// One entry per node name, so it stays as small as the cluster.
#[derive(Default)]
struct Seen(Mutex<HashMap<String, (u64, u64)>>);

impl Seen {
    /// Whether `(instance, seq)` was already handed over for `node`.
    fn is_duplicate(&self, node: &str, instance: u64, seq: u64) -> bool {
        if instance == 0 {
            return false;
        }
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.get(node).is_some_and(|&(i, s)| i == instance && seq <= s)
    }

    fn record(&self, node: &str, instance: u64, seq: u64) {
        if instance == 0 {
            return;
        }
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match m.get_mut(node) {
            Some(e) if e.0 == instance => e.1 = e.1.max(seq),
            Some(e) => *e = (instance, seq),
            None => {
                m.insert(node.to_string(), (instance, seq));
            }
        }
    }
}

/// Maps an error from reading the inbound stream to what the agent is told.
fn inbound_status(s: Status) -> (Disconnect, Status) {
    let msg = s.message().to_string();
    match s.code() {
        Code::OutOfRange | Code::ResourceExhausted => (Disconnect::Malformed(msg), s),
        Code::Internal
            if msg.starts_with("failed to decode") || msg.starts_with("protocol error") =>
        {
            let st = Status::invalid_argument(format!("malformed message: {msg}"));
            (Disconnect::Malformed(msg), st)
        }
        _ => (Disconnect::Transport(format!("{:?}: {msg}", s.code())), s),
    }
}

#[tonic::async_trait]
impl AgentService for Service {
    type ConnectStream = Outbound;

    async fn enroll(
        &self,
        request: Request<wire::EnrollRequest>,
    ) -> std::result::Result<Response<wire::EnrollResponse>, Status> {
        self.enroll_checked(request).await
    }

    async fn connect(
        &self,
        request: Request<Streaming<wire::AgentMessage>>,
    ) -> std::result::Result<Response<Outbound>, Status> {
        if self.config.enroll_only {
            return Err(Status::failed_precondition(
                "this is the operator's enrollment listener: it only issues certificates \
                 (Enroll); stream events to the operator's main port",
            ));
        }
        let peer_addr = request.remote_addr();
        let certs = request.peer_certs();
        let has_cert = certs.as_ref().is_some_and(|c| !c.is_empty());
        let cert_names = certs
            .as_ref()
            .and_then(|c| c.first())
            .map(|d| certificate_names(d))
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let admitted = self
            .admit(&mut inbound, peer_addr, has_cert, cert_names)
            .await;
        let (agent, tx, rx) = admitted?;
        tracing::debug!(node = %agent.hello.node_name, connection = agent.connection, "agent connected");
        let (end_tx, end_rx) = oneshot::channel();
        tokio::spawn(read_loop(
            Arc::clone(&self.handler),
            Arc::clone(&self.seen),
            agent,
            inbound,
            tx,
            end_tx,
            self.stop.clone(),
        ));
        Ok(Response::new(Outbound {
            rx,
            end: Some(end_rx),
        }))
    }
}

impl Service {
    async fn enroll_checked(
        &self,
        request: Request<wire::EnrollRequest>,
    ) -> std::result::Result<Response<wire::EnrollResponse>, Status> {
        let peer_addr = request.remote_addr();
        let r = request.into_inner();
        for (field, v) in [("token", &r.token), ("csr_pem", &r.csr_pem)] {
            if v.is_empty() {
                return Err(Status::invalid_argument(format!("{field}: missing")));
            }
            if v.len() > MAX_ENROLL_FIELD_BYTES {
                return Err(Status::invalid_argument(format!(
                    "{field}: {} bytes, more than the {MAX_ENROLL_FIELD_BYTES} allowed",
                    v.len()
                )));
            }
        }
        self.handler
            .enroll(r, peer_addr)
            .await
            .map(Response::new)
            .map_err(Refusal::into_status)
    }

    /// Reads the Hello and checks who is there: the certificate's names,
    /// then the handler's `on_connect`.
    async fn admit(
        &self,
        inbound: &mut Streaming<wire::AgentMessage>,
        peer_addr: Option<SocketAddr>,
        has_cert: bool,
        cert_names: Vec<String>,
    ) -> std::result::Result<
        (
            AgentIdentity,
            mpsc::Sender<OutItem>,
            mpsc::Receiver<OutItem>,
        ),
        Status,
    > {
        let first = tokio::time::timeout(self.config.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within the hello timeout"))?
            .map_err(|s| inbound_status(s).1)?;
        let hello = match first {
            Some(wire::AgentMessage {
                msg: Some(Msg::Hello(h)),
            }) => Hello::from(h),
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message must be a Hello",
                ))
            }
            None => return Err(Status::invalid_argument("the stream ended before a Hello")),
        };
        if hello.node_name.is_empty() {
            return Err(Status::invalid_argument("hello.node_name: missing"));
        }
        hello
            .check()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if has_cert && !cert_names.contains(&hello.node_name) {
            tracing::warn!(node = %hello.node_name, ?cert_names, ?peer_addr, "agent identity mismatch");
            return Err(Status::permission_denied(format!(
                "hello.node_name {:?} is not a name of the client certificate ({})",
                hello.node_name,
                cert_names.join(", ")
            )));
        }
        let agent = AgentIdentity {
            connection: self.next_connection.fetch_add(1, Ordering::Relaxed),
            hello,
            peer_addr,
            cert_names,
        };
        let (tx, rx) = mpsc::channel(self.config.outbound_capacity.max(1));
        self.handler
            .on_connect(&agent, OperatorSender { tx: tx.clone() })
            .await
            .map_err(Refusal::into_status)?;
        Ok((agent, tx, rx))
    }
}

async fn read_loop(
    handler: Arc<dyn AgentHandler>,
    seen: Arc<Seen>,
    agent: AgentIdentity,
    mut inbound: Streaming<wire::AgentMessage>,
    tx: mpsc::Sender<OutItem>,
    end: oneshot::Sender<Option<Status>>,
    mut stop: watch::Receiver<bool>,
) {
    let malformed = |m: String| {
        (
            Disconnect::Malformed(m.clone()),
            Some(Status::invalid_argument(m)),
        )
    };
    let (reason, status) = loop {
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => {
                break (Disconnect::Shutdown, Some(Status::unavailable("the operator is shutting down")));
            }
            m = inbound.message() => m,
        };
        let msg = match next {
            Ok(Some(wire::AgentMessage { msg: Some(m) })) => m,
            Ok(Some(wire::AgentMessage { msg: None })) => break malformed("msg: missing".into()),
            Ok(None) => break (Disconnect::Closed, None),
            Err(s) => {
                let (d, st) = inbound_status(s);
                break (d, Some(st));
            }
        };
        let handled = match msg {
            Msg::Events(b) => {
                let (node, instance, seq) = (&agent.hello.node_name, agent.hello.instance, b.seq);
                let ack = || {
                    let ack = wire::operator_message::Msg::Ack(wire::Ack { seq });
                    // Acks are cumulative: a skipped one is covered by the next.
                    let _ = tx.try_send(Ok(wire::OperatorMessage { msg: Some(ack) }));
                };
                if seen.is_duplicate(node, instance, seq) {
                    // Resent after a reconnect, but this operator already has it.
                    ack();
                    continue;
                }
                match EventBatch::try_from(b) {
                    Err(e) => break malformed(format!("events.{e}")),
                    Ok(batch) => handler.on_batch(&agent, batch).await.map(|()| {
                        seen.record(node, instance, seq);
                        ack();
                    }),
                }
            }
            Msg::Counters(c) => handler.on_counters(&agent, Counters::from(c)).await,
            Msg::Hello(_) => break malformed("hello: sent twice on one stream".into()),
        };
        if let Err(r) = handled {
            break (Disconnect::Refused(r.clone()), Some(r.into_status()));
        }
    };
    tracing::debug!(node = %agent.hello.node_name, connection = agent.connection, ?reason, "agent stream ended");
    handler.on_disconnect(&agent, reason).await;
    let _ = end.send(status);
}

/// The response stream: operator messages until the read loop says it is
/// over, then the final status (or a clean end).
struct Outbound {
    rx: mpsc::Receiver<OutItem>,
    end: Option<oneshot::Receiver<Option<Status>>>,
}

impl Stream for Outbound {
    type Item = OutItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<OutItem>> {
        let this = self.get_mut();
        let Some(end) = this.end.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(r) = Pin::new(end).poll(cx) {
            this.end = None;
            return Poll::Ready(match r {
                Ok(Some(status)) => Some(Err(status)),
                _ => None,
            });
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                this.end = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_batch_of_the_same_agent_instance_is_a_duplicate() {
        let seen = Seen::default();
        seen.record("node-a", 7, 3);
        assert!(seen.is_duplicate("node-a", 7, 3));
        assert!(seen.is_duplicate("node-a", 7, 1));
        assert!(!seen.is_duplicate("node-a", 7, 4));
        // A restarted agent starts again at 1.
        assert!(!seen.is_duplicate("node-a", 8, 1));
        seen.record("node-a", 8, 1);
        assert!(!seen.is_duplicate("node-a", 7, 9));
        assert!(!seen.is_duplicate("node-b", 7, 1));
    }

    #[test]
    fn an_agent_without_an_instance_is_never_deduplicated() {
        let seen = Seen::default();
        seen.record("node-a", 0, 5);
        assert!(!seen.is_duplicate("node-a", 0, 1));
    }
}
