//! Terminal identity at the gateway.
//!
//! Terminals are registered with their secret (`POST /api/v1/terminals`,
//! done by `fleet provision`). Then:
//! - in **closed** mode the site broker accepts only registered, unrevoked
//!   terminals logging in as themselves (user = client id = terminal id,
//!   password derived from the secret, [`pressline_protocol::auth`]),
//!   refused logins get a CONNACK saying why, and each terminal publishes
//!   only on its own topics ([`crate::security::mqtt_access`]);
//! - in either mode, a press from a registered terminal must carry a valid
//!   MAC made with that terminal's secret, so in open mode a device cannot
//!   publish presses as a registered terminal;
//! - presses claiming to come from a revoked terminal are rejected.
//! In **open** mode (demos, third-party buttons) unregistered terminals are
//! accepted without a login or MAC.

use pressline_host::sync::RwLockExt;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use pressline_protocol::auth::{mqtt_password, press_mac, same_mac, Secret};
use pressline_protocol::Press;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// `[security] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Anyone may connect; registered terminals must still prove presses.
    Open,
    /// Only registered terminals, logged in as themselves: the default, so
    /// a gateway started without a config is not open to the venue Wi-Fi.
    #[default]
    Closed,
}

/// Where the security mode came from, for the start-up line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeSource {
    #[default]
    Default,
    ConfigFile,
    CommandLine,
    Demo,
}

/// `[security]` in the config.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    pub mode: SecurityMode,
    #[serde(skip)]
    pub mode_source: ModeSource,
}

impl SecurityConfig {
    /// The start-up line: which mode, why, and what it means.
    pub fn describe(&self) -> String {
        let why = match self.mode_source {
            ModeSource::Default => "the default",
            ModeSource::ConfigFile => "[security] mode in the config file",
            ModeSource::CommandLine => "--open on the command line",
            ModeSource::Demo => "gateway demo",
        };
        match self.mode {
            SecurityMode::Closed => format!(
                "security mode: closed ({why}): only terminals registered with `fleet provision` may connect, each on its own topics; --open or [security] mode = \"open\" admits any client"
            ),
            SecurityMode::Open => format!(
                "security mode: OPEN ({why}): any MQTT client may connect and publish; registered terminals must still sign presses; use closed mode in production"
            ),
        }
    }
}

/// A registered terminal (persisted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub terminal: String,
    /// The secret, hex.
    pub secret: String,
    #[serde(default)]
    pub zone: Option<String>,
    pub registered_at: String,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    secret: Secret,
    password: String,
    revoked: bool,
}

/// Parses a 64-character hex secret.
pub fn parse_secret(hex: &str) -> Option<Secret> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut secret = [0u8; 32];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(secret)
}

/// Registered terminals, shared by the broker's login check, ingest and the API.
#[derive(Clone)]
pub struct Identities {
    mode: SecurityMode,
    store: Store,
    entries: Arc<RwLock<HashMap<String, Entry>>>,
    /// Closes a client's broker session (set once the broker runs).
    sessions: Arc<OnceLock<rumqttd::SessionEnder>>,
}

impl Identities {
    pub fn load(mode: SecurityMode, store: Store) -> Identities {
        let mut entries = HashMap::new();
        for c in store.load_credentials::<Credential>() {
            match parse_secret(&c.secret) {
                Some(secret) => {
                    entries.insert(
                        c.terminal.clone(),
                        Entry {
                            password: mqtt_password(&secret).to_string(),
                            secret,
                            revoked: c.revoked,
                        },
                    );
                }
                None => {
                    tracing::warn!(terminal = %c.terminal, "stored credential has a bad secret; ignored")
                }
            }
        }
        Identities {
            mode,
            store,
            entries: Arc::new(RwLock::new(entries)),
            sessions: Arc::default(),
        }
    }

    /// From now on, registering or revoking a terminal closes the broker
    /// session under its id: a client that held the id before it was
    /// registered (open mode), or one whose login was revoked, keeps no
    /// session in which to speak for the terminal, nor a will to fire.
    pub fn end_sessions_with(&self, sessions: rumqttd::SessionEnder) {
        let _ = self.sessions.set(sessions);
    }

    fn end_session(&self, terminal: &str) {
        if let Some(sessions) = self.sessions.get() {
            if !sessions.end(terminal) {
                tracing::warn!(
                    terminal,
                    "cannot end the terminal's broker session: the broker has stopped"
                );
            }
        }
    }

    pub fn mode(&self) -> SecurityMode {
        self.mode
    }

    /// Registered terminals and their zones (for the scores).
    pub fn credentials(&self) -> Vec<Credential> {
        self.store.load_credentials()
    }

    /// Registers (or re-registers, un-revoking) a terminal. Returns whether
    /// it was new.
    pub fn register(
        &self,
        terminal: &str,
        secret: Secret,
        zone: Option<String>,
        now: String,
    ) -> Result<bool, StoreError> {
        let credential = Credential {
            terminal: terminal.to_string(),
            secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
            zone,
            registered_at: now,
            revoked: false,
        };
        // Saved (and flushed) before the broker accepts its login.
        self.store.save_credential(terminal, &credential)?;
        let entry = Entry {
            password: mqtt_password(&secret).to_string(),
            secret,
            revoked: false,
        };
        let mut entries = self.entries.write_locked();
        let previous = entries.insert(terminal.to_string(), entry);
        // Whoever holds the id now holds it without this login (someone
        // else, or the terminal with its revoked or former secret). Ended
        // under the lock logins are checked under: a login with the new
        // secret reaches the broker's router after the ending, never
        // before it.
        let same = previous
            .as_ref()
            .is_some_and(|p| !p.revoked && p.secret == secret);
        if !same {
            self.end_session(terminal);
        }
        drop(entries);
        Ok(previous.is_none())
    }

    /// Revokes a terminal: its login and its presses are refused from now
    /// on. Returns false if it is not registered.
    pub fn revoke(&self, terminal: &str) -> Result<bool, StoreError> {
        if !self.entries.read_locked().contains_key(terminal) {
            return Ok(false);
        }
        // Saved (and flushed) first, outside the lock logins and presses
        // are checked under: a revocation that did not reach the disk is
        // an error, not one a restart quietly undoes.
        if let Some(mut c) = self.store.load_credential::<Credential>(terminal)? {
            c.revoked = true;
            self.store.save_credential(terminal, &c)?;
        }
        let mut entries = self.entries.write_locked();
        if let Some(entry) = entries.get_mut(terminal) {
            entry.revoked = true;
        }
        self.end_session(terminal);
        drop(entries);
        Ok(true)
    }

    /// Whether `terminal` is registered (revoked ones included: their ids
    /// stay theirs).
    pub fn is_registered(&self, terminal: &str) -> bool {
        self.entries.read_locked().contains_key(terminal)
    }

    /// The broker's login check: a registered, unrevoked terminal logging
    /// in as itself.
    pub fn check_login(&self, client_id: &str, user: &str, password: &str) -> bool {
        let entries = self.entries.read_locked();
        let ok = client_id == user
            && entries.get(client_id).is_some_and(|e| {
                !e.revoked
                    && e.password.len() == password.len()
                    && e.password
                        .bytes()
                        .zip(password.bytes())
                        .fold(0u8, |a, (x, y)| a | (x ^ y))
                        == 0
            });
        if !ok {
            tracing::warn!(
                client_id,
                user,
                "refused a terminal login (unknown, revoked or wrong credentials)"
            );
        }
        ok
    }

    /// Whether a press claiming to be from `terminal` may be stored; the
    /// error is the reject reason.
    pub fn check_press(&self, terminal: &str, press: &Press) -> Result<(), &'static str> {
        self.check_signed(terminal, press.mac, |secret| {
            press_mac(secret, terminal, press.id, press.button)
        })
    }

    /// Whether a heartbeat claiming to be from `terminal` may be used.
    pub fn check_heartbeat(
        &self,
        terminal: &str,
        heartbeat: &pressline_protocol::heartbeat::ReceivedHeartbeat,
    ) -> Result<(), &'static str> {
        let mut body = [0u8; pressline_protocol::heartbeat::HEARTBEAT_BUF_LEN];
        let Ok(body) = heartbeat.signed_body(&mut body) else {
            return Err("malformed");
        };
        self.check_signed(terminal, heartbeat.mac, |secret| {
            pressline_protocol::auth::heartbeat_mac(secret, terminal, body)
        })
    }

    /// The rule for any signed message: registered terminals must sign with
    /// their secret, revoked ones are refused, and unregistered ones only
    /// pass in open mode.
    fn check_signed(
        &self,
        terminal: &str,
        mac: Option<[u8; pressline_protocol::auth::MAC_LEN]>,
        expected: impl FnOnce(&Secret) -> [u8; pressline_protocol::auth::MAC_LEN],
    ) -> Result<(), &'static str> {
        let entries = self.entries.read_locked();
        match entries.get(terminal) {
            Some(e) if e.revoked => Err("revoked"),
            Some(e) => match mac {
                None => Err("missing_mac"),
                Some(mac) if same_mac(&mac, &expected(&e.secret)) => Ok(()),
                Some(_) => Err("bad_mac"),
            },
            None if self.mode == SecurityMode::Closed => Err("unknown_terminal"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::{Button, PressId};

    fn press(mac: Option<[u8; 8]>) -> Press {
        Press {
            id: PressId { boot: 0, seq: 1 },
            button: Button::Happy,
            age_ms: None,
            mac,
        }
    }

    #[test]
    fn presses_and_logins_are_checked_against_the_registered_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let ids = Identities::load(SecurityMode::Closed, store.clone());
        let secret = [9u8; 32];
        assert!(ids
            .register("t-a", secret, Some("food".into()), "now".into())
            .unwrap());
        let good = press_mac(&secret, "t-a", PressId { boot: 0, seq: 1 }, Button::Happy);
        assert_eq!(ids.check_press("t-a", &press(Some(good))), Ok(()));
        assert_eq!(ids.check_press("t-a", &press(None)), Err("missing_mac"));
        assert_eq!(
            ids.check_press("t-b", &press(Some(good))),
            Err("unknown_terminal")
        );
        let forged = press_mac(
            &[1u8; 32],
            "t-a",
            PressId { boot: 0, seq: 1 },
            Button::Happy,
        );
        assert_eq!(ids.check_press("t-a", &press(Some(forged))), Err("bad_mac"));
        let password = mqtt_password(&secret);
        assert!(ids.check_login("t-a", "t-a", &password));
        assert!(
            !ids.check_login("t-a", "t-b", &password),
            "user must be the client id"
        );
        assert!(!ids.check_login("t-a", "t-a", "wrong"));
        assert!(ids.revoke("t-a").unwrap());
        assert!(!ids.check_login("t-a", "t-a", &password));
        assert_eq!(ids.check_press("t-a", &press(Some(good))), Err("revoked"));
        // Survives a reload.
        let again = Identities::load(SecurityMode::Closed, store);
        assert_eq!(again.check_press("t-a", &press(Some(good))), Err("revoked"));
        assert_eq!(again.credentials()[0].zone.as_deref(), Some("food"));
    }

    #[test]
    fn open_mode_accepts_unregistered_terminals_but_not_forgeries() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Identities::load(
            SecurityMode::Open,
            Store::open(dir.path(), 1 << 20).unwrap(),
        );
        assert_eq!(ids.check_press("script", &press(None)), Ok(()));
        ids.register("t-a", [9u8; 32], None, "now".into()).unwrap();
        assert_eq!(ids.check_press("t-a", &press(None)), Err("missing_mac"));
        assert_eq!(parse_secret(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_secret("xyz"), None);
    }
}
