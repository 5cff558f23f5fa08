//! Kicking a vcpu thread out of the guest: the library reserves one
//! real-time signal, whose handler sets `immediate_exit` in the `kvm_run`
//! of the vcpu that thread runs, so `KVM_RUN` returns at once (or does not
//! start).

use std::cell::Cell;
use std::ffi::c_int;
use std::sync::Once;

use super::Vcpu;

/// The signal the library reserves to kick vcpu threads out of the guest:
/// `SIGRTMAX - 2`. `kvm_run` keeps it unblocked in the calling thread and
/// in the guest signal mask.
pub fn kick_signal() -> c_int {
    libc::SIGRTMAX() - 2
}

thread_local! {
    /// The vcpu this thread runs, for the kick signal handler.
    static RUNNING_VCPU: Cell<*const Vcpu> = const { Cell::new(std::ptr::null()) };
}

extern "C" fn on_kick(_signal: c_int) {
    RUNNING_VCPU.with(|current| {
        let vcpu = current.get();
        if !vcpu.is_null() {
            // SAFETY: RUNNING_VCPU is set only while this thread is inside
            // kvm_run for that vcpu (see KvmRunThread), which keeps it alive.
            unsafe { (*vcpu).kick_from_signal_handler() }
        }
    });
}

fn install_kick_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a plain handler for a signal reserved by the library; it
        // only does a volatile store through a thread-local pointer.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick as extern "C" fn(c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(kick_signal(), &action, std::ptr::null_mut());
        }
    });
}

/// True when the calling thread is the one inside `kvm_run` for `vcpu`.
#[inline]
pub fn runs_on_this_thread(vcpu: &Vcpu) -> bool {
    RUNNING_VCPU.with(|current| std::ptr::eq(current.get(), vcpu))
}

/// Marks the calling thread as running `vcpu` for the kick handler, for as
/// long as it lives.
pub struct KvmRunThread {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl KvmRunThread {
    /// Called on entry to `kvm_run`.
    pub fn enter(vcpu: &Vcpu) -> KvmRunThread {
        install_kick_handler();
        // SAFETY: plain signal-set manipulation on local values.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, kick_signal());
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        RUNNING_VCPU.with(|current| current.set(vcpu));
        KvmRunThread { _not_send: std::marker::PhantomData }
    }
}

impl Drop for KvmRunThread {
    fn drop(&mut self) {
        RUNNING_VCPU.with(|current| current.set(std::ptr::null()));
    }
}

/// Removes the kick signal from a guest signal mask.
pub fn keep_kick_unblocked(mask: &mut libc::sigset_t) {
    // SAFETY: `mask` is a valid sigset_t.
    unsafe { libc::sigdelset(mask, kick_signal()) };
}
