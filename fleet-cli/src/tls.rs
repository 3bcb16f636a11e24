//! HTTPS to site gateways: a private CA per site (`fleet site add --ca`),
//! and certificate failures explained with the command that fixes them.
//!
//! A gateway serving HTTPS usually has a certificate from the operator's own
//! CA, not a public one: its address is a venue-network IP. Public roots
//! are used when a site has no CA file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

use crate::sites::Site;

/// Reads the CA certificates of a PEM file, checking there is at least one.
pub fn load_ca(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("CA file {} is not a PEM file", path.display()))?;
    if certs.is_empty() {
        bail!(
            "CA file {} holds no certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks)",
            path.display()
        );
    }
    Ok(certs)
}

/// TLS to the central PostgreSQL (`fleet report`): the system's trust
/// store plus `--postgres-ca`. Used when the server offers TLS, demanded
/// with `sslmode=require` in the URL.
pub fn postgres_tls(
    ca_file: Option<&Path>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca_file {
        for cert in load_ca(ca)? {
            roots.add(cert).with_context(|| {
                format!("CA file {} holds an invalid CA certificate", ca.display())
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The HTTP agent for one site: its CA when it has one.
pub fn agent_for(site: &Site) -> anyhow::Result<ureq::Agent> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(15));
    if let Some(ca) = &site.ca_file {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        for cert in load_ca(ca)? {
            roots.add(cert).with_context(|| {
                format!("CA file {} holds an invalid CA certificate", ca.display())
            })?;
        }
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

fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = find_rustls_error(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}
