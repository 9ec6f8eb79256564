//! The engine never waits for the LLM: an anomaly is scored at once with the
//! LLM part pending, its judgement runs behind a bounded queue on the tokio
//! runtime, and the answer (or the deadline) updates the stored alert later.
//!
//! Real parts throughout: the engine with the test embedder and the default
//! rule pack, the OpenAI-compatible client over loopback TCP, against a
//! listener that accepts and never answers or a scripted server. Time is
//! driven through `now`; nothing asserts on wall-clock durations.

use kestrel_e2e::fake_http::{chat_answer, FakeHttp};
use kestrel_events::{
    Argv, ByteStr, ContainerRef, Event, EventKind, Exec, Namespaces, Runtime, Task,
};
use kestrel_events::{Forwarded, Workload};
use kestrel_operator::engine::{Engine, EngineConfig, LlmSeam, Output};
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{activity_of, profile_event, Metadata, Mode, Profile, ProfileConfig};
use kestrel_scoring::{
    LlmQueueConfig, LlmStatus, OpenAiConfig, RuleSet, Scorer, ScoringConfig, SecurityAlert,
    Severity, Verdict,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const T0: Duration = Duration::from_secs(1_700_000_000);
const IMAGE: &str = "web:v1";
const MINER: &[&str] = &["xmrig", "-o", "stratum+tcp://pool.minexmr.com:4444"];

/// An exec in container `web-1` of workload `web`, as the edge forwards it.
fn exec(pid: u32, filename: &str, argv: &[&str]) -> Forwarded {
    let comm = filename.rsplit('/').next().unwrap_or(filename);
    let event = Event {
        ts_ns: 0,
        cgroup_id: 1,
        task: Some(Task {
            pid,
            tid: pid,
            ppid: 1,
            uid: 0,
            comm: comm.into(),
        }),
        ns: Namespaces::default(),
        container: Some(ContainerRef {
            id: "web-1".into(),
            runtime: Runtime::Plain,
        }),
        kind: EventKind::Exec(Exec {
            filename: filename.into(),
            exe: comm.into(),
            parent_comm: "sh".into(),
            // a process under the container's shell: never pid 1 of its
            // pid namespace (that is the entry point, keyed by `<runtime>`)
            ns_pid: pid + 1,
            argv: Argv {
                args: argv.iter().map(|a| ByteStr::from(*a)).collect(),
                size: 0,
                truncated: false,
                read_failed: false,
            },
            from_proc_scan: false,
            dir: None,
        }),
    };
    let activity = activity_of(&event).expect("an exec is an activity");
    Forwarded {
        event,
        workload: Workload {
            name: "web".into(),
            image: IMAGE.into(),
            pod: String::new(),
            node: String::new(),
        },
        activity,
        process: None,
        chain: Vec::new(),
    }
}

/// What the workload normally runs.
fn known(pid: u32) -> Forwarded {
    exec(pid, "/usr/bin/java", &["java", "-jar", "app.jar"])
}

/// The default pack plus `odd-tool` (score 70): without cluster statistics
/// a medium alert from the rules alone, which a malicious verdict raises to
/// high and a benign one must not lower.
fn rules_with_odd_tool() -> RuleSet {
    RuleSet::builder()
        .default_pack()
        .add_yaml(
            "test",
            "rules:\n  - id: odd-tool\n    description: odd tool runs\n    score: 70\n    action: investigate\n    when:\n      field: exe_name\n      equals: [odd-tool]\n",
        )
        .build()
        .unwrap()
}

/// An engine whose profile of `web` knows `java` and detects, with an LLM
/// at `endpoint` behind a queue with `queue`'s settings. The client itself
/// waits a minute and does not retry, so only the queue's deadline ends a
/// judgement of a silent endpoint.
fn engine(
    endpoint: &str,
    queue: LlmQueueConfig,
    rules: RuleSet,
) -> (Engine, tokio::runtime::Runtime) {
    let scoring = ScoringConfig {
        llm: Some(OpenAiConfig {
            endpoint: endpoint.into(),
            model: "test".into(),
            timeout_ms: 60_000,
            max_retries: 0,
            requests_per_second: 0.0,
            ..OpenAiConfig::default()
        }),
        llm_queue: queue,
        ..ScoringConfig::default()
    };
    let llm = scoring
        .build_llm_engine()
        .unwrap()
        .expect("an LLM is configured");
    let scorer = Scorer::new(scoring, rules).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let embedder = Arc::new(TestEmbedder::new());
    let mut engine = Engine::new(
        EngineConfig {
            profile: ProfileConfig::default(),
            node: "node-1".into(),
            namespace: "shop".into(),
            digest_seed: 1,
        },
        embedder.clone(),
        scorer,
    )
    .with_llm(LlmSeam {
        engine: llm,
        runtime: runtime.handle().clone(),
    });
    let mut profile = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, T0).unwrap();
    let java = known(1);
    profile
        .learn(
            &profile_event(&java.activity, IMAGE.as_bytes()),
            embedder.as_ref(),
        )
        .unwrap();
    profile.set_mode(Mode::Detect, T0);
    let document = profile.to_object(Metadata::default());
    engine.load_profile("web", &document, T0).unwrap();
    assert_eq!(engine.status()[0].phase, "Detecting");
    (engine, runtime)
}

/// A real TCP listener that accepts connections and never answers; the
/// counter says how many it accepted.
fn silent_endpoint() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

/// A scripted model answering `verdict` once `gate` is open.
fn scripted_llm(verdict: &'static str, score: u32, gate: Arc<AtomicBool>) -> FakeHttp {
    FakeHttp::start(move |_, _| {
        while !gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let content = serde_json::json!({"verdict": verdict, "score": score,
            "explanation": "scripted", "tactics": ["T1496"]});
        (200, chat_answer(&content))
    })
    .unwrap()
}

/// The alerts among `outs`, with their notify flags.
fn alerts(outs: Vec<Output>) -> Vec<(Box<SecurityAlert>, bool)> {
    outs.into_iter()
        .filter_map(|o| match o {
            Output::Alert { alert, notify } => Some((alert, notify)),
            Output::Phase { .. } | Output::RelearnSuggested { .. } | Output::Taught { .. } => None,
        })
        .collect()
}

/// Polls (without blocking the engine) until the LLM's answer for alert
/// `id` has been applied; bounded, so a lost answer fails instead of hanging.
/// `already` is what the call that raised the alert returned after it: the
/// engine polls the queue at the end of every `handle`, so a fast answer
/// can arrive there, right behind the alert it updates.
fn wait_for_llm_update(
    engine: &mut Engine,
    already: &[(Box<SecurityAlert>, bool)],
    id: &str,
    now: Duration,
) -> (Box<SecurityAlert>, bool) {
    if let Some(update) = already.iter().find(|(a, _)| a.id == id) {
        return update.clone();
    }
    for _ in 0..6000 {
        for (alert, notify) in alerts(engine.poll_llm(now)) {
            if alert.id == id {
                return (alert, notify);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the LLM's answer for alert {id} was never applied");
}

#[test]
fn with_an_llm_that_never_answers_events_keep_flowing_and_the_rule_alert_is_raised_at_once() {
    let (url, accepted) = silent_endpoint();
    let queue = LlmQueueConfig {
        capacity: 16,
        concurrency: 2,
        deadline_ms: 5_000,
    };
    let (mut engine, _runtime) = engine(&url, queue, RuleSet::default_pack().unwrap());

    // The miner's exec: the very call that sees it returns the rule alert.
    let outs = alerts(engine.handle(&exec(100, "/tmp/xmrig", MINER), T0).unwrap());
    assert_eq!(outs.len(), 1, "{outs:?}");
    let (first, notify) = &outs[0];
    assert!(notify);
    assert!(first.severity >= Severity::High, "{:?}", first.severity);
    assert_eq!(first.llm.status, LlmStatus::Pending);
    assert_eq!(first.llm.explanation, "LLM: pending");
    let id = first.id.clone();
    let mut latest = first.clone();

    // 999 more while the LLM hangs: known execs, repeats of the miner, and
    // new binaries (each a new anomaly that wants a judgement).
    let (mut handled, mut anomalies, mut miner_runs) = (1u64, 1u64, 1u64);
    for i in 1..1000u32 {
        let now = T0 + Duration::from_micros(u64::from(i));
        let f = match i % 3 {
            0 => known(1000 + i),
            1 => {
                anomalies += 1;
                miner_runs += 1;
                exec(1000 + i, "/tmp/xmrig", MINER)
            }
            _ => {
                anomalies += 1;
                let tool = format!("/usr/bin/tool-{i}");
                exec(1000 + i, &tool, &[&tool, "--run"])
            }
        };
        for (alert, _) in alerts(engine.handle(&f, now).unwrap()) {
            if alert.id == id {
                latest = alert;
            }
        }
        handled += 1;
    }
    assert_eq!(handled, 1000);
    assert_eq!(engine.scorer_stats().candidates, anomalies);
    assert_eq!(
        latest.incident.count, miner_runs,
        "every repeat was counted"
    );
    assert!(latest.severity >= Severity::High);
    // The judgements really went to the silent endpoint (bounded wait).
    for _ in 0..6000 {
        if accepted.load(Ordering::SeqCst) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        accepted.load(Ordering::SeqCst) > 0,
        "the LLM was never called"
    );

    // Past the deadline (driven through `now`) the LLM part reads timed out.
    let after = T0 + Duration::from_millis(5_000) + Duration::from_secs(1);
    for (alert, notify) in alerts(engine.poll_llm(after)) {
        if alert.id == id {
            assert!(!notify, "the rules alone decided the severity");
            latest = alert;
        }
    }
    assert_eq!(latest.llm.status, LlmStatus::TimedOut, "{:?}", latest.llm);
    assert_eq!(latest.llm.explanation, "LLM: timed out after 5000 ms");
    assert!(latest.severity >= Severity::High);
    assert_eq!(engine.scorer_stats().llm_pending, 0);
}

#[test]
fn a_later_malicious_answer_updates_the_stored_alert_and_notifies_the_severity_change() {
    let gate = Arc::new(AtomicBool::new(false));
    let llm = scripted_llm("malicious", 99, Arc::clone(&gate));
    let (mut engine, _runtime) = engine(
        &format!("{}/v1", llm.base_url),
        LlmQueueConfig::default(),
        rules_with_odd_tool(),
    );
    let outs = alerts(
        engine
            .handle(&exec(7, "/usr/bin/odd-tool", &["odd-tool", "--sync"]), T0)
            .unwrap(),
    );
    assert_eq!(outs.len(), 1, "{outs:?}");
    let (first, notify) = &outs[0];
    assert!(notify);
    assert_eq!(first.severity, Severity::Medium);
    assert_eq!(first.llm.status, LlmStatus::Pending);

    gate.store(true, Ordering::SeqCst);
    let (updated, notify) =
        wait_for_llm_update(&mut engine, &[], &first.id, T0 + Duration::from_millis(1));
    assert_eq!(updated.id, first.id, "the same alert is updated");
    assert_eq!(updated.llm.status, LlmStatus::Ok);
    assert_eq!(updated.llm.verdict, Some(Verdict::Malicious));
    assert_eq!(updated.severity, Severity::High);
    assert!(updated.score > first.score);
    assert!(notify, "the severity changed");
    assert_eq!(updated.incident.count, 1);
    assert_eq!(llm.requests().len(), 1);
}

#[test]
fn a_benign_answer_for_a_rule_hit_keeps_the_alert_at_or_above_the_threshold() {
    let gate = Arc::new(AtomicBool::new(true));
    let llm = scripted_llm("benign", 0, gate);
    let (mut engine, _runtime) = engine(
        &format!("{}/v1", llm.base_url),
        LlmQueueConfig::default(),
        rules_with_odd_tool(),
    );
    let outs = alerts(
        engine
            .handle(&exec(7, "/usr/bin/odd-tool", &["odd-tool", "--sync"]), T0)
            .unwrap(),
    );
    // the gate is open, so the answer may already be behind the alert
    let (first, _) = &outs[0];
    let (updated, notify) = wait_for_llm_update(
        &mut engine,
        &outs[1..],
        &first.id,
        T0 + Duration::from_millis(1),
    );
    assert_eq!(updated.llm.verdict, Some(Verdict::Benign));
    assert!(
        updated.score >= updated.breakdown.threshold,
        "{} < {}",
        updated.score,
        updated.breakdown.threshold
    );
    assert_eq!(updated.score, first.score);
    assert_eq!(updated.severity, first.severity);
    assert!(!notify);
    assert!(!updated.breakdown.notes.is_empty(), "the guard says so");
}

#[test]
fn with_the_queue_full_the_alert_says_so_and_nothing_waits() {
    let (url, _accepted) = silent_endpoint();
    let queue = LlmQueueConfig {
        capacity: 1,
        concurrency: 1,
        deadline_ms: 60_000,
    };
    let (mut engine, _runtime) = engine(&url, queue, RuleSet::default_pack().unwrap());
    let mut statuses = Vec::new();
    let miners = [
        "xmrig",
        "xmrig-notls",
        "xmr-stak",
        "minerd",
        "cpuminer",
        "cpuminer-multi",
        "nbminer",
        "t-rex",
        "lolminer",
        "ethminer",
    ];
    for (pid, miner) in (100..).zip(miners) {
        // Ten different miners: ten incidents, each wanting a judgement.
        let path = format!("/tmp/{miner}");
        let argv = [miner, "-o", "stratum+tcp://pool.example:4444"];
        let outs = alerts(engine.handle(&exec(pid, &path, &argv), T0).unwrap());
        assert_eq!(outs.len(), 1, "{outs:?}");
        let (alert, notify) = &outs[0];
        assert!(notify);
        assert!(alert.severity >= Severity::High);
        statuses.push((alert.llm.status, alert.llm.explanation.clone()));
    }
    // The silent endpoint holds the one slot: at most one judgement in
    // flight and one waiting; the others were refused at once.
    let pending = statuses
        .iter()
        .filter(|(s, _)| *s == LlmStatus::Pending)
        .count();
    let full: Vec<_> = statuses
        .iter()
        .filter(|(s, _)| *s == LlmStatus::Unavailable)
        .collect();
    assert!((1..=2).contains(&pending), "{statuses:?}");
    assert_eq!(pending + full.len(), 10, "{statuses:?}");
    for (_, explanation) in full {
        assert_eq!(explanation, "LLM: unavailable (queue full)");
    }
    assert_eq!(statuses[0].0, LlmStatus::Pending);
}
