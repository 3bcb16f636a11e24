//! Host terminals (`terminal-host`: the firmware's application on Linux)
//! on a private network.
//!
//! [`NetLab::enter`] moves the calling test thread, and every process and
//! thread it starts from then on, into a network namespace of its own,
//! with loopback and a bridge `plbr0` at 10.77.0.1/24; each terminal gets a
//! TAP device on that bridge. Nothing here touches the machine's own
//! interfaces, and nothing is addressed outside the namespace. It needs
//! root and `/dev/net/tun` (as CI has).

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use super::{bin, wait_until};

/// The gateway's address on the lab network.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A private network namespace with a bridge for TAP devices. With
/// `PRESSLINE_LAB_CAPTURE=FILE` in the environment its traffic is recorded
/// there (tcpdump, pcap) for reading with Wireshark or tshark.
pub struct NetLab {
    taps: usize,
    capture: Option<std::process::Child>,
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Some(mut c) = self.capture.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2) runs");
    assert!(status.success(), "ip {}", args.join(" "));
}

impl NetLab {
    /// Enters a new network namespace (this thread only); `None` when not
    /// root, after saying so; in CI (`CI=true`) that is a failure, never a
    /// silent pass.
    pub fn enter() -> Option<NetLab> {
        if !super::running_as_root(
            "host terminals need root for a network namespace and TAP devices",
        ) {
            return None;
        }
        // SAFETY: unshare(2) with a flag; affects this thread's namespaces.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "plbr0", "type", "bridge"]);
        ip(&["addr", "add", &format!("{GATEWAY_IP}/24"), "dev", "plbr0"]);
        ip(&["link", "set", "plbr0", "up"]);
        let capture = std::env::var_os("PRESSLINE_LAB_CAPTURE").map(|file| {
            let child = Command::new("tcpdump")
                .args(["-i", "plbr0", "-U", "-s", "0", "-w"])
                .arg(&file)
                .stderr(Stdio::null())
                .spawn()
                .expect("tcpdump runs");
            wait_until("tcpdump listening", || {
                std::fs::metadata(&file).is_ok_and(|m| m.len() > 0)
            });
            child
        });
        Some(NetLab { taps: 0, capture })
    }

    /// A new TAP device on the bridge, and the address its terminal takes.
    pub fn tap(&mut self) -> (String, String) {
        let n = self.taps;
        self.taps += 1;
        let name = format!("pltap{n}");
        ip(&["tuntap", "add", "dev", &name, "mode", "tap"]);
        ip(&["link", "set", &name, "master", "plbr0"]);
        ip(&["link", "set", &name, "up"]);
        (name, format!("10.77.0.{}/24", 10 + n))
    }
}

/// How a host terminal is started.
#[derive(Clone)]
pub struct HostOptions {
    pub tap: String,
    pub address: String,
    pub broker: String,
    pub flash: PathBuf,
    /// `--terminal ID` (open mode) or `--provisioning FILE`.
    pub identity: Identity,
    pub ota_public_key: Option<PathBuf>,
    pub exit_when_acked: bool,
    /// `--trial-window-secs`.
    pub trial_window_secs: u64,
    /// `--battery-mv FILE`.
    pub battery_mv: Option<PathBuf>,
    /// Further arguments (`--power battery`, ...).
    pub extra_args: Vec<String>,
}

#[derive(Clone)]
pub enum Identity {
    Terminal(String),
    Provisioning(PathBuf),
}

/// A running `terminal-host` process. Its standard output (one line per
/// press queued and per ack) and standard error are collected.
pub struct HostTerminal {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pub lines: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<String>>,
}

impl HostTerminal {
    pub fn start(options: &HostOptions) -> HostTerminal {
        let mut cmd = Command::new(bin("terminal-host"));
        cmd.args(["--tap", &options.tap, "--address", &options.address])
            .args(["--broker", &options.broker])
            .arg("--flash")
            .arg(&options.flash);
        match &options.identity {
            Identity::Terminal(id) => cmd.args(["--terminal", id]),
            Identity::Provisioning(file) => cmd.arg("--provisioning").arg(file),
        };
        if let Some(key) = &options.ota_public_key {
            cmd.arg("--ota-public-key").arg(key);
        }
        if options.exit_when_acked {
            cmd.arg("--exit-when-acked");
        }
        cmd.args([
            "--trial-window-secs",
            &options.trial_window_secs.to_string(),
        ]);
        if let Some(file) = &options.battery_mv {
            cmd.arg("--battery-mv").arg(file);
        }
        cmd.args(&options.extra_args);
        cmd.env(
            "RUST_LOG",
            std::env::var("PRESSLINE_HOST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("terminal-host starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let collected = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut log = collected.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdin = child.stdin.take();
        HostTerminal {
            child: Some(child),
            stdin,
            lines,
            log,
        }
    }

    /// Presses a button (1 very unhappy … 4 very happy).
    pub fn press(&mut self, button: u8) {
        self.send(&button.to_string());
    }

    /// Makes a task of the terminal spin forever.
    pub fn hang(&mut self) {
        self.send("hang");
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("terminal-host reads its stdin");
        stdin.flush().unwrap();
    }

    /// No more presses: with `--exit-when-acked` it exits once they are acked.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Every `queued BOOT SEQ` line so far, as (boot, seq).
    pub fn queued(&self) -> Vec<(u32, u32)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let mut words = l.strip_prefix("queued ")?.split(' ');
                Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
            })
            .collect()
    }

    /// Lines starting with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_line(&self, what: &str, prefix: &str) {
        wait_until(what, || !self.lines_starting(prefix).is_empty());
    }

    /// Waits for it to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let mut status = None;
        wait_until("terminal-host to exit", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    /// `kill -9`: the power goes.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stdin = None;
    }
}

impl Drop for HostTerminal {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- terminal-host log ----\n{}", self.log());
        }
    }
}

/// The flash file of terminal `name` in `dir`.
pub fn flash_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.flash"))
}
