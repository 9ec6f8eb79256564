//! Property tests of the trie and profile invariants (acceptance item 1).

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{
    Access, CompactionConfig, Direction, Event, MatchOutcome, NetworkEvent, Peer, PrefixLimit,
    Profile, ProfileConfig, Protocol,
};
use proptest::prelude::*;

/// Owned event description, turned into a borrowed [`Event`] on use.
#[derive(Debug, Clone)]
enum Ev {
    Proc {
        image: String,
        parent: String,
        exe: String,
        args: String,
    },
    File {
        process: String,
        access: Access,
        path: Vec<u8>,
    },
    Net {
        peer: Result<IpAddr, String>,
        direction: Direction,
        port: u16,
        udp: bool,
    },
}

impl Ev {
    fn event(&self) -> Event<'_> {
        match self {
            Ev::Proc {
                image,
                parent,
                exe,
                args,
            } => proc(image, parent, exe.as_bytes(), args),
            Ev::File {
                process,
                access,
                path,
            } => file(process, *access, path),
            Ev::Net {
                peer,
                direction,
                port,
                udp,
            } => Event::Network(NetworkEvent {
                image: b"app:v1",
                process: b"app",
                direction: *direction,
                peer: match peer {
                    Ok(ip) => Peer::Ip(*ip),
                    Err(n) => Peer::Name(n.as_bytes()),
                },
                protocol: if *udp { Protocol::Udp } else { Protocol::Tcp },
                port: *port,
            }),
        }
    }
}

fn seg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "etc", "proc", "tmp", "usr", "bin", "shadow", "var", "log", "*", "**", "."
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        (0u32..40).prop_map(|n| n.to_string().into_bytes()),
        prop::collection::vec(any::<u8>().prop_filter("no slash", |b| *b != b'/'), 1..6),
    ]
}

fn ev() -> impl Strategy<Value = Ev> {
    let procs = (
        prop::sample::select(vec!["a:1", "b:2"]),
        prop::sample::select(vec!["sh", "init", "java"]),
        prop_oneof![
            (0u8..12).prop_map(|i| format!("x{i}")),
            (0u8..4).prop_map(|i| format!("/usr/bin/y{i}")),
        ],
        prop_oneof![
            prop::sample::select(vec![
                "run --port <num>",
                "serve",
                "-o stratum+tcp://pool:<num>",
                "-jar app.jar",
                "",
            ])
            .prop_map(String::from),
            "[a-z ]{0,12}",
        ],
    )
        .prop_map(|(image, parent, exe, args)| Ev::Proc {
            image: image.into(),
            parent: parent.into(),
            exe,
            args,
        });
    let files = (
        prop::sample::select(vec!["app", "sh"]),
        prop::sample::select(Access::ALL.to_vec()),
        any::<bool>(),
        prop::collection::vec(seg(), 0..5),
    )
        .prop_map(|(process, access, abs, segs)| {
            let mut path = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                if abs || i > 0 {
                    path.push(b'/');
                }
                path.extend_from_slice(s);
            }
            Ev::File {
                process: process.into(),
                access,
                path,
            }
        });
    let nets = (
        prop_oneof![
            (0u8..3, 0u8..40).prop_map(|(c, d)| Ok(IpAddr::V4(Ipv4Addr::new(10, 0, c, d)))),
            (0u8..4).prop_map(|i| Ok(IpAddr::V4(Ipv4Addr::new(172, 16 + i, 0, 1)))),
            (0u8..6).prop_map(|i| Err(format!("svc{i}"))),
        ],
        prop::sample::select(Direction::ALL.to_vec()),
        prop_oneof![Just(443u16), Just(80), 30000u16..30010],
        any::<bool>(),
    )
        .prop_map(|(peer, direction, port, udp)| Ev::Net {
            peer,
            direction,
            port,
            udp,
        });
    prop_oneof![procs, files, nets]
}

/// Small limits so that compaction happens in short sequences.
fn tight() -> ProfileConfig {
    ProfileConfig {
        compaction: CompactionConfig {
            child_limit: 4,
            prefix_limits: vec![PrefixLimit {
                prefix: "/proc".into(),
                limit: 2,
            }],
            exemplar_cap: 2,
            peer_ip_limit: 3,
            port_limit: 3,
            max_path_depth: 3,
            ..CompactionConfig::default()
        },
        ..ProfileConfig::default()
    }
}

fn learn_all(events: &[Ev]) -> Profile {
    let emb = TestEmbedder::with_dim(32);
    let mut p = Profile::new(tight(), TEST_MODEL_ID, Default::default()).unwrap();
    for e in events {
        p.learn(&e.event(), &emb).unwrap();
    }
    p
}

fn answers(p: &Profile, probes: &[Ev]) -> Vec<MatchOutcome> {
    let emb = TestEmbedder::with_dim(32);
    probes
        .iter()
        .map(|e| p.match_event(&e.event(), &emb).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn insert_then_match_is_known_and_compaction_never_forgets(events in prop::collection::vec(ev(), 1..80)) {
        let emb = TestEmbedder::with_dim(32);
        let mut p = Profile::new(tight(), TEST_MODEL_ID, Default::default()).unwrap();
        for (i, e) in events.iter().enumerate() {
            p.learn(&e.event(), &emb).unwrap();
            prop_assert_eq!(p.match_event(&e.event(), &emb).unwrap(), MatchOutcome::Known, "just learned #{}", i);
        }
        for e in &events {
            prop_assert_eq!(p.match_event(&e.event(), &emb).unwrap(), MatchOutcome::Known, "{:?}", e);
        }
    }

    #[test]
    fn serialise_load_match_gives_the_same_answers(
        events in prop::collection::vec(ev(), 0..60),
        probes in prop::collection::vec(ev(), 1..60),
    ) {
        let p = learn_all(&events);
        let yaml = p.to_yaml(Default::default()).unwrap();
        let back = Profile::from_yaml(&yaml, &TestEmbedder::with_dim(32), Default::default()).unwrap();
        prop_assert_eq!(answers(&p, &probes), answers(&back, &probes));
        prop_assert_eq!(answers(&p, &events), answers(&back, &events));
        let again = back.to_yaml(Default::default()).unwrap();
        prop_assert_eq!(yaml, again);
    }

    #[test]
    fn merge_is_commutative_and_idempotent(
        a in prop::collection::vec(ev(), 0..40),
        b in prop::collection::vec(ev(), 0..40),
        probes in prop::collection::vec(ev(), 1..40),
    ) {
        let mut ab = learn_all(&a);
        ab.merge(&learn_all(&b)).unwrap();
        let mut ba = learn_all(&b);
        ba.merge(&learn_all(&a)).unwrap();
        prop_assert_eq!(&ab.to_body(), &ba.to_body());
        prop_assert_eq!(answers(&ab, &probes), answers(&ba, &probes));
        for e in a.iter().chain(&b) {
            prop_assert_eq!(answers(&ab, std::slice::from_ref(e))[0].clone(), MatchOutcome::Known, "{:?}", e);
        }

        let once = learn_all(&a);
        let mut twice = learn_all(&a);
        twice.merge(&learn_all(&a)).unwrap();
        prop_assert_eq!(&once.to_body(), &twice.to_body());
        let mut thrice = learn_all(&a);
        thrice.merge(&twice).unwrap();
        prop_assert_eq!(answers(&once, &probes), answers(&thrice, &probes));
    }
}
