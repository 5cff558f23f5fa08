//! The registers the debugger reads at every stop and step (the PC, the
//! stack, the flags, the paging registers), and the runner's own copy of
//! them from the last debug exit: the runner reads its copy without the fd
//! mutex that guards the `kvm_run` page, where the exit synced them.

use std::cell::UnsafeCell;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_sync_regs};

use super::paging_registers_of;
use crate::debug::pagewalk::PagingRegisters;
use crate::x86;

/// What a stop reads of a vcpu's registers.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopRegisters {
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// The code segment.
    pub cs: kvm_segment,
    /// The stack segment.
    pub ss: kvm_segment,
    /// CR0, CR3, CR4 and EFER.
    pub paging: PagingRegisters,
}

impl StopRegisters {
    /// Taken from the general and segment registers.
    #[inline]
    pub fn of(regs: &kvm_regs, sregs: &kvm_sregs) -> StopRegisters {
        StopRegisters {
            rip: regs.rip,
            rsp: regs.rsp,
            rflags: regs.rflags,
            cs: sregs.cs,
            ss: sregs.ss,
            paging: paging_registers_of(sregs),
        }
    }

    /// The linear address of the instruction at RIP.
    #[inline]
    pub fn linear_pc(&self) -> u64 {
        x86::linear_address_of_ip(self.rip, &self.cs, self.paging.efer)
    }
}

/// The [`StopRegisters`] of the last debug or internal-error exit, at the
/// state epoch they belong to. Only the thread inside `kvm_run` for the
/// vcpu touches them.
pub(super) struct ExitRegisters {
    copy: UnsafeCell<(u64, StopRegisters)>,
}

impl Default for ExitRegisters {
    fn default() -> ExitRegisters {
        // u64::MAX: no copy yet (the epoch never gets there).
        ExitRegisters { copy: UnsafeCell::new((u64::MAX, StopRegisters::default())) }
    }
}

impl ExitRegisters {
    /// Keeps what a stop reads of `synced`, the registers at state epoch
    /// `epoch`.
    ///
    /// # Safety
    /// The caller is the vcpu's runner, and no reference from
    /// [`ExitRegisters::read`] is alive (its callers' closures do not call
    /// back into the vcpu).
    #[inline]
    pub(super) unsafe fn store(&self, epoch: u64, synced: &kvm_sync_regs) {
        // SAFETY: the runner alone uses the cell, and nothing borrows it now.
        let copy = unsafe { &mut *self.copy.get() };
        *copy = (epoch, StopRegisters::of(&synced.regs, &synced.sregs));
    }

    /// Calls `f` with the copy when it is current at state epoch `epoch`
    /// (no run and no write of the registers since it was taken); gives `f`
    /// back when it is not.
    ///
    /// # Safety
    /// The caller is the vcpu's runner, and `f` does not call back into the
    /// vcpu.
    #[inline]
    pub(super) unsafe fn read<R, F>(&self, epoch: u64, f: F) -> Result<R, F>
    where
        F: FnOnce(&StopRegisters) -> R,
    {
        // SAFETY: the runner alone uses the cell, and `store` cannot run
        // while `f` does.
        let (at, registers) = unsafe { &*self.copy.get() };
        if *at != epoch {
            return Err(f);
        }
        Ok(f(registers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_read_only_at_the_epoch_it_was_taken_at() {
        let copies = ExitRegisters::default();
        let mut synced = kvm_sync_regs::default();
        synced.regs.rip = 0x1234;
        synced.sregs.cr3 = 0x5000;
        // SAFETY: this test is the only thread using the copy.
        unsafe {
            assert!(copies.read(0, |r| r.rip).is_err(), "no copy before the first exit");
            copies.store(7, &synced);
            assert_eq!(copies.read(7, |r| (r.rip, r.paging.cr3)).ok(), Some((0x1234, 0x5000)));
            assert!(copies.read(8, |r| r.rip).is_err(), "a write or a run since: not current");
        }
    }
}
