//! One boot of a simulated terminal: from the flash to how the boot ends
//! (every press acked, a power cut, a reboot into an update, a crash).
//!
//! [`Boot`] holds what a boot knows; each turn of [`Boot::run`] presses
//! what is due, publishes what the core wants out, heartbeats, serves the
//! OTA receiver, then sleeps until the next event or timer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use embassy_boot::{FirmwareUpdater, FirmwareUpdaterConfig};
use pressline_protocol::heartbeat::HEARTBEAT_BUF_LEN;
use pressline_protocol::ota_transfer::{self, Chunk, OtaCommand, OtaState, SMALL_BUF_LEN};
use pressline_protocol::topic::{
    AckJsonTopic, AckTopic, HeartbeatTopic, OtaChunkTopic, OtaCommandTopic, OtaRequestTopic,
    OtaStatusTopic, PressJsonTopic, PressTopic,
};
use pressline_protocol::{json, press::PRESS_BUF_LEN, Ack, Button, PressId, ResetReason};
use pressline_protocol::{FirmwareVersion, Press};
use pressline_terminal_core::ota::{OtaConfig, OtaReceiver};
use pressline_terminal_core::{
    DeviceStatus, DurableTerminal, Millis, Origin, PressError, SessionCounters,
};
use rand::rngs::SmallRng;
use rand::Rng;
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::link::{self, LinkEvent};
use super::{
    flash_layout, pick_button, publish_counters, release_latencies, BootEnd, SimFlash,
    QUEUE_CAPACITY,
};
use crate::device::{PartitionFlash, UpdateHardware};
use crate::{AckMode, SimConfig, SimCounters, SimIdentity};

type Receiver<'b> = OtaReceiver<'b, &'b mut PartitionFlash, &'b mut PartitionFlash>;

/// The topics of one terminal.
struct Topics {
    ack: String,
    press: String,
    heartbeat: String,
    ota_command: String,
    ota_chunk: String,
    ota_request: String,
    ota_status: String,
}

impl Topics {
    fn of(id: &str, speaks_json: bool) -> Topics {
        Topics {
            ack: if speaks_json {
                AckJsonTopic(id).to_string()
            } else {
                AckTopic(id).to_string()
            },
            press: if speaks_json {
                PressJsonTopic(id).to_string()
            } else {
                PressTopic(id).to_string()
            },
            heartbeat: HeartbeatTopic(id).to_string(),
            ota_command: OtaCommandTopic(id).to_string(),
            ota_chunk: OtaChunkTopic(id).to_string(),
            ota_request: OtaRequestTopic(id).to_string(),
            ota_status: OtaStatusTopic(id).to_string(),
        }
    }
}

/// Where one boot starts from.
pub(super) struct BootStart<'b> {
    pub index: usize,
    pub config: &'b SimConfig,
    pub counters: &'b SimCounters,
    pub flash: &'b mut SimFlash,
    pub remaining: &'b mut Option<u64>,
    pub rng: &'b mut SmallRng,
    /// When the whole run started (its `duration` counts from there).
    pub started: Instant,
    pub reset_reason: ResetReason,
    pub hardware: Option<&'b mut UpdateHardware>,
}

/// One boot in progress.
struct Boot<'b> {
    id: String,
    config: &'b SimConfig,
    counters: &'b SimCounters,
    remaining: &'b mut Option<u64>,
    rng: &'b mut SmallRng,
    run_until: Instant,
    booted: Instant,
    reset_reason: ResetReason,
    terminal: DurableTerminal<&'b mut SimFlash, QUEUE_CAPACITY>,
    ota: Option<Receiver<'b>>,
    /// Where the DFU partition's version is kept for the bootloader model.
    dfu_version_slot: Option<&'b mut Option<FirmwareVersion>>,
    dfu_version: Option<FirmwareVersion>,
    firmware: FirmwareVersion,
    speaks_json: bool,
    identity: Option<SimIdentity>,
    client: AsyncClient,
    topics: Topics,
    puback_mode: bool,
    /// PUBACK mode: presses handed to rumqttc (in order), packet id → press.
    handed_over: VecDeque<PressId>,
    awaiting_puback: HashMap<u16, PressId>,
    /// When each unacked press of this boot was made (for ack latency).
    pressed_at: HashMap<PressId, Instant>,
    reported: SessionCounters,
    press_interval: Option<Duration>,
    next_press: Instant,
    next_heartbeat: Option<Instant>,
    ever_connected: bool,
    stuck: bool,
    weights: [u32; 4],
    battery_mv: u16,
    rssi_dbm: i8,
    /// Power cut: when it strikes, and (once armed) when the terminal is dead.
    power_cut_at: Option<Instant>,
    dead_at: Option<Instant>,
    fails_trial: bool,
    vanishes: bool,
    trial_crash_at: Option<Instant>,
    counted_resumes: u64,
}

/// Runs one boot to its end.
pub(super) async fn run_boot(start: BootStart<'_>, stop: watch::Receiver<bool>) -> BootEnd {
    let BootStart {
        index,
        config,
        counters,
        flash,
        remaining,
        rng,
        started,
        reset_reason,
        hardware,
    } = start;
    let id = config.terminal_id(index);
    // A real board's hardware RNG, not the seeded one: a second run of the
    // simulator is a freshly flashed terminal under the same id.
    let origin = Origin::new(&id, rand::random());
    let mut terminal =
        match DurableTerminal::boot(flash, flash_layout(), config.session, origin).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(terminal = %id, error = ?e, "flash does not boot");
                return BootEnd::Finished(false);
            }
        };
    let mut aligned = [0u8; 4];
    let (ota, dfu_version_slot) =
        boot_ota(&id, config, hardware, &mut aligned, &mut terminal).await;
    let identity = config.identities.get(index).cloned();
    let (client, mut eventloop) =
        AsyncClient::new(link::options(config, &id, identity.as_ref()), 1024);
    // Small request/response messages (acks, OTA chunk requests): without
    // TCP_NODELAY each can wait for the broker's delayed ACK (~40 ms).
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (events_tx, events) = mpsc::channel(1024);
    let puback_mode = config.ack_mode == AckMode::Puback;
    let poller = tokio::spawn(link::drive_eventloop(
        eventloop,
        events_tx,
        rng.gen(),
        puback_mode,
    ));
    let boot = Boot::new(
        index,
        id,
        config,
        counters,
        remaining,
        rng,
        started,
        reset_reason,
        terminal,
        ota,
        dfu_version_slot,
        identity,
        client,
        puback_mode,
    );
    boot.run(stop, events, poller).await
}

/// The OTA receiver over the board's update partitions (when simulated),
/// and where the DFU version is kept.
async fn boot_ota<'b>(
    id: &str,
    config: &SimConfig,
    hardware: Option<&'b mut UpdateHardware>,
    aligned: &'b mut [u8; 4],
    terminal: &mut DurableTerminal<&'b mut SimFlash, QUEUE_CAPACITY>,
) -> (
    Option<Receiver<'b>>,
    Option<&'b mut Option<FirmwareVersion>>,
) {
    let (Some(hw), Some(o)) = (hardware, config.ota.as_ref()) else {
        return (None, None);
    };
    let updater = FirmwareUpdater::new(
        FirmwareUpdaterConfig {
            dfu: &mut hw.dfu,
            state: &mut hw.boot_state,
        },
        aligned,
    );
    let ota_config = OtaConfig {
        public_key: o.public_key,
        board: "pico-w",
        max_image: o.max_image as u32,
        chunk_size: o.chunk_size,
        request_timeout_ms: o.request_timeout_ms,
        progress_step: 5,
    };
    match OtaReceiver::boot(updater, ota_config, hw.active_version, terminal).await {
        Ok(rx) => (Some(rx), Some(&mut hw.dfu_version)),
        Err(e) => {
            tracing::error!(terminal = %id, error = ?e, "OTA receiver does not start");
            (None, Some(&mut hw.dfu_version))
        }
    }
}

/// What serving the OTA receiver asks of the boot loop.
enum OtaTurn {
    /// Carry on with this turn.
    Go,
    /// Start the next turn at once (a trial was just confirmed).
    Again,
    End(BootEnd),
}

impl<'b> Boot<'b> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: usize,
        id: String,
        config: &'b SimConfig,
        counters: &'b SimCounters,
        remaining: &'b mut Option<u64>,
        rng: &'b mut SmallRng,
        started: Instant,
        reset_reason: ResetReason,
        terminal: DurableTerminal<&'b mut SimFlash, QUEUE_CAPACITY>,
        ota: Option<Receiver<'b>>,
        dfu_version_slot: Option<&'b mut Option<FirmwareVersion>>,
        identity: Option<SimIdentity>,
        client: AsyncClient,
        puback_mode: bool,
    ) -> Boot<'b> {
        let firmware = ota.as_ref().map_or(config.firmware, |o| o.running());
        if let Some(rx) = &ota {
            match rx.status().state {
                OtaState::RolledBack => {
                    counters.ota_rolled_back.fetch_add(1, Relaxed);
                }
                OtaState::Rebooting if rx.is_trial() => {
                    tracing::info!(terminal = %id, version = %firmware, "trial boot of the new image");
                }
                _ => {}
            }
        }
        let stuck = config.has_stuck_button(index);
        let press_interval = if stuck {
            Some(Duration::from_millis(50))
        } else {
            (config.rate > 0.0)
                .then(|| Duration::from_secs_f64(config.terminals as f64 / config.rate))
        };
        let battery_mv = if config.has_low_battery(index) {
            3300
        } else {
            3900 + rng.gen_range(0..200)
        };
        let rssi_dbm = -55 - rng.gen_range(0..15i8);
        // Spread terminals over the first interval so they do not press in lockstep.
        let next_press =
            Instant::now() + press_interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.gen::<f64>()));
        let power_cut_at = (config.kill_rate > 0.0).then(|| {
            Instant::now()
                + Duration::from_secs_f64(-rng.gen::<f64>().max(1e-9).ln() / config.kill_rate)
        });
        Boot {
            topics: Topics::of(&id, index < config.json_terminals),
            speaks_json: index < config.json_terminals,
            id,
            config,
            counters,
            remaining,
            rng,
            run_until: started + config.duration,
            booted: Instant::now(),
            reset_reason,
            reported: terminal.counters(),
            terminal,
            ota,
            dfu_version_slot,
            dfu_version: None,
            firmware,
            identity,
            client,
            puback_mode,
            handed_over: VecDeque::new(),
            awaiting_puback: HashMap::new(),
            pressed_at: HashMap::new(),
            press_interval,
            next_press,
            next_heartbeat: None,
            ever_connected: false,
            stuck,
            weights: config.button_weights_of(index),
            battery_mv,
            rssi_dbm,
            power_cut_at,
            dead_at: None,
            fails_trial: config
                .ota
                .as_ref()
                .is_some_and(|o| index < o.fail_trial_boot),
            vanishes: config.ota.as_ref().is_some_and(|o| index < o.vanish),
            trial_crash_at: None,
            counted_resumes: 0,
        }
    }

    /// The terminal core's clock: milliseconds since this boot.
    fn now(&self) -> Millis {
        self.booted.elapsed().as_millis() as Millis
    }

    async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut events: mpsc::Receiver<LinkEvent>,
        poller: JoinHandle<()>,
    ) -> BootEnd {
        let end = loop {
            publish_counters(self.counters, &mut self.reported, self.terminal.counters());
            if *stop.borrow() {
                break BootEnd::Finished(false);
            }
            if let Some(end) = self.power_fails() {
                break end;
            }
            if let Err(end) = self.press_what_is_due().await {
                break end;
            }
            self.transmit();
            self.heartbeat();
            match self.serve_ota().await {
                OtaTurn::Go => {}
                OtaTurn::Again => continue,
                OtaTurn::End(end) => break end,
            }
            if *self.remaining == Some(0)
                && self.terminal.queue_len() == 0
                && Instant::now() >= self.run_until
            {
                break BootEnd::Finished(true);
            }
            let wake = self.next_wake();
            tokio::select! {
                event = events.recv() => match event {
                    None => break BootEnd::Finished(false),
                    Some(event) => {
                        if let Some(end) = self.handle(event).await {
                            break end;
                        }
                    }
                },
                _ = sleep_until(wake) => {}
                _ = stop.changed() => {}
            }
        };
        self.finish(end, poller).await
    }

    /// Arms a power cut when it is due (it strikes inside the next flash
    /// operations, and the terminal dies shortly in any case); the end
    /// once the terminal is dead.
    fn power_fails(&mut self) -> Option<BootEnd> {
        if self.power_cut_at.is_some_and(|at| Instant::now() >= at) {
            let after = self.rng.gen_range(0..40);
            self.terminal.flash_mut().cut_power_after(after);
            self.power_cut_at = None;
            self.dead_at = Some(Instant::now() + Duration::from_millis(200));
        }
        let dead = self.dead_at.is_some_and(|t| Instant::now() >= t)
            || !self.terminal.flash_mut().is_powered();
        dead.then_some(BootEnd::PowerCut)
    }

    /// Presses whatever is due (all at once when unthrottled, as long as
    /// the queue has room: the simulator models visitors, not overflow).
    async fn press_what_is_due(&mut self) -> Result<(), BootEnd> {
        while *self.remaining != Some(0)
            && (self.ever_connected || !self.config.press_once_connected)
            && Instant::now() >= self.next_press
            && self.terminal.queue_len() < self.terminal.queue_capacity()
        {
            let button = if self.stuck {
                Button::VeryUnhappy
            } else {
                let total = self.weights.iter().sum::<u32>().max(1);
                pick_button(self.rng, &self.weights, total)
            };
            let now = self.now();
            match self.terminal.handle_press(now, button).await {
                Ok(press) => {
                    self.counters.presses.fetch_add(1, Relaxed);
                    *self.remaining = self.remaining.map(|r| r - 1);
                    self.pressed_at.insert(press, Instant::now());
                    self.counters.log_press(&self.id, press);
                }
                Err(PressError::Full) => {}
                // Power died under the press: it was never confirmed.
                Err(PressError::Storage(_)) => return Err(BootEnd::PowerCut),
            }
            if let Some(interval) = self.press_interval {
                self.next_press += interval;
            }
        }
        Ok(())
    }

    /// Publishes whatever the session wants out (signed when registered;
    /// now and then twice, as a flaky network does).
    fn transmit(&mut self) {
        while let Some(mut press) = self.terminal.poll_transmit(self.now()) {
            if let Some(identity) = &self.identity {
                press.mac = Some(pressline_protocol::auth::press_mac(
                    &identity.secret,
                    &self.id,
                    press.id,
                    press.button,
                ));
            }
            let Some(payload) = self.encode(&press) else {
                continue;
            };
            let twice = self.config.dup_rate > 0.0 && self.rng.gen::<f64>() < self.config.dup_rate;
            for _ in 0..1 + usize::from(twice) {
                // A full request channel is like a lost packet: the ack
                // timeout brings the press round again.
                let handed = self
                    .client
                    .try_publish(
                        self.topics.press.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .is_ok();
                if handed && self.puback_mode {
                    self.handed_over.push_back(press.id);
                }
            }
            if twice {
                self.counters.deliberate_duplicates.fetch_add(1, Relaxed);
            }
        }
    }

    fn encode(&self, press: &Press) -> Option<Vec<u8>> {
        if self.speaks_json {
            return Some(json::encode_press(&self.id, press));
        }
        let mut buf = [0u8; PRESS_BUF_LEN];
        press.encode(&mut buf).ok().map(|bytes| bytes.to_vec())
    }

    /// Says hello at connect, then every `heartbeat`.
    fn heartbeat(&mut self) {
        if !self.terminal.is_connected()
            || !self.next_heartbeat.is_some_and(|t| Instant::now() >= t)
        {
            return;
        }
        let device = DeviceStatus {
            firmware: self.firmware,
            battery_mv: Some(self.battery_mv),
            rssi_dbm: Some(self.rssi_dbm),
            reset_reason: self.reset_reason,
            unix_time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
        };
        let hb = self.terminal.heartbeat(self.now(), device);
        let mut buf = [0u8; HEARTBEAT_BUF_LEN];
        let encoded = match &self.identity {
            Some(identity) => hb.encode_signed(&identity.secret, &self.id, &mut buf),
            None => hb.encode(&mut buf),
        };
        if let Ok(bytes) = encoded {
            let _ = self.client.try_publish(
                self.topics.heartbeat.as_str(),
                QoS::AtMostOnce,
                false,
                bytes.to_vec(),
            );
        }
        self.next_heartbeat = Some(Instant::now() + self.config.heartbeat);
    }

    /// Chunk requests and status reports out; a verified update reboots;
    /// a trial image is confirmed once connected (or crashes first, when
    /// told to fail its trial).
    async fn serve_ota(&mut self) -> OtaTurn {
        let now = self.now();
        let Some(rx) = self.ota.as_mut() else {
            return OtaTurn::Go;
        };
        while let Some(request) = rx.poll_request(now) {
            let mut buf = [0u8; SMALL_BUF_LEN];
            if let Ok(bytes) = ota_transfer::encode(&request, &mut buf) {
                let topic = self.topics.ota_request.as_str();
                let _ = self
                    .client
                    .try_publish(topic, QoS::AtMostOnce, false, bytes.to_vec());
            }
        }
        // Say "verifying" before the (slow) check, then the outcome.
        for pass in 0..2 {
            self.report_ota_status();
            let rx = self.ota.as_mut().expect("checked above");
            if pass == 0 && rx.needs_verify() && rx.verify(&mut self.terminal).await.is_err() {
                return OtaTurn::End(BootEnd::PowerCut);
            }
        }
        let rx = self.ota.as_mut().expect("checked above");
        let resumes = rx.counters().resumes;
        if resumes > self.counted_resumes {
            let new = resumes - self.counted_resumes;
            self.counters.ota_resumes.fetch_add(new, Relaxed);
            self.counted_resumes = resumes;
        }
        if rx.wants_reboot() {
            // What the DFU partition now holds, for the bootloader model.
            self.dfu_version = rx.record().map(|r| r.target);
            return OtaTurn::End(BootEnd::Reboot);
        }
        if !rx.is_trial() || !self.terminal.is_connected() {
            return OtaTurn::Go;
        }
        if self.fails_trial {
            // The new image crashes before it is healthy.
            let at = *self
                .trial_crash_at
                .get_or_insert(Instant::now() + Duration::from_millis(300));
            return if Instant::now() >= at {
                OtaTurn::End(BootEnd::Crash)
            } else {
                OtaTurn::Go
            };
        }
        if rx.confirm(&mut self.terminal).await.is_ok() {
            self.counters.ota_confirmed.fetch_add(1, Relaxed);
            tracing::info!(terminal = %self.id, version = %rx.running(), "new firmware confirmed");
            return OtaTurn::Again;
        }
        OtaTurn::Go
    }

    fn report_ota_status(&mut self) {
        let Some(rx) = self.ota.as_mut() else {
            return;
        };
        while let Some(status) = rx.poll_status() {
            if status.state == OtaState::Failed {
                self.counters.ota_failed.fetch_add(1, Relaxed);
                tracing::warn!(terminal = %self.id, failure = ?status.failure, "update failed");
            }
            let mut buf = [0u8; SMALL_BUF_LEN];
            if let Ok(bytes) = ota_transfer::encode(&status, &mut buf) {
                let topic = self.topics.ota_status.as_str();
                let _ = self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, false, bytes.to_vec());
            }
        }
    }

    /// The earliest of every timer this boot has running.
    fn next_wake(&self) -> Instant {
        let booted = self.booted;
        let mut wake = self
            .terminal
            .poll_timeout()
            .map(|ms| booted + Duration::from_millis(ms));
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
        let queue_has_room = self.terminal.queue_len() < self.terminal.queue_capacity();
        if *self.remaining != Some(0) && queue_has_room {
            at(self.next_press);
        }
        if let Some(t) = self.next_heartbeat.filter(|_| self.terminal.is_connected()) {
            at(t);
        }
        if *self.remaining == Some(0) && self.terminal.queue_len() == 0 {
            at(self.run_until);
        }
        if let Some(t) = self.power_cut_at.or(self.dead_at) {
            at(t);
        }
        if let Some(ms) = self.ota.as_ref().and_then(|o| o.poll_timeout()) {
            at(booted + Duration::from_millis(ms));
        }
        if let Some(t) = self.trial_crash_at {
            at(t);
        }
        wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// One event from the connection; the end of the boot, if it ends.
    async fn handle(&mut self, event: LinkEvent) -> Option<BootEnd> {
        match event {
            LinkEvent::ConnAck => self.subscribe(),
            LinkEvent::SubAck => self.connected(),
            LinkEvent::Publish { topic, payload } => {
                if topic == self.topics.ack && !self.puback_mode {
                    return self.handle_ack(&payload).await;
                } else if topic == self.topics.ota_command {
                    return self.handle_ota_command(&payload).await;
                } else if topic == self.topics.ota_chunk {
                    return self.handle_chunk(&payload).await;
                }
            }
            LinkEvent::Sent(pkid) => {
                if let Some(id) = self.handed_over.pop_front() {
                    self.awaiting_puback.insert(pkid, id);
                }
            }
            LinkEvent::PubAck(pkid) => {
                let id = self.awaiting_puback.remove(&pkid)?;
                let ack = Ack {
                    boot: id.boot,
                    first_seq: id.seq,
                    last_seq: id.seq,
                };
                return self.release(&ack).await;
            }
            LinkEvent::Down => {
                self.handed_over.clear();
                self.awaiting_puback.clear();
                let now = self.now();
                self.terminal.handle_disconnected(now);
                if let Some(rx) = self.ota.as_mut() {
                    rx.handle_disconnected(now);
                }
            }
        }
        None
    }

    /// One SUBSCRIBE (so one SUBACK) for everything.
    fn subscribe(&mut self) {
        let mut filters = vec![rumqttc::SubscribeFilter::new(
            self.topics.ack.clone(),
            QoS::AtLeastOnce,
        )];
        if self.ota.is_some() {
            for topic in [&self.topics.ota_command, &self.topics.ota_chunk] {
                filters.push(rumqttc::SubscribeFilter::new(
                    topic.clone(),
                    QoS::AtLeastOnce,
                ));
            }
        }
        let _ = self.client.try_subscribe_many(filters);
    }

    fn connected(&mut self) {
        if self.ever_connected {
            self.counters.reconnects.fetch_add(1, Relaxed);
        } else {
            self.counters.connected.fetch_add(1, Relaxed);
            if self.config.press_once_connected {
                self.next_press = Instant::now()
                    + self
                        .press_interval
                        .map_or(Duration::ZERO, |i| i.mul_f64(self.rng.gen::<f64>()));
            }
        }
        self.ever_connected = true;
        let now = self.now();
        self.terminal.handle_connected(now);
        if let Some(rx) = self.ota.as_mut() {
            rx.handle_connected(now);
        }
        // Say hello at once, then periodically.
        self.next_heartbeat = Some(Instant::now());
    }

    async fn handle_ack(&mut self, payload: &[u8]) -> Option<BootEnd> {
        let ack = if self.speaks_json {
            json::decode_ack(payload)
        } else {
            Ack::decode(payload)
        };
        match ack {
            Ok(ack) => self.release(&ack).await,
            Err(e) => {
                tracing::warn!(terminal = %self.id, error = %e, "undecodable ack");
                None
            }
        }
    }

    /// The presses an ack covers leave the queue (a flash write).
    async fn release(&mut self, ack: &Ack) -> Option<BootEnd> {
        release_latencies(&mut self.pressed_at, ack, self.counters);
        let now = self.now();
        self.terminal
            .handle_ack(now, ack)
            .await
            .is_err()
            .then_some(BootEnd::PowerCut)
    }

    async fn handle_ota_command(&mut self, payload: &[u8]) -> Option<BootEnd> {
        let now = self.now();
        let rx = self.ota.as_mut()?;
        match ota_transfer::decode::<OtaCommand>(payload) {
            Ok(OtaCommand::Offer(offer)) => {
                if self.vanishes {
                    self.counters.ota_vanished.fetch_add(1, Relaxed);
                    tracing::warn!(terminal = %self.id, "vanishing (fault injection)");
                    return Some(BootEnd::Vanished);
                }
                if rx
                    .handle_offer(now, &offer, &mut self.terminal)
                    .await
                    .is_err()
                {
                    return Some(BootEnd::PowerCut);
                }
            }
            Ok(OtaCommand::Cancel { rollout }) => rx.handle_cancel(rollout),
            Err(e) => tracing::warn!(terminal = %self.id, error = %e, "undecodable OTA command"),
        }
        None
    }

    /// A firmware chunk, damaged on purpose now and then; a power cut
    /// after some written chunks (fault injection).
    async fn handle_chunk(&mut self, payload: &[u8]) -> Option<BootEnd> {
        let now = self.now();
        let o = self.config.ota.as_ref()?;
        let rx = self.ota.as_mut()?;
        let chunk = match ota_transfer::decode::<Chunk>(payload) {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(terminal = %self.id, error = %e, "undecodable OTA chunk");
                return None;
            }
        };
        let written_before = rx.record().map(|r| r.written);
        let damaged;
        let chunk = if o.corrupt_rate > 0.0
            && self.rng.gen::<f64>() < o.corrupt_rate
            && !chunk.data.is_empty()
        {
            let mut data = chunk.data.to_vec();
            let at = self.rng.gen_range(0..data.len());
            data[at] ^= 0x5A;
            damaged = data;
            Chunk {
                data: &damaged,
                ..chunk
            }
        } else {
            chunk
        };
        if rx
            .handle_chunk(now, &chunk, &mut self.terminal)
            .await
            .is_err()
        {
            return Some(BootEnd::PowerCut);
        }
        if rx.record().map(|r| r.written) > written_before {
            self.counters
                .ota_bytes
                .fetch_add(chunk.data.len() as u64, Relaxed);
            if o.interrupt_rate > 0.0 && self.rng.gen::<f64>() < o.interrupt_rate {
                self.counters.ota_interruptions.fetch_add(1, Relaxed);
                return Some(BootEnd::PowerCut);
            }
        } else if !chunk.is_intact() {
            self.counters.ota_damaged_chunks.fetch_add(1, Relaxed);
        }
        None
    }

    /// Leaves the boot: a clean disconnect for a deliberate end, a dead
    /// socket when the power goes (the broker publishes the last will).
    async fn finish(mut self, end: BootEnd, poller: JoinHandle<()>) -> BootEnd {
        publish_counters(self.counters, &mut self.reported, self.terminal.counters());
        drop(self.ota.take());
        if let (Some(slot), Some(version)) = (self.dfu_version_slot.take(), self.dfu_version) {
            *slot = Some(version);
        }
        match end {
            BootEnd::PowerCut | BootEnd::Crash | BootEnd::Vanished => {
                // No DISCONNECT: the socket just dies, as when power goes.
                poller.abort();
            }
            BootEnd::Finished(_) | BootEnd::Reboot => {
                let _ = self.client.try_disconnect();
                // Give the disconnect a moment to go out, then stop the event loop.
                let _ = tokio::time::timeout(Duration::from_millis(500), poller).await;
            }
        }
        end
    }
}
