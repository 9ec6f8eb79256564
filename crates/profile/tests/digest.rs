//! The agent-side digest agrees with the profile.

mod common;

use common::*;
use kestrel_embed::normalize;
use kestrel_profile::testing::TestEmbedder;
use kestrel_profile::{Access, Digest};

#[test]
fn the_digest_contains_exactly_the_concrete_known_events() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    let args = normalize("java -jar app.jar --timestamp=12345");
    let known = [
        proc("web:1", "sh", b"java", &args),
        file("java", Access::Read, b"/etc/app//conf.yaml"),
        file("java", Access::Write, b"relative/\xffpath"),
        net("10.0.0.5".parse().unwrap(), 5432),
        net_named(b"db.shop.svc", 5432),
    ];
    for e in &known {
        p.learn(e, &emb).unwrap();
    }
    let d = p.digest(42);
    assert_eq!(d.len(), known.len());
    for e in &known {
        assert!(d.contains(e), "{e:?}");
    }
    // Same event, differently spelled path; same shape of arguments.
    assert!(d.contains(&file("java", Access::Read, b"/etc/./app/conf.yaml")));
    let later = normalize("java -jar app.jar --timestamp=99999");
    assert!(d.contains(&proc("web:1", "sh", b"java", &later)));
    // Unknown events are not in it, and another seed gives other hashes.
    assert!(!d.contains(&file("java", Access::Read, b"/etc/shadow")));
    assert!(!d.contains(&net("10.0.0.6".parse().unwrap(), 5432)));
    assert_ne!(p.digest(43).hashes(), d.hashes());
    assert!(!d.contains_hash(Digest::event_hash(43, &known[0])));
    let wire = Digest::from_hashes(d.seed(), d.hashes());
    assert_eq!(wire, d);
}

#[test]
fn patterns_stay_out_of_the_digest_so_the_agent_forwards_them() {
    let emb = TestEmbedder::new();
    let mut p = profile();
    for pid in 0..40 {
        let path = format!("/proc/{pid}/status");
        p.learn(&file("java", Access::Read, path.as_bytes()), &emb)
            .unwrap();
    }
    let d = p.digest(1);
    assert!(d.is_empty());
    assert!(p
        .match_event(&file("java", Access::Read, b"/proc/7/status"), &emb)
        .unwrap()
        .is_known());
}
