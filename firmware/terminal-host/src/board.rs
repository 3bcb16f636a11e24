//! The host board: presses from standard input, a watchdog thread, resets
//! by re-exec, and a line on standard output for each press queued and
//! each ack (what scripts and tests follow).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use pressline_protocol::{Ack, Button, PressId, ResetReason};
use pressline_terminal_app::{Board, Feedback, Presses};

/// Presses read from standard input, on their way to the application.
pub static PRESSES: Presses<CriticalSectionRawMutex, 64> = Presses::new();

/// The watchdog period (the RP2040's is at most 8.3 s).
pub const WATCHDOG: Duration = Duration::from_secs(8);

/// What the stdin reader, the watchdog and the application share.
pub struct Shared {
    /// Valid press lines read from standard input.
    read: AtomicU64,
    /// Presses the application took (queued or dropped).
    handled: AtomicU64,
    /// Presses in the flash queue.
    queued: AtomicUsize,
    /// Standard input is closed.
    eof: AtomicBool,
    /// A `hang` line: a task is to spin forever.
    pub hang: AtomicBool,
    /// When the watchdog was last fed (ms since `started`).
    fed_ms: AtomicU64,
    started: Instant,
    exit_when_acked: bool,
}

impl Shared {
    pub fn new(exit_when_acked: bool) -> Shared {
        Shared {
            read: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            eof: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            fed_ms: AtomicU64::new(0),
            started: Instant::now(),
            exit_when_acked,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn set_queued(&self, n: usize) {
        self.queued.store(n, SeqCst);
    }

    /// `--exit-when-acked`: standard input is closed, every press read
    /// was taken by the application, and the flash queue is empty.
    pub fn exit_if_all_acked(&self) {
        if self.exit_when_acked
            && self.eof.load(SeqCst)
            && self.read.load(SeqCst) == self.handled.load(SeqCst)
            && self.queued.load(SeqCst) == 0
        {
            let _ = std::io::stdout().flush();
            log::info!("every press read was acked by the gateway; exiting");
            std::process::exit(0);
        }
    }

    /// Called by the watchdog task while the application checks in.
    pub fn feed(&self) {
        self.fed_ms.store(self.now_ms(), SeqCst);
    }

    /// Reads presses from standard input (unbuffered, so a reset that
    /// re-executes this process loses no line it has not seen): `1`-`4`
    /// is a press of that button (very unhappy … very happy); `hang`
    /// makes a task spin forever, as a hung one would.
    pub fn read_stdin(&'static self) {
        use std::io::Read as _;
        use std::os::fd::FromRawFd;
        // SAFETY: fd 0 is standard input; ManuallyDrop keeps it open.
        let mut stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match stdin.read(&mut byte) {
                Ok(0) | Err(_) => break,
                Ok(_) if byte[0] != b'\n' => {
                    line.push(byte[0]);
                    continue;
                }
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim().to_string();
            line.clear();
            match text.as_str() {
                "" => {}
                "hang" => {
                    log::warn!("fault injection: a task hangs now");
                    self.hang.store(true, SeqCst);
                }
                t => match t.parse::<u8>().ok().and_then(Button::from_score) {
                    Some(button) => {
                        // Waits while the application catches up, as a
                        // button does not press faster than it is read.
                        while !PRESSES.has_room() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        PRESSES.press(button);
                        self.read.fetch_add(1, SeqCst);
                    }
                    None => {
                        log::warn!("ignoring input line {t:?}: expected 1-4 (a button) or hang")
                    }
                },
            }
        }
        self.eof.store(true, SeqCst);
    }

    /// The hardware watchdog: resets the terminal when nothing fed it for
    /// [`WATCHDOG`].
    pub fn watchdog(&'static self) -> ! {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let starving = self.now_ms().saturating_sub(self.fed_ms.load(SeqCst));
            if starving >= WATCHDOG.as_millis() as u64 {
                log::error!("watchdog: not fed for {} ms; resetting", starving);
                let error = crate::reset::reset(ResetReason::Watchdog);
                log::error!("cannot reset: {error}");
                std::process::exit(70);
            }
        }
    }
}

/// The board the application sees.
pub struct HostBoard {
    pub shared: &'static Shared,
    pub reset_reason: ResetReason,
    /// `--battery-mv`: where the battery voltage is read from.
    pub battery: Option<std::path::PathBuf>,
    /// The "radio" is on (a TAP device has none; the lines show the
    /// application turning it on and off).
    pub radio_on: bool,
}

/// Processor time this process used, user and system (what a board's
/// awake time is on a host).
fn cpu_time_ms() -> Option<u64> {
    // SAFETY: getrusage writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    Some(ms(usage.ru_utime) + ms(usage.ru_stime))
}

/// Millivolts in a battery file (surrounding white space ignored).
fn read_millivolts(path: &std::path::Path) -> Result<u16, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.trim()
        .parse()
        .map_err(|_| format!("{:?} is not a voltage in millivolts (0-65535)", text.trim()))
}

fn line(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

impl Board for HostBoard {
    async fn connect_network(&mut self) -> Result<(), pressline_terminal_app::NetworkError> {
        // A TAP device is always "joined"; the address is static.
        if !self.radio_on {
            self.radio_on = true;
            line(format_args!("radio on"));
        }
        Ok(())
    }

    async fn disconnect_network(&mut self) {
        if self.radio_on {
            self.radio_on = false;
            line(format_args!("radio off"));
        }
    }

    fn awake_ms(&mut self) -> Option<u64> {
        cpu_time_ms()
    }

    async fn rssi_dbm(&mut self) -> Option<i8> {
        None
    }

    fn battery_mv(&mut self) -> Option<u16> {
        let path = self.battery.as_ref()?;
        match read_millivolts(path) {
            Ok(mv) => Some(mv),
            Err(e) => {
                // As a board whose ADC read failed: no reading this time.
                log::warn!("--battery-mv {}: {e}; not reported", path.display());
                None
            }
        }
    }

    fn reset_reason(&self) -> ResetReason {
        self.reset_reason
    }

    fn reboot(&mut self) -> ! {
        let _ = std::io::stdout().flush();
        let error = crate::reset::reset(ResetReason::Software);
        log::error!("cannot reboot: {error}");
        std::process::exit(70);
    }

    fn presses_released(&mut self, ack: &Ack, queued: usize) {
        line(format_args!(
            "acked {} {} {}",
            ack.boot, ack.first_seq, ack.last_seq
        ));
        self.shared.set_queued(queued);
        self.shared.exit_if_all_acked();
    }
}

/// What the visitor would see: a line on standard output per press taken.
pub struct HostFeedback {
    pub shared: &'static Shared,
}

impl Feedback for HostFeedback {
    fn press_queued(&mut self, id: PressId, queued: usize) {
        line(format_args!("queued {} {}", id.boot, id.seq));
        self.shared.handled.fetch_add(1, SeqCst);
        self.shared.set_queued(queued);
    }

    fn press_not_queued(&mut self) {
        line(format_args!("not-queued"));
        self.shared.handled.fetch_add(1, SeqCst);
    }
}
