//! Guest virtual to guest physical, walked in software.
//!
//! `KVM_TRANSLATE` answers `valid = 0` on some hosts (this project's among
//! them), and a debugger needs the permission bits too, so the library walks
//! the guest's page tables itself: paging off, 32-bit (4 KiB and 4 MiB
//! pages), PAE, 4-level and 5-level (4 KiB, 2 MiB and 1 GiB pages).

use std::cell::Cell;

use crate::memory::{PlacedWords, WordPlace};

/// Reads guest-physical memory for the walker.
pub trait PhysicalMemory {
    /// The little-endian u64 at `gpa`, or `None` when it is not backed.
    fn read_u64(&self, gpa: u64) -> Option<u64>;

    /// [`PhysicalMemory::read_u64`], with where the u64 lies when the
    /// memory can say, for [`PhysicalMemory::read_placed_u64`].
    fn read_u64_placed(&self, gpa: u64) -> Option<(u64, Option<WordPlace>)> {
        self.read_u64(gpa).map(|value| (value, None))
    }

    /// True when the words of `words` still hold their values, read where
    /// they lie; `None` when the memory cannot tell so (then they are read
    /// by address).
    fn placed_words_hold(&self, _words: &PlacedWords<MOST_ENTRIES>) -> Option<bool> {
        None
    }

    /// The little-endian u32 at `gpa`, or `None` when it is not backed.
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        // Entries are naturally aligned, so the u64 at the aligned address
        // holds this u32 in its low or high half.
        let word = self.read_u64(gpa & !7)?;
        Some(if gpa & 4 == 0 { word as u32 } else { (word >> 32) as u32 })
    }
}

/// The registers that select the paging mode and the root table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegisters {
    /// CR0 (PG is bit 31).
    pub cr0: u64,
    /// CR3: the root table.
    pub cr3: u64,
    /// CR4 (PSE bit 4, PAE bit 5, LA57 bit 12).
    pub cr4: u64,
    /// EFER (LMA bit 10, NXE bit 11).
    pub efer: u64,
}

pub(super) const CR0_PG: u64 = 1 << 31;
pub(super) const CR4_PSE: u64 = 1 << 4;
pub(super) const CR4_PAE: u64 = 1 << 5;
pub(super) const CR4_LA57: u64 = 1 << 12;
pub(super) const EFER_LMA: u64 = 1 << 10;
pub(super) const EFER_NXE: u64 = 1 << 11;

pub(super) const PRESENT: u64 = 1 << 0;
pub(super) const WRITABLE: u64 = 1 << 1;
pub(super) const USER: u64 = 1 << 2;
pub(super) const PAGE_SIZE_BIT: u64 = 1 << 7;
pub(super) const NO_EXECUTE: u64 = 1 << 63;
/// Physical address bits 12-51 of a 64-bit entry.
pub(super) const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How the guest translates addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: linear is physical (32 bits).
    Off,
    /// 32-bit paging; `pse` allows 4 MiB pages.
    Bits32 {
        /// CR4.PSE.
        pse: bool,
    },
    /// PAE paging (3 levels, 32-bit linear addresses).
    Pae,
    /// 4-level paging (48-bit linear addresses).
    Level4,
    /// 5-level paging (57-bit linear addresses).
    Level5,
}

impl PagingRegisters {
    /// The paging mode these registers select.
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 {
            PagingMode::Off
        } else if self.efer & EFER_LMA != 0 {
            if self.cr4 & CR4_LA57 != 0 {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            }
        } else if self.cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32 { pse: self.cr4 & CR4_PSE != 0 }
        }
    }
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address.
    pub gpa: u64,
    /// Size of the page that maps it (4 KiB, 2 MiB, 4 MiB or 1 GiB; 4 KiB with paging off).
    pub page_size: u64,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// Executable: no level sets NX (with EFER.NXE).
    pub executable: bool,
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The address is not canonical for the paging mode.
    NonCanonical,
    /// The entry at `level` (1 = page table, up to 5) is not present.
    NotPresent {
        /// The level of the missing entry.
        level: u8,
    },
    /// A table lies in guest-physical memory that is not backed.
    TableNotInMemory,
}

/// Accumulates the permission bits of the levels walked.
struct Permissions {
    writable: bool,
    user: bool,
    executable: bool,
    nx_enabled: bool,
}

impl Permissions {
    fn new(regs: &PagingRegisters) -> Permissions {
        Permissions { writable: true, user: true, executable: true, nx_enabled: regs.efer & EFER_NXE != 0 }
    }

    fn apply(&mut self, entry: u64) {
        self.writable &= entry & WRITABLE != 0;
        self.user &= entry & USER != 0;
        if self.nx_enabled {
            self.executable &= entry & NO_EXECUTE == 0;
        }
    }

    fn finish(self, gpa: u64, page_size: u64) -> Translation {
        Translation { gpa, page_size, writable: self.writable, user: self.user, executable: self.executable }
    }
}

/// Translates linear address `gva` with the guest's page tables.
pub fn translate(regs: &PagingRegisters, mem: &impl PhysicalMemory, gva: u64) -> Result<Translation, WalkError> {
    match regs.mode() {
        PagingMode::Off => Ok(Permissions::new(regs).finish(gva & 0xffff_ffff, 4096)),
        PagingMode::Bits32 { pse } => walk_32bit(regs, mem, gva & 0xffff_ffff, pse),
        PagingMode::Pae => walk_pae(regs, mem, gva & 0xffff_ffff),
        PagingMode::Level4 => walk_long(regs, mem, gva, 4),
        PagingMode::Level5 => walk_long(regs, mem, gva, 5),
    }
}

/// The most table entries one walk reads: five levels.
pub(crate) const MOST_ENTRIES: usize = 5;

/// A translation remembered with the table entries its walk read. The walk
/// is a function of the paging registers and those entries alone, so it
/// still holds while they are unchanged: checking them again is a few loads
/// where a walk is hundreds of instructions (the per-step `hlt` check).
#[derive(Clone, Copy, Debug)]
pub struct RememberedTranslation {
    regs: PagingRegisters,
    /// The linear page translated (the address shifted right by 12).
    page: u64,
    /// The guest-physical address of that page.
    gpa_page: u64,
    /// Each entry read, as u64 reads (u32 entries are read as the u64
    /// holding them, see `PhysicalMemory::read_u32`), with where it lies in
    /// the host when the memory said: looked at again with a load each.
    entries: PlacedWords<MOST_ENTRIES>,
}

impl RememberedTranslation {
    /// Walks `gva` and remembers the walk.
    pub fn walk(
        regs: &PagingRegisters,
        mem: &impl PhysicalMemory,
        gva: u64,
    ) -> Result<(Translation, RememberedTranslation), WalkError> {
        let recording = Recording { mem, entries: Default::default() };
        let translation = translate(regs, &recording, gva)?;
        let remembered = RememberedTranslation {
            regs: *regs,
            page: gva >> 12,
            gpa_page: translation.gpa & !0xfff,
            entries: recording.entries.get(),
        };
        Ok((translation, remembered))
    }

    /// The guest-physical address of `gva` by the remembered walk, if it
    /// still holds: the same paging registers, the same linear page, and
    /// every entry the walk read unchanged.
    pub fn translate(&self, regs: &PagingRegisters, mem: &impl PhysicalMemory, gva: u64) -> Option<u64> {
        let holds = self.is_for(regs, gva)
            && match mem.placed_words_hold(&self.entries) {
                Some(holds) => holds,
                None => self.entries.by_address().all(|(gpa, value)| mem.read_u64(gpa) == Some(value)),
            };
        holds.then(|| self.gpa_of(gva))
    }

    /// [`RememberedTranslation::translate`] where the memory can tell by
    /// where the entries lie, else `None`: the nearly-always answer in a
    /// few loads.
    #[inline(always)]
    fn translate_by_places(&self, regs: &PagingRegisters, mem: &impl PhysicalMemory, gva: u64) -> Option<u64> {
        let holds = self.is_for(regs, gva) && mem.placed_words_hold(&self.entries) == Some(true);
        holds.then(|| self.gpa_of(gva))
    }

    /// True when the walk was of `gva`'s page with `regs`.
    #[inline(always)]
    fn is_for(&self, regs: &PagingRegisters, gva: u64) -> bool {
        *regs == self.regs && gva >> 12 == self.page
    }

    #[inline(always)]
    fn gpa_of(&self, gva: u64) -> u64 {
        self.gpa_page | (gva & 0xfff)
    }
}

/// The last `N` walks remembered, for translations that keep landing on
/// the same few pages (RIP's page at each step, the breakpoints' pages at
/// each stop): a remembered walk where one still holds, else a new walk,
/// which replaces the oldest.
#[derive(Clone, Copy, Debug)]
pub struct RememberedWalks<const N: usize> {
    walks: [Option<RememberedTranslation>; N],
    /// Where the next new walk goes.
    next: usize,
}

impl<const N: usize> Default for RememberedWalks<N> {
    fn default() -> Self {
        RememberedWalks { walks: [None; N], next: 0 }
    }
}

impl<const N: usize> RememberedWalks<N> {
    /// The guest-physical address of `gva`. Inlined, it is the check of
    /// the remembered walks' entries where they lie; anything else is out
    /// of line.
    #[inline(always)]
    pub fn translate(&mut self, regs: &PagingRegisters, mem: &impl PhysicalMemory, gva: u64) -> Result<u64, WalkError> {
        match self.walks.iter().flatten().find_map(|walk| walk.translate_by_places(regs, mem, gva)) {
            Some(gpa) => Ok(gpa),
            None => self.translate_slowly(regs, mem, gva),
        }
    }

    /// [`RememberedWalks::translate`] when no walk holds by where its
    /// entries lie: by their addresses, else a new walk.
    #[inline(never)]
    fn translate_slowly(
        &mut self,
        regs: &PagingRegisters,
        mem: &impl PhysicalMemory,
        gva: u64,
    ) -> Result<u64, WalkError> {
        if let Some(gpa) = self.walks.iter().flatten().find_map(|walk| walk.translate(regs, mem, gva)) {
            return Ok(gpa);
        }
        let (translation, walk) = RememberedTranslation::walk(regs, mem, gva)?;
        self.walks[self.next] = Some(walk);
        self.next = (self.next + 1) % N;
        Ok(translation.gpa)
    }
}

/// Memory that remembers the u64s read through it (at most
/// [`MOST_ENTRIES`]; a walk reads no more).
struct Recording<'m, M> {
    mem: &'m M,
    entries: Cell<PlacedWords<MOST_ENTRIES>>,
}

impl<M: PhysicalMemory> PhysicalMemory for Recording<'_, M> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let (value, place) = self.mem.read_u64_placed(gpa)?;
        let mut entries = self.entries.get();
        entries.push(gpa, place, value);
        self.entries.set(entries);
        Some(value)
    }
}

fn walk_32bit(
    regs: &PagingRegisters,
    mem: &impl PhysicalMemory,
    gva: u64,
    pse: bool,
) -> Result<Translation, WalkError> {
    let mut perms = Permissions { nx_enabled: false, ..Permissions::new(regs) };
    let pde_addr = (regs.cr3 & 0xffff_f000) + ((gva >> 22) & 0x3ff) * 4;
    let pde = u64::from(mem.read_u32(pde_addr).ok_or(WalkError::TableNotInMemory)?);
    if pde & PRESENT == 0 {
        return Err(WalkError::NotPresent { level: 2 });
    }
    perms.apply(pde);
    if pse && pde & PAGE_SIZE_BIT != 0 {
        // PSE-36: PDE bits 13-20 are physical address bits 32-39.
        let base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
        return Ok(perms.finish(base | (gva & 0x3f_ffff), 4 << 20));
    }
    let pte_addr = (pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4;
    let pte = u64::from(mem.read_u32(pte_addr).ok_or(WalkError::TableNotInMemory)?);
    if pte & PRESENT == 0 {
        return Err(WalkError::NotPresent { level: 1 });
    }
    perms.apply(pte);
    Ok(perms.finish((pte & 0xffff_f000) | (gva & 0xfff), 4096))
}

fn walk_pae(regs: &PagingRegisters, mem: &impl PhysicalMemory, gva: u64) -> Result<Translation, WalkError> {
    let pdpte_addr = (regs.cr3 & 0xffff_ffe0) + ((gva >> 30) & 3) * 8;
    let pdpte = mem.read_u64(pdpte_addr).ok_or(WalkError::TableNotInMemory)?;
    if pdpte & PRESENT == 0 {
        return Err(WalkError::NotPresent { level: 3 });
    }
    // PAE PDPTEs carry no R/W, U/S or NX bits.
    walk_levels(mem, gva, pdpte & ADDRESS_MASK, 2, Permissions::new(regs))
}

fn walk_long(
    regs: &PagingRegisters,
    mem: &impl PhysicalMemory,
    gva: u64,
    levels: u8,
) -> Result<Translation, WalkError> {
    let top_bit = if levels == 5 { 56 } else { 47 };
    let sign = (gva as i64) >> top_bit;
    if sign != 0 && sign != -1 {
        return Err(WalkError::NonCanonical);
    }
    walk_levels(mem, gva, regs.cr3 & ADDRESS_MASK, levels, Permissions::new(regs))
}

/// Walks 64-bit entries from the table at `table` (of level `level`) down.
fn walk_levels(
    mem: &impl PhysicalMemory,
    gva: u64,
    mut table: u64,
    mut level: u8,
    mut perms: Permissions,
) -> Result<Translation, WalkError> {
    loop {
        let shift = 12 + 9 * (u32::from(level) - 1);
        let entry_addr = table + ((gva >> shift) & 0x1ff) * 8;
        let entry = mem.read_u64(entry_addr).ok_or(WalkError::TableNotInMemory)?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent { level });
        }
        perms.apply(entry);
        let large = matches!(level, 2 | 3) && entry & PAGE_SIZE_BIT != 0;
        if level == 1 || large {
            let page_size = 1u64 << shift;
            let base = entry & ADDRESS_MASK & !(page_size - 1);
            return Ok(perms.finish(base | (gva & (page_size - 1)), page_size));
        }
        table = entry & ADDRESS_MASK;
        level -= 1;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Sparse guest-physical memory of u64 words.
    #[derive(Default)]
    pub(crate) struct Tables {
        words: HashMap<u64, u64>,
    }

    impl Tables {
        pub(crate) fn set64(&mut self, gpa: u64, value: u64) {
            self.words.insert(gpa, value);
        }
        pub(crate) fn set32(&mut self, gpa: u64, value: u32) {
            let word = self.words.entry(gpa & !7).or_insert(0);
            if gpa & 4 == 0 {
                *word = (*word & !0xffff_ffff) | u64::from(value);
            } else {
                *word = (*word & 0xffff_ffff) | (u64::from(value) << 32);
            }
        }
    }

    impl PhysicalMemory for Tables {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            // Tables live below 16 MiB in these tests; anything else is unbacked.
            (gpa < 0x100_0000).then(|| self.words.get(&gpa).copied().unwrap_or(0))
        }
    }

    pub(crate) const RW: u64 = PRESENT | WRITABLE;
    const RWU: u64 = PRESENT | WRITABLE | USER;

    pub(crate) fn long_mode(cr3: u64, la57: bool) -> PagingRegisters {
        PagingRegisters {
            cr0: CR0_PG | 1,
            cr3,
            cr4: CR4_PAE | if la57 { CR4_LA57 } else { 0 },
            efer: EFER_LMA | EFER_NXE | (1 << 8),
        }
    }

    /// The three upper levels of a 4-level walk of the first 2 MiB: the
    /// root at 0x1000, the page table at 0x4000, each entry stored by `set`.
    fn link_to_page_table(mut set: impl FnMut(u64, u64)) {
        set(0x1000, 0x2000 | RW);
        set(0x2000, 0x3000 | RW);
        set(0x3000, 0x4000 | RW);
    }

    #[test]
    fn paging_off_is_identity_truncated_to_32_bits() {
        let regs = PagingRegisters::default();
        let t = translate(&regs, &Tables::default(), 0x1_2345_6789).unwrap();
        assert_eq!((t.gpa, t.writable, t.user, t.executable), (0x2345_6789, true, true, true));
    }

    #[test]
    fn four_level_4k_page() {
        let mut m = Tables::default();
        // gva 0x0000_7fff_ffe0_1234: PML4 255, PDPT 511, PD 511, PT 1.
        let gva = 0x0000_7fff_ffe0_1234;
        m.set64(0x1000 + 255 * 8, 0x2000 | RWU);
        m.set64(0x2000 + 511 * 8, 0x3000 | RWU);
        m.set64(0x3000 + 511 * 8, 0x4000 | RWU);
        m.set64(0x4000 + 8, 0xabc_d000 | RWU | NO_EXECUTE);
        let t = translate(&long_mode(0x1000, false), &m, gva).unwrap();
        assert_eq!(t, Translation { gpa: 0xabc_d234, page_size: 4096, writable: true, user: true, executable: false });
    }

    #[test]
    fn four_level_2m_and_1g_pages() {
        let mut m = Tables::default();
        m.set64(0x1000, 0x2000 | RW);
        m.set64(0x2000, 0x3000 | RW); // PDPT[0] -> PD
        m.set64(0x3000 + 8, 0x4000_0000 | RW | PAGE_SIZE_BIT); // PD[1]: 2 MiB page
        m.set64(0x2000 + 8, 0x8000_0000 | PRESENT | PAGE_SIZE_BIT); // PDPT[1]: 1 GiB, read-only
        let regs = long_mode(0x1000, false);
        let t = translate(&regs, &m, 0x20_1234).unwrap();
        assert_eq!((t.gpa, t.page_size, t.writable, t.user), (0x4000_1234, 2 << 20, true, false));
        let t = translate(&regs, &m, 0x4123_4567).unwrap();
        assert_eq!((t.gpa, t.page_size, t.writable), (0x8123_4567, 1 << 30, false));
    }

    #[test]
    fn a_remembered_translation_holds_until_an_entry_or_a_register_changes() {
        let mut m = Tables::default();
        link_to_page_table(|gpa, entry| m.set64(gpa, entry));
        m.set64(0x4000 + 5 * 8, 0x77_7000 | RW);
        let regs = long_mode(0x1000, false);
        let (t, remembered) = RememberedTranslation::walk(&regs, &m, 0x5123).unwrap();
        assert_eq!(t.gpa, 0x77_7123);
        assert_eq!(remembered.translate(&regs, &m, 0x5fff), Some(0x77_7fff), "anywhere on the page");
        assert_eq!(remembered.translate(&regs, &m, 0x6000), None, "another page");
        assert_eq!(remembered.translate(&long_mode(0x9000, false), &m, 0x5123), None, "another CR3");
        // The guest remaps the page: any entry of the walk changing undoes it.
        for (entry, value) in [(0x4000 + 5 * 8, 0x88_8000 | RW), (0x3000, 0x5000 | RW), (0x1000, 0)] {
            let mut changed = Tables { words: m.words.clone() };
            changed.set64(entry, value);
            assert_eq!(remembered.translate(&regs, &changed, 0x5123), None, "entry {entry:#x} changed");
        }
        // A 32-bit walk reads u32 entries through the u64s holding them.
        let mut m32 = Tables::default();
        m32.set32(0x1000 + 4, 0x2000 | RW as u32); // PDE 1
        m32.set32(0x2000 + 2 * 4, 0x5_5000 | RW as u32); // PTE 2
        let regs32 = PagingRegisters { cr0: CR0_PG | 1, cr3: 0x1000, cr4: 0, efer: 0 };
        let gva32 = (1 << 22) | (2 << 12) | 0x10;
        let (t, remembered) = RememberedTranslation::walk(&regs32, &m32, gva32).unwrap();
        assert_eq!((t.gpa, remembered.translate(&regs32, &m32, gva32)), (0x5_5010, Some(0x5_5010)));
        m32.set32(0x2000 + 2 * 4, 0x6_6000 | RW as u32);
        assert_eq!(remembered.translate(&regs32, &m32, gva32), None);
    }

    #[test]
    fn a_walk_remembered_in_guest_memory_reads_its_entries_where_they_lie() {
        use crate::memory::tests::{library_ram, FakeKvm};
        use crate::memory::GuestMemory;
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        library_ram(&mut mem, &kvm, 0, 0x10000);
        let set = |mem: &GuestMemory, gpa: u64, value: u64| mem.write(gpa, &value.to_le_bytes()).unwrap();
        link_to_page_table(|gpa, entry| set(&mem, gpa, entry));
        set(&mem, 0x4000 + 5 * 8, 0x7000 | RW);
        let regs = long_mode(0x1000, false);
        let (t, remembered) = RememberedTranslation::walk(&regs, &mem, 0x5123).unwrap();
        assert_eq!(t.gpa, 0x7123);
        assert_eq!(mem.placed_words_hold(&remembered.entries), Some(true), "every entry placed");
        assert_eq!(remembered.translate(&regs, &mem, 0x5abc), Some(0x7abc));
        // Each entry the guest changes undoes the walk, read where it lies.
        for (entry, value) in [(0x4000 + 5 * 8, 0x8000 | RW), (0x3000, 0x5000 | RW), (0x1000, 0)] {
            let before = mem.read_u64(entry).unwrap();
            set(&mem, entry, value);
            assert_eq!(remembered.translate(&regs, &mem, 0x5123), None, "entry {entry:#x} changed");
            set(&mem, entry, before);
            assert_eq!(remembered.translate(&regs, &mem, 0x5123), Some(0x7123));
        }
        // New slots: the places are forgotten, and the entries read by address.
        library_ram(&mut mem, &kvm, 0x100_0000, 0x1000);
        assert_eq!(remembered.translate(&regs, &mem, 0x5123), Some(0x7123));
        set(&mem, 0x2000, 0x6000 | RW);
        assert_eq!(remembered.translate(&regs, &mem, 0x5123), None);

        // Without paging a walk reads no entry: it holds where it lies too.
        let off = PagingRegisters { cr0: 1, cr3: 0, cr4: 0, efer: 0 };
        let (_, remembered) = RememberedTranslation::walk(&off, &mem, 0x5123).unwrap();
        assert_eq!(remembered.translate_by_places(&off, &mem, 0x5abc), Some(0x5abc));
    }

    #[test]
    fn remembered_walks_keep_the_last_n_pages_and_walk_the_others() {
        let mut m = Tables::default();
        link_to_page_table(|gpa, entry| m.set64(gpa, entry));
        for page in 0..4u64 {
            m.set64(0x4000 + page * 8, (0x10_0000 + page * 0x1000) | RW);
        }
        let regs = long_mode(0x1000, false);
        let mut walks = RememberedWalks::<2>::default();
        assert_eq!(walks.translate(&regs, &m, 0x0123), Ok(0x10_0123));
        assert_eq!(walks.translate(&regs, &m, 0x1456), Ok(0x10_1456));
        assert!(walks.walks.iter().all(Option::is_some), "both pages remembered");
        // A third page replaces the oldest walk, and every answer stays right.
        assert_eq!(walks.translate(&regs, &m, 0x2789), Ok(0x10_2789));
        assert_eq!(walks.walks[0].map(|w| w.page), Some(2));
        assert_eq!(walks.translate(&regs, &m, 0x0abc), Ok(0x10_0abc));
        // A remapped page is walked again, not answered from memory.
        m.set64(0x4000 + 8, 0x77_7000 | RW);
        assert_eq!(walks.translate(&regs, &m, 0x1000), Ok(0x77_7000));
        m.set64(0x4000 + 8, 0);
        assert_eq!(walks.translate(&regs, &m, 0x1000), Err(WalkError::NotPresent { level: 1 }));
    }

    #[test]
    fn five_level_walk_uses_bit_48_to_56_for_the_top_table() {
        let mut m = Tables::default();
        let gva = 0x0001_0000_0000_0000u64 | 0x5000; // PML5 index 1
        m.set64(0x1000 + 8, 0x2000 | RW);
        m.set64(0x2000, 0x3000 | RW);
        m.set64(0x3000, 0x4000 | RW);
        m.set64(0x4000, 0x5000 | RW);
        m.set64(0x5000 + 5 * 8, 0x77_7000 | RW);
        let t = translate(&long_mode(0x1000, true), &m, gva).unwrap();
        assert_eq!(t.gpa, 0x77_7000);
        // The same address is non-canonical with 4-level paging.
        assert_eq!(translate(&long_mode(0x1000, false), &m, gva), Err(WalkError::NonCanonical));
    }

    #[test]
    fn non_canonical_addresses_are_refused() {
        let regs = long_mode(0x1000, false);
        assert_eq!(translate(&regs, &Tables::default(), 0x0000_8000_0000_0000), Err(WalkError::NonCanonical));
        assert_eq!(translate(&regs, &Tables::default(), 0xffff_7fff_ffff_ffff), Err(WalkError::NonCanonical));
        // The canonical upper half walks (and here finds nothing).
        assert_eq!(
            translate(&regs, &Tables::default(), 0xffff_8000_0000_0000),
            Err(WalkError::NotPresent { level: 4 })
        );
    }

    #[test]
    fn missing_entries_report_their_level() {
        let mut m = Tables::default();
        m.set64(0x1000, 0x2000 | RW);
        m.set64(0x2000, 0x3000 | RW);
        let regs = long_mode(0x1000, false);
        assert_eq!(translate(&regs, &m, 0x1000), Err(WalkError::NotPresent { level: 2 }));
        m.set64(0x3000, 0x4000 | RW);
        assert_eq!(translate(&regs, &m, 0x1000), Err(WalkError::NotPresent { level: 1 }));
    }

    #[test]
    fn tables_outside_memory_are_an_error_not_a_panic() {
        let mut m = Tables::default();
        m.set64(0x1000, 0x7fff_0000_0000 | RW);
        assert_eq!(translate(&long_mode(0x1000, false), &m, 0), Err(WalkError::TableNotInMemory));
    }

    #[test]
    fn permissions_are_the_and_of_every_level() {
        let mut m = Tables::default();
        m.set64(0x1000, 0x2000 | RWU);
        m.set64(0x2000, 0x3000 | PRESENT | USER); // read-only here
        m.set64(0x3000, 0x4000 | RWU | NO_EXECUTE);
        m.set64(0x4000, 0x9000 | RW); // supervisor here
        let t = translate(&long_mode(0x1000, false), &m, 0x10).unwrap();
        assert_eq!((t.writable, t.user, t.executable), (false, false, false));
    }

    #[test]
    fn nx_is_ignored_without_efer_nxe() {
        let mut m = Tables::default();
        m.set64(0x1000, 0x2000 | RW | NO_EXECUTE);
        m.set64(0x2000, 0x3000 | RW);
        m.set64(0x3000, PAGE_SIZE_BIT | RW);
        let mut regs = long_mode(0x1000, false);
        regs.efer &= !EFER_NXE;
        assert!(translate(&regs, &m, 0x1000).unwrap().executable);
    }

    #[test]
    fn pae_walk_with_4k_and_2m_pages() {
        let mut m = Tables::default();
        let regs = PagingRegisters { cr0: CR0_PG | 1, cr3: 0x1020, cr4: CR4_PAE, efer: 0 };
        m.set64(0x1020 + 3 * 8, 0x2000 | PRESENT); // PDPTE 3 (no RW/US bits in PAE)
        m.set64(0x2000 + 2 * 8, 0x3000 | RWU); // PD[2]
        m.set64(0x3000 + 4 * 8, 0x12_3000 | RWU); // PT[4]
        m.set64(0x2000 + 3 * 8, 0x60_0000 | RW | PAGE_SIZE_BIT); // PD[3]: 2 MiB
        let t = translate(&regs, &m, 0xc040_4abc).unwrap();
        assert_eq!((t.gpa, t.page_size, t.user), (0x12_3abc, 4096, true));
        let t = translate(&regs, &m, 0xc060_0010).unwrap();
        assert_eq!((t.gpa, t.page_size, t.user), (0x60_0010, 2 << 20, false));
        // Linear addresses are 32 bits wide in PAE mode.
        assert_eq!(translate(&regs, &m, 0x1_c040_4abc).unwrap().gpa, 0x12_3abc);
    }

    #[test]
    fn legacy_32bit_walk_with_4k_and_4m_pages() {
        let mut m = Tables::default();
        let regs = PagingRegisters { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PSE, efer: 0 };
        m.set32(0x1000 + 4, 0x2000 | RWU as u32); // PDE 1
        m.set32(0x2000 + 4 * 3, 0x0055_5000 | RW as u32); // PTE 3
        m.set32(0x1000 + 4 * 2, (0x0080_0000 | (0x3 << 13) | RW | PAGE_SIZE_BIT) as u32); // PDE 2: 4 MiB, PSE-36
        let t = translate(&regs, &m, 0x0040_3123).unwrap();
        assert_eq!((t.gpa, t.page_size, t.user), (0x55_5123, 4096, false));
        let t = translate(&regs, &m, 0x0080_1234).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x3_0080_1234, 4 << 20));
        // Without CR4.PSE the PS bit is ignored and PDE 2 is a page table.
        let no_pse = PagingRegisters { cr4: 0, ..regs };
        assert!(translate(&no_pse, &m, 0x0080_1234).is_err());
    }
}
