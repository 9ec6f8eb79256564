//! The Rust types generated from the BPF objects must have the sizes and
//! field offsets that a C compiler gives the structs in `bpf/kestrel.h`.

use kestrel_agent::skel::{file::types as ft, network::types as nt, process::types as pt};
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

/// Compiles a probe that prints `name value` lines for the C layout.
fn c_layout() -> BTreeMap<String, usize> {
    let dir = std::env::temp_dir().join(format!("kestrel-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let header = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bpf");
    let src = dir.join("probe.c");
    let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include \"kestrel.h\"\nint main(void){\n");
    let items: &[(&str, &str)] = &[
        ("kestrel_hdr", ""),
        ("kestrel_hdr", "comm"),
        ("kestrel_hdr", "mnt_ns"),
        ("exec_event", ""),
        ("exec_event", "pcomm"),
        ("exec_event", "filename"),
        ("exec_event", "exe"),
        ("exec_event", "ns_pid"),
        ("exec_event", "args_len"),
        ("exec_event", "args_size"),
        ("exec_event", "dir_len"),
        ("exec_failed_event", ""),
        ("exec_failed_event", "filename"),
        ("exec_failed_event", "error"),
        ("exec_failed_event", "dfd"),
        ("exec_failed_event", "args_len"),
        ("exec_failed_event", "argc"),
        ("exec_failed_event", "dir_len"),
        ("fork_event", ""),
        ("fork_event", "parent_pid"),
        ("exit_event", ""),
        ("exit_event", "exit_code"),
        ("file_event", ""),
        ("file_event", "op"),
        ("file_event", "dfd2"),
        ("file_event", "path_len"),
        ("file_event", "path2_len"),
        ("file_event", "dir_len"),
        ("file_event", "dir2_len"),
        ("net_event", ""),
        ("net_event", "sock"),
        ("net_event", "family"),
        ("net_event", "sport"),
        ("net_event", "dport"),
        ("net_event", "saddr"),
        ("net_event", "daddr"),
        ("net_event", "unix_path"),
        ("net_event", "newstate"),
        ("cgroup_event", ""),
        ("cgroup_event", "id"),
        ("cgroup_event", "path_len"),
    ];
    for (s, f) in items {
        if f.is_empty() {
            c += &format!("printf(\"{s} %zu\\n\", sizeof(struct {s}));\n");
        } else {
            c += &format!("printf(\"{s}.{f} %zu\\n\", offsetof(struct {s}, {f}));\n");
        }
    }
    c += "return 0;}\n";
    std::fs::write(&src, c).unwrap();
    let exe = dir.join("probe");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(cc)
        .arg("-I")
        .arg(&header)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("run cc");
    assert!(st.success(), "compiling the layout probe failed");
    let out = Command::new(&exe).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn generated_rust_types_match_the_c_header_layout() {
    let c = c_layout();
    let rust: BTreeMap<String, usize> = [
        ("kestrel_hdr", size_of::<pt::kestrel_hdr>()),
        ("kestrel_hdr.comm", offset_of!(pt::kestrel_hdr, comm)),
        ("kestrel_hdr.mnt_ns", offset_of!(pt::kestrel_hdr, mnt_ns)),
        ("exec_event", size_of::<pt::exec_event>()),
        ("exec_event.pcomm", offset_of!(pt::exec_event, pcomm)),
        ("exec_event.filename", offset_of!(pt::exec_event, filename)),
        ("exec_event.exe", offset_of!(pt::exec_event, exe)),
        ("exec_event.ns_pid", offset_of!(pt::exec_event, ns_pid)),
        ("exec_event.args_len", offset_of!(pt::exec_event, args_len)),
        (
            "exec_event.args_size",
            offset_of!(pt::exec_event, args_size),
        ),
        ("exec_event.dir_len", offset_of!(pt::exec_event, dir_len)),
        ("exec_failed_event", size_of::<pt::exec_failed_event>()),
        (
            "exec_failed_event.filename",
            offset_of!(pt::exec_failed_event, filename),
        ),
        (
            "exec_failed_event.error",
            offset_of!(pt::exec_failed_event, error),
        ),
        (
            "exec_failed_event.dfd",
            offset_of!(pt::exec_failed_event, dfd),
        ),
        (
            "exec_failed_event.args_len",
            offset_of!(pt::exec_failed_event, args_len),
        ),
        (
            "exec_failed_event.argc",
            offset_of!(pt::exec_failed_event, argc),
        ),
        (
            "exec_failed_event.dir_len",
            offset_of!(pt::exec_failed_event, dir_len),
        ),
        ("fork_event", size_of::<pt::fork_event>()),
        (
            "fork_event.parent_pid",
            offset_of!(pt::fork_event, parent_pid),
        ),
        ("exit_event", size_of::<pt::exit_event>()),
        (
            "exit_event.exit_code",
            offset_of!(pt::exit_event, exit_code),
        ),
        ("file_event", size_of::<ft::file_event>()),
        ("file_event.op", offset_of!(ft::file_event, op)),
        ("file_event.dfd2", offset_of!(ft::file_event, dfd2)),
        ("file_event.path_len", offset_of!(ft::file_event, path_len)),
        ("file_event.dir_len", offset_of!(ft::file_event, dir_len)),
        ("file_event.dir2_len", offset_of!(ft::file_event, dir2_len)),
        (
            "file_event.path2_len",
            offset_of!(ft::file_event, path2_len),
        ),
        ("net_event", size_of::<nt::net_event>()),
        ("net_event.sock", offset_of!(nt::net_event, sock)),
        ("net_event.family", offset_of!(nt::net_event, family)),
        ("net_event.sport", offset_of!(nt::net_event, sport)),
        ("net_event.dport", offset_of!(nt::net_event, dport)),
        ("net_event.saddr", offset_of!(nt::net_event, saddr)),
        ("net_event.daddr", offset_of!(nt::net_event, daddr)),
        ("net_event.unix_path", offset_of!(nt::net_event, unix_path)),
        ("net_event.newstate", offset_of!(nt::net_event, newstate)),
        ("cgroup_event", size_of::<pt::cgroup_event>()),
        ("cgroup_event.id", offset_of!(pt::cgroup_event, id)),
        (
            "cgroup_event.path_len",
            offset_of!(pt::cgroup_event, path_len),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(rust, c);
}
