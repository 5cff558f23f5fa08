//! The `KVM_RUN` loop of `kvm_run`: callbacks around each entry, and every
//! exit dispatched to the VMM. The debugger meets an exit in one place
//! ([`debug::intercept`]), and hands the VMM its part back. Nothing here
//! allocates.

use std::ffi::c_int;

use crate::context::Context;
use crate::debug;
use crate::debug::exits::Entry;
use crate::error::{result_code, Errno};
use crate::exit::{Exit, ExitData, IoDirection, OtherExit, PortWidth};
use crate::gdb::stopper::Checkpoint;
use crate::vcpu::kick::KvmRunThread;
use crate::vcpu::{Attention, RunnerGuard, Vcpu};
use crate::x86;

/// Runs vcpu `vcpu` until a handler returns non-zero (that value is
/// returned) or an error occurs (a negative errno is returned).
pub fn run(ctx: &Context, vcpu: &Vcpu) -> c_int {
    let runner = match vcpu.claim_runner() {
        Ok(guard) => guard,
        Err(e) => return e.negated(),
    };
    let _kickable = KvmRunThread::enter(vcpu);
    let mut exit_data = ExitData::default();
    // The VMM's table is fixed: which hooks it has is read once.
    let hooks = Hooks { entry: ctx.callbacks().has_entry_hooks(), exit: ctx.callbacks().has_exit_hook() };
    loop {
        let r = run_once(ctx, vcpu, &runner, &mut exit_data, hooks);
        if r != 0 {
            return r;
        }
    }
}

/// Which of the VMM's hooks around `KVM_RUN` it has.
#[derive(Clone, Copy)]
struct Hooks {
    /// `try_push_interrupts` or `pre_kvm_run`.
    entry: bool,
    /// `post_kvm_run`.
    exit: bool,
}

/// One trip through the guest: the VMM's pre-run hooks, `KVM_RUN`, the
/// post-run hook, and the exit's handler. Returns 0 to keep going.
fn run_once(ctx: &Context, vcpu: &Vcpu, runner: &RunnerGuard<'_>, exit_data: &mut ExitData, hooks: Hooks) -> c_int {
    let callbacks = ctx.callbacks();
    // One load and one flag when there is nothing to do (nearly every
    // entry); the next of a run of single steps finds the debug state as its
    // last exit left it (`Vcpu::note_steady_step`).
    let attention = vcpu.attention();
    let request_window = if !hooks.entry && (attention.is_clear() || steps_steadily(vcpu, attention)) {
        false
    } else {
        match prepare_entry(ctx, vcpu, attention, hooks) {
            Ok(request_window) => request_window,
            Err(r) => return r,
        }
    };
    #[cfg(feature = "test-hooks")]
    crate::capi::test_hooks::reached(crate::capi::test_hooks::HookPoint::BeforeEntry);
    let exit = vcpu.enter(runner, request_window, exit_data);
    if hooks.exit || ctx.coalesced_mmio_in_use() {
        after_kvm_run(ctx, vcpu);
    }
    match exit {
        // Every exit meets the debugger here, or not at all.
        Ok(exit) if debug::intercept::sees(ctx, vcpu, &exit) => {
            let vmm = |exit, exit_data: &mut ExitData| to_vmm(ctx, vcpu, exit, exit_data);
            debug::intercept::on_exit(ctx, vcpu, runner, exit, exit_data, &vmm)
        }
        Ok(exit) => to_vmm(ctx, vcpu, exit, exit_data),
        // A kick from the library is not the VMM's business: go round again
        // (and park there if a debugger holds the vcpu).
        Err(Errno(libc::EINTR | libc::EAGAIN)) if vcpu.take_kick() || vcpu.is_held() => {
            result_code(debug::progress::after_kick(ctx, vcpu))
        }
        Err(Errno(libc::EINTR | libc::EAGAIN)) => callbacks.io_window(),
        Err(e) => {
            eprintln!("kvm_run: vcpu {}: KVM_RUN failed: {e}", vcpu.index());
            e.negated()
        }
    }
}

/// Before an entry with something to do: park while a debugger holds the
/// vcpu, the VMM's `try_push_interrupts` and `pre_kvm_run` hooks, and the
/// debug state given to KVM. Whether to request an interrupt window, or
/// `kvm_run`'s result when it ends here.
#[inline(never)]
fn prepare_entry(
    ctx: &Context,
    vcpu: &Vcpu,
    mut attention: Attention,
    hooks: Hooks,
) -> std::result::Result<bool, c_int> {
    let callbacks = ctx.callbacks();
    if attention.held() {
        if ctx.stopper().checkpoint(vcpu) == Checkpoint::Killed {
            return Err(callbacks.shutdown(vcpu.index()));
        }
        attention = vcpu.attention();
    }
    let mut request_window = false;
    if hooks.entry {
        request_window = !ctx.irqchip_in_kernel() && callbacks.try_push_interrupts() != 0;
        let r = callbacks.pre_kvm_run(vcpu.index());
        if r != 0 {
            return Err(r);
        }
        // The hooks may have changed the debug state.
        attention = vcpu.attention();
    }
    if attention.debug_entry() && !steps_steadily(vcpu, attention) {
        match debug::exits::before_entry(ctx, vcpu) {
            Ok(Entry::Enter) => {}
            Ok(Entry::Halted) => return Err(callbacks.halt(vcpu.index())),
            Err(e) => return Err(e.negated()),
        }
    }
    Ok(request_window)
}

/// True when the vcpu single-steps and its last step's exit left the next
/// entry nothing to do.
#[inline(always)]
fn steps_steadily(vcpu: &Vcpu, attention: Attention) -> bool {
    attention.only_stepping() && vcpu.steps_steadily()
}

/// The VMM's `post_kvm_run` hook, and the writes queued in the coalesced
/// MMIO ring: after each `KVM_RUN`, before its exit is handled. Out of
/// line, so that the exit stays in registers where neither is there.
#[inline(never)]
fn after_kvm_run(ctx: &Context, vcpu: &Vcpu) {
    ctx.callbacks().post_kvm_run(vcpu.index());
    ctx.deliver_coalesced_mmio(vcpu);
}

/// An exit for the VMM: its handler's result. Inlined into the run loop
/// (the exit stays in registers).
#[inline(always)]
fn to_vmm(ctx: &Context, vcpu: &Vcpu, exit: Exit, exit_data: &mut ExitData) -> c_int {
    let callbacks = ctx.callbacks();
    match exit {
        Exit::PortOut { port, width, value } => callbacks.port_out(port, width, value),
        Exit::Io { direction, port, size, count, payload } => {
            let data = &mut exit_data.io[..payload.bytes()];
            let result = if count == 1 {
                // `in` without `rep` (an `out` is `Exit::PortOut`).
                port_io_element(ctx, direction, port, data)
            } else {
                handle_string_port_io(ctx, direction, port, size, data)
            };
            if direction == IoDirection::In {
                vcpu.complete_port_in(payload, &exit_data.io);
            }
            result
        }
        // `decode` keeps `len` within the 8 data bytes.
        Exit::Mmio { addr, len, is_write } => {
            mmio_to_vmm(ctx, vcpu, addr, &mut exit_data.mmio[..usize::from(len)], is_write)
        }
        Exit::Other => handle_other_exit(ctx, vcpu, exit_data),
    }
}

/// Every exit but port I/O and MMIO: its handler's result ends the trip.
#[cold]
#[inline(never)]
fn handle_other_exit(ctx: &Context, vcpu: &Vcpu, exit_data: &ExitData) -> c_int {
    let callbacks = ctx.callbacks();
    let index = vcpu.index();
    match exit_data.other {
        OtherExit::Hlt => callbacks.halt(index),
        OtherExit::Shutdown => {
            ctx.dump_core_after_crash(vcpu, "shut down (a triple fault)");
            callbacks.shutdown(index)
        }
        OtherExit::IrqWindowOpen | OtherExit::SetTpr | OtherExit::Interrupted => 0,
        OtherExit::TprAccess { rip, is_write } => callbacks.tpr_access(index, rip, is_write),
        // The debugger handles every debug exit and the emulation failures
        // it knows (debug::intercept); what it hands on is unexpected.
        OtherExit::Debug => unexpected_exit(ctx, vcpu, "KVM_EXIT_DEBUG", exit_data.debug.exception.into()),
        OtherExit::InternalError => {
            unexpected_exit(ctx, vcpu, "KVM_EXIT_INTERNAL_ERROR", exit_data.internal.suberror.into())
        }
        OtherExit::FailEntry(reason) => unexpected_exit(ctx, vcpu, "KVM_EXIT_FAIL_ENTRY", reason),
        OtherExit::Unknown(reason) => unexpected_exit(ctx, vcpu, crate::exit::reason_name(reason), reason.into()),
    }
}

/// The VMM's MMIO handler for an access, and a load's answer for the guest.
#[inline(always)]
fn mmio_to_vmm(ctx: &Context, vcpu: &Vcpu, addr: u64, data: &mut [u8], is_write: bool) -> c_int {
    let callbacks = ctx.callbacks();
    if is_write {
        return callbacks.mmio_write(addr, data);
    }
    let r = callbacks.mmio_read(addr, data);
    vcpu.complete_mmio_read(data);
    r
}

/// Calls the port handler for one element of `data` (1, 2 or 4 bytes).
#[inline(always)]
fn port_io_element(ctx: &Context, direction: IoDirection, port: u16, data: &mut [u8]) -> c_int {
    let callbacks = ctx.callbacks();
    match (direction, &*data) {
        (IoDirection::In, _) => callbacks.port_in(port, data),
        (IoDirection::Out, &[b]) => callbacks.port_out(port, PortWidth::Byte, b.into()),
        (IoDirection::Out, &[a, b]) => callbacks.port_out(port, PortWidth::Word, u16::from_ne_bytes([a, b]).into()),
        (IoDirection::Out, &[a, b, c, d]) => {
            callbacks.port_out(port, PortWidth::Long, u32::from_ne_bytes([a, b, c, d]))
        }
        (IoDirection::Out, _) => -libc::EMSGSIZE,
    }
}

/// Calls the port handler once per `size`-byte element of `data` (`rep
/// ins`/`rep outs`); stops at the first non-zero result.
#[inline(never)]
fn handle_string_port_io(ctx: &Context, direction: IoDirection, port: u16, size: u8, data: &mut [u8]) -> c_int {
    for element in data.chunks_exact_mut(usize::from(size)) {
        let r = port_io_element(ctx, direction, port, element);
        if r != 0 {
            return r;
        }
    }
    0
}

/// An exit the library cannot handle: show the vcpu state (and write a
/// core with `LIBKVM_CORE`) and end `kvm_run` with `-EFAULT` (the guest did
/// something the host could not run).
fn unexpected_exit(ctx: &Context, vcpu: &Vcpu, what: &str, detail: u64) -> c_int {
    eprintln!("kvm_run: vcpu {}: unhandled exit {what} (0x{detail:x})", vcpu.index());
    x86::show_regs(vcpu);
    ctx.dump_core_after_crash(vcpu, &format!("made an exit the library cannot handle ({what})"));
    Errno::FAULT.negated()
}
