//! Matching a known path does not allocate (a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kestrel_embed::normalize;
use kestrel_profile::testing::{TestEmbedder, TEST_MODEL_ID};
use kestrel_profile::{
    Access, Direction, Event, FileEvent, NetworkEvent, Peer, ProcessEvent, Profile, ProfileConfig,
    Protocol,
};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn matching_known_process_file_and_network_events_does_not_allocate() {
    let emb = TestEmbedder::new();
    let mut p = Profile::new(ProfileConfig::default(), TEST_MODEL_ID, Duration::ZERO).unwrap();
    let args = normalize("java -jar app.jar --port=8080");
    let long = [b"/data/".as_slice(), &[b'x'; 600]].concat();
    let events = [
        Event::Process(ProcessEvent {
            image: b"app:1",
            parent: b"sh",
            exe: b"java",
            args: &args,
        }),
        Event::File(FileEvent {
            image: b"app:1",
            process: b"java",
            access: Access::Read,
            path: b"/etc/app/conf.yaml",
        }),
        Event::File(FileEvent {
            image: b"app:1",
            process: b"java",
            access: Access::Read,
            path: &long,
        }),
        Event::Network(NetworkEvent {
            image: b"app:1",
            process: b"java",
            direction: Direction::Outbound,
            peer: Peer::Ip("10.0.0.1".parse().unwrap()),
            protocol: Protocol::Tcp,
            port: 443,
        }),
    ];
    for e in &events {
        p.learn(e, &emb).unwrap();
    }
    let d = p.digest(7);
    for e in &events {
        let before = ALLOCS.load(Ordering::Relaxed);
        let known = p.match_event(e, &emb).unwrap().is_known();
        let in_digest = d.contains(e);
        let after = ALLOCS.load(Ordering::Relaxed);
        assert!(known && in_digest);
        assert_eq!(after, before, "{e:?} allocated");
    }
}
