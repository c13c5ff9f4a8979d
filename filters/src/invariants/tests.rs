use proptest::collection::vec;
use proptest::prelude::*;

use testkit::entra::{CRID, NONCE, STATE};
use testkit::keys::PUBLIC_JWKS;
use testkit::{EntraRequest, SIGNER};

use super::fixture::{self, *};
use super::*;
use crate::authorize::Outcome;
use crate::render::form_post_error;

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        (any::<u16>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<u16>().prop_map(|at| Mutation::Truncate { at }),
        (any::<u8>(), any::<u16>(), any::<u8>())
            .prop_map(|(segment, at, bit)| Mutation::FlipDecoded { segment, at, bit }),
        (any::<u8>(), any::<u8>()).prop_map(|(segment, from)| Mutation::Splice { segment, from }),
        any::<u8>().prop_map(|segment| Mutation::DropSegment { segment }),
        Just(Mutation::AppendSegment),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![2 => Just(Vec::new()), 1 => vec(mutation(), 1..3)]
}

/// Text with the characters that matter to the codec and the page.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_<>\"'&=+% ;.-]{0,24}",
        any::<String>(),
        "(%[0-9a-fA-F]{2}|[a-z&=+_]){0,12}",
    ]
}

fn pair() -> impl Strategy<Value = Pair> {
    let name = prop_oneof![
        6 => any::<u8>().prop_map(Name::Vocab),
        1 => tricky_text().prop_map(Name::Raw),
    ];
    let value = prop_oneof![
        4 => any::<u8>().prop_map(ParamValue::Vocab),
        2 => (any::<u8>(), mutations())
            .prop_map(|(index, mutations)| ParamValue::Hint { index, mutations }),
        1 => tricky_text().prop_map(ParamValue::Text),
        1 => (
            prop_oneof![
                Just(r#"{"typ":"JWT","alg":"RS256","kid":"signer"}"#.to_string()),
                r#"\{"alg":"(RS256|none|HS256|rs256)"(,"kid":"(signer|plain|x|)")?(,"crit":\[\])?\}"#,
                any::<String>(),
            ],
            prop_oneof![
                Just(serde_json::Value::Object(fixture::claims()).to_string()),
                any::<String>(),
            ],
            any::<u8>(),
        )
            .prop_map(|(header, payload, signature_from)| ParamValue::Jws {
                header,
                payload,
                signature_from,
            }),
    ];
    let encoding = prop_oneof![
        6 => Just(Encoding::Form),
        1 => any::<bool>().prop_map(|lower| Encoding::PercentAll { lower }),
        1 => Just(Encoding::Raw),
    ];
    (name, value, encoding, any::<u8>()).prop_map(|(name, value, encoding, at)| Pair {
        name,
        value,
        encoding,
        at,
    })
}

fn base() -> impl Strategy<Value = EntraBase> {
    let app = prop_oneof![3 => Just(0u8), 1 => any::<u8>()];
    // The accepted hints first, so that a good share of requests is accepted.
    let hint = prop_oneof![3 => 0u8..7, 2 => any::<u8>()];
    let drop = prop_oneof![4 => Just(0u16), 1 => any::<u16>()];
    (app, hint, mutations(), drop).prop_map(|(app, hint, mutations, drop)| EntraBase {
        app,
        hint,
        mutations,
        drop,
    })
}

fn request_model() -> impl Strategy<Value = RequestModel> {
    (
        // The small-body and zero-leeway variants (bits 8, 9) a quarter of the time.
        prop_oneof![3 => any::<u16>().prop_map(|v| v & !0x300), 1 => any::<u16>()],
        any::<bool>(),
        prop_oneof![3 => 0u8..3, 1 => any::<u8>()],
        prop_oneof![4 => base().prop_map(Some), 1 => Just(None)],
        prop_oneof![2 => vec(pair(), 0..2), 1 => vec(pair(), 0..6)],
        proptest::option::of(vec(pair(), 0..3)),
        prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
    )
        .prop_map(
            |(policy, post, content_type, base, params, post_query, now, head)| RequestModel {
                policy,
                post,
                content_type,
                head,
                base,
                params,
                post_query,
                now,
            },
        )
}

const ERRORS: &[AuthorizeError] = &[
    AuthorizeError::BadSignature,
    AuthorizeError::KeysUnavailable,
    AuthorizeError::DuplicateParameter("state"),
    AuthorizeError::MissingParameter("id_token_hint"),
    AuthorizeError::ParameterInQuery("redirect_uri"),
    AuthorizeError::Expired,
    AuthorizeError::UnknownClient,
];

proptest! {
    // 256 cases each by default (PROPTEST_CASES overrides), to keep debug runs fast.

    #[test]
    fn codec_arbitrary_bytes(input in vec(any::<u8>(), 0..256)) {
        check_form_round_trip(&input);
    }

    #[test]
    fn codec_form_like_text(input in "([a-zA-Z0-9_=&+~. -]|%[0-9a-fA-F]{2}|%[0-9a-zA-Z]{0,2}|%[cCeEfF][0-9a-fA-F]%[89abAB][0-9a-fA-F]){0,40}") {
        check_form_round_trip(input.as_bytes());
    }

    #[test]
    fn codec_structured_forms(pairs in vec((any::<String>(), any::<String>()), 0..8), lower in any::<bool>()) {
        // As browsers encode them.
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (n, v) in &pairs {
            serializer.append_pair(n, v);
        }
        let browser = serializer.finish();
        // Every byte percent-encoded.
        let hex = |s: &str| -> String {
            s.bytes().map(|b| if lower { format!("%{b:02x}") } else { format!("%{b:02X}") }).collect()
        };
        let percent = pairs.iter().map(|(n, v)| format!("{}={}", hex(n), hex(v))).collect::<Vec<_>>().join("&");
        for encoded in [browser, percent] {
            let parsed = Params::parse(encoded.as_bytes()).expect("a well-formed form parses");
            prop_assert_eq!(pairs_of(&parsed), pairs.clone());
            check_form_round_trip(encoded.as_bytes());
        }
    }

    #[test]
    fn page_escapes_every_state(
        state in prop_oneof![any::<String>(), "[<>\"'&a-z /=;]{0,40}"],
        error in proptest::sample::select(ERRORS),
        uri in proptest::sample::select(&[GLOBAL_REDIRECT, USGOV_REDIRECT, CHINA_REDIRECT, LAB_REDIRECT][..]),
    ) {
        let page = form_post_error(uri, error, Some(&state));
        check_page(&page, uri, error, Some(&state));
        check_escape_html(&state);
    }

    #[test]
    fn authorize_decisions_hold_every_invariant(model in request_model()) {
        model.build().check();
    }
}

/// The fixture is what it claims: each hint gets its documented answer from the base policy,
/// as a POST and as a GET, so the property test above reaches every check of README "How a request is handled", step 6.
#[test]
fn fixture_hints_get_their_documented_answers() {
    for hint in fixture::hints() {
        for post in [true, false] {
            let body = EntraRequest::new(&hint.token).body();
            let built = BuiltRequest::new(
                fixture::shared_policy(0),
                if post { Method::Post } else { Method::Get },
                post.then_some(FORM),
                (!post).then(|| body.clone()),
                if post { body.into_bytes() } else { Vec::new() },
            );
            let out = built.check();
            assert_eq!(
                out.summary.reason(),
                hint.reason,
                "{} post={post}",
                hint.name
            );
            if hint.reason.is_none() {
                assert_eq!(out.summary.outcome, Outcome::Accepted, "{}", hint.name);
            }
        }
    }
}

/// Every policy variant, with the valid hint and each of Entra's clouds and a spoofed
/// parameter: a deterministic sweep next to the random one.
#[test]
fn every_policy_variant_with_a_spoofed_entra_request() {
    let mut accepted = 0;
    for variant in 0..1024u16 {
        let shapes: &[(u8, bool)] = if variant < 64 {
            &[(0, true), (0, false), (1, true), (2, false), (3, true)]
        } else {
            &[(0, true), (0, false)]
        };
        for &(app, post) in shapes {
            let model = RequestModel {
                policy: variant,
                post,
                content_type: 0,
                head: 0,
                base: Some(EntraBase {
                    app,
                    hint: 0,
                    mutations: vec![],
                    drop: 0,
                }),
                params: vec![Pair {
                    name: Name::Vocab(13),        // %65ntra_tid
                    value: ParamValue::Vocab(26), // the MSA tenant
                    encoding: Encoding::Form,
                    at: 0,
                }],
                post_query: post.then(|| {
                    vec![Pair {
                        name: Name::Vocab(11), // entra_sub
                        value: ParamValue::Vocab(25),
                        encoding: Encoding::Form,
                        at: 0,
                    }]
                }),
                now: 0,
            };
            let out = model.build().check();
            accepted += usize::from(out.summary.outcome == Outcome::Accepted);
        }
    }
    assert!(accepted > 600, "only {accepted} accepted");
}

#[test]
fn check_decision_catches_a_forged_forward() {
    // The checker itself must fail on what it guards against.
    let policy = fixture::policy(0);
    let body = "client_id=other&entra_sub=attacker";
    let req = AuthorizeRequest::post(Some(FORM), None, body.as_bytes());
    let forged = Ruling {
        decision: AuthorizeDecision::PassThrough,
        summary: Summary::default(),
        remember: None,
        keys_wanted: None,
    };
    let caught = std::panic::catch_unwind(|| check_decision(&policy, &req, &forged));
    assert!(
        caught.is_err(),
        "a spoofed entra_sub passed through unnoticed"
    );
    let real = policy.authorize(&req, fixture::keys(), NOW);
    check_decision(&policy, &req, &real);
}

#[test]
fn check_page_catches_an_unescaped_state() {
    let page = form_post_error(GLOBAL_REDIRECT, AuthorizeError::Expired, Some("x"));
    let mut html = String::from_utf8(page.body.clone()).unwrap();
    html = html.replace("value=\"x\"", "value=\"<b>\"");
    let forged = ErrorResponse {
        body: html.into_bytes(),
        ..page
    };
    let caught = std::panic::catch_unwind(|| {
        check_page(
            &forged,
            GLOBAL_REDIRECT,
            AuthorizeError::Expired,
            Some("<b>"),
        )
    });
    assert!(caught.is_err());
}

#[test]
fn raw_request_format() {
    let text = format!(
        "POST 0 0 0\n-\n{}",
        EntraRequest::new(fixture::hint("valid")).body()
    );
    let built = fixture::parse_raw_request(text.as_bytes()).unwrap();
    assert_eq!(built.check().summary.outcome, Outcome::Accepted);
    assert!(fixture::parse_raw_request(b"PUT 0 0 0\n-\n").is_none());
}

/// The request strategy keeps reaching every kind of decision (so the property test above
/// does not silently degrade into testing one branch).
#[test]
fn request_model_reaches_every_kind_of_decision() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut outcomes = [0usize; 3];
    let mut reasons = HashSet::new();
    for _ in 0..600 {
        let model = request_model().new_tree(&mut runner).unwrap().current();
        let out = model.build().check();
        outcomes[out.summary.outcome as usize] += 1;
        reasons.extend(out.summary.reason());
    }
    assert!(outcomes[Outcome::Accepted as usize] >= 30, "{outcomes:?}");
    assert!(outcomes[Outcome::Passed as usize] >= 60, "{outcomes:?}");
    assert!(reasons.len() >= 18, "{reasons:?}");
}

/// Writes the seed corpora of the fuzz targets to `fuzz/seeds/<target>/` from this fixture
/// (real Entra-shaped requests signed by the test key). Run after changing the fixture:
/// `cargo test -p eam-filters write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let spoofs = "entra_sub=attacker&ENTRA_oid=attacker&%65ntra_tid=9188040d-6c67-4c5b-b112-36a304b66dad&entra%5Fiss=https%3A%2F%2Fattacker.example&entra_id_token_hint=e30.e30.e30";
    let non_entra = "client_id=other&response_type=code&scope=openid&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=s&claims=%7B%22a%22%3A1%7D";
    let entra = |app: usize, hint: &str| {
        let (client_id, redirect) = [
            (CLIENT_ID, GLOBAL_REDIRECT),
            (USGOV_CLIENT_ID, USGOV_REDIRECT),
            (CHINA_CLIENT_ID, CHINA_REDIRECT),
        ][app];
        EntraRequest::for_app(client_id, redirect, hint).body()
    };
    // Entra's form written by hand, with encodings form_urlencoded would not produce.
    let hand_written = format!(
        "scope=openid&response_type=id_token&response_mode=form_post&client_id={CLIENT_ID}\
         &redirect_uri=https%3a%2f%2flogin.microsoftonline.com%2fcommon%2ffederation%2fexternalauthprovider\
         &claims=%7b%22id_token%22%3a%7b%7d%7d&nonce={NONCE}&state=a%20b+c&client-request-id={CRID}\
         &id_token_hint={}&prompt=none",
        hint("valid")
    );
    let mut requests: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, head: &str, query: &str, body: &str| {
        requests.push((name.to_string(), format!("{head}\n{query}\n{body}")));
    };
    for h in fixture::hints() {
        add(
            &format!("post_{}", h.name),
            "POST 0 0 0",
            "-",
            &entra(0, &h.token),
        );
    }
    add("get_valid", "GET 0 0 5", &entra(0, hint("valid")), "");
    add("get_expired", "GET 0 0 5", &entra(0, hint("expired")), "");
    add(
        "post_valid_charset",
        "POST 0 0 1",
        "-",
        &entra(0, hint("valid")),
    );
    add(
        "post_valid_text_plain",
        "POST 0 0 3",
        "-",
        &entra(0, hint("valid")),
    );
    add(
        "post_valid_late",
        "POST 0 4 0",
        "-",
        &entra(0, hint("valid")),
    );
    add("post_valid_hand_written", "POST 0 0 0", "-", &hand_written);
    add(
        "post_valid_spoofed",
        "POST 0 0 0",
        &format!("{spoofs}&x=1"),
        &format!("{spoofs}&{}", entra(0, hint("valid"))),
    );
    add(
        "get_valid_spoofed",
        "GET 0 0 5",
        &format!("{spoofs}&{}", entra(0, hint("valid"))),
        "",
    );
    add(
        "post_non_entra_spoofed",
        "POST 0 0 0",
        spoofs,
        &format!("{non_entra}&{spoofs}"),
    );
    add(
        "get_non_entra_spoofed",
        "GET 0 0 5",
        &format!("{spoofs}&{non_entra}"),
        "",
    );
    add("get_non_entra", "GET 0 0 5", non_entra, "");
    // Issue 16: what a framework behind the proxy would read differently.
    let valid = entra(0, hint("valid"));
    let semicolon_query = format!("{valid}&x=1;client_id=x");
    for (name, head, query, body) in [
        (
            "post_valid_identity_encoding",
            "POST 0 0 0 1",
            "-",
            valid.clone(),
        ),
        ("post_deflate", "POST 0 0 0 2", "-", valid.clone()),
        ("post_two_content_types", "POST 0 0 0 5", "-", valid.clone()),
        ("put_form", "POST 0 0 0 6", "-", valid.clone()),
        ("post_chunked", "POST 0 0 0 7", "-", valid.clone()),
        ("post_h2_open", "POST 0 0 0 8", "-", valid.clone()),
        (
            "get_h2_empty_data",
            "GET 0 0 5 8",
            valid.as_str(),
            String::new(),
        ),
        ("get_h2_data", "GET 0 0 5 9", valid.as_str(), String::new()),
        (
            "get_announced_body",
            "GET 0 0 5 10",
            valid.as_str(),
            String::new(),
        ),
        ("post_utf16", "POST 0 0 6 0", "-", valid.clone()),
        ("post_quoted_charset", "POST 0 0 7 0", "-", valid.clone()),
        ("post_boundary", "POST 0 0 9 0", "-", valid.clone()),
        (
            "post_php_dot",
            "POST 0 0 0",
            "-",
            format!("{valid}&entra.sub=x"),
        ),
        (
            "post_brackets",
            "POST 0 0 0",
            "-",
            format!("{valid}&client_id[]=x"),
        ),
        (
            "post_case",
            "POST 0 0 0",
            "-",
            format!("{valid}&Client_Id=x"),
        ),
        (
            "post_semicolon",
            "POST 0 0 0",
            "-",
            format!("{valid}&x=1;client_id=x"),
        ),
        (
            "get_semicolon",
            "GET 0 0 5",
            semicolon_query.as_str(),
            String::new(),
        ),
        (
            "post_qs_bracket_equals",
            "POST 0 0 0",
            "-",
            format!("{valid}&x=a]=b"),
        ),
    ] {
        add(name, head, query, &body);
    }
    add(
        "post_query_state",
        "POST 0 0 0",
        "state=other",
        &entra(0, hint("valid")),
    );
    add(
        "post_duplicate_state",
        "POST 0 0 0",
        "-",
        &format!("{}&state=again", entra(0, hint("valid"))),
    );
    add(
        "post_html_state",
        "POST 0 0 0",
        "-",
        &entra(0, hint("expired"))
            .replace(STATE, "%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E%26%27"),
    );
    add(
        "post_attacker_redirect",
        "POST 0 0 0",
        "-",
        &entra(0, hint("expired")).replace("login.microsoftonline.com", "attacker.example"),
    );
    add(
        "post_usgov",
        "POST 0 0 0",
        "-",
        &entra(1, hint("usgov_issuer")),
    );
    add(
        "post_china_stale",
        "POST 0 0 0",
        "-",
        &entra(2, hint("china_issuer")),
    );
    add(
        "post_unknown_client_either",
        "POST 2 0 0",
        "-",
        &entra(0, hint("valid")).replace(CLIENT_ID, "other-client"),
    );
    add(
        "post_request_id_only",
        "POST 1 0 0",
        "-",
        &format!("client-request-id={CRID}&{non_entra}"),
    );
    add(
        "post_status_delivery",
        "POST 8 0 0",
        "-",
        &entra(0, hint("foreign_key")),
    );
    add(
        "post_custom_hint_param",
        "POST 16 0 0",
        "UPSTREAM_HINT=x",
        &format!("upstream_hint=forged&{}", entra(0, hint("valid"))),
    );
    add(
        "post_extra_claims",
        "POST 64 0 0",
        "-",
        &entra(0, hint("valid_odd_claims")),
    );
    add(
        "post_no_prompt_forcing",
        "POST 4 0 0",
        "-",
        &format!("{}&prompt=none", entra(0, hint("valid"))),
    );
    add(
        "post_small_body",
        "POST 256 0 0",
        "-",
        &entra(0, hint("valid")),
    );
    add(
        "post_malformed",
        "POST 0 0 0",
        "-",
        "client_id=%zz&state=%C3%28",
    );
    for (name, text) in &requests {
        write("authorize", name, text.as_bytes());
    }
    // The codec: the same requests' bodies and queries, and malformed forms.
    for (name, text) in &requests {
        let mut lines = text.splitn(3, '\n').skip(1);
        let (query, body) = (lines.next().unwrap(), lines.next().unwrap());
        if query != "-" && !query.is_empty() {
            write("params", &format!("{name}_query"), query.as_bytes());
        }
        if !body.is_empty() {
            write("params", &format!("{name}_body"), body.as_bytes());
        }
    }
    for (name, bytes) in [
        ("bad_percent", &b"a=%&b=%4&c=%zz"[..]),
        ("bad_utf8_decoded", b"a=%C3%28"),
        ("bad_utf8_raw", b"a=\xff"),
        ("surrogate", b"a=%ED%A0%80"),
        ("empty_segments", b"&a=%41&&b=c+d&=&x"),
        (
            "utf8",
            "n=J%C3%BCrgen&m=J\u{fc}rgen&%F0%9F%94%91=%E2%80%AE".as_bytes(),
        ),
    ] {
        write("params", name, bytes);
    }
    // Key sets.
    let signer = SIGNER.jwk("signer");
    let microsoft = serde_json::json!({"keys": [{
        "kty": "RSA", "use": "sig", "kid": "nOo3ZDrODXEK1jKWhXslHR_KXEg",
        "x5t": "nOo3ZDrODXEK1jKWhXslHR_KXEg", "n": signer["n"], "e": "AQAB",
        "x5c": ["MIIDBTCCAe2gAwIBAgIQN33ROaIJ6bJBWDCxtmJEbjANBgkqhkiG9w0BAQsFADAtMSswKQYDVQQD"],
        "cloud_instance_name": "microsoftonline.com",
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"
    }]});
    let mixed = serde_json::json!({"keys": [
        signer,
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": signer["n"], "e": "AQAB"},
        {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": signer["n"], "e": "AQAB"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "", "n": signer["n"], "e": "AQAB"},
        "not an object"
    ]});
    for (name, doc) in [
        ("fixture_public", PUBLIC_JWKS.to_string()),
        ("microsoft_shaped", microsoft.to_string()),
        ("mixed", mixed.to_string()),
        ("empty", r#"{"keys":[]}"#.to_string()),
        ("keys_object", r#"{"keys":{}}"#.to_string()),
        (
            "html",
            "<html><body>Service Unavailable</body></html>".to_string(),
        ),
    ] {
        write("keyset", name, doc.as_bytes());
    }
    // Pages: [error, uri (bit 7: no state)] + state.
    for (name, bytes) in [
        (
            "script_state",
            [&[9u8, 0][..], b"\"><script>alert(1)</script>&'".as_slice()].concat(),
        ),
        ("entra_state", [&[20u8, 1][..], STATE.as_bytes()].concat()),
        (
            "form_injection",
            [
                &[30u8, 2][..],
                b"</form><form action=\"https://attacker.example\">".as_slice(),
            ]
            .concat(),
        ),
        ("no_state", vec![4u8, 0x80]),
        (
            "custom_uri",
            [
                &[29u8, 4][..],
                b"https://idp.example/cb?a=1&b=2\n<img src=x onerror=alert(1)>".as_slice(),
            ]
            .concat(),
        ),
        (
            "unicode_state",
            [&[0u8, 3][..], "\u{202e}\u{fffd}&#x3c;&lt;".as_bytes()].concat(),
        ),
    ] {
        write("render", name, &bytes);
    }
}

/// The seed corpora of the fuzz targets, and any input a fuzzer once crashed on (kept under
/// `fuzz/regressions/<target>/`), pass the same checks here, on stable.
#[test]
fn fuzz_seeds_and_regressions_pass_the_checks() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut checked = 0;
    for dir in ["seeds", "regressions"] {
        for target in ["authorize", "params", "keyset"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                assert_ne!(dir, "seeds", "fuzz/seeds/{target} is missing");
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                match target {
                    "authorize" => {
                        fixture::parse_raw_request(&bytes)
                            .unwrap_or_else(|| panic!("{} is not a raw request", path.display()))
                            .check();
                    }
                    "params" => check_form_round_trip(&bytes),
                    _ => check_key_set(&bytes),
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "only {checked} seeds");
}

#[test]
fn key_sets_of_the_fixture() {
    check_key_set(PUBLIC_JWKS.as_bytes());
    check_key_set(b"{\"keys\":[]}");
    check_key_set(b"\xff");
}
