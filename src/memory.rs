//! Guest-physical memory: the KVM slot table and the host mappings behind it.
//!
//! Slot arithmetic (overlaps, splitting a range out of slots, aliases) is
//! plain Rust over [`Slot`] values; the ioctls go through a [`SlotRegistry`]
//! so the arithmetic is unit tested without `/dev/kvm`.

use std::ptr::NonNull;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;

use crate::error::{Errno, Result};

/// The guest page size that slots, dirty bitmaps and memory maps use.
pub(crate) const PAGE_SIZE: u64 = 4096;

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

/// One KVM memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The KVM slot number.
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

/// Tells KVM about slots. Implemented by [`VmFd`]; tests use a recorder.
pub trait SlotRegistry {
    /// Registers or updates `slot` with the given `KVM_MEM_*` flags.
    fn register(&self, slot: &Slot, flags: u32) -> Result<()>;
    /// Removes KVM slot `id`.
    fn unregister(&self, id: u32) -> Result<()>;
}

impl SlotRegistry for VmFd {
    fn register(&self, slot: &Slot, flags: u32) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot: slot.id,
            flags,
            guest_phys_addr: slot.gpa,
            memory_size: slot.len,
            userspace_addr: slot.host,
        };
        // SAFETY: `GuestMemory` keeps every library mapping alive while a slot
        // refers to it, and caller-registered memory stays valid by the
        // contract of `kvm_register_userspace_phys_mem`.
        unsafe { self.set_user_memory_region(region) }.map_err(Errno::from)
    }

    fn unregister(&self, id: u32) -> Result<()> {
        let region = kvm_userspace_memory_region { slot: id, ..Default::default() };
        // SAFETY: a zero-sized region deletes the slot; no memory is referenced.
        unsafe { self.set_user_memory_region(region) }.map_err(Errno::from)
    }
}

/// An anonymous host mapping that backs guest RAM; unmapped on drop.
#[derive(Debug)]
struct HostMapping {
    id: MappingId,
    addr: NonNull<u8>,
    len: usize,
    /// The guest-physical address the mapping was made for: host address
    /// `addr + (g - gpa)` belongs to guest-physical `g`.
    gpa: u64,
}

// SAFETY: the mapping is plain memory owned by this value; it is shared
// with the guest, and every access to it goes through raw pointer copies.
unsafe impl Send for HostMapping {}

impl HostMapping {
    fn anonymous(id: MappingId, len: usize, gpa: u64) -> Result<HostMapping> {
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
        Ok(HostMapping { id, addr, len, gpa })
    }

    fn host_of(&self, gpa: u64, len: u64) -> Option<u64> {
        let end = gpa.checked_add(len)?;
        (gpa >= self.gpa && end <= self.gpa + self.len as u64)
            .then(|| self.addr.as_ptr() as u64 + (gpa - self.gpa))
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
    mappings: Vec<HostMapping>,
    next_mapping: MappingId,
    log_all: bool,
    max_slots: u32,
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
        GuestMemory { slots: Vec::new(), mappings: Vec::new(), next_mapping: 1, log_all: false, max_slots }
    }

    /// The slots, in creation order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot containing `gpa`.
    pub fn slot_containing(&self, gpa: u64) -> Option<&Slot> {
        self.slots.iter().find(|s| s.contains(gpa))
    }

    /// Maps `len` bytes of fresh zeroed host memory for guest-physical `gpa`
    /// and returns its id. No slot is created.
    pub fn map_anonymous(&mut self, gpa: u64, len: u64) -> Result<MappingId> {
        let len = usize::try_from(len).map_err(|_| Errno::NOMEM)?;
        let id = self.next_mapping;
        self.mappings.push(HostMapping::anonymous(id, len, gpa)?);
        self.next_mapping += 1;
        Ok(id)
    }

    /// Host address of `[gpa, gpa + len)` inside one library mapping made for
    /// that guest-physical range, if there is one.
    pub fn library_host_address(&self, gpa: u64, len: u64) -> Option<(MappingId, u64)> {
        self.mappings.iter().find_map(|m| m.host_of(gpa, len).map(|h| (m.id, h)))
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

    fn free_slot_id(&self) -> Result<u32> {
        (0..self.max_slots).find(|id| self.slots.iter().all(|s| s.id != *id)).ok_or(Errno::NOSPC)
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
        let slot = Slot { id: self.free_slot_id()?, ..slot };
        kvm.register(&slot, self.flags(&slot))?;
        self.slots.push(slot);
        Ok(slot)
    }

    /// Makes `[start, start + len)` unbacked: slots inside it go away, slots
    /// that straddle its edges are split and keep their outer parts.
    pub fn unback(&mut self, kvm: &dyn SlotRegistry, start: u64, len: u64) -> Result<()> {
        let end = page_range(start, len)?;
        let hit: Vec<Slot> = self.slots.iter().copied().filter(|s| s.overlaps(start, end)).collect();
        for slot in hit {
            kvm.unregister(slot.id)?;
            self.slots.retain(|s| s.id != slot.id);
            if slot.gpa < start {
                self.add_slot(kvm, slot.piece(slot.gpa, start))?;
            }
            if slot.end() > end {
                self.add_slot(kvm, slot.piece(end, slot.end()))?;
            }
        }
        Ok(())
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
            kvm.unregister(id)?;
            self.slots.retain(|s| s.id != id);
        }
        Ok(())
    }

    /// Turns dirty logging on for every slot (`on`), or back to each slot's
    /// own flag.
    pub fn set_log_all(&mut self, kvm: &dyn SlotRegistry, on: bool) -> Result<()> {
        self.log_all = on;
        for slot in &self.slots {
            kvm.register(slot, self.flags(slot))?;
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

    /// Copies `buf` into guest-physical memory at `gpa`, across slots.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        self.for_each_chunk(gpa, buf.len(), |host, offset, n| {
            // SAFETY: as in `read`, with the copy going the other way.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr().add(offset), host as *mut u8, n) }
        })
    }

    fn for_each_chunk(&self, gpa: u64, len: usize, mut copy: impl FnMut(u64, usize, usize)) -> Result<()> {
        gpa.checked_add(len as u64).ok_or(Errno::FAULT)?;
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
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records the slot layout KVM would have.
    #[derive(Default)]
    struct FakeKvm {
        slots: RefCell<Vec<(u32, u64, u64, u64, u32)>>,
    }

    impl SlotRegistry for FakeKvm {
        fn register(&self, s: &Slot, flags: u32) -> Result<()> {
            let mut slots = self.slots.borrow_mut();
            slots.retain(|e| e.0 != s.id);
            slots.push((s.id, s.gpa, s.len, s.host, flags));
            Ok(())
        }
        fn unregister(&self, id: u32) -> Result<()> {
            self.slots.borrow_mut().retain(|e| e.0 != id);
            Ok(())
        }
    }

    impl FakeKvm {
        fn layout(&self) -> Vec<(u64, u64, u64)> {
            let mut v: Vec<_> = self.slots.borrow().iter().map(|e| (e.1, e.2, e.3)).collect();
            v.sort();
            v
        }
    }

    fn ram(gpa: u64, len: u64, host: u64) -> Slot {
        Slot { id: 0, gpa, len, host, log: false, readonly: false, kind: SlotKind::Ram, backing: Backing::Caller }
    }

    #[test]
    fn overlapping_slot_is_refused_with_eexist() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        mem.add_slot(&kvm, ram(0, 0x10000, 0x100000)).unwrap();
        assert_eq!(mem.add_slot(&kvm, ram(0xf000, 0x2000, 0x200000)), Err(Errno::EXIST));
        assert_eq!(mem.add_slot(&kvm, ram(0x10000, 0x1000, 0x200000)).map(|s| s.id), Ok(1));
    }

    #[test]
    fn unaligned_or_empty_ranges_are_invalid() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        assert_eq!(mem.add_slot(&kvm, ram(0x800, 0x1000, 0x100000)), Err(Errno::INVAL));
        assert_eq!(mem.add_slot(&kvm, ram(0, 0x1800, 0x100000)), Err(Errno::INVAL));
        assert_eq!(mem.add_slot(&kvm, ram(0, 0, 0x100000)), Err(Errno::INVAL));
        assert_eq!(mem.add_slot(&kvm, ram(u64::MAX & !0xfff, 0x2000, 0x100000)), Err(Errno::INVAL));
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
        assert!(kvm.slots.borrow().iter().all(|e| e.4 == KVM_MEM_LOG_DIRTY_PAGES));
        mem.set_log_all(&kvm, false).unwrap();
        let flags: Vec<u32> = kvm.slots.borrow().iter().map(|e| e.4).collect();
        assert_eq!(flags, vec![0, KVM_MEM_LOG_DIRTY_PAGES]);
    }

    #[test]
    fn reads_and_writes_cross_slot_boundaries_and_fail_whole_on_a_gap() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        let id = mem.map_anonymous(0, 0x3000).unwrap();
        let (_, host) = mem.library_host_address(0, 0x3000).unwrap();
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
    fn destroy_unmaps_library_memory_once_no_slot_uses_it() {
        let kvm = FakeKvm::default();
        let mut mem = GuestMemory::new(32);
        let id = mem.map_anonymous(0x100000, 0x2000).unwrap();
        let (_, host) = mem.library_host_address(0x100000, 0x2000).unwrap();
        mem.add_slot(&kvm, Slot { backing: Backing::Library(id), ..ram(0x100000, 0x2000, host) }).unwrap();
        mem.destroy(&kvm, 0x100000, 0x1000).unwrap();
        assert!(mem.library_host_address(0x101000, 0x1000).is_some());
        mem.destroy(&kvm, 0x101000, 0x1000).unwrap();
        assert!(mem.library_host_address(0x101000, 0x1000).is_none());
        assert!(kvm.layout().is_empty());
    }
}
