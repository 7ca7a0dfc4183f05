//! libFuzzer entry point; the properties are in [`oa_fuzz::receipt`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oa_fuzz::receipt::check(data));
