//! What the host's KVM does differently, probed once with a scratch VM.

use kvm_bindings::{
    kvm_guest_debug, kvm_guest_debug_arch, kvm_userspace_memory_region, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use super::breakpoints::INT3;

/// True when single-stepping a `hlt` reports a step past it instead of the
/// halt (hosts whose instruction emulator runs the guest do this; VMX and
/// SVM report `KVM_EXIT_HLT`). The library then runs such a `hlt` itself.
pub fn single_step_skips_halts(kvm: &Kvm) -> bool {
    const HLT: [u8; 1] = [0xf4];
    let step = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, ..Default::default() };
    first_exit_is_debug(kvm, &HLT, &step).unwrap_or(true)
}

/// True when a debug-register write watchpoint fires (it does not under
/// some hosts' instruction emulator).
pub fn fires_data_breakpoints(kvm: &Kvm) -> bool {
    // movb $1, 0x200; hlt -- with DR0 watching writes to 0x200.
    const STORE: [u8; 6] = [0xc6, 0x06, 0x00, 0x02, 0x01, 0xf4];
    let mut arch = kvm_guest_debug_arch::default();
    arch.debugreg[0] = 0x200;
    arch.debugreg[7] = 0x600 | 0b10 | (0b01 << 16); // G0, write, length 1
    let watch = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, pad: 0, arch };
    first_exit_is_debug(kvm, &STORE, &watch).unwrap_or(false)
}

/// True when a real-mode `int3` with software breakpoints on exits to the
/// library (SVM and VMX: `#BP`; emulating hosts may report it as an
/// emulation failure on the `int3`) rather than going to the guest's
/// interrupt table, as this project's emulating host does.
pub fn real_mode_int3_exits(kvm: &Kvm) -> bool {
    // At 0: the interrupt table, vector 3 pointing at 0:0x10 (hlt); at
    // 0x20, where the vcpu starts: int3; hlt.
    let mut code = [0u8; 0x22];
    code[12..16].copy_from_slice(&[0x10, 0x00, 0x00, 0x00]);
    code[0x10] = 0xf4;
    code[0x20..].copy_from_slice(&[INT3, 0xf4]);
    let breakpoints = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, ..Default::default() };
    first_exit(kvm, &code, 0x20, &breakpoints, |exit| matches!(exit, VcpuExit::Debug(_) | VcpuExit::InternalError))
        .unwrap_or(false)
}

/// Runs `code` once in real mode at 0:0 in a scratch VM with `debug` set,
/// and tells whether the first exit is `KVM_EXIT_DEBUG`; `None` when the
/// scratch VM could not run.
fn first_exit_is_debug(kvm: &Kvm, code: &[u8], debug: &kvm_guest_debug) -> Option<bool> {
    first_exit(kvm, code, 0, debug, |exit| matches!(exit, VcpuExit::Debug(_)))
}

/// Loads `code` at guest-physical 0 of a scratch VM, runs it once in real
/// mode from 0:`ip` with `debug` set, and judges the first exit; `None`
/// when the scratch VM could not run.
fn first_exit(
    kvm: &Kvm,
    code: &[u8],
    ip: u64,
    debug: &kvm_guest_debug,
    judge: impl FnOnce(&VcpuExit<'_>) -> bool,
) -> Option<bool> {
    let vm = kvm.create_vm().ok()?;
    // SAFETY: a fresh private anonymous page, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the page is ours, writable, and larger than any probe's code.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page.cast::<u8>(), code.len()) };
    let answer = (|| {
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 4096,
            userspace_addr: page as u64,
        };
        // SAFETY: the page outlives the VM (dropped at the end of this closure).
        unsafe { vm.set_user_memory_region(region) }.ok()?;
        let mut vcpu: VcpuFd = vm.create_vcpu(0).ok()?;
        let mut sregs = vcpu.get_sregs().ok()?;
        (sregs.cs.base, sregs.cs.selector, sregs.ds.base, sregs.ds.selector) = (0, 0, 0, 0);
        vcpu.set_sregs(&sregs).ok()?;
        let mut regs = vcpu.get_regs().ok()?;
        (regs.rip, regs.rflags) = (ip, 2);
        vcpu.set_regs(&regs).ok()?;
        vcpu.set_guest_debug(debug).ok()?;
        let exit = vcpu.run().ok()?;
        Some(judge(&exit))
    })();
    drop(vm);
    // SAFETY: the mapping made above; the VM that used it is gone.
    unsafe { libc::munmap(page, 4096) };
    answer
}
