//! Where each part of a guest core goes in the file.

use super::elf::{ProgramHeader, EHDR_SIZE, MAX_PHNUM, PF_R, PF_RWX, PHDR_SIZE, PT_LOAD, PT_NOTE};
use crate::debug::mappings::runs_in_ram;
use crate::debug::pagewalk::PagingRegisters;
use crate::memory::{GuestMemory, SlotKind};

/// Page-table entries the paging segments may visit at most.
const WALK_BUDGET: u64 = 1 << 24;
/// Alignment of the memory data in the file.
const DATA_ALIGN: u64 = 4096;

/// A range of guest RAM whose bytes the core carries, read from host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRun {
    /// Host address of the first byte.
    pub host: u64,
    /// Bytes.
    pub len: u64,
    /// Where they go in the file.
    pub offset: u64,
}

/// The whole file: program headers, where the notes go, and the memory.
#[derive(Debug)]
pub struct Layout {
    /// The program headers, the notes' first.
    pub headers: Vec<ProgramHeader>,
    /// File offset of the notes.
    pub notes_offset: u64,
    /// The memory to copy, one run per RAM slot.
    pub data: Vec<DataRun>,
    /// The file's size.
    pub size: u64,
    /// Guest-virtual runs left out because the program headers ran out or
    /// the page tables are too large to walk.
    pub virtual_truncated: bool,
}

impl Layout {
    /// Plans the core of `mem` with `notes_len` bytes of notes; with
    /// `paging`, also the guest-virtual segments of those page tables.
    pub fn plan(mem: &GuestMemory, paging: Option<&PagingRegisters>, notes_len: usize) -> Layout {
        let mut ram: Vec<_> = mem.slots().iter().filter(|s| s.kind == SlotKind::Ram).copied().collect();
        ram.sort_by_key(|s| s.gpa);
        let aliases: Vec<_> = mem.slots().iter().filter(|s| s.kind == SlotKind::Alias).copied().collect();
        let (mut runs, mut virtual_truncated) = match paging {
            Some(regs) => runs_in_ram(regs, mem, WALK_BUDGET),
            None => (Vec::new(), false),
        };
        // Identity-mapped runs: the physical segments have those addresses.
        runs.retain(|run| run.gva != run.gpa);
        let room = MAX_PHNUM - 1 - ram.len() - aliases.len();
        if runs.len() > room {
            virtual_truncated = true;
        }
        let runs = &runs[..runs.len().min(room)];

        let phnum = 1 + ram.len() + aliases.len() + runs.len();
        let notes_offset = (EHDR_SIZE + PHDR_SIZE * phnum) as u64;
        let mut offset = (notes_offset + notes_len as u64).next_multiple_of(DATA_ALIGN);
        let mut data = Vec::with_capacity(ram.len());
        for slot in &ram {
            data.push(DataRun { host: slot.host, len: slot.len, offset });
            offset += slot.len;
        }
        let size = offset;
        // The file offset of host bytes [host, host + len) when one RAM slot has them.
        let file_offset_of = |host: u64, len: u64| {
            data.iter().find(|d| host >= d.host && host + len <= d.host + d.len).map(|d| d.offset + (host - d.host))
        };
        let load = |vaddr, paddr, len, offset| ProgramHeader {
            kind: PT_LOAD,
            flags: PF_RWX,
            offset,
            vaddr,
            paddr,
            size: len,
            align: DATA_ALIGN,
        };
        let mut headers = Vec::with_capacity(phnum);
        headers.push(ProgramHeader {
            kind: PT_NOTE,
            flags: PF_R,
            offset: notes_offset,
            vaddr: 0,
            paddr: 0,
            size: notes_len as u64,
            align: 4,
        });
        // Virtual segments first: where a guest-virtual address is also a
        // physical one, gdb takes the first segment that has it.
        for run in runs {
            let host = mem.host_address(run.gpa, run.len);
            if let Some(at) = host.and_then(|host| file_offset_of(host, run.len)) {
                headers.push(load(run.gva, run.gpa, run.len, at));
            }
        }
        for (slot, run) in ram.iter().zip(&data) {
            headers.push(load(slot.gpa, slot.gpa, slot.len, run.offset));
        }
        for alias in &aliases {
            if let Some(at) = file_offset_of(alias.host, alias.len) {
                headers.push(load(alias.gpa, alias.gpa, alias.len, at));
            }
        }
        Layout { headers, notes_offset, data, size, virtual_truncated }
    }
}
