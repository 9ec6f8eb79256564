//! What an agent (or anyone holding its certificate) sends the operator:
//! protobuf bytes, decoded and converted to the domain types with their
//! limits, as the server does.
#![no_main]
use kestrel_proto::wire;
use prost::Message as _;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(m) = wire::AgentMessage::decode(data) else {
        return;
    };
    match m.msg {
        Some(wire::agent_message::Msg::Events(b)) => {
            if let Ok(batch) = kestrel_proto::EventBatch::try_from(b) {
                for e in &batch.events {
                    let _ = kestrel_profile::activity_of(&e.event);
                }
            }
        }
        Some(wire::agent_message::Msg::Hello(h)) => {
            let _ = kestrel_proto::Hello::from(h).check();
        }
        Some(wire::agent_message::Msg::Counters(c)) => {
            let _ = kestrel_proto::Counters::from(c);
        }
        None => {}
    }
});
