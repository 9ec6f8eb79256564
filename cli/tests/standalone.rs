//! End to end, standalone: real BPF, real runc containers, the real embedding
//! model. Learns a two-replica workload, converges on a short window, then an
//! unknown binary in one replica raises an alert with its context.

use kestrel_cli::standalone;
use kestrel_e2e::fake_http::{chat_answer, FakeHttp};
use kestrel_e2e::{require_privileged, workload};
use kestrel_operator::config::{load_embedder, OperatorConfig};
use kestrel_operator::output::Line;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const WORKLOADS: &str = "workloads:
  - name: web
    image: webapp:v1
    containers: \"e2e-web-*\"
learning:
  window: 4s
  minLearningTime: 8s
  cleanWindows: 1
  maxNewPerWindow: 0
";

fn wait_for(
    rx: &mpsc::Receiver<serde_json::Value>,
    secs: u64,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            if pred(&v) {
                return Some(v);
            }
        }
    }
    None
}

fn status(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("status.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// One container test at a time: each standalone instance watches every
/// container on the host, and counts the other test's as unknown workloads.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Standalone Kestrel running in a thread: its state directory, its stop
/// flag, its output lines and its thread.
struct Running {
    dir: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    rx: mpsc::Receiver<serde_json::Value>,
    runner: std::thread::JoinHandle<anyhow::Result<standalone::Summary>>,
}

impl Running {
    fn start(config: &str, name: &str) -> Self {
        let cfg: OperatorConfig = serde_saphyr::from_str(config).unwrap();
        let embedder = load_embedder(&cfg).expect("embedding model (make deps)");
        let dir = std::env::temp_dir().join(format!("kestrel-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let runner = {
            let (dir, stop, cfg) = (dir.clone(), Arc::clone(&stop), cfg.clone());
            std::thread::spawn(move || {
                standalone::run(
                    &cfg,
                    &dir,
                    &stop,
                    embedder,
                    |line: &Line| {
                        let _ = tx.send(serde_json::to_value(line).unwrap());
                    },
                    Duration::from_secs(2),
                )
            })
        };
        std::thread::sleep(Duration::from_secs(2));
        Running {
            dir,
            stop,
            rx,
            runner,
        }
    }
}

#[test]
fn a_learned_workload_converges_and_an_unknown_binary_raises_an_alert_with_context() {
    if !require_privileged() {
        return;
    }
    // a scripted OpenAI-compatible LLM and a webhook receiver on loopback
    let llm = FakeHttp::start(|_, _| {
        let verdict = serde_json::json!({"verdict": "malicious", "score": 97,
            "explanation": "XMRig crypto miner connecting to a Monero pool", "tactics": ["TA0040"]});
        (200, chat_answer(&verdict))
    })
    .unwrap();
    let hook = FakeHttp::start(|_, _| (200, "{}".into())).unwrap();
    let config = format!(
        "{WORKLOADS}scoring:\n  llm:\n    endpoint: {}/v1\n    model: test\nwebhook:\n  url: {}/alerts\n",
        llm.base_url, hook.base_url
    );
    let _serial = serial();
    let Running {
        dir,
        stop,
        rx,
        runner,
    } = Running::start(&config, "standalone");
    let web1 = workload::start_web("e2e-web-1").expect("start replica 1");
    let web2 = workload::start_web("e2e-web-2").expect("start replica 2");

    let converged = wait_for(&rx, 120, |v| {
        v.get("phase").is_some_and(|p| p["to"] == "Detecting")
    });
    assert!(converged.is_some(), "the workload did not converge");

    // steady state: the normal loop keeps running; the edge filter should drop it
    let before = status(&dir);
    std::thread::sleep(Duration::from_secs(8));
    let after = status(&dir);
    let matched = |s: &serde_json::Value| s["edge"]["matched"]["web"].as_u64().unwrap_or(0);
    let forwarded = |s: &serde_json::Value| s["edge"]["forwarded"].as_u64().unwrap_or(0);
    let (m, f) = (
        matched(&after) - matched(&before),
        forwarded(&after) - forwarded(&before),
    );
    eprintln!("steady state: {m} matched at the edge, {f} forwarded");
    assert!(m > 0, "no steady-state activity seen");
    assert!(
        m as f64 / (m + f) as f64 >= 0.99,
        "only {m} of {} dropped at the edge",
        m + f
    );

    web1.exec(&[
        "sh",
        "-c",
        &format!("{} >/dev/null 2>&1; true", workload::MINER),
    ])
    .expect("attack");
    let alert = wait_for(&rx, 30, |v| {
        v.get("alert")
            .is_some_and(|a| a["evidence"]["args"].get(0).and_then(|x| x.as_str()) == Some("xmrig"))
    })
    .expect("an alert for xmrig");
    let a = &alert["alert"];
    let ev = &a["evidence"];
    assert_eq!(ev["containerId"], "e2e-web-1");
    assert_eq!(ev["workload"], "web");
    assert!(ev["pid"].as_u64().unwrap_or(0) > 0, "{ev}");
    let chain: Vec<&str> = ev["processChain"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["exe"].as_str())
        .collect();
    assert_eq!(chain.first(), Some(&"sh"), "parent first: {chain:?}");
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
    assert!(
        ev["signals"].to_string().contains("UnknownProcess"),
        "{}",
        ev["signals"]
    );
    assert!(
        ["High", "Critical"].contains(&a["severity"].as_str().unwrap_or("")),
        "{}",
        a["severity"]
    );
    // standalone counts the workload's live containers as its replicas
    let cluster = a["breakdown"]["cluster"]["reason"].as_str().unwrap_or("");
    assert!(
        cluster.starts_with("1 of 2 pods show it"),
        "{}",
        a["breakdown"]["cluster"]
    );
    drop((web1, web2));

    stop.store(true, Ordering::Relaxed);
    let summary = runner.join().unwrap().expect("standalone run");
    assert_eq!(summary.capture.kernel.dropped, 0);
    assert!(std::fs::read_dir(dir.join("alerts")).unwrap().count() >= 1);
    let profile =
        std::fs::read_to_string(dir.join("profiles/web.yaml")).expect("profile persisted");
    assert!(profile.contains("phase: Detecting"), "{profile}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A drop into a `noexec` mount (runc mounts `/dev/shm` noexec) never runs,
/// so only the failed exec shows it: with no LLM configured it raises one
/// alert whose incident names the attempt and its error.
#[test]
fn a_failed_exec_from_a_noexec_mount_raises_an_alert_with_no_llm() {
    if !require_privileged() {
        return;
    }
    let _serial = serial();
    let config = WORKLOADS.replace("e2e-web-*", "e2e-noexec-*");
    let Running {
        dir,
        stop,
        rx,
        runner,
    } = Running::start(&config, "noexec");
    let web1 = workload::start_web("e2e-noexec-1").expect("start replica 1");
    let web2 = workload::start_web("e2e-noexec-2").expect("start replica 2");
    let converged = wait_for(&rx, 120, |v| {
        v.get("phase").is_some_and(|p| p["to"] == "Detecting")
    });
    assert!(converged.is_some(), "the workload did not converge");
    std::thread::sleep(Duration::from_secs(2));

    web2.exec(&[
        "sh",
        "-c",
        "cat /bin/busybox > /dev/shm/kworker; chmod 755 /dev/shm/kworker; \
         /dev/shm/kworker -o pool.example:4444 >/dev/null 2>&1; true",
    ])
    .expect("attack");
    let failed = |a: &serde_json::Value| {
        a["incident"]["files"].as_array().is_some_and(|f| {
            f.iter()
                .any(|p| p == "/dev/shm/kworker (exec failed: EACCES)")
        })
    };
    let alert = wait_for(&rx, 30, |v| v.get("alert").is_some_and(failed))
        .unwrap_or_else(|| panic!("no alert names the failed exec"));
    let a = &alert["alert"];
    assert_eq!(a["evidence"]["containerId"], "e2e-noexec-2");
    assert_eq!(a["llm"]["status"], "Unavailable", "{}", a["llm"]);
    // the whole attempt is one incident: the shell, its copy, its chmod and
    // the exec that failed
    let until = Instant::now() + Duration::from_secs(4);
    let ids: std::collections::BTreeSet<String> = std::iter::once(Some(alert.clone()))
        .chain(std::iter::from_fn(|| {
            (Instant::now() < until).then(|| rx.recv_timeout(Duration::from_millis(200)).ok())
        }))
        .flatten()
        .filter_map(|v| {
            v.get("alert")
                .and_then(|a| a["id"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(ids.len(), 1, "one alert for the attempt: {ids:?}");
    drop((web1, web2));
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap().expect("standalone run");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_flushes_state_and_exits_cleanly() {
    use std::io::{BufRead, BufReader};
    if !require_privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kestrel-e2e-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(["standalone", "--state-dir"])
        .arg(&dir)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start kestrel");
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    // wait until capture is starting, then let it attach
    for line in err.by_ref().map_while(Result::ok) {
        if line.contains("starting capture") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let rest: Vec<String> = err.map_while(Result::ok).collect();
    assert!(status.success(), "exit {status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"summary\"")), "{rest:?}");
    assert!(
        dir.join("status.json").is_file(),
        "status written on shutdown"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
