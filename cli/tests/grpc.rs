//! The cluster shape on one host: a `kestrel operator` process and a
//! `kestrel-agent run` process talking gRPC over loopback with mutual TLS,
//! real BPF, and two runc containers of one workload.

use kestrel_e2e::{require_privileged, workload};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CONFIG: &str = "workloads:
  - name: web
    image: webapp:v1
    containers: \"grpc-web-*\"
learning:
  window: 4s
  minLearningTime: 8s
  cleanWindows: 1
  maxNewPerWindow: 0
";

fn agent_binary() -> std::path::PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/kestrel-agent
    let me = std::env::current_exe().unwrap();
    let p = me
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("kestrel-agent");
    assert!(
        p.is_file(),
        "{} is missing: build the binaries first (make test does)",
        p.display()
    );
    p
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn agent_and_operator_over_grpc_learn_converge_and_alert_with_context() {
    if !require_privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kestrel-grpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), CONFIG).unwrap();

    let mut op = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args([
            "operator",
            "--listen",
            "127.0.0.1:0",
            "--agents",
            "node-a",
            "--progress-every",
            "2",
        ])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--tls-dir")
        .arg(dir.join("tls"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start operator");
    let stdout = op.stdout.take().unwrap();
    let stderr = op.stderr.take().unwrap();
    let op = Killed(op);
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut addr = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(a) = v["listening"].as_str() {
                addr = Some(a.to_string());
                break;
            }
        }
    }
    let addr = addr.expect("operator listening address");

    let agent = Command::new(agent_binary())
        .args([
            "run",
            "--node",
            "node-a",
            "--operator",
            &format!("https://{addr}"),
        ])
        .arg("--tls-dir")
        .arg(dir.join("tls"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent");
    let agent = Killed(agent);
    std::thread::sleep(Duration::from_secs(3));
    let web1 = workload::start_web("grpc-web-1").expect("replica 1");
    let web2 = workload::start_web("grpc-web-2").expect("replica 2");

    let wait = |secs: u64, pred: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
                if pred(&v) {
                    return Some(v);
                }
            }
        }
        None
    };
    assert!(
        wait(120, &|v| v
            .get("phase")
            .is_some_and(|p| p["to"] == "Detecting"))
        .is_some(),
        "the workload did not converge over gRPC"
    );
    // give the new digest a moment to reach the agent, then attack
    std::thread::sleep(Duration::from_secs(2));
    web2.exec(&[
        "sh",
        "-c",
        &format!("{} >/dev/null 2>&1; true", workload::MINER),
    ])
    .expect("attack");
    let alert = wait(30, &|v| {
        v.get("alert")
            .is_some_and(|a| a["evidence"]["args"].get(0).and_then(|x| x.as_str()) == Some("xmrig"))
    })
    .expect("an alert for xmrig over gRPC");
    let ev = &alert["alert"]["evidence"];
    assert_eq!(ev["containerId"], "grpc-web-2");
    assert!(ev["pid"].as_u64().unwrap_or(0) > 0);
    let chain: Vec<&str> = ev["processChain"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["exe"].as_str())
        .collect();
    assert_eq!(chain.first(), Some(&"sh"), "{chain:?}");
    let args: Vec<&str> = ev["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(
        args.contains(&"stratum+tcp://pool.minexmr.com:4444"),
        "{args:?}"
    );

    // the agent dropped the steady-state loop at the edge and reported it
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/status.json")).unwrap())
            .unwrap();
    let matched = status["edge"]["matchedByNode"]["node-a"]["web"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        matched > 0,
        "no matched counters reached the operator: {status}"
    );
    drop((web1, web2, agent, op));
    let _ = std::fs::remove_dir_all(&dir);
}
