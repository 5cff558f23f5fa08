//! What one vcpu's debugging looks like: the VMM's own request, the
//! library's single-step, a step over a breakpoint in progress, and the
//! `KVM_SET_GUEST_DEBUG` state that follows from them and the breakpoint
//! table.

use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    KVM_GUESTDBG_USE_SW_BP,
};

use super::debugregs::{encode, Condition, DebugRegisterSlot, Dr7, DEBUG_REGISTERS};
use super::decode::{DebugEvent, ProgrammedRegisters};
use super::pagewalk::RememberedWalks;
use super::trap_flag::TrapFlagAcrossStep;

/// Where a vcpu stopped on a library breakpoint: when it resumes there, it
/// first steps over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// Linear address of the breakpoint.
    pub pc: u64,
    /// The debug register that stopped it, for an execution breakpoint.
    pub register: Option<u8>,
    /// For a stop by a debug register: a software breakpoint was at the
    /// address then, and reports next (its `int3` has not run yet).
    pub patch_at_stop: bool,
}

/// A single step the library takes on its own to get past a breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOver {
    /// The original byte is back at `gpa` until the step completes.
    Patch {
        /// The guest-physical address of the breakpoint.
        gpa: u64,
        /// An execution breakpoint at the same address, already reported
        /// on this arrival, off for the step too.
        register: Option<u8>,
    },
    /// Debug register `n` is off until the step completes.
    Register {
        /// The debug register.
        n: u8,
    },
}

impl StepOver {
    /// The debug register that is off for the step.
    pub fn register(&self) -> Option<u8> {
        match *self {
            StepOver::Patch { register, .. } => register,
            StepOver::Register { n } => Some(n),
        }
    }
}

/// A `KVM_SET_GUEST_DEBUG` state as KVM was given it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Programming(pub kvm_guest_debug);

impl Programming {
    /// The debug registers, for decoding.
    pub fn registers(&self) -> ProgrammedRegisters {
        let mut addresses = [0; DEBUG_REGISTERS];
        addresses.copy_from_slice(&self.0.arch.debugreg[..DEBUG_REGISTERS]);
        let dr7 = if self.0.control & KVM_GUESTDBG_USE_HW_BP != 0 { self.0.arch.debugreg[7] } else { 0 };
        ProgrammedRegisters { addresses, dr7 }
    }

    /// True when debug register `n` was enabled.
    pub fn register_enabled(&self, n: u8) -> bool {
        self.0.control & KVM_GUESTDBG_USE_HW_BP != 0 && Dr7(self.0.arch.debugreg[7]).enabled(n)
    }

    /// True when KVM single-stepped the vcpu.
    pub fn single_steps(&self) -> bool {
        self.0.control & KVM_GUESTDBG_SINGLESTEP != 0
    }
}

/// How many earlier programmings a vcpu remembers: an exit is decoded
/// against the one the vcpu entered with, which other threads may have
/// changed (with the vcpu out of the guest) before the exit is handled.
const REMEMBERED_PROGRAMMINGS: usize = 8;

/// The remembered walk of a vcpu's code page.
pub type CodePage = RememberedWalks<1>;

/// The debugging state of one vcpu.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuDebug {
    /// What the VMM asked for with `kvm_guest_debug`/`kvm_set_guest_debug`.
    pub request: kvm_guest_debug,
    /// `kvm_set_singlestep`.
    pub singlestep: bool,
    /// What KVM was last given.
    pub programmed: kvm_guest_debug,
    /// Counts the changes of `programmed`.
    pub generation: u64,
    /// Earlier values of `programmed`, each with its generation.
    pub(crate) earlier: [(u64, kvm_guest_debug); REMEMBERED_PROGRAMMINGS],
    /// Set when the vcpu was stopped on a library breakpoint.
    pub resume: Option<ResumePoint>,
    /// Set while stepping over a breakpoint.
    pub step_over: Option<StepOver>,
    /// The guest's own trap flag across the step over a breakpoint (see
    /// [`super::trap_flag`]).
    pub trap_flag: Option<TrapFlagAcrossStep>,
    /// The guest's TF is to be set again at the next entry.
    pub restore_trap_flag: bool,
    /// KVM dropped a single step it was given (and the trap flag it set):
    /// the next entry gives it again.
    pub single_step_lost: bool,
    /// Set while stepping through an instruction that made no progress on
    /// a protected page (see [`super::progress`]).
    pub stepping_through: bool,
    /// The last debug event reported to the VMM.
    pub last_event: Option<DebugEvent>,
    /// The walk of RIP's page when it was last looked at (the `hlt`
    /// probe, the trap-flag decoder, a step over a breakpoint).
    pub code_page: CodePage,
    /// The VMM's single step that entered without a look at its
    /// instruction, on a host whose steps skip halts: the linear PC and the
    /// vcpu's state epoch at the entry (or at the exit of the step before,
    /// where that left the entry nothing to do: `exits::note_steady_step`).
    /// Its exit looks whether it was a `hlt` (see `exits::before_entry`).
    pub halt_check: Option<(u64, u64)>,
}

impl VcpuDebug {
    /// True when the VMM wants single steps reported.
    pub fn stepping(&self) -> bool {
        self.singlestep || self.request.control & KVM_GUESTDBG_SINGLESTEP != 0
    }

    /// True when the next entry has work besides giving KVM the debug
    /// state: a step over a breakpoint to start, or the guest's trap flag
    /// to give back (see `exits::before_entry`).
    pub fn entry_has_work(&self) -> bool {
        self.resume.is_some() || self.restore_trap_flag
    }

    /// True when the VMM itself turned on software breakpoints (the original
    /// patch's mode: every `#BP` is the VMM's).
    pub fn passes_int3_through(&self) -> bool {
        self.request.control & KVM_GUESTDBG_USE_SW_BP != 0
    }

    /// Records that KVM now has `debug`; returns the new generation.
    pub fn set_programmed(&mut self, debug: kvm_guest_debug) -> u64 {
        self.earlier[self.generation as usize % REMEMBERED_PROGRAMMINGS] = (self.generation, self.programmed);
        self.generation += 1;
        self.programmed = debug;
        self.generation
    }

    /// What KVM had at generation `generation`; `None` when it changed so
    /// often since that it is forgotten.
    pub fn programming_at(&self, generation: u64) -> Option<Programming> {
        self.programmed_at(generation).copied().map(Programming)
    }

    /// True when KVM single-stepped at generation `generation` (false when
    /// that is forgotten): [`VcpuDebug::programming_at`] without the copy.
    pub fn single_stepped_at(&self, generation: u64) -> bool {
        self.programmed_at(generation).is_some_and(|debug| debug.control & KVM_GUESTDBG_SINGLESTEP != 0)
    }

    /// What KVM had at generation `generation`, where it is remembered.
    fn programmed_at(&self, generation: u64) -> Option<&kvm_guest_debug> {
        if generation == self.generation {
            return Some(&self.programmed);
        }
        let (at, debug) = &self.earlier[generation as usize % REMEMBERED_PROGRAMMINGS];
        (*at == generation && generation < self.generation).then_some(debug)
    }

    /// True when KVM had debug register `n` enabled now or in any of the
    /// remembered earlier programmings.
    pub fn recently_programmed_register(&self, n: u8) -> bool {
        self.programmed_register(n) || self.earlier.iter().any(|&(_, debug)| Programming(debug).register_enabled(n))
    }

    /// True when KVM single-steps now or did in any remembered programming.
    pub fn recently_single_stepped(&self) -> bool {
        self.programming().single_steps() || self.earlier.iter().any(|&(_, debug)| Programming(debug).single_steps())
    }

    /// What KVM has now.
    pub fn programming(&self) -> Programming {
        Programming(self.programmed)
    }

    /// True when debug register `n` is enabled in what KVM has now.
    pub fn programmed_register(&self, n: u8) -> bool {
        self.programming().register_enabled(n)
    }

    /// True when the VMM's own request enabled debug register `n`.
    pub fn requested_register(&self, n: u8) -> bool {
        self.request.control & KVM_GUESTDBG_USE_HW_BP != 0 && Dr7(self.request.arch.debugreg[7]).enabled(n)
    }
}

/// The library's part of a vcpu's debug state.
#[derive(Clone, Copy, Debug, Default)]
pub struct LibraryDebug {
    /// The breakpoint table's debug registers.
    pub slots: [Option<DebugRegisterSlot>; DEBUG_REGISTERS],
    /// The table has `int3` patches.
    pub patches: bool,
}

/// The `KVM_SET_GUEST_DEBUG` state for `state` and the library's
/// breakpoints: the union of the VMM's request and the library's needs,
/// the library's registers taking precedence where both use one.
/// `blockirq` says whether the host offers `KVM_GUESTDBG_BLOCKIRQ`.
pub fn effective_debug(state: &VcpuDebug, library: &LibraryDebug, blockirq: bool) -> kvm_guest_debug {
    let request = &state.request;
    let mut control = request.control & !(KVM_GUESTDBG_USE_HW_BP);
    if library.patches {
        control |= KVM_GUESTDBG_USE_SW_BP;
    }
    let library_step = state.step_over.is_some() || state.stepping_through;
    if state.stepping() || library_step {
        control |= KVM_GUESTDBG_SINGLESTEP;
        if library_step && blockirq {
            control |= KVM_GUESTDBG_BLOCKIRQ;
        }
    }

    let mut debug = kvm_guest_debug::default();
    // Nearly always (software breakpoints, steps), no register is used.
    if request.control & KVM_GUESTDBG_USE_HW_BP != 0 || library.slots.iter().any(Option::is_some) {
        let slots = register_slots(state, library);
        if slots.iter().any(Option::is_some) {
            control |= KVM_GUESTDBG_USE_HW_BP;
            let (addrs, dr7) = encode(&slots);
            debug.arch.debugreg[..DEBUG_REGISTERS].copy_from_slice(&addrs);
            debug.arch.debugreg[7] = dr7;
        }
    }
    if control != 0 {
        control |= KVM_GUESTDBG_ENABLE;
    }
    debug.control = control;
    debug
}

/// The debug registers of [`effective_debug`]: the library's, but the one
/// a step over a breakpoint turned off, and the VMM's requested ones where
/// the library leaves a register free.
fn register_slots(state: &VcpuDebug, library: &LibraryDebug) -> [Option<DebugRegisterSlot>; DEBUG_REGISTERS] {
    let request = &state.request;
    let mut slots = library.slots;
    let stepped_over = state.step_over.and_then(|step| step.register());
    if let Some(n) = stepped_over {
        slots[n as usize] = None;
    }
    let requested = Dr7(request.arch.debugreg[7]);
    for (n, slot) in slots.iter_mut().enumerate() {
        if slot.is_none() && stepped_over != Some(n as u8) && state.requested_register(n as u8) {
            *slot = Some(DebugRegisterSlot {
                addr: request.arch.debugreg[n],
                condition: requested.condition(n as u8),
                len: if requested.condition(n as u8) == Condition::Execute { 1 } else { requested.len(n as u8) },
            });
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(addr: u64) -> Option<DebugRegisterSlot> {
        Some(DebugRegisterSlot { addr, condition: Condition::Execute, len: 1 })
    }

    #[test]
    fn earlier_programmings_are_remembered_by_generation() {
        let mut state = VcpuDebug::default();
        let step = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, ..Default::default() };
        let entered = state.set_programmed(step);
        let off = state.set_programmed(kvm_guest_debug::default());
        assert!(state.programming_at(entered).unwrap().single_steps(), "the vcpu entered stepping");
        assert!(state.single_stepped_at(entered));
        assert!(!state.programming_at(off).unwrap().single_steps());
        assert!(!state.single_stepped_at(off));
        for _ in 0..REMEMBERED_PROGRAMMINGS {
            state.set_programmed(step);
        }
        assert_eq!(state.programming_at(entered), None, "forgotten, not mistaken");
        assert!(!state.single_stepped_at(entered), "forgotten, not mistaken");
        assert_eq!(state.programming_at(state.generation + 1), None);
    }

    #[test]
    fn nothing_asked_means_debugging_off() {
        let d = effective_debug(&VcpuDebug::default(), &LibraryDebug::default(), true);
        assert_eq!(d.control, 0);
        assert_eq!(d.arch.debugreg, [0; 8]);
    }

    #[test]
    fn patches_turn_on_software_breakpoints() {
        let lib = LibraryDebug { patches: true, ..Default::default() };
        assert_eq!(
            effective_debug(&VcpuDebug::default(), &lib, true).control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP
        );
    }

    #[test]
    fn step_over_single_steps_with_interrupts_blocked_where_offered() {
        let state = VcpuDebug { step_over: Some(StepOver::Patch { gpa: 0x10, register: None }), ..Default::default() };
        let lib = LibraryDebug { patches: true, ..Default::default() };
        let with = effective_debug(&state, &lib, true).control;
        assert_eq!(
            with & (KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_BLOCKIRQ),
            KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_BLOCKIRQ
        );
        let without = effective_debug(&state, &lib, false).control;
        assert_eq!(without & KVM_GUESTDBG_BLOCKIRQ, 0);
        let user = VcpuDebug { singlestep: true, ..Default::default() };
        assert_eq!(
            effective_debug(&user, &lib, true).control & KVM_GUESTDBG_BLOCKIRQ,
            0,
            "only our own step blocks interrupts"
        );
    }

    #[test]
    fn stepping_over_a_register_breakpoint_disables_only_that_register() {
        let lib = LibraryDebug { slots: [exec(0x1000), exec(0x2000), None, None], patches: false };
        let state = VcpuDebug { step_over: Some(StepOver::Register { n: 1 }), ..Default::default() };
        let d = effective_debug(&state, &lib, true);
        let dr7 = Dr7(d.arch.debugreg[7]);
        assert!(dr7.enabled(0) && !dr7.enabled(1));
        assert_eq!(d.control & KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_HW_BP);
    }

    #[test]
    fn request_registers_fill_the_ones_the_library_does_not_use() {
        let mut state = VcpuDebug::default();
        state.request.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
        state.request.arch.debugreg[0] = 0xaaa;
        state.request.arch.debugreg[2] = 0xccc;
        state.request.arch.debugreg[7] = 2 | (2 << 4) | (1 << 24) | (3 << 26); // DR0 exec, DR2 write len 4
        let lib = LibraryDebug { slots: [exec(0x1000), None, None, None], patches: false };
        let d = effective_debug(&state, &lib, true);
        assert_eq!(d.arch.debugreg[0], 0x1000, "the library's register wins");
        assert_eq!(d.arch.debugreg[2], 0xccc);
        let dr7 = Dr7(d.arch.debugreg[7]);
        assert_eq!((dr7.condition(2), dr7.len(2)), (Condition::Write, 4));
    }

    #[test]
    fn the_vmm_request_passes_through_alone() {
        let mut state = VcpuDebug::default();
        state.request.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_SINGLESTEP;
        let d = effective_debug(&state, &LibraryDebug::default(), true);
        assert_eq!(d.control, state.request.control);
        state.request.control = KVM_GUESTDBG_ENABLE;
        assert_eq!(effective_debug(&state, &LibraryDebug::default(), true).control, KVM_GUESTDBG_ENABLE);
    }
}
