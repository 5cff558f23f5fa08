//! Guest-physical memory: RAM, holes, aliases, dirty logging, memory maps.

use std::ffi::{c_int, c_ulong, c_void};

use super::*;
use crate::context::bitmap_bytes;
use crate::memory::{Slot, PAGE_SIZE};

/// Called once per slot by the `*_range` functions with the slot's start,
/// length and bitmap (one bit per 4 KiB page, least significant bit first).
/// A non-zero return stops the walk and is returned.
pub type kvm_slot_bitmap_cb =
    Option<unsafe extern "C" fn(start: c_ulong, len: c_ulong, bitmap: *mut c_void, opaque: *mut c_void) -> c_int>;

/// New guest RAM at `[phys_start, phys_start + len)` (page-aligned),
/// returning its host address. `log` turns on dirty-page logging;
/// `writable = 0` makes guest writes exit as MMIO. When the range lies
/// inside memory the library already mapped (such as `kvm_create`'s RAM),
/// its host address is returned and no slot changes (the VGA window stays
/// MMIO; back it with `kvm_register_userspace_phys_mem` if wanted). NULL
/// with `errno` on failure.
///
/// Adds KVM slots without touching the existing ones: running vcpus are not
/// disturbed.
#[no_mangle]
pub unsafe extern "C" fn kvm_create_phys_mem(
    kvm: kvm_context_t,
    phys_start: c_ulong,
    len: c_ulong,
    log: c_int,
    writable: c_int,
) -> *mut c_void {
    ptr_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        ctx.create_phys_mem(phys_start, len, log != 0, writable != 0).map(|p| p.cast())
    })
}

/// Removes the guest RAM in `[phys_start, phys_start + len)`, splitting
/// slots at the edges; memory the library mapped is unmapped once no slot
/// uses it.
///
/// KVM's slots are cut anew with every vcpu kicked out of the guest and held
/// for that moment, so no running vcpu ever finds its memory missing.
#[no_mangle]
pub unsafe extern "C" fn kvm_destroy_phys_mem(kvm: kvm_context_t, phys_start: c_ulong, len: c_ulong) {
    // SAFETY: C passes a context from kvm_init or NULL.
    void_result(|| unsafe { checked_context(kvm) }?.destroy_phys_mem(phys_start, len))
}

/// 1 when a slot contains guest-physical `phys_start`, else 0.
#[no_mangle]
pub unsafe extern "C" fn kvm_is_intersecting_mem(kvm: kvm_context_t, phys_start: c_ulong) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    int_result(|| Ok(unsafe { checked_context(kvm) }?.is_intersecting_mem(phys_start).into()))
}

/// 1 when one slot is exactly `[phys_start, phys_start + len)`, else 0.
#[no_mangle]
pub unsafe extern "C" fn kvm_is_allocated_mem(kvm: kvm_context_t, phys_start: c_ulong, len: c_ulong) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    int_result(|| Ok(unsafe { checked_context(kvm) }?.is_allocated_mem(phys_start, len).into()))
}

/// Makes `[phys_start, phys_start + len)` unbacked (guest accesses exit as
/// MMIO), splitting the slots around it. The host memory stays mapped.
///
/// KVM's slots are cut anew with every vcpu kicked out of the guest and held
/// for that moment, so no running vcpu ever finds its memory missing.
#[no_mangle]
pub unsafe extern "C" fn kvm_create_mem_hole(kvm: kvm_context_t, phys_start: c_ulong, len: c_ulong) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.create_mem_hole(phys_start, len))
}

/// Registers the VMM's own page-aligned memory at `userspace_addr` as guest
/// RAM at `phys_start`. The memory must stay mapped while the slot exists.
/// `-EEXIST` when the range overlaps existing RAM.
///
/// Adds KVM slots without touching the existing ones: running vcpus are not
/// disturbed.
#[no_mangle]
pub unsafe extern "C" fn kvm_register_userspace_phys_mem(
    kvm: kvm_context_t,
    phys_start: c_ulong,
    userspace_addr: *mut c_void,
    len: c_ulong,
    log: c_int,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        if userspace_addr.is_null() {
            return Err(Errno::FAULT);
        }
        ctx.register_userspace_phys_mem(phys_start, userspace_addr as u64, len, log != 0)
    })
}

/// Copies `bitmap` into C's buffer.
///
/// # Safety
/// `buf` must have room for `bitmap.len()` bytes.
unsafe fn write_bitmap(buf: *mut c_void, bitmap: &[u8]) {
    // SAFETY: the caller's promise above.
    unsafe { std::ptr::copy_nonoverlapping(bitmap.as_ptr(), buf.cast::<u8>(), bitmap.len()) }
}

/// One bit set per page of `slot`: every page of a slot is backed.
fn backed_pages_bitmap(slot: &Slot) -> Vec<u8> {
    let pages = slot.len / PAGE_SIZE;
    let mut bitmap = vec![0u8; bitmap_bytes(slot.len)];
    for page in 0..pages as usize {
        bitmap[page / 8] |= 1 << (page % 8);
    }
    bitmap
}

/// Writes into `buf` the dirty-page bitmap of the slot containing
/// `phys_addr` (`(slot length / 4096 + 7) / 8` bytes) and clears it in KVM.
/// `-ENOENT` when no slot contains the address or it does not log.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_dirty_pages(kvm: kvm_context_t, phys_addr: c_ulong, buf: *mut c_void) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        if buf.is_null() {
            return Err(Errno::FAULT);
        }
        let bitmap = ctx.dirty_bitmap(&ctx.slot_at(phys_addr)?)?;
        // SAFETY: C sized `buf` for the slot, as documented.
        unsafe { write_bitmap(buf, &bitmap) };
        Ok(())
    })
}

/// Calls `cb(start, len, buf, opaque)` for each slot lying inside
/// `[phys_addr, end_addr)` that logs dirty pages, with its dirty bitmap in
/// `buf` (sized for the largest slot).
#[no_mangle]
pub unsafe extern "C" fn kvm_get_dirty_pages_range(
    kvm: kvm_context_t,
    phys_addr: c_ulong,
    end_addr: c_ulong,
    buf: *mut c_void,
    opaque: *mut c_void,
    cb: kvm_slot_bitmap_cb,
) -> c_int {
    // SAFETY: C passes a context from kvm_init, a buffer for its largest
    // slot's bitmap, and its own callback.
    unsafe {
        for_each_slot_bitmap(kvm, phys_addr, end_addr, buf, opaque, cb, |ctx, slot| match ctx.dirty_bitmap(slot) {
            Err(Errno(libc::ENOENT)) => Ok(None),
            other => other.map(Some),
        })
    }
}

/// Calls `cb` with `bitmap_of` each slot inside `[start, end)` (skipping
/// slots it gives `None` for) until `cb` returns non-zero.
///
/// # Safety
/// `kvm` is NULL or from `kvm_init`; `buf` has room for every bitmap; `cb`
/// is the VMM's callback.
unsafe fn for_each_slot_bitmap(
    kvm: kvm_context_t,
    start: c_ulong,
    end: c_ulong,
    buf: *mut c_void,
    opaque: *mut c_void,
    cb: kvm_slot_bitmap_cb,
    bitmap_of: impl Fn(&Context, &Slot) -> Result<Option<Vec<u8>>>,
) -> c_int {
    int_result(|| {
        // SAFETY: the caller's promise above.
        let ctx = unsafe { checked_context(kvm) }?;
        let cb = cb.ok_or(Errno::FAULT)?;
        if buf.is_null() {
            return Err(Errno::FAULT);
        }
        for slot in ctx.slots_within(start, end) {
            let Some(bitmap) = bitmap_of(ctx, &slot)? else { continue };
            // SAFETY: the caller's promise above.
            let r = unsafe {
                write_bitmap(buf, &bitmap);
                cb(slot.gpa, slot.len, buf, opaque)
            };
            if r != 0 {
                return Ok(r);
            }
        }
        Ok(0)
    })
}

/// Writes into `bitmap` which pages of the slot containing `phys_addr` are
/// backed by RAM (all of them: one bit per page). `-ENOENT` without a slot.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_mem_map(kvm: kvm_context_t, phys_addr: c_ulong, bitmap: *mut c_void) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        if bitmap.is_null() {
            return Err(Errno::FAULT);
        }
        let slot = ctx.slot_at(phys_addr)?;
        // SAFETY: C sized `bitmap` for the slot, as documented.
        unsafe { write_bitmap(bitmap, &backed_pages_bitmap(&slot)) };
        Ok(())
    })
}

/// Calls `cb(start, len, bitmap, opaque)` for each slot lying inside
/// `[phys_addr, end_addr)` with its backed-page bitmap in `bitmap`.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_mem_map_range(
    kvm: kvm_context_t,
    phys_addr: c_ulong,
    end_addr: c_ulong,
    bitmap: *mut c_void,
    opaque: *mut c_void,
    cb: kvm_slot_bitmap_cb,
) -> c_int {
    // SAFETY: as in kvm_get_dirty_pages_range.
    unsafe {
        for_each_slot_bitmap(kvm, phys_addr, end_addr, bitmap, opaque, cb, |_, slot| {
            Ok(Some(backed_pages_bitmap(slot)))
        })
    }
}

/// Turns dirty-page logging on for every slot.
///
/// Changes each KVM slot's flags in place, atomically for running vcpus: none
/// is kicked or loses its memory.
#[no_mangle]
pub unsafe extern "C" fn kvm_dirty_pages_log_enable_all(kvm: kvm_context_t) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.set_dirty_log_all(true))
}

/// Returns every slot to its own dirty-logging flag.
///
/// Changes each KVM slot's flags in place, atomically for running vcpus: none
/// is kicked or loses its memory.
#[no_mangle]
pub unsafe extern "C" fn kvm_dirty_pages_log_reset(kvm: kvm_context_t) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.set_dirty_log_all(false))
}

/// Shows the RAM at `[target_phys, target_phys + len)` also at
/// `[phys_start, phys_start + len)`, as a second slot over the same host
/// memory (the kernel dropped its alias ioctl). One RAM slot must back the
/// whole target (`-EINVAL` otherwise); `-EEXIST` when the alias overlaps RAM.
///
/// Adds KVM slots without touching the existing ones: running vcpus are not
/// disturbed.
#[no_mangle]
pub unsafe extern "C" fn kvm_create_memory_alias(
    kvm: kvm_context_t,
    phys_start: u64,
    len: u64,
    target_phys: u64,
) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.create_memory_alias(phys_start, len, target_phys))
}

/// Removes the alias starting at `phys_start`; `-ENOENT` when there is none.
///
/// KVM's slots are cut anew with every vcpu kicked out of the guest and held
/// for that moment, so no running vcpu ever finds its memory missing.
#[no_mangle]
pub unsafe extern "C" fn kvm_destroy_memory_alias(kvm: kvm_context_t, phys_start: u64) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.destroy_memory_alias(phys_start))
}
