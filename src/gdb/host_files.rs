//! The files the stub serves over gdb's Host I/O (`vFile`): a
//! `/proc/<pid>/maps` that lists the guest's RAM, so that gdb's `gcore`
//! (which reads a Linux target's mappings that way) knows what to save.
//! Every other path is `ENOENT`; nothing of the host's file system is
//! reachable.

use gdbstub::target::ext::host_io::{
    HostIo, HostIoClose, HostIoCloseOps, HostIoErrno, HostIoError, HostIoOpen, HostIoOpenFlags, HostIoOpenMode,
    HostIoOpenOps, HostIoPread, HostIoPreadOps, HostIoResult,
};

use super::target::VmTarget;
use crate::debug::mappings::runs_in_ram;

/// Page-table entries a mappings listing may walk.
const WALK_BUDGET: u64 = 1 << 22;
/// Files open at once.
const MAX_OPEN: usize = 4;

/// The listing of `/proc/<pid>/maps`: one anonymous, private, readable,
/// writable and executable mapping per run of guest RAM, by the addresses
/// gdb uses (guest-virtual through the current vcpu's page tables, or
/// guest-physical after `monitor phys`).
pub fn guest_maps(target: &VmTarget<'_>) -> Vec<u8> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let ctx = target.context();
    let paging = if target.physical() { None } else { target.current_paging_registers() };
    let mem = ctx.memory();
    match paging.filter(|regs| regs.mode() != crate::debug::pagewalk::PagingMode::Off) {
        Some(regs) => {
            let (runs, _) = runs_in_ram(&regs, &mem, WALK_BUDGET);
            ranges.extend(runs.iter().map(|r| (r.gva, r.gva + r.len)));
        }
        None => ranges.extend(mem.slots().iter().map(|s| (s.gpa, s.end()))),
    }
    ranges.sort_unstable();
    let mut out = Vec::with_capacity(ranges.len() * 48);
    for (start, end) in ranges {
        out.extend_from_slice(format!("{start:x}-{end:x} rwxp 00000000 00:00 0\n").as_bytes());
    }
    out
}

/// True for `/proc/<digits>/maps` and `/proc/<digits>/smaps`.
fn is_maps_path(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/proc/") else { return false };
    let Some(slash) = rest.iter().position(|&b| b == b'/') else { return false };
    let (pid, file) = rest.split_at(slash);
    !pid.is_empty() && pid.iter().all(u8::is_ascii_digit) && file == b"/maps"
}

impl HostIo for VmTarget<'_> {
    fn support_open(&mut self) -> Option<HostIoOpenOps<'_, Self>> {
        Some(self)
    }

    fn support_close(&mut self) -> Option<HostIoCloseOps<'_, Self>> {
        Some(self)
    }

    fn support_pread(&mut self) -> Option<HostIoPreadOps<'_, Self>> {
        Some(self)
    }
}

impl HostIoOpen for VmTarget<'_> {
    fn open(&mut self, filename: &[u8], flags: HostIoOpenFlags, _mode: HostIoOpenMode) -> HostIoResult<u32, Self> {
        if !is_maps_path(filename) {
            return Err(HostIoError::Errno(HostIoErrno::ENOENT));
        }
        if flags != HostIoOpenFlags::O_RDONLY {
            return Err(HostIoError::Errno(HostIoErrno::EACCES));
        }
        let contents = guest_maps(self);
        let files = self.open_files();
        let fd = match files.iter().position(Option::is_none) {
            Some(fd) => fd,
            None if files.len() < MAX_OPEN => {
                files.push(None);
                files.len() - 1
            }
            None => return Err(HostIoError::Errno(HostIoErrno::EMFILE)),
        };
        files[fd] = Some(contents);
        Ok(fd as u32)
    }
}

impl HostIoClose for VmTarget<'_> {
    fn close(&mut self, fd: u32) -> HostIoResult<(), Self> {
        match self.open_files().get_mut(fd as usize) {
            Some(file @ Some(_)) => {
                *file = None;
                Ok(())
            }
            _ => Err(HostIoError::Errno(HostIoErrno::EBADF)),
        }
    }
}

impl HostIoPread for VmTarget<'_> {
    fn pread(&mut self, fd: u32, count: usize, offset: u64, buf: &mut [u8]) -> HostIoResult<usize, Self> {
        let Some(Some(contents)) = self.open_files().get(fd as usize) else {
            return Err(HostIoError::Errno(HostIoErrno::EBADF));
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(contents.len());
        let n = count.min(buf.len()).min(contents.len() - start);
        buf[..n].copy_from_slice(&contents[start..start + n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_processs_maps_are_served() {
        assert!(is_maps_path(b"/proc/1/maps"));
        assert!(is_maps_path(b"/proc/42/maps"));
        for other in [
            &b"/proc/1/smaps"[..],
            b"/proc/self/maps",
            b"/proc//maps",
            b"/etc/passwd",
            b"/proc/1/maps/x",
            b"/proc/1/../../etc/shadow",
        ] {
            assert!(!is_maps_path(other), "{}", String::from_utf8_lossy(other));
        }
    }
}
