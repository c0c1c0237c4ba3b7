//! `cargo fuzz run proxy_target --sanitizer none`; the invariants are in `tresor_fuzz::proxy_target`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tresor_fuzz::proxy_target(data));
