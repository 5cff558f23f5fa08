//! Decoding `kvm_debug_exit_arch` into what happened: the patch we start
//! from left this as `/* TODO: fully process run->debug.arch */`.

use kvm_bindings::kvm_debug_exit_arch;

use super::debugregs::{Condition, Dr7};
use super::BreakType;

/// `#DB`, the debug exception.
pub(crate) const DEBUG_EXCEPTION: u32 = 1;
/// `#BP`, the breakpoint exception (`int3`).
pub(crate) const BREAKPOINT_EXCEPTION: u32 = 3;

/// DR6.B0-B3: which debug register's condition was met.
pub(crate) const DR6_HIT_MASK: u64 = 0xf;
/// DR6.BS: the exception is a single step.
pub(crate) const DR6_BS: u64 = 1 << 14;

/// What caused a debug exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugCause {
    /// `#BP`: an `int3` at `pc`.
    Int3,
    /// `#DB` because debug register `n` (0-3), enabled in DR7, matched.
    Register(u8),
    /// `#DB` with DR6.BS: a single step.
    SingleStep,
    /// A guest access to a page the library protects for a watchpoint
    /// (not an exception: an MMIO exit).
    Page,
    /// A `#DB` for a reason the debugger does not program (task switch,
    /// DR access, a Bn of a disabled register), or an unexpected exception.
    Other,
}

/// A decoded debug exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugEvent {
    /// The cause.
    pub cause: DebugCause,
    /// The `KVM_GDB_*` type the cause reports as.
    pub break_type: BreakType,
    /// Address of the instruction (linear), as KVM reported it.
    pub pc: u64,
    /// For a watchpoint: the address programmed in the register that hit.
    pub watch_addr: u64,
    /// For a watchpoint: the watched length in bytes.
    pub watch_len: u64,
    /// The raw exception, DR6 and DR7.
    pub exception: u32,
    /// DR6 as reported.
    pub dr6: u64,
    /// DR7 as reported.
    pub dr7: u64,
}

impl DebugEvent {
    /// An `int3` at `pc`, as [`decode_debug_exit`] decodes `#BP` whatever
    /// was programmed.
    pub fn int3(pc: u64) -> DebugEvent {
        DebugEvent {
            cause: DebugCause::Int3,
            break_type: BreakType::SoftwareBreakpoint,
            pc,
            watch_addr: 0,
            watch_len: 0,
            exception: BREAKPOINT_EXCEPTION,
            dr6: 0,
            dr7: 0,
        }
    }

    /// A single step that ended at `pc`.
    pub fn single_step(pc: u64) -> DebugEvent {
        DebugEvent {
            cause: DebugCause::SingleStep,
            break_type: BreakType::SingleStep,
            pc,
            watch_addr: 0,
            watch_len: 0,
            exception: DEBUG_EXCEPTION,
            dr6: DR6_BS,
            dr7: 0,
        }
    }
}

/// The debug registers as the library last programmed them for a vcpu.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgrammedRegisters {
    /// DR0-DR3 (the exit reports only DR6 and DR7).
    pub addresses: [u64; 4],
    /// DR7.
    pub dr7: u64,
}

/// Decodes a debug exit against the debug registers last programmed for the
/// vcpu: the programmed DR7 tells what each register was for. The exit's
/// own DR7 is used only when nothing was programmed: the kernel's
/// instruction emulator does not set it, and it then holds whatever the
/// previous exit left in `kvm_run` (instruction bytes, seen on PVM).
///
/// An enabled data breakpoint that hit takes precedence over DR6.BS: a data
/// watchpoint can trigger on the very instruction being single-stepped,
/// and the watchpoint is the news. A step onto an execution breakpoint is
/// a step (the breakpoint faults when the vcpu resumes). Of several
/// registers that hit, the lowest data breakpoint wins, then the lowest
/// execution one. Reserved DR6 bits are ignored.
pub fn decode_debug_exit(arch: &kvm_debug_exit_arch, programmed: &ProgrammedRegisters) -> DebugEvent {
    let dr7 = Dr7(if programmed.dr7 != 0 || arch.dr7 == 0 { programmed.dr7 } else { arch.dr7 });
    let addresses = &programmed.addresses;
    let cause = match arch.exception {
        BREAKPOINT_EXCEPTION => DebugCause::Int3,
        DEBUG_EXCEPTION => {
            let hits = arch.dr6 & DR6_HIT_MASK;
            let stepped = arch.dr6 & DR6_BS != 0;
            let hit = |n: u8| hits & (1 << n) != 0 && dr7.enabled(n);
            // A data breakpoint (a trap after the access) first: an
            // execution breakpoint at the next instruction faults again.
            let data = (0..4u8).find(|&n| hit(n) && dr7.condition(n) != Condition::Execute);
            match data.or_else(|| (0..4u8).find(|&n| hit(n))) {
                // A step onto an execution breakpoint: the step is the event;
                // the breakpoint faults when the vcpu resumes there.
                Some(n) if stepped && dr7.condition(n) == Condition::Execute => DebugCause::SingleStep,
                Some(n) => DebugCause::Register(n),
                None if arch.dr6 & DR6_BS != 0 => DebugCause::SingleStep,
                None => DebugCause::Other,
            }
        }
        _ => DebugCause::Other,
    };
    let (break_type, watch_addr, watch_len) = match cause {
        DebugCause::Int3 => (BreakType::SoftwareBreakpoint, 0, 0),
        DebugCause::SingleStep => (BreakType::SingleStep, 0, 0),
        DebugCause::Other | DebugCause::Page => (BreakType::HardwareBreakpoint, 0, 0),
        DebugCause::Register(n) => match dr7.condition(n) {
            Condition::Execute => (BreakType::HardwareBreakpoint, 0, 0),
            Condition::Write => (BreakType::WatchWrite, addresses[n as usize], dr7.len(n)),
            Condition::ReadWrite | Condition::Io => (BreakType::WatchAccess, addresses[n as usize], dr7.len(n)),
        },
    };
    DebugEvent {
        cause,
        break_type,
        pc: arch.pc,
        watch_addr,
        watch_len,
        exception: arch.exception,
        dr6: arch.dr6,
        dr7: arch.dr7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRS: [u64; 4] = [0x1000, 0x2000, 0x3008, 0x4004];
    const NOTHING_PROGRAMMED: ProgrammedRegisters = ProgrammedRegisters { addresses: ADDRS, dr7: 0 };
    /// DR6 as hardware reports it with nothing hit: reserved bits read as 1.
    const DR6_FIXED: u64 = 0xffff_0ff0;

    fn db(dr6: u64, dr7: u64) -> DebugEvent {
        decode_debug_exit(&kvm_debug_exit_arch { exception: 1, pad: 0, pc: 0x10_0000, dr6, dr7 }, &NOTHING_PROGRAMMED)
    }

    /// DR7 with register n enabled (global) with R/W `rw` and LEN `len` bits.
    fn dr7_slot(n: u8, rw: u64, len: u64) -> u64 {
        0x400 | (2 << (2 * n)) | (rw << (16 + 4 * n)) | (len << (18 + 4 * n))
    }

    #[test]
    fn int3_is_a_software_breakpoint_at_pc() {
        let e = decode_debug_exit(
            &kvm_debug_exit_arch { exception: 3, pad: 0, pc: 0x10_0004, dr6: 0, dr7: 0 },
            &NOTHING_PROGRAMMED,
        );
        assert_eq!(
            (e.cause, e.break_type, e.pc, e.watch_addr),
            (DebugCause::Int3, BreakType::SoftwareBreakpoint, 0x10_0004, 0)
        );
    }

    #[test]
    fn an_int3_event_is_what_decoding_bp_gives_whatever_was_programmed() {
        let watching = ProgrammedRegisters { addresses: ADDRS, dr7: dr7_slot(0, 1, 3) | dr7_slot(2, 0, 0) };
        for programmed in [NOTHING_PROGRAMMED, watching] {
            let arch = kvm_debug_exit_arch { exception: 3, pad: 0, pc: 0x10_0004, dr6: 0, dr7: 0 };
            assert_eq!(decode_debug_exit(&arch, &programmed), DebugEvent::int3(0x10_0004));
        }
    }

    #[test]
    fn bs_alone_is_a_single_step() {
        let e = db(DR6_FIXED | DR6_BS, 0x400);
        assert_eq!((e.cause, e.break_type, e.watch_addr), (DebugCause::SingleStep, BreakType::SingleStep, 0));
    }

    #[test]
    fn each_register_alone_names_itself() {
        for n in 0..4u8 {
            let e = db(DR6_FIXED | 1 << n, dr7_slot(n, 0, 0));
            assert_eq!((e.cause, e.break_type), (DebugCause::Register(n), BreakType::HardwareBreakpoint), "DR{n}");
        }
    }

    #[test]
    fn execute_breakpoint_reports_no_watch_address() {
        let e = db(1 << 1, dr7_slot(1, 0, 0));
        assert_eq!((e.watch_addr, e.watch_len), (0, 0));
    }

    #[test]
    fn rw_encodings_give_write_and_access_watchpoints_with_the_programmed_address() {
        let w = db(1 << 2, dr7_slot(2, 0b01, 0b10));
        assert_eq!((w.break_type, w.watch_addr, w.watch_len), (BreakType::WatchWrite, 0x3008, 8));
        let a = db(1 << 3, dr7_slot(3, 0b11, 0b11));
        assert_eq!((a.break_type, a.watch_addr, a.watch_len), (BreakType::WatchAccess, 0x4004, 4));
        let io = db(1 << 0, dr7_slot(0, 0b10, 0b00));
        assert_eq!(io.break_type, BreakType::WatchAccess, "I/O breakpoints report as access");
    }

    #[test]
    fn len_encodings_decode_to_1_2_8_4_bytes() {
        for (bits, len) in [(0b00, 1), (0b01, 2), (0b10, 8), (0b11, 4)] {
            assert_eq!(db(1, dr7_slot(0, 0b01, bits)).watch_len, len, "LEN bits {bits:02b}");
        }
    }

    #[test]
    fn several_hits_report_the_lowest_enabled_register() {
        let dr7 = dr7_slot(1, 0b01, 0b11) | dr7_slot(3, 0, 0);
        let e = db(0b1010, dr7);
        assert_eq!((e.cause, e.break_type, e.watch_addr), (DebugCause::Register(1), BreakType::WatchWrite, 0x2000));
    }

    #[test]
    fn hits_of_disabled_registers_are_ignored() {
        // B0 set but only DR2 enabled: Intel sets Bn for matching but disabled registers.
        assert_eq!(db(DR6_FIXED | 0b0001, dr7_slot(2, 0, 0)).cause, DebugCause::Other);
        assert_eq!(db(DR6_FIXED | 0b0001 | DR6_BS, dr7_slot(2, 0, 0)).cause, DebugCause::SingleStep);
    }

    #[test]
    fn register_hit_wins_over_bs() {
        let e = db(DR6_BS | 1 << 2, dr7_slot(2, 0b01, 0b00));
        assert_eq!((e.cause, e.break_type), (DebugCause::Register(2), BreakType::WatchWrite));
    }

    #[test]
    fn a_step_onto_an_execution_breakpoint_is_a_step() {
        // SVM under QEMU reports DR6 = BS | B0 after a step onto DR0's address.
        let e = db(DR6_BS | 1, dr7_slot(0, 0b00, 0b00));
        assert_eq!((e.cause, e.break_type), (DebugCause::SingleStep, BreakType::SingleStep));
    }

    #[test]
    fn a_data_hit_wins_over_an_execution_hit_in_a_lower_register() {
        // A store's trap and the next instruction's breakpoint in one #DB:
        // the store first; the breakpoint faults again on resume.
        let dr7 = dr7_slot(0, 0b00, 0b00) | dr7_slot(1, 0b01, 0b11);
        let e = db(0b11, dr7);
        assert_eq!((e.cause, e.break_type), (DebugCause::Register(1), BreakType::WatchWrite));
    }

    #[test]
    fn local_enable_counts_as_enabled() {
        let dr7 = 0x400 | (1 << 2) | (0b01 << 20); // L1, write, len 1
        assert_eq!(db(0b10, dr7).break_type, BreakType::WatchWrite);
    }

    #[test]
    fn reserved_dr6_bits_alone_are_not_a_cause() {
        let e = db(DR6_FIXED | 1 << 13 | 1 << 15, 0xffff_ffff_0000_0400);
        assert_eq!((e.cause, e.break_type), (DebugCause::Other, BreakType::HardwareBreakpoint));
    }

    #[test]
    fn raw_fields_are_kept() {
        let e = db(0x4ff0, 0x400);
        assert_eq!((e.exception, e.dr6, e.dr7, e.pc), (1, 0x4ff0, 0x400, 0x10_0000));
    }

    #[test]
    fn exit_without_dr7_is_decoded_with_the_programmed_dr7() {
        // Measured on an emulating host: a DR0 execution breakpoint arrives as
        // exception 1, DR6 = 0xffff0ff1, DR7 = 0. Here DR0 was programmed as a
        // write watchpoint, to show that the type comes from the programmed DR7.
        let programmed = ProgrammedRegisters { addresses: ADDRS, dr7: dr7_slot(0, 0b01, 0b11) };
        let arch = kvm_debug_exit_arch { exception: 1, pad: 0, pc: 0x10005, dr6: 0xffff_0ff1, dr7: 0 };
        let e = decode_debug_exit(&arch, &programmed);
        assert_eq!(
            (e.cause, e.break_type, e.watch_addr, e.watch_len),
            (DebugCause::Register(0), BreakType::WatchWrite, 0x1000, 4)
        );
        assert_eq!(e.dr7, 0, "the raw DR7 is kept as reported");
        // Measured there too: after an emulation failure, the exit's DR7
        // holds that exit's instruction bytes. The programmed DR7 wins.
        let arch = kvm_debug_exit_arch { dr7: 0x0010_0000_2504_8948, ..arch };
        assert_eq!(decode_debug_exit(&arch, &programmed).break_type, BreakType::WatchWrite);
        // With nothing programmed, the reported DR7 is all there is.
        let arch = kvm_debug_exit_arch { dr7: dr7_slot(0, 0b01, 0b11), ..arch };
        assert_eq!(decode_debug_exit(&arch, &NOTHING_PROGRAMMED).cause, DebugCause::Register(0));
    }

    #[test]
    fn unknown_exceptions_are_other() {
        let e = decode_debug_exit(
            &kvm_debug_exit_arch { exception: 6, pad: 0, pc: 0, dr6: DR6_BS, dr7: 0 },
            &NOTHING_PROGRAMMED,
        );
        assert_eq!(e.cause, DebugCause::Other);
    }
}
