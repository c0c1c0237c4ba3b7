//! `cargo fuzz run record_open --sanitizer none`; the invariants are in `tresor_fuzz::record_open`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tresor_fuzz::record_open(data));
