#![no_main]
//! Fuzz target `record_decode`; the properties are in `fuzz/checks/record_decode.rs`.

use libfuzzer_sys::fuzz_target;

#[path = "../checks/record_decode.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
