//! `fleet probe list` and `fleet flash`.

use std::collections::HashMap;
use std::path::Path;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use probe_rs::flashing::{ProgressEvent, ProgressOperation};

use super::{exit, Outcome};
use crate::probe::{self, ProbeRow};
use crate::render::{finish, table};

pub fn render(rows: &[ProbeRow]) -> String {
    if rows.is_empty() {
        return "no debug probe found: plug one in (and check its USB cable); on Linux, probe-rs's udev rules must be installed\n".into();
    }
    let mut t = table(&["PROBE", "SERIAL", "VID:PID"]);
    for r in rows {
        t.add_row(vec![
            r.identifier.clone(),
            r.serial.clone().unwrap_or_else(|| "-".into()),
            format!("{:04x}:{:04x}", r.vendor_id, r.product_id),
        ]);
    }
    finish(t)
}

pub fn list(json: bool) -> anyhow::Result<Outcome> {
    let rows = probe::list();
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(&rows)?)
    } else {
        render(&rows)
    };
    Ok(Outcome {
        stdout,
        warnings: vec![],
        code: exit::OK,
    })
}

fn label(op: ProgressOperation) -> &'static str {
    match op {
        ProgressOperation::Fill => "reading back",
        ProgressOperation::Erase => "erasing",
        ProgressOperation::Program => "programming",
        ProgressOperation::Verify => "verifying",
    }
}

/// Flashes with one progress bar per phase, fed by probe-rs's events.
pub fn flash(firmware: &Path, chip: &str, serial: Option<&str>) -> anyhow::Result<Outcome> {
    let mut session = probe::attach(chip, serial)?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {bytes}/{total_bytes} ({eta})")
        .expect("static template")
        .progress_chars("=> ");
    let mut by_op: HashMap<u8, ProgressBar> = HashMap::new();
    let key = |op: ProgressOperation| op as u8;
    probe::flash_elf(&mut session, firmware, |event| match event {
        ProgressEvent::AddProgressBar { operation, total } => {
            let bar = bars.add(ProgressBar::new(total.unwrap_or(0)));
            bar.set_style(style.clone());
            bar.set_message(label(operation));
            by_op.insert(key(operation), bar);
        }
        ProgressEvent::Progress {
            operation, size, ..
        } => {
            if let Some(bar) = by_op.get(&key(operation)) {
                bar.inc(size);
            }
        }
        ProgressEvent::Finished(operation) => {
            if let Some(bar) = by_op.get(&key(operation)) {
                bar.finish();
            }
        }
        ProgressEvent::Failed(operation) => {
            if let Some(bar) = by_op.get(&key(operation)) {
                bar.abandon_with_message(format!("{} failed", label(operation)));
            }
        }
        _ => {}
    })?;
    Ok(Outcome {
        stdout: format!(
            "flashed {} to the {chip}, verified, reset and running\n",
            firmware.display()
        ),
        warnings: vec![],
        code: exit::OK,
    })
}

/// `fleet logs`: the terminal's defmt log over RTT, until Ctrl-C (or
/// `seconds`).
pub fn logs(
    elf: &Path,
    chip: &str,
    serial: Option<&str>,
    seconds: Option<u64>,
) -> anyhow::Result<Outcome> {
    let until = seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let keep_going = || until.is_none_or(|t| std::time::Instant::now() < t);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    probe::stream_logs(chip, serial, elf, &mut out, &keep_going)?;
    Ok(Outcome {
        stdout: String::new(),
        warnings: vec![],
        code: exit::OK,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_list_table() {
        let rows = vec![ProbeRow {
            identifier: "Debug Probe (CMSIS-DAP)".into(),
            serial: Some("E6614103E73F2F2F".into()),
            vendor_id: 0x2e8a,
            product_id: 0x000c,
        }];
        insta::assert_snapshot!(render(&rows));
        assert!(render(&[]).contains("no debug probe found"));
    }
}
