//! Embedding throughput (batch 1, 8, 32 on one intra-op thread), cache-hit
//! lookups, normalisation, and the cache hit ratio on a replayed stream.
//!
//! ```text
//! cargo bench -p kestrel-embed-onnx --bench embed
//! ```
//! The model benches need the default model (`scripts/fetch-model.sh`,
//! `$KESTREL_MODEL_DIR`); without it they are skipped with a message.
//!
//! The model runs in two groups: `embed` measures wall time (criterion's
//! default) and `embed_cpu` the benchmark thread's own CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`). With one intra-op thread ONNX Runtime computes
//! on the calling thread, so `embed_cpu` is the per-core cost even on a shared,
//! loaded machine, where wall time also counts time spent preempted.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::Measurement;
#[path = "../../../benches/thread_cpu.rs"]
mod thread_cpu;
use criterion::{criterion_group, BatchSize, BenchmarkGroup, Criterion, Throughput};
use kestrel_embed::{normalize, Embedder, Result};
use kestrel_embed_onnx::{parse_pairs, ArgEmbedder, CacheOptions, EmbedConfig, OnnxEmbedder};
use thread_cpu::ThreadCpuTime;

/// Distinct, already-normalised command lines of typical length (12–40 tokens).
fn corpus(n: usize) -> Vec<String> {
    let templates = [
        "java -Xms512m -Xmx<num>m -jar /opt/app/service-{}.jar --spring.profiles.active=prod",
        "python /app/worker.py --queue q{} --concurrency <num> --log-level info",
        "node --max-old-space-size=<num> /usr/src/app/dist/main-{}.js --port <num>",
        "nginx -c /etc/nginx/site-{}.conf -g daemon off;",
        "/bin/sh -c wget -qO- http://svc-{}:<num>/healthz || exit <num>",
        "gunicorn app{}.wsgi:application --bind <ipv4>:<num> --workers <num> --timeout <num>",
        "curl -s -o /dev/null -w %{http_code} http://api-{}.default.svc:<num>/ready",
        "tar -czf /backup/db{}-<ts>.tar.gz -C /var/lib/postgresql data",
    ];
    (0..n)
        .map(|i| templates[i % templates.len()].replace("{}", &format!("{}", i / templates.len())))
        .collect()
}

/// The distinct normalised command lines of the calibration set
/// (`calibration/pairs.tsv`: real-world JVM, nginx, Python, Node, shell,
/// package-manager, miner, reverse-shell and download-and-run lines), in file
/// order. Unlike `corpus`, their lengths spread widely (5 to 128 word pieces,
/// mean ≈ 31), as a node's real argument strings do.
fn calibration_lines() -> Vec<String> {
    let pairs = match parse_pairs(include_str!("../calibration/pairs.tsv")) {
        Ok(p) => p,
        Err(e) => panic!("calibration/pairs.tsv: {e}"),
    };
    let mut seen = std::collections::HashSet::new();
    pairs
        .iter()
        .flat_map(|p| [normalize(&p.a), normalize(&p.b)])
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

fn load_model() -> Option<Arc<OnnxEmbedder>> {
    let config = EmbedConfig::from_env()
        .with_intra_threads(1)
        .with_sessions(1);
    match OnnxEmbedder::load(config) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            eprintln!("SKIPPED model benches: {e}");
            None
        }
    }
}

fn bench_model(c: &mut Criterion) {
    let Some(model) = load_model() else { return };
    let mut group = c.benchmark_group("embed");
    model_cases(&mut group, &model);
    group.finish();
}

fn bench_model_cpu(c: &mut Criterion<ThreadCpuTime>) {
    let Some(model) = load_model() else { return };
    let mut group = c.benchmark_group("embed_cpu");
    model_cases(&mut group, &model);
    group.finish();
}

fn model_cases<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, model: &OnnxEmbedder) {
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let texts = corpus(256);
    for batch in [1usize, 8, 32] {
        rotate(
            group,
            model,
            &format!("onnx_batch_{batch}_1_thread"),
            &texts,
            batch,
        );
    }
    // Batches of 32 drawn in file order from the calibration set's lines.
    let lines = calibration_lines();
    rotate(
        group,
        model,
        "onnx_batch_32_calibration_lines_1_thread",
        &lines,
        32,
    );
}

/// Benches `batch`-sized calls that walk round `texts`.
fn rotate<M: Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    model: &OnnxEmbedder,
    name: &str,
    texts: &[String],
    batch: usize,
) {
    group.throughput(Throughput::Elements(batch as u64));
    let mut offset = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            let inputs: Vec<&str> = (0..batch)
                .map(|k| texts[(offset + k) % texts.len()].as_str())
                .collect();
            offset += batch;
            black_box(model.embed_batch(&inputs))
        })
    });
}

/// A model that answers instantly, for measuring the cache alone.
struct Instant0;
impl Embedder for Instant0 {
    fn model_id(&self) -> &str {
        "instant"
    }
    fn dim(&self) -> usize {
        384
    }
    fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(inputs.iter().map(|_| vec![0.05; 384]).collect())
    }
}

fn bench_cache(c: &mut Criterion) {
    let embedder = match ArgEmbedder::new(Arc::new(Instant0), CacheOptions::default()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("SKIPPED cache benches: {e}");
            return;
        }
    };
    let raw = "java -Xmx2048m -jar /app/app.jar --timestamp=1714566645123 --request-id=550e8400-e29b-41d4-a716-446655440000";
    let key = normalize(raw);
    let _ = embedder.embed(raw); // warm
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit_with_normalize", |b| {
        b.iter(|| black_box(embedder.embed(black_box(raw))))
    });
    group.bench_function("hit_normalized_key", |b| {
        b.iter(|| black_box(embedder.embed_normalized(&[black_box(key.as_str())])))
    });
    group.bench_function("normalize_only", |b| {
        b.iter(|| black_box(normalize(black_box(raw))))
    });
    // Outside the closure: criterion calls it again for the measurement, and
    // restarting the counter would turn misses into hits.
    let mut n = 0u64;
    group.bench_function("miss_to_instant_model", |b| {
        b.iter_batched(
            || {
                // Letters, not digits: normalisation would fold digits into one key.
                n += 1;
                let mut word = String::from("unique-");
                let mut k = n;
                while k > 0 {
                    word.push(char::from(b'a' + (k % 26) as u8));
                    k /= 26;
                }
                word
            },
            |s| black_box(embedder.embed(&s)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A replayed day-in-the-life event stream: a fixed set of workloads whose
/// argument strings carry pids, timestamps, request ids, temp names, pod IPs
/// and ports, plus a trickle of one-off commands.
fn replay_stream(events: usize) -> Vec<String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(events);
    for i in 0..events {
        let r = next();
        let pick = r % 1000;
        let n = next();
        let line = match pick {
            0..=199 => format!(
                "java -Xmx{}m -jar /app/orders.jar --timestamp={} --request-id={:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                [512, 1024, 2048][(n % 3) as usize],
                1_714_566_645_000 + i as u64 * 37,
                n as u32,
                (n >> 32) as u16,
                n % 4096,
                (n >> 12) % 4096,
                n >> 16
            ),
            200..=349 => format!("python /tmp/tmp{:08x}.py --job {}", n as u32, n % 100_000),
            350..=499 => format!(
                "curl -s http://10.{}.{}.{}:{}/healthz",
                n % 256,
                (n >> 8) % 256,
                (n >> 16) % 256,
                [8080, 9090, 3000][(n % 3) as usize]
            ),
            500..=599 => format!("sh -c sleep {}", n % 600),
            600..=699 => "nginx: worker process".to_string(),
            700..=799 => format!("node /app/dist/main.js --trace-id={:016x}", n),
            800..=879 => format!("pg_dump -h 10.0.{}.{} -f /backup/db-2024-05-{:02}T{:02}:{:02}:00Z.sql", n % 256, (n >> 8) % 256, n % 28 + 1, n % 24, n % 60),
            880..=949 => format!("git fetch origin {:016x}{:016x}{:08x}", n, next(), n as u32),
            950..=996 => format!("/pause --pid={} --started={}", n % 65536, 1_714_566_645 + i as u64),
            // ~0.3 %: a one-off command nobody has run before.
            _ => format!("adhoc-{} --op {}", n % 100_000, ["scan", "copy", "dump", "sync"][(n % 4) as usize]),
        };
        out.push(line);
    }
    out
}

fn report_hit_ratio() {
    let stream = replay_stream(100_000);
    let model: Arc<dyn Embedder> = match load_model() {
        Some(m) => m,
        None => Arc::new(Instant0),
    };
    let embedder = match ArgEmbedder::new(model, CacheOptions::default()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("SKIPPED hit ratio: {e}");
            return;
        }
    };
    let started = Instant::now();
    for chunk in stream.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        if let Err(e) = embedder.embed_many(&refs) {
            eprintln!("hit ratio replay failed: {e}");
            return;
        }
    }
    let s = embedder.stats();
    println!(
        "replayed stream: {} events, {} hits, {} misses, hit ratio {:.4} ({:.2} %), {} distinct shapes embedded in {} model calls, {:.2?} total",
        stream.len(),
        s.hits,
        s.misses,
        s.hit_ratio(),
        s.hit_ratio() * 100.0,
        s.embedded,
        s.batches,
        started.elapsed()
    );
}

criterion_group!(benches, bench_model, bench_cache);
criterion_group! {
    name = benches_cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_model_cpu
}

fn main() {
    report_hit_ratio();
    benches();
    benches_cpu();
    Criterion::default().configure_from_args().final_summary();
}
