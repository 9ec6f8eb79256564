//! Writes the CRDs generated from the Rust types to `deploy/crds/` (or
//! another directory), or prints them.
//!
//! ```text
//! crdgen             write deploy/crds/behaviorprofiles.yaml and securityalerts.yaml
//! crdgen --out DIR   write them to DIR
//! crdgen --stdout    print them, separated by `---`
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    // crates/api → the workspace root.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(std::path::Path::new("."));
    let mut out = root.join("deploy/crds");
    let mut stdout = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--stdout" => stdout = true,
            "--out" => match args.next() {
                Some(d) => out = PathBuf::from(d),
                None => return usage("--out needs a directory"),
            },
            "-h" | "--help" => {
                println!("usage: crdgen [--out DIR | --stdout]");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    let files = match kestrel_api::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if stdout {
        let docs: Vec<&str> = files.iter().map(|(_, y)| y.as_str()).collect();
        print!("{}", docs.join("---\n"));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("crdgen: {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in &files {
        let path = out.join(name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("crdgen: {msg}\nusage: crdgen [--out DIR | --stdout]");
    ExitCode::from(2)
}
