//! Trust: certificates from PEM files with errors that name the file and
//! say what was expected, a private CA beside the system's roots, and the
//! TLS connector for PostgreSQL.

use std::path::Path;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Every certificate in a PEM file (a chain: leaf first); `what` names the
/// file in errors (`"upstream.ca_file"`, `"--postgres-ca"`).
pub fn load_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what} {} is not a valid PEM file", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{what} {} holds no certificate (expected PEM blocks starting with \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        );
    }
    Ok(certs)
}

/// The rustls error inside an error, however deeply wrapped (rumqttc and
/// ureq wrap it in their own errors, tokio-rustls in `io::Error`).
pub fn find_rustls_error<'a>(
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

/// Adds the CA certificates of a PEM file to `roots`.
pub fn add_ca_file(roots: &mut RootCertStore, path: &Path, what: &str) -> anyhow::Result<()> {
    for cert in load_certs(path, what)? {
        roots.add(cert).with_context(|| {
            format!("{what} {} holds an invalid CA certificate", path.display())
        })?;
    }
    Ok(())
}

/// The system's trust store, plus a private CA when given. A missing or
/// partly unreadable system store is not fatal: the private CA may be all
/// that is needed.
pub fn system_roots_and(ca_file: Option<&Path>, what: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path, what)?;
    }
    Ok(roots)
}

/// TLS to PostgreSQL, used when the server offers it (`sslmode=prefer`,
/// the default) or demanded with `sslmode=require`: the system's trust
/// store plus `--postgres-ca`.
#[cfg(feature = "postgres")]
pub fn postgres_tls(
    ca_file: Option<&Path>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let roots = system_roots_and(ca_file, "--postgres-ca")?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_named_with_what_was_expected() {
        let dir = std::env::temp_dir().join(format!("pressline-host-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let e = load_certs(&file, "--postgres-ca").unwrap_err().to_string();
        assert!(
            e.contains("--postgres-ca") && e.contains("BEGIN CERTIFICATE"),
            "{e}"
        );
        let missing = load_certs(&dir.join("absent.pem"), "CA file").unwrap_err();
        assert!(format!("{missing:#}").contains("cannot read CA file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
