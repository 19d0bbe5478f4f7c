//! TLS to Postgres with rustls, as libpq's `sslmode`: `require` encrypts without verifying
//! the server; `verify-ca` checks its certificate against `sslrootcert`; `verify-full` also
//! checks that the certificate names the host.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `require` and `prefer` check no certificate: the handshake signatures are still verified, so the
/// session is encrypted end to end with whoever answered.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The connector used for `sslmode=prefer` and `sslmode=require`.
pub fn connector() -> Result<MakeRustlsConnect, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// How the server's certificate is checked: libpq's `sslmode`, past what the driver parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// `disable`, `prefer`, `require` without a CA: encryption without authentication.
    Nothing,
    /// `verify-ca` (or `require` with `sslrootcert`, as libpq does): the chain must lead to
    /// the CA in `sslrootcert`; any host name.
    Ca(PathBuf),
    /// `verify-full`: the chain must lead to the CA, and the certificate name the host.
    Full(PathBuf),
}

/// A `DATABASE_URL` split for the driver: tokio-postgres refuses `sslmode=verify-ca`,
/// `verify-full` and `sslrootcert`, so they are taken out here and the driver is given
/// `sslmode=require` (TLS demanded) with the certificate check done by [`connector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    pub driver_url: String,
    pub verify: Verify,
}

/// Reads libpq's `sslmode` and `sslrootcert` from a URL (`postgres://…?sslmode=…`) or a
/// key/value string (`host=… sslmode=…`). Errors name the option, never the URL.
pub fn split_database_url(url: &str) -> Result<DatabaseUrl, String> {
    let is_uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (head, options, separator) = if is_uri {
        match url.split_once('?') {
            Some((head, query)) => (format!("{head}?"), query.to_string(), "&"),
            None => (url.to_string(), String::new(), "&"),
        }
    } else {
        (String::new(), url.to_string(), " ")
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    for option in options.split(separator).filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("sslmode", value)) => mode = Some(value.to_string()),
            Some(("sslrootcert", value)) => {
                let path = if is_uri {
                    percent_decode(value)?
                } else {
                    value.to_string()
                };
                root_cert = Some(PathBuf::from(path));
            }
            _ => kept.push(option.to_string()),
        }
    }
    let (driver_mode, verify) = match (mode.as_deref(), root_cert) {
        (Some("verify-full"), Some(ca)) => (Some("require"), Verify::Full(ca)),
        (Some("verify-ca"), Some(ca)) | (Some("require"), Some(ca)) => {
            (Some("require"), Verify::Ca(ca))
        }
        (Some(mode @ ("verify-full" | "verify-ca")), None) => {
            return Err(format!(
                "sslmode={mode} needs sslrootcert=<file of the CA certificate(s), PEM>"
            ))
        }
        (Some(mode @ ("disable" | "prefer")), Some(_)) => {
            return Err(format!(
                "sslrootcert is given but sslmode={mode} checks no certificate: use verify-full"
            ))
        }
        (Some(mode), _) => (Some(mode), Verify::Nothing),
        (None, Some(_)) => {
            return Err("sslrootcert is given without sslmode: use sslmode=verify-full".into())
        }
        (None, None) => (None, Verify::Nothing),
    };
    if let Some(mode) = driver_mode {
        kept.push(format!("sslmode={mode}"));
    }
    let driver_url = if kept.is_empty() {
        head.trim_end_matches('?').to_string()
    } else {
        format!("{head}{}", kept.join(separator))
    };
    Ok(DatabaseUrl { driver_url, verify })
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("sslrootcert: malformed percent-encoding")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "sslrootcert: not UTF-8".to_string())
}

/// `verify-ca`: the chain is checked against the CA, the host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // rustls checks the chain first and the name last: a name mismatch means the
        // chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The connector for `verify`: encryption only, or the server authenticated by the CA file.
pub fn connector_for(verify: &Verify) -> Result<MakeRustlsConnect, String> {
    let (ca, full) = match verify {
        Verify::Nothing => return connector().map_err(|e| format!("tls: {e}")),
        Verify::Ca(ca) => (ca, false),
        Verify::Full(ca) => (ca, true),
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("sslrootcert {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {}: no certificate in the file",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let config = if full {
        builder.with_webpki_verifier(webpki).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_becomes_require_for_the_driver_with_the_ca_kept() {
        let split = split_database_url(
            "postgres://u:p@db.example:5432/livegate?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            split.driver_url,
            "postgres://u:p@db.example:5432/livegate?application_name=x&sslmode=require"
        );
        assert_eq!(split.verify, Verify::Full(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn require_with_a_root_cert_verifies_the_chain_as_libpq_does() {
        let split =
            split_database_url("host=db sslmode=require sslrootcert=/ca.pem user=u").unwrap();
        assert_eq!(split.driver_url, "host=db user=u sslmode=require");
        assert_eq!(split.verify, Verify::Ca(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn require_alone_encrypts_without_verifying_and_the_url_is_untouched() {
        let url = "postgres://u@db/livegate?sslmode=require";
        let split = split_database_url(url).unwrap();
        assert_eq!(split.driver_url, url);
        assert_eq!(split.verify, Verify::Nothing);
        let bare = split_database_url("postgres://u@db/livegate").unwrap();
        assert_eq!(bare.driver_url, "postgres://u@db/livegate");
    }

    #[test]
    fn verify_modes_without_a_ca_are_refused_naming_sslrootcert() {
        for mode in ["verify-ca", "verify-full"] {
            let error = split_database_url(&format!("postgres://db/x?sslmode={mode}")).unwrap_err();
            assert!(error.contains("sslrootcert"), "{error}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let Err(error) = connector_for(&Verify::Full(PathBuf::from("/nonexistent/ca.pem"))) else {
            panic!("a missing CA file was accepted");
        };
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
