//! cargo-fuzz target: `livegate_fuzz_checks::request_path` (what it asserts is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livegate_fuzz_checks::request_path(data));
