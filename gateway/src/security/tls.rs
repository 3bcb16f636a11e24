//! TLS for what the gateway connects to and what it serves: the upstream
//! broker (client, optionally with a client certificate for mutual TLS),
//! the terminal listener and the HTTP API (servers).
//!
//! One crypto provider for the whole process (rustls with *ring*), loaded
//! PEM files with errors that name the file and say what was expected, and
//! plain-language explanations of certificate failures: an operator reading
//! "the upstream broker's certificate expired on …" knows what to do; one
//! reading `InvalidCertificate(Expired)` has to search for it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};

use crate::security::secret_files;

/// Installs *ring* as the process-wide rustls provider. Idempotent; every
/// TLS configuration below calls it, so no caller has to remember.
pub fn install_crypto_provider() {
    // Err means one is installed already (by an earlier call): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use pressline_host::tls::load_certs;

/// Reads the private key from a PEM file (PKCS#8, PKCS#1 or SEC1), after
/// refusing it when other users can read it.
pub fn load_key(path: &Path, what: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    secret_files::refuse_world_readable(path, what)?;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} holds no usable private key ({e}); expected a PEM \"PRIVATE KEY\" block",
            path.display()
        )
    })
}

/// How to reissue an X.509 v1 certificate as v3 (said wherever one is met).
pub const REISSUE_AS_V3: &str = "reissue it as X.509 v3: sign the request with `openssl x509 -req ... -extfile v3.ext`, where v3.ext holds `basicConstraints=CA:FALSE` and `subjectAltName=DNS:<host name>` (deploy/README.md, \"Certificates\")";

/// Refuses an X.509 v1 certificate in a chain the gateway presents (its
/// client certificate, its server certificate). OpenSSL 3.0 (Debian 12)
/// issues v1 from `openssl x509 -req` without `-extfile`, as Mosquitto's
/// TLS guide shows; rustls and most TLS stacks refuse v1 for anything but
/// a trust anchor, with an error (`UnsupportedCertVersion`) that sends
/// people looking at the key. A v1 CA in a CA file works and is allowed.
pub fn refuse_v1_chain(
    chain: &[CertificateDer<'_>],
    path: &Path,
    what: &str,
) -> anyhow::Result<()> {
    for (i, cert) in chain.iter().enumerate() {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            bail!(
                "{what} {}: certificate {} of the file is not valid DER",
                path.display(),
                i + 1
            );
        };
        if parsed.version() == x509_parser::x509::X509Version::V1 {
            let which = if i == 0 {
                String::new()
            } else {
                format!(" (certificate {} of the chain)", i + 1)
            };
            bail!(
                "{what} {}{which} is an X.509 v1 certificate ({}), which TLS refuses for anything but a CA: {REISSUE_AS_V3}",
                path.display(),
                parsed.subject()
            );
        }
    }
    Ok(())
}

/// When a certificate is not yet valid or no longer valid, says so (and
/// when), so a wrong clock or a forgotten renewal shows up at start-up.
pub fn validity_problem(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        Some(format!("expired on {}", validity.not_after))
    } else if now < validity.not_before {
        Some(format!(
            "is not valid before {} (is this machine's clock right?)",
            validity.not_before
        ))
    } else {
        None
    }
}

/// Where the upstream connection's trust and identity come from. Kept as
/// paths, so renewed files are picked up at the next reconnect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA bundle; `None` uses the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl ClientTls {
    /// When the client certificate is expired or not yet valid, says so.
    pub fn certificate_problem(&self) -> Option<String> {
        let cert = self.cert_file.as_deref()?;
        let chain = load_certs(cert, "upstream client certificate").ok()?;
        validity_problem(&chain[0])
            .map(|p| format!("the upstream client certificate {} {p}", cert.display()))
    }
}

/// Builds the rustls client configuration for the upstream broker.
pub fn client_config(tls: &ClientTls) -> anyhow::Result<ClientConfig> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    match tls.ca_file.as_deref() {
        Some(path) => pressline_host::tls::add_ca_file(&mut roots, path, "upstream CA file")?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Skip the odd broken system certificate rather than failing.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!(
                    "no system CA certificates found (install Debian's ca-certificates, or set upstream.ca_file / --upstream-ca)"
                );
            }
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (tls.cert_file.as_deref(), tls.key_file.as_deref()) {
        (Some(cert), Some(key_path)) => {
            let chain = load_certs(cert, "upstream client certificate")?;
            refuse_v1_chain(&chain, cert, "upstream client certificate")?;
            let key = load_key(key_path, "upstream client key")?;
            builder.with_client_auth_cert(chain, key).with_context(|| {
                format!(
                    "upstream client key {} does not match certificate {}",
                    key_path.display(),
                    cert.display()
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("upstream.cert_file and upstream.key_file go together: set both for mutual TLS, or neither"),
    };
    Ok(config)
}

/// Builds a rustls server configuration from a certificate chain and key
/// (the terminal listener and the HTTPS API).
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    what: &str,
) -> anyhow::Result<ServerConfig> {
    install_crypto_provider();
    let chain = load_certs(cert_file, &format!("{what} certificate"))?;
    refuse_v1_chain(&chain, cert_file, &format!("{what} certificate"))?;
    if let Some(problem) = validity_problem(&chain[0]) {
        tracing::error!(file = %cert_file.display(), "the {what} certificate {problem}: clients will refuse it");
    }
    let key = load_key(key_file, &format!("{what} key"))?;
    ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "{what} key {} does not match certificate {}",
                key_file.display(),
                cert_file.display()
            )
        })
}

pub use pressline_host::tls::find_rustls_error;

/// Explains a TLS failure talking to `peer` in words an operator can act
/// on; `None` when the error is not about TLS.
pub fn explain(error: &(dyn std::error::Error + 'static), peer: &str) -> Option<String> {
    let tls = find_rustls_error(error)?;
    let text = match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "the certificate of {peer} has expired ({tls}); it must be renewed on the broker"
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the certificate of {peer} is not valid yet ({tls}); check this machine's clock"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the certificate of {peer} is not valid for that host name ({tls}); connect with the name the certificate was issued for"
                )
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the certificate of {peer} is not signed by a trusted CA ({tls}); set upstream.ca_file (--upstream-ca) to the CA that issued it"
            ),
            CertificateError::Revoked => format!("the certificate of {peer} is revoked ({tls})"),
            _ if tls.to_string().contains("UnsupportedCertVersion") => format!(
                "the certificate of {peer} is an X.509 v1 certificate ({tls}), which TLS refuses for anything but a CA; on the broker, {REISSUE_AS_V3}"
            ),
            _ => format!("the certificate of {peer} was refused: {tls}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => format!(
                "{peer} requires a client certificate ({tls}); set upstream.cert_file and upstream.key_file (--upstream-cert, --upstream-key)"
            ),
            AlertDescription::CertificateExpired => format!(
                "{peer} refused our client certificate because it has expired ({tls}); renew it"
            ),
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError => format!(
                "{peer} refused our client certificate ({tls}); it must be issued by a CA the broker trusts, be current, and match the key"
            ),
            AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure => format!(
                "{peer} and the gateway share no TLS version or cipher suite ({tls}); the gateway needs TLS 1.2 or 1.3"
            ),
            _ => format!("{peer} ended the TLS handshake: {tls}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } => format!(
            "{peer} does not speak TLS on that port ({tls}); use mqtt:// for a plain port, or the broker's TLS port (usually 8883)"
        ),
        other => format!("TLS with {peer} failed: {other}"),
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_certificate_errors_are_explained() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let text = explain(&io, "upstream broker x:8883").unwrap();
        assert!(text.contains("not signed by a trusted CA"), "{text}");
        assert!(text.contains("--upstream-ca"), "{text}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(explain(&plain, "x").is_none());
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        assert!(explain(&alert, "x").unwrap().contains("--upstream-cert"));
    }

    #[test]
    fn missing_and_malformed_files_say_which_file_and_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("nope.pem");
        let err = load_certs(&none, "upstream CA file")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read upstream CA file") && err.contains("nope.pem"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let err = load_certs(&empty, "upstream CA file")
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no certificate"), "{err}");
    }
}
