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
use pressline_protocol::power::PowerSettings;
use pressline_protocol::provisioning::ProvisioningRecord;
use rand::RngCore;
use serde::Serialize;

use super::{exit, Outcome};
use crate::client::Gateway;
use crate::probe;
use crate::sites::Site;

/// What to provision.
pub struct Request<'a> {
    pub terminal: &'a str,
    pub zone: Option<&'a str>,
    pub wifi_ssid: &'a str,
    pub wifi_password: String,
    pub gateway: &'a str,
    /// Mains or battery, and the battery settings.
    pub power: PowerSettings,
    pub register: bool,
}

/// Where the record goes.
pub enum Destination<'a> {
    /// A file (for terminal-sim --provisioning, or flashing later).
    File(&'a Path),
    /// The terminal on the debug probe (its reserved flash sector).
    Probe {
        chip: &'a str,
        serial: Option<&'a str>,
    },
}

/// Generates the secret, builds the record, writes it to `destination`
/// (checking it reads back) and registers the terminal with `site`.
pub fn provision(
    site: &Site,
    request: &Request<'_>,
    destination: &Destination<'_>,
) -> anyhow::Result<Outcome> {
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
        power: request.power,
    };
    let mut buf = [0u8; pressline_protocol::provisioning::MAX_RECORD_LEN];
    let bytes = record
        .encode(&mut buf)
        .map_err(|e| anyhow::anyhow!("cannot build the record: {e}"))?;
    // Round trip before anything is written or registered.
    if ProvisioningRecord::decode(bytes).as_ref() != Ok(&record) {
        bail!("the encoded record does not read back; nothing written");
    }
    let mut stdout = match destination {
        Destination::File(file) => {
            if file.exists() {
                bail!(
                    "{} exists: refusing to overwrite another terminal's record (delete it first)",
                    file.display()
                );
            }
            write_private(file, bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
            format!(
                "provisioned {} ({} bytes) into {}\n",
                request.terminal,
                bytes.len(),
                file.display()
            )
        }
        Destination::Probe { chip, serial } => {
            let mut session = probe::attach(chip, *serial)?;
            probe::write_record(&mut session, bytes)?;
            format!(
                "provisioned {} ({} bytes) into the terminal's flash at {:#010x}, read back and verified\n",
                request.terminal,
                bytes.len(),
                probe::PROVISIONING_ADDRESS
            )
        }
    };
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
                if let Destination::File(file) = destination {
                    // A record file without its registration is useless.
                    let _ = std::fs::remove_file(file);
                }
                return Err(anyhow::anyhow!(
                    "{e}; the terminal is not registered: provision it again when the gateway is reachable (a new secret replaces this one)"
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

/// One row of a batch file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct BatchRow {
    pub terminal: String,
    #[serde(default)]
    pub zone: Option<String>,
}

/// Reads a batch CSV (header `terminal,zone`; zone may be empty), checking
/// every id before anything is provisioned.
pub fn read_batch(text: &str) -> anyhow::Result<Vec<BatchRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .context("the batch file has no header line (expected: terminal,zone)")?
        .clone();
    if headers.get(0) != Some("terminal") {
        bail!("the batch file's first column must be 'terminal' (header: terminal,zone)");
    }
    let mut rows: Vec<BatchRow> = Vec::new();
    for (i, record) in reader.deserialize::<BatchRow>().enumerate() {
        let line = i + 2;
        let mut row = record.with_context(|| format!("batch file line {line} does not parse"))?;
        row.zone = row.zone.filter(|z| !z.is_empty());
        pressline_protocol::ident::validate_id(&row.terminal).map_err(|e| {
            anyhow::anyhow!("batch file line {line}: terminal {:?}: {e}", row.terminal)
        })?;
        if let Some(z) = &row.zone {
            pressline_protocol::ident::validate_id(z)
                .map_err(|e| anyhow::anyhow!("batch file line {line}: zone {z:?}: {e}"))?;
        }
        if rows.iter().any(|r| r.terminal == row.terminal) {
            bail!(
                "batch file line {line}: terminal {:?} appears twice",
                row.terminal
            );
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("the batch file lists no terminals");
    }
    Ok(rows)
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
    show(&bytes, &file.display().to_string(), json)
}

/// Reads the record from the terminal on the probe and shows it.
pub fn read_from_probe(chip: &str, serial: Option<&str>, json: bool) -> anyhow::Result<Outcome> {
    let mut session = probe::attach(chip, serial)?;
    let bytes = probe::read_record(&mut session)?;
    show(&bytes, "the terminal", json)
}

fn show(bytes: &[u8], source: &str, json: bool) -> anyhow::Result<Outcome> {
    let record = ProvisioningRecord::decode(bytes).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_files_are_checked_before_anything_is_provisioned() {
        let rows =
            read_batch("terminal,zone\nnorth-01, north-food\nnorth-02,\ngate-1,gate-a\n").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            BatchRow {
                terminal: "north-01".into(),
                zone: Some("north-food".into())
            }
        );
        assert_eq!(rows[1].zone, None);
        let err = read_batch("terminal,zone\nok-1,z\nbad id,z\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("bad id"), "{err}");
        let err = read_batch("terminal,zone\nt1,z\nt1,y\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        assert!(read_batch("id,zone\nt1,z\n")
            .unwrap_err()
            .to_string()
            .contains("first column"));
        assert!(read_batch("terminal,zone\n")
            .unwrap_err()
            .to_string()
            .contains("no terminals"));
    }
}
