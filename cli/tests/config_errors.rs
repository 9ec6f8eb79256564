//! A config mistake is reported at once, naming the field, before the
//! embedding model is even looked for.

use std::process::Command;

#[test]
fn a_bad_config_fails_before_the_model_loads_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "learning:\n  cleanWindows: 4000000000\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(["operator", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--tls-dir")
        .arg(dir.path().join("tls"))
        .arg("--config")
        .arg(&cfg)
        // no model here: an error about the model would mean it was loaded first
        .env("KESTREL_MODEL_DIR", dir.path().join("no-model"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`learning.cleanWindows`: 4000000000 is outside 1..=10000"),
        "{err}"
    );
    assert!(!err.contains("embedding model"), "{err}");
}
