//! The guard's cookies (`__Host-eam-g-<hash>`): read from the browser's request, never sent on to
//! the upstream, and set on the answer to an accepted Entra request (README "Several replicas").

use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "__Host-eam-g-";
/// Guard cookies a browser keeps at once: each concurrent sign-in has its own, and four of
/// `filters::sealed::MAX_VALUE_LEN` stay far below the 8 KB request lines of nginx and others.
pub const MAX_LIVE: usize = 4;
/// Guard cookies read from one request; more are stripped unread.
const MAX_READ: usize = 8;

/// A cookie's name for one request: named by its state, or by its nonce when it has none (the
/// two hashed apart), 16 hex digits either way.
pub fn name(state: Option<&str>, nonce: Option<&str>) -> Option<String> {
    let digest = match (state, nonce) {
        (Some(state), _) => Sha256::digest(state.as_bytes()),
        (None, Some(nonce)) => {
            let mut h = Sha256::new();
            h.update([b'n']);
            h.update(nonce.as_bytes());
            h.finalize()
        }
        (None, None) => return None,
    };
    let mut name = String::with_capacity(PREFIX.len() + 16);
    name.push_str(PREFIX);
    super::push_hex(&mut name, &digest[..8]);
    Some(name)
}

/// The guard cookies a request carried, in the order the browser sent them (oldest first: same
/// path, so by creation time, RFC 6265 section 5.4).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuardCookies(Vec<(String, String)>);

impl GuardCookies {
    /// Reads every `Cookie` field (HTTP/2 sends one per cookie): at most `MAX_READ`, each
    /// no larger than a sealed value can be.
    pub fn read(req: &RequestHeader) -> GuardCookies {
        let mut found = Vec::new();
        for value in req.headers.get_all(header::COOKIE) {
            for pair in pairs(value.as_bytes()) {
                let Some(rest) = pair.strip_prefix(PREFIX.as_bytes()) else {
                    continue;
                };
                let Some(eq) = rest.iter().position(|b| *b == b'=') else {
                    continue;
                };
                let (name, value) = pair.split_at(PREFIX.len() + eq);
                let value = &value[1..];
                let fits = value.len() <= filters::sealed::MAX_VALUE_LEN;
                if let (true, Ok(name), Ok(value)) =
                    (fits, std::str::from_utf8(name), std::str::from_utf8(value))
                {
                    if found.len() < MAX_READ && !found.iter().any(|(n, _)| n == name) {
                        found.push((name.to_string(), value.to_string()));
                    }
                }
            }
        }
        GuardCookies(found)
    }

    pub fn named(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> GuardCookies {
        GuardCookies(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }
}

/// The `name=value` pairs of one `Cookie` field, trimmed.
fn pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b';')
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
}

/// Removes the guard cookies from every `Cookie` field of a request going upstream; a field left
/// empty goes. The OP has no use for them, and they are the proxy's to keep from it.
pub fn strip(req: &mut RequestHeader) -> pingora::Result<()> {
    let marker = PREFIX.as_bytes();
    let carries = |v: &[u8]| v.windows(marker.len()).any(|w| w == marker);
    if !req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| carries(v.as_bytes()))
    {
        return Ok(());
    }
    let kept: Vec<Vec<u8>> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| {
            pairs(v.as_bytes())
                .filter(|p| !p.starts_with(marker))
                .collect::<Vec<_>>()
                .join(&b"; "[..])
        })
        .filter(|v| !v.is_empty())
        .collect();
    req.remove_header(&header::COOKIE);
    for value in kept {
        let value = http::HeaderValue::from_bytes(&value).map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InternalError, "cookie field", e)
        })?;
        req.append_header(header::COOKIE, value)?;
    }
    Ok(())
}

/// A `Set-Cookie` value for the guard: `Secure` and `Path=/` without `Domain` as `__Host-`
/// requires; `SameSite=None` because Entra's POST, and steps of the OP's login after it, arrive
/// cross-site; `HttpOnly` since no script needs it.
pub fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Secure; HttpOnly; Path=/; SameSite=None; Max-Age={max_age}")
}

pub fn add_set_cookies(resp: &mut ResponseHeader, values: &[String]) -> pingora::Result<()> {
    for value in values {
        resp.append_header(header::SET_COOKIE, value.as_str())?;
    }
    Ok(())
}

/// The cookies to expire so that, with the one being set (`new`), at most `MAX_LIVE` remain:
/// the oldest first, by `age_key` (smaller is older), ties in the browser's order.
pub fn to_expire<'a>(
    sent: &'a GuardCookies,
    new: &str,
    age_key: impl Fn(&str, &str) -> u64,
) -> Vec<&'a str> {
    let mut others: Vec<(u64, &str)> = sent
        .iter()
        .filter(|(n, _)| *n != new)
        .map(|(n, v)| (age_key(n, v), n))
        .collect();
    let excess = (others.len() + 1).saturating_sub(MAX_LIVE);
    others.sort_by_key(|(age, _)| *age);
    others.into_iter().take(excess).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cookies: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for c in cookies {
            req.append_header(header::COOKIE, *c).unwrap();
        }
        req
    }

    fn cookies(req: &RequestHeader) -> Vec<String> {
        req.headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn guard_cookies_are_read_from_every_field_and_stripped() {
        let a = "__Host-eam-g-00000000000000aa";
        let b = "__Host-eam-g-00000000000000bb";
        let mut req = request(&[
            &format!("sid=1; {a}=AAA; theme=dark"),
            &format!("{b}=BBB"),
            "other=2",
        ]);
        let read = GuardCookies::read(&req);
        assert_eq!(read, GuardCookies::from_pairs(&[(a, "AAA"), (b, "BBB")]));
        assert_eq!(read.named(b), Some("BBB"));
        strip(&mut req).unwrap();
        assert_eq!(cookies(&req), ["sid=1; theme=dark", "other=2"]);
        // A request without them is left exactly as it came.
        let mut plain = request(&["a=1;b=2"]);
        strip(&mut plain).unwrap();
        assert_eq!(cookies(&plain), ["a=1;b=2"]);
        let mut only = request(&[&format!("{a}=AAA")]);
        strip(&mut only).unwrap();
        assert!(cookies(&only).is_empty());
    }

    #[test]
    fn reading_is_bounded_in_count_and_size() {
        let many: Vec<String> = (0..20)
            .map(|i| format!("__Host-eam-g-{i:016x}=v{i}"))
            .collect();
        let big = format!("__Host-eam-g-big={}", "x".repeat(5000));
        let mut req = request(&[&many.join("; "), &big, "__Host-eam-g-noequals"]);
        let read = GuardCookies::read(&req);
        assert_eq!(read.iter().count(), MAX_READ);
        assert!(read.named("__Host-eam-g-big").is_none());
        strip(&mut req).unwrap();
        assert!(cookies(&req).is_empty());
    }

    #[test]
    fn names_are_by_state_or_by_nonce() {
        let by_state = name(Some("st"), Some("n")).unwrap();
        assert_eq!(
            by_state,
            format!("{PREFIX}{}", super::super::state_hash("st"))
        );
        let by_nonce = name(None, Some("st")).unwrap();
        assert_ne!(by_nonce, by_state);
        assert_eq!(by_nonce.len(), PREFIX.len() + 16);
        assert_eq!(name(None, None), None);
    }

    #[test]
    fn at_most_four_live_the_oldest_expired() {
        let sent = GuardCookies::from_pairs(&[
            ("c1", "30"),
            ("c2", "10"),
            ("c3", "20"),
            ("c4", "40"),
            ("c5", "50"),
        ]);
        let age = |_: &str, v: &str| v.parse().unwrap();
        assert_eq!(to_expire(&sent, "new", age), ["c2", "c3"]);
        // The one being set again replaces itself.
        assert_eq!(to_expire(&sent, "c4", age), ["c2"]);
        let three = GuardCookies::from_pairs(&[("c1", "1"), ("c2", "2"), ("c3", "3")]);
        assert!(to_expire(&three, "new", age).is_empty());
        assert_eq!(
            set_cookie("n", "v", 600),
            "n=v; Secure; HttpOnly; Path=/; SameSite=None; Max-Age=600"
        );
    }
}
