//! Decoder throughput: ring-buffer records → events, per record kind.
//!
//!     cargo bench -p kestrel-node-agent --bench decode

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kestrel_agent::decode::{decode, wire};
use kestrel_agent::skel::{file::types as ft, network::types as nt, process::types as pt};

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain-old-data wire struct; reading its bytes is fine.
    unsafe {
        std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()).to_vec()
    }
}

fn file_record(path: &[u8]) -> Vec<u8> {
    let mut e = ft::file_event::default();
    e.hdr.kind = wire::KIND_FILE;
    e.hdr.pid = 1234;
    e.op = 1;
    e.syscall_nr = 257;
    e.dfd = -100;
    e.path_len = path.len() as u32;
    let mut rec = bytes_of(&e);
    rec.extend_from_slice(path);
    rec
}

fn exec_record(args: &[u8]) -> Vec<u8> {
    let mut e = pt::exec_event::default();
    e.hdr.kind = wire::KIND_EXEC;
    e.hdr.pid = 1234;
    e.args_len = args.len() as u32;
    e.args_size = args.len() as u32;
    let mut rec = bytes_of(&e);
    rec.extend_from_slice(args);
    rec
}

fn net_record() -> Vec<u8> {
    let mut e = nt::net_event::default();
    e.hdr.kind = wire::KIND_NET;
    e.op = 1;
    e.family = 2;
    e.dport = 443;
    e.daddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    bytes_of(&e)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let file = file_record(b"/usr/lib/x86_64-linux-gnu/libc.so.6");
    g.bench_function("file_open", |b| {
        b.iter(|| decode(std::hint::black_box(&file)).is_ok())
    });
    let exec = exec_record(b"java\0-jar\0/app/app.jar\0--timestamp=12345\0--port=8080\0");
    g.bench_function("exec_5_args", |b| {
        b.iter(|| decode(std::hint::black_box(&exec)).is_ok())
    });
    let net = net_record();
    g.bench_function("net_connect", |b| {
        b.iter(|| decode(std::hint::black_box(&net)).is_ok())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
