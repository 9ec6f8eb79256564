//! Digest lookups of one file event in a loop, for instruction counts
//! (the VM has no PMU; callgrind counts are repeatable under load):
//!
//!     cargo build --release -p kestrel-profile --example digest_loop
//!     valgrind --tool=callgrind target/release/examples/digest_loop 1000000
//!
//! Prints the number of hits and the wall time per lookup.

use kestrel_profile::{Access, Digest, Event, FileEvent};
use std::hint::black_box;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let ev = Event::File(FileEvent {
        image: b"registry.example.com/shop/api:1.4.2",
        process: b"java",
        access: Access::Read,
        path: b"/usr/lib/x86_64-linux-gnu/file-17.dat",
    });
    let d = Digest::from_hashes(42, [Digest::event_hash(42, &ev), 1, 2, 3]);
    let mut hits = 0u64;
    let t = std::time::Instant::now();
    for _ in 0..n {
        if d.contains(black_box(&ev)) {
            hits += 1;
        }
    }
    let per = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("{hits} hits, {per:.1} ns per lookup");
}
