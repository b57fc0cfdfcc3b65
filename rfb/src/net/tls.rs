//! TLS for VeNCrypt's X509 sub-types, with rustls (ring provider).
//!
//! Client side: the server certificate is verified against the CA file given, or
//! else the system's trust store; skipping verification must be asked for
//! explicitly, and even then the handshake signatures are checked.
//!
//! Server side: [`server_config`] loads a certificate chain and its key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ConnectError;

/// How to set up TLS when the server asks for it.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that sign the server's certificate.
    /// When given, only these are trusted; otherwise the system store is used.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate: encryption without knowing who is at the
    /// other end. An explicit opt-out, for servers with throwaway certificates.
    pub insecure_skip_verify: bool,
    /// The name the certificate must carry (DNS name or IP address); defaults to
    /// the host connected to.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Builds the rustls configuration: fails early on an unreadable CA file, so
    /// a program can check its options before connecting anywhere.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Tls(format!("cannot configure TLS: {e}")))?;
        let config = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth()
        };
        Ok(Arc::new(config))
    }

    /// The name to verify the certificate against.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, ConnectError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned())
            .map_err(|e| ConnectError::Tls(format!("invalid TLS server name {name:?}: {e}")))
    }

    fn roots(&self) -> Result<RootCertStore, ConnectError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let shown = path.display();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ConnectError::Tls(format!("cannot read CA file {shown}: {e}")))?;
                for cert in certs {
                    let cert = cert.map_err(|e| {
                        ConnectError::Tls(format!("cannot read CA file {shown}: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        ConnectError::Tls(format!("invalid certificate in CA file {shown}: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(ConnectError::Tls(format!(
                        "CA file {shown} holds no PEM certificate"
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    let why = found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    return Err(ConnectError::Tls(format!(
                        "no trusted CA certificates in the system store{why}; give a CA file"
                    )));
                }
            }
        }
        Ok(roots)
    }
}

/// The TLS configuration of a server: the certificate chain in `cert_pem` (the
/// server's certificate first, then any intermediates) and its private key in
/// `key_pem` (PKCS#8, PKCS#1 or SEC1), which must match the certificate. No
/// client certificates are asked for.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert_shown = cert_pem.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("cannot read certificate file {cert_shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate file {cert_shown} holds no PEM certificate"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| format!("cannot read private key file {}: {e}", key_pem.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("cannot configure TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        format!(
            "certificate {cert_shown} with key {}: {e}",
            key_pem.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// Describes a failed TLS handshake, with a hint for the usual cause.
pub(crate) fn handshake_failure(server_name: &str, error: &std::io::Error) -> ConnectError {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let hint = match rustls_error {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => " (give the CA certificate that signed the server's certificate)",
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => " (set the TLS server name to one the certificate carries)",
        _ => "",
    };
    ConnectError::Tls(format!(
        "TLS handshake with {server_name} failed: {error}{hint}"
    ))
}

/// Accepts any certificate chain, but still checks that the server holds the
/// key of the certificate it sent (the handshake signatures).
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
