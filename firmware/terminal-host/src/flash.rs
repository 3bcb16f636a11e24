//! NOR flash backed by a file: erase sets 0xFF, writes can only clear bits,
//! as on the Pico W's flash. A file survives `kill -9` exactly as flash
//! survives a power cut (every write is one `pwrite`, done or not done),
//! so killing the process is pulling the plug, and starting it again on
//! the same file is the next boot.
//!
//! # The map (offsets in the file)
//! The same partitions as the Pico W, smaller: the terminal's state map
//! and press queue, then the bootloader's state, active and DFU
//! partitions (embassy-boot's layout: DFU one sector larger than ACTIVE).

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash as asynch;

/// Erase sector (as on the RP2040).
pub const SECTOR: u32 = 4096;
/// Boot counter, dropped presses, OTA record (a sequential-storage map).
pub const TERMINAL_STATE: Range<u32> = 0x0_1000..0x0_3000;
/// The press queue.
pub const PRESS_QUEUE: Range<u32> = 0x0_3000..0x1_3000;
/// embassy-boot's state: 2 words + 4 words per ACTIVE sector, rounded up.
pub const BOOT_STATE: Range<u32> = 0x1_3000..0x1_4000;
/// The running image.
pub const ACTIVE: Range<u32> = 0x1_4000..0x3_4000;
/// Where an update is downloaded (one sector larger than ACTIVE: the swap).
pub const DFU: Range<u32> = 0x3_4000..0x5_5000;
/// The file's size.
pub const SIZE: u32 = 0x6_0000;

const _: () = assert!(DFU.end - DFU.start == ACTIVE.end - ACTIVE.start + SECTOR);
const _: () =
    assert!(8 + 16 * ((ACTIVE.end - ACTIVE.start) / SECTOR) <= BOOT_STATE.end - BOOT_STATE.start);

/// A partition of the flash file (or all of it).
#[derive(Clone)]
pub struct FileFlash {
    file: Arc<File>,
    offset: u32,
    size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    NotAligned,
    OutOfBounds,
    /// The file could not be read or written (the disk under it failed).
    Io,
}

impl asynch::NorFlashError for FlashError {
    fn kind(&self) -> asynch::NorFlashErrorKind {
        match self {
            FlashError::NotAligned => asynch::NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => asynch::NorFlashErrorKind::OutOfBounds,
            FlashError::Io => asynch::NorFlashErrorKind::Other,
        }
    }
}

impl FileFlash {
    /// Opens the flash file at `path`, creating it erased (all 0xFF) when
    /// it does not exist. Returns the whole flash and whether it is new.
    pub fn open(path: &Path) -> io::Result<(FileFlash, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let created = len == 0;
        if created {
            file.write_all_at(&vec![0xFF; SIZE as usize], 0)?;
            file.sync_all()?;
        } else if len != u64::from(SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {len} bytes, not a flash file of this terminal ({SIZE} bytes)",
                    path.display()
                ),
            ));
        }
        Ok((
            FileFlash {
                file: Arc::new(file),
                offset: 0,
                size: SIZE,
            },
            created,
        ))
    }

    /// The part of this flash at `range` (offsets relative to it).
    pub fn partition(&self, range: Range<u32>) -> FileFlash {
        assert!(range.end <= self.size, "partition inside the flash");
        FileFlash {
            file: self.file.clone(),
            offset: self.offset + range.start,
            size: range.end - range.start,
        }
    }

    fn check(&self, offset: u32, len: usize, align: u32) -> Result<u64, FlashError> {
        if offset % align != 0 || len as u32 % align != 0 {
            return Err(FlashError::NotAligned);
        }
        let end = u64::from(offset) + len as u64;
        if end > u64::from(self.size) {
            return Err(FlashError::OutOfBounds);
        }
        Ok(u64::from(self.offset) + u64::from(offset))
    }

    fn do_read(&self, offset: u32, out: &mut [u8]) -> Result<(), FlashError> {
        let at = self.check(offset, out.len(), 1)?;
        self.file.read_exact_at(out, at).map_err(|_| FlashError::Io)
    }

    fn do_erase(&self, from: u32, to: u32) -> Result<(), FlashError> {
        let len = to.checked_sub(from).ok_or(FlashError::OutOfBounds)?;
        let at = self.check(from, len as usize, SECTOR)?;
        self.file
            .write_all_at(&vec![0xFF; len as usize], at)
            .map_err(|_| FlashError::Io)
    }

    fn do_write(&self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let at = self.check(offset, data.len(), 4)?;
        // NOR semantics: a write only clears bits.
        let mut cells = vec![0u8; data.len()];
        self.file
            .read_exact_at(&mut cells, at)
            .map_err(|_| FlashError::Io)?;
        for (cell, new) in cells.iter_mut().zip(data) {
            *cell &= *new;
        }
        self.file
            .write_all_at(&cells, at)
            .map_err(|_| FlashError::Io)
    }
}

impl asynch::ErrorType for FileFlash {
    type Error = FlashError;
}

impl asynch::ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.do_read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl asynch::NorFlash for FileFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR as usize;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.do_erase(from, to)
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.do_write(offset, bytes)
    }
}

/// Writing a word twice only clears more bits, which sequential-storage
/// relies on (as on the RP2040's flash).
impl asynch::MultiwriteNorFlash for FileFlash {}

impl blocking::ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.do_read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl blocking::NorFlash for FileFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR as usize;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.do_erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.do_write(offset, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

    #[test]
    fn behaves_like_nor_flash_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash");
        {
            let (flash, created) = FileFlash::open(&path).unwrap();
            assert!(created);
            let mut queue = flash.partition(PRESS_QUEUE);
            queue.write(0, &[0x0F, 0xF0, 0xFF, 0x00]).unwrap();
            // A second write only clears bits.
            queue.write(0, &[0xFF, 0x0F, 0x0F, 0xFF]).unwrap();
            assert_eq!(queue.write(2, &[0; 4]), Err(FlashError::NotAligned));
            assert_eq!(queue.erase(0, 100), Err(FlashError::NotAligned));
            assert_eq!(
                queue.write(PRESS_QUEUE.end - PRESS_QUEUE.start, &[0; 4]),
                Err(FlashError::OutOfBounds)
            );
        }
        let (flash, created) = FileFlash::open(&path).unwrap();
        assert!(!created);
        let mut queue = flash.partition(PRESS_QUEUE);
        let mut word = [0u8; 4];
        queue.read(0, &mut word).unwrap();
        assert_eq!(word, [0x0F, 0x00, 0x0F, 0x00]);
        queue.erase(0, SECTOR).unwrap();
        queue.read(0, &mut word).unwrap();
        assert_eq!(word, [0xFF; 4]);
        // Partitions do not see each other's bytes.
        let mut state = flash.partition(TERMINAL_STATE);
        state.read(0, &mut word).unwrap();
        assert_eq!(word, [0xFF; 4]);
        std::fs::write(&path, b"short").unwrap();
        assert!(FileFlash::open(&path).is_err(), "not a flash file");
    }
}
