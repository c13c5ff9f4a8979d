//! The parameter codec: arbitrary bytes as a form body and as a query string. A decoded form
//! re-encodes stably (`check_form_round_trip`), and an authorize request carrying the bytes,
//! as a POST body and as a GET query, gets a decision that passes `check_decision`.
#![no_main]

use filters::invariants::{check_decision, check_form_round_trip, fixture};
use filters::AuthorizeRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_form_round_trip(data);
    let policy = fixture::shared_policy(0);
    let post = AuthorizeRequest::post(Some(fixture::FORM), None, data);
    check_decision(
        policy,
        &post,
        &policy.authorize(&post, fixture::keys(), fixture::NOW),
    );
    if let Ok(query) = std::str::from_utf8(data) {
        let get = AuthorizeRequest::get(Some(query));
        check_decision(
            policy,
            &get,
            &policy.authorize(&get, fixture::keys(), fixture::NOW),
        );
    }
});
