//! Keeping a vcpu out of the guest for a moment, without waiting for the
//! guest's own next exit.
//!
//! A thread that needs a running vcpu's state (registers, debug
//! programming, a memory layout change) takes a [`PauseGuard`]: it asks the
//! vcpu to stay out, kicks it out of `KVM_RUN` if it is inside, and waits
//! only for the kick to land. The thread running the vcpu checks the gate
//! before each entry and parks while a pause is held.
//!
//! The handshake is Dekker's: the runner announces itself in the guest and
//! then looks for requests; a requester announces its request and then
//! looks for the runner in the guest. Sequentially consistent atomics make
//! at least one of them see the other, so a runner never enters while a
//! pause is held, and a requester never proceeds while the runner is in.
//!
//! Pauses are fair to the guest: a request that finds the runner waiting
//! for earlier pauses to end first lets it enter once (waiting at most a
//! moment for that), so back-to-back pauses from other threads cannot
//! starve the guest.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// How often a requester kicks again while the vcpu is still inside (a kick
/// can land just before an entry that then runs; the next one ends it).
const KICK_INTERVAL: Duration = Duration::from_millis(1);
/// After this long, a requester stops kicking and waits plainly.
const KICK_PATIENCE: Duration = Duration::from_secs(2);
/// The longest a request waits for a waiting runner to get its turn.
const TURN_PATIENCE: Duration = Duration::from_millis(5);

/// The meeting point of a vcpu's runner and the threads that pause it.
#[derive(Debug, Default)]
pub struct PauseGate {
    /// Twice the entries so far, plus one while the runner is inside: odd
    /// from just before `KVM_RUN` until just after it returns. Only the
    /// runner writes it: an entry is one atomic add (Dekker's handshake
    /// needs it), an exit one plain store.
    entry: AtomicU64,
    /// Pauses held now (the low 32 bits, [`HELD_MASK`]), requests waiting
    /// for the runner's turn (counted in [`TURN_WAITER`]s), and
    /// [`WANTS_IN`]. One word, so that an entry sees all of them in one
    /// load: nearly always zero.
    pauses: AtomicU64,
    /// Guards the waits on `changed`. The runner takes it only to park.
    waits: Mutex<()>,
    /// Signalled when the runner leaves the guest, enters it, or a pause ends.
    changed: Condvar,
}

/// One held pause, in `PauseGate::pauses`.
const HELD: u64 = 1;
/// The held pauses.
const HELD_MASK: u64 = u32::MAX as u64;
/// One request waiting for the runner's turn.
const TURN_WAITER: u64 = 1 << 32;
/// The requests waiting for the runner's turn.
const TURN_WAITER_MASK: u64 = (u32::MAX as u64 >> 1) << 32;
/// Set from a refused entry until the next one: the runner waits for the
/// pauses to end.
const WANTS_IN: u64 = 1 << 63;

/// A held pause: the vcpu does not enter the guest until it is dropped.
#[must_use = "the pause ends when the guard is dropped"]
pub struct PauseGuard<'a> {
    gate: &'a PauseGate,
}

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        // The last pause wakes a runner that waits to enter (if it only
        // starts to wait after this, it finds no pause and does not).
        let before = self.gate.pauses.fetch_sub(HELD, SeqCst);
        if before & HELD_MASK == 1 && self.gate.wants_in() {
            let _waits = lock(&self.gate.waits);
            self.gate.changed.notify_all();
        }
    }
}

impl PauseGate {
    /// Runner: announces an entry. False when a pause is held: the runner
    /// must not enter, and calls [`PauseGate::park`] instead.
    /// A refused entry counts as one: it is over at once.
    #[inline]
    pub fn try_enter(&self) -> bool {
        self.entry.fetch_add(1, SeqCst);
        let pauses = self.pauses.load(SeqCst);
        if pauses == 0 {
            return true;
        }
        self.enter_with_pauses(pauses)
    }

    /// [`PauseGate::try_enter`] when a pause is held, the runner waited, or
    /// a request waits for the runner's turn.
    #[cold]
    fn enter_with_pauses(&self, pauses: u64) -> bool {
        if pauses & HELD_MASK == 0 {
            if pauses & WANTS_IN != 0 {
                self.pauses.fetch_and(!WANTS_IN, SeqCst);
            }
            if self.turn_waiters() != 0 {
                self.changed.notify_all();
            }
            return true;
        }
        self.pauses.fetch_or(WANTS_IN, SeqCst);
        self.left_guest();
        false
    }

    /// Pauses held now.
    fn held(&self) -> u64 {
        self.pauses.load(SeqCst) & HELD_MASK
    }

    /// True while the runner waits for the pauses to end.
    fn wants_in(&self) -> bool {
        self.pauses.load(SeqCst) & WANTS_IN != 0
    }

    /// Requests waiting for the runner's turn.
    fn turn_waiters(&self) -> u64 {
        self.pauses.load(SeqCst) & TURN_WAITER_MASK
    }

    /// The number of the entry the runner is in now, if it is in the guest:
    /// the same number twice, some time apart, means one `KVM_RUN` lasted
    /// all that time.
    pub fn entry_in_guest(&self) -> Option<u64> {
        let entry = self.entry.load(SeqCst);
        (entry & 1 == 1).then_some(entry >> 1)
    }

    /// Runner: `KVM_RUN` returned.
    #[inline]
    pub fn left_guest(&self) {
        // A store, not a locked add: only the runner writes `entry`. No
        // requester sees the runner out before it is (the store releases
        // its use of the vcpu); one that looks as it leaves may still see it
        // in, and the look below may miss that requester's pause: then the
        // requester's timed wait sees the runner out, as it does a wake-up
        // lost below.
        self.entry.store(self.entry.load(Relaxed) + 1, Release);
        if self.held() != 0 {
            // Without the lock, so that requesters taking it in a loop never
            // hold the runner up; a wake-up lost to that is made good by the
            // requesters' timed waits.
            self.changed.notify_all();
        }
    }

    /// Runner: waits until no pause is held.
    pub fn park(&self) {
        let mut waits = lock(&self.waits);
        while self.held() != 0 {
            waits = self.changed.wait(waits).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Requester: asks the runner to stay out of the guest; `kick` is
    /// called when it is inside. Pair with [`PauseGate::wait_out`].
    pub fn request(&self, kick: impl Fn()) -> PauseGuard<'_> {
        self.let_a_waiting_runner_enter();
        self.pauses.fetch_add(HELD, SeqCst);
        if self.in_guest() {
            kick();
        }
        PauseGuard { gate: self }
    }

    /// Requester: when the runner waits to enter and no pause holds it any
    /// more, waits (briefly) until it has entered once. (While a pause is
    /// held, by this thread or another, the runner cannot enter anyway.)
    fn let_a_waiting_runner_enter(&self) {
        if !self.wants_in() || self.held() != 0 {
            return;
        }
        let start = Instant::now();
        let entry = self.entry.load(SeqCst);
        self.pauses.fetch_add(TURN_WAITER, SeqCst);
        let mut waits = lock(&self.waits);
        while self.wants_in() && self.held() == 0 && self.entry.load(SeqCst) == entry && start.elapsed() < TURN_PATIENCE
        {
            waits =
                self.changed.wait_timeout(waits, KICK_INTERVAL).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        drop(waits);
        self.pauses.fetch_sub(TURN_WAITER, SeqCst);
    }

    /// Requester: returns once the runner is out of the guest, kicking it
    /// again every millisecond while it is not.
    pub fn wait_out(&self, _pause: &PauseGuard<'_>, kick: impl Fn()) {
        if !self.in_guest() {
            return;
        }
        let start = Instant::now();
        let mut waits = lock(&self.waits);
        while self.in_guest() {
            let patient = start.elapsed() < KICK_PATIENCE;
            let interval = if patient { KICK_INTERVAL } else { Duration::from_millis(100) };
            waits = self.changed.wait_timeout(waits, interval).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            if patient && self.in_guest() {
                kick();
            }
        }
    }

    /// Requester: [`request`](PauseGate::request) and
    /// [`wait_out`](PauseGate::wait_out) in one.
    pub fn pause(&self, kick: impl Fn()) -> PauseGuard<'_> {
        let guard = self.request(&kick);
        self.wait_out(&guard, kick);
        guard
    }

    /// True while the runner is inside `KVM_RUN`.
    pub fn in_guest(&self) -> bool {
        self.entry.load(SeqCst) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use std::sync::Arc;

    /// A fake runner that "enters the guest" in a loop and leaves only when
    /// kicked, as a vcpu spinning without exits does.
    struct FakeVcpu {
        gate: PauseGate,
        kicked: AtomicBool,
        stop: AtomicBool,
        entries: AtomicU64,
        entered_while_paused: AtomicBool,
        paused: AtomicU32,
    }

    fn spin(vcpu: &FakeVcpu) {
        while !vcpu.stop.load(SeqCst) {
            if !vcpu.gate.try_enter() {
                vcpu.gate.park();
                continue;
            }
            if vcpu.paused.load(SeqCst) != 0 {
                vcpu.entered_while_paused.store(true, SeqCst);
            }
            vcpu.entries.fetch_add(1, SeqCst);
            while !vcpu.kicked.swap(false, SeqCst) && !vcpu.stop.load(SeqCst) {
                std::hint::spin_loop();
            }
            vcpu.gate.left_guest();
        }
    }

    fn fake_vcpu() -> Arc<FakeVcpu> {
        Arc::new(FakeVcpu {
            gate: PauseGate::default(),
            kicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            entries: AtomicU64::new(0),
            entered_while_paused: AtomicBool::new(false),
            paused: AtomicU32::new(0),
        })
    }

    /// Runs the fake runner while `requesters` threads each pause it
    /// `pauses` times back to back.
    fn pause_repeatedly(vcpu: &Arc<FakeVcpu>, requesters: usize, pauses: usize) {
        let runner = {
            let vcpu = vcpu.clone();
            std::thread::spawn(move || spin(&vcpu))
        };
        while vcpu.entries.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        let requesters: Vec<_> = (0..requesters)
            .map(|_| {
                let vcpu = vcpu.clone();
                std::thread::spawn(move || {
                    for _ in 0..pauses {
                        let guard = vcpu.gate.pause(|| vcpu.kicked.store(true, SeqCst));
                        vcpu.paused.fetch_add(1, SeqCst);
                        vcpu.paused.fetch_sub(1, SeqCst);
                        drop(guard);
                    }
                })
            })
            .collect();
        for r in requesters {
            r.join().unwrap();
        }
        vcpu.stop.store(true, SeqCst);
        runner.join().unwrap();
    }

    #[test]
    fn pauses_kick_a_spinning_runner_out_and_keep_it_out() {
        let vcpu = fake_vcpu();
        pause_repeatedly(&vcpu, 3, 2000);
        assert!(!vcpu.entered_while_paused.load(SeqCst));
    }

    #[test]
    fn a_request_lets_a_runner_that_waits_to_enter_go_first() {
        let gate = PauseGate::default();
        let first = gate.pause(|| {});
        assert!(!gate.try_enter(), "refused while paused: the runner now waits to enter");
        std::thread::scope(|threads| {
            threads.spawn(|| {
                gate.park();
                assert!(gate.try_enter());
                gate.left_guest();
            });
            // The next pause comes right after the first ends, while the
            // runner waits: the runner goes first.
            std::thread::sleep(Duration::from_millis(1));
            drop(first);
            let second = gate.pause(|| {});
            // Entries: the refused one, then the one it waited for.
            assert_eq!(gate.entry.load(SeqCst) >> 1, 2, "the runner entered before the second pause");
            drop(second);
        });
    }

    #[test]
    fn a_runner_outside_the_guest_is_not_kicked() {
        let gate = PauseGate::default();
        let guard = gate.pause(|| panic!("no kick for a vcpu that is not in the guest"));
        assert!(!gate.try_enter(), "no entry while paused");
        drop(guard);
        assert!(gate.try_enter());
        gate.left_guest();
    }
}
