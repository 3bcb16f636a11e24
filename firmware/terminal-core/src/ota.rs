//! The terminal's OTA receiver: takes an offer, pulls the image chunk by
//! chunk into the DFU partition, has embassy-boot verify the signature and
//! mark the update, asks for a reboot, and confirms the trial boot once the
//! caller says the new image is healthy.
//!
//! Sans-IO apart from flash: time comes in as [`Millis`], messages come in
//! decoded and go out as values ([`OtaReceiver::poll_request`],
//! [`OtaReceiver::poll_status`]); the caller owns the MQTT connection and
//! the reboot. Flash goes through embassy-boot's [`FirmwareUpdater`] over
//! any `embedded-storage-async` NOR flash, so the Pico W, the simulator and
//! the tests run the same code against the same bootloader contract.
//!
//! What survives a power cut is the [`OtaRecord`] in the terminal's state
//! map (through [`OtaJournal`]), written after each chunk: after a reboot
//! the download resumes from the start of the erase sector holding the last
//! durably written byte (that sector is erased again before it is
//! rewritten), never from zero. The record also remembers how the last
//! update ended, so the outcome is reported again on every reconnect until
//! the gateway has heard it.
//!
//! Trust: an offer is refused before any download unless its manifest is
//! signed by the key built into the firmware; the image itself must have
//! the SHA-256 the signed manifest names (so no other signed image passes
//! for this release) and pass `verify_and_mark_updated` (ed25519 over
//! SHA-512 of the DFU bytes) before the bootloader is told to swap. A trial boot that never confirms
//! is reverted by the bootloader, and the next boot reports `rolled_back`.

use embassy_boot::{FirmwareUpdater, FirmwareUpdaterError, State};
use embedded_storage_async::nor_flash::NorFlash;
use pressline_protocol::ota::{verify_manifest, OtaError};
use pressline_protocol::ota_transfer::{
    Chunk, ChunkRequest, Offer, OtaFailure, OtaState, OtaStatus, MAX_CHUNK,
};
use pressline_protocol::FirmwareVersion;
use serde::{Deserialize, Serialize};

use crate::Millis;

/// What the firmware knows about updates.
#[derive(Debug, Clone, Copy)]
pub struct OtaConfig {
    /// The release signing key built into this firmware.
    pub public_key: [u8; 32],
    /// This board's name in release manifests (`pico-w`).
    pub board: &'static str,
    /// The DFU partition's capacity minus the swap page: the largest image.
    pub max_image: u32,
    /// Bytes asked for per request: at most [`MAX_CHUNK`], and a divisor
    /// or multiple of the DFU erase size.
    pub chunk_size: u32,
    /// A request unanswered this long is sent again.
    pub request_timeout_ms: Millis,
    /// Report progress every this many percent.
    pub progress_step: u8,
}

/// An image checked by [`OtaReceiver::check_image`], its outcome not yet
/// in the journal.
#[derive(Debug)]
#[must_use = "the outcome goes to the journal with record_check"]
pub struct CheckedImage(OtaRecord);

/// How far an update got (persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Downloading,
    /// Verified and marked; the next boot is a trial of the new image.
    Trial,
    Confirmed,
    Failed(OtaFailure),
    RolledBack,
}

/// The update in progress or last finished, as kept in flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaRecord {
    pub rollout: u32,
    pub attempt: u32,
    pub target: FirmwareVersion,
    /// The version running when the update started (what a rollback
    /// returns to).
    pub previous: FirmwareVersion,
    pub size: u32,
    pub sha256: [u8; 32],
    pub image_signature: [[u8; 32]; 2],
    /// Bytes durably in the DFU partition.
    pub written: u32,
    pub phase: Phase,
}

/// Room for an encoded [`OtaRecord`].
pub const RECORD_BUF_LEN: usize = 192;

/// Where the receiver keeps its [`OtaRecord`] (the terminal's state map).
#[allow(async_fn_in_trait)]
pub trait OtaJournal {
    type Error: core::fmt::Debug;
    async fn load_ota(&mut self) -> Result<Option<OtaRecord>, Self::Error>;
    async fn save_ota(&mut self, record: &OtaRecord) -> Result<(), Self::Error>;
}

/// A journal in RAM: for tests and fuzzing, where the record needs no
/// flash (like [`crate::ram_flash::RamFlash`] for the partitions).
#[derive(Debug, Default)]
pub struct MemJournal(pub Option<OtaRecord>);

impl OtaJournal for MemJournal {
    type Error = core::convert::Infallible;
    async fn load_ota(&mut self) -> Result<Option<OtaRecord>, Self::Error> {
        Ok(self.0)
    }
    async fn save_ota(&mut self, record: &OtaRecord) -> Result<(), Self::Error> {
        self.0 = Some(*record);
        Ok(())
    }
}

/// The receiver could not start: the bootloader state or journal is
/// unreadable.
#[derive(Debug)]
pub enum OtaBootError<J> {
    Bootloader(FirmwareUpdaterError),
    Journal(J),
}

/// Counters for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtaCounters {
    pub requests: u64,
    pub chunks_written: u64,
    pub bytes_received: u64,
    /// Chunks whose CRC did not match (asked for again).
    pub chunks_damaged: u64,
    /// Downloads resumed from a non-zero offset.
    pub resumes: u64,
}

/// The OTA receiver of one boot.
pub struct OtaReceiver<'d, DFU: NorFlash, STATE: NorFlash> {
    updater: FirmwareUpdater<'d, DFU, STATE>,
    config: OtaConfig,
    running: FirmwareVersion,
    record: Option<OtaRecord>,
    /// This boot is a trial of a new image, not yet confirmed.
    trial: bool,
    connected: bool,
    /// A cancel arrived: no requests until the next offer.
    paused: bool,
    /// The request in flight: (offset, sent at).
    outstanding: Option<(u32, Millis)>,
    verify_pending: bool,
    reboot_requested: bool,
    /// DFU sectors were written in this boot (see [`Self::handle_offer`]).
    wrote_this_boot: bool,
    status_dirty: bool,
    reported_percent: u8,
    counters: OtaCounters,
}

impl<'d, DFU: NorFlash, STATE: NorFlash> OtaReceiver<'d, DFU, STATE> {
    /// Starts the receiver for this boot. `running` is the version of the
    /// image that is executing. Settles how the last update ended from the
    /// bootloader state: a swap not yet confirmed means this is a trial
    /// boot; a revert means the trial failed.
    pub async fn boot<J: OtaJournal>(
        mut updater: FirmwareUpdater<'d, DFU, STATE>,
        config: OtaConfig,
        running: FirmwareVersion,
        journal: &mut J,
    ) -> Result<Self, OtaBootError<J::Error>> {
        let mut record = journal.load_ota().await.map_err(OtaBootError::Journal)?;
        let state = updater
            .get_state()
            .await
            .map_err(OtaBootError::Bootloader)?;
        let mut trial = false;
        match (&state, record.as_mut()) {
            (State::Swap, _) => trial = true,
            (State::Revert, Some(r)) if r.phase == Phase::Trial => {
                r.phase = Phase::RolledBack;
                journal.save_ota(r).await.map_err(OtaBootError::Journal)?;
            }
            // Confirmed, but the power went before the journal said so.
            (State::Boot, Some(r)) if r.phase == Phase::Trial => {
                r.phase = if running == r.target {
                    Phase::Confirmed
                } else {
                    Phase::RolledBack
                };
                journal.save_ota(r).await.map_err(OtaBootError::Journal)?;
            }
            _ => {}
        }
        // A download cut short by a reset continues from flash, from the
        // start of the sector holding its last byte: that sector is erased
        // again before it is rewritten, since the updater no longer knows
        // it was erased.
        let mut resumes = 0;
        if let Some(r) = record.as_mut().filter(|r| r.phase == Phase::Downloading) {
            r.written -= r.written % DFU::ERASE_SIZE as u32;
            if r.written > 0 {
                resumes = 1;
            }
        }
        if state == State::Revert {
            // Back to a normal boot state, so the next update starts clean.
            updater
                .mark_booted()
                .await
                .map_err(OtaBootError::Bootloader)?;
        }
        Ok(OtaReceiver {
            updater,
            config,
            running,
            record,
            trial,
            connected: false,
            paused: false,
            outstanding: None,
            verify_pending: false,
            reboot_requested: false,
            wrote_this_boot: false,
            status_dirty: true,
            reported_percent: 0,
            counters: OtaCounters {
                resumes,
                ..OtaCounters::default()
            },
        })
    }

    /// The firmware running now.
    pub fn running(&self) -> FirmwareVersion {
        self.running
    }

    /// This boot is an unconfirmed trial of a new image: call
    /// [`Self::confirm`] once the terminal is healthy, or reboot (the
    /// bootloader then reverts).
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    pub fn record(&self) -> Option<&OtaRecord> {
        self.record.as_ref()
    }

    pub fn counters(&self) -> OtaCounters {
        self.counters
    }

    /// The image is verified and marked: reboot now (after publishing the
    /// pending status) so the bootloader swaps it in.
    pub fn wants_reboot(&self) -> bool {
        self.reboot_requested
    }

    /// The download is complete: call [`Self::verify`] (after publishing
    /// the `verifying` status).
    pub fn needs_verify(&self) -> bool {
        self.verify_pending
    }

    pub fn handle_connected(&mut self, _now: Millis) {
        self.connected = true;
        self.outstanding = None;
        // Tell the gateway where we are on every (re)connect: it may have
        // restarted, or missed the last report.
        self.status_dirty = true;
    }

    pub fn handle_disconnected(&mut self, _now: Millis) {
        self.connected = false;
        self.outstanding = None;
    }

    /// The new image is healthy: make it permanent.
    pub async fn confirm<J: OtaJournal>(
        &mut self,
        journal: &mut J,
    ) -> Result<(), FirmwareUpdaterError> {
        if !self.trial {
            return Ok(());
        }
        self.updater.mark_booted().await?;
        self.trial = false;
        if let Some(r) = self.record.as_mut() {
            r.phase = Phase::Confirmed;
            // If this save is lost, the next boot sees Boot + Trial and
            // settles it as confirmed.
            let _ = journal.save_ota(r).await;
        }
        self.status_dirty = true;
        Ok(())
    }

    /// An offer from the gateway. Refused (and reported `failed`) unless
    /// signed by the built-in key for this board; resumed if it is the
    /// image already partly downloaded; answered with the outcome again if
    /// this attempt already finished.
    pub async fn handle_offer<J: OtaJournal>(
        &mut self,
        _now: Millis,
        offer: &Offer<'_>,
        journal: &mut J,
    ) -> Result<(), J::Error> {
        if self.trial || self.verify_pending || self.reboot_requested {
            // Busy finishing an update: the status says so.
            self.status_dirty = true;
            return Ok(());
        }
        self.paused = false;
        if let Some(r) = &self.record {
            let same_attempt = r.rollout == offer.rollout && r.attempt == offer.attempt;
            let finished = !matches!(r.phase, Phase::Downloading);
            if same_attempt && finished {
                self.status_dirty = true;
                return Ok(());
            }
        }
        let checked = self.check_offer(offer);
        let (manifest_fields, signature) = match checked {
            Ok(ok) => ok,
            Err((failure, fields)) => {
                let (target, size, sha256) = fields.unwrap_or((self.running, 0, [0; 32]));
                let mut record = self.fresh_record(offer, target, size, sha256, [[0; 32]; 2]);
                record.phase = Phase::Failed(failure);
                return self.replace_record(record, journal).await;
            }
        };
        let (target, size, sha256) = manifest_fields;
        if target == self.running {
            // Already running it (e.g. confirmed before a gateway restart).
            let mut record = self.fresh_record(offer, target, size, sha256, signature);
            record.written = size;
            record.phase = Phase::Confirmed;
            return self.replace_record(record, journal).await;
        }
        let resume_from = self
            .record
            .as_ref()
            .filter(|r| r.sha256 == sha256 && r.size == size && r.phase == Phase::Downloading)
            .map(|r| {
                // In this boot the updater knows which sector it erased
                // last, so carrying on at the exact byte is safe; after a
                // reboot `boot` already went back to the sector start.
                r.written
            });
        let written = match resume_from {
            Some(offset) => offset,
            None => {
                if self.wrote_this_boot {
                    // The updater may think sector 0 is already erased from
                    // an earlier download in this boot: start from a clean
                    // partition instead.
                    if self.updater.prepare_update().await.is_err() {
                        let mut record = self.fresh_record(offer, target, size, sha256, signature);
                        record.phase = Phase::Failed(OtaFailure::Flash);
                        return self.replace_record(record, journal).await;
                    }
                }
                0
            }
        };
        let mut record = self.fresh_record(offer, target, size, sha256, signature);
        record.written = written;
        self.outstanding = None;
        self.reported_percent = 0;
        self.replace_record(record, journal).await
    }

    fn fresh_record(
        &self,
        offer: &Offer<'_>,
        target: FirmwareVersion,
        size: u32,
        sha256: [u8; 32],
        image_signature: [[u8; 32]; 2],
    ) -> OtaRecord {
        OtaRecord {
            rollout: offer.rollout,
            attempt: offer.attempt,
            target,
            previous: self.running,
            size,
            sha256,
            image_signature,
            written: 0,
            phase: Phase::Downloading,
        }
    }

    /// Checks the offer's manifest against the built-in key and this
    /// board: ((target, size, sha256), image signature) or the failure
    /// (with the manifest's fields when it decoded).
    #[allow(clippy::type_complexity)]
    fn check_offer(
        &self,
        offer: &Offer<'_>,
    ) -> Result<
        ((FirmwareVersion, u32, [u8; 32]), [[u8; 32]; 2]),
        (OtaFailure, Option<(FirmwareVersion, u32, [u8; 32])>),
    > {
        let (manifest_signature, image_signature) = offer
            .signatures()
            .ok_or((OtaFailure::MalformedOffer, None))?;
        let (manifest, _) = verify_manifest(
            offer.manifest,
            &manifest_signature,
            &[self.config.public_key],
        )
        .map_err(|e| {
            let failure = match e {
                OtaError::UntrustedKey => OtaFailure::UntrustedKey,
                OtaError::BadSignature => OtaFailure::BadManifestSignature,
                _ => OtaFailure::MalformedOffer,
            };
            // Report what the (untrusted) manifest claims, for the operator.
            let fields = pressline_protocol::ota::Manifest::decode(offer.manifest)
                .ok()
                .map(|m| (m.version, m.size, m.sha256));
            (failure, fields)
        })?;
        let fields = (manifest.version, manifest.size, manifest.sha256);
        if manifest.board != self.config.board {
            return Err((OtaFailure::WrongBoard, Some(fields)));
        }
        if manifest.size == 0 || manifest.size > self.config.max_image {
            return Err((OtaFailure::TooLarge, Some(fields)));
        }
        // Anti-rollback: an older image may carry fixed flaws back; only a
        // roll-back the release key signed as one is taken.
        if manifest.version < self.running && !manifest.allow_downgrade {
            return Err((OtaFailure::Downgrade, Some(fields)));
        }
        let mut halves = [[0u8; 32]; 2];
        halves[0].copy_from_slice(&image_signature[..32]);
        halves[1].copy_from_slice(&image_signature[32..]);
        Ok((fields, halves))
    }

    async fn replace_record<J: OtaJournal>(
        &mut self,
        record: OtaRecord,
        journal: &mut J,
    ) -> Result<(), J::Error> {
        self.record = Some(record);
        self.status_dirty = true;
        journal.save_ota(&record).await
    }

    /// The gateway withdrew the offer: stop asking for chunks (what is
    /// written stays, in case the rollout resumes).
    pub fn handle_cancel(&mut self, rollout: u32) {
        if self.record.is_some_and(|r| r.rollout == rollout) {
            self.paused = true;
            self.outstanding = None;
            self.status_dirty = true;
        }
    }

    fn downloading(&self) -> Option<&OtaRecord> {
        self.record
            .as_ref()
            .filter(|r| r.phase == Phase::Downloading && !self.paused && !self.verify_pending)
    }

    fn expected_len(&self, r: &OtaRecord) -> u32 {
        self.config
            .chunk_size
            .min(MAX_CHUNK)
            .min(r.size.saturating_sub(r.written))
    }

    /// The next chunk request to publish, if one is due.
    pub fn poll_request(&mut self, now: Millis) -> Option<ChunkRequest> {
        if !self.connected {
            return None;
        }
        let r = *self.downloading()?;
        if r.written >= r.size {
            return None;
        }
        if let Some((_, sent)) = self.outstanding {
            if now < sent.saturating_add(self.config.request_timeout_ms) {
                return None;
            }
        }
        self.outstanding = Some((r.written, now));
        self.counters.requests += 1;
        Some(ChunkRequest {
            rollout: r.rollout,
            offset: r.written,
            len: self.expected_len(&r),
        })
    }

    /// When the outstanding request times out.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.outstanding
            .filter(|_| self.downloading().is_some())
            .map(|(_, sent)| sent.saturating_add(self.config.request_timeout_ms))
    }

    /// A chunk from the gateway: written to the DFU partition if it is the
    /// one asked for and intact (a damaged one is asked for again).
    pub async fn handle_chunk<J: OtaJournal>(
        &mut self,
        _now: Millis,
        chunk: &Chunk<'_>,
        journal: &mut J,
    ) -> Result<(), J::Error> {
        let Some(r) = self.downloading().copied() else {
            return Ok(());
        };
        let expected = self.expected_len(&r);
        if chunk.rollout != r.rollout
            || chunk.offset != r.written
            || chunk.data.len() != expected as usize
        {
            return Ok(()); // stale or duplicate: not the one we wait for
        }
        if !chunk.is_intact() {
            self.counters.chunks_damaged += 1;
            self.outstanding = None; // ask again at once
            return Ok(());
        }
        self.counters.bytes_received += chunk.data.len() as u64;
        if self.write(r.written, chunk.data).await.is_err() {
            let mut failed = r;
            failed.phase = Phase::Failed(OtaFailure::Flash);
            return self.replace_record(failed, journal).await;
        }
        self.wrote_this_boot = true;
        self.counters.chunks_written += 1;
        self.outstanding = None;
        let mut updated = r;
        updated.written += expected;
        self.record = Some(updated);
        journal.save_ota(&updated).await?;
        if updated.written >= updated.size {
            self.verify_pending = true;
            self.status_dirty = true;
        }
        Ok(())
    }

    /// Writes `data` at `offset`, padding a short tail to the flash's write
    /// size with the erased value (0xFF).
    async fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FirmwareUpdaterError> {
        let word = DFU::WRITE_SIZE.max(1);
        let aligned = data.len() - data.len() % word;
        if aligned > 0 {
            self.updater
                .write_firmware(offset as usize, &data[..aligned])
                .await?;
        }
        if aligned < data.len() {
            let mut tail = [0xFFu8; 64];
            let rest = &data[aligned..];
            let padded = tail.get_mut(..word).ok_or(FirmwareUpdaterError::Flash(
                embedded_storage_async::nor_flash::NorFlashErrorKind::NotAligned,
            ))?;
            padded[..rest.len()].copy_from_slice(rest);
            self.updater
                .write_firmware(offset as usize + aligned, padded)
                .await?;
        }
        Ok(())
    }

    /// Verifies the downloaded image's signature with the built-in key and,
    /// if it holds, marks the update for the bootloader: then
    /// [`Self::wants_reboot`].
    pub async fn verify<J: OtaJournal>(&mut self, journal: &mut J) -> Result<(), J::Error> {
        match self.check_image().await {
            Some(checked) => self.record_check(checked, journal).await,
            None => Ok(()),
        }
    }

    /// The slow half of [`Self::verify`] (reading and hashing the whole
    /// image), which needs no journal: a caller sharing the journal with
    /// the press queue holds it only for [`Self::record_check`].
    pub async fn check_image(&mut self) -> Option<CheckedImage> {
        if !self.verify_pending {
            return None;
        }
        self.verify_pending = false;
        let mut r = self.record?;
        r.phase = match self.image_sha256(r.size).await {
            Err(_) => Phase::Failed(OtaFailure::Flash),
            // The image signature alone would take any image the release
            // key ever signed, an older one too, behind this manifest.
            Ok(sha256) if sha256 != r.sha256 => Phase::Failed(OtaFailure::ImageHash),
            Ok(_) => self.verify_and_mark(&r).await,
        };
        Some(CheckedImage(r))
    }

    /// SHA-256 of the first `size` bytes of the DFU partition.
    async fn image_sha256(&mut self, size: u32) -> Result<[u8; 32], FirmwareUpdaterError> {
        let mut chunk = [0u8; 256];
        let mut digest = [0u8; 32];
        self.updater
            .hash::<sha2::Sha256>(size, &mut chunk, &mut digest)
            .await?;
        Ok(digest)
    }

    /// The image signature over the DFU bytes, and the mark for the
    /// bootloader when it holds.
    async fn verify_and_mark(&mut self, r: &OtaRecord) -> Phase {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r.image_signature[0]);
        signature[32..].copy_from_slice(&r.image_signature[1]);
        let verdict = self
            .updater
            .verify_and_mark_updated(&self.config.public_key, &signature, r.size)
            .await;
        match verdict {
            Ok(()) => {
                self.reboot_requested = true;
                Phase::Trial
            }
            Err(FirmwareUpdaterError::Signature(_)) => Phase::Failed(OtaFailure::ImageSignature),
            Err(_) => Phase::Failed(OtaFailure::Flash),
        }
    }

    /// Keeps the outcome of [`Self::check_image`] in the journal.
    pub async fn record_check<J: OtaJournal>(
        &mut self,
        checked: CheckedImage,
        journal: &mut J,
    ) -> Result<(), J::Error> {
        self.replace_record(checked.0, journal).await
    }

    /// The status to publish now, if it changed (or progress moved a step).
    pub fn poll_status(&mut self) -> Option<OtaStatus> {
        if !self.connected {
            return None;
        }
        let status = self.status();
        let percent = status.percent();
        let step = self.config.progress_step.max(1);
        let progressed = status.state == OtaState::Downloading
            && percent >= self.reported_percent.saturating_add(step);
        if !(self.status_dirty || progressed) {
            return None;
        }
        self.status_dirty = false;
        if status.state == OtaState::Downloading {
            self.reported_percent = percent - percent % step;
        }
        Some(status)
    }

    /// An update is on its way in (offered, downloading, verifying) or a
    /// status waits to be reported: a terminal on batteries keeps its
    /// radio on until it is not.
    pub fn is_busy(&self) -> bool {
        self.status_dirty || self.verify_pending || self.downloading().is_some()
    }

    /// Where this terminal is with updates.
    pub fn status(&self) -> OtaStatus {
        let Some(r) = self.record else {
            return OtaStatus {
                rollout: 0,
                attempt: 0,
                state: OtaState::Idle,
                running: self.running,
                target: None,
                written: 0,
                size: 0,
                failure: None,
            };
        };
        let (state, failure) = match r.phase {
            Phase::Downloading if self.paused => (OtaState::Idle, None),
            Phase::Downloading if self.verify_pending => (OtaState::Verifying, None),
            Phase::Downloading if r.written == 0 => (OtaState::Offered, None),
            Phase::Downloading => (OtaState::Downloading, None),
            Phase::Trial => (OtaState::Rebooting, None),
            Phase::Confirmed => (OtaState::Confirmed, None),
            Phase::Failed(f) => (OtaState::Failed, Some(f)),
            Phase::RolledBack => (OtaState::RolledBack, Some(OtaFailure::TrialBootFailed)),
        };
        OtaStatus {
            rollout: r.rollout,
            attempt: r.attempt,
            state,
            running: self.running,
            target: Some(r.target),
            written: r.written,
            size: r.size,
            failure,
        }
    }
}

#[cfg(test)]
mod tests;
