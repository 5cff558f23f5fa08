//! The memory calls of the 2008 API, on top of [`GuestMemory`](crate::memory::GuestMemory).

use super::Context;
use crate::error::{Errno, Result};
use crate::memory::{page_range, Backing, Slot, SlotKind, PAGE_SIZE};

/// The legacy VGA window that `kvm_create` leaves unbacked, for MMIO.
const VGA_HOLE: (u64, u64) = (0xa_0000, 0xc_0000);
/// The BIOS area that `kvm_create` also shows just below 4 GiB.
const BIOS: (u64, u64) = (0xf_0000, 0x10_0000);
/// Where the reset vector's code segment (base 0xffff0000) looks for the BIOS.
const BIOS_SHADOW: u64 = 0xffff_0000;

fn ram_slot(gpa: u64, len: u64, host: u64, backing: Backing, log: bool, readonly: bool) -> Slot {
    Slot { id: 0, gpa, len, host, log, readonly, kind: SlotKind::Ram, backing }
}

impl Context {
    /// The RAM of `kvm_create`: one mapping, slots below the VGA hole and
    /// above it, and the BIOS shadow below 4 GiB.
    pub(super) fn create_default_ram(&self, bytes: u64) -> Result<*mut u8> {
        let len = bytes.checked_next_multiple_of(PAGE_SIZE).filter(|&l| l > 0).ok_or(Errno::INVAL)?;
        let vm = self.vm()?;
        let mut mem = self.memory();
        let mapping = mem.map_anonymous(0, len)?;
        let (_, base) = mem.library_host_address(0, len).ok_or(Errno::NOMEM)?;
        let backing = Backing::Library(mapping);
        mem.add_slot(vm, ram_slot(0, len.min(VGA_HOLE.0), base, backing, false, false))?;
        if len > VGA_HOLE.1 {
            mem.add_slot(vm, ram_slot(VGA_HOLE.1, len - VGA_HOLE.1, base + VGA_HOLE.1, backing, false, false))?;
        }
        if len >= BIOS.1 && len <= BIOS_SHADOW {
            let shadow = Slot { kind: SlotKind::Alias, ..ram_slot(BIOS_SHADOW, BIOS.1 - BIOS.0, base + BIOS.0, backing, false, false) };
            mem.add_slot(vm, shadow)?;
        }
        Ok(base as *mut u8)
    }

    /// `kvm_create_phys_mem`: RAM at `[start, start + len)`. Inside a
    /// library mapping (such as `kvm_create`'s) it only returns the host
    /// address there: programs of 2008 call it after `kvm_create` to find
    /// their RAM, and the VGA window must stay MMIO for them.
    pub fn create_phys_mem(&self, start: u64, len: u64, log: bool, writable: bool) -> Result<*mut u8> {
        page_range(start, len)?;
        let vm = self.vm()?;
        let mut mem = self.memory();
        if let Some((_, host)) = mem.library_host_address(start, len) {
            return Ok(host as *mut u8);
        }
        let mapping = mem.map_anonymous(start, len)?;
        let (_, host) = mem.library_host_address(start, len).ok_or(Errno::NOMEM)?;
        if let Err(e) = mem.add_slot(vm, ram_slot(start, len, host, Backing::Library(mapping), log, !writable)) {
            mem.drop_unused_mappings();
            return Err(e);
        }
        Ok(host as *mut u8)
    }

    /// `kvm_destroy_phys_mem`: removes the RAM in the range; library memory
    /// no slot uses any more is unmapped.
    pub fn destroy_phys_mem(&self, start: u64, len: u64) -> Result<()> {
        self.memory().destroy(self.vm()?, start, len)
    }

    /// `kvm_register_userspace_phys_mem`: the VMM's own memory as guest RAM.
    pub fn register_userspace_phys_mem(&self, start: u64, host: u64, len: u64, log: bool) -> Result<()> {
        let vm = self.vm()?;
        self.memory().add_slot(vm, ram_slot(start, len, host, Backing::Caller, log, false)).map(drop)
    }

    /// `kvm_create_mem_hole`: the range becomes unbacked, so guest accesses
    /// to it exit as MMIO.
    pub fn create_mem_hole(&self, start: u64, len: u64) -> Result<()> {
        self.memory().unback(self.vm()?, start, len)
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
        self.memory().set_log_all(self.vm()?, on)
    }

    /// `kvm_create_memory_alias`.
    pub fn create_memory_alias(&self, start: u64, len: u64, target: u64) -> Result<()> {
        self.memory().add_alias(self.vm()?, start, len, target).map(drop)
    }

    /// `kvm_destroy_memory_alias`.
    pub fn destroy_memory_alias(&self, start: u64) -> Result<()> {
        self.memory().remove_alias(self.vm()?, start)
    }
}

/// Bytes in a bitmap with one bit per page of `len` bytes.
pub fn bitmap_bytes(len: u64) -> usize {
    (len / PAGE_SIZE).div_ceil(8) as usize
}
