//! libFuzzer entry point; the properties are in [`oa_fuzz::canonical_json`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oa_fuzz::canonical_json::check(data));
