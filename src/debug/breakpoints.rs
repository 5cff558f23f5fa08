//! The library-managed breakpoints of one VM: software breakpoints (an
//! `int3` patched into guest memory, reference counted, the original byte
//! kept) and the four debug registers shared by every vcpu.
//!
//! Memory goes through [`CodeMemory`] so the bookkeeping is tested against
//! a model without a guest.

use std::cell::RefCell;

use super::debugregs::{watch_fits, Condition, DebugRegisterSlot, DEBUG_REGISTERS};
use super::pagewalk::RememberedWalks;
use super::BreakType;
use crate::error::{Errno, Result};

/// The `int3` opcode.
pub const INT3: u8 = 0xcc;

/// Guest-physical bytes the table patches.
pub trait CodeMemory {
    /// The byte at `gpa`.
    fn read_byte(&self, gpa: u64) -> Result<u8>;
    /// Stores `byte` at `gpa`.
    fn write_byte(&self, gpa: u64, byte: u8) -> Result<()>;
}

/// Plain bytes as guest memory from guest-physical 0: the model the table
/// is tested and fuzzed against.
impl CodeMemory for RefCell<Vec<u8>> {
    fn read_byte(&self, gpa: u64) -> Result<u8> {
        let index = usize::try_from(gpa).map_err(|_| Errno::FAULT)?;
        self.borrow().get(index).copied().ok_or(Errno::FAULT)
    }

    fn write_byte(&self, gpa: u64, byte: u8) -> Result<()> {
        let index = usize::try_from(gpa).map_err(|_| Errno::FAULT)?;
        *self.borrow_mut().get_mut(index).ok_or(Errno::FAULT)? = byte;
        Ok(())
    }
}

/// One guest-physical byte replaced by `int3`, shared by every software
/// breakpoint whose address maps there.
///
/// The rule that keeps guest memory intact: `original` is always the
/// guest's byte, never an `int3` of the library's. While a vcpu steps over
/// the patch it is *lifted*: the guest's byte is in memory, the library
/// writes nothing there, and only the last vcpu to land puts the `int3`
/// back (or, when no breakpoint wants it any more, drops the patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch {
    /// The patched guest-physical address.
    pub gpa: u64,
    /// The byte the guest has there.
    pub original: u8,
    /// Software breakpoints using this patch (0 for a lifted patch whose
    /// breakpoints were all removed: it goes when the step over lands).
    users: u32,
    /// Vcpus stepping over it now.
    lifts: u32,
}

impl Patch {
    /// True while the `int3` is meant to be in memory.
    fn armed(&self) -> bool {
        self.lifts == 0
    }

    /// Puts the original byte back, if the `int3` is still there. Best
    /// effort: the memory was there when the patch was made.
    fn restore(&self, mem: &impl CodeMemory) {
        if self.armed() && mem.read_byte(self.gpa) == Ok(INT3) {
            let _ = mem.write_byte(self.gpa, self.original);
        }
    }
}

/// Where a software breakpoint is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// An `int3` at this guest-physical address.
    Patched(u64),
    /// An execution breakpoint in this debug register: the address was not
    /// mapped (or the vcpu ran real-mode code, whose `int3` some hosts never
    /// report) when the breakpoint was inserted.
    Register(u8),
}

/// A software breakpoint as the VMM inserted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftwareBreakpoint {
    /// The linear address the VMM gave.
    pub gva: u64,
    /// Where it is armed.
    pub location: Location,
    refs: u32,
}

/// What a debug register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardwareBreakpoint {
    /// `HardwareBreakpoint`, a watchpoint type, or `SoftwareBreakpoint`
    /// for a software breakpoint backed by the register.
    pub kind: BreakType,
    /// Linear address.
    pub addr: u64,
    /// Watched length (1 for execution).
    pub len: u64,
    refs: u32,
}

impl HardwareBreakpoint {
    fn slot(&self) -> DebugRegisterSlot {
        let condition = match self.kind {
            BreakType::WatchWrite => Condition::Write,
            // x86 has no read-only condition: a read watchpoint also fires on writes.
            BreakType::WatchRead | BreakType::WatchAccess => Condition::ReadWrite,
            _ => Condition::Execute,
        };
        DebugRegisterSlot { addr: self.addr, condition, len: self.len }
    }
}

/// The breakpoints of one VM.
#[derive(Clone, Debug, Default)]
pub struct BreakpointTable {
    software: Vec<SoftwareBreakpoint>,
    /// The page walk of each software breakpoint's address (by its index in
    /// `software`), remembered for the re-arm at every stop: checking it
    /// again is a few loads, with no search among the others.
    software_walks: Vec<RememberedWalks<1>>,
    patches: Vec<Patch>,
    registers: [Option<HardwareBreakpoint>; DEBUG_REGISTERS],
}

/// Checks a watchpoint's length and alignment, and returns the length to store.
fn checked_length(kind: BreakType, addr: u64, len: u64) -> Result<u64> {
    match kind {
        BreakType::HardwareBreakpoint => Ok(1),
        BreakType::WatchWrite | BreakType::WatchRead | BreakType::WatchAccess if watch_fits(addr, len) => Ok(len),
        _ => Err(Errno::INVAL),
    }
}

impl BreakpointTable {
    /// True when nothing is inserted.
    pub fn is_empty(&self) -> bool {
        self.software.is_empty() && !self.uses_registers()
    }

    /// True when some breakpoint is an `int3` in memory.
    pub fn has_patches(&self) -> bool {
        self.patches.iter().any(|p| p.users > 0)
    }

    /// The software breakpoint inserted at linear address `gva`.
    pub fn software_at(&self, gva: u64) -> Option<&SoftwareBreakpoint> {
        self.software.iter().find(|b| b.gva == gva)
    }

    /// The patch a breakpoint uses at guest-physical `gpa`.
    pub fn patch_at(&self, gpa: u64) -> Option<&Patch> {
        self.patches.iter().find(|p| p.gpa == gpa && p.users > 0)
    }

    /// The patches inside `[gpa, gpa + len)`.
    pub fn patches_in(&self, gpa: u64, len: u64) -> impl Iterator<Item = &Patch> {
        self.patches.iter().filter(move |p| p.gpa >= gpa && p.gpa - gpa < len)
    }

    /// What debug register `n` holds.
    pub fn register(&self, n: usize) -> Option<&HardwareBreakpoint> {
        self.registers.get(n).and_then(Option::as_ref)
    }

    /// True when some breakpoint or watchpoint is in a debug register.
    pub fn uses_registers(&self) -> bool {
        self.registers.iter().any(Option::is_some)
    }

    /// The debug registers as DR0-DR3/DR7 slots.
    pub fn slots(&self) -> [Option<DebugRegisterSlot>; DEBUG_REGISTERS] {
        self.registers.map(|r| r.map(|r| r.slot()))
    }

    fn free_register(&self) -> Result<usize> {
        self.registers.iter().position(Option::is_none).ok_or(Errno::NOSPC)
    }

    /// Patches `gpa` (or shares an existing patch there, lifted or not).
    fn arm(&mut self, gpa: u64, mem: &impl CodeMemory) -> Result<()> {
        if let Some(patch) = self.patches.iter_mut().find(|p| p.gpa == gpa) {
            patch.users += 1;
            return Ok(());
        }
        let original = mem.read_byte(gpa)?;
        mem.write_byte(gpa, INT3)?;
        self.patches.push(Patch { gpa, original, users: 1, lifts: 0 });
        Ok(())
    }

    /// Drops one user of the patch at `gpa`; the last one puts the original
    /// byte back, if the `int3` is still there. A lifted patch stays until
    /// its step over lands.
    fn disarm(&mut self, gpa: u64, mem: &impl CodeMemory) {
        let Some(index) = self.patches.iter().position(|p| p.gpa == gpa && p.users > 0) else { return };
        let patch = &mut self.patches[index];
        patch.users -= 1;
        if patch.users == 0 && patch.armed() {
            self.patches.swap_remove(index).restore(mem);
        }
    }

    /// A vcpu starts stepping over the patch at `gpa`: the guest's byte goes
    /// back into memory until [`BreakpointTable::land`]. False when no
    /// breakpoint is patched there.
    pub fn lift(&mut self, gpa: u64, mem: &impl CodeMemory) -> Result<bool> {
        let Some(patch) = self.patches.iter_mut().find(|p| p.gpa == gpa && p.users > 0) else { return Ok(false) };
        if patch.armed() && mem.read_byte(gpa)? == INT3 {
            mem.write_byte(gpa, patch.original)?;
        }
        patch.lifts += 1;
        Ok(true)
    }

    /// A vcpu's step over the patch at `gpa` is done. The last one to land
    /// arms the patch again if a breakpoint still wants it, taking the byte
    /// in memory as the guest's (the stepped instruction may have rewritten
    /// it), or drops it, leaving the guest's byte.
    pub fn land(&mut self, gpa: u64, mem: &impl CodeMemory) -> Result<()> {
        let Some(index) = self.patches.iter().position(|p| p.gpa == gpa && !p.armed()) else { return Ok(()) };
        let patch = &mut self.patches[index];
        patch.lifts -= 1;
        if !patch.armed() {
            return Ok(());
        }
        if patch.users == 0 {
            self.patches.swap_remove(index);
            return Ok(());
        }
        let byte = mem.read_byte(gpa)?;
        if byte != INT3 {
            patch.original = byte;
        }
        mem.write_byte(gpa, INT3)
    }

    /// Inserts a software breakpoint at linear address `gva`, which maps to
    /// `location` (`Err` when not mapped). An unmapped address goes into a
    /// free debug register; with none free it is refused (`EFAULT`).
    /// `int3_unseen` says the vcpu would not report an `int3` there (real
    /// mode on some hosts): the breakpoint then needs a debug register too,
    /// and is refused (`ENOSPC`) when none is free.
    pub fn insert_software(
        &mut self,
        gva: u64,
        location: Result<u64>,
        int3_unseen: bool,
        mem: &impl CodeMemory,
    ) -> Result<()> {
        if let Some(existing) = self.software.iter_mut().find(|b| b.gva == gva) {
            existing.refs += 1;
            return Ok(());
        }
        let location = match (location, self.free_register()) {
            (_, Ok(n)) if int3_unseen => self.register_backed(gva, n),
            (Ok(_), Err(e)) if int3_unseen => return Err(e),
            (Ok(gpa), _) => {
                self.arm(gpa, mem)?;
                Location::Patched(gpa)
            }
            (Err(_), Ok(n)) => self.register_backed(gva, n),
            (Err(e), Err(_)) => return Err(e),
        };
        self.software.push(SoftwareBreakpoint { gva, location, refs: 1 });
        self.software_walks.push(RememberedWalks::default());
        Ok(())
    }

    /// Debug register `n` as the execution breakpoint behind software
    /// breakpoint `gva`.
    fn register_backed(&mut self, gva: u64, n: usize) -> Location {
        self.registers[n] =
            Some(HardwareBreakpoint { kind: BreakType::SoftwareBreakpoint, addr: gva, len: 1, refs: 1 });
        Location::Register(n as u8)
    }

    /// Removes one reference to the software breakpoint at `gva`; `ENOENT`
    /// when there is none.
    pub fn remove_software(&mut self, gva: u64, mem: &impl CodeMemory) -> Result<()> {
        let index = self.software.iter().position(|b| b.gva == gva).ok_or(Errno::NOENT)?;
        let bp = &mut self.software[index];
        bp.refs -= 1;
        if bp.refs > 0 {
            return Ok(());
        }
        let bp = self.software.swap_remove(index);
        self.software_walks.swap_remove(index);
        match bp.location {
            Location::Patched(gpa) => self.disarm(gpa, mem),
            Location::Register(n) => self.registers[n as usize] = None,
        }
        Ok(())
    }

    /// Inserts a hardware breakpoint or watchpoint in a free debug
    /// register: `EINVAL` for a bad type, length or alignment, `ENOSPC`
    /// when all four are in use. The same one twice counts references.
    pub fn insert_hardware(&mut self, kind: BreakType, addr: u64, len: u64) -> Result<()> {
        let len = checked_length(kind, addr, len)?;
        let same = |r: &HardwareBreakpoint| r.kind == kind && r.addr == addr && r.len == len;
        if let Some(existing) = self.registers.iter_mut().flatten().find(|r| same(r)) {
            existing.refs += 1;
            return Ok(());
        }
        let n = self.free_register()?;
        self.registers[n] = Some(HardwareBreakpoint { kind, addr, len, refs: 1 });
        Ok(())
    }

    /// True when a debug register holds this hardware breakpoint or watchpoint.
    pub fn register_holds(&self, kind: BreakType, addr: u64, len: u64) -> bool {
        checked_length(kind, addr, len)
            .is_ok_and(|len| self.registers.iter().flatten().any(|r| r.kind == kind && r.addr == addr && r.len == len))
    }

    /// Removes one reference to a hardware breakpoint or watchpoint.
    pub fn remove_hardware(&mut self, kind: BreakType, addr: u64, len: u64) -> Result<()> {
        let len = checked_length(kind, addr, len)?;
        let slot = self
            .registers
            .iter_mut()
            .find(|r| r.is_some_and(|r| r.kind == kind && r.addr == addr && r.len == len))
            .ok_or(Errno::NOENT)?;
        let bp = slot.as_mut().expect("found above");
        bp.refs -= 1;
        if bp.refs == 0 {
            *slot = None;
        }
        Ok(())
    }

    /// A line per breakpoint, for the GDB stub's `monitor breakpoints`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for bp in &self.software {
            let place = match bp.location {
                Location::Patched(gpa) => format!("int3 at gpa {gpa:#x}"),
                Location::Register(n) => format!("debug register {n} (not mapped when inserted)"),
            };
            out += &format!("software {:#x}: {place}, {} reference(s)\n", bp.gva, bp.refs);
        }
        for (n, r) in self.registers.iter().enumerate() {
            if let Some(r) = r.filter(|r| r.kind != BreakType::SoftwareBreakpoint) {
                out += &format!("DR{n}: {:?} {:#x} length {}, {} reference(s)\n", r.kind, r.addr, r.len, r.refs);
            }
        }
        if out.is_empty() {
            out = "no breakpoints\n".into();
        }
        out
    }

    /// Removes everything, restoring every patched byte that is still `int3`.
    /// Lifted patches stay, without users, until their step over lands.
    pub fn remove_all(&mut self, mem: &impl CodeMemory) {
        self.patches.retain_mut(|patch| {
            patch.restore(mem);
            patch.users = 0;
            !patch.armed()
        });
        self.software.clear();
        self.software_walks.clear();
        self.registers = [None; DEBUG_REGISTERS];
    }

    /// Records that the guest's byte under the patch at `gpa` is now `byte`
    /// (a debugger write over a breakpoint) and keeps the patch in memory:
    /// the `int3` stays, or, while the patch is lifted, the new byte.
    pub fn write_under(&mut self, gpa: u64, byte: u8, mem: &impl CodeMemory) -> Result<()> {
        let Some(patch) = self.patches.iter_mut().find(|p| p.gpa == gpa) else { return Ok(()) };
        patch.original = byte;
        mem.write_byte(gpa, if patch.armed() { INT3 } else { byte })
    }

    /// Makes every breakpoint armed again after the guest ran: a patch the
    /// guest overwrote (code loaded after the insertion) takes the new byte
    /// as its original and gets its `int3` back; a breakpoint whose address
    /// now maps elsewhere moves there; one parked in a debug register while
    /// unmapped moves into memory once mapped. `translate` translates a
    /// breakpoint's address with the walk it remembers. Returns true when
    /// the debug registers changed.
    pub fn rearm(
        &mut self,
        mut translate: impl FnMut(u64, &mut RememberedWalks<1>) -> Result<u64>,
        mem: &impl CodeMemory,
    ) -> bool {
        debug_assert_eq!(self.software.len(), self.software_walks.len());
        for patch in self.patches.iter_mut().filter(|p| p.armed()) {
            if let Ok(byte) = mem.read_byte(patch.gpa) {
                if byte != INT3 && mem.write_byte(patch.gpa, INT3).is_ok() {
                    patch.original = byte;
                }
            }
        }
        let mut registers_changed = false;
        for i in 0..self.software.len() {
            let bp = self.software[i];
            let Ok(gpa) = translate(bp.gva, &mut self.software_walks[i]) else { continue };
            match bp.location {
                Location::Patched(old) if old != gpa && self.arm(gpa, mem).is_ok() => {
                    self.disarm(old, mem);
                    self.software[i].location = Location::Patched(gpa);
                }
                Location::Register(n) if self.arm(gpa, mem).is_ok() => {
                    self.registers[n as usize] = None;
                    self.software[i].location = Location::Patched(gpa);
                    registers_changed = true;
                }
                _ => {}
            }
        }
        registers_changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 KiB of guest memory filled with a pattern.
    fn patterned_code() -> RefCell<Vec<u8>> {
        RefCell::new((0..0x10000u32).map(|i| (i * 7 + 3) as u8).collect())
    }

    #[test]
    fn software_breakpoint_patches_int3_and_restores_the_exact_byte() {
        let mem = patterned_code();
        let before = mem.borrow().clone();
        let mut t = BreakpointTable::default();
        t.insert_software(0x40_1000, Ok(0x1000), false, &mem).unwrap();
        assert_eq!(mem.borrow()[0x1000], INT3);
        assert_eq!(t.patch_at(0x1000).unwrap().original, before[0x1000]);
        t.remove_software(0x40_1000, &mem).unwrap();
        assert_eq!(mem.borrow().clone(), before);
        assert!(t.is_empty());
    }

    #[test]
    fn duplicates_count_references() {
        let mem = patterned_code();
        let before = mem.borrow().clone();
        let mut t = BreakpointTable::default();
        t.insert_software(0x2000, Ok(0x2000), false, &mem).unwrap();
        t.insert_software(0x2000, Ok(0x2000), false, &mem).unwrap();
        t.remove_software(0x2000, &mem).unwrap();
        assert_eq!(mem.borrow()[0x2000], INT3, "one reference left");
        t.remove_software(0x2000, &mem).unwrap();
        assert_eq!(mem.borrow().clone(), before);
        assert_eq!(t.remove_software(0x2000, &mem), Err(Errno::NOENT));
    }

    #[test]
    fn two_addresses_mapping_one_byte_share_its_original() {
        let mem = patterned_code();
        let before = mem.borrow().clone();
        let mut t = BreakpointTable::default();
        t.insert_software(0xffff_8000_0000_3000, Ok(0x3000), false, &mem).unwrap();
        t.insert_software(0x3000, Ok(0x3000), false, &mem).unwrap();
        assert_eq!(t.patch_at(0x3000).unwrap().original, before[0x3000], "not the int3 of the first");
        t.remove_software(0xffff_8000_0000_3000, &mem).unwrap();
        assert_eq!(mem.borrow()[0x3000], INT3);
        t.remove_software(0x3000, &mem).unwrap();
        assert_eq!(mem.borrow().clone(), before);
    }

    #[test]
    fn a_byte_the_guest_changed_back_is_not_restored_over() {
        let mem = patterned_code();
        let mut t = BreakpointTable::default();
        t.insert_software(0x10, Ok(0x10), false, &mem).unwrap();
        mem.write_byte(0x10, 0x90).unwrap(); // the guest rewrote its code
        t.remove_software(0x10, &mem).unwrap();
        assert_eq!(mem.borrow()[0x10], 0x90);
    }

    #[test]
    fn unmapped_address_takes_a_debug_register_or_is_refused() {
        let mem = patterned_code();
        let mut t = BreakpointTable::default();
        for i in 0..4 {
            t.insert_software(0x9000_0000 + i, Err(Errno::FAULT), false, &mem).unwrap();
        }
        assert_eq!(t.register(3).unwrap().kind, BreakType::SoftwareBreakpoint);
        assert_eq!(t.slots()[2].unwrap().condition, Condition::Execute);
        assert_eq!(t.insert_software(0x9000_0010, Err(Errno::FAULT), false, &mem), Err(Errno::FAULT));
        t.remove_software(0x9000_0001, &mem).unwrap();
        assert!(t.register(1).is_none());
    }

    #[test]
    fn a_breakpoint_an_int3_cannot_keep_takes_a_free_register() {
        let mem = patterned_code();
        let mut t = BreakpointTable::default();
        for i in 0..3 {
            t.insert_hardware(BreakType::HardwareBreakpoint, 0x100 * i, 1).unwrap();
        }
        t.insert_software(0x7c00, Ok(0x7c00), true, &mem).unwrap();
        assert_eq!(t.software_at(0x7c00).unwrap().location, Location::Register(3));
        t.insert_software(0x7c10, Ok(0x7c10), false, &mem).unwrap();
        assert_eq!(t.software_at(0x7c10).unwrap().location, Location::Patched(0x7c10));
    }

    #[test]
    fn four_hardware_breakpoints_fit_and_the_fifth_gets_enospc() {
        let mut t = BreakpointTable::default();
        t.insert_hardware(BreakType::HardwareBreakpoint, 0x1000, 1).unwrap();
        t.insert_hardware(BreakType::WatchWrite, 0x2000, 8).unwrap();
        t.insert_hardware(BreakType::WatchRead, 0x3004, 4).unwrap();
        t.insert_hardware(BreakType::WatchAccess, 0x4002, 2).unwrap();
        assert_eq!(t.insert_hardware(BreakType::WatchWrite, 0x5000, 1), Err(Errno::NOSPC));
        // The same one again is a reference, not a fifth register.
        t.insert_hardware(BreakType::WatchWrite, 0x2000, 8).unwrap();
        let slots = t.slots();
        assert_eq!(slots[2].unwrap().condition, Condition::ReadWrite, "read maps to read/write");
        assert_eq!(slots[1].unwrap().len, 8);
        t.remove_hardware(BreakType::WatchWrite, 0x2000, 8).unwrap();
        assert!(t.register(1).is_some());
        t.remove_hardware(BreakType::WatchWrite, 0x2000, 8).unwrap();
        assert!(t.register(1).is_none());
        assert_eq!(t.remove_hardware(BreakType::WatchWrite, 0x2000, 8), Err(Errno::NOENT));
    }

    #[test]
    fn watch_lengths_must_be_1_2_4_8_and_aligned() {
        let mut t = BreakpointTable::default();
        assert_eq!(t.insert_hardware(BreakType::WatchWrite, 0x1000, 3), Err(Errno::INVAL));
        assert_eq!(t.insert_hardware(BreakType::WatchWrite, 0x1002, 4), Err(Errno::INVAL));
        assert_eq!(t.insert_hardware(BreakType::WatchAccess, 0x1000, 16), Err(Errno::INVAL));
        assert_eq!(t.insert_hardware(BreakType::SingleStep, 0x1000, 1), Err(Errno::INVAL));
        assert!(t.is_empty());
    }

    #[test]
    fn remove_all_restores_memory_and_frees_registers() {
        let mem = patterned_code();
        let before = mem.borrow().clone();
        let mut t = BreakpointTable::default();
        for gpa in [0x10, 0x20, 0x30] {
            t.insert_software(gpa, Ok(gpa), false, &mem).unwrap();
        }
        t.insert_hardware(BreakType::WatchWrite, 0x8, 8).unwrap();
        t.remove_all(&mem);
        assert_eq!(mem.borrow().clone(), before);
        assert!(t.is_empty());
    }

    #[test]
    fn rearm_adopts_code_loaded_over_a_breakpoint() {
        let mem = patterned_code();
        let mut t = BreakpointTable::default();
        t.insert_software(0x500, Ok(0x500), false, &mem).unwrap();
        mem.write_byte(0x500, 0x55).unwrap(); // guest loads new code there
        assert!(!t.rearm(|gva, _| Ok(gva), &mem));
        assert_eq!(mem.borrow()[0x500], INT3);
        t.remove_software(0x500, &mem).unwrap();
        assert_eq!(mem.borrow()[0x500], 0x55);
    }

    #[test]
    fn rearm_moves_a_register_backed_breakpoint_into_memory_once_mapped() {
        let mem = patterned_code();
        let original = mem.borrow()[0x600];
        let mut t = BreakpointTable::default();
        t.insert_software(0x7000_0600, Err(Errno::FAULT), false, &mem).unwrap();
        assert!(t.rearm(|_, _| Ok(0x600), &mem));
        assert!(t.register(0).is_none());
        assert_eq!(mem.borrow()[0x600], INT3);
        assert_eq!(t.patch_at(0x600).unwrap().original, original);
    }

    #[test]
    fn rearm_follows_a_remapped_page() {
        let mem = patterned_code();
        let before = mem.borrow().clone();
        let mut t = BreakpointTable::default();
        t.insert_software(0x4000_0010, Ok(0x1010), false, &mem).unwrap();
        t.rearm(|_, _| Ok(0x2010), &mem);
        assert_eq!(mem.borrow()[0x1010], before[0x1010]);
        assert_eq!(mem.borrow()[0x2010], INT3);
        t.remove_software(0x4000_0010, &mem).unwrap();
        assert_eq!(mem.borrow().clone(), before);
    }

    #[test]
    fn writes_over_a_breakpoint_become_its_original() {
        let mem = patterned_code();
        let mut t = BreakpointTable::default();
        t.insert_software(0x700, Ok(0x700), false, &mem).unwrap();
        t.write_under(0x700, 0x42, &mem).unwrap();
        assert_eq!(mem.borrow()[0x700], INT3);
        t.remove_software(0x700, &mem).unwrap();
        assert_eq!(mem.borrow()[0x700], 0x42);
    }

    #[test]
    fn changes_during_a_step_over_never_save_an_int3_as_the_guests_byte() {
        let mem = patterned_code();
        let guest_byte = mem.borrow()[0x800];
        let mut t = BreakpointTable::default();
        t.insert_software(0x800, Ok(0x800), false, &mem).unwrap();
        assert!(t.lift(0x800, &mem).unwrap());
        assert_eq!(mem.borrow()[0x800], guest_byte, "the guest's byte while stepping");
        // Another thread removes and inserts it again, then removes all and inserts again.
        t.remove_software(0x800, &mem).unwrap();
        t.insert_software(0x800, Ok(0x800), false, &mem).unwrap();
        assert_eq!(mem.borrow()[0x800], guest_byte, "nothing written while lifted");
        t.remove_all(&mem);
        t.insert_software(0x800, Ok(0x800), false, &mem).unwrap();
        t.land(0x800, &mem).unwrap();
        assert_eq!(mem.borrow()[0x800], INT3);
        assert_eq!(t.patch_at(0x800).unwrap().original, guest_byte);
        t.remove_software(0x800, &mem).unwrap();
        assert_eq!(mem.borrow()[0x800], guest_byte);
    }

    #[test]
    fn a_breakpoint_removed_during_its_step_over_is_gone_when_it_lands() {
        let mem = patterned_code();
        let before = mem.borrow().clone();
        let mut t = BreakpointTable::default();
        t.insert_software(0x900, Ok(0x900), false, &mem).unwrap();
        t.lift(0x900, &mem).unwrap();
        t.remove_software(0x900, &mem).unwrap();
        assert!(t.patch_at(0x900).is_none(), "no breakpoint claims the address");
        t.land(0x900, &mem).unwrap();
        assert_eq!(mem.borrow().clone(), before);
        assert!(t.is_empty() && !t.has_patches());
    }

    #[test]
    fn two_vcpus_stepping_over_one_patch_rearm_it_when_the_last_lands() {
        let mem = patterned_code();
        let mut t = BreakpointTable::default();
        t.insert_software(0xa00, Ok(0xa00), false, &mem).unwrap();
        t.lift(0xa00, &mem).unwrap();
        t.lift(0xa00, &mem).unwrap();
        t.land(0xa00, &mem).unwrap();
        assert_ne!(mem.borrow()[0xa00], INT3, "one vcpu still steps over it");
        t.land(0xa00, &mem).unwrap();
        assert_eq!(mem.borrow()[0xa00], INT3);
    }

    #[test]
    fn a_real_mode_breakpoint_the_host_would_not_see_needs_a_free_register() {
        let mem = patterned_code();
        let before = mem.borrow().clone();
        let mut t = BreakpointTable::default();
        for i in 0..4 {
            t.insert_software(0x7c00 + i, Ok(0x7c00 + i), true, &mem).unwrap();
        }
        assert_eq!(t.insert_software(0x7c10, Ok(0x7c10), true, &mem), Err(Errno::NOSPC));
        assert_eq!(mem.borrow().clone(), before, "no int3 the guest would take");
    }
}
