//! `fleet provision --batch terminals.csv`: a field engineer's install day.
//! Walks the list, asking to plug in each terminal (or writing record files
//! with `--to-dir`), provisions and registers each, and carries on past a
//! failed one; the summary says what to redo.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;

use pressline_protocol::power::PowerSettings;

use super::provision::{provision, read_batch, Destination, Request};
use super::Outcome;
use crate::sites::Site;

#[allow(clippy::too_many_arguments)]
pub fn run(
    site: &Site,
    csv: &Path,
    to_dir: Option<&Path>,
    wifi_ssid: &str,
    wifi_password: &str,
    gateway: &str,
    power: PowerSettings,
    register: bool,
    yes: bool,
    chip: &str,
    serial: Option<&str>,
) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(csv)
        .with_context(|| format!("cannot read the batch file {}", csv.display()))?;
    let rows = read_batch(&text)?;
    if let Some(dir) = to_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut stdout = String::new();
    let mut warnings = Vec::new();
    let (mut done, mut skipped) = (0, 0);
    let stdin = std::io::stdin();
    for (i, row) in rows.iter().enumerate() {
        if to_dir.is_none() && !yes {
            eprint!(
                "[{}/{}] plug terminal {} into the probe, then press Enter (s = skip, q = quit): ",
                i + 1,
                rows.len(),
                row.terminal
            );
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            if stdin.lock().read_line(&mut answer).unwrap_or(0) == 0 || answer.trim() == "q" {
                warnings.push(format!(
                    "stopped before {}; run the batch again for the rest",
                    row.terminal
                ));
                break;
            }
            if answer.trim() == "s" {
                skipped += 1;
                continue;
            }
        }
        let file;
        let destination = match to_dir {
            Some(dir) => {
                file = dir.join(format!("{}.plpr", row.terminal));
                Destination::File(&file)
            }
            None => Destination::Probe { chip, serial },
        };
        let request = Request {
            terminal: &row.terminal,
            zone: row.zone.as_deref(),
            wifi_ssid,
            wifi_password: wifi_password.to_string(),
            gateway,
            power,
            register,
        };
        match provision(site, &request, &destination) {
            Ok(outcome) => {
                stdout.push_str(&outcome.stdout);
                done += 1;
            }
            Err(e) => warnings.push(format!("{}: {e:#}", row.terminal)),
        }
    }
    stdout.push_str(&format!(
        "batch: {done} provisioned, {skipped} skipped, {} failed of {}\n",
        warnings.len(),
        rows.len()
    ));
    Ok(Outcome::reporting(stdout, warnings))
}
