//! `cargo fuzz run request_body --sanitizer none`; the invariants are in `tresor_fuzz::request_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tresor_fuzz::request_body(data));
