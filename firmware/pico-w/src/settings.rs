//! The terminal's settings: from the provisioning record in flash, or, for
//! development boards that were never provisioned, from build-time
//! environment variables (`PRESSLINE_TERMINAL`, `PRESSLINE_SITE`,
//! `PRESSLINE_WIFI_SSID`, `PRESSLINE_WIFI_PASSWORD`, `PRESSLINE_GATEWAY` as
//! `HOST:PORT`).

use heapless::String;
use pressline_protocol::provisioning::{ProvisioningError, ProvisioningRecord};

/// Owned copy of what the firmware needs from the record.
pub struct Settings {
    pub terminal: String<32>,
    pub site: String<32>,
    pub wifi_ssid: String<32>,
    pub wifi_password: String<64>,
    pub gateway_host: String<64>,
    pub gateway_port: u16,
    /// The terminal's secret (MQTT login and press signatures); `None` for
    /// development builds without a provisioning record (open-mode gateways
    /// accept them unsigned).
    pub secret: Option<[u8; 32]>,
}

/// Where the settings came from.
#[derive(defmt::Format)]
pub enum Source {
    Provisioned,
    BuildTimeFallback,
}

fn owned<const N: usize>(s: &str) -> Option<String<N>> {
    let mut out = String::new();
    out.push_str(s).ok()?;
    Some(out)
}

impl Settings {
    fn from_record(r: &ProvisioningRecord<'_>) -> Option<Settings> {
        Some(Settings {
            terminal: owned(r.terminal)?,
            site: owned(r.site)?,
            wifi_ssid: owned(r.wifi_ssid)?,
            wifi_password: owned(r.wifi_password)?,
            gateway_host: owned(r.gateway_host)?,
            gateway_port: r.gateway_port,
            secret: Some(r.secret),
        })
    }

    fn from_build_env() -> Option<Settings> {
        let (host, port) = option_env!("PRESSLINE_GATEWAY")?.rsplit_once(':')?;
        let record = ProvisioningRecord {
            terminal: option_env!("PRESSLINE_TERMINAL")?,
            site: option_env!("PRESSLINE_SITE").unwrap_or("dev"),
            zone: "",
            wifi_ssid: option_env!("PRESSLINE_WIFI_SSID")?,
            wifi_password: option_env!("PRESSLINE_WIFI_PASSWORD").unwrap_or(""),
            gateway_host: host,
            gateway_port: port.parse().ok()?,
            secret: [0; 32],
        };
        record.validate().ok()?;
        Settings::from_record(&record).map(|s| Settings { secret: None, ..s })
    }

    /// The provisioning record in `sector`, else the build-time fallback.
    pub fn load(sector: &[u8]) -> Result<(Settings, Source), ProvisioningError> {
        match ProvisioningRecord::decode(sector) {
            Ok(record) => Settings::from_record(&record)
                .map(|s| (s, Source::Provisioned))
                .ok_or(ProvisioningError::TooLarge),
            Err(e) => Settings::from_build_env()
                .map(|s| (s, Source::BuildTimeFallback))
                .ok_or(e),
        }
    }
}
