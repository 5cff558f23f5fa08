//! What the host's KVM does differently, probed once with a scratch VM.

use kvm_bindings::{kvm_guest_debug, kvm_userspace_memory_region, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP};
use kvm_ioctls::{Kvm, VcpuExit};

/// True when single-stepping a `hlt` reports a step past it instead of the
/// halt (hosts whose instruction emulator runs the guest do this; VMX and
/// SVM report `KVM_EXIT_HLT`). The library then runs such a `hlt` itself.
pub fn single_step_skips_halts(kvm: &Kvm) -> bool {
    probe_single_step_over_hlt(kvm).unwrap_or(true)
}

/// Real mode at 0:0, one page of RAM holding `hlt`, one single step.
fn probe_single_step_over_hlt(kvm: &Kvm) -> Option<bool> {
    const HLT: u8 = 0xf4;
    let vm = kvm.create_vm().ok()?;
    // SAFETY: a fresh private anonymous page, unmapped below.
    let page = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if page == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the page is ours and writable.
    unsafe { *page.cast::<u8>() = HLT };
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
        let mut vcpu = vm.create_vcpu(0).ok()?;
        let mut sregs = vcpu.get_sregs().ok()?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs).ok()?;
        let mut regs = vcpu.get_regs().ok()?;
        (regs.rip, regs.rflags) = (0, 2);
        vcpu.set_regs(&regs).ok()?;
        let step = kvm_guest_debug { control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, ..Default::default() };
        vcpu.set_guest_debug(&step).ok()?;
        let exit = vcpu.run().ok()?;
        Some(matches!(exit, VcpuExit::Debug(_)))
    })();
    drop(vm);
    // SAFETY: the mapping made above; the VM that used it is gone.
    unsafe { libc::munmap(page, 4096) };
    answer
}

