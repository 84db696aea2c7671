//! The server's TLS configuration from `tls_server_config`: rustls with the
//! ring provider, HTTP/1.1 only (ALPN), client certificates verified against
//! `client_ca_file` when asked for.

use std::{path::Path, sync::Arc};

use rustls::{
    crypto::ring,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};

use crate::http::web_config::{ClientAuth, TlsSettings, TlsVersion};

/// Builds the rustls configuration, reading the files it names. Messages
/// name the key and the file, never what is in it.
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let certs = certificates(&s.cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&s.key_file).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "tls_server_config.key_file {}: no private key in it (PEM: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            s.key_file.display()
        ),
        e => format!("tls_server_config.key_file {}: {e}", s.key_file.display()),
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = match (s.min_version, s.max_version) {
        (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
        (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
        (TlsVersion::Tls12, TlsVersion::Tls13) => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (s.client_auth, &s.client_ca_file) {
        (ClientAuth::NoClientCert, _) => builder.with_no_client_auth(),
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, Some(ca_file)) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(ca_file, "client_ca_file")? {
                roots.add(ca).map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if s.client_auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier =
                verifier.build().map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        // web_config refuses this combination; kept an error rather than a panic.
        (_, None) => return Err("tls_server_config: client_ca_file is missing".into()),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_server_config: the certificate in {} and the key in {} do not make a server identity: {e}",
            s.cert_file.display(),
            s.key_file.display()
        )
    })?;
    // The agent's server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file (a chain: the server's first).
fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("tls_server_config.{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("tls_server_config.{key} {}: no certificate (PEM: CERTIFICATE) in it", path.display()));
    }
    Ok(certs)
}
