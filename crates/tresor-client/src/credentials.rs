//! [`CredentialsClient`]: write-only credentials (`/v1/credentials`). A credential's secret is
//! sent once and never comes back: every answer is [`CredentialMeta`].

use std::fmt;
use std::str::FromStr;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroize;

use crate::client::{Client, Request};
use crate::encode::{Query, path_segment};
use crate::error::{Error, Result};
use crate::types::ListAnswer;

/// Who holds a credential: the installation itself, or the account it is installed in (shared
/// by every installation of that account that has the scopes, and kept when one app is
/// uninstalled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    #[default]
    Installation,
    Account,
}

impl Owner {
    /// Both owners, in the contract's order.
    pub const ALL: [Owner; 2] = [Owner::Installation, Owner::Account];

    /// The owner as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Installation => "installation",
            Owner::Account => "account",
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Owner {
    type Err = Error;

    fn from_str(s: &str) -> Result<Owner> {
        Owner::ALL
            .into_iter()
            .find(|owner| owner.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown owner {s:?} (expected installation or account)"
                ))
            })
    }
}

/// A credential's metadata: what every credential call answers. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialMeta {
    pub key: String,
    pub owner: Owner,
    /// The provider's name (`PUT /v1/admin/providers/{name}`).
    pub provider: String,
    /// `oauth2`, `api_key`, `basic` or `client_credentials`, derived from the secret's fields.
    /// A string, so that a kind added later still decodes.
    pub kind: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    /// When the credential itself expires (its TTL).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// When the stored OAuth access token expires (the server refreshes it before).
    #[serde(default)]
    pub token_expires_at: Option<String>,
    /// The OAuth scopes granted, if any.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// What was stored as `metadata` (never secret).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// `true` once a refresh was answered `invalid_grant`: run the OAuth flow again.
    #[serde(default)]
    pub needs_reconsent: bool,
}

/// What [`CredentialsClient::put`] stores.
///
/// `Debug` never shows the secret, the type is deliberately not `Serialize`, and dropping it
/// wipes the secret's strings and member names from memory (best effort: serde_json offers no
/// way to wipe numbers, and copies made before the value was built are the caller's).
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialPut {
    /// `None` sends no owner: the server stores it in the installation.
    pub owner: Option<Owner>,
    /// The provider's name; it decides how the credential is injected.
    pub provider: String,
    /// A JSON object, e.g. `{"access_token", "refresh_token"?, "expires_at"?}`, `{"api_key"}`,
    /// or `{"username", "password"}`.
    pub secret: Value,
    /// Non-secret data, e.g. what `{metadata.NAME}` placeholders of the provider's `base_url`
    /// use; at most 16 KiB.
    pub metadata: Option<Map<String, Value>>,
    /// Expire the credential after this many seconds (1..=3,153,600,000).
    pub ttl_seconds: Option<u64>,
}

impl CredentialPut {
    /// A credential for `provider` with this secret object, in the installation, without
    /// metadata or expiry.
    pub fn new(provider: impl Into<String>, secret: Value) -> CredentialPut {
        CredentialPut {
            owner: None,
            provider: provider.into(),
            secret,
            metadata: None,
            ttl_seconds: None,
        }
    }

    /// `{"api_key": api_key}`.
    pub fn api_key(provider: impl Into<String>, api_key: impl Into<String>) -> CredentialPut {
        let mut secret = Map::new();
        secret.insert("api_key".to_owned(), Value::String(api_key.into()));
        CredentialPut::new(provider, Value::Object(secret))
    }

    /// `{"username": username, "password": password}`.
    pub fn basic(
        provider: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> CredentialPut {
        let mut secret = Map::new();
        secret.insert("username".to_owned(), Value::String(username.into()));
        secret.insert("password".to_owned(), Value::String(password.into()));
        CredentialPut::new(provider, Value::Object(secret))
    }

    /// Store it in the installation or in the account.
    pub fn owner(mut self, owner: Owner) -> CredentialPut {
        self.owner = Some(owner);
        self
    }

    /// Attach non-secret metadata.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> CredentialPut {
        self.metadata = Some(metadata);
        self
    }

    /// Expire the credential after `ttl_seconds`.
    pub fn ttl_seconds(mut self, ttl_seconds: u64) -> CredentialPut {
        self.ttl_seconds = Some(ttl_seconds);
        self
    }
}

impl fmt::Debug for CredentialPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialPut")
            .field("owner", &self.owner)
            .field("provider", &self.provider)
            .field("secret", &"<redacted>")
            .field("metadata", &self.metadata)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish()
    }
}

impl Drop for CredentialPut {
    fn drop(&mut self) {
        zeroize_json(&mut self.secret);
    }
}

/// Overwrites every string and object member name inside `value` with zeros and leaves
/// `Value::Null` behind: a best-effort wipe of a secret JSON document before its memory is
/// freed. Numbers cannot be wiped (serde_json gives no mutable access to their digits).
pub fn zeroize_json(value: &mut Value) {
    match std::mem::take(value) {
        Value::String(mut text) => text.zeroize(),
        Value::Array(mut items) => items.iter_mut().for_each(zeroize_json),
        Value::Object(members) => {
            for (mut name, mut member) in members {
                name.zeroize();
                zeroize_json(&mut member);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The credential calls, as seen by the client's installation token: its own credentials and
/// its account's, under one set of keys.
#[derive(Debug, Clone)]
pub struct CredentialsClient {
    client: Client,
}

impl CredentialsClient {
    pub(crate) fn new(client: Client) -> CredentialsClient {
        CredentialsClient { client }
    }

    /// Stores a credential under `key`, replacing one the token may replace; answers its
    /// metadata and `true` when it was created (201), `false` when replaced (200).
    ///
    /// A key the other owner already holds is 409 `conflict`; an unknown provider, or a secret
    /// that cannot serve the provider's injection, is 400. The secret must be a JSON object;
    /// anything else is refused before sending. The encoded request body is wiped once the
    /// request is over (best effort: the HTTP and TLS layers may have buffered copies).
    pub async fn put(
        &self,
        key: &str,
        credential: &CredentialPut,
    ) -> Result<(CredentialMeta, bool)> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            owner: Option<Owner>,
            provider: &'a str,
            secret: &'a Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<&'a Map<String, Value>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ttl_seconds: Option<u64>,
        }
        if !credential.secret.is_object() {
            return Err(Error::InvalidArgument(
                "the credential secret must be a JSON object".to_owned(),
            ));
        }
        let request = self
            .credential_request(Method::PUT, key)?
            .sensitive_json_body(&Body {
                owner: credential.owner,
                provider: &credential.provider,
                secret: &credential.secret,
                metadata: credential.metadata.as_ref(),
                ttl_seconds: credential.ttl_seconds,
            })?;
        let answer = self.client.call(request).await?;
        let created = answer.status == StatusCode::CREATED;
        let meta = answer.json("credential metadata")?;
        Ok((meta, created))
    }

    /// A credential's metadata; `None` when the key does not exist (or expired).
    pub async fn get(&self, key: &str) -> Result<Option<CredentialMeta>> {
        let request = self.credential_request(Method::GET, key)?;
        let answer = self.client.send(request).await?;
        if answer.status.is_success() {
            return answer.json("credential metadata").map(Some);
        }
        let err = answer.into_error();
        if err.is_not_found() {
            Ok(None)
        } else {
            Err(err)
        }
    }

    /// Deletes a credential; succeeds whether or not it exists. Only the app that stored an
    /// account credential may delete it.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let request = self.credential_request(Method::DELETE, key)?;
        self.client.call(request).await.map(|_| ())
    }

    /// Lists the metadata of the credentials (the installation's and its account's) whose key
    /// starts with `prefix` ("" for all), in key order, `page_size` (1..=1000, server default
    /// 100) at a time.
    pub fn list(&self, prefix: &str, page_size: Option<u32>) -> CredentialPages {
        CredentialPages {
            credentials: self.clone(),
            prefix: prefix.to_owned(),
            page_size,
            cursor: None,
            done: false,
        }
    }

    /// Every credential's metadata under `prefix`, following all pages.
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<CredentialMeta>> {
        self.list(prefix, Some(1000)).collect_all().await
    }

    fn credential_request(&self, method: Method, key: &str) -> Result<Request> {
        let path = format!("/v1/credentials/{}", path_segment("key", key)?);
        self.client.request(method, &path, "")
    }

    async fn list_page(
        &self,
        prefix: &str,
        page_size: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ListAnswer<CredentialMeta>> {
        let mut query = Query::default();
        if !prefix.is_empty() {
            query.push("prefix", prefix);
        }
        query
            .push_opt("limit", page_size)
            .push_opt("cursor", cursor);
        let request = self
            .client
            .request(Method::GET, "/v1/credentials", query.as_str())?;
        self.client.call(request).await?.json("credential list")
    }
}

/// The pages of a credential listing; call [`CredentialPages::next_page`] until it returns
/// `None`.
#[derive(Debug)]
pub struct CredentialPages {
    credentials: CredentialsClient,
    prefix: String,
    page_size: Option<u32>,
    cursor: Option<String>,
    done: bool,
}

impl CredentialPages {
    /// The next page, `None` once the listing is complete. A page may be shorter than the page
    /// size, even empty, without being the last. After an error the same page can be asked for
    /// again.
    pub async fn next_page(&mut self) -> Result<Option<Vec<CredentialMeta>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .credentials
            .list_page(&self.prefix, self.page_size, self.cursor.as_deref())
            .await?;
        self.done = page.next_cursor.is_none();
        self.cursor = page.next_cursor;
        Ok(Some(page.items))
    }

    /// The cursor of the next page, to resume a listing later.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Every remaining item.
    pub async fn collect_all(mut self) -> Result<Vec<CredentialMeta>> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_never_shows_the_secret() {
        let put = CredentialPut::api_key("stripe", "sk_live_CANARY_123")
            .owner(Owner::Account)
            .ttl_seconds(60);
        let debug = format!("{put:?} {put:#?}");
        assert!(!debug.contains("sk_live_CANARY_123"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains("stripe"));
        assert!(debug.contains("Account"));
        let basic = CredentialPut::basic("jira", "bob", "hunter2-CANARY");
        assert!(!format!("{basic:?}").contains("hunter2-CANARY"));
    }

    #[test]
    fn constructors_build_the_contract_shapes() {
        assert_eq!(
            CredentialPut::api_key("p", "k").secret,
            json!({"api_key": "k"})
        );
        let basic = CredentialPut::basic("p", "u", "pw");
        assert_eq!(basic.secret, json!({"username": "u", "password": "pw"}));
        assert_eq!(basic.owner, None);
        assert_eq!(basic.metadata, None);
        assert_eq!(basic.ttl_seconds, None);
    }

    #[test]
    fn zeroize_json_empties_the_value() {
        let mut value = json!({"a": ["x", {"b": "y", "n": 1}], "c": true});
        zeroize_json(&mut value);
        assert_eq!(value, Value::Null);
        let mut text = json!("secret");
        zeroize_json(&mut text);
        assert_eq!(text, Value::Null);
    }

    #[test]
    fn owners() {
        for owner in Owner::ALL {
            assert_eq!(owner.as_str().parse::<Owner>().unwrap(), owner);
            assert_eq!(
                serde_json::to_value(owner).unwrap(),
                Value::String(owner.to_string())
            );
        }
        assert_eq!(Owner::default(), Owner::Installation);
        assert!(matches!(
            "app".parse::<Owner>(),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn meta_decodes_the_contract_document() {
        let text = r#"{"key":"stripe/main","owner":"account","provider":"stripe","kind":"api_key",
            "version":3,"created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:01.000Z",
            "expires_at":null,"token_expires_at":"2026-01-01T01:00:00.000Z","scopes":["read"],
            "metadata":{"shop":"s1","n":12345678901234567890},"needs_reconsent":false}"#;
        let meta: CredentialMeta = serde_json::from_str(text).unwrap();
        assert_eq!(meta.owner, Owner::Account);
        assert_eq!(meta.version, 3);
        assert_eq!(meta.scopes, ["read"]);
        assert_eq!(
            meta.token_expires_at.as_deref(),
            Some("2026-01-01T01:00:00.000Z")
        );
        assert_eq!(meta.metadata["n"].to_string(), "12345678901234567890");
        let again: CredentialMeta =
            serde_json::from_value(serde_json::to_value(&meta).unwrap()).unwrap();
        assert_eq!(again, meta);
    }
}
