//! The embedding runtime never tries to reach the network: ONNX Runtime's
//! telemetry is off, and loading the model and embedding open no socket.
//! Checked with strace on this very test binary, re-run as a child.

use kestrel_embed::Embedder as _;
use kestrel_embed_onnx::{EmbedConfig, OnnxEmbedder};

const CHILD: &str = "KESTREL_NO_NETWORK_CHILD";

#[test]
fn loading_the_model_and_embedding_open_no_socket() {
    let config = EmbedConfig::from_env();
    if let Err(e) = config.check_files() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but the embedding model is not installed: {e}"
        );
        eprintln!("SKIPPED: real-model test: {e}");
        return;
    }
    if std::env::var_os(CHILD).is_some() {
        let model = OnnxEmbedder::load(config).expect("the installed model loads");
        let v = model
            .embed_batch(&["-o pool.example:4444"])
            .expect("embeds");
        assert!(!v[0].is_empty());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let status = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=socket,connect,sendto", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "loading_the_model_and_embedding_open_no_socket",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .status()
        .expect("strace (make deps installs it)");
    assert!(status.success(), "the traced child failed");
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("socket(") || l.contains("connect(") || l.contains("sendto("))
        .collect();
    assert!(
        calls.is_empty(),
        "the embedding runtime opened sockets:\n{}",
        calls.join("\n")
    );
}
