//! The response guard's expectation, sealed for the browser to carry (README "Several
//! replicas"): the replica that accepts Entra's request seals what the guard will expect into a
//! cookie, and whichever replica carries the OP's answer opens it.
//!
//! AES-256-GCM-SIV: the nonce comes from the caller (this crate has no randomness), and a repeated
//! nonce costs GCM-SIV only the equality of two identical plaintexts, where GCM would lose its key.
//! The cookie's name is the associated data, so a cookie cannot be replayed under another sign-in's
//! name. Wire: `version(1) | key id(4) | nonce(12) | ciphertext+tag(16)`, base64url without
//! padding. The state is sealed as its SHA-256: the guard only compares it, and an Entra state may
//! be long.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use aws_lc_rs::hkdf;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use sha2::{Digest, Sha256};

use crate::error::reasons;
use crate::guard::Expectation;

pub const VERSION: u8 = 1;
pub const NONCE_LEN: usize = 12;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// The longest cookie value sealed or opened: four of them stay far below the 8 KB request line
/// of nginx and others, and one below the 4 KB browsers keep per cookie.
pub const MAX_VALUE_LEN: usize = 1024;
const MAX_PLAINTEXT: usize = MAX_VALUE_LEN * 3 / 4 - HEADER_LEN - TAG_LEN;
pub const MIN_SECRET_LEN: usize = 32;
pub const MAX_SECRETS: usize = 2;

const HKDF_SALT: &[u8] = b"eam-proxy response guard cookie";
const HKDF_INFO: &[u8] = b"aes-256-gcm-siv v1";

reasons! {
    /// What is wrong with a key file (`authorize.response_guard_key_file`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyFileError {
        /// No secret: every line is blank or a comment.
        NoKey => "no_key",
        /// More than two secrets (one seals, one more may still open during a rotation).
        TooManyKeys => "too_many_keys",
        /// The secret on this line (1-based) is not standard base64.
        BadBase64(usize = 1) => "bad_base64",
        /// The secret on this line (1-based) decodes to fewer than 32 bytes.
        ShortSecret(usize = 1) => "short_secret",
    }
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFileError::NoKey => f.write_str("holds no secret"),
            KeyFileError::TooManyKeys => write!(f, "holds more than {MAX_SECRETS} secrets"),
            KeyFileError::BadBase64(line) => write!(f, "line {line} is not base64"),
            KeyFileError::ShortSecret(line) => {
                write!(
                    f,
                    "line {line} decodes to fewer than {MIN_SECRET_LEN} bytes"
                )
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

/// The secrets of a key file: one or two non-empty lines of standard base64 (padding optional),
/// blank lines and `#` comments ignored.
pub fn parse_key_file(text: &str) -> Result<Vec<Vec<u8>>, KeyFileError> {
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut secrets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let secret = engine
            .decode(line)
            .map_err(|_| KeyFileError::BadBase64(i + 1))?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyFileError::ShortSecret(i + 1));
        }
        secrets.push(secret);
        if secrets.len() > MAX_SECRETS {
            return Err(KeyFileError::TooManyKeys);
        }
    }
    if secrets.is_empty() {
        return Err(KeyFileError::NoKey);
    }
    Ok(secrets)
}

struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

struct SealKey {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

/// The sealing keys: the first seals, every one opens.
pub struct SealKeys {
    keys: Vec<SealKey>,
}

impl fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids are public (they travel in every cookie); the keys are not shown.
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("SealKeys").field("ids", &ids).finish()
    }
}

/// What opening a cookie gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealed {
    Opened(Expectation),
    /// Not base64url, another version, a key id none of the keys has, a failed authentication
    /// (forged, altered, or under another cookie name), or a plaintext that does not parse.
    Unreadable,
    /// Authentic, but past its expiry.
    Expired,
}

/// The expectation does not fit in a cookie value of `MAX_VALUE_LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

impl SealKeys {
    /// Keys derived (HKDF-SHA256) from one or two operator secrets of at least 32 bytes each.
    pub fn derive(secrets: &[Vec<u8>]) -> Result<SealKeys, KeyFileError> {
        if secrets.is_empty() {
            return Err(KeyFileError::NoKey);
        }
        if secrets.len() > MAX_SECRETS {
            return Err(KeyFileError::TooManyKeys);
        }
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                if secret.len() < MIN_SECRET_LEN {
                    return Err(KeyFileError::ShortSecret(i + 1));
                }
                let mut bytes = [0u8; 32];
                salt.extract(secret)
                    .expand(&[HKDF_INFO], KeyLen)
                    .and_then(|okm| okm.fill(&mut bytes))
                    .expect("HKDF-SHA256 yields 32 bytes");
                let id = Sha256::digest(bytes)[..KEY_ID_LEN]
                    .try_into()
                    .expect("4 bytes");
                let aead =
                    UnboundKey::new(&AES_256_GCM_SIV, &bytes).expect("32 bytes is an AES-256 key");
                Ok(SealKey {
                    id,
                    aead: LessSafeKey::new(aead),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(SealKeys { keys })
    }

    /// The first key's id, in hex: names the key in logs without showing it.
    pub fn sealing_key_id(&self) -> String {
        hex(&self.keys[0].id)
    }

    /// Seals `expectation` until `expires` (unix seconds) for the cookie `name`.
    pub fn seal(
        &self,
        expectation: &Expectation,
        expires: u64,
        name: &str,
        nonce: [u8; NONCE_LEN],
    ) -> Result<String, TooLarge> {
        let key = &self.keys[0];
        // One buffer: the header, then the plaintext sealed where it stands, then the tag.
        let mut wire = Vec::with_capacity(HEADER_LEN + 256 + TAG_LEN);
        wire.push(VERSION);
        wire.extend_from_slice(&key.id);
        wire.extend_from_slice(&nonce);
        encode(expectation, expires, &mut wire).ok_or(TooLarge)?;
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut wire[HEADER_LEN..],
            )
            .map_err(|_| TooLarge)?;
        wire.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(wire))
    }

    /// Opens the cookie `name`'s `value` at `now` (unix seconds). The sealed state is a hash:
    /// the expectation gets the answer's own state when it is the sealed one, an empty state
    /// (which no answer's state equals) when it is another, and none when none was sealed.
    pub fn open(&self, value: &str, name: &str, answer_state: Option<&str>, now: u64) -> Unsealed {
        match self.open_plain(value, name) {
            None => Unsealed::Unreadable,
            Some(sealed) if sealed.expires <= now => Unsealed::Expired,
            Some(sealed) => {
                let state = sealed.state_hash.map(|hash| {
                    answer_state
                        .filter(|s| state_digest(s) == hash)
                        .unwrap_or_default()
                        .to_string()
                });
                Unsealed::Opened(Expectation {
                    state,
                    ..sealed.expectation
                })
            }
        }
    }

    /// When the cookie expires (unix seconds); `None` when it cannot be opened.
    pub fn expiry(&self, value: &str, name: &str) -> Option<u64> {
        self.open_plain(value, name).map(|s| s.expires)
    }

    fn open_plain(&self, value: &str, name: &str) -> Option<Decoded> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let mut wire = URL_SAFE_NO_PAD.decode(value).ok()?;
        if wire.len() < HEADER_LEN + TAG_LEN || wire[0] != VERSION {
            return None;
        }
        let key = self.keys.iter().find(|k| k.id[..] == wire[1..5])?;
        let nonce = Nonce::try_assume_unique_for_key(&wire[5..HEADER_LEN]).ok()?;
        let plaintext = key
            .aead
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut wire[HEADER_LEN..])
            .ok()?;
        decode(plaintext)
    }
}

fn state_digest(state: &str) -> [u8; 32] {
    Sha256::digest(state.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const HAS_STATE: u8 = 1;
const HAS_REQUEST_ID: u8 = 2;
const HAS_NONCE: u8 = 4;

/// `expires(u64 BE) | flags(u8) | [state SHA-256] | client_id | redirect_uri |
/// [client-request-id] | sub | [nonce] | acr count(u8) | acr…`, each string a u16 BE length and
/// its bytes.
fn encode(e: &Expectation, expires: u64, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    out.extend_from_slice(&expires.to_be_bytes());
    let flags = [
        (e.state.is_some(), HAS_STATE),
        (e.client_request_id.is_some(), HAS_REQUEST_ID),
        (e.nonce.is_some(), HAS_NONCE),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .fold(0, |acc, (_, bit)| acc | bit);
    out.push(flags);
    if let Some(state) = &e.state {
        out.extend_from_slice(&state_digest(state));
    }
    let put = |out: &mut Vec<u8>, s: &str| -> Option<()> {
        out.extend_from_slice(&u16::try_from(s.len()).ok()?.to_be_bytes());
        out.extend_from_slice(s.as_bytes());
        Some(())
    };
    put(out, &e.client_id)?;
    put(out, &e.redirect_uri)?;
    if let Some(id) = &e.client_request_id {
        put(out, id)?;
    }
    put(out, &e.sub)?;
    if let Some(nonce) = &e.nonce {
        put(out, nonce)?;
    }
    out.push(u8::try_from(e.acr_values.len()).ok()?);
    for acr in &e.acr_values {
        put(out, acr)?;
    }
    (out.len() - start <= MAX_PLAINTEXT).then_some(())
}

struct Decoded {
    expires: u64,
    state_hash: Option<[u8; 32]>,
    /// With `state: None`: the caller restores it from `state_hash`.
    expectation: Expectation,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        String::from_utf8(self.take(len.into())?.to_vec()).ok()
    }
}

fn decode(plain: &[u8]) -> Option<Decoded> {
    let mut r = Reader(plain);
    let expires = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let flags = r.take(1)?[0];
    let state_hash = match flags & HAS_STATE {
        0 => None,
        _ => Some(r.take(32)?.try_into().ok()?),
    };
    let client_id = r.string()?;
    let redirect_uri = r.string()?;
    let client_request_id = match flags & HAS_REQUEST_ID {
        0 => None,
        _ => Some(r.string()?),
    };
    let sub = r.string()?;
    let nonce = match flags & HAS_NONCE {
        0 => None,
        _ => Some(r.string()?),
    };
    let count = r.take(1)?[0];
    let acr_values = (0..count).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
    if !r.0.is_empty() || flags & !(HAS_STATE | HAS_REQUEST_ID | HAS_NONCE) != 0 {
        return None;
    }
    Some(Decoded {
        expires,
        state_hash,
        expectation: Expectation {
            state: None,
            client_id,
            redirect_uri,
            client_request_id,
            sub,
            nonce,
            acr_values,
        },
    })
}

#[cfg(test)]
#[path = "sealed_tests.rs"]
mod tests;
