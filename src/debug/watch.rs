//! Watchpoints by page protection: any number, any length, on every host
//! (the instruction emulator of some hosts never fires data breakpoints).
//!
//! A write watchpoint makes the guest-physical page under it read-only for
//! KVM: loads and instruction fetches run at full speed, a store exits as
//! MMIO (RIP already past it), and the library completes it into the
//! page's memory, then reports it if it touched a watched range. A read or
//! access watchpoint unbacks the page: every access exits, the library
//! completes it, and reports the ones that touch a watched range (reads are
//! told from writes, which x86 debug registers cannot do). Code cannot be
//! fetched from an unbacked page, so read and access watchpoints are
//! refused on a page a vcpu is executing, and a vcpu that later jumps into
//! one has that page's read watching suspended rather than hang.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_int;
use std::sync::atomic::{AtomicU8, Ordering};

use super::debugregs::DEBUG_REGISTERS;
use super::decode::{DebugCause, DebugEvent, DEBUG_EXCEPTION};
use super::implicit::ImplicitUse;
use super::BreakType;
use crate::context::{Context, LiveSlots};
use crate::error::{Errno, Result};
use crate::lock;
use crate::memory::{page_of, page_runs, Protection};
use crate::vcpu::Vcpu;

/// The longest range one watchpoint may cover.
pub(crate) const MAX_WATCH_LEN: u64 = 1 << 20;

/// How `kvm_insert_breakpoint` implements watchpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WatchMethod {
    /// A debug register when the host fires data breakpoints and one is
    /// free (and the length fits one), else page protection.
    Auto = 0,
    /// Debug registers only.
    DebugRegisters = 1,
    /// Page protection only.
    PageProtection = 2,
}

impl WatchMethod {
    /// The method with C value `value`.
    pub fn from_c(value: c_int) -> Result<WatchMethod> {
        match value {
            0 => Ok(WatchMethod::Auto),
            1 => Ok(WatchMethod::DebugRegisters),
            2 => Ok(WatchMethod::PageProtection),
            _ => Err(Errno::INVAL),
        }
    }
}

/// The method setting of a VM.
#[derive(Debug, Default)]
pub struct WatchMethodSetting(AtomicU8);

impl WatchMethodSetting {
    /// The current method.
    pub fn get(&self) -> WatchMethod {
        // Only `set` stores, so the value is always a method.
        WatchMethod::from_c(self.0.load(Ordering::Relaxed).into()).unwrap_or(WatchMethod::Auto)
    }

    /// Sets the method for watchpoints inserted from now on.
    pub fn set(&self, method: WatchMethod) {
        self.0.store(method as u8, Ordering::Relaxed);
    }
}

/// One watchpoint kept by page protection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageWatch {
    /// `WatchWrite`, `WatchRead` or `WatchAccess`.
    pub kind: BreakType,
    /// The linear address the VMM gave.
    pub gva: u64,
    /// Bytes watched.
    pub len: u64,
    /// The guest-physical ranges behind it, one per page touched.
    pub ranges: Vec<(u64, u64)>,
    refs: u32,
}

impl PageWatch {
    fn touches(&self, gpa: u64, len: u64) -> bool {
        self.ranges.iter().any(|&(start, n)| start < gpa + len && gpa < start + n)
    }

    fn fires_on(&self, is_write: bool) -> bool {
        match self.kind {
            BreakType::WatchWrite => is_write,
            BreakType::WatchRead => !is_write,
            _ => true,
        }
    }
}

/// What names a watchpoint: its kind, address and length, as
/// `kvm_remove_breakpoint` gives them.
type WatchKey = (i32, u64, u64);

fn key_of(kind: BreakType, gva: u64, len: u64) -> WatchKey {
    (kind as i32, gva, len)
}

/// The page-protection watchpoints of a VM, indexed by name and by page so
/// that inserts, removes and hits cost the same however many there are.
#[derive(Debug, Default)]
pub struct PageWatchTable {
    watches: BTreeMap<WatchKey, PageWatch>,
    /// The watchpoints on each guest-physical page.
    by_page: BTreeMap<u64, Vec<WatchKey>>,
    /// Pages whose read watching was suspended (a vcpu executes there).
    suspended: BTreeSet<u64>,
    /// Pages left unprotected, their watching suspended: the CPU uses them
    /// in a way protection would break (see [`super::implicit`]).
    stepped_aside: BTreeSet<u64>,
}

impl PageWatchTable {
    /// True when there are no watchpoints.
    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// The watchpoints on `page`.
    fn on_page(&self, page: u64) -> impl Iterator<Item = &PageWatch> {
        self.by_page.get(&page).into_iter().flatten().filter_map(|key| self.watches.get(key))
    }

    /// How `page` must be protected for the watchpoints on it.
    pub fn protection_for(&self, page: u64) -> Option<Protection> {
        if !self.by_page.contains_key(&page) || self.stepped_aside.contains(&page) {
            None
        } else if !self.suspended.contains(&page) && self.on_page(page).any(|w| w.kind != BreakType::WatchWrite) {
            Some(Protection::Unbacked)
        } else {
            Some(Protection::ReadOnly)
        }
    }

    /// The pages under `watch`.
    fn pages_of(watch: &PageWatch) -> Vec<u64> {
        watch.ranges.iter().map(|&(start, _)| page_of(start)).collect()
    }

    /// The first watchpoint a guest access of `len` bytes at `gpa` fires.
    pub fn hit(&self, gpa: u64, len: u64, is_write: bool) -> Option<&PageWatch> {
        let last = page_of(gpa.saturating_add(len.max(1) - 1));
        self.by_page
            .range(page_of(gpa)..=last)
            .flat_map(|(_, keys)| keys)
            .filter_map(|key| self.watches.get(key))
            .find(|w| w.fires_on(is_write) && w.touches(gpa, len))
    }

    /// Adds a watchpoint (or a reference to the same one), with watching
    /// suspended on the pages in `aside`; returns the pages whose
    /// protection may have changed.
    pub fn insert(&mut self, kind: BreakType, gva: u64, len: u64, ranges: Vec<(u64, u64)>, aside: &[u64]) -> Vec<u64> {
        self.stepped_aside.extend(aside);
        let key = key_of(kind, gva, len);
        if let Some(w) = self.watches.get_mut(&key) {
            w.refs += 1;
            return Vec::new();
        }
        let watch = PageWatch { kind, gva, len, ranges, refs: 1 };
        let pages = Self::pages_of(&watch);
        for &page in &pages {
            self.by_page.entry(page).or_default().push(key);
        }
        self.watches.insert(key, watch);
        pages
    }

    /// Drops a reference; returns the pages whose protection may have
    /// changed, or `ENOENT`.
    pub fn remove(&mut self, kind: BreakType, gva: u64, len: u64) -> Result<Vec<u64>> {
        let key = key_of(kind, gva, len);
        let watch = self.watches.get_mut(&key).ok_or(Errno::NOENT)?;
        watch.refs -= 1;
        if watch.refs > 0 {
            return Ok(Vec::new());
        }
        let pages = self.watches.remove(&key).map(|w| Self::pages_of(&w)).unwrap_or_default();
        for page in &pages {
            if let Some(keys) = self.by_page.get_mut(page) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    self.by_page.remove(page);
                    self.suspended.remove(page);
                    self.stepped_aside.remove(page);
                }
            }
        }
        Ok(pages)
    }

    /// Removes everything; returns the pages that were protected.
    pub fn clear(&mut self) -> Vec<u64> {
        let pages = self.by_page.keys().copied().collect();
        self.watches.clear();
        self.by_page.clear();
        self.suspended.clear();
        self.stepped_aside.clear();
        pages
    }

    /// Leaves `page` unprotected for good (while watchpoints are on it);
    /// returns true when that changes anything.
    pub fn step_aside(&mut self, page: u64) -> bool {
        self.by_page.contains_key(&page) && self.stepped_aside.insert(page)
    }

    /// The bytes every write or access watchpoint covers now, to tell
    /// afterwards whether an instruction the library could not watch
    /// stored into them.
    pub fn watched_bytes(&self, mem: &crate::memory::GuestMemory) -> Vec<WatchedBytes> {
        let mut out = Vec::new();
        for w in self.watches.values().filter(|w| w.kind != BreakType::WatchRead) {
            for &(gpa, len) in &w.ranges {
                let mut bytes = vec![0; len as usize];
                if mem.read(gpa, &mut bytes).is_ok() {
                    out.push(WatchedBytes { hit: WatchHit { kind: w.kind, gva: w.gva, len: w.len }, gpa, bytes });
                }
            }
        }
        out
    }

    /// Stops unbacking `page` (a vcpu executes from it); returns true when
    /// that changes anything.
    pub fn suspend_reads(&mut self, page: u64) -> bool {
        if self.protection_for(page) != Some(Protection::Unbacked) {
            return false;
        }
        self.suspended.insert(page);
        true
    }
}

/// Checks a watch length for page protection.
fn checked_len(len: u64) -> Result<u64> {
    if len == 0 || len > MAX_WATCH_LEN {
        Err(Errno::INVAL)
    } else {
        Ok(len)
    }
}

impl Context {
    /// Gives each page in `pages` the protection its watchpoints need.
    pub(crate) fn apply_protections(&self, pages: &[u64]) -> Result<()> {
        let watches = lock(&self.debugger().page_watches);
        let slots = LiveSlots::of(self)?;
        let mut mem = self.memory();
        for &page in pages {
            let protection = watches.protection_for(page);
            if mem.protection(page) != protection {
                mem.set_protection(&slots, page, protection)?;
            }
        }
        if !watches.is_empty() {
            self.debugger().note_pages_protected();
            drop((watches, mem));
            self.watch_progress();
        }
        Ok(())
    }

    /// A watchpoint by page protection at linear `gva`, translated with
    /// `vcpu`'s page tables (`EFAULT` where not mapped to RAM). Read and
    /// access watchpoints are refused (`EBUSY`) on a page a vcpu executes.
    pub fn insert_page_watch(&self, vcpu: &Vcpu, kind: BreakType, gva: u64, len: u64) -> Result<()> {
        let len = checked_len(len)?;
        gva.checked_add(len).ok_or(Errno::INVAL)?;
        // Every vcpu out of the guest at once, for reading where each runs
        // and for cutting the slots.
        let _paused = self.pause_vcpus();
        let mut ranges = Vec::new();
        for (at, _, n) in page_runs(gva, len as usize) {
            let gpa = self.translate_gva(vcpu, at)?.gpa;
            self.memory().host_address(gpa, n as u64).ok_or(Errno::FAULT)?;
            ranges.push((gpa, n as u64));
        }
        if kind != BreakType::WatchWrite {
            for other in self.vcpus() {
                let pc = super::exits::current_pc(other)?;
                let code_page = self.translate_gva(other, pc).map(|t| page_of(t.gpa));
                if code_page.is_ok_and(|p| ranges.iter().any(|&(g, _)| page_of(g) == p)) {
                    return Err(Errno::BUSY);
                }
            }
        }
        let implicit = super::implicit::implicit_pages(self)?;
        let clashes: Vec<(u64, ImplicitUse)> = ranges
            .iter()
            .filter_map(|&(gpa, _)| {
                let uses = implicit.get(&page_of(gpa))?;
                super::implicit::breaking_use(uses, kind).map(|what| (page_of(gpa), what))
            })
            .collect();
        if let Some(&(page, what)) = clashes.first() {
            let why = format!(
                "libkvm: watchpoint at {gva:#x}: page {page:#x} holds the guest's {}, which its CPU uses by itself",
                what.name()
            );
            if self.register_can_hold(gva, len) {
                eprintln!("{why}: watched by a debug register instead of page protection");
                return self.change_breakpoints(|| self.debugger().table().insert_hardware(kind, gva, len));
            }
            eprintln!("{why}; protecting it would stop the guest, so the watchpoint is suspended on that page");
        }
        let aside: Vec<u64> = clashes.iter().map(|&(page, _)| page).collect();
        let pages = lock(&self.debugger().page_watches).insert(kind, gva, len, ranges, &aside);
        self.apply_protections(&pages)
    }

    /// Removes a page-protection watchpoint; `ENOENT` when there is none.
    pub fn remove_page_watch(&self, kind: BreakType, gva: u64, len: u64) -> Result<()> {
        let pages = lock(&self.debugger().page_watches).remove(kind, gva, len)?;
        self.apply_protections(&pages)
    }

    /// Removes every page-protection watchpoint.
    pub fn remove_all_page_watches(&self) -> Result<()> {
        let pages = lock(&self.debugger().page_watches).clear();
        self.apply_protections(&pages)
    }
}

/// The bytes under one page's part of a watchpoint, at some moment.
#[derive(Clone, Debug)]
pub struct WatchedBytes {
    hit: WatchHit,
    gpa: u64,
    bytes: Vec<u8>,
}

/// The first watchpoint whose bytes differ now from `before`: a store the
/// library did not see (an instruction stepped through with the pages
/// backed).
pub fn first_changed(before: &[WatchedBytes], mem: &crate::memory::GuestMemory) -> Option<WatchHit> {
    let mut now = Vec::new();
    before.iter().find_map(|b| {
        now.resize(b.bytes.len(), 0);
        (mem.read(b.gpa, &mut now).is_ok() && now != b.bytes).then_some(b.hit)
    })
}

/// A watchpoint a guest access fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchHit {
    kind: BreakType,
    gva: u64,
    len: u64,
}

/// A guest access to guest-physical `gpa` that exited as MMIO: when it lies
/// in writable RAM, page protection caused it (now, or a moment ago: the
/// protection may have ended since the exit), so the library completes it
/// in memory (a load fills `data`) and returns the watchpoint it fires, if
/// any. `None` when the access is the VMM's MMIO (outside RAM, or a store
/// to the VMM's read-only memory). Only for MMIO exits once
/// [`Debugger::pages_were_protected`](crate::debug::Debugger::pages_were_protected):
/// before that every MMIO exit is the VMM's, and the run loop checks.
pub(super) fn complete_protected_access(
    ctx: &Context,
    vcpu: &Vcpu,
    gpa: u64,
    data: &mut [u8],
    is_write: bool,
) -> Option<Result<Option<WatchHit>>> {
    let len = data.len() as u64;
    {
        let mut mem = ctx.memory();
        if mem.slot_containing(gpa)?.readonly {
            return None;
        }
        mem.host_address(gpa, len)?;
        let completed = if is_write {
            mem.write(gpa, data).map(|()| mem.note_library_write(gpa, len))
        } else {
            mem.read(gpa, data)
        };
        if let Err(e) = completed {
            return Some(Err(e));
        }
    }
    let watches = lock(&ctx.debugger().page_watches);
    let page_hit = watches.hit(gpa, len, is_write).map(|w| WatchHit { kind: w.kind, gva: w.gva, len: w.len });
    drop(watches);
    Some(Ok(page_hit.or_else(|| register_watch_hit(ctx, vcpu, gpa, len, is_write))))
}

/// A debug-register watchpoint the access the library completed would have
/// fired (the CPU never made it, so its debug registers never saw it). The
/// registers' RW=11 fires on stores too, as the CPU's would.
fn register_watch_hit(ctx: &Context, vcpu: &Vcpu, gpa: u64, len: u64, is_write: bool) -> Option<WatchHit> {
    let registers: [_; DEBUG_REGISTERS] = {
        let table = ctx.debugger().table();
        std::array::from_fn(|n| table.register(n).copied())
    };
    registers.into_iter().flatten().find_map(|r| {
        let fires = match r.kind {
            BreakType::WatchWrite => is_write,
            BreakType::WatchRead | BreakType::WatchAccess => true,
            _ => false,
        };
        let at = ctx.translate_gva(vcpu, r.addr).ok()?.gpa;
        (fires && at < gpa + len && gpa < at + r.len).then_some(WatchHit { kind: r.kind, gva: r.addr, len: r.len })
    })
}

/// Reports a watchpoint hit; the access's instruction has completed.
pub(super) fn report_hit(ctx: &Context, vcpu: &Vcpu, hit: WatchHit) -> Result<c_int> {
    let pc = super::exits::current_pc(vcpu)?;
    let event = DebugEvent {
        cause: DebugCause::Page,
        break_type: hit.kind,
        pc,
        watch_addr: hit.gva,
        watch_len: hit.len,
        exception: DEBUG_EXCEPTION,
        dr6: 0,
        dr7: 0,
    };
    super::exits::report(ctx, vcpu, lock(&vcpu.debug), event)
}

/// The emulator failed on an instruction: if it was fetched from a page
/// unbacked for a read watchpoint, back the page again (read watching
/// there is suspended, writes still watched) and let the vcpu retry.
pub fn on_fetch_from_watched_page(ctx: &Context, vcpu: &Vcpu) -> Option<Result<c_int>> {
    if !ctx.debugger().pages_were_protected() {
        return None;
    }
    let pc = super::exits::current_pc(vcpu).ok()?;
    let page = page_of(ctx.translate_gva(vcpu, pc).ok()?.gpa);
    if ctx.memory().protection(page) != Some(Protection::Unbacked) {
        return None;
    }
    if !lock(&ctx.debugger().page_watches).suspend_reads(page) {
        return None;
    }
    eprintln!("libkvm: vcpu {} runs code in watched page {page:#x}: read watching there is suspended", vcpu.index());
    // SVM queues a #UD for the fetch that failed; the retry must not take it.
    const UD: u8 = 6;
    Some(ctx.apply_protections(&[page]).and_then(|()| super::exits::discard_queued_exception(vcpu, UD)).map(|()| 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(watches: &[(BreakType, u64, u64)]) -> PageWatchTable {
        let mut t = PageWatchTable::default();
        for &(kind, gpa, len) in watches {
            t.insert(kind, gpa, len, vec![(gpa, len)], &[]);
        }
        t
    }

    #[test]
    fn write_watches_make_pages_read_only_and_reads_unback_them() {
        let t = table_with(&[(BreakType::WatchWrite, 0x1008, 8), (BreakType::WatchRead, 0x3000, 4)]);
        assert_eq!(t.protection_for(0x1000), Some(Protection::ReadOnly));
        assert_eq!(t.protection_for(0x3000), Some(Protection::Unbacked));
        assert_eq!(t.protection_for(0x2000), None);
    }

    #[test]
    fn hits_need_overlap_and_the_right_direction() {
        let t = table_with(&[(BreakType::WatchWrite, 0x1008, 8), (BreakType::WatchRead, 0x3000, 4)]);
        assert!(t.hit(0x1000, 8, true).is_none(), "same page, next to the range");
        assert_eq!(t.hit(0x100c, 4, true).map(|w| w.gva), Some(0x1008));
        assert!(t.hit(0x100c, 4, false).is_none(), "a load does not fire a write watchpoint");
        assert_eq!(t.hit(0x3002, 1, false).map(|w| w.kind), Some(BreakType::WatchRead));
        assert!(t.hit(0x3002, 1, true).is_none(), "a store does not fire a read watchpoint");
    }

    #[test]
    fn two_watches_share_a_page_until_both_are_removed() {
        let mut t = table_with(&[(BreakType::WatchWrite, 0x1000, 4), (BreakType::WatchAccess, 0x1800, 8)]);
        assert_eq!(t.protection_for(0x1000), Some(Protection::Unbacked));
        t.remove(BreakType::WatchAccess, 0x1800, 8).unwrap();
        assert_eq!(t.protection_for(0x1000), Some(Protection::ReadOnly));
        t.remove(BreakType::WatchWrite, 0x1000, 4).unwrap();
        assert_eq!(t.protection_for(0x1000), None);
        assert_eq!(t.remove(BreakType::WatchWrite, 0x1000, 4), Err(Errno::NOENT));
    }

    #[test]
    fn a_page_stepped_aside_stays_unprotected_until_its_last_watch_goes() {
        let mut t = PageWatchTable::default();
        t.insert(BreakType::WatchWrite, 0x1000, 8, vec![(0x1000, 8)], &[0x1000]);
        t.insert(BreakType::WatchRead, 0x1010, 8, vec![(0x1010, 8)], &[]);
        assert_eq!(t.protection_for(0x1000), None);
        assert!(t.hit(0x1000, 8, true).is_some(), "the watch itself stays");
        t.remove(BreakType::WatchWrite, 0x1000, 8).unwrap();
        assert_eq!(t.protection_for(0x1000), None, "still aside while a watch is on the page");
        t.remove(BreakType::WatchRead, 0x1010, 8).unwrap();
        t.insert(BreakType::WatchWrite, 0x1000, 8, vec![(0x1000, 8)], &[]);
        assert_eq!(t.protection_for(0x1000), Some(Protection::ReadOnly));
    }

    #[test]
    fn suspending_reads_keeps_the_page_read_only() {
        let mut t = table_with(&[(BreakType::WatchAccess, 0x5000, 4)]);
        assert!(t.suspend_reads(0x5000));
        assert_eq!(t.protection_for(0x5000), Some(Protection::ReadOnly));
        assert!(!t.suspend_reads(0x5000));
    }
}
