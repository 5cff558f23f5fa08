//! One vcpu: its fd, its mapped `kvm_run`, and entering the guest.
//!
//! - [`pause`]: keeping the vcpu out of the guest while another thread
//!   uses it;
//! - [`kick`]: the reserved signal that gets a thread out of `KVM_RUN`;
//! - [`exit_registers`]: what a stop reads of the registers, and the
//!   runner's copy of it from the last debug exit.

pub mod exit_registers;
pub mod kick;
pub mod pause;

use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use kvm_bindings::{
    kvm_guest_debug, kvm_regs, kvm_run, kvm_sregs, kvm_sync_regs, KVM_EXIT_DEBUG, KVM_EXIT_INTERNAL_ERROR,
    KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS,
};
use kvm_ioctls::VcpuFd;

use self::exit_registers::{ExitRegisters, StopRegisters};
use self::pause::{PauseGate, PauseGuard};
use crate::debug::pagewalk::PagingRegisters;
use crate::debug::vcpu_state::VcpuDebug;
use crate::error::{Errno, Result};
use crate::exit::{self, Exit, ExitData, IoPayload, RunMapping, IO_DATA_MAX};
use crate::{lock, sys};

/// A vcpu of a [`Context`](crate::context::Context).
///
/// The fd sits behind a mutex, except for `KVM_RUN` and the copy of its
/// exit, which the thread in `kvm_run` does in an entry window that the
/// pause gate guards, and its `KVM_SET_GUEST_DEBUG`, which the vcpu's
/// debug state lock orders (see [`Vcpu::set_guest_debug`]). Any other
/// thread that uses the fd first pauses the vcpu (see [`pause`]): the vcpu
/// is kicked out of the guest and stays out until the call is done, so no
/// call waits for the guest's own next exit.
pub struct Vcpu {
    index: u32,
    fd: Mutex<VcpuFd>,
    /// The fd's number, for the runner's `KVM_RUN` in the entry window
    /// and its `KVM_SET_GUEST_DEBUG` (the fd mutex is not taken for them).
    raw_fd: RawFd,
    /// The `kvm_run` mapping, for the users that do not take the mutex:
    /// the runner in its entry window, and the kick signal handler setting
    /// `immediate_exit`.
    run_page: NonNull<kvm_run>,
    mmap_size: usize,
    running: AtomicBool,
    /// The runs of the guest (`KVM_RUN` returns), counted by the runner
    /// alone. With `state_writes`, the state epoch ([`Vcpu::state_epoch`]).
    guest_runs: AtomicU64,
    /// The writes of vcpu state (the VMM's, the debugger's), counted from
    /// any thread.
    state_writes: AtomicU64,
    /// The state epoch at which the last plain single step's exit found
    /// nothing for the next entry to do (see [`Vcpu::note_steady_step`]);
    /// written by the runner alone.
    steady_step_epoch: AtomicU64,
    /// The paging registers at a [`Vcpu::state_epoch`] (see `paging_registers`).
    paging: Mutex<Option<(u64, PagingRegisters)>>,
    /// Debugging state; see [`crate::debug`].
    pub(crate) debug: Mutex<VcpuDebug>,
    /// Whether the vcpu makes progress on protected pages; see
    /// [`crate::debug::progress`].
    pub(crate) progress: Mutex<crate::debug::progress::Progress>,
    /// What the run loop must look at before the next entry ([`Attention`]
    /// bits): one load per exit when there is nothing.
    attention: AtomicU8,
    /// The host can copy registers into `kvm_run` at each exit (`KVM_CAP_SYNC_REGS`).
    can_sync_registers: bool,
    /// The `kvm_valid_regs` of each entry: while debugging is on, exits
    /// carry the registers (`KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS`), which
    /// the debug handlers read instead of issuing ioctls; 0 otherwise.
    sync_registers: AtomicU64,
    /// The [`Vcpu::state_epoch`] at which `kvm_run` held synced registers (the
    /// last exit's), or `u64::MAX`.
    synced_epoch: AtomicU64,
    /// The registers of the last debug or internal-error exit that synced
    /// them, for the runner alone: its reads at a stop take no fd mutex.
    exit_registers: ExitRegisters,
    /// Set while the running thread is parked.
    parked: AtomicBool,
    /// The thread inside `kvm_run`, for kicking it out of the guest. The
    /// mutex keeps the thread inside `kvm_run` while a kick is sent.
    runner_thread: Mutex<Option<libc::pthread_t>>,
    /// Keeps the vcpu out of the guest while other threads use it.
    gate: PauseGate,
    /// Set when the library kicked the vcpu: the interrupted `KVM_RUN` is
    /// not the VMM's signal, and does not reach its `io_window`.
    kicked: AtomicBool,
    /// Set when the kick was the progress watchdog's (see
    /// [`crate::debug::progress`]).
    progress_kick: AtomicBool,
    /// The generation of the debug state KVM has (see `VcpuDebug::generation`).
    debug_generation: AtomicU64,
    /// The generation the vcpu last entered the guest with: its exits are
    /// decoded against that debug state, whatever changed since.
    entered_generation: AtomicU64,
    /// The `state_writes` at which KVM was given a single step, or
    /// [`NO_STEP_GIVEN`] (see [`Vcpu::single_step_written_away`]).
    step_given_at: AtomicU64,
}

/// [`Vcpu::note_step_given`] without a step.
const NO_STEP_GIVEN: u64 = u64::MAX;

// SAFETY: `run_page` points into the mmap owned by `fd`, which lives as long
// as this value; it is only written through `kick_from_signal_handler`.
unsafe impl Send for Vcpu {}
// SAFETY: as above; `exit_registers` is only used by the thread inside
// `kvm_run` for this vcpu (claimed once, see `claim_runner`); everything
// else is behind a mutex or atomic.
unsafe impl Sync for Vcpu {}

/// The paging registers among the segment registers.
pub fn paging_registers_of(sregs: &kvm_sregs) -> PagingRegisters {
    PagingRegisters { cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer }
}

/// What the run loop must look at before a vcpu's next entry, read in one
/// load: nothing, on nearly every exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attention(u8);

impl Attention {
    /// A debugger wants the vcpu stopped.
    const HELD: u8 = 1;
    /// The debug state changed and must be given to KVM.
    const DEBUG: u8 = 2;
    /// The vcpu single-steps.
    const STEPPING: u8 = 4;

    /// True when nothing needs looking at.
    #[inline]
    pub fn is_clear(self) -> bool {
        self.0 == 0
    }

    /// A debugger wants the vcpu stopped.
    #[inline]
    pub fn held(self) -> bool {
        self.0 & Self::HELD != 0
    }

    /// The debug state must be looked at before entering: it changed, or
    /// the vcpu single-steps.
    #[inline]
    pub fn debug_entry(self) -> bool {
        self.0 & (Self::DEBUG | Self::STEPPING) != 0
    }

    /// The debug state changed and must be given to KVM.
    #[inline]
    pub fn debug_requested(self) -> bool {
        self.0 & Self::DEBUG != 0
    }

    /// The vcpu single-steps.
    #[inline]
    pub fn stepping(self) -> bool {
        self.0 & Self::STEPPING != 0
    }

    /// The vcpu single-steps, and nothing else needs looking at.
    #[inline]
    pub fn only_stepping(self) -> bool {
        self.0 == Self::STEPPING
    }
}

/// Proof that the calling thread is the one running this vcpu.
pub struct RunnerGuard<'a> {
    vcpu: &'a Vcpu,
}

impl Drop for RunnerGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.vcpu.runner_thread) = None;
        self.vcpu.running.store(false, Ordering::Release);
    }
}

impl Vcpu {
    /// Wraps a freshly created vcpu fd whose mapping is `mmap_size` bytes.
    pub fn new(index: u32, mut fd: VcpuFd, mmap_size: usize, can_sync_registers: bool) -> Vcpu {
        let run_page = NonNull::from(fd.get_kvm_run());
        Vcpu {
            index,
            raw_fd: fd.as_raw_fd(),
            fd: Mutex::new(fd),
            run_page,
            mmap_size,
            running: AtomicBool::new(false),
            guest_runs: AtomicU64::new(0),
            state_writes: AtomicU64::new(0),
            steady_step_epoch: AtomicU64::new(u64::MAX),
            paging: Mutex::new(None),
            debug: Mutex::new(VcpuDebug::default()),
            progress: Mutex::new(Default::default()),
            attention: AtomicU8::new(0),
            can_sync_registers,
            sync_registers: AtomicU64::new(0),
            synced_epoch: AtomicU64::new(u64::MAX),
            exit_registers: ExitRegisters::default(),
            parked: AtomicBool::new(false),
            runner_thread: Mutex::new(None),
            gate: PauseGate::default(),
            kicked: AtomicBool::new(false),
            progress_kick: AtomicBool::new(false),
            debug_generation: AtomicU64::new(0),
            entered_generation: AtomicU64::new(0),
            step_given_at: AtomicU64::new(NO_STEP_GIVEN),
        }
    }

    /// The vcpu index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Calls `f` with exclusive use of the vcpu fd. From a thread other
    /// than the one running the vcpu, the vcpu is kicked out of the guest
    /// and kept out while `f` runs.
    pub fn with_fd<R>(&self, f: impl FnOnce(&mut VcpuFd) -> R) -> R {
        let _paused = self.pause();
        let mut fd = lock(&self.fd);
        #[cfg(feature = "test-hooks")]
        crate::capi::test_hooks::reached(crate::capi::test_hooks::HookPoint::VcpuLocked);
        f(&mut fd)
    }

    /// Runs an ioctl-style call on the fd, mapping its error to an errno.
    pub fn ioctl<R, E: Into<Errno>>(&self, f: impl FnOnce(&mut VcpuFd) -> std::result::Result<R, E>) -> Result<R> {
        self.with_fd(f).map_err(Into::into)
    }

    /// Reads a field of the shared `kvm_run` page.
    pub fn run_field<R>(&self, f: impl FnOnce(&kvm_run) -> R) -> R {
        self.with_fd(|fd| f(fd.get_kvm_run()))
    }

    /// Writes a field of the shared `kvm_run` page (takes effect at the next `KVM_RUN`).
    pub fn set_run_field(&self, f: impl FnOnce(&mut kvm_run)) {
        self.with_fd(|fd| f(fd.get_kvm_run()))
    }

    /// Records that the vcpu's registers may have changed.
    pub fn state_changed(&self) {
        self.state_writes.fetch_add(1, Ordering::Release);
    }

    /// Writes vcpu state with `f` on the fd, counted as a write twice:
    /// before it (copies of the registers are stale from there on) and
    /// after it, with the vcpu still out of the guest. A single step given
    /// to KVM between the two, which the write may take away
    /// (`KVM_SET_REGS` keeps KVM's trap flag only at the RIP the step was
    /// given at), so sees a write after it, and is given again before the
    /// vcpu enters (see [`Vcpu::note_step_given`]).
    pub fn write_state<R, E: Into<Errno>>(
        &self,
        f: impl FnOnce(&mut VcpuFd) -> std::result::Result<R, E>,
    ) -> Result<R> {
        self.state_changed();
        #[cfg(feature = "test-hooks")]
        crate::capi::test_hooks::reached(crate::capi::test_hooks::HookPoint::WriteCounted);
        self.with_fd(|fd| {
            let written = f(fd);
            self.state_changed();
            written
        })
        .map_err(Into::into)
    }

    /// Notes the [`Vcpu::state_writes`] at which KVM was given a single
    /// step, or `None` when it was given none. Under the vcpu's debug
    /// state lock, where the debug state is given to KVM.
    pub fn note_step_given(&self, writes: Option<u64>) {
        self.step_given_at.store(writes.unwrap_or(NO_STEP_GIVEN), Ordering::Relaxed);
    }

    /// True when KVM was given a single step and the vcpu's state was
    /// written since: `KVM_SET_REGS` keeps KVM's trap flag only at the RIP
    /// the step was given at, so the step may be lost, and is given again.
    /// Looked at before each entry under the debug state lock, and again in
    /// the entry window, where no write can start (`Vcpu::must_look_again`):
    /// a thread that paused the vcpu after the entry looked may have written
    /// in between. One load and a compare without a step.
    #[inline(always)]
    pub fn single_step_written_away(&self) -> bool {
        let given = self.step_given_at.load(Ordering::Relaxed);
        given != NO_STEP_GIVEN && given != self.state_writes.load(Ordering::Acquire)
    }

    /// Runner, in the entry window: true when the debug state must be
    /// looked at again before entering, since the run loop looked at it: a
    /// request of [`Vcpu::request_debug_attention`] waits (a thread that
    /// changed the breakpoints while the vcpu was paused asks the runner to
    /// give KVM the new state: see `Context::change_breakpoints`), or the
    /// single step was written away ([`Vcpu::single_step_written_away`]).
    /// One load and a test on nearly every entry: a step given sets
    /// [`Attention::STEPPING`] first.
    #[inline(always)]
    fn must_look_again(&self) -> bool {
        let attention = self.attention();
        attention.debug_entry() && (attention.debug_requested() || self.single_step_written_away())
    }

    /// Runner: leaves the entry window without entering, as if kicked, so
    /// that the run loop looks at the debug state again (see
    /// [`Vcpu::must_look_again`]).
    #[cold]
    #[inline(never)]
    fn leave_window_unentered(&self) -> Errno {
        self.gate.left_guest();
        self.request_debug_attention();
        self.kicked.store(true, Ordering::Release);
        Errno(libc::EINTR)
    }

    /// Counts the writes of vcpu state ([`Vcpu::state_changed`]).
    #[inline]
    pub fn state_writes(&self) -> u64 {
        self.state_writes.load(Ordering::Acquire)
    }

    /// Changes whenever the vcpu's registers may have changed: the guest
    /// ran, or someone wrote them. Two counts that only grow, so that their
    /// sum grows at each; the runner's count costs no locked instruction
    /// per exit.
    pub fn state_epoch(&self) -> u64 {
        self.guest_runs.load(Ordering::Acquire).wrapping_add(self.state_writes.load(Ordering::Acquire))
    }

    /// Notes, at a single step's exit that left the debug state as KVM has
    /// it, that the next entry need not look at it: until the guest runs
    /// or someone writes the vcpu's state. A change of the debug state
    /// meanwhile asks for attention, or is given to KVM at once (a new
    /// breakpoint, the VMM's own request). The runner's alone.
    pub fn note_steady_step(&self) {
        self.steady_step_epoch.store(self.state_epoch(), Ordering::Relaxed);
    }

    /// True while [`Vcpu::note_steady_step`] holds: nothing ran and nothing
    /// was written since it was noted.
    #[inline]
    pub fn steps_steadily(&self) -> bool {
        self.steady_step_epoch.load(Ordering::Relaxed) == self.state_epoch()
    }

    /// The paging registers (CR0, CR3, CR4, EFER), read from the vcpu once
    /// per stop.
    pub fn paging_registers(&self) -> Result<PagingRegisters> {
        if kick::runs_on_this_thread(self) {
            // The runner (at a stop) has its exit's registers at hand and
            // needs no pause: no cache either, where they are.
            // SAFETY: this thread is the runner; the closure only copies.
            let copied = unsafe { self.exit_registers.read(self.state_epoch(), |registers| registers.paging) };
            if let Some(regs) = copied.ok().or_else(|| self.with_fd(|fd| self.synced_paging_registers(fd))) {
                return Ok(regs);
            }
        }
        let mut cache = lock(&self.paging);
        let epoch = self.state_epoch();
        if let Some((at, regs)) = *cache {
            if at == epoch {
                return Ok(regs);
            }
        }
        let regs = self.with_fd(|fd| match self.synced_paging_registers(fd) {
            Some(regs) => Ok(regs),
            None => fd.get_sregs().map(|sregs| paging_registers_of(&sregs)).map_err(Errno::from),
        })?;
        *cache = Some((epoch, regs));
        Ok(regs)
    }

    /// What the run loop must look at before the next entry.
    #[inline]
    pub fn attention(&self) -> Attention {
        Attention(self.attention.load(Ordering::Acquire))
    }

    fn set_attention(&self, bit: u8, on: bool) {
        if on {
            self.attention.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.attention.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// Asks for the debug state to be looked at before the next entry.
    pub fn request_debug_attention(&self) {
        self.set_attention(Attention::DEBUG, true);
    }

    /// Clears the request of [`Vcpu::request_debug_attention`], as the
    /// debug state is looked at; true when there was one.
    pub fn take_debug_attention(&self) -> bool {
        // A load first: between single steps nothing was asked, and a
        // locked read-modify-write would cost more than the check.
        self.attention().debug_requested()
            && self.attention.fetch_and(!Attention::DEBUG, Ordering::AcqRel) & Attention::DEBUG != 0
    }

    /// Records whether the vcpu is single-stepping, for the run loop's checks.
    pub fn set_stepping(&self, stepping: bool) {
        // Only debug-state changes set it, under the vcpu's debug lock: a
        // load tells whether it changes.
        if self.stepping() != stepping {
            self.set_attention(Attention::STEPPING, stepping);
        }
    }

    /// True while the vcpu single-steps.
    #[inline]
    pub fn stepping(&self) -> bool {
        self.attention().stepping()
    }

    /// Marks the calling thread as the one running this vcpu; `EBUSY` when
    /// another thread already is.
    pub fn claim_runner(&self) -> Result<RunnerGuard<'_>> {
        self.running.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).map_err(|_| Errno::BUSY)?;
        // SAFETY: pthread_self has no preconditions.
        *lock(&self.runner_thread) = Some(unsafe { libc::pthread_self() });
        Ok(RunnerGuard { vcpu: self })
    }

    /// True while a thread is inside `kvm_run` for this vcpu.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Asks the vcpu to stop (`true`) or lets it go (`false`): while it is
    /// held, the thread running it parks inside `kvm_run` (see
    /// [`crate::gdb::stopper`]).
    pub fn set_held(&self, held: bool) {
        self.set_attention(Attention::HELD, held);
    }

    /// True while a debugger wants the vcpu stopped.
    #[inline]
    pub fn is_held(&self) -> bool {
        self.attention().held()
    }

    /// Records whether the running thread is parked.
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Release);
    }

    /// True while the running thread is parked (or no thread runs the vcpu).
    pub fn is_stopped(&self) -> bool {
        !self.is_running() || self.parked.load(Ordering::Acquire)
    }

    /// Kicks the vcpu out of the guest, if a thread runs it: `KVM_RUN`
    /// returns (or does not start), and the run loop knows the library
    /// did it.
    pub fn kick(&self) {
        let thread = lock(&self.runner_thread);
        if let Some(thread) = *thread {
            self.kicked.store(true, Ordering::Release);
            // SAFETY: the thread is inside kvm_run (it clears runner_thread,
            // under this lock, before leaving), so the pthread_t is live.
            unsafe { libc::pthread_kill(thread, kick::kick_signal()) };
        }
    }

    /// Kicks the vcpu to see whether it makes progress.
    pub fn kick_for_progress(&self) {
        self.progress_kick.store(true, Ordering::Release);
        self.kick();
    }

    /// True (once) when the last kick was [`Vcpu::kick_for_progress`].
    pub fn take_progress_kick(&self) -> bool {
        self.progress_kick.load(Ordering::Acquire) && self.progress_kick.swap(false, Ordering::AcqRel)
    }

    /// The number of the `KVM_RUN` the vcpu is in now, if it is in the guest.
    pub fn guest_entry(&self) -> Option<u64> {
        self.gate.entry_in_guest()
    }

    /// True (once) when the library kicked the vcpu since the last call.
    pub fn take_kick(&self) -> bool {
        self.kicked.swap(false, Ordering::AcqRel)
    }

    /// Keeps the vcpu out of the guest until the guard is dropped, kicking
    /// it out if it is inside; returns once it is out. A thread that starts
    /// running the vcpu meanwhile waits before its first entry. `None`
    /// (nothing to wait for) when the calling thread runs the vcpu.
    #[inline]
    pub fn pause(&self) -> Option<PauseGuard<'_>> {
        // The runner itself (every register read of the debug exits) needs
        // no pause: inline, that is one compare.
        if kick::runs_on_this_thread(self) {
            return None;
        }
        Some(self.pause_from_another_thread())
    }

    /// [`Vcpu::pause`] from a thread other than the runner's.
    #[inline(never)]
    fn pause_from_another_thread(&self) -> PauseGuard<'_> {
        let guard = self.gate.request(|| self.kick());
        self.wait_paused(&guard);
        guard
    }

    /// The first half of [`Vcpu::pause`], for pausing several vcpus at
    /// once: the request and the kick, without the wait.
    pub fn request_pause(&self) -> Option<PauseGuard<'_>> {
        if kick::runs_on_this_thread(self) {
            return None;
        }
        Some(self.gate.request(|| self.kick()))
    }

    /// The second half of [`Vcpu::pause`]: returns once the vcpu is out of
    /// the guest.
    pub fn wait_paused(&self, guard: &PauseGuard<'_>) {
        self.gate.wait_out(guard, || self.kick());
    }

    /// Gives KVM `debug` (`KVM_SET_GUEST_DEBUG`), then calls `given` while
    /// the vcpu is still out of the guest. The caller holds the vcpu's
    /// debug state, which orders every programming: so the runner issues
    /// it on the fd without the fd mutex (KVM serializes it with the other
    /// threads' calls), and any other thread as [`Vcpu::ioctl`] does, with
    /// the vcpu paused.
    #[inline]
    pub fn set_guest_debug(&self, debug: &kvm_guest_debug, given: impl FnOnce()) -> Result<()> {
        if kick::runs_on_this_thread(self) {
            sys::set_guest_debug(&self.raw_fd, debug)?;
            given();
            return Ok(());
        }
        self.ioctl(|fd| {
            fd.set_guest_debug(debug)?;
            given();
            Ok::<(), kvm_ioctls::Error>(())
        })
    }

    /// Records the generation of the debug state just given to KVM.
    pub fn set_debug_generation(&self, generation: u64) {
        self.debug_generation.store(generation, Ordering::Relaxed);
    }

    /// The generation of the debug state the vcpu last entered with.
    pub fn entered_generation(&self) -> u64 {
        self.entered_generation.load(Ordering::Relaxed)
    }

    /// Runner: opens the entry window, waiting while the vcpu is paused.
    /// From here until [`Vcpu::close_entry_window`] the runner alone uses
    /// the fd and the `kvm_run` page, without the fd mutex: every other
    /// thread that takes the mutex holds a pause, which waits for the
    /// window to close (and the runner's own calls cannot overlap it). No
    /// other thread changes the debug state meanwhile either (see
    /// [`Vcpu::note_entered_generation`]).
    #[inline]
    fn open_entry_window(&self) {
        while !self.gate.try_enter() {
            self.gate.park();
        }
    }

    /// Runner, in the entry window: notes the debug state given to KVM as
    /// the one the last entry had. It cannot change inside the window (it
    /// is given before entering, or by a thread holding a pause), so noting
    /// it at a debug exit is noting it at that exit's entry.
    fn note_entered_generation(&self) {
        self.entered_generation.store(self.debug_generation.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Runner: closes the entry window after a `KVM_RUN` (copies of
    /// registers taken before it are stale now; see `after_run`).
    #[inline]
    fn close_entry_window(&self, synced: u64) {
        self.after_run(synced);
        self.gate.left_guest();
    }

    /// The `kvm_run` page, inside the entry window only.
    ///
    /// # Safety
    /// The caller is the runner with the entry window open, so no other
    /// reference to the page exists (see [`Vcpu::open_entry_window`]).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn run_page_in_window(&self) -> &mut kvm_run {
        // SAFETY: the mapping lives as long as self (the fd owns it); the
        // caller guarantees exclusive use.
        unsafe { &mut *self.run_page.as_ptr() }
    }

    /// Enters the guest once and returns the exit, its larger parts in
    /// `exit_data`.
    #[inline(always)]
    pub fn enter(
        &self,
        _runner: &RunnerGuard<'_>,
        request_interrupt_window: bool,
        exit_data: &mut ExitData,
    ) -> Result<Exit> {
        self.open_entry_window();
        if self.must_look_again() {
            return Err(self.leave_window_unentered());
        }
        // SAFETY: the window is open, and this thread is the runner.
        let run = unsafe { self.run_page_in_window() };
        run.request_interrupt_window = u8::from(request_interrupt_window);
        let sync = self.sync_registers.load(Ordering::Relaxed);
        run.kvm_valid_regs = sync;
        let ran = sys::run(&self.raw_fd);
        let exit = match ran {
            Ok(()) => Ok(self.take_exit(exit_data)),
            Err(e) => {
                // A kick may have set immediate_exit to make this run return at once.
                // SAFETY: as above.
                unsafe { self.run_page_in_window() }.immediate_exit = 0;
                Err(e)
            }
        };
        self.close_entry_window(sync);
        exit
    }

    /// Decodes the exit in this vcpu's mapping (in the entry window), its
    /// larger parts into `data`. Inlined into the run loop, so that the
    /// exit stays in registers.
    #[inline(always)]
    fn take_exit(&self, data: &mut ExitData) -> Exit {
        // SAFETY: the mapping is `mmap_size` bytes from `run_page`; in the
        // entry window nothing else writes it (the kernel only in KVM_RUN).
        let mapping = unsafe { RunMapping::new(self.run_page.cast(), self.mmap_size) };
        // Only a debug exit, one of the rare ones, is decoded against the
        // debug state: it is noted there, not at every entry.
        exit::decode(mapping, data, || self.note_entered_generation())
    }

    /// Copies of registers taken before a run stay usable while it runs
    /// (the paging registers, for a debugger translating addresses) and
    /// become stale when it returns; registers synced into `kvm_run` are
    /// valid until the next write.
    fn after_run(&self, synced: u64) {
        // The runner alone counts runs: a load and a store, not a locked add.
        self.guest_runs.store(self.guest_runs.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
        // Without synced registers there is nothing to store: the epoch
        // only grows, so `synced_epoch` already differs from it.
        if synced != 0 {
            let epoch = self.state_epoch();
            self.synced_epoch.store(epoch, Ordering::Release);
            // SAFETY: the runner, in the entry window (see `close_entry_window`).
            let run = unsafe { self.run_page_in_window() };
            if matches!(run.exit_reason, KVM_EXIT_DEBUG | KVM_EXIT_INTERNAL_ERROR) {
                // SAFETY: the run asked for KVM_SYNC_X86_REGS and _SREGS, so
                // the kernel filled the `regs` member; the runner is in no
                // `read` of the copy (it is in `KVM_RUN`'s return).
                unsafe { self.exit_registers.store(epoch, &run.s.regs) };
            }
        }
    }

    /// Asks for registers in `kvm_run` at each exit, where the host can.
    pub fn set_sync_registers(&self, on: bool) {
        let sync = if on && self.can_sync_registers { u64::from(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS) } else { 0 };
        self.sync_registers.store(sync, Ordering::Relaxed);
    }

    /// The registers at the last exit, in `kvm_run` (the caller holds the
    /// fd), when that exit synced them and nobody has written the vcpu's
    /// registers since.
    fn synced_at_exit<'f>(&self, fd: &'f mut VcpuFd) -> Option<&'f kvm_sync_regs> {
        if self.synced_epoch.load(Ordering::Acquire) != self.state_epoch() {
            return None;
        }
        // SAFETY: the last run asked for KVM_SYNC_X86_REGS and _SREGS
        // (synced_epoch says so), so the kernel filled the `regs` member.
        Some(unsafe { &fd.get_kvm_run().s.regs })
    }

    /// The paging registers at the last exit, where it synced them (the
    /// caller holds the fd).
    fn synced_paging_registers(&self, fd: &mut VcpuFd) -> Option<PagingRegisters> {
        self.synced_at_exit(fd).map(|synced| paging_registers_of(&synced.sregs))
    }

    /// The general and segment registers: from the last exit when they are
    /// current, else from the vcpu; one pause of a running vcpu for both.
    pub fn regs_and_sregs(&self) -> Result<(kvm_regs, kvm_sregs)> {
        self.read_registers(|regs, sregs| (*regs, *sregs))
    }

    /// Calls `f` with the general and segment registers, as
    /// [`Vcpu::regs_and_sregs`] but without copying them where the last
    /// exit holds them: for callers that want a few fields. `f` runs with
    /// the fd locked, so it must not call back into the vcpu.
    pub fn read_registers<R>(&self, f: impl FnOnce(&kvm_regs, &kvm_sregs) -> R) -> Result<R> {
        self.with_fd(|fd| {
            if let Some(synced) = self.synced_at_exit(fd) {
                return Ok(f(&synced.regs, &synced.sregs));
            }
            let regs = fd.get_regs().map_err(Errno::from)?;
            let sregs = fd.get_sregs().map_err(Errno::from)?;
            Ok(f(&regs, &sregs))
        })
    }

    /// Calls `f` with what a stop reads of the registers: the runner's copy
    /// from its last debug exit where it is current (no fd mutex), else as
    /// [`Vcpu::read_registers`]. `f` must not call back into the vcpu.
    #[inline]
    pub fn read_stop_registers<R>(&self, f: impl FnOnce(&StopRegisters) -> R) -> Result<R> {
        let f = if kick::runs_on_this_thread(self) {
            // SAFETY: this thread is the runner, and `f` does not call back
            // into the vcpu.
            match unsafe { self.exit_registers.read(self.state_epoch(), f) } {
                Ok(r) => return Ok(r),
                Err(f) => f,
            }
        } else {
            f
        };
        self.read_registers(|regs, sregs| f(&StopRegisters::of(regs, sregs)))
    }

    /// Lets KVM finish the instruction of the last port or MMIO exit without
    /// entering the guest (`immediate_exit`). Returns the exit that
    /// finishing it caused (a single step, on hosts that trap there), or
    /// `None` when it just completed. The larger parts of that exit go into
    /// `exit_data`, as in [`Vcpu::enter`].
    pub fn complete_instruction(&self, _runner: &RunnerGuard<'_>, exit_data: &mut ExitData) -> Result<Option<Exit>> {
        self.open_entry_window();
        // The step this entry finishes may be reported without an exit.
        self.note_entered_generation();
        let sync = self.sync_registers.load(Ordering::Relaxed);
        // SAFETY (both): the window is open, and this thread is the runner;
        // each reference ends before the kernel or the decoder reads the page.
        unsafe { self.run_page_in_window() }.immediate_exit = 1;
        let ran = sys::run(&self.raw_fd);
        unsafe { self.run_page_in_window() }.immediate_exit = 0;
        let exit = match ran {
            Ok(()) => Ok(Some(self.take_exit(exit_data))),
            Err(Errno(libc::EINTR)) => Ok(None),
            Err(e) => Err(e),
        };
        self.close_entry_window(sync);
        exit
    }

    /// Stores the data of a port input exit where the kernel reads it when
    /// the vcpu next runs.
    pub fn complete_port_in(&self, payload: IoPayload, data: &[u8; IO_DATA_MAX]) {
        let mut fd = lock(&self.fd);
        let run = fd.get_kvm_run();
        // SAFETY: decode checked that the payload lies inside this vcpu's
        // mapping; the kernel does not touch the page while the vcpu is not
        // in KVM_RUN, and we hold its fd.
        let dst = unsafe {
            std::slice::from_raw_parts_mut((run as *mut kvm_run).cast::<u8>().add(payload.offset()), payload.bytes())
        };
        dst.copy_from_slice(&data[..payload.bytes()]);
    }

    /// Stores the data of an MMIO read exit.
    pub fn complete_mmio_read(&self, data: &[u8]) {
        self.set_run_field(|run| {
            // SAFETY: the last exit was KVM_EXIT_MMIO, so `mmio` is the live member.
            let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
            let n = data.len().min(mmio.data.len());
            mmio.data[..n].copy_from_slice(&data[..n]);
        })
    }

    /// Makes the next or current `KVM_RUN` of this vcpu return at once.
    /// Only for the kick signal handler running on the vcpu's own thread.
    pub fn kick_from_signal_handler(&self) {
        // SAFETY: the page is mapped while self lives; a single-byte
        // volatile store is what the kernel's API documents for this flag.
        unsafe { std::ptr::addr_of_mut!((*self.run_page.as_ptr()).immediate_exit).write_volatile(1) }
    }
}
