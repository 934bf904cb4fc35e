//! Fuzz target: `tests::fuzz::config` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tests::fuzz::config(data));
