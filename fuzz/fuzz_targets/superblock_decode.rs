#![no_main]
//! Fuzz target `superblock_decode`; the properties are in `fuzz/checks/superblock_decode.rs`.

use libfuzzer_sys::fuzz_target;

#[path = "../checks/superblock_decode.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
