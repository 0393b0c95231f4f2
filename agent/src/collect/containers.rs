//! Container health from the local Docker engine, through bollard.
//!
//! Cost per interval is bounded: one list request; CPU and memory of running containers from
//! their cgroup files (see `cgroup.rs`), or, where those cannot be read, one one-shot stats
//! request per container (at most `docker.stats_concurrency` in flight); and an inspect only
//! for containers that are new, changed state, were named by an engine event, or whose health
//! check is not passing (their failing streak moves). The rest comes from a cache.
//!
//! The conversions (stats to CPU percent and memory, inspection to a report) are pure
//! functions, tested without an engine.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use bollard::models::{
    ContainerInspectResponse, ContainerStatsResponse, ContainerSummary, ContainerSummaryStateEnum,
    HealthStatusEnum,
};
use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use std::time::Instant;

use super::cadence::Cadence;
use super::cgroup::{self, CgroupFiles, CgroupReader};
use leakmon_protocol::{Container, ContainerBlkio, ContainerCpu, ContainerNet, EngineInfo, Health};

use crate::config::DockerConfig;

pub const LABEL_SERVICE: &str = "com.docker.swarm.service.name";
pub const LABEL_TASK: &str = "com.docker.swarm.task.name";
pub const LABEL_NODE: &str = "com.docker.swarm.node.id";

/// Connects to the engine named by `docker.host` (no request is made yet).
pub fn connect(cfg: &DockerConfig) -> Result<Docker, bollard::errors::Error> {
    leakmon_common::docker::connect(&cfg.host, cfg.timeout.0)
}

/// What engine events have made stale: the container list (any container event) and the
/// cached inspections of the containers they name.
#[derive(Debug, Clone, Default)]
pub struct Invalidations(Arc<Mutex<Stale>>);

#[derive(Debug, Default)]
struct Stale {
    ids: HashSet<String>,
    list: bool,
}

impl Invalidations {
    /// Container `id` changed: the list and its inspection are stale.
    pub fn mark(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.ids.insert(id.to_owned());
            s.list = true;
        }
    }

    /// Events may have been missed (the event stream broke or is only now connecting): the
    /// list is stale.
    pub fn mark_list(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.list = true;
        }
    }

    /// The stale inspections, and whether the list is stale; both cleared.
    fn take(&self) -> (HashSet<String>, bool) {
        self.0
            .lock()
            .map(|mut s| (std::mem::take(&mut s.ids), std::mem::take(&mut s.list)))
            .unwrap_or((HashSet::new(), true))
    }
}

/// The parts of an inspection a report needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    pub state: String,
    pub health: Health,
    pub failing_streak: u64,
    pub restart_count: u64,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<i64>,
    /// Main process id while running, else 0.
    pub pid: i64,
    /// In the host's network namespace (`--network host`): its traffic is the host's.
    pub host_network: bool,
}

pub fn from_inspect(r: &ContainerInspectResponse) -> Inspected {
    let st = r.state.as_ref();
    let health = st.and_then(|s| s.health.as_ref());
    Inspected {
        state: st
            .and_then(|s| s.status)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        health: match health.and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => Health::Starting,
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::None,
        },
        failing_streak: health
            .and_then(|h| h.failing_streak)
            .map(|n| n.max(0) as u64)
            .unwrap_or(0),
        restart_count: r.restart_count.map(|n| n.max(0) as u64).unwrap_or(0),
        exit_code: st.and_then(|s| s.exit_code),
        oom_killed: st.and_then(|s| s.oom_killed).unwrap_or(false),
        started_at: st
            .and_then(|s| s.started_at.as_deref())
            .and_then(parse_docker_time),
        pid: st.and_then(|s| s.pid).unwrap_or(0),
        host_network: r
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host"),
    }
}

/// Docker's RFC 3339 times to ms since the epoch; its zero time means "never".
pub fn parse_docker_time(s: &str) -> Option<i64> {
    if s.starts_with("0001-01-01") {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// CPU counters of one stats sample: (container ns, system ns, online CPUs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuCounters {
    pub container: u64,
    pub system: u64,
    pub online: u32,
}

pub fn cpu_counters(s: &ContainerStatsResponse) -> Option<CpuCounters> {
    let c = s.cpu_stats.as_ref()?;
    let container = c.cpu_usage.as_ref()?.total_usage?;
    let system = c.system_cpu_usage?;
    let online = c.online_cpus.filter(|n| *n > 0).unwrap_or_else(|| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .map(|v| v.len() as u32)
            .unwrap_or(1)
    });
    Some(CpuCounters {
        container,
        system,
        online,
    })
}

/// Percent of one core between two samples, as `docker stats` computes it.
pub fn cpu_percent(prev: &CpuCounters, cur: &CpuCounters) -> Option<f64> {
    let dc = cur.container.checked_sub(prev.container)?;
    let ds = cur.system.checked_sub(prev.system)?;
    if ds == 0 {
        return None;
    }
    Some(dc as f64 / ds as f64 * f64::from(cur.online) * 100.0)
}

/// Memory used without the reclaimable page cache (cgroup v2 `inactive_file`, v1
/// `total_inactive_file`), and the limit.
pub fn memory(s: &ContainerStatsResponse) -> (Option<u64>, Option<u64>) {
    let Some(m) = s.memory_stats.as_ref() else {
        return (None, None);
    };
    let cache = m
        .stats
        .as_ref()
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    (m.usage.map(|u| u.saturating_sub(cache)), m.limit)
}

/// CPU time and throttling from a stats reply.
pub fn cpu_time(s: &ContainerStatsResponse) -> Option<ContainerCpu> {
    let c = s.cpu_stats.as_ref()?;
    let u = c.cpu_usage.as_ref()?;
    let t = c.throttling_data.as_ref();
    Some(ContainerCpu {
        total_ns: u.total_usage?,
        user_ns: u.usage_in_usermode.unwrap_or(0),
        kernel_ns: u.usage_in_kernelmode.unwrap_or(0),
        periods: t.and_then(|t| t.periods).unwrap_or(0),
        throttled_periods: t.and_then(|t| t.throttled_periods).unwrap_or(0),
        throttled_ns: t.and_then(|t| t.throttled_time).unwrap_or(0),
    })
}

/// Network counters of a stats reply, summed over its interfaces; none for a container in
/// the host's namespace (the engine lists no interface for it).
pub fn net(s: &ContainerStatsResponse) -> Option<ContainerNet> {
    let nets = s.networks.as_ref().filter(|n| !n.is_empty())?;
    let mut n = ContainerNet::default();
    for i in nets.values() {
        let add = |a: &mut u64, v: Option<u64>| *a = a.saturating_add(v.unwrap_or(0));
        add(&mut n.rx_bytes, i.rx_bytes);
        add(&mut n.rx_packets, i.rx_packets);
        add(&mut n.rx_errors, i.rx_errors);
        add(&mut n.rx_dropped, i.rx_dropped);
        add(&mut n.tx_bytes, i.tx_bytes);
        add(&mut n.tx_packets, i.tx_packets);
        add(&mut n.tx_errors, i.tx_errors);
        add(&mut n.tx_dropped, i.tx_dropped);
    }
    Some(n)
}

/// Block I/O of a stats reply: its `Read`/`Write` (v1) or `read`/`write` (v2) entries summed
/// over devices.
pub fn blkio(s: &ContainerStatsResponse) -> Option<ContainerBlkio> {
    let b = s.blkio_stats.as_ref()?;
    let sum = |entries: &Option<Vec<bollard::models::ContainerBlkioStatEntry>>, op: &str| {
        entries
            .iter()
            .flatten()
            .filter(|e| e.op.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(op)))
            .fold(0u64, |a, e| a.saturating_add(e.value.unwrap_or(0)))
    };
    if b.io_service_bytes_recursive.is_none() && b.io_serviced_recursive.is_none() {
        return None;
    }
    Some(ContainerBlkio {
        read_bytes: sum(&b.io_service_bytes_recursive, "read"),
        write_bytes: sum(&b.io_service_bytes_recursive, "write"),
        reads: sum(&b.io_serviced_recursive, "read"),
        writes: sum(&b.io_serviced_recursive, "write"),
    })
}

/// Telegraf's `docker` figures from the engine's `/info`.
pub fn engine_info(i: &bollard::models::SystemInfo) -> EngineInfo {
    let n = |v: Option<i64>| v.map(|v| v.max(0) as u64).unwrap_or(0);
    EngineInfo {
        images: n(i.images),
        cpus: n(i.ncpu),
        memory_total: n(i.mem_total),
        goroutines: n(i.n_goroutines),
        file_descriptors: n(i.nfd),
        event_listeners: n(i.n_events_listener),
    }
}

/// What one sample measured of a running container; all empty for the others.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub cpu_percent: Option<f64>,
    pub mem_usage: Option<u64>,
    pub mem_limit: Option<u64>,
    pub cpu_time: Option<ContainerCpu>,
    pub net: Option<ContainerNet>,
    pub blkio: Option<ContainerBlkio>,
}

impl Figures {
    /// The figures of a stats reply, with the CPU percent worked out by the caller.
    pub fn from_stats(s: &ContainerStatsResponse, cpu_percent: Option<f64>) -> Self {
        let (mem_usage, mem_limit) = memory(s);
        Figures {
            cpu_percent,
            mem_usage,
            mem_limit,
            cpu_time: cpu_time(s),
            net: net(s),
            blkio: blkio(s),
        }
    }
}

/// Builds one report entry from the list summary, the inspection and the figures.
pub fn to_report(s: &ContainerSummary, i: Option<&Inspected>, f: Figures) -> Container {
    let label = |k: &str| s.labels.as_ref().and_then(|l| l.get(k)).cloned();
    let name = s
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default();
    let state = i
        .map(|i| i.state.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| s.state.map(|st| st.to_string()))
        .unwrap_or_default();
    Container {
        id: s.id.clone().unwrap_or_default(),
        name,
        image: s.image.clone().unwrap_or_default(),
        state,
        health: i.map(|i| i.health).unwrap_or(Health::None),
        failing_streak: i.map(|i| i.failing_streak).unwrap_or(0),
        restart_count: i.map(|i| i.restart_count).unwrap_or(0),
        exit_code: i.and_then(|i| i.exit_code),
        oom_killed: i.map(|i| i.oom_killed).unwrap_or(false),
        started_at: i.and_then(|i| i.started_at),
        swarm_service: label(LABEL_SERVICE),
        swarm_task: label(LABEL_TASK),
        swarm_node_id: label(LABEL_NODE),
        cpu_percent: f.cpu_percent,
        mem_usage: f.mem_usage,
        mem_limit: f.mem_limit,
        cpu_time: f.cpu_time,
        net: f.net,
        blkio: f.blkio,
        labels: s
            .labels
            .iter()
            .flatten()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A Docker client connected on first use, and again after a failed connect (the socket may
/// not exist yet when the agent starts before the engine).
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: DockerConfig,
    docker: Option<Docker>,
}

impl Engine {
    pub fn new(cfg: DockerConfig) -> Self {
        Engine { cfg, docker: None }
    }

    pub fn client(&mut self) -> Result<Docker, String> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let d = connect(&self.cfg).map_err(|e| e.to_string())?;
        self.docker = Some(d.clone());
        Ok(d)
    }
}

/// Whether the list says the container runs (only a running one has a cgroup to read).
fn is_running(c: &ContainerSummary) -> bool {
    c.state == Some(ContainerSummaryStateEnum::RUNNING)
}

/// Container ids are the engine's random 64-hex-digit strings (no one picks them to collide),
/// so the maps keyed by them hash 8 bytes at a time with a multiply and a rotate (rustc's
/// "Fx" scheme) instead of SipHash, which at a dozen lookups per container per sample was a
/// twelfth of the agent's instructions.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.add(u64::from_le_bytes(b));
        }
        for b in words.remainder() {
            self.add(u64::from(*b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
type IdSet<'a> = HashSet<&'a str, BuildHasherDefault<IdHasher>>;

/// Where a running container's figures are read: its cgroup, found for its pid, and those
/// files kept open (they are read every sample; open and close were a quarter of the agent's
/// CPU at 20 containers and a 1 s interval).
struct Tracked {
    pid: i64,
    /// None when its cgroup could not be found.
    files: Option<CgroupFiles>,
    /// The last CPU reading (ns) and when it was taken.
    prev: Option<(u64, Instant)>,
}

/// Containers whose files are kept open, at most: 10 descriptors each (and a kernel page
/// each, the file's buffer). Beyond them files are opened for each read.
const KEPT_CONTAINERS: usize = 64;

/// Samples the containers of one engine, keeping what it needs between samples.
pub struct ContainerCollector {
    engine: Engine,
    concurrency: usize,
    inspected: IdMap<String, Inspected>,
    /// Previous stats-endpoint CPU counters, for containers read that way.
    prev_cpu: IdMap<String, CpuCounters>,
    /// `None` when `docker.read_cgroups` is off.
    cgroups: Option<CgroupReader>,
    /// Per container: where its figures are read.
    cgroup_paths: IdMap<String, Tracked>,
    stale: Invalidations,
    /// The engine's `/info` figures, read again on the slow cadence.
    engine_info: Option<EngineInfo>,
    info_every: Cadence,
    /// The engine's container list, listed again on the slow cadence and whenever an engine
    /// event says a container changed (or events may have been missed).
    listed: Option<Vec<ContainerSummary>>,
    list_every: Cadence,
    /// What the cgroup files are read into.
    buf: Vec<u8>,
}

impl ContainerCollector {
    pub fn new(
        engine: Engine,
        concurrency: usize,
        cgroups: Option<CgroupReader>,
        stale: Invalidations,
    ) -> Self {
        ContainerCollector {
            engine,
            concurrency,
            inspected: IdMap::default(),
            prev_cpu: IdMap::default(),
            cgroups,
            cgroup_paths: IdMap::default(),
            stale,
            engine_info: None,
            info_every: Cadence::slow(),
            listed: None,
            list_every: Cadence::slow(),
            buf: Vec::new(),
        }
    }

    async fn list(&mut self) -> Result<(Docker, Vec<ContainerSummary>), String> {
        let docker = self.engine.client()?;
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| e.to_string())?;
        Ok((docker, list))
    }

    /// The figures of a running container from its cgroup and namespace, if readable.
    /// `changed`: an engine event named the container since the last sample.
    fn read_cgroup(&mut self, id: &str, now: Instant, ts: i64, changed: bool) -> Option<Figures> {
        let reader = self.cgroups.as_ref()?;
        let inspected = self.inspected.get(id).filter(|i| i.pid > 0)?;
        let (pid, host_network) = (inspected.pid, inspected.host_network);
        // Few lookups (each is a 64-byte compare, byte by byte in musl's `bcmp`: 16 per
        // container per sample were a tenth of the static agent's instructions).
        if !matches!(self.cgroup_paths.get(id), Some(t) if t.pid == pid) {
            // a new container, or the same one restarted: its cgroup and namespace are new
            self.cgroup_paths.remove(id);
            let keep = self.cgroup_paths.len() < KEPT_CONTAINERS;
            let fresh = Tracked {
                pid,
                files: reader.paths(pid).map(|p| reader.files(&p, pid, keep)),
                prev: None,
            };
            self.cgroup_paths.insert(id.to_owned(), fresh);
        }
        let tracked = self.cgroup_paths.get_mut(id)?;
        let files = tracked.files.as_mut()?;
        if changed {
            files.expire();
        }
        let u = reader.usage(files, &mut self.buf, ts)?;
        let total = u.cpu.total_ns;
        let pct = tracked.prev.and_then(|(prev, at)| {
            cgroup::cpu_percent(prev, total, now.duration_since(at).as_nanos() as u64)
        });
        tracked.prev = Some((total, now));
        Some(Figures {
            cpu_percent: pct,
            mem_usage: Some(u.mem_usage),
            mem_limit: Some(u.mem_limit),
            cpu_time: Some(u.cpu),
            net: if host_network {
                None
            } else {
                CgroupReader::net(files, &mut self.buf)
            },
            blkio: u.blkio,
        })
    }

    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The engine's own figures (images, goroutines, descriptors...: slowly changing) as last
    /// read, at most [`super::cadence::SLOW_EVERY_MS`] ago; none if the engine's `/info` failed
    /// then, or the last sample found no engine.
    pub fn engine_info(&self) -> Option<EngineInfo> {
        self.engine_info
    }

    /// Takes one sample at `ts` (ms since the epoch).
    pub async fn sample(&mut self, ts: i64) -> Result<Vec<Container>, String> {
        let (stale, relist) = self.stale.take();
        if relist {
            self.list_every.expire();
        }
        let (listed, fresh) = match (self.listed.take(), self.list_every.due(ts)) {
            (Some(list), false) => (self.engine.client().map(|docker| (docker, list)), false),
            _ => (self.list().await, true),
        };
        if listed.is_err() {
            // no engine: nothing of it is sent, and its `/info` is read as soon as it answers
            self.engine_info = None;
            self.info_every.expire();
        }
        let (docker, list) = listed?;
        let out = self.sample_from(ts, &docker, &list, &stale, fresh).await;
        self.listed = Some(list);
        Ok(out)
    }

    /// A sample of the containers of `list` (`fresh`: listed now, not the last list again).
    async fn sample_from(
        &mut self,
        ts: i64,
        docker: &Docker,
        list: &[ContainerSummary],
        stale: &HashSet<String>,
        fresh: bool,
    ) -> Vec<Container> {
        if self.info_every.due(ts) {
            self.engine_info = match docker.info().await {
                Ok(i) => Some(engine_info(&i)),
                Err(e) => {
                    tracing::debug!(error = %e, "engine info failed");
                    self.info_every.expire();
                    None
                }
            };
        }
        if fresh {
            // what the last list held and this one does not is forgotten (the same list
            // again changes nothing)
            let ids: IdSet = list.iter().filter_map(|c| c.id.as_deref()).collect();
            self.inspected.retain(|id, _| ids.contains(id.as_str()));
            self.prev_cpu.retain(|id, _| ids.contains(id.as_str()));
            // only running containers' files stay open: a stopped one's cgroup is gone
            let running_ids: IdSet = list
                .iter()
                .filter(|c| is_running(c))
                .filter_map(|c| c.id.as_deref())
                .collect();
            self.cgroup_paths
                .retain(|id, _| running_ids.contains(id.as_str()));
        }

        for c in list {
            let Some(id) = c.id.as_deref() else { continue };
            let listed_state = c.state.map(|s| s.to_string()).unwrap_or_default();
            let needs = match self.inspected.get(id) {
                None => true,
                Some(i) => {
                    (!stale.is_empty() && stale.contains(id))
                        || i.state != listed_state
                        || matches!(i.health, Health::Starting | Health::Unhealthy)
                }
            };
            if needs {
                match docker.inspect_container(id, None).await {
                    Ok(r) => {
                        self.inspected.insert(id.to_owned(), from_inspect(&r));
                    }
                    // Gone between list and inspect: report what the list said.
                    Err(e) => tracing::debug!(container = id, error = %e, "inspect failed"),
                }
            }
        }

        let now = Instant::now();
        // by the list's order
        let mut from_cgroups: Vec<Option<Figures>> = Vec::with_capacity(list.len());
        let mut running: Vec<String> = Vec::new();
        for c in list {
            let id = c.id.as_deref().filter(|_| is_running(c));
            let figures = id.and_then(|id| {
                let changed = !stale.is_empty() && stale.contains(id);
                self.read_cgroup(id, now, ts, changed)
            });
            if let (Some(id), None) = (id, &figures) {
                // Fall back to the engine's stats endpoint for this one.
                running.push(id.to_owned());
            }
            from_cgroups.push(figures);
        }
        let docker = &docker;
        let stats: IdMap<String, ContainerStatsResponse> =
            futures_util::stream::iter(running.into_iter().map(|id| async move {
                let s = docker
                    .stats(
                        &id,
                        Some(StatsOptions {
                            stream: false,
                            one_shot: true,
                        }),
                    )
                    .try_next()
                    .await;
                (id, s)
            }))
            .buffer_unordered(self.concurrency)
            .filter_map(|(id, r)| async move {
                match r {
                    Ok(Some(s)) => Some((id, s)),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!(container = %id, error = %e, "stats failed");
                        None
                    }
                }
            })
            .collect()
            .await;

        let mut out = Vec::with_capacity(list.len());
        for (c, from_cgroup) in list.iter().zip(from_cgroups) {
            let Some(id) = c.id.as_deref() else { continue };
            let figures = match (from_cgroup, stats.get(id)) {
                (Some(v), _) => v,
                (None, Some(s)) => {
                    let cur = cpu_counters(s);
                    let pct = match (self.prev_cpu.get(id), cur) {
                        (Some(p), Some(c)) => cpu_percent(p, &c),
                        _ => None,
                    };
                    match cur {
                        Some(c) => {
                            self.prev_cpu.insert(id.to_owned(), c);
                        }
                        None => {
                            self.prev_cpu.remove(id);
                        }
                    }
                    Figures::from_stats(s, pct)
                }
                (None, None) => {
                    self.prev_cpu.remove(id);
                    Figures::default()
                }
            };
            out.push(to_report(c, self.inspected.get(id), figures));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_makes_the_list_and_that_inspection_stale_once() {
        let stale = Invalidations::default();
        assert_eq!(stale.take(), (HashSet::new(), false));
        stale.mark("abc");
        let (ids, list) = stale.take();
        assert!(list && ids.contains("abc") && ids.len() == 1);
        assert_eq!(stale.take(), (HashSet::new(), false), "cleared");
        stale.mark_list();
        assert_eq!(stale.take(), (HashSet::new(), true));
    }

    fn stats_json(total: u64, system: u64, online: u32) -> ContainerStatsResponse {
        serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system,
                          "online_cpus": online},
            "memory_stats": {"usage": 5000, "limit": 10000,
                             "stats": {"inactive_file": 1000}}
        }))
        .unwrap()
    }

    #[test]
    fn cpu_percent_from_consecutive_one_shot_samples() {
        let a = cpu_counters(&stats_json(1_000, 10_000, 4)).unwrap();
        let b = cpu_counters(&stats_json(1_500, 12_000, 4)).unwrap();
        // 500 of 2000 system ns, times 4 cores = 100 % of one core.
        assert_eq!(cpu_percent(&a, &b), Some(100.0));
        assert_eq!(cpu_percent(&b, &a), None, "counters reset");
        assert_eq!(cpu_percent(&a, &a), None, "no time passed");
    }

    #[test]
    fn memory_without_cache() {
        assert_eq!(memory(&stats_json(0, 0, 1)), (Some(4000), Some(10000)));
        let v1: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "memory_stats": {"usage": 300, "limit": 1000, "stats": {"total_inactive_file": 100}}
        }))
        .unwrap();
        assert_eq!(memory(&v1), (Some(200), Some(1000)));
    }

    #[test]
    fn io_network_and_throttling_from_a_stats_reply() {
        // Shaped as a cgroup v2 engine answers (lower-case ops, no Total entries).
        let s: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 900, "usage_in_usermode": 600,
                                        "usage_in_kernelmode": 300},
                          "throttling_data": {"periods": 50, "throttled_periods": 5,
                                              "throttled_time": 7000}},
            "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20, "rx_packets": 1},
                         "eth1": {"rx_bytes": 5, "tx_bytes": 1, "tx_dropped": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 4096},
                {"major": 8, "minor": 0, "op": "write", "value": 8192},
                {"major": 8, "minor": 16, "op": "Read", "value": 1},
                {"major": 8, "minor": 16, "op": "Total", "value": 1}],
                "io_serviced_recursive": [{"major": 8, "minor": 0, "op": "write", "value": 2}]}
        }))
        .unwrap();
        let f = Figures::from_stats(&s, Some(1.0));
        assert_eq!(
            f.cpu_time,
            Some(ContainerCpu {
                total_ns: 900,
                user_ns: 600,
                kernel_ns: 300,
                periods: 50,
                throttled_periods: 5,
                throttled_ns: 7000
            })
        );
        let n = f.net.unwrap();
        assert_eq!(
            (n.rx_bytes, n.tx_bytes, n.rx_packets, n.tx_dropped),
            (15, 21, 1, 2)
        );
        assert_eq!(
            f.blkio,
            Some(ContainerBlkio {
                read_bytes: 4097,
                write_bytes: 8192,
                reads: 0,
                writes: 2
            })
        );
        let host: ContainerStatsResponse =
            serde_json::from_value(serde_json::json!({"cpu_stats": {}})).unwrap();
        let f = Figures::from_stats(&host, None);
        assert_eq!((f.net, f.blkio, f.cpu_time), (None, None, None));
    }

    #[test]
    fn inspection_fields() {
        let r: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "abc", "RestartCount": 3, "HostConfig": {"NetworkMode": "host"},
            "State": {"Status": "running", "Running": true, "OOMKilled": true, "ExitCode": 0,
                      "StartedAt": "2026-11-26T18:53:35.909737130Z",
                      "FinishedAt": "0001-01-01T00:00:00Z",
                      "Health": {"Status": "unhealthy", "FailingStreak": 4, "Log": []}}
        }))
        .unwrap();
        let i = from_inspect(&r);
        assert_eq!(i.state, "running");
        assert_eq!(i.health, Health::Unhealthy);
        assert_eq!(i.failing_streak, 4);
        assert_eq!(i.restart_count, 3);
        assert!(i.oom_killed);
        assert_eq!(i.started_at, Some(1_795_719_215_909));
        assert!(i.host_network);
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
    }

    #[test]
    fn report_takes_swarm_labels_and_name() {
        let s: ContainerSummary = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Names": ["/web.1.xyz"], "Image": "nginx:1", "State": "exited",
            "Labels": {"com.docker.swarm.service.name": "web",
                       "com.docker.swarm.task.name": "web.1.xyz",
                       "com.docker.swarm.node.id": "n1"}
        }))
        .unwrap();
        let c = to_report(&s, None, Figures::default());
        assert_eq!(c.name, "web.1.xyz");
        assert_eq!(c.state, "exited");
        assert_eq!(c.health, Health::None);
        assert_eq!(c.swarm_service.as_deref(), Some("web"));
        assert_eq!(c.swarm_node_id.as_deref(), Some("n1"));
    }
}
