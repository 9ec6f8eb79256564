//! `make demo`: a busybox "web" workload in a runc container, watched by the
//! node agent; then the seed's attack (busybox copied as `xmrig`, run with a
//! mining-pool URL, then the same binary renamed `java`).
//!
//! Until the pipeline (profiles, learning, detection, alerts) is wired, the
//! demo shows what the agent captures from the kernel for that scenario.

use anyhow::{bail, Context, Result};
use kestrel_e2e::{require_privileged, Container};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn agent_binary() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("binary directory")?;
    let agent = dir.join("kestrel-agent");
    if !agent.is_file() {
        bail!("{} not found: run `make build` first", agent.display());
    }
    Ok(agent)
}

fn show(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let k = &v["kind"];
    let pid = v["task"]["pid"].as_u64().unwrap_or(0);
    let comm = v["task"]["comm"].as_str().unwrap_or("-");
    Some(match k["type"].as_str()? {
        "exec" => {
            let args: Vec<&str> = k["argv"]["args"].as_array()?.iter().filter_map(|a| a.as_str()).collect();
            format!("EXEC    pid={pid:<6} parent={:<8} exe={:<8} argv={args:?}", k["parent_comm"].as_str()?, k["exe"].as_str()?)
        }
        "file" => format!("FILE    pid={pid:<6} {comm:<8} {} {}", k["op"].as_str()?, k["path"].as_str()?),
        "net" => format!(
            "NET     pid={pid:<6} {comm:<8} {} {}",
            k["op"].as_str()?,
            k.get("remote").map(|r| r.to_string()).unwrap_or_default()
        ),
        _ => return None,
    })
}

fn main() -> Result<()> {
    if !require_privileged() {
        bail!("the demo needs root, BTF, runc and busybox (make deps)");
    }
    let agent = agent_binary()?;
    println!("== Kestrel demo: a busybox web workload, then a crypto-miner attack ==");
    let busybox = Path::new("/bin/busybox");
    let web = Container::start_with(
        "demo-web",
        &["sh", "-c", "while true; do sleep 1; done"],
        &[(busybox, "xmrig"), (busybox, "java")],
    )?;
    println!("started runc container {} (cgroup {})", web.id(), web.cgroup_path());

    let mut child = Command::new(&agent)
        .args(["capture", "--container", web.id()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start kestrel-agent")?;
    let stdout = child.stdout.take().context("agent stdout")?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let printer = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(s) = show(&line) {
                println!("  {s}");
            }
        }
    });
    // wait for the agent to attach
    let mut err_lines = BufReader::new(stderr).lines();
    for line in err_lines.by_ref().map_while(Result::ok) {
        if line.contains("\"ready\"") {
            break;
        }
        eprintln!("agent: {line}");
    }

    println!("-- normal traffic: the web loop serves requests with changing ids and timestamps");
    for i in 0..3 {
        let cmd = format!(
            "echo \"GET /api/items?id={i}{i}7 ts=$(date +%s)\" >> /var/log/access.log; cat /etc/passwd > /dev/null"
        );
        web.exec(&["sh", "-c", &cmd])?;
        std::thread::sleep(Duration::from_millis(300));
    }
    println!("-- attack: a miner downloaded into the container");
    let _ = web.exec(&["sh", "-c", "xmrig -o stratum+tcp://pool.minexmr.com:4444 -u wallet --donate-level 1 2>/dev/null; true"]);
    std::thread::sleep(Duration::from_millis(300));
    println!("-- attack: the same binary renamed to java");
    let _ = web.exec(&["sh", "-c", "java -o stratum+tcp://pool.xx:4444 2>/dev/null; true"]);
    std::thread::sleep(Duration::from_millis(800));

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = printer.join();
    for line in err_lines.map_while(Result::ok) {
        if line.contains("\"stats\"") {
            println!("agent counters: {line}");
        }
    }
    drop(web);
    println!("== done: learning, detection and alerts come with the pipeline (profiles + scoring) ==");
    Ok(())
}
