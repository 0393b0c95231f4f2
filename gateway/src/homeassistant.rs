//! Home Assistant MQTT discovery: each node becomes a device with sensors read straight from
//! the agents' topics (no extra traffic), available while its agent's retained status says
//! `online`, each going unavailable after three missed samples (`expire_after`: an agent that
//! hangs with its connection up), and a connectivity binary sensor on the status itself.
//! Pure: builds the retained `<prefix>/<component>/<node_id>/<object>/config` messages, and
//! the empty ones that remove a forgotten node's entities.
//!
//! Checked against Home Assistant's own discovery rules (docs/operations.md says which
//! versions): `default_entity_id` (2025.10+) beside `object_id` (ignored since 2026.4),
//! `origin` (2023.9+), ids made only of the characters a discovery topic allows.

use leakmon_protocol::{Channel, Topics};
use serde_json::json;

/// One sensor: object id, name, channel, value template, unit, device class.
type Sensor = (
    &'static str,
    &'static str,
    Channel,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const SENSORS: [Sensor; 6] = [
    (
        "cpu",
        "CPU",
        Channel::Host,
        "{{ (100 - value_json.cpu.idle) | round(1) if value_json.cpu is defined else None }}",
        Some("%"),
        None,
    ),
    (
        "memory",
        "Memory used",
        Channel::Host,
        "{{ value_json.mem.used_percent | round(1) }}",
        Some("%"),
        None,
    ),
    (
        "disk",
        "Disk used (fullest)",
        Channel::Host,
        "{% set d = value_json.disks | map(attribute='used_percent') | list %}{{ (d | max) | round(1) if d else None }}",
        Some("%"),
        None,
    ),
    (
        "temperature",
        "Temperature (hottest)",
        Channel::Host,
        "{% set t = value_json.temps | map(attribute='temp') | list %}{{ t | max if t else None }}",
        Some("°C"),
        Some("temperature"),
    ),
    (
        "containers_running",
        "Containers running",
        Channel::Containers,
        "{{ value_json.containers | selectattr('state', 'eq', 'running') | list | count }}",
        None,
        None,
    ),
    (
        "containers_unhealthy",
        "Containers unhealthy",
        Channel::Containers,
        "{{ value_json.containers | selectattr('health', 'eq', 'unhealthy') | list | count }}",
        None,
        None,
    ),
];

/// The node id of a node: `leakmon_` and the node name with every character a discovery
/// topic does not allow (anything but ASCII letters, digits and `-`), and `_` itself, written
/// as `_` and two hex digits per byte. One name, one id, and two names never share one
/// (`edge.01` is `leakmon_edge_2e01`, `edge_01` is `leakmon_edge_5f01`).
pub fn node_id(node: &str) -> String {
    let mut id = String::from("leakmon_");
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("_{b:02x}"));
        }
    }
    id
}

/// What the gateway knows of a node when it announces it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Device<'a> {
    pub node: &'a str,
    /// From the agent's birth.
    pub agent_version: Option<&'a str>,
    pub interval_ms: Option<u64>,
}

/// Seconds without a report after which a sensor shows unavailable: three sampling intervals,
/// never below 10 s (a late sample must not flap it); 30 s when the interval is not known.
pub fn expire_after(interval_ms: Option<u64>) -> u64 {
    interval_ms
        .map(|ms| (ms.saturating_mul(3)).div_ceil(1000).max(10))
        .unwrap_or(30)
}

/// The connectivity binary sensor's object id.
const CONNECTIVITY: &str = "connectivity";

/// Every discovery topic of a node: the sensors', then the binary sensor's.
fn config_topics(prefix: &str, id: &str) -> Vec<String> {
    SENSORS
        .iter()
        .map(|(object, ..)| format!("{prefix}/sensor/{id}/{object}/config"))
        .chain(std::iter::once(format!(
            "{prefix}/binary_sensor/{id}/{CONNECTIVITY}/config"
        )))
        .collect()
}

/// The retained discovery messages for one node: (topic, payload).
pub fn configs(topics: &Topics, prefix: &str, d: &Device) -> Vec<(String, Vec<u8>)> {
    let node = d.node;
    let id = node_id(node);
    let mut device = json!({
        "identifiers": [id.clone()],
        "name": node,
        "manufacturer": "leakmon",
        "model": "leakmon-agent",
    });
    if let Some(v) = d.agent_version {
        device["sw_version"] = json!(v);
    }
    let origin = json!({
        "name": "leakmon-gateway",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    // What every entity of the node carries: its ids, the device and the origin.
    let entity = |component: &str, object: &str, name: &str| {
        json!({
            "name": name,
            "unique_id": format!("{id}_{object}"),
            // HA 2025.10+ takes the entity id from here; older ones from `object_id`
            "default_entity_id": format!("{component}.{id}_{object}"),
            "object_id": format!("{id}_{object}"),
            "device": device.clone(),
            "origin": origin.clone(),
        })
    };
    let expire = expire_after(d.interval_ms);
    let mut out: Vec<(String, Vec<u8>)> = SENSORS
        .iter()
        .zip(config_topics(prefix, &id))
        .map(|((object, name, channel, template, unit, class), topic)| {
            let mut c = entity("sensor", object, name);
            c["state_topic"] = json!(topics.node(node, *channel));
            c["value_template"] = json!(template);
            c["state_class"] = json!("measurement");
            c["availability_topic"] = json!(topics.node(node, Channel::Status));
            c["availability_template"] = json!("{{ value_json.state }}");
            c["payload_available"] = json!("online");
            c["payload_not_available"] = json!("offline");
            c["expire_after"] = json!(expire);
            if let Some(u) = unit {
                c["unit_of_measurement"] = json!(u);
            }
            if let Some(d) = class {
                c["device_class"] = json!(d);
            }
            (topic, c.to_string().into_bytes())
        })
        .collect();
    // Online or offline from the agent's retained birth and Will; never unavailable itself.
    let mut c = entity("binary_sensor", CONNECTIVITY, "Connectivity");
    c["state_topic"] = json!(topics.node(node, Channel::Status));
    c["value_template"] = json!("{{ value_json.state }}");
    c["payload_on"] = json!("online");
    c["payload_off"] = json!("offline");
    c["device_class"] = json!("connectivity");
    out.push((
        format!("{prefix}/binary_sensor/{id}/{CONNECTIVITY}/config"),
        c.to_string().into_bytes(),
    ));
    out
}

/// The messages that remove a node's entities: an empty retained payload on each of its
/// discovery topics.
pub fn removals(prefix: &str, node: &str) -> Vec<(String, Vec<u8>)> {
    config_topics(prefix, &node_id(node))
        .into_iter()
        .map(|t| (t, Vec::new()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &[u8]) -> serde_json::Value {
        serde_json::from_slice(p).unwrap()
    }

    #[test]
    fn one_device_per_node_with_its_sensors_and_connectivity() {
        let t = Topics::new("leakmon").unwrap();
        let d = Device {
            node: "edge.01",
            agent_version: Some("0.1.0"),
            interval_ms: Some(10_000),
        };
        let c = configs(&t, "homeassistant", &d);
        assert_eq!(c.len(), 7);
        let (topic, payload) = &c[0];
        assert_eq!(topic, "homeassistant/sensor/leakmon_edge_2e01/cpu/config");
        let v = parse(payload);
        assert_eq!(v["state_topic"], "leakmon/v1/nodes/edge.01/host");
        assert_eq!(v["availability_topic"], "leakmon/v1/nodes/edge.01/status");
        assert_eq!(v["device"]["identifiers"][0], "leakmon_edge_2e01");
        assert_eq!(v["device"]["sw_version"], "0.1.0");
        assert_eq!(v["origin"]["name"], "leakmon-gateway");
        assert_eq!(v["unique_id"], "leakmon_edge_2e01_cpu");
        assert_eq!(v["default_entity_id"], "sensor.leakmon_edge_2e01_cpu");
        assert_eq!(v["object_id"], "leakmon_edge_2e01_cpu");
        assert_eq!(v["expire_after"], 30);
        let (topic, payload) = &c[6];
        assert_eq!(
            topic,
            "homeassistant/binary_sensor/leakmon_edge_2e01/connectivity/config"
        );
        let b = parse(payload);
        assert_eq!(b["device_class"], "connectivity");
        assert_eq!(b["state_topic"], "leakmon/v1/nodes/edge.01/status");
        assert_eq!(
            (&b["payload_on"], &b["payload_off"]),
            (&json!("online"), &json!("offline"))
        );
        assert_eq!(
            b["default_entity_id"],
            "binary_sensor.leakmon_edge_2e01_connectivity"
        );
        assert!(
            b.get("availability_topic").is_none(),
            "shows offline, not unavailable"
        );
        assert!(b.get("expire_after").is_none());
        let ids: std::collections::HashSet<String> = c
            .iter()
            .map(|(_, p)| parse(p)["unique_id"].to_string())
            .collect();
        assert_eq!(ids.len(), 7, "unique ids");
        // what removes them is the same topics, empty
        let r = removals("homeassistant", "edge.01");
        assert_eq!(
            r.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            c.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>()
        );
        assert!(r.iter().all(|(_, p)| p.is_empty()));
    }

    #[test]
    fn node_ids_never_collide_and_stay_in_the_topic_alphabet() {
        let names = [
            "edge.01",
            "edge_01",
            "edge-01",
            "edge01",
            "edge 01",
            "edge_2e01",
            "édge",
            "e_",
            "e",
        ];
        let ids: Vec<String> = names.iter().map(|n| node_id(n)).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), names.len(), "{ids:?}");
        for id in &ids {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{id}"
            );
        }
        assert_eq!(
            node_id("edge-01"),
            "leakmon_edge-01",
            "plain names unchanged"
        );
        assert_eq!(node_id("edge_01"), "leakmon_edge_5f01");
    }

    #[test]
    fn sensors_expire_after_three_missed_samples() {
        assert_eq!(expire_after(Some(10_000)), 30);
        assert_eq!(expire_after(Some(60_000)), 180);
        assert_eq!(expire_after(Some(1_000)), 10, "never below 10 s");
        assert_eq!(expire_after(Some(3_500)), 11, "rounded up");
        assert_eq!(expire_after(None), 30);
    }
}
