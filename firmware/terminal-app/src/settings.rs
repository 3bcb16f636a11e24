//! Who the terminal is and how it reaches its gateway: an owned copy of
//! the provisioning record (`fleet provision`), however the board got it
//! (a reserved flash sector on the Pico W, a file for terminal-host).

use heapless::String;
use pressline_protocol::power::PowerSettings;
use pressline_protocol::provisioning::ProvisioningRecord;

/// What the application needs from the record.
pub struct Settings {
    pub terminal: String<32>,
    pub site: String<32>,
    pub wifi_ssid: String<32>,
    pub wifi_password: String<64>,
    pub gateway_host: String<64>,
    pub gateway_port: u16,
    /// The terminal's secret (MQTT login and press signatures); `None` for
    /// a terminal that was never provisioned (open-mode gateways accept
    /// its presses unsigned).
    pub secret: Option<[u8; 32]>,
    /// How long a trial image must run, connected, before it is kept (see
    /// `session`); a crash or hang before then reverts it.
    pub trial_window_ms: u64,
    /// Mains or battery, as provisioned (the gateway may change it later:
    /// [`crate::power`]).
    pub power: PowerSettings,
}

/// Two minutes: long enough for a new image's slow failures (a leak, a
/// task that dies on its second heartbeat) to show, short enough that a
/// rollout wave does not wait long on each terminal.
pub const DEFAULT_TRIAL_WINDOW_MS: u64 = 120_000;

fn owned<const N: usize>(s: &str) -> Option<String<N>> {
    let mut out = String::new();
    out.push_str(s).ok()?;
    Some(out)
}

impl Settings {
    /// The record's fields; `None` if one is longer than the settings hold.
    pub fn from_record(r: &ProvisioningRecord<'_>) -> Option<Settings> {
        Some(Settings {
            terminal: owned(r.terminal)?,
            site: owned(r.site)?,
            wifi_ssid: owned(r.wifi_ssid)?,
            wifi_password: owned(r.wifi_password)?,
            gateway_host: owned(r.gateway_host)?,
            gateway_port: r.gateway_port,
            secret: Some(r.secret),
            trial_window_ms: DEFAULT_TRIAL_WINDOW_MS,
            power: r.power,
        })
    }

    /// An unprovisioned terminal `terminal` at `site`, reaching the gateway
    /// at `host:port` (development boards, terminal-host in open mode).
    pub fn unprovisioned(terminal: &str, site: &str, host: &str, port: u16) -> Option<Settings> {
        let record = ProvisioningRecord {
            terminal,
            site,
            zone: "",
            wifi_ssid: "-",
            wifi_password: "",
            gateway_host: host,
            gateway_port: port,
            secret: [0; 32],
            power: PowerSettings::MAINS,
        };
        record.validate().ok()?;
        Settings::from_record(&record).map(|s| Settings { secret: None, ..s })
    }
}
