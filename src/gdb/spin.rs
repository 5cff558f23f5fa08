//! Waiting without sleeping, for a moment, where a core is free.
//!
//! gdb drives a stopped VM with bursts of packets, each sent when the reply
//! to the one before arrives: 8 for a `stepi` (the resume, then reads of
//! memory and of the thread list), 8 for a breakpoint hit. A thread woken
//! from `poll` or a futex takes tens of microseconds to run on a
//! virtualized host, where an idle core is a halted virtual CPU: a
//! ping-pong over loopback TCP here takes 66-78 µs a round trip with both
//! sides sleeping, 23 µs with one side polling, and a futex wake 15 to
//! 280 µs. Those wake-ups would be most of gdb's time per step.
//!
//! So the two threads gdb waits for look without sleeping for a bounded
//! time before they block: the stub thread for gdb's next packet (and for
//! a stop after a resume), and the vcpu that reported a stop for gdb's
//! resume. Between two looks they yield the core to any thread that wants
//! it (gdb, above all), and they never spin on a machine with one core.
//! A silent gdb costs a VMM no CPU beyond the budgets, spent once.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the stub looks for gdb's next packet, or for the stop of a
/// resumed vcpu, before it sleeps. gdb sends a burst's packets some
/// 20-80 µs apart here.
pub const STUB_BUDGET: Duration = Duration::from_micros(200);

/// How long the vcpu that reported a stop looks for its release before
/// it sleeps. gdb resumes it some 0.3-0.5 ms after the stop here (after 5
/// to 7 exchanges).
pub const REPORTER_BUDGET: Duration = Duration::from_millis(1);

/// The cores this process may run on, as found at the first call (1 where
/// that cannot be found out).
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Looks at `done` until it is true, for at most `budget`, yielding the
/// core between two looks; returns its last answer. With one core it looks
/// once: looking again would only keep the core from the thread it waits
/// for.
pub fn until(budget: Duration, mut done: impl FnMut() -> bool) -> bool {
    if cores() < 2 {
        return done();
    }
    let end = Instant::now() + budget;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::yield_now();
    }
}
