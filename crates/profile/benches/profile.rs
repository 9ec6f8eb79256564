//! Hot paths of profiles: matching known events, learning, digest lookups.
//!
//! Run: `cargo bench -p kestrel-profile` (numbers and the machine in
//! `docs/benchmarks/profile.md`).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so the
//! numbers are "per core" even on a shared, loaded machine.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

#[path = "../../../benches/thread_cpu.rs"]
mod thread_cpu;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kestrel_embed::normalize;
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{
    Access, Digest, Direction, Event, FileEvent, NetworkEvent, Peer, ProcessEvent, Profile,
    ProfileConfig, Protocol,
};
use thread_cpu::ThreadCpuTime;

const IMAGE: &[u8] = b"registry.example/shop-api:1.4.2";

fn file_paths() -> Vec<String> {
    let mut v = Vec::new();
    for d in [
        "usr/lib/x86_64-linux-gnu",
        "app/lib",
        "etc/ssl/certs",
        "app/static/img",
    ] {
        for i in 0..40 {
            v.push(format!("/{d}/file-{i}.dat"));
        }
    }
    v
}

/// A realistic learned profile: 40 processes, 160 files, 12 peers.
fn learned() -> (Profile, TestEmbedder) {
    let emb = TestEmbedder::new();
    let mut p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    for i in 0..40 {
        let exe = format!("/app/bin/tool{i}");
        let args = normalize(&format!("tool{i} --mode=serve --port={}", 8000 + i));
        p.learn(&proc_ev(b"tini", exe.as_bytes(), &args), &emb)
            .unwrap();
    }
    for path in file_paths() {
        p.learn(&file_ev(path.as_bytes()), &emb).unwrap();
    }
    for i in 0..12u8 {
        p.learn(
            &net_ev(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 10 + i)), 5432),
            &emb,
        )
        .unwrap();
    }
    (p, emb)
}

fn proc_ev<'a>(parent: &'a [u8], exe: &'a [u8], args: &'a str) -> Event<'a> {
    Event::Process(ProcessEvent {
        image: IMAGE,
        parent,
        exe,
        args,
    })
}

fn file_ev(path: &[u8]) -> Event<'_> {
    Event::File(FileEvent {
        image: IMAGE,
        process: b"java",
        access: Access::Read,
        path,
    })
}

fn net_ev(ip: IpAddr, port: u16) -> Event<'static> {
    Event::Network(NetworkEvent {
        image: IMAGE,
        process: b"java",
        direction: Direction::Outbound,
        peer: Peer::Ip(ip),
        protocol: Protocol::Tcp,
        port,
    })
}

fn matching(c: &mut Criterion<ThreadCpuTime>) {
    let (p, emb) = learned();
    let mut g = c.benchmark_group("match_known");
    g.throughput(Throughput::Elements(1));
    let args = normalize("tool7 --mode=serve --port=8007");
    let pe = proc_ev(b"tini", b"/app/bin/tool7", &args);
    assert!(p.match_event(&pe, &emb).unwrap().is_known());
    g.bench_function("process", |b| {
        b.iter(|| p.match_event(black_box(&pe), &emb).unwrap())
    });
    let fe = file_ev(b"/usr/lib/x86_64-linux-gnu/file-17.dat");
    assert!(p.match_event(&fe, &emb).unwrap().is_known());
    g.bench_function("file", |b| {
        b.iter(|| p.match_event(black_box(&fe), &emb).unwrap())
    });
    let ne = net_ev("10.0.1.20".parse().unwrap(), 5432);
    assert!(p.match_event(&ne, &emb).unwrap().is_known());
    g.bench_function("network", |b| {
        b.iter(|| p.match_event(black_box(&ne), &emb).unwrap())
    });
    g.finish();
}

fn learning(c: &mut Criterion<ThreadCpuTime>) {
    let mut g = c.benchmark_group("learn_insert");
    const N: usize = 10_000;
    let paths: Vec<String> = (0..N)
        .map(|i| format!("/srv/data/{}/{}/part-{i}.bin", i % 97, i % 13))
        .collect();
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("file_new_paths", |b| {
        b.iter_batched(
            || Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap(),
            |mut p| {
                let emb = TestEmbedder::new();
                for path in &paths {
                    p.learn(&file_ev(path.as_bytes()), &emb).unwrap();
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    let ips: Vec<IpAddr> = (0..N as u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7)))
        .collect();
    g.bench_function("network_new_peers", |b| {
        b.iter_batched(
            || Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap(),
            |mut p| {
                let emb = TestEmbedder::new();
                for (i, ip) in ips.iter().enumerate() {
                    p.learn(&net_ev(*ip, 1024 + (i % 64) as u16), &emb).unwrap();
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let (mut p, emb) = learned();
    let args = normalize("tool3 --mode=serve --port=8003");
    g.bench_function("process_known_args", |b| {
        b.iter(|| {
            p.learn(black_box(&proc_ev(b"tini", b"/app/bin/tool3", &args)), &emb)
                .unwrap()
        })
    });
    g.finish();
}

fn digest(c: &mut Criterion<ThreadCpuTime>) {
    let (p, _) = learned();
    let d = p.digest(0x5eed);
    let mut g = c.benchmark_group("digest_lookup");
    g.throughput(Throughput::Elements(1));
    let fe = file_ev(b"/usr/lib/x86_64-linux-gnu/file-17.dat");
    assert!(d.contains(&fe));
    g.bench_function("file_event", |b| b.iter(|| d.contains(black_box(&fe))));
    let args = normalize("tool7 --mode=serve --port=8007");
    let pe = proc_ev(b"tini", b"/app/bin/tool7", &args);
    assert!(d.contains(&pe));
    g.bench_function("process_event", |b| b.iter(|| d.contains(black_box(&pe))));
    let ne = net_ev("10.0.1.20".parse().unwrap(), 5432);
    assert!(d.contains(&ne));
    g.bench_function("network_event", |b| b.iter(|| d.contains(black_box(&ne))));
    let h = Digest::event_hash(d.seed(), &fe);
    g.bench_function("precomputed_hash", |b| {
        b.iter(|| d.contains_hash(black_box(h)))
    });
    g.finish();
}

fn config() -> Criterion<ThreadCpuTime> {
    Criterion::default()
        .with_measurement(ThreadCpuTime)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = matching, learning, digest }
criterion_main!(benches);
