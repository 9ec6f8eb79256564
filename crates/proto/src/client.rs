//! The agent side of the stream: [`AgentClient`] keeps one stream to the
//! operator open (reconnecting with exponential backoff and jitter), sends
//! Hello on every new stream, and moves events from a bounded queue that
//! never blocks the producer.
//!
//! When the queue is full (operator slow or away) the events are not queued:
//! they are counted, per workload, and the counts reach the operator in the
//! next [`Counters`] message. Counters are cumulative and sent every
//! [`ClientConfig::counters_interval`] when they changed, and at the start of
//! every stream.

use crate::error::{Error, Result};
use crate::messages::{
    Counters, DigestUpdate, DropCounters, Hello, OperatorMessage, TargetSet, WorkloadEvent,
};
use crate::server::DEFAULT_MAX_MESSAGE_BYTES;
use crate::tls::ClientTls;
use crate::wire;
use crate::wire::agent_service_client::AgentServiceClient;
use prost::Message as _;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Exponential backoff with jitter between connection attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure (default 100 ms).
    pub initial: Duration,
    /// Largest delay (default 30 s).
    pub max: Duration,
    /// Growth per failed attempt (default 2).
    pub multiplier: f64,
    /// Random part, as a fraction of the delay (default 0.2: ±20 %).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1 = after the first failure),
    /// given a random number in `[0, 1)`; never above `max`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        let secs = (base * (1.0 + jitter)).clamp(0.0, self.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

/// Settings of an [`AgentClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The operator, `https://host:port` (or `http://` with
    /// [`ClientTls::plaintext`]).
    pub endpoint: String,
    /// Largest message sent or accepted (default 4 MiB); batches are split
    /// below it, single events above it are dropped and counted.
    pub max_message_bytes: usize,
    /// Most events per batch message (default 1024).
    pub max_batch_events: usize,
    /// Events the outbound queue holds (default 65 536).
    pub queue_capacity: usize,
    /// Events of sent but unacknowledged batches kept for resending after a
    /// reconnect (default 16 384); beyond it the oldest are sent at most once.
    pub max_unacked_events: usize,
    /// Operator messages buffered for the caller (default 256).
    pub inbound_capacity: usize,
    /// How often changed counters are sent (default 1 s).
    pub counters_interval: Duration,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Limit for TCP + TLS + the operator accepting the Hello (default 5 s).
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive ping interval (default 10 s).
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered (default 20 s).
    pub keepalive_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for this endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_batch_events: 1024,
            queue_capacity: 65_536,
            max_unacked_events: 16_384,
            inbound_capacity: 256,
            counters_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Where the client's connection stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening a stream (attempt 0 is the first after start or after a
    /// stream that had been established).
    Connecting {
        /// Failed attempts before this one.
        attempt: u32,
    },
    /// A stream is open and the Hello was accepted.
    Connected {
        /// Streams opened so far, this one included.
        session: u64,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// Failed attempts so far.
        attempt: u32,
        /// The wait.
        delay: Duration,
        /// Why the last attempt or stream failed (gRPC code and message).
        last_error: String,
    },
    /// The client was closed.
    Closed,
}

/// The queue was full: these events were counted as dropped, not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue full: {dropped} events dropped and counted")]
pub struct QueueFull {
    /// How many events were dropped.
    pub dropped: usize,
}

/// A snapshot of the client's own counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Streams opened.
    pub sessions: u64,
    /// Batch messages sent.
    pub batches_sent: u64,
    /// Events sent.
    pub events_sent: u64,
    /// Highest batch sequence number the operator acknowledged.
    pub acked_seq: u64,
    /// Highest batch sequence number sent.
    pub sent_seq: u64,
    /// Events in the queue now.
    pub queued: usize,
    /// Operator messages that did not convert (ignored).
    pub invalid_operator_messages: u64,
    /// Batches sent again on a new stream because the previous one had not
    /// acknowledged them.
    pub resent_batches: u64,
}

#[derive(Default)]
struct Shared {
    queued: AtomicUsize,
    ring_dropped: AtomicU64,
    queue_dropped: AtomicU64,
    aggregated: AtomicU64,
    oversize_dropped: AtomicU64,
    unacked_evicted: AtomicU64,
    dropped_by_workload: Mutex<HashMap<String, u64>>,
    matched: Mutex<HashMap<String, u64>>,
    counters_dirty: AtomicBool,
    sessions: AtomicU64,
    batches_sent: AtomicU64,
    events_sent: AtomicU64,
    acked_seq: AtomicU64,
    sent_seq: AtomicU64,
    invalid_operator_messages: AtomicU64,
    resent_batches: AtomicU64,
    /// A renewed client certificate, used from the next connection on.
    renewed_tls: Mutex<Option<ClientTls>>,
}

fn add_to(map: &Mutex<HashMap<String, u64>>, workload: &str, n: u64) {
    // A poisoned lock only means another thread panicked mid-update of a
    // counter map; the counts are still usable.
    let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
    match m.get_mut(workload) {
        Some(c) => *c = c.saturating_add(n),
        None => {
            m.insert(workload.to_string(), n);
        }
    }
}

fn snapshot(map: &Mutex<HashMap<String, u64>>) -> BTreeMap<String, u64> {
    let m = map.lock().unwrap_or_else(PoisonError::into_inner);
    m.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

impl Shared {
    fn counters(&self) -> Counters {
        Counters {
            matched: snapshot(&self.matched),
            drops: DropCounters {
                ring_dropped: self.ring_dropped.load(Ordering::Relaxed),
                queue_dropped: self.queue_dropped.load(Ordering::Relaxed),
                aggregated: self.aggregated.load(Ordering::Relaxed),
                oversize_dropped: self.oversize_dropped.load(Ordering::Relaxed),
                unacked_evicted: self.unacked_evicted.load(Ordering::Relaxed),
                queue_dropped_by_workload: snapshot(&self.dropped_by_workload),
            },
        }
    }

    fn dirty(&self) {
        self.counters_dirty.store(true, Ordering::Relaxed);
    }
}

/// One agent's connection to the operator. Cheap calls, never blocking:
/// [`send`](Self::send) and the `add_*` counters can be called from the
/// ring-buffer reader.
pub struct AgentClient {
    shared: Arc<Shared>,
    capacity: usize,
    queue: mpsc::UnboundedSender<Vec<WorkloadEvent>>,
    state: watch::Receiver<ConnectionState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("state", &*self.state.borrow())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Starts a client with the default [`ClientConfig`] for `endpoint`.
    /// Returns at once (connecting happens in the background) with the
    /// client and the stream of operator messages. Fails only for an invalid
    /// endpoint or TLS configuration.
    pub async fn connect(
        endpoint: impl Into<String>,
        tls: ClientTls,
        hello: Hello,
    ) -> Result<(AgentClient, mpsc::Receiver<OperatorMessage>)> {
        Self::connect_with(ClientConfig::new(endpoint), tls, hello).await
    }

    /// Starts a client with this configuration (see [`connect`](Self::connect)).
    pub async fn connect_with(
        config: ClientConfig,
        tls: ClientTls,
        hello: Hello,
    ) -> Result<(AgentClient, mpsc::Receiver<OperatorMessage>)> {
        let endpoint = endpoint(&config, &tls)?;
        let shared = Arc::new(Shared::default());
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity.max(1));
        let (state_tx, state) = watch::channel(ConnectionState::Connecting { attempt: 0 });
        let (stop, stop_rx) = watch::channel(false);
        let capacity = config.queue_capacity;
        let run = Runner {
            shared: Arc::clone(&shared),
            config,
            endpoint,
            tls,
            hello: wire::Hello {
                instance: if hello.instance == 0 {
                    fastrand::u64(1..)
                } else {
                    hello.instance
                },
                ..wire::Hello::from(&hello)
            },
            queue: queue_rx,
            inbound: inbound_tx,
            state: state_tx,
            stop: stop_rx,
            seq: 0,
            unacked: VecDeque::new(),
            unacked_events: 0,
        };
        let task = tokio::spawn(run.run());
        Ok((
            AgentClient {
                shared,
                capacity,
                queue,
                state,
                stop,
                task: Some(task),
            },
            inbound_rx,
        ))
    }

    /// Uses `tls` (a renewed client certificate) from now on: the current
    /// stream ends within a counters interval and the next one presents the
    /// new certificate (unacknowledged batches are resent, as after any
    /// reconnect).
    pub fn renew_tls(&self, tls: ClientTls) {
        *self
            .shared
            .renewed_tls
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tls);
    }

    /// Queues events for the operator; never blocks. When the queue cannot
    /// take them all, none are queued: they are counted as dropped (per
    /// workload) and reported in the next counters.
    pub fn send(&self, events: Vec<WorkloadEvent>) -> Result<(), QueueFull> {
        let n = events.len();
        if n == 0 {
            return Ok(());
        }
        let before = self.shared.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.capacity {
            self.shared.queued.fetch_sub(n, Ordering::AcqRel);
            self.count_dropped(&events);
            return Err(QueueFull { dropped: n });
        }
        if let Err(mpsc::error::SendError(events)) = self.queue.send(events) {
            // The background task is gone (the client is closing).
            self.shared.queued.fetch_sub(n, Ordering::AcqRel);
            self.count_dropped(&events);
            return Err(QueueFull { dropped: n });
        }
        Ok(())
    }

    fn count_dropped(&self, events: &[WorkloadEvent]) {
        self.shared
            .queue_dropped
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut m = self
            .shared
            .dropped_by_workload
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for e in events {
            match m.get_mut(&e.workload) {
                Some(c) => *c += 1,
                None => {
                    m.insert(e.workload.clone(), 1);
                }
            }
        }
        self.shared.dirty();
    }

    /// Counts events the digest matched locally.
    pub fn add_matched(&self, workload: &str, n: u64) {
        add_to(&self.shared.matched, workload, n);
        self.shared.dirty();
    }

    /// Counts events lost before decoding (ring buffer).
    pub fn add_ring_dropped(&self, n: u64) {
        self.shared.ring_dropped.fetch_add(n, Ordering::Relaxed);
        self.shared.dirty();
    }

    /// Counts events the agent folded into counts instead of sending them.
    pub fn add_aggregated(&self, n: u64) {
        self.shared.aggregated.fetch_add(n, Ordering::Relaxed);
        self.shared.dirty();
    }

    /// The counters as the next report will carry them.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// The client's own counters.
    pub fn stats(&self) -> ClientStats {
        let s = &self.shared;
        ClientStats {
            sessions: s.sessions.load(Ordering::Relaxed),
            batches_sent: s.batches_sent.load(Ordering::Relaxed),
            events_sent: s.events_sent.load(Ordering::Relaxed),
            acked_seq: s.acked_seq.load(Ordering::Relaxed),
            sent_seq: s.sent_seq.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
            invalid_operator_messages: s.invalid_operator_messages.load(Ordering::Relaxed),
            resent_batches: s.resent_batches.load(Ordering::Relaxed),
        }
    }

    /// Watches the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Sends what is queued and the final counters when connected, closes the
    /// stream and waits for the operator to end it, at most `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(timeout, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        // The background task flushes what it can and ends.
        self.stop.send_replace(true);
    }
}

fn endpoint(config: &ClientConfig, tls: &ClientTls) -> Result<Endpoint> {
    let bad = |reason: String| Error::Endpoint {
        endpoint: config.endpoint.clone(),
        reason,
    };
    let want = if tls.is_tls() { "https://" } else { "http://" };
    if !config.endpoint.starts_with(want) {
        return Err(bad(format!("must start with {want} for this TLS setting")));
    }
    let mut e = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true);
    if let Some(c) = tls.tonic_config() {
        e = e.tls_config(c)?;
    }
    Ok(e)
}

/// Asks the operator's enrollment listener at `endpoint` for a client
/// certificate (`Enroll`), trusting the server through `tls` (no client
/// certificate needed). The error says in words why it failed: the
/// operator's refusal, or what went wrong with TLS or the connection.
pub async fn enroll(
    endpoint_url: &str,
    tls: &ClientTls,
    request: wire::EnrollRequest,
    timeout: Duration,
) -> std::result::Result<wire::EnrollResponse, String> {
    let config = ClientConfig {
        connect_timeout: timeout,
        ..ClientConfig::new(endpoint_url)
    };
    let e = endpoint(&config, tls).map_err(|e| e.to_string())?;
    let call = async {
        let channel = e.connect().await.map_err(|e| {
            let mut why = format!("connect: {e}");
            let mut cur = std::error::Error::source(&e);
            while let Some(s) = cur {
                why.push_str(&format!(": {s}"));
                cur = s.source();
            }
            match explain_tls(&why) {
                Some(plain) => format!("{plain} ({why})"),
                None => why,
            }
        })?;
        AgentServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024)
            .enroll(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| describe(&s))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer from {endpoint_url} within {timeout:?}"))?
}

fn describe(s: &tonic::Status) -> String {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    let base = format!("{:?}: {}", s.code(), s.message());
    match explain_tls(&chain.join(": ")) {
        Some(why) => format!("{why} ({base}: {})", chain.join(": ")),
        None if chain.is_empty() => base,
        None => format!("{base}: {}", chain.join(": ")),
    }
}

/// Opens a TLS connection of its own to `endpoint` with `tls` and waits a
/// moment for what the server says: the error of a handshake that fails, or
/// the alert a server sends after it (TLS 1.3 checks the client's
/// certificate after the client has finished). None when nothing went wrong.
async fn diagnose_tls(endpoint: &str, tls: &ClientTls) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let config = tls.rustls_config().ok()??;
    let uri: tonic::codegen::http::Uri = endpoint.parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = tls.domain().unwrap_or(&host).to_string();
    let server_name = tokio_rustls::rustls::pki_types::ServerName::try_from(name).ok()?;
    let probe = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut conn = match connector.connect(server_name, tcp).await {
            Ok(c) => c,
            Err(e) => return Some(e.to_string()),
        };
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut b)).await {
            Ok(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()?
}

/// Plain words for the TLS failures a user can fix.
fn explain_tls(chain: &str) -> Option<&'static str> {
    let c = chain.to_ascii_lowercase();
    if c.contains("invalid peer certificate") {
        Some(
            "the operator's certificate is not signed by the CA this agent trusts (ca.pem), \
             or does not name the endpoint's host",
        )
    } else if c.contains("certificaterequired") {
        Some("the operator requires a client certificate and this agent presented none")
    } else if c.contains("received fatal alert") {
        Some(
            "the operator refused this agent's certificate (not signed by the operator's CA, \
             expired, or not for this node): issue one with `kestrel certs issue`",
        )
    } else {
        None
    }
}

/// Why a stream ended.
enum SessionEnd {
    /// The client is closing.
    Closed,
    /// Reconnect.
    Broken(String),
}

struct Runner {
    shared: Arc<Shared>,
    config: ClientConfig,
    endpoint: Endpoint,
    tls: ClientTls,
    hello: wire::Hello,
    queue: mpsc::UnboundedReceiver<Vec<WorkloadEvent>>,
    inbound: mpsc::Sender<OperatorMessage>,
    state: watch::Sender<ConnectionState>,
    stop: watch::Receiver<bool>,
    seq: u64,
    /// Batches sent (or about to be) and not yet acknowledged, oldest first;
    /// resent on the next stream.
    unacked: VecDeque<(u64, Vec<WorkloadEvent>)>,
    unacked_events: usize,
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

impl Runner {
    async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            if stopping(&self.stop) {
                break;
            }
            self.state
                .send_replace(ConnectionState::Connecting { attempt });
            let last_error = match self.open().await {
                Err(e) => e,
                Ok((tx, inbound)) => {
                    attempt = 0;
                    let session = self.shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
                    self.state
                        .send_replace(ConnectionState::Connected { session });
                    match self.session(tx, inbound).await {
                        SessionEnd::Closed => break,
                        SessionEnd::Broken(e) => e,
                    }
                }
            };
            attempt = attempt.saturating_add(1);
            let delay = self.config.backoff.delay(attempt, fastrand::f64());
            tracing::warn!(error = %last_error, ?delay, attempt, "operator stream down, reconnecting");
            self.state.send_replace(ConnectionState::Backoff {
                attempt,
                delay,
                last_error,
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.wait_for(|s| *s) => break,
            }
        }
        self.state.send_replace(ConnectionState::Closed);
    }

    /// Connects, sends Hello (and the counters), waits for the operator to
    /// accept the stream.
    async fn open(
        &mut self,
    ) -> std::result::Result<(mpsc::Sender<wire::AgentMessage>, JoinHandle<String>), String> {
        let renewed = self
            .shared
            .renewed_tls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tls) = renewed {
            match endpoint(&self.config, &tls) {
                Ok(e) => {
                    self.endpoint = e;
                    self.tls = tls;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewed TLS settings unusable; keeping the old ones")
                }
            }
        }
        let max = self.config.max_message_bytes;
        let attempt = async {
            let channel: Channel = match self.endpoint.connect().await {
                Ok(c) => c,
                Err(e) => {
                    let mut why = format!("connect: {e}");
                    let mut cur = std::error::Error::source(&e);
                    while let Some(s) = cur {
                        why.push_str(&format!(": {s}"));
                        cur = s.source();
                    }
                    return Err(match explain_tls(&why) {
                        Some(plain) => format!("{plain} ({why})"),
                        None => why,
                    });
                }
            };
            let mut client = AgentServiceClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            let (tx, rx) = mpsc::channel(8);
            let hello = wire::agent_message::Msg::Hello(self.hello.clone());
            let _ = tx.try_send(wire::AgentMessage { msg: Some(hello) });
            let counters = self.shared.counters();
            if counters != Counters::default() {
                self.shared.counters_dirty.store(false, Ordering::Relaxed);
                let c = wire::agent_message::Msg::Counters(wire::Counters::from(&counters));
                let _ = tx.try_send(wire::AgentMessage { msg: Some(c) });
            }
            let response = match client
                .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                Ok(r) => r,
                Err(s) => {
                    let mut why = describe(&s);
                    // A refused client certificate shows up in HTTP/2 as a
                    // closed connection; a handshake of our own reads the
                    // operator's TLS alert, which says why.
                    if self.tls.is_tls()
                        && matches!(
                            s.code(),
                            tonic::Code::Unknown
                                | tonic::Code::Cancelled
                                | tonic::Code::Unavailable
                        )
                    {
                        if let Some(alert) = diagnose_tls(&self.config.endpoint, &self.tls).await {
                            why = match explain_tls(&alert) {
                                Some(plain) => format!("{plain} ({alert}; {why})"),
                                None => format!("{why} ({alert})"),
                            };
                        }
                    }
                    return Err(why);
                }
            };
            Ok::<_, String>((tx, response.into_inner()))
        };
        let (tx, inbound) = tokio::time::timeout(self.config.connect_timeout, attempt)
            .await
            .map_err(|_| "timed out connecting".to_string())??;
        let reader = tokio::spawn(read_inbound(
            inbound,
            self.inbound.clone(),
            Arc::clone(&self.shared),
        ));
        Ok((tx, reader))
    }

    async fn session(
        &mut self,
        tx: mpsc::Sender<wire::AgentMessage>,
        mut reader: JoinHandle<String>,
    ) -> SessionEnd {
        let mut tick = tokio::time::interval(self.config.counters_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut stop = self.stop.clone();
        if let Err(e) = self.resend_unacked(&tx).await {
            reader.abort();
            return SessionEnd::Broken(e);
        }
        let end = loop {
            self.prune_acked();
            enum Next {
                ReaderEnded(String),
                Stop,
                Batch(Option<Vec<WorkloadEvent>>),
                Tick,
            }
            let next = tokio::select! {
                biased;
                r = &mut reader => Next::ReaderEnded(r.unwrap_or_else(|e| format!("reader: {e}"))),
                _ = stop.wait_for(|s| *s) => Next::Stop,
                batch = self.queue.recv() => Next::Batch(batch),
                _ = tick.tick() => Next::Tick,
            };
            match next {
                Next::ReaderEnded(e) => break SessionEnd::Broken(e),
                Next::Stop | Next::Batch(None) => break self.finish(tx, &mut reader).await,
                Next::Batch(Some(first)) => {
                    if let Err(e) = self.send_batches(&tx, first).await {
                        break SessionEnd::Broken(e);
                    }
                }
                Next::Tick => {
                    let renewed = self
                        .shared
                        .renewed_tls
                        .lock()
                        .map(|t| t.is_some())
                        .unwrap_or(false);
                    if renewed {
                        break SessionEnd::Broken(
                            "client certificate renewed; reconnecting with it".into(),
                        );
                    }
                    if self.shared.counters_dirty.swap(false, Ordering::Relaxed) {
                        let c = wire::Counters::from(&self.shared.counters());
                        let m = wire::AgentMessage {
                            msg: Some(wire::agent_message::Msg::Counters(c)),
                        };
                        if tx.send(m).await.is_err() {
                            self.shared.dirty();
                            break SessionEnd::Broken("the stream closed while sending".into());
                        }
                    }
                }
            }
        };
        reader.abort();
        end
    }

    /// Flushes the queue and the counters, half-closes, waits for the end.
    async fn finish(
        &mut self,
        tx: mpsc::Sender<wire::AgentMessage>,
        reader: &mut JoinHandle<String>,
    ) -> SessionEnd {
        while let Ok(batch) = self.queue.try_recv() {
            if self.send_batches(&tx, batch).await.is_err() {
                return SessionEnd::Closed;
            }
        }
        let c = wire::Counters::from(&self.shared.counters());
        let _ = tx
            .send(wire::AgentMessage {
                msg: Some(wire::agent_message::Msg::Counters(c)),
            })
            .await;
        drop(tx);
        let _ = reader.await;
        SessionEnd::Closed
    }

    /// Converts queued events (coalescing what else is queued) into batch
    /// messages below the size limits, keeps them until acknowledged, and
    /// sends them.
    async fn send_batches(
        &mut self,
        tx: &mpsc::Sender<wire::AgentMessage>,
        first: Vec<WorkloadEvent>,
    ) -> std::result::Result<(), String> {
        // Room for the batch's own framing (seq, tags, lengths).
        let limit = self.config.max_message_bytes.saturating_sub(64);
        let max_events = self.config.max_batch_events.max(1);
        let mut out: Vec<(wire::EventBatch, Vec<WorkloadEvent>)> = Vec::new();
        let mut cur = (wire::EventBatch::default(), Vec::new());
        let mut cur_bytes = 0usize;
        let mut next = Some(first);
        while let Some(events) = next.take() {
            self.shared.queued.fetch_sub(events.len(), Ordering::AcqRel);
            for e in events {
                let w = wire::Event::from(&e);
                let len = w.encoded_len();
                let framed = len + prost::length_delimiter_len(len) + 1;
                if framed > limit {
                    self.shared.oversize_dropped.fetch_add(1, Ordering::Relaxed);
                    self.shared.dirty();
                    tracing::warn!(bytes = len, workload = %e.workload, "event larger than a message, dropped");
                    continue;
                }
                if cur.0.events.len() >= max_events || cur_bytes + framed > limit {
                    out.push(std::mem::take(&mut cur));
                    cur_bytes = 0;
                }
                cur.0.events.push(w);
                cur.1.push(e);
                cur_bytes += framed;
            }
            if cur.0.events.len() < max_events {
                next = self.queue.try_recv().ok();
            }
        }
        if !cur.0.events.is_empty() {
            out.push(cur);
        }
        // Numbered and kept first, so that a stream breaking half-way loses none.
        let mut wires = Vec::with_capacity(out.len());
        for (mut batch, events) in out {
            self.seq += 1;
            batch.seq = self.seq;
            self.keep_unacked(self.seq, events);
            wires.push(batch);
        }
        for batch in wires {
            self.send_batch(tx, batch).await?;
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        tx: &mpsc::Sender<wire::AgentMessage>,
        batch: wire::EventBatch,
    ) -> std::result::Result<(), String> {
        let (seq, n) = (batch.seq, batch.events.len() as u64);
        let m = wire::AgentMessage {
            msg: Some(wire::agent_message::Msg::Events(batch)),
        };
        tx.send(m)
            .await
            .map_err(|_| "the stream closed while sending".to_string())?;
        self.shared.sent_seq.fetch_max(seq, Ordering::Relaxed);
        self.shared.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.shared.events_sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn keep_unacked(&mut self, seq: u64, events: Vec<WorkloadEvent>) {
        self.unacked_events += events.len();
        self.unacked.push_back((seq, events));
        // Bounded: the oldest batches are then sent at most once, and
        // counted, since a stream that breaks now loses them.
        while self.unacked_events > self.config.max_unacked_events && self.unacked.len() > 1 {
            if let Some((_, old)) = self.unacked.pop_front() {
                self.unacked_events -= old.len();
                self.shared
                    .unacked_evicted
                    .fetch_add(old.len() as u64, Ordering::Relaxed);
                self.shared.dirty();
            }
        }
    }

    fn prune_acked(&mut self) {
        let acked = self.shared.acked_seq.load(Ordering::Relaxed);
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= acked) {
            if let Some((_, old)) = self.unacked.pop_front() {
                self.unacked_events -= old.len();
            }
        }
    }

    /// Sends again what the previous stream did not get acknowledged, with
    /// the same sequence numbers (the operator drops duplicates).
    async fn resend_unacked(
        &mut self,
        tx: &mpsc::Sender<wire::AgentMessage>,
    ) -> std::result::Result<(), String> {
        self.prune_acked();
        let batches: Vec<wire::EventBatch> = self
            .unacked
            .iter()
            .map(|(seq, events)| wire::EventBatch {
                events: events.iter().map(wire::Event::from).collect(),
                seq: *seq,
            })
            .collect();
        if !batches.is_empty() {
            tracing::info!(batches = batches.len(), "resending unacknowledged batches");
            self.shared
                .resent_batches
                .fetch_add(batches.len() as u64, Ordering::Relaxed);
        }
        for b in batches {
            self.send_batch(tx, b).await?;
        }
        Ok(())
    }
}

/// Reads operator messages until the stream ends; returns why it ended.
async fn read_inbound(
    mut inbound: tonic::Streaming<wire::OperatorMessage>,
    out: mpsc::Sender<OperatorMessage>,
    shared: Arc<Shared>,
) -> String {
    use wire::operator_message::Msg;
    loop {
        let m = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return "the operator ended the stream".into(),
            Err(s) => return describe(&s),
        };
        let msg = match m.msg {
            Some(Msg::Ack(a)) => {
                shared.acked_seq.fetch_max(a.seq, Ordering::Relaxed);
                continue;
            }
            Some(Msg::Digest(d)) => match DigestUpdate::try_from(d) {
                Ok(d) => OperatorMessage::Digest(d),
                Err(e) => {
                    shared
                        .invalid_operator_messages
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "ignoring an invalid digest update");
                    continue;
                }
            },
            Some(Msg::Targets(t)) => OperatorMessage::Targets(TargetSet::from(t)),
            None => {
                shared
                    .invalid_operator_messages
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        // A caller that dropped its receiver just does not get them.
        let _ = out.send(msg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_stays_below_the_maximum() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(4, 0.5), Duration::from_millis(800));
        assert_eq!(b.delay(30, 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.999), Duration::from_secs(30));
    }

    #[test]
    fn backoff_jitter_spreads_delays_within_its_fraction() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(320));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(480));
        let d = b.delay(3, 0.25);
        assert!(
            d > Duration::from_millis(320) && d < Duration::from_millis(400),
            "{d:?}"
        );
    }
}
