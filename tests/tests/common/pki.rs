//! A private PKI made by the test, as an operator would with their own CA:
//! a CA, server certificates for `localhost`/127.0.0.1, client certificates
//! for gateways, and deliberately broken ones (expired, from another CA,
//! for another host). Written as PEM files; keys owner-only.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday-ish for years: rcgen's default range.
    Current,
    /// Expired in 2021.
    Expired,
}

/// A certificate authority that writes into `dir`.
pub struct Ca {
    pub name: String,
    /// The CA certificate as PEM, to give to whoever must trust it.
    pub cert_file: PathBuf,
    cert: Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}-ca.pem"));
        fs::write(&cert_file, cert.pem()).unwrap();
        Ca {
            name: name.into(),
            cert_file,
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A server certificate for `hosts` (DNS names or IP addresses).
    pub fn server(&self, file_name: &str, hosts: &[&str], validity: Validity) -> Issued {
        self.issue(
            file_name,
            hosts,
            validity,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate (mutual TLS), its common name `file_name`.
    pub fn client(&self, file_name: &str, validity: Validity) -> Issued {
        self.issue(
            file_name,
            &[],
            validity,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        file_name: &str,
        hosts: &[&str],
        validity: Validity,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, file_name.to_string());
        params.extended_key_usages = vec![usage];
        if validity == Validity::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file_name}.pem")),
            key: self.dir.join(format!("{file_name}.key")),
        };
        fs::write(&issued.cert, cert.pem()).unwrap();
        write_private_key(&issued.key, &key.serialize_pem());
        issued
    }
}

/// Writes a key file owner-only, as an operator is told to.
pub fn write_private_key(path: &Path, pem: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(pem.as_bytes()).unwrap();
}
