//! Test-only (feature `test-hooks`): makes the library panic at a chosen
//! point on the calling thread, so tests can check that the panic becomes
//! an error return and that the library keeps working afterwards.

use std::cell::Cell;

/// Where the next panic happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// On entry to the next exported function, inside its panic guard.
    Boundary,
    /// Inside the next vcpu fd access, while its mutex is held.
    VcpuLocked,
}

thread_local! {
    static PANIC_AT: Cell<Option<HookPoint>> = const { Cell::new(None) };
}

/// Arms a panic at `point` for the calling thread.
pub fn panic_at(point: HookPoint) {
    PANIC_AT.with(|p| p.set(Some(point)));
}

/// Called at each hook point: panics once if armed for it.
pub fn reached(point: HookPoint) {
    if PANIC_AT.with(|p| p.get()) == Some(point) {
        PANIC_AT.with(|p| p.set(None));
        panic!("test hook: panic at {point:?}");
    }
}
