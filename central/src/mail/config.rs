//! The mail sender's configuration (`pressline-central mail --config
//! FILE`): the SMTP relay, the web view's address for links, and the
//! subscriptions: who gets which report how often.

use std::path::Path;

use serde::Deserialize;
use time::Time;

/// How often a subscription's report is sent: each covers the last whole
/// period before it is sent (a day; Monday to Sunday; a calendar month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    Daily,
    Weekly,
    Monthly,
}

impl Every {
    pub fn as_str(self) -> &'static str {
        match self {
            Every::Daily => "daily",
            Every::Weekly => "weekly",
            Every::Monthly => "monthly",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Names the subscription in the sending record: renaming one sends
    /// its current period again.
    pub name: String,
    pub every: Every,
    /// The sites reported on; empty: the whole network.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Each gets a message of their own.
    pub to: Vec<String>,
    /// The IANA zone whose days, weeks and months the periods are, and in
    /// which `send_after` is read; default UTC.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The ranking's prior (as `fleet report --prior-presses`).
    #[serde(default = "prior")]
    pub prior_presses: u32,
}

fn utc() -> String {
    "UTC".into()
}

fn prior() -> u32 {
    50
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    smtp_url: String,
    from: String,
    web_url: String,
    #[serde(default = "six")]
    send_after: String,
    #[serde(default, rename = "subscription")]
    subscriptions: Vec<Subscription>,
}

fn six() -> String {
    "06:00".into()
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `smtp://host:587?tls=required`, `smtps://host:465`, or
    /// `smtp://host:25` (a relay on the local network); credentials as
    /// `smtp://user:pass@host…`.
    pub smtp_url: String,
    pub from: lettre::message::Mailbox,
    /// The web view as recipients reach it (`https://reports.example`).
    pub web_url: String,
    /// Local time of day after which a period's report goes out.
    pub send_after: Time,
    pub subscriptions: Vec<Subscription>,
}

/// `HH:MM`.
fn parse_time(text: &str) -> Option<Time> {
    let (h, m) = text.trim().split_once(':')?;
    Time::from_hms(h.parse().ok()?, m.parse().ok()?, 0).ok()
}

impl MailConfig {
    pub fn load(path: &Path) -> anyhow::Result<MailConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        MailConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<MailConfig> {
        let file: File = toml::from_str(text)?;
        let from = file.from.parse().map_err(|e| {
            anyhow::anyhow!(
                "from = {:?} is not a mailbox ({e}); e.g. \"Pressline <reports@example.com>\"",
                file.from
            )
        })?;
        lettre::SmtpTransport::from_url(file.smtp_url.trim()).map_err(|e| {
            anyhow::anyhow!(
                "smtp_url: {e}; use smtp://host:587?tls=required, smtps://host:465 or smtp://host:25"
            )
        })?;
        anyhow::ensure!(
            file.web_url.starts_with("http://") || file.web_url.starts_with("https://"),
            "web_url = {:?}: the web view's address, starting http:// or https://",
            file.web_url
        );
        let send_after = parse_time(&file.send_after).ok_or_else(|| {
            anyhow::anyhow!(
                "send_after = {:?} is not a time of day (HH:MM)",
                file.send_after
            )
        })?;
        let mut names = std::collections::BTreeSet::new();
        for s in &file.subscriptions {
            anyhow::ensure!(!s.name.trim().is_empty(), "a subscription needs a name");
            anyhow::ensure!(
                names.insert(&s.name),
                "two subscriptions are named {:?}",
                s.name
            );
            anyhow::ensure!(
                !s.to.is_empty(),
                "subscription {:?} has no recipient (to = [...])",
                s.name
            );
            for to in &s.to {
                to.parse::<lettre::message::Mailbox>().map_err(|e| {
                    anyhow::anyhow!("subscription {:?}: {to:?} is not an address ({e})", s.name)
                })?;
            }
        }
        anyhow::ensure!(
            !file.subscriptions.is_empty(),
            "no [[subscription]]: nothing would be sent"
        );
        Ok(MailConfig {
            smtp_url: file.smtp_url.trim().to_string(),
            from,
            web_url: file.web_url.trim_end_matches('/').to_string(),
            send_after,
            subscriptions: file.subscriptions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
smtp_url = "smtp://127.0.0.1:2525"
from = "Pressline <reports@example.com>"
web_url = "https://reports.example.com/"

[[subscription]]
name = "north-weekly"
every = "weekly"
sites = ["north"]
to = ["anna@example.com", "Ben <ben@example.com>"]
time_zone = "Europe/London"
"#;

    #[test]
    fn a_subscription_names_its_sites_recipients_and_zone() {
        let c = MailConfig::parse(GOOD).unwrap();
        assert_eq!(c.web_url, "https://reports.example.com");
        assert_eq!(c.send_after, Time::from_hms(6, 0, 0).unwrap());
        let s = &c.subscriptions[0];
        assert_eq!(
            (s.every, s.prior_presses, s.to.len()),
            (Every::Weekly, 50, 2)
        );
    }

    #[test]
    fn the_example_in_deploy_is_valid() {
        let c = MailConfig::parse(include_str!("../../../deploy/reports.toml")).unwrap();
        assert_eq!(c.subscriptions.len(), 2);
        assert!(c.subscriptions[1].sites.is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |from: &str, to: &str| {
            let e = MailConfig::parse(&GOOD.replace(from, to)).unwrap_err();
            format!("{e:#}")
        };
        assert!(
            bad("weekly", "fortnightly").contains("every"),
            "{}",
            bad("weekly", "fortnightly")
        );
        assert!(bad("anna@example.com", "anna").contains("not an address"));
        assert!(bad("smtp://127.0.0.1:2525", "http://x").contains("smtp_url"));
        assert!(bad("https://reports", "reports").contains("web_url"));
        let e = MailConfig::parse(&format!("send_after = \"25:00\"\n{GOOD}")).unwrap_err();
        assert!(format!("{e:#}").contains("send_after"), "{e:#}");
    }
}
