//! `kestrel profile export|diff|drift` against a standalone state
//! directory, through the real binary.

use kestrel_operator::store::{DirStore, Store, StoredProfile};
use std::process::Command;

fn learned() -> kestrel_api::BehaviorProfile {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kestrel.dev/v1alpha1", "kind": "BehaviorProfile",
        "metadata": {"name": "web"},
        "spec": {"source": "Learned", "mode": "Auto", "workload": {"kind": "Container", "name": "web"}},
        "status": {"phase": "Detecting", "learned": {
            "similarityThreshold": 0.9,
            "processes": [{"image": "web:v1", "parent": "sh", "exe": "/usr/bin/java",
                 "arguments": [{"args": "-jar app.jar"}]}],
            "files": [{"image": "web:v1", "process": "java", "access": "read",
                 "paths": ["/app/config.yaml"]}]}}
    }))
    .unwrap()
}

fn kestrel(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn export_diff_and_drift_work_on_a_standalone_state_directory() {
    let dir = std::env::temp_dir().join(format!("kestrel-profile-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = DirStore::open(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(store.save_profile(&StoredProfile::new("web", learned())))
        .unwrap();
    let d = dir.to_str().unwrap();

    let (code, yaml, err) = kestrel(&["profile", "export", "web", "--state-dir", d]);
    assert_eq!(code, Some(0), "{err}");
    let exported = kestrel_api::profile_from_yaml(&yaml).unwrap().object;
    assert_eq!(exported.spec.source, kestrel_api::ProfileSource::Promoted);
    assert_eq!(exported.spec.mode, kestrel_api::ProfileMode::Detect);
    assert_eq!(exported.spec.baseline.as_ref(), learned().body());
    assert!(exported.status.is_none());

    // the copy in Git against the directory's: the same behaviour
    let file = dir.join("web-promoted.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = kestrel(&["profile", "diff", f, "web", "--state-dir", d]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("same behaviour"), "{out}");

    // Git gains a path: named, exit status 1
    let mut edited = exported.clone();
    edited.spec.baseline.as_mut().unwrap().files[0]
        .paths
        .push("/app/cache".into());
    std::fs::write(&file, kestrel_api::to_yaml(&edited).unwrap()).unwrap();
    let (code, out, _) = kestrel(&["profile", "diff", "web", f, "--state-dir", d]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("files:\n~ web:v1 java read\n    + path \"/app/cache\"\n"),
        "{out}"
    );

    // a learned profile has no drift; a name that is not there is named
    let (code, _, err) = kestrel(&["profile", "drift", "web", "--state-dir", d]);
    assert_ne!(code, Some(0));
    assert!(err.contains("a learned profile has no drift"), "{err}");
    let (code, _, err) = kestrel(&["profile", "export", "nope", "--state-dir", d]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("no profile \"nope\"") && err.contains("(it holds: web)"),
        "{err}"
    );
    let (code, _, err) = kestrel(&[
        "profile",
        "export",
        "web",
        "--state-dir",
        d,
        "--mode",
        "Enforce",
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("Enforce is reserved"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
