//! Agent credentials as a user sets them up on bare metal: the operator keeps
//! its CA, `kestrel certs issue` gives each node its own certificate, and
//! only those certificates get in.

use kestrel_proto::client::{AgentClient, ConnectionState};
use kestrel_proto::{ClientTls, Hello, TlsMaterial};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn kestrel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(args)
        .output()
        .expect("run kestrel")
}

fn issue(tls: &Path, node: &str, out: &Path) {
    let o = kestrel(&[
        "certs",
        "issue",
        "--node",
        node,
        "--tls-dir",
        tls.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "issue {node}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("names:     {node}")), "{text}");
    assert!(
        text.contains("left:      29 days") || text.contains("left:      30 days"),
        "{text}"
    );
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `kestrel operator` with its state under `root`, TLS in `tls` and
/// `--agents agents`; returns it and its gRPC address (see [`listening`]).
fn operator(root: &Path, tls: &Path, agents: &str, drain: bool) -> (Killed, String) {
    let mut op = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(["operator", "--listen", "127.0.0.1:0", "--agents", agents])
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--tls-dir")
        .arg(tls)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start operator");
    let stderr = op.stderr.take().unwrap();
    let op = Killed(op);
    (op, listening(stderr, drain))
}

/// The operator's gRPC address from its stderr; with `drain` the rest of
/// its stderr is read (and echoed), else the pipe is closed, as a
/// supervisor that stopped reading would leave it.
fn listening(stderr: std::process::ChildStderr, drain: bool) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the operator exited before listening")
            .unwrap();
        if let Some(a) = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["listening"].as_str().map(String::from))
        {
            break a;
        }
    };
    if drain {
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("operator: {l}");
            }
        });
    }
    addr
}

fn hello(node: &str) -> Hello {
    Hello {
        node_name: node.into(),
        agent_id: format!("test-{node}"),
        version: "0".into(),
        boot_id: "b".into(),
        instance: 0,
    }
}

/// Connects with `tls` as `node`; returns the state once it is connected or
/// has failed at least once.
async fn attempt(addr: &str, tls: ClientTls, node: &str) -> (AgentClient, ConnectionState) {
    let (client, _rx) = AgentClient::connect(format!("https://{addr}"), tls, hello(node))
        .await
        .expect("client");
    let mut state = client.state();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = state.borrow_and_update().clone();
        if matches!(
            s,
            ConnectionState::Connected { .. } | ConnectionState::Backoff { .. }
        ) {
            return (client, s);
        }
        assert!(Instant::now() < deadline, "{node}: still {s:?}");
        let _ = tokio::time::timeout(Duration::from_millis(200), state.changed()).await;
    }
}

fn agent_tls(dir: &Path, node: &str) -> ClientTls {
    let m = TlsMaterial::load_agent(dir, node).expect("agent credentials");
    ClientTls::from_material(&m, Some(node)).unwrap()
}

fn refusal(s: &ConnectionState) -> String {
    match s {
        ConnectionState::Backoff { last_error, .. } => last_error.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_agents_connect_and_foreign_or_missing_certificates_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tls: PathBuf = root.join("operator-tls");
    // The operator creates its CA and server certificate; `--agents ''`
    // lets in any node whose certificate the CA signed.
    let (_op, addr) = operator(root, &tls, "", true);
    let operator_files = snapshot(&tls);
    assert!(operator_files.iter().any(|(n, _)| n == "ca-key.pem"));

    // Two nodes, each with its own directory holding only what it needs.
    let (n1, n2) = (root.join("node-1"), root.join("node-2"));
    issue(&tls, "node-1", &n1);
    issue(&tls, "node-2", &n2);
    let names: Vec<String> = snapshot(&n1).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["ca.pem", "client-node-1-key.pem", "client-node-1.pem"]
    );
    let (c1, s1) = attempt(&addr, agent_tls(&n1, "node-1"), "node-1").await;
    let (c2, s2) = attempt(&addr, agent_tls(&n2, "node-2"), "node-2").await;
    assert_eq!(s1, ConnectionState::Connected { session: 1 });
    assert_eq!(s2, ConnectionState::Connected { session: 1 });
    let n1_files = snapshot(&n1);

    // A certificate from another CA: refused, and the agent is told why.
    let other = TlsMaterial::generate(&root.join("other-ca"), &["localhost"], &["node-x"]).unwrap();
    let ca = std::fs::read(n1.join("ca.pem")).unwrap();
    let x = other.client("node-x").unwrap();
    let foreign = ClientTls::from_pem(ca.clone()).with_identity(
        std::fs::read(&x.cert).unwrap(),
        std::fs::read(&x.key).unwrap(),
    );
    let (_cx, sx) = attempt(&addr, foreign, "node-x").await;
    let why = refusal(&sx);
    assert!(
        why.contains("the operator refused this agent's certificate"),
        "{why}"
    );
    // No certificate at all.
    let (_cn, sn) = attempt(&addr, ClientTls::from_pem(ca), "node-1").await;
    let why = refusal(&sn);
    assert!(
        why.contains("the operator requires a client certificate"),
        "{why}"
    );
    // An agent that trusts another CA is told the operator's certificate is
    // not one it trusts.
    let wrong_trust = ClientTls::from_pem(std::fs::read(&other.ca.cert).unwrap()).with_identity(
        std::fs::read(n1.join("client-node-1.pem")).unwrap(),
        std::fs::read(n1.join("client-node-1-key.pem")).unwrap(),
    );
    let (_cw, sw) = attempt(&addr, wrong_trust, "node-1").await;
    let why = refusal(&sw);
    assert!(
        why.contains("not signed by the CA this agent trusts"),
        "{why}"
    );

    // A third node: the CA, the server and the first two are untouched, and
    // the first two stay connected on their first stream.
    let n3 = root.join("node-3");
    issue(&tls, "node-3", &n3);
    let after: Vec<_> = snapshot(&tls)
        .into_iter()
        .filter(|(n, _)| !n.starts_with("client-node-3"))
        .collect();
    assert_eq!(after, operator_files);
    assert_eq!(snapshot(&n1), n1_files);
    let (_c3, s3) = attempt(&addr, agent_tls(&n3, "node-3"), "node-3").await;
    assert_eq!(s3, ConnectionState::Connected { session: 1 });
    assert_eq!(
        c1.state().borrow().clone(),
        ConnectionState::Connected { session: 1 }
    );
    assert_eq!(
        c2.state().borrow().clone(),
        ConnectionState::Connected { session: 1 }
    );
}

#[test]
fn an_operator_allow_list_refuses_a_signed_node_it_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tls = root.join("tls");
    TlsMaterial::ensure(&tls, &["localhost", "127.0.0.1"], &[] as &[&str]).unwrap();
    // stderr closed: the refusal below is logged at warn to a closed pipe,
    // which once panicked the connection's task (the agent then read a
    // reset instead of the refusal)
    let (_op, addr) = operator(root, &tls, "node-1", false);
    let n2 = root.join("node-2");
    issue(&tls, "node-2", &n2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_c1, s1) = attempt(&addr, agent_tls(&tls, "node-1"), "node-1").await;
        assert_eq!(s1, ConnectionState::Connected { session: 1 });
        let (_c2, s2) = attempt(&addr, agent_tls(&n2, "node-2"), "node-2").await;
        let why = refusal(&s2);
        assert!(
            why.contains("PermissionDenied")
                && why.contains("node \"node-2\" is not among the operator's allowed agents"),
            "{why}"
        );
    });
}

fn agent_binary() -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/kestrel-agent
    let me = std::env::current_exe().unwrap();
    me.parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("kestrel-agent")
}

/// `kestrel-agent run` as node-1 with `--tls-dir tls`, without `RUST_LOG`,
/// against port 9 (discard: nothing listens there on loopback).
fn agent_run(tls: &Path) -> Command {
    let mut c = Command::new(agent_binary());
    c.args([
        "run",
        "--node",
        "node-1",
        "--operator",
        "https://127.0.0.1:9",
    ])
    .arg("--tls-dir")
    .arg(tls)
    .env_remove("RUST_LOG");
    c
}

/// Without `RUST_LOG`: an agent with no credentials exits naming the file
/// and the command that makes it, and generates nothing; an agent that
/// cannot reach its operator says so.
#[test]
fn the_agent_says_why_at_the_default_log_level() {
    if !kestrel_e2e::require_privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = agent_run(&empty)
        .output()
        .expect("run kestrel-agent (make test builds it)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ca.pem: missing") && err.contains("kestrel certs issue --node node-1"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "files were generated"
    );

    let tls = dir.path().join("op");
    TlsMaterial::ensure(&tls, &["localhost", "127.0.0.1"], &[] as &[&str]).unwrap();
    let node = dir.path().join("node");
    issue(&tls, "node-1", &node);
    let mut child = agent_run(&node)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains("operator stream down") => break Some(l),
            Ok(l) => seen.push(l),
            Err(_) => break None,
        }
    };
    let line = found.unwrap_or_else(|| panic!("no warning; stderr was:\n{}", seen.join("\n")));
    assert!(line.contains("connect"), "{line}");
}
