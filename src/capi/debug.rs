//! Guest debugging: debug requests, library-managed breakpoints, the last
//! debug event, and guest memory by virtual address.

use std::ffi::{c_int, c_void};

use kvm_bindings::kvm_guest_debug;

use super::*;
use crate::debug::decode::DebugCause;
use crate::debug::request::{kvm_debug_guest, translate_old_request};
use crate::debug::watch::WatchMethod;
use crate::debug::BreakType;

/// `kvm_set_watchpoint_method`: a debug register for a write or access
/// watchpoint when the host fires data breakpoints, one is free and the
/// length fits (1, 2, 4, 8, aligned); page protection otherwise, and always
/// for read watchpoints (a debug register's read condition also fires on
/// writes; page protection tells them apart). The default.
pub const KVM_WATCH_AUTO: c_int = 0;
/// `kvm_set_watchpoint_method`: debug registers only (four at most).
pub const KVM_WATCH_DEBUG_REGISTERS: c_int = 1;
/// `kvm_set_watchpoint_method`: page protection only (any number, any length).
pub const KVM_WATCH_PAGE_PROTECTION: c_int = 2;

/// Everything decoded from the last debug event reported on a vcpu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvm_debug_exit_info {
    /// `KVM_GDB_*`: what the `debug` callback was told.
    pub break_type: c_int,
    /// The debug register (0-3) that hit, or -1.
    pub hw_index: c_int,
    /// The exception: 1 (`#DB`) or 3 (`#BP`, also for an `int3` that
    /// reached the library as an emulation failure).
    pub exception: u32,
    /// Always 0.
    pub reserved: u32,
    /// Linear address of the instruction: the breakpoint, or the next
    /// instruction after a step or a data watchpoint.
    pub pc: u64,
    /// For a watchpoint: the watched address, else 0.
    pub watch_addr: u64,
    /// For a watchpoint: the watched length, else 0.
    pub watch_len: u64,
    /// DR6 as KVM reported it (0 for `#BP`).
    pub dr6: u64,
    /// DR7 as KVM reported it (0 for `#BP`).
    pub dr7: u64,
}

/// A guest virtual address translated with `kvm_translate_gva_ex`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvm_gva_translation {
    /// The guest-physical address.
    pub gpa: u64,
    /// Size of the mapping page: 4096, 2 MiB, 4 MiB or 1 GiB.
    pub page_size: u64,
    /// 1 when writable at every level of the page tables.
    pub writable: c_int,
    /// 1 when user-accessible at every level.
    pub user: c_int,
    /// 1 when no level forbids execution (NX).
    pub executable: c_int,
    /// Always 0.
    pub reserved: c_int,
}

/// The 2008 debug request (`KVM_DEBUG_GUEST`), translated to
/// `KVM_SET_GUEST_DEBUG`: `enabled` turns on debugging with software
/// breakpoints (every `int3` is then reported as `KVM_GDB_BREAKPOINT_SW`),
/// each enabled `breakpoints[i]` becomes hardware execution breakpoint `i`,
/// and `singlestep` single-steps. `enabled = 0` turns the request off.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_guest_debug(kvm: kvm_context_t, vcpu: c_int, dbg: *mut kvm_debug_guest) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a valid struct.
        let ((ctx, vcpu), dbg) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_ref(dbg)?) };
        ctx.set_guest_debug_request(vcpu, translate_old_request(dbg))
    })
}

/// The modern debug request (`KVM_SET_GUEST_DEBUG`), passed to KVM and
/// remembered so that debug exits are decoded against it. It combines with
/// the library-managed breakpoints (which take precedence for a debug
/// register both use).
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_guest_debug(kvm: kvm_context_t, vcpu: c_int, dbg: *mut kvm_guest_debug) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a valid struct.
        let ((ctx, vcpu), dbg) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_ref(dbg)?) };
        ctx.set_guest_debug_request(vcpu, *dbg)
    })
}

/// Copies the last debug event reported on `vcpu` into `*info`; `-ENOENT`
/// before the first.
///
/// Never waits for a running vcpu.
#[no_mangle]
pub unsafe extern "C" fn kvm_get_debug_exit_info(
    kvm: kvm_context_t,
    vcpu: c_int,
    info: *mut kvm_debug_exit_info,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a writable struct.
        let ((_, vcpu), out) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_mut(info)?) };
        let event = crate::lock(&vcpu.debug).last_event.ok_or(Errno::NOENT)?;
        *out = kvm_debug_exit_info {
            break_type: event.break_type as c_int,
            hw_index: match event.cause {
                DebugCause::Register(n) => c_int::from(n),
                _ => -1,
            },
            exception: event.exception,
            reserved: 0,
            pc: event.pc,
            watch_addr: event.watch_addr,
            watch_len: event.watch_len,
            dr6: event.dr6,
            dr7: event.dr7,
        };
        Ok(())
    })
}

/// Inserts a library-managed breakpoint of `type` (`KVM_GDB_*`).
///
/// `KVM_GDB_BREAKPOINT_SW`: `addr` is a guest virtual address, translated
/// with `vcpu`'s page tables; the byte there is saved and `int3` written
/// (inserting twice counts references). Where the address is not mapped yet
/// (or the vcpu is in real mode, whose `int3` some hosts never report) a
/// free debug register backs it instead; with none free: `-EFAULT`.
///
/// `KVM_GDB_BREAKPOINT_HW` takes a free debug register on every vcpu
/// (`-ENOSPC` after four).
///
/// Watchpoints (`KVM_GDB_WATCHPOINT_WRITE`, `_READ`, `_ACCESS`) follow
/// `kvm_set_watchpoint_method`. In a debug register they need `len` 1, 2,
/// 4 or 8 with `addr` aligned to it (`-EINVAL`), and a read watchpoint also
/// fires on writes (x86 has no read-only condition). By page protection
/// they take any number and any `len` up to 1 MiB: the guest-physical pages
/// under the range (translated now, with `vcpu`'s page tables; `-EFAULT`
/// where not mapped to RAM) are cut out of their slot, read-only for a
/// write watchpoint, unbacked for a read or access one; the library
/// completes the guest's accesses to them and reports the ones that touch
/// the range, reads told from writes, with RIP past the instruction. A read
/// or access watchpoint on a page a vcpu is executing is refused
/// (`-EBUSY`): code cannot run from an unbacked page.
///
/// Takes effect at each vcpu's next entry into the guest.
///
/// Every vcpu in the guest is kicked out, given its new debug state and let go
/// on, so the change is in effect for all of them when this returns.
#[no_mangle]
pub unsafe extern "C" fn kvm_insert_breakpoint(
    kvm: kvm_context_t,
    vcpu: c_int,
    r#type: c_int,
    addr: u64,
    len: u64,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (ctx, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        ctx.insert_breakpoint(vcpu, BreakType::from_c(r#type)?, addr, len)
    })
}

/// Chooses how watchpoints inserted from now on are kept: `KVM_WATCH_AUTO`,
/// `KVM_WATCH_DEBUG_REGISTERS` or `KVM_WATCH_PAGE_PROTECTION`.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_watchpoint_method(kvm: kvm_context_t, method: c_int) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let ctx = unsafe { checked_context(kvm) }?;
        ctx.debugger().watch_method.set(WatchMethod::from_c(method)?);
        Ok(())
    })
}

/// Removes one reference to a breakpoint inserted with the same `type`,
/// `addr` (and `len` for watchpoints), restoring the original byte of a
/// software breakpoint if it is still `int3`. `-ENOENT` when not inserted.
///
/// Every vcpu in the guest is kicked out, given its new debug state and let go
/// on, so the change is in effect for all of them when this returns.
#[no_mangle]
pub unsafe extern "C" fn kvm_remove_breakpoint(
    kvm: kvm_context_t,
    vcpu: c_int,
    r#type: c_int,
    addr: u64,
    len: u64,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (ctx, _) = unsafe { checked_vcpu(kvm, vcpu) }?;
        ctx.remove_breakpoint(BreakType::from_c(r#type)?, addr, len)
    })
}

/// Removes every library-managed breakpoint and watchpoint, restoring every
/// saved byte and freeing every debug register.
///
/// Every vcpu in the guest is kicked out, given its new debug state and let go
/// on, so the change is in effect for all of them when this returns.
#[no_mangle]
pub unsafe extern "C" fn kvm_remove_all_breakpoints(kvm: kvm_context_t) {
    // SAFETY: C passes a context from kvm_init or NULL.
    void_result(|| unsafe { checked_context(kvm) }.map(|ctx| ctx.remove_all_breakpoints()))
}

/// Turns single-stepping of `vcpu` on or off: each instruction then calls
/// `debug` with `KVM_GDB_SINGLESTEP`.
///
/// While the vcpu runs in another thread, this kicks it out of the guest, does
/// its work and lets it go on: it never waits for the guest's own next exit.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_singlestep(kvm: kvm_context_t, vcpu: c_int, enable: c_int) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init or NULL.
        let (ctx, vcpu) = unsafe { checked_vcpu(kvm, vcpu) }?;
        ctx.set_singlestep(vcpu, enable != 0)
    })
}

/// Reads `len` bytes of guest memory at virtual address `gva`, translated
/// with `vcpu`'s page tables, across pages. Software breakpoints show their
/// original bytes. `-EFAULT` (and nothing copied) when part is not mapped.
///
/// Uses `vcpu`'s page tables as they are now: a vcpu running in another thread
/// is kicked out of the guest for the moment it takes to read them.
#[no_mangle]
pub unsafe extern "C" fn kvm_read_guest_virt(
    kvm: kvm_context_t,
    vcpu: c_int,
    gva: u64,
    buf: *mut c_void,
    len: usize,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and `len` writable bytes.
        let ((ctx, vcpu), buf) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_bytes_mut(buf, len)?) };
        ctx.read_guest_virt(vcpu, gva, buf)
    })
}

/// Writes `len` bytes to guest memory at virtual address `gva`. A byte
/// written under a software breakpoint becomes its saved original (the
/// breakpoint stays). `-EFAULT` (and nothing written) when part is not mapped.
///
/// Uses `vcpu`'s page tables as they are now: a vcpu running in another thread
/// is kicked out of the guest for the moment it takes to read them.
#[no_mangle]
pub unsafe extern "C" fn kvm_write_guest_virt(
    kvm: kvm_context_t,
    vcpu: c_int,
    gva: u64,
    buf: *const c_void,
    len: usize,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and `len` readable bytes.
        let ((ctx, vcpu), buf) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_bytes(buf, len)?) };
        ctx.write_guest_virt(vcpu, gva, buf)
    })
}

/// Translates guest virtual address `gva` with `vcpu`'s page tables, walked
/// in software (paging off, 32-bit, PAE, 4- and 5-level, large pages), into
/// `*gpa`. `-EFAULT` when it is not mapped or not canonical.
///
/// Uses `vcpu`'s page tables as they are now: a vcpu running in another thread
/// is kicked out of the guest for the moment it takes to read them.
#[no_mangle]
pub unsafe extern "C" fn kvm_translate_gva(kvm: kvm_context_t, vcpu: c_int, gva: u64, gpa: *mut u64) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a writable pointer.
        let ((ctx, vcpu), out) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_mut(gpa)?) };
        *out = ctx.translate_gva(vcpu, gva)?.gpa;
        Ok(())
    })
}

/// Like `kvm_translate_gva`, with the page size and the permissions of
/// the mapping.
///
/// Uses `vcpu`'s page tables as they are now: a vcpu running in another thread
/// is kicked out of the guest for the moment it takes to read them.
#[no_mangle]
pub unsafe extern "C" fn kvm_translate_gva_ex(
    kvm: kvm_context_t,
    vcpu: c_int,
    gva: u64,
    out: *mut kvm_gva_translation,
) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a writable struct.
        let ((ctx, vcpu), out) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_mut(out)?) };
        let t = ctx.translate_gva(vcpu, gva)?;
        *out = kvm_gva_translation {
            gpa: t.gpa,
            page_size: t.page_size,
            writable: t.writable.into(),
            user: t.user.into(),
            executable: t.executable.into(),
            reserved: 0,
        };
        Ok(())
    })
}
