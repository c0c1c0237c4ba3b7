//! The [`Client`]: configuration, authentication, and the one place that sends requests and
//! turns answers into results.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use zeroize::{Zeroize, Zeroizing};

use crate::admin::AdminClient;
use crate::batch::{BatchOp, BatchResult};
use crate::credentials::CredentialsClient;
use crate::error::{Error, Result, api_error, decode_error};
use crate::store::StoreClient;
use crate::types::Store;

/// The address used when `TRESOR_ADDR` is not set.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8200";

/// A connection to a tresor server with one token (an installation token for the stores, an
/// admin token for [`Client::admin`]). Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url` (`http://…` or `https://…`, optionally with a path
    /// prefix) using `token`. Uses the system's trust roots and no request timeout; see
    /// [`Client::builder`] for more.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Client> {
        Client::builder(base_url, token).build()
    }

    /// A client configured from the environment: `TRESOR_ADDR` (default
    /// `http://127.0.0.1:8200`), `TRESOR_TOKEN` (required), and `TRESOR_CA_FILE` (optional:
    /// a PEM file with the only root certificates to trust).
    pub fn from_env() -> Result<Client> {
        let addr = non_empty_env("TRESOR_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let token = non_empty_env("TRESOR_TOKEN")
            .ok_or_else(|| Error::Config("TRESOR_TOKEN is not set".to_owned()))?;
        let mut builder = Client::builder(&addr, token);
        if let Some(path) = non_empty_env("TRESOR_CA_FILE") {
            let pem = std::fs::read(&path)
                .map_err(|e| Error::Config(format!("cannot read TRESOR_CA_FILE {path:?}: {e}")))?;
            builder = builder.root_ca_pem(pem);
        }
        builder.build()
    }

    /// A builder for a client with a custom root CA or timeouts.
    pub fn builder(base_url: &str, token: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            token: token.into(),
            root_ca_pem: None,
            timeout: None,
            connect_timeout: None,
            http: None,
        }
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The record store `store`.
    pub fn store(&self, store: Store) -> StoreClient {
        StoreClient::new(self.clone(), store)
    }

    /// The `secrets` store.
    pub fn secrets(&self) -> StoreClient {
        self.store(Store::Secrets)
    }

    /// The `settings` store.
    pub fn settings(&self) -> StoreClient {
        self.store(Store::Settings)
    }

    /// The `kv` store.
    pub fn kv(&self) -> StoreClient {
        self.store(Store::Kv)
    }

    /// The app's `shared` store.
    pub fn shared(&self) -> StoreClient {
        self.store(Store::Shared)
    }

    /// The write-only credentials of the installation and its account (installation token).
    pub fn credentials(&self) -> CredentialsClient {
        CredentialsClient::new(self.clone())
    }

    /// The administration API (needs an admin token).
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.clone())
    }

    /// `POST /v1/batch`: up to 100 ops in array order, each seeing the earlier ones' writes.
    ///
    /// With `atomic: false` every op has its own [`BatchResult`]. With `atomic: true` all writes
    /// commit together or none does: a failing write op makes this return [`Error::Api`] with
    /// [`Error::op_index`] naming the op. A `get`/`exists` 404 is a result, not a failure.
    pub async fn batch(&self, atomic: bool, ops: Vec<BatchOp>) -> Result<Vec<BatchResult>> {
        #[derive(serde::Serialize)]
        struct Body {
            atomic: bool,
            ops: Vec<BatchOp>,
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            results: Vec<BatchResult>,
        }
        let request = self
            .request(Method::POST, "/v1/batch", "")?
            .json_body(&Body { atomic, ops })?;
        let answer: Answer = self.call(request).await?.json("batch answer")?;
        Ok(answer.results)
    }

    /// A request to `path` (which must already be encoded) with `query` ("" or "?…").
    pub(crate) fn request(&self, method: Method, path: &str, query: &str) -> Result<Request> {
        let url = format!("{}{path}{query}", self.inner.base_url);
        let url = Url::parse(&url)
            .map_err(|e| Error::InvalidArgument(format!("cannot build a URL: {e}")))?;
        let builder = self
            .inner
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.inner.authorization.clone());
        Ok(Request {
            builder,
            sensitive: None,
        })
    }

    /// Sends a request; any non-2xx answer becomes [`Error::Api`].
    pub(crate) async fn call(&self, request: Request) -> Result<Answer> {
        let answer = self.send(request).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(answer.into_error())
        }
    }

    /// Sends a request and returns the answer whatever its status.
    pub(crate) async fn send(&self, request: Request) -> Result<Answer> {
        // Declared first, so dropped (and wiped) last: once reqwest has let go of the body.
        let Request {
            builder,
            sensitive: _wiped_when_done,
        } = request;
        let response = builder.send().await.map_err(Error::Transport)?;
        let status = response.status();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(Error::Transport)?;
        Ok(Answer {
            status,
            request_id,
            body: body.to_vec(),
        })
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    base_url: String,
    token: String,
    root_ca_pem: Option<Vec<u8>>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .field("root_ca_pem", &self.root_ca_pem.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ClientBuilder {
    /// Trust only the root certificates in this PEM bundle (a private CA or a self-signed
    /// server certificate), instead of the system's.
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientBuilder {
        self.root_ca_pem = Some(pem.into());
        self
    }

    /// A deadline for each whole request (connect, send, and read the answer).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// A deadline for establishing connections.
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Use this reqwest client as it is (the CA and timeout settings are then ignored). It
    /// should not follow redirects: the SDK relies on seeing the server's own answers.
    pub fn http_client(mut self, http: reqwest::Client) -> ClientBuilder {
        self.http = Some(http);
        self
    }

    /// Checks the configuration and builds the client.
    pub fn build(self) -> Result<Client> {
        let base_url = check_base_url(&self.base_url)?;
        if self.token.is_empty() {
            return Err(Error::Config("the token is empty".to_owned()));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| {
                Error::Config("the token holds characters not allowed in an HTTP header".into())
            })?;
        authorization.set_sensitive(true);
        let http = match self.http {
            Some(http) => http,
            None => {
                let mut builder = reqwest::Client::builder()
                    .user_agent(concat!("tresor-client/", env!("CARGO_PKG_VERSION")))
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(pem) = &self.root_ca_pem {
                    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                        Error::Config(format!("cannot read the root CA certificates: {e}"))
                    })?;
                    if certs.is_empty() {
                        return Err(Error::Config(
                            "the root CA file holds no certificate".to_owned(),
                        ));
                    }
                    builder = builder.tls_certs_only(certs);
                }
                if let Some(timeout) = self.timeout {
                    builder = builder.timeout(timeout);
                }
                if let Some(timeout) = self.connect_timeout {
                    builder = builder.connect_timeout(timeout);
                }
                builder
                    .build()
                    .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                authorization,
            }),
        })
    }
}

struct Inner {
    http: reqwest::Client,
    /// Without a trailing slash; may carry a path prefix (a server behind a reverse proxy).
    base_url: String,
    /// `Bearer <token>`, marked sensitive so that reqwest and http never print it.
    authorization: HeaderValue,
}

/// A request being built; wraps reqwest's so that bodies are always encoded by serde_json
/// (numbers kept exactly) and encoding errors are reported as [`Error::Encode`].
pub(crate) struct Request {
    builder: RequestBuilder,
    /// A body holding secrets, wiped when the request is over.
    sensitive: Option<WipeOnDrop>,
}

impl Request {
    pub(crate) fn header(mut self, name: &'static str, value: String) -> Result<Request> {
        let value = HeaderValue::from_str(&value)
            .map_err(|_| Error::InvalidArgument(format!("invalid {name} header value")))?;
        self.builder = self.builder.header(name, value);
        Ok(self)
    }

    pub(crate) fn if_match(self, version: Option<u64>) -> Result<Request> {
        match version {
            Some(version) => self.header("if-match", format!("\"{version}\"")),
            None => Ok(self),
        }
    }

    pub(crate) fn json_body<B: serde::Serialize + ?Sized>(self, body: &B) -> Result<Request> {
        self.body_with_type(body, "application/json")
    }

    /// A JSON body that holds secrets (a credential, a provider's client secret): encoded into
    /// a buffer of exactly its size (no reallocation leaves partial copies behind) and wiped
    /// once [`Client::send`] is done with it, if nothing else still holds it.
    pub(crate) fn sensitive_json_body<B: serde::Serialize + ?Sized>(
        mut self,
        body: &B,
    ) -> Result<Request> {
        let bytes = Bytes::from(encode_exact(body)?);
        self.builder = self
            .builder
            .header(CONTENT_TYPE, "application/json")
            .body(bytes.clone());
        self.sensitive = Some(WipeOnDrop(bytes));
        Ok(self)
    }

    pub(crate) fn body_with_type<B: serde::Serialize + ?Sized>(
        mut self,
        body: &B,
        content_type: &'static str,
    ) -> Result<Request> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Encode(e.to_string()))?;
        self.builder = self.builder.header(CONTENT_TYPE, content_type).body(bytes);
        Ok(self)
    }
}

/// Encodes `body` as JSON into a vector of exactly the right capacity: the first pass only
/// counts bytes. A failed encoding wipes what was written.
fn encode_exact<B: serde::Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, body).map_err(|e| Error::Encode(e.to_string()))?;
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *out, body).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(std::mem::take(&mut *out))
}

/// Wipes the bytes of a request body when dropped, provided this is the last reference.
struct WipeOnDrop(Bytes);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0));
    }
}

/// Zeroes `bytes` if nothing else shares them; `true` when it did.
fn wipe(bytes: Bytes) -> bool {
    match bytes.try_into_mut() {
        Ok(mut unique) => {
            unique.as_mut().zeroize();
            true
        }
        Err(_) => false,
    }
}

/// A complete answer.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) request_id: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| decode_error(what, &e))
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }

    pub(crate) fn into_error(self) -> Error {
        api_error(self.status.as_u16(), self.request_id, &self.body)
    }
}

fn check_base_url(base_url: &str) -> Result<String> {
    let trimmed = base_url.trim_end_matches('/');
    let url = Url::parse(trimmed)
        .map_err(|e| Error::Config(format!("invalid server address {trimmed:?}: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Error::Config(format!(
            "the server address must start with http:// or https://, not {}:",
            url.scheme()
        )));
    }
    // Credentials in the URL would end up in every error message that shows the URL.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(
            "the server address must not contain credentials; use the token".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(
            "the server address must not have a query or fragment".to_owned(),
        ));
    }
    if url.host_str().is_none() {
        return Err(Error::Config("the server address has no host".to_owned()));
    }
    Ok(trimmed.to_owned())
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tok_SUPER-secret-value-1234567890";

    #[test]
    fn debug_never_shows_the_token() {
        let client = Client::new("http://127.0.0.1:8200", TOKEN).unwrap();
        let debug = format!("{client:?} {:?}", client.kv());
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("<redacted>"));
        let builder = Client::builder("http://127.0.0.1:8200", TOKEN);
        let debug = format!("{builder:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
    }

    #[test]
    fn errors_never_show_the_token() {
        let bad = format!("{TOKEN}\nX-Evil: 1");
        let err = Client::new("http://127.0.0.1:8200", bad).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(!err.to_string().contains(TOKEN));
        assert!(!format!("{err:?}").contains(TOKEN));
        assert!(matches!(
            Client::new("http://127.0.0.1:8200", ""),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn base_url_checks() {
        let ok = [
            ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
            ("https://vault.example.com/", "https://vault.example.com"),
            ("https://h.example/prefix/", "https://h.example/prefix"),
        ];
        for (input, stored) in ok {
            assert_eq!(Client::new(input, TOKEN).unwrap().base_url(), stored);
        }
        for bad in [
            "127.0.0.1:8200",
            "ftp://h",
            "http://user:pw@h",
            "http://h/?q=1",
            "not a url",
        ] {
            assert!(
                matches!(Client::new(bad, TOKEN), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sensitive_bodies_are_exact_and_wiped_when_unshared() {
        let body: serde_json::Value =
            serde_json::from_str(r#"{"secret": {"api_key": "k"}, "n": 1.50}"#).unwrap();
        let encoded = encode_exact(&body).unwrap();
        assert_eq!(encoded, br#"{"secret":{"api_key":"k"},"n":1.50}"#);
        assert_eq!(encoded.capacity(), encoded.len());
        let bytes = Bytes::from(encoded);
        let shared = bytes.clone();
        assert!(!wipe(bytes), "a shared buffer cannot be wiped");
        assert!(wipe(shared));
    }

    #[test]
    fn a_bad_ca_file_is_a_config_error() {
        let err = Client::builder("https://h.example", TOKEN)
            .root_ca_pem(b"not a certificate".to_vec())
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}
