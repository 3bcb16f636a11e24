//! A NOR flash in RAM that can lose power.
//!
//! Behaves like real NOR flash: erase sets a page to `0xFF`, writes can only
//! clear bits (so re-writing a word is allowed, as sequential-storage's
//! `MultiwriteNorFlash` needs), writes are word-aligned. Every word written or
//! erased is one *operation*; [`RamFlash::cut_power_after`] makes the
//! operation after the next `n` fail and the flash dead (every later call
//! errors) until [`RamFlash::power_cycle`], so tests can cut power at every
//! point of a workload. An erase interrupted half-way leaves the page half
//! erased, as a real one would.
//!
//! Used by the host and QEMU tests, and as the simulator's flash.

use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Failures of the RAM flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    /// Power was cut (injected).
    PowerLoss,
    NotAligned,
    OutOfBounds,
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::PowerLoss => NorFlashErrorKind::Other,
            RamFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            RamFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// `SIZE` bytes of flash in pages of `PAGE` bytes, written in words of
/// `WRITE` bytes (4 by default; the RP2040 writes single bytes into 4 KiB
/// sectors: `RamFlash<SIZE, 4096, 1>`).
#[derive(Clone)]
pub struct RamFlash<const SIZE: usize, const PAGE: usize, const WRITE: usize = 4> {
    bytes: [u8; SIZE],
    ops_until_power_loss: Option<u32>,
    powered: bool,
    operations: u64,
}

impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> Default
    for RamFlash<SIZE, PAGE, WRITE>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> RamFlash<SIZE, PAGE, WRITE> {
    pub const WORD: usize = WRITE;

    /// Factory-fresh (erased) flash.
    pub const fn new() -> Self {
        RamFlash {
            bytes: [0xFF; SIZE],
            ops_until_power_loss: None,
            powered: true,
            operations: 0,
        }
    }

    /// The `n`+1-th word operation from now fails and the flash goes dead.
    pub fn cut_power_after(&mut self, n: u32) {
        self.ops_until_power_loss = Some(n);
    }

    /// Power comes back: the flash works again, contents as they were left.
    pub fn power_cycle(&mut self) {
        self.powered = true;
        self.ops_until_power_loss = None;
    }

    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Word operations (writes and erases) performed so far.
    pub fn operations(&self) -> u64 {
        self.operations
    }

    fn take_op(&mut self) -> Result<(), RamFlashError> {
        if !self.powered {
            return Err(RamFlashError::PowerLoss);
        }
        if let Some(n) = self.ops_until_power_loss.as_mut() {
            if *n == 0 {
                self.powered = false;
                return Err(RamFlashError::PowerLoss);
            }
            *n -= 1;
        }
        self.operations += 1;
        Ok(())
    }

    fn check(
        &self,
        offset: u32,
        len: usize,
        align: usize,
    ) -> Result<core::ops::Range<usize>, RamFlashError> {
        if !self.powered {
            return Err(RamFlashError::PowerLoss);
        }
        let start = offset as usize;
        if start % align != 0 || len % align != 0 {
            return Err(RamFlashError::NotAligned);
        }
        let end = start.checked_add(len).ok_or(RamFlashError::OutOfBounds)?;
        if end > SIZE {
            return Err(RamFlashError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> RamFlash<SIZE, PAGE, WRITE> {
    fn read_words(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        let range = self.check(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn erase_pages(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        if to < from {
            return Err(RamFlashError::OutOfBounds);
        }
        let range = self.check(from, (to - from) as usize, PAGE)?;
        for word in range.step_by(Self::WORD) {
            self.take_op()?;
            self.bytes[word..word + Self::WORD].fill(0xFF);
        }
        Ok(())
    }

    fn program(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        let range = self.check(offset, bytes.len(), Self::WORD)?;
        for (i, word) in range.step_by(Self::WORD).enumerate() {
            self.take_op()?;
            for (cell, new) in self.bytes[word..word + Self::WORD]
                .iter_mut()
                .zip(&bytes[i * Self::WORD..])
            {
                // NOR flash: programming can only clear bits.
                *cell &= *new;
            }
        }
        Ok(())
    }
}

impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> ErrorType
    for RamFlash<SIZE, PAGE, WRITE>
{
    type Error = RamFlashError;
}

impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> ReadNorFlash
    for RamFlash<SIZE, PAGE, WRITE>
{
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.read_words(offset, bytes)
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> NorFlash
    for RamFlash<SIZE, PAGE, WRITE>
{
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.erase_pages(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.program(offset, bytes)
    }
}

impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> MultiwriteNorFlash
    for RamFlash<SIZE, PAGE, WRITE>
{
}

/// The blocking traits too: a bootloader (embassy-boot's `BootLoader`) is
/// blocking, and tests run it over the same RAM flash as the application.
mod blocking {
    use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

    use super::RamFlash;

    impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> ReadNorFlash
        for RamFlash<SIZE, PAGE, WRITE>
    {
        const READ_SIZE: usize = 1;

        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
            self.read_words(offset, bytes)
        }

        fn capacity(&self) -> usize {
            SIZE
        }
    }

    impl<const SIZE: usize, const PAGE: usize, const WRITE: usize> NorFlash
        for RamFlash<SIZE, PAGE, WRITE>
    {
        const WRITE_SIZE: usize = WRITE;
        const ERASE_SIZE: usize = PAGE;

        fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
            self.erase_pages(from, to)
        }

        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
            self.program(offset, bytes)
        }
    }
}
