//! Where the stub listens, and who may reach it.
//!
//! The stub gives whoever connects full control of the guest, so the doors
//! are kept narrow:
//!
//! - a bare port means loopback;
//! - an address outside loopback taken from `LIBKVM_GDB` needs
//!   `LIBKVM_GDB_ALLOW_REMOTE=1` as well, and is announced on stderr (a
//!   VMM calling `kvm_gdbstub_start` with one has chosen it);
//! - a unix socket is created with mode 0600 whatever the umask (bound in
//!   a private directory, then renamed into place), never replaces a path
//!   that is not a stale socket, and is removed at the end only if it is
//!   still the one the stub made.

use std::ffi::CString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Errno, Result};

/// The environment variable that makes `kvm_create` start the stub.
pub const LISTEN_VARIABLE: &str = "LIBKVM_GDB";
/// The environment variable that lets `LIBKVM_GDB` name a non-loopback address.
pub const ALLOW_REMOTE_VARIABLE: &str = "LIBKVM_GDB_ALLOW_REMOTE";

/// The longest unix socket path the kernel takes (`sun_path` less its NUL).
const UNIX_PATH_MAX: usize = 107;

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

/// The address in `LIBKVM_GDB=value`, with the checks the environment gets:
/// a bad value or a remote address without the opt-in is refused with a
/// message naming the variable; an allowed remote address is warned about.
pub fn from_environment(value: &str, allow_remote: Option<&str>) -> Result<ListenAddress> {
    let Ok(address) = parse_listen_address(value) else {
        eprintln!(
            "libkvm: {LISTEN_VARIABLE}={value:?} is not a listen address \
             (give a port, host:port, [v6]:port or unix:/path)"
        );
        return Err(Errno::INVAL);
    };
    if let ListenAddress::Tcp(addr) = address {
        if !addr.ip().is_loopback() {
            if allow_remote != Some("1") {
                eprintln!(
                    "libkvm: {LISTEN_VARIABLE}={value:?} would let other hosts take over this VM: \
                     set {ALLOW_REMOTE_VARIABLE}=1 to allow it, or listen on 127.0.0.1"
                );
                return Err(Errno(libc::EACCES));
            }
            eprintln!("libkvm: warning: the GDB stub listens on {addr}: whoever connects controls the guest");
        }
    }
    Ok(address)
}

/// A listening socket: TCP or unix.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A unix socket, with the path and identity of the socket file it made.
    Unix(UnixListener, PathBuf, (u64, u64)),
}

/// A connected gdb.
pub enum Stream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a unix socket.
    Unix(UnixStream),
}

impl Listener {
    /// Binds `address`.
    pub fn bind(address: &ListenAddress) -> Result<Listener> {
        match address {
            ListenAddress::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).map_err(super::io_errno)?)),
            ListenAddress::Unix(path) => bind_private_unix(path),
        }
    }

    /// The fd to poll for connections.
    pub fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, ..) => l.as_raw_fd(),
        }
    }

    /// Accepts one connection.
    pub fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, ..) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path, made) = self {
            if identity(path).is_some_and(|found| found == *made) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The device and inode of the file at `path` (not following a symlink).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Makes room at `path`: nothing there, or a socket nobody listens on
/// (left by a stub that died), which is removed. A live socket is
/// `EADDRINUSE`; any other file is `EEXIST`.
fn clear_stale_socket(path: &Path) -> Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(super::io_errno(e)),
        Ok(metadata) => metadata,
    };
    if !metadata.file_type().is_socket() {
        return Err(Errno::EXIST);
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(Errno(libc::EADDRINUSE)),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path).map_err(super::io_errno),
        Err(e) => Err(super::io_errno(e)),
    }
}

/// Binds a unix socket at `path` with mode 0600: bound inside a fresh 0700
/// directory beside it, chmod'ed, then renamed into place without
/// replacing anything that appeared meanwhile.
fn bind_private_unix(path: &Path) -> Result<Listener> {
    if path.as_os_str().len() > UNIX_PATH_MAX || path.file_name().is_none() {
        return Err(Errno::INVAL);
    }
    clear_stale_socket(path)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let private = PrivateDir::new(parent)?;
    let staged = private.path.join("s");
    if staged.as_os_str().len() > UNIX_PATH_MAX {
        return Err(Errno::INVAL);
    }
    let listener = UnixListener::bind(&staged).map_err(super::io_errno)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(super::io_errno)?;
    let from = CString::new(staged.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)?;
    let to = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)?;
    // SAFETY: two NUL-terminated paths; renameat2 only reads them.
    let renamed =
        unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if renamed != 0 {
        let e = Errno::last();
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    let made = identity(path).ok_or(Errno::NOENT)?;
    Ok(Listener::Unix(listener, path.to_path_buf(), made))
}

/// A directory of mode 0700 made with `mkdtemp`, removed on drop.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn new(parent: &Path) -> Result<PrivateDir> {
        let template = parent.join(".libkvm-gdb-XXXXXX");
        let mut bytes = CString::new(template.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)?.into_bytes_with_nul();
        // SAFETY: a writable NUL-terminated template ending in XXXXXX.
        if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
            return Err(Errno::last());
        }
        bytes.pop();
        Ok(PrivateDir { path: PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)) })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
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
        assert_eq!(parse_listen_address("[::1]:1234"), Ok(ListenAddress::Tcp("[::1]:1234".parse().unwrap())));
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

    #[test]
    fn the_environment_needs_the_opt_in_for_other_hosts() {
        assert_eq!(from_environment("0.0.0.0:5000", None), Err(Errno(libc::EACCES)));
        assert_eq!(from_environment("10.1.2.3:5000", Some("yes")), Err(Errno(libc::EACCES)));
        assert!(from_environment("0.0.0.0:5000", Some("1")).is_ok());
        assert!(from_environment("[::1]:5000", None).is_ok());
        assert!(from_environment("unix:/tmp/x", None).is_ok());
        assert_eq!(from_environment("nonsense", None), Err(Errno::INVAL));
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("libkvm-listen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn a_unix_socket_is_private_whatever_the_umask_and_goes_away_after() {
        let dir = scratch_dir("mode");
        let path = dir.join("gdb.sock");
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0) };
        let listener = Listener::bind(&ListenAddress::Unix(path.clone()));
        // SAFETY: as above, restoring it.
        unsafe { libc::umask(old) };
        let listener = listener.unwrap();
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no staging directory left");
        drop(listener);
        assert!(!path.exists());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = scratch_dir("existing");
        let file = dir.join("file");
        std::fs::write(&file, b"keep me").unwrap();
        assert_eq!(Listener::bind(&ListenAddress::Unix(file.clone())).err(), Some(Errno::EXIST));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

        let live = dir.join("live");
        let _other = UnixListener::bind(&live).unwrap();
        assert_eq!(Listener::bind(&ListenAddress::Unix(live.clone())).err(), Some(Errno(libc::EADDRINUSE)));

        let stale = dir.join("stale");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(Listener::bind(&ListenAddress::Unix(stale)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_over_long_unix_path_is_invalid() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        assert_eq!(Listener::bind(&ListenAddress::Unix(long)).err(), Some(Errno::INVAL));
    }

    #[test]
    fn a_socket_replaced_by_someone_else_is_left_alone() {
        let dir = scratch_dir("replaced");
        let path = dir.join("gdb.sock");
        let listener = Listener::bind(&ListenAddress::Unix(path.clone())).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"theirs").unwrap();
        drop(listener);
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
