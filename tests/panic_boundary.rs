//! A panic inside libkvm never crosses the C boundary: the function returns
//! its error value (`-EIO`, or NULL / errno `EIO`), the process lives, and
//! the context keeps working, even when the panic struck with a vcpu's
//! lock held. Needs `--features test-hooks`.

use kvm::callbacks::kvm_callbacks;
use kvm::capi::test_hooks::{panic_at, HookPoint};
use kvm::capi::*;
use kvm_bindings::kvm_regs;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn context() -> kvm_context_t {
    let mut callbacks = kvm_callbacks::default();
    // SAFETY: a valid callback table.
    let kvm = unsafe { kvm_init(&mut callbacks, std::ptr::null_mut()) };
    assert!(!kvm.is_null());
    // SAFETY: a live context; kvm_create does not use its RAM arguments.
    unsafe {
        assert_eq!(kvm_create(kvm, 1 << 20, std::ptr::null_mut()), 0);
        assert!(!kvm_create_phys_mem(kvm, 0, 1 << 20, 0, 1).is_null());
        assert_eq!(kvm_create_vcpu(kvm, 0), 0);
    }
    kvm
}

#[test]
fn a_panic_at_the_boundary_is_an_error_return_of_each_kind() {
    let kvm = context();
    let mut regs = kvm_regs::default();
    // SAFETY (all calls): a live context and valid pointers.
    unsafe {
        panic_at(HookPoint::Boundary);
        assert_eq!(kvm_get_regs(kvm, 0, &mut regs), -libc::EIO, "int function");
        panic_at(HookPoint::Boundary);
        assert!(kvm_create_phys_mem(kvm, 0x100000, 4096, 0, 1).is_null(), "pointer function");
        assert_eq!(errno(), libc::EIO);
        panic_at(HookPoint::Boundary);
        assert_eq!(kvm_get_apic_base(kvm, 0), 0, "value function");
        assert_eq!(errno(), libc::EIO);
        panic_at(HookPoint::Boundary);
        kvm_show_regs(kvm, 0);
        assert_eq!(errno(), libc::EIO, "void function");
        // Nothing is left broken.
        assert_eq!(kvm_get_regs(kvm, 0, &mut regs), 0);
        kvm_finalize(kvm);
    }
}

#[test]
fn a_panic_with_a_vcpu_lock_held_leaves_the_vcpu_usable() {
    let kvm = context();
    let mut regs = kvm_regs::default();
    // SAFETY (all calls): a live context and valid pointers.
    unsafe {
        assert_eq!(kvm_get_regs(kvm, 0, &mut regs), 0);
        regs.rbx = 0x1234;
        assert_eq!(kvm_set_regs(kvm, 0, &mut regs), 0);
        panic_at(HookPoint::VcpuLocked);
        assert_eq!(kvm_get_regs(kvm, 0, &mut regs), -libc::EIO);
        // The mutex was poisoned by the panic; the library goes on using it.
        let mut again = kvm_regs::default();
        assert_eq!(kvm_get_regs(kvm, 0, &mut again), 0);
        assert_eq!(again.rbx, 0x1234);
        panic_at(HookPoint::VcpuLocked);
        assert_eq!(kvm_run(kvm, 0), -libc::EIO, "a panic inside kvm_run");
        assert_eq!(kvm_get_regs(kvm, 0, &mut again), 0);
        kvm_finalize(kvm);
    }
}
