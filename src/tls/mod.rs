//! TLS for client connections (rustls, ring provider): loading a server's
//! certificate and key, and a client's trusted CA, from PEM files.
//!
//! A server started with `--tls-cert`/`--tls-key` serves clients only over
//! TLS; on the same port it tells a TLS ClientHello (first byte 0x16) from
//! a plaintext frame (first byte 0x43, "C"), and accepts plaintext only for
//! the peer handshake, which has its own authentication and MAC (spec §5).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

/// First byte of a TLS record carrying a handshake message.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {why}")]
    Pem {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("TLS setup: {0}")]
    Config(#[from] rustls::Error),
    #[error("{0} is not a valid server name for TLS")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |why: String| TlsError::Pem {
        what: "certificates",
        path: path.display().to_string(),
        why,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// A server configuration from a PEM certificate chain and private key.
///
/// # Errors
///
/// [`TlsError`] when the certificate or key file cannot be read or parsed,
/// or rustls refuses them.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        what: "private key",
        path: key.display().to_string(),
        why: e.to_string(),
    })?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// A client configuration trusting the CA certificates in `ca` (PEM).
///
/// # Errors
///
/// [`TlsError`] when the CA file cannot be read or holds no usable
/// certificate.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The name a client checks the server's certificate against: the host
/// part of `host:port` (an IP address or a DNS name).
///
/// # Errors
///
/// [`TlsError`] when the address has no valid host name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}
