//! A user's rule file, added to the default pack.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kestrel_scoring::RuleSet::builder()
            .default_pack()
            .add_yaml("fuzz.yaml", text)
            .build();
    }
});
