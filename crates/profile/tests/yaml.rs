//! The YAML form: readable, lossless, and strict about bad input. The
//! hand-written documents here are in the shape of the release before the
//! custom resources (behaviour under `spec`), which still loads; today's
//! objects are in `objects.rs`.

mod common;

use std::time::Duration;

use common::*;
use kestrel_embed::normalize;
use kestrel_profile::testing::TestEmbedder;
use kestrel_profile::{Access, Error, Metadata, Profile};

fn sample() -> Profile {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let args = normalize("nginx -g daemon off;");
    p.learn(
        &proc("nginx:latest", "containerd-shim", b"/usr/sbin/nginx", &args),
        &emb,
    )
    .unwrap();
    p.learn(&file("nginx", Access::Read, b"/etc/nginx/nginx.conf"), &emb)
        .unwrap();
    p.learn(&net("10.0.0.5".parse().unwrap(), 443), &emb)
        .unwrap();
    p
}

const GOOD: &str = r#"
apiVersion: kestrel.dev/v1alpha1
kind: BehaviorProfile
metadata: {name: web, namespace: shop, uid: ignored}
spec:
  mode: Detect
  argumentMeasure: 2
  processes:
    - {image: "web:1", parent: sh, exe: java, arguments: [{args: "java -jar app.jar"}]}
  files:
    - {image: "web:1", process: java, access: read, paths: ["/app/*.jar", "/var/log/**", "/proc/*/status"]}
  network:
    - {image: "web:1", process: java, direction: outbound, peer: 10.0.0.0/8, ports: ["5432/tcp", "*/udp"]}
"#;

#[test]
fn the_yaml_is_readable_and_carries_no_vectors() {
    let yaml = sample()
        .to_yaml(Metadata {
            name: Some("nginx".into()),
            namespace: Some("web".into()),
        })
        .unwrap();
    assert!(yaml.contains("kind: BehaviorProfile"), "{yaml}");
    assert!(yaml.contains("nginx -g daemon off;"));
    assert!(yaml.contains("/etc/nginx/nginx.conf"));
    assert!(yaml.contains("443/tcp"));
    assert!(!yaml.contains("vector"));
}

#[test]
fn a_hand_written_profile_with_wildcards_networks_and_rest_loads_and_matches() {
    let emb = TestEmbedder::new();
    let p = Profile::from_yaml(GOOD, &emb, Duration::ZERO).unwrap();
    assert_eq!(p.phase(), kestrel_profile::Phase::Detecting);
    let k = |e| p.match_event(&e, &emb).unwrap().is_known();
    let f = |path: &'static [u8]| {
        kestrel_profile::Event::File(kestrel_profile::FileEvent {
            image: b"web:1",
            process: b"java",
            access: Access::Read,
            path,
        })
    };
    assert!(k(f(b"/var/log/a/b/c.log")));
    assert!(k(f(b"/proc/77/status")));
    assert!(!k(f(b"/var/lib/x")));
    let n = |ip: &str, port| {
        kestrel_profile::Event::Network(kestrel_profile::NetworkEvent {
            image: b"web:1",
            process: b"java",
            direction: kestrel_profile::Direction::Outbound,
            peer: kestrel_profile::Peer::Ip(ip.parse().unwrap()),
            protocol: kestrel_profile::Protocol::Tcp,
            port,
        })
    };
    assert!(k(n("10.9.8.7", 5432)));
    assert!(!k(n("11.0.0.1", 5432)));
    let args = normalize("java -jar app.jar");
    let pr = proc("web:1", "sh", b"java", &args);
    assert!(p.match_event(&pr, &emb).unwrap().is_known());
}

fn err(yaml: &str) -> String {
    match Profile::from_yaml(yaml, &TestEmbedder::new(), Duration::ZERO) {
        Ok(_) => panic!("loaded:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_profiles_fail_with_an_error_naming_the_field() {
    let cases = [
        (GOOD.replace("access: read", "access: reed"), "spec.files[0].access"),
        (GOOD.replace("\"/var/log/**\"", "'/var/\\q'"), "spec.files[0].paths[1]"),
        (GOOD.replace("/var/log/**", "/var/**/x"), "spec.files[0].paths[1]"),
        (GOOD.replace("5432/tcp", "5432/tpc"), "spec.network[0].ports[0]"),
        (GOOD.replace("5432/tcp", "99999/tcp"), "spec.network[0].ports[0]"),
        (GOOD.replace("10.0.0.0/8", "10.0.0.0/40"), "spec.network[0].peer"),
        (GOOD.replace("direction: outbound", "direction: sideways"), "spec.network[0].direction"),
        (GOOD.replace("[{args: \"java -jar app.jar\"}]", "[]"), "spec.processes[0].arguments"),
        (
            GOOD.replace("{args: \"java -jar app.jar\"}", "{args: x, minSimilarity: 2.0}"),
            "spec.processes[0].arguments[0].minSimilarity",
        ),
        (GOOD.replace("mode: Detect", "mode: Detect\n  learning: {window: 1 hour, minLearningTime: 2h, maxNewPerWindow: 0, cleanWindows: 3, bucketsPerWindow: 12}"), "spec.learning.window"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  similarityThreshold: 3"), "spec.similarityThreshold"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  compaction: {childLimit: 0}"), "spec.compaction.childLimit"),
        // Upper bounds: a stored profile cannot make Kestrel allocate beyond them.
        (GOOD.replace("mode: Detect", "mode: Detect\n  learning: {bucketsPerWindow: 4000000000}"), "spec.learning.bucketsPerWindow`: 4000000000 is outside 1..=1440"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  learning: {window: 9600h}"), "spec.learning.window`: must be at most 30 days"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  learning: {cleanWindows: 99999999}"), "spec.learning.cleanWindows"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  compaction: {hardChildLimit: 10000000}"), "spec.compaction.hardChildLimit`: 10000000 is outside 1..=65536"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  compaction: {nodeBudget: 1000000000000}"), "spec.compaction.nodeBudget"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  compaction: {exemplarCap: 1000000}"), "spec.compaction.exemplarCap`: 1000000 is outside 1..=1024"),
        (GOOD.replace("mode: Detect", "mode: Detect\n  compaction: {maxPathDepth: 100000}"), "spec.compaction.maxPathDepth"),
        (GOOD.replace("kind: BehaviorProfile", "kind: Pod"), "kind"),
        (GOOD.replace("exe: java", "exe: java, colour: red"), "colour"),
        (GOOD.replace("exe: java,", ""), "exe"),
        (GOOD.replace("mode: Detect", "mode: Sometimes"), "Sometimes"),
    ];
    for (yaml, field) in cases {
        let e = err(&yaml);
        assert!(e.contains(field), "error `{e}` does not name `{field}`");
    }
    assert!(err("[").contains("malformed profile YAML"));
}

#[test]
fn loading_with_another_model_is_refused() {
    let yaml = GOOD.replace("mode: Detect", "mode: Detect\n  modelId: some-other-model");
    let e = Profile::from_yaml(&yaml, &TestEmbedder::new(), Duration::ZERO).unwrap_err();
    assert!(matches!(e, Error::ModelMismatch { .. }), "{e}");
}

/// A profile with a merged exemplar (an explicit `minSimilarity`).
fn with_radius(measure: Option<u32>) -> String {
    let line = measure.map_or(String::new(), |m| format!("\n  argumentMeasure: {m}"));
    format!(
        r#"
apiVersion: kestrel.dev/v1alpha1
kind: BehaviorProfile
metadata: {{name: web}}
spec:
  mode: Detect{line}
  similarityThreshold: 0.5
  processes:
    - {{image: "web:1", parent: sh, exe: java, arguments: [{{args: "-jar app.jar", minSimilarity: -0.25}}]}}
"#
    )
}

#[test]
fn radii_of_another_argument_measure_are_dropped_and_the_exemplars_kept() {
    let emb = TestEmbedder::new();
    // Current measure: the merged radius survives a round trip.
    let current = Profile::from_yaml(
        &with_radius(Some(kestrel_embed::ARG_MEASURE)),
        &emb,
        Duration::ZERO,
    )
    .unwrap()
    .to_yaml(Default::default())
    .unwrap();
    assert!(current.contains("minSimilarity: -0.25"), "{current}");
    // Recorded before the version existed (absent = 1), or by another version:
    // the exemplar stays, its radius becomes the threshold, the document is
    // rewritten with today's version.
    for old in [None, Some(1)] {
        let back = Profile::from_yaml(&with_radius(old), &emb, Duration::ZERO)
            .unwrap()
            .to_yaml(Default::default())
            .unwrap();
        assert!(back.contains("-jar app.jar"), "{back}");
        assert!(!back.contains("minSimilarity"), "{back}");
        assert!(
            back.contains(&format!("argumentMeasure: {}", kestrel_embed::ARG_MEASURE)),
            "{back}"
        );
        // 0.5 was never a shipped default, so it was chosen and is kept.
        assert!(back.contains("similarityThreshold: 0.5"), "{back}");
    }
}

#[test]
fn status_survives_a_round_trip() {
    let emb = TestEmbedder::new();
    let mut p = sample();
    p.tick(Duration::from_secs(100));
    let yaml = p.to_yaml(Default::default()).unwrap();
    let back = Profile::from_yaml(&yaml, &emb, Duration::ZERO).unwrap();
    assert_eq!(back.status(), p.status());
    assert_eq!(back.to_yaml(Default::default()).unwrap(), yaml);
}

/// A stored profile larger than its node budget allows (four times the
/// budget, which learning never reaches) is refused naming where it
/// overflowed, not loaded whole.
#[test]
fn a_profile_past_four_times_its_node_budget_is_refused() {
    let paths: Vec<String> = (0..200).map(|i| format!("\"/d/f{i}\"")).collect();
    let yaml = GOOD
        .replace(
            "mode: Detect",
            "mode: Detect\n  compaction: {nodeBudget: 16, childLimit: 4096}",
        )
        .replace(
            "\"/proc/*/status\"]",
            &format!("\"/proc/*/status\", {}]", paths.join(", ")),
        );
    let e = err(&yaml);
    assert!(e.contains("spec.files[0].paths["), "{e}");
    assert!(
        e.contains("more than four times compaction.nodeBudget"),
        "{e}"
    );
    // within the budget it loads
    let small = GOOD.replace(
        "mode: Detect",
        "mode: Detect\n  compaction: {nodeBudget: 16}",
    );
    Profile::from_yaml(&small, &TestEmbedder::new(), Duration::ZERO).unwrap();
}
