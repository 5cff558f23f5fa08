//! The pages a vcpu's CPU reads and writes by itself, with no instruction
//! naming them: descriptor tables, the IDT, the TSS, page tables, and the
//! stacks interrupts are delivered on.
//!
//! Page protection cannot watch all of them. KVM completes none of these
//! accesses through an exit the library could finish: on a cut page some
//! loop inside `KVM_RUN`, some give the guest a fault or a triple fault,
//! some lose the A/D bits a page walk sets. Measured on both hosts:
//!
//! | use | read-only page (write watch) | unbacked page (read, access) |
//! |---|---|---|
//! | GDT/LDT | reads work; the accessed-bit write loops (stepped through, see `progress`) | loops |
//! | IDT, TSS | works | triple fault, or a garbage stack |
//! | page tables | A/D updates lost, or data misdirected (SVM) | `#PF` in the guest, or a triple fault |
//! | interrupt stacks | delivery triple-faults | delivery triple-faults |
//!
//! A watchpoint whose page has a use that breaks under its protection goes
//! into a debug register where the host fires them, and is otherwise
//! suspended on that page with a message: the guest runs on, unwatched there.

use std::collections::BTreeMap;

use super::mappings::for_each_table;
use super::BreakType;
use crate::context::Context;
use crate::error::Result;
use crate::memory::{page_of, PAGE_SIZE};
use crate::vcpu::Vcpu;

/// What the CPU uses a page for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImplicitUse {
    /// The GDT or an LDT.
    DescriptorTable,
    /// The IDT (or the real-mode IVT).
    InterruptTable,
    /// The task-state segment.
    TaskState,
    /// A page table of the current hierarchy.
    PageTable,
    /// A stack interrupts and exceptions are delivered on.
    Stack,
}

impl ImplicitUse {
    /// How the message names it.
    pub fn name(self) -> &'static str {
        match self {
            ImplicitUse::DescriptorTable => "descriptor table",
            ImplicitUse::InterruptTable => "interrupt descriptor table",
            ImplicitUse::TaskState => "task-state segment",
            ImplicitUse::PageTable => "page tables",
            ImplicitUse::Stack => "stack",
        }
    }

    /// True when the protection a watchpoint of `kind` needs breaks this
    /// use (the table in the module documentation).
    pub fn breaks_under(self, kind: BreakType) -> bool {
        match self {
            ImplicitUse::DescriptorTable | ImplicitUse::InterruptTable | ImplicitUse::TaskState => {
                kind != BreakType::WatchWrite
            }
            ImplicitUse::PageTable | ImplicitUse::Stack => true,
        }
    }
}

/// Page-table entries looked at to find the tables.
const TABLE_BUDGET: u64 = 1 << 20;
/// Bytes below a stack pointer an interrupt frame (with error code and
/// alignment) and its handler's first pushes can reach, and above it.
const FRAME_BELOW: u64 = 256;
const FRAME_ABOVE: u64 = 64;
/// The most of a table looked at (a GDT's limit is at most 64 KiB).
const TABLE_MAX: u64 = 1 << 16;

/// The guest-physical pages every vcpu's CPU uses by itself now, each with
/// all its uses. The caller keeps the vcpus out of the guest.
pub fn implicit_pages(ctx: &Context) -> Result<BTreeMap<u64, Vec<ImplicitUse>>> {
    let mut pages = BTreeMap::new();
    for vcpu in ctx.vcpus() {
        add_vcpu_pages(ctx, vcpu, &mut pages)?;
    }
    Ok(pages)
}

/// The guest-physical pages `vcpu`'s CPU uses by itself now. The vcpu is
/// out of the guest.
pub fn vcpu_implicit_pages(ctx: &Context, vcpu: &Vcpu) -> Result<BTreeMap<u64, Vec<ImplicitUse>>> {
    let mut pages = BTreeMap::new();
    add_vcpu_pages(ctx, vcpu, &mut pages)?;
    Ok(pages)
}

/// The use of a page that breaks under the protection a watchpoint of
/// `kind` needs, if any.
pub fn breaking_use(uses: &[ImplicitUse], kind: BreakType) -> Option<ImplicitUse> {
    uses.iter().copied().find(|u| u.breaks_under(kind))
}

fn add_use(pages: &mut BTreeMap<u64, Vec<ImplicitUse>>, page: u64, what: ImplicitUse) {
    let uses = pages.entry(page).or_default();
    if !uses.contains(&what) {
        uses.push(what);
    }
}

fn add_vcpu_pages(ctx: &Context, vcpu: &Vcpu, pages: &mut BTreeMap<u64, Vec<ImplicitUse>>) -> Result<()> {
    const PE: u64 = 1;
    const LMA: u64 = 1 << 10;
    let (regs, sregs) = vcpu.regs_and_sregs()?;
    let mut linear = |start: u64, len: u64, what: ImplicitUse| {
        let first = page_of(start);
        let last = page_of(start.wrapping_add(len.clamp(1, TABLE_MAX) - 1));
        let mut page = first;
        loop {
            if let Ok(t) = ctx.translate_gva(vcpu, page) {
                add_use(pages, page_of(t.gpa), what);
            }
            if page == last {
                break;
            }
            page = page.wrapping_add(PAGE_SIZE);
        }
    };
    let stack = |sp: u64| (sp.wrapping_sub(FRAME_BELOW), FRAME_BELOW + FRAME_ABOVE);
    linear(sregs.idt.base, u64::from(sregs.idt.limit) + 1, ImplicitUse::InterruptTable);
    let (sp, len) = stack(sregs.ss.base.wrapping_add(regs.rsp));
    linear(sp, len, ImplicitUse::Stack);
    if sregs.cr0 & PE != 0 {
        linear(sregs.gdt.base, u64::from(sregs.gdt.limit) + 1, ImplicitUse::DescriptorTable);
        // A null LDT selector means no LDT, whatever the cached descriptor says.
        if sregs.ldt.selector & !7 != 0 && sregs.ldt.present != 0 && sregs.ldt.unusable == 0 {
            linear(sregs.ldt.base, u64::from(sregs.ldt.limit) + 1, ImplicitUse::DescriptorTable);
        }
        if sregs.tr.present != 0 {
            let tss = sregs.tr.base;
            linear(tss, u64::from(sregs.tr.limit) + 1, ImplicitUse::TaskState);
            // The stacks the TSS names: RSP0 and the seven IST entries in
            // 64-bit mode, ESP0 otherwise.
            let long_mode = sregs.efer & LMA != 0;
            let offsets: &[u64] = if long_mode { &[4, 36, 44, 52, 60, 68, 76, 84] } else { &[4] };
            for &offset in offsets {
                let mut bytes = [0u8; 8];
                let width = if long_mode { 8 } else { 4 };
                if ctx.read_guest_virt(vcpu, tss.wrapping_add(offset), &mut bytes[..width]).is_ok() {
                    let sp = u64::from_le_bytes(bytes);
                    if sp != 0 {
                        let (at, len) = stack(sp);
                        linear(at, len, ImplicitUse::Stack);
                    }
                }
            }
        }
    }
    let paging = vcpu.paging_registers()?;
    let mem = ctx.memory();
    for_each_table(&paging, &*mem, TABLE_BUDGET, |gpa| add_use(pages, page_of(gpa), ImplicitUse::PageTable));
    Ok(())
}
