//! Between KVM's register structures and the stub's [`VcpuRegisters`].
//!
//! gdb's program counter is RIP, and gdb places breakpoints and reads code
//! at it as if it were a linear address. Outside 64-bit mode the linear
//! address is CS base + RIP (real-mode BIOS code runs at 0xf000:xxxx), so
//! there the stub shows RIP as the linear address and takes a written RIP
//! back relative to CS base: breakpoints, `x/i $pc` and stepping work in
//! every mode. `$cs_base` shows the base.

use gdbstub_arch::x86::reg::{X86SegmentRegs, X87FpuInternalRegs, F80};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use super::arch::VcpuRegisters;
use crate::x86;

/// The x87 tag word from FXSAVE's abridged form: 11 (empty) for a clear
/// bit, 00 (valid) for a set one.
fn full_tag_word(abridged: u8) -> u32 {
    (0..8).filter(|i| abridged & (1 << i) == 0).map(|i| 0b11 << (2 * i)).sum()
}

/// FXSAVE's abridged tag byte from a full tag word.
fn abridged_tag(full: u32) -> u8 {
    (0..8).filter(|i| (full >> (2 * i)) & 0b11 != 0b11).map(|i| 1u8 << i).sum()
}

/// The base gdb's RIP is relative to: 0 in 64-bit mode, else CS base.
fn pc_base(sregs: &kvm_sregs) -> u64 {
    if x86::in_64bit_mode(sregs) {
        0
    } else {
        sregs.cs.base
    }
}

/// What gdb sees for a vcpu with these KVM registers.
pub fn from_kvm(regs: &kvm_regs, sregs: &kvm_sregs, fpu: &kvm_fpu) -> VcpuRegisters {
    let mut out = VcpuRegisters::default();
    let core = &mut out.core;
    core.regs = [
        regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.rsp, regs.r8, regs.r9, regs.r10,
        regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ];
    core.rip = regs.rip.wrapping_add(pc_base(sregs));
    core.eflags = regs.rflags as u32;
    core.segments = X86SegmentRegs {
        cs: sregs.cs.selector.into(),
        ss: sregs.ss.selector.into(),
        ds: sregs.ds.selector.into(),
        es: sregs.es.selector.into(),
        fs: sregs.fs.selector.into(),
        gs: sregs.gs.selector.into(),
    };
    for (st, fpr) in core.st.iter_mut().zip(&fpu.fpr) {
        let mut value: F80 = [0; 10];
        value.copy_from_slice(&fpr[..10]);
        *st = value;
    }
    core.fpu = X87FpuInternalRegs {
        fctrl: fpu.fcw.into(),
        fstat: fpu.fsw.into(),
        ftag: full_tag_word(fpu.ftwx),
        fiseg: (fpu.last_ip >> 32) as u32,
        fioff: fpu.last_ip as u32,
        foseg: (fpu.last_dp >> 32) as u32,
        fooff: fpu.last_dp as u32,
        fop: fpu.last_opcode.into(),
    };
    for (xmm, bytes) in core.xmm.iter_mut().zip(&fpu.xmm) {
        *xmm = u128::from_le_bytes(*bytes);
    }
    core.mxcsr = fpu.mxcsr;
    out.extra = [
        sregs.fs.base,
        sregs.gs.base,
        sregs.cr0,
        sregs.cr2,
        sregs.cr3,
        sregs.cr4,
        sregs.cr8,
        sregs.efer,
        sregs.cs.base,
        sregs.ss.base,
        sregs.ds.base,
        sregs.es.base,
    ];
    out
}

/// Applies what gdb wrote to KVM's structures. Segment selectors change
/// only the selector (gdb cannot give descriptors); everything else is
/// taken as written.
pub fn to_kvm(gdb: &VcpuRegisters, regs: &mut kvm_regs, sregs: &mut kvm_sregs, fpu: &mut kvm_fpu) {
    let core = &gdb.core;
    let [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15] = core.regs;
    *regs = kvm_regs {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rbp,
        rsp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip: core.rip.wrapping_sub(pc_base(sregs)),
        rflags: (regs.rflags & !0xffff_ffff) | u64::from(core.eflags),
    };
    let s = &core.segments;
    sregs.cs.selector = s.cs as u16;
    sregs.ss.selector = s.ss as u16;
    sregs.ds.selector = s.ds as u16;
    sregs.es.selector = s.es as u16;
    sregs.fs.selector = s.fs as u16;
    sregs.gs.selector = s.gs as u16;
    let [fs_base, gs_base, cr0, cr2, cr3, cr4, cr8, efer, cs_base, ss_base, ds_base, es_base] = gdb.extra;
    sregs.fs.base = fs_base;
    sregs.gs.base = gs_base;
    sregs.cr0 = cr0;
    sregs.cr2 = cr2;
    sregs.cr3 = cr3;
    sregs.cr4 = cr4;
    sregs.cr8 = cr8;
    sregs.efer = efer;
    sregs.cs.base = cs_base;
    sregs.ss.base = ss_base;
    sregs.ds.base = ds_base;
    sregs.es.base = es_base;
    for (fpr, st) in fpu.fpr.iter_mut().zip(&core.st) {
        fpr[..10].copy_from_slice(st);
    }
    fpu.fcw = core.fpu.fctrl as u16;
    fpu.fsw = core.fpu.fstat as u16;
    fpu.ftwx = abridged_tag(core.fpu.ftag);
    fpu.last_ip = (u64::from(core.fpu.fiseg) << 32) | u64::from(core.fpu.fioff);
    fpu.last_dp = (u64::from(core.fpu.foseg) << 32) | u64::from(core.fpu.fooff);
    fpu.last_opcode = core.fpu.fop as u16;
    for (bytes, xmm) in fpu.xmm.iter_mut().zip(&core.xmm) {
        *bytes = xmm.to_le_bytes();
    }
    fpu.mxcsr = core.mxcsr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_segment;

    fn sample() -> (kvm_regs, kvm_sregs, kvm_fpu) {
        let regs = kvm_regs { rax: 1, rbx: 2, r15: 15, rip: 0x10_0000, rflags: 0x246, ..Default::default() };
        let mut sregs = kvm_sregs {
            cs: kvm_segment { selector: 8, base: 0, ..Default::default() },
            fs: kvm_segment { selector: 0x10, base: 0x7f00_0000_1000, ..Default::default() },
            cr0: 0x8005_0033,
            cr3: 0x1000,
            cr4: 0x20,
            efer: 0x501,
            ..Default::default()
        };
        sregs.gs.base = 0xffff_8000_0000_0000;
        let mut fpu = kvm_fpu { fcw: 0x37f, ftwx: 0b0000_0001, mxcsr: 0x1f80, ..Default::default() };
        fpu.xmm[3] = [7; 16];
        fpu.fpr[0][..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        (regs, sregs, fpu)
    }

    #[test]
    fn registers_gdb_sees_come_from_the_right_fields() {
        let (regs, sregs, fpu) = sample();
        let g = from_kvm(&regs, &sregs, &fpu);
        assert_eq!((g.core.regs[0], g.core.regs[1], g.core.regs[15]), (1, 2, 15));
        assert_eq!((g.core.rip, g.core.eflags, g.core.segments.cs), (0x10_0000, 0x246, 8));
        assert_eq!(g.extra[..6], [0x7f00_0000_1000, 0xffff_8000_0000_0000, 0x8005_0033, 0, 0x1000, 0x20]);
        assert_eq!(g.extra[7], 0x501);
        assert_eq!(g.core.xmm[3], u128::from_le_bytes([7; 16]));
        assert_eq!(g.core.fpu.ftag, 0xfffc, "register 0 in use, the others empty");
    }

    #[test]
    fn writing_back_what_gdb_read_changes_nothing() {
        let (regs, sregs, fpu) = sample();
        let g = from_kvm(&regs, &sregs, &fpu);
        let (mut r, mut s, mut f) = (regs, sregs, fpu);
        to_kvm(&g, &mut r, &mut s, &mut f);
        assert_eq!((r, s, f), (regs, sregs, fpu));
    }

    #[test]
    fn a_changed_register_reaches_its_kvm_field() {
        let (regs, sregs, fpu) = sample();
        let mut g = from_kvm(&regs, &sregs, &fpu);
        g.core.regs[0] = 0x5555;
        g.extra[4] = 0x9000; // cr3
        let (mut r, mut s, mut f) = (regs, sregs, fpu);
        to_kvm(&g, &mut r, &mut s, &mut f);
        assert_eq!((r.rax, s.cr3, s.fs.base), (0x5555, 0x9000, 0x7f00_0000_1000));
    }

    #[test]
    fn outside_long_mode_rip_is_shown_as_the_linear_address() {
        let regs = kvm_regs { rip: 0xfff0, ..Default::default() };
        let sregs = kvm_sregs {
            cs: kvm_segment { selector: 0xf000, base: 0xf_0000, ..Default::default() },
            ..Default::default()
        };
        let fpu = kvm_fpu::default();
        let mut g = from_kvm(&regs, &sregs, &fpu);
        assert_eq!(g.core.rip, 0xf_fff0);
        g.core.rip = 0xf_0005; // gdb jumps to a linear address
        let (mut r, mut s, mut f) = (regs, sregs, fpu);
        to_kvm(&g, &mut r, &mut s, &mut f);
        assert_eq!(r.rip, 0x5);
    }

    #[test]
    fn tag_words_convert_both_ways() {
        for abridged in [0u8, 1, 0x80, 0xff, 0x5a] {
            assert_eq!(abridged_tag(full_tag_word(abridged)), abridged);
        }
    }
}
