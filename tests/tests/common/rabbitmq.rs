//! A three-node RabbitMQ cluster with the MQTT plugin, started by
//! `deploy/rabbitmq-cluster.sh` in a directory of the test's own, on
//! loopback ports, and stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct RabbitCluster {
    dir: PathBuf,
    /// MQTT ports of nodes 1, 2 and 3.
    pub mqtt_ports: [u16; 3],
    /// AMQP ports of nodes 1, 2 and 3.
    pub amqp_ports: [u16; 3],
    /// AMQP over TLS (clusters started with TLS).
    pub amqps_ports: [u16; 3],
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq-cluster.sh")
}

/// A base port whose 43 successors are free (the script's port plan),
/// below the kernel's ephemeral range (32768 and up), so no outgoing
/// connection or `free_port()` of another test can take one meanwhile.
fn free_base_port() -> u16 {
    for _ in 0..50 {
        // Spread parallel tests' clusters apart (a free port as entropy).
        let base = 20000 + (u32::from(super::free_port()) * 7919 % 12_000) as u16;
        if (base + 1..=base + 43).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no run of 43 free loopback ports found for the RabbitMQ cluster");
}

impl RabbitCluster {
    pub fn start(dir: &Path) -> RabbitCluster {
        RabbitCluster::start_with(dir, None)
    }

    /// With AMQP and MQTT over TLS too, from a directory holding `ca.pem`,
    /// `server.pem` and `server.key`.
    pub fn start_with(dir: &Path, tls: Option<&Path>) -> RabbitCluster {
        let dir = dir.join("rabbitmq");
        let mut attempt = 0;
        let base = loop {
            let base = free_base_port();
            let mut command = Command::new("bash");
            if let Some(tls) = tls {
                command.env("RABBITMQ_CLUSTER_TLS", tls);
            }
            let out = command
                .arg(script())
                .arg("start")
                .arg(&dir)
                .arg(base.to_string())
                .output()
                .expect("deploy/rabbitmq-cluster.sh");
            if out.status.success() {
                break base;
            }
            let output = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            attempt += 1;
            // Another test's cluster took a port between the check and the
            // bind: the script has stopped what it started; try elsewhere.
            assert!(
                output.contains("eaddrinuse") && attempt < 3,
                "the RabbitMQ cluster did not start:\n{output}"
            );
            let _ = std::fs::remove_dir_all(&dir);
        };
        RabbitCluster {
            dir,
            mqtt_ports: [base + 1, base + 2, base + 3],
            amqp_ports: [base + 11, base + 12, base + 13],
            amqps_ports: [base + 31, base + 32, base + 33],
        }
    }

    /// `mqtt://127.0.0.1:PORT` of node `i` (1..=3).
    pub fn url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_ports[i - 1])
    }

    /// `amqp://127.0.0.1:PORT/%2f` of node `i` (1..=3), as the default
    /// `guest` user (allowed on loopback).
    pub fn amqp_url(&self, i: usize) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.amqp_ports[i - 1]
        )
    }

    /// Node `i`'s machine dies (SIGKILL to its Erlang VM).
    pub fn kill9(&self, i: usize) {
        let pid = std::fs::read_to_string(self.dir.join(format!("pl{i}/pid"))).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
