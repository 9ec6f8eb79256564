//! The seed design notes' cases, end to end.

use std::time::Duration;

use kestrel_embed::normalize;
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{
    ActivityClass, Change, Event, Level, MatchOutcome, Mode, Phase, ProcessEvent, Profile,
    ProfileConfig,
};

fn proc<'a>(image: &'a str, parent: &'a str, exe: &'a str, args: &'a str) -> Event<'a> {
    Event::Process(ProcessEvent {
        image: image.as_bytes(),
        parent: parent.as_bytes(),
        exe: exe.as_bytes(),
        args,
    })
}

fn profile() -> Profile {
    Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap()
}

#[test]
fn nginx_master_worker_chain_is_learned_then_known() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let args = normalize("nginx: worker process");
    let ev = proc("nginx:latest", "nginx:master", "nginx:worker", &args);
    let l = p.learn(&ev, &emb).unwrap();
    assert_eq!(l.change, Change::Branch);
    assert_eq!(
        l.before,
        MatchOutcome::NewBranch {
            class: ActivityClass::Process,
            level: Level::Image
        }
    );
    assert_eq!(p.match_event(&ev, &emb).unwrap(), MatchOutcome::Known);
    assert_eq!(p.learn(&ev, &emb).unwrap().change, Change::None);
}

#[test]
fn xmrig_under_bash_in_webapp_is_an_unknown_process_in_detection() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let java = normalize("java -jar app.jar --timestamp=12345");
    p.learn(&proc("webapp:v1", "bash", "java", &java), &emb)
        .unwrap();
    p.set_mode(Mode::Detect, Duration::from_secs(1));
    assert_eq!(p.phase(), Phase::Detecting);
    let miner = normalize("./xmrig -o pool.minexmr.com:4444");
    let obs = p
        .observe(
            &proc("webapp:v1", "bash", "xmrig", &miner),
            Duration::from_secs(2),
            &emb,
        )
        .unwrap();
    assert_eq!(
        obs.outcome,
        MatchOutcome::NewBranch {
            class: ActivityClass::Process,
            level: Level::Exe
        }
    );
    assert_eq!(obs.outcome.signal(), Some("unknown-process"));
    assert_eq!(obs.change, Change::None, "detection never learns");
}

#[test]
fn java_timestamps_match_after_normalisation_but_a_stratum_pool_is_unusual() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let learned = normalize("java -jar app.jar --timestamp=12345");
    p.learn(&proc("webapp:v1", "bash", "java", &learned), &emb)
        .unwrap();

    let later = normalize("java -jar app.jar --timestamp=99999");
    assert_eq!(
        p.match_event(&proc("webapp:v1", "bash", "java", &later), &emb)
            .unwrap(),
        MatchOutcome::Known
    );

    let disguised = normalize("-o stratum+tcp://pool.xx:4444");
    match p
        .match_event(&proc("webapp:v1", "bash", "java", &disguised), &emb)
        .unwrap()
    {
        MatchOutcome::UnusualArguments {
            best_similarity,
            nearest_exemplar,
        } => {
            assert!(best_similarity < 0.95, "{best_similarity}");
            assert_eq!(nearest_exemplar, learned);
        }
        other => panic!("expected unusual arguments, got {other:?}"),
    }
}

#[test]
fn without_normalisation_the_raw_timestamps_would_not_match() {
    // Shows why normalisation runs before embedding.
    let emb = TestEmbedder::new();
    let mut p = profile();
    p.learn(
        &proc(
            "webapp:v1",
            "bash",
            "java",
            "java -jar app.jar --timestamp=12345",
        ),
        &emb,
    )
    .unwrap();
    let out = p
        .match_event(
            &proc(
                "webapp:v1",
                "bash",
                "java",
                "java -jar app.jar --timestamp=99999",
            ),
            &emb,
        )
        .unwrap();
    assert!(
        matches!(out, MatchOutcome::UnusualArguments { .. }),
        "{out:?}"
    );
}
