//! Bounded fuzz runs (`cargo test`) of the files an operator reads: stored
//! profiles and alerts, rule files and its config. Mutants of real files
//! (see [`kestrel_events::mutate`]) go through the same calls as at start-up;
//! none may panic. Coverage-guided runs of the same calls: `fuzz/`
//! (docs/fuzzing.md).

use crate::config::OperatorConfig;
use crate::store::AlertDocument;
use kestrel_events::mutate::mutants;
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{Event, Metadata, ProcessEvent, Profile, ProfileConfig};
use std::time::Duration;

fn profile_yaml() -> String {
    let emb = TestEmbedder::new();
    let mut p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    for (exe, args) in [("java", "-jar app.jar"), ("sh", "-c echo $HOME > /tmp/x")] {
        p.learn(
            &Event::Process(ProcessEvent {
                image: b"web:v1",
                parent: b"sh",
                exe: exe.as_bytes(),
                args,
            }),
            &emb,
        )
        .unwrap();
    }
    kestrel_api::to_yaml(&p.to_object(Metadata {
        name: Some("deployment-web".into()),
        namespace: Some("shop".into()),
    }))
    .unwrap()
}

/// How many parsed; the rest were refused with an error, none panicked.
fn run(seed: &str, count: usize, rng: u64, mut parse: impl FnMut(&str) -> bool) -> usize {
    let mut ok = 0;
    for m in mutants(seed.as_bytes(), count, rng) {
        if let Ok(text) = std::str::from_utf8(&m) {
            ok += usize::from(parse(text));
        }
    }
    ok
}

#[test]
fn mutated_profiles_are_refused_or_loaded_never_a_panic() {
    let emb = TestEmbedder::new();
    let loaded = run(&profile_yaml(), 4_000, 11, |t| {
        kestrel_api::profile_from_yaml(t)
            .is_ok_and(|s| Profile::from_object(&s.object, &emb, Duration::ZERO).is_ok())
    });
    assert!(loaded > 100, "{loaded}");
}

#[test]
fn mutated_alerts_are_refused_or_read_never_a_panic() {
    let seed = kestrel_api::to_yaml(&AlertDocument::from_spec(
        crate::engine::tests::miner_alert(),
    ))
    .unwrap();
    let read = run(&seed, 4_000, 12, |t| {
        kestrel_api::alert_from_yaml(t).is_ok()
    });
    assert!(read > 100, "{read}");
}

#[test]
fn mutated_rule_files_are_refused_or_built_never_a_panic() {
    let seed = include_str!("../../crates/scoring/rules/default.yaml");
    let built = run(seed, 1_500, 13, |t| {
        kestrel_scoring::RuleSet::builder()
            .add_yaml("fuzz.yaml", t.to_string())
            .build()
            .is_ok()
    });
    assert!(built > 10, "{built}");
}

#[test]
fn mutated_configs_are_refused_or_checked_never_a_panic() {
    let seed = "workloads:
  - name: web
    image: webapp:v1
    containers: \"web-*\"
learning: {window: 1h, minLearningTime: 2h, cleanWindows: 3, maxNewPerWindow: 0}
mode: Auto
similarityThreshold: 0.2
scoring:
  alertThreshold: 60
  weights: {rules: 40, deviation: 25, cluster: 35}
webhook: {url: \"http://127.0.0.1:2801/\"}
alertFlood: {maxNewAlerts: 20, windowSecs: 600}
";
    OperatorConfig::parse(seed).expect("the seed is a valid config");
    let checked = run(seed, 4_000, 14, |t| OperatorConfig::parse(t).is_ok());
    // most mutants break the YAML or a check; some must pass both
    assert!(checked > 20, "{checked}");
}
