//! One hint validation, alone and inside the whole authorize decision (issue 7, scenario 6).
//!
//! `cargo bench -p eam-filters --bench validate` (bench/run does it and reads the medians from
//! `target/criterion/*/new/estimates.json`). The hint is Microsoft-shaped (kid `signer`,
//! `exp = iat - 1`), signed with the test kit's `SIGNER` (`tests/fixtures/keys/signer.pem`). With `EAM_BENCH_HINT_FILE` set
//! (bench/run sets it), that exact token is used instead, so that OpenSSL, Node's `jose` and this
//! bench all verify the same bytes; its `iat` is the validation clock.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) on Linux, wall time
//! elsewhere or with `EAM_BENCH_CLOCK=wall`: on a machine shared with other work, wall time counts
//! the moments the thread waited for its CPU, while `openssl speed` (the reference) divides by
//! user CPU time.
//!
//! Groups:
//! - `baseline/parsed_key_verify`: the RSA-2048 PKCS#1 v1.5 verify alone, as `hint.rs` does it
//!   (aws-lc's `ParsedPublicKey`, parsed once per key set);
//! - `baseline/jsonwebtoken_verify`: the same through `jsonwebtoken::crypto::verify`, which
//!   parses the key on every call (what `hint.rs` did before: the difference is what parsing
//!   once saves);
//! - `hint/validate_accept`, `hint/validate_bad_signature`: `HintValidator::validate`;
//! - `authorize/entra_post_accept`, `authorize/entra_post_bad_signature`: `Policy::authorize` of
//!   Entra's form POST (parse, strip, detect, validate, rewrite or render the error);
//! - `authorize/plain_post`: the same-sized non-Entra authorize POST (no validation).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use filters::{
    AppPolicy, AuthorizeDecision, AuthorizeRequest, AuthorizeSettings, CloudPolicy, HintValidator,
    KeySet, Outcome, Policy,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use testkit::claims::{sample, set_tenant, APP_REGISTRATION, OTHER_TID};
use testkit::entra::{CLIENT_ID, FORM, GLOBAL_REDIRECT};
use testkit::jwk::jwks;
use testkit::{FOREIGN, SIGNER};

/// The `claims` parameter of bench/run's form (`entra_form` there), byte for byte.
const CLAIMS: &str = r#"{"id_token":{"acr":{"essential":true,"values":["possessionorinherence"]},"amr":{"essential":true,"values":["face","fido","fpt","hwk","iris","otp","pop","retina","sc","sms","swk","tel","vbm"]}}}"#;
/// Issue time of the self-signed hint (when no `EAM_BENCH_HINT_FILE` is given).
const IAT: u64 = 1_760_000_000;

/// CPU time of the calling thread, or wall time where that clock is not available.
struct BenchClock {
    wall: WallTime,
    cpu: bool,
}

impl BenchClock {
    fn new() -> BenchClock {
        let cpu = std::env::var("EAM_BENCH_CLOCK").map_or(true, |v| v != "wall")
            && thread_cpu_time().is_some();
        BenchClock {
            wall: WallTime,
            cpu,
        }
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_time() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the duration of the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

impl Measurement for BenchClock {
    type Intermediate = (Instant, Option<Duration>);
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        (
            Instant::now(),
            if self.cpu { thread_cpu_time() } else { None },
        )
    }
    fn end(&self, (wall, cpu): Self::Intermediate) -> Duration {
        match (cpu, self.cpu.then(thread_cpu_time).flatten()) {
            (Some(start), Some(end)) => end.saturating_sub(start),
            _ => wall.elapsed(),
        }
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

/// Microsoft's sample claims issued at `iat`, in bench/run's tenant (`TENANT_ID` there).
fn microsoft_claims(iat: u64) -> Value {
    let mut claims = sample(APP_REGISTRATION, iat);
    set_tenant(&mut claims, OTHER_TID);
    Value::Object(claims)
}

/// The valid hint and its `iat` (the clock the validation runs at).
fn valid_hint() -> (String, u64) {
    if let Ok(path) = std::env::var("EAM_BENCH_HINT_FILE") {
        let token = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("EAM_BENCH_HINT_FILE={path}: {e}"))
            .trim()
            .to_string();
        let payload = token.split('.').nth(1).expect("a compact JWS");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
                .expect("JSON payload");
        let iat = claims["iat"].as_u64().expect("an integer iat");
        return (token, iat);
    }
    (SIGNER.sign(SIGNER.kid, &microsoft_claims(IAT)), IAT)
}

/// Same header and payload with the signer's signature of another payload (`iat + 1`): a value
/// below the modulus, so the whole RSA operation runs before the mismatch shows (the attacker's
/// most expensive request). A signature made with another key would be refused without any RSA
/// work whenever its value exceeds the modulus: a cost that depends on the bytes signed.
fn bad_signature_hint(valid: &str, iat: u64) -> String {
    let other = SIGNER.sign(SIGNER.kid, &microsoft_claims(iat + 1));
    let signature = other.rsplit('.').next().unwrap();
    let signing_input = &valid[..valid.rfind('.').unwrap()];
    format!("{signing_input}.{signature}")
}

/// The fixture set with Microsoft's per-key issuer template, as the proxy loads it.
fn key_set(loaded_at: u64) -> KeySet {
    let doc = jwks([SIGNER.jwk(SIGNER.kid), FOREIGN.jwk(FOREIGN.kid)]);
    KeySet::from_jwks(doc.to_string().as_bytes(), loaded_at).unwrap()
}

fn policy() -> Policy {
    Policy {
        authorize: AuthorizeSettings::default(),
        apps: vec![AppPolicy {
            client_id: CLIENT_ID.into(),
            audiences: vec![CLIENT_ID.into(), APP_REGISTRATION.into()],
            cloud: 0,
            allowed_tenants: vec![],
            allow_msa_tenant: false,
        }],
        clouds: vec![CloudPolicy::builtin("global").unwrap()],
        max_stale_seconds: 604_800,
    }
}

/// Entra's auto-submitted form as bench/run writes it (`entra_form` there), so that both
/// benchmarks send the same bytes.
fn entra_form(hint: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("scope", "openid"),
            ("response_type", "id_token"),
            ("response_mode", "form_post"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", GLOBAL_REDIRECT),
            ("nonce", "nonce-0b7e3c52-6a4f-4c1e-9d2a-5f8b1c3e7a90"),
            ("state", "opaque-state-1"),
            ("claims", CLAIMS),
            ("client-request-id", "3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
            ("id_token_hint", hint),
        ])
        .finish()
}

fn post(body: &str) -> AuthorizeRequest<'_> {
    AuthorizeRequest::post(Some(FORM), None, body.as_bytes())
}

fn benches(c: &mut Criterion<BenchClock>) {
    let (hint, iat) = valid_hint();
    let bad = bad_signature_hint(&hint, iat);
    let now = iat + 1;
    let policy = policy();
    let keys = key_set(now);
    let validator = HintValidator {
        app: &policy.apps[0],
        cloud: &policy.clouds[0],
        leeway_seconds: 3600,
        until_exp: false,
        max_stale_seconds: policy.max_stale_seconds,
        all_claims: false,
    };
    // The checks the figures rely on: accepted, refused for its signature, and so on.
    assert!(validator.validate(&hint, Some(&keys), now).is_ok());
    assert_eq!(
        validator.validate(&bad, Some(&keys), now).unwrap_err(),
        filters::AuthorizeError::BadSignature
    );

    let mut g = c.benchmark_group("baseline");
    let n = URL_SAFE_NO_PAD.decode(SIGNER.n()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(SIGNER.e()).unwrap();
    let decoding_key = DecodingKey::from_rsa_raw_components(&n, &e);
    let (signing_input, signature) = hint.rsplit_once('.').unwrap();
    let parsed = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        rsa_public_key_der(&n, &e),
    )
    .unwrap();
    let raw_signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    g.bench_function("parsed_key_verify", |b| {
        b.iter(|| {
            parsed
                .verify_sig(
                    black_box(signing_input.as_bytes()),
                    black_box(&raw_signature),
                )
                .unwrap()
        })
    });
    g.bench_function("jsonwebtoken_verify", |b| {
        b.iter(|| {
            let ok = jsonwebtoken::crypto::verify(
                black_box(signature),
                black_box(signing_input.as_bytes()),
                &decoding_key,
                Algorithm::RS256,
            )
            .unwrap();
            assert!(ok);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hint");
    g.bench_function("validate_accept", |b| {
        b.iter(|| {
            validator
                .validate(black_box(&hint), Some(&keys), now)
                .unwrap()
        })
    });
    g.bench_function("validate_bad_signature", |b| {
        b.iter(|| {
            validator
                .validate(black_box(&bad), Some(&keys), now)
                .unwrap_err()
        })
    });
    g.finish();

    let mut lookup: HashMap<String, Arc<KeySet>> = HashMap::new();
    lookup.insert("global".into(), Arc::new(keys.clone()));
    let policy = {
        let mut p = policy.clone();
        p.authorize.leeway_seconds = 3600;
        p
    };
    let accept_body = entra_form(&hint);
    let reject_body = entra_form(&bad);
    // A non-Entra authorize POST of the same size (another client_id): parsed and stripped only.
    let plain_body = accept_body.replace(CLIENT_ID, "00000000-0000-4000-8000-000000000000");
    let accepted = policy.authorize(&post(&accept_body), &lookup, now);
    assert_eq!(accepted.summary.outcome, Outcome::Accepted);
    let rejected = policy.authorize(&post(&reject_body), &lookup, now);
    assert!(matches!(rejected.decision, AuthorizeDecision::Reject(_)));
    let plain = policy.authorize(&post(&plain_body), &lookup, now);
    assert_eq!(plain.decision, AuthorizeDecision::PassThrough);

    let mut g = c.benchmark_group("authorize");
    g.bench_function("entra_post_accept", |b| {
        b.iter(|| policy.authorize(black_box(&post(&accept_body)), &lookup, now))
    });
    g.bench_function("entra_post_bad_signature", |b| {
        b.iter(|| policy.authorize(black_box(&post(&reject_body)), &lookup, now))
    });
    g.bench_function("plain_post", |b| {
        b.iter(|| policy.authorize(black_box(&post(&plain_body)), &lookup, now))
    });
    g.finish();
}

criterion_group! {
    name = validate;
    config = Criterion::default()
        .with_measurement(BenchClock::new())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(validate);

/// DER `RSAPublicKey` (PKCS#1) of a modulus and exponent, as `keys.rs` builds it.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    use pkcs1::der::Encode;
    pkcs1::RsaPublicKey {
        modulus: pkcs1::UintRef::new(n).unwrap(),
        public_exponent: pkcs1::UintRef::new(e).unwrap(),
    }
    .to_der()
    .unwrap()
}
