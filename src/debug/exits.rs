//! Debug exits: `#BP`, `#DB`, and the emulation failure that an `int3` is
//! on hosts that emulate guests; and the transparent step over a library
//! breakpoint when the vcpu resumes on it.
//!
//! Following QEMU, an event is the library's (or the VMM's) only when it
//! matches what was armed: an `int3` at a patched address (or any `int3`
//! when the VMM enabled software breakpoints itself), a debug register that
//! was programmed, a single step that was asked for. Anything else belongs
//! to the guest and is injected back into it. Nothing here allocates.

use std::ffi::c_int;

use kvm_bindings::kvm_debug_exit_arch;

use super::breakpoints::{BreakpointTable, CodeMemory, HardwareBreakpoint, Location, INT3};
use super::debugregs::DEBUG_REGISTERS;
use super::decode::{
    decode_debug_exit, DebugCause, DebugEvent, BREAKPOINT_EXCEPTION, DEBUG_EXCEPTION, DR6_BS, DR6_HIT_MASK,
};
use super::pagewalk::{PagingRegisters, RememberedWalks};
use super::trap_flag::RegistersBeforeStep;
use super::vcpu_state::{CodePage, Programming, ResumePoint, StepOver, VcpuDebug};
use super::{program, trap_flag, BreakType, HeldTable};
use crate::context::Context;
use crate::error::{Errno, Result};
use crate::exit::{Exit, ExitData, InternalError, OtherExit};
use crate::lock;
use crate::memory::GuestMemory;
use crate::vcpu::exit_registers::StopRegisters;
use crate::vcpu::{RunnerGuard, Vcpu};

/// How an `int3` reached the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Int3Exit {
    /// `KVM_EXIT_DEBUG` with `#BP` (VMX and SVM hosts): RIP still points at
    /// the `int3`.
    DebugExit,
    /// `KVM_EXIT_INTERNAL_ERROR` from the instruction emulator, which cannot
    /// run `int3` (emulating hosts): RIP points at the `int3`. With the
    /// paging registers the exit read (the re-arm at the stop uses them).
    EmulationFailure { paging: PagingRegisters },
}

/// True when the emulator failed on an `int3`.
fn emulated_int3(error: &InternalError) -> bool {
    matches!(error.instruction_bytes(), Some((bytes, len)) if len >= 1 && bytes[0] == INT3)
}

/// What to do with a debug event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Tell the VMM; step over the breakpoint when the vcpu resumes there.
    Report(Option<ResumePoint>),
    /// A breakpoint removed while the vcpu hit it: just run on.
    Resume,
    /// The guest's own `int3`: deliver `#BP` to it.
    ReinjectBreakpoint,
    /// The step over a breakpoint ran into the guest's own `int3` under
    /// it: the step is over, deliver `#BP`.
    SteppedIntoGuestInt3,
    /// The guest's own `#DB`: deliver it with its DR6.
    ReinjectDebug,
}

/// The linear address of the instruction `vcpu` is at.
pub(crate) fn current_pc(vcpu: &Vcpu) -> Result<u64> {
    vcpu.read_stop_registers(StopRegisters::linear_pc)
}

/// [`current_pc`] and the paging registers, in one register read.
fn pc_and_paging(vcpu: &Vcpu) -> Result<(u64, PagingRegisters)> {
    vcpu.read_stop_registers(|registers| (registers.linear_pc(), registers.paging))
}

/// Where the vcpu's instruction pointer is: linear, and guest-physical
/// where its page is mapped. Read once per entry, for the step over a
/// breakpoint, the trap-flag decoder and the `hlt` probe alike.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CodeAt {
    /// The linear address of the instruction.
    pub pc: u64,
    /// Its guest-physical address; `None` where its page is not mapped.
    pub gpa: Option<u64>,
    /// The byte there, as the vcpu will fetch it; `None` where it is not RAM.
    pub byte: Option<u8>,
}

impl CodeAt {
    /// The vcpu's instruction now; RIP's page is nearly always the last
    /// entry's, whose walk `code_page` remembers.
    #[inline(always)]
    fn of(ctx: &Context, vcpu: &Vcpu, code_page: &mut CodePage) -> Result<CodeAt> {
        let (pc, regs) = pc_and_paging(vcpu)?;
        Ok(CodeAt::at(ctx, code_page, pc, &regs))
    }

    /// The instruction at linear `pc`, translated with `regs`.
    #[inline(always)]
    fn at(ctx: &Context, code_page: &mut CodePage, pc: u64, regs: &PagingRegisters) -> CodeAt {
        CodeAt::in_memory(&ctx.memory(), code_page, pc, regs)
    }

    /// [`CodeAt::at`], in guest memory the caller holds.
    #[inline(always)]
    fn in_memory(mem: &GuestMemory, code_page: &mut CodePage, pc: u64, regs: &PagingRegisters) -> CodeAt {
        let gpa = code_page.translate(regs, mem, pc).ok();
        let byte = gpa.and_then(|gpa| mem.read_byte(gpa).ok());
        CodeAt { pc, gpa, byte }
    }
}

/// What the run loop does after [`before_entry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Enter the guest.
    Enter,
    /// The vcpu was about to single-step a `hlt`, which the library ran
    /// itself (RIP is past it): report a halt as `KVM_EXIT_HLT` would.
    Halted,
}

/// Before an entry where the vcpu's [`Attention`](crate::vcpu::Attention)
/// asks for it (the debug state changed, or the vcpu single-steps, unless
/// the step's exit found nothing for this entry: `note_steady_step`):
/// start a step over the breakpoint the vcpu stopped on, and give KVM the
/// current debug state if it changed. Between two single steps it has not:
/// every change asks for attention, and only then is the state computed
/// again.
/// Its work besides programming is [`VcpuDebug::entry_has_work`]'s; where
/// there is none, an exit may program instead (`program_at_exit`). On hosts
/// whose single steps skip halts, a step about to run a `hlt` is a halt:
/// looked at here for the library's step over a breakpoint, and at the
/// exit for the VMM's own steps (`stepped_a_halt`).
#[inline(never)]
pub fn before_entry(ctx: &Context, vcpu: &Vcpu) -> Result<Entry> {
    let mut changed = vcpu.take_debug_attention();
    let mut state = lock(&vcpu.debug);
    let mut table = HeldTable::new(ctx.debugger());
    let mut code = None;
    if let Some(resume) = state.resume.take() {
        code = Some(start_step_over(ctx, vcpu, &mut state, &mut table, resume)?);
        changed = true;
    }
    // Whatever was asked, a single step KVM was not given is not lost.
    let library_step = state.step_over.is_some() || state.stepping_through;
    changed |= state.programming().single_steps() != (state.stepping() || library_step);
    if vcpu.single_step_written_away() {
        state.single_step_lost = true;
        changed = true;
    }
    let stepping = state.stepping() || state.step_over.is_some();
    state.halt_check = None;
    let probe = stepping && steps_skip_halts(ctx);
    if probe && code.is_none() && !library_step {
        // The VMM's step: whether it runs a `hlt` is looked at at its exit,
        // and only where RIP moved by one byte.
        state.halt_check = Some((current_pc(vcpu)?, vcpu.state_epoch()));
    } else if probe {
        let code = match code {
            Some(code) => code,
            None => CodeAt::of(ctx, vcpu, &mut state.code_page)?,
        };
        if at_hlt(&code) {
            // Single-stepping hlt loses the halt on emulating hosts (the
            // step is reported past it); VMX reports the halt. Do what VMX
            // does.
            step_past_one_byte_instruction(vcpu)?;
            if let Some(step) = state.step_over.take() {
                finish_step_over(ctx, step, &mut table)?;
            }
            program(ctx, vcpu, &mut state, &mut table)?;
            return Ok(Entry::Halted);
        }
    }
    if changed {
        program(ctx, vcpu, &mut state, &mut table)?;
    }
    if std::mem::take(&mut state.restore_trap_flag) && !state.programming().single_steps() {
        trap_flag::set(vcpu)?;
    }
    Ok(Entry::Enter)
}

/// True when the VMM's single step that entered as `halt_check` says (see
/// [`VcpuDebug::halt_check`]) and exited at linear `pc` ran a `hlt`: the
/// guest ran nothing else since (one run, no register write), RIP moved by
/// one byte, and the byte it left is `hlt`. Emulating hosts report such a
/// step past the `hlt` instead of the halt VMX reports.
fn stepped_a_halt(ctx: &Context, vcpu: &Vcpu, state: &mut VcpuDebug, pc: u64) -> Result<bool> {
    let Some((entry_pc, entry_epoch)) = state.halt_check.take() else { return Ok(false) };
    if pc != entry_pc.wrapping_add(1) || vcpu.state_epoch() != entry_epoch.wrapping_add(1) {
        return Ok(false);
    }
    let paging = vcpu.read_stop_registers(|registers| registers.paging)?;
    Ok(at_hlt(&CodeAt::at(ctx, &mut state.code_page, entry_pc, &paging)))
}

/// At the exit of a plain single step (one the VMM asked for) at linear
/// `pc`: where the next entry would find nothing to do (KVM was given the
/// step and still has it, nothing to resume over, no register written
/// since), the entry's part is done here, the `hlt` check set up where the
/// host needs it, and the run loop told that it may enter without looking
/// at the debug state ([`Vcpu::note_steady_step`]). A register write, or
/// a change of the debug state that asks for attention, before the entry
/// makes it look after all.
fn note_steady_step(ctx: &Context, vcpu: &Vcpu, state: &mut VcpuDebug, pc: u64) {
    if !state.programming().single_steps() || state.entry_has_work() || vcpu.single_step_written_away() {
        return;
    }
    state.halt_check = steps_skip_halts(ctx).then(|| (pc, vcpu.state_epoch()));
    vcpu.note_steady_step();
}

/// True where single steps of a `hlt` are reported past it and the library
/// makes them halts (an in-kernel irqchip halts in the kernel instead).
#[inline]
fn steps_skip_halts(ctx: &Context) -> bool {
    !ctx.irqchip_in_kernel() && ctx.debugger().single_step_skips_halts(ctx.kvm())
}

/// At an exit that changed the debug state (the end of the library's own
/// step): gives it to KVM now, where the next entry would have nothing else
/// to do (no step over to start, no trap flag to give back), so that the
/// entry need not look at the state again; else asks the entry to. The
/// attention is taken before the state is computed: a change asked for
/// meanwhile asks again.
fn program_at_exit(ctx: &Context, vcpu: &Vcpu, state: &mut VcpuDebug, table: &mut HeldTable<'_>) -> Result<()> {
    if state.entry_has_work() {
        vcpu.request_debug_attention();
        return Ok(());
    }
    vcpu.take_debug_attention();
    program(ctx, vcpu, state, table)
}

/// Moves RIP past the one-byte instruction (`hlt`, `int3`) it points at.
fn step_past_one_byte_instruction(vcpu: &Vcpu) -> Result<()> {
    let (mut regs, _) = vcpu.regs_and_sregs()?;
    regs.rip = regs.rip.wrapping_add(1);
    vcpu.write_state(|fd| fd.set_regs(&regs))
}

/// True when the instruction at `code` is `hlt`. Not where RIP's page is
/// not mapped or not RAM: the guest's own fetch faults there, as it would
/// without the debugger.
fn at_hlt(code: &CodeAt) -> bool {
    const HLT: u8 = 0xf4;
    code.byte == Some(HLT)
}

/// After a port or MMIO exit of a single-stepping vcpu: let KVM finish the
/// instruction, and report the step it completed. VMX reports that step
/// while finishing; emulating hosts finish without a trap, and the step
/// would be lost (the next one reported after two instructions).
#[inline]
pub(super) fn after_io_exit(vcpu: &Vcpu, runner: &RunnerGuard<'_>, exit_data: &mut ExitData) -> Result<Option<Exit>> {
    if !vcpu.stepping() {
        return Ok(None);
    }
    finish_stepped_io(vcpu, runner, exit_data)
}

/// [`after_io_exit`] for a single-stepping vcpu.
#[inline(never)]
fn finish_stepped_io(vcpu: &Vcpu, runner: &RunnerGuard<'_>, exit_data: &mut ExitData) -> Result<Option<Exit>> {
    if let Some(exit) = vcpu.complete_instruction(runner, exit_data)? {
        return Ok(Some(exit));
    }
    // KVM lost the step, and with it the trap flag it set (an MMIO store
    // completes without the emulator's step): give it the step again.
    lock(&vcpu.debug).single_step_lost = true;
    vcpu.request_debug_attention();
    let pc = current_pc(vcpu)?;
    exit_data.debug = kvm_debug_exit_arch { exception: DEBUG_EXCEPTION, pad: 0, pc, dr6: DR6_BS, dr7: 0 };
    exit_data.other = OtherExit::Debug;
    Ok(Some(Exit::Other))
}

/// A watchpoint fired on an access the library completed, of an
/// instruction that may have been single-stepped: finish the instruction
/// (a load's data is in place; a store was done by the library). Its step,
/// if KVM reports one, is not reported: the watchpoint's stop is the
/// instruction's one stop. Any step over a breakpoint ends with it. Returns
/// another exit finishing caused (the rest of a split access, the `out` of
/// a `rep outs`), to handle first.
pub(super) fn finish_watched_instruction(
    ctx: &Context,
    vcpu: &Vcpu,
    runner: &RunnerGuard<'_>,
    is_write: bool,
    exit_data: &mut ExitData,
) -> Result<Option<Exit>> {
    let stepping = vcpu.stepping();
    if is_write && !stepping {
        return Ok(None);
    }
    let next = vcpu.complete_instruction(runner, exit_data)?;
    if !stepping {
        return Ok(next);
    }
    let mut state = lock(&vcpu.debug);
    let mut table = HeldTable::new(ctx.debugger());
    let plain_step = |arch: &kvm_debug_exit_arch| {
        arch.exception == DEBUG_EXCEPTION && arch.dr6 & DR6_BS != 0 && arch.dr6 & DR6_HIT_MASK == 0
    };
    let next = match next {
        Some(Exit::Other) if exit_data.other == OtherExit::Debug && plain_step(&exit_data.debug) => None,
        Some(other) => return Ok(Some(other)),
        // KVM lost the step (and its trap flag): give it the step again.
        None => {
            state.single_step_lost = true;
            None
        }
    };
    if !state.stepping_through {
        if let Some(step) = state.step_over.take() {
            finish_step_over(ctx, step, &mut table)?;
            let event = DebugEvent::single_step(current_pc(vcpu)?);
            give_back_trap_flag(ctx, vcpu, &mut state, &event, &mut table)?;
        }
    }
    vcpu.request_debug_attention();
    Ok(next)
}

/// Resuming on a library breakpoint would trap on it again at once: put the
/// original byte back (or turn the register off) for one single step. The
/// table decides, not the stop: a breakpoint may have moved from a debug
/// register into memory (or been removed) since. Returns the instruction
/// the vcpu resumes on, as it will fetch it. Guest memory is locked once,
/// for the instruction and the lift (after the table: the lock order).
fn start_step_over(
    ctx: &Context,
    vcpu: &Vcpu,
    state: &mut VcpuDebug,
    table: &mut HeldTable<'_>,
    resume: ResumePoint,
) -> Result<CodeAt> {
    let (pc, registers) =
        vcpu.read_stop_registers(|registers| (registers.linear_pc(), RegistersBeforeStep::of(registers)))?;
    let held = table.get();
    let mem = ctx.memory();
    let mut code = CodeAt::in_memory(&mem, &mut state.code_page, pc, &registers.paging());
    if code.pc != resume.pc {
        return Ok(code);
    }
    step_over_at(state, held, &mem, resume, &mut code)?;
    drop(mem);
    // KVM hides the guest's TF while it single-steps: note it now, unless
    // the VMM's own single step already hides it.
    if state.step_over.is_some() && !state.programming().single_steps() {
        state.trap_flag = Some(trap_flag::before_step(ctx, &code, &registers, table.get())?);
    }
    Ok(code)
}

/// [`start_step_over`] once the vcpu is at the breakpoint's address.
fn step_over_at(
    state: &mut VcpuDebug,
    table: &mut BreakpointTable,
    mem: &GuestMemory,
    resume: ResumePoint,
    code: &mut CodeAt,
) -> Result<()> {
    let gpa = code.gpa;
    // An execution breakpoint in a debug register at the same address: the
    // table's, which this entry gives KVM (a register inserted at this stop
    // may not be programmed yet; one off for a step over in progress is
    // still in the table, and this stop is the int3 that step ran into).
    let register = (0..DEBUG_REGISTERS as u8).find(|&n| {
        table.register(n as usize).is_some_and(|r| r.addr == resume.pc && r.kind == BreakType::HardwareBreakpoint)
    });
    let patched = gpa.is_some_and(|gpa| table.patch_at(gpa).is_some());
    if resume.register.is_some() && (resume.patch_at_stop || !patched) {
        // Stopped by the register: step with it off. A software breakpoint
        // that was here then reports next, as the int3 the instruction is
        // now; one inserted since is stepped over with the register.
        state.step_over = register.map(|n| StepOver::Register { n });
    } else if let Some(gpa) = gpa {
        if table.lift(gpa, mem)? {
            state.step_over = Some(StepOver::Patch { gpa, register });
            // The vcpu now fetches the original byte.
            code.byte = mem.read_byte(gpa).ok();
        }
    }
    Ok(())
}

/// The step over a breakpoint ended with `event`: the guest gets back its
/// trap flag at the next entry (once KVM's single step is off, which clears
/// it), and now the `#DB` the stepped instruction owed it, before any
/// breakpoint at the next instruction (which faults again after the
/// guest's handler returns). True when that `#DB` was delivered.
#[inline(always)]
fn give_back_trap_flag(
    ctx: &Context,
    vcpu: &Vcpu,
    state: &mut VcpuDebug,
    event: &DebugEvent,
    table: &mut HeldTable<'_>,
) -> Result<bool> {
    let Some(flag) = state.trap_flag.take() else { return Ok(false) };
    trap_flag::clear_leaked(ctx, vcpu, &flag.stack, table)?;
    state.restore_trap_flag = flag.after;
    let step_or_fetch = match event.cause {
        DebugCause::SingleStep => true,
        DebugCause::Register(_) => event.break_type == BreakType::HardwareBreakpoint,
        _ => false,
    };
    if !(flag.owed_trap && step_or_fetch && !state.stepping()) {
        return Ok(false);
    }
    inject_debug(vcpu, (event.dr6 & !DR6_HIT_MASK) | DR6_BS)?;
    Ok(true)
}

/// The step over a breakpoint is done: its patch lands (armed again if it
/// is still wanted). KVM is to get the debug state again: the caller gives
/// it, or asks the entry to.
fn finish_step_over(ctx: &Context, step: StepOver, table: &mut HeldTable<'_>) -> Result<()> {
    if let StepOver::Patch { gpa, .. } = step {
        table.get().land(gpa, &*ctx.memory())?;
    }
    Ok(())
}

/// Asks the vcpu's next entry to give KVM the debug state when dropped,
/// unless [dismissed](EntryReprograms::dismiss): every way out of a debug
/// exit that ended a step over asks, but the one that gives the state to
/// KVM itself (`program_at_exit`).
struct EntryReprograms<'v>(Option<&'v Vcpu>);

impl EntryReprograms<'_> {
    /// The exit gave KVM the state (or asked for it) itself.
    fn dismiss(mut self) {
        self.0 = None;
    }
}

impl Drop for EntryReprograms<'_> {
    fn drop(&mut self) {
        if let Some(vcpu) = self.0 {
            vcpu.request_debug_attention();
        }
    }
}

/// Whose `int3` is at linear `pc`.
fn judge_int3(ctx: &Context, vcpu: &Vcpu, state: &VcpuDebug, table: &mut HeldTable<'_>, pc: u64) -> Result<Verdict> {
    let table = table.get();
    let gpa = match table.software_at(pc).map(|b| b.location) {
        Some(Location::Patched(gpa)) => Some(gpa),
        _ => ctx.translate_gva(vcpu, pc).ok().map(|t| t.gpa),
    };
    if let (Some(StepOver::Patch { gpa: lifted, .. }), Some(gpa)) = (state.step_over, gpa) {
        if lifted == gpa {
            // The step over a breakpoint ran the guest's own int3 under it.
            return Ok(Verdict::SteppedIntoGuestInt3);
        }
    }
    if gpa.is_some_and(|g| table.patch_at(g).is_some()) {
        return Ok(Verdict::Report(Some(ResumePoint { pc, register: None, patch_at_stop: false })));
    }
    if state.passes_int3_through() {
        return Ok(Verdict::Report(None));
    }
    let still_int3 = gpa.is_some_and(|g| ctx.memory().read_byte(g) == Ok(INT3));
    Ok(if still_int3 { Verdict::ReinjectBreakpoint } else { Verdict::Resume })
}

/// Whose is a `#DB` other than the end of our own step, given the debug
/// state the vcpu ran with (`entered`): a single step KVM made (reported
/// while the VMM still wants steps, dropped when it stopped wanting them
/// meanwhile), a debug register programmed then (whose break type is set
/// from the table), a breakpoint removed since (ignored), or the guest's
/// own (its trap flag, its own debug registers). KVM may still deliver a
/// step or hit it owed to an earlier programming: an event the library
/// caused recently is never the guest's, unless the guest set its trap
/// flag itself (`guest_trap_flag`). `register` looks up what the breakpoint
/// table holds in a debug register now.
fn judge_debug_exception(
    state: &VcpuDebug,
    entered: &Programming,
    event: &mut DebugEvent,
    register: impl FnOnce(u8) -> Option<HardwareBreakpoint>,
    guest_trap_flag: impl FnOnce() -> bool,
) -> Verdict {
    let n = match event.cause {
        DebugCause::SingleStep if entered.single_steps() && state.stepping() => return Verdict::Report(None),
        DebugCause::SingleStep if entered.single_steps() => return Verdict::Resume,
        DebugCause::SingleStep if state.recently_single_stepped() && !guest_trap_flag() => return Verdict::Resume,
        DebugCause::Register(n) if entered.register_enabled(n) => n,
        DebugCause::Register(n) if state.recently_programmed_register(n) => return Verdict::Resume,
        _ => return Verdict::ReinjectDebug,
    };
    match register(n) {
        Some(hw) if hw.addr == entered.0.arch.debugreg[n as usize] => {
            event.break_type = hw.kind;
            match hw.kind {
                BreakType::SoftwareBreakpoint | BreakType::HardwareBreakpoint => {
                    Verdict::Report(Some(ResumePoint { pc: event.pc, register: Some(n), patch_at_stop: false }))
                }
                _ => Verdict::Report(None),
            }
        }
        _ if state.requested_register(n) => Verdict::Report(None),
        _ => Verdict::Resume,
    }
}

/// True when the guest's RFLAGS has TF set (the guest single-steps itself).
fn guest_sets_trap_flag(vcpu: &Vcpu) -> bool {
    const TF: u64 = 1 << 8;
    vcpu.read_stop_registers(|registers| registers.rflags & TF != 0).unwrap_or(false)
}

/// Handles `KVM_EXIT_DEBUG`, decoded against the debug state the vcpu
/// entered with. When that state is forgotten (changed many times since),
/// the event is dropped: never mistaken for the guest's own and injected.
pub(super) fn on_debug_exit(ctx: &Context, vcpu: &Vcpu, arch: &kvm_debug_exit_arch) -> Result<c_int> {
    let mut state = lock(&vcpu.debug);
    if stepped_a_halt(ctx, vcpu, &mut state, arch.pc)? {
        // What VMX reports: the halt, with RIP past the `hlt`.
        drop(state);
        return Ok(ctx.callbacks().halt(vcpu.index()));
    }
    let generation = vcpu.entered_generation();
    if is_plain_step(&state, state.single_stepped_at(generation), arch) {
        state.resume = None;
        note_steady_step(ctx, vcpu, &mut state, arch.pc);
        return report(ctx, vcpu, state, plain_step_event(arch));
    }
    on_unusual_debug_exit(ctx, vcpu, state, generation, arch)
}

/// [`on_debug_exit`] for everything but a plain step: out of line, so that
/// a run of single steps pays for none of it.
#[inline(never)]
fn on_unusual_debug_exit<'v>(
    ctx: &Context,
    vcpu: &'v Vcpu,
    mut state: std::sync::MutexGuard<'v, VcpuDebug>,
    generation: u64,
    arch: &kvm_debug_exit_arch,
) -> Result<c_int> {
    let Some(entered) = state.programming_at(generation) else { return Ok(0) };
    let mut table = HeldTable::new(ctx.debugger());
    let mut event =
        if is_bare_step(arch) { plain_step_event(arch) } else { decode_debug_exit(arch, &entered.registers()) };
    if arch.exception == DEBUG_EXCEPTION && arch.dr6 & DR6_BS != 0 {
        let stepped_over = state.step_over.take().map(|step| finish_step_over(ctx, step, &mut table)).transpose()?;
        // A step over that ended gives KVM the debug state again: at this
        // exit where it can (`program_at_exit`), else at the entry.
        let reprograms = EntryReprograms(stepped_over.map(|()| vcpu));
        if stepped_over.is_some() && give_back_trap_flag(ctx, vcpu, &mut state, &event, &mut table)? {
            return Ok(0);
        }
        let stepped_through = state.stepping_through;
        if stepped_through {
            table.release();
            drop(state);
            let stored = super::progress::finish_step_through(ctx, vcpu)?;
            if let Some(hit) = stored {
                return super::watch::report_hit(ctx, vcpu, hit);
            }
            state = lock(&vcpu.debug);
        }
        let libraries_step = stepped_over.is_some() || stepped_through;
        if libraries_step && event.cause == DebugCause::SingleStep && !state.stepping() {
            program_at_exit(ctx, vcpu, &mut state, &mut table)?;
            reprograms.dismiss();
            return Ok(0);
        }
    }
    let verdict = match event.cause {
        DebugCause::Int3 => judge_int3(ctx, vcpu, &state, &mut table, event.pc)?,
        _ => judge_debug_exception(
            &state,
            &entered,
            &mut event,
            |n| table.get().register(n as usize).copied(),
            || guest_sets_trap_flag(vcpu),
        ),
    };
    act(ctx, vcpu, state, &mut table, event, verdict, Int3Exit::DebugExit)
}

/// True for the exit nearly every single step ends in: a step the VMM asked
/// for and KVM was given (`entered_stepping`: the vcpu entered with it), no
/// debug register hit, and no step of the library's own (over a
/// breakpoint, or through a protected page) under way. Decoding and judging
/// it would report it as it is ([`plain_step_event`]), with nothing to
/// resume over; the run of steps skips both.
fn is_plain_step(state: &VcpuDebug, entered_stepping: bool, arch: &kvm_debug_exit_arch) -> bool {
    is_bare_step(arch) && entered_stepping && state.stepping() && state.step_over.is_none() && !state.stepping_through
}

/// True for a `#DB` with DR6.BS and no debug register hit: whatever was
/// programmed, it decodes as [`plain_step_event`].
fn is_bare_step(arch: &kvm_debug_exit_arch) -> bool {
    arch.exception == DEBUG_EXCEPTION && arch.dr6 & (DR6_BS | DR6_HIT_MASK) == DR6_BS
}

/// The event of an exit [`is_bare_step`] accepts.
fn plain_step_event(arch: &kvm_debug_exit_arch) -> DebugEvent {
    DebugEvent { exception: arch.exception, dr6: arch.dr6, dr7: arch.dr7, ..DebugEvent::single_step(arch.pc) }
}

/// Handles `KVM_EXIT_INTERNAL_ERROR` when it is an `int3` the emulator
/// could not run; `None` when it is something else.
pub(super) fn on_emulation_failure(ctx: &Context, vcpu: &Vcpu, error: &InternalError) -> Option<Result<c_int>> {
    if !emulated_int3(error) {
        return super::watch::on_fetch_from_watched_page(ctx, vcpu)
            .or_else(|| super::progress::after_emulation_failure(ctx, vcpu));
    }
    Some((|| {
        // One register read for the judgement and the re-arm at the stop.
        let (pc, paging) = pc_and_paging(vcpu)?;
        let state = lock(&vcpu.debug);
        let mut table = HeldTable::new(ctx.debugger());
        let verdict = judge_int3(ctx, vcpu, &state, &mut table, pc)?;
        let shape = Int3Exit::EmulationFailure { paging };
        act(ctx, vcpu, state, &mut table, DebugEvent::int3(pc), verdict, shape)
    })())
}

/// Carries out a verdict. The VMM's callback runs after every lock is
/// released.
fn act(
    ctx: &Context,
    vcpu: &Vcpu,
    mut state: std::sync::MutexGuard<'_, VcpuDebug>,
    table: &mut HeldTable<'_>,
    event: DebugEvent,
    verdict: Verdict,
    shape: Int3Exit,
) -> Result<c_int> {
    match verdict {
        Verdict::Report(mut resume) => {
            if let Some(point) = resume.as_mut().filter(|point| point.register.is_some()) {
                point.patch_at_stop =
                    table.get().software_at(point.pc).is_some_and(|b| matches!(b.location, Location::Patched(_)));
            }
            state.resume = resume;
            let paging = match shape {
                Int3Exit::EmulationFailure { paging } => Some(paging),
                Int3Exit::DebugExit => None,
            };
            report_with(ctx, vcpu, state, table, event, paging.as_ref())
        }
        Verdict::Resume => Ok(0),
        Verdict::ReinjectBreakpoint => {
            drop(state);
            inject_breakpoint(vcpu, shape)?;
            Ok(0)
        }
        Verdict::SteppedIntoGuestInt3 => {
            if let Some(step) = state.step_over.take() {
                finish_step_over(ctx, step, table)?;
                vcpu.request_debug_attention();
            }
            // The #BP is delivered once KVM's step is off, which clears TF:
            // a trap flag the guest had set itself is not in its frame.
            state.restore_trap_flag = false;
            state.trap_flag = None;
            drop(state);
            inject_breakpoint(vcpu, shape)?;
            Ok(0)
        }
        Verdict::ReinjectDebug => {
            drop(state);
            inject_debug(vcpu, event.dr6)?;
            Ok(0)
        }
    }
}

/// Tells the VMM (or an attached gdb) about `event` on `vcpu`, after every
/// lock is released; the stop also re-arms breakpoints. A stop on a
/// library breakpoint asks for attention: the next entry steps over it.
#[inline(always)]
pub(crate) fn report(
    ctx: &Context,
    vcpu: &Vcpu,
    state: std::sync::MutexGuard<'_, VcpuDebug>,
    event: DebugEvent,
) -> Result<c_int> {
    report_with(ctx, vcpu, state, &mut HeldTable::new(ctx.debugger()), event, None)
}

/// [`report`], with the breakpoint table where the stop already holds it,
/// and the vcpu's paging registers where the exit read them (else the
/// re-arm reads them).
#[inline(always)]
fn report_with(
    ctx: &Context,
    vcpu: &Vcpu,
    mut state: std::sync::MutexGuard<'_, VcpuDebug>,
    table: &mut HeldTable<'_>,
    event: DebugEvent,
    paging: Option<&PagingRegisters>,
) -> Result<c_int> {
    state.last_event = Some(event);
    let resumes = state.resume.is_some();
    drop(state);
    if resumes {
        vcpu.request_debug_attention();
    }
    rearm_breakpoints(ctx, vcpu, table, paging)?;
    if ctx.stopper().attached() {
        // gdb owns the debug events: stop everything and tell it.
        ctx.stopper().report(ctx, vcpu, event);
        return Ok(0);
    }
    Ok(ctx.callbacks().debug(vcpu.index(), event.break_type as c_int, event.watch_addr))
}

/// At a stop, arm again the breakpoints the guest overwrote or remapped;
/// then release the table.
#[inline(always)]
fn rearm_breakpoints(
    ctx: &Context,
    vcpu: &Vcpu,
    table: &mut HeldTable<'_>,
    paging: Option<&PagingRegisters>,
) -> Result<()> {
    let rearmed = match ctx.debugger().has_breakpoints() {
        true => rearm_table(ctx, vcpu, table.get(), paging),
        false => Ok(()),
    };
    table.release();
    rearmed
}

/// [`rearm_breakpoints`] once the table may hold some.
#[inline(never)]
fn rearm_table(
    ctx: &Context,
    vcpu: &Vcpu,
    table: &mut BreakpointTable,
    paging: Option<&PagingRegisters>,
) -> Result<()> {
    if table.is_empty() {
        return Ok(());
    }
    let regs = match paging {
        Some(&regs) => regs,
        None => vcpu.paging_registers()?,
    };
    let mem = ctx.memory();
    // The same pages at every stop, nearly always: each breakpoint's walk is
    // remembered.
    let translate =
        |gva, remembered: &mut RememberedWalks<1>| remembered.translate(&regs, &*mem, gva).map_err(|_| Errno::FAULT);
    if table.rearm(translate, &*mem) {
        for other in ctx.vcpus() {
            other.request_debug_attention();
        }
    }
    Ok(())
}

/// Delivers the guest's own `int3` to its `#BP` handler.
fn inject_breakpoint(vcpu: &Vcpu, shape: Int3Exit) -> Result<()> {
    if matches!(shape, Int3Exit::EmulationFailure { .. }) {
        // The emulator stopped before the int3; a trap-style #BP returns
        // after it. (On VMX/SVM, KVM advances RIP by the exit's length.)
        step_past_one_byte_instruction(vcpu)?;
    }
    inject_exception(vcpu, BREAKPOINT_EXCEPTION as u8)
}

/// Delivers the guest's own `#DB`, with the DR6 it would have seen.
fn inject_debug(vcpu: &Vcpu, dr6: u64) -> Result<()> {
    let mut debugregs = vcpu.ioctl(|fd| fd.get_debug_regs())?;
    debugregs.dr6 = dr6;
    vcpu.ioctl(|fd| fd.set_debug_regs(&debugregs))?;
    inject_exception(vcpu, DEBUG_EXCEPTION as u8)
}

/// Drops an exception `vector` that KVM queued for the guest but has not
/// delivered (SVM queues a `#UD` after a failed instruction fetch).
pub(crate) fn discard_queued_exception(vcpu: &Vcpu, vector: u8) -> Result<()> {
    let mut events = vcpu.ioctl(|fd| fd.get_vcpu_events())?;
    let queued = events.exception.injected != 0 || events.exception.pending != 0;
    if queued && events.exception.nr == vector {
        events.exception.injected = 0;
        events.exception.pending = 0;
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        vcpu.ioctl(|fd| fd.set_vcpu_events(&events))?;
    }
    Ok(())
}

fn inject_exception(vcpu: &Vcpu, vector: u8) -> Result<()> {
    let mut events = vcpu.ioctl(|fd| fd.get_vcpu_events())?;
    events.exception.injected = 1;
    events.exception.pending = 0;
    events.exception.nr = vector;
    events.exception.has_error_code = 0;
    events.exception.error_code = 0;
    vcpu.ioctl(|fd| fd.set_vcpu_events(&events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulation_failure(first_bytes: &[u8]) -> InternalError {
        let mut raw = [0u8; 16];
        raw[0] = first_bytes.len() as u8;
        raw[1..1 + first_bytes.len()].copy_from_slice(first_bytes);
        let mut data = [0u64; crate::exit::INTERNAL_ERROR_DATA];
        data[0] = 1; // KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
        data[1] = u64::from_ne_bytes(raw[..8].try_into().unwrap());
        data[2] = u64::from_ne_bytes(raw[8..].try_into().unwrap());
        InternalError { suberror: 1, ndata: 4, data }
    }

    #[test]
    fn int3_as_an_emulation_failure_is_recognised_by_its_opcode() {
        assert!(emulated_int3(&emulation_failure(&[0xcc])));
        assert!(!emulated_int3(&emulation_failure(&[0x0f, 0x0b])), "ud2 is not int3");
        let without_bytes = InternalError { suberror: 1, ndata: 0, data: [0; crate::exit::INTERNAL_ERROR_DATA] };
        assert!(!emulated_int3(&without_bytes));
    }

    fn db_event(dr6: u64, pc: u64) -> DebugEvent {
        let arch = kvm_debug_exit_arch { exception: 1, pad: 0, pc, dr6, dr7: 0 };
        decode_debug_exit(&arch, &programmed_state(&[]).programming().registers())
    }

    /// A vcpu state with `registers` (number, address) programmed as DR0-3
    /// execution breakpoints.
    fn programmed_state(registers: &[(u8, u64)]) -> VcpuDebug {
        let mut state = VcpuDebug::default();
        if !registers.is_empty() {
            state.programmed.control = kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_USE_HW_BP;
        }
        for &(n, addr) in registers {
            state.programmed.arch.debugreg[n as usize] = addr;
            state.programmed.arch.debugreg[7] |= 2 << (2 * n);
        }
        state
    }

    fn hw(kind: BreakType, addr: u64) -> HardwareBreakpoint {
        let mut table = crate::debug::breakpoints::BreakpointTable::default();
        table.insert_hardware(kind, addr, 8).unwrap();
        *table.register(0).unwrap()
    }

    /// What KVM had when the vcpu entered: single-stepping or not.
    fn entered_stepping(steps: bool) -> Programming {
        let control = if steps { kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_SINGLESTEP } else { 0 };
        Programming(kvm_bindings::kvm_guest_debug { control, ..Default::default() })
    }

    #[test]
    fn a_plain_step_is_reported_as_decoding_and_judging_it_would() {
        let mut watching = programmed_state(&[(0, 0x1000)]);
        watching.programmed.control |= kvm_bindings::KVM_GUESTDBG_SINGLESTEP;
        watching.programmed.arch.debugreg[7] |= 1 << 16; // DR0: a write watchpoint
        let programmings = [entered_stepping(false), entered_stepping(true), watching.programming()];
        let step_overs = [None, Some(StepOver::Register { n: 0 }), Some(StepOver::Patch { gpa: 0x10, register: None })];
        let (mut plain, mut other) = (0, 0);
        for exception in [DEBUG_EXCEPTION, BREAKPOINT_EXCEPTION] {
            for dr6 in [0, DR6_BS, DR6_BS | 1, DR6_BS | 0b100, 1, DR6_BS | 1 << 13 | 1 << 15] {
                for entered in &programmings {
                    for (singlestep, step_over, stepping_through) in
                        step_overs.iter().flat_map(|&o| [(false, o, false), (true, o, false), (true, o, true)])
                    {
                        let state = VcpuDebug { singlestep, step_over, stepping_through, ..VcpuDebug::default() };
                        let arch = kvm_debug_exit_arch { exception, pad: 0, pc: 0x1234, dr6, dr7: 0x400 };
                        if is_bare_step(&arch) {
                            assert_eq!(decode_debug_exit(&arch, &entered.registers()), plain_step_event(&arch));
                        }
                        if !is_plain_step(&state, entered.single_steps(), &arch) {
                            other += 1;
                            continue;
                        }
                        plain += 1;
                        let mut event = decode_debug_exit(&arch, &entered.registers());
                        assert_eq!(event, plain_step_event(&arch), "{arch:?} {entered:?}");
                        let verdict = judge_debug_exception(&state, entered, &mut event, |_| None, || false);
                        assert_eq!(verdict, Verdict::Report(None), "{arch:?} {entered:?}");
                    }
                }
            }
        }
        // Only DR6 = BS (with bits no register owns) from a stepping entry
        // of a stepping VMM with no library step: 2 dr6 values x 2
        // programmings.
        assert_eq!((plain, other), (4, 2 * 6 * 3 * 9 - 4));
    }

    #[test]
    fn a_step_kvm_did_not_make_goes_back_to_the_guest() {
        let state = VcpuDebug::default();
        let mut event = db_event(DR6_BS, 0x10);
        assert_eq!(
            judge_debug_exception(&state, &entered_stepping(false), &mut event, |_| None, || false),
            Verdict::ReinjectDebug
        );
        let stepping = VcpuDebug { singlestep: true, ..state };
        assert_eq!(
            judge_debug_exception(&stepping, &entered_stepping(true), &mut event, |_| None, || false),
            Verdict::Report(None)
        );
    }

    #[test]
    fn a_late_step_of_an_earlier_programming_is_dropped_unless_the_guest_set_tf() {
        // KVM delivers a step it owed to stepping that is off by the entry.
        let mut state = VcpuDebug::default();
        state.set_programmed(entered_stepping(true).0);
        state.set_programmed(kvm_bindings::kvm_guest_debug::default());
        let mut event = db_event(DR6_BS, 0x10);
        let entered = entered_stepping(false);
        assert_eq!(judge_debug_exception(&state, &entered, &mut event, |_| None, || false), Verdict::Resume);
        assert_eq!(judge_debug_exception(&state, &entered, &mut event, |_| None, || true), Verdict::ReinjectDebug);
    }

    #[test]
    fn a_step_made_after_stepping_was_turned_off_meanwhile_is_dropped() {
        // Another thread turned stepping off between the exit and its handling.
        let state = VcpuDebug::default();
        let mut event = db_event(DR6_BS, 0x10);
        assert_eq!(
            judge_debug_exception(&state, &entered_stepping(true), &mut event, |_| None, || false),
            Verdict::Resume
        );
    }

    #[test]
    fn a_register_hit_is_ours_only_if_we_programmed_the_register() {
        let state = programmed_state(&[(0, 0x1000)]);
        let entered = state.programming();
        let decode = |dr6| {
            decode_debug_exit(
                &kvm_debug_exit_arch { exception: 1, pad: 0, pc: 0x1000, dr6, dr7: 0 },
                &entered.registers(),
            )
        };
        let mut hit0 = decode(0b0001);
        assert_eq!(
            judge_debug_exception(
                &state,
                &entered,
                &mut hit0,
                |_| Some(hw(BreakType::HardwareBreakpoint, 0x1000)),
                || false
            ),
            Verdict::Report(Some(ResumePoint { pc: 0x1000, register: Some(0), patch_at_stop: false }))
        );
        // DR2 was never programmed: the guest's own #DB.
        let mut hit2 = db_event(0b0100, 0x1000);
        assert_eq!(judge_debug_exception(&state, &entered, &mut hit2, |_| None, || false), Verdict::ReinjectDebug);
    }

    #[test]
    fn a_watchpoint_reports_the_type_the_vmm_inserted() {
        let state = programmed_state(&[(0, 0x2000)]);
        let entered = state.programming();
        let mut event = decode_debug_exit(
            &kvm_debug_exit_arch { exception: 1, pad: 0, pc: 0x1004, dr6: 1, dr7: 0 },
            &entered.registers(),
        );
        let verdict =
            judge_debug_exception(&state, &entered, &mut event, |_| Some(hw(BreakType::WatchRead, 0x2000)), || false);
        assert_eq!((verdict, event.break_type), (Verdict::Report(None), BreakType::WatchRead));
    }

    #[test]
    fn a_breakpoint_removed_since_it_was_programmed_is_ignored() {
        let state = programmed_state(&[(1, 0x3000)]);
        let entered = state.programming();
        let mut event = decode_debug_exit(
            &kvm_debug_exit_arch { exception: 1, pad: 0, pc: 0x3000, dr6: 0b10, dr7: 0 },
            &entered.registers(),
        );
        assert_eq!(judge_debug_exception(&state, &entered, &mut event, |_| None, || false), Verdict::Resume);
        // ... unless the VMM's own request still uses that register.
        let mut requested = state;
        requested.request = state.programmed;
        assert_eq!(judge_debug_exception(&requested, &entered, &mut event, |_| None, || false), Verdict::Report(None));
        // A register taken away by another thread after the vcpu entered
        // with it: still ours, not the guest's.
        let now = programmed_state(&[]);
        assert_eq!(judge_debug_exception(&now, &entered, &mut event, |_| None, || false), Verdict::Resume);
    }
}
