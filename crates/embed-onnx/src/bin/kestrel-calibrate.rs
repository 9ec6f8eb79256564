//! `kestrel-calibrate`: how well the argument similarity that profiles use
//! separates same-behaviour from different-behaviour pairs, on the tuning set
//! (`calibration/pairs.tsv` and `calibration/holdout.tsv`) and on the held-out
//! set (`calibration/holdout2.tsv`, never tuned on): distributions, the
//! separating threshold, errors, margin, a leave-one-family-out check of the
//! threshold, and each error explained. `--pairs` replaces the tuning set,
//! `--holdout` the held-out set.
//!
//! ```text
//! kestrel-calibrate [--model-dir DIR] [--pairs FILE] [--holdout FILE] [--verbose] [--full-line]
//!                   [--model-id ID --model FILE --tokenizer FILE --pooling mean|cls|last-token
//!                    --dim N --max-tokens N --prefix TEXT]
//! ```
//! Pairs are compared as the profile compares them: the arguments after
//! `argv[0]`, normalised (`--full-line` keeps `argv[0]`, for comparison).
//! The default model comes from `--model-dir`, else `$KESTREL_MODEL_DIR`
//! (default /var/cache/kestrel/models); the runtime from `$ORT_DYLIB_PATH` or
//! that folder. The other flags describe another model (see docs/embeddings.md).

use std::process::ExitCode;

use kestrel_embed::{arg_similarity, cosine, normalize, ArgComparison, ArgShape, Embedder};
use kestrel_embed_onnx::{
    calibrate, parse_pairs, tuning_pairs, Calibration, Distribution, EmbedConfig, LabelledPair,
    OnnxEmbedder, HOLDOUT2_TSV,
};

const USAGE: &str =
    "usage: kestrel-calibrate [--model-dir DIR] [--pairs FILE] [--holdout FILE] [--verbose] \
     [--full-line] [--model-id ID] [--model FILE] [--tokenizer FILE] \
     [--pooling mean|cls|last-token] [--dim N] [--max-tokens N] [--prefix TEXT] \
     [--output-name NAME]";

struct Args {
    model_dir: Option<String>,
    model: Vec<(String, String)>,
    pairs: Option<String>,
    holdout: Option<String>,
    verbose: bool,
    full_line: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model_dir: None,
        model: Vec::new(),
        pairs: None,
        holdout: None,
        verbose: false,
        full_line: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model-dir" => args.model_dir = Some(it.next().ok_or("--model-dir needs a folder")?),
            "--pairs" => args.pairs = Some(it.next().ok_or("--pairs needs a file")?),
            "--holdout" => args.holdout = Some(it.next().ok_or("--holdout needs a file")?),
            "--verbose" | "-v" => args.verbose = true,
            "--full-line" => args.full_line = true,
            "--model-id" | "--model" | "--tokenizer" | "--pooling" | "--dim" | "--max-tokens"
            | "--prefix" | "--output-name" => {
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

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let config = match &args.model_dir {
        Some(dir) => {
            let mut c = EmbedConfig::from_dir(dir);
            if let Some(rt) =
                std::env::var_os(kestrel_embed_onnx::RUNTIME_ENV).filter(|v| !v.is_empty())
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
            "--output-name" => config.with_output_name(Some(value.clone())),
            _ => config.with_instruction_prefix(value.replace("\\n", "\n")),
        };
    }
    let shipped = config.threshold();
    let read = |path: &str| -> Result<Vec<LabelledPair>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        parse_pairs(&text).map_err(|e| format!("{path}: {e}"))
    };
    let train = match &args.pairs {
        Some(p) => read(p)?,
        None => tuning_pairs().map_err(|e| e.to_string())?,
    };
    let held = match &args.holdout {
        Some(p) => read(p)?,
        None => parse_pairs(HOLDOUT2_TSV).map_err(|e| e.to_string())?,
    };
    eprintln!(
        "loading {} from {}",
        config.model_id,
        config.model_path.display()
    );
    let model = OnnxEmbedder::load(config).map_err(|e| e.to_string())?;
    let train = Scored::new(&model, train, args.full_line)?;
    let held = Scored::new(&model, held, args.full_line)?;

    println!(
        "model {}; compared: {}\n",
        model.model_id(),
        if args.full_line {
            "full command lines (--full-line)"
        } else {
            "arguments after argv[0], normalised (what the profile compares)"
        }
    );
    let cos_cal = train.calibrate(|s| s.cosine);
    let sim_cal = train.calibrate(|s| s.similarity);
    let held_title = format!(
        "HELD-OUT SET {}",
        args.holdout.as_deref().unwrap_or("holdout2.tsv")
    );
    for (title, set) in [
        ("TUNING SET pairs.tsv + holdout.tsv", &train),
        (held_title.as_str(), &held),
    ] {
        println!(
            "{title}: {} pairs ({} same, {} different)",
            set.pairs.len(),
            set.pairs.iter().filter(|p| p.same).count(),
            set.pairs.iter().filter(|p| !p.same).count()
        );
        report(
            "  cosine only",
            &set.calibrate(|s| s.cosine),
            set,
            |s| s.cosine,
            cos_cal.threshold,
        );
        report(
            "  argument similarity (cosine + structure)",
            &set.calibrate(|s| s.similarity),
            set,
            |s| s.similarity,
            sim_cal.threshold,
        );
        let (wrong, nearest) = set.at(shipped, |s| s.similarity);
        println!(
            "  shipped threshold {shipped:.3}: {wrong} of {} on the wrong side; nearest correct pair {nearest:.3} away\n",
            set.pairs.len()
        );
    }
    println!(
        "thresholds are chosen on the tuning set only; the held-out lines above apply them \
         (\"own best\" is what the held-out set alone would pick, for information)\n"
    );

    println!("leave-one-family-out on the tuning set (threshold re-chosen without the family):");
    let mut families: Vec<&str> = train.pairs.iter().map(|p| p.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    let (mut lofo_cos, mut lofo_sim) = (0, 0);
    for f in &families {
        let errors = |pick: fn(&Score) -> f32| {
            let rest = train.subset(|p| p.family != *f);
            let t = rest.calibrate(pick).threshold;
            train.subset(|p| p.family == *f).at(t, pick).0
        };
        let (c, s) = (errors(|s| s.cosine), errors(|s| s.similarity));
        lofo_cos += c;
        lofo_sim += s;
        println!("  {f:<10} cosine errors {c}   similarity errors {s}");
    }
    println!("  total      cosine errors {lofo_cos}   similarity errors {lofo_sim}\n");

    for (title, set) in [("tuning", &train), ("held-out", &held)] {
        println!("{title} pairs on the wrong side of the shipped threshold:");
        for (p, s) in set.pairs.iter().zip(&set.scores) {
            if (s.similarity >= shipped) != p.same {
                set.print_pair(p, s);
            }
        }
    }
    if args.verbose {
        for (title, set) in [("tuning", &train), ("held-out", &held)] {
            println!("\nall {title} pairs (argument similarity, cosine, structure):");
            let mut order: Vec<usize> = (0..set.pairs.len()).collect();
            order.sort_by(|&x, &y| {
                set.scores[x]
                    .similarity
                    .total_cmp(&set.scores[y].similarity)
            });
            for i in order {
                set.print_pair(&set.pairs[i], &set.scores[i]);
            }
        }
    }
    Ok(())
}

/// Scores of one pair.
#[derive(Clone, Copy)]
struct Score {
    cosine: f32,
    similarity: f32,
}

/// A labelled set with its compared strings and scores.
struct Scored {
    pairs: Vec<LabelledPair>,
    texts: Vec<(String, String)>,
    scores: Vec<Score>,
}

impl Scored {
    fn new(model: &OnnxEmbedder, pairs: Vec<LabelledPair>, full: bool) -> Result<Self, String> {
        let texts: Vec<(String, String)> = pairs
            .iter()
            .map(|p| {
                let (a, b) = if full {
                    (p.a.as_str(), p.b.as_str())
                } else {
                    p.arguments()
                };
                (normalize(a), normalize(b))
            })
            .collect();
        let mut scores = Vec::with_capacity(pairs.len());
        for chunk in texts.chunks(32) {
            let a: Vec<&str> = chunk.iter().map(|t| t.0.as_str()).collect();
            let b: Vec<&str> = chunk.iter().map(|t| t.1.as_str()).collect();
            let va = model.embed_batch(&a).map_err(|e| e.to_string())?;
            let vb = model.embed_batch(&b).map_err(|e| e.to_string())?;
            for ((x, y), (ta, tb)) in va.iter().zip(&vb).zip(chunk) {
                let c = cosine(x, y);
                // The shape never includes argv[0] (the profile's leaf is the program).
                let (sa, sb) = if full {
                    (ArgShape::of(after_first(ta)), ArgShape::of(after_first(tb)))
                } else {
                    (ArgShape::of(ta), ArgShape::of(tb))
                };
                scores.push(Score {
                    cosine: c,
                    similarity: arg_similarity(c, &sa, &sb),
                });
            }
        }
        Ok(Scored {
            pairs,
            texts,
            scores,
        })
    }

    fn subset(&self, keep: impl Fn(&LabelledPair) -> bool) -> Scored {
        let mut out = Scored {
            pairs: Vec::new(),
            texts: Vec::new(),
            scores: Vec::new(),
        };
        for ((p, t), s) in self.pairs.iter().zip(&self.texts).zip(&self.scores) {
            if keep(p) {
                out.pairs.push(p.clone());
                out.texts.push(t.clone());
                out.scores.push(*s);
            }
        }
        out
    }

    fn calibrate(&self, pick: impl Fn(&Score) -> f32) -> Calibration {
        let side = |same: bool| -> Vec<f32> {
            self.pairs
                .iter()
                .zip(&self.scores)
                .filter(|(p, _)| p.same == same)
                .map(|(_, s)| pick(s))
                .collect()
        };
        calibrate(&side(true), &side(false))
    }

    /// Pairs on the wrong side of `t`, and the distance from `t` to the nearest
    /// correctly classified pair.
    fn at(&self, t: f32, pick: impl Fn(&Score) -> f32) -> (usize, f32) {
        let (mut wrong, mut nearest) = (0, f32::INFINITY);
        for (p, s) in self.pairs.iter().zip(&self.scores) {
            let v = pick(s);
            if (v >= t) != p.same {
                wrong += 1;
            } else {
                nearest = nearest.min((v - t).abs());
            }
        }
        (wrong, nearest)
    }

    fn print_pair(&self, p: &LabelledPair, s: &Score) {
        let i = self
            .pairs
            .iter()
            .position(|q| std::ptr::eq(q, p))
            .unwrap_or_default();
        let (a, b) = &self.texts[i];
        let why = ArgComparison::new(a, b, s.cosine);
        let label = if p.same { "same" } else { "diff" };
        println!("  {label} [{}] {why}\n      {a}  |  {b}", p.family);
    }
}

fn after_first(s: &str) -> &str {
    s.split_once(' ').map_or("", |(_, r)| r)
}

fn row(label: &str, d: &Distribution) {
    println!(
        "    {label:<10} {:>4} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
        d.n, d.min, d.p05, d.median, d.mean, d.p95, d.max
    );
}

/// Distributions, the set's own best threshold, and the errors at `applied`
/// (the threshold chosen on the tuning set).
fn report(
    title: &str,
    own: &Calibration,
    set: &Scored,
    pick: impl Fn(&Score) -> f32,
    applied: f32,
) {
    println!("{title}");
    println!(
        "    {:<10} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "pairs", "n", "min", "p05", "median", "mean", "p95", "max"
    );
    row("same", &own.same);
    row("different", &own.different);
    let (wrong, nearest) = set.at(applied, pick);
    println!(
        "    at the tuning threshold {applied:.3}: errors {wrong}, nearest correct pair {nearest:.3} away   \
         (own best: threshold {:.3}, errors {}, margin {:.3})",
        own.threshold, own.errors, own.margin
    );
}
