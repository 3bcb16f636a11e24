//! `pressline-central` processes: consumers from the RabbitMQ cluster into
//! PostgreSQL.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Central {
    child: Child,
    pub http_port: u16,
}

/// `pressline-central declare`: the queue and its binding, before any
/// gateway publishes.
pub fn declare(amqp: &[String]) {
    command(amqp, &["declare"]);
}

/// `pressline-central SUBCOMMAND --amqp … ARGS…`: its output, whatever
/// its exit.
pub fn run(amqp: &[String], args: &[&str]) -> std::process::Output {
    Command::new(super::bin("pressline-central"))
        .args(&args[..1])
        .args(["--amqp", &amqp.join(",")])
        .args(&args[1..])
        .output()
        .unwrap()
}

/// `pressline-central SUBCOMMAND --amqp … ARGS…`, which must succeed;
/// its standard output.
pub fn command(amqp: &[String], args: &[&str]) -> String {
    let out = run(amqp, args);
    assert!(
        out.status.success(),
        "pressline-central {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Central {
    pub fn start(amqp: &[String], postgres: &str, extra: &[&str]) -> Central {
        let http_port = super::free_port();
        let child = Command::new(super::bin("pressline-central"))
            .args(["run", "--amqp", &amqp.join(","), "--postgres", postgres])
            .arg("--http")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(extra)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("pressline-central starts");
        let central = Central { child, http_port };
        super::wait_until("pressline-central consuming and connected", || {
            ureq::get(&format!("http://127.0.0.1:{http_port}/healthz"))
                .call()
                .is_ok()
        });
        central
    }

    pub fn stats(&self) -> Value {
        ureq::get(&format!("http://127.0.0.1:{}/api/v1/stats", self.http_port))
            .call()
            .expect("central stats")
            .into_json()
            .unwrap()
    }

    pub fn metrics(&self) -> String {
        ureq::get(&format!("http://127.0.0.1:{}/metrics", self.http_port))
            .call()
            .expect("central metrics")
            .into_string()
            .unwrap()
    }

    /// The process dies at once, whatever it holds (SIGKILL).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
