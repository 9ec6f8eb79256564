//! The operator's config file, parsed and checked as at start-up.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kestrel_operator::config::OperatorConfig::parse(text);
    }
});
