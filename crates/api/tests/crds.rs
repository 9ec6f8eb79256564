//! The committed CRD YAML under `deploy/crds/` is what the Rust types
//! generate: a change to the types without regenerating fails here.

use std::path::PathBuf;

#[test]
fn the_committed_crds_are_the_generated_ones() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let files = kestrel_api::crd_files().expect("CRDs serialise");
    assert_eq!(files.len(), 2);
    let mut stale = Vec::new();
    for (name, generated) in &files {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == *generated => {}
            Ok(_) => stale.push(format!("deploy/crds/{name} is stale")),
            Err(e) => stale.push(format!("deploy/crds/{name}: {e}")),
        }
    }
    assert!(
        stale.is_empty(),
        "{}: run `{}` (or `make crds`) and commit the result",
        stale.join("; "),
        kestrel_api::CRDGEN_COMMAND
    );
}

#[test]
fn the_committed_crds_parse_as_crds_of_both_kinds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for (file, kind) in [
        ("behaviorprofiles.yaml", "BehaviorProfile"),
        ("securityalerts.yaml", "SecurityAlert"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("committed CRD");
        let v: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
        assert_eq!(v["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(v["kind"], "CustomResourceDefinition");
        assert_eq!(v["spec"]["names"]["kind"], kind);
    }
}
