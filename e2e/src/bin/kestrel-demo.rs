//! `make demo`: standalone Kestrel on this host learns a busybox "web"
//! workload running in two runc containers, converges, switches to detection,
//! and then catches the seed's attack: a miner (`xmrig -o stratum+tcp://…`)
//! and the same binary renamed `java`.

use anyhow::{bail, Context, Result};
use kestrel_e2e::{require_privileged, sibling_binary, workload};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CONFIG: &str = "workloads:
  - name: web
    image: webapp:v1
    containers: \"demo-web-*\"
learning:
  window: 10s
  minLearningTime: 20s
  cleanWindows: 1
  maxNewPerWindow: 0
";

fn describe(v: &serde_json::Value) -> Option<String> {
    if let Some(p) = v.get("progress") {
        let rows: Vec<String> = p
            .as_array()?
            .iter()
            .map(|w| {
                format!(
                    "{} {} ({} paths, {} argument exemplars, {} new in window)",
                    w["workload"].as_str().unwrap_or("?"),
                    w["phase"].as_str().unwrap_or("?"),
                    w["branches"],
                    w["exemplars"],
                    w["window_new"]
                )
            })
            .collect();
        return Some(format!("  progress: {}", rows.join("; ")));
    }
    if let Some(p) = v.get("phase") {
        return Some(format!(
            "  PHASE {}: {} -> {} ({})",
            p["workload"].as_str()?,
            p["from"].as_str()?,
            p["to"].as_str()?,
            p["reason"].as_str()?
        ));
    }
    if let Some(e) = v.get("error") {
        return Some(format!("  error: {} {}", e["kind"], e["message"]));
    }
    None
}

/// The alert in full, as first raised.
fn describe_alert(a: &serde_json::Value) -> Option<String> {
    let ev = &a["evidence"];
    let rules: Vec<&str> = a["ruleHits"]
        .as_array()?
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let chain: Vec<&str> = ev["processChain"]
        .as_array()?
        .iter()
        .filter_map(|p| p["exe"].as_str())
        .collect();
    Some(format!(
        "\n  ALERT {} [{} {:.0}] {}\n    container {} pid {} chain {:?}\n    args {}\n    signals {}\n    rules {:?}\n    LLM: {}\n    action: {}",
        a["id"].as_str()?,
        a["severity"].as_str()?,
        a["score"].as_f64()?,
        a["title"].as_str()?,
        ev["containerId"].as_str()?,
        ev["pid"],
        chain,
        ev["args"],
        ev["signals"],
        rules,
        a["llm"]["explanation"].as_str().unwrap_or("-"),
        a["recommendation"]["summary"].as_str().or(a["recommendation"]["action"].as_str()).unwrap_or("-"),
    ))
}

/// The incident as it stands: what one process subtree did.
fn describe_incident(a: &serde_json::Value) -> String {
    let inc = &a["incident"];
    let list = |k: &str| {
        inc[k]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    };
    format!(
        "  alert {} [{} {:.0}, breadth +{}]: {} occurrence(s), {} activities, {} process(es)\n    commands: {}\n    peers: {}\n    files: {}",
        a["id"].as_str().unwrap_or("?"),
        a["severity"].as_str().unwrap_or("?"),
        a["score"].as_f64().unwrap_or(0.0),
        a["breakdown"]["breadth"].as_f64().unwrap_or(0.0),
        inc["count"],
        inc["activities"],
        inc["processes"],
        list("commands"),
        list("peers"),
        list("files"),
    )
}

/// The program an alert's evidence names (basename).
fn evidence_program(a: &serde_json::Value) -> &str {
    let exe = a["evidence"]["exe"].as_str().unwrap_or("");
    exe.rsplit('/').next().unwrap_or(exe)
}

fn main() -> Result<()> {
    if !require_privileged() {
        bail!("the demo needs root, BTF, runc and busybox (make deps)");
    }
    let kestrel = sibling_binary("kestrel")?;
    let dir = std::env::temp_dir().join(format!("kestrel-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, CONFIG)?;
    let state = dir.join("state");

    println!("== Kestrel demo: learn a web workload from the kernel, then catch a crypto miner ==");
    println!("config ({}):\n{CONFIG}", cfg.display());
    let mut child = Command::new(&kestrel)
        .args(["standalone", "--state-dir"])
        .arg(&state)
        .arg("--config")
        .arg(&cfg)
        .args(["--progress-every", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .context("start kestrel standalone")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(s) = describe(&v) {
                    println!("{s}");
                }
                let _ = tx.send(v);
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));

    println!("-- starting two replicas of the web workload (runc + busybox): request logs, a sub-shell per request, `java -jar app.jar --timestamp=<now>`");
    let web1 = workload::start_web("demo-web-1")?;
    let web2 = workload::start_web("demo-web-2")?;
    println!("-- learning (window 10s, at least 20s, then one clean window) ...");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut detecting = false;
    while Instant::now() < deadline && !detecting {
        if let Ok(v) = rx.recv_timeout(Duration::from_secs(1)) {
            detecting = v.get("phase").is_some_and(|p| p["to"] == "Detecting");
        }
    }
    if !detecting {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
        bail!("the workload did not converge within 3 minutes");
    }
    std::thread::sleep(Duration::from_secs(3));
    println!("-- attack in {}: {}", web1.id(), workload::MINER);
    println!("-- attack in {}: {}", web1.id(), workload::RENAMED_MINER);
    workload::attack(&web1)?;
    // alert id -> its latest version, in the order they were raised
    let mut alerts: Vec<(String, serde_json::Value)> = Vec::new();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(500)) {
            let Some(a) = v.get("alert") else { continue };
            let id = a["id"].as_str().unwrap_or_default().to_string();
            match alerts.iter_mut().find(|(i, _)| *i == id) {
                Some((_, latest)) => *latest = a.clone(),
                None => {
                    if let Some(s) = describe_alert(a) {
                        println!("{s}");
                    }
                    alerts.push((id, a.clone()));
                }
            }
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = reader.join();
    drop((web1, web2));
    println!("\n-- kestrel status --state-dir {}", state.display());
    let _ = Command::new(&kestrel)
        .args(["status", "--state-dir"])
        .arg(&state)
        .status();
    println!(
        "\nprofiles and alerts (YAML, the CRD schema) are in {}",
        state.display()
    );
    println!(
        "\n-- {} alert(s), one per attack command, as their incidents stand:",
        alerts.len()
    );
    for (_, a) in &alerts {
        println!("{}", describe_incident(a));
    }
    let miner = alerts.iter().find(|(_, a)| evidence_program(a) == "xmrig");
    let renamed = alerts.iter().find(|(_, a)| {
        evidence_program(a) == "java"
            && a["evidence"]["args"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.starts_with("stratum+tcp://")))
            })
    });
    if miner.is_none() {
        bail!("no alert names the miner `xmrig` as its evidence");
    }
    if renamed.is_none() {
        bail!(
            "no alert names the miner renamed `java` (with its stratum+tcp pool) as its evidence"
        );
    }
    if alerts.len() != 2 {
        bail!(
            "expected one alert per attack command (2), got {}",
            alerts.len()
        );
    }
    println!("== done: the miner and the renamed `java`, one alert each ==");
    Ok(())
}
