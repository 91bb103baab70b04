#![no_main]
//! Fuzz target `recovery_scan`; the properties are in `fuzz/checks/recovery_scan.rs`.

use libfuzzer_sys::fuzz_target;

#[path = "../checks/recovery_scan.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
