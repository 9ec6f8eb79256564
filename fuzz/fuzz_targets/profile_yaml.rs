//! A BehaviorProfile file or object: parsed, then loaded into a profile
//! the way the engine loads it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(stored) = kestrel_api::profile_from_yaml(text) {
        let emb = kestrel_profile::testing::TestEmbedder::new();
        let _ = kestrel_profile::Profile::from_object(
            &stored.object,
            &emb,
            std::time::Duration::ZERO,
        );
    }
});
