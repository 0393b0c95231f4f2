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

/// Where one container's CPU and memory accounting lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPaths {
    /// cgroup v1: the `cpuacct` and `memory` hierarchies' paths.
    V1 { cpuacct: String, memory: String },
    /// cgroup v2: the unified hierarchy's path.
    V2 { path: String },
}

/// Parses `/proc/<pid>/cgroup`. v1 controllers win when present (hybrid systems mount an
/// empty unified hierarchy beside them).
pub fn parse_proc_cgroup(text: &str) -> Option<CgroupPaths> {
    let (mut cpuacct, mut memory, mut unified) = (None, None, None);
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
                _ => {}
            }
        }
    }
    match (cpuacct, memory, unified) {
        (Some(cpuacct), Some(memory), _) => Some(CgroupPaths::V1 { cpuacct, memory }),
        (_, _, Some(path)) => Some(CgroupPaths::V2 { path }),
        _ => None,
    }
}

/// `usage_usec` of a v2 `cpu.stat`, in nanoseconds.
pub fn parse_cpu_stat_usec(text: &str) -> Option<u64> {
    stat_value(text, "usage_usec").map(|us| us * 1000)
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    // A substring search, not a walk over every line: v1 memory.stat has ~35 lines and is read
    // for every container every interval (this was a tenth of the agent's instructions).
    text.match_indices(key).find_map(|(at, _)| {
        let line_start = at == 0 || text.as_bytes()[at - 1] == b'\n';
        let rest = text[at + key.len()..].strip_prefix(' ')?;
        if !line_start {
            return None;
        }
        rest.split('\n').next()?.trim().parse().ok()
    })
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
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_ns: u64,
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
        let text = std::fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup"))).ok()?;
        parse_proc_cgroup(&text)
    }

    fn read(&self, rel: &[&str]) -> Option<String> {
        let mut p = self.root.clone();
        for r in rel {
            p.push(r.trim_start_matches('/'));
        }
        std::fs::read_to_string(p).ok()
    }

    pub fn usage(&self, paths: &CgroupPaths) -> Option<Usage> {
        match paths {
            CgroupPaths::V1 { cpuacct, memory } => {
                let cpu_ns = ["cpuacct", "cpu,cpuacct"]
                    .iter()
                    .find_map(|h| self.read(&[h, cpuacct, "cpuacct.usage"]))?
                    .trim()
                    .parse()
                    .ok()?;
                let usage: u64 = self
                    .read(&["memory", memory, "memory.usage_in_bytes"])?
                    .trim()
                    .parse()
                    .ok()?;
                let stat = self
                    .read(&["memory", memory, "memory.stat"])
                    .unwrap_or_default();
                let cache = stat_value(&stat, "total_inactive_file").unwrap_or(0);
                let limit = self
                    .read(&["memory", memory, "memory.limit_in_bytes"])
                    .and_then(|t| parse_limit(&t, self.host_mem_total))?;
                Some(Usage {
                    cpu_ns,
                    mem_usage: usage.saturating_sub(cache),
                    mem_limit: limit,
                })
            }
            CgroupPaths::V2 { path } => {
                let cpu_ns = parse_cpu_stat_usec(&self.read(&[path, "cpu.stat"])?)?;
                let usage: u64 = self.read(&[path, "memory.current"])?.trim().parse().ok()?;
                let stat = self.read(&[path, "memory.stat"]).unwrap_or_default();
                let cache = stat_value(&stat, "inactive_file").unwrap_or(0);
                let limit = self
                    .read(&[path, "memory.max"])
                    .and_then(|t| parse_limit(&t, self.host_mem_total))?;
                Some(Usage {
                    cpu_ns,
                    mem_usage: usage.saturating_sub(cache),
                    mem_limit: limit,
                })
            }
        }
    }
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
                memory: "/docker/abc".into()
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
        let cpu = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(parse_cpu_stat_usec(cpu), Some(1_500_000));
        let mem = "anon 100\nfile 200\ninactive_file 50\n";
        assert_eq!(stat_value(mem, "inactive_file"), Some(50));
        assert_eq!(stat_value(mem, "inactive"), None);
        assert_eq!(
            stat_value(mem, "file"),
            Some(200),
            "not the tail of inactive_file"
        );
        let v1 = "cache 10\ntotal_inactive_file 7\ninactive_file 3\n";
        assert_eq!(stat_value(v1, "inactive_file"), Some(3));
        assert_eq!(stat_value(v1, "total_inactive_file"), Some(7));
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
        assert_eq!(
            r.usage(&p),
            Some(Usage {
                cpu_ns: 2_000_000,
                mem_usage: 900,
                mem_limit: 2048 * 1024
            })
        );
        assert!(r.paths(43).is_none());
    }
}
