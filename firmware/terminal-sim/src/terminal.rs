//! One simulated terminal: the real durable terminal core (queue and boot
//! counter in a RAM flash) driven by a timer and an MQTT connection.
//!
//! The rumqttc event loop runs in its own task and hands events over a
//! channel. `EventLoop::poll` is never raced in a `select!`: cancelling it in
//! the middle of a write would corrupt the stream.
//!
//! With a kill rate, a terminal loses power at random moments: a power cut
//! is armed inside its next flash operations, its connection drops without
//! an MQTT DISCONNECT (so the broker publishes its last will), its RAM is
//! gone, and it boots again from what the flash holds.
//!
//! With a release key ([`crate::SimOta`]), a terminal also runs the real
//! OTA receiver over simulated update partitions ([`crate::device`]):
//! embassy-boot swaps the image in at the next boot, the terminal confirms
//! once connected (or, when told to fail its trial boot, crashes first and
//! is reverted), and faults can be injected (power loss after a chunk,
//! damaged chunks, vanishing).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use embassy_boot::{FirmwareUpdater, FirmwareUpdaterConfig};
use pressline_protocol::heartbeat::{HEARTBEAT_BUF_LEN, WILL_OFFLINE};
use pressline_protocol::ota_transfer::{self, Chunk, OtaCommand, OtaState, SMALL_BUF_LEN};
use pressline_protocol::topic::{
    AckJsonTopic, AckTopic, HeartbeatTopic, OtaChunkTopic, OtaCommandTopic, OtaRequestTopic,
    OtaStatusTopic, PressJsonTopic, PressTopic, TerminalStatusTopic,
};
use pressline_protocol::{json, press::PRESS_BUF_LEN, Ack, Button, PressId, ResetReason};
use pressline_terminal_core::ota::{OtaConfig, OtaReceiver};
use pressline_terminal_core::ram_flash::RamFlash;
use pressline_terminal_core::{
    DeviceStatus, DurableTerminal, FlashLayout, Millis, PressError, SessionCounters,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::device::{BootAction, UpdateHardware};
use crate::{AckMode, SimConfig, SimCounters};

/// Queue capacity of a simulated terminal (in RAM; the flash holds more).
pub const QUEUE_CAPACITY: usize = 1024;
/// A simulated terminal's flash: 64 KiB in 4 KiB pages.
pub type SimFlash = RamFlash<{ 64 * 1024 }, 4096>;

/// Flash layout of a simulated terminal: 2 state pages, 14 queue pages.
pub fn flash_layout() -> FlashLayout {
    FlashLayout {
        state: 0..8192,
        queue: 8192..65536,
    }
}

/// What the event-loop task tells the terminal.
enum LinkEvent {
    ConnAck,
    SubAck,
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// A publish went out with this packet id (PUBACK mode only).
    Sent(u16),
    /// The broker PUBACKed this packet id (PUBACK mode only).
    PubAck(u16),
    Down,
}

/// How one boot of a terminal ended.
enum BootEnd {
    /// Every press made and acked (true), or stopped early (false).
    Finished(bool),
    /// Power was cut: boot again from flash.
    PowerCut,
    /// A deliberate reset (to install an update): disconnect cleanly first.
    Reboot,
    /// A crash (a new image failing its trial): no clean disconnect.
    Crash,
    /// Gone for good (fault injection).
    Vanished,
}

/// Runs terminal `index` to completion. Returns whether every press it made
/// was acked (false when stopped early).
pub async fn run(
    index: usize,
    config: Arc<SimConfig>,
    counters: Arc<SimCounters>,
    stop: watch::Receiver<bool>,
) -> bool {
    let mut rng = SmallRng::seed_from_u64(
        config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64),
    );
    let mut flash = Box::new(SimFlash::new());
    let mut hardware = config
        .ota
        .as_ref()
        .map(|o| UpdateHardware::new(o.max_image, config.firmware));
    let mut remaining = config.presses;
    let started = Instant::now();
    let mut reset_reason = ResetReason::PowerOn;
    loop {
        if let Some(hw) = hardware.as_mut() {
            match hw.run_bootloader() {
                Ok(BootAction::Swapped) => {
                    tracing::info!(terminal = %config.terminal_id(index), version = %hw.active_version, "bootloader: swapped in the new image for a trial boot");
                    reset_reason = ResetReason::FirmwareUpdate;
                }
                Ok(BootAction::Reverted) => {
                    tracing::warn!(terminal = %config.terminal_id(index), version = %hw.active_version, "bootloader: trial not confirmed, previous image restored");
                }
                Ok(BootAction::None) => {}
                Err(e) => {
                    tracing::error!(terminal = %config.terminal_id(index), error = ?e, "bootloader failed");
                    return false;
                }
            }
        }
        let end = run_boot(
            index,
            &config,
            &counters,
            stop.clone(),
            &mut flash,
            &mut remaining,
            &mut rng,
            started,
            reset_reason,
            hardware.as_mut(),
        )
        .await;
        match end {
            BootEnd::Finished(done) => return done,
            BootEnd::Vanished => return false,
            BootEnd::PowerCut => {
                counters.power_cuts.fetch_add(1, Relaxed);
                flash.power_cycle();
                reset_reason = ResetReason::Brownout;
            }
            BootEnd::Reboot => reset_reason = ResetReason::Software,
            BootEnd::Crash => reset_reason = ResetReason::Watchdog,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_boot(
    index: usize,
    config: &SimConfig,
    counters: &SimCounters,
    mut stop: watch::Receiver<bool>,
    flash: &mut SimFlash,
    remaining: &mut Option<u64>,
    rng: &mut SmallRng,
    started: Instant,
    reset_reason: ResetReason,
    hardware: Option<&mut UpdateHardware>,
) -> BootEnd {
    let id = config.terminal_id(index);
    let speaks_json = index < config.json_terminals;
    let mut terminal: DurableTerminal<&mut SimFlash, QUEUE_CAPACITY> =
        match DurableTerminal::boot(flash, flash_layout(), config.session).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(terminal = %id, error = ?e, "flash does not boot");
                return BootEnd::Finished(false);
            }
        };
    let booted = Instant::now();
    let now = move || -> Millis { booted.elapsed().as_millis() as Millis };

    // The OTA receiver over the board's update partitions (when simulated).
    let mut aligned = [0u8; 4];
    let mut dfu_version = None;
    let (mut ota, dfu_version_slot) = match (hardware, config.ota.as_ref()) {
        (Some(hw), Some(o)) => {
            let updater = FirmwareUpdater::new(
                FirmwareUpdaterConfig {
                    dfu: &mut hw.dfu,
                    state: &mut hw.boot_state,
                },
                &mut aligned,
            );
            let ota_config = OtaConfig {
                public_key: o.public_key,
                board: "pico-w",
                max_image: o.max_image as u32,
                chunk_size: o.chunk_size,
                request_timeout_ms: o.request_timeout_ms,
                progress_step: 5,
            };
            match OtaReceiver::boot(updater, ota_config, hw.active_version, &mut terminal).await {
                Ok(rx) => (Some(rx), Some(&mut hw.dfu_version)),
                Err(e) => {
                    tracing::error!(terminal = %id, error = ?e, "OTA receiver does not start");
                    (None, Some(&mut hw.dfu_version))
                }
            }
        }
        _ => (None, None),
    };
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
    let fails_trial = config
        .ota
        .as_ref()
        .is_some_and(|o| index < o.fail_trial_boot);
    let vanishes = config.ota.as_ref().is_some_and(|o| index < o.vanish);
    let mut trial_crash_at: Option<Instant> = None;
    let mut counted_resumes = 0;

    let mut options = MqttOptions::new(&id, &config.broker_host, config.broker_port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(true);
    let identity = config.identities.get(index).cloned();
    if let Some(identity) = &identity {
        options.set_credentials(
            id.as_str(),
            pressline_protocol::auth::mqtt_password(&identity.secret).as_str(),
        );
    }
    options.set_last_will(LastWill::new(
        TerminalStatusTopic(&id).to_string(),
        WILL_OFFLINE,
        QoS::AtLeastOnce,
        false,
    ));
    if let Some(tls) = &config.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // Small request/response messages (acks, OTA chunk requests): without
    // TCP_NODELAY each can wait for the broker's delayed ACK (~40 ms).
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (events_tx, mut events) = mpsc::channel(1024);
    let puback_mode = config.ack_mode == AckMode::Puback;
    let poller = tokio::spawn(drive_eventloop(
        eventloop,
        events_tx,
        rng.gen(),
        puback_mode,
    ));
    // PUBACK mode: presses handed to rumqttc (in order) and packet id → press.
    let mut handed_over: VecDeque<PressId> = VecDeque::new();
    let mut awaiting_puback: HashMap<u16, PressId> = HashMap::new();

    let ack_topic = if speaks_json {
        AckJsonTopic(&id).to_string()
    } else {
        AckTopic(&id).to_string()
    };
    let press_topic = if speaks_json {
        PressJsonTopic(&id).to_string()
    } else {
        PressTopic(&id).to_string()
    };
    let heartbeat_topic = HeartbeatTopic(&id).to_string();
    let ota_command_topic = OtaCommandTopic(&id).to_string();
    let ota_chunk_topic = OtaChunkTopic(&id).to_string();
    let ota_request_topic = OtaRequestTopic(&id).to_string();
    let ota_status_topic = OtaStatusTopic(&id).to_string();

    let stuck = config.has_stuck_button(index);
    let press_interval = if stuck {
        Some(Duration::from_millis(50))
    } else {
        (config.rate > 0.0).then(|| Duration::from_secs_f64(config.terminals as f64 / config.rate))
    };
    let battery_mv = if config.has_low_battery(index) {
        3300
    } else {
        3900 + rng.gen_range(0..200)
    };
    let rssi_dbm = -55 - rng.gen_range(0..15i8);
    let run_until = started + config.duration;
    // Spread terminals over the first interval so they do not press in lockstep.
    let mut next_press =
        Instant::now() + press_interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.gen::<f64>()));
    let mut next_heartbeat: Option<Instant> = None;
    let mut ever_connected = false;
    let weights = config.button_weights_of(index);
    let total_weight: u32 = weights.iter().sum::<u32>().max(1);
    // Power cut: when it strikes, and (once armed) when the terminal is dead.
    let mut power_cut_at = (config.kill_rate > 0.0).then(|| {
        Instant::now()
            + Duration::from_secs_f64(-rng.gen::<f64>().max(1e-9).ln() / config.kill_rate)
    });
    let mut dead_at: Option<Instant> = None;
    // When each unacked press of this boot was made (for ack latency).
    let mut pressed_at: HashMap<PressId, Instant> = HashMap::new();
    let mut reported = terminal.counters();
    let device = |reset_reason| DeviceStatus {
        firmware,
        battery_mv: Some(battery_mv),
        rssi_dbm: Some(rssi_dbm),
        reset_reason,
        unix_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64),
    };

    let end = 'boot: loop {
        publish_counters(counters, &mut reported, terminal.counters());
        if *stop.borrow() {
            break BootEnd::Finished(false);
        }
        if let Some(at) = power_cut_at.filter(|at| Instant::now() >= *at) {
            // Arm a cut inside the next flash operations, and die shortly
            // in any case.
            let _ = at;
            terminal.flash_mut().cut_power_after(rng.gen_range(0..40));
            power_cut_at = None;
            dead_at = Some(Instant::now() + Duration::from_millis(200));
        }
        if dead_at.is_some_and(|t| Instant::now() >= t) || !terminal.flash_mut().is_powered() {
            break BootEnd::PowerCut;
        }
        // Press whatever is due (all at once when unthrottled, as long as the
        // queue has room: the simulator models visitors, not overflow).
        while *remaining != Some(0)
            && (ever_connected || !config.press_once_connected)
            && Instant::now() >= next_press
            && terminal.queue_len() < terminal.queue_capacity()
        {
            let button = if stuck {
                Button::VeryUnhappy
            } else {
                pick_button(rng, &weights, total_weight)
            };
            match terminal.handle_press(now(), button).await {
                Ok(press) => {
                    counters.presses.fetch_add(1, Relaxed);
                    *remaining = remaining.map(|r| r - 1);
                    pressed_at.insert(press, Instant::now());
                    counters.log_press(&id, press);
                }
                Err(PressError::Full) => {}
                // Power died under the press: it was never confirmed.
                Err(PressError::Storage(_)) => break 'boot BootEnd::PowerCut,
            }
            if let Some(interval) = press_interval {
                next_press += interval;
            }
        }
        // Publish whatever the session wants out.
        while let Some(mut press) = terminal.poll_transmit(now()) {
            if let Some(identity) = &identity {
                press.mac = Some(pressline_protocol::auth::press_mac(
                    &identity.secret,
                    &id,
                    press.id,
                    press.button,
                ));
            }
            let payload = if speaks_json {
                json::encode_press(&id, &press)
            } else {
                let mut buf = [0u8; PRESS_BUF_LEN];
                match press.encode(&mut buf) {
                    Ok(bytes) => bytes.to_vec(),
                    Err(_) => continue,
                }
            };
            let copies = if config.dup_rate > 0.0 && rng.gen::<f64>() < config.dup_rate {
                2
            } else {
                1
            };
            for _ in 0..copies {
                // A full request channel is like a lost packet: the ack
                // timeout brings the press round again.
                let handed = client
                    .try_publish(
                        press_topic.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .is_ok();
                if handed && puback_mode {
                    handed_over.push_back(press.id);
                }
            }
            if copies == 2 {
                counters.deliberate_duplicates.fetch_add(1, Relaxed);
            }
        }
        if terminal.is_connected() && next_heartbeat.is_some_and(|t| Instant::now() >= t) {
            let hb = terminal.heartbeat(now(), device(reset_reason));
            let mut buf = [0u8; HEARTBEAT_BUF_LEN];
            let encoded = match &identity {
                Some(identity) => hb.encode_signed(&identity.secret, &id, &mut buf),
                None => hb.encode(&mut buf),
            };
            if let Ok(bytes) = encoded {
                let _ = client.try_publish(
                    heartbeat_topic.as_str(),
                    QoS::AtMostOnce,
                    false,
                    bytes.to_vec(),
                );
            }
            next_heartbeat = Some(Instant::now() + config.heartbeat);
        }
        if let Some(rx) = ota.as_mut() {
            let t = now();
            while let Some(request) = rx.poll_request(t) {
                let mut buf = [0u8; SMALL_BUF_LEN];
                if let Ok(bytes) = ota_transfer::encode(&request, &mut buf) {
                    let _ = client.try_publish(
                        ota_request_topic.as_str(),
                        QoS::AtMostOnce,
                        false,
                        bytes.to_vec(),
                    );
                }
            }
            // Say "verifying" before the (slow) check, then the outcome.
            for pass in 0..2 {
                while let Some(status) = rx.poll_status() {
                    match status.state {
                        OtaState::Failed => {
                            counters.ota_failed.fetch_add(1, Relaxed);
                            tracing::warn!(terminal = %id, failure = ?status.failure, "update failed");
                        }
                        _ => {}
                    }
                    let mut buf = [0u8; SMALL_BUF_LEN];
                    if let Ok(bytes) = ota_transfer::encode(&status, &mut buf) {
                        let _ = client.try_publish(
                            ota_status_topic.as_str(),
                            QoS::AtLeastOnce,
                            false,
                            bytes.to_vec(),
                        );
                    }
                }
                if pass == 0 && rx.needs_verify() && rx.verify(&mut terminal).await.is_err() {
                    break 'boot BootEnd::PowerCut;
                }
            }
            let resumes = rx.counters().resumes;
            if resumes > counted_resumes {
                counters
                    .ota_resumes
                    .fetch_add(resumes - counted_resumes, Relaxed);
                counted_resumes = resumes;
            }
            if rx.wants_reboot() {
                // What the DFU partition now holds, for the bootloader model.
                dfu_version = rx.record().map(|r| r.target);
                break BootEnd::Reboot;
            }
            if rx.is_trial() && terminal.is_connected() {
                if fails_trial {
                    // The new image crashes before it is healthy.
                    let at =
                        *trial_crash_at.get_or_insert(Instant::now() + Duration::from_millis(300));
                    if Instant::now() >= at {
                        break BootEnd::Crash;
                    }
                } else if rx.confirm(&mut terminal).await.is_ok() {
                    counters.ota_confirmed.fetch_add(1, Relaxed);
                    tracing::info!(terminal = %id, version = %rx.running(), "new firmware confirmed");
                    continue;
                }
            }
        }
        if *remaining == Some(0) && terminal.queue_len() == 0 && Instant::now() >= run_until {
            break BootEnd::Finished(true);
        }

        let mut wake = terminal
            .poll_timeout()
            .map(|ms| booted + Duration::from_millis(ms));
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
        if *remaining != Some(0) && terminal.queue_len() < terminal.queue_capacity() {
            at(next_press);
        }
        if let Some(t) = next_heartbeat.filter(|_| terminal.is_connected()) {
            at(t);
        }
        if *remaining == Some(0) && terminal.queue_len() == 0 {
            at(run_until);
        }
        if let Some(t) = power_cut_at.or(dead_at) {
            at(t);
        }
        if let Some(ms) = ota.as_ref().and_then(|o| o.poll_timeout()) {
            at(booted + Duration::from_millis(ms));
        }
        if let Some(t) = trial_crash_at {
            at(t);
        }
        let wake = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));

        tokio::select! {
            event = events.recv() => match event {
                None => break BootEnd::Finished(false),
                Some(LinkEvent::ConnAck) => {
                    // One SUBSCRIBE (so one SUBACK) for everything.
                    let mut filters = vec![rumqttc::SubscribeFilter::new(ack_topic.clone(), QoS::AtLeastOnce)];
                    if ota.is_some() {
                        filters.push(rumqttc::SubscribeFilter::new(ota_command_topic.clone(), QoS::AtLeastOnce));
                        filters.push(rumqttc::SubscribeFilter::new(ota_chunk_topic.clone(), QoS::AtLeastOnce));
                    }
                    let _ = client.try_subscribe_many(filters);
                }
                Some(LinkEvent::SubAck) => {
                    if ever_connected {
                        counters.reconnects.fetch_add(1, Relaxed);
                    } else {
                        counters.connected.fetch_add(1, Relaxed);
                        if config.press_once_connected {
                            next_press = Instant::now()
                                + press_interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.gen::<f64>()));
                        }
                    }
                    ever_connected = true;
                    terminal.handle_connected(now());
                    if let Some(rx) = ota.as_mut() {
                        rx.handle_connected(now());
                    }
                    // Say hello at once, then periodically.
                    next_heartbeat = Some(Instant::now());
                }
                Some(LinkEvent::Publish { topic, payload }) if topic == ack_topic && !puback_mode => {
                    let ack = if speaks_json { json::decode_ack(&payload) } else { Ack::decode(&payload) };
                    match ack {
                        Ok(ack) => {
                            release_latencies(&mut pressed_at, &ack, counters);
                            if terminal.handle_ack(now(), &ack).await.is_err() {
                                break BootEnd::PowerCut;
                            }
                        }
                        Err(e) => tracing::warn!(terminal = %id, error = %e, "undecodable ack"),
                    }
                }
                Some(LinkEvent::Publish { topic, payload }) if topic == ota_command_topic => {
                    let Some(rx) = ota.as_mut() else { continue };
                    match ota_transfer::decode::<OtaCommand>(&payload) {
                        Ok(OtaCommand::Offer(offer)) => {
                            if vanishes {
                                counters.ota_vanished.fetch_add(1, Relaxed);
                                tracing::warn!(terminal = %id, "vanishing (fault injection)");
                                break BootEnd::Vanished;
                            }
                            if rx.handle_offer(now(), &offer, &mut terminal).await.is_err() {
                                break BootEnd::PowerCut;
                            }
                        }
                        Ok(OtaCommand::Cancel { rollout }) => rx.handle_cancel(rollout),
                        Err(e) => tracing::warn!(terminal = %id, error = %e, "undecodable OTA command"),
                    }
                }
                Some(LinkEvent::Publish { topic, payload }) if topic == ota_chunk_topic => {
                    let Some(rx) = ota.as_mut() else { continue };
                    let o = config.ota.as_ref().expect("an OTA receiver implies OTA config");
                    match ota_transfer::decode::<Chunk>(&payload) {
                        Ok(chunk) => {
                            let written_before = rx.record().map(|r| r.written);
                            let damaged;
                            let chunk = if o.corrupt_rate > 0.0 && rng.gen::<f64>() < o.corrupt_rate && !chunk.data.is_empty() {
                                let mut data = chunk.data.to_vec();
                                let at = rng.gen_range(0..data.len());
                                data[at] ^= 0x5A;
                                damaged = data;
                                Chunk { data: &damaged, ..chunk }
                            } else {
                                chunk
                            };
                            if rx.handle_chunk(now(), &chunk, &mut terminal).await.is_err() {
                                break BootEnd::PowerCut;
                            }
                            let written_after = rx.record().map(|r| r.written);
                            if written_after > written_before {
                                counters.ota_bytes.fetch_add(chunk.data.len() as u64, Relaxed);
                                if o.interrupt_rate > 0.0 && rng.gen::<f64>() < o.interrupt_rate {
                                    counters.ota_interruptions.fetch_add(1, Relaxed);
                                    break BootEnd::PowerCut;
                                }
                            } else if !chunk.is_intact() {
                                counters.ota_damaged_chunks.fetch_add(1, Relaxed);
                            }
                        }
                        Err(e) => tracing::warn!(terminal = %id, error = %e, "undecodable OTA chunk"),
                    }
                }
                Some(LinkEvent::Publish { .. }) => {}
                Some(LinkEvent::Sent(pkid)) => {
                    if let Some(id) = handed_over.pop_front() {
                        awaiting_puback.insert(pkid, id);
                    }
                }
                Some(LinkEvent::PubAck(pkid)) => {
                    if let Some(id) = awaiting_puback.remove(&pkid) {
                        let ack = Ack { boot: id.boot, first_seq: id.seq, last_seq: id.seq };
                        release_latencies(&mut pressed_at, &ack, counters);
                        if terminal.handle_ack(now(), &ack).await.is_err() {
                            break BootEnd::PowerCut;
                        }
                    }
                }
                Some(LinkEvent::Down) => {
                    handed_over.clear();
                    awaiting_puback.clear();
                    terminal.handle_disconnected(now());
                    if let Some(rx) = ota.as_mut() {
                        rx.handle_disconnected(now());
                    }
                }
            },
            _ = sleep_until(wake) => {}
            _ = stop.changed() => {}
        }
    };
    publish_counters(counters, &mut reported, terminal.counters());
    drop(ota);
    if let (Some(slot), Some(version)) = (dfu_version_slot, dfu_version) {
        *slot = Some(version);
    }
    match end {
        BootEnd::PowerCut | BootEnd::Crash | BootEnd::Vanished => {
            // No DISCONNECT: the socket just dies, as when power goes.
            poller.abort();
            drop(client);
        }
        BootEnd::Finished(_) | BootEnd::Reboot => {
            let _ = client.try_disconnect();
            // Give the disconnect a moment to go out, then stop the event loop.
            let _ = tokio::time::timeout(Duration::from_millis(500), poller).await;
        }
    }
    end
}

/// Records press-to-release latency for the presses an ack covers (each
/// once: a repeated ack finds nothing left to time).
fn release_latencies(
    pressed_at: &mut HashMap<PressId, Instant>,
    ack: &Ack,
    counters: &SimCounters,
) {
    if ack.last_seq < ack.first_seq {
        return;
    }
    let now = Instant::now();
    let span = u64::from(ack.last_seq - ack.first_seq) + 1;
    if span as usize > pressed_at.len() {
        pressed_at.retain(|id, at| {
            let covered = ack.covers(*id);
            if covered {
                counters.record_ack_latency(now - *at);
            }
            !covered
        });
    } else {
        for seq in ack.first_seq..=ack.last_seq {
            if let Some(at) = pressed_at.remove(&PressId {
                boot: ack.boot,
                seq,
            }) {
                counters.record_ack_latency(now - at);
            }
        }
    }
}

/// Adds what changed since the last report to the shared counters.
fn publish_counters(counters: &SimCounters, reported: &mut SessionCounters, now: SessionCounters) {
    counters
        .transmissions
        .fetch_add(now.transmissions - reported.transmissions, Relaxed);
    counters
        .resends
        .fetch_add(now.resends - reported.resends, Relaxed);
    counters
        .acked
        .fetch_add(now.acked - reported.acked, Relaxed);
    counters
        .dropped
        .fetch_add(now.dropped - reported.dropped, Relaxed);
    *reported = now;
}

fn pick_button(rng: &mut SmallRng, weights: &[u32; 4], total: u32) -> Button {
    let mut roll = rng.gen_range(0..total);
    for (button, &w) in Button::ALL.iter().zip(weights) {
        if roll < w {
            return *button;
        }
        roll -= w;
    }
    Button::Happy
}

/// Polls the MQTT event loop forever, reconnecting with jittered exponential
/// backoff, and forwards what the terminal logic needs.
async fn drive_eventloop(
    mut eventloop: rumqttc::EventLoop,
    events: mpsc::Sender<LinkEvent>,
    seed: u64,
    puback_mode: bool,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                LinkEvent::ConnAck
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => LinkEvent::SubAck,
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Publish {
                topic: p.topic,
                payload: p.payload.to_vec(),
            },
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) if puback_mode => {
                LinkEvent::Sent(pkid)
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) if puback_mode => LinkEvent::PubAck(ack.pkid),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(_) => {
                if events.send(LinkEvent::Down).await.is_err() {
                    return;
                }
                // Retry backoff (not synchronisation): a real terminal waits
                // before reconnecting so a recovering gateway is not stampeded.
                tokio::time::sleep(backoff.mul_f64(0.5 + rng.gen::<f64>())).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}
