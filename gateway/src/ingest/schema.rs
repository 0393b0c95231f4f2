//! From protocol messages to InfluxDB points, with Telegraf's measurement, tag and field names
//! wherever Telegraf has an equivalent, so dashboards built for Telegraf work unchanged.
//! docs/schema.md documents every measurement; a test there keeps the two in step.
//!
//! Pure: the timestamp of every point is the agent's sample time (`ts`), so a message written
//! twice lands on the same points.

use leakmon_protocol::{
    Container, ContainersReport, EngineState, EventReport, GatewayEvent, HostReport, Status,
};

use super::line::Point;

/// Tags every point of a node carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTags {
    /// The node name (Telegraf's `host` tag).
    pub host: String,
    /// From the node's birth, when it is in a Swarm.
    pub swarm_node_id: Option<String>,
}

impl NodeTags {
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

pub fn host_points(n: &NodeTags, r: &HostReport) -> Vec<Point> {
    let ts = r.header.ts;
    let mut out = Vec::with_capacity(8 + r.disks.len() + r.net.len() + r.temps.len());
    if let Some(c) = &r.cpu {
        out.push(
            n.point("cpu", ts)
                .tag("cpu", "cpu-total")
                .float("usage_user", c.user)
                .float("usage_nice", c.nice)
                .float("usage_system", c.system)
                .float("usage_idle", c.idle)
                .float("usage_iowait", c.iowait)
                .float("usage_irq", c.irq)
                .float("usage_softirq", c.softirq)
                .float("usage_steal", c.steal)
                .float("usage_guest", c.guest)
                .float("usage_guest_nice", c.guest_nice),
        );
    }
    let m = &r.mem;
    out.push(
        n.point("mem", ts)
            .uint("total", m.total)
            .uint("available", m.available)
            .uint("used", m.used)
            .uint("free", m.free)
            .uint("buffered", m.buffers)
            .uint("cached", m.cached)
            .float("used_percent", m.used_percent)
            .float("available_percent", m.available_percent)
            .uint("swap_total", r.swap.total)
            .uint("swap_free", r.swap.free),
    );
    out.push(
        n.point("swap", ts)
            .uint("total", r.swap.total)
            .uint("used", r.swap.used)
            .uint("free", r.swap.free)
            .float("used_percent", r.swap.used_percent),
    );
    out.push(
        n.point("system", ts)
            .float("load1", r.load.load1)
            .float("load5", r.load.load5)
            .float("load15", r.load.load15)
            .uint("n_cpus", u64::from(r.n_cpus))
            .uint("uptime", r.uptime_s),
    );
    for d in &r.disks {
        out.push(
            n.point("disk", ts)
                .tag("path", d.path.as_str())
                .tag("device", device_name(&d.device))
                .tag("fstype", d.fstype.as_str())
                .uint("total", d.total)
                .uint("used", d.used)
                .uint("free", d.free)
                .float("used_percent", d.used_percent)
                .uint("inodes_total", d.inodes_total)
                .uint("inodes_used", d.inodes_used)
                .uint("inodes_free", d.inodes_free),
        );
    }
    for i in &r.net {
        out.push(
            n.point("net", ts)
                .tag("interface", i.interface.as_str())
                .uint("bytes_recv", i.bytes_recv)
                .uint("bytes_sent", i.bytes_sent)
                .uint("packets_recv", i.packets_recv)
                .uint("packets_sent", i.packets_sent)
                .uint("err_in", i.err_in)
                .uint("err_out", i.err_out)
                .uint("drop_in", i.drop_in)
                .uint("drop_out", i.drop_out),
        );
    }
    for t in &r.temps {
        out.push(
            n.point("temp", ts)
                .tag("sensor", t.sensor.as_str())
                .float("temp", t.temp),
        );
    }
    let b = &r.buffer;
    out.push(
        n.point("leakmon_agent", ts)
            .uint("run", r.header.run)
            .uint("seq", r.header.seq)
            .uint("queued", b.queued)
            .uint("queued_bytes", b.queued_bytes)
            .uint("spooled_bytes", b.spooled_bytes)
            .uint("dropped_total", b.dropped_total),
    );
    out
}

fn container_point(n: &NodeTags, measurement: &'static str, ts: i64, c: &Container) -> Point {
    n.point(measurement, ts)
        .tag("container_name", c.name.as_str())
        .tag("container_image", c.image.as_str())
        .tag("container_status", c.state.as_str())
        .tag_opt("com.docker.swarm.service.name", c.swarm_service.as_deref())
        .string("container_id", c.id.as_str())
}

pub fn container_points(n: &NodeTags, r: &ContainersReport) -> Vec<Point> {
    let ts = r.header.ts;
    let count = |state: &str| r.containers.iter().filter(|c| c.state == state).count() as i64;
    let mut out = vec![n
        .point("docker", ts)
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
        )];
    for c in &r.containers {
        if let Some(cpu) = c.cpu_percent {
            out.push(
                container_point(n, "docker_container_cpu", ts, c)
                    .tag("cpu", "cpu-total")
                    .float("usage_percent", cpu),
            );
        }
        if let Some(usage) = c.mem_usage {
            let mut p = container_point(n, "docker_container_mem", ts, c).uint("usage", usage);
            if let Some(limit) = c.mem_limit.filter(|l| *l > 0) {
                p = p
                    .uint("limit", limit)
                    .float("usage_percent", usage as f64 * 100.0 / limit as f64);
            }
            out.push(p);
        }
        let mut st = container_point(n, "docker_container_status", ts, c)
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
        out.push(st);
        if c.health != leakmon_protocol::Health::None {
            out.push(
                container_point(n, "docker_container_health", ts, c)
                    .string("health_status", c.health.as_str())
                    .uint("failing_streak", c.failing_streak),
            );
        }
    }
    out
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
