//! Guest debugging: the old and new debug requests.

use std::ffi::c_int;

use kvm_bindings::kvm_guest_debug;

use super::*;
use crate::debug::request::{kvm_debug_guest, translate_old_request};

/// The 2008 debug request (`KVM_DEBUG_GUEST`), translated to
/// `KVM_SET_GUEST_DEBUG`: `enabled` turns on debugging with software
/// breakpoints (`int3` reported as `KVM_GDB_BREAKPOINT_SW`), each enabled
/// `breakpoints[i]` becomes hardware execution breakpoint `i`, and
/// `singlestep` single-steps. `enabled = 0` turns debugging off.
#[no_mangle]
pub unsafe extern "C" fn kvm_guest_debug(kvm: kvm_context_t, vcpu: c_int, dbg: *mut kvm_debug_guest) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a valid struct.
        let ((_, vcpu), dbg) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_ref(dbg)?) };
        let request = translate_old_request(dbg);
        vcpu.ioctl(|fd| fd.set_guest_debug(&request))
    })
}

/// The modern debug request (`KVM_SET_GUEST_DEBUG`), passed through.
#[no_mangle]
pub unsafe extern "C" fn kvm_set_guest_debug(kvm: kvm_context_t, vcpu: c_int, dbg: *mut kvm_guest_debug) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a valid struct.
        let ((_, vcpu), dbg) = unsafe { (checked_vcpu(kvm, vcpu)?, checked_ref(dbg)?) };
        vcpu.ioctl(|fd| fd.set_guest_debug(dbg))
    })
}
