//! The key-set parser: arbitrary bytes as a JWKS document never panic, and a set that parses
//! holds at least one key (`check_key_set`).
#![no_main]

use filters::invariants::check_key_set;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_key_set(data);
});
