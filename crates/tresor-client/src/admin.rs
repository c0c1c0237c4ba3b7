//! [`AdminClient`]: the administration API (apps, accounts, installations, tokens, providers,
//! root keys, audit), used with an admin token.
//!
//! Resource documents are returned as JSON values: their fields are the server's, and an
//! operator tool mostly prints them.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::Client;
use crate::encode::{Query, path_segment};
use crate::error::Result;
use crate::types::ListAnswer;

/// The administration API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: Client,
}

/// The answer to an admin upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// The stored document, without secrets.
    pub document: Value,
    /// `true` for 201 (created), `false` for 200 (it existed).
    pub created: bool,
}

/// The answer to an install.
#[derive(Clone, PartialEq, Eq)]
pub struct Installed {
    pub installation_id: String,
    pub token_id: Option<String>,
    /// The installation token; shown only when the installation was created (201).
    pub token: Option<String>,
    /// `false` when the installation already existed with this app and account (200, no token).
    pub created: bool,
}

impl fmt::Debug for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Installed")
            .field("installation_id", &self.installation_id)
            .field("token_id", &self.token_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("created", &self.created)
            .finish()
    }
}

/// A newly issued installation token.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct IssuedToken {
    pub token_id: String,
    pub token: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Filters and paging of [`AdminClient::audit`]; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub installation_id: Option<String>,
    pub account_id: Option<String>,
    /// RFC 3339 timestamps.
    pub since: Option<String>,
    pub until: Option<String>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// 1..=1000, server default 100.
    pub limit: Option<u32>,
}

/// One page of audit events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditPage {
    pub items: Vec<Value>,
    /// Pass as [`AuditQuery::after`] for the next page; `None` at the end.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

impl AdminClient {
    pub(crate) fn new(client: Client) -> AdminClient {
        AdminClient { client }
    }

    /// Registers an app (or re-registers it) with the scopes its manifest asks for.
    /// Re-registering with fewer scopes narrows existing tokens at once.
    pub async fn put_app<S: AsRef<str>>(&self, app_id: &str, scopes: &[S]) -> Result<Upserted> {
        let scopes: Vec<&str> = scopes.iter().map(AsRef::as_ref).collect();
        self.put_doc("apps", app_id, &json!({ "scopes": scopes }))
            .await
    }

    pub async fn get_app(&self, app_id: &str) -> Result<Option<Value>> {
        self.get_doc("apps", app_id).await
    }

    pub async fn list_apps(&self) -> Result<Vec<Value>> {
        self.list_docs("apps").await
    }

    /// Deletes an app, all its installations (as if uninstalled) and its shared store.
    pub async fn delete_app(&self, app_id: &str) -> Result<()> {
        self.delete_doc("apps", app_id).await
    }

    /// Creates an account (a site, a workspace).
    pub async fn put_account(&self, account_id: &str) -> Result<Upserted> {
        self.put_doc("accounts", account_id, &json!({})).await
    }

    pub async fn get_account(&self, account_id: &str) -> Result<Option<Value>> {
        self.get_doc("accounts", account_id).await
    }

    pub async fn list_accounts(&self) -> Result<Vec<Value>> {
        self.list_docs("accounts").await
    }

    /// Deletes an account and everything in it.
    pub async fn delete_account(&self, account_id: &str) -> Result<()> {
        self.delete_doc("accounts", account_id).await
    }

    /// Installs `app_id` into `account_id`. A new installation answers with its token, shown
    /// only this once; repeating the same install answers without a token; installing the id
    /// with another app or account is 409 `conflict`, into a missing app or account 404.
    pub async fn install(
        &self,
        installation_id: &str,
        app_id: &str,
        account_id: &str,
    ) -> Result<Installed> {
        let body = json!({ "app_id": app_id, "account_id": account_id });
        let upserted = self
            .put_doc("installations", installation_id, &body)
            .await?;
        let text = |name: &str| {
            upserted
                .document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(Installed {
            installation_id: text("installation_id").unwrap_or_else(|| installation_id.to_owned()),
            token_id: text("token_id"),
            token: text("token"),
            created: upserted.created,
        })
    }

    pub async fn get_installation(&self, installation_id: &str) -> Result<Option<Value>> {
        self.get_doc("installations", installation_id).await
    }

    pub async fn list_installations(&self) -> Result<Vec<Value>> {
        self.list_docs("installations").await
    }

    /// Uninstalls: deletes the installation's records and credentials, destroys its data key,
    /// and revokes its tokens.
    pub async fn uninstall(&self, installation_id: &str) -> Result<()> {
        self.delete_doc("installations", installation_id).await
    }

    /// Issues another token for an installation, with a subset of the app's scopes (all of
    /// them when `None`) and an optional lifetime.
    pub async fn create_token(
        &self,
        installation_id: &str,
        scopes: Option<Vec<String>>,
        ttl_seconds: Option<u64>,
    ) -> Result<IssuedToken> {
        #[derive(Serialize)]
        struct Body {
            #[serde(skip_serializing_if = "Option::is_none")]
            scopes: Option<Vec<String>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ttl_seconds: Option<u64>,
        }
        let path = format!(
            "/v1/admin/installations/{}/tokens",
            path_segment("installation id", installation_id)?
        );
        let request = self
            .client
            .request(Method::POST, &path, "")?
            .json_body(&Body {
                scopes,
                ttl_seconds,
            })?;
        self.client.call(request).await?.json("token answer")
    }

    /// Re-seals an installation's records, credentials and OAuth flows under a new data key
    /// (`POST /v1/admin/installations/{id}/rotate-key`). Answers `{"installation_id",
    /// "records", "credentials", "oauth_flows"}`, the counts re-sealed; 404 for an unknown
    /// installation, 409 while another rotation of it runs.
    pub async fn rotate_installation_key(&self, installation_id: &str) -> Result<Value> {
        let path = format!(
            "/v1/admin/installations/{}/rotate-key",
            path_segment("installation id", installation_id)?
        );
        let request = self.client.request(Method::POST, &path, "")?;
        self.client.call(request).await?.json("rotate-key answer")
    }

    /// Revokes a token, effective at once on every server.
    pub async fn revoke_token(&self, token_id: &str) -> Result<()> {
        self.delete_doc("tokens", token_id).await
    }

    /// Configures a provider (see the contract's "Providers"): `base_url`, `allowed_hosts`,
    /// `allow_private_network`, `inject`, `oauth2`. A document without `oauth2.client_secret`
    /// keeps the stored secret. The answer ([`Upserted::document`]) is the stored document
    /// without the secret, as [`AdminClient::get_provider`] shows it. The encoded request body
    /// is wiped once the request is over (best effort).
    pub async fn put_provider(&self, name: &str, document: &Value) -> Result<Upserted> {
        self.put_doc("providers", name, document).await
    }

    /// A provider's document without its client secret, plus `name`, `created_at`,
    /// `updated_at`, and `oauth2.client_secret_set`; `None` when there is no such provider.
    pub async fn get_provider(&self, name: &str) -> Result<Option<Value>> {
        self.get_doc("providers", name).await
    }

    /// Every provider's document, as [`AdminClient::get_provider`] shows it.
    pub async fn list_providers(&self) -> Result<Vec<Value>> {
        self.list_docs("providers").await
    }

    /// Deletes a provider.
    pub async fn delete_provider(&self, name: &str) -> Result<()> {
        self.delete_doc("providers", name).await
    }

    /// The running system: version, backend, key versions, what the store holds, the last
    /// backup (`GET /v1/admin/status`).
    pub async fn status(&self) -> Result<Value> {
        let request = self.client.request(Method::GET, "/v1/admin/status", "")?;
        self.client.call(request).await?.json("status answer")
    }

    /// Root key versions, which servers hold which, and re-wrap progress.
    pub async fn keys(&self) -> Result<Value> {
        let request = self.client.request(Method::GET, "/v1/admin/keys", "")?;
        self.client.call(request).await?.json("keys answer")
    }

    /// Activates the newest root key version every running server holds (202 with progress;
    /// 409 while a server lacks it).
    pub async fn rotate_keys(&self) -> Result<Value> {
        let request = self
            .client
            .request(Method::POST, "/v1/admin/keys/rotate", "")?;
        self.client.call(request).await?.json("rotate answer")
    }

    /// One page of audit events, oldest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage> {
        let mut q = Query::default();
        q.push_opt("installation_id", query.installation_id.as_deref())
            .push_opt("account_id", query.account_id.as_deref())
            .push_opt("since", query.since.as_deref())
            .push_opt("until", query.until.as_deref())
            .push_opt("after", query.after.as_deref())
            .push_opt("limit", query.limit);
        let request = self
            .client
            .request(Method::GET, "/v1/admin/audit", q.as_str())?;
        self.client.call(request).await?.json("audit answer")
    }

    async fn put_doc(&self, kind: &str, id: &str, body: &Value) -> Result<Upserted> {
        let request = self
            .client
            .request(Method::PUT, &doc_path(kind, id)?, "")?
            // Provider documents carry a client secret.
            .sensitive_json_body(body)?;
        let answer = self.client.call(request).await?;
        let created = answer.status == StatusCode::CREATED;
        let document = if answer.body.is_empty() {
            Value::Null
        } else {
            answer.json("admin answer")?
        };
        Ok(Upserted { document, created })
    }

    async fn get_doc(&self, kind: &str, id: &str) -> Result<Option<Value>> {
        let request = self.client.request(Method::GET, &doc_path(kind, id)?, "")?;
        let answer = self.client.send(request).await?;
        if answer.status.is_success() {
            return answer.json("admin document").map(Some);
        }
        let err = answer.into_error();
        if err.is_not_found() {
            Ok(None)
        } else {
            Err(err)
        }
    }

    async fn list_docs(&self, kind: &str) -> Result<Vec<Value>> {
        let path = format!("/v1/admin/{kind}");
        let request = self.client.request(Method::GET, &path, "")?;
        let answer: ListAnswer<Value> = self.client.call(request).await?.json("admin list")?;
        Ok(answer.items)
    }

    async fn delete_doc(&self, kind: &str, id: &str) -> Result<()> {
        let request = self
            .client
            .request(Method::DELETE, &doc_path(kind, id)?, "")?;
        self.client.call(request).await.map(|_| ())
    }
}

fn doc_path(kind: &str, id: &str) -> Result<String> {
    Ok(format!("/v1/admin/{kind}/{}", path_segment("id", id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_holders_redact_debug() {
        let installed = Installed {
            installation_id: "i".into(),
            token_id: Some("tid".into()),
            token: Some("tresor_secret_token".into()),
            created: true,
        };
        let issued = IssuedToken {
            token_id: "tid".into(),
            token: "tresor_secret_token".into(),
        };
        let debug = format!("{installed:?} {issued:?}");
        assert!(!debug.contains("tresor_secret_token"), "{debug}");
        assert!(debug.contains("tid"));
    }
}
