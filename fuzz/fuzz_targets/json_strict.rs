//! `cargo fuzz run json_strict --sanitizer none`; the invariants are in `tresor_fuzz::json_strict`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tresor_fuzz::json_strict(data));
