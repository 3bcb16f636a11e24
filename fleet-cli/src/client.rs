//! Talking to a site gateway's HTTP API, with errors that say what to do.

use pressline_protocol::api::{Release, Rollout};
use pressline_protocol::upstream::{Alert, TerminalHealth};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sites::Site;

/// A document from one site's gateway, with the site's name (shown in
/// tables and in `--json`, where the fields stay flat as the gateway
/// wrote them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtSite<T> {
    #[serde(default)]
    pub site: String,
    #[serde(flatten)]
    pub item: T,
}

impl<T> std::ops::Deref for AtSite<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.item
    }
}

/// Why a gateway could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("site {site}: gateway at {url} is unreachable ({detail}); check the address, the VPN and that the gateway runs (systemctl status pressline-gateway)")]
    Unreachable {
        site: String,
        url: String,
        detail: String,
    },
    #[error("site {site}: cannot reach the gateway at {url} securely: {detail}")]
    Certificate {
        site: String,
        url: String,
        detail: String,
    },
    #[error("site {site}: {detail}; fix the site with `fleet site add {site} --url URL --token-file FILE --ca CA.pem`")]
    TlsSetup { site: String, detail: String },
    #[error("site {site}: the gateway refused the API token ({detail}); update it with `fleet site add {site} --url URL --token-file <data-dir>/api-token`")]
    Unauthorized { site: String, detail: String },
    /// The token is valid but its scope does not cover the request (the
    /// gateway's answer names the token that does).
    #[error("site {site}: {detail}; give the site that token with `fleet site add {site} --url URL --token-file FILE`")]
    Forbidden { site: String, detail: String },
    #[error("site {site}: {detail}")]
    NotFound { site: String, detail: String },
    #[error("site {site}: gateway answered HTTP {status}: {detail}")]
    Http {
        site: String,
        status: u16,
        detail: String,
    },
    #[error("site {site}: gateway sent an unexpected answer ({detail}); is {url} a Pressline gateway of a compatible version?")]
    BadResponse {
        site: String,
        url: String,
        detail: String,
    },
}

/// The subset of `/api/v1/stats` the CLI uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GatewayStats {
    pub site: String,
    pub version: String,
    pub presses_today: u64,
    pub presses_stored: u64,
    pub forward_pending: u64,
    pub upstream_connected: Option<bool>,
    /// Why the upstream connection is failing (a certificate problem, a
    /// refused login); absent from older gateways.
    #[serde(default)]
    pub upstream_error: Option<String>,
    /// The upstream broker (cluster node) the gateway is on or trying;
    /// absent from older gateways.
    #[serde(default)]
    pub upstream_broker: Option<String>,
    pub storage_full: bool,
    /// Alert notification channels; absent from older gateways.
    #[serde(default)]
    pub notification_channels: Vec<NotificationChannel>,
}

/// One alert notification channel's delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NotificationChannel {
    pub channel: String,
    pub failing: bool,
    #[serde(default)]
    pub pending: u64,
    /// Rejected by the receiver for good; absent from older gateways.
    #[serde(default)]
    pub parked: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A request body.
enum Body<'b> {
    None,
    Json(serde_json::Value),
    Bytes(&'b [u8]),
}

pub struct Gateway<'a> {
    site: &'a Site,
    /// The agent, or why one could not be made (a missing CA file): the
    /// error is reported by the first call, per site, like any other.
    agent: Result<ureq::Agent, String>,
}

impl<'a> Gateway<'a> {
    pub fn new(site: &'a Site) -> Self {
        let agent = crate::tls::agent_for(site).map_err(|e| format!("{e:#}"));
        Gateway { site, agent }
    }

    /// One API call: the token, the error mapping and the JSON answer in
    /// one place.
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.site.url);
        let site = self.site.name.clone();
        let agent = self
            .agent
            .as_ref()
            .map_err(|detail| ClientError::TlsSetup {
                site: site.clone(),
                detail: detail.clone(),
            })?;
        let request = agent
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.site.token));
        let response = match body {
            Body::None => request.call(),
            Body::Json(value) => request.send_json(value),
            Body::Bytes(bytes) => request
                .set("Content-Type", "application/octet-stream")
                .send_bytes(bytes),
        };
        let response = match response {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let detail = r
                    .into_json::<serde_json::Value>()
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "no details".into());
                return Err(match status {
                    401 => ClientError::Unauthorized { site, detail },
                    403 => ClientError::Forbidden { site, detail },
                    404 => ClientError::NotFound { site, detail },
                    _ => ClientError::Http {
                        site,
                        status,
                        detail,
                    },
                });
            }
            Err(ureq::Error::Transport(t)) => {
                if let Some(detail) = crate::tls::explain(&t, self.site) {
                    return Err(ClientError::Certificate {
                        site,
                        url: self.site.url.clone(),
                        detail,
                    });
                }
                return Err(ClientError::Unreachable {
                    site,
                    url: self.site.url.clone(),
                    detail: t.to_string(),
                });
            }
        };
        response.into_json().map_err(|e| ClientError::BadResponse {
            site,
            url: self.site.url.clone(),
            detail: e.to_string(),
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, Body::None)
    }

    pub fn stats(&self) -> Result<GatewayStats, ClientError> {
        self.get("/api/v1/stats")
    }

    pub fn terminals(&self) -> Result<Vec<TerminalHealth>, ClientError> {
        self.get("/api/v1/terminals")
    }

    pub fn terminal(&self, id: &str) -> Result<TerminalHealth, ClientError> {
        self.get(&format!("/api/v1/terminals/{id}"))
    }

    /// Registers a provisioned terminal; returns whether it was new.
    pub fn register(
        &self,
        id: &str,
        secret_hex: &str,
        zone: Option<&str>,
    ) -> Result<bool, ClientError> {
        let answer: serde_json::Value = self.call(
            "POST",
            "/api/v1/terminals",
            Body::Json(serde_json::json!({ "id": id, "secret": secret_hex, "zone": zone })),
        )?;
        Ok(answer["new"].as_bool().unwrap_or(false))
    }

    /// Uploads a release artifact.
    pub fn upload_release(
        &self,
        bytes: &[u8],
        allow_downgrade: bool,
    ) -> Result<AtSite<Release>, ClientError> {
        let path = if allow_downgrade {
            "/api/v1/ota/releases?allow_downgrade=true"
        } else {
            "/api/v1/ota/releases"
        };
        Ok(self.at_site(self.call("POST", path, Body::Bytes(bytes))?))
    }

    /// The releases uploaded to this gateway.
    pub fn releases(&self) -> Result<Vec<AtSite<Release>>, ClientError> {
        let releases: Vec<Release> = self.get("/api/v1/ota/releases")?;
        Ok(releases.into_iter().map(|r| self.at_site(r)).collect())
    }

    pub fn start_rollout(&self, body: &serde_json::Value) -> Result<AtSite<Rollout>, ClientError> {
        Ok(self.at_site(self.call("POST", "/api/v1/ota/rollouts", Body::Json(body.clone()))?))
    }

    pub fn rollout(&self, id: u32) -> Result<AtSite<Rollout>, ClientError> {
        Ok(self.at_site(self.get(&format!("/api/v1/ota/rollouts/{id}"))?))
    }

    /// `pause`, `resume`, `abort` or `retry-failed`.
    pub fn rollout_command(&self, id: u32, action: &str) -> Result<AtSite<Rollout>, ClientError> {
        Ok(self.at_site(self.call(
            "POST",
            &format!("/api/v1/ota/rollouts/{id}/{action}"),
            Body::Json(serde_json::json!({})),
        )?))
    }

    fn at_site<T>(&self, item: T) -> AtSite<T> {
        AtSite {
            site: self.site.name.clone(),
            item,
        }
    }

    /// Revokes a terminal.
    pub fn revoke(&self, id: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(
            "POST",
            &format!("/api/v1/terminals/{id}/revoke"),
            Body::Json(serde_json::json!({})),
        )
        .map(|_| ())
    }

    /// Asks the gateway for a terminal's power settings; returns its answer.
    pub fn set_power(
        &self,
        id: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(
            "POST",
            &format!("/api/v1/terminals/{id}/power"),
            Body::Json(body),
        )
    }

    /// Acknowledges an alert; returns it as the gateway now has it.
    pub fn acknowledge(&self, id: u64, by: &str, note: Option<&str>) -> Result<Alert, ClientError> {
        self.call(
            "POST",
            &format!("/api/v1/alerts/{id}/ack"),
            Body::Json(serde_json::json!({ "by": by, "note": note })),
        )
    }

    pub fn alerts(&self, open_only: bool) -> Result<Vec<Alert>, ClientError> {
        self.get(if open_only {
            "/api/v1/alerts?open=true"
        } else {
            "/api/v1/alerts"
        })
    }
}

/// Runs `f` against every site in parallel (a field engineer's laptop may
/// reach dozens of gateways over slow links), keeping the sites' order.
pub fn for_each_site<T: Send>(sites: &[Site], f: impl Fn(&Gateway) -> T + Sync) -> Vec<(Site, T)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = sites
            .iter()
            .map(|site| {
                let f = &f;
                scope.spawn(move || f(&Gateway::new(site)))
            })
            .collect();
        sites
            .iter()
            .cloned()
            .zip(
                handles
                    .into_iter()
                    .map(|h| h.join().expect("site worker does not panic")),
            )
            .collect()
    })
}
