//! State directory: a corrupt file is named and skipped, the rest loads; a
//! restart resumes the stored phase.

use kestrel_operator::store::{DirStore, Store};
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{Event, Metadata, Mode, ProcessEvent, Profile, ProfileConfig};
use std::time::Duration;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kestrel-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_corrupt_profile_file_is_named_and_the_others_still_load() {
    let dir = tmp("corrupt");
    let store = DirStore::open(&dir).unwrap();
    let emb = TestEmbedder::new();
    let mut p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    let ev = Event::Process(ProcessEvent {
        image: b"web:v1",
        parent: b"sh",
        exe: b"java",
        args: "-jar app.jar",
    });
    p.learn(&ev, &emb).unwrap();
    store
        .save_profile("good", &p.to_yaml(Metadata::default()).unwrap())
        .unwrap();
    std::fs::write(
        dir.join("profiles/bad.yaml"),
        "apiVersion: kestrel.dev/v1alpha1\nkind: BehaviorProfile\nspec: [unclosed",
    )
    .unwrap();

    let loaded = store.load_profiles();
    assert_eq!(loaded.len(), 2);
    let mut ok = 0;
    for (name, yaml) in loaded {
        let r = yaml
            .map_err(|e| e.to_string())
            .and_then(|y| Profile::from_yaml(&y, &emb, Duration::ZERO).map_err(|e| e.to_string()));
        match (name.as_str(), r) {
            ("good", Ok(p)) => {
                ok += 1;
                assert!(p.match_event(&ev, &emb).unwrap().is_known());
            }
            ("bad", Err(e)) => assert!(!e.is_empty()),
            (n, r) => panic!("unexpected {n}: {:?}", r.map(|_| ())),
        }
    }
    assert_eq!(ok, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_profile_resumes_detection() {
    let dir = tmp("restart");
    let store = DirStore::open(&dir).unwrap();
    let emb = TestEmbedder::new();
    let mut p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    p.set_mode(Mode::Detect, Duration::from_secs(1));
    store
        .save_profile("web", &p.to_yaml(Metadata::default()).unwrap())
        .unwrap();
    let (_, yaml) = store.load_profiles().pop().unwrap();
    let again = Profile::from_yaml(&yaml.unwrap(), &emb, Duration::from_secs(2)).unwrap();
    assert_eq!(again.phase(), p.phase());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workload_names_become_safe_file_names() {
    assert_eq!(
        kestrel_operator::store::file_stem("Deployment/web"),
        "Deployment-web"
    );
    assert_eq!(kestrel_operator::store::file_stem("../x"), "w..-x");
}

#[test]
fn the_workload_name_is_read_back_from_the_object_not_the_file_name() {
    let dir = tmp("names");
    let store = DirStore::open(&dir).unwrap();
    let p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    let meta = Metadata {
        name: Some("Deployment/web".into()),
        namespace: Some("shop".into()),
    };
    store
        .save_profile("Deployment/web", &p.to_yaml(meta).unwrap())
        .unwrap();
    let (file, yaml) = store.load_profiles().pop().unwrap();
    assert_eq!(file, "Deployment-web");
    let object = kestrel_profile::parse_yaml(&yaml.unwrap()).unwrap().object;
    assert_eq!(object.workload_name().as_deref(), Some("Deployment/web"));
    assert_eq!(object.metadata.name.as_deref(), Some("deployment-web"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state directory written by the release before the custom resources
/// (`make demo`): every profile and alert still loads through the store.
#[test]
fn the_previous_releases_state_directory_loads() {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/api/tests/data/state-v0");
    let dir = tmp("state-v0");
    for sub in ["profiles", "alerts"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    let store = DirStore::open(&dir).unwrap();
    let profiles = store.load_profiles();
    assert_eq!(profiles.len(), 1);
    for (_, yaml) in profiles {
        let object = kestrel_profile::parse_yaml(&yaml.unwrap()).unwrap().object;
        assert_eq!(object.workload_name().as_deref(), Some("web"));
    }
    let alerts = store.load_alerts();
    assert_eq!(alerts.len(), 4);
    for a in alerts {
        let a = a.unwrap();
        assert_eq!(a.spec.severity, kestrel_scoring::Severity::Critical);
        assert_eq!(a.status.unwrap().count, a.spec.incident.count);
    }
    // A repeat is written over the same file, in today's shape.
    let first = store.load_alerts().remove(0).unwrap();
    store.save_alert(&first.spec).unwrap();
    assert_eq!(std::fs::read_dir(dir.join("alerts")).unwrap().count(), 4);
    let again = store
        .load_alerts()
        .into_iter()
        .map(Result::unwrap)
        .find(|a| a.metadata.name == first.metadata.name)
        .unwrap();
    assert_eq!(again, first);
    let _ = std::fs::remove_dir_all(&dir);
}
