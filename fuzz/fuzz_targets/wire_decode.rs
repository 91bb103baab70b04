#![no_main]
//! Fuzz target `wire_decode`; the properties are in `fuzz/checks/wire_decode.rs`.

use libfuzzer_sys::fuzz_target;

#[path = "../checks/wire_decode.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
