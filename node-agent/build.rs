//! Compiles the CO-RE programs under `bpf/` and generates their skeletons.
use libbpf_cargo::SkeletonBuilder;
use std::path::PathBuf;

const PROGRAMS: [&str; 3] = ["process", "file", "network"];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bpf");
    let clang = std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang".into());
    for name in PROGRAMS {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&src)
            .clang(&clang)
            .clang_args([
                "-I".into(),
                bpf_dir.clone().into_os_string(),
                "-Wall".into(),
                "-Wno-unused-variable".into(),
                "-Wno-unused-function".into(),
            ])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building bpf/{name}.bpf.c: {e:#}"));
        println!("cargo:rerun-if-changed={}", src.display());
    }
    for header in ["kestrel.h", "common.bpf.h"] {
        println!("cargo:rerun-if-changed={}", bpf_dir.join(header).display());
    }
}
