//! Coalesced MMIO (libkvm, May 2008): guest writes to zones the VMM
//! registers do not exit; KVM queues them in a ring that the VM shares with
//! every vcpu, and `kvm_run` hands them to the VMM's `mmio_write`, in
//! order, after every return from `KVM_RUN` and before the exit is handled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kvm_ioctls::IoEventAddress;

use super::Context;
use crate::error::{Errno, Result};
use crate::lock;
use crate::vcpu::Vcpu;

/// The coalesced MMIO state of one VM.
#[derive(Debug)]
pub struct CoalescedMmio {
    /// The host has `KVM_CAP_COALESCED_MMIO`.
    supported: bool,
    /// Set once a zone was registered: the run loop looks at the ring only
    /// from then on (an entry may outlive its zone).
    in_use: AtomicBool,
    /// One vcpu thread drains the ring at a time, so entries reach the VMM
    /// once each and in order.
    draining: Mutex<()>,
}

impl CoalescedMmio {
    /// The state of a VM on a host that has coalesced MMIO or not.
    pub fn new(supported: bool) -> CoalescedMmio {
        CoalescedMmio { supported, in_use: AtomicBool::new(false), draining: Mutex::new(()) }
    }

    /// True when the host has coalesced MMIO (each vcpu maps the ring).
    pub fn supported(&self) -> bool {
        self.supported
    }
}

impl Context {
    /// `kvm_register_coalesced_mmio`; `ENOSYS` where the host lacks it.
    pub fn register_coalesced_mmio(&self, addr: u64, size: u32) -> Result<()> {
        if !self.coalesced_mmio.supported {
            return Err(Errno(libc::ENOSYS));
        }
        self.vm()?.register_coalesced_mmio(IoEventAddress::Mmio(addr), size).map_err(Errno::from)?;
        self.coalesced_mmio.in_use.store(true, Ordering::Release);
        Ok(())
    }

    /// `kvm_unregister_coalesced_mmio`; `ENOSYS` where the host lacks it.
    pub fn unregister_coalesced_mmio(&self, addr: u64, size: u32) -> Result<()> {
        if !self.coalesced_mmio.supported {
            return Err(Errno(libc::ENOSYS));
        }
        self.vm()?.unregister_coalesced_mmio(IoEventAddress::Mmio(addr), size).map_err(Errno::from)
    }

    /// True once the VMM registered a coalesced MMIO zone: the ring must
    /// be drained after each `KVM_RUN`.
    #[inline]
    pub(crate) fn coalesced_mmio_in_use(&self) -> bool {
        self.coalesced_mmio.in_use.load(Ordering::Acquire)
    }

    /// Hands every queued coalesced write to the VMM's `mmio_write`, oldest
    /// first. Called by the thread running `vcpu` after each `KVM_RUN`.
    pub(crate) fn deliver_coalesced_mmio(&self, vcpu: &Vcpu) {
        if !self.coalesced_mmio_in_use() {
            return;
        }
        let _draining = lock(&self.coalesced_mmio.draining);
        while let Ok(Some(mut entry)) = vcpu.with_fd(|fd| fd.coalesced_mmio_read()) {
            let len = (entry.len as usize).min(entry.data.len());
            // The ring cannot tell the VMM's answer to anyone; as in 2008,
            // a failing handler does not stop the delivery.
            let _ = self.callbacks().mmio_write(entry.phys_addr, &mut entry.data[..len]);
        }
    }
}
