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

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// How often a requester kicks again while the vcpu is still inside (a kick
/// can land just before an entry that then runs; the next one ends it).
const KICK_INTERVAL: Duration = Duration::from_millis(1);
/// After this long, a requester stops kicking and waits plainly.
const KICK_PATIENCE: Duration = Duration::from_secs(2);

/// The meeting point of a vcpu's runner and the threads that pause it.
#[derive(Debug, Default)]
pub struct PauseGate {
    /// True from just before `KVM_RUN` until just after it returns.
    in_guest: AtomicBool,
    /// Pauses held now.
    requests: AtomicU32,
    /// Guards the waits on `changed`.
    waits: Mutex<()>,
    /// Signalled when the runner leaves the guest or a pause ends.
    changed: Condvar,
}

/// A held pause: the vcpu does not enter the guest until it is dropped.
#[must_use = "the pause ends when the guard is dropped"]
pub struct PauseGuard<'a> {
    gate: &'a PauseGate,
}

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        if self.gate.requests.fetch_sub(1, SeqCst) == 1 {
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
            return true;
        }
        self.left_guest();
        false
    }

    /// Runner: `KVM_RUN` returned.
    pub fn left_guest(&self) {
        self.in_guest.store(false, SeqCst);
        if self.requests.load(SeqCst) != 0 {
            let _waits = lock(&self.waits);
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
        self.requests.fetch_add(1, SeqCst);
        if self.in_guest.load(SeqCst) {
            kick();
        }
        PauseGuard { gate: self }
    }

    /// Requester: returns once the runner is out of the guest, kicking it
    /// again every millisecond while it is not.
    pub fn wait_out(&self, _pause: &PauseGuard<'_>, kick: impl Fn()) {
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

    #[test]
    fn pauses_kick_a_spinning_runner_out_and_keep_it_out() {
        let vcpu = Arc::new(FakeVcpu {
            gate: PauseGate::default(),
            kicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            entries: AtomicU64::new(0),
            entered_while_paused: AtomicBool::new(false),
            paused: AtomicU32::new(0),
        });
        let runner = {
            let vcpu = vcpu.clone();
            std::thread::spawn(move || spin(&vcpu))
        };
        let requesters: Vec<_> = (0..3)
            .map(|_| {
                let vcpu = vcpu.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let guard = vcpu.gate.pause(|| vcpu.kicked.store(true, SeqCst));
                        vcpu.paused.fetch_add(1, SeqCst);
                        assert!(!vcpu.gate.in_guest(), "the runner is out while paused");
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
        assert!(!vcpu.entered_while_paused.load(SeqCst));
        assert!(vcpu.entries.load(SeqCst) > 1, "the runner ran between pauses");
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
