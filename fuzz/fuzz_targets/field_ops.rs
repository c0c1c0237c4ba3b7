//! `cargo fuzz run field_ops --sanitizer none`; the invariants are in `tresor_fuzz::field_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tresor_fuzz::field_ops(data));
