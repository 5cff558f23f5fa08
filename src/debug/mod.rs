//! x86 guest debugging.
//!
//! - [`decode`]: `kvm_debug_exit_arch` to break type, debug register and
//!   watched address (the patch we start from left this as a TODO);
//! - [`breakpoints`]: the VM's software breakpoints and debug registers;
//! - [`vcpu_state`]: each vcpu's requests and the `KVM_SET_GUEST_DEBUG`
//!   state that follows;
//! - [`intercept`]: the one place where the run loop's exits meet the
//!   debugger;
//! - [`exits`]: what happens on `#BP`, `#DB` and the emulation failure
//!   that is an `int3` on emulating hosts, and stepping over breakpoints
//!   ([`trap_flag`]: with the guest's own trap flag kept);
//! - [`pagewalk`] and [`guest_memory`]: guest memory by virtual address;
//! - [`mappings`]: every page the guest's page tables map.
//!
//! Lock order: a vcpu's debug state, then the breakpoint table, then guest
//! memory, then the vcpu fd. The VMM's callbacks run with no lock held.

pub mod breakpoints;
pub mod debugregs;
pub mod decode;
pub mod exits;
pub mod guest_memory;
pub mod host_quirks;
pub mod implicit;
pub mod intercept;
pub mod mappings;
pub mod pagewalk;
pub mod progress;
pub mod request;
pub mod trap_flag;
pub mod vcpu_state;
pub mod watch;

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use kvm_bindings::{kvm_guest_debug, KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_SINGLESTEP};

use self::breakpoints::BreakpointTable;
use self::vcpu_state::{effective_debug, LibraryDebug};
use crate::context::Context;
use crate::error::{Errno, Result};
use crate::lock;
use crate::vcpu::Vcpu;

/// The `KVM_GDB_*` break types reported to the `debug` callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum BreakType {
    /// `KVM_GDB_BREAKPOINT_SW`: an `int3`.
    SoftwareBreakpoint = 0,
    /// `KVM_GDB_BREAKPOINT_HW`: a debug-register execution breakpoint.
    HardwareBreakpoint = 1,
    /// `KVM_GDB_WATCHPOINT_WRITE`.
    WatchWrite = 2,
    /// `KVM_GDB_WATCHPOINT_READ`.
    WatchRead = 3,
    /// `KVM_GDB_WATCHPOINT_ACCESS`.
    WatchAccess = 4,
    /// `KVM_GDB_SINGLESTEP`.
    SingleStep = 5,
}

impl BreakType {
    /// The break type with C value `value`.
    pub fn from_c(value: c_int) -> Result<BreakType> {
        Ok(match value {
            0 => BreakType::SoftwareBreakpoint,
            1 => BreakType::HardwareBreakpoint,
            2 => BreakType::WatchWrite,
            3 => BreakType::WatchRead,
            4 => BreakType::WatchAccess,
            5 => BreakType::SingleStep,
            _ => return Err(Errno::INVAL),
        })
    }
}

/// The VM-wide part of debugging: the breakpoint table and what the host
/// offers.
pub struct Debugger {
    table: Mutex<BreakpointTable>,
    /// False while the table is empty, for the stops that need not lock it
    /// to find that out (it changes only in `change_breakpoints`).
    has_breakpoints: AtomicBool,
    /// Watchpoints kept by page protection.
    pub(crate) page_watches: Mutex<watch::PageWatchTable>,
    /// Set once a page was protected for a watchpoint: from then on, MMIO
    /// exits inside RAM are completed by the library (see `watch`).
    pages_protected: AtomicBool,
    /// How watchpoints are implemented (`kvm_set_watchpoint_method`).
    pub(crate) watch_method: watch::WatchMethodSetting,
    data_breakpoints: OnceLock<bool>,
    /// The `KVM_GUESTDBG_*` bits the host accepts.
    valid_control: u32,
    blockirq: bool,
    single_step_skips_halts: OnceLock<bool>,
    real_mode_int3_exits: OnceLock<bool>,
    /// Kicks vcpus stuck on protected pages (see `progress`).
    pub(crate) progress_watchdog: Mutex<Option<progress::ProgressWatchdog>>,
}

impl Debugger {
    /// Probes the host through `check_extension`.
    pub fn new(check_extension: impl Fn(u32) -> i32) -> Debugger {
        let flags = check_extension(KVM_CAP_SET_GUEST_DEBUG2).max(0) as u32;
        Debugger {
            table: Mutex::new(BreakpointTable::default()),
            has_breakpoints: AtomicBool::new(false),
            page_watches: Mutex::new(watch::PageWatchTable::default()),
            pages_protected: AtomicBool::new(false),
            watch_method: watch::WatchMethodSetting::default(),
            data_breakpoints: OnceLock::new(),
            valid_control: flags,
            blockirq: flags & KVM_GUESTDBG_BLOCKIRQ != 0,
            single_step_skips_halts: OnceLock::new(),
            real_mode_int3_exits: OnceLock::new(),
            progress_watchdog: Mutex::new(None),
        }
    }

    /// The breakpoint table, locked.
    pub fn table(&self) -> MutexGuard<'_, BreakpointTable> {
        lock(&self.table)
    }

    /// False when the breakpoint table is empty, without locking it. A
    /// change made meanwhile by another thread may not show: it armed its
    /// breakpoints itself.
    pub fn has_breakpoints(&self) -> bool {
        self.has_breakpoints.load(Ordering::Acquire)
    }

    /// True when the host can block interrupts while single-stepping.
    pub fn blockirq(&self) -> bool {
        self.blockirq
    }

    /// True once some watchpoint was kept by page protection.
    pub fn pages_were_protected(&self) -> bool {
        self.pages_protected.load(Ordering::Acquire)
    }

    pub(crate) fn note_pages_protected(&self) {
        self.pages_protected.store(true, Ordering::Release);
    }

    /// True when the host fires debug-register data breakpoints (probed
    /// once, on the first watchpoint).
    pub fn host_fires_data_breakpoints(&self, kvm: &kvm_ioctls::Kvm) -> bool {
        *self.data_breakpoints.get_or_init(|| host_quirks::fires_data_breakpoints(kvm))
    }

    /// True when a real-mode `int3` exits to the library on this host
    /// (probed once, on the first real-mode software breakpoint); where it
    /// goes to the guest's interrupt table instead, real-mode software
    /// breakpoints need debug registers.
    pub fn host_reports_real_mode_int3(&self, kvm: &kvm_ioctls::Kvm) -> bool {
        *self.real_mode_int3_exits.get_or_init(|| host_quirks::real_mode_int3_exits(kvm))
    }

    /// True when single-stepping a `hlt` on this host reports a step
    /// instead of the halt (probed once, on the first single step).
    pub fn single_step_skips_halts(&self, kvm: &kvm_ioctls::Kvm) -> bool {
        *self.single_step_skips_halts.get_or_init(|| host_quirks::single_step_skips_halts(kvm))
    }
}

/// The breakpoint table, locked at its first use in one phase of a stop
/// (the judgement and the re-arm; the step over and the programming that
/// follows) and held to the phase's end: the phase takes the lock once.
/// Lock order: first used with the vcpu's debug state held (or none), never
/// with guest memory or the vcpu fd held; released before a callback.
pub(crate) struct HeldTable<'a> {
    debugger: &'a Debugger,
    guard: Option<MutexGuard<'a, BreakpointTable>>,
}

impl<'a> HeldTable<'a> {
    /// Not locked yet.
    #[inline]
    pub(crate) fn new(debugger: &'a Debugger) -> HeldTable<'a> {
        HeldTable { debugger, guard: None }
    }

    /// The table, locked now if it is not yet.
    #[inline]
    pub(crate) fn get(&mut self) -> &mut BreakpointTable {
        self.guard.get_or_insert_with(|| lock(&self.debugger.table))
    }

    /// Unlocks the table (it is locked again at the next [`HeldTable::get`]).
    #[inline]
    pub(crate) fn release(&mut self) {
        self.guard = None;
    }
}

/// The guest debug state `vcpu` should have now.
fn desired_debug(ctx: &Context, state: &vcpu_state::VcpuDebug, table: &mut HeldTable<'_>) -> kvm_guest_debug {
    let table = table.get();
    let patches = table.has_patches();
    let blockirq = ctx.debugger().blockirq();
    if table.uses_registers() {
        return effective_debug(state, &LibraryDebug { slots: table.slots(), patches }, blockirq);
    }
    // Nearly always (software breakpoints, steps): a constant, not a copy.
    const PATCHES_ONLY: LibraryDebug = LibraryDebug { slots: [None; debugregs::DEBUG_REGISTERS], patches: true };
    const NOTHING: LibraryDebug = LibraryDebug { slots: [None; debugregs::DEBUG_REGISTERS], patches: false };
    effective_debug(state, if patches { &PATCHES_ONLY } else { &NOTHING }, blockirq)
}

/// Gives KVM the debug state of `vcpu` if it changed, and releases
/// `table`. Blocks while the vcpu is inside `KVM_RUN`.
fn program(ctx: &Context, vcpu: &Vcpu, state: &mut vcpu_state::VcpuDebug, table: &mut HeldTable<'_>) -> Result<()> {
    vcpu.set_stepping(state.stepping() || state.step_over.is_some() || state.stepping_through);
    let desired = desired_debug(ctx, state, table);
    // Not held across the ioctl, which may wait for a vcpu to leave the guest.
    table.release();
    vcpu.set_sync_registers(desired.control != 0);
    if desired != state.programmed || std::mem::take(&mut state.single_step_lost) {
        // Read before KVM gets the step: a write from here on counts as one
        // after it (see `Vcpu::single_step_written_away`).
        let writes = vcpu.state_writes();
        // The generation is stored while the vcpu is still held out of the
        // guest, so that no entry runs with the new state under the old
        // generation (a debug exit notes the generation it entered with).
        vcpu.set_guest_debug(&desired, || {
            let steps = desired.control & KVM_GUESTDBG_SINGLESTEP != 0;
            vcpu.note_step_given(steps.then_some(writes));
            vcpu.set_debug_generation(state.set_programmed(desired));
        })?;
    }
    Ok(())
}

impl Context {
    /// The VM's debugger.
    pub fn debugger(&self) -> &Debugger {
        &self.debugger
    }

    /// Changes the breakpoint table with every vcpu out of the guest, then
    /// gives each vcpu its new debug state before it goes back in: no vcpu
    /// runs an `int3` before KVM reports it, or runs on past a new debug
    /// register, and none is waited for beyond the kick.
    ///
    /// A vcpu that no thread runs, or that a debugger holds, is asked to
    /// give KVM the state itself (its entry looks for the request once the
    /// pause is over): a change then costs no `KVM_SET_GUEST_DEBUG`, and
    /// one undone before the vcpu runs again (gdb lifts every breakpoint at
    /// each stop and inserts them again to resume) costs none at all. A
    /// running vcpu is given it here: a stream of changes from another
    /// thread would otherwise send each of its entries round again.
    fn change_breakpoints(&self, change: impl FnOnce() -> Result<()>) -> Result<()> {
        let _paused = self.pause_vcpus();
        let changed = change();
        let has_breakpoints = !self.debugger().table().is_empty();
        self.debugger().has_breakpoints.store(has_breakpoints, Ordering::Release);
        changed?;
        for vcpu in self.vcpus() {
            if vcpu.is_running() && !vcpu.is_held() {
                program(self, vcpu, &mut lock(&vcpu.debug), &mut HeldTable::new(self.debugger()))?;
            } else {
                #[cfg(feature = "test-hooks")]
                crate::capi::test_hooks::reached(crate::capi::test_hooks::HookPoint::BeforeDeferredProgramming);
                vcpu.request_debug_attention();
            }
        }
        Ok(())
    }

    /// `kvm_set_guest_debug`: the VMM's own request, remembered (so that
    /// exits are decoded against it) and given to KVM at once.
    pub fn set_guest_debug_request(&self, vcpu: &Vcpu, request: kvm_guest_debug) -> Result<()> {
        if request.control & !self.debugger().valid_control != 0 {
            return Err(Errno::INVAL);
        }
        let mut state = lock(&vcpu.debug);
        let previous = state.request;
        state.request = request;
        program(self, vcpu, &mut state, &mut HeldTable::new(self.debugger())).inspect_err(|_| state.request = previous)
    }

    /// `kvm_set_singlestep`.
    pub fn set_singlestep(&self, vcpu: &Vcpu, enable: bool) -> Result<()> {
        let mut state = lock(&vcpu.debug);
        state.singlestep = enable;
        vcpu.request_debug_attention();
        program(self, vcpu, &mut state, &mut HeldTable::new(self.debugger()))
    }

    /// `kvm_insert_breakpoint`: a software breakpoint at `addr` (translated
    /// with `vcpu`'s page tables), or a hardware breakpoint or watchpoint on
    /// every vcpu.
    pub fn insert_breakpoint(&self, vcpu: &Vcpu, kind: BreakType, addr: u64, len: u64) -> Result<()> {
        match kind {
            BreakType::SoftwareBreakpoint => {
                let location = self.translate_gva(vcpu, addr).map(|t| t.gpa);
                let real_mode = vcpu.paging_registers()?.cr0 & 1 == 0;
                let prefer_register = real_mode && !self.debugger().host_reports_real_mode_int3(self.kvm());
                self.change_breakpoints(|| {
                    self.debugger().table().insert_software(addr, location, prefer_register, &*self.memory())
                })
            }
            BreakType::SingleStep => Err(Errno::INVAL),
            BreakType::HardwareBreakpoint => {
                self.change_breakpoints(|| self.debugger().table().insert_hardware(kind, addr, len))
            }
            BreakType::WatchWrite | BreakType::WatchRead | BreakType::WatchAccess => {
                if self.watch_in_register(kind, addr, len) {
                    self.change_breakpoints(|| self.debugger().table().insert_hardware(kind, addr, len))
                } else {
                    self.insert_page_watch(vcpu, kind, addr, len)
                }
            }
        }
    }

    /// True when a debug register can hold a watchpoint on `[addr, addr +
    /// len)` and the host fires them: one is free, and the range fits.
    pub(crate) fn register_can_hold(&self, addr: u64, len: u64) -> bool {
        debugregs::watch_fits(addr, len)
            && self.debugger().host_fires_data_breakpoints(self.kvm())
            && (0..debugregs::DEBUG_REGISTERS).any(|n| self.debugger().table().register(n).is_none())
    }

    /// Whether a new watchpoint goes into a debug register (or is kept by
    /// page protection), by the method setting. `Auto` keeps read
    /// watchpoints by page protection, which tells reads from writes (a
    /// debug register cannot: its read condition fires on writes too).
    fn watch_in_register(&self, kind: BreakType, addr: u64, len: u64) -> bool {
        match self.debugger().watch_method.get() {
            watch::WatchMethod::DebugRegisters => true,
            watch::WatchMethod::PageProtection => false,
            watch::WatchMethod::Auto => kind != BreakType::WatchRead && self.register_can_hold(addr, len),
        }
    }

    /// `kvm_remove_breakpoint`: `ENOENT` when it was never inserted.
    pub fn remove_breakpoint(&self, kind: BreakType, addr: u64, len: u64) -> Result<()> {
        match kind {
            BreakType::SoftwareBreakpoint => {
                self.change_breakpoints(|| self.debugger().table().remove_software(addr, &*self.memory()))
            }
            BreakType::SingleStep => Err(Errno::INVAL),
            BreakType::HardwareBreakpoint => {
                self.change_breakpoints(|| self.debugger().table().remove_hardware(kind, addr, len))
            }
            BreakType::WatchWrite | BreakType::WatchRead | BreakType::WatchAccess => {
                // Not in a debug register (or a length none could hold): by page protection.
                let in_register = self.debugger().table().register_holds(kind, addr, len);
                if in_register {
                    self.change_breakpoints(|| self.debugger().table().remove_hardware(kind, addr, len))
                } else {
                    self.remove_page_watch(kind, addr, len)
                }
            }
        }
    }

    /// `kvm_remove_all_breakpoints`.
    pub fn remove_all_breakpoints(&self) {
        // Only fails when a vcpu cannot be reprogrammed, or without a VM
        // (when there are no watchpoints either).
        let _ = self.change_breakpoints(|| {
            self.debugger().table().remove_all(&*self.memory());
            Ok(())
        });
        let _ = self.remove_all_page_watches();
    }
}
