//! The VM's KVM slots as the memory table changes them while vcpus run.

use std::cell::RefCell;

use kvm_ioctls::VmFd;

use super::{Context, VcpusPaused};
use crate::error::Result;
use crate::memory::{Piece, SlotRegistry};

/// The VM fd as the [`SlotRegistry`] of a change to the memory layout. A
/// change that takes memory away from the guest for a moment (deleting a
/// KVM slot to cut it anew) first pauses every vcpu: they are kicked out
/// of the guest and stay out until this value is dropped, so no vcpu ever
/// finds its memory missing. Flag changes and new slots need no pause.
pub(crate) struct LiveSlots<'a> {
    ctx: &'a Context,
    vm: &'a VmFd,
    paused: RefCell<Option<VcpusPaused<'a>>>,
}

impl<'a> LiveSlots<'a> {
    /// The registry of `ctx`'s VM; `ENODEV` before the VM exists.
    pub(crate) fn of(ctx: &'a Context) -> Result<LiveSlots<'a>> {
        Ok(LiveSlots { ctx, vm: ctx.vm()?, paused: RefCell::new(None) })
    }

    /// Pauses every vcpu, once.
    fn pause_vcpus(&self) {
        let mut paused = self.paused.borrow_mut();
        if paused.is_none() {
            *paused = Some(self.ctx.pause_vcpus());
        }
    }
}

impl SlotRegistry for LiveSlots<'_> {
    fn register(&self, piece: &Piece) -> Result<()> {
        self.vm.register(piece)
    }

    fn unregister(&self, kvm_slot: u32) -> Result<()> {
        self.pause_vcpus();
        self.vm.unregister(kvm_slot)
    }

    fn dirty_log(&self, kvm_slot: u32, len: u64) -> Result<Vec<u64>> {
        self.vm.dirty_log(kvm_slot, len)
    }
}
