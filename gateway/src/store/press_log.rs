//! The press log: every stored press, for the record, in one append-only
//! file per UTC day (`presslog/YYYY-MM-DD.log` in the data directory),
//! deleted whole when the day passes the raw-press retention.
//!
//! Why files and not sled trees: sled keeps the tree nodes it has written
//! in memory beyond its configured cache, so write-once raw history held
//! in sled costs RAM in proportion to what is kept. A file costs disk
//! only; what the kernel caches of it is reclaimable.
//!
//! # Records
//! One record per group commit: its new presses ([`PressBatch`]), keyed by
//! the outbox id of the first press, so records are in commit order.
//!
//! ```text
//! 0..4     payload length n (u32, little endian)
//! 4..8     CRC-32 of bytes 8..24+n
//! 8..16    key: outbox id of the first press (u64, big endian)
//! 16..24   arrival of the first press, Unix ms (i64, little endian)
//! 24..     the PressBatch encoding (n bytes)
//! ```
//!
//! # Commits
//! A day file is only ever written past its committed length. The commit's
//! sled transaction records the new length (and the day's press count) in
//! the `presslog` tree with the commit's dedup ranges and outbox records;
//! then the file is synced (fdatasync) and sled flushed, and only then are
//! the presses acked. The file is synced after the transaction, not
//! before, so that a commit holds the outbox's segment lock (which the
//! forwarder's acknowledgements wait for) only while it writes memory.
//!
//! So the `presslog` tree says what is committed. At open, bytes past a
//! day's committed length (a commit that never completed, never acked) are
//! cut off, and a file with no committed length (the same, on a new day,
//! or a day retention was dropping) is deleted. A power cut between sled's
//! flush and the file's sync can leave the newest day's last records
//! missing or torn while sled has their commit: the newest day is checked
//! record by record at open, and what is missing is rebuilt from the
//! commit's outbox records, which hold the same presses under the same
//! ids ([`PressLog::rebuild_tail`]). A failed commit leaves the next write
//! at the same offset.
//!
//! Nothing is read from the log on the press path. It is read at start-up
//! (the last hour of presses for the live figures, and whatever the last
//! aggregate checkpoint had not folded in yet).

use pressline_host::sync::LockExt;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::records::{PressBatch, StoreError};

/// The sled tree of committed lengths and counts, per day.
pub const INDEX_TREE: &str = "presslog";
/// The folder of day files, in the data directory.
pub const DIR: &str = "presslog";
const HEADER: usize = 24;
/// Longest payload accepted when reading (a group commit holds at most a
/// few thousand presses of a few bytes each; larger means damage).
const MAX_PAYLOAD: u32 = 64 << 20;
/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// The file name of UTC day `day` (days since 1970-01-01).
pub fn file_name(day: i64) -> String {
    match i32::try_from(day)
        .ok()
        .and_then(|d| d.checked_add(UNIX_EPOCH_JULIAN_DAY))
        .and_then(|j| time::Date::from_julian_day(j).ok())
    {
        Some(date) => format!(
            "{:04}-{:02}-{:02}.log",
            date.year(),
            u8::from(date.month()),
            date.day()
        ),
        None => format!("day-{day}.log"),
    }
}

/// The UTC day a file name stands for (the inverse of [`file_name`]).
fn day_of(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if let Some(day) = stem.strip_prefix("day-") {
        return day.parse().ok();
    }
    let mut parts = stem.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(i64::from(date.to_julian_day() - UNIX_EPOCH_JULIAN_DAY))
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |source| StoreError::Log { what, source }
}

/// One day's file and what of it is committed and written.
struct Day {
    file: Option<Arc<File>>,
    committed_len: u64,
    committed_count: u64,
    /// Past `committed_len` while a commit is under way.
    written_len: u64,
    written_count: u64,
}

/// A record written (not yet committed): what the commit's transaction
/// records for its day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub day: i64,
    pub len: u64,
    pub count: u64,
}

impl Written {
    fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.len.to_be_bytes());
        out[8..].copy_from_slice(&self.count.to_be_bytes());
        out
    }
}

fn decode_entry(key: &[u8], value: &[u8]) -> Option<(i64, u64, u64)> {
    let day = i64::from_be_bytes(key.try_into().ok()?);
    let len = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let count = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((day, len, count))
}

/// The day files, and each day's committed length and press count.
pub struct PressLog {
    dir: PathBuf,
    index: sled::Tree,
    days: Mutex<BTreeMap<i64, Day>>,
    /// The newest day lost committed records in a power cut: its day, the
    /// key of its last whole record (see [`PressLog::rebuild_tail`]).
    lost_tail: Mutex<Option<(i64, Option<u64>)>>,
}

impl PressLog {
    /// Opens the log in `data_dir`: committed lengths from `db`, files cut
    /// back to them (see the module documentation).
    pub fn open(db: &sled::Db, data_dir: &Path) -> Result<PressLog, StoreError> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(io("creating the press-log folder"))?;
        let index = db.open_tree(INDEX_TREE)?;
        let mut days = committed_days(&index)?;
        let mut files = day_files(&dir)?;
        let newest = days.keys().next_back().copied();
        if let Some(day) = newest {
            // A new day's first commit can reach sled without its file.
            if let std::collections::btree_map::Entry::Vacant(e) = files.entry(day) {
                let path = dir.join(file_name(day));
                File::create(&path)
                    .and_then(|_| File::open(&dir))
                    .and_then(|d| d.sync_all())
                    .map_err(io("creating a press-log file"))?;
                e.insert(path);
            }
        }
        let mut fixed = false;
        let mut lost_tail = None;
        for (day, path) in &files {
            let Some(d) = days.get_mut(day) else {
                tracing::info!(file = %path.display(), "removing a press-log file with nothing committed (a commit or a retention drop that did not finish)");
                std::fs::remove_file(path).map_err(io("removing an uncommitted press-log file"))?;
                continue;
            };
            let repair = repair_day(path, *day, d, Some(*day) == newest)?;
            if let Some(whole) = repair.shortened {
                let written = Written {
                    day: *day,
                    len: whole,
                    count: d.committed_count,
                };
                index.insert(day.to_be_bytes(), &written.encode())?;
                fixed = true;
            }
            lost_tail = lost_tail.or(repair.lost_tail);
        }
        fixed |= forget_missing_files(&index, &dir, &mut days, &files)?;
        if fixed {
            db.flush()?;
        }
        Ok(PressLog {
            dir,
            index,
            days: Mutex::new(days),
            lost_tail: Mutex::new(lost_tail),
        })
    }

    /// Rebuilds the newest day's records that a power cut kept from the
    /// disk (found at open) from the outbox's press records with keys
    /// after the last whole one, and commits them. Every commit's presses
    /// are in the outbox under the same ids until their segment is
    /// dropped, which never happens to the newest one.
    pub fn rebuild_tail(
        &self,
        db: &sled::Db,
        outbox: &super::outbox::Outbox,
    ) -> Result<(), StoreError> {
        let Some((day, after)) = self.lost_tail.locked().take() else {
            return Ok(());
        };
        let mut presses = 0u64;
        for (key, batch) in outbox.press_records_after(after)? {
            let batch_day = batch.received_at_ms().map(crate::clock::utc_day);
            if batch_day == Some(day) {
                presses += batch.len() as u64;
                self.write(day, key, &batch)?;
            }
        }
        if presses == 0 {
            // Still record the cut-back length.
            let mut days = self.days();
            if let Some(d) = days.get_mut(&day) {
                d.written_len = d.committed_len;
                let w = Written {
                    day,
                    len: d.committed_len,
                    count: d.committed_count,
                };
                drop(days);
                self.index.insert(day.to_be_bytes(), &w.encode())?;
            }
        }
        self.seal(db)?;
        tracing::warn!(
            file = %self.dir.join(file_name(day)).display(),
            presses,
            "rebuilt the newest press-log records from the outbox"
        );
        Ok(())
    }

    fn days(&self) -> MutexGuard<'_, BTreeMap<i64, Day>> {
        self.days.locked()
    }

    /// The tree the commit's transaction records written lengths in.
    pub fn index(&self) -> &sled::Tree {
        &self.index
    }

    /// Writes `batch` as a record at the end of what is written of `day`
    /// (creating the day's file), not synced, not committed: see
    /// [`PressLog::sync`], [`PressLog::record`], [`PressLog::confirm`],
    /// [`PressLog::rollback`].
    pub fn write(&self, day: i64, key: u64, batch: &PressBatch) -> Result<Written, StoreError> {
        let payload = batch.to_bytes();
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&n| n <= MAX_PAYLOAD)
            .ok_or(StoreError::Malformed(
                "press batch too large for one record",
            ))?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(&key.to_be_bytes());
        record.extend_from_slice(&batch.received_at_ms().unwrap_or(0).to_le_bytes());
        record.extend_from_slice(&payload);
        let crc = crc32fast::hash(&record[8..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());

        let (file, offset) = {
            let mut days = self.days();
            let d = days.entry(day).or_insert(Day {
                file: None,
                committed_len: 0,
                committed_count: 0,
                written_len: 0,
                written_count: 0,
            });
            if d.file.is_none() {
                d.file = Some(Arc::new(self.create(day)?));
            }
            let file = d
                .file
                .clone()
                .ok_or(StoreError::Malformed("press-log file"))?;
            (file, d.written_len)
        };
        file.write_all_at(&record, offset)
            .map_err(io("writing a press-log record"))?;
        let mut days = self.days();
        let d = days
            .get_mut(&day)
            .ok_or(StoreError::Malformed("press-log day dropped while written"))?;
        d.written_len = offset + record.len() as u64;
        d.written_count += batch.len() as u64;
        Ok(Written {
            day,
            len: d.written_len,
            count: d.written_count,
        })
    }

    /// Creates (or opens) the file of `day`, its directory entry durable.
    fn create(&self, day: i64) -> Result<File, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(file_name(day)))
            .map_err(io("creating a press-log file"))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the press-log folder"))?;
        Ok(file)
    }

    /// Makes what is written of `day` durable.
    pub fn sync(&self, day: i64) -> Result<(), StoreError> {
        let file = self.days().get(&day).and_then(|d| d.file.clone());
        match file {
            Some(f) => f.sync_data().map_err(io("syncing a press-log file")),
            None => Ok(()),
        }
    }

    /// Records a written length in the commit's transaction (`index` is
    /// the [`PressLog::index`] tree inside it).
    pub fn record(
        index: &sled::transaction::TransactionalTree,
        written: &Written,
    ) -> sled::transaction::ConflictableTransactionResult<(), StoreError> {
        index.insert(&written.day.to_be_bytes(), &written.encode())?;
        Ok(())
    }

    /// The commit that recorded `written` is durable.
    pub fn confirm(&self, written: &Written) {
        if let Some(d) = self.days().get_mut(&written.day) {
            d.committed_len = d.committed_len.max(written.len);
            d.committed_count = d.committed_count.max(written.count);
        }
    }

    /// The commit writing to `day` failed: its next record goes where the
    /// failed one went.
    pub fn rollback(&self, day: i64) {
        if let Some(d) = self.days().get_mut(&day) {
            d.written_len = d.committed_len;
            d.written_count = d.committed_count;
        }
    }

    /// Syncs and commits everything written (a migration's records),
    /// flushing `db`.
    pub fn seal(&self, db: &sled::Db) -> Result<(), StoreError> {
        let pending: Vec<Written> = self
            .days()
            .iter()
            .filter(|(_, d)| d.written_len != d.committed_len)
            .map(|(&day, d)| Written {
                day,
                len: d.written_len,
                count: d.written_count,
            })
            .collect();
        for w in &pending {
            self.sync(w.day)?;
            self.index.insert(w.day.to_be_bytes(), &w.encode())?;
        }
        db.flush()?;
        for w in &pending {
            self.confirm(w);
        }
        Ok(())
    }

    /// Whether `day` has committed records.
    pub fn has_day(&self, day: i64) -> bool {
        self.days().get(&day).is_some_and(|d| d.committed_len > 0)
    }

    /// Presses stored on UTC day `day`.
    pub fn count_on(&self, day: i64) -> u64 {
        self.days().get(&day).map_or(0, |d| d.committed_count)
    }

    /// Presses in the log.
    pub fn total(&self) -> u64 {
        self.days().values().map(|d| d.committed_count).sum()
    }

    /// Bytes of the day files.
    pub fn disk_bytes(&self) -> u64 {
        self.days().values().map(|d| d.written_len).sum()
    }

    /// Days kept, oldest first.
    pub fn day_list(&self) -> Vec<i64> {
        self.days().keys().copied().collect()
    }

    /// Drops the days before `cutoff_day` (their committed lengths first,
    /// flushed, then their files); returns how many presses went.
    pub fn drop_days_before(&self, cutoff_day: i64) -> Result<u64, StoreError> {
        let old: Vec<(i64, u64)> = self
            .days()
            .range(..cutoff_day)
            .map(|(&d, day)| (d, day.committed_count))
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        for (day, _) in &old {
            self.index.remove(day.to_be_bytes())?;
        }
        self.index.flush()?;
        let mut dropped = 0;
        for (day, count) in old {
            self.days().remove(&day);
            match std::fs::remove_file(self.dir.join(file_name(day))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing a press-log file")(e)),
            }
            dropped += count;
        }
        Ok(dropped)
    }

    /// Calls `f` with every record that has a key above `after` (all of
    /// them for `None`) or whose first press arrived at or after
    /// `since_ms`, in commit order within a day. Stops at the first error
    /// of `f`. Damaged records are logged; the rest of their day is then
    /// unreadable (lengths can no longer be trusted) and skipped.
    pub fn for_each(
        &self,
        after: Option<u64>,
        since_ms: i64,
        mut f: impl FnMut(u64, PressBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let days: Vec<(i64, u64)> = self
            .days()
            .iter()
            .filter(|(_, d)| d.committed_len > 0)
            .map(|(&day, d)| (day, d.committed_len))
            .collect();
        // A press that arrived at `since_ms` sits in that UTC day's file,
        // or a day later if the clock stepped back across midnight.
        let since_day = crate::clock::utc_day(since_ms) - 1;
        for (day, committed) in days {
            let path = self.dir.join(file_name(day));
            let file = File::open(&path).map_err(io("opening a press-log file"))?;
            let mut reader = BufReader::with_capacity(1 << 16, file).take(committed);
            let mut at = 0u64;
            let mut payload = Vec::new();
            while at < committed {
                let mut header = [0u8; HEADER];
                if let Err(e) = reader.read_exact(&mut header) {
                    tracing::error!(file = %path.display(), at, error = %e, "a press-log record header is cut short; the rest of the day is skipped");
                    break;
                }
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                let key = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
                let first_ms = i64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
                if len > MAX_PAYLOAD {
                    tracing::error!(file = %path.display(), at, "a press-log record is damaged (impossible length); the rest of the day is skipped");
                    break;
                }
                at += (HEADER as u64) + u64::from(len);
                let wanted =
                    after.is_none_or(|a| key > a) || (day >= since_day && first_ms >= since_ms);
                payload.resize(len as usize, 0);
                // Records not wanted are read past too: the reader is
                // buffered, and a day file is read once at start-up.
                if let Err(e) = reader.read_exact(&mut payload) {
                    tracing::error!(file = %path.display(), at, error = %e, "a press-log record is cut short; the rest of the day is skipped");
                    break;
                }
                if !wanted {
                    continue;
                }
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&header[8..]);
                hasher.update(&payload);
                if hasher.finalize() != crc {
                    tracing::error!(file = %path.display(), key, "a press-log record fails its checksum; skipped");
                    continue;
                }
                match PressBatch::decode(&payload) {
                    Ok(batch) => f(key, batch)?,
                    Err(e) => {
                        tracing::error!(file = %path.display(), key, error = %e, "a press-log record does not decode; skipped");
                    }
                }
            }
        }
        Ok(())
    }
}

/// The records at the start of a file that are whole and pass their
/// checksum.
struct CheckedPrefix {
    len: u64,
    presses: u64,
    last_key: Option<u64>,
}

/// The whole, checksummed records at the start of `file` (up to `len`).
fn checked_prefix(file: &File, len: u64) -> CheckedPrefix {
    let mut out = CheckedPrefix {
        len: 0,
        presses: 0,
        last_key: None,
    };
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    while out.len + HEADER as u64 <= len {
        if file.read_exact_at(&mut header, out.len).is_err() {
            break;
        }
        let n = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let end = out.len + HEADER as u64 + u64::from(n);
        if n > MAX_PAYLOAD || end > len {
            break;
        }
        payload.resize(n as usize, 0);
        if file
            .read_exact_at(&mut payload, out.len + HEADER as u64)
            .is_err()
        {
            break;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..]);
        hasher.update(&payload);
        if hasher.finalize().to_le_bytes() != header[4..8] {
            break;
        }
        let Ok(presses) = PressBatch::encoded_len(&payload) else {
            break;
        };
        out.presses += presses;
        out.last_key = Some(u64::from_be_bytes(
            header[8..16].try_into().unwrap_or_default(),
        ));
        out.len = end;
    }
    out
}

/// The length of the whole records at the start of `file` (up to `len`),
/// by their lengths; a record that fails its checksum is still whole (it
/// is skipped when read).
fn whole_prefix(file: &File, len: u64) -> u64 {
    let mut at = 0u64;
    let mut header = [0u8; 4];
    while at + HEADER as u64 <= len {
        if file.read_exact_at(&mut header, at).is_err() {
            break;
        }
        let n = u32::from_le_bytes(header);
        let end = at + HEADER as u64 + u64::from(n);
        if n > MAX_PAYLOAD || end > len {
            break;
        }
        at = end;
    }
    at
}

/// Each day's committed length and count, from the index.
fn committed_days(index: &sled::Tree) -> Result<BTreeMap<i64, Day>, StoreError> {
    let mut days = BTreeMap::new();
    for item in index.iter() {
        let (key, value) = item?;
        let Some((day, len, count)) = decode_entry(&key, &value) else {
            tracing::error!("a press-log index entry does not decode; its day is ignored");
            continue;
        };
        days.insert(
            day,
            Day {
                file: None,
                committed_len: len,
                committed_count: count,
                written_len: len,
                written_count: count,
            },
        );
    }
    Ok(days)
}

/// The day files in the press-log folder.
fn day_files(dir: &Path) -> Result<BTreeMap<i64, PathBuf>, StoreError> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing the press-log folder"))? {
        let entry = entry.map_err(io("listing the press-log folder"))?;
        match entry.file_name().to_str().and_then(day_of) {
            Some(day) => {
                files.insert(day, entry.path());
            }
            None => {
                tracing::warn!(file = %entry.path().display(), "ignoring a file in the press-log folder that is not a day file")
            }
        }
    }
    Ok(files)
}

/// What opening a day file changed.
struct Repair {
    /// An older day's file was damaged: its committed length is now this.
    shortened: Option<u64>,
    /// The newest day lost records in a power cut (see `lost_tail`).
    lost_tail: Option<(i64, Option<u64>)>,
}

/// Opens a day's file and makes it agree with what was committed: an
/// uncommitted end is cut off; the newest day's torn records are cut back
/// to the last whole one (rebuilt later from the outbox); an older day's
/// damaged end is dropped.
fn repair_day(path: &Path, day: i64, d: &mut Day, newest: bool) -> Result<Repair, StoreError> {
    let mut repair = Repair {
        shortened: None,
        lost_tail: None,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("opening a press-log file"))?;
    let on_disk = file
        .metadata()
        .map_err(io("reading a press-log file's size"))?
        .len();
    if on_disk > d.committed_len {
        tracing::info!(file = %path.display(), bytes = on_disk - d.committed_len, "cutting off an uncommitted press-log record (its presses were never acked; terminals resend them)");
        file.set_len(d.committed_len)
            .map_err(io("cutting off an uncommitted press-log record"))?;
        file.sync_all().map_err(io("syncing a press-log file"))?;
    }
    if newest {
        // Its last commits may have reached sled and not the file.
        let valid = checked_prefix(&file, d.committed_len.min(on_disk));
        if valid.len < d.committed_len {
            tracing::warn!(file = %path.display(), committed = d.committed_len, whole = valid.len, "the newest press-log records did not reach the disk before the gateway stopped; rebuilding them from the outbox");
            file.set_len(valid.len)
                .map_err(io("cutting off a torn press-log record"))?;
            d.committed_len = valid.len;
            d.written_len = valid.len;
            d.committed_count = valid.presses;
            d.written_count = valid.presses;
            repair.lost_tail = Some((day, valid.last_key));
        }
    } else if on_disk < d.committed_len {
        // Only damage does this to an older day: keep what is whole.
        let whole = whole_prefix(&file, on_disk);
        tracing::error!(file = %path.display(), committed = d.committed_len, on_disk, kept = whole, "a press-log file is shorter than committed; its damaged end is dropped");
        file.set_len(whole)
            .map_err(io("cutting off a damaged press-log record"))?;
        d.committed_len = whole;
        d.written_len = whole;
        repair.shortened = Some(whole);
    }
    d.file = Some(Arc::new(file));
    Ok(repair)
}

/// Days committed whose file is gone: their presses are gone from the
/// record (reported), and the day leaves the index. `true` if any did.
fn forget_missing_files(
    index: &sled::Tree,
    dir: &Path,
    days: &mut BTreeMap<i64, Day>,
    files: &BTreeMap<i64, PathBuf>,
) -> Result<bool, StoreError> {
    let missing: Vec<i64> = days
        .keys()
        .filter(|day| !files.contains_key(day))
        .copied()
        .collect();
    for day in &missing {
        if let Some(d) = days.remove(day) {
            if d.committed_len > 0 {
                tracing::error!(file = %dir.join(file_name(*day)).display(), presses = d.committed_count, "a press-log file is missing; its presses are gone from the record");
            }
        }
        index.remove(day.to_be_bytes())?;
    }
    Ok(!missing.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::LoggedPress;
    use pressline_protocol::Button;

    const DAY: i64 = 20_423;
    const DAY_MS: i64 = DAY * 86_400_000;

    /// `n` presses of terminal `t`, sequence numbers from `seq`.
    fn batch(t: &str, seq: u32, n: u32) -> PressBatch {
        let mut b = PressBatch::default();
        for i in 0..n {
            b.push(
                t,
                LoggedPress {
                    boot: 1,
                    seq: seq + i,
                    button: Button::Happy,
                    received_at_ms: DAY_MS + i64::from(seq + i) * 1000,
                    pressed_at_ms: None,
                    counted: true,
                    reason: None,
                },
            );
        }
        b
    }

    fn open(dir: &Path) -> (sled::Db, PressLog) {
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        let log = PressLog::open(&db, dir).unwrap();
        (db, log)
    }

    /// What a store commit does with the log.
    fn commit(db: &sled::Db, log: &PressLog, day: i64, key: u64, b: &PressBatch) {
        let w = log.write(day, key, b).unwrap();
        log.sync(day).unwrap();
        log.index()
            .transaction(|t| PressLog::record(t, &w))
            .unwrap();
        db.flush().unwrap();
        log.confirm(&w);
    }

    fn read_all(log: &PressLog) -> Vec<(u64, PressBatch)> {
        let mut out = Vec::new();
        log.for_each(None, i64::MAX, |k, b| {
            out.push((k, b));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn committed_records_read_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (db, log) = open(dir.path());
        commit(&db, &log, DAY, 10, &batch("a", 0, 3));
        commit(&db, &log, DAY, 13, &batch("b", 0, 2));
        commit(&db, &log, DAY + 1, 15, &batch("a", 3, 1));
        drop((log, db));
        let (_db, log) = open(dir.path());
        assert_eq!(
            (log.count_on(DAY), log.count_on(DAY + 1), log.total()),
            (5, 1, 6)
        );
        let keys: Vec<u64> = read_all(&log).iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [10, 13, 15]);
        assert_eq!(read_all(&log)[1].1, batch("b", 0, 2));
        assert!(dir.path().join(DIR).join("2025-12-01.log").exists());
    }

    #[test]
    fn a_record_written_but_never_committed_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (db, log) = open(dir.path());
        commit(&db, &log, DAY, 1, &batch("a", 0, 2));
        // The crash: on disk, its length never recorded.
        log.write(DAY, 3, &batch("a", 2, 5)).unwrap();
        log.sync(DAY).unwrap();
        // A new day's first record, equally uncommitted.
        log.write(DAY + 1, 8, &batch("a", 7, 1)).unwrap();
        drop((log, db));
        let (db, log) = open(dir.path());
        assert_eq!(log.total(), 2);
        assert_eq!(read_all(&log).len(), 1);
        assert!(!dir.path().join(DIR).join(file_name(DAY + 1)).exists());
        // The resent presses go where the lost record was.
        commit(&db, &log, DAY, 3, &batch("a", 2, 5));
        drop((log, db));
        let (_db, log) = open(dir.path());
        let all = read_all(&log);
        assert_eq!(all.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(log.total(), 7);
    }

    #[test]
    fn a_failed_commit_leaves_the_next_record_where_it_would_have_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (db, log) = open(dir.path());
        commit(&db, &log, DAY, 1, &batch("a", 0, 2));
        log.write(DAY, 3, &batch("a", 2, 40)).unwrap();
        log.rollback(DAY);
        commit(&db, &log, DAY, 3, &batch("b", 0, 1));
        assert_eq!(
            read_all(&log).iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [1, 3]
        );
        drop((log, db));
        let (_db, log) = open(dir.path());
        assert_eq!(
            read_all(&log).iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(log.total(), 3);
        // What the failed commit left past the end is gone.
        let len = std::fs::metadata(dir.path().join(DIR).join(file_name(DAY)))
            .unwrap()
            .len();
        assert_eq!(len, log.disk_bytes());
    }

    #[test]
    fn a_damaged_record_is_skipped_and_a_short_file_keeps_its_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let (db, log) = open(dir.path());
        for k in 0..4 {
            commit(&db, &log, DAY, k * 10, &batch("a", k as u32 * 10, 10));
        }
        // A newer day: the damaged one is not the newest (whose torn end
        // is rebuilt from the outbox, see the store's tests).
        commit(&db, &log, DAY + 1, 50, &batch("a", 50, 1));
        drop((log, db));
        let path = dir.path().join(DIR).join(file_name(DAY));
        let mut bytes = std::fs::read(&path).unwrap();
        let record = bytes.len() / 4;
        // A flipped bit in the second record's payload.
        bytes[record + HEADER + 3] ^= 0x10;
        // The last record half gone.
        bytes.truncate(bytes.len() - record / 2);
        std::fs::write(&path, &bytes).unwrap();
        let (_db, log) = open(dir.path());
        let keys: Vec<u64> = read_all(&log).iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [0, 20, 50],
            "the damaged record skipped, the cut one gone"
        );
    }

    #[test]
    fn retention_deletes_day_files_and_reads_pick_by_key_or_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let (db, log) = open(dir.path());
        commit(&db, &log, DAY - 2, 1, &batch("a", 0, 1));
        commit(&db, &log, DAY - 1, 2, &batch("a", 1, 1));
        commit(&db, &log, DAY, 3, &batch("a", 2, 1));
        commit(&db, &log, DAY, 4, &batch("a", 3, 1));
        assert_eq!(log.drop_days_before(DAY - 1).unwrap(), 1);
        assert!(!dir.path().join(DIR).join(file_name(DAY - 2)).exists());
        assert_eq!(log.day_list(), [DAY - 1, DAY]);
        let mut seen = Vec::new();
        // Above key 2, or arrived from the fourth press's time on.
        log.for_each(Some(2), DAY_MS + 3_000, |k, _| {
            seen.push(k);
            Ok(())
        })
        .unwrap();
        seen.sort();
        assert_eq!(seen, [3, 4]);
        let mut seen = Vec::new();
        log.for_each(Some(3), DAY_MS + 2_000, |k, _| {
            seen.push(k);
            Ok(())
        })
        .unwrap();
        seen.sort();
        assert_eq!(seen, [3, 4]);
        drop((log, db));
        let (_db, log) = open(dir.path());
        assert_eq!(log.total(), 3);
    }

    #[test]
    fn day_files_are_named_by_their_utc_date() {
        assert_eq!(file_name(0), "1970-01-01.log");
        assert_eq!(file_name(20_423), "2025-12-01.log");
        for day in [0, 1, 20_423, 40_000, -5] {
            assert_eq!(day_of(&file_name(day)), Some(day), "{day}");
        }
        assert_eq!(day_of("notes.txt"), None);
        assert_eq!(day_of("2026-13-01.log"), None);
    }
}
