//! `kestrel-calibrate`: similarity distributions of the labelled calibration
//! set for a model, with and without normalisation, and the threshold that
//! separates same-behaviour from different-behaviour pairs.
//!
//! ```text
//! kestrel-calibrate [--model-dir DIR] [--pairs FILE] [--verbose] [--drop-argv0]
//!                   [--model-id ID --model FILE --tokenizer FILE --pooling mean|cls|last-token
//!                    --dim N --max-tokens N --prefix TEXT]
//! ```
//! The default model comes from `--model-dir`, else `$KESTREL_MODEL_DIR`
//! (default /var/cache/kestrel/models); the runtime from `$ORT_DYLIB_PATH` or
//! that folder. The other flags describe another model (see docs/embeddings.md).

use std::process::ExitCode;

use kestrel_embed::{
    calibrate, cosine, normalize, parse_pairs, Calibration, Distribution, EmbedConfig, Embedder,
    LabelledPair, OnnxEmbedder, CALIBRATION_TSV,
};

const USAGE: &str =
    "usage: kestrel-calibrate [--model-dir DIR] [--pairs FILE] [--verbose] [--drop-argv0] \
     [--model-id ID] [--model FILE] [--tokenizer FILE] [--pooling mean|cls|last-token] \
     [--dim N] [--max-tokens N] [--prefix TEXT]";

struct Args {
    model_dir: Option<String>,
    model: Vec<(String, String)>,
    pairs: Option<String>,
    verbose: bool,
    drop_argv0: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model_dir: None,
        model: Vec::new(),
        pairs: None,
        verbose: false,
        drop_argv0: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model-dir" => args.model_dir = Some(it.next().ok_or("--model-dir needs a folder")?),
            "--pairs" => args.pairs = Some(it.next().ok_or("--pairs needs a file")?),
            "--verbose" | "-v" => args.verbose = true,
            "--drop-argv0" => args.drop_argv0 = true,
            "--model-id" | "--model" | "--tokenizer" | "--pooling" | "--dim" | "--max-tokens"
            | "--prefix" => {
                let value = it.next().ok_or(format!("{a} needs a value"))?;
                args.model.push((a, value));
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kestrel-calibrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Scores every pair, once on the normalised strings and once raw.
fn score(
    model: &OnnxEmbedder,
    pairs: &[LabelledPair],
    normalise: bool,
) -> Result<Vec<f32>, String> {
    let prep = |s: &str| {
        if normalise {
            normalize(s)
        } else {
            s.to_string()
        }
    };
    let a: Vec<String> = pairs.iter().map(|p| prep(&p.a)).collect();
    let b: Vec<String> = pairs.iter().map(|p| prep(&p.b)).collect();
    let mut scores = Vec::with_capacity(pairs.len());
    for (ca, cb) in a.chunks(32).zip(b.chunks(32)) {
        let ra: Vec<&str> = ca.iter().map(String::as_str).collect();
        let rb: Vec<&str> = cb.iter().map(String::as_str).collect();
        let va = model.embed_batch(&ra).map_err(|e| e.to_string())?;
        let vb = model.embed_batch(&rb).map_err(|e| e.to_string())?;
        scores.extend(va.iter().zip(&vb).map(|(x, y)| cosine(x, y)));
    }
    Ok(scores)
}

fn row(label: &str, d: &Distribution) {
    println!(
        "  {label:<10} {:>4} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
        d.n, d.min, d.p05, d.median, d.mean, d.p95, d.max
    );
}

fn report(title: &str, c: &Calibration) {
    println!("{title}");
    println!(
        "  {:<10} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "pairs", "n", "min", "p05", "median", "mean", "p95", "max"
    );
    row("same", &c.same);
    row("different", &c.different);
    println!(
        "  separating threshold {:.3}   errors {}   margin {:.3}\n",
        c.threshold, c.errors, c.margin
    );
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let config = match &args.model_dir {
        Some(dir) => {
            let mut c = EmbedConfig::from_dir(dir);
            if let Some(rt) = std::env::var_os(kestrel_embed::RUNTIME_ENV).filter(|v| !v.is_empty())
            {
                c.runtime_path = rt.into();
            }
            c
        }
        None => EmbedConfig::from_env(),
    };
    let mut config = config;
    for (flag, value) in &args.model {
        let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v:?}: {e}"));
        config = match flag.as_str() {
            "--model-id" => config.with_model_id(value.clone()),
            "--model" => config.with_model_path(value),
            "--tokenizer" => config.with_tokenizer_path(value),
            "--pooling" => config.with_pooling(
                value
                    .parse()
                    .map_err(|e: kestrel_embed::Error| e.to_string())?,
            ),
            "--dim" => config.with_dim(number(value)?),
            "--max-tokens" => config.with_max_tokens(number(value)?),
            _ => config.with_instruction_prefix(value.replace("\\n", "\n")),
        };
    }
    let shipped = config.threshold();
    let text = match &args.pairs {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
        None => CALIBRATION_TSV.to_string(),
    };
    let mut pairs = parse_pairs(&text).map_err(|e| e.to_string())?;
    if args.drop_argv0 {
        let rest = |s: &str| {
            s.split_once(' ')
                .map_or(String::new(), |(_, r)| r.to_string())
        };
        for p in &mut pairs {
            p.a = rest(&p.a);
            p.b = rest(&p.b);
        }
    }
    eprintln!(
        "loading {} from {}",
        config.model_id,
        config.model_path.display()
    );
    let model = OnnxEmbedder::load(config).map_err(|e| e.to_string())?;

    let split = |scores: &[f32]| -> (Vec<f32>, Vec<f32>) {
        let same = pairs
            .iter()
            .zip(scores)
            .filter(|(p, _)| p.same)
            .map(|(_, s)| *s)
            .collect();
        let diff = pairs
            .iter()
            .zip(scores)
            .filter(|(p, _)| !p.same)
            .map(|(_, s)| *s)
            .collect();
        (same, diff)
    };
    let norm_scores = score(&model, &pairs, true)?;
    let raw_scores = score(&model, &pairs, false)?;
    let (ns, nd) = split(&norm_scores);
    let (rs, rd) = split(&raw_scores);
    let norm = calibrate(&ns, &nd);
    let raw = calibrate(&rs, &rd);

    println!(
        "model {}: {} pairs ({} same, {} different)\n",
        model.model_id(),
        pairs.len(),
        ns.len(),
        nd.len()
    );
    report("normalised (what the profile compares)", &norm);
    report("raw (no normalisation, for comparison)", &raw);

    let wrong = |t: f32| {
        pairs
            .iter()
            .zip(&norm_scores)
            .filter(|(p, s)| (**s >= t) != p.same)
            .count()
    };
    println!(
        "shipped threshold for {}: {shipped:.3} -> {} of {} pairs on the wrong side; \
         lowest same {:.3} (margin {:+.3}), highest different {:.3} (margin {:+.3})",
        model.model_id(),
        wrong(shipped),
        pairs.len(),
        norm.same.min,
        norm.same.min - shipped,
        norm.different.max,
        shipped - norm.different.max,
    );

    let mut families: Vec<&str> = pairs.iter().map(|p| p.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    println!("\nper family (normalised): min same / max different");
    for f in families {
        let fs = pairs
            .iter()
            .zip(&norm_scores)
            .filter(|(p, _)| p.family == f);
        let min_same = fs
            .clone()
            .filter(|(p, _)| p.same)
            .map(|(_, s)| *s)
            .fold(f32::NAN, f32::min);
        let max_diff = fs
            .filter(|(p, _)| !p.same)
            .map(|(_, s)| *s)
            .fold(f32::NAN, f32::max);
        println!("  {f:<10} {min_same:>7.3} {max_diff:>7.3}");
    }

    let mut ranked: Vec<(f32, &LabelledPair, f32)> = pairs
        .iter()
        .zip(&norm_scores)
        .zip(&raw_scores)
        .map(|((p, n), r)| (*n, p, *r))
        .collect();
    ranked.sort_by(|x, y| x.0.total_cmp(&y.0));
    println!("\nclosest calls (normalised score, raw score):");
    let hardest_same = ranked.iter().filter(|(_, p, _)| p.same).take(5);
    let hardest_diff = ranked.iter().rev().filter(|(_, p, _)| !p.same).take(5);
    for (s, p, r) in hardest_same.chain(hardest_diff) {
        let label = if p.same { "same" } else { "diff" };
        println!(
            "  {label} {s:.3} ({r:.3}) [{}]  {}  |  {}",
            p.family, p.a, p.b
        );
    }
    if args.verbose {
        println!("\nall pairs (normalised score, raw score):");
        for (s, p, r) in &ranked {
            let label = if p.same { "same" } else { "diff" };
            println!(
                "  {label} {s:.3} ({r:.3}) [{}]  {}  |  {}",
                p.family,
                normalize(&p.a),
                normalize(&p.b)
            );
        }
    }
    Ok(())
}
