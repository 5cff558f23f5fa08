//! The C boundary: the only code that touches raw pointers from C.
//!
//! Every exported function body runs inside one of the `*_result` wrappers
//! below, which catch panics, so a bug in the library becomes an error
//! return and never unwinds into (and aborts) the VMM. Pointers are checked
//! with the `checked_*` helpers before anything else happens.
//!
//! Errors: functions returning `int` return a negative errno; functions
//! returning a pointer return NULL and set `errno`; functions returning
//! `void` or a plain value set `errno` and do nothing (or return 0).
//! A NULL context is `-EINVAL`; a NULL pointer argument is `-EFAULT`; a
//! vcpu index out of range is `-EINVAL`, one not created yet `-ENOENT`.
//!
//! Safety, for every exported function: a context is NULL or from
//! `kvm_init` and not yet finalized, and every other pointer is NULL or
//! valid for what its documentation says (that much C cannot check for
//! us). The exported functions carry that here rather than in a `# Safety`
//! section each, which cbindgen would copy into every header comment.
#![allow(clippy::missing_safety_doc)]

// In the order cbindgen writes them into the header.
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
mod vm;
mod registers;
mod memory;
mod core;
mod debug;
mod gdb;

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::context::Context;
use crate::error::{Errno, Result};
use crate::vcpu::Vcpu;

pub use core::*;
pub use debug::*;
pub use gdb::*;
pub use memory::*;
pub use registers::*;
pub use vm::*;

/// `#BP`/`int3` software breakpoint (`debug` callback `break_type`).
pub const KVM_GDB_BREAKPOINT_SW: c_int = 0;
/// Debug-register execution breakpoint.
pub const KVM_GDB_BREAKPOINT_HW: c_int = 1;
/// Data watchpoint on writes.
pub const KVM_GDB_WATCHPOINT_WRITE: c_int = 2;
/// Data watchpoint on reads (on x86 it also fires on writes).
pub const KVM_GDB_WATCHPOINT_READ: c_int = 3;
/// Data watchpoint on reads and writes.
pub const KVM_GDB_WATCHPOINT_ACCESS: c_int = 4;
/// Extension: a single step completed (`#DB` with DR6.BS).
pub const KVM_GDB_SINGLESTEP: c_int = 5;

/// The library's state for one VM. Opaque to C.
pub struct kvm_context {
    ctx: Context,
}

/// A handle on a libkvm context, from `kvm_init`.
pub type kvm_context_t = *mut kvm_context;

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e.0 };
}

/// Runs `f`, catching a panic (a bug in libkvm) instead of unwinding into C.
fn guarded<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    catch_unwind(AssertUnwindSafe(|| {
        #[cfg(feature = "test-hooks")]
        test_hooks::reached(test_hooks::HookPoint::Boundary);
        f()
    }))
}

/// Runs `f` for a function returning `int`: the value, or the negated errno.
pub(crate) fn int_result(f: impl FnOnce() -> Result<c_int>) -> c_int {
    match guarded(f) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => e.negated(),
        Err(_) => Errno::IO.negated(),
    }
}

/// Runs `f` for a function returning `int` that is 0 on success.
pub(crate) fn status_result(f: impl FnOnce() -> Result<()>) -> c_int {
    int_result(|| f().map(|()| 0))
}

/// Runs `f` for a function returning a pointer: NULL with `errno` on failure.
pub(crate) fn ptr_result<T>(f: impl FnOnce() -> Result<*mut T>) -> *mut T {
    value_result(std::ptr::null_mut(), f)
}

/// Runs `f` for a function returning a plain value: `fallback` with `errno`
/// on failure.
pub(crate) fn value_result<T>(fallback: T, f: impl FnOnce() -> Result<T>) -> T {
    match guarded(f) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => {
            set_errno(e);
            fallback
        }
        Err(_) => {
            set_errno(Errno::IO);
            fallback
        }
    }
}

/// Runs `f` for a function returning `void`: `errno` on failure.
pub(crate) fn void_result(f: impl FnOnce() -> Result<()>) {
    value_result((), f)
}

/// The context behind a handle; `EINVAL` for NULL.
///
/// # Safety
/// A non-NULL `kvm` must come from `kvm_init` and not be finalized.
pub(crate) unsafe fn checked_context<'a>(kvm: kvm_context_t) -> Result<&'a Context> {
    // SAFETY: the caller's promise above.
    unsafe { kvm.as_ref() }.map(|k| &k.ctx).ok_or(Errno::INVAL)
}

/// The context and vcpu `vcpu` of it.
///
/// # Safety
/// As for [`checked_context`].
pub(crate) unsafe fn checked_vcpu<'a>(kvm: kvm_context_t, vcpu: c_int) -> Result<(&'a Context, &'a Vcpu)> {
    // SAFETY: forwarded to the caller.
    let ctx = unsafe { checked_context(kvm) }?;
    Ok((ctx, ctx.vcpu(vcpu)?))
}

/// A shared reference from a C pointer; `EFAULT` for NULL.
///
/// # Safety
/// A non-NULL `p` must point to a valid, initialised `T` for `'a`.
pub(crate) unsafe fn checked_ref<'a, T>(p: *const T) -> Result<&'a T> {
    // SAFETY: the caller's promise above.
    unsafe { p.as_ref() }.ok_or(Errno::FAULT)
}

/// An exclusive reference from a C pointer; `EFAULT` for NULL.
///
/// # Safety
/// A non-NULL `p` must point to a valid `T` that nothing else uses for `'a`.
pub(crate) unsafe fn checked_mut<'a, T>(p: *mut T) -> Result<&'a mut T> {
    // SAFETY: the caller's promise above.
    unsafe { p.as_mut() }.ok_or(Errno::FAULT)
}

/// Checks a C byte buffer: `Ok(false)` when empty, `Ok(true)` when there
/// are `len` bytes at a non-NULL pointer; `EFAULT` for NULL with a
/// non-zero length, `EINVAL` for a length no buffer can have.
fn checked_buffer(is_null: bool, len: usize) -> Result<bool> {
    if len == 0 {
        return Ok(false);
    }
    if is_null {
        return Err(Errno::FAULT);
    }
    if len > isize::MAX as usize {
        return Err(Errno::INVAL);
    }
    Ok(true)
}

/// A byte buffer from C (see [`checked_buffer`]).
///
/// # Safety
/// A non-NULL `p` must point to `len` writable bytes that nothing else uses.
pub(crate) unsafe fn checked_bytes_mut<'a>(p: *mut std::ffi::c_void, len: usize) -> Result<&'a mut [u8]> {
    if !checked_buffer(p.is_null(), len)? {
        return Ok(&mut []);
    }
    // SAFETY: non-NULL, and the caller's promise above covers `len` bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// A read-only byte buffer from C (see [`checked_buffer`]).
///
/// # Safety
/// A non-NULL `p` must point to `len` readable bytes.
pub(crate) unsafe fn checked_bytes<'a>(p: *const std::ffi::c_void, len: usize) -> Result<&'a [u8]> {
    if !checked_buffer(p.is_null(), len)? {
        return Ok(&[]);
    }
    // SAFETY: non-NULL, and the caller's promise above covers `len` bytes.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// A slice from a C pointer and element count; `EFAULT` for NULL with a
/// non-zero count, `EINVAL` for a negative or absurd count.
///
/// # Safety
/// A non-NULL `p` must point to `len` valid `T`s that nothing else uses.
pub(crate) unsafe fn checked_slice_mut<'a, T>(p: *mut T, len: c_int) -> Result<&'a mut [T]> {
    let len = usize::try_from(len).map_err(|_| Errno::INVAL)?;
    if len.checked_mul(std::mem::size_of::<T>()).is_none_or(|bytes| bytes > isize::MAX as usize) {
        return Err(Errno::INVAL);
    }
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Errno::FAULT);
    }
    // SAFETY: non-NULL, and the caller's promise above covers `len` elements.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}
