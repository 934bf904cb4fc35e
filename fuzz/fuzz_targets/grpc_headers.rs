//! Fuzz target: `tests::fuzz::grpc_headers` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tests::fuzz::grpc_headers(data));
