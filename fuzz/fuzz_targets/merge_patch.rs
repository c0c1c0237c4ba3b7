//! `cargo fuzz run merge_patch --sanitizer none`; the invariants are in `tresor_fuzz::merge_patch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tresor_fuzz::merge_patch(data));
