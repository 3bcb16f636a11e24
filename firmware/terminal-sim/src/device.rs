//! The simulated board's update hardware: active and DFU partitions and the
//! bootloader state in heap-backed NOR flash, and the bootloader itself
//! (embassy-boot's, the one the Pico W runs), which swaps or reverts images
//! at every boot.
//!
//! The simulator cannot execute the images it receives, so it tracks which
//! version sits in each partition beside the bytes: when the bootloader
//! swaps, the versions swap with them; when it reverts, they swap back.

use embassy_boot::{BootLoader, BootLoaderConfig, State};
use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash as asynch;
use pressline_protocol::FirmwareVersion;

/// Erase sector of the simulated flash (as on the RP2040).
pub const SECTOR: usize = 4096;

/// A NOR flash partition in RAM: erase sets 0xFF, writes clear bits.
pub struct PartitionFlash {
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionError {
    NotAligned,
    OutOfBounds,
}

impl asynch::NorFlashError for PartitionError {
    fn kind(&self) -> asynch::NorFlashErrorKind {
        match self {
            PartitionError::NotAligned => asynch::NorFlashErrorKind::NotAligned,
            PartitionError::OutOfBounds => asynch::NorFlashErrorKind::OutOfBounds,
        }
    }
}

impl PartitionFlash {
    pub fn new(size: usize) -> PartitionFlash {
        PartitionFlash {
            bytes: vec![0xFF; size.div_ceil(SECTOR) * SECTOR],
        }
    }

    fn range(
        &self,
        offset: u32,
        len: usize,
        align: usize,
    ) -> Result<std::ops::Range<usize>, PartitionError> {
        let start = offset as usize;
        if start % align != 0 || len % align != 0 {
            return Err(PartitionError::NotAligned);
        }
        let end = start.checked_add(len).ok_or(PartitionError::OutOfBounds)?;
        if end > self.bytes.len() {
            return Err(PartitionError::OutOfBounds);
        }
        Ok(start..end)
    }

    fn do_read(&self, offset: u32, out: &mut [u8]) -> Result<(), PartitionError> {
        let r = self.range(offset, out.len(), 1)?;
        out.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn do_erase(&mut self, from: u32, to: u32) -> Result<(), PartitionError> {
        let len = to.checked_sub(from).ok_or(PartitionError::OutOfBounds)? as usize;
        let r = self.range(from, len, SECTOR)?;
        self.bytes[r].fill(0xFF);
        Ok(())
    }

    fn do_write(&mut self, offset: u32, data: &[u8]) -> Result<(), PartitionError> {
        let r = self.range(offset, data.len(), 4)?;
        for (cell, new) in self.bytes[r].iter_mut().zip(data) {
            *cell &= *new;
        }
        Ok(())
    }
}

impl asynch::ErrorType for PartitionFlash {
    type Error = PartitionError;
}

impl asynch::ReadNorFlash for PartitionFlash {
    const READ_SIZE: usize = 1;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.do_read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl asynch::NorFlash for PartitionFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.do_erase(from, to)
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.do_write(offset, bytes)
    }
}

impl blocking::ReadNorFlash for PartitionFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.do_read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl blocking::NorFlash for PartitionFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.do_erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.do_write(offset, bytes)
    }
}

/// A simulated board's update partitions and what they hold.
pub struct UpdateHardware {
    pub active: PartitionFlash,
    pub dfu: PartitionFlash,
    pub boot_state: PartitionFlash,
    /// Version of the image in the active partition (what runs).
    pub active_version: FirmwareVersion,
    /// Version of the image in the DFU partition, once one was written.
    pub dfu_version: Option<FirmwareVersion>,
}

/// What the bootloader did at a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootAction {
    None,
    /// Swapped in the new image for a trial boot.
    Swapped,
    /// The trial was never confirmed: restored the previous image.
    Reverted,
}

impl UpdateHardware {
    /// Partitions for images up to `max_image` bytes, the factory image
    /// being `version`.
    pub fn new(max_image: usize, version: FirmwareVersion) -> UpdateHardware {
        let active = max_image.div_ceil(SECTOR) * SECTOR;
        // State: 2 words + 4 words per active page (embassy-boot's layout).
        let state = (8 + 16 * (active / SECTOR)).div_ceil(SECTOR) * SECTOR;
        UpdateHardware {
            active: PartitionFlash::new(active),
            dfu: PartitionFlash::new(active + SECTOR),
            boot_state: PartitionFlash::new(state),
            active_version: version,
            dfu_version: None,
        }
    }

    /// Runs the bootloader, as at every power-on.
    pub fn run_bootloader(&mut self) -> Result<BootAction, embassy_boot::BootError> {
        let mut buf = [0u8; SECTOR];
        let mut loader = BootLoader::new(BootLoaderConfig {
            active: &mut self.active,
            dfu: &mut self.dfu,
            state: &mut self.boot_state,
        });
        let before = loader.prepare_boot(&mut buf)?;
        let after = loader.read_state(&mut buf)?;
        let action = match (before, after) {
            (State::Swap, State::Swap) => BootAction::Swapped,
            (State::Swap, State::Revert) => BootAction::Reverted,
            _ => BootAction::None,
        };
        if action != BootAction::None {
            if let Some(incoming) = self.dfu_version.replace(self.active_version) {
                self.active_version = incoming;
            }
        }
        Ok(action)
    }
}
