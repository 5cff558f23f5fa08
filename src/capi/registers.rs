//! Per-vcpu state: registers, MSRs, CPUID, interrupts, LAPIC, signal mask.

use std::ffi::c_int;

use kvm_bindings::{
    kvm_cpuid_entry, kvm_cpuid_entry2, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    CpuId, Msrs,
};

use super::*;
use crate::sys;

/// The most MSRs or CPUID entries one call takes (the kernel's own limit is
/// lower for MSRs): a larger count is refused (`E2BIG`) before the array is
/// touched, as it cannot be a real array.
const MAX_ENTRIES: c_int = 256;

fn checked_count(n: c_int) -> Result<c_int> {
    if n > MAX_ENTRIES {
        Err(Errno(libc::E2BIG))
    } else {
        Ok(n)
    }
}

/// Reads one piece of vcpu state with `read` into `*out`.
///
/// # Safety
/// `kvm` is NULL or from `kvm_init`; `out` is NULL or writable.
unsafe fn get_state<T>(
    kvm: kvm_context_t,
    vcpu: c_int,
    out: *mut T,
    read: impl FnOnce(&mut kvm_ioctls::VcpuFd) -> std::result::Result<T, kvm_ioctls::Error>,
) -> c_int {
    status_result(|| {
        // SAFETY: the caller's promise above.
        let ((_, vcpu), out) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_mut(out)?) };
        *out = vcpu.ioctl(read)?;
        Ok(())
    })
}

/// Writes one piece of vcpu state from `*value` with `write`.
///
/// # Safety
/// `kvm` is NULL or from `kvm_init`; `value` is NULL or valid.
unsafe fn set_state<T>(
    kvm: kvm_context_t,
    vcpu: c_int,
    value: *const T,
    write: impl FnOnce(&mut kvm_ioctls::VcpuFd, &T) -> std::result::Result<(), kvm_ioctls::Error>,
) -> c_int {
    status_result(|| {
        // SAFETY: the caller's promise above.
        let ((_, vcpu), value) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_ref(value)?) };
        vcpu.write_state(|fd| write(fd, value))
    })
}

/// Reads the general registers of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_regs(kvm: kvm_context_t, vcpu: c_int, regs: *mut kvm_regs) -> c_int {
    // SAFETY: C passes a context from kvm_init and a writable struct (or NULL).
    unsafe { get_state(kvm, vcpu, regs, |fd| fd.get_regs()) }
}

/// Writes the general registers of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_regs(kvm: kvm_context_t, vcpu: c_int, regs: *mut kvm_regs) -> c_int {
    // SAFETY: C passes a context from kvm_init and a valid struct (or NULL).
    unsafe { set_state(kvm, vcpu, regs, |fd, v| fd.set_regs(v)) }
}

/// Reads the FPU and SSE state of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_fpu(kvm: kvm_context_t, vcpu: c_int, fpu: *mut kvm_fpu) -> c_int {
    // SAFETY: C passes a context from kvm_init and a writable struct (or NULL).
    unsafe { get_state(kvm, vcpu, fpu, |fd| fd.get_fpu()) }
}

/// Writes the FPU and SSE state of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_fpu(kvm: kvm_context_t, vcpu: c_int, fpu: *mut kvm_fpu) -> c_int {
    // SAFETY: C passes a context from kvm_init and a valid struct (or NULL).
    unsafe { set_state(kvm, vcpu, fpu, |fd, v| fd.set_fpu(v)) }
}

/// Reads the segment, descriptor-table and control registers of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_sregs(kvm: kvm_context_t, vcpu: c_int, regs: *mut kvm_sregs) -> c_int {
    // SAFETY: C passes a context from kvm_init and a writable struct (or NULL).
    unsafe { get_state(kvm, vcpu, regs, |fd| fd.get_sregs()) }
}

/// Writes the segment, descriptor-table and control registers of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_sregs(kvm: kvm_context_t, vcpu: c_int, regs: *mut kvm_sregs) -> c_int {
    // SAFETY: C passes a context from kvm_init and a valid struct (or NULL).
    unsafe { set_state(kvm, vcpu, regs, |fd, v| fd.set_sregs(v)) }
}

/// Reads the local APIC of `vcpu` (in-kernel irqchip only).
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_lapic(kvm: kvm_context_t, vcpu: c_int, s: *mut kvm_lapic_state) -> c_int {
    // SAFETY: C passes a context from kvm_init and a writable struct (or NULL).
    unsafe { get_state(kvm, vcpu, s, |fd| fd.get_lapic()) }
}

/// Writes the local APIC of `vcpu` (in-kernel irqchip only).
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_lapic(kvm: kvm_context_t, vcpu: c_int, s: *mut kvm_lapic_state) -> c_int {
    // SAFETY: C passes a context from kvm_init and a valid struct (or NULL).
    unsafe { set_state(kvm, vcpu, s, |fd, v| fd.set_lapic(v)) }
}

/// Reads the MP state (runnable, halted, ...) of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_mpstate(kvm: kvm_context_t, vcpu: c_int, mp_state: *mut kvm_mp_state) -> c_int {
    // SAFETY: C passes a context from kvm_init and a writable struct (or NULL).
    unsafe { get_state(kvm, vcpu, mp_state, |fd| fd.get_mp_state()) }
}

/// Writes the MP state of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_mpstate(kvm: kvm_context_t, vcpu: c_int, mp_state: *mut kvm_mp_state) -> c_int {
    // SAFETY: C passes a context from kvm_init and a valid struct (or NULL).
    unsafe { set_state(kvm, vcpu, mp_state, |fd, v| fd.set_mp_state(*v)) }
}

/// Reads the `n` MSRs whose `index` fields are set in `msrs`; returns how
/// many were read (the kernel stops at the first it cannot read). More than
/// 256 is `-E2BIG`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_msrs(kvm: kvm_context_t, vcpu: c_int, msrs: *mut kvm_msr_entry, n: c_int) -> c_int {
    int_result(|| {
        // SAFETY: C passes a context from kvm_init and `n` entries.
        let ((_, vcpu), entries) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_slice_mut(msrs, checked_count(n)?)?) };
        let mut request = Msrs::from_entries(entries).map_err(|_| Errno(libc::E2BIG))?;
        let done = vcpu.ioctl(|fd| fd.get_msrs(&mut request))?;
        entries[..done].copy_from_slice(&request.as_slice()[..done]);
        Ok(done as c_int)
    })
}

/// Writes `n` MSRs; returns how many were written. More than 256 is `-E2BIG`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_msrs(kvm: kvm_context_t, vcpu: c_int, msrs: *mut kvm_msr_entry, n: c_int) -> c_int {
    int_result(|| {
        // SAFETY: C passes a context from kvm_init and `n` entries.
        let ((_, vcpu), entries) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_slice_mut(msrs, checked_count(n)?)?) };
        let request = Msrs::from_entries(entries).map_err(|_| Errno(libc::E2BIG))?;
        Ok(vcpu.write_state(|fd| fd.set_msrs(&request))? as c_int)
    })
}

/// Sets the CPUID of `vcpu` from `nent` old-style entries (`KVM_SET_CPUID`;
/// sent as `KVM_SET_CPUID2` with index and flags 0, as the kernel does).
/// More than 256 entries is `-E2BIG`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_setup_cpuid(
    kvm: kvm_context_t,
    vcpu: c_int,
    nent: c_int,
    entries: *mut kvm_cpuid_entry,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and `nent` entries.
        let ((_, vcpu), entries) =
            unsafe { (checked_vcpu(kvm, vcpu)?, checked_slice_mut(entries, checked_count(nent)?)?) };
        let converted: Vec<kvm_cpuid_entry2> = entries
            .iter()
            .map(|e| kvm_cpuid_entry2 {
                function: e.function,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            })
            .collect();
        let cpuid = CpuId::from_entries(&converted).map_err(|_| Errno(libc::E2BIG))?;
        vcpu.ioctl(|fd| fd.set_cpuid2(&cpuid))
    })
}

/// Queues external interrupt vector `irq` on `vcpu` (`KVM_INTERRUPT`; only
/// without an in-kernel irqchip).
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_inject_irq(kvm: kvm_context_t, vcpu: c_int, irq: std::ffi::c_uint) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        vcpu.with_fd(|fd| sys::interrupt(fd, irq))
    })
}

/// The guest's RFLAGS.IF at the last exit of `vcpu` (0 or 1).
///
/// Reads (or writes) the vcpu's `kvm_run`; while the vcpu runs in another
/// thread, it is kicked out of the guest for the moment this takes.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_interrupt_flag(kvm: kvm_context_t, vcpu: c_int) -> c_int {
    int_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        Ok(vcpu.run_field(|run| run.if_flag).into())
    })
}

/// The APIC base MSR at the last exit of `vcpu`; 0 with `errno` on error.
///
/// Reads (or writes) the vcpu's `kvm_run`; while the vcpu runs in another
/// thread, it is kicked out of the guest for the moment this takes.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_apic_base(kvm: kvm_context_t, vcpu: c_int) -> u64 {
    value_result(0, || {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        Ok(vcpu.run_field(|run| run.apic_base))
    })
}

/// 1 when `vcpu` could take an interrupt injection at its last exit.
///
/// Reads (or writes) the vcpu's `kvm_run`; while the vcpu runs in another
/// thread, it is kicked out of the guest for the moment this takes.
#[no_mangle]
pub unsafe extern "C" fn kvm_is_ready_for_interrupt_injection(kvm: kvm_context_t, vcpu: c_int) -> c_int {
    int_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        Ok(vcpu.run_field(|run| run.ready_for_interrupt_injection).into())
    })
}

/// Sets CR8 (the task priority) through `kvm_run`; applied at the next run.
///
/// Reads (or writes) the vcpu's `kvm_run`; while the vcpu runs in another
/// thread, it is kicked out of the guest for the moment this takes.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_cr8(kvm: kvm_context_t, vcpu: c_int, cr8: u64) {
    void_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        vcpu.set_run_field(|run| run.cr8 = cr8);
        Ok(())
    })
}

/// The kernel's 64-bit unsigned type from `<linux/types.h>`, which the 2008
/// header used for `kvm_get_cr8` (not exported: the system header has it).
#[allow(non_camel_case_types)]
pub type __u64 = u64;

/// CR8 at the last exit of `vcpu`; 0 with `errno` on error.
///
/// Reads (or writes) the vcpu's `kvm_run`; while the vcpu runs in another
/// thread, it is kicked out of the guest for the moment this takes.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_cr8(kvm: kvm_context_t, vcpu: c_int) -> __u64 {
    value_result(0, || {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        Ok(vcpu.run_field(|run| run.cr8))
    })
}

/// Sets the signal mask `vcpu`'s thread has while the guest runs
/// (`KVM_SET_SIGNAL_MASK`); NULL removes it. The signal libkvm reserves to
/// stop vcpus for a debugger (`SIGRTMAX - 2`) always stays unblocked.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_signal_mask(kvm: kvm_context_t, vcpu: c_int, sigset: *const libc::sigset_t) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init, and a sigset or NULL.
        let ((_, vcpu), mask) = unsafe { (checked_vcpu(kvm, vcpu)?, sigset.as_ref()) };
        let mask = mask.map(|m| {
            let mut m = *m;
            crate::vcpu::kick::keep_kick_unblocked(&mut m);
            m
        });
        vcpu.with_fd(|fd| sys::set_signal_mask(fd, mask.as_ref()))
    })
}

/// Reports TPR accesses of `vcpu` to the `tpr_access` callback.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_enable_tpr_access_reporting(kvm: kvm_context_t, vcpu: c_int) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        vcpu.with_fd(|fd| sys::tpr_access_reporting(fd, true))
    })
}

/// Stops reporting TPR accesses of `vcpu`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_disable_tpr_access_reporting(kvm: kvm_context_t, vcpu: c_int) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        vcpu.with_fd(|fd| sys::tpr_access_reporting(fd, false))
    })
}

/// Sets the guest-physical address of `vcpu`'s virtual APIC page
/// (`KVM_SET_VAPIC_ADDR`; needs the in-kernel irqchip).
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_enable_vapic(kvm: kvm_context_t, vcpu: c_int, vapic: u64) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        vcpu.with_fd(|fd| sys::set_vapic_addr(fd, vapic))
    })
}
