//! Guest memory by virtual address, for debuggers: translation through a
//! vcpu's page tables, and reads that show the original bytes under
//! software breakpoints.

use super::breakpoints::{BreakpointTable, CodeMemory};
use super::pagewalk::{translate, PagingRegisters, PhysicalMemory, Translation, MOST_ENTRIES};
use crate::context::Context;
use crate::error::{Errno, Result};
use crate::memory::{page_runs, GuestMemory, PlacedWords, WordPlace};
use crate::vcpu::Vcpu;

impl PhysicalMemory for GuestMemory {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        GuestMemory::read_u64(self, gpa).ok()
    }

    fn read_u64_placed(&self, gpa: u64) -> Option<(u64, Option<WordPlace>)> {
        GuestMemory::read_u64_placed(self, gpa).ok()
    }

    #[inline(always)]
    fn placed_words_hold(&self, words: &PlacedWords<MOST_ENTRIES>) -> Option<bool> {
        GuestMemory::placed_words_hold(self, words)
    }
}

impl CodeMemory for GuestMemory {
    fn read_byte(&self, gpa: u64) -> Result<u8> {
        self.read_u8(gpa)
    }

    fn write_byte(&self, gpa: u64, byte: u8) -> Result<()> {
        self.write_u8(gpa, byte)
    }
}

impl Context {
    /// Translates linear address `gva` with `vcpu`'s page tables; `EFAULT`
    /// when it is not mapped.
    pub fn translate_gva(&self, vcpu: &Vcpu, gva: u64) -> Result<Translation> {
        let regs = vcpu.paging_registers()?;
        translate(&regs, &*self.memory(), gva).map_err(|_| Errno::FAULT)
    }

    /// Reads guest memory at linear `gva` through `vcpu`'s page tables,
    /// across pages, showing original bytes under software breakpoints.
    /// Nothing is copied unless the whole range is mapped (`EFAULT`).
    pub fn read_guest_virt(&self, vcpu: &Vcpu, gva: u64, buf: &mut [u8]) -> Result<()> {
        let regs = vcpu.paging_registers()?;
        self.read_guest_virt_showing(&regs, gva, buf, &self.debugger().table())
    }

    /// [`Context::read_guest_virt`] through the paging registers `regs`,
    /// with the breakpoint table already held.
    pub(crate) fn read_guest_virt_showing(
        &self,
        regs: &PagingRegisters,
        gva: u64,
        buf: &mut [u8],
        table: &BreakpointTable,
    ) -> Result<()> {
        let mem = self.memory();
        check_mapped(regs, &mem, gva, buf.len())?;
        for (at, offset, n) in page_runs(gva, buf.len()) {
            let gpa = physical(regs, &mem, at, n)?;
            let chunk = &mut buf[offset..offset + n];
            mem.read(gpa, chunk)?;
            show_originals(table, gpa, chunk);
        }
        Ok(())
    }

    /// Writes guest memory at linear `gva`. A byte written where a software
    /// breakpoint sits becomes its original; the `int3` stays. Nothing is
    /// written unless the whole range is mapped (`EFAULT`).
    pub fn write_guest_virt(&self, vcpu: &Vcpu, gva: u64, buf: &[u8]) -> Result<()> {
        let regs = vcpu.paging_registers()?;
        self.write_guest_virt_keeping(&regs, gva, buf, &mut self.debugger().table())
    }

    /// [`Context::write_guest_virt`] through the paging registers `regs`,
    /// with the breakpoint table already held.
    pub(crate) fn write_guest_virt_keeping(
        &self,
        regs: &PagingRegisters,
        gva: u64,
        buf: &[u8],
        table: &mut BreakpointTable,
    ) -> Result<()> {
        let mem = self.memory();
        check_mapped(regs, &mem, gva, buf.len())?;
        for (at, offset, n) in page_runs(gva, buf.len()) {
            let gpa = physical(regs, &mem, at, n)?;
            write_keeping_breakpoints(table, &mem, gpa, &buf[offset..offset + n])?;
        }
        Ok(())
    }

    /// The guest's bytes of the instruction at linear `pc` (originals under
    /// software breakpoints): up to 15, fewer where the mapping ends.
    /// One translation per page (two at most); byte by byte only where a
    /// page's bytes are not all RAM.
    pub fn read_instruction(&self, vcpu: &Vcpu, pc: u64) -> ([u8; 15], usize) {
        match vcpu.paging_registers() {
            Ok(regs) => self.read_instruction_at(&regs, pc, None, &self.debugger().table()),
            Err(_) => ([0; 15], 0),
        }
    }

    /// [`Context::read_instruction`] with the paging registers `regs`, `pc`'s
    /// guest-physical address where the caller translated it, and the
    /// breakpoint table held.
    pub(crate) fn read_instruction_at(
        &self,
        regs: &PagingRegisters,
        pc: u64,
        pc_gpa: Option<u64>,
        table: &BreakpointTable,
    ) -> ([u8; 15], usize) {
        let mut bytes = [0u8; 15];
        let mem = self.memory();
        for (at, offset, n) in page_runs(pc, bytes.len()) {
            let gpa = match pc_gpa {
                Some(gpa) if offset == 0 => Ok(gpa),
                _ => physical(regs, &mem, at, n),
            };
            let Ok(gpa) = gpa else {
                return (bytes, offset);
            };
            let chunk = &mut bytes[offset..offset + n];
            if mem.read(gpa, chunk).is_err() {
                // The readable start of the piece, where RAM ends inside it.
                let readable = (0..n).take_while(|&i| mem.read(gpa + i as u64, &mut chunk[i..=i]).is_ok()).count();
                show_originals(table, gpa, &mut chunk[..readable]);
                return (bytes, offset + readable);
            }
            show_originals(table, gpa, chunk);
        }
        (bytes, bytes.len())
    }

    /// Reads guest-physical memory, showing original bytes under software
    /// breakpoints.
    pub fn read_guest_phys(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let table = self.debugger().table();
        self.memory().read(gpa, buf)?;
        show_originals(&table, gpa, buf);
        Ok(())
    }

    /// Writes guest-physical memory; a byte under a software breakpoint
    /// becomes its original.
    pub fn write_guest_phys(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        let mut table = self.debugger().table();
        write_keeping_breakpoints(&mut table, &self.memory(), gpa, buf)
    }
}

/// The guest-physical address behind the `n` bytes at `gva` (one page).
fn physical(regs: &PagingRegisters, mem: &GuestMemory, gva: u64, n: usize) -> Result<u64> {
    let gpa = translate(regs, mem, gva).map_err(|_| Errno::FAULT)?.gpa;
    mem.host_address(gpa, n as u64).ok_or(Errno::FAULT)?;
    Ok(gpa)
}

/// `EFAULT` unless every page of `[gva, gva + len)` is mapped to memory:
/// checked before anything is copied, and without allocating.
fn check_mapped(regs: &PagingRegisters, mem: &GuestMemory, gva: u64, len: usize) -> Result<()> {
    page_runs(gva, len).try_for_each(|(at, _, n)| physical(regs, mem, at, n).map(drop))
}

/// Writes `buf` at `gpa`; bytes that land on a software breakpoint become
/// its original and the `int3` stays.
fn write_keeping_breakpoints(table: &mut BreakpointTable, mem: &GuestMemory, gpa: u64, buf: &[u8]) -> Result<()> {
    mem.write(gpa, buf)?;
    let patches: Vec<u64> = table.patches_in(gpa, buf.len() as u64).map(|p| p.gpa).collect();
    for patch in patches {
        table.write_under(patch, buf[(patch - gpa) as usize], mem)?;
    }
    Ok(())
}

/// Replaces the `int3` bytes in `chunk` (read from `gpa`) with the originals.
fn show_originals(table: &BreakpointTable, gpa: u64, chunk: &mut [u8]) {
    for patch in table.patches_in(gpa, chunk.len() as u64) {
        chunk[(patch.gpa - gpa) as usize] = patch.original;
    }
}
