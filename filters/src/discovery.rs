//! What the proxy takes from the OP's discovery document: where the OP accepts authorization
//! requests. The proxy filters those paths on top of `authorize.paths`, so Entra's POST and
//! spoofed `entra_*` parameters cannot reach the OP under a path nobody configured
//! (README "Authorize paths follow the OP").

use serde_json::Value;

/// The OP's endpoints that take authorization request parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpEndpoints {
    pub issuer: Option<String>,
    /// The path of `authorization_endpoint`.
    pub authorization_path: Option<String>,
    /// The path of `pushed_authorization_request_endpoint` (PAR, RFC 9126): the parameters
    /// pushed there are the authorization request's, read later by `request_uri`.
    pub par_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryError {
    NotJson,
    NoAuthorizationEndpoint,
}

impl DiscoveryError {
    pub fn reason(self) -> &'static str {
        match self {
            DiscoveryError::NotJson => "not a JSON object",
            DiscoveryError::NoAuthorizationEndpoint => "no authorization_endpoint URL",
        }
    }
}

impl OpEndpoints {
    pub fn parse(body: &[u8]) -> Result<OpEndpoints, DiscoveryError> {
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
            return Err(DiscoveryError::NotJson);
        };
        let path_of = |member: &str| {
            doc.get(member)
                .and_then(Value::as_str)
                .and_then(|url| url::Url::parse(url).ok())
                .map(|url| url.path().to_string())
        };
        let endpoints = OpEndpoints {
            issuer: doc.get("issuer").and_then(Value::as_str).map(String::from),
            authorization_path: path_of("authorization_endpoint"),
            par_path: path_of("pushed_authorization_request_endpoint"),
        };
        if endpoints.authorization_path.is_none() {
            return Err(DiscoveryError::NoAuthorizationEndpoint);
        }
        Ok(endpoints)
    }

    /// The paths to filter as authorize paths.
    pub fn paths(&self) -> Vec<String> {
        self.authorization_path
            .iter()
            .chain(&self.par_path)
            .cloned()
            .collect()
    }

    /// The discovered paths that `configured` does not already cover.
    pub fn unlisted(&self, configured: &[String]) -> Vec<String> {
        self.paths()
            .into_iter()
            .filter(|p| !crate::policy::path_is_one_of(configured, p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_as_paths() {
        let doc = br#"{"issuer":"https://op.example/x","authorization_endpoint":"https://op.example/x/auth?ui=1",
            "pushed_authorization_request_endpoint":"https://op.example/x/request"}"#;
        let e = OpEndpoints::parse(doc).unwrap();
        assert_eq!(e.issuer.as_deref(), Some("https://op.example/x"));
        assert_eq!(e.paths(), ["/x/auth", "/x/request"]);
        assert_eq!(e.unlisted(&["/x/auth".into()]), ["/x/request"]);
        assert!(e
            .unlisted(&["/x/auth".into(), "/x/request".into()])
            .is_empty());
    }

    #[test]
    fn a_document_without_an_authorization_endpoint_is_refused() {
        assert_eq!(OpEndpoints::parse(b"[]"), Err(DiscoveryError::NotJson));
        assert_eq!(OpEndpoints::parse(b"{"), Err(DiscoveryError::NotJson));
        assert_eq!(
            OpEndpoints::parse(br#"{"authorization_endpoint":"not a url"}"#),
            Err(DiscoveryError::NoAuthorizationEndpoint)
        );
        let e = OpEndpoints::parse(br#"{"authorization_endpoint":"https://op/auth"}"#).unwrap();
        assert_eq!(e.paths(), ["/auth"]);
    }
}
