//! A SecurityAlert file or object.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kestrel_api::alert_from_yaml(text);
    }
});
