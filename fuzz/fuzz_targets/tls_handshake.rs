#![no_main]
//! Fuzz target `tls_handshake`; the properties are in `fuzz/checks/tls_handshake.rs`.

use libfuzzer_sys::fuzz_target;

#[path = "../checks/tls_handshake.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
