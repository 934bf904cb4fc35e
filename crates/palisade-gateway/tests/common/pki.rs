//! A private CA and a certificate for `localhost` signed by it, made by
//! the test (rcgen), for TLS servers the gateway must trust.
#![allow(dead_code, unreachable_pub)]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The CA's certificate and the server's certificate and key.
pub struct Pki {
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    /// The server's certificate (for `localhost`), PEM and DER.
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// The server's key, PEM and PKCS#8 DER.
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

/// A fresh CA and `localhost` certificate.
pub fn localhost() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        cert_der: leaf.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    }
}

/// Writes `pem` to a file under the test target's temporary directory.
pub fn write(name: &str, pem: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}
