//! Entra's authorize request to the EAM provider: its apps, redirect URIs and the form its
//! browser POSTs (README "7. Rewrite and forward", its example).

/// The client_id the OP issued to Entra, in the global cloud.
pub const CLIENT_ID: &str = "56c2b5e3-c41d-4c14-abcf-72d407f57650";
pub const USGOV_CLIENT_ID: &str = "0f7a9c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b";
pub const CHINA_CLIENT_ID: &str = "7d6c5b4a-3f2e-4d1c-9b8a-7f6e5d4c3b2a";

/// Entra's redirect URI in each cloud.
pub const GLOBAL_REDIRECT: &str =
    "https://login.microsoftonline.com/common/federation/externalauthprovider";
pub const USGOV_REDIRECT: &str =
    "https://login.microsoftonline.us/common/federation/externalauthprovider";
pub const CHINA_REDIRECT: &str =
    "https://login.partner.microsoftonline.cn/common/federation/externalauthprovider";

pub const STATE: &str = "AwABAAEAAAACAOz_BAD0_8h2Ejq7";
pub const NONCE: &str = "9f3e2c4a-1c2b-4d8e-9a7b-3c2d1e0f9a8b";
/// The `client-request-id` Entra adds.
pub const CRID: &str = "1b5f7c9e-4a3d-4e2f-8b1a-0c9d8e7f6a5b";
/// The `claims` parameter: an MFA-grade `acr` and `amr`.
pub const CLAIMS_PARAM: &str = r#"{"id_token":{"acr":{"essential":true,"values":["possessionorinherence"]},"amr":{"essential":true,"values":["face","fido","fpt","hwk","iris","otp","tel","pop","retina","sc","sms","swk","vbm"]}}}"#;
/// The content type of Entra's POST.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The ten parameters of Entra's auto-submitted form; the fixed ones (`scope`,
/// `response_type`, `response_mode`) are not fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub claims: String,
    pub nonce: String,
    pub state: String,
    pub client_request_id: String,
    pub id_token_hint: String,
}

impl EntraRequest {
    /// Entra's request for the global app ([`CLIENT_ID`]) carrying `hint`.
    pub fn new(hint: &str) -> EntraRequest {
        EntraRequest::for_app(CLIENT_ID, GLOBAL_REDIRECT, hint)
    }

    /// Entra's request for the app `client_id` of the cloud whose redirect URI is
    /// `redirect_uri`.
    pub fn for_app(client_id: &str, redirect_uri: &str, hint: &str) -> EntraRequest {
        EntraRequest {
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            claims: CLAIMS_PARAM.into(),
            nonce: NONCE.into(),
            state: STATE.into(),
            client_request_id: CRID.into(),
            id_token_hint: hint.into(),
        }
    }

    /// The decoded pairs, in Entra's order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        [
            ("scope", "openid"),
            ("response_type", "id_token"),
            ("response_mode", "form_post"),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("claims", &self.claims),
            ("nonce", &self.nonce),
            ("state", &self.state),
            ("client-request-id", &self.client_request_id),
            ("id_token_hint", &self.id_token_hint),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .into()
    }

    /// Each pair form-encoded as a browser writes it, `name=value`, in Entra's order.
    pub fn encoded_pairs(&self) -> Vec<String> {
        self.pairs()
            .iter()
            .map(|pair| encode_form(std::slice::from_ref(pair)))
            .collect()
    }

    /// The form body.
    pub fn body(&self) -> String {
        encode_form(&self.pairs())
    }
}

/// `pairs` form-encoded as a browser encodes a form.
pub fn encode_form(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_readme_example() {
        let body = EntraRequest::new("h").body();
        assert!(body.starts_with(
            "scope=openid&response_type=id_token&response_mode=form_post\
             &client_id=56c2b5e3-c41d-4c14-abcf-72d407f57650\
             &redirect_uri=https%3A%2F%2Flogin.microsoftonline.com%2Fcommon%2Ffederation%2Fexternalauthprovider\
             &claims=%7B%22id_token%22%3A%7B%22acr%22"
        ));
        assert!(body.ends_with(
            "&nonce=9f3e2c4a-1c2b-4d8e-9a7b-3c2d1e0f9a8b&state=AwABAAEAAAACAOz_BAD0_8h2Ejq7\
             &client-request-id=1b5f7c9e-4a3d-4e2f-8b1a-0c9d8e7f6a5b&id_token_hint=h"
        ));
        assert_eq!(
            EntraRequest::new("h").encoded_pairs().join("&"),
            body,
            "the pairs make the body"
        );
    }
}
