//! The terminal's settings: from the provisioning record in flash, or, for
//! development boards that were never provisioned, from build-time
//! environment variables (`PRESSLINE_TERMINAL`, `PRESSLINE_SITE`,
//! `PRESSLINE_WIFI_SSID`, `PRESSLINE_WIFI_PASSWORD`, `PRESSLINE_GATEWAY` as
//! `HOST:PORT`).

use pressline_protocol::provisioning::{ProvisioningError, ProvisioningRecord};
pub use pressline_terminal_app::Settings;

/// Where the settings came from.
#[derive(defmt::Format)]
pub enum Source {
    Provisioned,
    BuildTimeFallback,
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
        power: pressline_protocol::power::PowerSettings::MAINS,
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
        Err(e) => from_build_env()
            .map(|s| (s, Source::BuildTimeFallback))
            .ok_or(e),
    }
}
