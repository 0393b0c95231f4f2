//! The InfluxDB schema: from protocol messages to points ([`line`] encodes them), with Telegraf's measurement, tag and field names
//! wherever Telegraf has an equivalent, so dashboards built for Telegraf work unchanged.
//! docs/schema.md documents every measurement (the e2e suite checks it) and every host field
//! (a test here checks it).
//!
//! Pure: the timestamp of every point is the agent's sample time (`ts`), so a message written
//! twice lands on the same points.

use std::collections::BTreeMap;

use leakmon_protocol::{
    Container, ContainersReport, EngineState, EventReport, GatewayEvent, HostReport, Irq,
    NetCounters, Status,
};
use serde::{ser, Serialize};

pub mod line;

pub use line::{Line, Lines, Point, TagSet};

/// Tags every point of a node carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTags {
    /// The node name (Telegraf's `host` tag).
    pub host: String,
    /// From the node's birth, when it is in a Swarm.
    pub swarm_node_id: Option<String>,
    /// The Docker engine's name and version, from the birth: Telegraf's `engine_host` and
    /// `server_version`, on `docker` and `docker_container_*` points.
    pub engine: Option<(String, String)>,
}

impl NodeTags {
    /// The tags of every line of the node, rendered once for all of a report's lines.
    fn tag_set(&self) -> TagSet {
        TagSet::new(&mut self.pairs()[..2])
    }

    /// With the engine's tags too: the `docker` family's.
    fn pairs(&self) -> [(&'static str, &str); 4] {
        let (name, version) = self
            .engine
            .as_ref()
            .map_or(("", ""), |(n, v)| (n.as_str(), v.as_str()));
        [
            ("host", self.host.as_str()),
            ("swarm_node_id", self.swarm_node_id.as_deref().unwrap_or("")),
            ("engine_host", name),
            ("server_version", version),
        ]
    }

    fn point(&self, measurement: &'static str, ts: i64) -> Point {
        Point::new(measurement, ts)
            .tag("host", self.host.as_str())
            .tag_opt("swarm_node_id", self.swarm_node_id.as_deref())
    }
}

/// Telegraf's `device` tag is the device name without `/dev/`.
fn device_name(dev: &str) -> &str {
    dev.strip_prefix("/dev/").unwrap_or(dev)
}

/// How one part of a host report (a struct of the protocol) becomes one point.
///
/// Every number and boolean of the part becomes a field, in declaration order, under its
/// protocol name unless `renames` gives Telegraf's; unsigned integers are written as integers
/// (saturating), floats as floats (left out when not finite). Text fields become tags when
/// listed in `tags` and are left out otherwise, as are absent optional fields. So a new
/// metric in one of these structs reaches the database without a change here; the tests
/// below fail if a field of the report is neither written nor listed as left out, or is
/// missing from docs/schema.md.
struct Part {
    measurement: &'static str,
    /// Text fields that name the item (a mount, an interface, a sensor): Telegraf's tags.
    tags: &'static [&'static str],
    /// Protocol name -> Telegraf's, only where they differ.
    renames: &'static [(&'static str, &'static str)],
}

const CPU: Part = Part {
    measurement: "cpu",
    tags: &[],
    renames: &[
        ("user", "usage_user"),
        ("nice", "usage_nice"),
        ("system", "usage_system"),
        ("idle", "usage_idle"),
        ("iowait", "usage_iowait"),
        ("irq", "usage_irq"),
        ("softirq", "usage_softirq"),
        ("steal", "usage_steal"),
        ("guest", "usage_guest"),
        ("guest_nice", "usage_guest_nice"),
    ],
};
const MEM: Part = Part {
    measurement: "mem",
    tags: &[],
    renames: &[("buffers", "buffered")],
};
const SWAP: Part = Part {
    measurement: "swap",
    tags: &[],
    renames: &[],
};
/// From [`leakmon_protocol::Load`]; the report's own scalars are added by hand.
const SYSTEM: Part = Part {
    measurement: "system",
    tags: &[],
    renames: &[],
};
const DISK: Part = Part {
    measurement: "disk",
    tags: &["path", "device", "fstype"],
    renames: &[],
};
const NET: Part = Part {
    measurement: "net",
    tags: &["interface"],
    renames: &[],
};
const TEMP: Part = Part {
    measurement: "temp",
    tags: &["sensor"],
    renames: &[],
};
const DISKIO: Part = Part {
    measurement: "diskio",
    tags: &["name"],
    renames: &[],
};
const KERNEL: Part = Part {
    measurement: "kernel",
    tags: &[],
    renames: &[],
};
const PROCESSES: Part = Part {
    measurement: "processes",
    tags: &[],
    renames: &[],
};
/// Telegraf's `linux_sysctl_fs` names, dashes and all.
const FILES: Part = Part {
    measurement: "linux_sysctl_fs",
    tags: &[],
    renames: &[("allocated", "file-nr"), ("max", "file-max")],
};
/// Telegraf's `netstat`.
const SOCKETS: Part = Part {
    measurement: "netstat",
    tags: &[],
    renames: &[],
};
/// From [`leakmon_protocol::BufferStats`], after the header's `run` and `seq`.
const AGENT: Part = Part {
    measurement: "leakmon_agent",
    tags: &[],
    renames: &[],
};

impl Part {
    /// This part's protocol name `name` as written: Telegraf's, where it differs.
    fn renamed(&self, name: &'static str) -> &'static str {
        self.renames
            .iter()
            .find(|(from, _)| *from == name)
            .map_or(name, |(_, to)| *to)
    }

    /// A line of this part: the node's tags, `extra` and the text fields named in `tags`,
    /// then every number and boolean as a field ([`Part::fill`]).
    fn line<'l>(
        &self,
        lines: &'l mut Lines,
        node: &TagSet,
        extra: (&str, &str),
        ts: i64,
        part: &impl Serialize,
    ) -> Line<'l> {
        let fields = fields(part);
        let mut tags = [("", ""); 6];
        tags[0] = extra;
        let texts = fields.iter().filter_map(|(name, value)| match value {
            serde_json::Value::String(s) if self.tags.contains(name) => {
                let v = if *name == "device" { device_name(s) } else { s };
                Some((self.renamed(name), v))
            }
            _ => None,
        });
        for (slot, t) in tags[1..].iter_mut().zip(texts) {
            *slot = t;
        }
        let line = lines.line(self.measurement, node, &mut tags, ts);
        self.fill(line, &fields)
    }

    /// Every number and boolean of the part as a field, in declaration order, under its
    /// (renamed) protocol name.
    fn fill<'l>(&self, mut l: Line<'l>, fields: &[(&'static str, serde_json::Value)]) -> Line<'l> {
        for (name, value) in fields {
            let key = self.renamed(name);
            l = match value {
                serde_json::Value::Number(x) => match (x.as_u64(), x.as_i64(), x.as_f64()) {
                    (Some(u), _, _) => l.uint(key, u),
                    (None, Some(i), _) => l.int(key, i),
                    (None, None, Some(f)) => l.float(key, f),
                    (None, None, None) => l,
                },
                serde_json::Value::Bool(b) => l.boolean(key, *b),
                // Text (a tag, or untagged), absent options (and non-finite floats, which
                // serde_json makes null), nested values: no field.
                _ => l,
            };
        }
        l
    }
}

/// `cpu` (from the second sample on), `mem`, `swap`, `system`, one `disk`, `net` and `temp`
/// per mount, interface and sensor, and `leakmon_agent`: appended to `lines`.
pub fn host_lines(lines: &mut Lines, n: &NodeTags, r: &HostReport) {
    let ts = r.header.ts;
    let node = n.tag_set();
    let none = ("", "");
    if let Some(c) = &r.cpu {
        CPU.line(lines, &node, ("cpu", "cpu-total"), ts, c);
    }
    // Telegraf's `percpu`: the same fields, one line per CPU
    for c in &r.cores {
        CPU.line(lines, &node, ("cpu", &c.cpu), ts, &c.usage);
    }
    // Telegraf's `mem` repeats two numbers of `swap`.
    MEM.line(lines, &node, none, ts, &r.mem)
        .uint("swap_total", r.swap.total)
        .uint("swap_free", r.swap.free);
    SWAP.line(lines, &node, none, ts, &r.swap);
    // The report's own scalars are listed by hand: with its header flattened into it, serde
    // hands the report over as a map, whose keys are not `'static` as a part's names are.
    SYSTEM
        .line(lines, &node, none, ts, &r.load)
        .uint("n_cpus", u64::from(r.n_cpus))
        .uint("uptime", r.uptime_s);
    for d in &r.disks {
        DISK.line(lines, &node, none, ts, d);
    }
    for i in &r.net {
        NET.line(lines, &node, none, ts, i);
    }
    for t in &r.temps {
        TEMP.line(lines, &node, none, ts, t);
    }
    for d in &r.diskio {
        DISKIO.line(lines, &node, none, ts, d);
    }
    if let Some(k) = &r.kernel {
        KERNEL.line(lines, &node, none, ts, k);
    }
    if let Some(p) = &r.processes {
        PROCESSES.line(lines, &node, none, ts, p);
    }
    if let Some(f) = &r.files {
        FILES.line(lines, &node, none, ts, f);
    }
    if let Some(c) = &r.nstat {
        nstat_lines(lines, &node, ts, c);
    }
    if let Some(s) = &r.sockets {
        SOCKETS.line(lines, &node, none, ts, s);
    }
    // Telegraf reads these files as text into floats.
    if let Some(c) = &r.conntrack {
        lines
            .line("conntrack", &node, &mut [], ts)
            .float("ip_conntrack_count", c.count as f64)
            .float("ip_conntrack_max", c.max as f64);
    }
    irq_lines(lines, &node, ts, "interrupts", &r.interrupts);
    irq_lines(lines, &node, ts, "soft_interrupts", &r.soft_interrupts);
    let agent = lines
        .line(AGENT.measurement, &node, &mut [], ts)
        .uint("run", r.header.run)
        .uint("seq", r.header.seq);
    AGENT.fill(agent, &fields(&r.buffer));
}

/// Telegraf's `nstat`: one line per file (`name=netstat`, `snmp`, `snmp6`), each counter a
/// field named by its line's prefix and its name (`TcpExtListenDrops`); and its `net`
/// `interface=all`: the `snmp` counters as `tcp_activeopens` (both lowercased). The names come
/// from the agent: one InfluxDB cannot take as a field key (empty, `time`) is left out, or the
/// whole batch would be refused.
fn nstat_lines(lines: &mut Lines, node: &TagSet, ts: i64, c: &NetCounters) {
    fn add<'l>(l: Line<'l>, key: &str, v: i64) -> Line<'l> {
        if key.is_empty() || key == "time" {
            l
        } else {
            l.int(key, v)
        }
    }
    /// (line, name, count) of every counter of a file read by lines.
    fn each(
        m: &BTreeMap<String, BTreeMap<String, i64>>,
    ) -> impl Iterator<Item = (&String, &String, i64)> {
        m.iter()
            .flat_map(|(line, counters)| counters.iter().map(move |(k, v)| (line, k, *v)))
    }
    // (one buffer for the names made of two parts)
    let mut key = String::new();
    for (name, m) in [("netstat", &c.netstat), ("snmp", &c.snmp)] {
        let mut l = lines.line("nstat", node, &mut [("name", name)], ts);
        for (line, k, v) in each(m) {
            key.clear();
            key.push_str(line);
            key.push_str(k);
            l = add(l, &key, v);
        }
    }
    let mut l = lines.line("nstat", node, &mut [("name", "snmp6")], ts);
    for (k, v) in &c.snmp6 {
        l = add(l, k, *v);
    }
    drop(l);
    let mut l = lines.line("net", node, &mut [("interface", "all")], ts);
    for (line, k, v) in each(&c.snmp) {
        key.clear();
        key.push_str(&line.to_lowercase());
        key.push('_');
        key.push_str(&k.to_lowercase());
        l = add(l, &key, v);
    }
}

/// Telegraf's `interrupts` and `soft_interrupts`: a line per IRQ, tagged by `irq`, `type`
/// and `device`, with a field per CPU (`CPU0`) and their `total`.
fn irq_lines(lines: &mut Lines, node: &TagSet, ts: i64, measurement: &'static str, irqs: &[Irq]) {
    use std::fmt::Write as _;
    let mut key = String::new();
    for i in irqs {
        let mut tags = [
            ("irq", i.irq.as_str()),
            ("type", i.kind.as_str()),
            ("device", i.device.as_str()),
        ];
        let mut l = lines.line(measurement, node, &mut tags, ts);
        for (cpu, count) in i.cpus.iter().enumerate() {
            key.clear();
            let _ = write!(key, "CPU{cpu}");
            l = l.uint(&key, *count);
        }
        l.uint(
            "total",
            i.cpus.iter().fold(0u64, |a, b| a.saturating_add(*b)),
        );
    }
}

/// The fields of a struct in declaration order, each under the name serde gives it (which is
/// `'static`, as a point's keys must be) with its value as JSON.
fn fields(part: &impl Serialize) -> Vec<(&'static str, serde_json::Value)> {
    let mut out = Vec::with_capacity(16);
    // Anything but a struct is refused, leaving `out` empty: no fields.
    let _ = part.serialize(Fields(&mut out));
    out
}

/// A serde serializer that accepts exactly one struct and collects its fields.
struct Fields<'a>(&'a mut Vec<(&'static str, serde_json::Value)>);

/// What [`Fields`] says to anything but a struct.
#[derive(Debug)]
struct NotAStruct;

impl std::fmt::Display for NotAStruct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a struct")
    }
}

impl std::error::Error for NotAStruct {}

impl ser::Error for NotAStruct {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAStruct
    }
}

/// Rejects the value kinds a part cannot be.
macro_rules! not_a_struct {
    ($($method:ident($($arg:ty),*);)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<(), NotAStruct> {
            Err(NotAStruct)
        }
    )*};
}

impl<'a> ser::Serializer for Fields<'a> {
    type Ok = ();
    type Error = NotAStruct;
    type SerializeSeq = ser::Impossible<(), NotAStruct>;
    type SerializeTuple = ser::Impossible<(), NotAStruct>;
    type SerializeTupleStruct = ser::Impossible<(), NotAStruct>;
    type SerializeTupleVariant = ser::Impossible<(), NotAStruct>;
    type SerializeMap = ser::Impossible<(), NotAStruct>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), NotAStruct>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, NotAStruct> {
        Ok(self)
    }

    not_a_struct! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAStruct> {
        Err(NotAStruct)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAStruct> {
        Err(NotAStruct)
    }
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = NotAStruct;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), NotAStruct> {
        // Protocol values always convert (no maps with non-string keys); should one not, the
        // field is left out like any other value without a number, boolean or text.
        let v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.0.push((key, v));
        Ok(())
    }

    fn end(self) -> Result<(), NotAStruct> {
        Ok(())
    }
}

/// Telegraf's split of an image reference into `container_image` and `container_version`:
/// a registry host (a first path part with `.` or `:`, or `localhost`) is kept aside, the rest
/// is cut at its last `:` (`unknown` without one), and the host put back. As Telegraf, a
/// digest is not special: `nginx:1.25@sha256:ab12` gives `nginx:1.25@sha256` and `ab12`
/// (kept so, to match the series a Telegraf writes).
pub fn split_image(image: &str) -> (&str, &str) {
    // (the registry host and the name are the front of the reference: one slice of it)
    let host = match image.split_once('/') {
        Some((d, _)) if d.contains(['.', ':']) || d == "localhost" => d.len() + 1,
        _ => 0,
    };
    match image[host..].rfind(':') {
        Some(at) => (&image[..host + at], &image[host + at + 1..]),
        None => (image, "unknown"),
    }
}

/// Tag keys a container label may not take on any `docker_container_*` point: the tags one
/// of those measurements sets itself (a label `cpu` would clash with `cpu=cpu-total`).
const MEASUREMENT_TAGS: [&str; 3] = ["cpu", "network", "device"];

/// Tag keys a container label may not take (leakmon's own).
const OWN_TAGS: [&str; 8] = [
    "host",
    "swarm_node_id",
    "container_name",
    "container_image",
    "container_version",
    "container_status",
    "engine_host",
    "server_version",
];

/// Which container labels become tags (`influxdb.docker_label_include`, `_exclude`: Telegraf's
/// `docker_label_include`/`_exclude`): each pattern a key, or a prefix with a trailing `*`.
/// A label's value is a series of its own, so a label that changes with every deployment (a
/// build number, a commit) grows the database's series without bound: only the named ones are
/// taken (`config::DEFAULT_DOCKER_LABELS` by default; `["*"]` takes all, as Telegraf does).
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Labels {
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Labels {
        Labels { include, exclude }
    }

    /// Whether `pattern` names `key`: equal, or a prefix of it ending in `*`.
    fn matches(pattern: &str, key: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => pattern == key,
        }
    }

    /// Whether the label `key` becomes a tag.
    pub fn takes(&self, key: &str) -> bool {
        self.include.iter().any(|p| Self::matches(p, key))
            && !self.exclude.iter().any(|p| Self::matches(p, key))
    }
}

/// The label Swarm sets on a service's containers.
const SERVICE_LABEL: &str = "com.docker.swarm.service.name";

/// The tags of every line of a container: the node's and the engine's, the container's name,
/// image, version and state, and the labels taken.
fn container_tags<'a>(
    n: &'a NodeTags,
    c: &'a Container,
    labels: &Labels,
    pairs: &mut Vec<(&'a str, &'a str)>,
) {
    let (image, version) = split_image(&c.image);
    pairs.clear();
    pairs.extend(n.pairs());
    pairs.extend([
        ("container_name", c.name.as_str()),
        ("container_image", image),
        ("container_version", version),
        ("container_status", c.state.as_str()),
    ]);
    // the labels taken a tag each under its own key, as Telegraf's docker input does
    for (k, v) in &c.labels {
        if labels.takes(k)
            && !OWN_TAGS.contains(&k.as_str())
            && !MEASUREMENT_TAGS.contains(&k.as_str())
        {
            pairs.push((k.as_str(), v.as_str()));
        }
    }
    // an agent from before labels were reported still names its Swarm service
    if !pairs
        .iter()
        .any(|(k, v)| *k == SERVICE_LABEL && !v.is_empty())
    {
        if let Some(s) = &c.swarm_service {
            pairs.push((SERVICE_LABEL, s.as_str()));
        }
    }
}

/// A line of a container: its tags and `extra`, then its id, the first field of each.
fn container_line<'l>(
    lines: &'l mut Lines,
    measurement: &str,
    tags: &TagSet,
    extra: &mut [(&str, &str)],
    ts: i64,
    id: &str,
) -> Line<'l> {
    lines
        .line(measurement, tags, extra, ts)
        .string("container_id", id)
}

/// `docker` (the engine's counts), then per container `docker_container_cpu`, `_net`,
/// `_blkio`, `_mem`, `_status` and `_health` (each when the agent measured it): appended to
/// `lines`. Each container's tags are rendered once for its lines.
pub fn container_lines(lines: &mut Lines, n: &NodeTags, r: &ContainersReport, labels: &Labels) {
    let ts = r.header.ts;
    let count = |state: &str| r.containers.iter().filter(|c| c.state == state).count() as i64;
    let engine = TagSet::new(&mut n.pairs());
    let mut docker = lines
        .line("docker", &engine, &mut [], ts)
        .boolean("engine_ok", r.engine == EngineState::Ok)
        .int("n_containers", r.containers.len() as i64)
        .int("n_containers_running", count("running"))
        .int("n_containers_paused", count("paused"))
        .int(
            "n_containers_stopped",
            r.containers
                .iter()
                .filter(|c| !matches!(c.state.as_str(), "running" | "paused"))
                .count() as i64,
        )
        .int(
            "n_containers_unhealthy",
            r.containers
                .iter()
                .filter(|c| c.health == leakmon_protocol::Health::Unhealthy)
                .count() as i64,
        );
    if let Some(e) = &r.engine_info {
        // Telegraf sends `memory_total` as a point of its own with the same tags and time,
        // which InfluxDB merges into this one
        docker = docker
            .uint("n_images", e.images)
            .uint("n_cpus", e.cpus)
            .uint("memory_total", e.memory_total)
            .uint("n_goroutines", e.goroutines)
            .uint("n_used_file_descriptors", e.file_descriptors)
            .uint("n_listener_events", e.event_listeners);
    }
    // (ended here: the containers' lines follow it)
    drop(docker);
    let mut pairs = Vec::with_capacity(16);
    let mut tags = TagSet::default();
    for c in &r.containers {
        container_tags(n, c, labels, &mut pairs);
        tags.set(&mut pairs);
        let id = c.id.as_str();
        if c.cpu_percent.is_some() || c.cpu_time.is_some() {
            let mut l = container_line(
                lines,
                "docker_container_cpu",
                &tags,
                &mut [("cpu", "cpu-total")],
                ts,
                id,
            );
            if let Some(pct) = c.cpu_percent {
                l = l.float("usage_percent", pct);
            }
            if let Some(t) = &c.cpu_time {
                l = l
                    .uint("usage_total", t.total_ns)
                    .uint("usage_in_usermode", t.user_ns)
                    .uint("usage_in_kernelmode", t.kernel_ns)
                    .uint("throttling_periods", t.periods)
                    .uint("throttling_throttled_periods", t.throttled_periods)
                    .uint("throttling_throttled_time", t.throttled_ns);
            }
        }
        // Telegraf's default (`total_include`): one `total` line each, no per-device ones.
        if let Some(net) = &c.net {
            container_line(
                lines,
                "docker_container_net",
                &tags,
                &mut [("network", "total")],
                ts,
                id,
            )
            .uint("rx_bytes", net.rx_bytes)
            .uint("rx_packets", net.rx_packets)
            .uint("rx_errors", net.rx_errors)
            .uint("rx_dropped", net.rx_dropped)
            .uint("tx_bytes", net.tx_bytes)
            .uint("tx_packets", net.tx_packets)
            .uint("tx_errors", net.tx_errors)
            .uint("tx_dropped", net.tx_dropped);
        }
        if let Some(io) = &c.blkio {
            container_line(
                lines,
                "docker_container_blkio",
                &tags,
                &mut [("device", "total")],
                ts,
                id,
            )
            .uint("io_service_bytes_recursive_read", io.read_bytes)
            .uint("io_service_bytes_recursive_write", io.write_bytes)
            .uint(
                "io_service_bytes_recursive_total",
                io.read_bytes.saturating_add(io.write_bytes),
            )
            .uint("io_serviced_recursive_read", io.reads)
            .uint("io_serviced_recursive_write", io.writes)
            .uint(
                "io_serviced_recursive_total",
                io.reads.saturating_add(io.writes),
            );
        }
        if let Some(usage) = c.mem_usage {
            let mut l = container_line(lines, "docker_container_mem", &tags, &mut [], ts, id)
                .uint("usage", usage);
            if let Some(limit) = c.mem_limit.filter(|l| *l > 0) {
                l = l
                    .uint("limit", limit)
                    .float("usage_percent", usage as f64 * 100.0 / limit as f64);
            }
        }
        let mut st = container_line(lines, "docker_container_status", &tags, &mut [], ts, id)
            .boolean("oomkilled", c.oom_killed)
            .uint("restart_count", c.restart_count);
        if let Some(code) = c.exit_code {
            st = st.int("exitcode", code);
        }
        if let Some(started) = c.started_at {
            st = st.int("started_at", started.saturating_mul(1_000_000));
            if c.state == "running" {
                st = st.int("uptime_ns", (ts - started).max(0).saturating_mul(1_000_000));
            }
        }
        drop(st);
        if c.health != leakmon_protocol::Health::None {
            container_line(lines, "docker_container_health", &tags, &mut [], ts, id)
                .string("health_status", c.health.as_str())
                .uint("failing_streak", c.failing_streak);
        }
    }
}

/// Telegraf's `docker_swarm`: per service, its tasks running and desired (written by the
/// active gateway beside the Swarm leader, so once per Swarm). `host` is that gateway's.
pub fn swarm_point(
    host: &str,
    ts: i64,
    id: &str,
    name: &str,
    mode: &str,
    running: u64,
    desired: Option<u64>,
) -> Point {
    let p = Point::new("docker_swarm", ts)
        .tag("host", host)
        .tag("service_id", id)
        .tag("service_name", name)
        .tag("service_mode", mode)
        .uint("tasks_running", running);
    match desired {
        Some(d) => p.uint("tasks_desired", d),
        None => p,
    }
}

pub fn event_point(n: &NodeTags, e: &EventReport) -> Point {
    let mut p = n
        .point("leakmon_container_event", e.header.ts)
        .tag("action", e.action.as_str())
        .tag("container_name", e.container_name.as_str())
        .tag_opt("com.docker.swarm.service.name", e.swarm_service.as_deref())
        .string("container_id", e.container_id.as_str())
        .string("container_image", e.image.as_str());
    if let Some(code) = e.exit_code {
        p = p.int("exitcode", code);
    }
    if let Some(sig) = &e.signal {
        p = p.string("signal", sig.as_str());
    }
    if let Some(h) = e.health {
        p = p.string("health_status", h.as_str());
    }
    p
}

/// A node's liveness state change (`online`, `offline`, `stale`).
pub fn node_point(n: &NodeTags, ts: i64, state: &str, s: Option<&Status>) -> Point {
    let mut p = n.point("leakmon_node", ts).string("state", state);
    if let Some(s) = s {
        p = p.uint("seq", s.seq);
        if let Some(r) = s.reason {
            p = p.string(
                "reason",
                match r {
                    leakmon_protocol::OfflineReason::Lost => "lost",
                    leakmon_protocol::OfflineReason::Shutdown => "shutdown",
                },
            );
        }
        if let Some(id) = &s.identity {
            p = p.string("agent_version", id.agent_version.as_str());
        }
    }
    p
}

/// A gateway event (`node_down`, `drain`, `failover`, ...): measurement `leakmon_event`.
pub fn gateway_event_point(e: &GatewayEvent) -> Point {
    Point::new("leakmon_event", e.ts)
        .tag("kind", e.kind.as_str())
        .tag_opt("host", e.node.as_deref())
        .tag("gateway", e.gateway.as_str())
        .string("message", e.message.as_str())
        .string(
            "details",
            serde_json::Value::Object(e.details.clone()).to_string(),
        )
        .boolean("dry_run", e.dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::{
        BufferStats, CoreUsage, CpuUsage, Disk, DiskIo, GatewayEvent, Header, Health, Identity,
        Load, Memory, NetIf, NodeState, OfflineReason, Swap, Temperature,
    };

    const TS: i64 = 1_795_719_775_612;

    fn tags() -> NodeTags {
        NodeTags {
            host: "edge-01".into(),
            swarm_node_id: Some("x2kq".into()),
            engine: Some(("edge-01.lan".into(), "20.10.24".into())),
        }
    }

    fn lines(points: &[Point]) -> String {
        points.iter().map(Point::to_line).collect()
    }

    fn host_text(n: &NodeTags, r: &HostReport) -> String {
        let mut l = Lines::new(None);
        host_lines(&mut l, n, r);
        l.into_string()
    }

    fn containers_text(n: &NodeTags, r: &ContainersReport, labels: &Labels) -> String {
        let mut l = Lines::new(None);
        container_lines(&mut l, n, r, labels);
        l.into_string()
    }

    /// The lines of a host report read back.
    fn host_parsed(n: &NodeTags, r: &HostReport) -> Vec<line::Parsed> {
        host_text(n, r).lines().map(line::parse).collect()
    }

    fn header(seq: u64, ts: i64) -> Header {
        Header {
            v: 1,
            node: "edge-01".into(),
            run: 3,
            seq,
            ts,
            mono: None,
        }
    }

    /// Every field set, each to a value of its own, and the edge cases of the mapping: a
    /// device outside /dev, a count beyond i64, a percentage that is not a number.
    fn host_report() -> HostReport {
        HostReport {
            header: header(1207, TS),
            hostname: "edge-01.lan".into(),
            uptime_s: 676,
            n_cpus: 4,
            cpu: Some(CpuUsage {
                user: 11.5,
                nice: 0.25,
                system: 3.0,
                idle: 80.125,
                iowait: 1.5,
                irq: 0.5,
                softirq: 0.75,
                steal: 0.0625,
                guest: 2.0,
                guest_nice: 0.3125,
            }),
            load: Load {
                load1: 1.12,
                load5: 0.51,
                load15: 0.23,
            },
            mem: Memory {
                total: 4_123_456_512,
                available: 3_021_234_176,
                used: 927_352_576,
                free: 2_029_932_032,
                buffers: 6_709_248,
                cached: 1_012_508_160,
                used_percent: 22.49,
                available_percent: 73.27,
            },
            swap: Swap {
                total: 2_147_483_648,
                used: 1_048_576,
                free: 2_146_435_072,
                used_percent: 0.048828125,
                swapped_in: 40_960,
                swapped_out: 122_880,
            },
            cores: vec![
                CoreUsage {
                    cpu: "cpu0".into(),
                    usage: CpuUsage {
                        user: 20.5,
                        idle: 79.5,
                        ..Default::default()
                    },
                },
                CoreUsage {
                    cpu: "cpu1".into(),
                    usage: CpuUsage {
                        system: 1.25,
                        idle: 98.75,
                        ..Default::default()
                    },
                },
            ],
            diskio: vec![DiskIo {
                name: "mmcblk0".into(),
                reads: 1,
                merged_reads: 2,
                read_bytes: 3,
                read_time: 4,
                writes: 5,
                merged_writes: 6,
                write_bytes: 7,
                write_time: 8,
                iops_in_progress: 9,
                io_time: 10,
                weighted_io_time: 11,
            }],
            disks: vec![
                Disk {
                    path: "/".into(),
                    device: "/dev/mmcblk0p2".into(),
                    fstype: "ext4".into(),
                    total: 31_068_966_912,
                    used: 6_855_440_896,
                    free: 22_717_308_416,
                    used_percent: 23.18,
                    inodes_total: 1_933_312,
                    inodes_used: 187_123,
                    inodes_free: 1_746_189,
                },
                Disk {
                    path: "/tank/my data".into(),
                    device: "tank/data".into(),
                    fstype: "zfs".into(),
                    total: u64::MAX,
                    used: 1,
                    free: 2,
                    used_percent: f64::NAN,
                    inodes_total: 3,
                    inodes_used: 4,
                    inodes_free: 5,
                },
            ],
            net: vec![NetIf {
                interface: "eth0".into(),
                bytes_recv: 123_456,
                bytes_sent: 654_321,
                packets_recv: 1000,
                packets_sent: 900,
                err_in: 1,
                err_out: 2,
                drop_in: 3,
                drop_out: 4,
            }],
            temps: vec![
                Temperature {
                    sensor: "cpu-thermal".into(),
                    temp: 48.3,
                },
                Temperature {
                    sensor: "coretemp_package_id_0".into(),
                    temp: -5.5,
                },
            ],
            kernel: Some(leakmon_protocol::Kernel {
                boot_time: 1_795_719_100,
                context_switches: 25_190,
                interrupts: 8_140,
                processes_forked: 4_171,
                entropy_avail: 256,
            }),
            processes: Some(leakmon_protocol::Processes {
                running: 2,
                sleeping: 150,
                blocked: 1,
                zombies: 3,
                stopped: 4,
                dead: 5,
                paging: 6,
                idle: 40,
                unknown: 7,
                total: 218,
                total_threads: 480,
            }),
            files: Some(leakmon_protocol::FileHandles {
                allocated: 1_632,
                max: 9_223_372_036_854_775_807,
            }),
            nstat: Some(NetCounters {
                netstat: [(
                    "TcpExt".to_owned(),
                    [
                        ("ListenDrops".to_owned(), 956),
                        ("SyncookiesSent".to_owned(), 0),
                    ]
                    .into(),
                )]
                .into(),
                snmp: [
                    ("Ip".to_owned(), [("Forwarding".to_owned(), 1)].into()),
                    (
                        "Tcp".to_owned(),
                        [("ActiveOpens".to_owned(), 12), ("MaxConn".to_owned(), -1)].into(),
                    ),
                ]
                .into(),
                snmp6: [("Ip6InReceives".to_owned(), 542)].into(),
            }),
            sockets: Some(leakmon_protocol::Sockets {
                tcp_established: 1,
                tcp_syn_sent: 2,
                tcp_syn_recv: 3,
                tcp_fin_wait1: 4,
                tcp_fin_wait2: 5,
                tcp_time_wait: 6,
                tcp_close: 7,
                tcp_close_wait: 8,
                tcp_last_ack: 9,
                tcp_listen: 10,
                tcp_closing: 11,
                tcp_none: 12,
                udp_socket: 13,
            }),
            conntrack: Some(leakmon_protocol::Conntrack {
                count: 24,
                max: 262_144,
            }),
            interrupts: vec![
                Irq {
                    irq: "11".into(),
                    kind: "GICv2".into(),
                    device: "30 Level arch_timer".into(),
                    cpus: vec![12_345, 6_789],
                },
                Irq {
                    irq: "NMI".into(),
                    kind: "Non-maskable interrupts".into(),
                    device: String::new(),
                    cpus: vec![1, u64::MAX],
                },
            ],
            soft_interrupts: vec![Irq {
                irq: "TIMER".into(),
                kind: String::new(),
                device: String::new(),
                cpus: vec![500, 400],
            }],
            buffer: BufferStats {
                queued: 2,
                queued_bytes: 512,
                spooled_bytes: 4096,
                dropped_total: 7,
            },
            cut: 0,
        }
    }

    #[test]
    fn host_lines_pin_every_measurement_tag_and_field() {
        assert_eq!(host_text(&tags(), &host_report()), HOST_LINES);
    }

    const HOST_LINES: &str = r#"cpu,cpu=cpu-total,host=edge-01,swarm_node_id=x2kq usage_user=11.5,usage_nice=0.25,usage_system=3,usage_idle=80.125,usage_iowait=1.5,usage_irq=0.5,usage_softirq=0.75,usage_steal=0.0625,usage_guest=2,usage_guest_nice=0.3125 1795719775612
cpu,cpu=cpu0,host=edge-01,swarm_node_id=x2kq usage_user=20.5,usage_nice=0,usage_system=0,usage_idle=79.5,usage_iowait=0,usage_irq=0,usage_softirq=0,usage_steal=0,usage_guest=0,usage_guest_nice=0 1795719775612
cpu,cpu=cpu1,host=edge-01,swarm_node_id=x2kq usage_user=0,usage_nice=0,usage_system=1.25,usage_idle=98.75,usage_iowait=0,usage_irq=0,usage_softirq=0,usage_steal=0,usage_guest=0,usage_guest_nice=0 1795719775612
mem,host=edge-01,swarm_node_id=x2kq total=4123456512i,available=3021234176i,used=927352576i,free=2029932032i,buffered=6709248i,cached=1012508160i,used_percent=22.49,available_percent=73.27,swap_total=2147483648i,swap_free=2146435072i 1795719775612
swap,host=edge-01,swarm_node_id=x2kq total=2147483648i,used=1048576i,free=2146435072i,used_percent=0.048828125,in=40960i,out=122880i 1795719775612
system,host=edge-01,swarm_node_id=x2kq load1=1.12,load5=0.51,load15=0.23,n_cpus=4i,uptime=676i 1795719775612
disk,device=mmcblk0p2,fstype=ext4,host=edge-01,path=/,swarm_node_id=x2kq total=31068966912i,used=6855440896i,free=22717308416i,used_percent=23.18,inodes_total=1933312i,inodes_used=187123i,inodes_free=1746189i 1795719775612
disk,device=tank/data,fstype=zfs,host=edge-01,path=/tank/my\ data,swarm_node_id=x2kq total=9223372036854775807i,used=1i,free=2i,inodes_total=3i,inodes_used=4i,inodes_free=5i 1795719775612
net,host=edge-01,interface=eth0,swarm_node_id=x2kq bytes_recv=123456i,bytes_sent=654321i,packets_recv=1000i,packets_sent=900i,err_in=1i,err_out=2i,drop_in=3i,drop_out=4i 1795719775612
temp,host=edge-01,sensor=cpu-thermal,swarm_node_id=x2kq temp=48.3 1795719775612
temp,host=edge-01,sensor=coretemp_package_id_0,swarm_node_id=x2kq temp=-5.5 1795719775612
diskio,host=edge-01,name=mmcblk0,swarm_node_id=x2kq reads=1i,merged_reads=2i,read_bytes=3i,read_time=4i,writes=5i,merged_writes=6i,write_bytes=7i,write_time=8i,iops_in_progress=9i,io_time=10i,weighted_io_time=11i 1795719775612
kernel,host=edge-01,swarm_node_id=x2kq boot_time=1795719100i,context_switches=25190i,interrupts=8140i,processes_forked=4171i,entropy_avail=256i 1795719775612
processes,host=edge-01,swarm_node_id=x2kq running=2i,sleeping=150i,blocked=1i,zombies=3i,stopped=4i,dead=5i,paging=6i,idle=40i,unknown=7i,total=218i,total_threads=480i 1795719775612
linux_sysctl_fs,host=edge-01,swarm_node_id=x2kq file-nr=1632i,file-max=9223372036854775807i 1795719775612
nstat,host=edge-01,name=netstat,swarm_node_id=x2kq TcpExtListenDrops=956i,TcpExtSyncookiesSent=0i 1795719775612
nstat,host=edge-01,name=snmp,swarm_node_id=x2kq IpForwarding=1i,TcpActiveOpens=12i,TcpMaxConn=-1i 1795719775612
nstat,host=edge-01,name=snmp6,swarm_node_id=x2kq Ip6InReceives=542i 1795719775612
net,host=edge-01,interface=all,swarm_node_id=x2kq ip_forwarding=1i,tcp_activeopens=12i,tcp_maxconn=-1i 1795719775612
netstat,host=edge-01,swarm_node_id=x2kq tcp_established=1i,tcp_syn_sent=2i,tcp_syn_recv=3i,tcp_fin_wait1=4i,tcp_fin_wait2=5i,tcp_time_wait=6i,tcp_close=7i,tcp_close_wait=8i,tcp_last_ack=9i,tcp_listen=10i,tcp_closing=11i,tcp_none=12i,udp_socket=13i 1795719775612
conntrack,host=edge-01,swarm_node_id=x2kq ip_conntrack_count=24,ip_conntrack_max=262144 1795719775612
interrupts,device=30\ Level\ arch_timer,host=edge-01,irq=11,swarm_node_id=x2kq,type=GICv2 CPU0=12345i,CPU1=6789i,total=19134i 1795719775612
interrupts,host=edge-01,irq=NMI,swarm_node_id=x2kq,type=Non-maskable\ interrupts CPU0=1i,CPU1=9223372036854775807i,total=9223372036854775807i 1795719775612
soft_interrupts,host=edge-01,irq=TIMER,swarm_node_id=x2kq CPU0=500i,CPU1=400i,total=900i 1795719775612
leakmon_agent,host=edge-01,swarm_node_id=x2kq run=3i,seq=1207i,queued=2i,queued_bytes=512i,spooled_bytes=4096i,dropped_total=7i 1795719775612
"#;

    #[test]
    fn counter_names_influxdb_cannot_take_are_left_out() {
        let c = NetCounters {
            snmp6: [
                ("time".to_owned(), 1),
                (String::new(), 2),
                ("Ip6InReceives".to_owned(), 3),
            ]
            .into(),
            ..Default::default()
        };
        let mut l = Lines::new(None);
        nstat_lines(&mut l, &tags().tag_set(), 5, &c);
        let out = l.into_string();
        assert_eq!(
            out,
            "nstat,host=edge-01,name=snmp6,swarm_node_id=x2kq Ip6InReceives=3i 5\n"
        );
    }

    #[test]
    fn first_host_sample_has_no_cpu_point_and_no_swarm_tag() {
        let mut r = host_report();
        r.cpu = None;
        r.cores.clear();
        r.disks.clear();
        r.net.clear();
        r.temps.clear();
        r.diskio.clear();
        (r.kernel, r.processes, r.files) = (None, None, None);
        (r.nstat, r.sockets, r.conntrack) = (None, None, None);
        r.interrupts.clear();
        r.soft_interrupts.clear();
        let n = NodeTags {
            host: "edge-01".into(),
            swarm_node_id: None,
            engine: None,
        };
        let want: String = HOST_LINES
            .lines()
            .filter(|l| {
                ["mem,", "swap,", "system,", "leakmon_agent,"]
                    .iter()
                    .any(|m| l.starts_with(m))
            })
            .map(|l| l.replace(",swarm_node_id=x2kq", "") + "\n")
            .collect();
        assert_eq!(host_text(&n, &r), want);
    }

    /// Fields of a host report deliberately not written, and why.
    const NOT_WRITTEN: &[(&str, &str)] = &[
        ("v", "the protocol version, checked by the decoder"),
        (
            "node",
            "the `host` tag, from the topic (the decoder checks they agree)",
        ),
        ("hostname", "in the birth; Telegraf has no such field"),
    ];

    /// Gives every number and text of a JSON value a value of its own; returns each leaf's
    /// path (`disks.total`) and its new value.
    fn distinct(v: &mut serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
        use serde_json::Value;
        let next = 1000 + out.len() as u64;
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    distinct(x, &p, out);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| distinct(x, path, out)),
            Value::Number(n) if n.is_f64() => *v = (next as f64 + 0.5).into(),
            Value::Number(_) => *v = next.into(),
            Value::String(_) => *v = format!("s{next}").into(),
            Value::Bool(_) => *v = true.into(),
            Value::Null => {}
        }
        if !matches!(v, Value::Object(_) | Value::Array(_) | Value::Null) {
            out.push((path.to_owned(), v.clone()));
        }
    }

    /// A new field of a part (cpu, mem, a disk, ...) is written by itself; a new field of the
    /// report itself, or a new part, needs a line in `host_lines` (or in `NOT_WRITTEN`): this
    /// test says which. `host_report()` sets every part, so a new one must be set there too.
    #[test]
    fn every_host_report_field_is_written_or_listed_as_not_written() {
        let mut r = host_report();
        r.disks.truncate(1); // the second one holds values JSON cannot carry
        let mut json = serde_json::to_value(&r).unwrap();
        let mut leaves = Vec::new();
        distinct(&mut json, "", &mut leaves);
        let r: HostReport = serde_json::from_value(json).unwrap();
        let points = host_parsed(&tags(), &r);
        for (path, leaf) in &leaves {
            let name = path.rsplit('.').next().unwrap_or(path);
            if path == "ts" {
                assert!(points.iter().all(|p| Some(p.ts_ms) == leaf.as_i64()));
                continue;
            }
            if NOT_WRITTEN.iter().any(|(n, _)| n == path) {
                continue;
            }
            let written = points.iter().any(|p| {
                p.fields
                    .iter()
                    .any(|(k, v)| match (v.strip_suffix('i'), leaf) {
                        (Some(i), _) => leaf.as_i64() == i.parse().ok() && !leaf.is_f64(),
                        (None, serde_json::Value::Bool(l)) => k == name && *v == l.to_string(),
                        // Integers Telegraf writes as floats (conntrack) count too.
                        (None, _) => leaf.as_f64().is_some() && leaf.as_f64() == v.parse().ok(),
                    })
                    || p.tags
                        .iter()
                        .any(|(_, t)| leaf.as_str() == Some(t.as_str()))
            });
            assert!(
                written,
                "HostReport field {path} is not written: map it in host_lines (a text field: \
                 list it in its Part's tags) or list it in NOT_WRITTEN"
            );
        }
        assert!(
            leaves.iter().any(|(p, _)| p == "disks.inodes_free"),
            "the walk reaches into the parts"
        );
    }

    /// How docs/schema.md names a field whose name comes from the kernel.
    fn documented_as<'a>(measurement: &str, key: &'a str) -> &'a str {
        let proto = key
            .split_once('_')
            .is_some_and(|(p, _)| ["ip", "icmp", "icmpmsg", "tcp", "udp", "udplite"].contains(&p));
        match measurement {
            "nstat" => "<counter>",
            "net" if proto => "<proto>_<counter>",
            "interrupts" | "soft_interrupts" if key.starts_with("CPU") => "CPU<n>",
            _ => key,
        }
    }

    /// Every field and tag a host report is written with is named in its measurement's row of
    /// docs/schema.md, so a new metric cannot be left undocumented.
    #[test]
    fn docs_name_every_host_field_and_tag() {
        let doc = include_str!("../../../docs/schema.md");
        for p in host_parsed(&tags(), &host_report()) {
            let head = format!("| `{}` |", p.measurement);
            let row = doc
                .lines()
                .find(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("no row for {} in docs/schema.md", p.measurement));
            let keys = p
                .fields
                .iter()
                .map(|(k, _)| documented_as(&p.measurement, k));
            let tags = p.tags.iter().map(|(k, _)| k.as_str());
            for k in keys.chain(tags) {
                let named = row.contains(&format!("`{k}`")) || row.contains(&format!("`{k}="));
                let common = k == "host" || k == "swarm_node_id";
                assert!(
                    named || common,
                    "{k} of {} is not in docs/schema.md",
                    p.measurement
                );
            }
        }
    }

    fn container(name: &str, state: &str) -> Container {
        Container {
            id: format!("{name}-id"),
            name: name.into(),
            image: "postgres:16".into(),
            state: state.into(),
            health: Health::None,
            failing_streak: 0,
            restart_count: 0,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            swarm_service: None,
            swarm_task: None,
            swarm_node_id: None,
            cpu_percent: None,
            mem_usage: None,
            mem_limit: None,
            labels: Default::default(),
            cpu_time: None,
            net: None,
            blkio: None,
        }
    }

    #[test]
    fn images_split_as_telegraf_splits_them() {
        // Telegraf's own test table (internal/docker/docker_test.go), then digests
        for (image, name, version) in [
            ("postgres", "postgres", "unknown"),
            ("postgres:latest", "postgres", "latest"),
            ("coreos/etcd", "coreos/etcd", "unknown"),
            ("coreos/etcd:latest", "coreos/etcd", "latest"),
            ("quay.io/postgres", "quay.io/postgres", "unknown"),
            (
                "quay.io:4443/coreos/etcd",
                "quay.io:4443/coreos/etcd",
                "unknown",
            ),
            (
                "quay.io:4443/coreos/etcd:latest",
                "quay.io:4443/coreos/etcd",
                "latest",
            ),
            ("localhost:5000/app", "localhost:5000/app", "unknown"),
            ("localhost/app:2", "localhost/app", "2"),
            ("nginx@sha256:0123abcd", "nginx@sha256", "0123abcd"),
            (
                "nginx:1.25@sha256:0123abcd",
                "nginx:1.25@sha256",
                "0123abcd",
            ),
            ("sha256:0123abcd", "sha256", "0123abcd"),
        ] {
            assert_eq!(split_image(image), (name, version), "{image}");
        }
    }

    #[test]
    fn container_lines_pin_every_measurement_tag_and_field() {
        let r = ContainersReport {
            header: header(1208, TS),
            engine: EngineState::Ok,
            error: None,
            containers: vec![
                Container {
                    health: Health::Healthy,
                    failing_streak: 1,
                    restart_count: 2,
                    exit_code: Some(0),
                    started_at: Some(TS - 60_000),
                    swarm_service: Some("db".into()),
                    swarm_task: Some("db.1.kq3zv8".into()),
                    swarm_node_id: Some("x2kq".into()),
                    cpu_percent: Some(3.25),
                    mem_usage: Some(73_400_320),
                    mem_limit: Some(268_435_456),
                    labels: [
                        ("com.docker.swarm.service.name", "db"),
                        ("com.docker.swarm.task.id", "kq3zv8"),
                        ("com.docker.stack.namespace", "plant"),
                        ("team", "ops"),
                        // leakmon's own tag names stay leakmon's
                        ("host", "elsewhere"),
                        ("cpu", "cpu9"),
                        ("network", "lan"),
                        ("device", "sensor"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                    image: "registry.lan:5000/plant/postgres:16@sha256:ab12".into(),
                    cpu_time: Some(leakmon_protocol::ContainerCpu {
                        total_ns: 9_000_000_000,
                        user_ns: 6_000_000_000,
                        kernel_ns: 3_000_000_000,
                        periods: 500,
                        throttled_periods: 12,
                        throttled_ns: 340_000_000,
                    }),
                    net: Some(leakmon_protocol::ContainerNet {
                        rx_bytes: 1000,
                        rx_packets: 10,
                        rx_errors: 1,
                        rx_dropped: 2,
                        tx_bytes: 2000,
                        tx_packets: 20,
                        tx_errors: 3,
                        tx_dropped: 4,
                    }),
                    blkio: Some(leakmon_protocol::ContainerBlkio {
                        read_bytes: 4096,
                        write_bytes: 8192,
                        reads: 1,
                        writes: 2,
                    }),
                    ..container("db.1.kq3z", "running")
                },
                Container {
                    health: Health::Unhealthy,
                    failing_streak: 4,
                    restart_count: 9,
                    exit_code: Some(137),
                    oom_killed: true,
                    started_at: Some(TS - 5_000),
                    mem_usage: Some(1024),
                    mem_limit: Some(0),
                    ..container("web", "exited")
                },
                Container {
                    started_at: Some(TS + 5_000),
                    cpu_percent: Some(f64::INFINITY),
                    mem_usage: Some(2048),
                    ..container("paused one", "paused")
                },
                container("new", "created"),
            ],
            engine_info: Some(leakmon_protocol::EngineInfo {
                images: 7,
                cpus: 4,
                memory_total: 8_000_000_000,
                goroutines: 58,
                file_descriptors: 51,
                event_listeners: 1,
            }),
            cut: 0,
        };
        assert_eq!(
            containers_text(&tags(), &r, &default_labels()),
            CONTAINER_LINES
        );
        let down = ContainersReport {
            header: header(1209, TS),
            engine: EngineState::Unavailable,
            error: Some("engine down".into()),
            containers: vec![],
            engine_info: None,
            cut: 0,
        };
        assert_eq!(
            containers_text(&tags(), &down, &default_labels()),
            CONTAINER_LINES_DOWN
        );
    }

    fn report_of(c: Container) -> ContainersReport {
        ContainersReport {
            header: header(1, TS),
            engine: EngineState::Ok,
            error: None,
            containers: vec![c],
            engine_info: None,
            cut: 0,
        }
    }

    fn default_labels() -> Labels {
        let include = crate::config::DEFAULT_DOCKER_LABELS.iter();
        Labels::new(include.map(|s| (*s).to_owned()).collect(), Vec::new())
    }

    #[test]
    fn only_the_labels_taken_become_tags() {
        let l = default_labels();
        for k in [
            "com.docker.swarm.service.name",
            "com.docker.swarm.task.id",
            "com.docker.stack.namespace",
        ] {
            assert!(l.takes(k), "{k}");
        }
        for k in [
            "team",
            "build",
            "com.docker.swarmx",
            "org.opencontainers.image.revision",
        ] {
            assert!(!l.takes(k), "{k}");
        }
        let all = Labels::new(vec!["*".into()], vec!["build*".into()]);
        assert!(all.takes("team") && !all.takes("build.number"));
        // a thousand values of a label not taken make no new series: the points are the same
        let mut c = container("web.1", "running");
        let base = containers_text(&tags(), &report_of(c.clone()), &l);
        for i in 0..1000 {
            c.labels.insert("build".into(), format!("{i}"));
            let with = containers_text(&tags(), &report_of(c.clone()), &l);
            assert_eq!(with, base);
        }
    }

    const CONTAINER_LINES: &str = r#"docker,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq engine_ok=true,n_containers=4i,n_containers_running=1i,n_containers_paused=1i,n_containers_stopped=2i,n_containers_unhealthy=1i,n_images=7i,n_cpus=4i,memory_total=8000000000i,n_goroutines=58i,n_used_file_descriptors=51i,n_listener_events=1i 1795719775612
docker_container_cpu,com.docker.stack.namespace=plant,com.docker.swarm.service.name=db,com.docker.swarm.task.id=kq3zv8,container_image=registry.lan:5000/plant/postgres:16@sha256,container_name=db.1.kq3z,container_status=running,container_version=ab12,cpu=cpu-total,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="db.1.kq3z-id",usage_percent=3.25,usage_total=9000000000i,usage_in_usermode=6000000000i,usage_in_kernelmode=3000000000i,throttling_periods=500i,throttling_throttled_periods=12i,throttling_throttled_time=340000000i 1795719775612
docker_container_net,com.docker.stack.namespace=plant,com.docker.swarm.service.name=db,com.docker.swarm.task.id=kq3zv8,container_image=registry.lan:5000/plant/postgres:16@sha256,container_name=db.1.kq3z,container_status=running,container_version=ab12,engine_host=edge-01.lan,host=edge-01,network=total,server_version=20.10.24,swarm_node_id=x2kq container_id="db.1.kq3z-id",rx_bytes=1000i,rx_packets=10i,rx_errors=1i,rx_dropped=2i,tx_bytes=2000i,tx_packets=20i,tx_errors=3i,tx_dropped=4i 1795719775612
docker_container_blkio,com.docker.stack.namespace=plant,com.docker.swarm.service.name=db,com.docker.swarm.task.id=kq3zv8,container_image=registry.lan:5000/plant/postgres:16@sha256,container_name=db.1.kq3z,container_status=running,container_version=ab12,device=total,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="db.1.kq3z-id",io_service_bytes_recursive_read=4096i,io_service_bytes_recursive_write=8192i,io_service_bytes_recursive_total=12288i,io_serviced_recursive_read=1i,io_serviced_recursive_write=2i,io_serviced_recursive_total=3i 1795719775612
docker_container_mem,com.docker.stack.namespace=plant,com.docker.swarm.service.name=db,com.docker.swarm.task.id=kq3zv8,container_image=registry.lan:5000/plant/postgres:16@sha256,container_name=db.1.kq3z,container_status=running,container_version=ab12,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="db.1.kq3z-id",usage=73400320i,limit=268435456i,usage_percent=27.34375 1795719775612
docker_container_status,com.docker.stack.namespace=plant,com.docker.swarm.service.name=db,com.docker.swarm.task.id=kq3zv8,container_image=registry.lan:5000/plant/postgres:16@sha256,container_name=db.1.kq3z,container_status=running,container_version=ab12,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="db.1.kq3z-id",oomkilled=false,restart_count=2i,exitcode=0i,started_at=1795719715612000000i,uptime_ns=60000000000i 1795719775612
docker_container_health,com.docker.stack.namespace=plant,com.docker.swarm.service.name=db,com.docker.swarm.task.id=kq3zv8,container_image=registry.lan:5000/plant/postgres:16@sha256,container_name=db.1.kq3z,container_status=running,container_version=ab12,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="db.1.kq3z-id",health_status="healthy",failing_streak=1i 1795719775612
docker_container_mem,container_image=postgres,container_name=web,container_status=exited,container_version=16,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="web-id",usage=1024i 1795719775612
docker_container_status,container_image=postgres,container_name=web,container_status=exited,container_version=16,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="web-id",oomkilled=true,restart_count=9i,exitcode=137i,started_at=1795719770612000000i 1795719775612
docker_container_health,container_image=postgres,container_name=web,container_status=exited,container_version=16,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="web-id",health_status="unhealthy",failing_streak=4i 1795719775612
docker_container_cpu,container_image=postgres,container_name=paused\ one,container_status=paused,container_version=16,cpu=cpu-total,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="paused one-id" 1795719775612
docker_container_mem,container_image=postgres,container_name=paused\ one,container_status=paused,container_version=16,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="paused one-id",usage=2048i 1795719775612
docker_container_status,container_image=postgres,container_name=paused\ one,container_status=paused,container_version=16,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="paused one-id",oomkilled=false,restart_count=0i,started_at=1795719780612000000i 1795719775612
docker_container_status,container_image=postgres,container_name=new,container_status=created,container_version=16,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq container_id="new-id",oomkilled=false,restart_count=0i 1795719775612
"#;
    const CONTAINER_LINES_DOWN: &str = r#"docker,engine_host=edge-01.lan,host=edge-01,server_version=20.10.24,swarm_node_id=x2kq engine_ok=false,n_containers=0i,n_containers_running=0i,n_containers_paused=0i,n_containers_stopped=0i,n_containers_unhealthy=0i 1795719775612
"#;

    #[test]
    fn event_points_pin_every_tag_and_field() {
        let e = |action: &str| EventReport {
            header: header(1210, TS),
            action: action.into(),
            container_id: "4f1c".into(),
            container_name: "db.1.kq3z".into(),
            image: "postgres:16".into(),
            exit_code: None,
            signal: None,
            health: None,
            swarm_service: Some("db".into()),
            swarm_task: Some("db.1.kq3zv8".into()),
        };
        let points = [
            event_point(
                &tags(),
                &EventReport {
                    exit_code: Some(137),
                    ..e("die")
                },
            ),
            event_point(
                &tags(),
                &EventReport {
                    signal: Some("SIGKILL".into()),
                    swarm_service: None,
                    ..e("kill")
                },
            ),
            event_point(
                &tags(),
                &EventReport {
                    health: Some(Health::Unhealthy),
                    ..e("health_status")
                },
            ),
        ];
        assert_eq!(lines(&points), EVENT_LINES);
    }

    const EVENT_LINES: &str = r#"leakmon_container_event,action=die,com.docker.swarm.service.name=db,container_name=db.1.kq3z,host=edge-01,swarm_node_id=x2kq container_id="4f1c",container_image="postgres:16",exitcode=137i 1795719775612
leakmon_container_event,action=kill,container_name=db.1.kq3z,host=edge-01,swarm_node_id=x2kq container_id="4f1c",container_image="postgres:16",signal="SIGKILL" 1795719775612
leakmon_container_event,action=health_status,com.docker.swarm.service.name=db,container_name=db.1.kq3z,host=edge-01,swarm_node_id=x2kq container_id="4f1c",container_image="postgres:16",health_status="unhealthy" 1795719775612
"#;

    #[test]
    fn node_points_pin_every_field() {
        let status = |state, reason, identity| Status {
            v: 1,
            node: "edge-01".into(),
            state,
            seq: 42,
            reason,
            ts: TS,
            identity,
        };
        let points = [
            node_point(&tags(), TS, "stale", None),
            node_point(
                &tags(),
                TS,
                "online",
                Some(&status(
                    NodeState::Online,
                    None,
                    Some(Identity {
                        agent_version: "0.1.0".into(),
                        ..Default::default()
                    }),
                )),
            ),
            node_point(
                &tags(),
                TS,
                "offline",
                Some(&status(NodeState::Offline, Some(OfflineReason::Lost), None)),
            ),
            node_point(
                &tags(),
                TS,
                "offline",
                Some(&status(
                    NodeState::Offline,
                    Some(OfflineReason::Shutdown),
                    None,
                )),
            ),
        ];
        assert_eq!(lines(&points), NODE_LINES);
    }

    const NODE_LINES: &str = r#"leakmon_node,host=edge-01,swarm_node_id=x2kq state="stale" 1795719775612
leakmon_node,host=edge-01,swarm_node_id=x2kq state="online",seq=42i,agent_version="0.1.0" 1795719775612
leakmon_node,host=edge-01,swarm_node_id=x2kq state="offline",seq=42i,reason="lost" 1795719775612
leakmon_node,host=edge-01,swarm_node_id=x2kq state="offline",seq=42i,reason="shutdown" 1795719775612
"#;

    #[test]
    fn gateway_event_point_pins_every_tag_and_field() {
        let mut details = serde_json::Map::new();
        details.insert("reason".into(), "agent gone".into());
        let mut e = GatewayEvent {
            v: 1,
            kind: leakmon_protocol::EventKind::NodeDown,
            node: Some("worker-4".into()),
            ts: TS,
            gateway: "gw2".into(),
            dry_run: true,
            message: "node worker-4 is down".into(),
            details,
        };
        let mut out = gateway_event_point(&e).to_line();
        e.node = None;
        e.details.clear();
        e.dry_run = false;
        out.push_str(&gateway_event_point(&e).to_line());
        assert_eq!(out, GATEWAY_EVENT_LINES);
    }

    const GATEWAY_EVENT_LINES: &str = r#"leakmon_event,gateway=gw2,host=worker-4,kind=node_down message="node worker-4 is down",details="{\"reason\":\"agent gone\"}",dry_run=true 1795719775612
leakmon_event,gateway=gw2,kind=node_down message="node worker-4 is down",details="{}",dry_run=false 1795719775612
"#;
}
