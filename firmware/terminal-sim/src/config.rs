//! What to simulate.

use std::time::Duration;

use pressline_protocol::FirmwareVersion;
use pressline_terminal_core::SessionConfig;

/// What releases a press from a simulated terminal's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// The gateway's durable application ack (what real terminals do).
    #[default]
    Durable,
    /// The broker's MQTT PUBACK. Only for benchmarking plain brokers
    /// (e.g. Mosquitto) with the same load shape: PUBACK is not durability.
    Puback,
}

/// A provisioned terminal's identity (from its provisioning record).
#[derive(Debug, Clone)]
pub struct SimIdentity {
    pub terminal: String,
    pub secret: pressline_protocol::auth::Secret,
}

/// Configuration of a simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Site broker host (the gateway's MQTT listener).
    pub broker_host: String,
    pub broker_port: u16,
    /// Connect over TLS with this configuration (trust roots for the
    /// gateway's terminal listener); plain TCP when `None`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// How many terminals to run.
    pub terminals: usize,
    /// Presses per terminal; `None` presses forever (demo mode).
    pub presses: Option<u64>,
    /// Total presses per second across all terminals; `0` = as fast as each
    /// terminal's queue accepts them.
    pub rate: f64,
    /// Each terminal starts pressing only once its first session is up, so
    /// latency figures measure steady state rather than a connection storm.
    pub press_once_connected: bool,
    /// Fraction (0–1) of transmissions deliberately published twice.
    pub dup_rate: f64,
    /// Seed for button choice, timing jitter and duplicates.
    pub seed: u64,
    /// Terminal ids are this prefix followed by a three-digit index.
    pub id_prefix: String,
    /// The first `json_terminals` terminals speak the JSON press form.
    pub json_terminals: usize,
    /// Relative weights of very unhappy, unhappy, happy, very happy.
    pub button_weights: [u32; 4],
    /// Core session tunables (ack timeout, in-flight bound).
    pub session: SessionConfig,
    pub ack_mode: AckMode,
    /// Heartbeat period; heartbeats also go out on every (re)connect.
    pub heartbeat: Duration,
    /// Keep running (connected, heartbeating) at least this long, even after
    /// every press was acked.
    pub duration: Duration,
    /// The first `low_battery` terminals report a battery near empty.
    pub low_battery: usize,
    /// The last `stuck_button` terminals have a stuck button: one button,
    /// pressed every 50 ms.
    pub stuck_button: usize,
    /// Firmware version the terminals report.
    pub firmware: FirmwareVersion,
    /// The first `unhappy` terminals' visitors are mostly unhappy.
    pub unhappy: usize,
    /// Provisioned terminals: when not empty, one simulated terminal per
    /// identity, logging in with its credentials and signing its presses.
    pub identities: Vec<SimIdentity>,
    /// Power cuts per terminal per second (0 = none): the terminal loses
    /// power mid-operation, its RAM and connection, and boots from flash.
    pub kill_rate: f64,
    /// Firmware updates: on when the terminals have a release key built in.
    pub ota: Option<SimOta>,
}

/// Simulated firmware updates and their faults.
#[derive(Debug, Clone)]
pub struct SimOta {
    /// The release signing key "built into" the simulated firmware.
    pub public_key: [u8; 32],
    /// Largest image the simulated partitions take.
    pub max_image: usize,
    /// Bytes asked for per chunk request.
    pub chunk_size: u32,
    /// Re-ask for a chunk not answered within this many ms.
    pub request_timeout_ms: u64,
    /// Probability, per chunk written, that power fails right after it.
    pub interrupt_rate: f64,
    /// Probability that a received chunk arrives damaged.
    pub corrupt_rate: f64,
    /// The first K terminals' new images fail their trial boot (they crash
    /// before confirming, so the bootloader reverts them).
    pub fail_trial_boot: usize,
    /// The first K terminals vanish for good when offered an update.
    pub vanish: usize,
}

impl Default for SimOta {
    fn default() -> Self {
        SimOta {
            public_key: [0; 32],
            max_image: 2 << 20,
            chunk_size: 4096,
            request_timeout_ms: 3_000,
            interrupt_rate: 0.0,
            corrupt_rate: 0.0,
            fail_trial_boot: 0,
            vanish: 0,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: 1883,
            tls: None,
            terminals: 4,
            presses: Some(10),
            rate: 10.0,
            press_once_connected: false,
            dup_rate: 0.0,
            seed: 1,
            id_prefix: "sim-".into(),
            json_terminals: 0,
            button_weights: [1, 2, 5, 4],
            session: SessionConfig::default(),
            ack_mode: AckMode::Durable,
            heartbeat: Duration::from_secs(30),
            duration: Duration::ZERO,
            low_battery: 0,
            stuck_button: 0,
            firmware: FirmwareVersion::parse(env!("CARGO_PKG_VERSION")).unwrap_or(
                FirmwareVersion {
                    major: 0,
                    minor: 1,
                    patch: 0,
                },
            ),
            kill_rate: 0.0,
            ota: None,
            unhappy: 0,
            identities: Vec::new(),
        }
    }
}

impl SimConfig {
    /// The id of terminal number `index`.
    pub fn terminal_id(&self, index: usize) -> String {
        match self.identities.get(index) {
            Some(identity) => identity.terminal.clone(),
            None => format!("{}{:03}", self.id_prefix, index),
        }
    }

    pub fn has_low_battery(&self, index: usize) -> bool {
        index < self.low_battery
    }

    /// Button weights of terminal `index`.
    pub fn button_weights_of(&self, index: usize) -> [u32; 4] {
        if index < self.unhappy {
            [5, 4, 1, 1]
        } else {
            self.button_weights
        }
    }

    pub fn has_stuck_button(&self, index: usize) -> bool {
        index >= self.terminals.saturating_sub(self.stuck_button)
    }
}
