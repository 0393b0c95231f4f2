//! Home Assistant MQTT discovery: each node becomes a device with sensors read straight from
//! the agents' topics (no extra traffic), available while its agent's retained status says
//! `online`. Pure: builds the retained `<prefix>/sensor/<node_id>/<object>/config` messages.

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

/// Home Assistant's node ids allow letters, digits, `_` and `-`.
fn node_id(node: &str) -> String {
    let clean: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("leakmon_{clean}")
}

/// The retained discovery messages for one node: (topic, payload).
pub fn configs(topics: &Topics, prefix: &str, node: &str) -> Vec<(String, Vec<u8>)> {
    let id = node_id(node);
    SENSORS
        .iter()
        .map(|(object, name, channel, template, unit, class)| {
            let mut c = json!({
                "name": name,
                "unique_id": format!("{id}_{object}"),
                "object_id": format!("{id}_{object}"),
                "state_topic": topics.node(node, *channel),
                "value_template": template,
                "state_class": "measurement",
                "availability_topic": topics.node(node, Channel::Status),
                "availability_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": {
                    "identifiers": [id.clone()],
                    "name": node,
                    "manufacturer": "leakmon",
                    "model": "leakmon-agent",
                },
            });
            if let Some(u) = unit {
                c["unit_of_measurement"] = json!(u);
            }
            if let Some(d) = class {
                c["device_class"] = json!(d);
            }
            (
                format!("{prefix}/sensor/{id}/{object}/config"),
                c.to_string().into_bytes(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_per_node_with_its_sensors() {
        let t = Topics::new("leakmon").unwrap();
        let c = configs(&t, "homeassistant", "edge.01");
        assert_eq!(c.len(), 6);
        let (topic, payload) = &c[0];
        assert_eq!(topic, "homeassistant/sensor/leakmon_edge_01/cpu/config");
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["state_topic"], "leakmon/v1/nodes/edge.01/host");
        assert_eq!(v["availability_topic"], "leakmon/v1/nodes/edge.01/status");
        assert_eq!(v["device"]["identifiers"][0], "leakmon_edge_01");
        assert_eq!(v["unique_id"], "leakmon_edge_01_cpu");
        let ids: std::collections::HashSet<String> = c
            .iter()
            .map(|(_, p)| {
                serde_json::from_slice::<serde_json::Value>(p).unwrap()["unique_id"].to_string()
            })
            .collect();
        assert_eq!(ids.len(), 6, "unique ids");
    }
}
