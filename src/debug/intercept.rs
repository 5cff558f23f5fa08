//! The one place where an exit meets the debugger. The run loop asks
//! [`sees`] of every exit (a load or two for port I/O and MMIO) and gives
//! the exits it accepts to [`on_exit`], which hands the VMM its part
//! through the run loop's handler and does the debugger's around it: the
//! debug exits, the `int3` that is an emulation failure, the accesses to
//! pages protected for watchpoints, and the single step that a port or MMIO
//! exit interrupts. The debugger's other two places in the loop are not
//! exits: the entry (`exits::before_entry`) and a library kick
//! (`progress::after_kick`).

use std::ffi::c_int;

use super::{exits, progress, watch};
use crate::context::Context;
use crate::error::{result_code, Result};
use crate::exit::{Exit, ExitData, OtherExit};
use crate::vcpu::{RunnerGuard, Vcpu};

/// True when the debugger may have a part in `exit`: every exit but port
/// I/O and MMIO (they are rare, and [`on_exit`] hands on at once those
/// that are neither a debug exit nor an emulation failure), port I/O and
/// MMIO of a single-stepping vcpu (the step to finish), and MMIO once pages
/// were protected for watchpoints. Inlined into the run loop.
#[inline(always)]
pub fn sees(ctx: &Context, vcpu: &Vcpu, exit: &Exit) -> bool {
    match exit {
        Exit::Other => true,
        Exit::Mmio { .. } => ctx.debugger().pages_were_protected() || vcpu.stepping(),
        Exit::PortOut { .. } | Exit::Io { .. } => vcpu.stepping(),
    }
}

/// An exit [`sees`] accepted. The VMM's part goes to `vmm`, the run loop's
/// handling of an exit for the VMM (its callbacks, and a load's answer
/// given back to KVM), which returns the handler's result. The result is
/// `kvm_run`'s loop result (0 to go on).
#[inline(always)]
pub fn on_exit(
    ctx: &Context,
    vcpu: &Vcpu,
    runner: &RunnerGuard<'_>,
    exit: Exit,
    exit_data: &mut ExitData,
    vmm: &impl Fn(Exit, &mut ExitData) -> c_int,
) -> c_int {
    // A halt and the like go on at once. (Debug exits as `Exit` variants of
    // their own would spare this look, but made the run loop's port and
    // MMIO exits slower: measured.)
    if exit == Exit::Other && !matches!(exit_data.other, OtherExit::Debug | OtherExit::InternalError) {
        return vmm(exit, exit_data);
    }
    Intercepted { ctx, vcpu, runner, vmm }.take(exit, exit_data)
}

/// The vcpu whose exit the debugger handles, and where the VMM's part goes.
struct Intercepted<'a, V> {
    ctx: &'a Context,
    vcpu: &'a Vcpu,
    runner: &'a RunnerGuard<'a>,
    vmm: &'a V,
}

impl<V: Fn(Exit, &mut ExitData) -> c_int> Intercepted<'_, V> {
    /// [`on_exit`] for the exits the debugger has a part in. The debug exit
    /// first, apart from [`Intercepted::exit`] (which handles it too, for
    /// the exits that finishing another causes): merged into one
    /// out-of-line `exit`, a step took 19 more instructions, and the run
    /// loop's port and MMIO exits 2 and 3 more (`make bench-instructions`).
    #[inline(never)]
    fn take(&self, exit: Exit, exit_data: &mut ExitData) -> c_int {
        match exit {
            // Nearly every exit the debugger takes: a step, a breakpoint hit.
            Exit::Other => self.other_exit(exit_data),
            _ => self.exit(exit, exit_data),
        }
    }

    /// Any exit the debugger sees: port I/O, MMIO and the rest.
    fn exit(&self, exit: Exit, exit_data: &mut ExitData) -> c_int {
        let handled = match exit {
            Exit::Other => return self.other_exit(exit_data),
            Exit::Mmio { addr, len, is_write } if self.ctx.debugger().pages_were_protected() => {
                match self.mmio_with_protections(addr, len, is_write, exit_data) {
                    Ok(result) => result,
                    Err(end) => return end,
                }
            }
            Exit::Mmio { .. } | Exit::PortOut { .. } | Exit::Io { .. } => (self.vmm)(exit, exit_data),
        };
        if handled != 0 {
            return handled;
        }
        match exits::after_io_exit(self.vcpu, self.runner, exit_data) {
            Ok(Some(step)) => self.next_exit(step, exit_data),
            Ok(None) => 0,
            Err(e) => e.negated(),
        }
    }

    /// An exit that finishing another one caused (a step, the rest of a
    /// split access): handled as the run loop handles any.
    fn next_exit(&self, exit: Exit, exit_data: &mut ExitData) -> c_int {
        if sees(self.ctx, self.vcpu, &exit) {
            self.exit(exit, exit_data)
        } else {
            (self.vmm)(exit, exit_data)
        }
    }

    /// Every exit but port I/O and MMIO: the debug exits and the emulation
    /// failures that are the debugger's; the rest are the VMM's.
    #[inline(always)]
    fn other_exit(&self, exit_data: &mut ExitData) -> c_int {
        let (ctx, vcpu) = (self.ctx, self.vcpu);
        let outcome = match exit_data.other {
            OtherExit::Debug => exits::on_debug_exit(ctx, vcpu, &exit_data.debug),
            OtherExit::InternalError => match exits::on_emulation_failure(ctx, vcpu, &exit_data.internal) {
                Some(outcome) => outcome,
                None => return (self.vmm)(Exit::Other, exit_data),
            },
            _ => return (self.vmm)(Exit::Other, exit_data),
        };
        result_code(outcome)
    }

    /// An MMIO exit once pages were protected for watchpoints: the library
    /// completes an access to a protected page, and reports the watchpoint
    /// it fires; any other access is the VMM's. The handler's result, or
    /// `kvm_run`'s result when the exit ends it (`Err`).
    fn mmio_with_protections(
        &self,
        addr: u64,
        len: u8,
        is_write: bool,
        exit_data: &mut ExitData,
    ) -> std::result::Result<c_int, c_int> {
        let (ctx, vcpu) = (self.ctx, self.vcpu);
        // A copy: finishing a watched access may decode another exit.
        let mut bytes = exit_data.mmio;
        let data = &mut bytes[..usize::from(len)];
        match watch::complete_protected_access(ctx, vcpu, addr, data, is_write) {
            Some(watched) => {
                let watched =
                    watched.and_then(|hit| progress::note_protected_access(ctx, vcpu, addr, is_write).map(|()| hit));
                match self.watched_access(watched, data, is_write, exit_data) {
                    Some(end) => Err(end),
                    None => Ok(0),
                }
            }
            // Not on a protected page: the access and its data are as KVM
            // gave them.
            None => Ok((self.vmm)(Exit::Mmio { addr, len, is_write }, exit_data)),
        }
    }

    /// A guest access to a page protected for a watchpoint, which the
    /// library completed: a watchpoint it fired is reported once its
    /// instruction is done (a load's instruction finishes at once, without
    /// entering the guest), as a hardware data breakpoint would be. `None`
    /// when no watchpoint fired: the exit is then done, like any handled
    /// MMIO.
    fn watched_access(
        &self,
        watched: Result<Option<watch::WatchHit>>,
        data: &[u8],
        is_write: bool,
        exit_data: &mut ExitData,
    ) -> Option<c_int> {
        let (ctx, vcpu) = (self.ctx, self.vcpu);
        let hit = match watched {
            Ok(hit) => hit,
            Err(e) => return Some(e.negated()),
        };
        if !is_write {
            vcpu.complete_mmio_read(data);
        }
        let hit = hit?;
        match exits::finish_watched_instruction(ctx, vcpu, self.runner, is_write, exit_data) {
            Ok(None) => {}
            Ok(Some(next)) => {
                let r = self.next_exit(next, exit_data);
                if r != 0 {
                    return Some(r);
                }
            }
            Err(e) => return Some(e.negated()),
        }
        Some(result_code(watch::report_hit(ctx, vcpu, hit)))
    }
}
