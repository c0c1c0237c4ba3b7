//! `cargo fuzz run token --sanitizer none`; the invariants are in `tresor_fuzz::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tresor_fuzz::token(data));
