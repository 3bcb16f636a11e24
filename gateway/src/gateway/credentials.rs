//! Everything secret or certificate-bearing the configuration points to,
//! read and checked before anything starts.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::pipeline::forwarder::UpstreamTls;

/// Everything secret or certificate-bearing the configuration points to,
/// read and checked before anything starts: a mistake there is one clear
/// configuration error (exit code 2), not a half-started gateway.
pub struct Credentials {
    pub(super) upstream_tls: Option<UpstreamTls>,
    pub(super) upstream_login: Option<(String, String)>,
    pub(super) https: Option<rustls::ServerConfig>,
}

impl Credentials {
    pub fn load(config: &Config) -> anyhow::Result<Credentials> {
        let upstream_tls = match config.upstream_addr()? {
            Some(addr) if addr.tls => {
                let files = crate::security::tls::ClientTls {
                    ca_file: config.upstream.ca_file.clone(),
                    cert_file: config.upstream.cert_file.clone(),
                    key_file: config.upstream.key_file.clone(),
                };
                let client = crate::security::tls::client_config(&files)?;
                if let Some(problem) = files.certificate_problem() {
                    tracing::error!("{problem}: the broker will refuse it; presses are kept, and a renewed certificate in its place is used at the next attempt");
                }
                Some(UpstreamTls {
                    files,
                    config: Arc::new(client),
                })
            }
            _ => None,
        };
        let upstream_login = match (&config.upstream.username, &config.upstream.password_file) {
            (Some(user), Some(file)) => {
                crate::security::secret_files::refuse_world_readable(
                    file,
                    "upstream.password_file",
                )?;
                let pass = std::fs::read_to_string(file).with_context(|| {
                    format!("cannot read upstream.password_file {}", file.display())
                })?;
                Some((user.clone(), pass.trim_end().to_string()))
            }
            (Some(user), None) => Some((user.clone(), String::new())),
            (None, Some(_)) => anyhow::bail!("upstream.password_file needs upstream.username"),
            (None, None) => None,
        };
        let https = match (&config.http.tls_cert_file, &config.http.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(crate::security::tls::server_config(cert, key, "HTTPS")?)
            }
            _ => None,
        };
        // rumqttd reads the terminal listener's files itself, in its own
        // thread, and would only log a problem there.
        if let (Some(_), Some(cert), Some(key)) = (
            config.mqtt.tls_listen,
            &config.mqtt.tls_cert_file,
            &config.mqtt.tls_key_file,
        ) {
            crate::security::tls::server_config(cert, key, "terminal TLS listener")?;
        }
        Ok(Credentials {
            upstream_tls,
            upstream_login,
            https,
        })
    }
}
