//! How long the processor runs, for the energy counters of the heartbeat.
//!
//! embassy's executor reports when it starts polling tasks and when it is
//! done (its `trace` hooks, below); between the two it runs, the rest of
//! the time it waits for an event. Interrupt handlers are not counted:
//! they are short next to the tasks they wake.

use core::cell::Cell;

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_time::Instant;

struct Awake {
    /// When the current poll began (µs since boot).
    since: Cell<Option<u64>>,
    total_us: Cell<u64>,
}

static AWAKE: Mutex<CriticalSectionRawMutex, Awake> = Mutex::new(Awake {
    since: Cell::new(None),
    total_us: Cell::new(0),
});

/// Milliseconds the executor spent polling since boot.
pub fn awake_ms() -> u64 {
    AWAKE.lock(|a| a.total_us.get() / 1000)
}

#[no_mangle]
fn _embassy_trace_poll_start(_executor_id: u32) {
    let now = Instant::now().as_micros();
    AWAKE.lock(|a| a.since.set(Some(now)));
}

#[no_mangle]
fn _embassy_trace_executor_idle(_executor_id: u32) {
    let now = Instant::now().as_micros();
    AWAKE.lock(|a| {
        if let Some(since) = a.since.take() {
            a.total_us.set(a.total_us.get() + now.saturating_sub(since));
        }
    });
}

// The executor's other trace points: not needed here.
#[no_mangle]
fn _embassy_trace_task_new(_executor_id: u32, _task_id: u32) {}
#[no_mangle]
fn _embassy_trace_task_end(_executor_id: u32, _task_id: u32) {}
#[no_mangle]
fn _embassy_trace_task_exec_begin(_executor_id: u32, _task_id: u32) {}
#[no_mangle]
fn _embassy_trace_task_exec_end(_executor_id: u32, _task_id: u32) {}
#[no_mangle]
fn _embassy_trace_task_ready_begin(_executor_id: u32, _task_id: u32) {}
