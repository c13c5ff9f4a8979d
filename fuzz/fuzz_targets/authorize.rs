//! The whole authorize decision: an arbitrary request, with arbitrary or pre-signed-and-mutated
//! tokens, against the fixed key set; every decision is checked with `check_decision_at`.
//!
//! Two input formats: the text format of `fixture::parse_raw_request` (the seeds: real
//! Entra-shaped requests), and anything else, read as a structured request model (its
//! `Arbitrary` is derived in the fixture under `cfg(fuzzing)`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use filters::invariants::fixture::{parse_raw_request, RequestModel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(request) = parse_raw_request(data) {
        request.check();
        return;
    }
    if let Ok(model) = RequestModel::arbitrary_take_rest(Unstructured::new(data)) {
        model.build().check();
    }
});
