//! The rollout service: runs the [`crate::ota::rollout`] state machines against
//! the site broker, the release files and sled.
//!
//! A thread of its own owns a second rumqttd link, subscribed only to the
//! terminals' OTA topics, so image chunks never queue behind presses (nor
//! presses behind chunks). The HTTP API changes rollouts through
//! [`Rollouts`]; the thread applies the resulting effects within one loop
//! turn. Every change is saved to sled before its effects go out, so a
//! gateway restart continues each rollout from its last saved state (the
//! terminals, which resume by offset, lose nothing either).

use pressline_host::sync::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pressline_protocol::ota::Artifact;
use pressline_protocol::ota_transfer::{
    self, chunk_crc, Chunk, ChunkRequest, Offer, OtaCommand, OtaStatus, COMMAND_BUF_LEN, MAX_CHUNK,
    MAX_OTA_PAYLOAD,
};
use pressline_protocol::topic::{
    parse_terminal_topic, OtaChunkTopic, OtaCommandTopic, OtaEventTopic, TerminalTopic,
};
use pressline_protocol::upstream::{OtaEvent, OtaEventKind, OTA_EVENT_SCHEMA};
use rumqttd::local::{LinkError, LinkRx, LinkTx};
use rumqttd::Notification;
use tokio::sync::Notify;

use crate::ota::releases::Releases;
use crate::ota::rollout::{CommandError, Effect, Limits, Plan, Rollout, RolloutState};
use crate::stats::RateLimitedLog;
use crate::store::{OutboxEntry, Store};

/// How often time-based rollout decisions are made.
const TICK: Duration = Duration::from_millis(500);

/// Why a rollout could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "no release {board} {version} on this gateway: upload it first with `fleet ota upload`"
    )]
    UnknownRelease { board: String, version: String },
    #[error("rollout {0} is still {1}: pause/abort it or wait for it to finish (one rollout at a time per site)")]
    Busy(u32, &'static str),
    #[error("no rollout {0}")]
    NotFound(u32),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot save the rollout: {0}")]
    Storage(String),
}

/// A release loaded for serving: the artifact bytes and where its parts are.
struct LoadedRelease {
    manifest: Vec<u8>,
    manifest_signature: [u8; 64],
    image_signature: [u8; 64],
    image: Vec<u8>,
}

struct Inner {
    site: String,
    store: Store,
    releases: Releases,
    limits: Limits,
    site_time: crate::site_time::SiteTime,
    rollouts: BTreeMap<u32, Rollout>,
    images: HashMap<(String, String), Arc<LoadedRelease>>,
    /// Effects decided outside the service thread (HTTP), to apply.
    queued: Vec<(u32, Effect)>,
    forward_wake: Arc<Notify>,
}

/// Handle shared by the service thread and the HTTP API.
#[derive(Clone)]
pub struct Rollouts {
    inner: Arc<Mutex<Inner>>,
}

impl Rollouts {
    /// Loads the stored rollouts.
    pub fn load(
        site: &str,
        store: Store,
        releases: Releases,
        limits: Limits,
        site_time: crate::site_time::SiteTime,
        forward_wake: Arc<Notify>,
    ) -> Rollouts {
        let rollouts: BTreeMap<u32, Rollout> = store
            .load_rollouts::<Rollout>()
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        for r in rollouts.values().filter(|r| r.state.is_active()) {
            tracing::info!(
                rollout = r.id,
                version = %r.plan.version,
                state = r.state.as_str(),
                stage = r.stage,
                "continuing rollout after restart"
            );
        }
        Rollouts {
            inner: Arc::new(Mutex::new(Inner {
                site: site.to_string(),
                store,
                releases,
                limits,
                site_time,
                rollouts,
                images: HashMap::new(),
                queued: Vec::new(),
                forward_wake,
            })),
        }
    }

    pub fn list(&self) -> Vec<Rollout> {
        self.inner.locked().rollouts.values().cloned().collect()
    }

    pub fn get(&self, id: u32) -> Option<Rollout> {
        self.inner.locked().rollouts.get(&id).cloned()
    }

    /// Starts a rollout of a stored release.
    pub fn start(&self, plan: Plan, now_ms: i64) -> Result<Rollout, RolloutError> {
        let mut inner = self.inner.locked();
        if let Some(busy) = inner.rollouts.values().find(|r| r.state.is_active()) {
            return Err(RolloutError::Busy(busy.id, busy.state.as_str()));
        }
        if plan.targets.is_empty() {
            return Err(RolloutError::Invalid(
                "no terminals to update (check --terminals/--zone, or that terminals have reported to this gateway)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&plan.max_failure_rate) {
            return Err(RolloutError::Invalid(
                "max failure rate must be between 0% and 100%".into(),
            ));
        }
        if plan.waves.is_empty()
            || plan.waves.windows(2).any(|w| w[0] >= w[1])
            || plan.waves.iter().any(|w| *w == 0 || *w > 100)
        {
            return Err(RolloutError::Invalid(
                "waves must be ascending percentages in 1..=100, e.g. 25%,100%".into(),
            ));
        }
        inner.release(&plan.board, &plan.version)?;
        let id = inner.rollouts.keys().next_back().map_or(1, |last| last + 1);
        let (mut rollout, effects) = Rollout::new(id, plan, now_ms);
        inner.save(&mut rollout)?;
        inner.queued.extend(effects.into_iter().map(|e| (id, e)));
        inner.rollouts.insert(id, rollout.clone());
        tracing::info!(
            rollout = id,
            version = %rollout.plan.version,
            terminals = rollout.terminals.len(),
            stages = rollout.stages,
            "rollout started"
        );
        Ok(rollout)
    }

    /// Applies an operator command (pause, resume, abort, retry-failed).
    pub fn command(&self, id: u32, command: &str, now_ms: i64) -> Result<Rollout, RolloutError> {
        let mut inner = self.inner.locked();
        if matches!(command, "resume" | "retry-failed") {
            if let Some(busy) = inner
                .rollouts
                .values()
                .find(|r| r.id != id && r.state.is_active())
            {
                return Err(RolloutError::Busy(busy.id, busy.state.as_str()));
            }
        }
        let mut rollout = inner
            .rollouts
            .get(&id)
            .cloned()
            .ok_or(RolloutError::NotFound(id))?;
        let effects = match command {
            "pause" => rollout.pause(now_ms)?,
            "resume" => rollout.resume(now_ms)?,
            "abort" => rollout.abort(now_ms)?,
            "retry-failed" => rollout.retry_failed(now_ms)?,
            other => {
                return Err(RolloutError::Invalid(format!(
                    "unknown command {other:?} (pause, resume, abort, retry-failed)"
                )))
            }
        };
        inner.save(&mut rollout)?;
        inner.queued.extend(effects.into_iter().map(|e| (id, e)));
        tracing::info!(
            rollout = id,
            command,
            state = rollout.state.as_str(),
            "rollout command"
        );
        inner.rollouts.insert(id, rollout.clone());
        Ok(rollout)
    }
}

impl Inner {
    fn save(&mut self, rollout: &mut Rollout) -> Result<(), RolloutError> {
        rollout.take_dirty();
        self.store
            .save_rollout(rollout.id, rollout)
            .map_err(|e| RolloutError::Storage(e.to_string()))
    }

    fn release(&mut self, board: &str, version: &str) -> Result<Arc<LoadedRelease>, RolloutError> {
        let key = (board.to_string(), version.to_string());
        if let Some(r) = self.images.get(&key) {
            return Ok(r.clone());
        }
        if !self
            .releases
            .list()
            .iter()
            .any(|r| r.board == board && r.version == version)
        {
            return Err(RolloutError::UnknownRelease {
                board: board.into(),
                version: version.into(),
            });
        }
        let bytes = self
            .releases
            .load_artifact(board, version)
            .map_err(|e| RolloutError::Invalid(e.to_string()))?;
        let a = Artifact::parse(&bytes).map_err(|e| RolloutError::Invalid(e.to_string()))?;
        let loaded = Arc::new(LoadedRelease {
            manifest: a.manifest_bytes.to_vec(),
            manifest_signature: a.signature,
            image_signature: a.image_signature,
            image: a.image.to_vec(),
        });
        // One release at a time is served; drop others' bytes.
        self.images.clear();
        self.images.insert(key, loaded.clone());
        Ok(loaded)
    }

    fn local_minute(&self, now_ms: i64) -> u16 {
        let local = self.site_time.local_ms(now_ms);
        (local.rem_euclid(86_400_000) / 60_000) as u16
    }

    /// The rollout a terminal's message is about: the one it names, or the
    /// active one that includes it.
    fn rollout_for(&self, terminal: &str, named: u32) -> Option<u32> {
        if self.rollouts.contains_key(&named) {
            return Some(named);
        }
        self.rollouts
            .values()
            .find(|r| r.state.is_active() && r.terminals.contains_key(terminal))
            .map(|r| r.id)
    }
}

/// The service thread: consumes the OTA link until the broker goes away or
/// `shutdown` is set.
pub fn run(
    rollouts: Rollouts,
    mut link_tx: LinkTx,
    mut link_rx: LinkRx,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    let mut last_tick = Instant::now() - TICK;
    let mut out = Outgoing::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match link_rx.recv_deadline(Instant::now() + Duration::from_millis(100)) {
            Ok(Some(Notification::Forward(forward))) => {
                let p = forward.publish;
                let mut inner = rollouts.inner.locked();
                handle_publish(&mut inner, &p.topic, &p.payload, &mut out, &mut log);
            }
            Ok(Some(Notification::Unschedule)) => {
                if let Err(e) = link_rx.ready() {
                    tracing::error!(error = ?e, "OTA link to the site broker closed");
                    return;
                }
            }
            Ok(_) => {}
            Err(LinkError::RecvTimeout(_)) => {}
            Err(e) => {
                tracing::error!(error = ?e, "OTA link to the site broker closed; rollouts stop");
                return;
            }
        }
        {
            let mut inner = rollouts.inner.locked();
            let queued = std::mem::take(&mut inner.queued);
            for (id, effect) in queued {
                apply(&mut inner, id, effect, &mut out);
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                tick(&mut inner, &mut out);
            }
        }
        out.flush(&mut link_tx);
    }
}

/// Publishes collected while holding the lock, sent after releasing it.
#[derive(Default)]
struct Outgoing {
    publishes: Vec<(String, Vec<u8>)>,
}

impl Outgoing {
    fn flush(&mut self, link: &mut LinkTx) {
        for (topic, payload) in self.publishes.drain(..) {
            if let Err(e) = link.publish(topic, payload) {
                tracing::warn!(error = ?e, "cannot publish to a terminal (the offer is repeated later)");
            }
        }
    }
}

fn now_ms() -> i64 {
    crate::clock::unix_ms_now()
}

fn tick(inner: &mut Inner, out: &mut Outgoing) {
    let now = now_ms();
    let minute = inner.local_minute(now);
    let limits = inner.limits;
    let ids: Vec<u32> = inner
        .rollouts
        .values()
        .filter(|r| r.state == RolloutState::Running)
        .map(|r| r.id)
        .collect();
    for id in ids {
        let Some(rollout) = inner.rollouts.get_mut(&id) else {
            continue;
        };
        let effects = rollout.handle_tick(now, minute, &limits);
        settle(inner, id, effects, out);
    }
}

/// Saves a changed rollout, then applies its effects.
fn settle(inner: &mut Inner, id: u32, effects: Vec<Effect>, out: &mut Outgoing) {
    if let Some(mut rollout) = inner.rollouts.remove(&id) {
        if rollout.take_dirty() {
            if let Err(e) = inner.save(&mut rollout) {
                tracing::error!(rollout = id, error = %e, "cannot save rollout state");
            }
        }
        inner.rollouts.insert(id, rollout);
    }
    for effect in effects {
        apply(inner, id, effect, out);
    }
}

fn apply(inner: &mut Inner, id: u32, effect: Effect, out: &mut Outgoing) {
    let Some(rollout) = inner.rollouts.get(&id) else {
        return;
    };
    match effect {
        Effect::Offer { terminal } => {
            let (board, version, attempt) = (
                rollout.plan.board.clone(),
                rollout.plan.version.clone(),
                rollout.attempt,
            );
            let release = match inner.release(&board, &version) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(rollout = id, error = %e, "cannot offer the release");
                    return;
                }
            };
            let command = OtaCommand::Offer(Offer {
                rollout: id,
                attempt,
                manifest: &release.manifest,
                manifest_signature: &release.manifest_signature,
                image_signature: &release.image_signature,
            });
            let mut buf = [0u8; COMMAND_BUF_LEN];
            match ota_transfer::encode(&command, &mut buf) {
                Ok(bytes) => out
                    .publishes
                    .push((OtaCommandTopic(&terminal).to_string(), bytes.to_vec())),
                Err(e) => tracing::error!(error = %e, "offer does not encode"),
            }
        }
        Effect::Cancel { terminal } => {
            let mut buf = [0u8; COMMAND_BUF_LEN];
            if let Ok(bytes) = ota_transfer::encode(&OtaCommand::Cancel { rollout: id }, &mut buf) {
                out.publishes
                    .push((OtaCommandTopic(&terminal).to_string(), bytes.to_vec()));
            }
        }
        Effect::Event(event) => {
            let doc = OtaEvent {
                schema: OTA_EVENT_SCHEMA.into(),
                site: inner.site.clone(),
                rollout: id,
                version: rollout.plan.version.clone(),
                event: event.kind.clone(),
                terminal: event.terminal.clone(),
                state: event.state,
                detail: event.detail.clone(),
                wave: event.wave,
                at: crate::clock::rfc3339_ms(now_ms()),
            };
            match &event.kind {
                OtaEventKind::Halted => {
                    tracing::warn!(rollout = id, detail = ?event.detail, "rollout halted")
                }
                OtaEventKind::Terminal => {
                    tracing::info!(rollout = id, terminal = ?event.terminal, state = ?event.state, detail = ?event.detail, "rollout progress")
                }
                kind => {
                    tracing::info!(rollout = id, event = %kind, detail = ?event.detail, "rollout event")
                }
            }
            let entry = OutboxEntry {
                topic: OtaEventTopic(&inner.site).to_string(),
                payload: serde_json::to_vec(&doc).unwrap_or_default(),
                retain: false,
                is_press: false,
            };
            if let Err(e) = inner.store.enqueue_upstream(&[entry]) {
                tracing::error!(error = %e, "cannot queue a rollout event upstream");
            }
            inner.forward_wake.notify_one();
        }
    }
}

fn handle_publish(
    inner: &mut Inner,
    topic: &[u8],
    payload: &[u8],
    out: &mut Outgoing,
    log: &mut RateLimitedLog,
) {
    let mut reject = |reason: &'static str, detail: String| {
        if let Some(suppressed) = log.admit(reason, Instant::now()) {
            tracing::warn!(reason, suppressed, "rejected OTA message: {detail}");
        }
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return reject("wrong_topic", "topic is not UTF-8".into());
    };
    let now = now_ms();
    match parse_terminal_topic(topic) {
        Ok(TerminalTopic::OtaStatus(terminal)) => {
            let status: OtaStatus = match ota_transfer::decode(payload) {
                Ok(s) => s,
                Err(e) => return reject(e.reason(), format!("status from {terminal}: {e}")),
            };
            let Some(id) = inner.rollout_for(terminal, status.rollout) else {
                return; // no rollout involves it: nothing to do
            };
            let Some(rollout) = inner.rollouts.get_mut(&id) else {
                return;
            };
            let effects = rollout.handle_status(now, terminal, &status);
            settle(inner, id, effects, out);
        }
        Ok(TerminalTopic::OtaRequest(terminal)) => {
            let request: ChunkRequest = match ota_transfer::decode(payload) {
                Ok(r) => r,
                Err(e) => return reject(e.reason(), format!("request from {terminal}: {e}")),
            };
            serve_chunk(inner, terminal, request, now, out);
        }
        Ok(_) => {}
        Err(e) => reject(e.reason(), format!("topic {topic:?}")),
    }
}

fn serve_chunk(
    inner: &mut Inner,
    terminal: &str,
    request: ChunkRequest,
    now: i64,
    out: &mut Outgoing,
) {
    let Some(rollout) = inner.rollouts.get_mut(&request.rollout) else {
        return;
    };
    let (board, version) = (rollout.plan.board.clone(), rollout.plan.version.clone());
    let len = request.len.min(MAX_CHUNK);
    if !rollout.handle_chunk_request(now, terminal, len) {
        return; // not (or no longer) offered to it
    }
    let Ok(release) = inner.release(&board, &version) else {
        return;
    };
    let start = request.offset as usize;
    let Some(data) = release
        .image
        .get(start..(start + len as usize).min(release.image.len()))
    else {
        tracing::warn!(
            terminal,
            offset = start,
            "chunk request beyond the image; ignored"
        );
        return;
    };
    let chunk = Chunk {
        rollout: request.rollout,
        offset: request.offset,
        crc32: chunk_crc(data),
        data,
    };
    let mut buf = vec![0u8; MAX_OTA_PAYLOAD];
    if let Ok(bytes) = ota_transfer::encode(&chunk, &mut buf) {
        let used = bytes.len();
        buf.truncate(used);
        out.publishes
            .push((OtaChunkTopic(terminal).to_string(), buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::rollout::Plan;
    use crate::site_time::SiteTime;
    use pressline_protocol::upstream::RolloutState;
    use pressline_protocol::FirmwareVersion;

    const T0: i64 = 1_790_000_000_000;

    /// A store holding one signed pico-w 1.2.0 release, and the rollout
    /// service over it.
    fn service(dir: &std::path::Path) -> (Store, Rollouts) {
        let store = Store::open(dir, 1 << 20).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let releases = Releases::new(
            store.clone(),
            dir,
            vec![key.verifying_key().to_bytes()],
            false,
        );
        let version = FirmwareVersion {
            major: 1,
            minor: 2,
            patch: 0,
        };
        let artifact =
            pressline_protocol::ota::pack(version, "pico-w", &[0x5a; 4096], &key).unwrap();
        releases
            .upload(&artifact, false, "2026-11-01T00:00:00Z".into())
            .unwrap();
        (store.clone(), load(&store, releases))
    }

    fn load(store: &Store, releases: Releases) -> Rollouts {
        Rollouts::load(
            "arena",
            store.clone(),
            releases,
            crate::ota::releases::OtaConfig::default().limits(),
            SiteTime::Fixed { offset_ms: 0 },
            Arc::new(Notify::new()),
        )
    }

    fn plan(version: &str, targets: &[&str]) -> Plan {
        Plan {
            version: version.into(),
            board: "pico-w".into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            canary: 1,
            waves: vec![100],
            max_failure_rate: 0.1,
            window: None,
        }
    }

    #[test]
    fn a_rollout_needs_an_uploaded_release_and_terminals() {
        let dir = tempfile::tempdir().unwrap();
        let (_, rollouts) = service(dir.path());
        assert!(matches!(
            rollouts.start(plan("9.9.9", &["t1"]), T0),
            Err(RolloutError::UnknownRelease { .. })
        ));
        assert!(matches!(
            rollouts.start(plan("1.2.0", &[]), T0),
            Err(RolloutError::Invalid(_))
        ));
        let mut bad_waves = plan("1.2.0", &["t1"]);
        bad_waves.waves = vec![50, 25];
        assert!(matches!(
            rollouts.start(bad_waves, T0),
            Err(RolloutError::Invalid(_))
        ));
        assert!(rollouts.list().is_empty(), "nothing started, nothing saved");
    }

    #[test]
    fn one_rollout_at_a_time_a_paused_one_included() {
        let dir = tempfile::tempdir().unwrap();
        let (_, rollouts) = service(dir.path());
        let first = rollouts.start(plan("1.2.0", &["t1", "t2"]), T0).unwrap();
        assert!(matches!(
            rollouts.start(plan("1.2.0", &["t3"]), T0),
            Err(RolloutError::Busy(id, _)) if id == first.id
        ));
        rollouts.command(first.id, "pause", T0 + 1).unwrap();
        assert!(matches!(
            rollouts.start(plan("1.2.0", &["t3"]), T0),
            Err(RolloutError::Busy(..))
        ));
        rollouts.command(first.id, "abort", T0 + 2).unwrap();
        let second = rollouts.start(plan("1.2.0", &["t3"]), T0 + 3).unwrap();
        assert_eq!(second.id, first.id + 1);
        assert!(matches!(
            rollouts.command(first.id, "resume", T0 + 4),
            Err(RolloutError::Busy(..))
        ));
        assert!(matches!(
            rollouts.command(second.id, "reboot", T0 + 4),
            Err(RolloutError::Invalid(_))
        ));
        assert!(matches!(
            rollouts.command(99, "pause", T0 + 4),
            Err(RolloutError::NotFound(99))
        ));
    }

    #[test]
    fn every_change_is_saved_before_its_effects_go_out() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rollouts) = service(dir.path());
        let started = rollouts.start(plan("1.2.0", &["t1", "t2"]), T0).unwrap();
        {
            let inner = rollouts.inner.locked();
            assert!(
                inner.queued.iter().any(|(id, e)| *id == started.id
                    && matches!(e, Effect::Event(ev) if ev.kind == OtaEventKind::Started)),
                "the start event waits for the service thread, after the save"
            );
        }
        rollouts.command(started.id, "pause", T0 + 1).unwrap();
        let releases = Releases::new(store.clone(), dir.path(), Vec::new(), false);
        let reloaded = load(&store, releases);
        let saved = reloaded.get(started.id).unwrap();
        assert_eq!(
            saved.state,
            RolloutState::Paused,
            "a restart continues paused"
        );
        assert_eq!(saved.plan.targets, ["t1", "t2"]);
    }
}
