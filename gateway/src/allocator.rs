//! The process allocator's settings (the binaries install mimalloc; see
//! `gateway/src/main.rs`).
//!
//! mimalloc keeps freed pages for 10 ms by default and purges them only
//! when the thread that freed them allocates again, so threads that go
//! quiet (sled's flusher, the committer between bursts) held on to them:
//! RSS rose by a third over a million presses while the live heap barely
//! moved (BENCHMARKS.md, "Memory"). Purging at once costs no measurable
//! CPU on this workload.

/// `mi_option_purge_delay` (the same index in mimalloc 2 and 3's
/// `mimalloc.h`; the Rust bindings have no constant for it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return freed memory to the OS at once. Call first thing
/// in `main`.
pub fn purge_freed_memory_at_once() {
    // SAFETY: sets a process-wide integer option; mimalloc reads options
    // atomically and allows setting them at any time.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
}
