//! State directory: typed documents, exact workload names that round-trip,
//! a corrupt file named and skipped while the rest loads, a restart that
//! resumes the stored phase.

use kestrel_operator::store::{DirStore, Store, StoredProfile};
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{Event, Metadata, Mode, ProcessEvent, Profile, ProfileConfig};
use std::time::Duration;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kestrel-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn exec() -> Event<'static> {
    Event::Process(ProcessEvent {
        image: b"web:v1",
        parent: b"sh",
        exe: b"java",
        args: "-jar app.jar",
    })
}

fn learned(emb: &TestEmbedder) -> Profile {
    let mut p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    p.learn(&exec(), emb).unwrap();
    p
}

fn stored(workload: &str, p: &Profile) -> StoredProfile {
    StoredProfile::new(
        workload,
        p.to_object(Metadata {
            name: Some(workload.into()),
            namespace: Some("default".into()),
        }),
    )
}

#[tokio::test]
async fn a_corrupt_profile_file_is_named_and_the_others_still_load() {
    let dir = tmp("corrupt");
    let store = DirStore::open(&dir).unwrap();
    let emb = TestEmbedder::new();
    store
        .save_profile(&stored("good", &learned(&emb)))
        .await
        .unwrap();
    std::fs::write(
        dir.join("profiles/bad.yaml"),
        "apiVersion: kestrel.dev/v1alpha1\nkind: BehaviorProfile\nspec: [unclosed",
    )
    .unwrap();

    let loaded = store.load_profiles().await.unwrap();
    assert_eq!(loaded.len(), 2);
    let (mut good, mut bad) = (0, 0);
    for item in loaded {
        match item {
            Ok(p) => {
                assert_eq!(p.workload, "good");
                let profile = Profile::from_object(&p.object, &emb, Duration::ZERO).unwrap();
                assert!(profile.match_event(&exec(), &emb).unwrap().is_known());
                good += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("profiles/bad.yaml"), "{e}");
                assert!(e.to_string().contains("moved aside to"), "{e}");
                assert_eq!(e.label(), "store_quarantined");
                bad += 1;
            }
        }
    }
    assert_eq!((good, bad), (1, 1));
    // Kept aside under a name that is never listed nor overwritten.
    let aside: Vec<String> = std::fs::read_dir(dir.join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bad.yaml.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        std::fs::read_to_string(dir.join("profiles").join(&aside[0]))
            .unwrap()
            .ends_with("spec: [unclosed")
    );
    assert_eq!(store.load_profiles().await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_restarted_profile_resumes_detection() {
    let dir = tmp("restart");
    let store = DirStore::open(&dir).unwrap();
    let emb = TestEmbedder::new();
    let mut p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    p.set_mode(Mode::Detect, Duration::from_secs(1));
    store.save_profile(&stored("web", &p)).await.unwrap();
    let again = DirStore::open(&dir).unwrap();
    let loaded = again.load_profiles().await.unwrap().pop().unwrap().unwrap();
    let back = Profile::from_object(&loaded.object, &emb, Duration::from_secs(2)).unwrap();
    assert_eq!(back.phase(), p.phase());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn workload_names_with_slashes_round_trip_and_never_share_a_file() {
    let dir = tmp("names");
    let store = DirStore::open(&dir).unwrap();
    let emb = TestEmbedder::new();
    let p = learned(&emb);
    for w in [
        "Deployment/webapp",
        "Deployment-webapp",
        "shop/StatefulSet/db-0",
    ] {
        store.save_profile(&stored(w, &p)).await.unwrap();
    }
    // a fresh store, as after a restart
    let again = DirStore::open(&dir).unwrap();
    let mut names: Vec<String> = again
        .load_profiles()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().workload)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Deployment-webapp",
            "Deployment/webapp",
            "shop/StatefulSet/db-0"
        ]
    );
    // saving after the restart rewrites the same file, no second copy
    again
        .save_profile(&stored("Deployment/webapp", &p))
        .await
        .unwrap();
    let files = std::fs::read_dir(dir.join("profiles")).unwrap().count();
    assert_eq!(files, 3);
    again.delete_profile("Deployment/webapp").await.unwrap();
    assert_eq!(again.load_profiles().await.unwrap().len(), 2);
    let missing = again.delete_profile("Deployment/webapp").await.unwrap_err();
    assert_eq!(missing.label(), "store_not_found");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workload_names_become_safe_file_names() {
    use kestrel_operator::store::file_stem;
    assert_eq!(file_stem("webapp-1"), "webapp-1");
    assert!(file_stem("Deployment/web").starts_with("Deployment-web-"));
    assert_ne!(file_stem("Deployment/web"), file_stem("Deployment-web"));
    assert!(file_stem("../x").starts_with("w..-x-"));
}

#[tokio::test]
async fn the_workload_name_is_read_back_from_the_object_not_the_file_name() {
    let dir = tmp("objname");
    let store = DirStore::open(&dir).unwrap();
    let p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    let meta = Metadata {
        name: Some("Deployment/web".into()),
        namespace: Some("shop".into()),
    };
    store
        .save_profile(&StoredProfile::new("Deployment/web", p.to_object(meta)))
        .await
        .unwrap();
    let files: Vec<String> = std::fs::read_dir(dir.join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with("Deployment-web-"), "{files:?}");
    // a fresh store, as after a restart
    let again = DirStore::open(&dir).unwrap();
    let loaded = again.load_profiles().await.unwrap().pop().unwrap().unwrap();
    assert_eq!(loaded.workload, "Deployment/web");
    assert_eq!(
        loaded.object.metadata.name.as_deref(),
        Some("deployment-web")
    );
    assert_eq!(loaded.object.metadata.namespace.as_deref(), Some("shop"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state directory written by the release before the custom resources
/// (`make demo`): every profile and alert still loads through the store.
#[tokio::test]
async fn the_previous_releases_state_directory_loads() {
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
    let profiles = store.load_profiles().await.unwrap();
    assert_eq!(profiles.len(), 1);
    for p in profiles {
        let p = p.unwrap();
        assert_eq!(p.workload, "web");
        assert_eq!(p.format, kestrel_api::StoredFormat::V0);
        // a learned profile: its behaviour moved to status.learned (the
        // engine loads it with the model it names; crates/api tests the
        // whole conversion)
        let body = p.object.body().expect("the learned behaviour");
        assert!(!body.processes.is_empty());
        assert_eq!(body.model_id.as_deref(), Some("all-MiniLM-L6-v2-int8"));
    }
    let alerts = store.load_alerts().await.unwrap();
    assert_eq!(alerts.len(), 4);
    for a in alerts {
        let a = a.unwrap();
        assert_eq!(a.spec.severity, kestrel_scoring::Severity::Critical);
        assert_eq!(a.status.unwrap().count, a.spec.incident.count);
    }
    // A repeat is written over the same file, in today's shape.
    let first = store.load_alerts().await.unwrap().remove(0).unwrap();
    store.save_alert(&first).await.unwrap();
    assert_eq!(std::fs::read_dir(dir.join("alerts")).unwrap().count(), 4);
    let again = store
        .load_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .find(|a| a.metadata.name == first.metadata.name)
        .unwrap();
    assert_eq!(again, first);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer killed (SIGKILL) at random moments while it rewrites profiles
/// and alerts: every file left is a whole document, old or new, and a
/// restart loads them all. The writer is this test binary run again.
#[test]
fn a_process_killed_while_writing_leaves_every_file_old_or_new() {
    if let Ok(dir) = std::env::var("KESTREL_STORE_WRITER") {
        let store = DirStore::open(&dir).unwrap();
        let emb = TestEmbedder::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut p = learned(&emb);
        for i in 0u64.. {
            // each version differs (and grows), so a torn write would show
            let args = format!("-jar app.jar --instance {i}");
            p.learn(
                &Event::Process(ProcessEvent {
                    image: b"web:v1",
                    parent: b"sh",
                    exe: b"java",
                    args: &args,
                }),
                &emb,
            )
            .unwrap();
            for w in 0..4 {
                rt.block_on(store.save_profile(&stored(&format!("w{w}"), &p)))
                    .unwrap();
            }
        }
        return;
    }
    let dir = tmp("killed");
    let me = std::env::current_exe().unwrap();
    let emb = TestEmbedder::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for round in 0..12u64 {
        let mut child = std::process::Command::new(&me)
            .args([
                "--exact",
                "a_process_killed_while_writing_leaves_every_file_old_or_new",
                "--nocapture",
            ])
            .env("KESTREL_STORE_WRITER", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 37 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = DirStore::open(&dir).unwrap();
        let loaded = rt.block_on(store.load_profiles()).unwrap();
        assert!(!loaded.is_empty(), "round {round}: nothing written yet");
        for item in loaded {
            let p = item.unwrap_or_else(|e| panic!("round {round}: a torn file: {e}"));
            Profile::from_object(&p.object, &emb, Duration::ZERO)
                .unwrap_or_else(|e| panic!("round {round}: {}: {e}", p.workload));
        }
        // nothing set aside, and no temporary file left behind once opened
        for e in std::fs::read_dir(dir.join("profiles")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(name.ends_with(".yaml"), "round {round}: {name} left behind");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
