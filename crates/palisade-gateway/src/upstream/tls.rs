//! TLS to upstreams: which certificate authorities the gateway trusts.

use std::sync::Arc;

use palisade_core::BoxError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The TLS settings of the gateway's upstream client: the certificate
/// authorities it trusts are Mozilla's (`webpki-roots`, always there), the
/// system's (where it has any), and those of `ca_file` (PEM), for
/// providers behind a private CA. Crypto from `ring`; TLS 1.2 and 1.3.
pub fn client_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, BoxError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // The system's store, if it has one; unreadable entries are skipped
    // (a container without CA certificates still has Mozilla's).
    let native = rustls_native_certs::load_native_certs();
    let _ = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in read_ca_file(path).map_err(|e| format!("gateway.ca_file: {e}"))? {
            roots
                .add(cert)
                .map_err(|e| format!("gateway.ca_file: {path}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The certificates of a PEM file: at least one, or an error naming the
/// file and what is wrong (the config key is the caller's to add).
pub(crate) fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path} is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{path} holds no certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("palisade-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = client_config(Some(missing.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gateway.ca_file: cannot read"), "{err}");

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(empty.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no certificate"), "{err}");

        assert!(client_config(None).is_ok(), "Mozilla's roots at least");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
