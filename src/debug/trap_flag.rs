//! The guest's own trap flag across a single step the library takes to get
//! past a breakpoint.
//!
//! While KVM single-steps a vcpu it hides the guest's TF from userspace,
//! takes the guest's single-step trap as its own, and clears TF when
//! single-stepping is turned off again. So before the step the library
//! notes the guest's flag and what the stepped instruction does to it
//! (`popf` and `iret` load it from the stack), and afterwards gives the
//! guest back its flag and the trap the instruction owed it.

use super::breakpoints::{BreakpointTable, INT3};
use super::exits::CodeAt;
use super::pagewalk::PagingRegisters;
use super::HeldTable;
use crate::context::Context;
use crate::error::Result;
use crate::vcpu::exit_registers::StopRegisters;
use crate::vcpu::Vcpu;

/// RFLAGS.TF.
pub(crate) const TRAP_FLAG: u64 = 1 << 8;

/// What the guest's trap flag does across one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapFlagAcrossStep {
    /// TF was set as the instruction began: the guest is owed a `#DB` after it.
    pub owed_trap: bool,
    /// TF once the instruction is done.
    pub after: bool,
    /// The stack before it, to find a frame the instruction pushed.
    pub stack: StackBefore,
}

/// The stack before a single-stepped instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackBefore {
    /// Linear stack pointer.
    sp: u64,
    /// RFLAGS.
    rflags: u64,
    /// The CS selector.
    cs: u16,
    /// Stack slot width: 8 in 64-bit mode, 4 in protected mode, 2 in real mode.
    width: u64,
}

impl StackBefore {
    /// `vcpu`'s stack now.
    pub fn of(vcpu: &Vcpu) -> Result<StackBefore> {
        vcpu.read_stop_registers(StackBefore::from_registers)
    }

    fn from_registers(registers: &StopRegisters) -> StackBefore {
        let width = match (registers.paging.cr0 & 1 != 0, registers.cs.l != 0) {
            (_, true) => 8,
            (true, false) => 4,
            (false, false) => 2,
        };
        let sp = registers.ss.base.wrapping_add(registers.rsp);
        StackBefore { sp, rflags: registers.rflags, cs: registers.cs.selector, width }
    }
}

/// When a single-stepped instruction delivered an interrupt or exception
/// (an `int3`, a fault), the RFLAGS it pushed carry the trap flag of the
/// library's step: clear it there, or the guest single-steps itself after
/// its `iret`. Nothing to do when the guest had TF set itself.
pub(crate) fn clear_leaked(ctx: &Context, vcpu: &Vcpu, before: &StackBefore, table: &mut HeldTable<'_>) -> Result<()> {
    if before.rflags & TRAP_FLAG != 0 {
        return Ok(());
    }
    let (sp, paging) =
        vcpu.read_stop_registers(|registers| (registers.ss.base.wrapping_add(registers.rsp), registers.paging))?;
    if sp >= before.sp || before.sp - sp > 8 * before.width {
        return Ok(());
    }
    let w = before.width as usize;
    let mut frame = [0u8; 64];
    // The frame is IP, CS, FLAGS, with an error code below them for some
    // exceptions: four slots, or three where the stack's mapping ends
    // after them. Nothing readable: nothing was pushed, the instruction
    // only moved RSP (say, onto a page the guest maps when it faults).
    let table = table.get();
    let slots =
        [4, 3].into_iter().find(|&n| ctx.read_guest_virt_showing(&paging, sp, &mut frame[..n * w], table).is_ok());
    let Some(slots) = slots else { return Ok(()) };
    let slot = |i: usize| frame[i * w..(i + 1) * w].iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
    for flags_slot in 2..slots {
        let flags = slot(flags_slot);
        if slot(flags_slot - 1) as u16 == before.cs && flags & TRAP_FLAG != 0 && flags & 2 != 0 {
            let cleared = (flags & !TRAP_FLAG).to_le_bytes();
            return ctx.write_guest_virt_keeping(&paging, sp + (flags_slot * w) as u64, &cleared[..w], table);
        }
    }
    Ok(())
}

/// How the instruction at a vcpu's RIP changes TF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// TF stays.
    Keeps,
    /// `popf`: TF from the word at the stack pointer.
    Popf,
    /// `iret`: TF from the flags slot of the frame, two operands up the stack.
    Iret {
        /// Bytes per frame slot.
        operand: u64,
    },
}

/// A segment, address-size, `lock` or `rep` prefix: one that changes
/// neither the opcode nor (unlike 0x66 and REX) the operand size.
pub(crate) fn is_legacy_prefix(byte: u8) -> bool {
    matches!(byte, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67 | 0xf0 | 0xf2 | 0xf3)
}

/// True when an instruction starting with `first` may load TF: `popf`,
/// `iret`, or a prefix that may come before them. Any other first byte
/// keeps TF, whatever follows.
fn may_load_trap_flag(first: u8, long: bool) -> bool {
    matches!(first, 0x66 | 0x9d | 0xcf) || is_legacy_prefix(first) || (long && first & 0xf0 == 0x40)
}

/// Decodes the few instructions that load TF, from their leading `bytes`,
/// in a code segment of `default_operand` bytes (2, 4; 4 in 64-bit mode,
/// where `long` is set).
fn effect_of(bytes: &[u8], default_operand: u64, long: bool) -> Effect {
    let mut operand = default_operand;
    for &byte in bytes {
        match byte {
            0x66 => operand = if default_operand == 2 { 4 } else { 2 },
            _ if is_legacy_prefix(byte) => {}
            0x40..=0x4f if long => {
                if byte & 0x08 != 0 {
                    operand = 8;
                }
            }
            0x9d => return Effect::Popf,
            0xcf => return Effect::Iret { operand },
            _ => return Effect::Keeps,
        }
    }
    Effect::Keeps
}

/// What [`before_step`] needs of the vcpu's registers, taken from the read
/// that finds the instruction at RIP (one read for both).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegistersBeforeStep {
    trap_flag: bool,
    long: bool,
    default_operand: u64,
    /// The linear address of the top of the stack.
    stack: u64,
    stack_before: StackBefore,
    paging: PagingRegisters,
}

impl RegistersBeforeStep {
    /// Taken from the vcpu's general and segment registers.
    pub(crate) fn of(registers: &StopRegisters) -> RegistersBeforeStep {
        let long = registers.cs.l != 0;
        RegistersBeforeStep {
            trap_flag: registers.rflags & TRAP_FLAG != 0,
            long,
            default_operand: if long || registers.cs.db != 0 { 4 } else { 2 },
            stack: if long { registers.rsp } else { registers.ss.base.wrapping_add(registers.rsp & 0xffff_ffff) },
            stack_before: StackBefore::from_registers(registers),
            paging: registers.paging,
        }
    }

    /// The paging registers.
    pub(crate) fn paging(&self) -> PagingRegisters {
        self.paging
    }
}

/// The guest's trap flag before the instruction at RIP, and after it. Only
/// meaningful while KVM does not single-step the vcpu (it hides TF then).
/// `code` is the instruction at RIP, `registers` the vcpu's as it is there.
pub(crate) fn before_step(
    ctx: &Context,
    code: &CodeAt,
    registers: &RegistersBeforeStep,
    table: &BreakpointTable,
) -> Result<TrapFlagAcrossStep> {
    let RegistersBeforeStep { trap_flag: before, long, default_operand, stack, stack_before, paging } = *registers;
    // The guest's bytes: originals under software breakpoints.
    let byte_at = |linear: u64| -> Option<u8> {
        let mut byte = [0u8];
        ctx.read_guest_virt_showing(&paging, linear, &mut byte, table).ok().map(|()| byte[0])
    };
    // Nearly every instruction tells by its first byte that it keeps TF.
    // Not an int3, which may be a breakpoint's: its original byte counts
    // (a step over a debug register there runs into the int3, and the
    // instruction under it is stepped next with this flag).
    let effect = match code.byte {
        Some(first) if first != INT3 && !may_load_trap_flag(first, long) => Effect::Keeps,
        _ => {
            let (bytes, len) = ctx.read_instruction_at(&paging, code.pc, code.gpa, table);
            effect_of(&bytes[..len], default_operand, long)
        }
    };
    // TF is bit 8: bit 0 of the flags' second byte, whatever the operand size.
    let flag_at = |offset: u64| byte_at(stack.wrapping_add(offset + 1)).map(|b| b & 1 != 0);
    let after = match effect {
        Effect::Keeps => Some(before),
        Effect::Popf => flag_at(0),
        Effect::Iret { operand } => flag_at(2 * operand),
    };
    Ok(TrapFlagAcrossStep { owed_trap: before, after: after.unwrap_or(before), stack: stack_before })
}

/// After the step: sets TF again, as the instruction left it (KVM cleared
/// it when the single step was turned off).
pub fn set(vcpu: &Vcpu) -> Result<()> {
    let (mut regs, _) = vcpu.regs_and_sregs()?;
    if regs.rflags & TRAP_FLAG != 0 {
        return Ok(());
    }
    regs.rflags |= TRAP_FLAG;
    vcpu.write_state(|fd| fd.set_regs(&regs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn popf_and_iret_load_the_flag_in_every_operand_size() {
        assert_eq!(effect_of(&[0x9d], 4, true), Effect::Popf);
        assert_eq!(effect_of(&[0x66, 0x9d], 2, false), Effect::Popf);
        assert_eq!(effect_of(&[0x48, 0xcf], 4, true), Effect::Iret { operand: 8 });
        assert_eq!(effect_of(&[0xcf], 4, true), Effect::Iret { operand: 4 });
        assert_eq!(effect_of(&[0xcf], 2, false), Effect::Iret { operand: 2 });
        assert_eq!(effect_of(&[0x66, 0xcf], 2, false), Effect::Iret { operand: 4 });
        assert_eq!(effect_of(&[0x66, 0xcf], 4, false), Effect::Iret { operand: 2 });
    }

    #[test]
    fn a_first_byte_that_cannot_load_the_flag_keeps_it_whatever_follows() {
        let tails: [&[u8]; 4] = [&[], &[0x9d], &[0xcf], &[0x48, 0xcf]];
        let mut keeping = 0;
        for long in [false, true] {
            for first in 0..=255u8 {
                if may_load_trap_flag(first, long) {
                    continue;
                }
                keeping += 1;
                for tail in tails {
                    let bytes: Vec<u8> = std::iter::once(first).chain(tail.iter().copied()).collect();
                    for operand in [2, 4] {
                        assert_eq!(effect_of(&bytes, operand, long), Effect::Keeps, "{bytes:x?} long={long}");
                    }
                }
            }
        }
        // 13 bytes may load it (0x66, popf, iret, 10 legacy prefixes), and
        // the 16 REX bytes too in 64-bit mode.
        assert_eq!(keeping, (256 - 13) + (256 - 13 - 16));
    }

    #[test]
    fn other_instructions_and_rex_outside_64_bit_mode_keep_it() {
        assert_eq!(effect_of(&[0x90], 4, true), Effect::Keeps);
        assert_eq!(effect_of(&[0x48, 0x89, 0xc0], 4, true), Effect::Keeps);
        // In 32-bit mode 0x48 is `dec eax`, not a prefix.
        assert_eq!(effect_of(&[0x48, 0x9d], 4, false), Effect::Keeps);
        assert_eq!(effect_of(&[], 4, true), Effect::Keeps);
    }
}
