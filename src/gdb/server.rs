//! The stub's thread: accepts one gdb at a time and drives `gdbstub`'s
//! non-blocking state machine from a `poll` loop over the connection, the
//! vcpus' stop events and a shutdown request. Where a core is free it
//! polls without sleeping for a moment before it blocks (see
//! [`super::spin`]).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use vmm_sys_util::eventfd::EventFd;

use super::arch::ExpeditedRegister;
use super::listen::{Listener, Stream};
use super::spin;
use super::target::{tid_of, VmTarget};
use crate::context::Context;

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => Write::write_all(s, buf),
            Stream::Unix(s) => Write::write_all(s, buf),
        }
    }
}

/// The largest packet the stub takes and advertises (`PacketSize`): gdb
/// then asks for up to half as many bytes of memory per `m`.
///
/// Small on purpose: `gdbstub` 0.7 checks every packet against its whole
/// buffer, reading the tail past the checksum a byte at a time for another
/// `#`. At 64 KiB, once reads of memory had overwritten the old packets
/// whose `#` ended that search, a packet could cost some 60 µs more on this
/// project's machine (a raw client's 64-byte `m` in a loop: 89-101 µs a
/// round trip, against 27-31 µs at 4 KiB), and gdb's `stepi` a fifth more.
/// A bulk read now takes 16 times the packets and about twice the time.
pub(crate) const PACKET_SIZE: usize = 4 * 1024;
/// A reply is sent in pieces of at most this many bytes: whatever a client
/// asks for, the stub buffers no more than this.
const REPLY_BUFFER: usize = 64 * 1024;
/// A client that takes no reply data for this long is given up on.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection `gdbstub` writes to: replies are collected and sent in
/// one write at each flush rather than a system call per byte, and in
/// pieces of [`REPLY_BUFFER`] bytes while a long reply is written.
struct BufferedConnection {
    stream: Stream,
    out: Vec<u8>,
}

impl BufferedConnection {
    fn new(stream: Stream) -> BufferedConnection {
        BufferedConnection { stream, out: Vec::with_capacity(REPLY_BUFFER) }
    }

    fn send_if_full(&mut self) -> std::io::Result<()> {
        if self.out.len() >= REPLY_BUFFER {
            self.flush()?;
        }
        Ok(())
    }
}

impl Connection for BufferedConnection {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> std::io::Result<()> {
        self.out.push(byte);
        self.send_if_full()
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        for piece in buf.chunks(REPLY_BUFFER) {
            self.out.extend_from_slice(piece);
            self.send_if_full()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        result
    }

    fn on_session_start(&mut self) -> std::io::Result<()> {
        match &self.stream {
            Stream::Tcp(s) => {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(SEND_TIMEOUT))
            }
            Stream::Unix(s) => s.set_write_timeout(Some(SEND_TIMEOUT)),
        }
    }
}

/// Waits until one of `fds` is readable; returns a bit per fd. With
/// `may_spin`, polls without sleeping for [`spin::STUB_BUDGET`] first.
fn wait_readable(fds: &[RawFd], may_spin: bool) -> u32 {
    let mut polls = [libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 }; 4];
    for (p, fd) in polls.iter_mut().zip(fds) {
        p.fd = *fd;
    }
    let mut poll = |timeout: libc::c_int| {
        // SAFETY: `polls` holds `fds.len()` initialised pollfd entries.
        unsafe { libc::poll(polls.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) > 0 }
    };
    if !(may_spin && spin::until(spin::STUB_BUDGET, || poll(0))) {
        while !poll(-1) {}
    }
    polls[..fds.len()].iter().enumerate().filter(|(_, p)| p.revents != 0).fold(0, |bits, (i, _)| bits | (1 << i))
}

/// Runs the stub until `shutdown` is signalled.
pub fn serve(ctx: &Context, listener: Listener, shutdown: &EventFd) {
    loop {
        let ready = wait_readable(&[listener.fd(), shutdown.as_raw_fd()], false);
        if ready & 0b10 != 0 {
            break;
        }
        let Ok(stream) = listener.accept() else { continue };
        let mut inserted = Vec::new();
        let mut ending = End::Detach;
        let outcome = catch_unwind(AssertUnwindSafe(|| session(ctx, stream, shutdown, &mut inserted)));
        if let Ok(end) = outcome {
            ending = end;
        }
        finish_session(ctx, &inserted, ending);
        if ending == End::Shutdown {
            break;
        }
    }
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// gdb detached or went away: the guest runs on.
    Detach,
    /// gdb killed the VM.
    Kill,
    /// The stub is being stopped.
    Shutdown,
}

/// Leaves the VM as if gdb had never come: gdb's breakpoints removed (the
/// VMM's own stay), no single-stepping, every vcpu running.
fn finish_session(ctx: &Context, inserted: &[(crate::debug::BreakType, u64, u64)], end: End) {
    for &(kind, addr, len) in inserted {
        let _ = ctx.remove_breakpoint(kind, addr, len);
    }
    for vcpu in ctx.vcpus() {
        let _ = ctx.set_singlestep(vcpu, false);
    }
    let stopper = ctx.stopper();
    stopper.set_attached(false);
    stopper.set_hold_new_vcpus(false);
    if end == End::Kill {
        stopper.kill(ctx);
    } else {
        stopper.release(ctx, |_| true);
    }
}

/// One gdb connection, from the stop of every vcpu to the disconnect.
fn session(
    ctx: &Context,
    stream: Stream,
    shutdown: &EventFd,
    inserted: &mut Vec<(crate::debug::BreakType, u64, u64)>,
) -> End {
    let stopper = ctx.stopper();
    stopper.set_attached(true);
    stopper.stop_all(ctx);

    let conn_fd = stream.fd();
    let mut target = VmTarget::new(ctx, inserted);
    // A buffer gdbstub borrows, not one it owns: an owned one grew with
    // every byte of a packet longer than the advertised size, as large as
    // a client liked. Such a packet now ends the session.
    let mut packet_buffer = vec![0u8; PACKET_SIZE];
    let Ok(stub) = GdbStub::builder(BufferedConnection::new(stream)).with_packet_buffer(&mut packet_buffer).build()
    else {
        return End::Detach;
    };
    let mut gdb = match stub.run_state_machine(&mut target) {
        Ok(gdb) => gdb,
        Err(_) => return End::Detach,
    };
    let mut pending = [0u8; 4096];
    let (mut next, mut len) = (0usize, 0usize);
    // While the VM runs, the stub spins only where that takes no core from
    // a released vcpu (gdb waits for the stop); while it is stopped, gdb
    // writes the next packet on a core of its own.
    let spin_while_running = || ctx.vcpus().filter(|v| !v.is_held()).count() < spin::cores();
    loop {
        let step = match gdb {
            GdbStubStateMachine::Idle(mut g) => {
                if next == len {
                    let ready = wait_readable(&[conn_fd, shutdown.as_raw_fd()], true);
                    if ready & 0b10 != 0 {
                        break End::Shutdown;
                    }
                    match read_into(g.borrow_conn(), &mut pending) {
                        Some(n) => (next, len) = (0, n),
                        None => break End::Detach,
                    }
                    gdb = g.into();
                    continue;
                }
                next += 1;
                g.incoming_data(&mut target, pending[next - 1])
            }
            GdbStubStateMachine::Running(mut g) => {
                if next < len {
                    next += 1;
                    g.incoming_data(&mut target, pending[next - 1])
                } else if stopper.has_events() {
                    match stop_for_event(ctx, &mut target) {
                        Some(reason) => match expedited_registers(ctx, target.current) {
                            Some(values) => {
                                let mut regs = values.iter().map(|(id, bytes)| (*id, &bytes[..]));
                                g.report_stop_with_regs(&mut target, reason, &mut regs)
                            }
                            None => g.report_stop(&mut target, reason),
                        },
                        None => Ok(g.into()),
                    }
                } else {
                    let fds = [conn_fd, stopper.wake_fd().as_raw_fd(), shutdown.as_raw_fd()];
                    let ready = wait_readable(&fds, spin_while_running());
                    if ready & 0b100 != 0 {
                        break End::Shutdown;
                    }
                    if ready & 0b10 != 0 {
                        stopper.clear_wake();
                    }
                    if ready & 0b1 != 0 {
                        match read_into(g.borrow_conn(), &mut pending) {
                            Some(n) => (next, len) = (0, n),
                            None => break End::Detach,
                        }
                    }
                    Ok(g.into())
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(g) => {
                let reason = stop_for_event(ctx, &mut target).unwrap_or(MultiThreadStopReason::SignalWithThread {
                    tid: tid_of(target.current),
                    signal: Signal::SIGINT,
                });
                g.interrupt_handled(&mut target, Some(reason))
            }
            GdbStubStateMachine::Disconnected(g) => {
                break match g.get_reason() {
                    DisconnectReason::Kill => End::Kill,
                    _ => End::Detach,
                };
            }
        };
        gdb = match step {
            Ok(gdb) => gdb,
            // A broken connection or a packet gdbstub cannot handle ends the
            // session like a detach: the guest runs on.
            Err(_) => break End::Detach,
        };
    }
}

/// Stops every vcpu and takes the oldest stop event, whose vcpu becomes
/// the current one; `None` when no vcpu reported one.
fn stop_for_event(ctx: &Context, target: &mut VmTarget<'_>) -> Option<MultiThreadStopReason<u64>> {
    ctx.stopper().stop_all(ctx);
    let stop = ctx.stopper().take_event()?;
    target.current = stop.vcpu;
    Some(VmTarget::stop_reason(&stop))
}

/// RBP, RSP and RIP of the vcpu that stopped, for the stop reply; `None`
/// when they cannot be read (gdb then asks with `g`).
fn expedited_registers(ctx: &Context, vcpu: u32) -> Option<[(ExpeditedRegister, [u8; 8]); 3]> {
    let (regs, _) = ctx.vcpu(vcpu as i32).ok()?.regs_and_sregs().ok()?;
    Some([
        (ExpeditedRegister::Rbp, regs.rbp.to_le_bytes()),
        (ExpeditedRegister::Rsp, regs.rsp.to_le_bytes()),
        (ExpeditedRegister::Rip, regs.rip.to_le_bytes()),
    ])
}

/// Reads what gdb sent; `None` when the connection closed or failed.
fn read_into(conn: &mut BufferedConnection, buf: &mut [u8]) -> Option<usize> {
    match conn.stream.read(buf) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}
