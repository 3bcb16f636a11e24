//! The orchestrator with a virtual clock: what operators rely on.

use pressline_protocol::ota_transfer::{OtaFailure, OtaState, OtaStatus};
use pressline_protocol::FirmwareVersion;

use super::*;
use pressline_protocol::upstream::OtaEventKind;

const LIMITS: Limits = Limits {
    max_concurrent: 10,
    silent_timeout_ms: 600_000,
    confirm_timeout_ms: 300_000,
    reoffer_after_ms: 30_000,
};
const NOON: u16 = 12 * 60;

fn plan(n: usize, canary: usize, waves: &[u8], max_failure_rate: f64) -> Plan {
    Plan {
        version: "1.1.0".into(),
        board: "pico-w".into(),
        targets: (0..n).rev().map(|i| format!("t{i:02}")).collect(),
        canary,
        waves: waves.to_vec(),
        max_failure_rate,
        window: None,
    }
}

fn offered(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Offer { terminal } => Some(terminal.clone()),
            _ => None,
        })
        .collect()
}

fn cancelled(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Cancel { terminal } => Some(terminal.clone()),
            _ => None,
        })
        .collect()
}

fn events(effects: &[Effect]) -> Vec<OtaEventKind> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(ev) => Some(ev.kind.clone()),
            _ => None,
        })
        .collect()
}

fn status(r: &Rollout, state: OtaState, failure: Option<OtaFailure>) -> OtaStatus {
    OtaStatus {
        rollout: r.id,
        attempt: r.attempt,
        state,
        running: FirmwareVersion::parse("1.0.0").unwrap(),
        target: FirmwareVersion::parse("1.1.0"),
        written: 100,
        size: 100,
        failure,
    }
}

fn finish(r: &mut Rollout, now: i64, terminals: &[String], state: OtaState) {
    for t in terminals {
        let failure = (state != OtaState::Confirmed).then_some(OtaFailure::TrialBootFailed);
        let s = status(r, state, failure);
        r.handle_status(now, t, &s);
    }
}

#[test]
fn canary_first_then_waves_then_completed() {
    let (mut r, effects) = Rollout::new(1, plan(10, 2, &[50, 100], 0.1), 0);
    assert_eq!(
        events(&effects),
        [OtaEventKind::Started, OtaEventKind::WaveStarted]
    );
    assert_eq!(r.stages, 3);
    let e = r.handle_tick(1_000, NOON, &LIMITS);
    assert_eq!(
        offered(&e),
        ["t00", "t01"],
        "the canary: first ids in order"
    );
    // Nothing more until the canary has finished.
    assert!(offered(&r.handle_tick(2_000, NOON, &LIMITS)).is_empty());
    finish(&mut r, 3_000, &offered(&e), OtaState::Confirmed);
    let e = r.handle_tick(4_000, NOON, &LIMITS);
    assert_eq!(events(&e)[0], OtaEventKind::WaveStarted);
    assert_eq!(offered(&e), ["t02", "t03", "t04"], "wave 1 reaches 50%");
    finish(&mut r, 5_000, &offered(&e), OtaState::Confirmed);
    let e = r.handle_tick(6_000, NOON, &LIMITS);
    assert_eq!(offered(&e).len(), 5);
    finish(&mut r, 7_000, &offered(&e), OtaState::Confirmed);
    let e = r.handle_tick(8_000, NOON, &LIMITS);
    assert_eq!(events(&e), [OtaEventKind::Completed]);
    assert_eq!(r.state, RolloutState::Completed);
    assert_eq!(r.counts()[&TerminalState::Confirmed], 10);
}

#[test]
fn a_failing_canary_halts_and_no_other_terminal_is_touched() {
    let (mut r, _) = Rollout::new(1, plan(10, 2, &[100], 0.1), 0);
    let e = r.handle_tick(1_000, NOON, &LIMITS);
    assert_eq!(offered(&e), ["t00", "t01"]);
    let s = status(&r, OtaState::RolledBack, Some(OtaFailure::TrialBootFailed));
    r.handle_status(2_000, "t00", &s);
    let e = r.handle_tick(3_000, NOON, &LIMITS);
    assert_eq!(r.state, RolloutState::Halted);
    assert!(events(&e).contains(&OtaEventKind::Halted));
    assert_eq!(
        cancelled(&e),
        ["t01"],
        "the other canary's offer is withdrawn"
    );
    assert!(r.halt_reason.as_deref().unwrap().contains("50%"));
    for later in 0..5 {
        assert!(r.handle_tick(4_000 + later, NOON, &LIMITS).is_empty());
    }
    assert!(r
        .terminals
        .iter()
        .filter(|(id, _)| !["t00", "t01"].contains(&id.as_str()))
        .all(|(_, p)| p.state == TerminalState::Pending && p.bytes_served == 0));
    assert!(r.resume(5_000).is_err(), "a halt is not undone by resume");
}

#[test]
fn failures_within_the_threshold_do_not_halt() {
    let (mut r, _) = Rollout::new(1, plan(20, 0, &[100], 0.1), 0);
    let e = r.handle_tick(0, NOON, &LIMITS);
    let first = offered(&e);
    assert_eq!(first.len(), 10, "the concurrency limit");
    finish(&mut r, 1, &first[..2], OtaState::Failed);
    finish(&mut r, 1, &first[2..], OtaState::Confirmed);
    let e = r.handle_tick(2, NOON, &LIMITS);
    assert_eq!(r.state, RolloutState::Running, "2 of 20 is 10%: not above");
    finish(&mut r, 3, &offered(&e), OtaState::Confirmed);
    r.handle_tick(4, NOON, &LIMITS);
    assert_eq!(r.state, RolloutState::Completed);
}

#[test]
fn at_most_max_concurrent_terminals_download_at_once() {
    let limits = Limits {
        max_concurrent: 3,
        ..LIMITS
    };
    let (mut r, _) = Rollout::new(1, plan(7, 0, &[100], 0.5), 0);
    let e = r.handle_tick(0, NOON, &limits);
    assert_eq!(offered(&e), ["t00", "t01", "t02"]);
    assert!(offered(&r.handle_tick(1, NOON, &limits)).is_empty());
    // Verifying no longer uses the Wi-Fi: its slot goes to the next one.
    let s = status(&r, OtaState::Verifying, None);
    r.handle_status(2, "t00", &s);
    assert_eq!(offered(&r.handle_tick(3, NOON, &limits)), ["t03"]);
}

#[test]
fn downloads_start_only_inside_the_maintenance_window() {
    let mut p = plan(3, 0, &[100], 0.1);
    p.window = Some(Window::parse("22:00-06:00").unwrap());
    let (mut r, _) = Rollout::new(1, p, 0);
    assert!(offered(&r.handle_tick(0, NOON, &LIMITS)).is_empty());
    assert!(offered(&r.handle_tick(0, 21 * 60 + 59, &LIMITS)).is_empty());
    assert_eq!(offered(&r.handle_tick(0, 23 * 60, &LIMITS)).len(), 3);
    let w = Window::parse("01:30-02:00").unwrap();
    assert!(w.contains(90) && !w.contains(120) && !w.contains(89));
    assert_eq!(w.to_string(), "01:30-02:00");
    assert!(Window::parse("25:00-01:00").is_err());
    assert!(Window::parse("02:00-02:00").is_err());
    assert!(Window::parse("nightly").is_err());
}

#[test]
fn silent_terminals_are_offered_again_then_time_out() {
    let (mut r, _) = Rollout::new(1, plan(1, 0, &[100], 1.0), 0);
    assert_eq!(offered(&r.handle_tick(0, NOON, &LIMITS)), ["t00"]);
    assert!(offered(&r.handle_tick(29_999, NOON, &LIMITS)).is_empty());
    assert_eq!(offered(&r.handle_tick(30_000, NOON, &LIMITS)), ["t00"]);
    assert!(offered(&r.handle_tick(45_000, NOON, &LIMITS)).is_empty());
    let e = r.handle_tick(600_000, NOON, &LIMITS);
    assert_eq!(r.terminals["t00"].state, TerminalState::Failed);
    assert!(r.terminals["t00"]
        .detail
        .as_deref()
        .unwrap()
        .contains("silent"));
    assert!(events(&e).contains(&OtaEventKind::Terminal));
    // A rebooting terminal that never confirms fails too.
    let (mut r, _) = Rollout::new(2, plan(1, 0, &[100], 1.0), 0);
    r.handle_tick(0, NOON, &LIMITS);
    let s = status(&r, OtaState::Rebooting, None);
    r.handle_status(10, "t00", &s);
    r.handle_tick(300_009, NOON, &LIMITS);
    assert_eq!(r.terminals["t00"].state, TerminalState::Rebooting);
    r.handle_tick(300_010, NOON, &LIMITS);
    assert_eq!(r.terminals["t00"].state, TerminalState::Failed);
}

#[test]
fn chunk_requests_are_served_only_to_offered_terminals_of_a_running_rollout() {
    let limits = Limits {
        max_concurrent: 1,
        ..LIMITS
    };
    let (mut r, _) = Rollout::new(1, plan(2, 0, &[100], 1.0), 0);
    r.handle_tick(0, NOON, &limits);
    assert!(r.handle_chunk_request(1, "t00", 4096));
    assert_eq!(r.terminals["t00"].state, TerminalState::Downloading);
    assert!(!r.handle_chunk_request(1, "t01", 4096), "not offered yet");
    assert!(!r.handle_chunk_request(1, "stranger", 4096));
    r.pause(2).unwrap();
    assert!(!r.handle_chunk_request(3, "t00", 4096));
    assert_eq!(r.terminals["t00"].bytes_served, 4096);
}

#[test]
fn pause_withdraws_offers_and_resume_offers_again() {
    let (mut r, _) = Rollout::new(1, plan(3, 0, &[100], 1.0), 0);
    r.handle_tick(0, NOON, &LIMITS);
    let e = r.pause(1).unwrap();
    assert_eq!(cancelled(&e).len(), 3);
    assert!(r.handle_tick(2, NOON, &LIMITS).is_empty());
    assert!(r.pause(3).is_err());
    r.resume(4).unwrap();
    assert_eq!(offered(&r.handle_tick(5, NOON, &LIMITS)).len(), 3);
    let e = r.abort(6).unwrap();
    assert_eq!(cancelled(&e).len(), 3);
    assert!(events(&e).contains(&OtaEventKind::Aborted));
    assert!(r.abort(7).is_err());
    assert!(r.retry_failed(8).is_err());
}

#[test]
fn retry_failed_gives_failed_terminals_a_new_attempt_and_ignores_old_reports() {
    let (mut r, _) = Rollout::new(1, plan(2, 0, &[100], 1.0), 0);
    r.handle_tick(0, NOON, &LIMITS);
    let s = status(&r, OtaState::Failed, Some(OtaFailure::ImageSignature));
    r.handle_status(1, "t00", &s);
    let s = status(&r, OtaState::Confirmed, None);
    r.handle_status(1, "t01", &s);
    r.handle_tick(2, NOON, &LIMITS);
    assert_eq!(r.state, RolloutState::Completed);
    r.retry_failed(3).unwrap();
    assert_eq!((r.state, r.attempt), (RolloutState::Running, 2));
    assert_eq!(offered(&r.handle_tick(4, NOON, &LIMITS)), ["t00"]);
    // Its failure from attempt 1, reported again on a reconnect, is old
    // news: the offer is repeated instead.
    let e = r.handle_status(5, "t00", &OtaStatus { attempt: 1, ..s });
    assert_eq!(offered(&e), ["t00"]);
    assert_eq!(r.terminals["t00"].state, TerminalState::Offered);
    let s = status(&r, OtaState::Confirmed, None);
    r.handle_status(6, "t00", &s);
    r.handle_tick(7, NOON, &LIMITS);
    assert_eq!(r.state, RolloutState::Completed);
}

#[test]
fn a_restored_rollout_continues_exactly_where_it_stopped() {
    let (mut r, _) = Rollout::new(4, plan(6, 1, &[100], 0.5), 0);
    let e = r.handle_tick(0, NOON, &LIMITS);
    finish(&mut r, 1, &offered(&e), OtaState::Confirmed);
    let e = r.handle_tick(2, NOON, &LIMITS);
    let wave = offered(&e);
    assert_eq!(wave.len(), 5);
    let s = status(&r, OtaState::Downloading, None);
    r.handle_status(3, &wave[0], &s);
    assert!(r.take_dirty());
    // The gateway dies; the rollout comes back from its stored form.
    let stored = serde_json::to_vec(&r).unwrap();
    let mut back: Rollout = serde_json::from_slice(&stored).unwrap();
    assert_eq!(back, Rollout { ..r.clone() });
    // Its terminals are offered again once their offers go quiet.
    let e = back.handle_tick(3 + LIMITS.reoffer_after_ms, NOON, &LIMITS);
    assert_eq!(offered(&e).len(), 5);
    finish(&mut back, 40_000, &wave, OtaState::Confirmed);
    back.handle_tick(40_001, NOON, &LIMITS);
    assert_eq!(back.state, RolloutState::Completed);
}

#[test]
fn stages_cover_every_target_whatever_the_percentages() {
    for (n, canary, waves) in [
        (1, 2, vec![25, 100]),
        (3, 0, vec![10, 20]),
        (100, 2, vec![25, 100]),
        (5, 5, vec![100]),
    ] {
        let (r, _) = Rollout::new(1, plan(n, canary, &waves, 0.1), 0);
        assert_eq!(r.terminals.len(), n);
        assert!(r.terminals.values().all(|p| p.stage < r.stages));
        let max_stage = r.terminals.values().map(|p| p.stage).max().unwrap();
        assert_eq!(max_stage + 1, r.stages, "{n} {canary} {waves:?}");
    }
}
