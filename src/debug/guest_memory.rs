//! Guest memory by virtual address, for debuggers: translation through a
//! vcpu's page tables, and reads that show the original bytes under
//! software breakpoints.

use super::breakpoints::{BreakpointTable, CodeMemory};
use super::pagewalk::{translate, PhysicalMemory, Translation};
use crate::context::Context;
use crate::error::{Errno, Result};
use crate::memory::{GuestMemory, PAGE_SIZE};
use crate::vcpu::Vcpu;

impl PhysicalMemory for GuestMemory {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(gpa, &mut bytes).ok()?;
        Some(u64::from_le_bytes(bytes))
    }
}

impl CodeMemory for GuestMemory {
    fn read_byte(&self, gpa: u64) -> Result<u8> {
        let mut byte = [0u8];
        self.read(gpa, &mut byte)?;
        Ok(byte[0])
    }

    fn write_byte(&self, gpa: u64, byte: u8) -> Result<()> {
        self.write(gpa, &[byte])
    }
}

/// Splits `[gva, gva + len)` into runs that stay within one 4 KiB page.
fn page_runs(gva: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        if offset >= len {
            return None;
        }
        let at = gva.wrapping_add(offset as u64);
        let n = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(len - offset);
        let run = (at, offset, n);
        offset += n;
        Some(run)
    })
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
        let table = self.debugger().table();
        let mem = self.memory();
        let runs = self.physical_runs(&regs, &mem, gva, buf.len())?;
        for (gpa, offset, n) in runs {
            let chunk = &mut buf[offset..offset + n];
            mem.read(gpa, chunk)?;
            show_originals(&table, gpa, chunk);
        }
        Ok(())
    }

    /// Writes guest memory at linear `gva`. A byte written where a software
    /// breakpoint sits becomes its original; the `int3` stays.
    pub fn write_guest_virt(&self, vcpu: &Vcpu, gva: u64, buf: &[u8]) -> Result<()> {
        let regs = vcpu.paging_registers()?;
        let mut table = self.debugger().table();
        let mem = self.memory();
        let runs = self.physical_runs(&regs, &mem, gva, buf.len())?;
        for (gpa, offset, n) in runs {
            let chunk = &buf[offset..offset + n];
            mem.write(gpa, chunk)?;
            let patched: Vec<u64> = table.patches_in(gpa, n as u64).map(|p| p.gpa).collect();
            for patch in patched {
                table.set_original(patch, chunk[(patch - gpa) as usize]);
                mem.write_byte(patch, super::breakpoints::INT3)?;
            }
        }
        Ok(())
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
        let mem = self.memory();
        mem.write(gpa, buf)?;
        let patched: Vec<u64> = table.patches_in(gpa, buf.len() as u64).map(|p| p.gpa).collect();
        for patch in patched {
            table.set_original(patch, buf[(patch - gpa) as usize]);
            mem.write_byte(patch, super::breakpoints::INT3)?;
        }
        Ok(())
    }

    /// The guest-physical runs behind `[gva, gva + len)`, each inside one
    /// page and backed by memory; `EFAULT` if any part is not.
    fn physical_runs(
        &self,
        regs: &super::pagewalk::PagingRegisters,
        mem: &GuestMemory,
        gva: u64,
        len: usize,
    ) -> Result<Vec<(u64, usize, usize)>> {
        page_runs(gva, len)
            .map(|(at, offset, n)| {
                let gpa = translate(regs, mem, at).map_err(|_| Errno::FAULT)?.gpa;
                mem.host_address(gpa, n as u64).ok_or(Errno::FAULT)?;
                Ok((gpa, offset, n))
            })
            .collect()
    }
}

/// Replaces the `int3` bytes in `chunk` (read from `gpa`) with the originals.
fn show_originals(table: &BreakpointTable, gpa: u64, chunk: &mut [u8]) {
    for patch in table.patches_in(gpa, chunk.len() as u64) {
        chunk[(patch.gpa - gpa) as usize] = patch.original;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_runs_split_at_page_boundaries() {
        let runs: Vec<_> = page_runs(0x0ffe, 0x1004).collect();
        assert_eq!(runs, vec![(0x0ffe, 0, 2), (0x1000, 2, 0x1000), (0x2000, 0x1002, 2)]);
        assert_eq!(page_runs(0x5000, 0).count(), 0);
    }
}
