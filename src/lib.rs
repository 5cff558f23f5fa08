//! libkvm: the 2008 `libkvm` C API for KVM virtual machine monitors, in Rust.
//!
//! A C VMM links `libkvm.a` or `libkvm.so` and includes `include/libkvm.h`
//! (generated from [`capi`] by cbindgen). Below the C boundary everything is
//! safe Rust with typed errors:
//!
//! - [`context`]: one VM, its vcpus, memory and callbacks;
//! - [`memory`]: the guest-physical slot table and the host mappings behind it;
//! - [`vcpu`]: a vcpu fd and its mapped `kvm_run`;
//! - [`run`]: the `KVM_RUN` loop and exit dispatch to the C callbacks;
//! - [`x86`]: register dumps;
//! - [`coredump`]: ELF core files of the guest that gdb opens;
//! - [`sys`]: the KVM ioctls that `kvm-ioctls` does not wrap, and `KVM_RUN`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[allow(non_camel_case_types)]
pub mod callbacks;
#[allow(non_camel_case_types)]
pub mod capi;
pub mod context;
pub mod coredump;
pub mod error;
pub mod exit;
pub mod gdb;
pub mod memory;
pub mod run;
pub(crate) mod sys;
pub mod vcpu;
pub mod x86;

#[cfg(test)]
mod header_check;

pub mod debug;

/// Locks `mutex`, ignoring poisoning: the C boundary catches panics, and
/// the data under our locks stays consistent at every unlock point.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
