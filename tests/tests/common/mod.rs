//! Process harness for the end-to-end tests: real `gateway`, `terminal-sim`
//! and Mosquitto processes on free loopback ports, and an upstream consumer.
//!
//! Nothing here sleeps to synchronise: every wait polls an observable
//! condition (a port, an HTTP counter, a received message) with a generous
//! timeout, and says what it was waiting for when it gives up.
#![allow(dead_code)]

pub mod browser;
pub mod central;
pub mod host;
pub mod pg_server;
pub mod pki;
pub mod rabbitmq;
pub mod smtp;

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pressline_protocol::upstream::{GatewayStatus, UpstreamPress};
use serde_json::Value;

/// Generous: CI machines are small and busy.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A binary of this workspace, built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-xxxx → target/debug/NAME
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` until it holds or `TIMEOUT` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_port(port: u16, what: &str) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until(what, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} to exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TLS listener for Mosquitto, as a central broker authenticating site
/// gateways by client certificate is configured.
#[derive(Debug, Clone)]
pub struct MosquittoTls {
    pub ca_file: PathBuf,
    pub server: pki::Issued,
    /// `require_certificate true`: mutual TLS.
    pub require_certificate: bool,
    /// The client certificate's common name is the MQTT username, and this
    /// ACL file applies (as in deploy/mosquitto-central.conf).
    pub acl_file: Option<PathBuf>,
    /// Logins on the TLS listener (made with `mosquitto_passwd`).
    pub password_file: Option<PathBuf>,
}

/// A real Mosquitto broker standing in for the central upstream broker.
pub struct Mosquitto {
    /// Plain listener (analytics consumers in the tests use it).
    pub port: u16,
    /// TLS listener, when started with one.
    pub tls_port: u16,
    /// Change and `restart()` to serve another certificate.
    pub tls: Option<MosquittoTls>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, None)
    }

    /// Mosquitto with a TLS listener next to the plain one.
    pub fn start_with(dir: &Path, tls: Option<MosquittoTls>) -> Mosquitto {
        let dir = dir.join("mosquitto");
        fs::create_dir_all(&dir).unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            tls_port: free_port(),
            tls,
            dir,
            child: None,
        };
        m.spawn();
        m
    }

    /// `mqtts://HOST:TLS_PORT` for the gateway.
    pub fn tls_url(&self, host: &str) -> String {
        format!("mqtts://{host}:{}", self.tls_port)
    }

    fn spawn(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        // Persistence keeps the consumer's session and queued messages across
        // a restart, like a production central broker would; TCP_NODELAY as
        // deploy/mosquitto-central.conf recommends.
        // `user root`: when the tests run as root, Mosquitto would drop to
        // its own user before loading the (owner-only) TLS key.
        // A password file on the TLS listener needs per-listener settings,
        // so the consumer's plain listener stays anonymous.
        let per_listener = self.tls.as_ref().is_some_and(|t| t.password_file.is_some());
        let mut text = format!(
            "user root\nper_listener_settings {per_listener}\npersistence true\npersistence_location {dir}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\nlog_dest file {dir}/mosquitto.log\n\
             listener {port} 127.0.0.1\nallow_anonymous true\n",
            port = self.port,
            dir = self.dir.display()
        );
        if let Some(tls) = &self.tls {
            text += &format!(
                "listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate {req}\n",
                port = self.tls_port,
                ca = tls.ca_file.display(),
                cert = tls.server.cert.display(),
                key = tls.server.key.display(),
                req = tls.require_certificate,
            );
            if let Some(passwords) = &tls.password_file {
                text += &format!(
                    "allow_anonymous false\npassword_file {}\n",
                    passwords.display()
                );
            }
            if let Some(acl) = &tls.acl_file {
                text += &format!(
                    "use_identity_as_username true\nacl_file {}\n",
                    acl.display()
                );
            }
        }
        fs::write(&conf, text).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (the test command installs it)");
        self.child = Some(child);
        let ports = [Some(self.port), self.tls.as_ref().map(|_| self.tls_port)];
        for port in ports.into_iter().flatten() {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let child = self.child.as_mut().unwrap();
            let mut exited = false;
            wait_until("mosquitto to listen", || {
                exited = child.try_wait().unwrap().is_some();
                exited || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            assert!(
                !exited,
                "mosquitto exited at start; its log:\n{}",
                fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
            );
        }
    }

    /// Graceful stop (SIGTERM), as an operator restarting the central broker.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            wait_exit(&mut child, "mosquitto");
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A crash of the broker's machine (SIGKILL).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            wait_exit(&mut child, "mosquitto");
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Options for starting a gateway.
#[derive(Clone, Default)]
pub struct GatewayOptions {
    pub site: String,
    pub upstream: Option<String>,
    /// Extra TOML written to a config file passed with --config.
    pub config_toml: Option<String>,
    /// Extra command-line arguments (e.g. --upstream-ca FILE).
    pub args: Vec<String>,
    /// The gateway serves HTTPS with a certificate from this CA.
    pub https_ca: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Where the MQTT listeners bind (default loopback): the lab
    /// network's address for host terminals.
    pub mqtt_bind: Option<std::net::Ipv4Addr>,
    /// Run in closed mode, the gateway's default. Otherwise the harness
    /// passes `--open`, as a trial with unregistered simulated terminals
    /// would.
    pub closed: bool,
}

/// An HTTP agent trusting `ca` (HTTPS) or none (plain HTTP).
pub fn http_agent(ca: Option<&Path>) -> ureq::Agent {
    let mut builder = ureq::AgentBuilder::new().timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.tls_config(Arc::new(config));
    }
    builder.build()
}

/// A real `gateway run` process.
pub struct Gateway {
    pub mqtt_port: u16,
    pub mqtt_v5_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    options: GatewayOptions,
    agent: ureq::Agent,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Gateway {
    pub fn start(dir: &Path, options: GatewayOptions) -> Gateway {
        let mut g = Gateway::unstarted(dir, options);
        g.spawn_first();
        g
    }

    /// A gateway on free ports and its own data directory, not yet running.
    fn unstarted(dir: &Path, options: GatewayOptions) -> Gateway {
        Gateway {
            mqtt_port: free_port(),
            mqtt_v5_port: free_port(),
            http_port: free_port(),
            data_dir: dir.join(format!("data-{}", options.site)),
            log: dir.join(format!("gateway-{}.log", options.site)),
            agent: http_agent(options.https_ca.as_deref()),
            options,
            dir: dir.to_path_buf(),
            child: None,
            starts: 0,
        }
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("gateway exited early; log:\n{log}");
        }
    }

    /// First start: free ports are picked before the gateway binds them,
    /// so a parallel test can take one in between; pick again then.
    fn spawn_first(&mut self) {
        for _ in 0..4 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(log) if log.contains("cannot listen") => {
                    self.mqtt_port = free_port();
                    self.mqtt_v5_port = free_port();
                    self.http_port = free_port();
                }
                Err(log) => panic!("gateway exited early; log:\n{log}"),
            }
        }
        panic!("gateway found no free ports; log:\n{}", self.log());
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let mut cmd = Command::new(bin("gateway"));
        cmd.arg("run")
            .arg("--site")
            .arg(&self.options.site)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--mqtt-listen")
            .arg(format!("{}:{}", self.mqtt_host(), self.mqtt_port))
            .arg("--mqtt-v5-listen")
            .arg(format!("{}:{}", self.mqtt_host(), self.mqtt_v5_port))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port));
        if let Some(up) = &self.options.upstream {
            cmd.arg("--upstream").arg(up);
        }
        if let Some(toml) = &self.options.config_toml {
            let path = self.dir.join(format!("gateway-{}.toml", self.options.site));
            fs::write(&path, toml).unwrap();
            cmd.arg("--config").arg(path);
        }
        if !self.options.closed {
            cmd.arg("--open");
        }
        cmd.args(&self.options.args);
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.env("RUST_LOG", "info,rumqttd=warn")
            .env("NO_COLOR", "1");
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        self.child = Some(cmd.spawn().expect("gateway starts"));
        let url = format!("{}/healthz", self.url());
        let agent = self.agent.clone();
        let log_path = self.log.clone();
        let child = self.child.as_mut().unwrap();
        let mut exited = None;
        wait_until("gateway /healthz", || {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                return true;
            }
            agent
                .get(&url)
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok()
        });
        match exited {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(format!(
                    "({status})\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                ))
            }
        }
    }

    fn mqtt_host(&self) -> std::net::Ipv4Addr {
        self.options
            .mqtt_bind
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
    }

    pub fn broker(&self) -> String {
        format!("{}:{}", self.mqtt_host(), self.mqtt_port)
    }

    /// The MQTT 5 listener (the firmware's protocol).
    pub fn broker_v5(&self) -> String {
        format!("{}:{}", self.mqtt_host(), self.mqtt_v5_port)
    }

    /// The admin API token the gateway generated on first start.
    pub fn token(&self) -> String {
        self.token_in("api-token")
    }

    /// The token the gateway generated into `file` (`api-token`,
    /// `operator-token`, `viewer-token`) on first start.
    pub fn token_in(&self, file: &str) -> String {
        fs::read_to_string(self.data_dir.join(file))
            .unwrap_or_else(|e| panic!("{file} written at start: {e}"))
            .trim()
            .to_string()
    }

    /// An API request with `token`: its status code and body.
    pub fn request(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.url()))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json")
            .timeout(Duration::from_secs(5));
        let result = if method == "GET" {
            request.call()
        } else {
            request.send_string(body)
        };
        match result {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.https_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    /// GET an API path with the token; returns the JSON body.
    pub fn get(&self, path: &str) -> Value {
        self.agent
            .get(&format!("{}{path}", self.url()))
            .set("Authorization", &format!("Bearer {}", self.token()))
            .timeout(Duration::from_secs(5))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_json()
            .expect("JSON answer")
    }

    pub fn stats(&self) -> Value {
        self.get("/api/v1/stats")
    }

    /// `/healthz`: its status code and body (no token needed).
    pub fn healthz(&self) -> (u16, String) {
        match self
            .agent
            .get(&format!("{}/healthz", self.url()))
            .timeout(Duration::from_secs(5))
            .call()
        {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET /healthz: {e}"),
        }
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        self.agent
            .get(&format!("{}/metrics", self.url()))
            .set("Authorization", &format!("Bearer {}", self.token()))
            .timeout(Duration::from_secs(5))
            .call()
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
            .into_string()
            .expect("text")
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name]
            .as_u64()
            .unwrap_or_else(|| panic!("stat {name} missing"))
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The process hangs (SIGSTOP): its kernel still takes connections
    /// and acknowledges TCP, nothing answers above that.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal(child, "STOP");
        }
    }

    /// Back from [`Gateway::freeze`] (SIGCONT).
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            signal(child, "CONT");
        }
    }

    pub fn restart_after_crash(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Stops the gateway (SIGTERM) and starts it again on the same data
    /// and ports with other options, as an operator fixing its config.
    pub fn restart_with(&mut self, options: GatewayOptions) {
        if self.child.is_some() {
            self.terminate();
        }
        self.agent = http_agent(options.https_ca.as_deref());
        self.options = options;
        self.spawn();
    }

    /// Starts a gateway that is expected to refuse to start; returns its
    /// exit status and log.
    pub fn start_refused(dir: &Path, options: GatewayOptions) -> String {
        let mut g = Gateway::unstarted(dir, options);
        match g.try_spawn() {
            Ok(()) => panic!("the gateway started; log:\n{}", g.log()),
            Err(status_and_log) => status_and_log,
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("gateway running");
        signal(&child, "TERM");
        wait_exit(&mut child, "gateway")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("gateway running").id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}

/// Publishes one QoS 1 message with Mosquitto's own client, as a script
/// or another vendor's terminal would.
pub fn mosquitto_pub(port: u16, topic: &str, message: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", message])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub to {topic} failed");
}

/// One QoS 1 message per line of `lines`, from one `mosquitto_pub -l`.
pub fn mosquitto_pub_lines(port: u16, topic: &str, lines: &str) {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
        .args(["-t", topic])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "mosquitto_pub -l to {topic} failed"
    );
}

/// A tmpfs the test mounts: a real, small filesystem that fills up. Needs
/// root (CI runs as root); unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts `size_kib` KiB at `path` (created); `None` when not root.
    pub fn mount(path: &Path, size_kib: u64) -> Option<Tmpfs> {
        if !running_as_root("mounting a tmpfs needs root") {
            return None;
        }
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mount -t tmpfs at {} failed",
            path.display()
        );
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Grows (or shrinks) the filesystem in place, as an operator freeing
    /// or adding space.
    pub fn resize(&self, size_kib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size_kib}k")])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "remount of {} failed",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a gateway being killed may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Whether the tests run as root. When not: `false` after saying why the
/// test cannot run, and in CI (`CI` set) a failure instead, so a test
/// that cannot run never passes there.
pub fn running_as_root(why: &str) -> bool {
    let uid = Command::new("id").arg("-u").output();
    let root = uid.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot run under CI: {why} (CI runs the tests as root)"
        );
        println!("skipped: {why} (CI runs as root)");
    }
    root
}

/// A `terminal-sim` run in the background (killed when dropped).
pub struct Sim {
    child: Child,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    pub fn spawn(broker: &str, args: &[&str]) -> Sim {
        let child = Command::new(bin("terminal-sim"))
            .arg("--broker")
            .arg(broker)
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("terminal-sim starts");
        Sim { child }
    }

    /// Pulls the plug on every terminal of this simulator at once (SIGKILL:
    /// no MQTT DISCONNECT, so the broker publishes their last wills).
    pub fn pull_the_plug(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the simulator to finish; asserts it exited 0 (every press
    /// durably acked) and returns its JSON report.
    pub fn expect_all_acked(mut self) -> Value {
        let status = wait_exit(&mut self.child, "terminal-sim");
        let mut out = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(status.success(), "terminal-sim failed ({status}): {out}");
        serde_json::from_str(out.trim()).expect("terminal-sim --json report")
    }
}

impl Sim {
    /// Stops the simulator as Ctrl-C does and returns its JSON report
    /// (whatever its exit status: stopping early is not a failure here).
    pub fn stop_and_report(mut self) -> Value {
        signal(&self.child, "INT");
        wait_exit(&mut self.child, "terminal-sim");
        let mut out = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        serde_json::from_str(out.trim()).expect("terminal-sim --json report")
    }
}

/// An analytics consumer on the upstream broker: a persistent QoS 1
/// subscription to everything Pressline publishes.
pub struct Consumer {
    pub presses: Arc<Mutex<Vec<UpstreamPress>>>,
    /// Every other message: (topic, JSON).
    pub others: Arc<Mutex<Vec<(String, Value)>>>,
    pub statuses: Arc<Mutex<Vec<GatewayStatus>>>,
    stop: Arc<AtomicBool>,
}

impl Consumer {
    pub fn start(port: u16, client_id: &str) -> Consumer {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 100);
        let presses = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let others = Arc::new(Mutex::new(Vec::new()));
        let o = others.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let (p, s, st, sub) = (
            presses.clone(),
            statuses.clone(),
            stop.clone(),
            subscribed.clone(),
        );
        std::thread::spawn(move || {
            for event in connection.iter() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe(pressline_protocol::topic::UPSTREAM_FILTER, QoS::AtLeastOnce)
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sub.store(true, Ordering::Relaxed),
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if publish.topic.ends_with("/gateway/status") {
                            s.lock().unwrap().push(
                                serde_json::from_slice(&publish.payload).expect("status schema"),
                            );
                        } else if publish.topic.ends_with("/press") {
                            let press: UpstreamPress =
                                serde_json::from_slice(&publish.payload).expect("press schema");
                            assert_eq!(
                                publish.topic,
                                format!("pressline/v1/{}/{}/press", press.site, press.terminal)
                            );
                            p.lock().unwrap().push(press);
                        } else if publish.topic.ends_with("/presses") {
                            let batch: pressline_protocol::upstream::PressBatch =
                                serde_json::from_slice(&publish.payload)
                                    .expect("press batch schema");
                            assert_eq!(batch.schema, "pressline.press_batch.v1");
                            assert_eq!(
                                publish.topic,
                                format!("pressline/v1/{}/presses", batch.site)
                            );
                            assert!(!batch.presses.is_empty());
                            p.lock().unwrap().extend(batch.presses);
                        } else {
                            let value = serde_json::from_slice(&publish.payload)
                                .expect("upstream payloads are JSON");
                            o.lock().unwrap().push((publish.topic.clone(), value));
                        }
                    }
                    Ok(_) => {}
                    // Reconnect pacing while the broker is down.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        wait_until("consumer subscribed upstream", || {
            subscribed.load(Ordering::Relaxed)
        });
        Consumer {
            presses,
            statuses,
            others,
            stop,
        }
    }

    /// Messages (other than presses and gateway status) on topics ending
    /// with `suffix`.
    pub fn others_on(&self, suffix: &str) -> Vec<(String, Value)> {
        self.others
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with(suffix))
            .cloned()
            .collect()
    }

    /// Distinct press ids received so far, boots counted from each
    /// terminal's first (see [`relative_boots`]).
    pub fn ids(&self) -> BTreeSet<String> {
        relative_boots(self.raw_ids())
    }

    /// Distinct press ids received so far, as sent.
    pub fn raw_ids(&self) -> BTreeSet<String> {
        self.presses
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.id.clone())
            .collect()
    }

    pub fn last_status(&self) -> Option<GatewayStatus> {
        self.statuses.lock().unwrap().last().cloned()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The press ids a simulator run must produce:
/// `{site}:{prefix}{index:03}:{boot}:{seq}`.
/// Press ids `site:terminal:boot:seq` with each terminal's boots counted
/// from the lowest one seen. A terminal starts its boot numbers at a random
/// point of the 32-bit space (a new generation on a fresh flash: PROTOCOL.md,
/// "Press identity"), so tests compare boots relative to it, as
/// [`expected_ids`] writes them.
pub fn relative_boots(ids: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let parsed: Vec<(String, String, u32, String)> = ids
        .into_iter()
        .map(|id| {
            let parts: Vec<&str> = id.split(':').collect();
            assert_eq!(parts.len(), 4, "press id {id}");
            let boot = parts[2].parse().unwrap_or_else(|_| panic!("press id {id}"));
            (
                parts[0].to_string(),
                parts[1].to_string(),
                boot,
                parts[3].to_string(),
            )
        })
        .collect();
    let mut first: std::collections::HashMap<(&str, &str), u32> = Default::default();
    for (site, terminal, boot, _) in &parsed {
        let lowest = first.entry((site, terminal)).or_insert(*boot);
        *lowest = (*lowest).min(*boot);
    }
    parsed
        .iter()
        .map(|(site, terminal, boot, seq)| {
            let base = first[&(site.as_str(), terminal.as_str())];
            format!("{site}:{terminal}:{}:{seq}", boot - base)
        })
        .collect()
}

/// The ids a run of `terminals` simulated terminals × `presses` makes,
/// with boots relative to each terminal's first (see [`relative_boots`]).
pub fn expected_ids(
    site: &str,
    prefix: &str,
    terminals: usize,
    presses: u32,
    boot: u32,
) -> BTreeSet<String> {
    (0..terminals)
        .flat_map(|t| (0..presses).map(move |seq| format!("{site}:{prefix}{t:03}:{boot}:{seq}")))
        .collect()
}

/// Runs `fleet --config CONFIG ARGS`; returns (exit code, stdout, stderr).
pub fn fleet(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("fleet"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `fleet site add NAME` for a running gateway (its token from the data
/// directory); asserts it worked.
pub fn add_site(config: &Path, name: &str, gateway: &Gateway) {
    let token = gateway.data_dir.join("api-token");
    let (code, out, err) = fleet(
        config,
        &[
            "site",
            "add",
            name,
            "--url",
            &gateway.url(),
            "--token-file",
            token.to_str().expect("UTF-8 temp path"),
        ],
    );
    assert_eq!(code, 0, "fleet site add {name}: {out}{err}");
}

/// A gateway for `site` forwarding to `mosquitto`.
pub fn upstream_gateway(dir: &Path, site: &str, mosquitto: &Mosquitto) -> Gateway {
    Gateway::start(
        dir,
        GatewayOptions {
            site: site.into(),
            upstream: Some(mosquitto.url()),
            ..Default::default()
        },
    )
}

/// Starts a server process and waits until it accepts connections on
/// `port`.
pub fn start_listening(mut cmd: Command, port: u16, what: &str) -> Child {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(&format!("{what} listens"), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    child
}

pub fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
