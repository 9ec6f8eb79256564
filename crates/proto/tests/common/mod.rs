//! Shared pieces of the transport tests: events of every kind, a handler that
//! records what it gets, TLS material and a server on its own runtime.
#![allow(dead_code)]

use kestrel_events::{
    Argv, ByteStr, CgroupChange, ContainerRef, Endpoint, Event, EventKind, Exec, ExecFailed, Exit,
    FileOp, FileOpKind, Fork, Namespaces, NetOp, NetOpKind, Runtime, Task, TcpState,
};
use kestrel_proto::client::{AgentClient, Backoff, ClientConfig, ConnectionState};
use kestrel_proto::server::{AgentHandler, AgentIdentity, Disconnect, OperatorSender, Refusal};
use kestrel_proto::{Counters, EventBatch, Hello, OperatorMessage, TlsMaterial, WorkloadEvent};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The operator's URL on the loopback port of `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("https://127.0.0.1:{}", addr.port())
}

/// A client that reconnects and reports counters quickly (tests).
pub fn fast_config(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new(url(addr));
    c.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2.0,
        jitter: 0.2,
    };
    c.counters_interval = Duration::from_millis(50);
    c
}

/// The error of the first backoff of `client` whose error `ok` accepts
/// (at most 10 s).
pub async fn backoff_error(client: &AgentClient, mut ok: impl FnMut(&str) -> bool) -> String {
    let mut st = client.state();
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| matches!(s, ConnectionState::Backoff { last_error, .. } if ok(last_error))),
    )
    .await
    .expect("timed out waiting for the connection to back off")
    .expect("client task ended")
    .clone();
    match seen {
        ConnectionState::Backoff { last_error, .. } => last_error,
        other => unreachable!("{other:?}"),
    }
}

pub fn task() -> Task {
    Task {
        pid: 4242,
        tid: 4243,
        ppid: 1,
        uid: 1000,
        comm: ByteStr::new(&b"sh\xff"[..]),
    }
}

pub fn base(kind: EventKind) -> Event {
    Event {
        ts_ns: 123_456_789_012,
        cgroup_id: 9876,
        task: Some(task()),
        ns: Namespaces {
            pid: 4_026_531_836,
            mnt: 4_026_531_841,
        },
        container: Some(ContainerRef {
            id: "web-1".into(),
            runtime: Runtime::Plain,
        }),
        kind,
    }
}

/// One event of every kind and shape, with non-UTF-8 bytes where the kernel
/// may produce them.
pub fn every_kind() -> Vec<Event> {
    let exec = EventKind::Exec(Exec {
        filename: ByteStr::new(&b"/usr/bin/x\xc3\x28mrig"[..]),
        exe: "xmrig".into(),
        parent_comm: "bash".into(),
        ns_pid: 7,
        argv: Argv {
            args: vec![
                "xmrig".into(),
                "-o".into(),
                "stratum+tcp://pool.minexmr.com:4444".into(),
                ByteStr::new(&b"\xff\xfe\x00bin"[..]),
                "".into(),
            ],
            size: 9000,
            truncated: true,
            read_failed: false,
        },
        from_proc_scan: true,
        dir: None,
    });
    let open = EventKind::File(FileOp {
        op: FileOpKind::Open,
        syscall_nr: 257,
        dfd: -100,
        path: ByteStr::new(&b"/tmp/\x80weird"[..]),
        new_path: None,
        new_dfd: None,
        flags: 0o1101,
        mode: 0o644,
        truncated: false,
        read_failed: true,
        dir: None,
        new_dir: None,
    });
    let rename = EventKind::File(FileOp {
        op: FileOpKind::Rename,
        syscall_nr: 316,
        dfd: 3,
        path: "a".into(),
        new_path: Some("b".into()),
        new_dfd: Some(-100),
        flags: 1,
        mode: 0,
        truncated: true,
        read_failed: false,
        dir: Some(ByteStr::new(&b"/srv/\xffdata"[..])),
        new_dir: Some("/".into()),
    });
    let unlink = EventKind::File(FileOp {
        op: FileOpKind::Unlink,
        syscall_nr: 263,
        dfd: -100,
        path: "/etc/shadow".into(),
        new_path: None,
        new_dfd: None,
        flags: 0,
        mode: 0,
        truncated: false,
        read_failed: false,
        dir: None,
        new_dir: None,
    });
    let connect = EventKind::Net(NetOp {
        op: NetOpKind::Connect,
        family: 2,
        protocol: 6,
        local: None,
        remote: Some(Endpoint::Ip {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            port: 4444,
        }),
        fd: 5,
        sock: 0xffff_8880_1234_5678,
        tcp_state: None,
        read_failed: false,
    });
    let accept = EventKind::Net(NetOp {
        op: NetOpKind::Accept,
        family: 10,
        protocol: 6,
        local: Some(Endpoint::Ip {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 8080,
        }),
        remote: Some(Endpoint::Ip {
            addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            port: 65535,
        }),
        fd: 6,
        sock: 1,
        tcp_state: None,
        read_failed: false,
    });
    let state = EventKind::Net(NetOp {
        op: NetOpKind::State,
        family: 2,
        protocol: 6,
        local: None,
        remote: None,
        fd: -1,
        sock: 2,
        tcp_state: Some((TcpState::SynSent, TcpState::Other(12))),
        read_failed: true,
    });
    let unix = EventKind::Net(NetOp {
        op: NetOpKind::Connect,
        family: 1,
        protocol: 0,
        local: None,
        remote: Some(Endpoint::Unix {
            unix: ByteStr::new(&b"\x00abstract\xff"[..]),
        }),
        fd: 7,
        sock: 3,
        tcp_state: None,
        read_failed: false,
    });
    let mut softirq = base(EventKind::Net(NetOp {
        op: NetOpKind::State,
        family: 2,
        protocol: 6,
        local: None,
        remote: None,
        fd: -1,
        sock: 4,
        tcp_state: Some((TcpState::Established, TcpState::Close)),
        read_failed: false,
    }));
    softirq.task = None;
    softirq.container = None;
    vec![
        base(exec),
        base(EventKind::Fork(Fork { parent_pid: 1 })),
        base(EventKind::Exit(Exit {
            code: 255,
            signal: 9,
        })),
        base(open),
        base(rename),
        base(unlink),
        base(connect),
        base(accept),
        base(state),
        base(unix),
        base(EventKind::Cgroup(CgroupChange {
            id: 77,
            level: 2,
            path: ByteStr::new(&b"kestrel/web-\xff"[..]),
            created: false,
        })),
        softirq,
        base(EventKind::ExecFailed(ExecFailed {
            filename: ByteStr::new(&b"/dev/shm/\xffkworker"[..]),
            argv: Argv {
                args: vec!["kworker".into(), "".into(), "-o".into()],
                size: 3,
                truncated: true,
                read_failed: false,
            },
            errno: 13,
            dfd: Some(5),
            dir: None,
        })),
    ]
}

pub fn with_workload(workload: &str, events: Vec<Event>) -> Vec<WorkloadEvent> {
    events
        .into_iter()
        .map(|event| WorkloadEvent {
            image: String::new(),
            process: None,
            chain: Vec::new(),
            workload: workload.into(),
            event,
        })
        .collect()
}

pub fn hello(node: &str) -> Hello {
    Hello {
        node_name: node.into(),
        agent_id: format!("agent-{node}"),
        version: "0.1.0".into(),
        boot_id: "b0a7-1d".into(),
        instance: 0,
    }
}

/// What the recording handler saw.
#[derive(Debug)]
pub enum Record {
    Connect(AgentIdentity),
    Batch(AgentIdentity, EventBatch),
    Counters(AgentIdentity, Counters),
    Disconnect(AgentIdentity, Disconnect),
}

/// Records everything; pushes `greeting` to every agent that connects.
pub struct Recorder {
    pub tx: mpsc::UnboundedSender<Record>,
    pub greeting: Mutex<Vec<OperatorMessage>>,
    pub senders: Mutex<Vec<OperatorSender>>,
    /// Record batches but never return from `on_batch` (no acks).
    pub hang_on_batch: std::sync::atomic::AtomicBool,
}

impl Recorder {
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Record>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let r = Recorder {
            tx,
            greeting: Mutex::new(Vec::new()),
            senders: Mutex::new(Vec::new()),
            hang_on_batch: Default::default(),
        };
        (Arc::new(r), rx)
    }
}

#[tonic::async_trait]
impl AgentHandler for Recorder {
    async fn on_connect(
        &self,
        agent: &AgentIdentity,
        outbound: OperatorSender,
    ) -> Result<(), Refusal> {
        let greeting = self.greeting.lock().unwrap().clone();
        for m in &greeting {
            outbound.send(m).await.map_err(|e| {
                Refusal::new(
                    kestrel_proto::server::RefusalCode::Unavailable,
                    e.to_string(),
                )
            })?;
        }
        self.senders.lock().unwrap().push(outbound);
        let _ = self.tx.send(Record::Connect(agent.clone()));
        Ok(())
    }

    async fn on_batch(&self, agent: &AgentIdentity, batch: EventBatch) -> Result<(), Refusal> {
        let _ = self.tx.send(Record::Batch(agent.clone(), batch));
        if self
            .hang_on_batch
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn on_counters(&self, agent: &AgentIdentity, counters: Counters) -> Result<(), Refusal> {
        let _ = self.tx.send(Record::Counters(agent.clone(), counters));
        Ok(())
    }

    async fn on_disconnect(&self, agent: &AgentIdentity, reason: Disconnect) {
        let _ = self.tx.send(Record::Disconnect(agent.clone(), reason));
    }
}

/// The next record that `pick` accepts, within 10 s.
pub async fn next<T>(
    rx: &mut mpsc::UnboundedReceiver<Record>,
    mut pick: impl FnMut(Record) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = rx.recv().await.expect("recorder channel closed");
            if let Some(t) = pick(r) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for a record")
}

pub fn material(dir: &std::path::Path) -> TlsMaterial {
    TlsMaterial::generate(
        dir,
        &["localhost", "127.0.0.1"],
        &["node-a", "node-b", "node-c"],
    )
    .unwrap()
}
