//! The built-in GDB remote stub.

use std::ffi::{c_char, c_int, CStr};

use super::*;

/// Starts the GDB remote stub for the VM, listening at `listen`:
/// `"127.0.0.1:1234"`, `"[::1]:1234"`, `"unix:/path"`, or a bare port
/// (`"1234"`, loopback only). One gdb at a time; threads are vcpus (thread
/// id = vcpu + 1). While gdb is connected, debug events go to gdb rather
/// than to the `debug` callback, and a stop parks every vcpu thread inside
/// `kvm_run`. When gdb detaches or disconnects, its breakpoints are removed
/// and the guest runs on; gdb's `kill` ends each `kvm_run` through the
/// `shutdown` callback. `-EBUSY` when a stub runs already, `-EINVAL` for a
/// bad address, `-EADDRINUSE` and the like from the socket.
///
/// Setting `LIBKVM_GDB=<listen>` in the environment makes `kvm_create`
/// start the stub itself, with every vcpu waiting for gdb before its first
/// instruction.
#[no_mangle]
pub unsafe extern "C" fn kvm_gdbstub_start(kvm: kvm_context_t, listen: *const c_char) -> c_int {
    status_result(|| {
        // SAFETY: C passes a context from kvm_init and a NUL-terminated string.
        let (ctx, listen) = unsafe { (checked_context(kvm)?, checked_ref(listen)?) };
        // SAFETY: checked non-NULL above; C promises NUL termination.
        let listen = unsafe { CStr::from_ptr(listen) }.to_str().map_err(|_| Errno::INVAL)?;
        ctx.start_gdbstub(listen)
    })
}

/// Stops the stub: a connected gdb is disconnected (its breakpoints
/// removed) and the guest runs on. `-ENOENT` when no stub runs.
#[no_mangle]
pub unsafe extern "C" fn kvm_gdbstub_stop(kvm: kvm_context_t) -> c_int {
    // SAFETY: C passes a context from kvm_init or NULL.
    status_result(|| unsafe { checked_context(kvm) }?.stop_gdbstub())
}
