//! Container CPU and memory straight from the kernel's cgroup files, the figures the engine's
//! stats endpoint reads itself.
//!
//! Why not only the stats endpoint: a one-shot stats request makes the engine wait for its next
//! 1 s collection tick, and its reply is a 2-4 KiB JSON document per container. Measured here
//! with 20 containers at a 1 s interval, decoding those replies was a third of the agent's CPU
//! time, and a sample of N containers took N / concurrency seconds. Reading three small files
//! per container costs microseconds. When a container's cgroup cannot be read (another
//! layout, a rootless engine, an agent in its own cgroup namespace), the collector falls back
//! to one stats request for that container.
//!
//! Paths come from `/proc/<pid>/cgroup` of the container's main process, which works for the
//! `cgroupfs` and `systemd` drivers and for cgroup v1 and v2 alike.

use std::path::{Path, PathBuf};

use leakmon_protocol::{ContainerBlkio, ContainerCpu, ContainerNet};

use super::cadence::Cadence;
use super::kfile::{number_near, numbers, KeptFile};

/// Where one container's CPU and memory accounting lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPaths {
    /// cgroup v1: the `cpuacct`, `memory` and (if mounted) `blkio` hierarchies' paths.
    V1 {
        cpuacct: String,
        memory: String,
        blkio: Option<String>,
    },
    /// cgroup v2: the unified hierarchy's path.
    V2 { path: String },
}

/// Parses `/proc/<pid>/cgroup`. v1 controllers win when present (hybrid systems mount an
/// empty unified hierarchy beside them).
pub fn parse_proc_cgroup(text: &str) -> Option<CgroupPaths> {
    let (mut cpuacct, mut memory, mut blkio, mut unified) = (None, None, None, None);
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            unified = Some(path.to_owned());
        }
        for c in ctrls.split(',') {
            match c {
                "cpuacct" => cpuacct = Some(path.to_owned()),
                "memory" => memory = Some(path.to_owned()),
                "blkio" => blkio = Some(path.to_owned()),
                _ => {}
            }
        }
    }
    match (cpuacct, memory, unified) {
        (Some(cpuacct), Some(memory), _) => Some(CgroupPaths::V1 {
            cpuacct,
            memory,
            blkio,
        }),
        (_, _, Some(path)) => Some(CgroupPaths::V2 { path }),
        _ => None,
    }
}

/// A v2 `cpu.stat`: usage, user and system time, and CFS throttling (microseconds there).
pub fn parse_cpu_stat_v2(text: &str) -> Option<ContainerCpu> {
    let [usage, user, system, periods, throttled, throttled_us] = numbers(
        text,
        b' ',
        [
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_periods",
            "nr_throttled",
            "throttled_usec",
        ],
    );
    let ns = |us: Option<u64>| us.unwrap_or(0).saturating_mul(1000);
    Some(ContainerCpu {
        total_ns: usage?.saturating_mul(1000),
        user_ns: ns(user),
        kernel_ns: ns(system),
        periods: periods.unwrap_or(0),
        throttled_periods: throttled.unwrap_or(0),
        throttled_ns: ns(throttled_us),
    })
}

/// Clock ticks of v1 `cpuacct.stat` (USER_HZ, 100 on every Linux architecture leakmon runs
/// on), in nanoseconds, as the engine converts them.
const NS_PER_TICK: u64 = 10_000_000;

/// cgroup v1: `cpuacct.usage` (ns), `cpuacct.stat` (ticks) and the `cpu` controller's
/// `cpu.stat` (throttling, `throttled_time` in ns; absent without CFS bandwidth control).
/// v1 `cpuacct.stat`: user and system time, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acct {
    user: u64,
    system: u64,
}

pub fn parse_acct_v1(text: &str) -> Acct {
    let [user, system] = numbers(text, b' ', ["user", "system"]);
    Acct {
        user: user.unwrap_or(0),
        system: system.unwrap_or(0),
    }
}

/// v1 `cpu.stat`: CFS throttling (absent without CFS bandwidth control: all zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttle {
    periods: u64,
    throttled: u64,
    throttled_ns: u64,
}

pub fn parse_throttle_v1(text: &str) -> Throttle {
    let [periods, throttled, throttled_ns] =
        numbers(text, b' ', ["nr_periods", "nr_throttled", "throttled_time"]);
    Throttle {
        periods: periods.unwrap_or(0),
        throttled: throttled.unwrap_or(0),
        throttled_ns: throttled_ns.unwrap_or(0),
    }
}

fn cpu_v1(total_ns: u64, acct: Acct, t: Throttle) -> ContainerCpu {
    ContainerCpu {
        total_ns,
        user_ns: acct.user.saturating_mul(NS_PER_TICK),
        kernel_ns: acct.system.saturating_mul(NS_PER_TICK),
        periods: t.periods,
        throttled_periods: t.throttled,
        throttled_ns: t.throttled_ns,
    }
}

/// A v2 `io.stat` (`MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...` per device), summed over
/// devices.
pub fn parse_io_stat(text: &str) -> ContainerBlkio {
    let mut b = ContainerBlkio::default();
    for kv in text
        .lines()
        .flat_map(|l| l.split_ascii_whitespace().skip(1))
    {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        let slot = match k {
            "rbytes" => &mut b.read_bytes,
            "wbytes" => &mut b.write_bytes,
            "rios" => &mut b.reads,
            "wios" => &mut b.writes,
            _ => continue,
        };
        *slot = slot.saturating_add(v);
    }
    b
}

/// A v1 `blkio.*_recursive` file (`MAJ:MIN Read N` per device and operation, a last `Total N`
/// line), its Read and Write lines summed over devices.
pub fn parse_blkio_v1(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(_dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        match op {
            "Read" => read = read.saturating_add(v),
            "Write" => write = write.saturating_add(v),
            _ => {}
        }
    }
    (read, write)
}

/// A network namespace's `/proc/<pid>/net/dev`, summed over its interfaces but `lo` (the
/// engine's stats count the container's interfaces it made, never loopback). Read for every
/// container every sample, so it parses in place. None with no interface but `lo`
/// (`--network none`: the engine lists no network either).
pub fn net_totals(net_dev: &str) -> Option<ContainerNet> {
    let mut n = ContainerNet::default();
    let mut any = false;
    for line in net_dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        // receive: bytes packets errs drop fifo frame compressed multicast; transmit: the same
        let mut f = [0u64; 12];
        let mut k = 0;
        for v in rest.split_ascii_whitespace().take(12) {
            f[k] = v.parse().unwrap_or(0);
            k += 1;
        }
        if k < 12 {
            continue;
        }
        any = true;
        let add = |a: &mut u64, v: u64| *a = a.saturating_add(v);
        add(&mut n.rx_bytes, f[0]);
        add(&mut n.rx_packets, f[1]);
        add(&mut n.rx_errors, f[2]);
        add(&mut n.rx_dropped, f[3]);
        add(&mut n.tx_bytes, f[8]);
        add(&mut n.tx_packets, f[9]);
        add(&mut n.tx_errors, f[10]);
        add(&mut n.tx_dropped, f[11]);
    }
    any.then_some(n)
}

/// A memory limit file: a number, or `max` (v2) / a huge number (v1) for "no limit", which is
/// reported as the host's memory, as the engine does.
pub fn parse_limit(text: &str, host_total: u64) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return Some(host_total);
    }
    let n: u64 = t.parse().ok()?;
    Some(if host_total > 0 && n > host_total {
        host_total
    } else {
        n
    })
}

/// One reading of a container's accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time used since the container started, and throttling.
    pub cpu: ContainerCpu,
    /// Block I/O, when the controller's files could be read.
    pub blkio: Option<ContainerBlkio>,
    /// Memory used without the reclaimable page cache.
    pub mem_usage: u64,
    pub mem_limit: u64,
}

/// CPU percent of one core between two readings `elapsed_ns` apart.
pub fn cpu_percent(prev_ns: u64, cur_ns: u64, elapsed_ns: u64) -> Option<f64> {
    let used = cur_ns.checked_sub(prev_ns)?;
    (elapsed_ns > 0).then(|| used as f64 * 100.0 / elapsed_ns as f64)
}

/// Reads cgroup files under `<sys_root>/fs/cgroup`.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    root: PathBuf,
    proc_root: PathBuf,
    host_mem_total: u64,
}

impl CgroupReader {
    pub fn new(sys_root: &Path, proc_root: &Path) -> Self {
        let host_mem_total = std::fs::read_to_string(proc_root.join("meminfo"))
            .ok()
            .and_then(|t| super::host::parse_meminfo(&t))
            .map(|(m, _)| m.total)
            .unwrap_or(0);
        CgroupReader {
            root: sys_root.join("fs/cgroup"),
            proc_root: proc_root.to_owned(),
            host_mem_total,
        }
    }

    /// The cgroup of the process `pid`, if it can be read.
    pub fn paths(&self, pid: i64) -> Option<CgroupPaths> {
        let text = super::kfile::read_small(&self.proc_root.join(format!("{pid}/cgroup")))?;
        parse_proc_cgroup(&text)
    }

    /// The files of the cgroup at `paths` and of the network namespace of `pid`, kept open
    /// between reads if `keep`. Where v1 mounts `cpu` and `cpuacct` apart or together, the
    /// hierarchy that has the file is chosen here, once.
    pub fn files(&self, paths: &CgroupPaths, pid: i64, keep: bool) -> CgroupFiles {
        let at = |hierarchy: &str, group: &str, file: &str| {
            let mut p = self.root.clone();
            for part in [hierarchy, group.trim_matches('/'), file] {
                if !part.is_empty() {
                    p.push(part);
                }
            }
            KeptFile::keeping(p, keep)
        };
        let in_cpu = |hierarchies: [&str; 2], group: &str, file: &str| {
            let found = hierarchies
                .iter()
                .map(|h| at(h, group, file))
                .find(|f| f.path().exists());
            found.unwrap_or_else(|| at(hierarchies[0], group, file))
        };
        let cgroup = match paths {
            CgroupPaths::V1 {
                cpuacct,
                memory,
                blkio,
            } => Files::V1 {
                usage: in_cpu(["cpuacct", "cpu,cpuacct"], cpuacct, "cpuacct.usage"),
                acct_stat: in_cpu(["cpuacct", "cpu,cpuacct"], cpuacct, "cpuacct.stat"),
                cpu_stat: in_cpu(["cpu", "cpu,cpuacct"], cpuacct, "cpu.stat"),
                mem_usage: at("memory", memory, "memory.usage_in_bytes"),
                mem_stat: at("memory", memory, "memory.stat"),
                mem_limit: at("memory", memory, "memory.limit_in_bytes"),
                blkio: blkio.as_ref().map(|b| {
                    [
                        at("blkio", b, "blkio.throttle.io_service_bytes_recursive"),
                        at("blkio", b, "blkio.throttle.io_serviced_recursive"),
                    ]
                }),
            },
            CgroupPaths::V2 { path } => Files::V2 {
                cpu_stat: at("", path, "cpu.stat"),
                mem_current: at("", path, "memory.current"),
                mem_stat: at("", path, "memory.stat"),
                mem_max: at("", path, "memory.max"),
                io_stat: at("", path, "io.stat"),
            },
        };
        CgroupFiles {
            cgroup,
            net_dev: KeptFile::keeping(self.proc_root.join(format!("{pid}/net/dev")), keep),
            hint: 0,
            slow: Slow {
                every: Cadence::slow(),
                limit: None,
                throttle: None,
            },
        }
    }

    /// The network counters of the namespace the container's process lives in.
    pub fn net(files: &mut CgroupFiles, buf: &mut Vec<u8>) -> Option<ContainerNet> {
        net_totals(files.net_dev.read(buf)?)
    }

    /// The figures of a container's cgroup, its files read through `buf`.
    pub fn usage(&self, files: &mut CgroupFiles, buf: &mut Vec<u8>, now_ms: i64) -> Option<Usage> {
        let number = |f: &mut KeptFile, buf: &mut Vec<u8>| -> Option<u64> {
            f.read(buf)?.trim().parse().ok()
        };
        let slow = &mut files.slow;
        let due = slow.every.due(now_ms);
        let (cpu, blkio, usage, mem_limit, mem_stat, cache_key) = match &mut files.cgroup {
            Files::V1 {
                usage,
                acct_stat,
                cpu_stat,
                mem_usage,
                mem_stat,
                mem_limit,
                blkio,
            } => {
                let total_ns = number(usage, buf)?;
                let acct = acct_stat.read(buf).map(parse_acct_v1).unwrap_or_default();
                // Throttling counts only under a CPU quota: while there is none they stay
                // at zero and are read on the slow cadence (and after any engine event for
                // the container, such as `docker update`).
                let throttle = match slow.throttle {
                    Some(t) if !due && t == Throttle::default() => t,
                    _ => cpu_stat
                        .read(buf)
                        .map(parse_throttle_v1)
                        .unwrap_or_default(),
                };
                slow.throttle = Some(throttle);
                let cpu = cpu_v1(total_ns, acct, throttle);
                let usage = number(mem_usage, buf)?;
                let limit = match slow.limit {
                    Some(l) if !due => l,
                    _ => parse_limit(mem_limit.read(buf)?, self.host_mem_total)?,
                };
                // The engine reads the throttle files (the CFQ ones are empty on blk-mq).
                let blkio = blkio.as_mut().and_then(|[bytes, ios]| {
                    let (read_bytes, write_bytes) = parse_blkio_v1(bytes.read(buf)?);
                    let (reads, writes) = parse_blkio_v1(ios.read(buf)?);
                    Some(ContainerBlkio {
                        read_bytes,
                        write_bytes,
                        reads,
                        writes,
                    })
                });
                (cpu, blkio, usage, limit, mem_stat, "total_inactive_file")
            }
            Files::V2 {
                cpu_stat,
                mem_current,
                mem_stat,
                mem_max,
                io_stat,
            } => {
                let cpu = parse_cpu_stat_v2(cpu_stat.read(buf)?)?;
                let usage = number(mem_current, buf)?;
                let limit = match slow.limit {
                    Some(l) if !due => l,
                    _ => parse_limit(mem_max.read(buf)?, self.host_mem_total)?,
                };
                // Absent when the io controller is not enabled for the subtree.
                let blkio = io_stat.read(buf).map(parse_io_stat);
                (cpu, blkio, usage, limit, mem_stat, "inactive_file")
            }
        };
        // The memory limit changes only when the container is updated: read on the slow
        // cadence and after an engine event for the container.
        slow.limit = Some(mem_limit);
        // Usage less the inactive file cache, as the engine's stats do.
        let cache = mem_stat
            .read(buf)
            .and_then(|t| number_near(t, b' ', cache_key, &mut files.hint))
            .unwrap_or(0);
        Some(Usage {
            cpu,
            blkio,
            mem_usage: usage.saturating_sub(cache),
            mem_limit,
        })
    }
}

/// What a container's slowly changing files said when last read.
#[derive(Debug)]
struct Slow {
    every: Cadence,
    limit: Option<u64>,
    throttle: Option<Throttle>,
}

/// One container's files, found once (when it is first seen running) and read every sample.
#[derive(Debug)]
pub struct CgroupFiles {
    cgroup: Files,
    net_dev: KeptFile,
    /// Where in `memory.stat` the inactive file cache was at the last read.
    hint: usize,
    slow: Slow,
}

impl CgroupFiles {
    /// Something about the container changed (an engine event named it): its memory limit and
    /// CPU quota are read again at the next sample.
    pub fn expire(&mut self) {
        self.slow.every.expire();
    }
}

#[derive(Debug)]
enum Files {
    V1 {
        usage: KeptFile,
        acct_stat: KeptFile,
        cpu_stat: KeptFile,
        mem_usage: KeptFile,
        mem_stat: KeptFile,
        mem_limit: KeptFile,
        /// Bytes, then operations.
        blkio: Option<[KeptFile; 2]>,
    },
    V2 {
        cpu_stat: KeptFile,
        mem_current: KeptFile,
        mem_stat: KeptFile,
        mem_max: KeptFile,
        io_stat: KeptFile,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_paths_win_on_hybrid_systems() {
        let t = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n\
                 0::/docker/abc\n";
        assert_eq!(
            parse_proc_cgroup(t),
            Some(CgroupPaths::V1 {
                cpuacct: "/docker/abc".into(),
                memory: "/docker/abc".into(),
                blkio: None,
            })
        );
    }

    #[test]
    fn v2_path() {
        assert_eq!(
            parse_proc_cgroup("0::/system.slice/docker-abc.scope\n"),
            Some(CgroupPaths::V2 {
                path: "/system.slice/docker-abc.scope".into()
            })
        );
        assert_eq!(parse_proc_cgroup(""), None);
    }

    #[test]
    fn stat_files_and_limits() {
        let cpu = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 40\n\
                   nr_throttled 3\nthrottled_usec 7\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat_v2(cpu),
            Some(ContainerCpu {
                total_ns: 1_500_000,
                user_ns: 1_000_000,
                kernel_ns: 500_000,
                periods: 40,
                throttled_periods: 3,
                throttled_ns: 7000,
            })
        );
        assert_eq!(
            parse_cpu_stat_v2("usage_usec 9\n").map(|c| (c.total_ns, c.periods)),
            Some((9000, 0)),
            "no cpu controller enabled: no throttling lines"
        );
        assert_eq!(parse_cpu_stat_v2("junk"), None);
        let mem = "anon 100\nfile 200\ninactive_file 50\n";
        assert_eq!(number_near(mem, b' ', "inactive_file", &mut 0), Some(50));
        assert_eq!(number_near(mem, b' ', "inactive", &mut 0), None);
        assert_eq!(
            number_near(mem, b' ', "file", &mut 0),
            Some(200),
            "not the tail of inactive_file"
        );
        let v1 = "cache 10\ntotal_inactive_file 7\ninactive_file 3\n";
        assert_eq!(number_near(v1, b' ', "inactive_file", &mut 0), Some(3));
        assert_eq!(
            number_near(v1, b' ', "total_inactive_file", &mut 0),
            Some(7)
        );
        assert_eq!(parse_limit("max\n", 1000), Some(1000));
        assert_eq!(parse_limit("9223372036854771712\n", 1000), Some(1000));
        assert_eq!(parse_limit("67108864\n", 1 << 30), Some(67108864));
        assert_eq!(parse_limit("junk", 1), None);
    }

    #[test]
    fn percent_of_one_core() {
        // 0.5 s of CPU in 1 s of wall time.
        assert_eq!(cpu_percent(0, 500_000_000, 1_000_000_000), Some(50.0));
        assert_eq!(cpu_percent(10, 5, 1), None, "counter went back (restart)");
        assert_eq!(cpu_percent(0, 5, 0), None);
    }

    #[test]
    fn reads_a_fake_v2_tree() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let proc_ = dir.path().join("proc");
        let cg = sys.join("fs/cgroup/system.slice/docker-abc.scope");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::create_dir_all(proc_.join("42")).unwrap();
        std::fs::write(proc_.join("meminfo"), "MemTotal:       2048 kB\n").unwrap();
        std::fs::write(
            proc_.join("42/cgroup"),
            "0::/system.slice/docker-abc.scope\n",
        )
        .unwrap();
        std::fs::write(cg.join("cpu.stat"), "usage_usec 2000\n").unwrap();
        std::fs::write(cg.join("memory.current"), "1000\n").unwrap();
        std::fs::write(cg.join("memory.stat"), "inactive_file 100\n").unwrap();
        std::fs::write(cg.join("memory.max"), "max\n").unwrap();
        let r = CgroupReader::new(&sys, &proc_);
        let p = r.paths(42).unwrap();
        let mut files = r.files(&p, 42, true);
        let buf = &mut Vec::new();
        let want = Usage {
            cpu: ContainerCpu {
                total_ns: 2_000_000,
                ..ContainerCpu::default()
            },
            blkio: None,
            mem_usage: 900,
            mem_limit: 2048 * 1024,
        };
        assert_eq!(
            r.usage(&mut files, buf, 0),
            Some(want),
            "no io controller: no blkio"
        );
        std::fs::write(
            cg.join("io.stat"),
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
             253:0 rbytes=1 wbytes=1 rios=1 wios=1 dbytes=0 dios=0\n",
        )
        .unwrap();
        assert_eq!(
            r.usage(&mut files, buf, 1000).and_then(|u| u.blkio),
            Some(ContainerBlkio {
                read_bytes: 4097,
                write_bytes: 8193,
                reads: 2,
                writes: 3
            })
        );
        assert!(r.paths(43).is_none());
        assert!(
            CgroupReader::net(&mut files, buf).is_none(),
            "no net/dev: no network figures"
        );
        std::fs::create_dir_all(proc_.join("42/net")).unwrap();
        std::fs::write(proc_.join("42/net/dev"), NET_DEV).unwrap();
        assert_eq!(
            CgroupReader::net(&mut files, buf).map(|n| (n.rx_bytes, n.tx_packets)),
            Some((300, 7))
        );
    }

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    9999      99    0    0    0     0          0         0     9999      99    0    0    0     0       0          0
  eth0:     100       2    1    0    0     0          0         0      400       4    0    1    0     0       0          0
  eth1:     200       3    0    2    0     0          0         0      500       3    3    0    0     0       0          0
";

    #[test]
    fn network_totals_leave_loopback_out() {
        assert_eq!(
            net_totals(NET_DEV),
            Some(ContainerNet {
                rx_bytes: 300,
                rx_packets: 5,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 900,
                tx_packets: 7,
                tx_errors: 3,
                tx_dropped: 1,
            })
        );
        let lo_only: String = NET_DEV.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(net_totals(&lo_only), None, "--network none: no figures");
    }

    /// A v1 cgroup tree with `controllers` for container `abc`, whose process is pid 7:
    /// the temporary root (`sys/`, `proc/` in it) and the cgroup mount.
    fn v1_tree(controllers: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("sys/fs/cgroup");
        let mut proc_cgroup = String::new();
        for (n, c) in controllers.iter().enumerate() {
            std::fs::create_dir_all(cg.join(c).join("docker/abc")).unwrap();
            proc_cgroup.push_str(&format!("{}:{c}:/docker/abc\n", n + 3));
        }
        std::fs::create_dir_all(dir.path().join("proc/7")).unwrap();
        std::fs::write(dir.path().join("proc/7/cgroup"), proc_cgroup).unwrap();
        (dir, cg)
    }

    #[test]
    fn the_limit_and_an_idle_quota_are_read_on_the_slow_cadence_or_after_an_event() {
        let (dir, cg) = v1_tree(&["cpu,cpuacct", "memory"]);
        let (sys, proc_) = (dir.path().join("sys"), dir.path().join("proc"));
        let w = |f: &str, t: &str| std::fs::write(cg.join(f), t).unwrap();
        w("cpu,cpuacct/docker/abc/cpuacct.usage", "5\n");
        w("cpu,cpuacct/docker/abc/cpuacct.stat", "user 1\nsystem 1\n");
        w(
            "cpu,cpuacct/docker/abc/cpu.stat",
            "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
        );
        w("memory/docker/abc/memory.usage_in_bytes", "1000\n");
        w("memory/docker/abc/memory.stat", "total_inactive_file 0\n");
        w("memory/docker/abc/memory.limit_in_bytes", "500000\n");
        let r = CgroupReader::new(&sys, &proc_);
        let mut files = r.files(&r.paths(7).unwrap(), 7, true);
        let buf = &mut Vec::new();
        let mut at = |files: &mut CgroupFiles, ms: i64| {
            let u = r.usage(files, buf, ms).unwrap();
            (u.mem_limit, u.cpu.periods, u.cpu.total_ns)
        };
        assert_eq!(at(&mut files, 0), (500_000, 0, 5));
        // `docker update --memory 1m --cpus 0.5`
        w("memory/docker/abc/memory.limit_in_bytes", "1048576\n");
        w(
            "cpu,cpuacct/docker/abc/cpu.stat",
            "nr_periods 3\nnr_throttled 1\nthrottled_time 9\n",
        );
        w("cpu,cpuacct/docker/abc/cpuacct.usage", "6\n");
        assert_eq!(
            at(&mut files, 1000),
            (500_000, 0, 6),
            "counters every sample, not these"
        );
        assert_eq!(
            at(&mut files, 10_000),
            (1_048_576, 3, 6),
            "the slow cadence came round"
        );
        w(
            "cpu,cpuacct/docker/abc/cpu.stat",
            "nr_periods 4\nnr_throttled 1\nthrottled_time 9\n",
        );
        assert_eq!(
            at(&mut files, 11_000).1,
            4,
            "under a quota throttling is read every sample"
        );
        w("memory/docker/abc/memory.limit_in_bytes", "2097152\n");
        assert_eq!(at(&mut files, 12_000).0, 1_048_576);
        files.expire();
        assert_eq!(
            at(&mut files, 13_000).0,
            2_097_152,
            "an engine event: read now"
        );
    }

    #[test]
    fn reads_a_fake_v1_tree() {
        let (dir, cg) = v1_tree(&["cpu,cpuacct", "memory", "blkio"]);
        let (sys, proc_) = (dir.path().join("sys"), dir.path().join("proc"));
        let w = |f: &str, t: &str| std::fs::write(cg.join(f), t).unwrap();
        w("cpu,cpuacct/docker/abc/cpuacct.usage", "5000000000\n");
        w(
            "cpu,cpuacct/docker/abc/cpuacct.stat",
            "user 300\nsystem 100\n",
        );
        w(
            "cpu,cpuacct/docker/abc/cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 123456\n",
        );
        w("memory/docker/abc/memory.usage_in_bytes", "1000\n");
        w("memory/docker/abc/memory.stat", "total_inactive_file 10\n");
        w("memory/docker/abc/memory.limit_in_bytes", "500000\n");
        w(
            "blkio/docker/abc/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 4608\n8:0 Async 0\n8:0 Discard 0\n\
             8:0 Total 4608\n8:16 Read 1\n8:16 Write 0\nTotal 4609\n",
        );
        w(
            "blkio/docker/abc/blkio.throttle.io_serviced_recursive",
            "8:0 Read 3\n8:0 Write 1\n8:0 Total 4\nTotal 4\n",
        );
        let r = CgroupReader::new(&sys, &proc_);
        let p = r.paths(7).unwrap();
        assert_eq!(
            r.usage(&mut r.files(&p, 7, false), &mut Vec::new(), 0),
            Some(Usage {
                cpu: ContainerCpu {
                    total_ns: 5_000_000_000,
                    user_ns: 3_000_000_000,
                    kernel_ns: 1_000_000_000,
                    periods: 10,
                    throttled_periods: 4,
                    throttled_ns: 123456,
                },
                blkio: Some(ContainerBlkio {
                    read_bytes: 4097,
                    write_bytes: 512,
                    reads: 3,
                    writes: 1
                }),
                mem_usage: 990,
                mem_limit: 500000,
            })
        );
    }
}
