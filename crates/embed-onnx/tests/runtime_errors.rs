//! Loading errors around the ONNX Runtime library. This is its own test binary
//! because ONNX Runtime is loaded once per process: a process that has loaded
//! the real library cannot observe a failed load any more.

use std::path::PathBuf;

use kestrel_embed_onnx::{EmbedConfig, OnnxEmbedder};

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kestrel-embed-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creates a scratch folder");
    dir
}

#[test]
fn a_missing_runtime_library_is_named_not_a_panic() {
    let dir = scratch_dir("no-runtime");
    let err = OnnxEmbedder::load(EmbedConfig::from_dir(&dir)).unwrap_err();
    assert_eq!(err.label(), "missing_file");
    let text = err.to_string();
    assert!(text.contains("ONNX Runtime library not found"), "{text}");
    assert!(text.contains("libonnxruntime.so"), "{text}");
}

#[test]
fn a_corrupt_runtime_library_is_an_error_not_a_panic() {
    let dir = scratch_dir("corrupt-runtime");
    let lib = dir.join("libonnxruntime.so.1.31.1");
    std::fs::write(&lib, b"\x7fELF but not really a shared library").expect("writes");
    std::fs::write(dir.join("model.onnx"), b"unused").expect("writes");
    std::fs::write(dir.join("tokenizer.json"), b"{}").expect("writes");
    let err = OnnxEmbedder::load(EmbedConfig::from_dir(&dir)).unwrap_err();
    assert_eq!(err.label(), "runtime", "{err}");
    assert!(
        err.to_string().contains("libonnxruntime.so.1.31.1"),
        "{err}"
    );
}
