use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 8452 Appendix C.2 (AEAD_AES_256_GCM_SIV): the primitive itself, before anything of ours.
#[test]
fn rfc_8452_aes_256_gcm_siv_vectors() {
    let key = unhex("0100000000000000000000000000000000000000000000000000000000000000");
    let nonce: [u8; 12] = unhex("030000000000000000000000").try_into().unwrap();
    for (aad, plaintext, result) in [
        ("", "", "07f5f4169bbf55a8400cd47ea6fd400f"),
        (
            "",
            "0100000000000000",
            "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28",
        ),
        (
            "01",
            "0200000000000000",
            "1de22967237a813291213f267e3b452f02d01ae33e4ec854",
        ),
    ] {
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, &key).unwrap());
        let mut in_out = unhex(plaintext);
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(unhex(aad)),
            &mut in_out,
        )
        .unwrap();
        assert_eq!(in_out, unhex(result));
        let opened = k
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(unhex(aad)),
                &mut in_out,
            )
            .unwrap();
        assert_eq!(opened, &unhex(plaintext)[..]);
    }
}

fn keys(secrets: &[&[u8]]) -> SealKeys {
    SealKeys::derive(&secrets.iter().map(|s| s.to_vec()).collect::<Vec<_>>()).unwrap()
}

const A: &[u8] = &[7; 32];
const B: &[u8] = &[9; 40];
const NAME: &str = "__Host-eam-g-0123456789abcdef";

fn expectation() -> Expectation {
    Expectation {
        state: Some("entra-state".into()),
        client_id: "00000000-0000-0000-0000-000000000001".into(),
        redirect_uri: "https://login.microsoftonline.com/common/federation/externalauthprovider"
            .into(),
        client_request_id: Some("4a2b9f1e-0000-4000-8000-000000000000".into()),
        sub: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ".into(),
        nonce: Some("nonce-1".into()),
        acr_values: vec!["possessionorinherence".into(), "knowledge".into()],
    }
}

#[test]
fn round_trip_restores_the_state_of_the_answer_that_carries_it() {
    let k = keys(&[A]);
    let e = expectation();
    let sealed = k.seal(&e, 1000, NAME, [1; 12]).unwrap();
    assert!(!sealed.contains(['=', '+', '/']));
    assert_eq!(
        k.open(&sealed, NAME, Some("entra-state"), 999),
        Unsealed::Opened(e.clone())
    );
    // Another state or none: an expectation no answer state matches (the guard's mismatch).
    let Unsealed::Opened(other) = k.open(&sealed, NAME, Some("other"), 999) else {
        panic!()
    };
    assert_eq!(other.state.as_deref(), Some(""));
    let Unsealed::Opened(none) = k.open(&sealed, NAME, None, 999) else {
        panic!()
    };
    assert_eq!(none.state.as_deref(), Some(""));
    let bare = Expectation {
        state: None,
        client_request_id: None,
        nonce: None,
        acr_values: vec![],
        ..e
    };
    let sealed = k.seal(&bare, 1000, NAME, [2; 12]).unwrap();
    assert_eq!(k.open(&sealed, NAME, Some("x"), 0), Unsealed::Opened(bare));
    assert_eq!(k.expiry(&sealed, NAME), Some(1000));
}

#[test]
fn tampering_and_another_cookie_name_are_unreadable() {
    let k = keys(&[A]);
    let sealed = k.seal(&expectation(), 1000, NAME, [1; 12]).unwrap();
    let mut wire = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
    for i in [0, 1, 6, HEADER_LEN, wire.len() - 1] {
        wire[i] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(&wire);
        assert_eq!(k.open(&altered, NAME, None, 0), Unsealed::Unreadable, "{i}");
        wire[i] ^= 1;
    }
    let other_name = "__Host-eam-g-fedcba9876543210";
    assert_eq!(k.open(&sealed, other_name, None, 0), Unsealed::Unreadable);
    for junk in [
        "",
        "!!!",
        "AQ",
        &sealed[..sealed.len() - 2],
        &"A".repeat(2000),
    ] {
        assert_eq!(k.open(junk, NAME, None, 0), Unsealed::Unreadable);
    }
    // Another operator's key (a replica without the shared key file).
    assert_eq!(
        keys(&[B]).open(&sealed, NAME, None, 0),
        Unsealed::Unreadable
    );
}

#[test]
fn rotation_opens_with_the_old_key_and_seals_with_the_first() {
    let old = keys(&[A]);
    let sealed_old = old.seal(&expectation(), 1000, NAME, [3; 12]).unwrap();
    let rotating = keys(&[B, A]);
    assert!(matches!(
        rotating.open(&sealed_old, NAME, None, 0),
        Unsealed::Opened(_)
    ));
    let sealed_new = rotating.seal(&expectation(), 1000, NAME, [3; 12]).unwrap();
    assert_eq!(old.open(&sealed_new, NAME, None, 0), Unsealed::Unreadable);
    assert!(matches!(
        keys(&[B]).open(&sealed_new, NAME, None, 0),
        Unsealed::Opened(_)
    ));
    assert_ne!(old.sealing_key_id(), rotating.sealing_key_id());
}

#[test]
fn expiry_is_checked_after_authentication() {
    let k = keys(&[A]);
    let sealed = k.seal(&expectation(), 1000, NAME, [4; 12]).unwrap();
    assert!(matches!(
        k.open(&sealed, NAME, None, 999),
        Unsealed::Opened(_)
    ));
    assert_eq!(k.open(&sealed, NAME, None, 1000), Unsealed::Expired);
    assert_eq!(k.open(&sealed, "x", None, 1000), Unsealed::Unreadable);
}

#[test]
fn a_maximal_entra_expectation_fits_and_larger_ones_are_refused() {
    let k = keys(&[A]);
    // Entra's values: GUIDs, a 43-character sub, a long nonce, several acr values; the state is
    // sealed as a hash whatever its length.
    let e = Expectation {
        state: Some("s".repeat(2000)),
        nonce: Some("n".repeat(200)),
        acr_values: (0..8).map(|i| format!("acr-value-number-{i:02}")).collect(),
        ..expectation()
    };
    let sealed = k.seal(&e, u64::MAX, NAME, [5; 12]).unwrap();
    assert!(sealed.len() <= MAX_VALUE_LEN, "{}", sealed.len());
    let big = Expectation {
        nonce: Some("n".repeat(MAX_PLAINTEXT)),
        ..expectation()
    };
    assert_eq!(k.seal(&big, 1, NAME, [5; 12]), Err(TooLarge));
    let many = Expectation {
        acr_values: vec!["a".into(); 300],
        ..expectation()
    };
    assert_eq!(k.seal(&many, 1, NAME, [5; 12]), Err(TooLarge));
}

#[test]
fn key_files() {
    let a = base64::engine::general_purpose::STANDARD.encode(A);
    let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(B);
    let text = format!("# rotation\n\n{a}\n  {b}  \n");
    assert_eq!(parse_key_file(&text).unwrap(), vec![A.to_vec(), B.to_vec()]);
    assert_eq!(parse_key_file("# none\n\n"), Err(KeyFileError::NoKey));
    assert_eq!(
        parse_key_file(&format!("{a}\n{b}\n{a}\n")),
        Err(KeyFileError::TooManyKeys)
    );
    assert_eq!(
        parse_key_file(&format!("{a}\nnot base64!\n")),
        Err(KeyFileError::BadBase64(2))
    );
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
    assert_eq!(parse_key_file(&short), Err(KeyFileError::ShortSecret(1)));
    assert_eq!(
        SealKeys::derive(&[vec![0; 31]]).unwrap_err(),
        KeyFileError::ShortSecret(1)
    );
    // Ids are stable: every replica derives the same key from the same file.
    assert_eq!(keys(&[A]).sealing_key_id(), keys(&[A]).sealing_key_id());
    assert!(!format!("{:?}", keys(&[A])).contains("aead"));
}
