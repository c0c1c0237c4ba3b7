//! One HTTP/1.1 keep-alive connection per worker, on hyper's low-level client: no pool, no
//! retries, nothing between the worker and the socket but the HTTP codec. A connection that
//! fails is dropped and reopened on the next request (the failure counts as an error).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go: a plain `http://host:port` base.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: HeaderValue,
}

impl Target {
    /// Parses `http://host:port` (a path, if any, is ignored) and resolves the host once.
    pub async fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
        if uri.scheme_str() != Some("http") {
            bail!(
                "{url}: only http:// targets are supported (the generator speaks plain HTTP/1.1)"
            );
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{url}: no host"))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .with_context(|| format!("resolving {}", authority.host()))?
            .next()
            .with_context(|| format!("{}: no address", authority.host()))?;
        Ok(Target {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
        })
    }
}

/// One request as the generator sends it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub uri: Uri,
    pub token: Option<HeaderValue>,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

impl Req {
    pub fn new(method: Method, uri: Uri) -> Req {
        Req {
            method,
            uri,
            token: None,
            content_type: None,
            body: Bytes::new(),
        }
    }

    pub fn token(mut self, token: &HeaderValue) -> Req {
        self.token = Some(token.clone());
        self
    }

    pub fn json(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Req {
        self.content_type = Some(HeaderValue::from_static(content_type));
        self.body = body.into();
        self
    }
}

/// A keep-alive connection to the target; reopened after a failure.
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub async fn connect(target: &Target) -> anyhow::Result<Conn> {
        let mut conn = Conn {
            target: target.clone(),
            sender: None,
        };
        conn.open().await?;
        Ok(conn)
    }

    async fn open(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(self.target.addr)
            .await
            .with_context(|| format!("connecting to {}", self.target.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // The error, if any, reaches the worker through its next `send_request`.
            let _ = connection.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// Sends `req` and reads the whole answer: its status and body.
    pub async fn send(&mut self, req: &Req) -> anyhow::Result<(u16, Bytes)> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(req.uri.clone())
            .header(HOST, self.target.host.clone());
        if let Some(token) = &req.token {
            builder = builder.header(AUTHORIZATION, token.clone());
        }
        if let Some(ct) = &req.content_type {
            builder = builder.header(CONTENT_TYPE, ct.clone());
        }
        let request = builder.body(Full::new(req.body.clone()))?;
        let sender = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => self.open().await?,
        };
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        match answer {
            Ok(a) => Ok(a),
            Err(e) => {
                self.sender = None;
                Err(e.into())
            }
        }
    }
}

/// The `Authorization` header value for a bearer token.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))?;
    v.set_sensitive(true);
    Ok(v)
}
