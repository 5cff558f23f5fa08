//! Every page a guest's page tables map, for dumping a guest's memory by
//! the addresses its symbols use.

use super::pagewalk::{PagingMode, PagingRegisters, PhysicalMemory, ADDRESS_MASK, PAGE_SIZE_BIT, PRESENT};
use crate::memory::GuestMemory;

/// One page the guest's page tables map: linear `gva` to physical `gpa`,
/// `size` bytes (4 KiB, 2 MiB, 4 MiB or 1 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Linear address (canonical).
    pub gva: u64,
    /// Guest-physical address.
    pub gpa: u64,
    /// Page size.
    pub size: u64,
}

/// Calls `visit` for every page the guest's page tables map, in linear
/// address order, visiting at most `budget` table entries (page tables that
/// map themselves, as recursive mappings do, can describe billions of
/// pages). Returns false when the budget ran out. With paging off, nothing
/// is mapped: linear is physical.
pub fn for_each_mapping(
    regs: &PagingRegisters,
    mem: &impl PhysicalMemory,
    budget: u64,
    mut visit: impl FnMut(Mapping),
) -> bool {
    let mut left = budget;
    match regs.mode() {
        PagingMode::Off => true,
        PagingMode::Bits32 { pse } => walk_32bit_tables(regs, mem, pse, &mut left, &mut visit),
        PagingMode::Pae => {
            for i in 0..4u64 {
                let Some(pdpte) = mem.read_u64((regs.cr3 & 0xffff_ffe0) + i * 8) else { continue };
                if pdpte & PRESENT != 0
                    && !walk_table(mem, pdpte & ADDRESS_MASK, 2, i << 30, false, &mut left, &mut visit)
                {
                    return false;
                }
            }
            true
        }
        PagingMode::Level4 => walk_table(mem, regs.cr3 & ADDRESS_MASK, 4, 0, true, &mut left, &mut visit),
        PagingMode::Level5 => walk_table(mem, regs.cr3 & ADDRESS_MASK, 5, 0, true, &mut left, &mut visit),
    }
}

fn walk_32bit_tables(
    regs: &PagingRegisters,
    mem: &impl PhysicalMemory,
    pse: bool,
    left: &mut u64,
    visit: &mut impl FnMut(Mapping),
) -> bool {
    for i in 0..1024u64 {
        let Some(pde) = mem.read_u32((regs.cr3 & 0xffff_f000) + i * 4).map(u64::from) else { continue };
        if !spend(left) {
            return false;
        }
        if pde & PRESENT == 0 {
            continue;
        }
        if pse && pde & PAGE_SIZE_BIT != 0 {
            let gpa = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
            visit(Mapping { gva: i << 22, gpa, size: 4 << 20 });
            continue;
        }
        for j in 0..1024u64 {
            let Some(pte) = mem.read_u32((pde & 0xffff_f000) + j * 4).map(u64::from) else { continue };
            if !spend(left) {
                return false;
            }
            if pte & PRESENT != 0 {
                visit(Mapping { gva: (i << 22) | (j << 12), gpa: pte & 0xffff_f000, size: 4096 });
            }
        }
    }
    true
}

/// Takes one entry from the budget; false when none is left.
fn spend(left: &mut u64) -> bool {
    if *left == 0 {
        return false;
    }
    *left -= 1;
    true
}

/// Visits the 64-bit table at `table` of level `level` covering linear
/// addresses from `base`; `sign_extend` makes the top level's upper half
/// canonical.
fn walk_table(
    mem: &impl PhysicalMemory,
    table: u64,
    level: u8,
    base: u64,
    sign_extend: bool,
    left: &mut u64,
    visit: &mut impl FnMut(Mapping),
) -> bool {
    let shift = 12 + 9 * (u32::from(level) - 1);
    for i in 0..512u64 {
        let Some(entry) = mem.read_u64(table + i * 8) else { return true };
        if !spend(left) {
            return false;
        }
        if entry & PRESENT == 0 {
            continue;
        }
        let mut gva = base | (i << shift);
        if sign_extend && i >= 256 {
            gva |= !((1u64 << (shift + 9)) - 1);
        }
        let large = matches!(level, 2 | 3) && entry & PAGE_SIZE_BIT != 0;
        if level == 1 || large {
            let size = 1u64 << shift;
            visit(Mapping { gva, gpa: entry & ADDRESS_MASK & !(size - 1), size });
        } else if !walk_table(mem, entry & ADDRESS_MASK, level - 1, gva, false, left, visit) {
            return false;
        }
    }
    true
}

/// Calls `visit` with the guest-physical page of every page table of
/// `regs`' hierarchy, the top one included (without reading the last
/// level's entries, so a table costs one visit, its entries are not
/// walked), looking at most at `budget` entries. False when the budget ran
/// out. Nothing with paging off.
pub fn for_each_table(
    regs: &PagingRegisters,
    mem: &impl PhysicalMemory,
    budget: u64,
    mut visit: impl FnMut(u64),
) -> bool {
    let mut left = budget;
    match regs.mode() {
        PagingMode::Off => true,
        PagingMode::Bits32 { pse } => {
            let directory = regs.cr3 & 0xffff_f000;
            visit(directory);
            for i in 0..1024u64 {
                let Some(pde) = mem.read_u32(directory + i * 4).map(u64::from) else { break };
                if !spend(&mut left) {
                    return false;
                }
                if pde & PRESENT != 0 && !(pse && pde & PAGE_SIZE_BIT != 0) {
                    visit(pde & 0xffff_f000);
                }
            }
            true
        }
        PagingMode::Pae => {
            visit(regs.cr3 & !0xfff);
            for i in 0..4u64 {
                let Some(pdpte) = mem.read_u64((regs.cr3 & 0xffff_ffe0) + i * 8) else { continue };
                if pdpte & PRESENT != 0 && !tables_below(mem, pdpte & ADDRESS_MASK, 2, &mut left, &mut visit) {
                    return false;
                }
            }
            true
        }
        PagingMode::Level4 => tables_below(mem, regs.cr3 & ADDRESS_MASK, 4, &mut left, &mut visit),
        PagingMode::Level5 => tables_below(mem, regs.cr3 & ADDRESS_MASK, 5, &mut left, &mut visit),
    }
}

/// Visits the 64-bit table `table` of level `level` and the tables below it.
fn tables_below(mem: &impl PhysicalMemory, table: u64, level: u8, left: &mut u64, visit: &mut impl FnMut(u64)) -> bool {
    visit(table);
    if level == 1 {
        return true;
    }
    for i in 0..512u64 {
        let Some(entry) = mem.read_u64(table + i * 8) else { return true };
        if !spend(left) {
            return false;
        }
        let large = matches!(level, 2 | 3) && entry & PAGE_SIZE_BIT != 0;
        if entry & PRESENT == 0 || large {
            continue;
        }
        let child = entry & ADDRESS_MASK;
        if level == 2 {
            visit(child); // a page table: its entries map pages, not tables
        } else if !tables_below(mem, child, level - 1, left, visit) {
            return false;
        }
    }
    true
}

/// A run of guest-virtual addresses mapped to contiguous guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRun {
    /// First linear address.
    pub gva: u64,
    /// The guest-physical address behind it.
    pub gpa: u64,
    /// Bytes.
    pub len: u64,
}

/// The runs of guest-virtual addresses `regs`' page tables map to RAM,
/// coalesced, each within one slot of `mem`, in linear address order; the
/// parts of pages that map MMIO or nothing are left out. True as the
/// second value when the walk ran out of `budget` entries.
pub fn runs_in_ram(regs: &PagingRegisters, mem: &GuestMemory, budget: u64) -> (Vec<RamRun>, bool) {
    let mut runs: Vec<RamRun> = Vec::new();
    let complete = for_each_mapping(regs, mem, budget, |page| {
        let mut gpa = page.gpa;
        let end = page.gpa.saturating_add(page.size);
        while gpa < end {
            let Some(slot) = mem.slot_containing(gpa).copied() else {
                gpa = mem.slots().iter().map(|s| s.gpa).filter(|&start| start > gpa).min().unwrap_or(end).min(end);
                continue;
            };
            let part_end = slot.end().min(end);
            let run = RamRun { gva: page.gva + (gpa - page.gpa), gpa, len: part_end - gpa };
            match runs.last_mut() {
                Some(last)
                    if last.gva.wrapping_add(last.len) == run.gva
                        && last.gpa + last.len == run.gpa
                        && slot.contains(last.gpa) =>
                {
                    last.len += run.len
                }
                _ => runs.push(run),
            }
            gpa = part_end;
        }
    });
    (runs, !complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::pagewalk::tests::{long_mode, Tables, RW};
    use crate::debug::pagewalk::{translate, CR0_PG, CR4_PAE, CR4_PSE};

    #[test]
    fn mappings_of_4_level_tables_come_in_address_order_with_canonical_upper_halves() {
        let mut t = Tables::default();
        t.set64(0x1000, 0x2000 | RW); // PML4[0]
        t.set64(0x1000 + 511 * 8, 0x5000 | RW); // PML4[511]: the higher half
        t.set64(0x2000, 0x3000 | RW); // PDPT[0] -> PD
        t.set64(0x3000, 0x20_0000 | RW | PAGE_SIZE_BIT); // 2 MiB at 0
        t.set64(0x3000 + 8, 0x4000 | RW); // PD[1] -> PT
        t.set64(0x4000 + 3 * 8, 0x9000 | RW); // 4 KiB at 0x203000
        t.set64(0x5000 + 510 * 8, 0x4000_0000 | RW | PAGE_SIZE_BIT); // 1 GiB at -2 GiB
        let mut seen = Vec::new();
        assert!(for_each_mapping(&long_mode(0x1000, false), &t, 1 << 20, |m| seen.push(m)));
        assert_eq!(
            seen,
            vec![
                Mapping { gva: 0, gpa: 0x20_0000, size: 2 << 20 },
                Mapping { gva: 0x20_3000, gpa: 0x9000, size: 4096 },
                Mapping { gva: 0xffff_ffff_8000_0000, gpa: 0x4000_0000, size: 1 << 30 },
            ]
        );
        // Every enumerated page translates the same way.
        for m in &seen {
            assert_eq!(translate(&long_mode(0x1000, false), &t, m.gva).unwrap().gpa, m.gpa);
        }
    }

    #[test]
    fn every_table_of_a_hierarchy_is_visited_once_and_mapped_pages_are_not() {
        let mut t = Tables::default();
        t.set64(0x1000, 0x2000 | RW); // PML4[0]
        t.set64(0x1000 + 511 * 8, 0x5000 | RW); // PML4[511]
        t.set64(0x2000, 0x3000 | RW); // PDPT[0] -> PD
        t.set64(0x3000, 0x20_0000 | RW | PAGE_SIZE_BIT); // 2 MiB page: not a table
        t.set64(0x3000 + 8, 0x4000 | RW); // PD[1] -> PT
        t.set64(0x4000 + 3 * 8, 0x9000 | RW); // 4 KiB page: not a table
        t.set64(0x5000 + 510 * 8, 0x4000_0000 | RW | PAGE_SIZE_BIT); // 1 GiB page
        let mut tables = Vec::new();
        assert!(for_each_table(&long_mode(0x1000, false), &t, 1 << 20, |gpa| tables.push(gpa)));
        tables.sort();
        assert_eq!(tables, vec![0x1000, 0x2000, 0x3000, 0x4000, 0x5000]);
        let mut none = 0;
        let mut self_mapping = Tables::default();
        for i in 0..512 {
            self_mapping.set64(0x1000 + i * 8, 0x1000 | RW);
        }
        assert!(!for_each_table(&long_mode(0x1000, false), &self_mapping, 10_000, |_| none += 1));
    }

    #[test]
    fn a_self_mapping_table_runs_out_of_budget_instead_of_forever() {
        let mut t = Tables::default();
        for i in 0..512 {
            t.set64(0x1000 + i * 8, 0x1000 | RW); // every PML4 entry points back at the PML4
        }
        let mut pages = 0u64;
        assert!(!for_each_mapping(&long_mode(0x1000, false), &t, 100_000, |_| pages += 1));
        assert!(pages < 100_000);
    }

    #[test]
    fn mappings_of_32_bit_and_pae_tables() {
        let mut t = Tables::default();
        t.set32(0x1000, 0x2000 | RW as u32); // PDE 0 -> PT
        t.set32(0x2000 + 5 * 4, 0x7000 | RW as u32); // PTE 5
        t.set32(0x1000 + 4, 0x0040_0000 | (RW | PAGE_SIZE_BIT) as u32); // 4 MiB at 4 MiB
        let regs = PagingRegisters { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PSE, efer: 0 };
        let mut seen = Vec::new();
        for_each_mapping(&regs, &t, 1 << 20, |m| seen.push(m));
        assert_eq!(
            seen,
            vec![
                Mapping { gva: 0x5000, gpa: 0x7000, size: 4096 },
                Mapping { gva: 0x40_0000, gpa: 0x40_0000, size: 4 << 20 }
            ]
        );
        let mut p = Tables::default();
        p.set64(0x3000 + 3 * 8, 0x4000 | PRESENT); // PDPTE 3
        p.set64(0x4000, 0x60_0000 | RW | PAGE_SIZE_BIT);
        let pae = PagingRegisters { cr0: CR0_PG | 1, cr3: 0x3000, cr4: CR4_PAE, efer: 0 };
        seen.clear();
        for_each_mapping(&pae, &p, 1 << 20, |m| seen.push(m));
        assert_eq!(seen, vec![Mapping { gva: 0xc000_0000, gpa: 0x60_0000, size: 2 << 20 }]);
    }
}
