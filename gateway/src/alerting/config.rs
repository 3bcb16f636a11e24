//! `[alerting]`: notification channels, routes (who hears about what),
//! quiet hours, escalation and delivery limits. Checked at start: a route
//! naming an unknown channel, a channel without a URL or an unreadable
//! quiet-hours range is a configuration error, not a silent drop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use pressline_protocol::upstream::AlertKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// The gateway's HTTP(S) address as staff phones reach it (e.g.
    /// `https://gateway.arena.example:8443`): notifications then carry a
    /// signed one-click acknowledge link. Unset: no links.
    pub public_url: Option<String>,
    /// How long a signed link works.
    pub link_valid_hours: u64,
    /// A recovered alert closes after this long; if its condition comes
    /// back before, the same alert reopens.
    pub close_after_recovery_secs: u64,
    pub delivery: DeliveryConfig,
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Evaluated in order; an alert goes to every route it matches.
    pub routes: Vec<RouteConfig>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            public_url: None,
            link_valid_hours: 72,
            close_after_recovery_secs: super::book::DEFAULT_CLOSE_AFTER_SECS,
            delivery: DeliveryConfig::default(),
            channels: BTreeMap::new(),
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// One HTTP request's limit (connect, send, answer).
    pub timeout_secs: u64,
    /// First retry after this long, doubling up to `retry_max_secs`.
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    /// A notification still undelivered after this long is dropped (and
    /// counted): news that old no longer sends anyone anywhere.
    pub give_up_after_hours: u64,
    /// More than this many notifications due at once on a chat channel
    /// (Slack, Teams, ntfy) go as one digest message.
    pub coalesce_above: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout_secs: 10,
            retry_min_secs: 5,
            retry_max_secs: 600,
            give_up_after_hours: 24,
            coalesce_above: 3,
        }
    }
}

/// Where a channel's messages go, and in which shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// `POST` of a `pressline.notification.v1` JSON document.
    Webhook,
    /// A Slack incoming webhook (`{"text", "blocks"}`).
    Slack,
    /// A Microsoft Teams incoming webhook or Workflows URL (an Adaptive Card).
    Teams,
    /// An ntfy topic URL (`https://ntfy.sh/my-topic`): JSON publishing
    /// with title, priority, tags and an acknowledge action.
    Ntfy,
    /// E-mail through an SMTP relay: `url` is `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS) or `smtp://host:25` (plain, a
    /// relay on the local network), credentials as `smtp://user:pass@…`
    /// (then keep it in `url_file`); `from` and `to` name the addresses.
    Email,
}

impl ChannelKind {
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Email => "email",
        }
    }

    /// Channels read by people: bursts are coalesced.
    pub fn is_chat(self) -> bool {
        !matches!(self, ChannelKind::Webhook)
    }

    /// Delivered over HTTP (all but e-mail).
    pub fn is_http(self) -> bool {
        !matches!(self, ChannelKind::Email)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub kind: ChannelKind,
    /// The URL to post to. Webhook URLs of Slack and Teams are secrets:
    /// prefer `url_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (first line).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// A file holding a bearer token sent as `Authorization: Bearer …`
    /// (ntfy access tokens, webhook receivers that want one).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// E-mail: the sender (`Pressline <pressline@arena.example>`).
    #[serde(default)]
    pub from: Option<String>,
    /// E-mail: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// For logs and the notified list.
    pub name: String,
    /// Alert kinds this route takes (`zone_unhappy`, `offline`, …); empty:
    /// every kind.
    pub kinds: Vec<AlertKind>,
    /// Zones this route takes (a terminal's alerts belong to its zone);
    /// empty: every zone and unzoned terminals.
    pub zones: Vec<String>,
    pub channels: Vec<String>,
    /// Told when nobody acknowledged within `escalate_after_secs`.
    pub escalate_to: Vec<String>,
    pub escalate_after_secs: Option<u64>,
    /// `"22:00-07:00"` in the site's local time (`scores.time_zone`): the
    /// route is silent then; alerts still open and unacknowledged when it
    /// ends are sent at that moment.
    pub quiet_hours: Option<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            name: "route".into(),
            kinds: Vec::new(),
            zones: Vec::new(),
            channels: Vec::new(),
            escalate_to: Vec::new(),
            escalate_after_secs: None,
            quiet_hours: None,
        }
    }
}

/// Quiet hours as minutes of the local day, `from` inclusive, `to`
/// exclusive; `from > to` spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub from_min: u32,
    pub to_min: u32,
}

impl QuietHours {
    pub fn parse(text: &str) -> anyhow::Result<QuietHours> {
        let minute = |hm: &str| -> anyhow::Result<u32> {
            let (h, m) = hm.trim().split_once(':').context("expected HH:MM")?;
            let (h, m): (u32, u32) = (h.parse()?, m.parse()?);
            if h > 23 || m > 59 {
                bail!("{hm} is not a time of day");
            }
            Ok(h * 60 + m)
        };
        let (from, to) = text
            .split_once('-')
            .context("expected a range such as \"22:00-07:00\"")?;
        let q = QuietHours {
            from_min: minute(from)?,
            to_min: minute(to)?,
        };
        if q.from_min == q.to_min {
            bail!("an empty range");
        }
        Ok(q)
    }

    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.from_min < self.to_min {
            (self.from_min..self.to_min).contains(&minute_of_day)
        } else {
            minute_of_day >= self.from_min || minute_of_day < self.to_min
        }
    }
}

impl AlertingConfig {
    /// Every reference resolves and every value parses.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.link_valid_hours == 0 {
            bail!("alerting.link_valid_hours must be at least 1");
        }
        if self.delivery.timeout_secs == 0 || self.delivery.retry_min_secs == 0 {
            bail!("alerting.delivery.timeout_secs and retry_min_secs must be at least 1");
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("alerting.public_url {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("alerting.public_url {url:?}: use an http:// or https:// address");
            }
        }
        for (name, channel) in &self.channels {
            match (&channel.url, &channel.url_file) {
                (Some(url), None) => check_channel_url(name, channel.kind, url)?,
                (None, Some(_)) => {}
                _ => bail!("alerting.channels.{name}: set exactly one of url and url_file"),
            }
            match channel.kind {
                ChannelKind::Email => {
                    let from = channel.from.as_deref().with_context(|| {
                        format!("alerting.channels.{name}: an e-mail channel needs `from`")
                    })?;
                    from.parse::<lettre::message::Mailbox>().with_context(|| {
                        format!("alerting.channels.{name}: from {from:?} is not an e-mail address")
                    })?;
                    if channel.to.is_empty() {
                        bail!("alerting.channels.{name}: an e-mail channel needs `to` (a list of addresses)");
                    }
                    for to in &channel.to {
                        to.parse::<lettre::message::Mailbox>().with_context(|| {
                            format!("alerting.channels.{name}: to {to:?} is not an e-mail address")
                        })?;
                    }
                }
                _ if channel.from.is_some() || !channel.to.is_empty() => {
                    bail!("alerting.channels.{name}: `from` and `to` are for kind = \"email\"")
                }
                _ => {}
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("alerting.routes[{i}] ({:?})", route.name);
            if route.channels.is_empty() {
                bail!("{at}: name at least one channel in `channels`");
            }
            for c in route.channels.iter().chain(&route.escalate_to) {
                if !self.channels.contains_key(c) {
                    bail!(
                        "{at}: no channel {c:?} (configured: {})",
                        self.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            for k in &route.kinds {
                if let AlertKind::Other(unknown) = k {
                    let known: Vec<&str> = AlertKind::ALL.iter().map(AlertKind::as_str).collect();
                    bail!(
                        "{at}: unknown alert kind {unknown:?} (kinds: {})",
                        known.join(", ")
                    );
                }
            }
            if route.escalate_after_secs.is_some() != !route.escalate_to.is_empty() {
                bail!("{at}: escalate_to and escalate_after_secs go together");
            }
            if let Some(q) = &route.quiet_hours {
                QuietHours::parse(q).with_context(|| format!("{at}: quiet_hours {q:?}"))?;
            }
        }
        Ok(())
    }
}

/// A channel's URL fits its kind (the URL itself is not echoed: it may
/// hold a secret).
pub fn check_channel_url(channel: &str, kind: ChannelKind, url: &str) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| anyhow::anyhow!("alerting.channels.{channel}: the url is not a URL ({e})"))?;
    match kind {
        ChannelKind::Email => {
            if !matches!(parsed.scheme(), "smtp" | "smtps") {
                bail!("alerting.channels.{channel}: use an smtp:// or smtps:// relay URL");
            }
            lettre::SmtpTransport::from_url(url.trim()).map_err(|e| {
                anyhow::anyhow!("alerting.channels.{channel}: unusable SMTP relay URL ({e})")
            })?;
        }
        _ => {
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("alerting.channels.{channel}: use an http:// or https:// URL");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_span_midnight() {
        let q = QuietHours::parse("22:00-07:00").unwrap();
        assert!(q.contains(22 * 60) && q.contains(3 * 60) && q.contains(7 * 60 - 1));
        assert!(!q.contains(7 * 60) && !q.contains(12 * 60) && !q.contains(22 * 60 - 1));
        let day = QuietHours::parse("12:30-13:15").unwrap();
        assert!(day.contains(12 * 60 + 30) && !day.contains(13 * 60 + 15));
        for bad in ["22:00", "25:00-07:00", "07:00-07:00", "ab-cd"] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
    }

    fn config(toml_text: &str) -> anyhow::Result<AlertingConfig> {
        let c: AlertingConfig = toml::from_str(toml_text)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn routes_must_name_configured_channels_and_known_kinds() {
        let base =
            "[channels.floor]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/x\"\n";
        assert!(config(&format!(
            "{base}[[routes]]\nname = \"r\"\nchannels = [\"floor\"]\n"
        ))
        .is_ok());
        let e = config(&format!(
            "{base}[[routes]]\nname = \"r\"\nchannels = [\"flor\"]\n"
        ))
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("no channel \"flor\" (configured: floor)"),
            "{e:#}"
        );
        let e = config(&format!(
            "{base}[[routes]]\nname = \"r\"\nchannels = [\"floor\"]\nkinds = [\"sad\"]\n"
        ))
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown alert kind \"sad\""),
            "{e:#}"
        );
        let e = config(&format!(
            "{base}[[routes]]\nname = \"r\"\nchannels = [\"floor\"]\nescalate_to = [\"floor\"]\n"
        ))
        .unwrap_err();
        assert!(format!("{e:#}").contains("go together"), "{e:#}");
        let e = config("[channels.x]\nkind = \"ntfy\"\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("http:// or https://"), "{e:#}");
        assert!(config("[channels.x]\nkind = \"sms\"\nurl = \"https://x\"\n").is_err());
        let mail =
            "[channels.m]\nkind = \"email\"\nurl = \"smtp://relay.example:587?tls=required\"\n";
        assert!(config(&format!(
            "{mail}from = \"Pressline <p@arena.example>\"\nto = [\"duty@arena.example\"]\n"
        ))
        .is_ok());
        let e = config(&format!("{mail}to = [\"duty@arena.example\"]\n")).unwrap_err();
        assert!(format!("{e:#}").contains("needs `from`"), "{e:#}");
        let e = config(&format!(
            "{mail}from = \"p@arena.example\"\nto = [\"not an address\"]\n"
        ))
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("is not an e-mail address"),
            "{e:#}"
        );
        let e = config("[channels.m]\nkind = \"email\"\nurl = \"https://x\"\nfrom = \"p@a.example\"\nto = [\"d@a.example\"]\n").unwrap_err();
        assert!(format!("{e:#}").contains("smtp://"), "{e:#}");
    }
}
