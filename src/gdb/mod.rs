//! The built-in GDB remote stub: any VMM linking libkvm can be debugged
//! with gdb (`kvm_gdbstub_start`, or `LIBKVM_GDB=<address>` in the
//! environment of an unmodified VMM).
//!
//! - [`arch`]: the registers and target description gdb sees;
//! - [`registers`]: conversions from and to KVM's register structures;
//! - [`target`]: the VM as a `gdbstub` target (threads are vcpus);
//! - [`host_files`]: the guest's RAM as `/proc/<pid>/maps`, for `gcore`;
//! - [`stopper`]: all-stop: parking and kicking vcpu threads;
//! - [`server`]: the stub thread and its poll loop;
//! - [`spin`]: the brief waits without sleeping of the stub and the vcpus.

pub mod arch;
pub mod host_files;
pub mod listen;
pub mod registers;
pub mod server;
pub mod spin;
pub mod stopper;
pub mod target;

use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::listen::{parse_listen_address, ListenAddress, Listener};
use crate::context::{Context, ContextRef};
use crate::error::{Errno, Result};

/// A running stub.
pub struct GdbServer {
    shutdown: std::sync::Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl GdbServer {
    /// Binds `address` and starts the stub thread for `ctx`.
    fn start(ctx: &Context, address: &ListenAddress) -> Result<GdbServer> {
        let listener = Listener::bind(address)?;
        let shutdown = std::sync::Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io_errno)?);
        let thread_shutdown = shutdown.clone();
        let ctx_ref = ContextRef::new(ctx);
        let thread = std::thread::Builder::new()
            .name("libkvm-gdbstub".into())
            .spawn(move || {
                // SAFETY: the context stops (and joins) its stub before it is
                // dropped (Context::stop_gdbstub in Drop).
                let ctx = unsafe { ctx_ref.get() };
                server::serve(ctx, listener, &thread_shutdown);
            })
            .map_err(io_errno)?;
        Ok(GdbServer { shutdown, thread: Some(thread) })
    }

    /// Stops the stub: a connected gdb is disconnected and the guest runs on.
    fn stop(mut self) {
        let _ = self.shutdown.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The errno of an I/O error.
pub(crate) fn io_errno(e: std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Context {
    /// `kvm_gdbstub_start`: listens for gdb at `address`, any address the
    /// VMM names. `EBUSY` when a stub runs already.
    pub fn start_gdbstub(&self, address: &str) -> Result<()> {
        self.start_gdbstub_at(&parse_listen_address(address)?)
    }

    fn start_gdbstub_at(&self, address: &ListenAddress) -> Result<()> {
        let mut server = crate::lock(&self.gdb_server);
        if server.is_some() {
            return Err(Errno::BUSY);
        }
        *server = Some(GdbServer::start(self, address)?);
        Ok(())
    }

    /// `kvm_gdbstub_stop`; `ENOENT` when no stub runs.
    pub fn stop_gdbstub(&self) -> Result<()> {
        let server = crate::lock(&self.gdb_server).take().ok_or(Errno::NOENT)?;
        server.stop();
        Ok(())
    }

    /// For `LIBKVM_GDB=value` (`allow_remote`: `LIBKVM_GDB_ALLOW_REMOTE`):
    /// starts the stub and keeps every vcpu from running its first
    /// instruction until gdb lets it. A refusal says why on stderr, naming
    /// the variable.
    pub fn start_gdbstub_waiting(&self, value: &str, allow_remote: Option<&str>) -> Result<()> {
        let address = listen::from_environment(value, allow_remote)?;
        self.stopper().set_hold_new_vcpus(true);
        for vcpu in self.vcpus() {
            vcpu.set_held(true);
        }
        match self.start_gdbstub_at(&address) {
            Ok(()) => {
                eprintln!("libkvm: waiting for gdb on {value}: gdb -ex 'target remote {}'", remote_spec(&address));
                Ok(())
            }
            Err(e) => {
                eprintln!("libkvm: {}={value:?}: cannot listen there: {e}", listen::LISTEN_VARIABLE);
                self.stopper().set_hold_new_vcpus(false);
                self.stopper().release(self, |_| true);
                Err(e)
            }
        }
    }
}

/// What to type after gdb's `target remote` for a listen address.
fn remote_spec(address: &ListenAddress) -> String {
    match address {
        ListenAddress::Unix(path) => path.display().to_string(),
        ListenAddress::Tcp(addr) => addr.to_string(),
    }
}
