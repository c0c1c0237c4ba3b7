//! Administration (apps, accounts, installations, tokens, audit) and record listing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret as _;

use crate::audit::{AuditEvent, AuditQuery, RequestContext};
use crate::backend::{
    AccountRow, AppRow, InstallOutcome, InstallationRow, ListQuery, NewInstallation, TokenKind,
    TokenRow,
};
use crate::error::{CoreError, Result};
use crate::keyring::{RecordPart, record_aad};
use crate::model::{MAX_KEY_BYTES, Principal, Scope, StoreKind, now_millis, validate_id};

use super::{RecordMeta, Service};

/// A token as handed out once, at install or token creation.
pub struct IssuedTokenOut {
    pub token_id: String,
    /// The token text: shown once, never stored.
    pub token: secrecy::SecretString,
}

impl std::fmt::Debug for IssuedTokenOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokenOut")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

/// The outcome of an install.
#[derive(Debug)]
pub struct Installed {
    pub installation: InstallationRow,
    /// Present only when the installation was created by this call.
    pub token: Option<IssuedTokenOut>,
}

/// One page of a listing.
pub struct RecordPage {
    pub items: Vec<RecordMeta>,
    pub next_cursor: Option<String>,
}

/// The answer for an installation id that names none.
pub(super) fn no_installation(installation_id: &str) -> CoreError {
    CoreError::NotFound(format!("no installation `{installation_id}`"))
}

impl Service {
    /// The installation `installation_id`, or `NotFound`.
    pub(super) async fn installation(&self, installation_id: &str) -> Result<InstallationRow> {
        self.backend
            .get_installation(installation_id)
            .await?
            .ok_or_else(|| no_installation(installation_id))
    }

    /// Creates the first admin token when the store has none; the caller shows it once.
    pub async fn bootstrap_admin_token(&self) -> Result<Option<IssuedTokenOut>> {
        if self.backend.has_admin_token().await? {
            return Ok(None);
        }
        let (row, issued) = self.new_token(TokenKind::Admin, None, None, None, None)?;
        let mut ev = self.event(None, &RequestContext::default(), "admin.bootstrap_token");
        ev.request_id = "bootstrap".into();
        ev.token_id = Some(row.token_id.clone());
        ev.status = 201;
        self.backend.create_token(row, ev).await?;
        Ok(Some(issued))
    }

    pub(super) fn admin_event(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        op: &str,
        status: u16,
    ) -> AuditEvent {
        let mut ev = self.event(Some(p), ctx, op);
        ev.status = status;
        ev
    }

    /// Runs an admin action: checks the admin token, audits refusals (successes are audited
    /// inside their transaction by the backend).
    pub(super) async fn admin<T, F>(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        op: &str,
        f: F,
    ) -> Result<T>
    where
        F: AsyncFnOnce() -> Result<T>,
    {
        let r = match p.require_admin() {
            Ok(()) => f().await,
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            self.enqueue(vec![self.admin_event(p, ctx, op, super::status_of(e))])?;
        }
        r
    }

    pub async fn put_app(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        app_id: &str,
        scopes: Vec<String>,
    ) -> Result<(AppRow, bool)> {
        self.admin(p, ctx, "admin.put_app", async || {
            validate_id("app", app_id)?;
            Scope::validate_list(&scopes)?;
            let mut scopes = scopes;
            scopes.sort();
            scopes.dedup();
            let ns = self.keys.new_namespace()?;
            let existed = self.backend.get_app(app_id).await?.is_some();
            let mut ev = self.admin_event(p, ctx, "admin.put_app", if existed { 200 } else { 201 });
            ev.app_id = Some(app_id.to_owned());
            let (row, created) = self.backend.put_app(app_id, &scopes, ns, ev).await?;
            Ok((row, created))
        })
        .await
    }

    pub async fn get_app(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        app_id: &str,
    ) -> Result<AppRow> {
        self.admin(p, ctx, "admin.get_app", async || {
            let row = self.backend.get_app(app_id).await?;
            let row = row.ok_or_else(|| CoreError::NotFound(format!("no app `{app_id}`")))?;
            self.audit_read(p, ctx, "admin.get_app")?;
            Ok(row)
        })
        .await
    }

    pub async fn list_apps(&self, p: &Principal, ctx: &RequestContext) -> Result<Vec<AppRow>> {
        self.admin(p, ctx, "admin.list_apps", async || {
            let rows = self.backend.list_apps().await?;
            self.audit_read(p, ctx, "admin.list_apps")?;
            Ok(rows)
        })
        .await
    }

    pub async fn delete_app(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        app_id: &str,
    ) -> Result<()> {
        self.admin(p, ctx, "admin.delete_app", async || {
            validate_id("app", app_id)?;
            let mut ev = self.admin_event(p, ctx, "admin.delete_app", 204);
            ev.app_id = Some(app_id.to_owned());
            let shredding = self.app_shredding(app_id).await?;
            if self.backend.delete_app(app_id, ev).await? {
                self.note_shredded(shredding).await;
            }
            Ok(())
        })
        .await
    }

    pub async fn put_account(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        account_id: &str,
    ) -> Result<(AccountRow, bool)> {
        self.admin(p, ctx, "admin.put_account", async || {
            validate_id("account", account_id)?;
            let ns = self.keys.new_namespace()?;
            let existed = self.backend.get_account(account_id).await?.is_some();
            let mut ev =
                self.admin_event(p, ctx, "admin.put_account", if existed { 200 } else { 201 });
            ev.account_id = Some(account_id.to_owned());
            self.backend.put_account(account_id, ns, ev).await
        })
        .await
    }

    pub async fn get_account(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        account_id: &str,
    ) -> Result<AccountRow> {
        self.admin(p, ctx, "admin.get_account", async || {
            let row = self.backend.get_account(account_id).await?;
            let row =
                row.ok_or_else(|| CoreError::NotFound(format!("no account `{account_id}`")))?;
            self.audit_read(p, ctx, "admin.get_account")?;
            Ok(row)
        })
        .await
    }

    pub async fn list_accounts(
        &self,
        p: &Principal,
        ctx: &RequestContext,
    ) -> Result<Vec<AccountRow>> {
        self.admin(p, ctx, "admin.list_accounts", async || {
            let rows = self.backend.list_accounts().await?;
            self.audit_read(p, ctx, "admin.list_accounts")?;
            Ok(rows)
        })
        .await
    }

    pub async fn delete_account(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        account_id: &str,
    ) -> Result<()> {
        self.admin(p, ctx, "admin.delete_account", async || {
            validate_id("account", account_id)?;
            let mut ev = self.admin_event(p, ctx, "admin.delete_account", 204);
            ev.account_id = Some(account_id.to_owned());
            let shredding = self.account_shredding(account_id).await?;
            if self.backend.delete_account(account_id, ev).await? {
                self.note_shredded(shredding).await;
            }
            Ok(())
        })
        .await
    }

    pub async fn install(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        installation_id: &str,
        app_id: &str,
        account_id: &str,
    ) -> Result<Installed> {
        self.admin(p, ctx, "admin.install", async || {
            validate_id("installation", installation_id)?;
            validate_id("app", app_id)?;
            validate_id("account", account_id)?;
            let namespace = self.keys.new_namespace()?;
            let ns = namespace.ns;
            let (token, issued) = self.new_token(
                TokenKind::Installation,
                Some(installation_id),
                Some(ns),
                None,
                None,
            )?;
            let mut ev = self.admin_event(p, ctx, "admin.install", 201);
            ev.installation_id = Some(installation_id.to_owned());
            ev.app_id = Some(app_id.to_owned());
            ev.account_id = Some(account_id.to_owned());
            let outcome = self
                .backend
                .install(
                    NewInstallation {
                        installation_id: installation_id.to_owned(),
                        app_id: app_id.to_owned(),
                        account_id: account_id.to_owned(),
                        namespace,
                        token,
                    },
                    ev,
                )
                .await?;
            match outcome {
                InstallOutcome::Created(row) => Ok(Installed {
                    installation: row,
                    token: Some(issued),
                }),
                InstallOutcome::Existing(row) => {
                    self.keys.forget(ns);
                    self.audit_read(p, ctx, "admin.install")?;
                    Ok(Installed {
                        installation: row,
                        token: None,
                    })
                }
                InstallOutcome::Taken(row) => Err(CoreError::Conflict(format!(
                    "installation `{}` installs app `{}` into account `{}`; uninstall it first",
                    row.installation_id, row.app_id, row.account_id
                ))),
                InstallOutcome::AppMissing => {
                    Err(CoreError::NotFound(format!("no app `{app_id}`")))
                }
                InstallOutcome::AccountMissing => {
                    Err(CoreError::NotFound(format!("no account `{account_id}`")))
                }
            }
        })
        .await
    }

    pub async fn get_installation(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        installation_id: &str,
    ) -> Result<InstallationRow> {
        self.admin(p, ctx, "admin.get_installation", async || {
            let row = self.installation(installation_id).await?;
            self.audit_read(p, ctx, "admin.get_installation")?;
            Ok(row)
        })
        .await
    }

    pub async fn list_installations(
        &self,
        p: &Principal,
        ctx: &RequestContext,
    ) -> Result<Vec<InstallationRow>> {
        self.admin(p, ctx, "admin.list_installations", async || {
            let rows = self.backend.list_installations().await?;
            self.audit_read(p, ctx, "admin.list_installations")?;
            Ok(rows)
        })
        .await
    }

    pub async fn uninstall(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        installation_id: &str,
    ) -> Result<()> {
        self.admin(p, ctx, "admin.uninstall", async || {
            validate_id("installation", installation_id)?;
            let before = self.backend.get_installation(installation_id).await?;
            let mut ev = self.admin_event(p, ctx, "admin.uninstall", 204);
            ev.installation_id = Some(installation_id.to_owned());
            let uninstalled = self.backend.uninstall(installation_id, ev).await?;
            if let Some(row) = before {
                self.keys.forget(row.ns);
                if uninstalled {
                    self.note_shredded(self.installation_shredding(&row)).await;
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn create_token(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        installation_id: &str,
        scopes: Option<Vec<String>>,
        ttl_seconds: Option<i64>,
    ) -> Result<IssuedTokenOut> {
        self.admin(p, ctx, "admin.create_token", async || {
            let inst = self.installation(installation_id).await?;
            if let Some(s) = &scopes {
                let wanted = Scope::validate_list(s)?;
                let app = self
                    .backend
                    .get_app(&inst.app_id)
                    .await?
                    .ok_or_else(|| CoreError::NotFound(format!("no app `{}`", inst.app_id)))?;
                let allowed = Scope::validate_list(&app.scopes)?;
                if !wanted.is_subset_of(&allowed) {
                    return Err(CoreError::invalid(
                        "a token's scopes must be a subset of its app's scopes",
                    ));
                }
            }
            let expires_at = match ttl_seconds {
                Some(t) => Some(now_millis() + self.limits.check_ttl(t)? * 1000),
                None => None,
            };
            let (row, issued) = self.new_token(
                TokenKind::Installation,
                Some(installation_id),
                Some(inst.ns),
                scopes,
                expires_at,
            )?;
            let mut ev = self.admin_event(p, ctx, "admin.create_token", 201);
            ev.installation_id = Some(installation_id.to_owned());
            ev.app_id = Some(inst.app_id.clone());
            ev.account_id = Some(inst.account_id.clone());
            self.backend.create_token(row, ev).await?;
            Ok(issued)
        })
        .await
    }

    pub async fn revoke_token(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        token_id: &str,
    ) -> Result<()> {
        self.admin(p, ctx, "admin.revoke_token", async || {
            let ev = self.admin_event(p, ctx, "admin.revoke_token", 204);
            self.backend.revoke_token(token_id, ev).await?;
            Ok(())
        })
        .await
    }

    pub async fn audit_query(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        query: AuditQuery,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        self.admin(p, ctx, "admin.audit", async || {
            let limit = query.limit;
            let mut q = query.clone();
            q.limit = limit + 1;
            let mut items = self.backend.audit_query(&q).await?;
            let next = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|e| e.id.to_string())
            } else {
                None
            };
            self.audit_read(p, ctx, "admin.audit")?;
            Ok((items, next))
        })
        .await
    }

    /// Lists record metadata in key order.
    pub async fn list_records(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        store: StoreKind,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<RecordPage> {
        let p = principal.installation()?;
        let mut ev = self.event(Some(principal), ctx, "list");
        ev.store = Some(store.as_str().to_owned());
        let r = async {
            p.require(Scope::Read(store))?;
            let (limit, query) = self.page_query(prefix, cursor, limit)?;
            let (ns, owner) = if store == StoreKind::Shared {
                (p.app_ns, format!("app/{}", p.app_id))
            } else {
                (p.ns, format!("{}/{}", p.account_id, p.installation_id))
            };
            // A description read just before a key rotation committed is read again.
            let (query, owner) = (&query, &owner);
            self.rekey_safe(&[], || async move {
                let rows = self.backend.list_records(ns, store, query).await?;
                let more = rows.len() > limit;
                let mut items = Vec::with_capacity(rows.len().min(limit));
                for row in rows.into_iter().take(limit) {
                    let description = match &row.description {
                        Some(sealed) => {
                            let aad =
                                record_aad(ns, owner, store, &row.key, RecordPart::Description);
                            let plain = self
                                .keys
                                .open(self.backend.as_ref(), ns, &aad, sealed)
                                .await?;
                            Some(
                                String::from_utf8(plain.to_vec())
                                    .map_err(|_| CoreError::Integrity)?,
                            )
                        }
                        None => None,
                    };
                    let key = String::from_utf8(row.key).map_err(|_| CoreError::Integrity)?;
                    items.push(RecordMeta {
                        key,
                        version: row.version,
                        description,
                        created_at: row.created_at,
                        updated_at: row.updated_at,
                        expires_at: row.expires_at,
                    });
                }
                let next_cursor = next_cursor(more, items.last().map(|m| m.key.as_str()));
                Ok(RecordPage { items, next_cursor })
            })
            .await
        }
        .await;
        ev.status = match &r {
            Ok(_) => 200,
            Err(e) => super::status_of(e),
        };
        self.enqueue(vec![ev])?;
        r
    }

    pub(super) fn audit_read(&self, p: &Principal, ctx: &RequestContext, op: &str) -> Result<()> {
        self.enqueue(vec![self.admin_event(p, ctx, op, 200)])
    }

    fn new_token(
        &self,
        kind: TokenKind,
        installation_id: Option<&str>,
        ns: Option<i64>,
        scopes: Option<Vec<String>>,
        expires_at: Option<i64>,
    ) -> Result<(TokenRow, IssuedTokenOut)> {
        let issued = tresor_crypto::issue_token()?;
        let mac = self.pepper.mac(issued.token.expose_secret());
        let row = TokenRow {
            token_id: issued.token_id.clone(),
            mac: mac.to_vec(),
            kind,
            installation_id: installation_id.map(str::to_owned),
            ns,
            scopes,
            expires_at,
            created_at: now_millis(),
        };
        Ok((
            row,
            IssuedTokenOut {
                token_id: issued.token_id,
                token: issued.token,
            },
        ))
    }
}

impl Service {
    /// Checks a listing's limit, prefix and cursor; the query asks for one row more than the
    /// page, so the caller knows whether anything follows.
    pub(super) fn page_query(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(usize, ListQuery)> {
        let limit = limit.unwrap_or(self.limits.default_list_limit);
        if limit == 0 || limit > self.limits.max_list_limit {
            return Err(CoreError::invalid(format!(
                "limit must be from 1 to {}",
                self.limits.max_list_limit
            )));
        }
        if prefix.len() > MAX_KEY_BYTES {
            return Err(CoreError::PayloadTooLarge(format!(
                "the prefix is longer than {MAX_KEY_BYTES} bytes"
            )));
        }
        let after = cursor.map(decode_cursor).transpose()?;
        Ok((
            limit,
            ListQuery {
                prefix: prefix.as_bytes().to_vec(),
                after,
                limit: limit + 1,
            },
        ))
    }
}

/// The opaque cursor after `last_key`, when more rows follow: stable across servers and
/// restarts because it is the key itself.
pub(super) fn next_cursor(more: bool, last_key: Option<&str>) -> Option<String> {
    if more {
        last_key.map(|k| URL_SAFE_NO_PAD.encode(k.as_bytes()))
    } else {
        None
    }
}

fn decode_cursor(c: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .filter(|b| !b.is_empty() && b.len() <= MAX_KEY_BYTES)
        .ok_or_else(|| CoreError::invalid("the cursor is not one this server issued"))
}
