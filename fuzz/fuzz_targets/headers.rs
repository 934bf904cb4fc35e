//! Fuzz target: `tests::fuzz::headers` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tests::fuzz::headers(data));
