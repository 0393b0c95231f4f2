//! Bounds on what one report may carry, applied by the agent before it sends and by every
//! consumer after it decodes, so one payload can neither grow past the broker's packet limit
//! nor make thousands of series, hooks or alert states. What a bound cuts is counted in the
//! report (`cut`), never silently lost.

use crate::{ContainersReport, HostReport, NetCounters};

/// Containers in one containers report. The ones that matter most stay (unhealthy, then not
/// running, then the rest by name); a node running more is reported with `cut` set.
pub const MAX_CONTAINERS: usize = 500;
/// Filesystems, network interfaces, temperature sensors and block devices in one host report,
/// each.
pub const MAX_HOST_ITEMS: usize = 64;
/// Labels of one container.
pub const MAX_LABELS: usize = 64;
/// CPUs reported one by one in a host report (the total is always there).
pub const MAX_CORES: usize = 256;
/// Kernel network counters in one host report (all of /proc/net/netstat, snmp and snmp6 are
/// about 400 on Linux 6.x).
pub const MAX_COUNTERS: usize = 1024;
/// Bytes of a counter's full name (`TcpExtTCPAbortOnTimeout`: the kernel's are under 40);
/// a longer one is dropped, counted.
pub const MAX_COUNTER_NAME: usize = 63;
/// Lines of /proc/interrupts and of /proc/softirqs in one host report, each.
pub const MAX_IRQS: usize = 256;
/// Per-CPU counts of /proc/interrupts and /proc/softirqs in one host report, each (256 lines
/// of 32 CPUs); the last lines go first.
pub const MAX_IRQ_COUNTS: usize = 8_192;
/// Bytes of an IRQ line's name, type and device, each.
pub const MAX_IRQ_TEXT: usize = 128;
/// Bytes of any one name (container, image, service, disk, interface, sensor); longer text is
/// cut at a character boundary.
pub const MAX_TEXT: usize = 256;

/// Cuts `s` to at most [`MAX_TEXT`] bytes, at a character boundary; whether it was cut.
pub fn cut_text(s: &mut String) -> bool {
    cut_text_to(s, MAX_TEXT)
}

/// Cuts `s` to at most `max` bytes, at a character boundary; whether it was cut.
fn cut_text_to(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

fn cut_opt(s: &mut Option<String>) -> bool {
    s.as_mut().is_some_and(cut_text)
}

fn cut_list<T>(v: &mut Vec<T>, max: usize) -> usize {
    let n = v.len().saturating_sub(max);
    v.truncate(max);
    n
}

impl HostReport {
    /// Applies the bounds; adds what was cut (list items and texts) to `cut` and returns it.
    pub fn bound(&mut self) -> u32 {
        let mut n = cut_list(&mut self.disks, MAX_HOST_ITEMS)
            + cut_list(&mut self.net, MAX_HOST_ITEMS)
            + cut_list(&mut self.temps, MAX_HOST_ITEMS)
            + cut_list(&mut self.diskio, MAX_HOST_ITEMS)
            + cut_list(&mut self.cores, MAX_CORES);
        n += usize::from(cut_text(&mut self.hostname));
        for d in &mut self.disks {
            n += usize::from(cut_text(&mut d.path))
                + usize::from(cut_text(&mut d.device))
                + usize::from(cut_text(&mut d.fstype));
        }
        for i in &mut self.net {
            n += usize::from(cut_text(&mut i.interface));
        }
        for t in &mut self.temps {
            n += usize::from(cut_text(&mut t.sensor));
        }
        for d in &mut self.diskio {
            n += usize::from(cut_text(&mut d.name));
        }
        for c in &mut self.cores {
            n += usize::from(cut_text(&mut c.cpu));
        }
        if let Some(c) = &mut self.nstat {
            n += cut_counters(c);
        }
        for list in [&mut self.interrupts, &mut self.soft_interrupts] {
            n += cut_list(list, MAX_IRQS);
            let mut counts = 0;
            let fit = list
                .iter()
                .take_while(|i| {
                    counts += i.cpus.len();
                    counts <= MAX_IRQ_COUNTS
                })
                .count();
            n += cut_list(list, fit);
            for i in list.iter_mut() {
                n += usize::from(cut_text_to(&mut i.irq, MAX_IRQ_TEXT))
                    + usize::from(cut_text_to(&mut i.kind, MAX_IRQ_TEXT))
                    + usize::from(cut_text_to(&mut i.device, MAX_IRQ_TEXT));
            }
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.cut = self.cut.saturating_add(n);
        n
    }
}

/// Keeps at most [`MAX_COUNTERS`] counters (the first by file, line and name) with full names
/// (line and name) of 1 to [`MAX_COUNTER_NAME`] bytes (a longer one is dropped: cut, it would
/// name another counter); how many were dropped.
fn cut_counters(c: &mut NetCounters) -> usize {
    let mut room = MAX_COUNTERS;
    let mut dropped = 0;
    let mut keep = |name_len: usize| {
        let ok = room > 0 && (1..=MAX_COUNTER_NAME).contains(&name_len);
        room -= usize::from(ok);
        dropped += usize::from(!ok);
        ok
    };
    for lines in [&mut c.netstat, &mut c.snmp] {
        lines.retain(|line, counters| {
            counters.retain(|name, _| keep(line.len() + name.len()));
            !counters.is_empty()
        });
    }
    c.snmp6.retain(|name, _| keep(name.len()));
    dropped
}

/// Keeps at most [`MAX_LABELS`] labels (the first by key) with keys and values of at most
/// [`MAX_TEXT`] bytes (a longer key is dropped: cut, it would name another label); how many
/// were cut or dropped.
fn cut_labels(labels: &mut std::collections::BTreeMap<String, String>) -> usize {
    let before = labels.len();
    labels.retain(|k, _| k.len() <= MAX_TEXT);
    let mut n = before - labels.len();
    while labels.len() > MAX_LABELS {
        labels.pop_last();
        n += 1;
    }
    for v in labels.values_mut() {
        n += usize::from(cut_text(v));
    }
    n
}

impl ContainersReport {
    /// Orders the containers so that the ones that matter most come first (unhealthy, then
    /// not running, then by name): what any cut from the end should keep.
    pub fn prioritize(&mut self) {
        self.containers.sort_by_cached_key(|c| {
            (
                c.health != crate::Health::Unhealthy,
                c.state == "running",
                c.name.clone(),
            )
        });
    }

    /// Applies the bounds; adds what was cut (containers and texts) to `cut` and returns it.
    pub fn bound(&mut self) -> u32 {
        let mut n = 0;
        if self.containers.len() > MAX_CONTAINERS {
            self.prioritize();
            n += cut_list(&mut self.containers, MAX_CONTAINERS);
        }
        n += usize::from(cut_opt(&mut self.error));
        for c in &mut self.containers {
            n += usize::from(cut_text(&mut c.id))
                + usize::from(cut_text(&mut c.name))
                + usize::from(cut_text(&mut c.image))
                + usize::from(cut_text(&mut c.state))
                + usize::from(cut_opt(&mut c.swarm_service))
                + usize::from(cut_opt(&mut c.swarm_task))
                + usize::from(cut_opt(&mut c.swarm_node_id));
            n += cut_labels(&mut c.labels);
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.cut = self.cut.saturating_add(n);
        n
    }
}

impl crate::EventReport {
    /// Cuts its texts to [`MAX_TEXT`]; how many were cut.
    pub fn bound(&mut self) -> u32 {
        let n = usize::from(cut_text(&mut self.action))
            + usize::from(cut_text(&mut self.container_id))
            + usize::from(cut_text(&mut self.container_name))
            + usize::from(cut_text(&mut self.image))
            + usize::from(cut_opt(&mut self.signal))
            + usize::from(cut_opt(&mut self.swarm_service))
            + usize::from(cut_opt(&mut self.swarm_task));
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, EngineState, Header, Health, Irq};

    fn container(name: &str, state: &str, health: Health) -> Container {
        Container {
            id: format!("id-{name}"),
            name: name.into(),
            image: "img".into(),
            state: state.into(),
            health,
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
    fn a_huge_containers_report_keeps_what_matters_and_counts_the_rest() {
        let mut containers: Vec<Container> = (0..2000)
            .map(|i| container(&format!("c{i:04}"), "running", Health::Healthy))
            .collect();
        containers.push(container("zz-sick", "running", Health::Unhealthy));
        containers.push(container("zz-exited", "exited", Health::None));
        let mut r = ContainersReport {
            header: Header {
                v: 1,
                node: "n".into(),
                run: 1,
                seq: 1,
                ts: 0,
                mono: None,
            },
            engine: EngineState::Ok,
            error: None,
            containers,
            engine_info: None,
            cut: 0,
        };
        assert_eq!(r.bound(), 1502);
        assert_eq!(r.cut, 1502);
        assert_eq!(r.containers.len(), MAX_CONTAINERS);
        assert_eq!(r.containers[0].name, "zz-sick");
        assert_eq!(r.containers[1].name, "zz-exited");
        let bytes = crate::encode(&r);
        assert!(
            bytes.len() < crate::codec::MAX_PAYLOAD,
            "{} bytes",
            bytes.len()
        );
        assert_eq!(r.bound(), 0, "bounded once");
    }

    #[test]
    fn a_huge_host_report_stays_under_the_payload_limit() {
        let mut r = crate::codec::tests::host();
        let irq = |i: usize| Irq {
            irq: format!("{i}{}", "i".repeat(300)),
            kind: "t".repeat(300),
            device: "d".repeat(300),
            cpus: vec![u64::MAX; 96],
        };
        r.interrupts = (0..400).map(irq).collect();
        r.soft_interrupts = (0..10).map(irq).collect();
        let mut c = NetCounters::default();
        for line in 0..40 {
            let counters = (0..40)
                .map(|j| (format!("Counter{j:0>30}"), i64::MIN))
                .collect();
            c.netstat.insert(format!("Line{line:0>15}"), counters);
        }
        c.snmp6.insert("x".repeat(300), 1);
        c.snmp6.insert("Ip6InReceives".into(), 1);
        r.nstat = Some(c);
        let cut = r.bound();
        // 400 - 256 lines; of the 256, 85 lines of 96 counts fit in 8192; 3 texts cut each
        assert_eq!(r.interrupts.len(), 85);
        assert_eq!(r.soft_interrupts.len(), 10);
        assert!(r.interrupts.iter().all(|i| i.device.len() == MAX_IRQ_TEXT));
        let c = r.nstat.as_ref().expect("kept");
        assert_eq!(c.len(), MAX_COUNTERS);
        assert!(c.snmp6.is_empty(), "netstat's lines filled the room first");
        assert_eq!(cut, (400 - 85) + (85 + 10) * 3 + (1600 - 1024) + 2);
        let bytes = crate::encode(&r);
        assert!(bytes.len() < crate::codec::MAX_PAYLOAD, "{}", bytes.len());
        assert_eq!(r.bound(), 0, "bounded once");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let mut s = "é".repeat(200); // 400 bytes
        assert!(cut_text(&mut s));
        assert!(s.len() <= MAX_TEXT && s.len() >= MAX_TEXT - 1);
        assert!(s.chars().all(|c| c == 'é'));
        let mut short = "ok".to_string();
        assert!(!cut_text(&mut short));
    }
}
