//! The built-in GDB remote stub: any VMM linking libkvm can be debugged
//! with gdb (`kvm_gdbstub_start`, or `LIBKVM_GDB=<address>` in the
//! environment of an unmodified VMM).
//!
//! - [`arch`]: the registers and target description gdb sees;
//! - [`registers`]: conversions from and to KVM's register structures;
//! - [`target`]: the VM as a `gdbstub` target (threads are vcpus);
//! - [`stopper`]: all-stop: parking and kicking vcpu threads;
//! - [`server`]: the stub thread and its poll loop.

pub mod arch;
pub mod registers;
pub mod server;
pub mod stopper;
pub mod target;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::server::Listener;
use crate::context::Context;
use crate::error::{Errno, Result};

/// Where the stub listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

/// Parses `"127.0.0.1:1234"`, `"[::1]:1234"`, `"unix:/path"`, or a bare
/// port (`"1234"`, `":1234"`, `"localhost:1234"`), which listens on loopback
/// only. Other interfaces must be named explicitly.
pub fn parse_listen_address(text: &str) -> Result<ListenAddress> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix("unix:") {
        return if path.is_empty() { Err(Errno::INVAL) } else { Ok(ListenAddress::Unix(PathBuf::from(path))) };
    }
    let port = text.strip_prefix("localhost:").or_else(|| text.strip_prefix(':')).unwrap_or(text);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(ListenAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    text.parse::<SocketAddr>().map(ListenAddress::Tcp).map_err(|_| Errno::INVAL)
}

/// A running stub.
pub struct GdbServer {
    shutdown: std::sync::Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

/// A `&Context` the stub thread may hold.
struct ContextRef(*const Context);

// SAFETY: Context is Sync; the pointer stays valid because the context stops
// (and joins) its stub before it is dropped (Context::stop_gdbstub in Drop).
unsafe impl Send for ContextRef {}

impl GdbServer {
    /// Binds `address` and starts the stub thread for `ctx`.
    fn start(ctx: &Context, address: &ListenAddress) -> Result<GdbServer> {
        let listener = match address {
            ListenAddress::Tcp(addr) => Listener::Tcp(TcpListener::bind(addr).map_err(io_errno)?),
            ListenAddress::Unix(path) => {
                let _ = std::fs::remove_file(path);
                Listener::Unix(UnixListener::bind(path).map_err(io_errno)?, path.clone())
            }
        };
        let shutdown = std::sync::Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io_errno)?);
        let thread_shutdown = shutdown.clone();
        let ctx_ref = ContextRef(ctx);
        let thread = std::thread::Builder::new()
            .name("libkvm-gdbstub".into())
            .spawn(move || {
                let ctx_ref = ctx_ref;
                // SAFETY: see ContextRef.
                let ctx = unsafe { &*ctx_ref.0 };
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
    /// `kvm_gdbstub_start`: listens for gdb at `address`. `EBUSY` when a
    /// stub runs already.
    pub fn start_gdbstub(&self, address: &str) -> Result<()> {
        let address = parse_listen_address(address)?;
        let mut server = crate::lock(&self.gdb_server);
        if server.is_some() {
            return Err(Errno::BUSY);
        }
        *server = Some(GdbServer::start(self, &address)?);
        Ok(())
    }

    /// `kvm_gdbstub_stop`; `ENOENT` when no stub runs.
    pub fn stop_gdbstub(&self) -> Result<()> {
        let server = crate::lock(&self.gdb_server).take().ok_or(Errno::NOENT)?;
        server.stop();
        Ok(())
    }

    /// For `LIBKVM_GDB`: starts the stub and keeps every vcpu from running
    /// its first instruction until gdb lets it.
    pub fn start_gdbstub_waiting(&self, address: &str) -> Result<()> {
        self.stopper().set_hold_new_vcpus(true);
        for vcpu in self.vcpus() {
            vcpu.set_held(true);
        }
        let started = self.start_gdbstub(address);
        if started.is_err() {
            self.stopper().set_hold_new_vcpus(false);
            self.stopper().release(self, |_| true);
        } else {
            eprintln!("libkvm: waiting for gdb on {address}: gdb -ex 'target remote {}'", remote_spec(address));
        }
        started
    }
}

/// What to type after gdb's `target remote` for a listen address.
fn remote_spec(address: &str) -> String {
    match parse_listen_address(address) {
        Ok(ListenAddress::Unix(path)) => path.display().to_string(),
        Ok(ListenAddress::Tcp(addr)) => addr.to_string(),
        Err(_) => address.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ports_listen_on_loopback_only() {
        let loopback = ListenAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 1234)));
        for text in ["1234", ":1234", "localhost:1234", " 1234 "] {
            assert_eq!(parse_listen_address(text), Ok(loopback.clone()), "{text}");
        }
    }

    #[test]
    fn explicit_addresses_and_unix_sockets_parse() {
        assert_eq!(
            parse_listen_address("[::1]:1234"),
            Ok(ListenAddress::Tcp("[::1]:1234".parse().unwrap()))
        );
        assert_eq!(
            parse_listen_address("0.0.0.0:5000"),
            Ok(ListenAddress::Tcp(SocketAddr::from(([0, 0, 0, 0], 5000))))
        );
        assert_eq!(parse_listen_address("unix:/tmp/vm.sock"), Ok(ListenAddress::Unix("/tmp/vm.sock".into())));
    }

    #[test]
    fn garbage_is_invalid() {
        for text in ["", "unix:", "host", "127.0.0.1", "99999", "1.2.3.4:x"] {
            assert_eq!(parse_listen_address(text), Err(Errno::INVAL), "{text:?}");
        }
    }
}
