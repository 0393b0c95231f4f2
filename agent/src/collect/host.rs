//! Host health from /proc and /sys, read directly (no crate: the files are simple, and reading
//! them ourselves keeps the agent small and lets both roots be moved for containers).
//!
//! The parsers are pure functions over file text; [`HostCollector`] does the reading and keeps
//! the previous CPU counters to turn them into percentages. It fills the protocol's
//! [`HostReport`] directly, so a new host metric is a field there, a line here and a line in
//! docs/schema.md: the gateway writes every number of the report's parts by itself.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use leakmon_protocol::{
    BufferStats, CoreUsage, CpuUsage, Disk, DiskIo, FileHandles, Header, HostReport, Kernel, Load,
    Memory, NetCounters, NetIf, Processes, Sockets, Swap, Temperature,
};

use super::cadence::Cadence;
use super::kernel_net;
use super::kfile::{self, read_small, KeptFile};
use crate::config::HostConfig;

/// Raw jiffies of the aggregate `cpu` line of /proc/stat, in the kernel's order.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuTimes([u64; 10]);

/// Parses /proc/stat: the aggregate CPU times and the number of CPUs listed.
pub fn parse_stat(text: &str) -> Option<(CpuTimes, u32)> {
    let mut total = None;
    let mut n = 0u32;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        match it.next() {
            Some("cpu") => {
                let mut t = [0u64; 10];
                for (slot, v) in t.iter_mut().zip(it) {
                    *slot = v.parse().ok()?;
                }
                total = Some(CpuTimes(t));
            }
            Some(name) if name.starts_with("cpu") => n += 1,
            _ => {}
        }
    }
    total.map(|t| (t, n))
}

/// Parses the per-CPU lines of /proc/stat (`cpu0`, `cpu1`, ...), in the kernel's order.
pub fn parse_stat_cores(text: &str) -> Vec<(String, CpuTimes)> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_ascii_whitespace();
            let name = it.next()?;
            if name == "cpu" || !name.starts_with("cpu") {
                return None;
            }
            let mut t = [0u64; 10];
            for (slot, v) in t.iter_mut().zip(it) {
                *slot = v.parse().ok()?;
            }
            Some((name.to_owned(), CpuTimes(t)))
        })
        .collect()
}

/// Parses /proc/diskstats as Telegraf's `diskio` reads it: every device with any I/O since
/// boot (all-zero counters are left out: unused loop and ram devices), sectors of 512 bytes.
pub fn parse_diskstats(text: &str) -> Vec<DiskIo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            let d = DiskIo {
                name: f[2].to_owned(),
                reads: n(3)?,
                merged_reads: n(4)?,
                read_bytes: n(5)?.saturating_mul(512),
                read_time: n(6)?,
                writes: n(7)?,
                merged_writes: n(8)?,
                write_bytes: n(9)?.saturating_mul(512),
                write_time: n(10)?,
                iops_in_progress: n(11)?,
                io_time: n(12)?,
                weighted_io_time: n(13)?,
            };
            let idle = DiskIo {
                name: d.name.clone(),
                ..DiskIo::default()
            };
            (d != idle).then_some(d)
        })
        .collect()
}

/// Bytes swapped in and out since boot, from /proc/vmstat (`pswpin`, `pswpout` pages of 4096
/// bytes, as Telegraf counts them whatever the page size).
pub fn parse_vmstat_swap(text: &str) -> (u64, u64) {
    let [pages_in, pages_out] = kfile::numbers(text, b' ', ["pswpin", "pswpout"])
        .map(|p| p.unwrap_or(0).saturating_mul(4096));
    (pages_in, pages_out)
}

/// The kernel's counters of /proc/stat (`btime`, `ctxt`, `intr` total, `processes`); none if
/// it has none of them.
pub fn parse_stat_kernel(text: &str) -> Option<Kernel> {
    let mut k = Kernel::default();
    let mut any = false;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(key), Some(v)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()))
        else {
            continue;
        };
        let slot = match key {
            "btime" => &mut k.boot_time,
            "ctxt" => &mut k.context_switches,
            "intr" => &mut k.interrupts,
            "processes" => &mut k.processes_forked,
            _ => continue,
        };
        *slot = v;
        any = true;
    }
    any.then_some(k)
}

/// Counts one /proc/<pid>/stat into `p`: its state letter (after the `)` that ends the
/// command name, which may hold spaces and parentheses) and its thread count.
pub fn count_process(p: &mut Processes, stat: &str) {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let mut fields = rest.split_ascii_whitespace();
    let Some(state) = fields.next().and_then(|s| s.chars().next()) else {
        return;
    };
    let slot = match state {
        'R' => &mut p.running,
        'S' => &mut p.sleeping,
        'D' => &mut p.blocked,
        'Z' => &mut p.zombies,
        'T' | 't' => &mut p.stopped,
        'X' => &mut p.dead,
        'W' => &mut p.paging,
        'I' => &mut p.idle,
        _ => &mut p.unknown,
    };
    *slot += 1;
    p.total += 1;
    // num_threads is the 18th field after the state's
    if let Some(n) = fields.nth(16).and_then(|n| n.parse::<u64>().ok()) {
        p.total_threads += n;
    }
}

/// /proc/sys/fs/file-nr (`allocated unused max`) and file-max.
pub fn parse_file_handles(file_nr: &str, file_max: &str) -> Option<FileHandles> {
    Some(FileHandles {
        allocated: file_nr.split_ascii_whitespace().next()?.parse().ok()?,
        max: file_max.trim().parse().ok()?,
    })
}

/// CPU usage by state between two samples, in percent. The kernel counts guest time inside
/// user (and guest_nice inside nice), so those are subtracted to keep the sum at 100.
pub fn cpu_usage(prev: &CpuTimes, cur: &CpuTimes) -> Option<CpuUsage> {
    let d: Vec<f64> = prev
        .0
        .iter()
        .zip(cur.0.iter())
        .map(|(a, b)| b.saturating_sub(*a) as f64)
        .collect();
    let (guest, guest_nice) = (d[8], d[9]);
    let user = (d[0] - guest).max(0.0);
    let nice = (d[1] - guest_nice).max(0.0);
    let total: f64 = user + nice + d[2..8].iter().sum::<f64>() + guest + guest_nice;
    if total <= 0.0 {
        return None;
    }
    let p = |x: f64| x * 100.0 / total;
    Some(CpuUsage {
        user: p(user),
        nice: p(nice),
        system: p(d[2]),
        idle: p(d[3]),
        iowait: p(d[4]),
        irq: p(d[5]),
        softirq: p(d[6]),
        steal: p(d[7]),
        guest: p(guest),
        guest_nice: p(guest_nice),
    })
}

pub fn parse_loadavg(text: &str) -> Option<Load> {
    let mut it = text.split_ascii_whitespace().map(|s| s.parse::<f64>());
    Some(Load {
        load1: it.next()?.ok()?,
        load5: it.next()?.ok()?,
        load15: it.next()?.ok()?,
    })
}

pub fn parse_uptime(text: &str) -> Option<u64> {
    text.split_ascii_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .map(|s| s as u64)
}

/// Parses /proc/meminfo into memory and swap, in bytes.
pub fn parse_meminfo(text: &str) -> Option<(Memory, Swap)> {
    let bytes = kfile::numbers(
        text,
        b':',
        [
            "MemTotal",
            "MemFree",
            "Buffers",
            "Cached",
            "SReclaimable",
            "MemAvailable",
            "SwapTotal",
            "SwapFree",
        ],
    )
    .map(|kb| kb.map(|kb| kb.saturating_mul(1024)));
    let [total, free, buffers, cached, reclaimable, available, swap_total, swap_free] = bytes;
    let total = total?;
    let [free, buffers] = [free, buffers].map(|v| v.unwrap_or(0));
    let cached = cached.unwrap_or(0) + reclaimable.unwrap_or(0);
    // Kernels before 3.14 have no MemAvailable; estimate it as free + buffers + cache.
    let available = available.unwrap_or(free + buffers + cached);
    let used = total.saturating_sub(free + buffers + cached);
    let pct = |x: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            x as f64 * 100.0 / of as f64
        }
    };
    let [swap_total, swap_free] = [swap_total, swap_free].map(|v| v.unwrap_or(0));
    let swap_used = swap_total.saturating_sub(swap_free);
    Some((
        Memory {
            total,
            available,
            used,
            free,
            buffers,
            cached,
            used_percent: pct(used, total),
            available_percent: pct(available, total),
        },
        Swap {
            total: swap_total,
            used: swap_used,
            free: swap_free,
            used_percent: pct(swap_used, swap_total),
            // from /proc/vmstat ([`parse_vmstat_swap`])
            swapped_in: 0,
            swapped_out: 0,
        },
    ))
}

/// Parses /proc/net/dev, skipping ignored interfaces.
pub fn parse_net_dev(text: &str, ignore: &[String]) -> Vec<NetIf> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if matches_any(name, ignore) {
            continue;
        }
        let f: Vec<u64> = rest
            .split_ascii_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 16 {
            continue;
        }
        out.push(NetIf {
            interface: name.to_owned(),
            bytes_recv: f[0],
            packets_recv: f[1],
            err_in: f[2],
            drop_in: f[3],
            bytes_sent: f[8],
            packets_sent: f[9],
            err_out: f[10],
            drop_out: f[11],
        });
    }
    out
}

/// `pattern` matches exactly, or as a prefix when it ends in `*`.
pub fn matches_any(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// One line of /proc/<pid>/mounts.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub device: String,
    pub path: String,
    pub fstype: String,
}

/// Filesystem types the kernel lists as `nodev` in /proc/filesystems are virtual (proc, tmpfs,
/// overlay, cgroup...), except these, which hold real data without a block device.
const NODEV_REAL: &[&str] = &[
    "zfs", "nfs", "nfs4", "cifs", "smb3", "9p", "virtiofs", "ceph",
];

/// Virtual filesystems from /proc/filesystems.
pub fn parse_nodev(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("nodev"))
        .map(|fs| fs.trim().to_owned())
        .filter(|fs| !NODEV_REAL.contains(&fs.as_str()))
        .collect()
}

/// The real filesystems of a mount table: no virtual ones, no ignored paths, each device
/// once (bind mounts of the same device show at their shortest path).
pub fn real_mounts(mounts_text: &str, nodev: &HashSet<String>, ignore: &[String]) -> Vec<Mount> {
    let mut by_device: Vec<Mount> = Vec::new();
    for line in mounts_text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(device), Some(path), Some(fstype)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let path = unescape_mount(path);
        if nodev.contains(fstype)
            || matches!(fstype, "squashfs" | "iso9660" | "autofs")
            || matches_any(&path, ignore)
        {
            continue;
        }
        let m = Mount {
            device: unescape_mount(device),
            path,
            fstype: fstype.to_owned(),
        };
        match by_device.iter_mut().find(|x| x.device == m.device) {
            Some(x) if m.path.len() < x.path.len() => *x = m,
            Some(_) => {}
            None => by_device.push(m),
        }
    }
    by_device
}

/// Mount tables escape space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Usage of one filesystem from statvfs numbers.
pub fn disk_usage(m: &Mount, s: &FsStat) -> Disk {
    let total = s.blocks * s.frsize;
    let free_all = s.bfree * s.frsize;
    let avail = s.bavail * s.frsize;
    let used = total.saturating_sub(free_all);
    let denom = used + avail;
    Disk {
        path: m.path.clone(),
        device: m.device.clone(),
        fstype: m.fstype.clone(),
        total,
        used,
        free: avail,
        used_percent: if denom == 0 {
            0.0
        } else {
            used as f64 * 100.0 / denom as f64
        },
        inodes_total: s.files,
        inodes_used: s.files.saturating_sub(s.ffree),
        inodes_free: s.ffree,
    }
}

/// The statvfs numbers we use.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStat {
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

fn statvfs(path: &Path) -> Option<FsStat> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `s` points to writable memory of the
    // right type; statvfs only writes to it, and we read it only when it returned 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field widths differ between targets
    Some(FsStat {
        frsize: if s.f_frsize > 0 {
            s.f_frsize as u64
        } else {
            s.f_bsize as u64
        },
        blocks: s.f_blocks as u64,
        bfree: s.f_bfree as u64,
        bavail: s.f_bavail as u64,
        files: s.f_files as u64,
        ffree: s.f_ffree as u64,
    })
}

/// Reads host health; keeps the previous CPU counters between samples.
pub struct HostCollector {
    cfg: HostConfig,
    /// `self` natively; `1` when /proc is the host's mounted elsewhere, so that per-namespace
    /// files (mounts, net/dev) are the host's, not the container's.
    pid_dir: &'static str,
    prev_cpu: Option<CpuTimes>,
    prev_cores: HashMap<String, CpuTimes>,
    nodev: HashSet<String>,
    /// `host.nstat`, compiled.
    nstat: kernel_net::CounterFilter,
    /// What it keeps of netstat, snmp and snmp6, as last read.
    nstat_layouts: [kernel_net::Layout; 3],
    /// When the slowly changing parts below are read again.
    slow: Cadence,
    processes: Option<Processes>,
    mounts: Vec<Mount>,
    sensors: Vec<Sensor>,
    /// The files read every sample, kept open, and what they are read into.
    files: HostFiles,
    sensor_files: Vec<KeptFile>,
    buf: Vec<u8>,
}

/// The host's files read every sample, opened once.
struct HostFiles {
    stat: KeptFile,
    meminfo: KeptFile,
    vmstat: KeptFile,
    hostname: KeptFile,
    uptime: KeptFile,
    loadavg: KeptFile,
    diskstats: KeptFile,
    entropy: KeptFile,
    file_nr: KeptFile,
    file_max: KeptFile,
    conntrack_count: KeptFile,
    conntrack_max: KeptFile,
    interrupts: KeptFile,
    softirqs: KeptFile,
    /// The network namespace's: its own natively, the host's (pid 1's) when /proc is the
    /// host's mounted elsewhere.
    net_dev: KeptFile,
    netstat: KeptFile,
    snmp: KeptFile,
    snmp6: KeptFile,
    /// tcp, tcp6, udp, udp6.
    sockets: [KeptFile; 4],
}

impl HostFiles {
    fn new(proc_root: &Path, pid_dir: &str) -> Self {
        let proc = |rel: &str| KeptFile::new(proc_root.join(rel));
        let net = |name: &str| proc(&format!("{pid_dir}/net/{name}"));
        HostFiles {
            stat: proc("stat").one_record(),
            meminfo: proc("meminfo").one_record(),
            vmstat: proc("vmstat"),
            hostname: proc("sys/kernel/hostname"),
            uptime: proc("uptime"),
            loadavg: proc("loadavg"),
            diskstats: proc("diskstats"),
            entropy: proc("sys/kernel/random/entropy_avail"),
            file_nr: proc("sys/fs/file-nr"),
            file_max: proc("sys/fs/file-max"),
            conntrack_count: proc("sys/net/netfilter/nf_conntrack_count"),
            conntrack_max: proc("sys/net/netfilter/nf_conntrack_max"),
            interrupts: proc("interrupts"),
            softirqs: proc("softirqs").one_record(),
            net_dev: net("dev"),
            netstat: net("netstat").one_record(),
            snmp: net("snmp").one_record(),
            snmp6: net("snmp6").one_record(),
            sockets: [net("tcp"), net("tcp6"), net("udp"), net("udp6")],
        }
    }
}

impl HostCollector {
    pub fn new(cfg: HostConfig) -> Self {
        let pid_dir = if cfg.proc_root == Path::new("/proc") {
            "self"
        } else {
            "1"
        };
        let nodev = std::fs::read_to_string(cfg.proc_root.join("filesystems"))
            .map(|t| parse_nodev(&t))
            .unwrap_or_default();
        HostCollector {
            nstat: kernel_net::CounterFilter::new(&cfg.nstat),
            nstat_layouts: Default::default(),
            files: HostFiles::new(&cfg.proc_root, pid_dir),
            cfg,
            pid_dir,
            prev_cpu: None,
            prev_cores: HashMap::new(),
            nodev,
            slow: Cadence::slow(),
            processes: None,
            mounts: Vec::new(),
            sensors: Vec::new(),
            sensor_files: Vec::new(),
            buf: Vec::new(),
        }
    }

    fn proc(&self, rel: &str) -> PathBuf {
        self.cfg.proc_root.join(rel)
    }

    /// Takes one sample at `ts` (ms since the epoch), straight into the protocol's report.
    /// The header's node, run and seq and the buffer state are left for the publisher's
    /// encoder, the one place that knows them. Files that cannot be read leave their part
    /// empty rather than failing the sample: a missing sensor or an unreadable mount is not an
    /// outage.
    pub fn sample(&mut self, ts: i64) -> HostReport {
        if self.slow.due(ts) {
            self.processes = self.processes();
            self.mounts = self.mounts();
            let sensors = find_sensors(&self.cfg.sys_root);
            self.sensor_files = sensor_files(std::mem::take(&mut self.sensor_files), &sensors);
            self.sensors = sensors;
        }
        let disks = self.disks();
        let (f, buf) = (&mut self.files, &mut self.buf);
        let (mut cpu, mut n_cpus, mut cores, mut kernel) = (None, 0, Vec::new(), None);
        if let Some(t) = f.stat.read(buf) {
            if let Some((cur, n)) = parse_stat(t) {
                cpu = self.prev_cpu.and_then(|p| cpu_usage(&p, &cur));
                self.prev_cpu = Some(cur);
                n_cpus = n;
            }
            let cur = parse_stat_cores(t);
            cores = cur
                .iter()
                .filter_map(|(name, now)| {
                    let prev = self.prev_cores.get(name)?;
                    Some(CoreUsage {
                        cpu: name.clone(),
                        usage: cpu_usage(prev, now)?,
                    })
                })
                .collect();
            self.prev_cores = cur.into_iter().collect();
            kernel = parse_stat_kernel(t);
        }
        if let Some(k) = kernel.as_mut() {
            k.entropy_avail = f
                .entropy
                .read(buf)
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
        }
        let (mem, mut swap) = f
            .meminfo
            .read(buf)
            .and_then(parse_meminfo)
            .unwrap_or_default();
        if let Some(t) = f.vmstat.read(buf) {
            (swap.swapped_in, swap.swapped_out) = parse_vmstat_swap(t);
        }
        let file_nr = f.file_nr.read(buf).unwrap_or_default().to_owned();
        let files = parse_file_handles(&file_nr, f.file_max.read(buf).unwrap_or_default());
        let conntrack_count = f.conntrack_count.read(buf).unwrap_or_default().to_owned();
        let conntrack = kernel_net::parse_conntrack(
            &conntrack_count,
            f.conntrack_max.read(buf).unwrap_or_default(),
        );
        let irqs = |file: &mut KeptFile, buf: &mut Vec<u8>| {
            if !self.cfg.interrupts {
                return Vec::new();
            }
            file.read(buf)
                .map(kernel_net::parse_interrupts)
                .unwrap_or_default()
        };
        HostReport {
            header: Header::sampled_at(ts),
            hostname: f
                .hostname
                .read(buf)
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            uptime_s: f.uptime.read(buf).and_then(parse_uptime).unwrap_or(0),
            n_cpus,
            cpu,
            cores,
            load: f
                .loadavg
                .read(buf)
                .and_then(parse_loadavg)
                .unwrap_or_default(),
            mem,
            swap,
            disks,
            net: f
                .net_dev
                .read(buf)
                .map(|t| parse_net_dev(t, &self.cfg.net_ignore))
                .unwrap_or_default(),
            temps: read_sensors(&mut self.sensor_files, &self.sensors, buf),
            diskio: f
                .diskstats
                .read(buf)
                .map(parse_diskstats)
                .unwrap_or_default(),
            kernel,
            processes: self.processes,
            files,
            nstat: net_counters(f, buf, &self.nstat, &mut self.nstat_layouts),
            sockets: if self.cfg.sockets {
                sockets(&mut f.sockets, buf)
            } else {
                None
            },
            conntrack,
            interrupts: irqs(&mut f.interrupts, buf),
            soft_interrupts: irqs(&mut f.softirqs, buf),
            buffer: BufferStats::default(),
            cut: 0,
        }
    }

    /// Every process of the (host's, when `proc_root` is) pid namespace by state. A process
    /// gone between the listing and the read is skipped.
    fn processes(&self) -> Option<Processes> {
        let dir = std::fs::read_dir(&self.cfg.proc_root).ok()?;
        let mut p = Processes::default();
        let mut buf = Vec::with_capacity(1024);
        let mut path = self.cfg.proc_root.clone();
        for entry in dir.flatten() {
            let name = entry.file_name();
            if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            path.push(&name);
            path.push("stat");
            if let Some(stat) = kfile::read_into(&path, &mut buf) {
                count_process(&mut p, stat);
            }
            path.pop();
            path.pop();
        }
        (p.total > 0).then_some(p)
    }

    /// The real filesystems of the mount table.
    fn mounts(&self) -> Vec<Mount> {
        read_small(&self.proc(&format!("{}/mounts", self.pid_dir)))
            .map(|text| real_mounts(&text, &self.nodev, &self.cfg.disk_ignore))
            .unwrap_or_default()
    }

    /// Usage of each filesystem found by [`Self::mounts`], read now.
    fn disks(&self) -> Vec<Disk> {
        self.mounts
            .iter()
            .filter_map(|m| {
                let at = self
                    .cfg
                    .rootfs
                    .join(m.path.strip_prefix('/').unwrap_or(&m.path));
                let s = statvfs(&at)?;
                (s.blocks > 0).then(|| disk_usage(m, &s))
            })
            .collect()
    }
}

/// The network namespace's counters that `keep` keeps; none if it keeps none or no file
/// could be read.
fn net_counters(
    f: &mut HostFiles,
    buf: &mut Vec<u8>,
    keep: &kernel_net::CounterFilter,
    [netstat, snmp, snmp6]: &mut [kernel_net::Layout; 3],
) -> Option<NetCounters> {
    if keep.is_empty() {
        return None;
    }
    let c = NetCounters {
        netstat: f
            .netstat
            .read(buf)
            .map(|t| kernel_net::parse_pairs_in(t, keep, netstat))
            .unwrap_or_default(),
        snmp: f
            .snmp
            .read(buf)
            .map(|t| kernel_net::parse_pairs_in(t, keep, snmp))
            .unwrap_or_default(),
        snmp6: f
            .snmp6
            .read(buf)
            .map(|t| kernel_net::parse_snmp6_in(t, keep, snmp6))
            .unwrap_or_default(),
    };
    (!c.is_empty()).then_some(c)
}

/// TCP sockets by state and UDP sockets (`tables`: tcp, tcp6, udp, udp6); none if no table
/// could be read.
fn sockets(tables: &mut [KeptFile; 4], buf: &mut Vec<u8>) -> Option<Sockets> {
    let mut s = Sockets::default();
    let mut read = false;
    for (i, file) in tables.iter_mut().enumerate() {
        if let Some(t) = file.read(buf) {
            if i < 2 {
                kernel_net::count_tcp(&mut s, t);
            } else {
                kernel_net::count_udp(&mut s, t);
            }
            read = true;
        }
    }
    read.then_some(s)
}

/// The files of `sensors`, those already open in `old` kept open (sensors are found again on
/// the slow cadence; mostly the same ones).
fn sensor_files(mut old: Vec<KeptFile>, sensors: &[Sensor]) -> Vec<KeptFile> {
    sensors
        .iter()
        .map(|s| match old.iter().position(|f| f.path() == s.input) {
            Some(i) => old.swap_remove(i),
            None => KeptFile::new(&s.input),
        })
        .collect()
}

/// A temperature sensor found under /sys: its name as reported and the file read each sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub name: String,
    pub input: PathBuf,
}

/// Temperatures from hwmon (`tempN_input`, millidegrees) and thermal zones (`temp`).
/// Absent directories or unreadable sensors yield nothing, not an error.
#[cfg(test)]
pub fn read_temperatures(sys_root: &Path) -> Vec<Temperature> {
    let sensors = find_sensors(sys_root);
    read_sensors(
        &mut sensor_files(Vec::new(), &sensors),
        &sensors,
        &mut Vec::new(),
    )
}

/// The sensors under `sys_root` that answer now; the walk of /sys that
/// [`read_sensors`] then needs not repeat.
pub fn find_sensors(sys_root: &Path) -> Vec<Sensor> {
    let mut out = Vec::new();
    for dir in sorted_entries(&sys_root.join("class/hwmon")) {
        let name = read_trim(&dir.join("name")).unwrap_or_else(|| file_name(&dir));
        for f in sorted_entries(&dir) {
            let fname = file_name(&f);
            let Some(idx) = fname
                .strip_prefix("temp")
                .and_then(|r| r.strip_suffix("_input"))
            else {
                continue;
            };
            if read_milli(&f).is_none() {
                continue;
            }
            let label = read_trim(&dir.join(format!("temp{idx}_label")))
                .unwrap_or_else(|| format!("temp{idx}"));
            out.push(Sensor {
                name: sensor_name(&format!("{name}_{label}")),
                input: f,
            });
        }
    }
    for dir in sorted_entries(&sys_root.join("class/thermal")) {
        if !file_name(&dir).starts_with("thermal_zone") {
            continue;
        }
        let input = dir.join("temp");
        if read_milli(&input).is_none() {
            continue;
        }
        let kind = read_trim(&dir.join("type")).unwrap_or_else(|| file_name(&dir));
        out.push(Sensor {
            name: sensor_name(&kind),
            input,
        });
    }
    out
}

/// The temperature of each sensor that answers (`files`: theirs, in the same order).
pub fn read_sensors(
    files: &mut [KeptFile],
    sensors: &[Sensor],
    buf: &mut Vec<u8>,
) -> Vec<Temperature> {
    sensors
        .iter()
        .zip(files.iter_mut())
        .filter_map(|(s, f)| {
            let milli = milli(f.read(buf)?)?;
            Some(Temperature {
                sensor: s.name.clone(),
                temp: milli as f64 / 1000.0,
            })
        })
        .collect()
}

/// A sensor file's reading: millidegrees.
fn milli(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

fn read_milli(p: &Path) -> Option<i64> {
    milli(&read_small(p)?)
}

/// Lower case, spaces to underscores: `coretemp_Package id 0` -> `coretemp_package_id_0`.
fn sensor_name(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_processes_and_file_handles() {
        let stat = "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n\
                    intr 8140 9 0 0\nctxt 25190\nbtime 1796270000\nprocesses 4171\n\
                    procs_running 2\nprocs_blocked 0\n";
        assert_eq!(
            parse_stat_kernel(stat),
            Some(Kernel {
                boot_time: 1796270000,
                context_switches: 25190,
                interrupts: 8140,
                processes_forked: 4171,
                entropy_avail: 0,
            })
        );
        assert_eq!(parse_stat_kernel("cpu 1 2 3\n"), None);

        let mut p = Processes::default();
        // a command name with spaces and a parenthesis; num_threads is 4
        count_process(
            &mut p,
            "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 4 0 99 1000 \
             200 18446744073709551615\n",
        );
        count_process(
            &mut p,
            "7 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0",
        );
        count_process(
            &mut p,
            "9 (zombie) Z 1 9 9 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0",
        );
        count_process(
            &mut p,
            "10 (t) t 1 9 9 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0",
        );
        count_process(
            &mut p,
            "11 (new) P 1 9 9 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0",
        );
        count_process(&mut p, "garbage without a paren");
        assert_eq!(
            p,
            Processes {
                sleeping: 1,
                idle: 1,
                zombies: 1,
                stopped: 1,
                unknown: 1,
                total: 5,
                total_threads: 8,
                ..Processes::default()
            }
        );

        assert_eq!(
            parse_file_handles("1632\t0\t9223372036854775807\n", "9223372036854775807\n"),
            Some(FileHandles {
                allocated: 1632,
                max: 9223372036854775807
            })
        );
        assert_eq!(parse_file_handles("", "1"), None);
    }

    const STAT: &str = "cpu  100 10 50 800 20 5 5 10 0 0\n\
cpu0 50 5 25 400 10 2 3 5 0 0\n\
cpu1 50 5 25 400 10 3 2 5 0 0\n\
intr 12345\nctxt 999\n";

    #[test]
    fn stat_and_cpu_usage() {
        let (a, n) = parse_stat(STAT).unwrap();
        assert_eq!(n, 2);
        let b = CpuTimes([150, 10, 75, 1000, 20, 5, 5, 10, 0, 0]);
        let u = cpu_usage(&a, &b).unwrap();
        // deltas: user 50, system 25, idle 200 of 275
        assert!((u.user - 50.0 * 100.0 / 275.0).abs() < 1e-9);
        assert!((u.idle - 200.0 * 100.0 / 275.0).abs() < 1e-9);
        let sum = u.user + u.nice + u.system + u.idle + u.iowait + u.irq + u.softirq + u.steal;
        assert!((sum + u.guest + u.guest_nice - 100.0).abs() < 1e-9);
        assert!(cpu_usage(&a, &a).is_none(), "no time passed");
    }

    #[test]
    fn per_cpu_lines_as_telegraf_percpu() {
        let cores = parse_stat_cores(STAT);
        assert_eq!(
            cores.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["cpu0", "cpu1"]
        );
        assert_eq!(cores[0].1, CpuTimes([50, 5, 25, 400, 10, 2, 3, 5, 0, 0]));
        assert!(parse_stat_cores(
            "cpu  1 2 3 4
intr 5
"
        )
        .is_empty());
    }

    #[test]
    fn diskstats_as_telegraf_diskio() {
        // kernel 5.5+ lines (discard and flush columns at the end), an idle loop device, a
        // short malformed line
        let text = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
                    254       0 vda 12345 678 2468024 9876 5432 321 864200 4321 2 11000 14200 0 0 0 0 10 20
                    254       1 vda1 100 0 800 10 0 0 0 0 0 12 10
                    8 0 sdz 1 2
";
        let d = parse_diskstats(text);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            d[0],
            DiskIo {
                name: "vda".into(),
                reads: 12345,
                merged_reads: 678,
                read_bytes: 2468024 * 512,
                read_time: 9876,
                writes: 5432,
                merged_writes: 321,
                write_bytes: 864200 * 512,
                write_time: 4321,
                iops_in_progress: 2,
                io_time: 11000,
                weighted_io_time: 14200,
            }
        );
        assert_eq!(d[1].name, "vda1");
    }

    #[test]
    fn swap_in_and_out_in_bytes_of_4096_byte_pages() {
        let t = "nr_free_pages 1000
pswpin 3
pswpout 10
pgfault 99
";
        assert_eq!(parse_vmstat_swap(t), (3 * 4096, 10 * 4096));
        assert_eq!(
            parse_vmstat_swap(
                "garbage
"
            ),
            (0, 0)
        );
    }

    #[test]
    fn guest_time_is_not_counted_twice() {
        let a = CpuTimes([0; 10]);
        let b = CpuTimes([100, 0, 0, 100, 0, 0, 0, 0, 40, 0]);
        let u = cpu_usage(&a, &b).unwrap();
        assert!((u.user - 30.0).abs() < 1e-9);
        assert!((u.guest - 20.0).abs() < 1e-9);
    }

    #[test]
    fn counters_going_backwards_do_not_underflow() {
        let a = CpuTimes([100; 10]);
        let b = CpuTimes([50; 10]);
        assert!(cpu_usage(&a, &b).is_none());
    }

    #[test]
    fn load_uptime() {
        let l = parse_loadavg("0.52 0.58 0.59 2/1234 5678\n").unwrap();
        assert_eq!((l.load1, l.load5, l.load15), (0.52, 0.58, 0.59));
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Some(350735));
        assert!(parse_loadavg("").is_none());
    }

    #[test]
    fn meminfo() {
        let t = "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     600 kB\n\
Buffers:           50 kB\nCached:           300 kB\nSReclaimable:      50 kB\n\
SwapTotal:        200 kB\nSwapFree:         150 kB\n";
        let (m, s) = parse_meminfo(t).unwrap();
        assert_eq!(m.total, 1000 * 1024);
        assert_eq!(m.cached, 350 * 1024);
        assert_eq!(m.used, 500 * 1024);
        assert!((m.used_percent - 50.0).abs() < 1e-9);
        assert!((m.available_percent - 60.0).abs() < 1e-9);
        assert_eq!(s.used, 50 * 1024);
        assert!((s.used_percent - 25.0).abs() < 1e-9);
        assert!(parse_meminfo("MemFree: 1 kB\n").is_none());
    }

    #[test]
    fn net_dev() {
        let t = "Inter-|   Receive                                                |  Transmit\n\
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n\
  eth0: 5000 50 1 2 0 0 0 0 7000 70 3 4 0 0 0 0\n\
vethab12: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        let v = parse_net_dev(t, &["lo".into(), "veth*".into()]);
        assert_eq!(v.len(), 1);
        let e = &v[0];
        assert_eq!(e.interface, "eth0");
        assert_eq!(
            (e.bytes_recv, e.packets_recv, e.err_in, e.drop_in),
            (5000, 50, 1, 2)
        );
        assert_eq!(
            (e.bytes_sent, e.packets_sent, e.err_out, e.drop_out),
            (7000, 70, 3, 4)
        );
    }

    #[test]
    fn mounts_keep_only_real_filesystems() {
        let fs = "nodev\tsysfs\nnodev\tproc\nnodev\ttmpfs\nnodev\toverlay\n\text4\nnodev\tzfs\n";
        let nodev = parse_nodev(fs);
        assert!(nodev.contains("tmpfs") && !nodev.contains("zfs") && !nodev.contains("ext4"));
        let mounts = "sysfs /sys sysfs rw 0 0\nproc /proc proc rw 0 0\n\
/dev/sda1 / ext4 rw 0 0\n/dev/sda1 /var/lib/docker/x ext4 rw 0 0\n\
/dev/sda1 /srv/bind ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n\
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0\n\
/dev/sdb1 /mnt/my\\040data ext4 rw 0 0\ntank/data /tank zfs rw 0 0\n\
/dev/loop0 /snap/core squashfs ro 0 0\n";
        let m = real_mounts(mounts, &nodev, &["/var/lib/docker/*".into()]);
        let paths: Vec<&str> = m.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, vec!["/", "/mnt/my data", "/tank"]);
    }

    #[test]
    fn disk_usage_like_df() {
        let m = Mount {
            device: "/dev/sda1".into(),
            path: "/".into(),
            fstype: "ext4".into(),
        };
        let d = disk_usage(
            &m,
            &FsStat {
                frsize: 4096,
                blocks: 1000,
                bfree: 300,
                bavail: 250,
                files: 100,
                ffree: 40,
            },
        );
        assert_eq!(d.total, 4096 * 1000);
        assert_eq!(d.used, 4096 * 700);
        assert_eq!(d.free, 4096 * 250);
        assert!((d.used_percent - 700.0 * 100.0 / 950.0).abs() < 1e-9);
        assert_eq!(d.inodes_used, 60);
    }

    #[test]
    fn temperatures_from_a_fake_sys() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        let hw = sys.join("class/hwmon/hwmon0");
        std::fs::create_dir_all(&hw).unwrap();
        std::fs::write(hw.join("name"), "coretemp\n").unwrap();
        std::fs::write(hw.join("temp1_input"), "45500\n").unwrap();
        std::fs::write(hw.join("temp1_label"), "Package id 0\n").unwrap();
        std::fs::write(hw.join("temp2_input"), "41000\n").unwrap();
        let tz = sys.join("class/thermal/thermal_zone0");
        std::fs::create_dir_all(&tz).unwrap();
        std::fs::write(tz.join("type"), "cpu-thermal\n").unwrap();
        std::fs::write(tz.join("temp"), "48312\n").unwrap();
        std::fs::create_dir_all(sys.join("class/thermal/cooling_device0")).unwrap();
        let t = read_temperatures(sys);
        let got: Vec<(&str, f64)> = t.iter().map(|t| (t.sensor.as_str(), t.temp)).collect();
        assert_eq!(
            got,
            vec![
                ("coretemp_package_id_0", 45.5),
                ("coretemp_temp2", 41.0),
                ("cpu-thermal", 48.312)
            ]
        );
        assert!(read_temperatures(&sys.join("nonexistent")).is_empty());
    }

    #[test]
    fn real_proc_sample_is_plausible() {
        let mut c = HostCollector::new(HostConfig::default());
        let a = c.sample(1);
        assert!(a.n_cpus >= 1);
        assert!(a.mem.total > 0);
        assert!(a.uptime_s > 0);
        assert!(a.cpu.is_none(), "first sample has no usage");
        assert!(a.disks.iter().any(|d| d.total > 0), "{:?}", a.disks);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = c.sample(2);
        if let Some(u) = b.cpu {
            assert!(u.idle >= 0.0 && u.idle <= 100.0);
        }
        assert!(a.cores.is_empty(), "first sample has no usage");
        assert!(b.cores.len() <= b.n_cpus as usize);
        assert!(
            b.diskio.iter().any(|d| d.reads > 0 || d.writes > 0),
            "{:?}",
            b.diskio
        );
    }
}
