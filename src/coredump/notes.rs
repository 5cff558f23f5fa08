//! The notes of a guest core: per vcpu, what gdb reads as a thread
//! (`NT_PRSTATUS`, `NT_FPREGSET`, named "CORE"), and all the vcpu state
//! KVM has, in a note of the library's own (named "LIBKVM").

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_sregs};

use super::elf::push_note;
use crate::error::{Errno, Result};
use crate::vcpu::Vcpu;
use crate::x86;

/// `NT_PRSTATUS`.
const NT_PRSTATUS: u32 = 1;
/// `NT_FPREGSET`.
const NT_FPREGSET: u32 = 2;
/// Bytes of the x86-64 `struct elf_prstatus`.
const PRSTATUS_SIZE: usize = 336;
/// Where `pr_pid` and `pr_reg` are in it.
const PR_PID: usize = 32;
const PR_REG: usize = 112;
/// Bytes of `struct user_fpregs_struct` (the FXSAVE layout).
const FPREGSET_SIZE: usize = 512;

/// Note type of the library's vcpu note (name "LIBKVM"): its description is
/// one `struct kvm_core_vcpu_state`.
pub const KVM_CORE_NOTE_VCPU_STATE: u32 = 0x4b56_4d01;
/// `struct kvm_core_vcpu_state`'s `version`.
pub const KVM_CORE_VCPU_STATE_VERSION: u32 = 1;
/// `kvm_core_vcpu_state.flags`: `lapic` holds the in-kernel local APIC.
pub const KVM_CORE_HAS_LAPIC: u32 = 1;
/// `kvm_core_vcpu_state.flags`: `xsave` holds the `KVM_GET_XSAVE` area.
pub const KVM_CORE_HAS_XSAVE: u32 = 2;
/// `kvm_core_vcpu_state.flags`: `mp_state` holds the MP state.
pub const KVM_CORE_HAS_MP_STATE: u32 = 4;

/// Everything a guest core records about one vcpu, as the description of a
/// note named "LIBKVM" of type `KVM_CORE_NOTE_VCPU_STATE`, one per vcpu,
/// after that vcpu's `NT_PRSTATUS` and `NT_FPREGSET` notes. The layout is
/// this C struct's, little-endian; `version` tells later layouts apart.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct kvm_core_vcpu_state {
    /// `KVM_CORE_VCPU_STATE_VERSION`.
    pub version: u32,
    /// The vcpu index (gdb's thread and `pr_pid` are vcpu + 1).
    pub vcpu: u32,
    /// `KVM_CORE_HAS_*`: which of `lapic`, `xsave` and `mp_state` are filled.
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
    /// `KVM_GET_REGS`.
    pub regs: kvm_regs,
    /// `KVM_GET_SREGS`: control registers, EFER, descriptor tables, segments.
    pub sregs: kvm_sregs,
    /// `KVM_GET_FPU`.
    pub fpu: kvm_fpu,
    /// `KVM_GET_LAPIC`, with an in-kernel irqchip.
    pub lapic: kvm_lapic_state,
    /// `KVM_GET_MP_STATE`.
    pub mp_state: kvm_mp_state,
    /// Zero.
    pub reserved2: u32,
    /// `KVM_GET_XSAVE`'s 4 KiB area, where the host has XSAVE.
    pub xsave: [u8; 4096],
}

/// The state of one vcpu, read once for its notes.
pub struct VcpuState(Box<kvm_core_vcpu_state>);

impl VcpuState {
    /// Reads `vcpu`'s state (the vcpu is out of the guest).
    pub fn read(vcpu: &Vcpu) -> Result<VcpuState> {
        vcpu.with_fd(|fd| {
            let regs = fd.get_regs().map_err(Errno::from)?;
            let sregs = fd.get_sregs().map_err(Errno::from)?;
            let fpu = fd.get_fpu().map_err(Errno::from)?;
            let mut flags = 0;
            let lapic =
                fd.get_lapic().inspect(|_| flags |= KVM_CORE_HAS_LAPIC).unwrap_or(kvm_lapic_state { regs: [0; 1024] });
            let mp_state = fd.get_mp_state().inspect(|_| flags |= KVM_CORE_HAS_MP_STATE).unwrap_or_default();
            let mut xsave = [0u8; 4096];
            if let Ok(area) = fd.get_xsave() {
                flags |= KVM_CORE_HAS_XSAVE;
                for (bytes, word) in xsave.chunks_exact_mut(4).zip(area.region) {
                    bytes.copy_from_slice(&word.to_le_bytes());
                }
            }
            Ok(VcpuState(Box::new(kvm_core_vcpu_state {
                version: KVM_CORE_VCPU_STATE_VERSION,
                vcpu: vcpu.index(),
                flags,
                reserved: 0,
                regs,
                sregs,
                fpu,
                lapic,
                mp_state,
                reserved2: 0,
                xsave,
            })))
        })
    }

    /// The general registers.
    pub fn regs(&self) -> &kvm_regs {
        &self.0.regs
    }

    /// The segment and control registers.
    pub fn sregs(&self) -> &kvm_sregs {
        &self.0.sregs
    }

    /// Appends this vcpu's three notes to `out`.
    pub fn push_notes(&self, out: &mut Vec<u8>) {
        push_note(out, b"CORE", NT_PRSTATUS, &self.prstatus());
        push_note(out, b"CORE", NT_FPREGSET, &self.fpregset());
        // Field by field into zeroed bytes: the struct's own padding is
        // never read.
        let mut bytes = vec![0u8; std::mem::size_of::<kvm_core_vcpu_state>()];
        copy_fields(&self.0, &mut bytes);
        push_note(out, b"LIBKVM", KVM_CORE_NOTE_VCPU_STATE, &bytes);
    }

    /// `struct elf_prstatus` for gdb: `pr_pid` = vcpu + 1 and the general
    /// registers in `user_regs_struct` order. RIP is the linear address
    /// outside 64-bit mode, as the GDB stub shows it.
    fn prstatus(&self) -> [u8; PRSTATUS_SIZE] {
        let (r, s) = (&self.0.regs, &self.0.sregs);
        let mut out = [0u8; PRSTATUS_SIZE];
        out[PR_PID..PR_PID + 4].copy_from_slice(&(self.0.vcpu + 1).to_le_bytes());
        let registers = [
            r.r15,
            r.r14,
            r.r13,
            r.r12,
            r.rbp,
            r.rbx,
            r.r11,
            r.r10,
            r.r9,
            r.r8,
            r.rax,
            r.rcx,
            r.rdx,
            r.rsi,
            r.rdi,
            u64::MAX, // orig_rax: no system call
            x86::linear_pc(r, s),
            s.cs.selector.into(),
            r.rflags,
            r.rsp,
            s.ss.selector.into(),
            s.fs.base,
            s.gs.base,
            s.ds.selector.into(),
            s.es.selector.into(),
            s.fs.selector.into(),
            s.gs.selector.into(),
        ];
        for (i, value) in registers.iter().enumerate() {
            out[PR_REG + 8 * i..PR_REG + 8 * i + 8].copy_from_slice(&value.to_le_bytes());
        }
        out[PR_REG + 8 * registers.len()..][..4].copy_from_slice(&1u32.to_le_bytes()); // pr_fpvalid
        out
    }

    /// `struct user_fpregs_struct` (the FXSAVE layout) from KVM's FPU state.
    fn fpregset(&self) -> [u8; FPREGSET_SIZE] {
        let f = &self.0.fpu;
        let mut out = [0u8; FPREGSET_SIZE];
        out[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        out[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        out[4] = f.ftwx; // the abridged tag byte
        out[6..8].copy_from_slice(&f.last_opcode.to_le_bytes());
        out[8..16].copy_from_slice(&f.last_ip.to_le_bytes());
        out[16..24].copy_from_slice(&f.last_dp.to_le_bytes());
        out[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        out[28..32].copy_from_slice(&0xffffu32.to_le_bytes()); // mxcsr_mask
        for (i, reg) in f.fpr.iter().enumerate() {
            out[32 + 16 * i..48 + 16 * i].copy_from_slice(reg);
        }
        for (i, reg) in f.xmm.iter().enumerate() {
            out[160 + 16 * i..176 + 16 * i].copy_from_slice(reg);
        }
        out
    }
}

/// Copies `state` field by field into `out` (the C layout), leaving the
/// padding between fields zero.
fn copy_fields(state: &kvm_core_vcpu_state, out: &mut [u8]) {
    fn put<T: Copy>(out: &mut [u8], offset: usize, value: &T) {
        // SAFETY: T is an integer, an integer array or a KVM uapi
        // structure; the kernel's uapi structures spell out their padding
        // as fields, so every byte of the value is initialised.
        let bytes = unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) };
        out[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    use std::mem::offset_of;
    put(out, offset_of!(kvm_core_vcpu_state, version), &state.version);
    put(out, offset_of!(kvm_core_vcpu_state, vcpu), &state.vcpu);
    put(out, offset_of!(kvm_core_vcpu_state, flags), &state.flags);
    put(out, offset_of!(kvm_core_vcpu_state, regs), &state.regs);
    put(out, offset_of!(kvm_core_vcpu_state, sregs), &state.sregs);
    put(out, offset_of!(kvm_core_vcpu_state, fpu), &state.fpu);
    put(out, offset_of!(kvm_core_vcpu_state, lapic), &state.lapic);
    put(out, offset_of!(kvm_core_vcpu_state, mp_state), &state.mp_state);
    put(out, offset_of!(kvm_core_vcpu_state, xsave), &state.xsave);
}
