//! All-stop for a debugger: every vcpu thread parks inside `kvm_run` while
//! a debugger looks at the VM, and vcpus inside the guest are kicked out of
//! it (see [`crate::vcpu::kick`]).
//!
//! The VMM's own loop never sees a stop: `kvm_run` does not return while
//! its vcpu is parked, and a kick does not reach the `io_window` callback.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::spin;
use crate::context::Context;
use crate::debug::decode::DebugEvent;
use crate::error::Result;
use crate::lock;
use crate::vcpu::Vcpu;

/// A debug event on a vcpu while a debugger is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopEvent {
    /// The vcpu it happened on.
    pub vcpu: u32,
    /// What happened.
    pub event: DebugEvent,
}

/// What a parked vcpu does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Enter the guest.
    Run,
    /// The debugger killed the VM: end `kvm_run` through `shutdown`.
    Killed,
}

/// The all-stop machinery of one VM.
pub struct Stopper {
    events: Mutex<VecDeque<StopEvent>>,
    /// Signalled when a vcpu parks or is released.
    changed: Condvar,
    /// Wakes the debugger's poll loop when a vcpu queues an event.
    wake: EventFd,
    attached: AtomicBool,
    killed: AtomicBool,
    hold_new_vcpus: AtomicBool,
}

impl Stopper {
    /// A stopper with no debugger attached.
    pub fn new() -> Result<Stopper> {
        Ok(Stopper {
            events: Mutex::new(VecDeque::new()),
            changed: Condvar::new(),
            wake: EventFd::new(EFD_NONBLOCK).map_err(crate::gdb::io_errno)?,
            attached: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            hold_new_vcpus: AtomicBool::new(false),
        })
    }

    /// The eventfd that becomes readable when a vcpu with a stop event
    /// queued parks.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// True while a debugger receives the debug events.
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Routes debug events to the debugger (`true`) or to the VMM's callback.
    pub fn set_attached(&self, attached: bool) {
        self.attached.store(attached, Ordering::Release);
        if !attached {
            lock(&self.events).clear();
        }
    }

    /// Makes vcpus created from now on start held (a VMM waiting for gdb).
    pub fn set_hold_new_vcpus(&self, hold: bool) {
        self.hold_new_vcpus.store(hold, Ordering::Release);
    }

    /// True when new vcpus start held.
    pub fn holds_new_vcpus(&self) -> bool {
        self.hold_new_vcpus.load(Ordering::Acquire)
    }

    /// Called by the thread running `vcpu` before each entry: parks it while
    /// it is held. One atomic load when it is not.
    #[inline]
    pub fn checkpoint(&self, vcpu: &Vcpu) -> Checkpoint {
        if !vcpu.is_held() {
            return Checkpoint::Run;
        }
        self.park(vcpu)
    }

    /// [`Stopper::checkpoint`] for a held vcpu: parks until released.
    /// A vcpu that parks with a stop event queued wakes the debugger: it
    /// then finds the vcpu already parked, with nothing to wait for.
    /// The vcpu that reported the last stop (the one gdb resumes next, most
    /// often: a step, or the step off a breakpoint) looks for its release
    /// without sleeping for a moment first (see [`super::spin`]).
    #[inline(never)]
    fn park(&self, vcpu: &Vcpu) -> Checkpoint {
        let events = lock(&self.events);
        vcpu.set_parked(true);
        let tell_debugger = !events.is_empty();
        let reported_last = events.back().is_some_and(|stop| stop.vcpu == vcpu.index());
        // Stored under the lock, so that a waiter in `wait_all_stopped`
        // either sees it or is waiting already; woken outside it.
        drop(events);
        self.changed.notify_all();
        if tell_debugger {
            let _ = self.wake.write(1);
        }
        if reported_last {
            spin::until(spin::REPORTER_BUDGET, || !vcpu.is_held() || self.killed.load(Ordering::Acquire));
        }
        let mut events = lock(&self.events);
        while vcpu.is_held() && !self.killed.load(Ordering::Acquire) {
            events = self.changed.wait(events).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        vcpu.set_parked(false);
        drop(events);
        if self.killed.load(Ordering::Acquire) {
            Checkpoint::Killed
        } else {
            Checkpoint::Run
        }
    }

    /// Called by the thread running `vcpu` for a debug event while a
    /// debugger is attached: queue it and stop every vcpu. The vcpu parks
    /// at its next checkpoint, which wakes the debugger. It is outside the
    /// guest, on this thread, so it is held without a kick (a kick would
    /// only make its next entry return at once).
    pub fn report(&self, ctx: &Context, vcpu: &Vcpu, event: DebugEvent) {
        lock(&self.events).push_back(StopEvent { vcpu: vcpu.index(), event });
        vcpu.set_held(true);
        self.hold_all(ctx);
    }

    /// The oldest queued stop event.
    pub fn take_event(&self) -> Option<StopEvent> {
        lock(&self.events).pop_front()
    }

    /// Resets the wake eventfd once the debugger woke on it; the queue,
    /// not the eventfd, says whether there are events.
    pub fn clear_wake(&self) {
        let _ = self.wake.read();
    }

    /// True when stop events wait for the debugger.
    pub fn has_events(&self) -> bool {
        !lock(&self.events).is_empty()
    }

    /// Asks every vcpu to stop and kicks those that may be in the guest
    /// (not the ones already held: they are parked or on their way).
    pub fn hold_all(&self, ctx: &Context) {
        for vcpu in ctx.vcpus() {
            if vcpu.is_held() {
                continue;
            }
            vcpu.set_held(true);
            if !vcpu.is_stopped() {
                vcpu.kick();
            }
        }
    }

    /// Stops every vcpu: returns once each is parked or outside `kvm_run`.
    pub fn stop_all(&self, ctx: &Context) {
        self.hold_all(ctx);
        self.wait_all_stopped(ctx);
    }

    /// Waits until every vcpu is parked or outside `kvm_run`, kicking the
    /// ones still in the guest again now and then (a vcpu may have been
    /// between two entries when first kicked).
    fn wait_all_stopped(&self, ctx: &Context) {
        let mut events = lock(&self.events);
        loop {
            let running: Vec<&Vcpu> = ctx.vcpus().filter(|v| !v.is_stopped()).collect();
            if running.is_empty() {
                return;
            }
            for vcpu in running {
                vcpu.kick();
            }
            events = self
                .changed
                .wait_timeout(events, Duration::from_millis(10))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Lets go of the vcpus for which `release` is true.
    pub fn release(&self, ctx: &Context, release: impl Fn(&Vcpu) -> bool) {
        for vcpu in ctx.vcpus().filter(|v| release(v)) {
            vcpu.set_held(false);
        }
        // Taking the lock orders the releases before any parked vcpu's next
        // look at them; the notification need not hold it (a vcpu woken
        // inside it would only block on it again).
        drop(lock(&self.events));
        self.changed.notify_all();
    }

    /// Ends the VM for the debugger's `kill`: every parked vcpu leaves
    /// `kvm_run` through the VMM's `shutdown` callback.
    pub fn kill(&self, ctx: &Context) {
        self.killed.store(true, Ordering::Release);
        self.release(ctx, |_| true);
    }

    /// True after `kill`.
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}
