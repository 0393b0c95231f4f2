//! Payload types. Every payload is a JSON object with `v` (the protocol version) and `node`.
//! Data payloads also carry `run`, `seq` and `ts` (see [`Header`]).
//!
//! Units: times are milliseconds since the Unix epoch (`ts`, `started_at`), sizes are bytes,
//! percentages are 0-100 (CPU percentages of containers are per core, as `docker stats` shows:
//! up to 100 x cores), temperatures are degrees Celsius. Optional fields are omitted, not null.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fields every data message (host, containers, event) starts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Protocol version, [`crate::PROTOCOL_VERSION`].
    pub v: u32,
    /// The node name; always equal to the node level of the topic.
    pub node: String,
    /// The agent run: grows by one every time the agent process starts (kept on disk).
    pub run: u64,
    /// Per-node message sequence number within one run: 1, 2, 3, ... over all data channels.
    /// `(run, seq)` orders a node's messages; a gap within a run means a message was lost.
    pub seq: u64,
    /// When the data was sampled (not sent), in milliseconds since the Unix epoch, by the
    /// agent's clock (which may be wrong: a Pi without a real-time clock boots with a stale
    /// time until NTP answers).
    pub ts: i64,
    /// The agent's monotonic clock (`CLOCK_BOOTTIME`, ms) at the same moment: never set by
    /// hand or NTP, so with the beats' readings of it the gateway maps a sample of this `run`
    /// to true time whatever the wall clock said then (docs/protocol.md, "clocks"). Absent
    /// from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mono: Option<u64>,
}

impl Header {
    /// The header of data sampled at `ts` and not numbered yet: the agent's encoder fills in
    /// the node, `run` and `seq` when it publishes.
    pub fn sampled_at(ts: i64) -> Header {
        Header {
            v: crate::PROTOCOL_VERSION,
            node: String::new(),
            run: 0,
            seq: 0,
            ts,
            mono: None,
        }
    }
}

/// Online or offline, on the retained status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Online,
    Offline,
}

/// Why a node went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflineReason {
    /// The broker published the agent's Last Will: the connection died without goodbye.
    Lost,
    /// The agent said goodbye itself (SIGTERM, SIGINT).
    Shutdown,
}

/// Swarm role of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmRole {
    Manager,
    Worker,
}

/// Who a node is; sent in its birth certificate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Identity {
    pub hostname: String,
    pub agent_version: String,
    /// CPU architecture as Rust names it: `x86_64`, `aarch64`, `arm`.
    pub arch: String,
    /// Sampling interval in milliseconds.
    pub interval_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_role: Option<SwarmRole>,
    /// Docker engine version; absent while the engine does not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// The engine's name (`/info` `Name`, its host's name): Telegraf's `engine_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_name: Option<String>,
    /// How often the agent sends a [`Beat`], in milliseconds; absent when beats are off. A
    /// consumer times a node's silence against this rather than against its own guess.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat_interval_ms: Option<u64>,
}

/// The retained status of a node: birth (`online`) or death (`offline`).
///
/// `seq` grows with every MQTT connection of the agent and survives restarts. The birth and
/// the Last Will registered on the same connection carry the same `seq`, so a consumer that has
/// seen birth N ignores a death whose `seq` is below N (a late Will of an older connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub v: u32,
    pub node: String,
    pub state: NodeState,
    pub seq: u64,
    /// Set on `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<OfflineReason>,
    /// When the status was produced; for a Will, when its connection was opened.
    pub ts: i64,
    /// Set on `online`.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// CPU time by state since the previous sample, in percent of all CPUs (sums to ~100).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuUsage {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
    pub guest: f64,
    pub guest_nice: f64,
}

/// One CPU's usage since the previous sample, as Telegraf's `percpu` reports it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CoreUsage {
    /// The kernel's name: `cpu0`, `cpu1`, ...
    pub cpu: String,
    pub usage: CpuUsage,
}

/// Cumulative I/O counters of one block device, from /proc/diskstats (Telegraf's `diskio`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DiskIo {
    /// The kernel's device name: `sda`, `sda1`, `nvme0n1`, `mmcblk0`, `dm-0`.
    pub name: String,
    /// Reads completed.
    pub reads: u64,
    pub merged_reads: u64,
    /// Bytes read (sectors of 512 bytes, as the kernel counts them).
    pub read_bytes: u64,
    /// Milliseconds spent reading.
    pub read_time: u64,
    pub writes: u64,
    pub merged_writes: u64,
    pub write_bytes: u64,
    /// Milliseconds spent writing.
    pub write_time: u64,
    /// I/Os in progress now (a gauge).
    pub iops_in_progress: u64,
    /// Milliseconds the device was busy.
    pub io_time: u64,
    /// Milliseconds, weighted by the I/Os in progress.
    pub weighted_io_time: u64,
}

/// Counters since boot from /proc/stat, and the entropy pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Kernel {
    /// Boot time, seconds since the epoch (`btime`).
    pub boot_time: u64,
    /// `ctxt`.
    pub context_switches: u64,
    /// Interrupts serviced (`intr`, its total).
    pub interrupts: u64,
    /// Processes and threads created (`processes`).
    pub processes_forked: u64,
    /// Bits in the entropy pool (/proc/sys/kernel/random/entropy_avail).
    pub entropy_avail: u64,
}

/// Processes by state, counted over /proc/<pid>/stat as Telegraf counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Processes {
    /// `R`.
    pub running: u64,
    /// `S`.
    pub sleeping: u64,
    /// `D` (uninterruptible).
    pub blocked: u64,
    /// `Z`.
    pub zombies: u64,
    /// `T`, `t`.
    pub stopped: u64,
    /// `X`.
    pub dead: u64,
    /// `W`.
    pub paging: u64,
    /// `I` (idle kernel threads).
    pub idle: u64,
    /// Any other state.
    pub unknown: u64,
    pub total: u64,
    /// Threads of all processes.
    pub total_threads: u64,
}

/// File handles, from /proc/sys/fs/file-nr and file-max.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileHandles {
    /// Allocated (the first figure of file-nr).
    pub allocated: u64,
    pub max: u64,
}

/// Kernel network counters since boot, as the kernel names them (Telegraf's `nstat`; the
/// `snmp` part is also Telegraf's `net` `interface=all`). Only the counters the agent's
/// `host.nstat` selects are sent; a file the kernel lacks (no IPv6: no snmp6) is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetCounters {
    /// /proc/net/netstat by line: `TcpExt` -> `ListenDrops` -> count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub netstat: BTreeMap<String, BTreeMap<String, i64>>,
    /// /proc/net/snmp by line: `Tcp` -> `ActiveOpens` -> count (`Tcp` `MaxConn` is -1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snmp: BTreeMap<String, BTreeMap<String, i64>>,
    /// /proc/net/snmp6: `Ip6InReceives` -> count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snmp6: BTreeMap<String, i64>,
}

impl NetCounters {
    /// How many counters it holds.
    pub fn len(&self) -> usize {
        let lines = |m: &BTreeMap<String, BTreeMap<String, i64>>| -> usize {
            m.values().map(BTreeMap::len).sum()
        };
        lines(&self.netstat) + lines(&self.snmp) + self.snmp6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The host's TCP sockets by state and its UDP sockets, IPv4 and IPv6, from /proc/net/tcp,
/// tcp6, udp and udp6 (Telegraf's `netstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sockets {
    pub tcp_established: u64,
    pub tcp_syn_sent: u64,
    pub tcp_syn_recv: u64,
    pub tcp_fin_wait1: u64,
    pub tcp_fin_wait2: u64,
    pub tcp_time_wait: u64,
    pub tcp_close: u64,
    pub tcp_close_wait: u64,
    pub tcp_last_ack: u64,
    pub tcp_listen: u64,
    pub tcp_closing: u64,
    /// A state the kernel added after these (`NEW_SYN_RECV` is never listed; others may be).
    pub tcp_none: u64,
    pub udp_socket: u64,
}

/// Connection tracking table, from /proc/sys/net/netfilter/nf_conntrack_{count,max} (absent
/// while the kernel module is not loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Conntrack {
    pub count: u64,
    pub max: u64,
}

/// One line of /proc/interrupts or /proc/softirqs: the count on each CPU since boot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Irq {
    /// The IRQ number or name (`24`, `NMI`, `TIMER`).
    pub irq: String,
    /// The controller (`IO-APIC`, `GICv2`), or for named lines their description.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The hardware IRQ and devices (`2-edge timer`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// Counts by CPU, CPU0 first.
    pub cpus: Vec<u64>,
}

/// Load averages over 1, 5 and 15 minutes, from /proc/loadavg.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Load {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

/// Memory in bytes, from /proc/meminfo. `used` = total - free - buffers - cached (as `free`
/// and Telegraf count it); `used_percent` = used / total.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub used: u64,
    pub free: u64,
    pub buffers: u64,
    pub cached: u64,
    pub used_percent: f64,
    pub available_percent: f64,
}

/// Swap in bytes, from /proc/meminfo; `used_percent` = used / total (0 without swap).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Swap {
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub used_percent: f64,
    /// Bytes swapped in since boot (/proc/vmstat `pswpin` pages x 4096, as Telegraf counts).
    #[serde(rename = "in", default)]
    pub swapped_in: u64,
    /// Bytes swapped out since boot (`pswpout` x 4096).
    #[serde(rename = "out", default)]
    pub swapped_out: u64,
}

/// One real (block-device or network) filesystem.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Disk {
    /// Mount point.
    pub path: String,
    /// Source device, e.g. `/dev/sda1`.
    pub device: String,
    pub fstype: String,
    pub total: u64,
    /// total - free.
    pub used: u64,
    /// Available to unprivileged users.
    pub free: u64,
    /// used / (used + free), as `df` shows it.
    pub used_percent: f64,
    pub inodes_total: u64,
    pub inodes_used: u64,
    pub inodes_free: u64,
}

/// Cumulative counters of one network interface, from /proc/net/dev.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetIf {
    pub interface: String,
    pub bytes_recv: u64,
    pub bytes_sent: u64,
    pub packets_recv: u64,
    pub packets_sent: u64,
    pub err_in: u64,
    pub err_out: u64,
    pub drop_in: u64,
    pub drop_out: u64,
}

/// One temperature sensor.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Temperature {
    /// `<hwmon name>_<label or tempN>` for hwmon, the zone type for thermal zones.
    pub sensor: String,
    /// Degrees Celsius.
    pub temp: f64,
}

/// The agent's store-and-forward buffer, as of this sample.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BufferStats {
    /// Messages waiting in memory.
    pub queued: u64,
    pub queued_bytes: u64,
    /// Bytes waiting in the disk spool (0 without one).
    pub spooled_bytes: u64,
    /// Messages dropped because the buffer was full, since the agent started.
    pub dropped_total: u64,
}

/// `.../host`: one sample of host health.
///
/// The agent's collector fills this directly, and the gateway writes every number and
/// boolean of its parts (`cpu`, `mem`, a disk, ...) to the part's measurement under the
/// field's name (docs/schema.md). So a new host metric is: a field in one of the parts, with
/// its unit in its doc comment; the collector's line that fills it; its name in
/// docs/schema.md. A field of the report itself, or a new part, also needs a line in the
/// gateway's `host_lines`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    #[serde(flatten)]
    pub header: Header,
    /// The kernel's hostname (the node name may differ).
    pub hostname: String,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// CPUs the kernel lists in /proc/stat.
    pub n_cpus: u32,
    /// Absent on the first sample (usage is a difference between two samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUsage>,
    /// Each CPU's usage (from the second sample on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<CoreUsage>,
    pub load: Load,
    pub mem: Memory,
    pub swap: Swap,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub net: Vec<NetIf>,
    #[serde(default)]
    pub temps: Vec<Temperature>,
    /// Block devices with any I/O since boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diskio: Vec<DiskIo>,
    /// Kernel activity counters (Telegraf's `kernel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    /// Processes by state (Telegraf's `processes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Processes>,
    /// File handles (Telegraf's `linux_sysctl_fs` `file-nr`, `file-max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileHandles>,
    /// Kernel network counters (Telegraf's `nstat`, and `net` `interface=all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nstat: Option<NetCounters>,
    /// Sockets by state (Telegraf's `netstat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<Sockets>,
    /// Connection tracking (Telegraf's `conntrack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<Conntrack>,
    /// /proc/interrupts (Telegraf's `interrupts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupts: Vec<Irq>,
    /// /proc/softirqs (Telegraf's `soft_interrupts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soft_interrupts: Vec<Irq>,
    pub buffer: BufferStats,
    /// Items and texts left out by the bounds of [`crate::limits`] (more than 64 disks,
    /// interfaces or sensors, names over 256 bytes); absent when nothing was.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Health-check state, as Docker names it; `none` when the container has no health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// One container on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Full 64-hex-digit id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    pub image: String,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub state: String,
    pub health: Health,
    /// Consecutive failed health checks.
    #[serde(default)]
    pub failing_streak: u64,
    pub restart_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Start time, ms since the epoch; absent if never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_node_id: Option<String>,
    /// Percent of one core since the previous sample; absent on the first sample or when
    /// the container is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Bytes used, without the page cache (as `docker stats` counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_usage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<u64>,
    /// The container's labels (Swarm's `com.docker.swarm.*`, `com.docker.stack.namespace`,
    /// the user's), as Telegraf turns them into tags; empty values left out. At most 64, the
    /// rest counted in the report's `cut`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// CPU time and CFS throttling since the container started; running containers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time: Option<ContainerCpu>,
    /// Network counters summed over the container's interfaces (`lo` excepted); absent for a
    /// container in the host's network namespace (its traffic is the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<ContainerNet>,
    /// Block I/O summed over every device the container touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio: Option<ContainerBlkio>,
}

/// A container's CPU counters, from its cgroup (`cpu.stat`; v1 `cpuacct.*` and `cpu.stat`),
/// as the engine's stats endpoint reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerCpu {
    /// CPU time used, nanoseconds.
    pub total_ns: u64,
    /// Of which in user mode.
    pub user_ns: u64,
    /// Of which in kernel mode.
    pub kernel_ns: u64,
    /// CFS enforcement periods elapsed (0 without a CPU limit).
    pub periods: u64,
    /// Periods in which the container was throttled.
    pub throttled_periods: u64,
    /// Time throttled, nanoseconds.
    pub throttled_ns: u64,
}

/// A container's network counters (its namespace's `/proc/<pid>/net/dev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerNet {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A container's block I/O (cgroup v2 `io.stat`, v1 `blkio.throttle.io_service*_recursive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerBlkio {
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Read operations.
    pub reads: u64,
    pub writes: u64,
}

/// Whether the agent could reach its Docker engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineState {
    Ok,
    Unavailable,
}

/// `.../containers`: one sample of every container on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainersReport {
    #[serde(flatten)]
    pub header: Header,
    pub engine: EngineState,
    /// Why the engine is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
    /// The engine's own figures, from its `/info` of this sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_info: Option<EngineInfo>,
    /// Containers and texts left out by the bounds of [`crate::limits`] (more than 500
    /// containers: the unhealthy, then the stopped ones are kept first); absent when nothing was.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut: u32,
}

/// What the Docker engine says of itself (`/info`), as Telegraf's `docker` measurement has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Images stored.
    pub images: u64,
    /// CPUs and memory (bytes) the engine sees.
    pub cpus: u64,
    pub memory_total: u64,
    /// The engine's goroutines, open file descriptors and event listeners (its own health).
    pub goroutines: u64,
    pub file_descriptors: u64,
    pub event_listeners: u64,
}

/// `.../events`: one Docker engine event, published as it happens. `ts` is the engine's event
/// time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    #[serde(flatten)]
    pub header: Header,
    /// `die`, `oom`, `kill`, `restart`, `start` or `health_status`.
    pub action: String,
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub image: String,
    /// On `die`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// On `kill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// On `health_status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_task: Option<String>,
}

/// Whether a gateway is the one acting for the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayRole {
    /// Writes to the database and acts on the Swarm.
    Active,
    /// Keeps the same subscriptions and liveness state, writes and acts on nothing.
    Standby,
}

/// The retained `<prefix>/v1/gateway/status`: which gateway is active, where, since when.
/// Published by a gateway when it becomes active (and again after each reconnect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub v: u32,
    /// The gateway's name (`name` in its config; default its hostname).
    pub gateway: String,
    pub role: GatewayRole,
    /// The hostname of the machine (Swarm node) it runs on.
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_node_id: Option<String>,
    /// `swarm` (active because its engine is the Swarm leader) or `standalone`.
    pub mode: String,
    /// When it became active, ms since the epoch.
    pub since: i64,
    pub gateway_version: String,
}

/// What the gateway saw or did; one JSON object per message on `<prefix>/v1/gateway/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A node is dead: its agent is gone and it does not answer a probe, or Swarm reports it down.
    NodeDown,
    /// A node that was down is back (agent online, Swarm ready).
    NodeUp,
    /// The agent is gone but its node answers: nothing is moved.
    AgentLost,
    /// The node was set to `pause` then `drain` by leakmon.
    Drain,
    /// Replicas added on live nodes for the tasks stranded on a dead node.
    Surge,
    /// The added replicas were removed again once Swarm had let go of the dead node.
    Settle,
    /// A pinned service was re-pinned to a standby node.
    Failover,
    /// A pinned service had nowhere to go (no healthy standby node, or no failover label).
    FailoverImpossible,
    /// A node leakmon drained was set active again.
    Reactivate,
    /// A service was force-updated (an unhealthy task, or a rebalance).
    ForceUpdate,
    /// Too many nodes drained by leakmon at once: no further drains.
    MassFailure,
    /// A node that died again soon after it came back: it stays drained.
    Flapping,
    /// A Swarm API call failed; it is not retried blindly.
    ActionFailed,
    /// This gateway became the active one.
    GatewayActive,
    /// A report asked for an action Swarm does not confirm (a container that is no Swarm
    /// task, or not one on the reporting node): nothing was done.
    Refused,
    /// An action had its effect: a failed-over service's task runs on its new node, a
    /// surge's replacements run on live nodes, a reactivated node is active again.
    Confirmed,
    /// An action did not have its effect within its bound (or its target stopped being fit
    /// for it): what the gateway does next is in the message (another standby, or
    /// `failover_impossible`).
    Unconfirmed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NodeDown => "node_down",
            EventKind::NodeUp => "node_up",
            EventKind::AgentLost => "agent_lost",
            EventKind::Drain => "drain",
            EventKind::Surge => "surge",
            EventKind::Settle => "settle",
            EventKind::Failover => "failover",
            EventKind::FailoverImpossible => "failover_impossible",
            EventKind::Reactivate => "reactivate",
            EventKind::ForceUpdate => "force_update",
            EventKind::MassFailure => "mass_failure",
            EventKind::Flapping => "flapping",
            EventKind::ActionFailed => "action_failed",
            EventKind::GatewayActive => "gateway_active",
            EventKind::Refused => "refused",
            EventKind::Confirmed => "confirmed",
            EventKind::Unconfirmed => "unconfirmed",
        }
    }
}

/// One gateway event. `details` holds kind-specific fields (see docs/protocol.md), e.g.
/// `reason`, `service`, `from`, `to`, `replicas`, `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayEvent {
    pub v: u32,
    pub kind: EventKind,
    /// The node (hostname) concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it happened, ms since the epoch.
    pub ts: i64,
    /// The gateway that decided it.
    pub gateway: String,
    /// True when `reschedule.dry_run` is on: the action was published, not carried out.
    #[serde(default)]
    pub dry_run: bool,
    /// A human-readable line.
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert notification, on `<prefix>/v1/alerts` and in webhook and exec hooks (leakmon
/// format). An alert is identified by `(alert, node, subject)`; it fires once and resolves
/// once; a `repeat` is a reminder that it still fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub v: u32,
    /// The rule's name (`agent_offline`, `node_down`, `disk_full`, ...).
    pub alert: String,
    pub state: AlertState,
    pub severity: Severity,
    pub node: String,
    /// What on the node: a mount point, a container, a sensor; absent for the node itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The value that crossed the threshold (or, when resolved, the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// When the condition began (ms since the epoch).
    pub started: i64,
    /// When this notification was made.
    pub ts: i64,
    /// A line for humans.
    pub summary: String,
    /// `rule` (a threshold over agent data), `liveness` (an agent offline) or `event` (a
    /// gateway event).
    pub source: String,
    pub gateway: String,
    /// A reminder of an alert still firing (after `repeat_after`).
    #[serde(default)]
    pub repeat: bool,
}

/// A liveness beat (`<prefix>/v1/nodes/<node>/beat`): small and frequent, QoS 0, never
/// retained and never buffered, so that a beat that arrives is a fresh sign of life.
///
/// The failure detector times its arrival with the gateway's own clock, so neither clock skew
/// nor a late delivery can make a dead node look alive. The agent's clock readings it carries
/// serve only to place samples in time: the gateway learns each agent's clock offset from the
/// beats it hears in real time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub v: u32,
    pub node: String,
    /// The agent run, as in data headers: a new run means the agent restarted.
    pub run: u64,
    /// 1, 2, 3, ... within a run, one per beat that was due while connected (it does not
    /// advance while the agent is disconnected). A gap within a run is a beat lost on the way.
    pub n: u64,
    /// The agent's wall clock when it sent the beat, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// The agent's monotonic clock then (`CLOCK_BOOTTIME`, ms), as in data headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mono: Option<u64>,
}

/// Gateway -> agent (`<prefix>/v1/probe/<prober>`): probe `target` directly, as a vantage
/// point other than the gateway, during a confirmation window. The agent answers with a
/// [`ProbeReport`] on its own `probe` channel.
///
/// The topic names the agent asked, the payload names no node of its own, so instead of the
/// node check it is checked by [`crate::codec::decode_request`] ([`ProbeRequest::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub v: u32,
    /// Chosen by the gateway; the report carries it back.
    pub id: u64,
    /// The gateway asking (for the logs).
    pub gateway: String,
    /// The suspect's node name.
    pub target: String,
    /// Where to reach the suspect: an IP address or a host name.
    pub addr: String,
    /// TCP ports to connect to, each in every round (1 to [`MAX_PROBE_PORTS`]).
    pub ports: Vec<u16>,
    /// How long to keep trying (the confirmation window), in milliseconds.
    pub window_ms: u32,
    /// A round of connects starts this often, in milliseconds.
    pub every_ms: u32,
    /// Time limit of one connect, in milliseconds.
    pub timeout_ms: u32,
}

/// The most ports one probe request may name.
pub const MAX_PROBE_PORTS: usize = 16;

impl ProbeRequest {
    /// What the shape alone does not guarantee: names that can be used as names, a target
    /// address that is an address, ports and durations that mean something. Bounds on the
    /// durations are the prober's business (it clamps them); zero is refused here because it
    /// cannot mean anything.
    pub fn validate(&self) -> Result<(), String> {
        crate::topics::validate_node(&self.target).map_err(|e| format!("target: {e}"))?;
        if self.gateway.is_empty()
            || self.gateway.len() > crate::topics::MAX_NODE_LEN
            || self.gateway.chars().any(char::is_control)
        {
            return Err("gateway: 1 to 128 characters without control characters".into());
        }
        // An IPv4 or IPv6 address (with an optional zone, `fe80::1%eth0`) or a DNS name.
        if self.addr.is_empty()
            || self.addr.len() > 253
            || !self
                .addr
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'))
        {
            return Err(format!(
                "addr `{}` is not an IP address or host name",
                self.addr.escape_debug()
            ));
        }
        if self.ports.is_empty() || self.ports.len() > MAX_PROBE_PORTS {
            return Err(format!("ports: 1 to {MAX_PROBE_PORTS} ports"));
        }
        if self.ports.contains(&0) {
            return Err("ports: 0 is not a port".into());
        }
        for (name, v) in [
            ("window_ms", self.window_ms),
            ("every_ms", self.every_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if v == 0 {
                return Err(format!("{name} must be above zero"));
            }
        }
        Ok(())
    }
}

/// Agent -> gateway (`<prefix>/v1/nodes/<prober>/probe`): what probing `target` gave, QoS 0.
///
/// Sent once per request: at the first answer (the target is alive; probing stops), or, when
/// nothing answered, once every attempt has finished or the window is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub v: u32,
    /// The prober (the node of the topic).
    pub node: String,
    /// The request's `id`.
    pub id: u64,
    /// The request's `target`.
    pub target: String,
    /// Connects that finished before the report: answered, refused, failed or timed out.
    /// Attempts still under way when the report is sent are not counted; 0 means the prober
    /// could not try at all (the address did not resolve).
    pub attempts: u32,
    /// Attempts the target answered: the connection was accepted or refused (a refusal is an
    /// answer: something at that address is alive).
    pub answered: u32,
}
