//! Every MQTT topic in Pressline.
//!
//! Topics are written with small `Display` types so firmware can format them
//! into a fixed buffer (`core::fmt::Write`) and the gateway into a `String`,
//! from the same definition.
//!
//! Site broker (terminals ↔ gateway), `{t}` = terminal id:
//! - `pressline/v1/term/{t}/press`: native press (terminal → gateway)
//! - `pressline/v1/term/{t}/press/json`: JSON press (terminal → gateway)
//! - `pressline/v1/term/{t}/heartbeat`: heartbeat (terminal → gateway)
//! - `pressline/v1/term/{t}/status`: the terminal's last will, `offline`
//! - `pressline/v1/gw/{t}/ack`: native durable ack (gateway → terminal)
//! - `pressline/v1/gw/{t}/ack/json`: JSON durable ack (gateway → terminal)
//! - `pressline/v1/term/{t}/ota/request`, `.../ota/status` (terminal → gateway)
//!   and `pressline/v1/gw/{t}/ota/command`, `.../ota/chunk` (gateway →
//!   terminal): firmware transfer ([`crate::ota_transfer`])
//!
//! Terminals publish only under `pressline/v1/term/`, the gateway only under
//! `pressline/v1/gw/`, so the gateway's subscription to the terminal
//! namespace never sees its own acks, and anything else published there is
//! a malformed message to count and reject.
//!
//! Upstream broker (gateway → analytics), `{s}` = site id:
//! - `pressline/v1/{s}/{t}/press`: one JSON document per stored press
//! - `pressline/v1/{s}/gateway/status`: retained gateway status, last will `offline`
//! - `pressline/v1/{s}/{t}/health`: retained terminal health
//! - `pressline/v1/{s}/alert`: alert raised/cleared events
//! - `pressline/v1/{s}/ota`: rollout events

use core::fmt;

use crate::ident::validate_id;

/// Root of the site-broker topics terminals publish to.
pub const TERMINAL_ROOT: &str = "pressline/v1/term";
/// Root of the site-broker topics the gateway publishes to terminals on.
pub const GATEWAY_ROOT: &str = "pressline/v1/gw";
/// Filter the gateway subscribes to: everything terminals may publish.
pub const TERMINAL_FILTER: &str = "pressline/v1/term/#";
/// Filter the gateway's OTA service subscribes to.
pub const OTA_FILTER: &str = "pressline/v1/term/+/ota/+";
/// Filter an upstream consumer uses to receive everything from all sites.
pub const UPSTREAM_FILTER: &str = "pressline/v1/#";

macro_rules! terminal_topic {
    ($(#[$doc:meta])* $name:ident, $root:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'a>(pub &'a str);
        impl fmt::Display for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}/{}", $root, self.0, $suffix)
            }
        }
    };
}

terminal_topic!(
    /// `pressline/v1/term/{terminal}/press`
    PressTopic, TERMINAL_ROOT, "press");
terminal_topic!(
    /// `pressline/v1/term/{terminal}/press/json`
    PressJsonTopic, TERMINAL_ROOT, "press/json");
terminal_topic!(
    /// `pressline/v1/term/{terminal}/heartbeat`
    HeartbeatTopic, TERMINAL_ROOT, "heartbeat");
terminal_topic!(
    /// `pressline/v1/term/{terminal}/status` (the terminal's last will)
    TerminalStatusTopic, TERMINAL_ROOT, "status");
terminal_topic!(
    /// `pressline/v1/gw/{terminal}/ack`
    AckTopic, GATEWAY_ROOT, "ack");
terminal_topic!(
    /// `pressline/v1/gw/{terminal}/ack/json`
    AckJsonTopic, GATEWAY_ROOT, "ack/json");
terminal_topic!(
    /// `pressline/v1/term/{terminal}/ota/request`
    OtaRequestTopic, TERMINAL_ROOT, "ota/request");
terminal_topic!(
    /// `pressline/v1/term/{terminal}/ota/status`
    OtaStatusTopic, TERMINAL_ROOT, "ota/status");
terminal_topic!(
    /// `pressline/v1/gw/{terminal}/ota/command`
    OtaCommandTopic, GATEWAY_ROOT, "ota/command");
terminal_topic!(
    /// `pressline/v1/gw/{terminal}/ota/chunk`
    OtaChunkTopic, GATEWAY_ROOT, "ota/chunk");
terminal_topic!(
    /// `pressline/v1/gw/{terminal}/power`: the power settings the gateway
    /// wants the terminal to use ([`crate::power::PowerSettings`]).
    PowerTopic, GATEWAY_ROOT, "power");

/// `pressline/v1/{site}/ota` on the upstream broker: rollout events.
#[derive(Debug, Clone, Copy)]
pub struct OtaEventTopic<'a>(pub &'a str);

impl fmt::Display for OtaEventTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pressline/v1/{}/ota", self.0)
    }
}

/// `pressline/v1/{site}/{terminal}/press` on the upstream broker.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPressTopic<'a> {
    pub site: &'a str,
    pub terminal: &'a str,
}

impl fmt::Display for UpstreamPressTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pressline/v1/{}/{}/press", self.site, self.terminal)
    }
}

/// `pressline/v1/{site}/presses` on the upstream broker: a
/// `pressline.press_batch.v1` document.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPressBatchTopic<'a>(pub &'a str);

impl fmt::Display for UpstreamPressBatchTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pressline/v1/{}/presses", self.0)
    }
}

/// `pressline/v1/{site}/{terminal}/health` on the upstream broker (retained).
#[derive(Debug, Clone, Copy)]
pub struct TerminalHealthTopic<'a> {
    pub site: &'a str,
    pub terminal: &'a str,
}

impl fmt::Display for TerminalHealthTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pressline/v1/{}/{}/health", self.site, self.terminal)
    }
}

/// `pressline/v1/{site}/alert` on the upstream broker.
#[derive(Debug, Clone, Copy)]
pub struct AlertTopic<'a>(pub &'a str);

impl fmt::Display for AlertTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pressline/v1/{}/alert", self.0)
    }
}

/// `pressline/v1/{site}/gateway/status` on the upstream broker (retained).
#[derive(Debug, Clone, Copy)]
pub struct GatewayStatusTopic<'a>(pub &'a str);

impl fmt::Display for GatewayStatusTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pressline/v1/{}/gateway/status", self.0)
    }
}

/// A parsed topic a terminal published to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalTopic<'a> {
    Press(&'a str),
    PressJson(&'a str),
    Heartbeat(&'a str),
    Status(&'a str),
    OtaRequest(&'a str),
    OtaStatus(&'a str),
}

/// Why a topic is not a Pressline terminal topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Not under [`TERMINAL_ROOT`], or an unknown suffix.
    UnknownShape,
    /// The terminal level is not a valid id.
    BadTerminalId,
}

impl TopicError {
    pub const fn reason(self) -> &'static str {
        match self {
            TopicError::UnknownShape => "wrong_topic",
            TopicError::BadTerminalId => "bad_terminal_id",
        }
    }
}

/// Parses `pressline/v1/term/{terminal}/{press|press/json|heartbeat|status}`.
pub fn parse_terminal_topic(topic: &str) -> Result<TerminalTopic<'_>, TopicError> {
    let rest = topic
        .strip_prefix(TERMINAL_ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(TopicError::UnknownShape)?;
    let (terminal, suffix) = rest.split_once('/').ok_or(TopicError::UnknownShape)?;
    let parsed = match suffix {
        "press" => TerminalTopic::Press(terminal),
        "press/json" => TerminalTopic::PressJson(terminal),
        "heartbeat" => TerminalTopic::Heartbeat(terminal),
        "status" => TerminalTopic::Status(terminal),
        "ota/request" => TerminalTopic::OtaRequest(terminal),
        "ota/status" => TerminalTopic::OtaStatus(terminal),
        _ => return Err(TopicError::UnknownShape),
    };
    validate_id(terminal).map_err(|_| TopicError::BadTerminalId)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Buf {
        bytes: [u8; 96],
        len: usize,
    }
    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len + s.len();
            self.bytes
                .get_mut(self.len..end)
                .ok_or(fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    fn render(d: impl fmt::Display) -> Buf {
        let mut b = Buf {
            bytes: [0; 96],
            len: 0,
        };
        fmt::write(&mut b, format_args!("{d}")).unwrap();
        b
    }
    fn text(b: &Buf) -> &str {
        core::str::from_utf8(&b.bytes[..b.len]).unwrap()
    }

    #[test]
    fn formats_and_parses_terminal_topics() {
        let b = render(PressTopic("t-01"));
        assert_eq!(text(&b), "pressline/v1/term/t-01/press");
        assert_eq!(
            parse_terminal_topic(text(&b)),
            Ok(TerminalTopic::Press("t-01"))
        );
        let b = render(PressJsonTopic("t-01"));
        assert_eq!(
            parse_terminal_topic(text(&b)),
            Ok(TerminalTopic::PressJson("t-01"))
        );
        let b = render(HeartbeatTopic("t-01"));
        assert_eq!(
            parse_terminal_topic(text(&b)),
            Ok(TerminalTopic::Heartbeat("t-01"))
        );
        let b = render(TerminalStatusTopic("t-01"));
        assert_eq!(
            parse_terminal_topic(text(&b)),
            Ok(TerminalTopic::Status("t-01"))
        );
        let b = render(TerminalHealthTopic {
            site: "arena",
            terminal: "t-01",
        });
        assert_eq!(text(&b), "pressline/v1/arena/t-01/health");
        let b = render(AlertTopic("arena"));
        assert_eq!(text(&b), "pressline/v1/arena/alert");
        let b = render(AckTopic("t-01"));
        assert_eq!(text(&b), "pressline/v1/gw/t-01/ack");
        let b = render(AckJsonTopic("t-01"));
        assert_eq!(text(&b), "pressline/v1/gw/t-01/ack/json");
        let b = render(UpstreamPressTopic {
            site: "arena",
            terminal: "t-01",
        });
        assert_eq!(text(&b), "pressline/v1/arena/t-01/press");
        let b = render(OtaRequestTopic("t-01"));
        assert_eq!(
            parse_terminal_topic(text(&b)),
            Ok(TerminalTopic::OtaRequest("t-01"))
        );
        let b = render(OtaStatusTopic("t-01"));
        assert_eq!(
            parse_terminal_topic(text(&b)),
            Ok(TerminalTopic::OtaStatus("t-01"))
        );
        let b = render(OtaChunkTopic("t-01"));
        assert_eq!(text(&b), "pressline/v1/gw/t-01/ota/chunk");
        let b = render(OtaCommandTopic("t-01"));
        assert_eq!(text(&b), "pressline/v1/gw/t-01/ota/command");
        let b = render(OtaEventTopic("arena"));
        assert_eq!(text(&b), "pressline/v1/arena/ota");
        let b = render(GatewayStatusTopic("arena"));
        assert_eq!(text(&b), "pressline/v1/arena/gateway/status");
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "pressline/v1/term",
            "pressline/v1/term/",
            "pressline/v1/term/t1",
            "pressline/v1/term/t1/",
            "pressline/v1/term/t1/presses",
            "pressline/v1/term/t1/press/xml",
            "pressline/v1/term/t1/ack",
            "pressline/v2/term/t1/press",
            "other/t1/press",
        ] {
            assert_eq!(
                parse_terminal_topic(bad),
                Err(TopicError::UnknownShape),
                "{bad}"
            );
        }
        assert_eq!(
            parse_terminal_topic("pressline/v1/term/bad.id/press"),
            Err(TopicError::BadTerminalId)
        );
        assert_eq!(
            parse_terminal_topic("pressline/v1/term//press"),
            Err(TopicError::BadTerminalId)
        );
    }
}
