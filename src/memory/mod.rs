//! Guest-physical memory: the slot table and the host mappings behind it.
//!
//! A [`Slot`] is guest RAM as the VMM declared it. KVM sees each slot as one
//! or more [`Piece`]s: normally one, but a page the debugger protects (a
//! watchpoint) is cut out of its slot, as a read-only piece or as a hole,
//! and put back when the protection ends, so the VMM's view (queries, dirty
//! bitmaps, aliases) never changes. Slot arithmetic is plain Rust; the
//! ioctls go through a [`SlotRegistry`], so it is unit tested without
//! `/dev/kvm`.

mod kvm_slots;

use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};

use self::kvm_slots::{logged_dirty_pages, relayout, KvmSlotNumbers};
pub use self::kvm_slots::{Piece, SlotRegistry};
use crate::error::{Errno, Result};

/// The guest page size that slots, dirty bitmaps and memory maps use.
pub(crate) const PAGE_SIZE: u64 = 4096;

/// The address of the guest page that holds `addr`.
pub(crate) const fn page_of(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

/// Splits `[addr, addr + len)` into runs that stay within one page, as
/// (address, offset from `addr`, length).
pub(crate) fn page_runs(addr: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        if offset >= len {
            return None;
        }
        let at = addr.wrapping_add(offset as u64);
        let n = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(len - offset);
        let run = (at, offset, n);
        offset += n;
        Some(run)
    })
}

/// Identifies one host mapping owned by the library.
pub type MappingId = u64;

/// What a slot is, for the calls that look for one kind only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// Guest RAM: created by `kvm_create`, `kvm_create_phys_mem` or
    /// `kvm_register_userspace_phys_mem`.
    Ram,
    /// A second guest-physical view of RAM (`kvm_create_memory_alias`, the
    /// BIOS shadow below 4 GiB).
    Alias,
}

/// Who owns the host memory behind a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A mapping the library made and unmaps when no slot uses it.
    Library(MappingId),
    /// Memory the VMM registered and owns.
    Caller,
}

/// One range of guest RAM as the VMM declared it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The library's number for the slot (not KVM's: see [`Piece`]).
    pub id: u32,
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes, a multiple of [`PAGE_SIZE`].
    pub len: u64,
    /// Host virtual address of `gpa`.
    pub host: u64,
    /// The slot's own dirty-logging flag (`kvm_dirty_pages_log_reset` goes back to it).
    pub log: bool,
    /// Guest writes exit as MMIO instead of reaching memory.
    pub readonly: bool,
    /// RAM or alias.
    pub kind: SlotKind,
    /// Who owns the host memory.
    pub backing: Backing,
}

impl Slot {
    /// One past the last guest-physical address.
    pub fn end(&self) -> u64 {
        self.gpa + self.len
    }

    /// True when `gpa` lies inside the slot.
    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa < self.end()
    }

    /// True when the slot shares at least one byte with `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.gpa < end && start < self.end()
    }

    /// Host address of `gpa`, which must lie inside the slot.
    fn host_of(&self, gpa: u64) -> u64 {
        self.host + (gpa - self.gpa)
    }

    /// The part of this slot over `[start, end)` (clipped to the slot), as a
    /// new slot description with the same backing and flags.
    fn piece(&self, start: u64, end: u64) -> Slot {
        let start = start.max(self.gpa);
        let end = end.min(self.end());
        Slot { gpa: start, len: end - start, host: self.host_of(start), ..*self }
    }
}

/// Where a u64 of guest memory lies in the host, found by
/// [`GuestMemory::read_u64_placed`]: kept in [`PlacedWords`] to be read
/// again without a slot search, for as long as the memory keeps the slots
/// it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordPlace {
    layout: u64,
    host: u64,
}

/// Up to `N` u64s of guest memory read, with the values they held and,
/// where all were found in one slot layout, where they lie in the host:
/// checked again by [`GuestMemory::placed_words_hold`] with one comparison
/// of the layout and a load each, else by address (a remembered page
/// walk's entries).
#[derive(Clone, Copy, Debug)]
pub struct PlacedWords<const N: usize> {
    /// The layout every word was found in; [`NO_LAYOUT`] when one had no
    /// place, or another layout, or did not fit: then none is checked so.
    layout: u64,
    len: usize,
    /// Each word's host address (0 without a place) and value: apart from
    /// the guest addresses, which only a check by address reads.
    words: [(u64, u64); N],
    /// Each word's guest-physical address.
    gpas: [u64; N],
}

/// No [`GuestMemory`]'s layout ([`new_layout`] starts at 1).
const NO_LAYOUT: u64 = 0;

impl<const N: usize> Default for PlacedWords<N> {
    fn default() -> Self {
        PlacedWords { layout: NO_LAYOUT, words: [(0, 0); N], gpas: [0; N], len: 0 }
    }
}

impl<const N: usize> PlacedWords<N> {
    /// Adds the word at `gpa` read as `value` at `place` (`None`: it had
    /// none). Words past `N` are not kept.
    pub fn push(&mut self, gpa: u64, place: Option<WordPlace>, value: u64) {
        let fits = self.len < N;
        self.layout = match place {
            Some(place) if fits && (self.len == 0 || place.layout == self.layout) => place.layout,
            _ => NO_LAYOUT,
        };
        if fits {
            self.words[self.len] = (place.map_or(0, |place| place.host), value);
            self.gpas[self.len] = gpa;
            self.len += 1;
        }
    }

    /// Each word's guest-physical address and the value it held.
    pub fn by_address(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.gpas.iter().zip(&self.words[..self.len]).map(|(&gpa, &(_, value))| (gpa, value))
    }
}

/// Numbers the slot layouts of every [`GuestMemory`] apart, so that a place
/// found in one layout (or one VM) is never taken for another's.
static NEXT_LAYOUT: AtomicU64 = AtomicU64::new(1);

fn new_layout() -> u64 {
    NEXT_LAYOUT.fetch_add(1, Ordering::Relaxed)
}

/// How the debugger protects one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Guest stores exit as MMIO; loads and fetches run normally.
    ReadOnly,
    /// Every guest access exits as MMIO.
    Unbacked,
}

/// An anonymous host mapping that backs guest RAM; unmapped on drop.
#[derive(Debug)]
struct HostMapping {
    id: MappingId,
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; it is shared
// with the guest, and every access to it goes through raw pointer copies.
unsafe impl Send for HostMapping {}

impl HostMapping {
    fn anonymous(id: MappingId, len: usize) -> Result<HostMapping> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Errno::NOMEM);
        }
        let addr = NonNull::new(addr.cast::<u8>()).ok_or(Errno::NOMEM)?;
        Ok(HostMapping { id, addr, len })
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are exactly what mmap returned, and no slot
        // refers to the mapping any more (GuestMemory drops it only then).
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

/// The guest-physical memory of one VM.
#[derive(Debug)]
pub struct GuestMemory {
    slots: Vec<Slot>,
    /// The KVM slots of each slot, by slot id.
    pieces: BTreeMap<u32, Vec<Piece>>,
    /// Pages the debugger protects, by guest-physical page address.
    protected: BTreeMap<u64, Protection>,
    /// Pages known dirty that KVM's logs no longer show: stores the library
    /// completed for the guest (to a protected page), and pages KVM had
    /// logged in a KVM slot that was then re-cut.
    dirty_outside_kvm: BTreeSet<u64>,
    mappings: Vec<HostMapping>,
    next_mapping: MappingId,
    next_slot: u32,
    log_all: bool,
    kvm_slots: KvmSlotNumbers,
    /// Vcpus stepping through an instruction with every protection lifted
    /// (see [`GuestMemory::lift_protections`]).
    lifts: u32,
    /// The layout number of the current slots: a new one at every change.
    layout: u64,
}

/// Checks that `[start, start + len)` is a non-empty, page-aligned range
/// that does not wrap, and returns its end.
pub fn page_range(start: u64, len: u64) -> Result<u64> {
    if len == 0 || start % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
        return Err(Errno::INVAL);
    }
    start.checked_add(len).ok_or(Errno::INVAL)
}

impl GuestMemory {
    /// An empty table for a host with `max_slots` usable slot numbers.
    pub fn new(max_slots: u32) -> GuestMemory {
        GuestMemory {
            slots: Vec::new(),
            pieces: BTreeMap::new(),
            protected: BTreeMap::new(),
            dirty_outside_kvm: BTreeSet::new(),
            mappings: Vec::new(),
            next_mapping: 1,
            next_slot: 0,
            log_all: false,
            kvm_slots: KvmSlotNumbers::new(max_slots),
            lifts: 0,
            layout: new_layout(),
        }
    }

    /// The slots, in creation order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot containing `gpa`.
    pub fn slot_containing(&self, gpa: u64) -> Option<&Slot> {
        self.slots.iter().find(|s| s.contains(gpa))
    }

    /// Maps `len` bytes of fresh zeroed host memory and returns its id and
    /// host address. No slot is created: one that uses it must follow, or
    /// [`GuestMemory::drop_unused_mappings`].
    pub fn map_anonymous(&mut self, len: u64) -> Result<(MappingId, u64)> {
        let len = usize::try_from(len).map_err(|_| Errno::NOMEM)?;
        let id = self.next_mapping;
        let mapping = HostMapping::anonymous(id, len)?;
        let host = mapping.addr.as_ptr() as u64;
        self.mappings.push(mapping);
        self.next_mapping += 1;
        Ok((id, host))
    }

    /// Host address of `[gpa, gpa + len)` when one slot backs all of it.
    pub fn host_address(&self, gpa: u64, len: u64) -> Option<u64> {
        let end = gpa.checked_add(len)?;
        let slot = self.slot_containing(gpa)?;
        (end <= slot.end()).then(|| slot.host_of(gpa))
    }

    fn flags(&self, slot: &Slot) -> u32 {
        let mut flags = 0;
        if slot.log || self.log_all {
            flags |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        if slot.readonly {
            flags |= KVM_MEM_READONLY;
        }
        flags
    }

    /// The KVM slots `slot` needs in `[lo, hi)` (edges of pieces or of
    /// protected pages): the range minus its protected pages, each
    /// read-only page a piece of its own.
    fn layout_between(&self, slot: &Slot, lo: u64, hi: u64) -> Vec<(u64, u64, u32)> {
        let flags = self.flags(slot);
        let mut layout = Vec::new();
        let mut cursor = lo;
        let protected = if self.lifts > 0 { None } else { Some(self.protected.range(lo..hi)) };
        for (&page, &protection) in protected.into_iter().flatten() {
            if page > cursor {
                layout.push((cursor, page - cursor, flags));
            }
            if protection == Protection::ReadOnly {
                layout.push((page, PAGE_SIZE, flags | KVM_MEM_READONLY));
            }
            cursor = page + PAGE_SIZE;
        }
        if cursor < hi {
            layout.push((cursor, hi - cursor, flags));
        }
        layout
    }

    /// Gives KVM the pieces slot `slot` needs now, changing only those that
    /// differ (see [`kvm_slots::relayout`]). Pages logged dirty in pieces
    /// that go are kept for the next bitmap while the slot logs.
    fn register_pieces(&mut self, kvm: &dyn SlotRegistry, slot: &Slot) -> Result<()> {
        self.register_pieces_between(kvm, slot, slot.gpa, slot.end())
    }

    fn unregister_pieces(&mut self, kvm: &dyn SlotRegistry, slot: &Slot) -> Result<()> {
        self.set_pieces(kvm, slot, 0..u64::MAX, |_, _, _| Vec::new())
    }

    /// [`Self::register_pieces`] for the part of `slot` in `[lo, hi)`: only
    /// the pieces there are looked at, so the cost does not grow with the
    /// number of pieces elsewhere.
    fn register_pieces_between(&mut self, kvm: &dyn SlotRegistry, slot: &Slot, lo: u64, hi: u64) -> Result<()> {
        let layout = |mem: &Self, lo, hi| mem.layout_between(slot, lo, hi);
        self.set_pieces(kvm, slot, lo..hi, layout)
    }

    /// Changes the pieces of `slot` overlapping `window` (widened to whole
    /// pieces) into what `wanted(self, lo, hi)` says for the widened range.
    fn set_pieces(
        &mut self,
        kvm: &dyn SlotRegistry,
        slot: &Slot,
        window: std::ops::Range<u64>,
        wanted: impl Fn(&Self, u64, u64) -> Vec<(u64, u64, u32)>,
    ) -> Result<()> {
        let mut pieces = self.pieces.remove(&slot.id).unwrap_or_default();
        let first = pieces.partition_point(|p| p.gpa + p.len <= window.start);
        let end = pieces.partition_point(|p| p.gpa < window.end);
        let lo = pieces.get(first).filter(|_| first < end).map_or(window.start, |p| p.gpa.min(window.start));
        let hi = pieces[first..end].last().map_or(window.end, |p| (p.gpa + p.len).max(window.end));
        let wanted = wanted(self, lo.max(slot.gpa), hi.min(slot.end()));
        let mut in_window: Vec<Piece> = pieces.drain(first..end).collect();
        let mut dirty = Vec::new();
        let changed = relayout(kvm, &mut self.kvm_slots, &mut in_window, &wanted, |gpa| slot.host_of(gpa), &mut dirty);
        pieces.splice(first..first, in_window);
        if !pieces.is_empty() {
            self.pieces.insert(slot.id, pieces);
        }
        if self.logs_dirty_pages(slot) {
            self.dirty_outside_kvm.extend(dirty);
        }
        changed
    }

    /// The KVM slots, for tests and diagnostics.
    pub fn pieces(&self) -> impl Iterator<Item = &Piece> {
        self.pieces.values().flatten()
    }

    /// Adds a slot over `[slot.gpa, slot.end())`; `slot.id` is assigned here.
    /// Fails with `EEXIST` when the range overlaps an existing slot.
    pub fn add_slot(&mut self, kvm: &dyn SlotRegistry, slot: Slot) -> Result<Slot> {
        let end = page_range(slot.gpa, slot.len)?;
        if slot.host % PAGE_SIZE != 0 {
            return Err(Errno::INVAL);
        }
        if self.slots.iter().any(|s| s.overlaps(slot.gpa, end)) {
            return Err(Errno::EXIST);
        }
        let slot = Slot { id: self.next_slot, ..slot };
        self.next_slot += 1;
        if let Err(e) = self.register_pieces(kvm, &slot) {
            let _ = self.unregister_pieces(kvm, &slot);
            return Err(e);
        }
        self.slots.push(slot);
        self.layout = new_layout();
        Ok(slot)
    }

    fn remove_slot(&mut self, kvm: &dyn SlotRegistry, slot: &Slot) -> Result<()> {
        self.unregister_pieces(kvm, slot)?;
        self.slots.retain(|s| s.id != slot.id);
        self.layout = new_layout();
        Ok(())
    }

    /// Protects guest-physical page `page` (`Some`) or ends its protection
    /// (`None`); the slot around it is re-cut for KVM.
    pub fn set_protection(&mut self, kvm: &dyn SlotRegistry, page: u64, protection: Option<Protection>) -> Result<()> {
        let page = page_of(page);
        match protection {
            Some(p) => self.protected.insert(page, p),
            None => self.protected.remove(&page),
        };
        let Some(slot) = self.slot_containing(page).copied() else { return Ok(()) };
        // Only the pieces between the protected pages around this one change.
        let lo = self.protected.range(slot.gpa..page).next_back().map_or(slot.gpa, |(&p, _)| p + PAGE_SIZE);
        let hi = self.protected.range(page + PAGE_SIZE..slot.end()).next().map_or(slot.end(), |(&p, _)| p);
        self.register_pieces_between(kvm, &slot, lo, hi)
    }

    /// Backs every protected page as plain RAM until the matching
    /// [`GuestMemory::land_protections`] (nested: the last landing
    /// protects again). The protections stay recorded meanwhile.
    pub fn lift_protections(&mut self, kvm: &dyn SlotRegistry) -> Result<()> {
        self.lifts += 1;
        if self.lifts == 1 {
            self.relayout_protected_slots(kvm)?;
        }
        Ok(())
    }

    /// Ends one [`GuestMemory::lift_protections`].
    pub fn land_protections(&mut self, kvm: &dyn SlotRegistry) -> Result<()> {
        self.lifts = self.lifts.saturating_sub(1);
        if self.lifts == 0 {
            self.relayout_protected_slots(kvm)?;
        }
        Ok(())
    }

    fn relayout_protected_slots(&mut self, kvm: &dyn SlotRegistry) -> Result<()> {
        let slots: Vec<Slot> =
            self.slots.iter().filter(|s| self.protected.range(s.gpa..s.end()).next().is_some()).copied().collect();
        slots.iter().try_for_each(|slot| self.register_pieces(kvm, slot))
    }

    /// How page `page` is protected.
    pub fn protection(&self, page: u64) -> Option<Protection> {
        self.protected.get(&page_of(page)).copied()
    }

    /// True when some page is protected and no vcpu has the protections
    /// lifted.
    pub fn protections_in_force(&self) -> bool {
        !self.protected.is_empty() && self.lifts == 0
    }

    /// True when some page is protected.
    pub fn has_protections(&self) -> bool {
        !self.protected.is_empty()
    }

    /// Records that the library stored into `[gpa, gpa + len)` for the guest.
    pub fn note_library_write(&mut self, gpa: u64, len: u64) {
        let first = page_of(gpa);
        let last = page_of(gpa + len.max(1) - 1);
        for page in (first..=last).step_by(PAGE_SIZE as usize) {
            self.dirty_outside_kvm.insert(page);
        }
    }

    /// The dirty-page bitmap of `slot` (one bit per page, `u64` words, least
    /// significant bit first), assembled from its KVM slots and the pages
    /// KVM's logs do not show; both are cleared as they are read.
    pub fn dirty_bitmap(&mut self, kvm: &dyn SlotRegistry, slot: &Slot) -> Result<Vec<u64>> {
        let pages = (slot.len / PAGE_SIZE) as usize;
        let mut bitmap = vec![0u64; pages.div_ceil(64)];
        let mut set = |page: usize| bitmap[page / 64] |= 1 << (page % 64);
        for piece in self.pieces.get(&slot.id).map(Vec::as_slice).unwrap_or_default() {
            for gpa in logged_dirty_pages(kvm, piece)? {
                set(((gpa - slot.gpa) / PAGE_SIZE) as usize);
            }
        }
        let outside: Vec<u64> = self.dirty_outside_kvm.range(slot.gpa..slot.end()).copied().collect();
        for page in outside {
            self.dirty_outside_kvm.remove(&page);
            set(((page - slot.gpa) / PAGE_SIZE) as usize);
        }
        Ok(bitmap)
    }

    /// Makes `[start, start + len)` unbacked: slots inside it go away, slots
    /// that straddle its edges are split and keep their outer parts. Only
    /// the KVM slots that overlap the range change.
    pub fn unback(&mut self, kvm: &dyn SlotRegistry, start: u64, len: u64) -> Result<()> {
        let end = page_range(start, len)?;
        let hit: Vec<Slot> = self.slots.iter().copied().filter(|s| s.overlaps(start, end)).collect();
        for slot in hit {
            let (gone, kept): (Vec<Piece>, Vec<Piece>) = self
                .pieces
                .remove(&slot.id)
                .unwrap_or_default()
                .into_iter()
                .partition(|p| p.gpa < end && start < p.gpa + p.len);
            let mut cut = gone;
            let mut dirty = Vec::new();
            let removed = relayout(kvm, &mut self.kvm_slots, &mut cut, &[], |gpa| slot.host_of(gpa), &mut dirty);
            if self.logs_dirty_pages(&slot) {
                self.dirty_outside_kvm.extend(dirty); // for the outer parts
            }
            self.slots.retain(|s| s.id != slot.id);
            self.layout = new_layout();
            removed?;
            let outer_parts = [(slot.gpa, start.max(slot.gpa)), (end.min(slot.end()), slot.end())];
            for (part_start, part_end) in outer_parts.into_iter().filter(|(a, b)| a < b) {
                let part = Slot { id: self.next_slot, ..slot.piece(part_start, part_end) };
                self.next_slot += 1;
                let inside: Vec<Piece> = kept.iter().copied().filter(|p| part.contains(p.gpa)).collect();
                self.pieces.insert(part.id, inside);
                self.slots.push(part);
                self.register_pieces(kvm, &part)?;
            }
        }
        self.forget_dirty_pages(start, end);
        Ok(())
    }

    /// Forgets the dirty pages kept for `[start, end)`, which holds no RAM
    /// any more.
    fn forget_dirty_pages(&mut self, start: u64, end: u64) {
        self.dirty_outside_kvm.retain(|&page| page < start || page >= end);
    }

    /// Removes the RAM in `[start, start + len)` and unmaps library memory
    /// that no slot uses any more.
    pub fn destroy(&mut self, kvm: &dyn SlotRegistry, start: u64, len: u64) -> Result<()> {
        self.unback(kvm, start, len)?;
        self.drop_unused_mappings();
        Ok(())
    }

    /// Unmaps the library mappings that no slot uses.
    pub fn drop_unused_mappings(&mut self) {
        let slots = &self.slots;
        self.mappings.retain(|m| slots.iter().any(|s| s.backing == Backing::Library(m.id)));
    }

    /// Creates an alias: guest-physical `[gpa, gpa + len)` shows the memory of
    /// `[target, target + len)`, which one RAM slot must back entirely.
    pub fn add_alias(&mut self, kvm: &dyn SlotRegistry, gpa: u64, len: u64, target: u64) -> Result<Slot> {
        page_range(gpa, len)?;
        let target_end = page_range(target, len)?;
        let ram = self
            .slots
            .iter()
            .find(|s| s.kind == SlotKind::Ram && s.contains(target) && target_end <= s.end())
            .copied()
            .ok_or(Errno::INVAL)?;
        let alias = Slot { gpa, len, host: ram.host_of(target), log: false, kind: SlotKind::Alias, ..ram };
        self.add_slot(kvm, alias)
    }

    /// Removes the alias slots that start at `gpa`.
    pub fn remove_alias(&mut self, kvm: &dyn SlotRegistry, gpa: u64) -> Result<()> {
        let ids: Vec<u32> =
            self.slots.iter().filter(|s| s.kind == SlotKind::Alias && s.gpa == gpa).map(|s| s.id).collect();
        if ids.is_empty() {
            return Err(Errno::NOENT);
        }
        for id in ids {
            let Some(alias) = self.slots.iter().find(|s| s.id == id).copied() else { continue };
            self.remove_slot(kvm, &alias)?;
            self.forget_dirty_pages(alias.gpa, alias.end());
        }
        Ok(())
    }

    /// Turns dirty logging on for every slot (`on`), or back to each slot's
    /// own flag.
    pub fn set_log_all(&mut self, kvm: &dyn SlotRegistry, on: bool) -> Result<()> {
        self.log_all = on;
        for slot in self.slots.clone() {
            self.register_pieces(kvm, &slot)?;
        }
        Ok(())
    }

    /// True when dirty pages of `slot` are being logged.
    pub fn logs_dirty_pages(&self, slot: &Slot) -> bool {
        self.flags(slot) & KVM_MEM_LOG_DIRTY_PAGES != 0
    }

    /// Copies guest-physical memory at `gpa` into `buf`, across slots.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        self.for_each_chunk(gpa, buf.len(), |host, offset, n| {
            // SAFETY: `host..host + n` lies inside a slot's live host memory
            // (for_each_chunk checks the slot bounds) and `buf` has room for
            // `offset + n` bytes.
            unsafe { std::ptr::copy_nonoverlapping(host as *const u8, buf.as_mut_ptr().add(offset), n) }
        })
    }

    /// The little-endian u64 at `gpa`: one slot search and one load where
    /// a slot holds all 8 bytes (page-table entries always lie in one).
    pub fn read_u64(&self, gpa: u64) -> Result<u64> {
        self.read_u64_placed(gpa).map(|(value, _)| value)
    }

    /// [`GuestMemory::read_u64`], with where the u64 lies when one slot
    /// holds all of it.
    pub fn read_u64_placed(&self, gpa: u64) -> Result<(u64, Option<WordPlace>)> {
        let end = gpa.checked_add(8).ok_or(Errno::FAULT)?;
        if let Some(slot) = self.slot_containing(gpa).filter(|slot| end <= slot.end()) {
            let host = slot.host_of(gpa);
            // SAFETY: the 8 bytes lie inside the slot's live host memory
            // (checked above); guest memory may be unaligned for a u64.
            let value = u64::from_le(unsafe { (host as *const u64).read_unaligned() });
            return Ok((value, Some(WordPlace { layout: self.layout, host })));
        }
        let mut bytes = [0u8; 8];
        self.read(gpa, &mut bytes)?;
        Ok((u64::from_le_bytes(bytes), None))
    }

    /// True when every word of `words` still holds its value (always where
    /// there is none, a walk without paging), `None` when that cannot be
    /// told by where they lie: the slots changed since they were found,
    /// they were found in another VM's memory, or one had no place.
    #[inline]
    pub fn placed_words_hold<const N: usize>(&self, words: &PlacedWords<N>) -> Option<bool> {
        if words.layout != self.layout {
            return (words.len == 0).then_some(true);
        }
        // SAFETY: layout numbers are unique (and never `NO_LAYOUT`), so these
        // are the slots the words were found in, in this memory: the slot
        // that held each 8 bytes at its host address still does, and its host
        // memory is live while it exists (a library mapping is unmapped only
        // once no slot uses it, and the VMM's stays mapped while registered).
        // Guest memory may be unaligned for a u64.
        let now = |host: u64| u64::from_le(unsafe { (host as *const u64).read_unaligned() });
        Some(words.words[..words.len].iter().all(|&(host, value)| now(host) == value))
    }

    /// The byte at `gpa`: one slot search and one load.
    pub fn read_u8(&self, gpa: u64) -> Result<u8> {
        let slot = self.slot_containing(gpa).ok_or(Errno::FAULT)?;
        // SAFETY: `gpa` lies inside the slot's live host memory.
        Ok(unsafe { (slot.host_of(gpa) as *const u8).read() })
    }

    /// Stores the byte at `gpa`: one slot search and one store.
    pub fn write_u8(&self, gpa: u64, byte: u8) -> Result<()> {
        let slot = self.slot_containing(gpa).ok_or(Errno::FAULT)?;
        // SAFETY: `gpa` lies inside the slot's live host memory.
        unsafe { (slot.host_of(gpa) as *mut u8).write(byte) };
        Ok(())
    }

    /// Copies `buf` into guest-physical memory at `gpa`, across slots.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        self.for_each_chunk(gpa, buf.len(), |host, offset, n| {
            // SAFETY: as in `read`, with the copy going the other way.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr().add(offset), host as *mut u8, n) }
        })
    }

    fn for_each_chunk(&self, gpa: u64, len: usize, mut copy: impl FnMut(u64, usize, usize)) -> Result<()> {
        let end = gpa.checked_add(len as u64).ok_or(Errno::FAULT)?;
        // Nearly every access lies in one slot: one search.
        if let Some(slot) = self.slot_containing(gpa) {
            if end <= slot.end() {
                copy(slot.host_of(gpa), 0, len);
                return Ok(());
            }
        }
        // Check the whole range first so that a failed access copies nothing.
        let mut offset = 0;
        while offset < len {
            let slot = self.slot_containing(gpa + offset as u64).ok_or(Errno::FAULT)?;
            offset += (slot.end() - (gpa + offset as u64)).min((len - offset) as u64) as usize;
        }
        let mut offset = 0;
        while offset < len {
            let at = gpa + offset as u64;
            let slot = self.slot_containing(at).ok_or(Errno::FAULT)?;
            let n = (slot.end() - at).min((len - offset) as u64) as usize;
            copy(slot.host_of(at), offset, n);
            offset += n;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records the slot layout KVM would have, and fakes dirty pages.
    #[derive(Default)]
    pub(crate) struct FakeKvm {
        slots: RefCell<Vec<Piece>>,
        dirty_gpas: RefCell<Vec<u64>>,
        /// Calls that register a new KVM slot, change one, or delete one.
        created: std::cell::Cell<u32>,
        changed: std::cell::Cell<u32>,
        deleted: std::cell::Cell<u32>,
    }

    impl SlotRegistry for FakeKvm {
        fn register(&self, p: &Piece) -> Result<()> {
            let mut slots = self.slots.borrow_mut();
            match slots.iter().find(|e| e.kvm_slot == p.kvm_slot) {
                // Like KVM: an existing slot may change its flags, nothing else.
                Some(e) => {
                    assert_eq!((e.gpa, e.len, e.host), (p.gpa, p.len, p.host), "KVM slot moved in place");
                    self.changed.set(self.changed.get() + 1);
                }
                None => self.created.set(self.created.get() + 1),
            }
            let apart = |e: &Piece| e.kvm_slot == p.kvm_slot || e.gpa + e.len <= p.gpa || p.gpa + p.len <= e.gpa;
            assert!(slots.iter().all(apart), "KVM slots overlap");
            slots.retain(|e| e.kvm_slot != p.kvm_slot);
            slots.push(*p);
            Ok(())
        }
        /// Like KVM, forgets the slot's dirty log with it.
        fn unregister(&self, id: u32) -> Result<()> {
            self.deleted.set(self.deleted.get() + 1);
            let mut slots = self.slots.borrow_mut();
            if let Some(e) = slots.iter().find(|e| e.kvm_slot == id) {
                self.dirty_gpas.borrow_mut().retain(|&g| g < e.gpa || g >= e.gpa + e.len);
            }
            slots.retain(|e| e.kvm_slot != id);
            Ok(())
        }
        /// Like KVM, clears the log as it reads it.
        fn dirty_log(&self, kvm_slot: u32, len: u64) -> Result<Vec<u64>> {
            let slots = self.slots.borrow();
            let slot = slots.iter().find(|e| e.kvm_slot == kvm_slot).unwrap();
            let mut words = vec![0u64; (len / PAGE_SIZE).div_ceil(64) as usize];
            let inside = |g: u64| g >= slot.gpa && g < slot.gpa + slot.len;
            for &gpa in self.dirty_gpas.borrow().iter().filter(|&&g| inside(g)) {
                let page = ((gpa - slot.gpa) / PAGE_SIZE) as usize;
                words[page / 64] |= 1 << (page % 64);
            }
            self.dirty_gpas.borrow_mut().retain(|&g| !inside(g));
            Ok(words)
        }
    }

    impl FakeKvm {
        fn layout(&self) -> Vec<(u64, u64, u64)> {
            let mut v: Vec<_> = self.slots.borrow().iter().map(|e| (e.gpa, e.len, e.host)).collect();
            v.sort();
            v
        }
        fn layout_with_flags(&self) -> Vec<(u64, u64, u64, u32)> {
            let mut v: Vec<_> = self.slots.borrow().iter().map(|e| (e.gpa, e.len, e.host, e.flags)).collect();
            v.sort();
            v
        }
    }

    fn ram(gpa: u64, len: u64, host: u64) -> Slot {
        Slot { id: 0, gpa, len, host, log: false, readonly: false, kind: SlotKind::Ram, backing: Backing::Caller }
    }

    /// `len` bytes of RAM at `gpa` that `mem` maps itself: its mapping and
    /// the host address of `gpa`.
    pub(crate) fn library_ram(mem: &mut GuestMemory, kvm: &FakeKvm, gpa: u64, len: u64) -> (MappingId, u64) {
        let (id, host) = mem.map_anonymous(len).unwrap();
        mem.add_slot(kvm, Slot { backing: Backing::Library(id), ..ram(gpa, len, host) }).unwrap();
        (id, host)
    }

    #[test]
    fn page_runs_split_at_page_boundaries() {
        let runs: Vec<_> = page_runs(0x0ffe, 0x1004).collect();
        assert_eq!(runs, vec![(0x0ffe, 0, 2), (0x1000, 2, 0x1000), (0x2000, 0x1002, 2)]);
        assert_eq!(page_runs(0x5000, 0).count(), 0);
    }

    #[test]
    fn overlapping_slot_is_refused_with_eexist() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, ram(0, 0x10000, 0x100000)).unwrap();
        assert_eq!(mem.add_slot(&kvm, ram(0xf000, 0x2000, 0x200000)), Err(Errno::EXIST));
        assert!(mem.add_slot(&kvm, ram(0x10000, 0x1000, 0x200000)).is_ok());
        assert_eq!(kvm.layout().len(), 2);
    }

    #[test]
    fn unaligned_or_empty_ranges_are_invalid() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        assert_eq!(mem.add_slot(&kvm, ram(0x800, 0x1000, 0x100000)), Err(Errno::INVAL));
        assert_eq!(mem.add_slot(&kvm, ram(0, 0x1800, 0x100000)), Err(Errno::INVAL));
        assert_eq!(mem.add_slot(&kvm, ram(0, 0, 0x100000)), Err(Errno::INVAL));
        assert_eq!(mem.add_slot(&kvm, ram(!0xfff, 0x2000, 0x100000)), Err(Errno::INVAL));
    }

    #[test]
    fn hole_in_the_middle_splits_a_slot_in_two_with_matching_host_addresses() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, ram(0, 0x100000, 0x7000_0000)).unwrap();
        mem.unback(&kvm, 0xa0000, 0x20000).unwrap();
        assert_eq!(kvm.layout(), vec![(0, 0xa0000, 0x7000_0000), (0xc0000, 0x40000, 0x700c_0000)]);
        assert!(mem.slot_containing(0xa0000).is_none());
        assert_eq!(mem.host_address(0xc1000, 8), Some(0x700c_1000));
    }

    #[test]
    fn hole_over_several_slots_keeps_only_the_outer_parts() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, ram(0, 0x4000, 0x10_0000)).unwrap();
        mem.add_slot(&kvm, ram(0x4000, 0x4000, 0x20_0000)).unwrap();
        mem.add_slot(&kvm, ram(0x8000, 0x4000, 0x30_0000)).unwrap();
        mem.unback(&kvm, 0x2000, 0x8000).unwrap();
        assert_eq!(kvm.layout(), vec![(0, 0x2000, 0x10_0000), (0xa000, 0x2000, 0x30_2000)]);
    }

    #[test]
    fn alias_points_at_the_target_host_memory_and_needs_ram_behind_it() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, ram(0, 0x100000, 0x4000_0000)).unwrap();
        let alias = mem.add_alias(&kvm, 0x200000, 0x2000, 0x8000).unwrap();
        assert_eq!(alias.host, 0x4000_8000);
        assert_eq!(mem.add_alias(&kvm, 0x300000, 0x2000, 0x500000), Err(Errno::INVAL));
        assert_eq!(mem.add_alias(&kvm, 0x300000, 0x2000, 0xff000), Err(Errno::INVAL));
        assert_eq!(mem.remove_alias(&kvm, 0x300000), Err(Errno::NOENT));
        mem.remove_alias(&kvm, 0x200000).unwrap();
        assert_eq!(kvm.layout(), vec![(0, 0x100000, 0x4000_0000)]);
    }

    #[test]
    fn log_all_sets_and_resets_each_slots_flag() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, ram(0, 0x1000, 0x10_0000)).unwrap();
        mem.add_slot(&kvm, Slot { log: true, ..ram(0x1000, 0x1000, 0x20_0000) }).unwrap();
        mem.set_log_all(&kvm, true).unwrap();
        assert!(kvm.slots.borrow().iter().all(|e| e.flags == KVM_MEM_LOG_DIRTY_PAGES));
        mem.set_log_all(&kvm, false).unwrap();
        let flags: Vec<u32> = kvm.layout_with_flags().iter().map(|e| e.3).collect();
        assert_eq!(flags, vec![0, KVM_MEM_LOG_DIRTY_PAGES]);
    }

    #[test]
    fn dirty_log_switches_change_flags_in_place_and_delete_nothing() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, ram(0, 0xa0000, 0x10_0000)).unwrap();
        mem.add_slot(&kvm, ram(0xc0000, 0x40000, 0x20_0000)).unwrap();
        mem.set_protection(&kvm, 0xd0000, Some(Protection::ReadOnly)).unwrap();
        let deleted = kvm.deleted.get();
        let created = kvm.created.get();
        for _ in 0..100 {
            mem.set_log_all(&kvm, true).unwrap();
            mem.set_log_all(&kvm, false).unwrap();
        }
        assert_eq!((kvm.deleted.get(), kvm.created.get()), (deleted, created), "no slot went away");
        assert_eq!(kvm.changed.get(), 100 * 2 * 4, "four KVM slots, each switched twice a round");
    }

    #[test]
    fn lifted_protections_back_every_page_until_the_last_landing() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(64);
        mem.add_slot(&kvm, ram(0, 0x10_0000, 0x4000_0000)).unwrap();
        mem.set_protection(&kvm, 0x3000, Some(Protection::ReadOnly)).unwrap();
        mem.set_protection(&kvm, 0x8000, Some(Protection::Unbacked)).unwrap();
        let cut = kvm.layout();
        mem.lift_protections(&kvm).unwrap();
        mem.lift_protections(&kvm).unwrap();
        assert_eq!(kvm.layout(), vec![(0, 0x10_0000, 0x4000_0000)]);
        // A protection changed meanwhile is recorded, not applied.
        mem.set_protection(&kvm, 0x5000, Some(Protection::ReadOnly)).unwrap();
        assert_eq!(kvm.layout(), vec![(0, 0x10_0000, 0x4000_0000)]);
        mem.land_protections(&kvm).unwrap();
        assert_eq!(kvm.layout(), vec![(0, 0x10_0000, 0x4000_0000)], "one lift is still on");
        mem.land_protections(&kvm).unwrap();
        mem.set_protection(&kvm, 0x5000, None).unwrap();
        assert_eq!(kvm.layout(), cut);
    }

    #[test]
    fn re_cutting_around_one_page_always_leaves_the_whole_slots_layout() {
        // Random protections on 64 pages of a slot, some at its edges: after
        // each change KVM holds exactly the layout computed from scratch.
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(4096);
        let slot = mem.add_slot(&kvm, ram(0x10_0000, 64 * PAGE_SIZE, 0x4000_0000)).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let page = slot.gpa + (seed % 64) * PAGE_SIZE;
            let protection = [None, Some(Protection::ReadOnly), Some(Protection::Unbacked)][(seed >> 8) as usize % 3];
            mem.set_protection(&kvm, page, protection).unwrap();
            let whole: Vec<_> = mem
                .layout_between(&slot, slot.gpa, slot.end())
                .into_iter()
                .map(|(gpa, len, _)| (gpa, len, slot.host_of(gpa)))
                .collect();
            assert_eq!(kvm.layout(), whole);
            let pieces: Vec<_> = mem.pieces().map(|p| (p.gpa, p.len, p.host)).collect();
            assert_eq!(pieces, whole, "the table says what KVM has, in address order");
        }
    }

    #[test]
    fn protecting_a_page_re_cuts_only_the_piece_it_lies_in() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(4096);
        mem.add_slot(&kvm, ram(0, 0x1000_0000, 0x4000_0000)).unwrap();
        let mut ops = Vec::new();
        for i in 0..1000u64 {
            let before = kvm.created.get() + kvm.deleted.get() + kvm.changed.get();
            mem.set_protection(&kvm, 0x10_0000 + i * 2 * PAGE_SIZE, Some(Protection::ReadOnly)).unwrap();
            ops.push(kvm.created.get() + kvm.deleted.get() + kvm.changed.get() - before);
        }
        // One piece deleted and at most three made, however many were cut before.
        assert!(ops.iter().all(|&n| n <= 4), "{ops:?}");
        assert_eq!(kvm.slots.borrow().len(), 2 * 1000 + 1);
        for i in 0..1000u64 {
            mem.set_protection(&kvm, 0x10_0000 + i * 2 * PAGE_SIZE, None).unwrap();
        }
        assert_eq!(kvm.layout(), vec![(0, 0x1000_0000, 0x4000_0000)]);
    }

    #[test]
    fn reads_and_writes_cross_slot_boundaries_and_fail_whole_on_a_gap() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        let (id, host) = mem.map_anonymous(0x3000).unwrap();
        mem.add_slot(&kvm, Slot { backing: Backing::Library(id), ..ram(0, 0x1000, host) }).unwrap();
        mem.add_slot(&kvm, Slot { backing: Backing::Library(id), ..ram(0x1000, 0x1000, host + 0x1000) }).unwrap();
        mem.write(0xffc, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut buf = [0u8; 8];
        mem.read(0xffc, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(mem.write(0x1ffc, &[9; 8]), Err(Errno::FAULT));
        let mut tail = [0u8; 4];
        mem.read(0x1ffc, &mut tail).unwrap();
        assert_eq!(tail, [0; 4], "a failed write must not write a partial range");
    }

    #[test]
    fn protecting_pages_cuts_the_slot_and_ending_it_restores_the_layout_exactly() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, Slot { log: true, ..ram(0, 0x10000, 0x4000_0000) }).unwrap();
        let before = kvm.layout_with_flags();
        mem.set_protection(&kvm, 0x3000, Some(Protection::ReadOnly)).unwrap();
        mem.set_protection(&kvm, 0x5000, Some(Protection::Unbacked)).unwrap();
        let log = KVM_MEM_LOG_DIRTY_PAGES;
        assert_eq!(
            kvm.layout_with_flags(),
            vec![
                (0, 0x3000, 0x4000_0000, log),
                (0x3000, 0x1000, 0x4000_3000, log | KVM_MEM_READONLY),
                (0x4000, 0x1000, 0x4000_4000, log),
                (0x6000, 0xa000, 0x4000_6000, log),
            ]
        );
        // The VMM's view does not change.
        assert_eq!(mem.slots().len(), 1);
        assert_eq!(mem.host_address(0x5000, 8), Some(0x4000_5000));
        mem.set_protection(&kvm, 0x3000, None).unwrap();
        mem.set_protection(&kvm, 0x5000, None).unwrap();
        assert_eq!(kvm.layout_with_flags(), before);
    }

    #[test]
    fn dirty_bitmap_joins_the_pieces_and_the_librarys_own_stores() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        let slot = mem.add_slot(&kvm, Slot { log: true, ..ram(0x10000, 0x8000, 0x4000_0000) }).unwrap();
        mem.set_protection(&kvm, 0x12000, Some(Protection::Unbacked)).unwrap();
        kvm.dirty_gpas.borrow_mut().extend([0x10000, 0x13000, 0x17000]);
        mem.note_library_write(0x12ffe, 4); // a store completed for the guest, across two pages
        let bitmap = mem.dirty_bitmap(&kvm, &slot).unwrap();
        assert_eq!(bitmap, vec![0b1000_1101]);
        assert_eq!(mem.dirty_bitmap(&kvm, &slot).unwrap(), vec![0], "the library's part is cleared as read too");
    }

    #[test]
    fn pages_logged_before_a_slot_is_re_cut_stay_dirty() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        let slot = mem.add_slot(&kvm, Slot { log: true, ..ram(0x10000, 0x8000, 0x4000_0000) }).unwrap();
        kvm.dirty_gpas.borrow_mut().extend([0x11000, 0x16000]);
        mem.set_protection(&kvm, 0x13000, Some(Protection::ReadOnly)).unwrap();
        kvm.dirty_gpas.borrow_mut().push(0x17000);
        mem.set_protection(&kvm, 0x13000, None).unwrap();
        mem.set_log_all(&kvm, true).unwrap();
        assert_eq!(mem.dirty_bitmap(&kvm, &slot).unwrap(), vec![0b1100_0010]);
        assert_eq!(mem.dirty_bitmap(&kvm, &slot).unwrap(), vec![0]);
    }

    #[test]
    fn a_hole_keeps_the_dirty_pages_of_the_parts_around_it() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, Slot { log: true, ..ram(0, 0x8000, 0x4000_0000) }).unwrap();
        kvm.dirty_gpas.borrow_mut().extend([0x1000, 0x3000, 0x6000]);
        mem.unback(&kvm, 0x2000, 0x2000).unwrap();
        let low = *mem.slot_containing(0).unwrap();
        let high = *mem.slot_containing(0x4000).unwrap();
        assert_eq!(mem.dirty_bitmap(&kvm, &low).unwrap(), vec![0b10]);
        assert_eq!(mem.dirty_bitmap(&kvm, &high).unwrap(), vec![0b100]);
        // RAM put back into the hole starts clean.
        let middle = mem.add_slot(&kvm, Slot { log: true, ..ram(0x2000, 0x2000, 0x4000_2000) }).unwrap();
        assert_eq!(mem.dirty_bitmap(&kvm, &middle).unwrap(), vec![0]);
    }

    #[test]
    fn destroy_unmaps_library_memory_once_no_slot_uses_it() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        library_ram(&mut mem, &kvm, 0x100000, 0x2000);
        mem.destroy(&kvm, 0x100000, 0x1000).unwrap();
        assert_eq!(mem.mappings.len(), 1, "half the mapping is still RAM");
        mem.destroy(&kvm, 0x101000, 0x1000).unwrap();
        assert!(mem.mappings.is_empty());
        assert!(kvm.layout().is_empty());
    }

    #[test]
    fn placed_words_are_checked_where_they_lie_until_the_slots_change() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        let (id, host) = library_ram(&mut mem, &kvm, 0x10000, 0x2000);
        mem.write(0x10ff8, &0x1122_3344_5566_7788u64.to_le_bytes()).unwrap();
        let placed = |mem: &GuestMemory, gpas: &[u64]| {
            let mut words = PlacedWords::<2>::default();
            for &gpa in gpas {
                let (value, place) = mem.read_u64_placed(gpa).unwrap();
                words.push(gpa, place, value);
            }
            words
        };
        assert_eq!(mem.placed_words_hold(&PlacedWords::<2>::default()), Some(true), "no words hold");
        let words = placed(&mem, &[0x10ff8, 0x10000]);
        assert_eq!(words.by_address().collect::<Vec<_>>(), [(0x10ff8, 0x1122_3344_5566_7788), (0x10000, 0)]);
        assert_eq!(mem.placed_words_hold(&words), Some(true));
        mem.write_u8(0x10ff8, 0x99).unwrap();
        assert_eq!(mem.placed_words_hold(&words), Some(false), "read again as it is now");
        mem.write_u8(0x10ff8, 0x88).unwrap();
        assert_eq!(mem.placed_words_hold(&words), Some(true));

        // Not the same place in another VM's memory with the same slots.
        let other_kvm = FakeKvm::default();
        let mut other = GuestMemory::new(32);
        library_ram(&mut other, &other_kvm, 0x10000, 0x2000);
        assert_eq!(other.placed_words_hold(&words), None);
        // One word too many: none is checked where it lies.
        assert_eq!(mem.placed_words_hold(&placed(&mem, &[0x10ff8, 0x10000, 0x10008])), None);

        // Any change of the slots forgets every place, even where the words stay.
        mem.add_slot(&kvm, ram(0x40000, 0x1000, 0x4000_0000)).unwrap();
        assert_eq!(mem.placed_words_hold(&words), None);
        let words = placed(&mem, &[0x10ff8]);
        mem.unback(&kvm, 0x11000, 0x1000).unwrap();
        assert_eq!(mem.placed_words_hold(&words), None);
        // A word across two slots has no place; it is still read, and none
        // of the words with it is checked where it lies.
        mem.add_slot(&kvm, Slot { backing: Backing::Library(id), ..ram(0x11000, 0x1000, host + 0x1000) }).unwrap();
        let (value, place) = mem.read_u64_placed(0x10ffc).unwrap();
        assert_eq!((value & 0xffff_ffff, place), (0x1122_3344, None));
        assert_eq!(mem.placed_words_hold(&placed(&mem, &[0x10ffc, 0x10ff8])), None);
        assert_eq!(mem.placed_words_hold(&placed(&mem, &[0x10ff8, 0x10ffc])), None);
    }
}
