//! One VM: the `/dev/kvm` fd, the VM fd, its vcpus, memory and callbacks.

mod coalesced;
mod live_slots;
mod ram;
mod vm;

pub use coalesced::CoalescedMmio;
pub(crate) use live_slots::LiveSlots;

pub use ram::bitmap_bytes;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use kvm_bindings::{KVM_CAP_COALESCED_MMIO, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS};
use kvm_ioctls::{Kvm, VmFd};

use crate::callbacks::{kvm_callbacks, Callbacks};
use crate::debug::Debugger;
use crate::error::{Errno, Result};
use crate::gdb::stopper::Stopper;
use crate::gdb::GdbServer;
use crate::lock;
use crate::memory::GuestMemory;
use crate::vcpu::pause::PauseGuard;
use crate::vcpu::Vcpu;

/// The only KVM API version there has ever been.
const KVM_API_VERSION: i32 = 12;

/// Where `kvm_create` puts the TSS that VMX needs for real mode: three pages
/// below the BIOS, as qemu-kvm did.
pub(crate) const TSS_ADDRESS: u64 = 0xfffb_d000;

/// The code segment base a vcpu of a 2008 kernel started with: the reset
/// vector at 0xf000:0xfff0 ran the BIOS loaded at 0xf0000 (today's kernels
/// use base 0xffff0000, the top of the 4 GiB space, instead).
const RESET_CS_BASE_2008: u64 = 0xf_0000;

/// Gives a new vcpu the reset state of a 2008 kernel: real mode at
/// 0xf000:0xfff0 with CS based at 0xf0000.
fn reset_like_2008(fd: &kvm_ioctls::VcpuFd) -> Result<()> {
    let mut sregs = fd.get_sregs().map_err(Errno::from)?;
    if sregs.cs.selector == 0xf000 && sregs.cr0 & 1 == 0 {
        sregs.cs.base = RESET_CS_BASE_2008;
        fd.set_sregs(&sregs).map_err(Errno::from)?;
    }
    Ok(())
}

/// A VM and everything the library keeps for it.
pub struct Context {
    kvm: Kvm,
    callbacks: Callbacks,
    vm: OnceLock<VmFd>,
    vcpus: Box<[OnceLock<Box<Vcpu>>]>,
    memory: Mutex<GuestMemory>,
    /// Serialises the calls that create things (`kvm_create`, vcpus, irqchip).
    setup: Mutex<()>,
    want_irqchip: AtomicBool,
    want_pit: AtomicBool,
    irqchip_in_kernel: AtomicBool,
    pit_in_kernel: AtomicBool,
    pub(crate) debugger: Debugger,
    stopper: Stopper,
    pub(crate) gdb_server: Mutex<Option<GdbServer>>,
    coalesced_mmio: CoalescedMmio,
    core_on_crash: crate::coredump::CoreOnCrash,
}

impl Drop for Context {
    fn drop(&mut self) {
        // The stub and watchdog threads use the context: they end first.
        let _ = self.stop_gdbstub();
        self.stop_watching_progress();
    }
}

/// A `&Context` for a library thread (the gdb stub, the progress
/// watchdog), which the context joins before it is dropped.
pub(crate) struct ContextRef(*const Context);

// SAFETY: Context is Sync; whoever dereferences the pointer promises (see
// `get`) that the context outlives the thread.
unsafe impl Send for ContextRef {}

impl ContextRef {
    pub(crate) fn new(ctx: &Context) -> ContextRef {
        ContextRef(ctx)
    }

    /// The context.
    ///
    /// # Safety
    /// The context must still be alive: its `Drop` joins the thread that
    /// holds this before it goes.
    pub(crate) unsafe fn get<'a>(&self) -> &'a Context {
        // SAFETY: by the caller's promise.
        unsafe { &*self.0 }
    }
}

impl Context {
    /// Opens `/dev/kvm` and checks the API version (`kvm_init`).
    pub fn new(callbacks: kvm_callbacks, opaque: *mut c_void) -> Result<Context> {
        let kvm = Kvm::new().map_err(Errno::from)?;
        if kvm.get_api_version() != KVM_API_VERSION {
            return Err(Errno(libc::EINVAL));
        }
        let max_vcpus = kvm.get_max_vcpus();
        let max_slots = u32::try_from(kvm.get_nr_memslots()).unwrap_or(u32::MAX);
        let debugger = Debugger::new(|cap| kvm.check_extension_raw(libc::c_ulong::from(cap)));
        let coalesced_mmio =
            CoalescedMmio::new(kvm.check_extension_raw(libc::c_ulong::from(KVM_CAP_COALESCED_MMIO)) > 0);
        Ok(Context {
            kvm,
            callbacks: Callbacks::new(callbacks, opaque),
            vm: OnceLock::new(),
            vcpus: (0..max_vcpus).map(|_| OnceLock::new()).collect(),
            memory: Mutex::new(GuestMemory::new(max_slots)),
            setup: Mutex::new(()),
            want_irqchip: AtomicBool::new(true),
            want_pit: AtomicBool::new(true),
            irqchip_in_kernel: AtomicBool::new(false),
            pit_in_kernel: AtomicBool::new(false),
            debugger,
            stopper: Stopper::new()?,
            gdb_server: Mutex::new(None),
            coalesced_mmio,
            core_on_crash: crate::coredump::CoreOnCrash::from_environment(),
        })
    }

    /// The VMM's callbacks.
    pub fn callbacks(&self) -> &Callbacks {
        &self.callbacks
    }

    /// The `/dev/kvm` handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM fd; `ENODEV` before `kvm_create_vm`.
    pub fn vm(&self) -> Result<&VmFd> {
        self.vm.get().ok_or(Errno::NODEV)
    }

    /// Where `LIBKVM_CORE` puts automatic guest cores.
    pub(crate) fn core_on_crash(&self) -> &crate::coredump::CoreOnCrash {
        &self.core_on_crash
    }

    /// The all-stop machinery the GDB stub uses.
    pub fn stopper(&self) -> &Stopper {
        &self.stopper
    }

    /// The guest memory table, locked.
    pub fn memory(&self) -> MutexGuard<'_, GuestMemory> {
        lock(&self.memory)
    }

    /// `kvm_disable_irqchip_creation`.
    pub fn disable_irqchip_creation(&self) {
        self.want_irqchip.store(false, Ordering::Relaxed);
    }

    /// `kvm_disable_pit_creation`.
    pub fn disable_pit_creation(&self) {
        self.want_pit.store(false, Ordering::Relaxed);
    }

    /// True once the in-kernel irqchip exists.
    pub fn irqchip_in_kernel(&self) -> bool {
        self.irqchip_in_kernel.load(Ordering::Acquire)
    }

    /// True once the in-kernel PIT exists.
    pub fn pit_in_kernel(&self) -> bool {
        self.pit_in_kernel.load(Ordering::Acquire)
    }

    /// `KVM_CHECK_EXTENSION` on `/dev/kvm`.
    pub fn check_extension(&self, extension: u32) -> i32 {
        self.kvm.check_extension_raw(libc::c_ulong::from(extension))
    }

    /// Creates the VM fd (`kvm_create_vm`); `EEXIST` the second time.
    pub fn create_vm(&self) -> Result<&VmFd> {
        let _setup = lock(&self.setup);
        self.create_vm_locked()
    }

    fn create_vm_locked(&self) -> Result<&VmFd> {
        if self.vm.get().is_some() {
            return Err(Errno::EXIST);
        }
        let vm = self.kvm.create_vm().map_err(Errno::from)?;
        Ok(self.vm.get_or_init(|| vm))
    }

    /// `kvm_create`, as the 2008 library did on every kernel with user
    /// memory: the VM, its TSS, the irqchip and then the PIT unless
    /// disabled, and coalesced MMIO where the host has it. No RAM (the VMM
    /// registers its own) and no vcpu (the VMM creates vcpu 0).
    pub fn create(&self) -> Result<()> {
        let _setup = lock(&self.setup);
        let vm = self.create_vm_locked()?;
        vm.set_tss_address(TSS_ADDRESS as usize).map_err(Errno::from)?;
        if self.want_irqchip.load(Ordering::Relaxed) {
            self.create_irqchip_locked()?;
        }
        if self.want_pit.load(Ordering::Relaxed) && self.irqchip_in_kernel() {
            vm.create_pit2(kvm_bindings::kvm_pit_config::default()).map_err(Errno::from)?;
            self.pit_in_kernel.store(true, Ordering::Release);
        }
        if let Some(value) = std::env::var_os(crate::gdb::listen::LISTEN_VARIABLE) {
            let allow_remote = std::env::var(crate::gdb::listen::ALLOW_REMOTE_VARIABLE).ok();
            self.start_gdbstub_waiting(&value.to_string_lossy(), allow_remote.as_deref())?;
        }
        Ok(())
    }

    /// `kvm_create_irqchip`: the in-kernel PIC, IOAPIC and LAPICs where the
    /// host has them. Must come before the vcpus.
    pub fn create_irqchip(&self) -> Result<()> {
        let _setup = lock(&self.setup);
        self.create_irqchip_locked()
    }

    fn create_irqchip_locked(&self) -> Result<()> {
        if self.irqchip_in_kernel() {
            return Ok(());
        }
        if self.check_extension(kvm_bindings::KVM_CAP_IRQCHIP) <= 0 {
            return Err(Errno::NOTSUP);
        }
        self.vm()?.create_irq_chip().map_err(Errno::from)?;
        self.irqchip_in_kernel.store(true, Ordering::Release);
        Ok(())
    }

    /// `kvm_create_vcpu`: creates vcpu `index` and maps its `kvm_run`.
    pub fn create_vcpu(&self, index: u32) -> Result<&Vcpu> {
        let _setup = lock(&self.setup);
        self.create_vcpu_locked(index)
    }

    fn create_vcpu_locked(&self, index: u32) -> Result<&Vcpu> {
        let cell = self.vcpus.get(index as usize).ok_or(Errno::INVAL)?;
        if cell.get().is_some() {
            return Err(Errno::EXIST);
        }
        let vm = self.vm()?;
        let mut fd = vm.create_vcpu(u64::from(index)).map_err(Errno::from)?;
        reset_like_2008(&fd)?;
        if self.coalesced_mmio.supported() {
            fd.map_coalesced_mmio_ring().map_err(Errno::from)?;
        }
        let can_sync = self.check_extension(kvm_bindings::KVM_CAP_SYNC_REGS) as u32
            & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)
            == (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS);
        let vcpu = Vcpu::new(index, fd, vm.run_size(), can_sync);
        // A debugger that is waiting for the VM, or attached, gets the new
        // vcpu stopped like the others.
        vcpu.set_held(self.stopper.holds_new_vcpus() || self.stopper.attached());
        Ok(cell.get_or_init(|| Box::new(vcpu)))
    }

    /// Vcpu `index`: `EINVAL` when out of range, `ENOENT` when not created.
    pub fn vcpu(&self, index: i32) -> Result<&Vcpu> {
        let cell = usize::try_from(index).ok().and_then(|i| self.vcpus.get(i)).ok_or(Errno::INVAL)?;
        cell.get().map(|b| &**b).ok_or(Errno::NOENT)
    }

    /// Every created vcpu.
    pub fn vcpus(&self) -> impl Iterator<Item = &Vcpu> {
        self.vcpus.iter().filter_map(|c| c.get().map(|b| &**b))
    }

    /// Keeps every vcpu out of the guest until the value is dropped: those
    /// inside are kicked out together, and this returns once all are out
    /// (see [`Vcpu::pause`]). The vcpu the calling thread runs, if any, is
    /// out already.
    pub fn pause_vcpus(&self) -> VcpusPaused<'_> {
        let guards: Vec<(&Vcpu, PauseGuard<'_>)> =
            self.vcpus().filter_map(|vcpu| vcpu.request_pause().map(|guard| (vcpu, guard))).collect();
        for (vcpu, guard) in &guards {
            vcpu.wait_paused(guard);
        }
        VcpusPaused { _guards: guards.into_iter().map(|(_, guard)| guard).collect() }
    }
}

/// Every vcpu held out of the guest (see [`Context::pause_vcpus`]).
#[must_use = "the vcpus run on when this is dropped"]
pub struct VcpusPaused<'a> {
    _guards: Vec<PauseGuard<'a>>,
}
