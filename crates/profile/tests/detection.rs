//! Mode-aware observation: learning, convergence, detection.

mod common;

use std::time::Duration;

use common::*;
use kestrel_embed::normalize;
use kestrel_profile::testing::TestEmbedder;
use kestrel_profile::{Access, Change, Mode, Phase, ProfileConfig, TransitionReason};

fn fast() -> ProfileConfig {
    ProfileConfig::builder()
        .window(Duration::from_secs(10))
        .min_learning_time(Duration::from_secs(20))
        .clean_windows(2)
        .build()
        .unwrap()
}

#[test]
fn auto_mode_learns_converges_and_then_reports_instead_of_learning() {
    let emb = TestEmbedder::new();
    let mut p = profile_with(fast());
    let s = Duration::from_secs;
    let o = p
        .observe(&file("app", Access::Read, b"/etc/app.conf"), s(1), &emb)
        .unwrap();
    assert_eq!(o.change, Change::Branch);
    assert!(p.tick(s(15)).is_empty());
    let t = p.tick(s(21));
    assert_eq!(
        t.iter().map(|t| t.reason).collect::<Vec<_>>(),
        vec![TransitionReason::Converged, TransitionReason::AutoDetect]
    );
    assert_eq!(p.phase(), Phase::Detecting);
    let o = p
        .observe(&file("app", Access::Write, b"/etc/passwd"), s(22), &emb)
        .unwrap();
    assert_eq!(o.outcome.signal(), Some("unknown-file"));
    assert_eq!(o.change, Change::None);
    assert!(p
        .observe(&file("app", Access::Read, b"/etc/app.conf"), s(23), &emb)
        .unwrap()
        .outcome
        .is_known());
}

#[test]
fn learn_mode_waits_for_a_person_and_new_behaviour_resets_it() {
    let emb = TestEmbedder::new();
    let mut config = fast();
    config.mode = Mode::Learn;
    let mut p = profile_with(config);
    let s = Duration::from_secs;
    let t = p.tick(s(20));
    assert_eq!(t[0].to, Phase::Converged);
    assert_eq!(p.phase(), Phase::Converged);
    let args = normalize("sleep 5");
    let o = p
        .observe(&proc("app:1", "sh", b"sleep", &args), s(21), &emb)
        .unwrap();
    assert_eq!(o.transitions[0].reason, TransitionReason::NewBehaviour);
    assert_eq!(p.phase(), Phase::Learning);
    let t = p.set_mode(Mode::Detect, s(22));
    assert_eq!(t[0].reason, TransitionReason::ModeChanged);
    assert!(t[0].message.contains("Detect"));
}

#[test]
fn new_exemplars_count_as_growth_and_delay_convergence() {
    let emb = TestEmbedder::new();
    let mut p = profile_with(fast());
    let s = Duration::from_secs;
    let a = normalize("java -jar app.jar");
    let b = normalize("python -m http.server");
    p.observe(&proc("app:1", "sh", b"run", &a), s(1), &emb)
        .unwrap();
    let o = p
        .observe(&proc("app:1", "sh", b"run", &b), s(15), &emb)
        .unwrap();
    assert_eq!(o.change, Change::Exemplar);
    assert!(
        p.tick(s(30)).is_empty(),
        "growth at 15 s keeps two 10 s windows dirty until 35 s"
    );
    assert_eq!(p.tick(s(36)).len(), 2);
}
