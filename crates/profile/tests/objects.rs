//! A profile as a `BehaviorProfile` object: learned and promoted shapes,
//! names that round-trip, settings, and the state directory of the release
//! before the custom resources.

mod common;

use std::time::Duration;

use common::*;
use kestrel_embed::{normalize, Embedder};
use kestrel_profile::testing::TestEmbedder;
use kestrel_profile::{
    parse_yaml, Access, Error, Metadata, Mode, Phase, Profile, ProfileSource, StoredFormat,
};

fn sample() -> Profile {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let args = normalize("nginx -g daemon off;");
    p.learn(&proc("nginx:latest", "sh", b"/usr/sbin/nginx", &args), &emb)
        .unwrap();
    p.learn(&file("nginx", Access::Read, b"/etc/nginx/nginx.conf"), &emb)
        .unwrap();
    p
}

fn meta(name: &str) -> Metadata {
    Metadata {
        name: Some(name.into()),
        namespace: Some("shop".into()),
    }
}

#[test]
fn a_learned_profile_is_written_with_its_tries_in_the_status() {
    let p = sample();
    let o = p.to_object(meta("Deployment/webapp"));
    assert_eq!(o.metadata.name.as_deref(), Some("deployment-webapp"));
    assert_eq!(o.spec.source, ProfileSource::Learned);
    assert!(o.spec.baseline.is_none());
    let st = o.status.as_ref().unwrap();
    let learned = st.learned.as_ref().unwrap();
    assert_eq!(learned.processes[0].exe, "/usr/sbin/nginx");
    assert_eq!(learned.process_keys, Some(kestrel_api::ProcessKeys::Path));
    assert_eq!(st.summary.unwrap().files, 1);
    assert_eq!(
        st.size_bytes,
        Some(serde_json_len(&o)),
        "sizeBytes is the object's JSON size"
    );
    let yaml = p.to_yaml(meta("Deployment/webapp")).unwrap();
    assert!(yaml.contains("source: Learned"), "{yaml}");
    assert!(yaml.contains("  learned:"), "{yaml}");
    assert!(yaml.contains("type: Converged"), "{yaml}");
    assert!(!yaml.contains("vector"));
}

fn serde_json_len(o: &kestrel_profile::BehaviorProfile) -> u64 {
    serde_json::to_vec(o).unwrap().len() as u64
}

#[test]
fn the_workload_name_round_trips_through_the_object() {
    let p = sample();
    for name in [
        "Deployment/webapp",
        "web",
        "containerd://4f2a",
        &"x".repeat(300),
    ] {
        let yaml = p.to_yaml(meta(name)).unwrap();
        let stored = parse_yaml(&yaml).unwrap();
        assert_eq!(stored.format, StoredFormat::V1alpha1);
        assert_eq!(
            stored.object.workload_name().as_deref(),
            Some(name),
            "{yaml}"
        );
        assert!(kestrel_api::is_dns_subdomain(
            stored.object.metadata.name.as_deref().unwrap()
        ));
    }
}

#[test]
fn status_and_settings_survive_a_round_trip() {
    let emb = TestEmbedder::new();
    let config = kestrel_profile::ProfileConfig::builder()
        .mode(Mode::Learn)
        .build()
        .unwrap();
    let mut p = profile_with(config);
    p.learn(&proc("web:1", "sh", b"java", "-jar app.jar"), &emb)
        .unwrap();
    p.tick(Duration::from_secs(100));
    let yaml = p.to_yaml(meta("web")).unwrap();
    let back = Profile::from_yaml(&yaml, &emb, Duration::ZERO).unwrap();
    assert_eq!(back.status(), p.status());
    assert_eq!(back.config(), p.config());
    assert_eq!(back.to_yaml(meta("web")).unwrap(), yaml);
}

const PROMOTED: &str = r#"
apiVersion: kestrel.dev/v1alpha1
kind: BehaviorProfile
metadata: {name: deployment-web, namespace: shop}
spec:
  source: Promoted
  mode: Detect
  workload: {kind: Deployment, name: web}
  learning: {window: 30m}
  baseline:
    argumentMeasure: 2
    processes:
      - {image: "web:1", parent: sh, exe: java, arguments: [{args: "java -jar app.jar"}]}
    files:
      - {image: "web:1", process: java, access: read, paths: ["/app/*.jar", "/var/log/**"]}
    network:
      - {image: "web:1", process: java, direction: outbound, peer: 10.0.0.0/8, ports: ["5432/tcp"]}
"#;

#[test]
fn a_promoted_profile_loads_from_its_baseline_and_stays_promoted() {
    let emb = TestEmbedder::new();
    let p = Profile::from_yaml(PROMOTED, &emb, Duration::ZERO).unwrap();
    assert_eq!(p.source(), ProfileSource::Promoted);
    assert_eq!(p.phase(), Phase::Detecting);
    // Absent settings take the defaults; given ones are kept.
    assert_eq!(p.config().learning.window, Duration::from_secs(1800));
    assert_eq!(
        p.config().learning.min_learning_time,
        Duration::from_secs(7200)
    );
    let args = normalize("java -jar app.jar");
    assert!(p
        .match_event(&proc("web:1", "sh", b"java", &args), &emb)
        .unwrap()
        .is_known());
    assert!(!p
        .match_event(&proc("web:1", "sh", b"xmrig", "-o pool"), &emb)
        .unwrap()
        .is_known());
    let o = p.to_object(meta("Deployment/web"));
    assert_eq!(o.spec.source, ProfileSource::Promoted);
    assert_eq!(o.spec.baseline.as_ref().unwrap().processes.len(), 1);
    assert!(o.status.as_ref().unwrap().learned.is_none());
}

fn err(yaml: &str) -> String {
    match Profile::from_yaml(yaml, &TestEmbedder::new(), Duration::ZERO) {
        Ok(_) => panic!("loaded:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_field_where_the_object_has_it() {
    let cases = [
        (
            PROMOTED.replace("access: read", "access: reed"),
            "spec.baseline.files[0].access",
        ),
        (
            PROMOTED.replace("5432/tcp", "5432/tpc"),
            "spec.baseline.network[0].ports[0]",
        ),
        (
            PROMOTED.replace(
                "argumentMeasure: 2",
                "argumentMeasure: 2\n    similarityThreshold: 3",
            ),
            "spec.baseline.similarityThreshold",
        ),
        (
            PROMOTED.replace("window: 30m", "window: soon"),
            "spec.learning.window",
        ),
        (
            PROMOTED.replace("mode: Detect", "mode: Enforce"),
            "spec.mode",
        ),
        (
            PROMOTED.replace("source: Promoted", "source: Found"),
            "Found",
        ),
        (
            PROMOTED.replace("exe: java,", "exe: java, colour: red,"),
            "colour",
        ),
    ];
    for (yaml, field) in cases {
        let e = err(&yaml);
        assert!(e.contains(field), "error `{e}` does not name `{field}`");
    }
    let no_baseline = PROMOTED.split("  baseline:").next().unwrap();
    assert!(err(no_baseline).contains("spec.baseline"));
    let learned = PROMOTED.replace("source: Promoted", "source: Learned");
    let learned = learned.split("  baseline:").next().unwrap();
    let p = Profile::from_yaml(learned, &TestEmbedder::new(), Duration::ZERO).unwrap();
    assert_eq!(p.stats().branches, 0, "a new learned object starts empty");
}

/// The embedder the previous release's demo used, as far as loading needs:
/// its model id (vectors from the test embedder).
struct DemoModel(TestEmbedder);

impl Embedder for DemoModel {
    fn model_id(&self) -> &str {
        "all-MiniLM-L6-v2-int8"
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn embed_batch(&self, inputs: &[&str]) -> kestrel_embed::Result<Vec<Vec<f32>>> {
        self.0.embed_batch(inputs)
    }
}

#[test]
fn the_previous_releases_profile_loads_detecting_and_is_written_back_as_an_object() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/tests/data/state-v0/profiles/web.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let emb = DemoModel(TestEmbedder::new());
    let p = Profile::from_yaml(&yaml, &emb, Duration::ZERO).unwrap();
    assert_eq!(p.phase(), Phase::Detecting);
    assert_eq!(p.source(), ProfileSource::Learned);
    assert_eq!(p.stats().exemplars, 5);
    let known = proc("webapp:v1", "sh", b"cat", "/etc/hostname");
    assert!(p.match_event(&known, &emb).unwrap().is_known());
    // it holds basenames: executables, which now reach the tries by full
    // path, keep matching by basename until the profile is relearned,
    // instead of every process becoming new
    assert_eq!(p.process_keys(), kestrel_api::ProcessKeys::Name);
    let by_path = proc("webapp:v1", "sh", b"/bin/cat", "/etc/hostname");
    assert!(p.match_event(&by_path, &emb).unwrap().is_known());
    let read = kestrel_profile::Event::File(kestrel_profile::FileEvent {
        image: b"webapp:v1",
        process: b"cat",
        access: Access::Read,
        path: b"/etc/hostname",
    });
    assert!(p.match_event(&read, &emb).unwrap().is_known());
    let miner = proc("webapp:v1", "sh", b"xmrig", "-o stratum+tcp://pool:<num>");
    assert!(!p.match_event(&miner, &emb).unwrap().is_known());

    let workload = parse_yaml(&yaml).unwrap().object.workload_name();
    assert_eq!(workload.as_deref(), Some("web"));
    let again = p
        .to_yaml(Metadata {
            name: workload,
            namespace: Some("standalone".into()),
        })
        .unwrap();
    let back = Profile::from_yaml(&again, &emb, Duration::ZERO).unwrap();
    assert_eq!(back.process_keys(), kestrel_api::ProcessKeys::Name);
    assert_eq!(back.status(), p.status());
    assert_eq!(back.to_body(), p.to_body());
    assert!(matches!(
        Profile::from_yaml(&yaml, &TestEmbedder::new(), Duration::ZERO),
        Err(Error::ModelMismatch { .. })
    ));
}
