//! What "firmware" means for a host terminal.
//!
//! A microcontroller runs the image in its ACTIVE partition; a process
//! cannot execute the bytes in its flash file. So a host image starts with
//! one line naming what it is, `pressline-terminal-host MAJOR.MINOR.PATCH`,
//! and the version a host terminal reports is read from the image in
//! ACTIVE at every boot, after the bootloader has swapped or reverted
//! there. An image without that line does not start (as a broken image
//! would not on a board): the trial is never confirmed and the bootloader
//! reverts it at the next boot.
//!
//! A new flash file is given a factory image of this build's version.

use pressline_protocol::FirmwareVersion;

/// The first line's prefix.
pub const MAGIC: &str = "pressline-terminal-host ";

/// The factory image of this build.
pub fn factory() -> Vec<u8> {
    format!("{MAGIC}{}\nfactory image\n", env!("CARGO_PKG_VERSION")).into_bytes()
}

/// The version an image declares, if it is a host image.
pub fn version_of(image: &[u8]) -> Option<FirmwareVersion> {
    let line = image.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    FirmwareVersion::parse(line.strip_prefix(MAGIC)?.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_first_line() {
        let v = version_of(&factory()).unwrap();
        assert_eq!(
            v,
            FirmwareVersion::parse(env!("CARGO_PKG_VERSION")).unwrap()
        );
        let mut release = b"pressline-terminal-host 2.3.4\n".to_vec();
        release.extend([0xA5; 5000]);
        assert_eq!(
            version_of(&release),
            Some(FirmwareVersion {
                major: 2,
                minor: 3,
                patch: 4
            })
        );
        assert_eq!(version_of(b"\x7fELF..."), None);
        assert_eq!(version_of(&[0xFF; 64]), None, "an erased partition");
        assert_eq!(version_of(b"pressline-terminal-host banana\n"), None);
    }
}
