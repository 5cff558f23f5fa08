//! The x86 debug registers: DR0-DR3 addresses and the DR7 encoding.

/// Number of address debug registers (DR0-DR3).
pub(crate) const DEBUG_REGISTERS: usize = 4;

/// DR7 bit 10 reads as one; QEMU and Linux also set GE (bit 9).
const DR7_FIXED: u64 = 0x0600;

/// When a debug register fires (DR7 R/W field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Instruction execution (R/W = 00).
    Execute,
    /// Data writes (R/W = 01).
    Write,
    /// I/O port access (R/W = 10, with CR4.DE).
    Io,
    /// Data reads or writes (R/W = 11); x86 has no read-only condition.
    ReadWrite,
}

impl Condition {
    fn bits(self) -> u64 {
        match self {
            Condition::Execute => 0b00,
            Condition::Write => 0b01,
            Condition::Io => 0b10,
            Condition::ReadWrite => 0b11,
        }
    }
}

/// A DR7 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dr7(pub u64);

impl Dr7 {
    /// True when register `n` is enabled, locally or globally.
    pub fn enabled(self, n: u8) -> bool {
        self.0 & (0b11 << (2 * n)) != 0
    }

    /// The condition of register `n`.
    pub fn condition(self, n: u8) -> Condition {
        match (self.0 >> (16 + 4 * n)) & 0b11 {
            0b00 => Condition::Execute,
            0b01 => Condition::Write,
            0b10 => Condition::Io,
            _ => Condition::ReadWrite,
        }
    }

    /// The length in bytes watched by register `n` (1 for execution).
    pub fn len(self, n: u8) -> u64 {
        match (self.0 >> (18 + 4 * n)) & 0b11 {
            0b00 => 1,
            0b01 => 2,
            0b10 => 8,
            _ => 4,
        }
    }
}

/// The DR7 LEN encoding of a watch length: 1 -> 00, 2 -> 01, 4 -> 11, 8 -> 10.
pub fn len_bits(len: u64) -> Option<u64> {
    match len {
        1 => Some(0b00),
        2 => Some(0b01),
        4 => Some(0b11),
        8 => Some(0b10),
        _ => None,
    }
}

/// True when a debug register can watch `len` bytes at `addr`: 1, 2, 4 or
/// 8 bytes, aligned to the length.
pub fn watch_fits(addr: u64, len: u64) -> bool {
    len_bits(len).is_some() && addr % len == 0
}

/// What one debug register is programmed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegisterSlot {
    /// Linear address (DR0-DR3).
    pub addr: u64,
    /// When it fires.
    pub condition: Condition,
    /// Watched length: 1, 2, 4 or 8 (1 for execution).
    pub len: u64,
}

/// DR0-DR3 and DR7 for `slots`: register n gets slot n, globally enabled.
pub fn encode(slots: &[Option<DebugRegisterSlot>; DEBUG_REGISTERS]) -> ([u64; DEBUG_REGISTERS], u64) {
    let mut addrs = [0u64; DEBUG_REGISTERS];
    let mut dr7 = 0;
    for (n, slot) in slots.iter().enumerate() {
        let Some(slot) = slot else { continue };
        let len = if slot.condition == Condition::Execute { 0 } else { len_bits(slot.len).unwrap_or(0) };
        addrs[n] = slot.addr;
        dr7 |= (2 << (2 * n)) | (slot.condition.bits() << (16 + 4 * n)) | (len << (18 + 4 * n));
    }
    if dr7 != 0 {
        dr7 |= DR7_FIXED;
    }
    (addrs, dr7)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(addr: u64, condition: Condition, len: u64) -> Option<DebugRegisterSlot> {
        Some(DebugRegisterSlot { addr, condition, len })
    }

    #[test]
    fn no_slots_encode_to_a_zero_dr7() {
        assert_eq!(encode(&[None; 4]), ([0; 4], 0));
    }

    #[test]
    fn encoding_matches_qemu_for_each_register() {
        // QEMU: dr7 = 0x600 | (2 << 2n) | type << (16 + 4n) | len << (18 + 4n)
        let (addrs, dr7) = encode(&[None, slot(0x1234, Condition::Write, 4), None, None]);
        assert_eq!(addrs, [0, 0x1234, 0, 0]);
        assert_eq!(dr7, 0x600 | (2 << 2) | (1 << 20) | (3 << 22));
        let (_, dr7) = encode(&[None, None, None, slot(0x10, Condition::Execute, 1)]);
        assert_eq!(dr7, 0x600 | (2 << 6));
    }

    #[test]
    fn len_bits_round_trip_through_dr7() {
        for len in [1, 2, 4, 8] {
            let (_, dr7) = encode(&[slot(0, Condition::ReadWrite, len), None, None, None]);
            assert_eq!(Dr7(dr7).len(0), len);
            assert_eq!(Dr7(dr7).condition(0), Condition::ReadWrite);
            assert!(Dr7(dr7).enabled(0) && !Dr7(dr7).enabled(1));
        }
        assert_eq!(len_bits(3), None);
    }

    #[test]
    fn execution_breakpoints_always_use_length_one() {
        let (_, dr7) = encode(&[slot(0x1000, Condition::Execute, 8), None, None, None]);
        assert_eq!(Dr7(dr7).len(0), 1);
    }
}
