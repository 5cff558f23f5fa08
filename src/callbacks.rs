//! The VMM's callbacks, and what happens when one is NULL.

use std::ffi::{c_int, c_void};

use crate::exit::PortWidth;

/// The VMM's handlers for VM exits, called from the thread inside `kvm_run`.
///
/// The field order is the ABI of the 2008 libkvm and must not change. A
/// handler that returns non-zero ends `kvm_run`, which returns that value.
/// Any field may be NULL: I/O and MMIO reads then return all ones and writes
/// are dropped; `debug`, `halt` and `shutdown` end `kvm_run` returning 1;
/// `io_window`, `try_push_interrupts`, `pre_kvm_run` and `tpr_access` return 0.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct kvm_callbacks {
    /// `in` of one byte from port `addr`: store the value in `*data`.
    pub inb: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u16, data: *mut u8) -> c_int>,
    /// `in` of two bytes from port `addr`.
    pub inw: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u16, data: *mut u16) -> c_int>,
    /// `in` of four bytes from port `addr`.
    pub inl: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u16, data: *mut u32) -> c_int>,
    /// `out` of one byte to port `addr`.
    pub outb: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u16, data: u8) -> c_int>,
    /// `out` of two bytes to port `addr`.
    pub outw: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u16, data: u16) -> c_int>,
    /// `out` of four bytes to port `addr`.
    pub outl: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u16, data: u32) -> c_int>,
    /// A guest read of `len` bytes from unbacked guest-physical `addr`: fill `data`.
    pub mmio_read: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u64, data: *mut u8, len: c_int) -> c_int>,
    /// A guest write of `len` bytes in `data` to unbacked guest-physical `addr`.
    pub mmio_write: Option<unsafe extern "C" fn(opaque: *mut c_void, addr: u64, data: *mut u8, len: c_int) -> c_int>,
    /// A debug event on `vcpu`: `break_type` is a `KVM_GDB_*` value and
    /// `watchpoint` the watched address for watchpoints, else 0.
    pub debug:
        Option<unsafe extern "C" fn(opaque: *mut c_void, vcpu: c_int, break_type: c_int, watchpoint: u64) -> c_int>,
    /// `vcpu` executed `hlt` (only when the irqchip is not in the kernel).
    pub halt: Option<unsafe extern "C" fn(opaque: *mut c_void, vcpu: c_int) -> c_int>,
    /// `vcpu` hit a triple fault (or another shutdown condition).
    pub shutdown: Option<unsafe extern "C" fn(opaque: *mut c_void, vcpu: c_int) -> c_int>,
    /// `KVM_RUN` was interrupted by a signal: the VMM may handle I/O now.
    pub io_window: Option<unsafe extern "C" fn(opaque: *mut c_void) -> c_int>,
    /// Before each `KVM_RUN` without an in-kernel irqchip: inject pending
    /// interrupts; a non-zero return requests an interrupt window exit.
    pub try_push_interrupts: Option<unsafe extern "C" fn(opaque: *mut c_void) -> c_int>,
    /// After each `KVM_RUN`, whatever its outcome.
    pub post_kvm_run: Option<unsafe extern "C" fn(opaque: *mut c_void, vcpu: c_int)>,
    /// Before each `KVM_RUN`; a non-zero return ends `kvm_run` with that value.
    pub pre_kvm_run: Option<unsafe extern "C" fn(opaque: *mut c_void, vcpu: c_int) -> c_int>,
    /// A TPR access reported at `rip` (see `kvm_enable_tpr_access_reporting`).
    pub tpr_access: Option<unsafe extern "C" fn(opaque: *mut c_void, vcpu: c_int, rip: u64, is_write: c_int) -> c_int>,
}

/// The value `kvm_run` returns when a NULL `debug`, `halt` or `shutdown`
/// handler would have been called.
pub(crate) const DEFAULT_STOP: c_int = 1;

/// The callbacks with the VMM's opaque pointer, called with the defaults above.
#[derive(Clone, Copy)]
pub struct Callbacks {
    table: kvm_callbacks,
    opaque: *mut c_void,
}

// SAFETY: libkvm's contract is that the VMM's callbacks and `opaque` are
// called from every thread that runs a vcpu; the library only passes the
// pointer back to the VMM and never dereferences it.
unsafe impl Send for Callbacks {}
// SAFETY: as above; the table itself is immutable after `kvm_init`.
unsafe impl Sync for Callbacks {}

// Each call below passes the VMM's own opaque pointer and pointers to live
// locals back to a handler the VMM registered for exactly this purpose.
impl Callbacks {
    /// Wraps a copy of the VMM's table.
    pub fn new(table: kvm_callbacks, opaque: *mut c_void) -> Callbacks {
        Callbacks { table, opaque }
    }

    /// True when the VMM has a hook to call after each `KVM_RUN`.
    #[inline]
    pub fn has_exit_hook(&self) -> bool {
        self.table.post_kvm_run.is_some()
    }

    /// True when the VMM has a hook to call before each entry
    /// (`try_push_interrupts` or `pre_kvm_run`).
    #[inline]
    pub fn has_entry_hooks(&self) -> bool {
        self.table.try_push_interrupts.is_some() || self.table.pre_kvm_run.is_some()
    }

    /// Reads `size` (1, 2 or 4) bytes from `port` into `data`.
    #[inline]
    pub fn port_in(&self, port: u16, data: &mut [u8]) -> c_int {
        match *data {
            [ref mut b] => match self.table.inb {
                // SAFETY: see the comment on this impl.
                Some(f) => unsafe { f(self.opaque, port, b) },
                None => fill_ones(data),
            },
            [_, _] => match self.table.inw {
                Some(f) => {
                    let mut v = 0u16;
                    // SAFETY: see the comment on this impl.
                    let r = unsafe { f(self.opaque, port, &mut v) };
                    data.copy_from_slice(&v.to_ne_bytes());
                    r
                }
                None => fill_ones(data),
            },
            [_, _, _, _] => match self.table.inl {
                Some(f) => {
                    let mut v = 0u32;
                    // SAFETY: see the comment on this impl.
                    let r = unsafe { f(self.opaque, port, &mut v) };
                    data.copy_from_slice(&v.to_ne_bytes());
                    r
                }
                None => fill_ones(data),
            },
            _ => -libc::EMSGSIZE,
        }
    }

    /// Writes the low `width` bytes of `value` to `port`.
    #[inline]
    pub fn port_out(&self, port: u16, width: PortWidth, value: u32) -> c_int {
        // SAFETY (all arms): see the comment on this impl.
        match width {
            PortWidth::Byte => self.table.outb.map_or(0, |f| unsafe { f(self.opaque, port, value as u8) }),
            PortWidth::Word => self.table.outw.map_or(0, |f| unsafe { f(self.opaque, port, value as u16) }),
            PortWidth::Long => self.table.outl.map_or(0, |f| unsafe { f(self.opaque, port, value) }),
        }
    }

    /// Reads `data.len()` bytes of MMIO at `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> c_int {
        match self.table.mmio_read {
            // SAFETY: see the comment on this impl; `data` is at most 8 bytes.
            Some(f) => unsafe { f(self.opaque, addr, data.as_mut_ptr(), data.len() as c_int) },
            None => fill_ones(data),
        }
    }

    /// Writes `data` to MMIO at `addr`.
    pub fn mmio_write(&self, addr: u64, data: &mut [u8]) -> c_int {
        // SAFETY: see the comment on this impl; `data` is at most 8 bytes.
        self.table.mmio_write.map_or(0, |f| unsafe { f(self.opaque, addr, data.as_mut_ptr(), data.len() as c_int) })
    }

    /// Reports a debug event.
    pub fn debug(&self, vcpu: u32, break_type: c_int, watchpoint: u64) -> c_int {
        // SAFETY: see the comment on this impl.
        self.table.debug.map_or(DEFAULT_STOP, |f| unsafe { f(self.opaque, vcpu as c_int, break_type, watchpoint) })
    }

    /// Reports `hlt`.
    pub fn halt(&self, vcpu: u32) -> c_int {
        // SAFETY: see the comment on this impl.
        self.table.halt.map_or(DEFAULT_STOP, |f| unsafe { f(self.opaque, vcpu as c_int) })
    }

    /// Reports a shutdown (triple fault).
    pub fn shutdown(&self, vcpu: u32) -> c_int {
        // SAFETY: see the comment on this impl.
        self.table.shutdown.map_or(DEFAULT_STOP, |f| unsafe { f(self.opaque, vcpu as c_int) })
    }

    /// Lets the VMM work after an interrupted `KVM_RUN`.
    pub fn io_window(&self) -> c_int {
        // SAFETY: see the comment on this impl.
        self.table.io_window.map_or(0, |f| unsafe { f(self.opaque) })
    }

    /// Asks the VMM to inject interrupts; non-zero requests an interrupt window.
    pub fn try_push_interrupts(&self) -> c_int {
        // SAFETY: see the comment on this impl.
        self.table.try_push_interrupts.map_or(0, |f| unsafe { f(self.opaque) })
    }

    /// Called after every `KVM_RUN`.
    pub fn post_kvm_run(&self, vcpu: u32) {
        if let Some(f) = self.table.post_kvm_run {
            // SAFETY: see the comment on this impl.
            unsafe { f(self.opaque, vcpu as c_int) }
        }
    }

    /// Called before every `KVM_RUN`.
    pub fn pre_kvm_run(&self, vcpu: u32) -> c_int {
        // SAFETY: see the comment on this impl.
        self.table.pre_kvm_run.map_or(0, |f| unsafe { f(self.opaque, vcpu as c_int) })
    }

    /// Reports a TPR access.
    pub fn tpr_access(&self, vcpu: u32, rip: u64, is_write: bool) -> c_int {
        // SAFETY: see the comment on this impl.
        self.table.tpr_access.map_or(0, |f| unsafe { f(self.opaque, vcpu as c_int, rip, is_write as c_int) })
    }
}

fn fill_ones(data: &mut [u8]) -> c_int {
    data.fill(0xff);
    0
}
