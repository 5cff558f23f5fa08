//! Context lifecycle, VM creation, the run loop and VM-wide devices.

use std::ffi::{c_int, c_uint, c_ulong, c_void};

use kvm_bindings::{kvm_irqchip, kvm_msr_list, kvm_pit_state};

use super::*;
use crate::callbacks::kvm_callbacks;
use crate::x86;

/// Opens `/dev/kvm`, checks the KVM API version and returns a new context
/// that calls `callbacks` (copied) with `opaque`. NULL with `errno` on failure.
#[no_mangle]
pub unsafe extern "C" fn kvm_init(callbacks: *mut kvm_callbacks, opaque: *mut c_void) -> kvm_context_t {
    ptr_result(|| {
        // SAFETY: C passes a valid callback table or NULL.
        let table = *unsafe { checked_ref(callbacks) }.map_err(|_| Errno::INVAL)?;
        let ctx = Context::new(table, opaque)?;
        Ok(Box::into_raw(Box::new(kvm_context { ctx })))
    })
}

/// Closes every fd of the context, unmaps the memory the library mapped and
/// frees the context. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kvm_finalize(kvm: kvm_context_t) {
    void_result(|| {
        if !kvm.is_null() {
            // SAFETY: `kvm` came from kvm_init (Box::into_raw) and C gives it up here.
            drop(unsafe { Box::from_raw(kvm) });
        }
        Ok(())
    })
}

/// Makes `kvm_create` skip the in-kernel irqchip (PIC, IOAPIC, LAPIC).
#[no_mangle]
pub unsafe extern "C" fn kvm_disable_irqchip_creation(kvm: kvm_context_t) {
    // SAFETY: C passes a context from kvm_init or NULL.
    void_result(|| unsafe { checked_context(kvm) }.map(Context::disable_irqchip_creation))
}

/// Makes `kvm_create` skip the in-kernel PIT.
#[no_mangle]
pub unsafe extern "C" fn kvm_disable_pit_creation(kvm: kvm_context_t) {
    // SAFETY: C passes a context from kvm_init or NULL.
    void_result(|| unsafe { checked_context(kvm) }.map(Context::disable_pit_creation))
}

/// Creates the VM as the 2008 library did on kernels with user memory: the
/// VM fd, the TSS address, the in-kernel irqchip and then the PIT unless
/// disabled (the PIT needs the irqchip), and coalesced MMIO where the host
/// has it. It allocates no RAM and creates no vcpu: the VMM registers its
/// RAM (`kvm_register_userspace_phys_mem`, `kvm_create_phys_mem`) and
/// creates vcpu 0 with `kvm_create_vcpu`. `phys_mem_bytes` and `phys_mem`
/// are not used (`*phys_mem` is left untouched; NULL is fine). With
/// `LIBKVM_GDB=<address>` in the environment it also starts the GDB stub
/// and holds every vcpu until gdb lets it run. `-EEXIST` if the VM exists.
#[no_mangle]
pub unsafe extern "C" fn kvm_create(kvm: kvm_context_t, phys_mem_bytes: c_ulong, phys_mem: *mut *mut c_void) -> c_int {
    let _unused = (phys_mem_bytes, phys_mem);
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.create())
}

/// Creates only the VM fd (no memory, no vcpu).
#[no_mangle]
pub unsafe extern "C" fn kvm_create_vm(kvm: kvm_context_t) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.create_vm().map(drop))
}

/// 1 when the host has extension `ext` (`KVM_CHECK_EXTENSION` on
/// `/dev/kvm` is positive), else 0, as in 2008.
#[no_mangle]
pub unsafe extern "C" fn kvm_check_extension(kvm: kvm_context_t, ext: c_int) -> c_int {
    int_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        let Ok(ext) = u32::try_from(ext) else { return Ok(0) };
        Ok((ctx.check_extension(ext) > 0).into())
    })
}

/// Creates the in-kernel PIC, IOAPIC and LAPICs where the host has them.
/// Call after `kvm_create_vm` and before creating vcpus.
#[no_mangle]
pub unsafe extern "C" fn kvm_create_irqchip(kvm: kvm_context_t) {
    // SAFETY: C passes a context from kvm_init or NULL.
    void_result(|| unsafe { checked_context(kvm) }?.create_irqchip())
}

/// Creates vcpu `slot` (0 up to the host's `KVM_CAP_MAX_VCPUS` - 1; vcpu 0
/// too, `kvm_create` makes none) and maps its `kvm_run`. The vcpu starts
/// in the reset state of a 2008 kernel: real mode, CS selector 0xf000 with
/// base 0xf0000, IP 0xfff0, so a BIOS loaded at 0xf0000 runs from the
/// reset vector. `-EEXIST` when it exists.
#[no_mangle]
pub unsafe extern "C" fn kvm_create_vcpu(kvm: kvm_context_t, slot: c_int) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        ctx.create_vcpu(u32::try_from(slot).map_err(|_| Errno::INVAL)?).map(drop)
    })
}

/// Runs `vcpu` in the calling thread, dispatching every exit to the
/// callbacks, until one returns non-zero (that value is returned).
/// Returns a negative errno when `KVM_RUN` fails; an exit the library
/// cannot handle prints the vcpu state and returns `-EFAULT`. `-EBUSY` when
/// another thread is running the same vcpu.
#[no_mangle]
pub unsafe extern "C" fn kvm_run(kvm: kvm_context_t, vcpu: c_int) -> c_int {
    int_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (ctx, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        Ok(crate::run::run(ctx, vcpu))
    })
}

/// Prints all state of `vcpu` to stderr: registers, segments, control
/// registers, pending events, debug registers, MP state.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_dump_vcpu(kvm: kvm_context_t, vcpu: c_int) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        x86::dump_vcpu(vcpu);
        Ok(())
    })
}

/// Prints the general and segment registers of `vcpu` to stderr.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_show_regs(kvm: kvm_context_t, vcpu: c_int) {
    void_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (_, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        x86::show_regs(vcpu);
        Ok(())
    })
}

/// Sets input `irq` of the in-kernel irqchip to `level` (`KVM_IRQ_LINE`)
/// and returns 1; returns 0 when there is no in-kernel irqchip (the VMM
/// then drives its own interrupt controller), as in 2008.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_irq_level(kvm: kvm_context_t, irq: c_int, level: c_int) -> c_int {
    int_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        let went_to_kernel = ctx.set_irq_level(u32::try_from(irq).map_err(|_| Errno::INVAL)?, level != 0)?;
        Ok(went_to_kernel.into())
    })
}

/// Registers the guest-physical range `[addr, addr + size)` as a coalesced
/// MMIO zone: guest writes there do not exit but are queued, and `kvm_run`
/// hands them to `mmio_write` in order after the next return from the
/// guest, before it handles that exit. `-ENOSYS` where the host lacks
/// `KVM_CAP_COALESCED_MMIO`.
#[no_mangle]
pub unsafe extern "C" fn kvm_register_coalesced_mmio(kvm: kvm_context_t, addr: u64, size: u32) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.register_coalesced_mmio(addr, size))
}

/// Removes a coalesced MMIO zone registered with the same `addr` and `size`.
/// `-ENOSYS` where the host lacks `KVM_CAP_COALESCED_MMIO`.
#[no_mangle]
pub unsafe extern "C" fn kvm_unregister_coalesced_mmio(kvm: kvm_context_t, addr: u64, size: u32) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.unregister_coalesced_mmio(addr, size))
}

/// 1 when the in-kernel irqchip was created, else 0.
#[no_mangle]
pub unsafe extern "C" fn kvm_irqchip_in_kernel(kvm: kvm_context_t) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    int_result(|| Ok(unsafe { checked_context(kvm) }?.irqchip_in_kernel().into()))
}

/// 1 when the in-kernel PIT was created, else 0.
#[no_mangle]
pub unsafe extern "C" fn kvm_pit_in_kernel(kvm: kvm_context_t) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    int_result(|| Ok(unsafe { checked_context(kvm) }?.pit_in_kernel().into()))
}

/// Reads the in-kernel PIC or IOAPIC selected by `chip->chip_id`.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_irqchip(kvm: kvm_context_t, chip: *mut kvm_irqchip) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a valid struct.
        let (ctx, chip) = unsafe { (checked_context(kvm)?, checked_mut(chip)?) };
        ctx.get_irqchip(chip)
    })
}

/// Writes the in-kernel PIC or IOAPIC selected by `chip->chip_id`.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_irqchip(kvm: kvm_context_t, chip: *mut kvm_irqchip) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a valid struct.
        let (ctx, chip) = unsafe { (checked_context(kvm)?, checked_ref(chip)?) };
        ctx.set_irqchip(chip)
    })
}

/// Reads the in-kernel PIT state (`KVM_GET_PIT`).
#[no_mangle]
pub unsafe extern "C" fn kvm_get_pit(kvm: kvm_context_t, s: *mut kvm_pit_state) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a writable struct.
        let (ctx, out) = unsafe { (checked_context(kvm)?, checked_mut(s)?) };
        *out = ctx.get_pit()?;
        Ok(())
    })
}

/// Writes the in-kernel PIT state (`KVM_SET_PIT`).
#[no_mangle]
pub unsafe extern "C" fn kvm_set_pit(kvm: kvm_context_t, s: *mut kvm_pit_state) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a valid struct.
        let (ctx, state) = unsafe { (checked_context(kvm)?, checked_ref(s)?) };
        ctx.set_pit(state)
    })
}

/// Sets the number of shadow MMU pages; `-ENOTSUP` where the host cannot.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_shadow_pages(kvm: kvm_context_t, nrshadow_pages: c_uint) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.set_shadow_pages(nrshadow_pages))
}

/// Reads the number of shadow MMU pages into `*nrshadow_pages`; `-ENOTSUP`
/// where the host cannot tell (kernels since 5.x dropped the ioctl).
#[no_mangle]
pub unsafe extern "C" fn kvm_get_shadow_pages(kvm: kvm_context_t, nrshadow_pages: *mut c_uint) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a writable pointer.
        let (ctx, out) = unsafe { (checked_context(kvm)?, checked_mut(nrshadow_pages)?) };
        *out = ctx.get_shadow_pages()?;
        Ok(())
    })
}

/// The MSRs the host supports, as a `malloc`'ed `struct kvm_msr_list` with
/// `nmsrs` indices; the caller frees it with `free()`. NULL with `errno`.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_msr_list(kvm: kvm_context_t) -> *mut kvm_msr_list {
    ptr_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let indices = unsafe { checked_context(kvm) }?.msr_indices()?;
        let bytes = std::mem::size_of::<kvm_msr_list>() + std::mem::size_of_val(indices.as_slice());
        // SAFETY: malloc of a positive size; checked for NULL below.
        let list = unsafe { libc::malloc(bytes) }.cast::<kvm_msr_list>();
        if list.is_null() {
            return Err(Errno::NOMEM);
        }
        // SAFETY: `list` has room for the header and `indices.len()` entries.
        unsafe {
            (*list).nmsrs = indices.len() as u32;
            let entries = list.cast::<u8>().add(std::mem::size_of::<kvm_msr_list>()).cast::<u32>();
            std::ptr::copy_nonoverlapping(indices.as_ptr(), entries, indices.len());
        }
        Ok(list)
    })
}
