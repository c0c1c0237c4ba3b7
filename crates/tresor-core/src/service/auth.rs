//! Authentication: a bearer token becomes a [`Principal`]. Tokens are found by their id and
//! checked by MAC in constant time; every failure is audited with the token id when it parses.

use crate::audit::RequestContext;
use crate::backend::{AuthRecord, TokenKind};
use crate::error::{CoreError, Result};
use crate::model::{InstallationPrincipal, Principal, Scope, ScopeSet, now_millis};

use super::{Service, token_cache};

impl Service {
    /// Checks the `Authorization` header value. Every failure answers `Unauthenticated` and
    /// leaves an audit event.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<Principal> {
        let token = authorization.and_then(bearer_token);
        let result = match token {
            Some(t) => self.check_token(t).await,
            None => Err(CoreError::Unauthenticated),
        };
        if let Err(e) = &result {
            // A flood of bad tokens must not turn into unaudited failures: if the queue is full
            // the request fails with 503 instead of 401.
            self.audit_auth_refusal(authorization, ctx, super::status_of(e))?;
        }
        result
    }

    /// Audits a refused authentication with `status`: a token that did not check out, or a
    /// request refused before its token was checked (the per-address limit on failed
    /// authentication). The event names the token id only, never the token.
    pub fn audit_auth_refusal(
        &self,
        authorization: Option<&str>,
        ctx: &RequestContext,
        status: u16,
    ) -> Result<()> {
        let mut ev = self.event(None, ctx, "authenticate");
        ev.token_id = authorization
            .and_then(bearer_token)
            .and_then(tresor_crypto::token_id_of)
            .map(str::to_owned);
        ev.status = status;
        self.enqueue(vec![ev])
    }

    async fn check_token(&self, token: &str) -> Result<Principal> {
        if let Some(mac) = &self.env_admin_mac
            && self.pepper.verify(token, mac)
        {
            return Ok(Principal::Admin { token_id: None });
        }
        let token_id = tresor_crypto::token_id_of(token).ok_or(CoreError::Unauthenticated)?;
        // Read before the store is asked, so an answer read at this epoch is never kept past a
        // change that committed after it (see `Backend::auth_epoch`).
        let epoch = self.backend.auth_epoch();
        if let Some(hit) = epoch.and_then(|e| self.tokens.get(token_id, e)) {
            if !self.pepper.verify(token, &hit.mac) {
                return Err(CoreError::Unauthenticated);
            }
            if hit.expires_at.is_some_and(|t| t <= now_millis()) {
                return Err(CoreError::Unauthenticated);
            }
            return Ok(hit.principal);
        }
        let rec = self
            .backend
            .authenticate(token_id)
            .await?
            .ok_or(CoreError::Unauthenticated)?;
        if !self.pepper.verify(token, &rec.token.mac) {
            return Err(CoreError::Unauthenticated);
        }
        if rec.token.expires_at.is_some_and(|t| t <= now_millis()) {
            return Err(CoreError::Unauthenticated);
        }
        let expires_at = rec.token.expires_at;
        let mac = <[u8; 32]>::try_from(rec.token.mac.as_slice()).ok();
        let principal = principal_of(rec)?;
        // Only a token that proved itself is kept: unknown or forged ids never fill the cache.
        if let (Some(epoch), Some(mac)) = (epoch, mac) {
            let entry = token_cache::Entry {
                epoch,
                mac,
                expires_at,
                principal: principal.clone(),
            };
            self.tokens.insert(token_id, entry);
        }
        Ok(principal)
    }
}

/// The principal a verified token's record stands for.
fn principal_of(rec: AuthRecord) -> Result<Principal> {
    match rec.token.kind {
        TokenKind::Admin => Ok(Principal::Admin {
            token_id: Some(rec.token.token_id),
        }),
        TokenKind::Installation => {
            let inst = rec.installation.ok_or(CoreError::Unauthenticated)?;
            let app_ns = rec.app_ns.ok_or(CoreError::Unauthenticated)?;
            let account_ns = rec.account_ns.ok_or(CoreError::Unauthenticated)?;
            // Scopes narrow with the app: a token never holds more than its app's manifest.
            let app_scopes = Scope::validate_list(&rec.app_scopes)
                .map_err(|_| CoreError::internal("stored app scopes do not parse"))?;
            let scopes: ScopeSet = match &rec.token.scopes {
                Some(own) => Scope::validate_list(own)
                    .map_err(|_| CoreError::internal("stored token scopes do not parse"))?
                    .intersection(&app_scopes),
                None => app_scopes,
            };
            Ok(Principal::Installation(InstallationPrincipal {
                token_id: rec.token.token_id,
                installation_id: inst.installation_id,
                app_id: inst.app_id,
                account_id: inst.account_id,
                ns: inst.ns,
                app_ns,
                account_ns,
                scopes,
            }))
        }
    }
}

/// The token of a `Bearer` authorization value (scheme case-insensitive). Public for the fuzz
/// target `token` (`tresor-fuzz`).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
