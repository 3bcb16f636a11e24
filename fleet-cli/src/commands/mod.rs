//! One module per subcommand.

pub mod alerts;
pub mod batch;
pub mod health;
pub mod ota;
pub mod probe;
pub mod provision;
pub mod report;
pub mod rollout;
pub mod site;
pub mod status;
pub mod terminals;

use serde::Serialize;

use crate::client::{for_each_site, ClientError, Gateway};
use crate::sites::Site;

/// Gathers one list from every site; a site that fails becomes a warning.
pub fn gather<T: Send>(
    sites: &[Site],
    fetch: impl Fn(&Gateway) -> Result<Vec<T>, ClientError> + Sync,
) -> (Vec<T>, Vec<String>) {
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for (_, result) in for_each_site(sites, fetch) {
        match result {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => warnings.push(e.to_string()),
        }
    }
    (rows, warnings)
}

/// A list command's outcome: JSON or the human rendering, exit 1 when a
/// site could not be read.
pub fn list_outcome<T: Serialize>(
    rows: &[T],
    warnings: Vec<String>,
    json: bool,
    human: impl FnOnce(&[T]) -> String,
) -> anyhow::Result<Outcome> {
    let stdout = if json {
        format!("{}\n", serde_json::to_string_pretty(rows)?)
    } else {
        human(rows)
    };
    Ok(Outcome::reporting(stdout, warnings))
}

/// What a command's run produced: its output and exit code.
pub struct Outcome {
    pub stdout: String,
    /// Problems per site (unreachable, refused token), printed to stderr.
    pub warnings: Vec<String>,
    pub code: u8,
}

impl Outcome {
    /// Output plus per-site warnings: exit 1 if anything went wrong.
    pub fn reporting(stdout: String, warnings: Vec<String>) -> Outcome {
        let code = if warnings.is_empty() {
            exit::OK
        } else {
            exit::PROBLEM
        };
        Outcome {
            stdout,
            warnings,
            code,
        }
    }
}

/// Exit codes scripts can rely on.
pub mod exit {
    /// Everything reachable and nothing critical.
    pub const OK: u8 = 0;
    /// A site was unreachable or refused, a debug probe or terminal failed,
    /// or (for `status`) a critical alert is open.
    pub const PROBLEM: u8 = 1;
    /// Bad usage or configuration (unknown site, bad flags, bad file).
    pub const USAGE: u8 = 2;
}
