//! The KVM ioctls the 2008 API needs that `kvm-ioctls` does not wrap, and
//! the two the runner issues without the vcpu's fd mutex: `KVM_RUN` and
//! `KVM_SET_GUEST_DEBUG`.
//!
//! Each is a thin `vmm-sys-util` wrapper, named after its section in the
//! kernel's `Documentation/virt/kvm/api.rst`, next to its only use.
//! `kvm-ioctls` wraps `KVM_RUN` too, but its `VcpuFd::run` needs the fd
//! borrowed mutably (so a lock around every entry) and decodes each exit
//! into its own enum, which the run loop would decode again: together a
//! third of the library's instructions per exit (`BENCHMARKS.md`). Its
//! `VcpuFd::set_guest_debug` is behind the same mutex, which a step over a
//! breakpoint would take twice a hit besides the vcpu's debug state lock
//! that already orders every programming.

use std::os::fd::AsRawFd;

use kvm_bindings::{
    kvm_guest_debug, kvm_interrupt, kvm_pit_state, kvm_signal_mask, kvm_tpr_access_ctl, kvm_vapic_addr, KVMIO,
};
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

use crate::error::{Errno, Result};

ioctl_io_nr!(KVM_SET_NR_MMU_PAGES, KVMIO, 0x44);
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_io_nr!(KVM_GET_NR_MMU_PAGES, KVMIO, 0x45);
ioctl_iowr_nr!(KVM_GET_PIT, KVMIO, 0x65, kvm_pit_state);
ioctl_ior_nr!(KVM_SET_PIT, KVMIO, 0x66, kvm_pit_state);
ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);
ioctl_iow_nr!(KVM_SET_SIGNAL_MASK, KVMIO, 0x8b, kvm_signal_mask);
ioctl_iowr_nr!(KVM_TPR_ACCESS_REPORTING, KVMIO, 0x92, kvm_tpr_access_ctl);
ioctl_iow_nr!(KVM_SET_VAPIC_ADDR, KVMIO, 0x93, kvm_vapic_addr);
ioctl_iow_nr!(KVM_SET_GUEST_DEBUG, KVMIO, 0x9b, kvm_guest_debug);

fn check(ret: i32) -> Result<i32> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// `KVM_RUN` (vcpu): enters the guest until the next exit, which the
/// kernel describes in the vcpu's `kvm_run` mapping.
#[inline]
pub fn run(vcpu: &impl AsRawFd) -> Result<()> {
    // SAFETY: a vcpu ioctl with no argument; the kernel writes only the
    // vcpu's own mapping, which outlives the fd.
    check(unsafe { ioctl(vcpu, KVM_RUN()) }).map(drop)
}

/// `KVM_SET_GUEST_DEBUG` (vcpu): the debug state the next entries run with.
#[inline]
pub fn set_guest_debug(vcpu: &impl AsRawFd, debug: &kvm_guest_debug) -> Result<()> {
    // SAFETY: the kernel reads one kvm_guest_debug.
    check(unsafe { ioctl_with_ref(vcpu, KVM_SET_GUEST_DEBUG(), debug) }).map(drop)
}

/// `KVM_SET_NR_MMU_PAGES` (VM): the number of shadow MMU pages.
pub fn set_nr_mmu_pages(vm: &impl AsRawFd, pages: u32) -> Result<()> {
    // SAFETY: a VM ioctl taking its argument by value.
    check(unsafe { ioctl_with_val(vm, KVM_SET_NR_MMU_PAGES(), libc::c_ulong::from(pages)) }).map(drop)
}

/// `KVM_GET_NR_MMU_PAGES` (VM): removed from newer kernels, which answer `EINVAL`.
pub fn get_nr_mmu_pages(vm: &impl AsRawFd) -> Result<u32> {
    // SAFETY: a VM ioctl with no argument; the count is the return value.
    check(unsafe { ioctl_with_val(vm, KVM_GET_NR_MMU_PAGES(), 0) }).map(|n| n as u32)
}

/// `KVM_GET_PIT` (VM): the legacy PIT state.
pub fn get_pit(vm: &impl AsRawFd) -> Result<kvm_pit_state> {
    let mut state = kvm_pit_state::default();
    // SAFETY: the kernel writes one kvm_pit_state into `state`.
    check(unsafe { ioctl_with_mut_ref(vm, KVM_GET_PIT(), &mut state) })?;
    Ok(state)
}

/// `KVM_SET_PIT` (VM).
pub fn set_pit(vm: &impl AsRawFd, state: &kvm_pit_state) -> Result<()> {
    // SAFETY: the kernel reads one kvm_pit_state from `state`.
    check(unsafe { ioctl_with_ref(vm, KVM_SET_PIT(), state) }).map(drop)
}

/// `KVM_INTERRUPT` (vcpu): queue external interrupt `irq` (no in-kernel irqchip).
pub fn interrupt(vcpu: &impl AsRawFd, irq: u32) -> Result<()> {
    let request = kvm_interrupt { irq };
    // SAFETY: the kernel reads one kvm_interrupt.
    check(unsafe { ioctl_with_ref(vcpu, KVM_INTERRUPT(), &request) }).map(drop)
}

/// The argument of `KVM_SET_SIGNAL_MASK`: a length and the kernel's 64-bit sigset.
#[repr(C)]
struct SignalMask {
    len: u32,
    sigset: [u8; 8],
}

/// `KVM_SET_SIGNAL_MASK` (vcpu): the signal mask while the guest runs; `None` removes it.
pub fn set_signal_mask(vcpu: &impl AsRawFd, mask: Option<&libc::sigset_t>) -> Result<()> {
    let ret = match mask {
        None => {
            // SAFETY: a NULL argument tells the kernel to drop the mask.
            unsafe { ioctl_with_ptr(vcpu, KVM_SET_SIGNAL_MASK(), std::ptr::null::<SignalMask>()) }
        }
        Some(mask) => {
            // The kernel's sigset_t is the first 64 bits of glibc's.
            // SAFETY: sigset_t is plain data of at least 8 bytes.
            let bytes = unsafe { std::slice::from_raw_parts((mask as *const libc::sigset_t).cast::<u8>(), 8) };
            let arg = SignalMask { len: 8, sigset: bytes.try_into().expect("8 bytes") };
            // SAFETY: the kernel reads `len` and then `len` bytes of sigset.
            unsafe { ioctl_with_ref(vcpu, KVM_SET_SIGNAL_MASK(), &arg) }
        }
    };
    check(ret).map(drop)
}

/// `KVM_TPR_ACCESS_REPORTING` (vcpu): report TPR accesses as exits.
pub fn tpr_access_reporting(vcpu: &impl AsRawFd, enabled: bool) -> Result<()> {
    let mut ctl = kvm_tpr_access_ctl { enabled: u32::from(enabled), ..Default::default() };
    // SAFETY: the kernel reads and writes one kvm_tpr_access_ctl.
    check(unsafe { ioctl_with_mut_ref(vcpu, KVM_TPR_ACCESS_REPORTING(), &mut ctl) }).map(drop)
}

/// `KVM_SET_VAPIC_ADDR` (vcpu): guest-physical address of the virtual APIC page.
pub fn set_vapic_addr(vcpu: &impl AsRawFd, vapic_addr: u64) -> Result<()> {
    let arg = kvm_vapic_addr { vapic_addr };
    // SAFETY: the kernel reads one kvm_vapic_addr.
    check(unsafe { ioctl_with_ref(vcpu, KVM_SET_VAPIC_ADDR(), &arg) }).map(drop)
}
