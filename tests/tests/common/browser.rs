//! A real headless Chromium driven over the DevTools protocol (a
//! WebSocket), for tests that click: the page's own scripts do the work,
//! exactly as for a person at the screen.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::{wait_until, TIMEOUT};

/// Headless Chromium on loopback only, nothing fetched in the background.
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

pub struct Browser {
    child: Child,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
    /// DevTools events seen while waiting for answers.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on `url` and connects to its page.
    pub fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("/usr/bin/chromium")
            .args(HEADLESS)
            .args([
                "--window-size=1280,1500",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts (the test command installs it)");
        // Chromium writes the port it picked into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let mut port = String::new();
        wait_until("Chromium's DevTools port", || {
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string))
                .unwrap_or_default();
            !port.is_empty()
        });
        let mut page_socket = String::new();
        wait_until("Chromium's page target", || {
            let Ok(list) = ureq::get(&format!("http://127.0.0.1:{port}/json/list")).call() else {
                return false;
            };
            let list: Value = list.into_json().unwrap_or(Value::Null);
            page_socket = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .unwrap_or_default()
                .to_string();
            !page_socket.is_empty()
        });
        let (socket, _) = tungstenite::connect(page_socket.as_str()).expect("DevTools WebSocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        Browser {
            child,
            socket,
            next_id: 1,
            events: Vec::new(),
            _profile: profile,
        }
    }

    /// One DevTools command; its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(tungstenite::Message::text(message))
            .unwrap();
        loop {
            let message = self.socket.read().expect("DevTools answer");
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method} failed: {value}");
                return value["result"].clone();
            }
            if value.get("method").is_some() {
                self.events.push(value);
            }
        }
    }

    /// Evaluates JavaScript in the page (promises awaited); its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "script failed: {expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    pub fn wait_for(&mut self, what: &str, expression: &str) {
        wait_until(what, || self.eval(expression) == Value::Bool(true));
    }

    /// A PNG of the page as it is now.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Browser {
    /// From now on, console messages and uncaught exceptions are kept for
    /// [`Browser::console_errors`].
    pub fn watch_console(&mut self) {
        self.call("Runtime.enable", json!({}));
        self.call("Log.enable", json!({}));
    }

    /// Errors the page logged or threw since the last call.
    pub fn console_errors(&mut self) -> Vec<String> {
        // A round trip, so events sent before it have arrived.
        self.eval("1");
        std::mem::take(&mut self.events)
            .into_iter()
            .filter_map(|e| match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    Some(e["params"]["exceptionDetails"].to_string())
                }
                Some("Runtime.consoleAPICalled") if e["params"]["type"] == "error" => {
                    Some(e["params"]["args"].to_string())
                }
                Some("Log.entryAdded") if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// Goes to `url` and waits until the page there has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        let expected = serde_json::to_string(url).unwrap();
        self.wait_for(
            &format!("{url} loaded"),
            &format!("location.href === {expected} && document.readyState === 'complete'"),
        );
    }

    /// The viewport `width` CSS pixels wide (a phone's when `mobile`).
    pub fn set_width(&mut self, width: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": if mobile { 844 } else { 1000 },
                   "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// How far the page runs past the right edge of the viewport (0 when
    /// it fits: everything wide scrolls inside its own box).
    pub fn horizontal_overflow(&mut self) -> i64 {
        self.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .as_i64()
            .unwrap_or(i64::MAX)
    }

    /// At desktop (1280 px) and phone (390 px) widths: no horizontal
    /// overflow and no console errors, with a screenshot of each kept as
    /// `{name}-{width}.png` in `dir`.
    pub fn check_widths(&mut self, name: &str, dir: &Path) {
        for (width, mobile) in [(1280, false), (390, true)] {
            self.set_width(width, mobile);
            // Layout after the resize, before measuring.
            self.eval(
                "new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))",
            );
            let overflow = self.horizontal_overflow();
            let path = dir.join(format!("{name}-{width}.png"));
            self.screenshot(&path);
            assert_eq!(
                overflow,
                0,
                "{name} at {width} px runs {overflow} px past the right edge (see {})",
                path.display()
            );
            eprintln!("{name} at {width} px: {}", path.display());
        }
        let errors = self.console_errors();
        assert!(errors.is_empty(), "{name}: console errors: {errors:#?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
