//! One module per subcommand.

pub mod alerts;
pub mod health;
pub mod site;
pub mod status;
pub mod terminals;

/// What a command's run produced: its output and exit code.
pub struct Outcome {
    pub stdout: String,
    /// Problems per site (unreachable, refused token), printed to stderr.
    pub warnings: Vec<String>,
    pub code: u8,
}

/// Exit codes scripts can rely on.
pub mod exit {
    /// Everything reachable and nothing critical.
    pub const OK: u8 = 0;
    /// A site was unreachable, or (for `status`) a critical alert is open.
    pub const PROBLEM: u8 = 1;
    /// Bad usage or configuration (unknown site, bad flags, bad file).
    pub const USAGE: u8 = 2;
}
