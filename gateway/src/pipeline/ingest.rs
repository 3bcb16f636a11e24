//! Terminal traffic in: the consumer of rumqttd's local link.
//!
//! Runs on its own thread, decodes and validates each publish, and hands
//! valid presses to the committer. It must keep up: when it falls behind,
//! rumqttd's router drops messages silently once its log segments rotate.
//! It therefore does no I/O of its own, and answers `Unschedule` with
//! `ready()` (without that, rumqttd stops delivering to the link for good).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pressline_protocol::heartbeat::ReceivedHeartbeat;
use pressline_protocol::topic::{parse_terminal_topic, TerminalTopic};
use pressline_protocol::{json, Heartbeat, Press};
use rumqttd::local::LinkRx;
use rumqttd::Notification;

use crate::clock::unix_ms_now;
use crate::pipeline::acks::Form;
use crate::stats::{RateLimitedLog, Stats};
use crate::terminals::registry::RegistryInput;

/// How often a quiet link looks whether the gateway is stopping.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// A decoded press on its way to the committer.
#[derive(Debug, Clone)]
pub struct IncomingPress {
    pub terminal: String,
    pub form: Form,
    pub press: Press,
    pub received_at_ms: i64,
}

/// Why a publish was rejected: a stable reason label plus detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: &'static str,
    pub detail: String,
}

/// A decoded publish from a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalMessage {
    Press {
        terminal: String,
        form: Form,
        press: Press,
    },
    Heartbeat {
        terminal: String,
        /// With its energy counters and signature, when it has them.
        received: ReceivedHeartbeat,
    },
    /// The terminal's last will: it is gone.
    Offline { terminal: String },
    /// Firmware-update traffic: the OTA service has its own link for it.
    Ota,
}

/// Decodes one publish from the terminal namespace.
pub fn decode_message(topic: &[u8], payload: &[u8]) -> Result<TerminalMessage, Reject> {
    let topic_text = std::str::from_utf8(topic).map_err(|_| Reject {
        reason: "wrong_topic",
        detail: "topic is not UTF-8".into(),
    })?;
    let parsed = parse_terminal_topic(topic_text).map_err(|e| Reject {
        reason: e.reason(),
        detail: format!("topic {topic_text:?} is not pressline/v1/term/{{terminal}}/press[/json]"),
    })?;
    let reject = |terminal: &str, e: pressline_protocol::DecodeError| Reject {
        reason: e.reason(),
        detail: format!("terminal {terminal}: {e}"),
    };
    let (terminal, form, decoded) = match parsed {
        TerminalTopic::Press(t) => (t, Form::Native, Press::decode(payload)),
        TerminalTopic::PressJson(t) => (t, Form::Json, json::decode_press(t, payload)),
        TerminalTopic::Heartbeat(t) => {
            let received = Heartbeat::decode(payload).map_err(|e| reject(t, e))?;
            return Ok(TerminalMessage::Heartbeat {
                terminal: t.to_string(),
                received,
            });
        }
        TerminalTopic::OtaRequest(_) | TerminalTopic::OtaStatus(_) => {
            return Ok(TerminalMessage::Ota)
        }
        TerminalTopic::Status(t) => {
            if payload != pressline_protocol::heartbeat::WILL_OFFLINE {
                return Err(reject(t, pressline_protocol::DecodeError::Malformed));
            }
            return Ok(TerminalMessage::Offline {
                terminal: t.to_string(),
            });
        }
    };
    let press = decoded.map_err(|e| reject(terminal, e))?;
    Ok(TerminalMessage::Press {
        terminal: terminal.to_string(),
        form,
        press,
    })
}

/// Decodes a press publish (anything else is a reject).
pub fn decode(topic: &[u8], payload: &[u8]) -> Result<(String, Form, Press), Reject> {
    match decode_message(topic, payload)? {
        TerminalMessage::Press {
            terminal,
            form,
            press,
        } => Ok((terminal, form, press)),
        _ => Err(Reject {
            reason: "wrong_topic",
            detail: "not a press topic".into(),
        }),
    }
}

/// Consumes the link until `stopping` (then returns, dropping its
/// senders: the committer drains what is queued and the registry what is
/// sent), or until the broker or the committer goes away. Presses that
/// arrive after the stop are never acked: their terminals resend them.
pub fn run(
    mut link: LinkRx,
    to_committer: SyncSender<IncomingPress>,
    to_registry: tokio::sync::mpsc::Sender<RegistryInput>,
    identities: crate::terminals::identity::Identities,
    power: crate::terminals::power::PowerPlans,
    stats: Arc<Stats>,
    stopping: Arc<AtomicBool>,
) {
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    loop {
        if stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let notification = match link.recv_deadline(Instant::now() + STOP_CHECK) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) if e.is_timeout() => continue,
            Err(e) => {
                tracing::error!(error = ?e, "site broker link closed; no more presses can be received");
                return;
            }
        };
        let publish = match notification {
            Notification::Forward(forward) => forward.publish,
            Notification::Unschedule => {
                if let Err(e) = link.ready() {
                    tracing::error!(error = ?e, "site broker link closed");
                    return;
                }
                continue;
            }
            _ => continue,
        };
        match decode_message(&publish.topic, &publish.payload) {
            Ok(TerminalMessage::Press {
                terminal,
                form,
                press,
            }) => {
                // Identity: a registered terminal must sign its presses.
                if let Err(reason) = identities.check_press(&terminal, &press) {
                    stats.reject(reason);
                    if let Some(suppressed) = log.admit(reason, Instant::now()) {
                        tracing::warn!(reason, suppressed, terminal = %terminal, "rejected a press that does not prove its terminal (nothing stored)");
                    }
                    continue;
                }
                stats
                    .presses_received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let incoming = IncomingPress {
                    terminal,
                    form,
                    press,
                    received_at_ms: unix_ms_now(),
                };
                if to_committer.send(incoming).is_err() {
                    return; // shutting down
                }
            }
            // Health reports are best effort: if the registry is swamped, a
            // heartbeat is skipped (the next one repairs it), never a press.
            Ok(TerminalMessage::Heartbeat { terminal, received }) => {
                // A forged heartbeat could fake another terminal's health.
                if let Err(reason) = identities.check_heartbeat(&terminal, &received) {
                    stats.reject(reason);
                    if let Some(suppressed) = log.admit(reason, Instant::now()) {
                        tracing::warn!(reason, suppressed, terminal = %terminal, "rejected a heartbeat that does not prove its terminal");
                    }
                    continue;
                }
                stats
                    .heartbeats_received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // A terminal running other settings than the site's wish
                // is sent the wish, out of bounds or not.
                if let Some(energy) = &received.energy {
                    power.handle_reported(&terminal, &energy.settings, Instant::now());
                }
                // Settings out of bounds are not believed (they would set
                // the terminal's offline limit): the counters are dropped.
                let energy = received.energy.filter(|e| e.settings.validate().is_ok());
                if energy.is_none() && received.energy.is_some() {
                    if let Some(suppressed) = log.admit("bad_power_settings", Instant::now()) {
                        tracing::warn!(suppressed, terminal = %terminal, "a heartbeat's power settings are out of bounds: its energy counters are ignored");
                    }
                }
                let _ = to_registry.try_send(RegistryInput::Heartbeat {
                    terminal,
                    heartbeat: received.heartbeat,
                    energy,
                    at_ms: unix_ms_now(),
                });
            }
            Ok(TerminalMessage::Ota) => {}
            Ok(TerminalMessage::Offline { terminal }) => {
                let _ = to_registry.try_send(RegistryInput::Offline {
                    terminal,
                    at_ms: unix_ms_now(),
                });
            }
            Err(reject) => {
                stats.reject(reject.reason);
                if let Some(suppressed) = log.admit(reject.reason, Instant::now()) {
                    tracing::warn!(
                        reason = reject.reason,
                        suppressed,
                        "rejected publish: {} (nothing stored; similar rejects are logged at most every 10 s)",
                        reject.detail
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::{Button, PressId};

    #[test]
    fn decodes_both_press_forms() {
        let p = Press {
            id: PressId { boot: 1, seq: 2 },
            button: Button::Happy,
            age_ms: None,
            mac: None,
        };
        let mut buf = [0u8; 32];
        let bytes = p.encode(&mut buf).unwrap().to_vec();
        assert_eq!(
            decode(b"pressline/v1/term/t1/press", &bytes),
            Ok(("t1".into(), Form::Native, p))
        );
        let (_, form, q) = decode(
            b"pressline/v1/term/t1/press/json",
            br#"{"seq":2,"boot":1,"button":"happy"}"#,
        )
        .unwrap();
        assert_eq!((form, q), (Form::Json, p));
    }

    #[test]
    fn rejects_carry_stable_reasons() {
        let reason = |t: &[u8], p: &[u8]| decode(t, p).unwrap_err().reason;
        assert_eq!(reason(b"pressline/v1/term/t1/pres", &[1]), "wrong_topic");
        assert_eq!(
            reason(b"pressline/v1/term/t.1/press", &[1]),
            "bad_terminal_id"
        );
        assert_eq!(reason(&[0xFF, 0xFE], &[1]), "wrong_topic");
        assert_eq!(reason(b"pressline/v1/term/t1/press", &[]), "empty");
        assert_eq!(
            reason(b"pressline/v1/term/t1/press", &[7, 1, 1, 1, 0]),
            "unknown_version"
        );
        assert_eq!(
            reason(b"pressline/v1/term/t1/press", &[1, 1, 1, 9, 0]),
            "button_out_of_range"
        );
        assert_eq!(
            reason(b"pressline/v1/term/t1/press/json", b"nope"),
            "malformed"
        );
        assert_eq!(
            reason(b"pressline/v1/term/t1/press", &[1u8; 600]),
            "oversized"
        );
        assert_eq!(
            reason(b"pressline/v1/term/t1/heartbeat", &[1, 0]),
            "malformed"
        );
        assert_eq!(
            reason(b"pressline/v1/term/t1/status", b"online?"),
            "malformed"
        );
        assert_eq!(
            decode_message(b"pressline/v1/term/t1/status", b"offline"),
            Ok(TerminalMessage::Offline {
                terminal: "t1".into()
            })
        );
    }
}
