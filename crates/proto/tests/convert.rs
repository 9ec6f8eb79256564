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
