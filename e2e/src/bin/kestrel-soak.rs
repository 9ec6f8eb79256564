//! Soak (`make soak`, part of `make bench`): the real agent and operator,
//! as two processes over gRPC with mutual TLS, under a sustained mixed load
//! from real containers for `KESTREL_SOAK_SECS` (default 600), with both
//! processes' RSS sampled every second.
//!
//! The load: four replicas of one workload, each looping every 20 ms over a
//! shell per request with a changing request id, writes and reads of files
//! whose names cycle through 500 values, `date` with changing arguments and
//! a directory listing; every 200th round runs a miner-named busybox (it
//! recurs from the start, so learning takes it in: the run measures the
//! learning and detection paths, not alerting). The workload learns,
//! converges, then is in detection for the rest of the run.
//!
//! Writes the samples as CSV (`--out FILE`, default
//! `docs/benchmarks/soak.csv`) and prints a summary: RSS after warm-up
//! (120 s), the largest, the mean of the first and last minute after
//! warm-up and the least-squares slope in KiB per minute.

use anyhow::{bail, Context, Result};
use kestrel_e2e::{require_privileged, sibling_binary, Container};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = "workloads:
  - name: soak
    image: soak:v1
    containers: \"soak-*\"
learning:
  window: 20s
  minLearningTime: 40s
  cleanWindows: 1
  maxNewPerWindow: 5
";

const LOOP: &str = r#"i=0
while true; do
  i=$((i+1))
  sh -c "echo GET /api/items?id=$i >> /tmp/access.log"
  echo $i > /tmp/req-$((i % 500))
  cat /tmp/req-$((i % 500)) > /dev/null
  date -d @$i +%s > /dev/null
  if [ $((i % 50)) -eq 0 ]; then ls /etc > /dev/null; : > /tmp/access.log; fi
  if [ $((i % 200)) -eq 0 ]; then xmrig -o stratum+tcp://pool.minexmr.com:4444 -u w$i >/dev/null 2>&1; fi
  usleep 20000
done"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

struct Summary {
    after_warmup: f64,
    max: f64,
    first_minute: f64,
    last_minute: f64,
    kib_per_min: f64,
}

fn summarize(t: &[f64], v: &[f64], warmup: f64) -> Summary {
    let after: Vec<(f64, f64)> = t
        .iter()
        .zip(v)
        .filter(|(t, _)| **t >= warmup)
        .map(|(t, v)| (*t, *v))
        .collect();
    let mean = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len().max(1) as f64;
    let end = after.last().map_or(0.0, |p| p.0);
    let first: Vec<_> = after
        .iter()
        .copied()
        .filter(|p| p.0 < warmup + 60.0)
        .collect();
    let last: Vec<_> = after.iter().copied().filter(|p| p.0 > end - 60.0).collect();
    let xs: Vec<f64> = after.iter().map(|p| p.0 / 60.0).collect();
    let ys: Vec<f64> = after.iter().map(|p| p.1).collect();
    Summary {
        after_warmup: after.first().map_or(0.0, |p| p.1),
        max: ys.iter().copied().fold(0.0, f64::max),
        first_minute: mean(&first),
        last_minute: mean(&last),
        kib_per_min: slope(&xs, &ys),
    }
}

fn main() -> Result<()> {
    if !require_privileged() {
        bail!("the soak needs root (BPF, runc)");
    }
    let secs: u64 = std::env::var("KESTREL_SOAK_SECS")
        .ok()
        .map(|s| s.parse().context("KESTREL_SOAK_SECS"))
        .transpose()?
        .unwrap_or(600);
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("docs/benchmarks/soak.csv");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().context("--out FILE")?.into(),
            other => bail!("unknown argument {other:?} (want --out FILE)"),
        }
    }
    let dir = std::env::temp_dir().join(format!("kestrel-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("config.yaml"), CONFIG)?;
    let tls = dir.join("tls");

    let mut op = Command::new(sibling_binary("kestrel")?)
        .args([
            "operator",
            "--listen",
            "127.0.0.1:0",
            "--agents",
            "soak-node",
        ])
        .args(["--progress-every", "30"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("kestrel operator")?;
    let stderr = op.stderr.take().context("operator stderr")?;
    let op = Killed(op);
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let l = lines
            .next()
            .context("the operator exited before listening")??;
        if let Some(a) = serde_json::from_str::<serde_json::Value>(&l)
            .ok()
            .and_then(|v| v["listening"].as_str().map(String::from))
        {
            break a;
        }
    };
    // keep draining the operator's stderr
    std::thread::spawn(move || for _ in lines {});
    let agent = Command::new(sibling_binary("kestrel-agent")?)
        .args(["run", "--node", "soak-node", "--operator"])
        .arg(format!("https://{addr}"))
        .arg("--tls-dir")
        .arg(&tls)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("kestrel-agent")?;
    let agent = Killed(agent);
    std::thread::sleep(Duration::from_secs(3));
    let bb = Path::new("/bin/busybox");
    let replicas: Vec<Container> = (1..=4)
        .map(|i| Container::start_with(&format!("soak-{i}"), &["sh", "-c", LOOP], &[(bb, "xmrig")]))
        .collect::<Result<_>>()?;

    let (op_pid, agent_pid) = (op.0.id(), agent.0.id());
    let start = Instant::now();
    let mut t = Vec::new();
    let (mut op_rss, mut agent_rss) = (Vec::new(), Vec::new());
    let mut csv = String::from("seconds,operator_rss_kib,agent_rss_kib\n");
    let mut next = start;
    while start.elapsed() < Duration::from_secs(secs) {
        next += Duration::from_secs(1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let s = start.elapsed().as_secs_f64();
        let (Some(o), Some(a)) = (rss_kib(op_pid), rss_kib(agent_pid)) else {
            bail!("the operator or the agent exited after {s:.0} s");
        };
        t.push(s);
        op_rss.push(o as f64);
        agent_rss.push(a as f64);
        csv.push_str(&format!("{s:.0},{o},{a}\n"));
        if t.len() % 60 == 0 {
            eprintln!(
                "soak: {:>4.0} s  operator {:>7} KiB  agent {:>7} KiB",
                s, o, a
            );
        }
    }
    drop(replicas);
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/status.json"))?)?;
    drop((agent, op));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(&out)?.write_all(csv.as_bytes())?;
    let warmup = 120.0;
    println!(
        "soak: {secs} s, 4 replicas; samples in {}; events handled {}, alerts {}",
        out.display(),
        status["eventsHandled"],
        status["alerts"]["alertsCreated"]
    );
    println!(
        "{:<9} {:>14} {:>9} {:>16} {:>15} {:>12}",
        "process", "after warm-up", "max", "first minute", "last minute", "KiB/min"
    );
    for (name, v) in [("operator", &op_rss), ("agent", &agent_rss)] {
        let s = summarize(&t, v, warmup);
        println!(
            "{:<9} {:>10.1} MiB {:>5.1} MiB {:>12.1} MiB {:>11.1} MiB {:>12.1}",
            name,
            s.after_warmup / 1024.0,
            s.max / 1024.0,
            s.first_minute / 1024.0,
            s.last_minute / 1024.0,
            s.kib_per_min
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_curve_has_no_slope_and_a_growing_one_has_its_rate() {
        let t: Vec<f64> = (0..600).map(f64::from).collect();
        let flat: Vec<f64> = t.iter().map(|_| 1000.0).collect();
        let s = summarize(&t, &flat, 120.0);
        assert_eq!(
            (s.kib_per_min, s.first_minute, s.last_minute),
            (0.0, 1000.0, 1000.0)
        );
        let growing: Vec<f64> = t.iter().map(|x| 1000.0 + x).collect();
        let s = summarize(&t, &growing, 120.0);
        assert!((s.kib_per_min - 60.0).abs() < 1e-6, "{}", s.kib_per_min);
    }
}
