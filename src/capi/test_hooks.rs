//! Test-only (feature `test-hooks`): makes the library panic at a chosen
//! point on the calling thread, so tests can check that the panic becomes
//! an error return and that the library keeps working afterwards; or call
//! a function of the test there (`libkvm_test_call_at`), so that a test
//! can put another thread's call at exactly that point of this one.

use std::cell::Cell;
use std::ffi::c_int;

use super::status_result;
use crate::error::Errno;

/// Where the next panic (or call) happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// On entry to the next exported function, inside its panic guard.
    Boundary,
    /// Inside the next vcpu fd access, while its mutex is held.
    VcpuLocked,
    /// [`LIBKVM_HOOK_BEFORE_ENTRY`].
    BeforeEntry,
    /// [`LIBKVM_HOOK_WRITE_COUNTED`].
    WriteCounted,
    /// [`LIBKVM_HOOK_BEFORE_DEFERRED_PROGRAMMING`].
    BeforeDeferredProgramming,
}

/// Test builds: in `kvm_run`, before the next entry into the guest, once
/// the entry looked at the debug state.
pub const LIBKVM_HOOK_BEFORE_ENTRY: c_int = 1;
/// Test builds: in the next write of vcpu state, once it is counted and
/// before the vcpu is paused for it.
pub const LIBKVM_HOOK_WRITE_COUNTED: c_int = 2;
/// Test builds: in the next breakpoint change, once the table changed and
/// a vcpu was found not running, before it is asked to give KVM the new
/// debug state itself (the vcpus are paused).
pub const LIBKVM_HOOK_BEFORE_DEFERRED_PROGRAMMING: c_int = 3;

thread_local! {
    static PANIC_AT: Cell<Option<HookPoint>> = const { Cell::new(None) };
    static CALL_AT: Cell<Option<(HookPoint, extern "C" fn())>> = const { Cell::new(None) };
}

/// Arms a panic at `point` for the calling thread.
pub fn panic_at(point: HookPoint) {
    PANIC_AT.with(|p| p.set(Some(point)));
}

/// Test builds only (feature `test-hooks`): calls `f` once, when the
/// calling thread next reaches `point` (`LIBKVM_HOOK_BEFORE_ENTRY`,
/// `LIBKVM_HOOK_WRITE_COUNTED` or `LIBKVM_HOOK_BEFORE_DEFERRED_PROGRAMMING`).
/// `-EINVAL` for another point or a NULL `f`.
#[no_mangle]
pub extern "C" fn libkvm_test_call_at(point: c_int, f: Option<extern "C" fn()>) -> c_int {
    status_result(|| {
        let point = match point {
            LIBKVM_HOOK_BEFORE_ENTRY => HookPoint::BeforeEntry,
            LIBKVM_HOOK_WRITE_COUNTED => HookPoint::WriteCounted,
            LIBKVM_HOOK_BEFORE_DEFERRED_PROGRAMMING => HookPoint::BeforeDeferredProgramming,
            _ => return Err(Errno::INVAL),
        };
        let f = f.ok_or(Errno::INVAL)?;
        CALL_AT.with(|c| c.set(Some((point, f))));
        Ok(())
    })
}

/// Called at each hook point: panics once if armed for it, or makes the
/// call armed for it.
pub fn reached(point: HookPoint) {
    if PANIC_AT.with(|p| p.get()) == Some(point) {
        PANIC_AT.with(|p| p.set(None));
        panic!("test hook: panic at {point:?}");
    }
    if let Some((at, f)) = CALL_AT.with(|c| c.get()) {
        if at == point {
            CALL_AT.with(|c| c.set(None));
            f();
        }
    }
}
