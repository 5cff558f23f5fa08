//! The KVM memory slots behind the VMM's slots: their numbers, and changing
//! them with as little disturbance to a running guest as KVM allows.
//!
//! KVM changes a slot's dirty-logging flag in place, atomically for the
//! vcpus; anything else (a new range, the read-only flag) means deleting
//! the KVM slot and creating another, and a vcpu that touches the range in
//! between finds no memory there. [`relayout`] therefore keeps every KVM
//! slot whose range stays, and the registry it is given decides how to
//! keep vcpus out of the way of the deletions it cannot avoid.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;

use super::PAGE_SIZE;
use crate::error::{Errno, Result};

/// One KVM memory slot: all or part of a [`Slot`](super::Slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The KVM slot number.
    pub kvm_slot: u32,
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// Host virtual address of `gpa`.
    pub host: u64,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
}

/// Tells KVM about slots. Implemented by [`VmFd`]; tests use a recorder.
pub trait SlotRegistry {
    /// Registers a KVM slot, or changes the flags of one in place.
    fn register(&self, piece: &Piece) -> Result<()>;
    /// Removes KVM slot `kvm_slot`.
    fn unregister(&self, kvm_slot: u32) -> Result<()>;
    /// The dirty-page bitmap of KVM slot `kvm_slot` of `len` bytes (cleared as read).
    fn dirty_log(&self, kvm_slot: u32, len: u64) -> Result<Vec<u64>>;
}

impl SlotRegistry for VmFd {
    fn register(&self, piece: &Piece) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot: piece.kvm_slot,
            flags: piece.flags,
            guest_phys_addr: piece.gpa,
            memory_size: piece.len,
            userspace_addr: piece.host,
        };
        // SAFETY: `GuestMemory` keeps every library mapping alive while a slot
        // refers to it, and caller-registered memory stays valid by the
        // contract of `kvm_register_userspace_phys_mem`.
        unsafe { self.set_user_memory_region(region) }.map_err(Errno::from)
    }

    fn unregister(&self, kvm_slot: u32) -> Result<()> {
        let region = kvm_userspace_memory_region { slot: kvm_slot, ..Default::default() };
        // SAFETY: a zero-sized region deletes the slot; no memory is referenced.
        unsafe { self.set_user_memory_region(region) }.map_err(Errno::from)
    }

    fn dirty_log(&self, kvm_slot: u32, len: u64) -> Result<Vec<u64>> {
        self.get_dirty_log(kvm_slot, len as usize).map_err(Errno::from)
    }
}

/// The KVM slot numbers in use, handed out and taken back in O(1).
#[derive(Debug)]
pub struct KvmSlotNumbers {
    /// Numbers below this were handed out at some point.
    next: u32,
    /// Numbers handed back.
    free: Vec<u32>,
    /// The host's limit.
    max: u32,
}

impl KvmSlotNumbers {
    /// Numbers `0..max`, all free.
    pub fn new(max: u32) -> KvmSlotNumbers {
        KvmSlotNumbers { next: 0, free: Vec::new(), max }
    }

    fn take(&mut self) -> Result<u32> {
        if let Some(n) = self.free.pop() {
            return Ok(n);
        }
        if self.next >= self.max {
            return Err(Errno::NOSPC);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    fn give_back(&mut self, n: u32) {
        self.free.push(n);
    }
}

/// The guest-physical pages KVM logged dirty in `piece` (clearing its log).
pub fn logged_dirty_pages(kvm: &dyn SlotRegistry, piece: &Piece) -> Result<impl Iterator<Item = u64>> {
    let words = kvm.dirty_log(piece.kvm_slot, piece.len)?;
    let gpa = piece.gpa;
    Ok((0..piece.len / PAGE_SIZE)
        .filter(move |page| words.get((page / 64) as usize).is_some_and(|w| w >> (page % 64) & 1 == 1))
        .map(move |page| gpa + page * PAGE_SIZE))
}

/// Changes the KVM slots in `pieces` into `wanted` (address, length and
/// flags of each, in address order), touching only what differs. A piece
/// whose range stays keeps its KVM slot and has a dirty-logging change
/// made in place; the others are deleted, their logged pages added to
/// `dirty`, before the new ones are created with `host_of` addresses.
/// `pieces` always says what KVM has, an error or not, in address order.
pub fn relayout(
    kvm: &dyn SlotRegistry,
    numbers: &mut KvmSlotNumbers,
    pieces: &mut Vec<Piece>,
    wanted: &[(u64, u64, u32)],
    host_of: impl Fn(u64) -> u64,
    dirty: &mut Vec<u64>,
) -> Result<()> {
    let stays = |p: &Piece| {
        let same_range = wanted.binary_search_by_key(&p.gpa, |w| w.0).ok().map(|i| wanted[i]);
        same_range.is_some_and(|(_, len, flags)| len == p.len && (flags ^ p.flags) & KVM_MEM_READONLY == 0)
    };
    let mut result = Ok(());
    pieces.retain(|piece| {
        if stays(piece) || result.is_err() {
            return true;
        }
        let deleted = (|| {
            if piece.flags & KVM_MEM_LOG_DIRTY_PAGES != 0 {
                dirty.extend(logged_dirty_pages(kvm, piece)?);
            }
            kvm.unregister(piece.kvm_slot)
        })();
        match deleted {
            Ok(()) => {
                numbers.give_back(piece.kvm_slot);
                false
            }
            Err(e) => {
                result = Err(e);
                true
            }
        }
    });
    result?;
    for &(gpa, len, flags) in wanted {
        match pieces.binary_search_by_key(&gpa, |p| p.gpa) {
            Ok(i) if pieces[i].flags != flags => {
                let changed = Piece { flags, ..pieces[i] };
                kvm.register(&changed)?;
                pieces[i] = changed;
            }
            Ok(_) => {}
            Err(i) => {
                let piece = Piece { kvm_slot: numbers.take()?, gpa, len, host: host_of(gpa), flags };
                if let Err(e) = kvm.register(&piece) {
                    numbers.give_back(piece.kvm_slot);
                    return Err(e);
                }
                pieces.insert(i, piece);
            }
        }
    }
    Ok(())
}
