//! OAuth 2.0 authorization-code flows with PKCE (S256), run host-side: start a flow, take the
//! provider's callback, store the token set as a credential, and hand the access token out
//! exactly once. The HTTP exchange with the provider's token endpoint is the server's job (only
//! it makes outbound calls); this module decides everything around it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::audit::RequestContext;
use crate::backend::{Commit, CredentialOwner, FlowRow, FlowStatus, Mutation};
use crate::credentials::{Grant, ProviderDoc, TokenAuth};
use crate::error::{CoreError, Result};
use crate::keyring::DATA_KEY_ID;
use crate::model::{
    InstallationPrincipal, Millis, Principal, RecordKey, Scope, ScopeSet, now_millis,
};

use super::Service;
use super::credentials::{CredentialInput, CredentialMeta};

/// How long a flow (and its `state`) lives.
pub const FLOW_LIFETIME_MS: Millis = 10 * 60 * 1000;

/// What `POST /v1/oauth/flows` asks for.
#[derive(Debug, Clone)]
pub struct StartFlow {
    pub provider: String,
    pub store_key: RecordKey,
    pub store_owner: CredentialOwner,
    pub scopes: Option<Vec<String>>,
    pub return_to: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FlowStarted {
    pub flow_id: String,
    pub authorize_url: String,
    pub expires_at: Millis,
}

/// A flow as its status endpoint shows it.
#[derive(Debug, Clone)]
pub struct FlowView {
    pub flow_id: String,
    pub status: &'static str,
    pub error: Option<String>,
    pub expires_at: Millis,
}

/// Where and how to call a provider's token endpoint.
pub struct TokenEndpoint {
    pub url: url::Url,
    pub allow_private_network: bool,
    pub client_id: String,
    pub client_secret: Option<Zeroizing<String>>,
    pub auth: TokenAuth,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("url", &self.url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A token endpoint's successful answer.
pub struct TokenSet {
    pub access_token: Zeroizing<String>,
    pub refresh_token: Option<Zeroizing<String>>,
    pub expires_in: Option<i64>,
    pub scope: Option<String>,
    pub token_type: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// The credential secret this token set becomes. `previous_refresh` is kept when the
    /// provider does not rotate refresh tokens.
    pub fn into_secret(
        self,
        previous_refresh: Option<Zeroizing<String>>,
        now: Millis,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "access_token".into(),
            Value::String(self.access_token.to_string()),
        );
        if let Some(r) = self.refresh_token.or(previous_refresh) {
            m.insert("refresh_token".into(), Value::String(r.to_string()));
        }
        if let Some(secs) = self.expires_in {
            m.insert(
                "expires_at".into(),
                Value::from((now / 1000).saturating_add(secs)),
            );
        }
        if let Some(s) = self.scope {
            m.insert("scope".into(), Value::String(s));
        }
        if let Some(t) = self.token_type {
            m.insert("token_type".into(), Value::String(t));
        }
        m
    }
}

/// Everything the callback needs for the code exchange.
pub struct CallbackWork {
    pub flow_id: String,
    pub endpoint: TokenEndpoint,
    pub verifier: Option<Zeroizing<String>>,
    pub redirect_uri: String,
    pub return_to: Option<String>,
    flow: FlowRow,
    principal: InstallationPrincipal,
}

impl std::fmt::Debug for CallbackWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackWork")
            .field("flow_id", &self.flow_id)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts a flow: keeps the PKCE verifier and the single-use state, and answers the
    /// provider's authorize URL.
    pub async fn start_flow(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        req: StartFlow,
        redirect_uri: &str,
    ) -> Result<FlowStarted> {
        let p = principal.installation()?;
        let r = self.start_flow_inner(p, ctx, req, redirect_uri).await;
        if let Err(e) = &r {
            let mut ev = self.event(Some(principal), ctx, "oauth.start");
            ev.status = super::status_of(e);
            self.enqueue(vec![ev])?;
        }
        r
    }

    async fn start_flow_inner(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        req: StartFlow,
        redirect_uri: &str,
    ) -> Result<FlowStarted> {
        p.require(Scope::CredentialsStore)?;
        let (doc, _) = self.provider_with_secret(&req.provider).await?;
        let oauth = doc
            .oauth2
            .as_ref()
            .filter(|o| o.grant == Grant::AuthorizationCode)
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "provider `{}` has no authorization_code grant",
                    req.provider
                ))
            })?;
        let authorize = oauth
            .authorize_url
            .as_deref()
            .ok_or_else(|| CoreError::invalid("the provider has no authorize_url"))?;
        if let Some(rt) = &req.return_to
            && !oauth
                .return_to_prefixes
                .iter()
                .any(|pre| rt.starts_with(pre.as_str()))
        {
            return Err(CoreError::invalid(
                "`return_to` must start with one of the provider's return_to_prefixes",
            ));
        }
        if let Some(s) = &req.scopes
            && s.iter().any(|x| x.is_empty() || x.contains(' '))
        {
            return Err(CoreError::invalid("each scope is a non-empty word"));
        }
        let scopes = req.scopes.clone().unwrap_or_else(|| oauth.scopes.clone());
        let flow_id = format!("flw_{}", hex(&tresor_crypto::random_bytes::<16>()?));
        let state = URL_SAFE_NO_PAD.encode(tresor_crypto::random_bytes::<32>()?);
        let verifier = Zeroizing::new(URL_SAFE_NO_PAD.encode(tresor_crypto::random_bytes::<48>()?));
        let challenge = URL_SAFE_NO_PAD.encode(tresor_crypto::sha256(verifier.as_bytes()));
        let mut url = url::Url::parse(authorize)
            .map_err(|_| CoreError::internal("stored authorize_url does not parse"))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", &oauth.client_id);
            q.append_pair("redirect_uri", redirect_uri);
            if !scopes.is_empty() {
                q.append_pair("scope", &scopes.join(" "));
            }
            q.append_pair("state", &state);
            if oauth.pkce {
                q.append_pair("code_challenge", &challenge);
                q.append_pair("code_challenge_method", "S256");
            }
            for (k, v) in &oauth.authorize_params {
                q.append_pair(k, v);
            }
        }
        let now = now_millis();
        let expires_at = now + FLOW_LIFETIME_MS;
        let state_mac = self.pepper.mac(&state).to_vec();
        let mut ev = self.event(
            Some(&Principal::Installation(p.clone())),
            ctx,
            "oauth.start",
        );
        ev.store = Some("credentials".into());
        ev.key = Some(req.store_key.as_str().to_owned());
        ev.status = 201;
        let (flow_id_ref, verifier, scopes, state_mac, ev, req) =
            (&flow_id, &verifier, &scopes, &state_mac, &ev, &req);
        self.rekey_safe(&[p.ns], || async move {
            let (dk, key_check) = self.keys.sealing_key(self.backend.as_ref(), p.ns).await?;
            let sealed_verifier = tresor_crypto::seal(
                &dk,
                DATA_KEY_ID,
                &flow_aad("verifier", flow_id_ref),
                verifier.as_bytes(),
            )?;
            let flow = FlowRow {
                flow_id: flow_id_ref.clone(),
                ns: p.ns,
                installation_id: p.installation_id.clone(),
                provider: req.provider.clone(),
                store_key: req.store_key.as_bytes().to_vec(),
                store_owner: req.store_owner,
                scopes: scopes.clone(),
                return_to: req.return_to.clone(),
                state_mac: state_mac.clone(),
                verifier: sealed_verifier,
                status: FlowStatus::Pending,
                error: None,
                access_token: None,
                taken: false,
                expires_at,
                created_at: now,
            };
            self.backend
                .commit(Commit {
                    guards: vec![p.ns],
                    keys: vec![key_check],
                    mutations: vec![Mutation::PutFlow { flow }],
                    audit: vec![ev.clone()],
                })
                .await
        })
        .await?;
        Ok(FlowStarted {
            flow_id,
            authorize_url: url.to_string(),
            expires_at,
        })
    }

    /// Finds the pending flow of a callback's `state`. An unknown, used or expired state is a
    /// 400 and exchanges nothing.
    pub async fn callback_begin(&self, state: &str, redirect_uri: &str) -> Result<CallbackWork> {
        self.rekey_safe(&[], || self.callback_begin_once(state, redirect_uri))
            .await
    }

    async fn callback_begin_once(&self, state: &str, redirect_uri: &str) -> Result<CallbackWork> {
        let mac = self.pepper.mac(state);
        let flow = self
            .backend
            .flow_by_state(&mac)
            .await?
            .filter(|f| f.status == FlowStatus::Pending && f.expires_at > now_millis())
            .ok_or_else(|| {
                CoreError::invalid("this sign-in link is unknown, already used or expired")
            })?;
        let principal = self.flow_principal(&flow).await?;
        let (doc, client_secret) = self.provider_with_secret(&flow.provider).await?;
        let oauth = doc
            .oauth2
            .as_ref()
            .ok_or_else(|| CoreError::invalid("the provider no longer has OAuth settings"))?;
        let url = url::Url::parse(&oauth.token_url)
            .map_err(|_| CoreError::internal("stored token_url does not parse"))?;
        let verifier = self
            .keys
            .open(
                self.backend.as_ref(),
                flow.ns,
                &flow_aad("verifier", &flow.flow_id),
                &flow.verifier,
            )
            .await?;
        let verifier =
            Zeroizing::new(String::from_utf8(verifier.to_vec()).map_err(|_| CoreError::Integrity)?);
        Ok(CallbackWork {
            flow_id: flow.flow_id.clone(),
            endpoint: TokenEndpoint {
                url,
                allow_private_network: doc.allow_private_network,
                client_id: oauth.client_id.clone(),
                client_secret,
                auth: oauth.token_auth,
            },
            verifier: oauth.pkce.then_some(verifier),
            redirect_uri: redirect_uri.to_owned(),
            return_to: flow.return_to.clone(),
            flow,
            principal,
        })
    }

    /// Audits a callback refused before any flow was found (unknown, used or expired state).
    pub fn audit_callback_refusal(&self, ctx: &RequestContext, status: u16) -> Result<()> {
        let mut ev = self.event(None, ctx, "oauth.callback");
        ev.status = status;
        self.enqueue(vec![ev])
    }

    /// Ends a flow as failed with the provider's error.
    pub async fn callback_fail(
        &self,
        ctx: &RequestContext,
        work: &CallbackWork,
        error: &str,
    ) -> Result<()> {
        let mut ev = self.event(
            Some(&Principal::Installation(work.principal.clone())),
            ctx,
            "oauth.callback",
        );
        ev.status = 400;
        let ev = &ev;
        self.rekey_safe(&[work.flow.ns], || async move {
            self.backend
                .commit(Commit {
                    guards: vec![work.flow.ns],
                    keys: Vec::new(),
                    mutations: vec![Mutation::FinishFlow {
                        flow_id: work.flow_id.clone(),
                        status: FlowStatus::Failed,
                        error: Some(clip(error)),
                        access_token: None,
                    }],
                    audit: vec![ev.clone()],
                })
                .await
        })
        .await
        .map(|_| ())
        .map_err(flow_conflict)
    }

    /// Stores the token set as the flow's credential and completes the flow, in one
    /// transaction.
    pub async fn callback_complete(
        &self,
        ctx: &RequestContext,
        work: &CallbackWork,
        tokens: TokenSet,
    ) -> Result<()> {
        let access = tokens.access_token.clone();
        let secret = tokens.into_secret(None, now_millis());
        let key = RecordKey::from_stored(work.flow.store_key.clone())?;
        let input = CredentialInput {
            owner: work.flow.store_owner,
            provider: work.flow.provider.clone(),
            secret,
            metadata: Map::new(),
            ttl: None,
        };
        let namespaces = [work.flow.ns, work.principal.account_ns];
        self.rekey_safe(&namespaces, || {
            self.callback_store(ctx, work, &key, &input, &access)
        })
        .await
    }

    /// One try of [`Service::callback_complete`]: seals the credential and the access token
    /// and stores them; `Rekeying` when the installation's key is being rotated.
    async fn callback_store(
        &self,
        ctx: &RequestContext,
        work: &CallbackWork,
        key: &RecordKey,
        input: &CredentialInput,
        access: &str,
    ) -> Result<()> {
        let prepared = self.prepare_credential(&work.principal, key, input).await?;
        let (dk, key_check) = self
            .keys
            .sealing_key(self.backend.as_ref(), work.flow.ns)
            .await?;
        let sealed = tresor_crypto::seal(
            &dk,
            DATA_KEY_ID,
            &flow_aad("access_token", &work.flow_id),
            access.as_bytes(),
        )?;
        let finish = Mutation::FinishFlow {
            flow_id: work.flow_id.clone(),
            status: FlowStatus::Completed,
            error: None,
            access_token: Some(sealed),
        };
        for _ in 0..50 {
            match self
                .store_credential(
                    &work.principal,
                    ctx,
                    key,
                    prepared_clone(&prepared),
                    "oauth.callback",
                    super::credentials::Extra {
                        mutations: vec![finish.clone()],
                        keys: vec![key_check.clone()],
                    },
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(CoreError::WriteConflict) => {
                    // Either the credential changed under us (retry) or the flow is no longer
                    // pending (stop).
                    let still = self.backend.flow_by_id(&work.flow_id).await?;
                    if !still.is_some_and(|f| {
                        f.status == FlowStatus::Pending && f.expires_at > now_millis()
                    }) {
                        return Err(CoreError::invalid(
                            "this sign-in link is unknown, already used or expired",
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(CoreError::Unavailable(
            "the credential kept changing; try again".into(),
        ))
    }

    /// A flow's status, for the installation that started it.
    pub async fn flow_status(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        flow_id: &str,
    ) -> Result<FlowView> {
        let p = principal.installation()?;
        let r = async {
            p.require(Scope::CredentialsStore)?;
            let flow = self.own_flow(p, flow_id).await?;
            let expired = flow.status == FlowStatus::Pending && flow.expires_at <= now_millis();
            Ok(FlowView {
                flow_id: flow.flow_id,
                status: if expired {
                    "expired"
                } else {
                    flow.status.as_str()
                },
                error: flow.error,
                expires_at: flow.expires_at,
            })
        }
        .await;
        let mut ev = self.event(Some(principal), ctx, "oauth.status");
        ev.status = match &r {
            Ok(_) => 200,
            Err(e) => super::status_of(e),
        };
        self.enqueue(vec![ev])?;
        r
    }

    /// Hands out a completed flow's credential metadata and its access token, exactly once.
    pub async fn complete_flow(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        flow_id: &str,
    ) -> Result<(CredentialMeta, Zeroizing<String>)> {
        let p = principal.installation()?;
        let r = self
            .rekey_safe(&[p.ns], || self.complete_flow_inner(p, ctx, flow_id))
            .await;
        if let Err(e) = &r {
            let mut ev = self.event(Some(principal), ctx, "oauth.complete");
            ev.status = super::status_of(e);
            self.enqueue(vec![ev])?;
        }
        r
    }

    async fn complete_flow_inner(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        flow_id: &str,
    ) -> Result<(CredentialMeta, Zeroizing<String>)> {
        p.require(Scope::CredentialsStore)?;
        let flow = self.own_flow(p, flow_id).await?;
        let now = now_millis();
        match flow.status {
            _ if flow.expires_at <= now => {
                return Err(CoreError::Gone("the flow has expired".into()));
            }
            FlowStatus::Pending => {
                return Err(CoreError::Conflict("the flow is still pending".into()));
            }
            FlowStatus::Failed => {
                return Err(CoreError::Conflict(format!(
                    "the flow failed: {}",
                    flow.error.as_deref().unwrap_or("unknown error")
                )));
            }
            FlowStatus::Completed if flow.taken => {
                return Err(CoreError::Gone(
                    "the access token was already handed out".into(),
                ));
            }
            FlowStatus::Completed => {}
        }
        let sealed = flow
            .access_token
            .clone()
            .ok_or_else(|| CoreError::Gone("the access token was already handed out".into()))?;
        let key = RecordKey::from_stored(flow.store_key.clone())?;
        let meta = self.get_credential_meta_for(p, &key).await?;
        let mut ev = self.event(
            Some(&Principal::Installation(p.clone())),
            ctx,
            "oauth.complete",
        );
        ev.store = Some("credentials".into());
        ev.key = Some(key.as_str().to_owned());
        ev.status = 200;
        // Opened before it is taken: once taken, the stored copy is gone, and this copy may
        // be from before a key rotation that committed since (then it is read again).
        let token = self
            .keys
            .open(
                self.backend.as_ref(),
                flow.ns,
                &flow_aad("access_token", &flow.flow_id),
                &sealed,
            )
            .await?;
        let token =
            Zeroizing::new(String::from_utf8(token.to_vec()).map_err(|_| CoreError::Integrity)?);
        self.backend
            .commit(Commit {
                guards: vec![p.ns],
                keys: Vec::new(),
                mutations: vec![Mutation::TakeFlowToken {
                    flow_id: flow.flow_id.clone(),
                }],
                audit: vec![ev],
            })
            .await
            .map_err(|e| match e {
                CoreError::WriteConflict => {
                    CoreError::Gone("the access token was already handed out".into())
                }
                other => other,
            })?;
        Ok((meta, token))
    }

    async fn own_flow(&self, p: &InstallationPrincipal, flow_id: &str) -> Result<FlowRow> {
        self.backend
            .flow_by_id(flow_id)
            .await?
            .filter(|f| f.ns == p.ns)
            .ok_or_else(|| CoreError::NotFound("no such flow".into()))
    }

    /// The provider document and its opened client secret.
    pub(super) async fn provider_with_secret(
        &self,
        name: &str,
    ) -> Result<(ProviderDoc, Option<Zeroizing<String>>)> {
        let row = self
            .backend
            .get_provider(name)
            .await?
            .ok_or_else(|| CoreError::invalid(format!("unknown provider `{name}`")))?;
        let doc: ProviderDoc =
            serde_json::from_slice(&row.document).map_err(|_| CoreError::Integrity)?;
        let secret = match &row.client_secret {
            Some(sealed) => {
                let plain = tresor_crypto::open(
                    &self.system_key,
                    format!("tresor/provider/v1:{name}").as_bytes(),
                    sealed,
                )?;
                Some(Zeroizing::new(
                    String::from_utf8(plain.to_vec()).map_err(|_| CoreError::Integrity)?,
                ))
            }
            None => None,
        };
        Ok((doc, secret))
    }

    /// The installation a flow belongs to, as a principal that may store credentials; the flow
    /// is dead once its installation incarnation is gone.
    async fn flow_principal(&self, flow: &FlowRow) -> Result<InstallationPrincipal> {
        let inst = self
            .backend
            .get_installation(&flow.installation_id)
            .await?
            .filter(|i| i.ns == flow.ns)
            .ok_or_else(|| CoreError::invalid("the installation of this flow is gone"))?;
        let account = self
            .backend
            .get_account(&inst.account_id)
            .await?
            .ok_or_else(|| CoreError::invalid("the account of this flow is gone"))?;
        let app = self
            .backend
            .get_app(&inst.app_id)
            .await?
            .ok_or_else(|| CoreError::invalid("the app of this flow is gone"))?;
        let mut scopes = ScopeSet::default();
        scopes.insert(Scope::CredentialsStore);
        Ok(InstallationPrincipal {
            token_id: String::new(),
            installation_id: inst.installation_id,
            app_id: inst.app_id,
            account_id: inst.account_id,
            ns: inst.ns,
            app_ns: app.ns,
            account_ns: account.ns,
            scopes,
        })
    }
}

fn prepared_clone(
    p: &super::credentials::PreparedCredential,
) -> super::credentials::PreparedCredential {
    super::credentials::PreparedCredential {
        ns: p.ns,
        other_ns: p.other_ns,
        write: p.write.clone(),
        metadata: p.metadata.clone(),
        expiry: p.expiry,
        key_check: p.key_check.clone(),
    }
}

fn flow_conflict(e: CoreError) -> CoreError {
    match e {
        CoreError::WriteConflict => {
            CoreError::invalid("this sign-in link is unknown, already used or expired")
        }
        other => other,
    }
}

/// Provider error strings end up in statuses and pages; keep them short and printable.
fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

pub(super) fn flow_aad(part: &str, flow_id: &str) -> Vec<u8> {
    format!("tresor/flow/v1:{part}:{flow_id}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
