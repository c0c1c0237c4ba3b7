//! TLS to the database with rustls. The URL's `sslmode` decides whether it is used; when it is,
//! the server's certificate is verified against the operator's CA file or the system's roots,
//! and its name against the host of the URL. There is no option to skip verification.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;
use tresor_core::CoreError;

/// The connector every pooled connection is made with.
pub(crate) fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, CoreError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    CoreError::invalid(format!(
                        "cannot read the database CA file {}: {e}",
                        path.display()
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    CoreError::invalid(format!(
                        "the database CA file {} is not PEM certificates: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(CoreError::invalid(format!(
                    "the database CA file {} holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    CoreError::invalid(format!("a certificate of the database CA file: {e}"))
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system root that rustls cannot parse is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CoreError::internal(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(connector(Some(&missing)).is_err());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let err = connector(Some(&empty)).err().unwrap();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn system_roots_are_enough_to_build_a_connector() {
        assert!(connector(None).is_ok());
    }
}
