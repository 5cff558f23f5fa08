//! Errors as errno values, end to end.
//!
//! KVM reports errno values and libkvm returns them negated, so the core
//! keeps the errno rather than inventing its own codes.

use std::fmt;

/// A failure carrying a positive errno value (`libc::EINVAL`, ...).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

/// The result type of the safe core.
pub type Result<T> = std::result::Result<T, Errno>;

/// Turns the outcome of a library handler into `kvm_run`'s result: its
/// value, or the errno negated.
#[inline]
pub fn result_code(outcome: Result<std::ffi::c_int>) -> std::ffi::c_int {
    outcome.unwrap_or_else(Errno::negated)
}

impl Errno {
    /// An argument is out of range or inconsistent.
    pub const INVAL: Errno = Errno(libc::EINVAL);
    /// A guest or host address is not accessible.
    pub const FAULT: Errno = Errno(libc::EFAULT);
    /// The object does not exist.
    pub const NOENT: Errno = Errno(libc::ENOENT);
    /// The object exists already.
    pub const EXIST: Errno = Errno(libc::EEXIST);
    /// Memory could not be allocated or mapped.
    pub const NOMEM: Errno = Errno(libc::ENOMEM);
    /// No free resource (debug register, memory slot).
    pub const NOSPC: Errno = Errno(libc::ENOSPC);
    /// The host does not support the operation.
    pub const NOTSUP: Errno = Errno(libc::ENOTSUP);
    /// The object is in use (a vcpu already running in another thread).
    pub const BUSY: Errno = Errno(libc::EBUSY);
    /// The VM has not been created yet.
    pub const NODEV: Errno = Errno(libc::ENODEV);
    /// An internal error: a bug in libkvm was caught at the C boundary.
    pub const IO: Errno = Errno(libc::EIO);

    /// The calling thread's current `errno`.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }

    /// The value returned to C: the errno negated.
    pub fn negated(self) -> i32 {
        -self.0
    }
}

impl From<vmm_sys_util::errno::Error> for Errno {
    fn from(e: vmm_sys_util::errno::Error) -> Self {
        Errno(e.errno())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({}: {})", self.0, std::io::Error::from_raw_os_error(self.0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}
