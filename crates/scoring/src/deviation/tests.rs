use super::*;
use crate::candidate::fixtures::candidate;
use kestrel_events::Protocol;

const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn engine() -> DeviationEngine {
    DeviationEngine::new(DeviationConfig::default()).unwrap()
}

fn file(exe: &str, path: &str, access: FileAccess) -> CandidateAlert {
    let mut c = candidate(exe, &[basename(exe)]);
    c.signals = vec![Signal::UnknownFile {
        path: path.into(),
        access,
        raw_path: None,
    }];
    c
}

fn peer(exe: &str, addr: PeerAddress, port: u16, direction: Direction) -> CandidateAlert {
    let mut c = candidate(exe, &[basename(exe)]);
    c.signals = vec![Signal::UnknownPeer {
        addr,
        port,
        proto: Protocol::Tcp,
        direction,
    }];
    c
}

fn ip(s: &str) -> PeerAddress {
    PeerAddress::Ip(s.parse().unwrap())
}

#[test]
fn a_new_read_of_a_credential_reaches_the_threshold_and_says_why() {
    let d = engine().observe(&file("/usr/bin/java", "/etc/shadow", FileAccess::Read), T0);
    assert_eq!(d.score, 57.5);
    assert_eq!(d.reason, "new file read (15) in credentials (50) → 57.5");
    for path in [
        "/root/.ssh/id_rsa",
        "/home/app/.aws/credentials",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "/proc/1/environ",
    ] {
        let d = engine().observe(&file("/usr/bin/java", path, FileAccess::Read), T0);
        assert!(d.score >= 50.0, "{path}: {d:?}");
        assert!(d.reason.contains("credentials"), "{path}: {d:?}");
    }
}

#[test]
fn a_new_harmless_file_in_the_workloads_own_directory_stays_below_it() {
    let mut e = engine();
    let w = e.observe(
        &file("/usr/bin/java", "/app/data/cache-2.db", FileAccess::Create),
        T0,
    );
    assert_eq!(
        (w.score, w.reason.as_str()),
        (30.0, "new file write (30) → 30")
    );
    let r = e.observe(
        &file("/usr/bin/java", "/app/data/cache-2.db", FileAccess::Read),
        T0,
    );
    assert_eq!(r.score, 15.0);
}

#[test]
fn persistence_counts_writes_not_reads() {
    let mut e = engine();
    for path in [
        "/etc/cron.d/backdoor",
        "/var/spool/cron/crontabs/root",
        "/root/.ssh/authorized_keys",
        "/etc/systemd/system/evil.service",
        "/home/app/.bashrc",
        "/etc/ld.so.preload",
    ] {
        let d = e.observe(&file("/usr/bin/java", path, FileAccess::Write), T0);
        assert!(d.score >= 50.0, "{path}: {d:?}");
        assert!(d.reason.contains("persistence"), "{path}: {d:?}");
    }
    let d = engine().observe(
        &file("/usr/bin/java", "/etc/cron.d/logrotate", FileAccess::Read),
        T0,
    );
    assert_eq!(d.score, 15.0, "{d:?}");
}

#[test]
fn removing_logs_or_shell_history_reaches_it_writing_a_log_does_not() {
    let mut e = engine();
    for (path, access) in [
        ("/var/log/access.log", FileAccess::Delete),
        ("/var/log/nginx/error.log", FileAccess::Rename),
        ("/root/.ash_history", FileAccess::Delete),
        ("/home/app/.python_history", FileAccess::Delete),
        ("/run/utmp", FileAccess::Delete),
    ] {
        let d = e.observe(&file("/bin/busybox", path, access), T0);
        assert!(d.score >= 50.0, "{path}: {d:?}");
        assert!(
            d.reason.contains("in logs and shell history (45)"),
            "{path}: {d:?}"
        );
    }
    // appending to or creating a log is what applications do
    for access in [FileAccess::Write, FileAccess::Create, FileAccess::Read] {
        let d = engine().observe(&file("/usr/bin/java", "/var/log/app.log", access), T0);
        assert!(d.score < 50.0, "{access:?}: {d:?}");
        assert!(!d.reason.contains("logs"), "{access:?}: {d:?}");
    }
}

#[test]
fn writes_below_binary_directories_and_kernel_interfaces_reach_it() {
    for (path, access, class) in [
        ("/usr/bin/ls", FileAccess::Write, "binaries and libraries"),
        (
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            FileAccess::Rename,
            "binaries and libraries",
        ),
        (
            "/proc/sys/kernel/core_pattern",
            FileAccess::Write,
            "kernel and proc interfaces (write)",
        ),
        (
            "/sys/fs/cgroup/rdma/release_agent",
            FileAccess::Write,
            "kernel and proc interfaces",
        ),
        (
            "/proc/kcore",
            FileAccess::Read,
            "kernel and proc interfaces",
        ),
        (
            "/var/run/docker.sock",
            FileAccess::Write,
            "container runtime sockets",
        ),
    ] {
        let d = engine().observe(&file("/usr/bin/java", path, access), T0);
        assert!(d.score >= 50.0, "{path}: {d:?}");
        assert!(d.reason.contains(&format!("in {class} (")), "{path}: {d:?}");
    }
    // reading a library is what every program does
    let d = engine().observe(
        &file("/usr/bin/java", "/usr/lib/libz.so", FileAccess::Read),
        T0,
    );
    assert_eq!(d.score, 15.0);
}

#[test]
fn who_matters_a_shell_or_a_network_tool_or_a_program_in_tmp() {
    for exe in [
        "/bin/sh",
        "/usr/bin/python3.11",
        "/usr/bin/curl",
        "/tmp/.x/kworker",
    ] {
        let d = engine().observe(&candidate(exe, &[basename(exe)]), T0);
        assert!(d.score >= 50.0, "{exe}: {d:?}");
    }
    let d = engine().observe(&candidate("/bin/sh", &["sh"]), T0);
    assert_eq!(d.reason, "new process (35) by a shell (25) → 51.3");
    // a new ordinary program is worth a look, not an alert
    let d = engine().observe(&candidate("/usr/bin/date", &["date"]), T0);
    assert_eq!(
        (d.score, d.reason.as_str()),
        (35.0, "new process (35) → 35")
    );
}

#[test]
fn peers_by_who_and_where() {
    let mut e = engine();
    // a shell or an interpreter on the network is a reverse shell's shape
    for exe in ["/bin/bash", "/usr/bin/python3", "/usr/bin/perl"] {
        let d = e.observe(&peer(exe, ip("203.0.113.9"), 4444, Direction::Outbound), T0);
        assert!(d.score >= 50.0, "{exe}: {d:?}");
    }
    // the server itself talking to a new address: worth a look
    let d = e.observe(
        &peer("/usr/bin/java", ip("203.0.113.9"), 443, Direction::Outbound),
        T0,
    );
    assert_eq!(d.score, 30.0);
    // cloud metadata, by address or name; the runtime socket
    for a in [
        ip("169.254.169.254"),
        ip("fd00:ec2::254"),
        PeerAddress::Name("metadata.google.internal".into()),
        PeerAddress::Name("unix:/run/containerd/containerd.sock".into()),
    ] {
        let d = engine().observe(
            &peer("/usr/bin/java", a.clone(), 80, Direction::Outbound),
            T0,
        );
        assert!(d.score >= 50.0, "{a}: {d:?}");
    }
}

#[test]
fn a_sweep_by_one_process_reaches_the_threshold_and_expires() {
    let mut e = engine();
    let read = |i: usize| file("/bin/tar", &format!("/app/docs/{i}.txt"), FileAccess::Read);
    let scores: Vec<f64> = (0..30)
        .map(|i| e.observe(&read(i), T0 + i as u64 * SEC).score)
        .collect();
    assert_eq!(scores[0], 15.0);
    assert!(scores[8] < 50.0, "{scores:?}");
    assert!(scores[9] >= 36.0 && scores[9] < 50.0, "{scores:?}"); // 10 files: step 1
    assert!(scores[29] >= 50.0, "{scores:?}"); // 30 files: step 2
    let d = e.observe(&read(30), T0 + 30 * SEC);
    assert!(
        d.reason
            .contains("31 new files by this process in 60s (50)"),
        "{d:?}"
    );
    // another process of the same container counts on its own
    let mut other = read(31);
    other.pid = 7;
    assert_eq!(e.observe(&other, T0 + 31 * SEC).score, 15.0);
    // and a new window starts afresh
    assert_eq!(e.observe(&read(40), T0 + 200 * SEC).score, 15.0);
}

#[test]
fn a_port_scan_is_a_sweep_of_peers() {
    let mut e = engine();
    let mut last = 0.0;
    for port in 1..=30u16 {
        last = e
            .observe(
                &peer("/usr/bin/java", ip("10.0.0.5"), port, Direction::Outbound),
                T0,
            )
            .score;
    }
    assert!(last >= 50.0, "{last}");
}

#[test]
fn the_tracked_processes_are_bounded() {
    let mut cfg = DeviationConfig::default();
    cfg.sweep.max_tracked = 100;
    let mut e = DeviationEngine::new(cfg).unwrap();
    for pid in 0..1000 {
        let mut c = file("/usr/bin/java", "/app/x", FileAccess::Read);
        c.pid = pid;
        e.observe(&c, T0 + u64::from(pid));
    }
    assert!(e.sweeps.len() <= 100, "{}", e.sweeps.len());
}

#[test]
fn bad_settings_are_config_errors() {
    let mut c = DeviationConfig::default();
    c.locations[0].networks.push("10.0.0.0/33".into());
    let e = DeviationEngine::new(c).unwrap_err().to_string();
    assert!(
        e.contains("\"10.0.0.0/33\" is not an address or a network"),
        "{e}"
    );
    let mut c = DeviationConfig::default();
    c.what.file_read = 101.0;
    assert!(DeviationEngine::new(c)
        .unwrap_err()
        .to_string()
        .contains("what.fileRead"));
    let mut c = DeviationConfig::default();
    c.sweep.steps = vec![(10, 20.0), (5, 30.0)];
    assert!(DeviationEngine::new(c)
        .unwrap_err()
        .to_string()
        .contains("ascending"));
    // a bad glob in YAML names the glob
    let e = crate::ScoringConfig::from_yaml(
        "deviation:\n  locations:\n    - {name: app secrets, score: 60, paths: [\"/app/[secrets\"]}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid glob \"/app/[secrets\""), "{e}");
}

#[test]
fn a_site_can_add_its_own_location_class() {
    let cfg = crate::ScoringConfig::from_yaml(
        "deviation:\n  locations:\n    - {name: app secrets, score: 60, paths: [\"/app/secrets/**\"]}\n",
    )
    .unwrap();
    let mut e = DeviationEngine::new(cfg.deviation).unwrap();
    let d = e.observe(
        &file("/usr/bin/java", "/app/secrets/db.key", FileAccess::Read),
        T0,
    );
    assert_eq!(d.reason, "new file read (15) in app secrets (60) → 66");
    // replacing the list drops the defaults
    let d = e.observe(&file("/usr/bin/java", "/etc/shadow", FileAccess::Read), T0);
    assert_eq!(d.score, 15.0);
}
