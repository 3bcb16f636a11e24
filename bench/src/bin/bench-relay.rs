//! Bare rumqttd, configured exactly as the gateway configures its site
//! broker, relaying to whoever subscribes. No ingest, no store.

use clap::Parser;

/// The gateway's allocator and its settings, so this relay is the broker
/// exactly as embedded.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "bench-relay")]
struct Args {
    /// Where terminals connect, e.g. 127.0.0.1:1883.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Connection limit.
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
}

fn main() -> anyhow::Result<()> {
    pressline_gateway::allocator::purge_freed_memory_at_once();
    let args = Args::parse();
    let mut mqtt = pressline_gateway::config::Config::default().mqtt;
    mqtt.listen = args.listen;
    mqtt.listen_v5 = None;
    mqtt.max_terminals = args.max_connections;
    let config = pressline_gateway::broker::broker_config(&mqtt);
    rumqttd::Broker::new(config)
        .start()
        .map_err(|e| anyhow::anyhow!("relay stopped: {e}"))
}
