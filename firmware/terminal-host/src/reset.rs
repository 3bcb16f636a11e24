//! Resets of a host terminal: the process starts again as itself (the
//! same arguments, the same standard input), which runs the bootloader on
//! the flash file first, as a board's reset does. The reason is passed on
//! in the environment, so the next boot's heartbeats report it.

use std::os::unix::process::CommandExt;

use pressline_protocol::ResetReason;

const VARIABLE: &str = "PRESSLINE_HOST_RESET";

/// Why this process started.
pub fn reason() -> ResetReason {
    match std::env::var(VARIABLE).as_deref() {
        Ok("watchdog") => ResetReason::Watchdog,
        Ok("software") => ResetReason::Software,
        _ => ResetReason::PowerOn,
    }
}

/// Starts this terminal again, now. Only returns if that fails.
pub fn reset(why: ResetReason) -> std::io::Error {
    // File descriptors other than stdin/out/err (the TAP device above
    // all: the next boot opens it again) must not survive the exec.
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        for fd in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|fd| *fd > 2)
        {
            // SAFETY: sets a flag on a descriptor number; an fd closed
            // meanwhile only makes the call fail.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let value = match why {
        ResetReason::Watchdog => "watchdog",
        _ => "software",
    };
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VARIABLE, value)
        .exec()
}
