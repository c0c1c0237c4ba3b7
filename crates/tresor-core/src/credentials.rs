//! The model of write-only credentials and of providers: provider documents and their
//! validation, the credential secret (a type with no way into a response), credential kinds
//! and which injection each can serve.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::error::{CoreError, Result};
use crate::model::{Millis, parse_timestamp};

/// The largest credential metadata object, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A provider as the operator configures it (`PUT /v1/admin/providers/{name}`), without its
/// client secret, which is kept apart and sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDoc {
    pub base_url: String,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub allow_private_network: bool,
    pub inject: Inject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Config>,
}

/// How the credential reaches the upstream request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Inject {
    Bearer,
    Basic,
    Header {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
    Query {
        name: String,
    },
}

impl Inject {
    pub fn name(&self) -> &'static str {
        match self {
            Inject::Bearer => "bearer",
            Inject::Basic => "basic",
            Inject::Header { .. } => "header",
            Inject::Query { .. } => "query",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    AuthorizationCode,
    ClientCredentials,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

fn default_true() -> bool {
    true
}

/// OAuth 2.0 settings of a provider. The client secret is not a field: it never enters this
/// type, so it cannot be serialized back out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    pub grant: Grant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    pub token_url: String,
    pub client_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "default_true")]
    pub pkce: bool,
    #[serde(default)]
    pub token_auth: TokenAuth,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default)]
    pub return_to_prefixes: Vec<String>,
}

/// A provider document as sent: the document and the client secret, taken apart.
pub struct ProviderInput {
    pub doc: ProviderDoc,
    pub client_secret: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for ProviderInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderInput")
            .field("doc", &self.doc)
            .field("client_secret_set", &self.client_secret.is_some())
            .finish()
    }
}

/// Takes a provider body apart and validates it.
pub fn parse_provider(mut body: Value) -> Result<ProviderInput> {
    let client_secret = match body
        .get_mut("oauth2")
        .and_then(Value::as_object_mut)
        .and_then(|o| o.shift_remove("client_secret"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(Zeroizing::new(s)),
        Some(_) => {
            return Err(CoreError::invalid(
                "`oauth2.client_secret` must be a non-empty string",
            ));
        }
    };
    let doc: ProviderDoc = serde_json::from_value(body).map_err(|e| {
        let msg = e.to_string();
        CoreError::invalid(format!(
            "invalid provider document: {}",
            msg.split(" at line").next().unwrap_or(&msg)
        ))
    })?;
    validate_provider(&doc)?;
    Ok(ProviderInput { doc, client_secret })
}

/// The rules of a provider document that do not need the network.
pub fn validate_provider(doc: &ProviderDoc) -> Result<()> {
    let base = check_url(
        "base_url",
        &fill_placeholders_for_check(&doc.base_url)?,
        doc.allow_private_network,
    )?;
    if base.host_str().is_none() {
        return Err(CoreError::invalid("`base_url` has no host"));
    }
    // A host filled from a credential's metadata could be anything the app writes there, so
    // such a provider must say which hosts it may reach.
    if host_has_placeholder(&doc.base_url) && doc.allowed_hosts.is_empty() {
        return Err(CoreError::invalid(
            "a `base_url` whose host comes from {metadata.NAME} needs `allowed_hosts`",
        ));
    }
    for entry in &doc.allowed_hosts {
        validate_allowed_host(entry)?;
    }
    match &doc.inject {
        Inject::Header { name, prefix } => {
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(CoreError::invalid(
                    "`inject.name` must be an HTTP header name",
                ));
            }
            if prefix
                .as_deref()
                .is_some_and(|p| p.chars().any(char::is_control))
            {
                return Err(CoreError::invalid(
                    "`inject.prefix` may not hold control characters",
                ));
            }
        }
        Inject::Query { name } => {
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_control() || c == '&' || c == '=' || c == '#')
            {
                return Err(CoreError::invalid(
                    "`inject.name` must be a query parameter name",
                ));
            }
        }
        Inject::Bearer | Inject::Basic => {}
    }
    if let Some(o) = &doc.oauth2 {
        check_url("oauth2.token_url", &o.token_url, doc.allow_private_network)?;
        match (&o.grant, &o.authorize_url) {
            (Grant::AuthorizationCode, None) => {
                return Err(CoreError::invalid(
                    "the authorization_code grant needs `oauth2.authorize_url`",
                ));
            }
            (_, Some(u)) => {
                check_url("oauth2.authorize_url", u, doc.allow_private_network)?;
            }
            _ => {}
        }
        if o.client_id.is_empty() {
            return Err(CoreError::invalid("`oauth2.client_id` is required"));
        }
        for p in &o.return_to_prefixes {
            let u = url::Url::parse(p).map_err(|_| {
                CoreError::invalid("each `oauth2.return_to_prefixes` entry must be an absolute URL")
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(CoreError::invalid(
                    "`oauth2.return_to_prefixes` entries must be http or https URLs",
                ));
            }
        }
    }
    Ok(())
}

/// Does the authority part of a base URL template hold a placeholder?
fn host_has_placeholder(template: &str) -> bool {
    let after_scheme = template
        .split_once("://")
        .map_or(template, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('{')
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Replaces `{metadata.NAME}` placeholders with a harmless label so the template parses; a
/// malformed placeholder is refused.
fn fill_placeholders_for_check(template: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| CoreError::invalid("`base_url` has an unclosed `{`"))?;
        let name = after[..end].strip_prefix("metadata.").ok_or_else(|| {
            CoreError::invalid("`base_url` placeholders have the form {metadata.NAME}")
        })?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(CoreError::invalid(
                "a `base_url` placeholder name holds letters, digits and `_`",
            ));
        }
        out.push_str("placeholder");
        rest = &after[end + 1..];
    }
    if rest.contains('}') {
        return Err(CoreError::invalid("`base_url` has a stray `}`"));
    }
    out.push_str(rest);
    Ok(out)
}

fn check_url(field: &str, raw: &str, allow_private_network: bool) -> Result<url::Url> {
    let u = url::Url::parse(raw)
        .map_err(|_| CoreError::invalid(format!("`{field}` is not an absolute URL")))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_private_network => {}
        "http" => {
            return Err(CoreError::invalid(format!(
                "`{field}` must use https (http only with allow_private_network)"
            )));
        }
        _ => {
            return Err(CoreError::invalid(format!(
                "`{field}` must be an https URL"
            )));
        }
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(CoreError::invalid(format!(
            "`{field}` may not hold user information"
        )));
    }
    if u.fragment().is_some() {
        return Err(CoreError::invalid(format!(
            "`{field}` may not hold a fragment"
        )));
    }
    Ok(u)
}

/// `host`, `host:port` or `*.suffix` (optionally with `:port`).
fn validate_allowed_host(entry: &str) -> Result<()> {
    let bad = || {
        CoreError::invalid(format!(
            "`allowed_hosts` entry `{entry}` is not host, host:port or *.suffix"
        ))
    };
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (entry, None),
    };
    if let Some(p) = port {
        p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !name.starts_with('.');
    if ok { Ok(()) } else { Err(bad()) }
}

/// What a credential is, derived from the fields of its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    OAuth2,
    ApiKey,
    Basic,
    ClientCredentials,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::OAuth2 => "oauth2",
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Basic => "basic",
            CredentialKind::ClientCredentials => "client_credentials",
        }
    }

    /// Can a credential of this kind serve the provider's injection?
    pub fn serves(self, provider: &ProviderDoc) -> bool {
        let cc_provider = provider
            .oauth2
            .as_ref()
            .is_some_and(|o| o.grant == Grant::ClientCredentials);
        match (&provider.inject, self) {
            (_, CredentialKind::ClientCredentials) if !cc_provider => false,
            (Inject::Bearer, k) => matches!(
                k,
                CredentialKind::OAuth2 | CredentialKind::ClientCredentials
            ),
            (Inject::Basic, k) => k == CredentialKind::Basic,
            (Inject::Header { .. } | Inject::Query { .. }, k) => {
                matches!(
                    k,
                    CredentialKind::ApiKey
                        | CredentialKind::OAuth2
                        | CredentialKind::ClientCredentials
                )
            }
        }
    }
}

/// The secret part of a credential: compact JSON, zeroized on drop. It has no `Serialize` and
/// its `Debug` prints nothing of it, so it cannot reach a response, a log or an error.
pub struct CredentialSecret {
    json: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CredentialSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialSecret([redacted])")
    }
}

/// Fields a secret may hold.
const SECRET_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "expires_at",
    "expires_in",
    "token_type",
    "scope",
    "id_token",
    "api_key",
    "username",
    "password",
    "client_id",
    "client_secret",
];

/// A validated secret and what it says about itself.
pub struct ParsedSecret {
    pub secret: CredentialSecret,
    pub kind: CredentialKind,
    pub token_expires_at: Option<Millis>,
    pub scopes: Vec<String>,
}

impl CredentialSecret {
    /// Validates a secret object against its provider and derives its kind.
    pub fn parse(
        obj: &Map<String, Value>,
        provider: &ProviderDoc,
        now: Millis,
    ) -> Result<ParsedSecret> {
        for (k, v) in obj {
            if !SECRET_FIELDS.contains(&k.as_str()) {
                return Err(CoreError::invalid(format!("unknown secret field `{k}`")));
            }
            let ok = match k.as_str() {
                "expires_at" => v.is_string() || v.is_i64() || v.is_u64(),
                "expires_in" => v.is_i64() || v.is_u64(),
                _ => v.as_str().is_some_and(|s| !s.is_empty()),
            };
            if !ok {
                return Err(CoreError::invalid(format!(
                    "secret field `{k}` has the wrong type"
                )));
            }
        }
        let has = |k: &str| obj.contains_key(k);
        let cc_provider = provider
            .oauth2
            .as_ref()
            .is_some_and(|o| o.grant == Grant::ClientCredentials);
        let kind = if has("access_token") {
            CredentialKind::OAuth2
        } else if has("api_key") {
            CredentialKind::ApiKey
        } else if has("username") && has("password") {
            CredentialKind::Basic
        } else if (has("client_id") && has("client_secret")) || (obj.is_empty() && cc_provider) {
            CredentialKind::ClientCredentials
        } else {
            return Err(CoreError::invalid(
                "the secret must hold access_token, api_key, username and password, or \
                 client_id and client_secret",
            ));
        };
        if !kind.serves(provider) {
            return Err(CoreError::invalid(format!(
                "a {} credential cannot serve this provider's `{}` injection",
                kind.as_str(),
                provider.inject.name()
            )));
        }
        let token_expires_at = match (obj.get("expires_at"), obj.get("expires_in")) {
            (Some(Value::String(s)), _) => Some(parse_timestamp(s)?),
            (Some(v), _) => v.as_i64().map(|secs| secs.saturating_mul(1000)),
            (None, Some(v)) => v
                .as_i64()
                .map(|secs| now.saturating_add(secs.saturating_mul(1000))),
            (None, None) => None,
        };
        let scopes = obj
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let json = serde_json::to_vec(obj)
            .map_err(|e| CoreError::internal(format!("secret encoding failed: {e}")))?;
        Ok(ParsedSecret {
            secret: CredentialSecret {
                json: Zeroizing::new(json),
            },
            kind,
            token_expires_at,
            scopes,
        })
    }

    /// The bytes to seal. Only the service calls this, to seal them for storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.json
    }

    /// Rebuilds a secret opened from storage.
    pub fn from_opened(json: Zeroizing<Vec<u8>>) -> CredentialSecret {
        CredentialSecret { json }
    }

    /// One string field of the secret, for injection into an outbound request.
    pub fn field(&self, name: &str) -> Option<Zeroizing<String>> {
        let v: Value = serde_json::from_slice(&self.json).ok()?;
        v.get(name)
            .and_then(Value::as_str)
            .map(|s| Zeroizing::new(s.to_owned()))
    }
}

/// Checks a metadata object: at most 16 KiB of compact JSON.
pub fn check_metadata(meta: &Map<String, Value>) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(meta)
        .map_err(|e| CoreError::internal(format!("metadata encoding failed: {e}")))?;
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(CoreError::PayloadTooLarge(format!(
            "`metadata` is {} bytes; at most {MAX_METADATA_BYTES} are allowed",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider(inject: Value, oauth2: Option<Value>) -> Result<ProviderInput> {
        let mut doc = json!({"base_url": "https://api.example.com/v2/", "inject": inject});
        if let (Some(o), Some(obj)) = (oauth2, doc.as_object_mut()) {
            obj.insert("oauth2".into(), o);
        }
        parse_provider(doc)
    }

    #[test]
    fn provider_documents_are_validated() {
        let check = |doc: Value, ok: bool| {
            let r = parse_provider(doc.clone());
            assert_eq!(r.is_ok(), ok, "{doc}: {:?}", r.err());
        };
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "bearer"}}),
            true,
        );
        check(
            json!({"base_url": "https://{metadata.shop}.example.com/admin/", "inject": {"type": "bearer"}}),
            false,
        );
        check(
            json!({"base_url": "https://{metadata.shop}.example.com/admin/", "allowed_hosts": ["*.example.com"], "inject": {"type": "bearer"}}),
            true,
        );
        check(
            json!({"base_url": "https://api.example.com/{metadata.shop}/", "inject": {"type": "bearer"}}),
            true,
        );
        check(
            json!({"base_url": "https://{shop}.example.com/", "inject": {"type": "bearer"}}),
            false,
        );
        check(
            json!({"base_url": "https://{metadata.a-b}.example.com/", "inject": {"type": "bearer"}}),
            false,
        );
        check(
            json!({"base_url": "http://api.example.com/", "inject": {"type": "bearer"}}),
            false,
        );
        check(
            json!({"base_url": "http://127.0.0.1:9/", "allow_private_network": true, "inject": {"type": "bearer"}}),
            true,
        );
        check(
            json!({"base_url": "https://u:p@api.example.com/", "inject": {"type": "bearer"}}),
            false,
        );
        check(
            json!({"base_url": "ftp://api.example.com/", "inject": {"type": "bearer"}}),
            false,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "nope"}}),
            false,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "header", "name": "X-Api-Key", "prefix": "Token "}}),
            true,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "header", "name": "X Api"}}),
            false,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "query", "name": "api_key"}}),
            true,
        );
        check(
            json!({"base_url": "https://api.example.com/", "allowed_hosts": ["api.example.com", "*.example.com:8443"], "inject": {"type": "bearer"}}),
            true,
        );
        check(
            json!({"base_url": "https://api.example.com/", "allowed_hosts": ["a/b"], "inject": {"type": "bearer"}}),
            false,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "bearer"}, "extra": 1}),
            false,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "bearer"},
            "oauth2": {"grant": "authorization_code", "token_url": "https://e.com/t", "client_id": "c"}}),
            false,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "bearer"},
            "oauth2": {"grant": "authorization_code", "authorize_url": "https://e.com/a", "token_url": "https://e.com/t", "client_id": "c", "client_secret": "s"}}),
            true,
        );
        check(
            json!({"base_url": "https://api.example.com/", "inject": {"type": "bearer"},
            "oauth2": {"grant": "client_credentials", "token_url": "http://e.com/t", "client_id": "c"}}),
            false,
        );
    }

    #[test]
    fn the_client_secret_never_enters_the_document() {
        let p = provider(
            json!({"type": "bearer"}),
            Some(json!({"grant": "client_credentials", "token_url": "https://e.com/t", "client_id": "c", "client_secret": "SHHH-123"})),
        )
        .unwrap();
        assert_eq!(
            p.client_secret.as_deref().map(String::as_str),
            Some("SHHH-123")
        );
        let text = serde_json::to_string(&p.doc).unwrap();
        assert!(!text.contains("SHHH-123"));
        assert!(!format!("{p:?}").contains("SHHH-123"));
    }

    #[test]
    fn kinds_follow_the_secret_and_must_serve_the_injection() {
        let bearer = provider(json!({"type": "bearer"}), None).unwrap().doc;
        let basic = provider(json!({"type": "basic"}), None).unwrap().doc;
        let header = provider(json!({"type": "header", "name": "X-Key"}), None)
            .unwrap()
            .doc;
        let cc = provider(
            json!({"type": "bearer"}),
            Some(json!({"grant": "client_credentials", "token_url": "https://e.com/t", "client_id": "c"})),
        )
        .unwrap()
        .doc;
        let check = |secret: Value, p: &ProviderDoc, want: Option<CredentialKind>| {
            let obj = secret.as_object().cloned().unwrap_or_default();
            let got = CredentialSecret::parse(&obj, p, 0).ok().map(|s| s.kind);
            assert_eq!(got, want, "{secret}");
        };
        check(
            json!({"access_token": "a", "refresh_token": "r"}),
            &bearer,
            Some(CredentialKind::OAuth2),
        );
        check(json!({"api_key": "k"}), &bearer, None);
        check(
            json!({"api_key": "k"}),
            &header,
            Some(CredentialKind::ApiKey),
        );
        check(
            json!({"access_token": "a"}),
            &header,
            Some(CredentialKind::OAuth2),
        );
        check(
            json!({"username": "u", "password": "p"}),
            &basic,
            Some(CredentialKind::Basic),
        );
        check(json!({"username": "u"}), &basic, None);
        check(
            json!({"client_id": "i", "client_secret": "s"}),
            &cc,
            Some(CredentialKind::ClientCredentials),
        );
        check(json!({}), &cc, Some(CredentialKind::ClientCredentials));
        check(json!({}), &bearer, None);
        check(
            json!({"client_id": "i", "client_secret": "s"}),
            &bearer,
            None,
        );
        check(json!({"access_token": "a", "bogus": "x"}), &bearer, None);
        check(json!({"access_token": 5}), &bearer, None);
    }

    #[test]
    fn token_expiry_and_scopes_are_read_from_the_secret() {
        let bearer = provider(json!({"type": "bearer"}), None).unwrap().doc;
        let obj =
            json!({"access_token": "TOKEN-CANARY-9", "expires_in": 60, "scope": "read write"});
        let s = CredentialSecret::parse(obj.as_object().unwrap(), &bearer, 1_000).unwrap();
        assert_eq!(s.token_expires_at, Some(61_000));
        assert_eq!(s.scopes, ["read", "write"]);
        assert!(!format!("{:?}", s.secret).contains("TOKEN-CANARY-9"));
        let obj = json!({"access_token": "a", "expires_at": "2026-11-22T05:03:14.123Z"});
        let s = CredentialSecret::parse(obj.as_object().unwrap(), &bearer, 0).unwrap();
        assert_eq!(s.token_expires_at, Some(1_795_323_794_123));
    }
}
