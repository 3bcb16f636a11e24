//! Battery-life benchmark (section 8 of `BENCHMARKS.md`; ignored in the
//! test run, started by `scripts/bench.sh`):
//!
//! 1. Two host terminals (the firmware's application on TAP devices), one
//!    on batteries (60 s upload delay) and one on mains, take the same
//!    presses against a real gateway; their heartbeats give the counters:
//!    radio-on time per session and the share of time awake.
//! 2. The firmware's own power plan (`pressline_terminal_app::power::Plan`)
//!    runs over a simulated day at 100, 500 and 2,000 presses, with
//!    sessions as long as measured, giving the day's counters.
//! 3. The gateway's energy model prices them for 3 × AA and 4 × D.
//!
//! Prints the Markdown of section 8.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::host::*;
use common::*;
use pressline_gateway::terminals::energy::{average_ma, life_days, PACKS, PICO_W};
use pressline_protocol::power::{Energy, PowerMode, PowerSettings};
use pressline_protocol::Button;
use pressline_terminal_app::power::Plan;
use serde_json::Value;

/// A small deterministic generator (the same presses every run).
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Seconds to the next event of a Poisson stream at `per_sec`.
    fn gap(&mut self, per_sec: f64) -> f64 {
        -self.unit().ln() / per_sec
    }

    /// A visitor's button: 40 % very happy, 30 % happy, 15 % each unhappy.
    fn button(&mut self) -> Button {
        let score = match self.unit() {
            u if u < 0.15 => 1,
            u if u < 0.30 => 2,
            u if u < 0.60 => 3,
            _ => 4,
        };
        Button::from_score(score).unwrap()
    }
}

/// What the host run measured.
struct Measured {
    radio_ms_per_session: f64,
    awake_share: f64,
    mains_awake_share: f64,
    sessions: u64,
    uptime_s: f64,
}

fn energy_of(health: &Value) -> (f64, f64, f64, f64) {
    let e = &health["energy"];
    (
        health["uptime_secs"].as_f64().unwrap(),
        e["awake_ms"].as_f64().unwrap_or(0.0),
        e["radio_on_ms"].as_f64().unwrap(),
        e["joins"].as_f64().unwrap(),
    )
}

fn measure(run: Duration) -> Option<Measured> {
    let mut lab = NetLab::enter()?;
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        GatewayOptions {
            site: "lab".into(),
            mqtt_bind: Some(GATEWAY_IP),
            ..Default::default()
        },
    );
    let start = |lab: &mut NetLab, id: &str, extra: &[&str]| {
        let (tap, address) = lab.tap();
        HostTerminal::start(&HostOptions {
            tap,
            address,
            broker: gateway.broker_v5(),
            flash: flash_file(dir.path(), id),
            identity: Identity::Terminal(id.into()),
            ota_public_key: None,
            exit_when_acked: false,
            trial_window_secs: 2,
            battery_mv: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        })
    };
    // Heartbeats every 60 s so the counters are fresh at the end.
    let mut battery = start(
        &mut lab,
        "battery-1",
        &[
            "--power",
            "battery",
            "--upload-delay-secs",
            "60",
            "--heartbeat-every-secs",
            "60",
        ],
    );
    let mut mains = start(&mut lab, "mains-1", &[]);
    let mut rng = Lcg(7);
    let began = Instant::now();
    let mut pressed = 0;
    while began.elapsed() < run {
        // A press every 20 s on average: batches form within the delay.
        std::thread::sleep(Duration::from_secs_f64(rng.gap(1.0 / 20.0).min(60.0)));
        let score = rng.button().score();
        battery.press(score);
        mains.press(score);
        pressed += 2;
    }
    wait_until("every press at the gateway", || {
        gateway.stat("presses_stored") == pressed
    });
    // The counters of a heartbeat after the last upload.
    let before = gateway.get("/api/v1/terminals/battery-1")["last_heartbeat"].clone();
    wait_until("a fresh heartbeat from each", || {
        gateway.get("/api/v1/terminals/battery-1")["last_heartbeat"] != before
    });
    let (up, awake, radio, joins) = energy_of(&gateway.get("/api/v1/terminals/battery-1"));
    let (m_up, m_awake, _, _) = energy_of(&gateway.get("/api/v1/terminals/mains-1"));
    Some(Measured {
        // The session of the heartbeat itself is still open: not counted.
        radio_ms_per_session: radio / (joins - 1.0).max(1.0),
        awake_share: awake / (up * 1000.0),
        mains_awake_share: m_awake / (m_up * 1000.0),
        sessions: joins as u64,
        uptime_s: up,
    })
}

/// One simulated day through the firmware's power plan: presses over 12
/// open hours; returns (counters, uploads, longest wait in flash).
fn simulate_day(per_day: u32, session_ms: u64, awake_share: f64) -> (Energy, u32, u64) {
    const DAY_MS: u64 = 86_400_000;
    const OPEN_MS: u64 = 12 * 3_600_000;
    let mut rng = Lcg(u64::from(per_day));
    let mut presses = Vec::new();
    let mut t = 8.0 * 3_600_000.0;
    loop {
        t += rng.gap(f64::from(per_day) / OPEN_MS as f64);
        if t >= (8 * 3_600_000 + OPEN_MS) as f64 {
            break;
        }
        presses.push((t as u64, rng.button()));
    }
    let mut plan = Plan::new(PowerSettings::BATTERY);
    let (mut now, mut next, mut uploads, mut oldest, mut worst) = (0u64, 0usize, 0u32, None, 0);
    while now < DAY_MS {
        let due = plan.poll_radio().unwrap().max(now);
        let press_at = presses.get(next).map(|p| p.0);
        if press_at.is_some_and(|p| p < due) {
            let (at, button) = presses[next];
            next += 1;
            now = at;
            plan.handle_press(now, button);
            oldest.get_or_insert(now);
            continue;
        }
        now = due;
        if now >= DAY_MS {
            break;
        }
        plan.radio_on(now);
        // The presses are at the gateway as the session starts; it then
        // lingers for the gateway's answers.
        if let Some(first) = oldest.take() {
            worst = worst.max(now - first);
            uploads += 1;
        }
        now += session_ms;
        plan.handle_uploaded(now, false);
        plan.radio_off(now);
    }
    let awake = (DAY_MS as f64 * awake_share) as u64;
    (plan.energy(DAY_MS, Some(awake)), uploads, worst)
}

#[test]
#[ignore = "benchmark: scripts/bench.sh section 8"]
fn battery_life_from_a_host_terminals_counters() {
    let secs = std::env::var("BENCH_ENERGY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let Some(m) = measure(Duration::from_secs(secs)) else {
        return;
    };
    let mut out = String::new();
    writeln!(out, "## 8. Battery life").unwrap();
    out.push('\n');
    writeln!(
        out,
        "Measured: two host terminals ({} build) on TAP devices against the gateway for {:.0} s, \
         the same presses (one every 20 s on average) to each. On batteries (upload delay 60 s): \
         {} sessions, {:.0} ms radio-on per session, awake {:.2} % of the time (the host process's \
         CPU time); on mains: awake {:.2} %.",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        m.uptime_s,
        m.sessions,
        m.radio_ms_per_session,
        m.awake_share * 100.0,
        m.mains_awake_share * 100.0
    )
    .unwrap();
    out.push('\n');
    writeln!(out, "| mode | presses a day | uploads a day | longest wait in flash | average | 3 x AA | 4 x D |").unwrap();
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for per_day in [100, 500, 2_000] {
        let (energy, uploads, worst) =
            simulate_day(per_day, m.radio_ms_per_session as u64, m.awake_share);
        let ma = average_ma(&PICO_W, &energy, 86_400_000).unwrap();
        let lives: Vec<String> = PACKS
            .iter()
            .map(|p| format!("{:.0} days", life_days(p, ma)))
            .collect();
        writeln!(
            out,
            "| battery | {per_day} | {uploads} | {:.0} s | {ma:.2} mA | {} | {} |",
            worst as f64 / 1000.0,
            lives[0],
            lives[1]
        )
        .unwrap();
    }
    let mains = Energy {
        settings: PowerSettings::MAINS,
        awake_ms: None,
        radio_on_ms: 86_400_000,
        wakeups: 0,
        joins: 1,
    };
    assert_eq!(mains.settings.mode, PowerMode::Mains);
    let ma = average_ma(&PICO_W, &mains, 86_400_000).unwrap();
    for per_day in [100, 500, 2_000] {
        writeln!(
            out,
            "| mains | {per_day} | (live) | < 1 s | {ma:.2} mA | {:.0} days | {:.0} days |",
            life_days(&PACKS[0], ma),
            life_days(&PACKS[1], ma)
        )
        .unwrap();
    }
    out.push('\n');
    // The Markdown, to the file bench.sh names, else to standard output.
    match std::env::var_os("BENCH_ENERGY_OUT") {
        Some(file) => std::fs::write(file, out).unwrap(),
        None => print!("{out}"),
    }
}
