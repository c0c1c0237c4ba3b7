//! TLS to the database, end to end, on a throwaway cluster that accepts only TLS and a password
//! (`tresor_test_support::postgres::tls_cluster`): with `sslmode=require` and the test CA, the
//! backend connects, migrates, and every session it holds is encrypted (as PostgreSQL itself
//! reports in `pg_stat_ssl`). The certificate is really checked: the system's roots, a CA that
//! did not sign it, or a server name it was not issued for are refused, as unavailable, and no
//! error shows the password. Without TLS the server turns the backend away.

use std::path::Path;
use std::time::Duration;

use tresor_backend_postgres::{PostgresBackend, PostgresOptions};
use tresor_core::CoreError;
use tresor_test_support::postgres::{TlsCluster, tls_cluster};

fn options(ca_file: Option<&Path>) -> PostgresOptions {
    PostgresOptions {
        max_connections: 4,
        ca_file: ca_file.map(Path::to_path_buf),
        connect_timeout: Duration::from_secs(10),
        ..PostgresOptions::default()
    }
}

/// A fresh database on the TLS cluster; its URL asks for TLS and holds the password.
async fn fresh() -> (&'static TlsCluster, String) {
    let cluster = tls_cluster();
    let url = cluster.fresh_database().await;
    assert!(url.contains("sslmode=require"), "{url}");
    assert!(
        url.contains(cluster.password()),
        "the URL carries the password"
    );
    (cluster, url)
}

/// The database name at the end of a URL's path.
fn database_of(url: &str) -> String {
    let path = url.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Which roots a plain driver connection trusts, in [`driver_refusal`].
enum Roots<'a> {
    System,
    File(&'a Path),
}

/// Why the driver itself (tokio-postgres over rustls, set up as the backend sets it up) cannot
/// connect to `url`: the full error chain, to check that the refusal is the certificate's
/// (the backend's error only says that the connection failed).
async fn driver_refusal(url: &str, roots: Roots<'_>) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::System => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
        Roots::File(path) => {
            for cert in CertificateDer::pem_file_iter(path).expect("CA file") {
                store.add(cert.expect("PEM")).expect("CA certificate");
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS configuration")
        .with_root_certificates(store)
        .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let err = match tokio_postgres::connect(url, tls).await {
        Ok(_) => panic!("the driver connected to {url}"),
        Err(e) => e,
    };
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(" / ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    chain
}

/// Connecting is refused as unavailable, and neither the message nor the debug form of the
/// error shows the password. Returns the message.
async fn refused(cluster: &TlsCluster, url: &str, ca_file: Option<&Path>) -> String {
    let err = match PostgresBackend::connect(url, options(ca_file)).await {
        Ok(_) => panic!("connected to {url} with CA {ca_file:?}"),
        Err(e) => e,
    };
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    let text = format!("{err} / {err:?}");
    assert!(
        !text.contains(cluster.password()),
        "the error shows the password: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_tls_connects_migrates_and_encrypts_every_session() {
    let (cluster, url) = fresh().await;
    eprintln!("on {}", cluster.description());
    let backend = PostgresBackend::connect(&url, options(Some(cluster.ca_file())))
        .await
        .expect("connect over TLS with the test CA");
    let report = backend.migrate().await.expect("migrate over TLS");
    assert_eq!(report.version, PostgresBackend::SCHEMA_VERSION);
    assert_eq!(
        backend.schema_version().await.expect("schema version"),
        PostgresBackend::SCHEMA_VERSION
    );

    // A second, separately verified connection looks at the backend's sessions.
    let client = cluster.connect(&url).await;
    let own: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("own pg_stat_ssl")
        .get(0);
    assert!(own, "the checking connection is encrypted");
    let sessions = client
        .query(
            "SELECT a.pid, s.ssl, s.version FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'tresor' AND a.datname = $1",
            &[&database_of(&url)],
        )
        .await
        .expect("pg_stat_activity joined with pg_stat_ssl");
    assert!(
        !sessions.is_empty(),
        "the backend holds no session on {}",
        database_of(&url)
    );
    for row in &sessions {
        let pid: i32 = row.get(0);
        let ssl: bool = row.get(1);
        let version: Option<String> = row.get(2);
        assert!(ssl, "session {pid} of the backend is not encrypted");
        assert!(
            version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
            "session {pid}: {version:?}"
        );
    }
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_name_of_the_certificate_is_accepted() {
    // `localhost` (a DNS name of the certificate), reached through hostaddr=127.0.0.1: the
    // control for the name mismatch below.
    let (cluster, url) = fresh().await;
    let by_name = cluster.url_via("localhost", &database_of(&url));
    let backend = PostgresBackend::connect(&by_name, options(Some(cluster.ca_file())))
        .await
        .expect("connect to localhost with the test CA");
    backend.migrate().await.expect("migrate");
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_roots_do_not_trust_the_test_ca() {
    let (cluster, url) = fresh().await;
    let text = refused(cluster, &url, None).await;
    assert!(
        text.contains("TLS with the database failed") && text.contains("UnknownIssuer"),
        "{text}"
    );
    let why = driver_refusal(&url, Roots::System).await;
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert!(!why.contains(cluster.password()), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_certificate_is_refused() {
    let (cluster, url) = fresh().await;
    let text = refused(cluster, &url, Some(cluster.unrelated_ca_file())).await;
    assert!(text.contains("UnknownIssuer"), "{text}");
    let why = driver_refusal(&url, Roots::File(cluster.unrelated_ca_file())).await;
    assert!(why.contains("UnknownIssuer"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_name_the_certificate_lacks_is_refused() {
    // The right server (hostaddr=127.0.0.1) and the right CA, by a name not in the
    // certificate (which names localhost and 127.0.0.1).
    let (cluster, url) = fresh().await;
    let wrong = cluster.url_via("db.invalid", &database_of(&url));
    assert!(wrong.contains("hostaddr=127.0.0.1"), "{wrong}");
    let text = refused(cluster, &wrong, Some(cluster.ca_file())).await;
    assert!(text.contains("not valid for name"), "{text}");
    let why = driver_refusal(&wrong, Roots::File(cluster.ca_file())).await;
    eprintln!("wrong name, driver: {why}");
    assert!(why.contains("not valid for name"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_the_server_turns_the_backend_away() {
    // The cluster accepts only TLS: sslmode=disable cannot silently fall back to plaintext.
    let (cluster, url) = fresh().await;
    let plain = url.replace("sslmode=require", "sslmode=disable");
    let text = refused(cluster, &plain, Some(cluster.ca_file())).await;
    eprintln!("sslmode=disable: {text}");
}
