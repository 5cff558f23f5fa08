//! Writing a planned core: headers and notes, then the guest's memory
//! straight from its host mapping, zero pages left as holes. The file is
//! written beside its final name and renamed into place, so a failure
//! (a full disk, say) leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::elf::core_header;
use super::segments::{DataRun, Layout};
use crate::error::{Errno, Result};
use crate::memory::PAGE_SIZE;

/// Writes the core planned in `layout` with `notes` to `path`.
pub fn write_core(path: &Path, layout: &Layout, notes: &[u8]) -> Result<()> {
    let part = part_path(path)?;
    // Mode 0600: the core holds all of the guest's memory.
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&part).map_err(io_errno)?;
    let written = write_all_parts(&file, layout, notes);
    drop(file);
    match written.and_then(|()| std::fs::rename(&part, path).map_err(io_errno)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// `<dir>/.<name>.<pid>.part`, beside the final name (for the rename).
fn part_path(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or(Errno::INVAL)?;
    let mut part = std::ffi::OsString::from(".");
    part.push(name);
    part.push(format!(".{}.part", std::process::id()));
    Ok(path.with_file_name(part))
}

fn write_all_parts(file: &File, layout: &Layout, notes: &[u8]) -> Result<()> {
    let mut head = Vec::with_capacity(layout.notes_offset as usize + notes.len());
    head.extend_from_slice(&core_header(layout.headers.len() as u16));
    for header in &layout.headers {
        head.extend_from_slice(&header.to_bytes());
    }
    head.extend_from_slice(notes);
    // SAFETY: `head` is a live buffer of `head.len()` bytes.
    unsafe { pwrite_all(file, head.as_ptr(), head.len(), 0) }?;
    for run in &layout.data {
        write_nonzero_pages(file, run)?;
    }
    file.set_len(layout.size).map_err(io_errno)
}

/// Writes the pages of `run` that are not all zero, in runs.
fn write_nonzero_pages(file: &File, run: &DataRun) -> Result<()> {
    let pages = run.len / PAGE_SIZE;
    let mut page = 0;
    while page < pages {
        // SAFETY (both calls): the caller holds the memory table, so the
        // slot's host memory stays mapped; pages lie inside the run.
        while page < pages && unsafe { page_is_zero(run.host + page * PAGE_SIZE) } {
            page += 1;
        }
        let first = page;
        while page < pages && !unsafe { page_is_zero(run.host + page * PAGE_SIZE) } {
            page += 1;
        }
        if page > first {
            let len = ((page - first) * PAGE_SIZE) as usize;
            // SAFETY: as above, `len` bytes from the first page are mapped.
            unsafe {
                pwrite_all(file, (run.host + first * PAGE_SIZE) as *const u8, len, run.offset + first * PAGE_SIZE)
            }?;
        }
    }
    Ok(())
}

/// True when the guest page at host address `host` holds only zeros.
///
/// # Safety
/// `host` must be the start of a mapped, page-aligned 4 KiB page.
unsafe fn page_is_zero(host: u64) -> bool {
    let words = host as *const u64;
    // Raw reads, not a slice: the guest's memory is not ours to borrow
    // (the VMM's threads may write it), and a torn read only costs a page
    // written out that could have been a hole.
    (0..(PAGE_SIZE / 8) as usize).all(|i| unsafe { words.add(i).read_volatile() } == 0)
}

/// `pwrite`s all `len` bytes at `data` to `offset`.
///
/// # Safety
/// `data` must be valid for reading `len` bytes.
unsafe fn pwrite_all(file: &File, data: *const u8, len: usize, offset: u64) -> Result<()> {
    let mut done = 0usize;
    while done < len {
        // SAFETY: the caller's promise covers `data + done .. data + len`.
        let n = unsafe {
            libc::pwrite(file.as_raw_fd(), data.add(done).cast(), len - done, (offset + done as u64) as libc::off_t)
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(Errno(libc::EIO)),
            _ if Errno::last().0 == libc::EINTR => {}
            _ => return Err(Errno::last()),
        }
    }
    Ok(())
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}
