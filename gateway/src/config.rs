//! Typed gateway configuration with documented defaults.
//!
//! The defaults live in one place, `deploy/gateway.toml`, which is compiled
//! in: `gateway run` without `--config` uses it as is, and `gateway
//! generate-config` prints it. A test keeps it equal to [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::api::token::Scope;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The documented default configuration file.
pub const DEFAULT_TOML: &str = include_str!("../../deploy/gateway.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub site: String,
    pub data_dir: PathBuf,
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub upstream: UpstreamConfig,
    pub storage: StorageConfig,
    pub health: crate::terminals::health::HealthConfig,
    pub misuse: crate::insight::misuse::MisuseConfig,
    pub scores: crate::insight::scores::ScoresConfig,
    /// Zones by id: a display name and the terminals in it.
    pub zones: std::collections::BTreeMap<String, crate::insight::scores::ZoneConfig>,
    pub security: crate::terminals::identity::SecurityConfig,
    pub ota: crate::ota::releases::OtaConfig,
    pub alerting: crate::alerting::config::AlertingConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub listen: SocketAddr,
    /// MQTT 5 listener (the Pico W firmware's client speaks MQTT 5); `None`
    /// disables it.
    pub listen_v5: Option<SocketAddr>,
    pub max_terminals: usize,
    /// Most topic filters one client may hold at once: every filter costs
    /// the broker state, so no client adds them without bound.
    pub max_subscriptions_per_client: usize,
    pub max_payload_bytes: usize,
    pub router_segment_bytes: usize,
    pub router_segment_count: usize,
    /// MQTT 3.1.1 over TLS for terminals; `None` disables it.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Accept terminals only over TLS: the plain listeners are not opened.
    pub tls_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The admin bearer token for the API; when unset, one is generated on
    /// first start into `<data_dir>/api-token`.
    pub api_token: Option<String>,
    /// The operator token (acknowledge, rollouts; and every read); when
    /// unset, generated into `<data_dir>/operator-token`.
    pub operator_token: Option<String>,
    /// The viewer token (the dashboard and every read); when unset,
    /// generated into `<data_dir>/viewer-token`.
    pub viewer_token: Option<String>,
    /// Serve HTTPS with this certificate chain and key (both or neither).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// Most presses in one upstream batch: at about 330 bytes a press, well
/// inside the 1 MiB packet limit the forwarder sets.
pub const MAX_PRESS_BATCH: u16 = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// CA bundle for an `mqtts://` broker; the system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key for mutual TLS (both or neither).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub keep_alive_secs: u64,
    pub max_inflight: u16,
    /// Most presses in one upstream message. 1 (the default): one
    /// `pressline.press.v1` message per press on its terminal's topic.
    /// Above 1: presses ready together go as `pressline.press_batch.v1`
    /// documents on `pressline/v1/{site}/presses` (for a central broker,
    /// whose cost is per message).
    pub press_batch: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub cache_mb: u64,
    pub max_disk_mb: u64,
    pub commit_batch_max: usize,
    /// Raw presses older than this many days are dropped (hourly, a day at
    /// a time); 0 keeps them forever. Their upstream documents were sent
    /// long before.
    pub retention_days: u32,
    /// Days of satisfaction aggregates (the hour table, daily figures per
    /// terminal) kept; at least 2.
    pub aggregate_retention_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            site: "demo-site".into(),
            data_dir: "pressline-data".into(),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            upstream: UpstreamConfig::default(),
            storage: StorageConfig::default(),
            health: crate::terminals::health::HealthConfig::default(),
            misuse: crate::insight::misuse::MisuseConfig::default(),
            scores: crate::insight::scores::ScoresConfig::default(),
            zones: std::collections::BTreeMap::new(),
            security: crate::terminals::identity::SecurityConfig::default(),
            ota: crate::ota::releases::OtaConfig::default(),
            alerting: crate::alerting::config::AlertingConfig::default(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: "0.0.0.0:1883".parse().expect("literal address"),
            listen_v5: Some("0.0.0.0:1884".parse().expect("literal address")),
            max_terminals: 1024,
            max_subscriptions_per_client: 32,
            max_payload_bytes: 65536,
            router_segment_bytes: 256 * 1024,
            router_segment_count: 4,
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_only: false,
        }
    }
}

impl HttpConfig {
    /// The configured token of `scope`, if any.
    pub fn token(&self, scope: Scope) -> Option<String> {
        match scope {
            Scope::Admin => self.api_token.clone(),
            Scope::Operator => self.operator_token.clone(),
            Scope::Viewer => self.viewer_token.clone(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".parse().expect("literal address"),
            api_token: None,
            operator_token: None,
            viewer_token: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: None,
            client_id: None,
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            keep_alive_secs: 30,
            max_inflight: 1000,
            press_batch: 1,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_mb: 8,
            max_disk_mb: 4096,
            commit_batch_max: 4096,
            retention_days: 90,
            aggregate_retention_days: 400,
        }
    }
}

/// A parsed `mqtt://HOST:PORT` or `mqtts://HOST:PORT` upstream address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS, with the host name checked against the certificate.
    pub tls: bool,
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses one `mqtt://HOST:PORT` or `mqtts://HOST:PORT`.
fn parse_upstream_url(raw: &str) -> anyhow::Result<UpstreamAddr> {
    let url = url::Url::parse(raw).with_context(|| {
        format!("upstream url {raw:?} is not a URL; expected mqtts://HOST:PORT or mqtt://HOST:PORT")
    })?;
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => bail!(
            "upstream url {raw:?}: unknown scheme {other:?}; expected mqtts://HOST:PORT (TLS) or mqtt://HOST:PORT"
        ),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .with_context(|| format!("upstream url {raw:?} has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    Ok(UpstreamAddr {
        host,
        port: url.port().unwrap_or(if tls { 8883 } else { 1883 }),
        tls,
    })
}

impl Config {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently
    /// fall back to a default).
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        let table: toml::Table = toml::from_str(text)?;
        if table.get("security").and_then(|s| s.get("mode")).is_some() {
            config.security.mode_source = crate::terminals::identity::ModeSource::ConfigFile;
        }
        Ok(config)
    }

    /// Checks everything that can be checked before starting.
    pub fn validate(&self) -> anyhow::Result<()> {
        pressline_protocol::ident::validate_id(&self.site)
            .map_err(|e| anyhow::anyhow!("site {:?}: {e}", self.site))?;
        if self.mqtt.max_terminals == 0 {
            bail!("mqtt.max_terminals must be at least 1");
        }
        if self.mqtt.max_subscriptions_per_client == 0 {
            bail!("mqtt.max_subscriptions_per_client must be at least 1 (a terminal subscribes to its own acks)");
        }
        if self.mqtt.max_payload_bytes < pressline_protocol::MAX_PRESS_PAYLOAD {
            bail!(
                "mqtt.max_payload_bytes must be at least {} (the largest press)",
                pressline_protocol::MAX_PRESS_PAYLOAD
            );
        }
        if self.mqtt.router_segment_bytes < 1024 || self.mqtt.router_segment_count < 2 {
            bail!("mqtt.router_segment_bytes must be >= 1024 and mqtt.router_segment_count >= 2");
        }
        if self.storage.aggregate_retention_days < 2 {
            bail!("storage.aggregate_retention_days must be at least 2 (today and yesterday)");
        }
        if self.storage.commit_batch_max == 0 {
            bail!("storage.commit_batch_max must be at least 1");
        }
        for scope in [Scope::Admin, Scope::Operator, Scope::Viewer] {
            if self.http.token(scope).is_some_and(|t| t.trim().len() < 16) {
                bail!(
                    "{} must be at least 16 characters (or leave it unset to generate one)",
                    scope.config_key()
                );
            }
        }
        if self.health.offline_after_secs == 0
            || self.health.queue_filling_percent == 0
            || self.health.queue_filling_percent > 100
        {
            bail!("health.offline_after_secs must be >= 1 and health.queue_filling_percent 1-100");
        }
        // A century is "never"; below offline_after_secs the monitor uses
        // offline_after_secs (forgetting first would hide a late terminal).
        if self.health.forget_unknown_after_secs > 100 * 365 * 86_400
            || self.health.offline_after_secs > 100 * 365 * 86_400
        {
            bail!("health.offline_after_secs and health.forget_unknown_after_secs must be at most 3153600000 (100 years)");
        }
        if !(self.misuse.response_interval_secs >= 0.0) || self.misuse.burst_max == 0 {
            bail!("misuse.response_interval_secs must be >= 0 and misuse.burst_max >= 1");
        }
        if self.scores.unhappy_percent == 0
            || self.scores.unhappy_percent > 100
            || self.scores.alert_window_secs == 0
        {
            bail!("scores.unhappy_percent must be 1-100 and scores.alert_window_secs >= 1");
        }
        if self.scores.utc_offset_minutes.abs() > 14 * 60 {
            bail!("scores.utc_offset_minutes must be within -840..=840");
        }
        if self.scores.time_zone.is_some() && self.scores.utc_offset_minutes != 0 {
            bail!(
                "set scores.time_zone or scores.utc_offset_minutes, not both \
                 (the zone already knows its offset, daylight saving included)"
            );
        }
        if let Err(e) = self.site_time() {
            bail!("{e:#}");
        }
        self.alerting.validate()?;
        let mut zone_of = std::collections::BTreeMap::new();
        for (id, zone) in &self.zones {
            pressline_protocol::ident::validate_id(id)
                .map_err(|e| anyhow::anyhow!("zone id {id:?}: {e}"))?;
            if id == crate::insight::scores::UNASSIGNED {
                bail!("zone id {id:?} is reserved for terminals without a zone");
            }
            for t in &zone.terminals {
                if let Some(other) = zone_of.insert(t.as_str(), id.as_str()) {
                    bail!("terminal {t:?} is in two zones: {other:?} and {id:?}");
                }
            }
            if zone.unhappy_percent.is_some_and(|p| p == 0 || p > 100) {
                bail!("zones.{id}.unhappy_percent must be 1-100");
            }
        }
        if self.upstream.max_inflight == 0 {
            bail!("upstream.max_inflight must be at least 1");
        }
        if !(1..=MAX_PRESS_BATCH).contains(&self.upstream.press_batch) {
            bail!("upstream.press_batch must be 1-{MAX_PRESS_BATCH} (1: one message per press)");
        }
        let upstream = self.upstream_addr()?;
        let tls_files = self.upstream.ca_file.is_some()
            || self.upstream.cert_file.is_some()
            || self.upstream.key_file.is_some();
        if tls_files && !upstream.as_ref().is_some_and(|u| u.tls) {
            bail!("upstream.ca_file, cert_file and key_file only apply to a TLS upstream: use an mqtts:// url");
        }
        if self.upstream.cert_file.is_some() != self.upstream.key_file.is_some() {
            bail!("upstream.cert_file and upstream.key_file go together: set both for mutual TLS, or neither");
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            bail!("http.tls_cert_file and http.tls_key_file go together: set both to serve HTTPS, or neither");
        }
        let mqtt_tls_files = self.mqtt.tls_cert_file.is_some() && self.mqtt.tls_key_file.is_some();
        match self.mqtt.tls_listen {
            Some(_) if !mqtt_tls_files => bail!(
                "mqtt.tls_listen needs mqtt.tls_cert_file and mqtt.tls_key_file (the certificate terminals will see)"
            ),
            None if self.mqtt.tls_only => {
                bail!("mqtt.tls_only needs mqtt.tls_listen: terminals would have nowhere to connect")
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the HTTP API is served over TLS.
    pub fn https(&self) -> bool {
        self.http.tls_cert_file.is_some()
    }

    /// The first upstream broker, if one is configured.
    pub fn upstream_addr(&self) -> anyhow::Result<Option<UpstreamAddr>> {
        Ok(self.upstream_addrs()?.into_iter().next())
    }

    /// The upstream brokers: `upstream.url` holds one URL, or several
    /// nodes of one cluster separated by commas, tried in turn.
    pub fn upstream_addrs(&self) -> anyhow::Result<Vec<UpstreamAddr>> {
        let Some(raw) = &self.upstream.url else {
            return Ok(Vec::new());
        };
        let addrs = raw
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(parse_upstream_url)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if addrs.is_empty() {
            bail!("upstream url {raw:?} names no broker");
        }
        if addrs.iter().any(|a| a.tls != addrs[0].tls) {
            bail!("upstream url {raw:?} mixes mqtt:// and mqtts:// nodes; the nodes of one cluster share one transport");
        }
        Ok(addrs)
    }

    /// The upstream MQTT client id.
    /// The site's wall clock: `scores.time_zone`, else the fixed offset.
    pub fn site_time(&self) -> anyhow::Result<crate::site_time::SiteTime> {
        crate::site_time::SiteTime::from_config(
            self.scores.time_zone.as_deref(),
            self.scores.utc_offset_minutes,
        )
    }

    pub fn upstream_client_id(&self) -> String {
        self.upstream
            .client_id
            .clone()
            .unwrap_or_else(|| format!("pressline-gateway-{}", self.site))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        let mut from_file = Config::from_toml(DEFAULT_TOML).unwrap();
        from_file.security.mode_source = Default::default();
        assert_eq!(from_file, Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn typos_and_bad_values_are_clear_errors() {
        let err = Config::from_toml("sitte = \"x\"").unwrap_err().to_string();
        assert!(err.contains("sitte"), "{err}");
        let mut c = Config::default();
        c.site = "north stand".into();
        assert!(c.validate().unwrap_err().to_string().contains("site"));
        let mut c = Config::default();
        c.upstream.press_batch = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("press_batch"));
        c.upstream.press_batch = 1001;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("press_batch"));
        let mut c = Config::default();
        c.upstream.url = Some("mqtt://x:1883".into());
        c.upstream.ca_file = Some("ca.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("mqtts://"));
        c.upstream.url = Some("mqtts://x".into());
        c.upstream.cert_file = Some("gw.pem".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("go together"));
        c.upstream.key_file = Some("gw.key".into());
        c.validate().unwrap();
        c.mqtt.tls_only = true;
        assert!(c.validate().unwrap_err().to_string().contains("tls_listen"));
        c.mqtt.tls_listen = Some("0.0.0.0:8883".parse().unwrap());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls_cert_file"));
        c.upstream.url = Some("http://x".into());
        assert!(c.validate().unwrap_err().to_string().contains("scheme"));
    }

    #[test]
    fn zones_are_checked() {
        let c = Config::from_toml(
            "[zones.food]\nname = \"Food court\"\nterminals = [\"t1\", \"t2\"]\n[zones.gate]\nname = \"Gate\"\nterminals = [\"t2\"]\n",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("two zones"));
        let c = Config::from_toml("[zones.unassigned]\nname = \"x\"\nterminals = []\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("reserved"));
        let c = Config::from_toml(
            "[zones.food]\nname = \"Food court\"\nterminals = [\"t1\"]\nunhappy_percent = 35\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.zones["food"].unhappy_percent, Some(35));
    }

    #[test]
    fn upstream_urls_parse_with_a_default_port() {
        let mut c = Config::default();
        c.upstream.url = Some("mqtt://broker.local".into());
        assert_eq!(
            c.upstream_addr().unwrap(),
            Some(UpstreamAddr {
                host: "broker.local".into(),
                port: 1883,
                tls: false,
            })
        );
        c.upstream.url = Some("mqtts://central.example.com".into());
        let tls = c.upstream_addr().unwrap().unwrap();
        assert_eq!((tls.port, tls.tls), (8883, true));
        assert_eq!(tls.to_string(), "mqtts://central.example.com:8883");
        c.upstream.url = Some("mqtts://a:8883, mqtts://b".into());
        let nodes = c.upstream_addrs().unwrap();
        assert_eq!(
            nodes.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["mqtts://a:8883", "mqtts://b:8883"]
        );
        c.upstream.url = Some("mqtts://a:8883,mqtt://b".into());
        assert!(c
            .upstream_addrs()
            .unwrap_err()
            .to_string()
            .contains("mixes"));
        c.upstream.url = Some("mqtt://127.0.0.1:18830".into());
        assert_eq!(c.upstream_addr().unwrap().unwrap().port, 18830);
        assert_eq!(c.upstream_client_id(), "pressline-gateway-demo-site");
    }
}
