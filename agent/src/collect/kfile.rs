//! Reading the kernel's small text files (/proc, /sys, cgroupfs) in as few system calls as
//! the kernel allows.
//!
//! `std::fs::read_to_string` costs six calls per file (open, statx and lseek for a size hint
//! these files do not have, a read, a read to see the end, close): 1,300 calls a second for
//! the agent at a 1 s interval with 20 containers. Here a file costs open, its reads (one
//! and one more to see the end, for most) and close; and the host's files, the same few
//! every sample, stay open and are read again from offset 0 with `pread`, as procps does for
//! /proc/stat and /proc/meminfo (the kernel formats a proc, sysfs or cgroup file afresh for a
//! read at offset 0).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Most of these files fit in one page; larger ones (mounts, netstat, interrupts) grow the
/// buffer.
const FIRST_READ: usize = 4096;

thread_local! {
    /// The buffer every file of this thread is read into, sized once (the largest file read)
    /// and never cleared: zeroing a page for each of the 250 files a sample reads was a fifth
    /// of the agent's instructions. What a read returns is copied out at its length.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads `f` from `at` (`None`: its current position) to the end into `buf`, growing it if
/// needed; returns the length read (what lies beyond it in `buf` is stale). A short read is
/// not the end: the kernel hands a multi-record file (mounts, diskstats, vmstat) over about a
/// page at a time, so this reads until a read returns nothing.
fn fill(f: &File, at: Option<u64>, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() < FIRST_READ {
        buf.resize(FIRST_READ, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match at {
            Some(off) => f.read_at(&mut buf[len..], off + len as u64)?,
            None => (&*f).read(&mut buf[len..])?,
        };
        if n == 0 {
            return Ok(len);
        }
        len += n;
    }
}

/// `f` read whole from `at`, through this thread's buffer.
fn read_text(f: &File, at: Option<u64>) -> Option<String> {
    SCRATCH.with_borrow_mut(|buf| {
        let n = fill(f, at, buf).ok()?;
        std::str::from_utf8(&buf[..n]).ok().map(str::to_owned)
    })
}

/// A small kernel file, read whole: open, reads, close.
pub fn read_small(path: &Path) -> Option<String> {
    read_text(&File::open(path).ok()?, None)
}

/// [`read_small`] into a buffer the caller keeps (a walk over many files).
pub fn read_into<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    let f = File::open(path).ok()?;
    let n = fill(&f, None, buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

/// Files read again every sample, kept open (up to a number; the rest are opened each time).
/// A file that fails a read is closed and opened again once.
///
/// Found by a linear search over the paths' bytes: a set holds 10 to 30 of them, and hashing
/// each path with the standard hasher (SipHash) was a seventh of the agent's instructions.
#[derive(Debug)]
pub struct KeptFiles {
    open: RefCell<Vec<(PathBuf, File)>>,
    max: usize,
}

impl Default for KeptFiles {
    /// The host's: about 25 files, and a few sensors.
    fn default() -> Self {
        Self::with_max(64)
    }
}

impl KeptFiles {
    /// Keeping at most `max` files open (0: none, each read opens its file).
    pub fn with_max(max: usize) -> Self {
        KeptFiles {
            open: RefCell::new(Vec::new()),
            max,
        }
    }

    pub fn read(&self, path: &Path) -> Option<String> {
        let mut open = self.open.borrow_mut();
        let key = path.as_os_str().as_bytes();
        if let Some(i) = open
            .iter()
            .position(|(p, _)| p.as_os_str().as_bytes() == key)
        {
            if let Some(t) = read_text(&open[i].1, Some(0)) {
                return Some(t);
            }
            open.swap_remove(i);
        }
        let f = File::open(path).ok()?;
        let t = read_text(&f, Some(0))?;
        if open.len() < self.max {
            open.push((path.to_owned(), f));
        }
        Some(t)
    }

    /// How many files are kept open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_reads_what_it_holds_now_and_large_files_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("counter");
        std::fs::write(&p, "1\n").expect("write");
        let kept = KeptFiles::default();
        assert_eq!(kept.read(&p).as_deref(), Some("1\n"));
        assert_eq!(kept.len(), 1);
        // rewritten in place, as the kernel formats a file afresh for each read at 0
        std::fs::write(&p, "22\n").expect("write");
        assert_eq!(kept.read(&p).as_deref(), Some("22\n"));
        let big = "x".repeat(3 * FIRST_READ + 5);
        let q = dir.path().join("big");
        std::fs::write(&q, &big).expect("write");
        assert_eq!(kept.read(&q).as_deref(), Some(big.as_str()));
        assert_eq!(read_small(&q).as_deref(), Some(big.as_str()));
        assert!(kept.read(&dir.path().join("absent")).is_none());
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn proc_files_read_again_from_the_start_change_and_are_whole() {
        let kept = KeptFiles::default();
        let a = kept.read(Path::new("/proc/self/stat")).expect("stat");
        let b = kept.read(Path::new("/proc/uptime")).expect("uptime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b2 = kept.read(Path::new("/proc/uptime")).expect("uptime");
        assert_ne!(b, b2, "a kept /proc file is formatted afresh");
        assert!(a.ends_with('\n') && b2.ends_with('\n'));
        let whole = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let ours = read_small(Path::new("/proc/self/mountinfo")).expect("mountinfo");
        assert_eq!(ours.lines().count(), whole.lines().count());
    }
}
