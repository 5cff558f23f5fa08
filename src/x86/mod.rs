//! x86 vcpu state: where the instruction pointer points, and the dumps of
//! `kvm_show_regs` and `kvm_dump_vcpu`.

use std::fmt::Write;

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events};

use crate::vcpu::Vcpu;

/// EFER.LMA: long mode is active.
const EFER_LMA: u64 = 1 << 10;

/// True in 64-bit mode (long mode with a 64-bit code segment), where RIP is
/// a linear address by itself.
pub fn in_64bit_mode(sregs: &kvm_sregs) -> bool {
    code_is_64bit(&sregs.cs, sregs.efer)
}

/// [`in_64bit_mode`], from the code segment and EFER alone.
#[inline]
fn code_is_64bit(cs: &kvm_segment, efer: u64) -> bool {
    efer & EFER_LMA != 0 && cs.l != 0
}

/// The linear address of the instruction at RIP: CS base + RIP, in 32 bits,
/// outside 64-bit mode.
pub fn linear_pc(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    linear_address_of_ip(regs.rip, &sregs.cs, sregs.efer)
}

/// [`linear_pc`], from RIP, the code segment and EFER alone.
#[inline]
pub fn linear_address_of_ip(rip: u64, cs: &kvm_segment, efer: u64) -> u64 {
    if code_is_64bit(cs, efer) {
        rip
    } else {
        cs.base.wrapping_add(rip) & 0xffff_ffff
    }
}

/// Formats general registers like the 2008 `kvm_show_regs`.
pub fn format_regs(r: &kvm_regs) -> String {
    let rows = [
        [("rax", r.rax), ("rbx", r.rbx), ("rcx", r.rcx), ("rdx", r.rdx)],
        [("rsi", r.rsi), ("rdi", r.rdi), ("rsp", r.rsp), ("rbp", r.rbp)],
        [("r8 ", r.r8), ("r9 ", r.r9), ("r10", r.r10), ("r11", r.r11)],
        [("r12", r.r12), ("r13", r.r13), ("r14", r.r14), ("r15", r.r15)],
    ];
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().map(|(name, v)| format!("{name} {v:016x}")).collect();
        let _ = writeln!(out, "{}", line.join(" "));
    }
    let _ = writeln!(out, "rip {:016x} rflags {:08x}", r.rip, r.rflags);
    out
}

fn format_segment(out: &mut String, name: &str, s: &kvm_segment) {
    let _ = writeln!(
        out,
        "{name} {:04x} ({:08x}/{:08x} p {} dpl {} db {} s {} type {:x} l {} g {} avl {})",
        s.selector, s.base, s.limit, s.present, s.dpl, s.db, s.s, s.type_, s.l, s.g, s.avl
    );
}

fn format_table(out: &mut String, name: &str, t: &kvm_dtable) {
    let _ = writeln!(out, "{name} {:016x}/{:x}", t.base, t.limit);
}

/// Formats segment, descriptor-table and control registers.
pub fn format_sregs(s: &kvm_sregs) -> String {
    let mut out = String::new();
    for (name, seg) in [("cs", &s.cs), ("ds", &s.ds), ("es", &s.es), ("ss", &s.ss), ("fs", &s.fs), ("gs", &s.gs)] {
        format_segment(&mut out, name, seg);
    }
    format_segment(&mut out, "tr", &s.tr);
    format_segment(&mut out, "ldt", &s.ldt);
    format_table(&mut out, "gdt", &s.gdt);
    format_table(&mut out, "idt", &s.idt);
    let _ = writeln!(
        out,
        "cr0 {:x} cr2 {:x} cr3 {:x} cr4 {:x} cr8 {:x} efer {:x} apic_base {:x}",
        s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base
    );
    out
}

/// Formats pending exception, interrupt and NMI state.
pub fn format_events(e: &kvm_vcpu_events) -> String {
    format!(
        "exception: injected {} pending {} nr {} error_code {:x}\ninterrupt: injected {} nr {} shadow {}\nnmi: injected {} pending {} masked {}\n",
        e.exception.injected,
        e.exception.pending,
        e.exception.nr,
        e.exception.error_code,
        e.interrupt.injected,
        e.interrupt.nr,
        e.interrupt.shadow,
        e.nmi.injected,
        e.nmi.pending,
        e.nmi.masked,
    )
}

/// Prints general and segment registers of `vcpu` to stderr (`kvm_show_regs`).
pub fn show_regs(vcpu: &Vcpu) {
    eprint!("{}", show_regs_text(vcpu));
}

/// Prints everything `show_regs` prints plus events and debug registers
/// (`kvm_dump_vcpu`).
pub fn dump_vcpu(vcpu: &Vcpu) {
    eprint!("{}", dump_text(vcpu));
}

/// The text of `kvm_show_regs`.
pub fn show_regs_text(vcpu: &Vcpu) -> String {
    let mut out = format!("vcpu {}:\n", vcpu.index());
    match vcpu.ioctl(|fd| fd.get_regs()) {
        Ok(regs) => out += &format_regs(&regs),
        Err(e) => out += &format!("regs: {e}\n"),
    }
    match vcpu.ioctl(|fd| fd.get_sregs()) {
        Ok(sregs) => out += &format_sregs(&sregs),
        Err(e) => out += &format!("sregs: {e}\n"),
    }
    out
}

/// The text of `kvm_dump_vcpu`.
pub fn dump_text(vcpu: &Vcpu) -> String {
    let mut out = show_regs_text(vcpu);
    match vcpu.ioctl(|fd| fd.get_vcpu_events()) {
        Ok(events) => out += &format_events(&events),
        Err(e) => out += &format!("events: {e}\n"),
    }
    match vcpu.ioctl(|fd| fd.get_debug_regs()) {
        Ok(d) => {
            let _ = writeln!(
                out,
                "dr0 {:x} dr1 {:x} dr2 {:x} dr3 {:x} dr6 {:x} dr7 {:x}",
                d.db[0], d.db[1], d.db[2], d.db[3], d.dr6, d.dr7
            );
        }
        Err(e) => out += &format!("debug registers: {e}\n"),
    }
    match vcpu.ioctl(|fd| fd.get_mp_state()) {
        Ok(mp) => out += &format!("mp_state {}\n", mp.mp_state),
        Err(e) => out += &format!("mp_state: {e}\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_pc_adds_the_code_segment_base_outside_long_mode() {
        let regs = kvm_regs { rip: 0xfff0, ..Default::default() };
        let mut sregs = kvm_sregs { cs: kvm_segment { base: 0xf_0000, ..Default::default() }, ..Default::default() };
        assert_eq!(linear_pc(&regs, &sregs), 0xf_fff0);
        sregs.efer = 0x500;
        sregs.cs.l = 1;
        let regs = kvm_regs { rip: 0xffff_8000_0000_1000, ..Default::default() };
        assert_eq!(linear_pc(&regs, &sregs), 0xffff_8000_0000_1000);
    }

    #[test]
    fn register_dump_names_every_register_with_its_value() {
        let regs = kvm_regs { rax: 0x1234, r15: 0xdead_beef, rip: 0x10000, rflags: 0x202, ..Default::default() };
        let text = format_regs(&regs);
        assert!(text.contains("rax 0000000000001234"));
        assert!(text.contains("r15 00000000deadbeef"));
        assert!(text.contains("rip 0000000000010000 rflags 00000202"));
    }

    #[test]
    fn segment_dump_shows_selector_base_and_attributes() {
        let cs =
            kvm_segment { selector: 8, base: 0, limit: 0xffff_ffff, type_: 11, present: 1, l: 1, ..Default::default() };
        let sregs = kvm_sregs { cs, efer: 0x501, ..Default::default() };
        let text = format_sregs(&sregs);
        assert!(text.contains("cs 0008 (00000000/ffffffff p 1 dpl 0 db 0 s 0 type b l 1 g 0 avl 0)"));
        assert!(text.contains("efer 501"));
    }
}
