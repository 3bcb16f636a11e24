//! Battery life from a terminal's energy counters (heartbeat version 3).
//!
//! The terminal counts what it spent since boot: time awake, time with the
//! radio on, Wi-Fi joins. The model prices each state with a current drawn
//! at the board's supply (VSYS) and divides a pack's energy by the result.
//! Currents are published figures for the Raspberry Pi Pico W, not
//! measurements of this firmware; each carries its source, and
//! `BENCHMARKS.md` shows the estimates they give.

use pressline_protocol::power::{Energy, PowerMode};

/// Currents of the board's states, in mA at VSYS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateCurrents {
    /// Battery mode between wake-ups: the processor in light sleep (clocks
    /// from the crystal, PLLs off, a timer alarm to wake), the radio off.
    /// 1.5 mA: MicroPython's rp2 `machine.lightsleep(ms)`, measured on a
    /// Pico from its USB port (micropython commit "rp2: Implement
    /// lightsleep", 2023).
    pub light_sleep_ma: f64,
    /// The processor running at 125 MHz: 20 mA, the low end of the 20–40 mA
    /// reported for a Pico W awake with Wi-Fi up.
    pub awake_ma: f64,
    /// Added while associated with Wi-Fi power save: about 2 mA (CYW43439
    /// idle with power save, vs about 36 mA without).
    pub radio_power_save_ma: f64,
    /// A mains terminal: awake, Wi-Fi associated without power save: 40 mA,
    /// the high end of the 20–40 mA reported.
    pub mains_ma: f64,
    /// One Wi-Fi join: 5 s (joins take 3–8 s) at 40 mA.
    pub join_mas: f64,
}

/// The Pico W, from the figures above.
pub const PICO_W: StateCurrents = StateCurrents {
    light_sleep_ma: 1.5,
    awake_ma: 20.0,
    radio_power_save_ma: 2.0,
    mains_ma: 40.0,
    join_mas: 5.0 * 40.0,
};

/// A battery pack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pack {
    pub name: &'static str,
    pub cells: u32,
    /// Alkaline, low drain, to 0.9 V: a conservative nominal capacity.
    pub cell_mah: f64,
    /// Average cell voltage over the discharge.
    pub cell_volts: f64,
}

/// 3 × AA alkaline (2,500 mAh each).
pub const AA_3: Pack = Pack {
    name: "3 x AA",
    cells: 3,
    cell_mah: 2_500.0,
    cell_volts: 1.2,
};

/// 4 × D alkaline (12,000 mAh each).
pub const D_4: Pack = Pack {
    name: "4 x D",
    cells: 4,
    cell_mah: 12_000.0,
    cell_volts: 1.2,
};

/// Every pack the estimate is given for.
pub const PACKS: [Pack; 2] = [AA_3, D_4];

/// The board's supply voltage the currents were measured at.
const VSYS_VOLTS: f64 = 5.0;
/// The regulator between the pack and VSYS.
const CONVERTER_EFFICIENCY: f64 = 0.85;

/// Average current (mA at VSYS) over `uptime_ms` from the counters.
/// `None` when there is too little to go on (under a minute up).
pub fn average_ma(model: &StateCurrents, energy: &Energy, uptime_ms: u64) -> Option<f64> {
    if uptime_ms < 60_000 {
        return None;
    }
    if energy.settings.mode == PowerMode::Mains {
        return Some(model.mains_ma);
    }
    let up = uptime_ms as f64;
    // A board that cannot tell its awake time: 5 ms per wake-up.
    let awake = energy
        .awake_ms
        .map_or(energy.wakeups as f64 * 5.0, |ms| ms as f64)
        .min(up);
    let radio = (energy.radio_on_ms as f64).min(up);
    let charge_mams = model.light_sleep_ma * (up - awake)
        + model.awake_ma * awake
        + model.radio_power_save_ma * radio
        + model.join_mas * 1000.0 * energy.joins as f64;
    Some(charge_mams / up)
}

/// Days a fresh `pack` lasts at `average_ma`.
pub fn life_days(pack: &Pack, average_ma: f64) -> f64 {
    let pack_mwh = pack.cells as f64 * pack.cell_volts * pack.cell_mah * CONVERTER_EFFICIENCY;
    let load_mw = VSYS_VOLTS * average_ma;
    pack_mwh / load_mw / 24.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use pressline_protocol::power::PowerSettings;

    fn energy(settings: PowerSettings, awake_ms: u64, radio_on_ms: u64, joins: u32) -> Energy {
        Energy {
            settings,
            awake_ms: Some(awake_ms),
            radio_on_ms,
            wakeups: 0,
            joins,
        }
    }

    #[test]
    fn a_sleeping_battery_terminal_draws_the_sleep_current() {
        let day = 86_400_000;
        let e = energy(PowerSettings::BATTERY, 0, 0, 0);
        assert_eq!(average_ma(&PICO_W, &e, day), Some(1.5));
        // 4 x D: 4 * 1.2 V * 12 Ah * 0.85 = 48.96 Wh; 7.5 mW -> 272 days.
        let days = life_days(&D_4, 1.5);
        assert!((days - 272.0).abs() < 0.1, "{days}");
    }

    #[test]
    fn joins_radio_and_awake_time_are_priced() {
        let hour = 3_600_000;
        // 36 s awake, 72 s radio, 12 joins in an hour.
        let e = energy(PowerSettings::BATTERY, 36_000, 72_000, 12);
        let ma = average_ma(&PICO_W, &e, hour).unwrap();
        let expected =
            (1.5 * 3_564_000.0 + 20.0 * 36_000.0 + 2.0 * 72_000.0 + 200_000.0 * 12.0) / 3_600_000.0;
        assert!((ma - expected).abs() < 1e-9, "{ma} vs {expected}");
    }

    #[test]
    fn mains_terminals_and_short_uptimes() {
        let e = energy(PowerSettings::MAINS, 0, 0, 1);
        assert_eq!(average_ma(&PICO_W, &e, 3_600_000), Some(40.0));
        assert_eq!(average_ma(&PICO_W, &e, 59_999), None);
    }
}
