//! The memory calls of the 2008 API, on top of [`GuestMemory`](crate::memory::GuestMemory).

use super::live_slots::LiveSlots;
use super::Context;
use crate::error::{Errno, Result};
use crate::memory::{page_range, Backing, Slot, SlotKind, PAGE_SIZE};

fn ram_slot(gpa: u64, len: u64, host: u64, backing: Backing, log: bool, readonly: bool) -> Slot {
    Slot { id: 0, gpa, len, host, log, readonly, kind: SlotKind::Ram, backing }
}

impl Context {
    /// `kvm_create_phys_mem`: new RAM at `[start, start + len)`, a fresh
    /// zeroed mapping registered as one slot; `EEXIST` when the range
    /// overlaps RAM already registered.
    pub fn create_phys_mem(&self, start: u64, len: u64, log: bool, writable: bool) -> Result<*mut u8> {
        page_range(start, len)?;
        let slots = LiveSlots::of(self)?;
        let mut mem = self.memory();
        let (mapping, host) = mem.map_anonymous(len)?;
        if let Err(e) = mem.add_slot(&slots, ram_slot(start, len, host, Backing::Library(mapping), log, !writable)) {
            mem.drop_unused_mappings();
            return Err(e);
        }
        Ok(host as *mut u8)
    }

    /// `kvm_destroy_phys_mem`: removes the RAM in the range; library memory
    /// no slot uses any more is unmapped.
    pub fn destroy_phys_mem(&self, start: u64, len: u64) -> Result<()> {
        self.memory().destroy(&LiveSlots::of(self)?, start, len)
    }

    /// `kvm_register_userspace_phys_mem`: the VMM's own memory as guest RAM.
    pub fn register_userspace_phys_mem(&self, start: u64, host: u64, len: u64, log: bool) -> Result<()> {
        self.memory().add_slot(&LiveSlots::of(self)?, ram_slot(start, len, host, Backing::Caller, log, false)).map(drop)
    }

    /// `kvm_create_mem_hole`: the range becomes unbacked, so guest accesses
    /// to it exit as MMIO.
    pub fn create_mem_hole(&self, start: u64, len: u64) -> Result<()> {
        self.memory().unback(&LiveSlots::of(self)?, start, len)
    }

    /// `kvm_is_intersecting_mem`.
    pub fn is_intersecting_mem(&self, gpa: u64) -> bool {
        self.memory().slot_containing(gpa).is_some()
    }

    /// `kvm_is_allocated_mem`: a slot is exactly `[start, start + len)`.
    pub fn is_allocated_mem(&self, start: u64, len: u64) -> bool {
        self.memory().slots().iter().any(|s| s.gpa == start && s.len == len)
    }

    /// The slots that lie entirely inside `[start, end)`, in address order.
    pub fn slots_within(&self, start: u64, end: u64) -> Vec<Slot> {
        let mut slots: Vec<Slot> =
            self.memory().slots().iter().copied().filter(|s| s.gpa >= start && s.end() <= end).collect();
        slots.sort_by_key(|s| s.gpa);
        slots
    }

    /// The slot containing `gpa`; `ENOENT` when none does.
    pub fn slot_at(&self, gpa: u64) -> Result<Slot> {
        self.memory().slot_containing(gpa).copied().ok_or(Errno::NOENT)
    }

    /// The dirty-page bitmap of `slot` (one bit per page, least significant
    /// bit first, `(pages + 7) / 8` bytes), which KVM clears as it reads it.
    /// `ENOENT` when the slot does not log dirty pages.
    pub fn dirty_bitmap(&self, slot: &Slot) -> Result<Vec<u8>> {
        let mut mem = self.memory();
        if !mem.logs_dirty_pages(slot) {
            return Err(Errno::NOENT);
        }
        let words = mem.dirty_bitmap(self.vm()?, slot)?;
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.truncate(bitmap_bytes(slot.len));
        Ok(bytes)
    }

    /// `kvm_dirty_pages_log_enable_all` (`true`) / `kvm_dirty_pages_log_reset` (`false`).
    pub fn set_dirty_log_all(&self, on: bool) -> Result<()> {
        self.memory().set_log_all(&LiveSlots::of(self)?, on)
    }

    /// `kvm_create_memory_alias`.
    pub fn create_memory_alias(&self, start: u64, len: u64, target: u64) -> Result<()> {
        self.memory().add_alias(&LiveSlots::of(self)?, start, len, target).map(drop)
    }

    /// `kvm_destroy_memory_alias`.
    pub fn destroy_memory_alias(&self, start: u64) -> Result<()> {
        self.memory().remove_alias(&LiveSlots::of(self)?, start)
    }
}

/// Bytes in a bitmap with one bit per page of `len` bytes.
pub fn bitmap_bytes(len: u64) -> usize {
    (len / PAGE_SIZE).div_ceil(8) as usize
}
