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

/// A first read shorter than this is the whole file, for the files read every sample.
///
/// The kernel's seq_file hands a multi-record file (mounts, diskstats, tcp) over a buffer of
/// at least a page at a time, and stops a read early only when the next record does not fit
/// in what is left of that page: so a read that stops early has returned more than a page
/// less one record. Records of the files kept open are lines of a few hundred bytes
/// (`net/dev`; `interrupts`, 11 bytes a CPU), and cgroup, sysfs and most /proc files are one
/// record, returned whole. A read of less than 1 KiB therefore ended at the end of the file,
/// for any record up to 3 KiB (`interrupts` of up to 270 CPUs); the read that would return nothing is spared (one system call
/// per cgroup file per container per sample, 180 a second at 20 containers).
const WHOLE_BELOW: usize = 1024;

/// Reads `f` from `at` (`None`: its current position) to the end into `buf`, growing it if
/// needed; returns the length read (what lies beyond it in `buf` is stale). A short read is
/// not the end: the kernel hands a multi-record file (mounts, diskstats, vmstat) over about a
/// page at a time, so this reads until a read returns nothing, or until a first read
/// returns fewer than `whole_below` bytes and less than the space it was given (0: never; see
/// [`WHOLE_BELOW`] and [`KeptFile::one_record`]).
fn fill(f: &File, at: Option<u64>, buf: &mut Vec<u8>, whole_below: usize) -> io::Result<usize> {
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
        if n == 0 || (len == 0 && n < whole_below.min(buf.len())) {
            return Ok(len + n);
        }
        len += n;
    }
}

/// `f` read whole from `at`, through this thread's buffer.
fn read_text(f: &File, at: Option<u64>) -> Option<String> {
    SCRATCH.with_borrow_mut(|buf| {
        let n = fill(f, at, buf, 0).ok()?;
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
    let n = fill(&f, None, buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

/// The numbers of `keys` in a file of `key<sep>value` lines (`memory.stat`, `cpu.stat`:
/// `sep` a space; /proc/meminfo: `:`, the value then padded and followed by its unit), in one
/// pass over the text, stopping when all are found; a key's first line wins. A value is the
/// first word after the separator, whole digits. A search per key (a substring searcher built
/// each call, or a walk of `lines()` splitting each into words, and a map) was a fifth of the
/// agent's instructions at 20 containers.
pub fn numbers<const N: usize>(text: &str, sep: u8, keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    let mut seen = [false; N];
    let mut left = N;
    // Each line is compared with each key where its separator would be, then skipped by a
    // plain byte loop: `split('\n')`'s memchr costs more to set up than these 20-byte lines
    // take to scan (190 instructions a line).
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        let line_end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        let at_key = |k: &&str| {
            let k = k.as_bytes();
            line.get(k.len()) == Some(&sep) && line.starts_with(k)
        };
        if let Some(i) = keys.iter().position(at_key) {
            if !seen[i] {
                seen[i] = true;
                out[i] = first_number(&line[keys[i].len() + 1..]);
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        rest = rest.get(line_end + 1..).unwrap_or_default();
    }
    out
}

/// The number of `key` in a file of `key<sep>value` lines, looked for first on the line
/// around `hint` (a position in the text), then on its neighbours, then everywhere; `hint`
/// is left in the middle of the key's line. A file the kernel prints in one fixed order
/// (`memory.stat`: 40 lines, the key near the end on cgroup v1) has the key within a few bytes
/// of where it was at the last read; scanning up to it was 8,000 instructions per container.
pub fn number_near(text: &str, sep: u8, key: &str, hint: &mut usize) -> Option<u64> {
    let b = text.as_bytes();
    let at = (*hint).min(b.len());
    let start = b[..at]
        .iter()
        .rposition(|c| *c == b'\n')
        .map_or(0, |i| i + 1);
    let next = |from: usize| {
        b.get(from..)?
            .iter()
            .position(|c| *c == b'\n')
            .map(|i| from + i + 1)
    };
    let prev = |from: usize| {
        let end = from.checked_sub(1)?;
        Some(
            b[..end]
                .iter()
                .rposition(|c| *c == b'\n')
                .map_or(0, |i| i + 1),
        )
    };
    let is_key = |s: usize| {
        let line = b.get(s..)?;
        (line.get(key.len()) == Some(&sep) && line.starts_with(key.as_bytes())).then_some(s)
    };
    let found = is_key(start)
        .or_else(|| next(start).and_then(is_key))
        .or_else(|| prev(start).and_then(is_key))
        .or_else(|| {
            let mut s = 0;
            loop {
                if let Some(f) = is_key(s) {
                    return Some(f);
                }
                s = next(s)?;
            }
        })?;
    *hint = found + key.len() / 2;
    first_number(&b[found + key.len() + 1..])
}

/// The whole number at the start of `b` after blanks (followed by a blank or nothing).
fn first_number(b: &[u8]) -> Option<u64> {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t'))?;
    let digits = &b[start..];
    let end = digits
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || !matches!(digits.get(end), None | Some(b' ' | b'\t' | b'\r' | b'\n')) {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A kernel file read again every sample: opened once, then read from offset 0 with `pread`
/// into the caller's buffer (the kernel formats it afresh). A read that fails closes the
/// file and opens it again once. Each reader owns its files, so a read finds its descriptor
/// without a lookup (a search by path over the container's files, comparing the paths' long
/// common prefixes byte by byte, was a tenth of the static agent's instructions).
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    file: Option<File>,
    /// Whether the file stays open between reads (beyond a bound of descriptors it does not).
    keep: bool,
    /// A first read shorter than this ended at the end of the file ([`WHOLE_BELOW`], or
    /// any length for a file of one record: [`KeptFile::one_record`]).
    whole_below: usize,
}

impl KeptFile {
    /// `path`, kept open once read.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::keeping(path, true)
    }

    /// `path`, kept open between reads only if `keep`.
    pub fn keeping(path: impl Into<PathBuf>, keep: bool) -> Self {
        KeptFile {
            path: path.into(),
            file: None,
            keep,
            whole_below: WHOLE_BELOW,
        }
    }

    /// A file the kernel formats as one record (`single_open`: /proc/stat, meminfo,
    /// net/netstat, snmp, snmp6, softirqs): its seq_file buffer grows until the record fits,
    /// so any read that did not fill the space it was given returned the whole file, however
    /// long, and the read that would return nothing is spared.
    pub fn one_record(mut self) -> Self {
        self.whole_below = usize::MAX;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's whole text now, in `buf` (grown if needed, never cleared); `None` if it
    /// cannot be opened or read, or is not UTF-8.
    pub fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> Option<&'b str> {
        let n = match self
            .file
            .as_ref()
            .map(|f| fill(f, Some(0), buf, self.whole_below))
        {
            Some(Ok(n)) => n,
            _ => {
                let f = File::open(&self.path).ok();
                let n = fill(f.as_ref()?, Some(0), buf, self.whole_below);
                self.file = f.filter(|_| self.keep && n.is_ok());
                n.ok()?
            }
        };
        std::str::from_utf8(&buf[..n]).ok()
    }

    /// Whether the file is open now.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.file.is_some()
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
        let mut buf = Vec::new();
        let mut kept = KeptFile::new(&p);
        assert_eq!(kept.read(&mut buf), Some("1\n"));
        assert!(kept.is_open());
        // rewritten in place, as the kernel formats a file afresh for each read at 0; the
        // buffer's longer stale contents are not part of the text
        std::fs::write(&p, "22\n").expect("write");
        let big = "x".repeat(3 * FIRST_READ + 5);
        let q = dir.path().join("big");
        std::fs::write(&q, &big).expect("write");
        assert_eq!(KeptFile::new(&q).read(&mut buf), Some(big.as_str()));
        let mut fresh = Vec::new();
        assert_eq!(
            KeptFile::new(&q).one_record().read(&mut fresh),
            Some(big.as_str()),
            "a read that fills its space is not taken for the whole"
        );
        assert_eq!(kept.read(&mut buf), Some("22\n"));
        assert_eq!(read_small(&q).as_deref(), Some(big.as_str()));
        let mut absent = KeptFile::new(dir.path().join("absent"));
        assert!(absent.read(&mut buf).is_none());
        assert!(!absent.is_open());
        // not kept: read all the same, closed after
        let mut passing = KeptFile::keeping(&p, false);
        assert_eq!(passing.read(&mut buf), Some("22\n"));
        assert!(!passing.is_open());
        // a kept file that went away (a container's cgroup removed) reads as nothing
        std::fs::remove_file(&p).expect("rm");
        std::fs::write(dir.path().join("counter2"), "3\n").expect("write");
        assert_eq!(
            kept.read(&mut buf),
            Some("22\n"),
            "an open file still reads"
        );
    }

    #[test]
    fn numbers_of_keys_in_one_pass() {
        let stat =
            "usage_usec 2000\nuser_usec 1500\nnr_periods x\nnr_throttled 18446744073709551616\n\
                    user_usec 9\nthrottled 4 5\nnr 7";
        assert_eq!(
            numbers(
                stat,
                b' ',
                [
                    "user_usec",
                    "usage_usec",
                    "nr_periods",
                    "nr_throttled",
                    "absent",
                    "nr"
                ]
            ),
            [Some(1500), Some(2000), None, None, None, Some(7)],
            "first line wins; not a number, an overflow and an absent key are None"
        );
        assert_eq!(
            numbers(stat, b' ', ["throttled"]),
            [Some(4)],
            "the first word"
        );
        assert_eq!(numbers("a 4x\n", b' ', ["a"]), [None], "a word of digits");
        let meminfo = "MemTotal:       16318732 kB\nSwapCached:   1 kB\nCached:  \t 42 kB\n";
        assert_eq!(
            numbers(meminfo, b':', ["Cached", "MemTotal"]),
            [Some(42), Some(16318732)]
        );
        assert_eq!(numbers("", b' ', ["a"]), [None]);
    }

    #[test]
    fn a_number_near_where_it_was() {
        let v1 = |cache: &str, total: &str| {
            format!("cache {cache}\nrss 1\ninactive_file 5\ntotal_cache 7\ntotal_inactive_file {total}\nx 1\n")
        };
        let mut hint = 0;
        let t = v1("1", "42");
        assert_eq!(
            number_near(&t, b' ', "total_inactive_file", &mut hint),
            Some(42)
        );
        assert!(t[..hint].ends_with("\ntotal_ina"), "hint in the key's line");
        // the lines before it grew and shrank: still found, first where it was
        for (cache, total) in [("123456789", "43"), ("1", "44"), ("", "45")] {
            let t = v1(cache, total);
            assert_eq!(
                number_near(&t, b' ', "total_inactive_file", &mut hint),
                total.parse().ok()
            );
        }
        // a hint past the end or at a key that is a suffix of another's: the whole text
        let mut far = 10_000;
        assert_eq!(
            number_near(&v1("1", "9"), b' ', "inactive_file", &mut far),
            Some(5)
        );
        assert_eq!(number_near("a 1\n", b' ', "b", &mut far), None);
        let mut zero = 0;
        assert_eq!(
            number_near("a 1\nb 2", b' ', "b", &mut zero),
            Some(2),
            "no final newline"
        );
        assert_eq!(number_near("", b' ', "b", &mut zero), None);
    }

    #[test]
    fn proc_files_read_again_from_the_start_change_and_are_whole() {
        let mut buf = Vec::new();
        let mut uptime = KeptFile::new("/proc/uptime");
        let a = KeptFile::new("/proc/self/stat")
            .read(&mut buf)
            .expect("stat")
            .to_owned();
        let b = uptime.read(&mut buf).expect("uptime").to_owned();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b2 = uptime.read(&mut buf).expect("uptime");
        assert_ne!(b, b2, "a kept /proc file is formatted afresh");
        assert!(a.ends_with('\n') && b2.ends_with('\n'));
        // files of many records whose count does not change while the test runs (not net/dev
        // or mountinfo: an engine running containers beside the tests adds interfaces and
        // mounts meanwhile)
        for multi_record in ["/proc/crypto", "/proc/cpuinfo", "/proc/interrupts"] {
            let whole = std::fs::read_to_string(multi_record).expect("read");
            let kept = KeptFile::new(multi_record)
                .read(&mut buf)
                .expect("read")
                .to_owned();
            assert_eq!(
                kept.lines().count(),
                whole.lines().count(),
                "{multi_record}"
            );
        }
        // files of one record, read whole in one read however long (snmp6 and netstat are
        // longer than the first read's 4 KiB on some kernels)
        for one in [
            "/proc/stat",
            "/proc/meminfo",
            "/proc/softirqs",
            "/proc/net/netstat",
            "/proc/net/snmp",
            "/proc/net/snmp6",
        ] {
            let whole = std::fs::read_to_string(one).expect("read");
            let mut small = Vec::new();
            let kept = KeptFile::new(one)
                .one_record()
                .read(&mut small)
                .expect("read")
                .to_owned();
            assert_eq!(kept.lines().count(), whole.lines().count(), "{one}");
        }
        let whole = std::fs::read_to_string("/proc/crypto").expect("crypto");
        let ours = read_small(Path::new("/proc/crypto")).expect("crypto");
        assert_eq!(ours.lines().count(), whole.lines().count());
    }
}
