//! `fleet provision`: give a terminal its identity.
//!
//! Generates the terminal's secret, writes its provisioning record (the
//! postcard struct from `protocol/`, with a version and CRC) and registers
//! the terminal with its site's gateway, so it is known before it first
//! connects. `--to-file` writes the record to a file (for `terminal-sim
//! --provisioning`, and for flashing later); `--read --from-file` shows a
//! record with the secret redacted.

use std::path::Path;

use anyhow::{bail, Context};
use pressline_protocol::provisioning::ProvisioningRecord;
use rand::RngCore;
use serde::Serialize;

use super::{exit, Outcome};
use crate::client::Gateway;
use crate::sites::Site;

/// What to provision.
pub struct Request<'a> {
    pub terminal: &'a str,
    pub zone: Option<&'a str>,
    pub wifi_ssid: &'a str,
    pub wifi_password: String,
    pub gateway: &'a str,
    pub register: bool,
}

/// Generates the secret, writes the record to `file`, registers with `site`.
pub fn to_file(site: &Site, request: &Request<'_>, file: &Path) -> anyhow::Result<Outcome> {
    let (host, port) = request.gateway.rsplit_once(':').with_context(|| {
        format!(
            "--gateway {:?}: expected HOST:PORT (the gateway's MQTT port for this terminal)",
            request.gateway
        )
    })?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--gateway {:?}: port is not a number", request.gateway))?;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let record = ProvisioningRecord {
        terminal: request.terminal,
        site: &site.name,
        zone: request.zone.unwrap_or(""),
        wifi_ssid: request.wifi_ssid,
        wifi_password: &request.wifi_password,
        gateway_host: host,
        gateway_port: port,
        secret,
    };
    let mut buf = [0u8; pressline_protocol::provisioning::MAX_RECORD_LEN];
    let bytes = record
        .encode(&mut buf)
        .map_err(|e| anyhow::anyhow!("cannot build the record: {e}"))?;
    // Round trip before anything is written or registered.
    if ProvisioningRecord::decode(bytes).as_ref() != Ok(&record) {
        bail!("the encoded record does not read back; nothing written");
    }
    if file.exists() {
        bail!(
            "{} exists: refusing to overwrite another terminal's record (delete it first)",
            file.display()
        );
    }
    write_private(file, bytes).with_context(|| format!("cannot write {}", file.display()))?;
    let mut stdout = format!(
        "provisioned {} ({} bytes) into {}\n",
        request.terminal,
        bytes.len(),
        file.display()
    );
    if request.register {
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        match Gateway::new(site).register(request.terminal, &hex, request.zone) {
            Ok(new) => stdout.push_str(&format!(
                "{} {} with site {} ({})\n",
                if new { "registered" } else { "re-registered" },
                request.terminal,
                site.name,
                site.url
            )),
            Err(e) => {
                // The record is useless without the registration: remove it.
                let _ = std::fs::remove_file(file);
                return Err(anyhow::anyhow!(
                    "{e}; the record was not kept, provision again when the gateway is reachable"
                ));
            }
        }
    }
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: exit::OK,
    })
}

#[derive(Serialize)]
struct Shown<'a> {
    terminal: &'a str,
    site: &'a str,
    zone: &'a str,
    wifi_ssid: &'a str,
    wifi_password: &'static str,
    gateway: String,
    secret: &'static str,
}

/// Shows a record, secret and Wi-Fi password redacted.
pub fn read(file: &Path, json: bool) -> anyhow::Result<Outcome> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let record = ProvisioningRecord::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let shown = Shown {
        terminal: record.terminal,
        site: record.site,
        zone: record.zone,
        wifi_ssid: record.wifi_ssid,
        wifi_password: if record.wifi_password.is_empty() {
            "(none)"
        } else {
            "(set)"
        },
        gateway: format!("{}:{}", record.gateway_host, record.gateway_port),
        secret: "(redacted)",
    };
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(&shown)?)
    } else {
        format!(
            "terminal       {}\nsite           {}\nzone           {}\nwifi ssid      {}\nwifi password  {}\ngateway        {}\nsecret         {}\n",
            shown.terminal, shown.site, shown.zone, shown.wifi_ssid, shown.wifi_password, shown.gateway, shown.secret
        )
    };
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: exit::OK,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
