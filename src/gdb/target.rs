//! The VM as a `gdbstub` target: vcpus are threads (thread id = vcpu + 1),
//! memory is read through the page walker (or physically), breakpoints and
//! watchpoints are the library-managed ones, and resuming releases parked
//! vcpus with per-thread actions.

use gdbstub::common::Pid;
use gdbstub::common::{Signal, Tid};
use gdbstub::outputln;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::extended_mode::{Args, AttachKind, ExtendedMode, ExtendedModeOps, ShouldTerminate};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};

use super::arch::{LibkvmX86_64, VcpuRegisters};
use super::registers;
use super::stopper::StopEvent;
use crate::context::Context;
use crate::debug::BreakType;
use crate::error::{Errno, Result};
use crate::memory::page_runs;
use crate::vcpu::Vcpu;
use crate::x86;

/// How a vcpu goes on after a resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResumeAction {
    Continue,
    Step,
}

/// The gdb thread id of vcpu `index`.
pub fn tid_of(index: u32) -> Tid {
    Tid::new(index as usize + 1).expect("index + 1 is non-zero")
}

/// The state a gdb session keeps beside the VM.
pub struct VmTarget<'a> {
    ctx: &'a Context,
    actions: Vec<(u32, ResumeAction)>,
    scheduler_locked: bool,
    /// The vcpu whose page tables translate breakpoint addresses: the one
    /// that stopped last.
    pub current: u32,
    /// Memory by physical address (`monitor phys`) instead of virtual.
    physical: bool,
    /// What gdb inserted, to remove at the end of the session (kept by the
    /// caller, so that it survives a panic of the session).
    inserted: &'a mut Vec<(BreakType, u64, u64)>,
    /// Host I/O files open (see [`super::host_files`]), by fd.
    open_files: Vec<Option<Vec<u8>>>,
}

fn errno_error<E>(e: Errno) -> TargetError<E> {
    TargetError::Errno(u8::try_from(e.0).unwrap_or(u8::MAX))
}

impl<'a> VmTarget<'a> {
    /// A target for `ctx`, whose vcpus are all stopped; gdb's breakpoints
    /// are recorded in `inserted`.
    pub fn new(ctx: &'a Context, inserted: &'a mut Vec<(BreakType, u64, u64)>) -> VmTarget<'a> {
        let current = ctx.vcpus().next().map_or(0, Vcpu::index);
        VmTarget {
            ctx,
            actions: Vec::new(),
            scheduler_locked: false,
            current,
            physical: false,
            inserted,
            open_files: Vec::new(),
        }
    }

    /// The VM.
    pub fn context(&self) -> &'a Context {
        self.ctx
    }

    /// True when gdb's addresses are guest-physical (`monitor phys`).
    pub fn physical(&self) -> bool {
        self.physical
    }

    /// The paging registers of the current vcpu, if it can tell.
    pub fn current_paging_registers(&self) -> Option<crate::debug::pagewalk::PagingRegisters> {
        self.current_vcpu().ok()?.paging_registers().ok()
    }

    /// The Host I/O files open.
    pub fn open_files(&mut self) -> &mut Vec<Option<Vec<u8>>> {
        &mut self.open_files
    }

    /// The vcpu gdb calls thread `tid` (vcpu + 1); `EINVAL` for a thread
    /// id no vcpu has, however large.
    fn vcpu(&self, tid: Tid) -> Result<&'a Vcpu> {
        let index = i32::try_from(tid.get() - 1).map_err(|_| Errno::INVAL)?;
        self.ctx.vcpu(index)
    }

    fn current_vcpu(&self) -> Result<&'a Vcpu> {
        self.ctx.vcpu(self.current as i32)
    }

    /// The stop reason gdb is told for `stop`.
    pub fn stop_reason(stop: &StopEvent) -> gdbstub::stub::MultiThreadStopReason<u64> {
        use gdbstub::stub::MultiThreadStopReason as Reason;
        let tid = tid_of(stop.vcpu);
        match stop.event.break_type {
            BreakType::SoftwareBreakpoint => Reason::SwBreak(tid),
            BreakType::HardwareBreakpoint => Reason::HwBreak(tid),
            BreakType::WatchWrite => Reason::Watch { tid, kind: WatchKind::Write, addr: stop.event.watch_addr },
            BreakType::WatchRead => Reason::Watch { tid, kind: WatchKind::Read, addr: stop.event.watch_addr },
            BreakType::WatchAccess => Reason::Watch { tid, kind: WatchKind::ReadWrite, addr: stop.event.watch_addr },
            BreakType::SingleStep => Reason::SignalWithThread { tid, signal: Signal::SIGTRAP },
        }
    }

    fn insert(&mut self, kind: BreakType, addr: u64, len: u64) -> TargetResult<bool, Self> {
        let vcpu = self.current_vcpu().map_err(errno_error)?;
        match self.ctx.insert_breakpoint(vcpu, kind, addr, len) {
            Ok(()) => {
                self.inserted.push((kind, addr, len));
                Ok(true)
            }
            Err(Errno::NOSPC) => Ok(false),
            Err(e) => Err(errno_error(e)),
        }
    }

    fn remove(&mut self, kind: BreakType, addr: u64, len: u64) -> TargetResult<bool, Self> {
        match self.ctx.remove_breakpoint(kind, addr, len) {
            Ok(()) => {
                if let Some(i) = self.inserted.iter().position(|b| *b == (kind, addr, len)) {
                    self.inserted.swap_remove(i);
                }
                Ok(true)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(errno_error(e)),
        }
    }

    /// Reads as much of `data` as is accessible from `start`, page by page.
    fn read_memory(&self, vcpu: &Vcpu, start: u64, data: &mut [u8]) -> Result<usize> {
        for (at, offset, n) in page_runs(start, data.len()) {
            let chunk = &mut data[offset..offset + n];
            let read = if self.physical {
                self.ctx.read_guest_phys(at, chunk)
            } else {
                self.ctx.read_guest_virt(vcpu, at, chunk)
            };
            if let Err(e) = read {
                return if offset == 0 { Err(e) } else { Ok(offset) };
            }
        }
        Ok(data.len())
    }
}

impl Target for VmTarget<'_> {
    type Arch = LibkvmX86_64;
    type Error = Errno;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_extended_mode(&mut self) -> Option<ExtendedModeOps<'_, Self>> {
        Some(self)
    }

    fn support_host_io(&mut self) -> Option<gdbstub::target::ext::host_io::HostIoOps<'_, Self>> {
        Some(self)
    }
}

/// Only `kill` means something for a VM: with this, gdb's `kill` gets the
/// "OK" it waits for. A VM cannot be run, attached or restarted from gdb.
impl ExtendedMode for VmTarget<'_> {
    fn run(&mut self, _filename: Option<&[u8]>, _args: Args<'_, '_>) -> TargetResult<Pid, Self> {
        Err(errno_error(Errno::NOTSUP))
    }

    fn attach(&mut self, _pid: Pid) -> TargetResult<(), Self> {
        Err(errno_error(Errno::NOTSUP))
    }

    fn query_if_attached(&mut self, _pid: Pid) -> TargetResult<AttachKind, Self> {
        Ok(AttachKind::Attach)
    }

    fn kill(&mut self, _pid: Option<Pid>) -> TargetResult<ShouldTerminate, Self> {
        Ok(ShouldTerminate::Yes)
    }

    fn restart(&mut self) -> std::result::Result<(), Errno> {
        Err(Errno::NOTSUP)
    }
}

impl MultiThreadBase for VmTarget<'_> {
    fn read_registers(&mut self, regs: &mut VcpuRegisters, tid: Tid) -> TargetResult<(), Self> {
        let vcpu = self.vcpu(tid).map_err(errno_error)?;
        let (kvm_regs, sregs, fpu) =
            vcpu.with_fd(|fd| Ok::<_, Errno>((fd.get_regs()?, fd.get_sregs()?, fd.get_fpu()?))).map_err(errno_error)?;
        *regs = registers::from_kvm(&kvm_regs, &sregs, &fpu);
        Ok(())
    }

    fn write_registers(&mut self, regs: &VcpuRegisters, tid: Tid) -> TargetResult<(), Self> {
        let vcpu = self.vcpu(tid).map_err(errno_error)?;
        write_all_registers(vcpu, regs).map_err(errno_error)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let vcpu = self.vcpu(tid).map_err(errno_error)?;
        self.read_memory(vcpu, start, data).map_err(errno_error)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let vcpu = self.vcpu(tid).map_err(errno_error)?;
        let written = if self.physical {
            self.ctx.write_guest_phys(start, data)
        } else {
            self.ctx.write_guest_virt(vcpu, start, data)
        };
        written.map_err(errno_error)
    }

    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> std::result::Result<(), Errno> {
        self.ctx.vcpus().for_each(|vcpu| thread_is_active(tid_of(vcpu.index())));
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

/// Writes what gdb's `G` packet carries, all of it or none: with the vcpu
/// held out of the guest, the segment and control registers first (the
/// part KVM may refuse), then the general and FPU registers; a refusal
/// puts back what was written before it.
fn write_all_registers(vcpu: &Vcpu, regs: &VcpuRegisters) -> Result<()> {
    vcpu.write_state(|fd| -> Result<()> {
        let old_regs = fd.get_regs().map_err(Errno::from)?;
        let old_sregs = fd.get_sregs().map_err(Errno::from)?;
        let old_fpu = fd.get_fpu().map_err(Errno::from)?;
        let (mut new_regs, mut new_sregs, mut new_fpu) = (old_regs, old_sregs, old_fpu);
        registers::to_kvm(regs, &mut new_regs, &mut new_sregs, &mut new_fpu);
        if new_sregs != old_sregs {
            fd.set_sregs(&new_sregs).map_err(Errno::from)?;
        }
        let undo_sregs = |fd: &mut kvm_ioctls::VcpuFd| {
            if new_sregs != old_sregs {
                let _ = fd.set_sregs(&old_sregs);
            }
        };
        if new_regs != old_regs {
            if let Err(e) = fd.set_regs(&new_regs) {
                undo_sregs(fd);
                return Err(e.into());
            }
        }
        if new_fpu != old_fpu {
            if let Err(e) = fd.set_fpu(&new_fpu) {
                let _ = fd.set_regs(&old_regs);
                undo_sregs(fd);
                return Err(e.into());
            }
        }
        Ok(())
    })
}

impl MultiThreadResume for VmTarget<'_> {
    fn resume(&mut self) -> std::result::Result<(), Errno> {
        let action_of = |index: u32| match self.actions.iter().find(|(i, _)| *i == index) {
            Some((_, action)) => Some(*action),
            None if self.scheduler_locked => None,
            None => Some(ResumeAction::Continue),
        };
        for vcpu in self.ctx.vcpus() {
            if let Some(action) = action_of(vcpu.index()) {
                self.ctx.set_singlestep(vcpu, action == ResumeAction::Step)?;
            }
        }
        let stopper = self.ctx.stopper();
        stopper.set_hold_new_vcpus(false);
        // A stop another vcpu reported meanwhile is given to gdb at once
        // (by the server loop) instead of letting the guest run.
        if !stopper.has_events() {
            stopper.release(self.ctx, |vcpu| action_of(vcpu.index()).is_some());
        }
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> std::result::Result<(), Errno> {
        self.actions.clear();
        self.scheduler_locked = false;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, tid: Tid, _signal: Option<Signal>) -> std::result::Result<(), Errno> {
        // Signals have no meaning for a vcpu: gdb's pass-on of SIGINT is dropped.
        let index = self.vcpu(tid)?.index();
        self.actions.push((index, ResumeAction::Continue));
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSingleStep for VmTarget<'_> {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> std::result::Result<(), Errno> {
        let index = self.vcpu(tid)?.index();
        self.actions.push((index, ResumeAction::Step));
        Ok(())
    }
}

impl MultiThreadSchedulerLocking for VmTarget<'_> {
    fn set_resume_action_scheduler_lock(&mut self) -> std::result::Result<(), Errno> {
        self.scheduler_locked = true;
        Ok(())
    }
}

impl Breakpoints for VmTarget<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for VmTarget<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.insert(BreakType::SoftwareBreakpoint, addr, 1)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove(BreakType::SoftwareBreakpoint, addr, 1)
    }
}

impl HwBreakpoint for VmTarget<'_> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.insert(BreakType::HardwareBreakpoint, addr, 1)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove(BreakType::HardwareBreakpoint, addr, 1)
    }
}

fn watch_type(kind: WatchKind) -> BreakType {
    match kind {
        WatchKind::Write => BreakType::WatchWrite,
        WatchKind::Read => BreakType::WatchRead,
        WatchKind::ReadWrite => BreakType::WatchAccess,
    }
}

impl HwWatchpoint for VmTarget<'_> {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        self.insert(watch_type(kind), addr, len)
    }

    fn remove_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        self.remove(watch_type(kind), addr, len)
    }
}

const MONITOR_HELP: &str = "\
libkvm monitor commands:
  help              this text
  regs [VCPU]       general, segment and control registers of a vcpu
  dump [VCPU]       regs, plus pending events and debug registers
  phys              memory accesses use guest-physical addresses
  virt              memory accesses use guest-virtual addresses (default)
  breakpoints       the breakpoints and watchpoints libkvm manages
  core PATH         writes a core of the guest to PATH (open it with gdb)";

impl MonitorCmd for VmTarget<'_> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> std::result::Result<(), Errno> {
        let cmd = String::from_utf8_lossy(cmd);
        let mut words = cmd.split_whitespace();
        let verb = words.next().unwrap_or("help");
        let vcpu_arg = words.next().map(|w| w.parse::<i32>().map_err(|_| Errno::INVAL));
        let vcpu = |target: &Self| match vcpu_arg {
            Some(index) => target.ctx.vcpu(index?),
            None => target.current_vcpu(),
        };
        match verb {
            "help" => outputln!(out, "{}", MONITOR_HELP),
            "regs" | "dump" => match vcpu(self) {
                Ok(vcpu) => {
                    let text = if verb == "dump" { x86::dump_text(vcpu) } else { x86::show_regs_text(vcpu) };
                    outputln!(out, "{}", text.trim_end());
                }
                Err(e) => outputln!(out, "no such vcpu: {}", e),
            },
            "phys" | "virt" => {
                self.physical = verb == "phys";
                outputln!(
                    out,
                    "memory accesses use guest-{} addresses",
                    if self.physical { "physical" } else { "virtual" }
                );
            }
            "breakpoints" => {
                let table = self.ctx.debugger().table();
                outputln!(out, "{}", table.describe().trim_end());
            }
            "core" => {
                let rest = cmd.trim_start().strip_prefix("core").unwrap_or("").trim();
                if rest.is_empty() {
                    outputln!(out, "usage: monitor core PATH");
                } else {
                    match self.ctx.dump_guest_core(std::path::Path::new(rest), true) {
                        Ok(()) => outputln!(out, "guest core written to {}", rest),
                        Err(e) => outputln!(out, "cannot write a core to {}: {}", rest, e),
                    }
                }
            }
            other => outputln!(out, "unknown command '{}'\n{}", other, MONITOR_HELP),
        }
        Ok(())
    }
}
