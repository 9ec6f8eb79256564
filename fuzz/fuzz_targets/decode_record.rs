//! A BPF ring-buffer record as the kernel side might hand it over, or not.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kestrel_agent::decode::decode(data);
});
