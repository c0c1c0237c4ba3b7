//! Spawns the real `tresor` binary on a free loopback port over a throwaway data directory,
//! and talks to it over HTTP: the harness of the black-box tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running `tresor serve`.
pub struct TestServer {
    bin: PathBuf,
    /// Keeps the data directory alive as long as the server (and its restarts).
    data: tempfile::TempDir,
    child: Option<Child>,
    pub addr: String,
    pub admin_token: String,
    pub http: reqwest::Client,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    scheme: &'static str,
}

/// An answer: status, headers and the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The contract error code, if the body is an error.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

impl TestServer {
    /// Starts the binary with the embedded store in a fresh temporary directory.
    pub async fn start(bin: &Path) -> TestServer {
        TestServer::start_with(bin, &[], &[]).await
    }

    pub async fn start_with(bin: &Path, extra_args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        TestServer::start_inner(bin, extra_args, envs, None).await
    }

    /// Starts with `--tls-cert`/`--tls-key` and a client that trusts only `ca_pem`.
    pub async fn start_tls(bin: &Path, cert: &Path, key: &Path, ca_pem: &[u8]) -> TestServer {
        let cert = cert.to_string_lossy().into_owned();
        let key = key.to_string_lossy().into_owned();
        let args = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
        TestServer::start_inner(bin, &args, &[], Some(ca_pem)).await
    }

    async fn start_inner(
        bin: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        ca_pem: Option<&[u8]>,
    ) -> TestServer {
        let data = tempfile::Builder::new()
            .prefix("tresor-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut s = TestServer {
            bin: bin.to_path_buf(),
            data,
            child: None,
            addr: String::new(),
            admin_token: String::new(),
            http: http_client(ca_pem),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            scheme: if ca_pem.is_some() { "https" } else { "http" },
        };
        s.launch().await;
        s.admin_token = std::fs::read_to_string(s.data_dir().join("admin.token"))
            .unwrap_or_else(|e| panic!("admin.token: {e}"))
            .trim()
            .to_owned();
        s
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Starts (or restarts) the process on a new free port and waits until it answers.
    pub async fn launch(&mut self) {
        let port = free_port();
        self.addr = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir().join("server.log"))
            .unwrap_or_else(|e| panic!("server.log: {e}"));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(&self.extra_args)
            .env_remove("TRESOR_ADMIN_TOKEN")
            .env_remove("TRESOR_MASTER_KEY")
            .env_remove("TRESOR_MASTER_KEY_FILE")
            .env_remove("TRESOR_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn tresor: {e}"));
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("tresor exited early ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tresor did not start; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Any request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut headers = Vec::new();
        if body.is_some() {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            headers.push(("content-type", ct.to_owned()));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.raw(method, path, token, &headers, bytes).await
    }

    /// A request with explicit headers and raw body bytes.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("method: {e}"));
        let mut rb = self.http.request(m, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, v.as_str());
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.call(method, path, Some(&self.admin_token), body).await
    }

    /// Registers an app (scopes), an account, and installs; returns the installation token.
    pub async fn install(
        &self,
        app: &str,
        scopes: &[&str],
        account: &str,
        installation: &str,
    ) -> String {
        let r = self
            .admin(
                "PUT",
                &format!("/v1/admin/apps/{app}"),
                Some(&json!({ "scopes": scopes })),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "put app: {r:?}");
        let r = self
            .admin("PUT", &format!("/v1/admin/accounts/{account}"), None)
            .await;
        assert!(r.status == 201 || r.status == 200, "put account: {r:?}");
        let r = self
            .admin(
                "PUT",
                &format!("/v1/admin/installations/{installation}"),
                Some(&json!({ "app_id": app, "account_id": account })),
            )
            .await;
        assert_eq!(r.status, 201, "install: {r:?}");
        r.body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {r:?}"))
            .to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn http_client(ca_pem: Option<&[u8]>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(pem) = ca_pem {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).unwrap_or_else(|e| panic!("test CA: {e}"));
        b = b.tls_certs_only(certs);
    }
    b.build().unwrap_or_else(|e| panic!("http client: {e}"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

impl TestServer {
    /// Sends `request_target` byte for byte (HTTP clients normalize dot segments, so keys like
    /// `%2E%2E` need this) and returns the status code.
    pub async fn raw_target_status(
        &self,
        method: &str,
        request_target: &str,
        token: &str,
        body: &str,
    ) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let req = format!(
            "{method} {request_target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text}"))
    }
}
