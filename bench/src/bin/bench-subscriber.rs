//! One QoS 1 subscriber: counts the messages a broker relays on a filter,
//! and prints `{"count", "first_us", "last_us"}` (Unix µs) when `--count`
//! arrived or nothing came for `--idle-secs`.
//!
//! `--ids-out FILE` writes `id unix_us` per message, the id being the JSON
//! `id` field (upstream presses) or the topic: joined with the simulator's
//! `--press-log`, that gives press-to-upstream latency.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

#[derive(Parser)]
#[command(name = "bench-subscriber")]
struct Args {
    #[arg(long)]
    broker: String,
    /// Topic filter; repeat for several.
    #[arg(long, required = true)]
    topic: Vec<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: u64,
    /// Stop after this long without a message (once one arrived).
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Touched once subscribed, so the caller knows when to start the load.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    #[arg(long)]
    ids_out: Option<std::path::PathBuf>,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--broker HOST:PORT"))?;
    let mut options = MqttOptions::new(
        format!("bench-subscriber-{}", std::process::id()),
        host,
        port.parse()?,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_inflight(1000);
    let (client, mut connection) = Client::new(options, 10_000);
    let mut out = match &args.ids_out {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let (mut count, mut first, mut last) = (0u64, 0u64, 0u64);
    let mut last_seen = Instant::now();
    let mut subacks = 0;
    loop {
        let event = match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => e,
            Err(_) => {
                if count > 0 && last_seen.elapsed() >= Duration::from_secs(args.idle_secs) {
                    break;
                }
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                subacks = 0;
                for topic in &args.topic {
                    client.subscribe(topic.as_str(), QoS::AtLeastOnce)?;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                subacks += 1;
                if subacks < args.topic.len() {
                    continue;
                }
                if let Some(f) = &args.ready_file {
                    std::fs::write(f, b"ready\n")?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now = unix_us();
                if count == 0 {
                    first = now;
                }
                last = now;
                count += 1;
                last_seen = Instant::now();
                if let Some(w) = out.as_mut() {
                    let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_string))
                        .unwrap_or_else(|| p.topic.clone());
                    writeln!(w, "{id} {now}")?;
                }
                if count >= args.count {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => anyhow::bail!("subscriber connection failed: {e}"),
        }
    }
    if let Some(mut w) = out {
        w.flush()?;
    }
    println!(
        "{}",
        serde_json::json!({ "count": count, "first_us": first, "last_us": last })
    );
    Ok(())
}
