//! A fake OAuth 2.0 provider and upstream API, served over real HTTP on loopback, for black-box
//! tests of tresor's credential proxy and OAuth flows. tresor is the client; [`TestProvider`]
//! plays the provider and checks the client's side of the protocol strictly.
//!
//! How a black-box test uses it:
//! 1. `TestProvider::start(ProviderConfig::default())`, then register it with tresor
//!    (`PUT /v1/admin/providers/{name}`): `base_url` = [`TestProvider::api_base`],
//!    `authorize_url` and `token_url` from the methods of those names, the config's
//!    `client_id`/`client_secret`/`token_auth`, and `"allow_private_network": true` (it listens
//!    on `127.0.0.1` over plain http).
//! 2. Start a flow on tresor (`POST /v1/oauth/flows`), give the `authorize_url` it returns to
//!    [`TestProvider::consent`] (the user's browser and the user in one), and GET the callback URL
//!    it returns on tresor.
//! 3. Make proxied requests (`POST /v1/credentials/{key}/request`) to the `/api/v2/...`
//!    endpoints. `echo` reflects what arrived, including the presented credential (header
//!    `x-echo-token` and body field `token`), so injection and redaction can be checked.
//! 4. Steer the provider: [`TestProvider::expire_access_tokens`], [`TestProvider::revoke_all`],
//!    `access_token_lifetime`, `refresh_delay`, `rotate_refresh_tokens`.
//! 5. Assert on [`TestProvider::stats`]: counters, and `violations`, which must stay empty.
//!    Handlers never panic: a client mistake is answered as a real provider would answer it
//!    (OAuth error JSON, 401 for bad client authentication) and also recorded there.
//!
//! [`CanaryListener`] is a bare TCP listener that records whatever reaches it, for asserting that
//! a credential never travels to another host.

mod api;
mod authorize;
mod canary;
mod form;
mod state;
#[cfg(test)]
mod tests;
mod token;

pub use canary::CanaryListener;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use tokio::task::JoinHandle;

use state::Shared;

/// How the fake provider behaves and which client it knows.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The one registered client. Default `tresor-test-client`.
    pub client_id: String,
    /// Its secret. Default `tresor-test-secret`; put `+`, `:` or `%` in it to check that the
    /// client form-encodes it inside the Basic header (RFC 6749 2.3.1).
    pub client_secret: String,
    /// How the client must authenticate at the token endpoint.
    pub token_auth: TokenAuth,
    /// `expires_in` of issued access tokens; zero makes them expire on issue. Default 3600 s.
    pub access_token_lifetime: Duration,
    /// Each refresh issues a new refresh token and makes the old one stale; presenting a stale
    /// one is `invalid_grant`, revokes the grant and is a violation. When false, refresh answers
    /// carry no `refresh_token` and the client must keep the one it has. Default true.
    pub rotate_refresh_tokens: bool,
    /// Authorize requests must carry an S256 `code_challenge`. Default true.
    pub require_pkce: bool,
    /// How long the token endpoint takes for refresh grants (widens races). Default zero.
    pub refresh_delay: Duration,
    /// When set, the authorize request must carry exactly this `redirect_uri`. Default `None`:
    /// any absolute http(s) URI without a fragment (the token request must still repeat it).
    pub registered_redirect_uri: Option<String>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            client_id: "tresor-test-client".to_owned(),
            client_secret: "tresor-test-secret".to_owned(),
            token_auth: TokenAuth::ClientSecretBasic,
            access_token_lifetime: Duration::from_secs(3600),
            rotate_refresh_tokens: true,
            require_pkce: true,
            refresh_delay: Duration::ZERO,
            registered_redirect_uri: None,
        }
    }
}

/// Client authentication at the token endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenAuth {
    /// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// What the provider has seen. Grant counters count token requests received with that
/// `grant_type`, successful or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderStats {
    pub code_exchanges: usize,
    pub refreshes: usize,
    pub client_credentials_grants: usize,
    /// Requests under `/api/v2`, accepted or not.
    pub api_calls: usize,
    /// Of those, the ones answered 401 (no valid credential).
    pub api_rejected: usize,
    /// Protocol mistakes of the client, in order; a passing test expects none.
    pub violations: Vec<String>,
    /// The query parameters of the latest authorize request, in order (to check `scope` or
    /// `authorize_params`).
    pub last_authorize_query: Vec<(String, String)>,
}

/// A running fake provider on `127.0.0.1`; the server stops when this is dropped.
pub struct TestProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl TestProvider {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(config: ProviderConfig) -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("test provider: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test provider: local_addr: {e}"));
        let shared = Arc::new(Shared::new(config));
        let app = Router::new()
            .route(
                "/oauth/authorize",
                get(authorize::authorize).fallback(token::wrong_method),
            )
            .route(
                authorize::DECISION_PATH,
                post(authorize::decision).fallback(token::wrong_method),
            )
            .route(
                "/oauth/token",
                post(token::token).fallback(token::wrong_method),
            )
            .fallback(api::handle)
            .layer(DefaultBodyLimit::max(api::MAX_BODY))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("test provider: server stopped: {e}");
            }
        });
        TestProvider {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.base_url())
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url())
    }

    /// The provider document (`PUT /v1/admin/providers/{name}`) of this provider's
    /// client-credentials grant: its API as base URL (on loopback), bearer injection, this
    /// provider's token endpoint and client.
    pub fn client_credentials_document(&self) -> serde_json::Value {
        serde_json::json!({
            "base_url": self.api_base(), "allow_private_network": true, "inject": {"type": "bearer"},
            "oauth2": {"grant": "client_credentials", "token_url": self.token_url(),
                "client_id": self.config().client_id, "client_secret": self.config().client_secret}
        })
    }

    /// The upstream API's base, `http://127.0.0.1:PORT/api/v2/`.
    pub fn api_base(&self) -> String {
        format!("{}/api/v2/", self.base_url())
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.shared.config
    }

    /// The browser part of the flow: GETs `authorize_url` (which the provider validates), lets
    /// "the user" allow or deny, and returns the URL the browser is sent back to:
    /// `redirect_uri?code=…&state=…`, or `redirect_uri?error=access_denied&state=…` when `deny`.
    /// An authorize request the provider answers with an error redirect (say, no PKCE) returns
    /// that error redirect. Panics when the provider cannot redirect at all (unknown client or
    /// bad `redirect_uri`); the reason is in the message and in `violations`.
    pub async fn consent(&self, authorize_url: &str, deny: bool) -> String {
        let endpoint = format!("{}?", self.authorize_url());
        assert!(
            authorize_url.starts_with(&endpoint),
            "consent: {authorize_url} does not point at this provider's authorize endpoint {endpoint}"
        );
        let browser = browser();
        let page = browser
            .get(authorize_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("consent: GET {authorize_url}: {e}"));
        if page.status().is_redirection() {
            return location(&page);
        }
        let status = page.status();
        let request_id = page
            .headers()
            .get(authorize::CONSENT_REQUEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(request_id) = request_id.filter(|_| status.is_success()) else {
            let body = page.text().await.unwrap_or_default();
            panic!(
                "consent: the provider refused the authorize request ({status}): {body}\nviolations: {:?}",
                self.stats().violations
            );
        };
        let decision = if deny { "deny" } else { "allow" };
        let answer = browser
            .post(format!("{}{}", self.base_url(), authorize::DECISION_PATH))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form::encode_pairs(&[
                ("request_id", request_id.as_str()),
                ("decision", decision),
            ]))
            .send()
            .await
            .unwrap_or_else(|e| panic!("consent: POST decision: {e}"));
        assert!(
            answer.status().is_redirection(),
            "consent: decision answered {} instead of a redirect",
            answer.status()
        );
        location(&answer)
    }

    pub fn stats(&self) -> ProviderStats {
        self.shared.lock().stats.clone()
    }

    /// Panics listing the violations, if any.
    pub fn assert_no_violations(&self) {
        let violations = self.stats().violations;
        assert!(
            violations.is_empty(),
            "the client broke the protocol:\n  {}",
            violations.join("\n  ")
        );
    }

    /// Revokes every grant, as when the user disconnects the app: refreshes get
    /// `invalid_grant`, and the API answers 401 to tokens and passwords issued so far.
    pub fn revoke_all(&self) {
        self.shared.lock().revoke_all();
    }

    /// Makes every access token issued so far expire now (the API answers 401 to them); refresh
    /// tokens stay valid.
    pub fn expire_access_tokens(&self) {
        self.shared.lock().expire_access_tokens();
    }

    /// An access token the API accepts, for `bearer`, `header` and `query` injection of
    /// credentials stored without OAuth. It does not expire by itself, but
    /// [`expire_access_tokens`](Self::expire_access_tokens) and
    /// [`revoke_all`](Self::revoke_all) apply to it.
    pub fn mint_access_token(&self) -> String {
        let mut state = self.shared.lock();
        let grant = state.new_grant(String::new());
        state.issue_access_token(grant, None)
    }

    /// `(username, password)` the API accepts as Basic auth; the username is always `user`.
    /// [`revoke_all`](Self::revoke_all) applies to it.
    pub fn mint_basic(&self) -> (String, String) {
        let password = self.shared.lock().issue_password();
        (api::BASIC_USER.to_owned(), password)
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A client that behaves like a browser that does not follow redirects by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("consent: http client: {e}"))
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("consent: {} without a Location", response.status()))
        .to_owned()
}
