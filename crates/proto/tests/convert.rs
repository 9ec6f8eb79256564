//! Domain ⇄ wire conversions, without a network.

mod common;

use common::{base, every_kind, with_workload};
use kestrel_events::{Event, EventKind, Exit, Fork};
use kestrel_proto::{wire, ConvertError, EventBatch, WorkloadEvent};
use prost::Message as _;

fn through_bytes(e: &Event) -> Event {
    let bytes = wire::Event::from(e).encode_to_vec();
    Event::try_from(wire::Event::decode(bytes.as_slice()).unwrap()).unwrap()
}

#[test]
fn every_event_kind_survives_encoding_and_decoding_unchanged() {
    for e in every_kind() {
        assert_eq!(through_bytes(&e), e);
    }
}

#[test]
fn the_workload_travels_with_the_event_and_is_dropped_by_the_plain_conversion() {
    let e = base(EventKind::Fork(Fork { parent_pid: 3 }));
    let w = wire::Event::from(&WorkloadEvent {
        image: String::new(),
        process: None,
        chain: Vec::new(),
        workload: "web".into(),
        event: e.clone(),
    });
    assert_eq!(w.workload, "web");
    assert_eq!(WorkloadEvent::try_from(w.clone()).unwrap().workload, "web");
    assert_eq!(Event::try_from(w).unwrap(), e);
    assert_eq!(wire::Event::from(&e).workload, "");
}

#[test]
fn an_unknown_enum_value_is_refused_naming_the_field() {
    let mut w = wire::Event::from(&every_kind()[3]);
    let Some(wire::event::Kind::File(f)) = w.kind.as_mut() else {
        panic!()
    };
    f.op = 42;
    assert_eq!(
        Event::try_from(w).unwrap_err(),
        ConvertError::UnknownEnum {
            field: "file.op".into(),
            value: 42
        }
    );

    let mut w = wire::Event::from(&every_kind()[0]);
    w.container.as_mut().unwrap().runtime = 0;
    assert_eq!(Event::try_from(w).unwrap_err().field(), "container.runtime");

    let mut w = wire::Event::from(&every_kind()[6]);
    let Some(wire::event::Kind::Net(n)) = w.kind.as_mut() else {
        panic!()
    };
    n.op = 0;
    assert_eq!(
        Event::try_from(w).unwrap_err().to_string(),
        "net.op: unknown enum value 0"
    );
}

#[test]
fn missing_required_parts_are_refused_naming_the_field() {
    let mut w = wire::Event::from(&every_kind()[1]);
    w.kind = None;
    assert_eq!(
        Event::try_from(w).unwrap_err(),
        ConvertError::Missing {
            field: "kind".into()
        }
    );

    let mut w = wire::Event::from(&every_kind()[1]);
    w.ns = None;
    assert_eq!(Event::try_from(w).unwrap_err().field(), "ns");

    let mut w = wire::Event::from(&every_kind()[0]);
    let Some(wire::event::Kind::Exec(x)) = w.kind.as_mut() else {
        panic!()
    };
    x.argv = None;
    assert_eq!(Event::try_from(w).unwrap_err().field(), "exec.argv");

    let mut w = wire::Event::from(&every_kind()[6]);
    let Some(wire::event::Kind::Net(n)) = w.kind.as_mut() else {
        panic!()
    };
    n.remote = Some(wire::Endpoint { addr: None });
    assert_eq!(Event::try_from(w).unwrap_err().field(), "net.remote.addr");
}

#[test]
fn a_failed_exec_without_argv_or_with_a_non_positive_errno_is_refused() {
    let failed = every_kind().pop().unwrap();
    assert!(matches!(failed.kind, EventKind::ExecFailed(_)));
    let mut w = wire::Event::from(&failed);
    let Some(wire::event::Kind::ExecFailed(x)) = w.kind.as_mut() else {
        panic!()
    };
    x.argv = None;
    assert_eq!(Event::try_from(w).unwrap_err().field(), "exec_failed.argv");
    for errno in [0, -13] {
        let mut w = wire::Event::from(&failed);
        let Some(wire::event::Kind::ExecFailed(x)) = w.kind.as_mut() else {
            panic!()
        };
        x.errno = errno;
        assert_eq!(Event::try_from(w).unwrap_err().field(), "exec_failed.errno");
    }
}

/// A resolved directory names a file only when absolute: a lying or broken
/// agent's relative one is refused, not joined to whatever the operator
/// takes as its base.
#[test]
fn a_resolved_directory_that_is_not_absolute_is_refused_naming_the_field() {
    let rename = every_kind()
        .into_iter()
        .find(|e| matches!(&e.kind, EventKind::File(f) if f.dir.is_some()))
        .expect("a file event with a directory");
    assert_eq!(through_bytes(&rename), rename);
    for (field, bad) in [("file.dir", &b"srv/data"[..]), ("file.new_dir", b"")] {
        let mut w = wire::Event::from(&rename);
        let Some(wire::event::Kind::File(f)) = w.kind.as_mut() else {
            panic!()
        };
        if field == "file.dir" {
            f.dir = Some(bad.to_vec());
        } else {
            f.new_dir = Some(bad.to_vec());
        }
        let err = Event::try_from(w).unwrap_err();
        assert_eq!(err.field(), field);
        assert!(
            err.to_string().contains("not an absolute directory"),
            "{err}"
        );
    }
    let mut w = wire::Event::from(&every_kind()[0]);
    let Some(wire::event::Kind::Exec(x)) = w.kind.as_mut() else {
        panic!()
    };
    x.dir = Some(b"tmp".to_vec());
    assert_eq!(Event::try_from(w).unwrap_err().field(), "exec.dir");
}

#[test]
fn numbers_that_do_not_fit_the_domain_type_are_refused() {
    let mut w = wire::Event::from(&base(EventKind::Exit(Exit { code: 1, signal: 0 })));
    let Some(wire::event::Kind::Exit(x)) = w.kind.as_mut() else {
        panic!()
    };
    x.code = 256;
    assert_eq!(
        Event::try_from(w).unwrap_err(),
        ConvertError::OutOfRange {
            field: "exit.code".into(),
            value: 256,
            max: 255
        }
    );

    let mut w = wire::Event::from(&every_kind()[6]);
    let Some(wire::event::Kind::Net(n)) = w.kind.as_mut() else {
        panic!()
    };
    let Some(wire::endpoint::Addr::Ip(ip)) = n.remote.as_mut().unwrap().addr.as_mut() else {
        panic!()
    };
    ip.port = 70_000;
    assert_eq!(
        Event::try_from(w.clone()).unwrap_err().field(),
        "net.remote.ip.port"
    );
    let Some(wire::event::Kind::Net(n)) = w.kind.as_mut() else {
        panic!()
    };
    let Some(wire::endpoint::Addr::Ip(ip)) = n.remote.as_mut().unwrap().addr.as_mut() else {
        panic!()
    };
    ip.port = 1;
    ip.addr = vec![1, 2, 3, 4, 5];
    let err = Event::try_from(w).unwrap_err();
    assert_eq!(err.field(), "net.remote.ip.addr");
    assert!(err.to_string().contains("5 bytes"), "{err}");

    let mut w = wire::Event::from(&every_kind()[8]);
    let Some(wire::event::Kind::Net(n)) = w.kind.as_mut() else {
        panic!()
    };
    n.tcp_state.as_mut().unwrap().new_state = 65_536;
    assert_eq!(
        Event::try_from(w).unwrap_err().field(),
        "net.tcp_state.new_state"
    );
}

#[test]
fn a_bad_event_in_a_batch_is_named_by_its_index() {
    let mut b = wire::EventBatch::from(&EventBatch {
        seq: 9,
        events: with_workload("w", every_kind()),
    });
    b.events[2].kind = None;
    assert_eq!(
        EventBatch::try_from(b).unwrap_err().field(),
        "events[2].kind"
    );
}

#[test]
fn truncated_protobuf_bytes_fail_to_decode_instead_of_panicking() {
    let bytes = wire::Event::from(&every_kind()[0]).encode_to_vec();
    for cut in 1..bytes.len() {
        if let Ok(w) = wire::Event::decode(&bytes[..cut]) {
            let _ = Event::try_from(w);
        }
    }
}

/// Oversized fields: content with a truncation flag is cut to its limit
/// and flagged (never silently), identifiers are refused naming the field;
/// nothing kept is larger than its limit.
#[test]
fn oversized_fields_are_cut_and_flagged_or_refused_naming_the_field() {
    use kestrel_proto::limits;
    // 100 000 arguments of 40 bytes (4 MB): cut to the byte budget, flagged.
    let mut w = wire::Event::from(&every_kind()[0]);
    let Some(wire::event::Kind::Exec(x)) = w.kind.as_mut() else {
        panic!()
    };
    let argv = x.argv.as_mut().unwrap();
    argv.truncated = false;
    argv.args = (0..100_000)
        .map(|i| format!("{i:040}").into_bytes())
        .collect();
    let e = Event::try_from(w).unwrap();
    let EventKind::Exec(x) = &e.kind else {
        panic!()
    };
    let bytes: usize = x.argv.args.iter().map(|a| a.as_bytes().len()).sum();
    assert!(bytes <= limits::ARGV_BYTES, "{bytes}");
    assert!(x.argv.args.len() <= limits::ARGS);
    assert!(x.argv.truncated);
    // One 1 MiB argument: cut, flagged.
    let mut w = wire::Event::from(&every_kind()[0]);
    let Some(wire::event::Kind::Exec(x)) = w.kind.as_mut() else {
        panic!()
    };
    x.argv.as_mut().unwrap().args = vec![b"xmrig".to_vec(), vec![b'a'; 1 << 20]];
    let e = Event::try_from(w).unwrap();
    let EventKind::Exec(x) = &e.kind else {
        panic!()
    };
    assert_eq!(x.argv.args[1].as_bytes().len(), limits::ARGV_BYTES - 5);
    assert!(x.argv.truncated);
    // A 1 MiB path and new path: cut to PATH_MAX, flagged.
    let mut w = wire::Event::from(&every_kind()[3]);
    let Some(wire::event::Kind::File(f)) = w.kind.as_mut() else {
        panic!()
    };
    f.truncated = false;
    f.path = vec![b'/'; 1 << 20];
    let e = Event::try_from(w).unwrap();
    let EventKind::File(f) = &e.kind else {
        panic!()
    };
    assert_eq!(f.path.as_bytes().len(), limits::PATH);
    assert!(f.truncated);
    // Identifiers: refused, naming the field and the limit.
    let refused = |edit: &dyn Fn(&mut wire::Event)| {
        let mut w = wire::Event::from(&WorkloadEvent::new("web", every_kind()[0].clone()));
        edit(&mut w);
        WorkloadEvent::try_from(w).unwrap_err().to_string()
    };
    assert_eq!(
        refused(&|w| w.workload = "w".repeat(10_000)),
        "workload (bytes): 10000 out of range (maximum 512)"
    );
    assert!(refused(&|w| w.image = "i".repeat(5_000)).starts_with("image (bytes)"));
    assert!(
        refused(&|w| w.container.as_mut().unwrap().id = "c".repeat(5_000))
            .starts_with("container.id (bytes)")
    );
    assert!(refused(&|w| {
        let Some(wire::event::Kind::Exec(x)) = w.kind.as_mut() else {
            panic!()
        };
        x.filename = vec![b'/'; 8_192];
    })
    .starts_with("exec.filename (bytes): 8192"));
    // The process chain comes from the agent's own table: cut and marked,
    // never refused (a refused event would be sent again forever).
    let mut w = wire::Event::from(&WorkloadEvent::new("web", every_kind()[0].clone()));
    w.chain = vec![
        wire::Ancestor {
            pid: 1,
            exe: "j".repeat(100_000),
            argv: vec![
                "java".into(),
                "-cp".into(),
                "x".repeat(100_000),
                "Main".into()
            ],
        };
        1_000
    ];
    let e = WorkloadEvent::try_from(w).unwrap();
    assert_eq!(e.chain.len(), limits::CHAIN);
    let a = &e.chain[0];
    assert!(a.exe.ends_with(kestrel_proto::CUT_MARK) && a.exe.len() < limits::ANCESTOR_TEXT + 16);
    assert_eq!(
        a.argv.last().map(String::as_str),
        Some(kestrel_proto::CUT_MARK)
    );
    assert_eq!(a.argv.len(), 4);
    assert!(a.argv.iter().map(|s| s.len() + 1).sum::<usize>() <= limits::ANCESTOR_TEXT + 16);
    assert!(
        refused(&|w| w.task.as_mut().unwrap().comm = vec![b'c'; 10_000])
            .starts_with("task.comm (bytes)")
    );
}

/// A bounded fuzz run (`cargo test`): mutants of real messages — a batch of
/// every event kind, a Hello, counters — and random bytes are decoded and
/// converted as the server does; nothing panics, and whatever converts
/// respects the limits.
#[test]
fn mutated_and_random_wire_messages_never_panic_and_stay_within_limits() {
    use kestrel_events::mutate::{mutants, Rng};
    use kestrel_proto::{limits, Counters, Hello};
    let batch = wire::AgentMessage {
        msg: Some(wire::agent_message::Msg::Events(wire::EventBatch::from(
            &EventBatch {
                seq: 7,
                events: with_workload("web", every_kind()),
            },
        ))),
    };
    let hello = wire::AgentMessage {
        msg: Some(wire::agent_message::Msg::Hello(wire::Hello::from(
            &common::hello("node-a"),
        ))),
    };
    let mut counters = Counters::default();
    counters.matched.insert("web".into(), 3);
    counters.drops.queue_dropped = 2;
    let counters = wire::AgentMessage {
        msg: Some(wire::agent_message::Msg::Counters(wire::Counters::from(
            &counters,
        ))),
    };
    let mut converted = 0;
    let check = |bytes: &[u8], converted: &mut usize| {
        let Ok(m) = wire::AgentMessage::decode(bytes) else {
            return;
        };
        match m.msg {
            Some(wire::agent_message::Msg::Events(b)) => {
                if let Ok(b) = EventBatch::try_from(b) {
                    *converted += 1;
                    for e in &b.events {
                        assert!(e.workload.len() <= limits::NAME);
                        if let EventKind::Exec(x) = &e.event.kind {
                            let n: usize = x.argv.args.iter().map(|a| a.as_bytes().len()).sum();
                            assert!(n <= limits::ARGV_BYTES);
                        }
                    }
                }
            }
            Some(wire::agent_message::Msg::Hello(h)) => {
                let _ = Hello::from(h).check();
            }
            Some(wire::agent_message::Msg::Counters(c)) => {
                let _ = Counters::from(c);
            }
            None => {}
        }
    };
    for (i, seed) in [batch, hello, counters].iter().enumerate() {
        let bytes = seed.encode_to_vec();
        for m in mutants(&bytes, 20_000, 1 + i as u64) {
            check(&m, &mut converted);
        }
    }
    let mut rng = Rng::new(99);
    for _ in 0..20_000 {
        let n = rng.below(512);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        check(&bytes, &mut converted);
    }
    // the mutants reached the conversion, not only the decoder
    assert!(converted > 1_000, "{converted}");
}
