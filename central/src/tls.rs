//! TLS to PostgreSQL: the system's trust store plus, for a private CA,
//! `--postgres-ca`. Used when the server offers TLS (`sslmode=prefer`, the
//! default) or demanded with `sslmode=require` in the URL.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector for every database connection.
pub fn postgres_tls(ca_file: Option<&Path>) -> anyhow::Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    // A missing or partly unreadable system store is not fatal: a private
    // CA may be all that is needed.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --postgres-ca {}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--postgres-ca {} is not a PEM file", path.display()))?;
        if certs.is_empty() {
            bail!(
                "--postgres-ca {} holds no certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks)",
                path.display()
            );
        }
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!(
                    "--postgres-ca {} holds an invalid CA certificate",
                    path.display()
                )
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
    Ok(MakeRustlsConnect::new(config))
}
