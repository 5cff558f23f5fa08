//! Guest core dumps: an ELF64 x86-64 core file of the whole guest that gdb
//! opens with the guest kernel's symbols.
//!
//! - one `PT_LOAD` per RAM slot, `p_paddr` = guest-physical address and
//!   `p_vaddr` the same (right for identity-mapped guests); aliases share
//!   the file bytes of the RAM they show;
//! - with paging, a `PT_LOAD` per run of guest-virtual addresses vcpu 0's
//!   page tables map to RAM, `p_vaddr` = the address the guest's symbols
//!   use, sharing the file bytes of the RAM behind it (so nothing is
//!   written twice);
//! - a `PT_NOTE` with, per vcpu, `NT_PRSTATUS` (a thread for gdb,
//!   `pr_pid` = vcpu + 1), `NT_FPREGSET` and the library's own note with
//!   all the vcpu's state ([`notes::kvm_core_vcpu_state`]);
//! - MMIO and other unbacked ranges are absent, and zero pages are holes of
//!   a sparse file.
//!
//! The vcpus are held out of the guest while their state and memory are
//! read (see [`Context::pause_vcpus`]), and run on afterwards.

pub mod elf;
pub mod notes;
mod segments;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use self::notes::VcpuState;
use crate::context::Context;
use crate::debug::pagewalk::PagingMode;
use crate::error::{Errno, Result};
use crate::vcpu::Vcpu;

/// The environment variable naming a directory for automatic cores.
pub const CORE_DIRECTORY_VARIABLE: &str = "LIBKVM_CORE";

/// Where automatic cores go, and how many were written.
#[derive(Debug, Default)]
pub struct CoreOnCrash {
    directory: Option<PathBuf>,
    written: AtomicU32,
}

impl CoreOnCrash {
    /// Reads `LIBKVM_CORE` from the environment.
    pub fn from_environment() -> CoreOnCrash {
        let directory = std::env::var_os(CORE_DIRECTORY_VARIABLE).filter(|d| !d.is_empty()).map(PathBuf::from);
        CoreOnCrash { directory, written: AtomicU32::new(0) }
    }
}

impl Context {
    /// `kvm_dump_guest_core`: writes a core of the guest to `path` (with
    /// `paging`, also segments by the guest-virtual addresses of the page
    /// tables of vcpu 0, or of the first vcpu with paging on when vcpu 0 has
    /// none: after a triple fault on SVM, KVM has reset it). `ENOENT`
    /// without vcpus. Nothing is left at `path` when it fails.
    pub fn dump_guest_core(&self, path: &Path, paging: bool) -> Result<()> {
        let _paused = self.pause_vcpus();
        let vcpus: Vec<&Vcpu> = self.vcpus().collect();
        if vcpus.is_empty() {
            return Err(Errno::NOENT);
        }
        let states = vcpus.iter().map(|vcpu| VcpuState::read(vcpu)).collect::<Result<Vec<_>>>()?;
        let mut notes = Vec::new();
        for state in &states {
            state.push_notes(&mut notes);
        }
        let paging_registers = if paging {
            let all = vcpus.iter().map(|vcpu| vcpu.paging_registers()).collect::<Result<Vec<_>>>()?;
            all.iter().copied().find(|regs| regs.mode() != PagingMode::Off).or(all.first().copied())
        } else {
            None
        };
        let mem = self.memory();
        let layout = segments::Layout::plan(&mem, paging_registers.as_ref(), notes.len());
        if layout.virtual_truncated {
            eprintln!("libkvm: {}: the page tables map more than a core can list: part of them only", path.display());
        }
        writer::write_core(path, &layout, &notes)
    }

    /// With `LIBKVM_CORE=<directory>`: writes `<directory>/libkvm-core.<pid>.<n>`
    /// after `vcpu` met `what` (a triple fault, an exit the library cannot
    /// handle), and says so on stderr.
    pub(crate) fn dump_core_after_crash(&self, vcpu: &Vcpu, what: &str) {
        let Some(directory) = &self.core_on_crash().directory else { return };
        let n = self.core_on_crash().written.fetch_add(1, Ordering::Relaxed);
        let path = directory.join(format!("libkvm-core.{}.{n}", std::process::id()));
        match self.dump_guest_core(&path, true) {
            Ok(()) => eprintln!(
                "libkvm: vcpu {} {what}: the guest's core is in {p} (open it with: gdb <guest kernel ELF> {p}){}",
                vcpu.index(),
                if in_reset_state(vcpu) { RESET_BY_KVM } else { "" },
                p = path.display()
            ),
            Err(e) => eprintln!("libkvm: vcpu {} {what}: cannot write a core to {}: {e}", vcpu.index(), path.display()),
        }
    }
}

/// What the crash message adds when KVM reset the vcpu before the library saw it.
const RESET_BY_KVM: &str = "; KVM reset this vcpu at the shutdown (kvm_amd does): its registers in the core are the \
                            reset state, its memory and the other vcpus are as they were";

/// Whether `vcpu` is in the state INIT gives (CS:IP f000:fff0, CS based at
/// 0xffff0000, no protected mode): kvm_amd resets a vcpu at a triple fault,
/// as its VMCB is undefined after the shutdown intercept.
fn in_reset_state(vcpu: &Vcpu) -> bool {
    vcpu.with_fd(|fd| {
        let regs = fd.get_regs().ok()?;
        let sregs = fd.get_sregs().ok()?;
        Some(regs.rip == 0xfff0 && sregs.cs.base == 0xffff_0000 && sregs.cr0 & 1 == 0)
    })
    .unwrap_or(false)
}
