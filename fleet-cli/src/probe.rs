//! Debug probe operations, with probe-rs as a library: list probes, attach
//! to a terminal, flash an ELF (with verification and progress events), and
//! write or read the provisioning record in the terminal's reserved sector.
//!
//! Every failure a field engineer meets on site (no probe, several probes,
//! probe busy, missing udev rules, wrong chip, terminal not answering) is
//! its own [`ProbeError`] whose message says what to do.

use std::path::Path;

use probe_rs::flashing::{DownloadOptions, ElfLoader, FlashProgress, ProgressEvent};
use probe_rs::probe::list::Lister;
use probe_rs::probe::{DebugProbeError, ProbeCreationError};
use probe_rs::{MemoryInterface, Permissions, Session};
use serde::Serialize;

/// The Pico W's chip.
pub const DEFAULT_CHIP: &str = "RP2040";
/// Where the Pico W firmware reads its provisioning record (the last 4 KiB
/// sector of its 2 MiB flash; see firmware/pico-w/src/flash_map.rs).
pub const PROVISIONING_ADDRESS: u64 = 0x1000_0000 + 0x1F_F000;
/// How much of the sector a record may use.
pub const RECORD_AREA: usize = pressline_protocol::provisioning::MAX_RECORD_LEN;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no debug probe found: plug one in (e.g. a Raspberry Pi Debug Probe on the terminal's SWD pins) and check `fleet probe list`")]
    NoProbe,
    #[error("several debug probes are attached ({0}): choose one with --probe SERIAL")]
    Ambiguous(String),
    #[error("no debug probe with serial {0:?}: see `fleet probe list`")]
    NoSuchProbe(String),
    #[error("the debug probe is busy: another program (probe-rs, OpenOCD, an IDE) has it open; close it and retry")]
    Busy,
    #[error("no permission to use the debug probe: install probe-rs's udev rules (see probe.rs 'Probe setup'), re-plug the probe, or run as a user in the plugdev group")]
    Permission,
    #[error("unknown chip {0:?}: use --chip RP2040 for the Pico W")]
    UnknownChip(String),
    #[error("cannot attach to the {chip}: is the terminal powered and the probe's SWD cable (SWCLK, SWDIO, GND) connected? ({detail})")]
    Attach { chip: String, detail: String },
    #[error("{0} does not exist or is not readable")]
    NoImage(String),
    #[error("flashing failed: {0}")]
    Flash(String),
    #[error("the record read back from the terminal differs from what was written: try again; if it persists the board's flash is damaged")]
    VerifyMismatch,
    #[error("debug probe error: {0}")]
    Other(String),
}

fn classify_probe(e: DebugProbeError) -> ProbeError {
    match e {
        DebugProbeError::ProbeCouldNotBeCreated(ProbeCreationError::NotFound) => {
            ProbeError::NoProbe
        }
        DebugProbeError::ProbeCouldNotBeCreated(ProbeCreationError::CouldNotOpen) => {
            ProbeError::Busy
        }
        other => {
            let text = other.to_string();
            let lower = text.to_lowercase();
            if lower.contains("permission") || lower.contains("access denied") {
                ProbeError::Permission
            } else if lower.contains("busy") || lower.contains("resource") {
                ProbeError::Busy
            } else {
                ProbeError::Other(text)
            }
        }
    }
}

/// An attached debug probe, for `fleet probe list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeRow {
    pub identifier: String,
    pub serial: Option<String>,
    pub vendor_id: u16,
    pub product_id: u16,
}

pub fn list() -> Vec<ProbeRow> {
    Lister::new()
        .list_all()
        .into_iter()
        .map(|p| ProbeRow {
            identifier: p.identifier,
            serial: p.serial_number,
            vendor_id: p.vendor_id,
            product_id: p.product_id,
        })
        .collect()
}

/// Opens the (only, or chosen) probe and attaches to `chip`.
pub fn attach(chip: &str, serial: Option<&str>) -> Result<Session, ProbeError> {
    // Check the chip name first: it is the cheapest mistake to report.
    probe_rs::config::Registry::from_builtin_families()
        .get_target_by_name(chip)
        .map_err(|_| ProbeError::UnknownChip(chip.to_string()))?;
    let probes = Lister::new().list_all();
    let info = match serial {
        Some(s) => probes
            .into_iter()
            .find(|p| p.serial_number.as_deref() == Some(s))
            .ok_or_else(|| ProbeError::NoSuchProbe(s.into()))?,
        None => match probes.len() {
            0 => return Err(ProbeError::NoProbe),
            1 => probes.into_iter().next().expect("one probe"),
            _ => {
                let names: Vec<String> = probes
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {}",
                            p.identifier,
                            p.serial_number.as_deref().unwrap_or("(no serial)")
                        )
                    })
                    .collect();
                return Err(ProbeError::Ambiguous(names.join(", ")));
            }
        },
    };
    let probe = info.open().map_err(classify_probe)?;
    probe
        .attach(chip, Permissions::default())
        .map_err(|e| match e {
            probe_rs::Error::Probe(p) => classify_probe(p),
            probe_rs::Error::ChipNotFound(_) => ProbeError::UnknownChip(chip.to_string()),
            probe_rs::Error::MissingPermissions(_) => ProbeError::Permission,
            other => ProbeError::Attach {
                chip: chip.to_string(),
                detail: other.to_string(),
            },
        })
}

/// Flashes an ELF, verifies it, resets the terminal and lets it run.
pub fn flash_elf(
    session: &mut Session,
    elf: &Path,
    on_progress: impl FnMut(ProgressEvent),
) -> Result<(), ProbeError> {
    if std::fs::metadata(elf).is_err() {
        return Err(ProbeError::NoImage(elf.display().to_string()));
    }
    let mut options = DownloadOptions::default();
    options.verify = true;
    options.progress = FlashProgress::new(on_progress);
    probe_rs::flashing::download_file_with_options(
        session,
        elf,
        ElfLoader(Default::default()),
        options,
    )
    .map_err(|e| ProbeError::Flash(e.to_string()))?;
    reset_and_run(session)
}

fn reset_and_run(session: &mut Session) -> Result<(), ProbeError> {
    let mut core = session
        .core(0)
        .map_err(|e| ProbeError::Other(e.to_string()))?;
    core.reset().map_err(|e| ProbeError::Other(e.to_string()))
}

/// The bytes to write for a record: the record, then erased flash.
pub fn record_image(record: &[u8]) -> Vec<u8> {
    let mut image = vec![0xFF; RECORD_AREA];
    image[..record.len().min(RECORD_AREA)]
        .copy_from_slice(&record[..record.len().min(RECORD_AREA)]);
    image
}

/// Writes the provisioning record into the reserved sector, reads it back
/// and compares, then resets the terminal so it starts with it.
pub fn write_record(session: &mut Session, record: &[u8]) -> Result<(), ProbeError> {
    let image = record_image(record);
    let mut loader = session.target().flash_loader();
    loader
        .add_data(PROVISIONING_ADDRESS, &image)
        .map_err(|e| ProbeError::Flash(e.to_string()))?;
    let mut options = DownloadOptions::default();
    options.verify = true;
    loader
        .commit(session, options)
        .map_err(|e| ProbeError::Flash(e.to_string()))?;
    if read_record(session)? != image {
        return Err(ProbeError::VerifyMismatch);
    }
    reset_and_run(session)
}

/// Reads the reserved sector's record area.
pub fn read_record(session: &mut Session) -> Result<Vec<u8>, ProbeError> {
    let mut core = session
        .core(0)
        .map_err(|e| ProbeError::Other(e.to_string()))?;
    let mut buf = vec![0u8; RECORD_AREA];
    core.read(PROVISIONING_ADDRESS, &mut buf)
        .map_err(|e| ProbeError::Other(e.to_string()))?;
    Ok(buf)
}

/// The defmt table of a firmware ELF: checked before touching the probe.
pub fn defmt_table(elf: &Path) -> Result<(Vec<u8>, defmt_decoder::Table), ProbeError> {
    let bytes = std::fs::read(elf).map_err(|_| ProbeError::NoImage(elf.display().to_string()))?;
    match defmt_decoder::Table::parse(&bytes) {
        Ok(Some(table)) => Ok((bytes, table)),
        Ok(None) => Err(ProbeError::Other(format!(
            "{} has no defmt log table: pass the firmware ELF that is running on the terminal (built with defmt)",
            elf.display()
        ))),
        Err(e) => Err(ProbeError::Other(format!("{} is not a readable firmware ELF: {e}", elf.display()))),
    }
}

/// Streams the terminal's defmt log (RTT up channel 0), decoded with the
/// ELF's table, to `out` until `keep_going` says stop.
pub fn stream_logs(
    chip: &str,
    serial: Option<&str>,
    elf: &Path,
    out: &mut dyn std::io::Write,
    keep_going: &dyn Fn() -> bool,
) -> Result<(), ProbeError> {
    let (bytes, table) = defmt_table(elf)?;
    let control_block = probe_rs::rtt::find_rtt_control_block_in_raw_file(&bytes)
        .ok()
        .flatten();
    let mut session = attach(chip, serial)?;
    let mut core = session
        .core(0)
        .map_err(|e| ProbeError::Other(e.to_string()))?;
    let rtt = match control_block {
        Some(address) => probe_rs::rtt::Rtt::attach_at(&mut core, address),
        None => probe_rs::rtt::Rtt::attach(&mut core),
    };
    let mut rtt = rtt.map_err(|e| {
        ProbeError::Other(format!("no RTT log channel on the terminal ({e}): is this ELF the firmware it runs? Flash it with `fleet flash`"))
    })?;
    let mut decoder = table.new_stream_decoder();
    let mut buf = vec![0u8; 4096];
    while keep_going() {
        let channel = rtt
            .up_channels()
            .first_mut()
            .ok_or_else(|| ProbeError::Other("the firmware has no RTT up channel".into()))?;
        let n = channel
            .read(&mut core, &mut buf)
            .map_err(|e| ProbeError::Other(format!("RTT read failed: {e}")))?;
        if n == 0 {
            // Nothing new: poll again shortly (the target has no way to wake us).
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        decoder.received(&buf[..n]);
        loop {
            match decoder.decode() {
                Ok(frame) => {
                    let _ = writeln!(out, "{}", frame.display(false));
                }
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                Err(defmt_decoder::DecodeError::Malformed) => {
                    let _ = writeln!(
                        out,
                        "(malformed defmt frame: is this the ELF the terminal runs?)"
                    );
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_lands_in_the_rp2040s_last_flash_sector() {
        // The RP2040 target as probe-rs knows it, no hardware involved.
        let target = probe_rs::config::Registry::from_builtin_families()
            .get_target_by_name(DEFAULT_CHIP)
            .unwrap();
        let mut loader = target.flash_loader();
        let image = record_image(&[1, 2, 3]);
        loader.add_data(PROVISIONING_ADDRESS, &image).unwrap();
        let data: Vec<(u64, Vec<u8>)> = loader.data().map(|(a, d)| (a, d.to_vec())).collect();
        assert_eq!(data, vec![(PROVISIONING_ADDRESS, image.clone())]);
        assert_eq!(&image[..3], &[1, 2, 3]);
        assert!(
            image[3..].iter().all(|b| *b == 0xFF),
            "the rest reads as erased"
        );
        assert_eq!(PROVISIONING_ADDRESS % 4096, 0, "a sector of its own");
        assert!(PROVISIONING_ADDRESS + RECORD_AREA as u64 <= 0x1000_0000 + 2 * 1024 * 1024);
    }

    #[test]
    fn without_hardware_attaching_says_what_to_do() {
        assert!(list().is_empty(), "this test machine has no debug probe");
        let err = attach(DEFAULT_CHIP, None).unwrap_err();
        assert!(matches!(err, ProbeError::NoProbe), "{err}");
        assert!(err.to_string().contains("plug one in"));
        let err = attach("RP2040-typo", None).unwrap_err();
        assert!(err.to_string().contains("--chip RP2040"), "{err}");
        let err = attach(DEFAULT_CHIP, Some("E6614103E73F2F2F")).unwrap_err();
        assert!(err.to_string().contains("fleet probe list"), "{err}");
    }
}
