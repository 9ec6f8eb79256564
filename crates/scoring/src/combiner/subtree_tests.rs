//! One incident per process subtree: the anomalies of one attack fold
//! into one alert whose breadth raises its score.

use super::*;
use crate::candidate::fixtures::candidate;
use crate::candidate::{Arguments, Direction, PeerAddress, ProcessAncestor, Protocol};

const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const MINER: &str = "xmrig -o stratum+tcp://pool.minexmr.com:4444 -u 44AFFq5k -p x";

fn scorer() -> Scorer {
    Scorer::new(ScoringConfig::default(), RuleSet::default_pack().unwrap()).unwrap()
}

/// What `runc exec <ctr> sh -c '<line>'` produces: a shell whose parent is
/// outside the container.
fn shell(container: &str, pid: u32, line: &str) -> CandidateAlert {
    let mut c = candidate("/bin/sh", &["sh", "-c", line]);
    c.container_id = container.into();
    c.pod = container.into();
    c.pid = pid;
    c.chain = vec![ProcessAncestor::new("/usr/sbin/runc", ["runc", "init"]).with_pid(pid - 1)];
    c
}

/// A process `exe argv` started by `parent`.
fn child(parent: &CandidateAlert, pid: u32, exe: &str, argv: &[&str]) -> CandidateAlert {
    let mut c = candidate(exe, argv);
    c.container_id.clone_from(&parent.container_id);
    c.pod.clone_from(&parent.pod);
    c.pid = pid;
    c.chain = std::iter::once(
        ProcessAncestor::new(parent.exe.clone(), parent.args.raw().to_vec()).with_pid(parent.pid),
    )
    .chain(parent.chain.iter().cloned())
    .collect();
    c
}

fn connect(c: &CandidateAlert, port: u16) -> CandidateAlert {
    let mut n = c.clone();
    n.signals = vec![Signal::UnknownPeer {
        addr: PeerAddress::Ip("203.0.113.9".parse().unwrap()),
        port,
        proto: Protocol::Tcp,
        direction: Direction::Outbound,
    }];
    n
}

fn ids(outcomes: &[Outcome]) -> BTreeSet<String> {
    outcomes
        .iter()
        .filter_map(|o| o.alert().map(|a| a.id.clone()))
        .collect()
}

fn created(outcomes: &[Outcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Created(_)))
        .count()
}

fn run(s: &mut Scorer, cs: &[CandidateAlert]) -> Vec<Outcome> {
    cs.iter()
        .enumerate()
        .map(|(i, c)| s.assess(c, LlmOutcome::not_configured(), T0 + i as u64 * SEC))
        .collect()
}

#[test]
fn a_shell_its_miner_and_the_miners_connection_are_one_alert_with_the_miner_as_evidence() {
    let sh = shell("ctr-a", 500, &format!("{MINER} >/dev/null 2>&1; true"));
    let argv: Vec<&str> = MINER.split(' ').collect();
    let miner = child(&sh, 501, "/bin/xmrig", &argv);
    let pool = connect(&miner, 4444);
    let mut s = scorer();
    let out = run(&mut s, &[sh, miner, pool]);

    assert_eq!(ids(&out).len(), 1, "{out:#?}");
    assert_eq!(created(&out), 1);
    let a = out[2].alert().unwrap();
    // the strongest occurrence is the evidence: the miner, by name
    assert_eq!(a.evidence.exe, "/bin/xmrig");
    assert_eq!(a.evidence.pid, 501);
    assert!(
        a.rule_hits.iter().any(|h| h.id == "miner-tool"),
        "{:?}",
        a.rule_hits
    );
    let inc = &a.incident;
    assert_eq!(inc.count, 3);
    assert_eq!(inc.activities, 3);
    assert_eq!(inc.processes, 2);
    assert_eq!(
        inc.commands,
        [
            format!("/bin/sh -c {MINER} >/dev/null 2>&1; true"),
            format!("/bin/{MINER}")
        ]
    );
    assert_eq!(inc.peers, ["outbound 203.0.113.9:4444/tcp"]);
    // breadth: two (program, activity) pairs after the first, 4 points
    // each, within 100
    let b = &a.breakdown;
    let base = b.total - b.breadth;
    assert!(
        (b.breadth - 8.0_f64.min(100.0 - base)).abs() < 0.01,
        "{b:?}"
    );
    assert!(b.breadth > 0.0, "{b:?}");
    assert!(
        b.notes
            .iter()
            .any(|n| n.starts_with("3 kinds of activity by its programs: +")),
        "{b:?}"
    );
    assert_eq!(s.stats().alerts_created, 1);
}

#[test]
fn two_attack_commands_are_two_alerts_and_a_repeat_in_another_pod_joins_its_own() {
    let sh1 = shell("ctr-a", 500, &format!("{MINER} >/dev/null 2>&1; true"));
    let argv: Vec<&str> = MINER.split(' ').collect();
    let m1 = child(&sh1, 501, "/bin/xmrig", &argv);
    let renamed = "java -o stratum+tcp://pool.xx:4444 -u wallet --donate-level 1";
    let sh2 = shell("ctr-a", 600, &format!("{renamed} >/dev/null 2>&1; true"));
    let rargv: Vec<&str> = renamed.split(' ').collect();
    let m2 = child(&sh2, 601, "/bin/java", &rargv);
    // the first attack again, in another replica
    let sh3 = shell("ctr-b", 700, &format!("{MINER} >/dev/null 2>&1; true"));
    let m3 = child(&sh3, 701, "/bin/xmrig", &argv);
    let mut s = scorer();
    let out = run(&mut s, &[sh1, m1, sh2, m2, sh3, m3]);

    assert_eq!(created(&out), 2, "{out:#?}");
    let first = out[1].alert().unwrap();
    let second = out[3].alert().unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(second.evidence.exe, "/bin/java");
    assert!(second
        .evidence
        .args
        .iter()
        .any(|a| a == "stratum+tcp://pool.xx:4444"));
    let again = out[5].alert().unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.incident.pods, ["ctr-a", "ctr-b"]);
}

#[test]
fn an_unrelated_process_in_the_same_container_is_another_incident() {
    let sh = shell("ctr-a", 500, &format!("{MINER}; true"));
    let argv: Vec<&str> = MINER.split(' ').collect();
    let miner = child(&sh, 501, "/bin/xmrig", &argv);
    // the server process, not in the shell's subtree, reads a new file
    let mut other = candidate("/usr/bin/java", &["java", "-jar", "app.jar"]);
    other.container_id = "ctr-a".into();
    other.pid = 42;
    other.chain = vec![];
    other.signals = vec![Signal::UnknownFile {
        path: "/etc/shadow".into(),
        access: kestrel_events::FileAccess::Read,
        raw_path: None,
    }];
    let mut s = scorer();
    let out = run(&mut s, &[sh, miner, other]);
    assert_eq!(ids(&out).len(), 2, "{out:#?}");
    assert_eq!(out[2].alert().unwrap().incident.activities, 1);
}

#[test]
fn a_descendant_after_the_subtree_window_opens_a_new_incident() {
    let sh = shell("ctr-a", 500, &format!("{MINER}; true"));
    let argv: Vec<&str> = MINER.split(' ').collect();
    let miner = child(&sh, 501, "/bin/xmrig", &argv);
    let mut s = scorer();
    let window = s.config().incidents.subtree_window_secs * SEC;
    let a = s.assess(&sh, LlmOutcome::not_configured(), T0);
    let b = s.assess(&miner, LlmOutcome::not_configured(), T0 + window + SEC);
    assert_ne!(a.alert().unwrap().id, b.alert().unwrap().id);
}

#[test]
fn folding_is_off_with_a_zero_window() {
    let mut cfg = ScoringConfig::default();
    cfg.incidents.subtree_window_secs = 0;
    let mut s = Scorer::new(cfg, RuleSet::default_pack().unwrap()).unwrap();
    let sh = shell("ctr-a", 500, &format!("{MINER}; true"));
    let argv: Vec<&str> = MINER.split(' ').collect();
    let miner = child(&sh, 501, "/bin/xmrig", &argv);
    let out = run(&mut s, &[sh, miner]);
    assert_eq!(ids(&out).len(), 2);
}

#[test]
fn many_files_of_one_program_are_a_sweep_not_breadth() {
    // one process writes many new files in its own data directory: the
    // deviation engine's sweep, no breadth
    let mut s = scorer();
    let mut out = Vec::new();
    for i in 0..10 {
        let mut c = candidate("/usr/bin/java", &["java", "-jar", "app.jar"]);
        c.signals = vec![Signal::UnknownFile {
            path: format!("/app/data/cache-{i}.db"),
            access: kestrel_events::FileAccess::Write,
            raw_path: None,
        }];
        out.push(s.assess(&c, LlmOutcome::not_configured(), T0 + i * SEC));
    }
    let Outcome::BelowThreshold { breakdown, .. } = &out[9] else {
        panic!("{:?}", out[9])
    };
    assert_eq!(breakdown.breadth, 0.0);
    assert_eq!(breakdown.total, 47.5, "{breakdown:?}");
    assert_eq!(s.stats().open_incidents, 1);
}

#[test]
fn breadth_alone_never_makes_harmless_new_programs_an_alert() {
    // a new rotation tool (not a shell: a new program under a shell alerts
    // on its own) starts four new, harmless programs that each write a
    // file in the data directory
    let mut sh = shell("ctr-a", 500, "");
    sh.exe = "/usr/local/bin/rotate".into();
    sh.args = Arguments::new(["rotate", "--daily"], "");
    let mut cs = vec![sh.clone()];
    for (i, p) in ["date", "gzip", "mv", "touch"].iter().enumerate() {
        let pid = 501 + i as u32;
        let c = child(&sh, pid, &format!("/usr/local/bin/{p}"), &[p]);
        let mut w = c.clone();
        w.signals = vec![Signal::UnknownFile {
            path: format!("/app/data/{p}.out"),
            access: kestrel_events::FileAccess::Write,
            raw_path: None,
        }];
        cs.push(c);
        cs.push(w);
    }
    let mut s = scorer();
    let out = run(&mut s, &cs);
    assert!(out.iter().all(|o| o.alert().is_none()), "{:#?}", out.last());
    let Some(Outcome::BelowThreshold { breakdown, .. }) = out.last() else {
        unreachable!()
    };
    assert_eq!(breakdown.breadth, 12.0);
}

#[test]
fn a_weaker_later_occurrence_keeps_the_strongest_as_evidence() {
    let sh = shell("ctr-a", 500, &format!("{MINER}; cat /app/data/x"));
    let argv: Vec<&str> = MINER.split(' ').collect();
    let miner = child(&sh, 501, "/bin/xmrig", &argv);
    let cat = child(&sh, 502, "/bin/cat", &["cat", "/app/data/x"]);
    let mut s = scorer();
    let out = run(&mut s, &[sh, miner, cat]);
    let a = out[2].alert().unwrap();
    assert_eq!(a.evidence.pid, 501);
    assert_eq!(a.incident.processes, 3);
    let peak = out[1].alert().unwrap().breakdown.total;
    // the weaker cat adds breadth only
    assert!(a.breakdown.total >= peak, "{} < {peak}", a.breakdown.total);
}

#[test]
fn breadth_settings_are_checked() {
    let mut cfg = ScoringConfig::default();
    cfg.incidents.breadth_cap = 101.0;
    assert!(cfg.validate().is_err());
    cfg.incidents.breadth_cap = 12.0;
    cfg.incidents.breadth_points = -1.0;
    assert!(cfg.validate().is_err());
}

#[test]
fn a_failed_exec_alone_from_a_noexec_mount_alerts_with_no_llm() {
    let sh = shell("ctr-a", 500, "/dev/shm/kworker -o pool:4444");
    let mut c = child(
        &sh,
        500,
        "/dev/shm/kworker",
        &["/dev/shm/kworker", "-o", "pool:4444"],
    );
    // the caller is the shell itself: the attempt keeps its pid
    c.chain = std::iter::once(
        ProcessAncestor::new("/bin/sh", ["sh", "-c", "/dev/shm/kworker -o pool:4444"])
            .with_pid(500),
    )
    .chain(sh.chain.iter().cloned())
    .collect();
    c.workload_replicas = None;
    c.signals = vec![Signal::FailedExec {
        path: "/dev/shm/kworker".into(),
        error: "EACCES".into(),
        raw_path: None,
    }];
    let mut s = scorer();
    let o = s.assess(&c, LlmOutcome::not_configured(), T0);
    let a = o.alert().unwrap_or_else(|| panic!("{o:?}"));
    assert!(
        a.breakdown.deviation.reason.starts_with("failed exec (40)"),
        "{}",
        a.breakdown.deviation.reason
    );
    assert!(a.score >= 50.0, "{:?}", a.breakdown);
    assert_eq!(a.incident.files, ["/dev/shm/kworker (exec failed: EACCES)"]);
    assert_eq!(a.evidence.signals[0].kind(), "failed_exec");
}
