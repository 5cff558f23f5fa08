//! x86 guest debugging: debug-exit decoding, breakpoints, guest page walks.

pub mod debugregs;
pub mod decode;
pub mod request;

use std::ffi::c_int;

use kvm_bindings::kvm_debug_exit_arch;

use crate::context::Context;
use crate::error::Result;
use crate::exit::InternalError;
use crate::vcpu::Vcpu;

/// The `KVM_GDB_*` break types reported to the `debug` callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum BreakType {
    /// `KVM_GDB_BREAKPOINT_SW`: an `int3`.
    SoftwareBreakpoint = 0,
    /// `KVM_GDB_BREAKPOINT_HW`: a debug-register execution breakpoint.
    HardwareBreakpoint = 1,
    /// `KVM_GDB_WATCHPOINT_WRITE`.
    WatchWrite = 2,
    /// `KVM_GDB_WATCHPOINT_READ`.
    WatchRead = 3,
    /// `KVM_GDB_WATCHPOINT_ACCESS`.
    WatchAccess = 4,
    /// `KVM_GDB_SINGLESTEP`.
    SingleStep = 5,
}

/// Handles `KVM_EXIT_DEBUG`.
pub fn on_debug_exit(ctx: &Context, vcpu: &Vcpu, arch: &kvm_debug_exit_arch) -> Result<c_int> {
    let event = decode::decode_debug_exit(arch, &[0; 4]);
    Ok(ctx.callbacks().debug(vcpu.index(), event.break_type as c_int, event.watch_addr))
}

/// Handles `KVM_EXIT_INTERNAL_ERROR` when it is an `int3` the emulator
/// could not run; `None` when it is something else.
pub fn on_emulation_failure(_ctx: &Context, _vcpu: &Vcpu, _error: &InternalError) -> Option<Result<c_int>> {
    None
}
