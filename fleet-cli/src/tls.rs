//! HTTPS to site gateways: a private CA per site (`fleet site add --ca`),
//! and certificate failures explained with the command that fixes them.
//!
//! A gateway serving HTTPS usually has a certificate from the operator's own
//! CA, not a public one: its address is a venue-network IP. Public roots
//! are used when a site has no CA file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

use pressline_host::tls::find_rustls_error;

use crate::sites::Site;

/// Reads the CA certificates of a PEM file, checking there is at least one.
pub fn load_ca(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    pressline_host::tls::load_certs(path, "CA file")
}

pub use pressline_host::tls::postgres_tls;

/// The HTTP agent for one site: its CA when it has one.
pub fn agent_for(site: &Site) -> anyhow::Result<ureq::Agent> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(15));
    if let Some(ca) = &site.ca_file {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        pressline_host::tls::add_ca_file(&mut roots, ca, "CA file")?;
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.tls_config(Arc::new(config));
    }
    Ok(builder.build())
}

/// Explains a certificate failure reaching `site`, or `None` when the
/// failure is not about certificates.
pub fn explain(error: &(dyn std::error::Error + 'static), site: &Site) -> Option<String> {
    let tls = find_rustls_error(error)?;
    let name = &site.name;
    let fix_ca = format!(
        "if the gateway's certificate comes from your own CA, give it: `fleet site add {name} --url {} --token-file FILE --ca CA.pem`",
        site.url
    );
    Some(match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => match &site.ca_file
            {
                Some(ca) => format!(
                    "the gateway's certificate is not signed by the CA in {} ({tls})",
                    ca.display()
                ),
                None => format!(
                    "the gateway's certificate is not signed by a public CA ({tls}); {fix_ca}"
                ),
            },
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!(
                    "the gateway's certificate has expired ({tls}); renew it (http.tls_cert_file)"
                )
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the gateway's certificate is not issued for the host in {} ({tls}); use the name or address it was issued for",
                    site.url
                )
            }
            _ => format!("the gateway's certificate was refused: {tls}"),
        },
        rustls::Error::InvalidMessage(_) => format!(
            "{} does not answer TLS ({tls}); does the gateway serve plain http://?",
            site.url
        ),
        other => format!("TLS with the gateway failed: {other}"),
    })
}
