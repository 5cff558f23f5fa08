//! Progress on protected pages: a watched page must never stop the guest.
//!
//! Some accesses to a page cut out for a watchpoint never come back as an
//! exit the library can finish (see [`super::implicit`]): KVM loops inside
//! `KVM_RUN` (a descriptor's accessed bit on a read-only GDT, `sgdt` into
//! a watched page), fails to emulate the instruction, or retries the same
//! access without end. Three checks find them:
//!
//! - a watchdog thread kicks a vcpu whose `KVM_RUN` lasts a whole period
//!   while pages are protected; a vcpu kicked twice at the same instruction
//!   (and not halted) made no progress;
//! - an emulation failure while pages are protected;
//! - the same protected access, with the same registers, over and over.
//!
//! Each is stepped through: every protection is lifted, the vcpu
//! single-steps the one instruction with its memory plain RAM, and the
//! protections come back. A store into a watched range during that step is
//! found by comparing the watched bytes, and reported (a load there is not
//! seen). Where even that cannot help, watching steps aside from the page
//! with a message.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{kvm_regs, KVM_MP_STATE_RUNNABLE};

use super::exits::{current_pc, discard_queued_exception};
use super::trap_flag::{self, StackBefore};
use super::watch::{first_changed, WatchHit, WatchedBytes};
use super::HeldTable;
use crate::context::{Context, ContextRef, LiveSlots};
use crate::error::Result;
use crate::lock;
use crate::memory::page_of;
use crate::vcpu::Vcpu;

/// How long one `KVM_RUN` may last, with pages protected, before the
/// watchdog looks at where the vcpu is. Its kicks must never pass for the
/// library answering a call without waiting for the guest (test_running
/// allows a call 100 ms), nor cost a computing guest anything: one kick
/// per vcpu per period.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(100);
/// Every this many identical protected accesses in a row, the registers
/// are compared with the last such check.
const REPEAT_CHECK: u32 = 16;
const INVALID_OPCODE: u8 = 6;

/// One vcpu's progress on protected pages.
#[derive(Debug, Default)]
pub struct Progress {
    /// Where the last watchdog kick found the vcpu.
    stuck_at: Option<u64>,
    /// The instruction being stepped through.
    step_through: Option<StepThrough>,
    /// The protected access the vcpu made last, and how often in a row.
    repeat: Repeat,
}

#[derive(Debug)]
struct StepThrough {
    /// The stack before the step, to find a frame it pushed.
    stack: StackBefore,
    /// The watched bytes before the step.
    before: Vec<WatchedBytes>,
}

#[derive(Debug, Default)]
struct Repeat {
    gpa: u64,
    is_write: bool,
    count: u32,
    regs: Option<kvm_regs>,
}

/// The watchdog thread of a context.
pub struct ProgressWatchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ProgressWatchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressWatchdog")
    }
}

impl ProgressWatchdog {
    fn start(ctx: &Context) -> Option<ProgressWatchdog> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = stop.clone();
        let ctx_ref = ContextRef::new(ctx);
        let thread = std::thread::Builder::new()
            .name("libkvm-progress".into())
            .spawn(move || {
                // SAFETY: the context stops (and joins) its watchdog before it
                // is dropped (Context::stop_watching_progress in Drop).
                let ctx = unsafe { ctx_ref.get() };
                watch(ctx, &thread_stop);
            })
            .ok()?;
        Some(ProgressWatchdog { stop, thread: Some(thread) })
    }

    fn stop(mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watchdog: kicks every vcpu whose `KVM_RUN` lasted a whole period
/// while pages are protected.
fn watch(ctx: &Context, stop: &(Mutex<bool>, Condvar)) {
    let mut seen: Vec<Option<u64>> = Vec::new();
    let mut stopped = lock(&stop.0);
    while !*stopped {
        stopped = stop.1.wait_timeout(stopped, WATCHDOG_PERIOD).unwrap_or_else(PoisonError::into_inner).0;
        if lock(&ctx.debugger().page_watches).is_empty() {
            seen.clear();
            continue;
        }
        for vcpu in ctx.vcpus() {
            let i = vcpu.index() as usize;
            if seen.len() <= i {
                seen.resize(i + 1, None);
            }
            let entry = vcpu.guest_entry();
            if entry.is_some() && entry == seen[i] {
                vcpu.kick_for_progress();
                seen[i] = None;
            } else {
                seen[i] = entry;
            }
        }
    }
}

impl Context {
    /// Starts the watchdog, once (pages are protected from now on).
    pub(crate) fn watch_progress(&self) {
        let mut dog = lock(&self.debugger().progress_watchdog);
        if dog.is_none() {
            *dog = ProgressWatchdog::start(self);
        }
    }

    /// Ends the watchdog thread.
    pub(crate) fn stop_watching_progress(&self) {
        if let Some(dog) = lock(&self.debugger().progress_watchdog).take() {
            dog.stop();
        }
    }
}

/// After a library kick: if it was the watchdog's and the vcpu is where
/// the last one found it, running but not moving, step it through.
pub fn after_kick(ctx: &Context, vcpu: &Vcpu) -> Result<c_int> {
    if !vcpu.take_progress_kick() {
        return Ok(0);
    }
    let pc = current_pc(vcpu)?;
    let stuck = {
        let mut progress = lock(&vcpu.progress);
        let same = progress.stuck_at == Some(pc);
        progress.stuck_at = if same { None } else { Some(pc) };
        same
    };
    if !stuck || !ctx.memory().protections_in_force() {
        return Ok(0);
    }
    let runnable = vcpu.ioctl(|fd| fd.get_mp_state()).map_or(true, |s| s.mp_state == KVM_MP_STATE_RUNNABLE);
    if runnable && uses_a_protected_page(ctx, vcpu, pc)? {
        start_step_through(ctx, vcpu)?;
    }
    Ok(0)
}

/// Whether a page `vcpu` fetches from at `pc` or uses by itself (descriptor
/// tables, stacks, page tables) is protected now: only then can KVM be
/// looping on it. A guest spinning in `jmp .` is stuck too, but lifting
/// every protection for its step would let another vcpu's watched access
/// through unseen.
fn uses_a_protected_page(ctx: &Context, vcpu: &Vcpu, pc: u64) -> Result<bool> {
    if is_system_instruction(ctx, vcpu, pc) {
        // Its operand (`sgdt`'s store, `lgdt`'s load) may be on one.
        return Ok(true);
    }
    let mut pages: Vec<u64> = super::implicit::vcpu_implicit_pages(ctx, vcpu)?.into_keys().collect();
    if let Ok(t) = ctx.translate_gva(vcpu, pc) {
        pages.push(page_of(t.gpa));
    }
    let watches = lock(&ctx.debugger().page_watches);
    Ok(pages.iter().any(|&page| watches.protection_for(page).is_some()))
}

/// An emulation failure other than `int3`: while pages are protected, the
/// instruction is stepped through (the queued `#UD` SVM adds discarded).
/// `None` when there is nothing to lift, or the failure happened with the
/// protections lifted already: then it is not theirs.
pub fn after_emulation_failure(ctx: &Context, vcpu: &Vcpu) -> Option<Result<c_int>> {
    if !ctx.memory().protections_in_force() || lock(&vcpu.progress).step_through.is_some() {
        return None;
    }
    Some(discard_queued_exception(vcpu, INVALID_OPCODE).and_then(|()| start_step_through(ctx, vcpu)).map(|()| 0))
}

/// Counts a protected access the library completed for `vcpu`: the same
/// access with the same registers again and again is KVM retrying it
/// without end (`lgdt` from an unbacked page does that), and the
/// instruction is stepped through. Should that happen with the
/// protections lifted already, watching steps aside from the page.
pub(super) fn note_protected_access(ctx: &Context, vcpu: &Vcpu, gpa: u64, is_write: bool) -> Result<()> {
    {
        let mut progress = lock(&vcpu.progress);
        let repeat = &mut progress.repeat;
        if repeat.gpa == gpa && repeat.is_write == is_write {
            repeat.count += 1;
        } else {
            *repeat = Repeat { gpa, is_write, count: 1, regs: None };
        }
        if repeat.count % REPEAT_CHECK != 0 {
            return Ok(());
        }
        let (regs, _) = vcpu.regs_and_sregs()?;
        if repeat.regs != Some(regs) {
            repeat.regs = Some(regs);
            return Ok(());
        }
        *repeat = Repeat::default();
    }
    // A guest polling a flag on a watched page repeats its load with the
    // same registers too; KVM retries only descriptor-table instructions.
    if !is_system_instruction(ctx, vcpu, current_pc(vcpu)?) {
        return Ok(());
    }
    if ctx.memory().protections_in_force() {
        return start_step_through(ctx, vcpu);
    }
    let page = page_of(gpa);
    if lock(&ctx.debugger().page_watches).step_aside(page) {
        eprintln!(
            "libkvm: vcpu {}: the access to {gpa:#x} repeats without end on a watched page: \
             watching is suspended on page {page:#x}",
            vcpu.index()
        );
        ctx.apply_protections(&[page])?;
    }
    Ok(())
}

/// Whether the instruction at `pc` is one of the system instructions
/// (`0f 00`: `sldt`, `str`, `lldt`, `ltr`, `verr`, `verw`; `0f 01`: `sgdt`,
/// `sidt`, `lgdt`, `lidt`, `smsw`, `lmsw`, `invlpg`) that the instruction
/// emulator can retry without end on a protected operand.
fn is_system_instruction(ctx: &Context, vcpu: &Vcpu, pc: u64) -> bool {
    let Ok(long) = vcpu.read_registers(|_, sregs| sregs.cs.l != 0) else { return false };
    let (bytes, len) = ctx.read_instruction(vcpu, pc);
    let bytes = &bytes[..len];
    let prefixes = bytes
        .iter()
        .take_while(|&&b| trap_flag::is_legacy_prefix(b) || b == 0x66 || (long && (0x40..=0x4f).contains(&b)))
        .count();
    matches!(bytes.get(prefixes..prefixes + 2), Some([0x0f, 0x00 | 0x01]))
}

/// Lifts every protection and has the vcpu single-step its instruction.
fn start_step_through(ctx: &Context, vcpu: &Vcpu) -> Result<()> {
    static SAID: AtomicBool = AtomicBool::new(false);
    let stack = StackBefore::of(vcpu)?;
    let before = lock(&ctx.debugger().page_watches).watched_bytes(&ctx.memory());
    ctx.memory().lift_protections(&LiveSlots::of(ctx)?)?;
    lock(&vcpu.progress).step_through = Some(StepThrough { stack, before });
    lock(&vcpu.debug).stepping_through = true;
    vcpu.request_debug_attention();
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!(
            "libkvm: vcpu {} made no progress at {:#x} on a page protected for a watchpoint (an access its CPU \
             makes by itself): such instructions are stepped through with the pages backed",
            vcpu.index(),
            current_pc(vcpu)?
        );
    }
    Ok(())
}

/// The step-through's single step arrived (or the vcpu stopped for another
/// reason): protections come back. Returns the watchpoint the stepped
/// instruction stored into, if any; `None` too when no step was going on.
pub fn finish_step_through(ctx: &Context, vcpu: &Vcpu) -> Result<Option<WatchHit>> {
    let Some(through) = lock(&vcpu.progress).step_through.take() else { return Ok(None) };
    lock(&vcpu.debug).stepping_through = false;
    vcpu.request_debug_attention();
    ctx.memory().land_protections(&LiveSlots::of(ctx)?)?;
    trap_flag::clear_leaked(ctx, vcpu, &through.stack, &mut HeldTable::new(ctx.debugger()))?;
    Ok(first_changed(&through.before, &ctx.memory()))
}
