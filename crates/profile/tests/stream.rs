//! Acceptance 3: a 24-hour synthetic stream converges into a small profile.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kestrel_embed::normalize;
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{
    Access, Direction, Event, FileEvent, NetworkEvent, Peer, Phase, ProcessEvent, Profile,
    ProfileConfig, Protocol,
};

/// Deterministic xorshift generator (no dependency, same stream every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            a & 0xffff,
            (a >> 16) & 0xfff,
            b & 0xfff,
            b >> 16
        )
    }
}

enum Owned {
    Proc(&'static str, &'static str, String),
    File(&'static str, Access, String),
    Net(&'static str, Direction, IpAddr, Protocol, u16),
}

const IMAGE: &[u8] = b"registry.example/shop-api:1.4.2";

impl Owned {
    fn event(&self) -> Event<'_> {
        match self {
            Owned::Proc(parent, exe, args) => Event::Process(ProcessEvent {
                image: IMAGE,
                parent: parent.as_bytes(),
                exe: exe.as_bytes(),
                args,
            }),
            Owned::File(process, access, path) => Event::File(FileEvent {
                image: IMAGE,
                process: process.as_bytes(),
                access: *access,
                path: path.as_bytes(),
            }),
            Owned::Net(process, direction, ip, protocol, port) => Event::Network(NetworkEvent {
                image: IMAGE,
                process: process.as_bytes(),
                direction: *direction,
                peer: Peer::Ip(*ip),
                protocol: *protocol,
                port: *port,
            }),
        }
    }
}

/// What the workload does in one second.
fn second(r: &mut Rng, t: u64) -> Vec<Owned> {
    let mut out = Vec::new();
    let ts = 1_700_000_000 + t;
    // Requests: a java worker touches temp files, data files, the DB and clients.
    for _ in 0..3 {
        let pid = 1000 + r.below(30_000);
        out.push(Owned::File(
            "java",
            Access::Read,
            format!("/proc/{pid}/status"),
        ));
        out.push(Owned::File(
            "java",
            Access::Read,
            format!("/proc/self/task/{pid}/stat"),
        ));
        let tmp = format!("/tmp/upload-{:x}.part", r.next());
        out.push(Owned::File("java", Access::Create, tmp.clone()));
        out.push(Owned::File("java", Access::Write, tmp.clone()));
        out.push(Owned::File("java", Access::Delete, tmp));
        out.push(Owned::File(
            "java",
            Access::Write,
            format!("/app/data/orders/{}.json", r.uuid()),
        ));
        out.push(Owned::File(
            "java",
            Access::Read,
            "/app/config/application.yaml".into(),
        ));
        let client = IpAddr::V4(Ipv4Addr::new(
            10,
            244,
            r.below(40) as u8,
            r.below(250) as u8 + 1,
        ));
        out.push(Owned::Net(
            "java",
            Direction::Inbound,
            client,
            Protocol::Tcp,
            8080,
        ));
        let db = IpAddr::V4(Ipv4Addr::new(10, 0, 3, 10 + r.below(3) as u8));
        out.push(Owned::Net(
            "java",
            Direction::Outbound,
            db,
            Protocol::Tcp,
            5432,
        ));
        out.push(Owned::Net(
            "java",
            Direction::Outbound,
            IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
            Protocol::Udp,
            53,
        ));
    }
    // A payment API behind changing addresses.
    if t.is_multiple_of(7) {
        let ip = IpAddr::V4(Ipv4Addr::new(
            52,
            r.below(256) as u8,
            r.below(256) as u8,
            r.below(256) as u8,
        ));
        out.push(Owned::Net(
            "java",
            Direction::Outbound,
            ip,
            Protocol::Tcp,
            443,
        ));
    }
    // A metrics sidecar protocol on ephemeral ports.
    if t.is_multiple_of(11) {
        let port = 32768 + r.below(28_000) as u16;
        out.push(Owned::Net(
            "java",
            Direction::Outbound,
            IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9)),
            Protocol::Udp,
            port,
        ));
    }
    // Health check every 10 s, with a timestamp and a request id.
    if t.is_multiple_of(10) {
        out.push(Owned::Proc(
            "sh",
            "/usr/bin/curl",
            normalize(&format!(
                "curl -sf http://127.0.0.1:8080/health?ts={ts}&rid={}",
                r.uuid()
            )),
        ));
    }
    // A cron job every minute; logs rotate daily.
    if t.is_multiple_of(60) {
        out.push(Owned::Proc(
            "crond",
            "/bin/sh",
            normalize(&format!(
                "sh -c /app/bin/cleanup.sh --before={ts} --tmp=/tmp/tmp.{:x}",
                r.next()
            )),
        ));
        out.push(Owned::Proc(
            "sh",
            "/app/bin/cleanup.sh",
            normalize(&format!("/app/bin/cleanup.sh --before={ts}")),
        ));
        let day = 1 + t / 86_400;
        out.push(Owned::File(
            "java",
            Access::Write,
            format!("/var/log/shop/app-2025-01-{day:02}.log"),
        ));
    }
    // Worker restarts: java with a fresh instance id.
    if t.is_multiple_of(900) {
        out.push(Owned::Proc(
            "tini",
            "/usr/lib/jvm/bin/java",
            normalize(&format!(
                "java -Xmx512m -jar /app/shop.jar --instance={} --started={ts}",
                r.uuid()
            )),
        ));
        out.push(Owned::File(
            "java",
            Access::Read,
            format!("/proc/{}/cmdline", 1 + r.below(5000)),
        ));
    }
    out
}

#[test]
fn a_day_of_synthetic_activity_converges_into_a_profile_under_256_kib() {
    let emb = TestEmbedder::new();
    let config = ProfileConfig::default();
    let mut p = Profile::new(config, TEST_MODEL_ID, Duration::ZERO).unwrap();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut converged_at = None;
    let mut anomalies = Vec::new();
    let step = if cfg!(debug_assertions) { 5 } else { 1 };
    let mut t = 0;
    while t < 86_400 {
        let now = Duration::from_secs(t);
        for o in second(&mut r, t) {
            let obs = p.observe(&o.event(), now, &emb).unwrap();
            for tr in &obs.transitions {
                if tr.to == Phase::Detecting {
                    converged_at = Some(t);
                }
            }
            if p.phase() == Phase::Detecting && !obs.outcome.is_known() {
                anomalies.push(format!("{:?} at {t}", obs.outcome));
            }
        }
        t += step;
    }
    let converged_at = converged_at.expect("the profile converged within 24 h");
    assert!(
        converged_at < 12 * 3600,
        "converged only at {converged_at} s"
    );
    assert!(
        anomalies.len() <= 3,
        "false positives after convergence: {anomalies:#?}"
    );
    let yaml = p.to_yaml(Default::default()).unwrap();
    println!(
        "converged after {converged_at} s; YAML {} bytes; {:?}",
        yaml.len(),
        p.stats()
    );
    if std::env::var_os("KESTREL_PRINT_PROFILE").is_some() {
        println!("{yaml}");
    }
    assert!(yaml.len() < 256 * 1024, "{} bytes", yaml.len());
    // It still loads and answers the same for a fresh slice of the stream.
    let back = Profile::from_yaml(&yaml, &emb, Duration::ZERO).unwrap();
    for o in second(&mut r, 90_000) {
        assert_eq!(
            p.match_event(&o.event(), &emb).unwrap(),
            back.match_event(&o.event(), &emb).unwrap()
        );
    }
}
