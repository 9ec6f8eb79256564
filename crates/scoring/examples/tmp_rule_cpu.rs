#![allow(missing_docs)]
use kestrel_scoring::*;
use std::hint::black_box;
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn cand(exe: &str, argv: &[&str], signals: Vec<Signal>) -> CandidateAlert {
    CandidateAlert {
        namespace: "shop".into(),
        workload: "Deployment/webapp".into(),
        pod: "webapp-5d9c7b7f6-x2x7q".into(),
        container_id: "containerd://0123".into(),
        node: "node-1".into(),
        image: "registry.example/webapp:v1".into(),
        pid: 1,
        exe: exe.into(),
        args: Arguments::new(argv.iter().copied(), ""),
        chain: vec![
            ProcessAncestor::new("/bin/bash", ["bash"]),
            ProcessAncestor::new("/usr/bin/java", ["java"]),
            ProcessAncestor::new("/sbin/tini", ["tini"]),
        ],
        signals,
        observed_ns: 0,
        workload_replicas: None,
        workload_rollout_ns: None,
        shape: None,
    }
}
fn main() {
    if std::env::var("PER_RULE").is_ok() {
        per_rule();
        return;
    }
    let set = RuleSet::default_pack().unwrap();
    let cs = vec![
        cand(
            "/usr/bin/java",
            &[
                "java",
                "-Xmx512m",
                "-jar",
                "/app/app.jar",
                "--server.port=8080",
                "--timestamp=1700000000",
            ],
            vec![Signal::UnusualArguments {
                best_similarity: 0.7,
                nearest_exemplar: None,
            }],
        ),
        cand(
            "/usr/bin/curl",
            &["curl", "-fsS", "http://localhost:8080/healthz"],
            vec![Signal::UnknownProcess],
        ),
        cand(
            "/tmp/xmrig",
            &["./xmrig", "-o", "pool.minexmr.com"],
            vec![Signal::UnknownProcess],
        ),
        cand(
            "/bin/cat",
            &["cat", "/etc/shadow"],
            vec![Signal::UnknownFile {
                path: "/etc/shadow".into(),
                access: FileAccess::Read,
            }],
        ),
    ];
    let only: Option<usize> = std::env::var("CASE").ok().map(|v| v.parse().unwrap());
    for (i, c) in cs.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let n = 1_000_000;
        let t0 = cpu_s();
        let mut h = 0usize;
        for _ in 0..n {
            h += set.evaluate(black_box(c)).is_hit() as usize;
        }
        let t = cpu_s() - t0;
        println!(
            "case {i}: {:.0} ns/candidate cpu ({h} hits)",
            t * 1e9 / n as f64
        );
    }
}
#[allow(dead_code)]
pub fn per_rule() {
    let file = parse_rule_file("d", DEFAULT_PACK_YAML).unwrap();
    let c = cand(
        "/usr/bin/java",
        &[
            "java",
            "-Xmx512m",
            "-jar",
            "/app/app.jar",
            "--server.port=8080",
            "--timestamp=1700000000",
        ],
        vec![Signal::UnusualArguments {
            best_similarity: 0.7,
            nearest_exemplar: None,
        }],
    );
    for r in file.rules {
        let id = r.id.clone();
        let y = serde_saphyr::to_string(&RuleFile { rules: vec![r] }).unwrap();
        let set = RuleSet::builder().add_yaml("x", y).build().unwrap();
        let n = 300_000;
        let t0 = cpu_s();
        for _ in 0..n {
            black_box(set.evaluate(black_box(&c)).is_hit());
        }
        let t = cpu_s() - t0;
        println!("{id:32} {:.0} ns", t * 1e9 / n as f64);
    }
}
