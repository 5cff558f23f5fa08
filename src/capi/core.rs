//! Guest core dumps.

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::*;

/// `kvm_dump_guest_core` flag: also segments by the guest-virtual
/// addresses vcpu 0's page tables map (`p_vaddr` = what the guest's symbols
/// use, as for a higher-half kernel), besides one per RAM slot.
pub const KVM_CORE_PAGING: c_int = 1;

/// Writes an ELF64 x86-64 core file of the whole guest to `path`, which
/// `gdb <guest kernel ELF> <path>` opens: one `PT_LOAD` per RAM slot
/// (`p_paddr` = guest-physical address, `p_vaddr` the same), with
/// `KVM_CORE_PAGING` also one per run of guest-virtual addresses; a
/// `PT_NOTE` with, per vcpu, `NT_PRSTATUS` (gdb shows vcpu N as thread
/// N + 1, `pr_pid` N + 1), `NT_FPREGSET`, and a note named "LIBKVM" of type
/// `KVM_CORE_NOTE_VCPU_STATE` holding a `struct kvm_core_vcpu_state` with
/// everything KVM has for the vcpu. MMIO and unbacked ranges are left out;
/// zero pages are holes (a sparse file). The file has mode 0600.
///
/// Every vcpu running in another thread is kicked out of the guest and
/// held while the dump is written, then runs on. `-EFAULT` for a NULL
/// path, `-ENOENT` for a VM without vcpus, `-EINVAL` for unknown flags,
/// errors of the file system (`-EACCES`, `-ENOSPC`, ...) as they come;
/// on failure nothing is left at `path`.
///
/// `LIBKVM_CORE=<directory>` in the environment makes the library write
/// `<directory>/libkvm-core.<pid>.<n>` (with `KVM_CORE_PAGING`) by itself
/// when a vcpu triple-faults (before the `shutdown` callback) or makes an
/// exit the library cannot handle (before `kvm_run` returns `-EFAULT`).
#[no_mangle]
pub unsafe extern "C" fn kvm_dump_guest_core(kvm: kvm_context_t, path: *const c_char, flags: c_int) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a NUL-terminated path.
        let (ctx, path) = unsafe { (checked_context(kvm)?, checked_ref(path)?) };
        if flags & !KVM_CORE_PAGING != 0 {
            return Err(Errno::INVAL);
        }
        // SAFETY: checked non-NULL above; C promises NUL termination.
        let path = unsafe { CStr::from_ptr(path) }.to_bytes();
        if path.is_empty() {
            return Err(Errno::NOENT);
        }
        ctx.dump_guest_core(Path::new(OsStr::from_bytes(path)), flags & KVM_CORE_PAGING != 0)
    })
}
