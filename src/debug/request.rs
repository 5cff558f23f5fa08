//! The debug requests a VMM makes itself: the 2008 `struct kvm_debug_guest`
//! and the modern `struct kvm_guest_debug`.

use kvm_bindings::{
    kvm_guest_debug, kvm_guest_debug_arch, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    KVM_GUESTDBG_USE_SW_BP,
};

use super::debugregs::{encode, Condition, DebugRegisterSlot, DEBUG_REGISTERS};

/// One hardware breakpoint of the 2008 request (`struct kvm_breakpoint`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_breakpoint {
    /// Non-zero when the breakpoint is used.
    pub enabled: u32,
    /// Unused.
    pub padding: u32,
    /// Linear address of the instruction.
    pub address: u64,
}

/// The 2008 debug request (`struct kvm_debug_guest` of old kernel headers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_debug_guest {
    /// Non-zero turns debugging on, with software breakpoints.
    pub enabled: u32,
    /// Unused.
    pub pad: u32,
    /// Hardware execution breakpoints, one per debug register.
    pub breakpoints: [kvm_breakpoint; 4],
    /// Non-zero single-steps.
    pub singlestep: u32,
}

/// Translates the 2008 request into `KVM_SET_GUEST_DEBUG` terms.
pub fn translate_old_request(old: &kvm_debug_guest) -> kvm_guest_debug {
    let mut request = kvm_guest_debug::default();
    if old.enabled == 0 {
        return request;
    }
    request.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
    if old.singlestep != 0 {
        request.control |= KVM_GUESTDBG_SINGLESTEP;
    }
    let mut slots = [None; DEBUG_REGISTERS];
    for (slot, bp) in slots.iter_mut().zip(&old.breakpoints) {
        if bp.enabled != 0 {
            *slot = Some(DebugRegisterSlot { addr: bp.address, condition: Condition::Execute, len: 1 });
        }
    }
    if slots.iter().any(Option::is_some) {
        request.control |= KVM_GUESTDBG_USE_HW_BP;
        let (addrs, dr7) = encode(&slots);
        let mut arch = kvm_guest_debug_arch::default();
        arch.debugreg[..DEBUG_REGISTERS].copy_from_slice(&addrs);
        arch.debugreg[7] = dr7;
        request.arch = arch;
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::debugregs::Dr7;

    #[test]
    fn disabled_request_turns_everything_off() {
        let old = kvm_debug_guest { enabled: 0, singlestep: 1, ..Default::default() };
        assert_eq!(translate_old_request(&old).control, 0);
    }

    #[test]
    fn enabled_alone_means_software_breakpoints() {
        let old = kvm_debug_guest { enabled: 1, ..Default::default() };
        assert_eq!(translate_old_request(&old).control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP);
    }

    #[test]
    fn enabled_breakpoints_become_execution_breakpoints_in_their_own_register() {
        let mut old = kvm_debug_guest { enabled: 1, singlestep: 1, ..Default::default() };
        old.breakpoints[2] = kvm_breakpoint { enabled: 1, padding: 0, address: 0x10_0040 };
        let request = translate_old_request(&old);
        assert_eq!(
            request.control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP
        );
        assert_eq!(request.arch.debugreg[2], 0x10_0040);
        let dr7 = Dr7(request.arch.debugreg[7]);
        assert!(dr7.enabled(2) && !dr7.enabled(0) && !dr7.enabled(1) && !dr7.enabled(3));
        assert_eq!(dr7.condition(2), Condition::Execute);
    }
}
