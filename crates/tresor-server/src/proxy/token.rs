//! Calls to a provider's OAuth token endpoint: the code exchange, refreshes and the
//! client-credentials grant. The same destination rules as the request proxy apply (checked
//! address, pinned DNS, no redirects, capped time and size).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tresor_core::CoreError;
use tresor_core::credentials::TokenAuth;
use tresor_core::service::{TokenEndpoint, TokenSet};
use zeroize::Zeroizing;

use super::address::resolve_checked;
use super::forward::ProxyLimits;

/// Why a token request did not produce tokens.
#[derive(Debug)]
pub enum TokenError {
    /// The provider answered with an OAuth error code (`invalid_grant`, `access_denied`, …).
    Provider(String),
    /// The provider could not be reached or answered something that is not a token response.
    Failed(String),
}

impl TokenError {
    pub fn describe(&self) -> String {
        match self {
            TokenError::Provider(e) => e.clone(),
            TokenError::Failed(e) => e.clone(),
        }
    }
}

/// Largest token response accepted.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// POSTs `params` (form-encoded) with the client's authentication and parses the answer.
pub async fn request_tokens(
    endpoint: &TokenEndpoint,
    params: &[(&str, &str)],
    limits: &ProxyLimits,
) -> Result<TokenSet, TokenError> {
    let addrs = resolve_checked(&endpoint.url, endpoint.allow_private_network)
        .await
        .map_err(|e| TokenError::Failed(e.public_message()))?;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(limits.timeout)
        .connect_timeout(limits.timeout.min(std::time::Duration::from_secs(10)));
    if let Some(host) = endpoint.url.host_str() {
        builder =
            builder.resolve_to_addrs(host.trim_start_matches('[').trim_end_matches(']'), &addrs);
    }
    let client = builder
        .build()
        .map_err(|e| TokenError::Failed(format!("outbound client: {e}")))?;
    let mut req = client
        .post(endpoint.url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    if let Some(auth) = basic_auth(endpoint)? {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    let body = form_body(endpoint, params);
    let mut resp = req.body(body.to_string()).send().await.map_err(|e| {
        TokenError::Failed(if e.is_timeout() {
            "the token endpoint did not answer in time".into()
        } else {
            "the token endpoint could not be reached".into()
        })
    })?;
    let status = resp.status();
    let mut bytes = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| TokenError::Failed("the token endpoint's answer broke off".into()))?
    {
        if bytes.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(TokenError::Failed(
                "the token endpoint's answer is too large".into(),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        let code = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .map(|e| {
                e.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect::<String>()
            });
        return Err(match code {
            Some(c) if !c.is_empty() => TokenError::Provider(c),
            _ => TokenError::Failed(format!("the token endpoint answered {}", status.as_u16())),
        });
    }
    let Some(Value::Object(obj)) = json else {
        return Err(TokenError::Failed(
            "the token endpoint's answer is not a JSON object".into(),
        ));
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access_token = text("access_token")
        .map(|s| Zeroizing::new(s.to_owned()))
        .ok_or_else(|| {
            TokenError::Failed("the token endpoint's answer has no access_token".into())
        })?;
    Ok(TokenSet {
        access_token,
        refresh_token: text("refresh_token").map(|s| Zeroizing::new(s.to_owned())),
        expires_in: obj.get("expires_in").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        }),
        scope: text("scope").map(str::to_owned),
        token_type: text("token_type").map(str::to_owned),
    })
}

/// The form body, with the client's credentials in it for `client_secret_post` and public
/// clients.
fn form_body(endpoint: &TokenEndpoint, params: &[(&str, &str)]) -> Zeroizing<String> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        form.append_pair(k, v);
    }
    match (&endpoint.client_secret, endpoint.auth) {
        (Some(_), TokenAuth::ClientSecretBasic) => {}
        (Some(secret), TokenAuth::ClientSecretPost) => {
            form.append_pair("client_id", &endpoint.client_id);
            form.append_pair("client_secret", secret);
        }
        (None, _) => {
            form.append_pair("client_id", &endpoint.client_id);
        }
    }
    Zeroizing::new(form.finish())
}

/// `client_secret_basic`: both parts form-encoded before Basic (RFC 6749 2.3.1).
fn basic_auth(
    endpoint: &TokenEndpoint,
) -> Result<Option<reqwest::header::HeaderValue>, TokenError> {
    let (Some(secret), TokenAuth::ClientSecretBasic) = (&endpoint.client_secret, endpoint.auth)
    else {
        return Ok(None);
    };
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = Zeroizing::new(format!("{}:{}", enc(&endpoint.client_id), enc(secret)));
    let value = Zeroizing::new(format!("Basic {}", STANDARD.encode(pair.as_bytes())));
    let mut hv = reqwest::header::HeaderValue::from_str(&value)
        .map_err(|_| TokenError::Failed("the client secret cannot go into a header".into()))?;
    hv.set_sensitive(true);
    Ok(Some(hv))
}

/// Keeps a parse error's cause out of the way of `CoreError`'s variants.
impl From<TokenError> for CoreError {
    fn from(e: TokenError) -> CoreError {
        CoreError::UpstreamFailed(e.describe())
    }
}
