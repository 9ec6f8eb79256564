//! Compaction: wildcards, sensitive prefixes, networks, bounds on bad input.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use kestrel_embed::normalize;
use kestrel_profile::testing::TestEmbedder;
use kestrel_profile::{Access, Change, MatchOutcome, ProfileConfig};

fn known(p: &kestrel_profile::Profile, e: &kestrel_profile::Event<'_>) -> bool {
    p.match_event(e, &TestEmbedder::new()).unwrap().is_known()
}

#[test]
fn proc_pid_paths_collapse_into_a_wildcard_that_still_matches_them_all() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let paths: Vec<String> = (1000..1100)
        .map(|pid| format!("/proc/{pid}/status"))
        .collect();
    for path in &paths {
        p.learn(&file("app", Access::Read, path.as_bytes()), &emb)
            .unwrap();
    }
    for path in &paths {
        assert!(
            known(&p, &file("app", Access::Read, path.as_bytes())),
            "{path}"
        );
    }
    assert!(known(
        &p,
        &file("app", Access::Read, b"/proc/424242/status")
    ));
    assert!(!known(
        &p,
        &file("app", Access::Read, b"/proc/1000/environ")
    ));
    let yaml = p.to_yaml(Default::default()).unwrap();
    assert!(yaml.contains("/proc/*/status"), "{yaml}");
    assert!(p.stats().nodes < 30, "{:?}", p.stats());
}

#[test]
fn a_collapsed_etc_never_lets_the_wildcard_match_shadow_or_sudoers() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    for i in 0..80 {
        let path = format!("/etc/conf{i}");
        p.learn(&file("app", Access::Read, path.as_bytes()), &emb)
            .unwrap();
    }
    assert!(
        known(&p, &file("app", Access::Read, b"/etc/other.conf")),
        "collapsed"
    );
    assert!(!known(&p, &file("app", Access::Read, b"/etc/shadow")));
    assert!(!known(&p, &file("app", Access::Read, b"/etc/sudoers")));
    assert!(!known(&p, &file("app", Access::Read, b"/etc/sudoers.d/x")));
    // Learning it keeps it explicit, next to the wildcard.
    p.learn(&file("app", Access::Read, b"/etc/shadow"), &emb)
        .unwrap();
    assert!(known(&p, &file("app", Access::Read, b"/etc/shadow")));
    assert!(!known(&p, &file("app", Access::Read, b"/etc/gshadow")));
}

#[test]
fn binaries_below_usr_bin_never_collapse() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    for i in 0..120 {
        let path = format!("/usr/bin/tool{i}");
        p.learn(&file("app", Access::Read, path.as_bytes()), &emb)
            .unwrap();
    }
    assert!(known(&p, &file("app", Access::Read, b"/usr/bin/tool7")));
    assert!(!known(&p, &file("app", Access::Read, b"/usr/bin/xmrig")));
    let yaml = p.to_yaml(Default::default()).unwrap();
    assert!(!yaml.contains("/usr/bin/*"));
}

#[test]
fn executables_in_sensitive_directories_stay_explicit_in_the_process_trie() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let args = normalize("run");
    for i in 0..80 {
        let exe = format!("/opt/app/worker{i}");
        p.learn(&proc("app:v1", "sh", exe.as_bytes(), &args), &emb)
            .unwrap();
    }
    p.learn(&proc("app:v1", "sh", b"/usr/bin/env", &args), &emb)
        .unwrap();
    assert!(
        known(&p, &proc("app:v1", "sh", b"/opt/app/worker999", &args)),
        "collapsed"
    );
    assert!(known(&p, &proc("app:v1", "sh", b"/usr/bin/env", &args)));
    assert!(!known(&p, &proc("app:v1", "sh", b"/usr/bin/curl", &args)));
    assert!(!known(&p, &proc("app:v1", "sh", b"/bin/sh", &args)));
}

#[test]
fn many_peer_addresses_collapse_into_networks_that_keep_matching() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let ips: Vec<IpAddr> = (0..200u32)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 1, (i / 50) as u8, (i % 250) as u8)))
        .collect();
    for ip in &ips {
        p.learn(&net(*ip, 5432), &emb).unwrap();
    }
    for ip in &ips {
        assert!(known(&p, &net(*ip, 5432)), "{ip}");
    }
    assert!(known(&p, &net("10.1.0.77".parse().unwrap(), 5432)));
    assert!(!known(&p, &net("192.168.1.1".parse().unwrap(), 5432)));
    assert!(!known(&p, &net("10.1.0.77".parse().unwrap(), 22)));
    let yaml = p.to_yaml(Default::default()).unwrap();
    assert!(yaml.contains("10.1.0.0/24"), "{yaml}");
}

#[test]
fn ephemeral_ports_collapse_into_a_port_wildcard() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    for port in 40000..40100u16 {
        p.learn(&net("10.0.0.1".parse().unwrap(), port), &emb)
            .unwrap();
    }
    assert!(known(&p, &net("10.0.0.1".parse().unwrap(), 55555)));
    let body = p.to_body();
    assert_eq!(body.network[0].ports, vec!["*/tcp".to_string()]);
}

#[test]
fn peer_names_collapse_but_addresses_stay_in_networks() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    for i in 0..60 {
        let n = format!("svc{i}.ns.svc.cluster.local");
        p.learn(&net_named(n.as_bytes(), 80), &emb).unwrap();
    }
    assert!(known(&p, &net_named(b"other.ns.svc.cluster.local", 80)));
}

#[test]
fn enormous_empty_and_non_utf8_paths_are_learned_without_panic() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let huge_segment = vec![b'a'; 4096];
    let mut deep = Vec::new();
    for _ in 0..2048 {
        deep.extend_from_slice(b"/x");
    }
    let weird = b"/data/\xff\xfe\x00name\\x".to_vec();
    let cases: Vec<Vec<u8>> = vec![
        huge_segment.clone(),
        deep.clone(),
        Vec::new(),
        weird.clone(),
        b"/".to_vec(),
    ];
    for c in &cases {
        let l = p.learn(&file("app", Access::Write, c), &emb).unwrap();
        assert_eq!(l.change, Change::Branch);
        assert!(known(&p, &file("app", Access::Write, c)));
    }
    // A long segment differing only past the kept prefix is a different file.
    let mut other = huge_segment.clone();
    other[4000] = b'b';
    assert!(!known(&p, &file("app", Access::Write, &other)));
    let body = p.to_body();
    assert!(
        body.files[0]
            .paths
            .contains(&"/data/\\xff\\xfe\0name\\\\x".to_string()),
        "{:?}",
        body.files[0].paths
    );
    let yaml = p.to_yaml(Default::default()).unwrap();
    let back = kestrel_profile::Profile::from_yaml(&yaml, &emb, Default::default()).unwrap();
    for c in &cases {
        assert!(known(&back, &file("app", Access::Write, c)));
    }
}

#[test]
fn a_hundred_thousand_children_under_one_node_stay_bounded() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    for i in 0..100_000 {
        let path = format!("/data/cache/{i:x}.bin");
        p.learn(&file("app", Access::Create, path.as_bytes()), &emb)
            .unwrap();
    }
    assert!(p.stats().nodes < 100, "{:?}", p.stats());
    assert!(known(
        &p,
        &file("app", Access::Create, b"/data/cache/1234.bin")
    ));
}

#[test]
fn a_never_collapsing_node_refuses_beyond_its_hard_limit_and_stays_bounded() {
    let emb = TestEmbedder::new();
    let mut config = ProfileConfig::default();
    config.compaction.hard_child_limit = 1000;
    let mut p = profile_with(config);
    let mut refused = 0;
    for i in 0..100_000 {
        let path = format!("/usr/bin/t{i}");
        if p.learn(&file("app", Access::Create, path.as_bytes()), &emb)
            .unwrap()
            .change
            == Change::Refused
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 99_000);
    assert!(p.stats().nodes < 1100);
    assert!(known(&p, &file("app", Access::Create, b"/usr/bin/t5")));
    assert!(!known(&p, &file("app", Access::Create, b"/usr/bin/t99999")));
}

#[test]
fn the_node_budget_bounds_a_flood_of_distinct_deep_paths() {
    let emb = TestEmbedder::new();
    let mut config = ProfileConfig::default();
    config.compaction.node_budget = 2000;
    config.compaction.child_limit = 1000;
    config.compaction.hard_child_limit = 1000;
    let mut p = profile_with(config);
    let mut paths = Vec::new();
    for i in 0..20_000u32 {
        let path = format!("/srv/{}/{}/{}", i % 997, i % 991, i);
        p.learn(&file("app", Access::Read, path.as_bytes()), &emb)
            .unwrap();
        paths.push(path);
    }
    assert!(p.stats().nodes < 2000 * 3, "{:?}", p.stats());
    for path in &paths {
        assert!(
            known(&p, &file("app", Access::Read, path.as_bytes())),
            "{path}"
        );
    }
}

#[test]
fn a_million_distinct_argument_strings_keep_the_leaf_bounded() {
    let emb = TestEmbedder::with_dim(64);
    let mut p = kestrel_profile::Profile::new(
        ProfileConfig::default(),
        "kestrel-test-trigram-v1",
        Default::default(),
    )
    .unwrap();
    let n = if cfg!(debug_assertions) {
        20_000
    } else {
        1_000_000
    };
    let mut last_unknown = 0;
    for i in 0..n {
        // Distinct raw strings, many distinct shapes even after normalisation.
        let args = format!("--opt-{} {}", i % 5000, letters(i));
        let l = p
            .learn(&proc("app:v1", "sh", b"/opt/app/run", &args), &emb)
            .unwrap();
        if l.change != Change::None {
            last_unknown = i;
        }
    }
    let s = p.stats();
    assert!(s.exemplars <= 16, "{s:?}");
    assert!(s.nodes < 10, "{s:?}");
    let _ = last_unknown;
    // Every string learned is still known.
    for i in (0..n).step_by(997) {
        let args = format!("--opt-{} {}", i % 5000, letters(i));
        assert!(known_with(&p, &emb, &args), "{args}");
    }
}

fn known_with(p: &kestrel_profile::Profile, emb: &TestEmbedder, args: &str) -> bool {
    p.match_event(&proc("app:v1", "sh", b"/opt/app/run", args), emb)
        .unwrap()
        == MatchOutcome::Known
}

fn letters(mut i: usize) -> String {
    let mut s = String::new();
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

/// From the kernel's exec events: a parent that ran more programs than the
/// child limit collapses, and the wildcard still tells a new binary in a
/// binary directory or a writable one apart (executables are keyed by full
/// path, so the directory guards apply).
#[test]
fn more_programs_than_the_child_limit_under_one_parent_do_not_hide_a_new_binary() {
    use kestrel_events::{Argv, ByteStr, Event as KEvent, EventKind, Exec, Namespaces, Task};
    use kestrel_profile::{activity_of, profile_event};
    let exec = |filename: &str| KEvent {
        ts_ns: 0,
        cgroup_id: 1,
        task: Some(Task {
            pid: 10,
            tid: 10,
            ppid: 9,
            uid: 0,
            comm: "x".into(),
        }),
        ns: Namespaces::default(),
        container: None,
        kind: EventKind::Exec(Exec {
            filename: filename.into(),
            exe: "x".into(),
            parent_comm: "runner".into(),
            ns_pid: 3,
            argv: Argv {
                args: vec![ByteStr::from(filename), ByteStr::from("--run")],
                size: 0,
                truncated: false,
                read_failed: false,
            },
            from_proc_scan: false,
            dir: None,
        }),
    };
    let emb = TestEmbedder::new();
    let mut p = profile();
    let limit = p.config().compaction.child_limit;
    let learn = |f: &str, p: &mut kestrel_profile::Profile| {
        let a = activity_of(&exec(f)).unwrap();
        p.learn(&profile_event(&a, b"app:v1"), &emb).unwrap();
    };
    for i in 0..limit + 10 {
        learn(&format!("/opt/app/tools/step{i}"), &mut p);
    }
    learn("/usr/bin/env", &mut p);
    let is_known = |f: &str, p: &kestrel_profile::Profile| {
        let a = activity_of(&exec(f)).unwrap();
        known(p, &profile_event(&a, b"app:v1"))
    };
    assert!(is_known("/opt/app/tools/step9999", &p), "collapsed");
    assert!(is_known("/usr/bin/env", &p));
    for new in [
        "/usr/bin/curl",
        "/bin/sh",
        "/usr/local/bin/kubectl",
        "/tmp/kworker",
        "/dev/shm/.x/miner",
        "/var/tmp/../tmp/xmrig",
    ] {
        assert!(!is_known(new, &p), "{new} counted as known");
    }
}
