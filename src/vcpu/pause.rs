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

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
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
    /// True from just before `KVM_RUN` until just after it returns.
    in_guest: AtomicBool,
    /// Pauses held now.
    requests: AtomicU32,
    /// Successful entries so far.
    entries: AtomicU64,
    /// True from a refused entry until the next one: the runner waits for
    /// the pauses to end.
    wants_in: AtomicBool,
    /// Requests waiting for the runner's turn.
    turn_waiters: AtomicU32,
    /// Guards the waits on `changed`. The runner takes it only to park.
    waits: Mutex<()>,
    /// Signalled when the runner leaves the guest, enters it, or a pause ends.
    changed: Condvar,
}

/// A held pause: the vcpu does not enter the guest until it is dropped.
#[must_use = "the pause ends when the guard is dropped"]
pub struct PauseGuard<'a> {
    gate: &'a PauseGate,
}

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        // The last pause wakes a runner that waits to enter (if it only
        // starts to wait after this, it finds no pause and does not).
        if self.gate.requests.fetch_sub(1, SeqCst) == 1 && self.gate.wants_in.load(SeqCst) {
            let _waits = lock(&self.gate.waits);
            self.gate.changed.notify_all();
        }
    }
}

impl PauseGate {
    /// Runner: announces an entry. False when a pause is held: the runner
    /// must not enter, and calls [`PauseGate::park`] instead.
    pub fn try_enter(&self) -> bool {
        self.in_guest.store(true, SeqCst);
        if self.requests.load(SeqCst) == 0 {
            self.entries.fetch_add(1, SeqCst);
            self.wants_in.store(false, SeqCst);
            if self.turn_waiters.load(SeqCst) != 0 {
                self.changed.notify_all();
            }
            return true;
        }
        self.wants_in.store(true, SeqCst);
        self.left_guest();
        false
    }

    /// The number of the entry the runner is in now, if it is in the guest:
    /// the same number twice, some time apart, means one `KVM_RUN` lasted
    /// all that time.
    pub fn entry_in_guest(&self) -> Option<u64> {
        self.in_guest.load(SeqCst).then(|| self.entries.load(SeqCst))
    }

    /// Runner: `KVM_RUN` returned.
    pub fn left_guest(&self) {
        self.in_guest.store(false, SeqCst);
        if self.requests.load(SeqCst) != 0 {
            // Without the lock, so that requesters taking it in a loop never
            // hold the runner up; a wake-up lost to that is made good by the
            // requesters' timed waits.
            self.changed.notify_all();
        }
    }

    /// Runner: waits until no pause is held.
    pub fn park(&self) {
        let mut waits = lock(&self.waits);
        while self.requests.load(SeqCst) != 0 {
            waits = self.changed.wait(waits).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Requester: asks the runner to stay out of the guest; `kick` is
    /// called when it is inside. Pair with [`PauseGate::wait_out`].
    pub fn request(&self, kick: impl Fn()) -> PauseGuard<'_> {
        self.let_a_waiting_runner_enter();
        self.requests.fetch_add(1, SeqCst);
        if self.in_guest.load(SeqCst) {
            kick();
        }
        PauseGuard { gate: self }
    }

    /// Requester: when the runner waits to enter and no pause holds it any
    /// more, waits (briefly) until it has entered once. (While a pause is
    /// held, by this thread or another, the runner cannot enter anyway.)
    fn let_a_waiting_runner_enter(&self) {
        if !self.wants_in.load(SeqCst) || self.requests.load(SeqCst) != 0 {
            return;
        }
        let start = Instant::now();
        let entries = self.entries.load(SeqCst);
        self.turn_waiters.fetch_add(1, SeqCst);
        let mut waits = lock(&self.waits);
        while self.wants_in.load(SeqCst)
            && self.requests.load(SeqCst) == 0
            && self.entries.load(SeqCst) == entries
            && start.elapsed() < TURN_PATIENCE
        {
            waits =
                self.changed.wait_timeout(waits, KICK_INTERVAL).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        drop(waits);
        self.turn_waiters.fetch_sub(1, SeqCst);
    }

    /// Requester: returns once the runner is out of the guest, kicking it
    /// again every millisecond while it is not.
    pub fn wait_out(&self, _pause: &PauseGuard<'_>, kick: impl Fn()) {
        if !self.in_guest.load(SeqCst) {
            return;
        }
        let start = Instant::now();
        let mut waits = lock(&self.waits);
        while self.in_guest.load(SeqCst) {
            let patient = start.elapsed() < KICK_PATIENCE;
            let interval = if patient { KICK_INTERVAL } else { Duration::from_millis(100) };
            waits = self.changed.wait_timeout(waits, interval).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            if patient && self.in_guest.load(SeqCst) {
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
        self.in_guest.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
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
            assert_eq!(gate.entries.load(SeqCst), 1, "the runner entered before the second pause");
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
