//! Who may do what on the embedded broker (pure): the rules of config/mosquitto/acl and
//! acl-gateway, for identities read from client ids.
//!
//! rumqttd checks a username and password at most, and has no ACL. The gateway's front
//! ([`super::front`]) asks this module, for each connection, who the client is
//! ([`identify`]), and for each message and subscription, whether that client may
//! ([`Role::may_write`], [`Role::may_read`]).
//!
//! A client's credential is its client id, which the agents and gateways already make from
//! their keys (a tag only the holder of the node's or the fleet key can make, see
//! [`leakmon_protocol::auth`]): `leakmon-agent-<node>-<tag>` is node `<node>`;
//! `leakmon-gateway-<name>-<tag>` and `leakmon-gateway-active-<tag>` (and the `-liveness` and
//! `-scrub` connections beside them) are gateways. An id that claims to be one of those and
//! is not made with the key is refused. Any other id is a telemetry consumer (read only, as the
//! `telemetry` user of config/mosquitto/acl) where readers are allowed.

use leakmon_protocol::auth::{equal, FleetKey};

/// The topic prefixes the rules are written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefixes {
    /// `mqtt.topic_prefix` (config/mosquitto/'s `leakmon`).
    pub topics: String,
    /// `homeassistant.discovery_prefix` (`homeassistant`).
    pub discovery: String,
}

/// What a client is to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The agent of this node: writes under `<prefix>/v1/nodes/<node>/`, reads its probe
    /// requests.
    Node(String),
    /// A gateway of this fleet.
    Gateway,
    /// A telemetry consumer: reads `<prefix>/v1/#` and `homeassistant/#`, writes only Home
    /// Assistant's birth.
    Reader,
}

/// Why a client is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("client id {0:?} claims a node or gateway without its key")]
    Impostor(String),
    #[error("client id {0:?} is not a node or gateway, and readers are not allowed here")]
    NoReaders(String),
}

const AGENT: &str = "leakmon-agent-";
const GATEWAY: &str = "leakmon-gateway-";

/// A name that is one topic level.
fn one_level(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '+', '#', '\0'])
}

/// Who `client_id` is. `fleet` holds the fleet keys that count (the current one, and the
/// previous one during a rotation); `own` the ids this gateway was configured with
/// (`mqtt.client_id`, `leader.session_id`), which count as gateways whatever they are.
pub fn identify(
    client_id: &str,
    fleet: &[FleetKey],
    own: &[String],
    readers: bool,
) -> Result<Role, Refusal> {
    let base = |suffixes: &[&str]| {
        suffixes
            .iter()
            .fold(client_id, |id, s| id.strip_suffix(s).unwrap_or(id))
    };
    let own_base = base(&["-scrub", "-liveness"]);
    if own.iter().any(|o| o == client_id || o == own_base) {
        return Ok(Role::Gateway);
    }
    let impostor = || Refusal::Impostor(client_id.to_owned());
    // the ids the keys make (`leakmon_protocol::auth`), made again and compared whole
    let is = |made: String, id: &str| equal(made.as_bytes(), id.as_bytes());
    if let Some(rest) = client_id.strip_prefix(AGENT) {
        let (node, _) = rest.rsplit_once('-').ok_or_else(impostor)?;
        let made = one_level(node)
            && fleet
                .iter()
                .any(|f| is(f.node_key(node).client_id(), client_id));
        return made
            .then(|| Role::Node(node.to_owned()))
            .ok_or_else(impostor);
    }
    if let Some(rest) = own_base.strip_prefix(GATEWAY) {
        let (name, _) = rest.rsplit_once('-').ok_or_else(impostor)?;
        let made = fleet.iter().any(|f| {
            is(f.gateway_client_id(name), own_base)
                || (name == "active" && is(f.session_id(), own_base))
        });
        return made.then_some(Role::Gateway).ok_or_else(impostor);
    }
    if readers {
        Ok(Role::Reader)
    } else {
        Err(Refusal::NoReaders(client_id.to_owned()))
    }
}

/// Whether `topic` (no wildcards) matches `pattern` (MQTT wildcards).
fn matches(pattern: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for p in pattern.split('/') {
        if p == "#" {
            return true;
        }
        match t.next() {
            Some(level) if p == "+" || p == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// Whether every topic subscription `filter` can match also matches `pattern`.
fn covers(pattern: &str, filter: &str) -> bool {
    let mut f = filter.split('/');
    for p in pattern.split('/') {
        if p == "#" {
            return true;
        }
        match f.next() {
            Some("#") => return false,
            Some("+") if p == "+" => {}
            Some(level) if level != "+" && (p == "+" || p == level) => {}
            _ => return false,
        }
    }
    f.next().is_none()
}

impl Role {
    fn rules(&self, p: &Prefixes) -> (Vec<String>, Vec<String>) {
        let v1 = format!("{}/v1", p.topics);
        let ha = &p.discovery;
        match self {
            Role::Node(n) => (
                vec![format!("{v1}/probe/{n}"), format!("{v1}/enroll/{n}")],
                vec![format!("{v1}/nodes/{n}/#")],
            ),
            Role::Gateway => {
                let both = [
                    format!("{v1}/gateway/#"),
                    format!("{v1}/alerts"),
                    format!("{ha}/#"),
                ];
                let mut read = vec![format!("{v1}/nodes/#")];
                read.extend(both.iter().cloned());
                let mut write = vec![format!("{v1}/probe/#"), format!("{v1}/enroll/#")];
                write.extend(both);
                (read, write)
            }
            Role::Reader => (
                vec![format!("{v1}/#"), format!("{ha}/#")],
                // an agent without its key asks for it as a reader (its Swarm certificate
                // is the proof, checked by the gateway)
                vec![format!("{ha}/status"), format!("{v1}/nodes/+/enroll")],
            ),
        }
    }

    /// Whether this client may publish on `topic` (a Will included).
    pub fn may_write(&self, p: &Prefixes, topic: &str) -> bool {
        !topic.contains(['+', '#']) && self.rules(p).1.iter().any(|p| matches(p, topic))
    }

    /// Whether `topic` is this node's own probe topic, which its agent clears (an empty
    /// retained message) before it subscribes: dropped as any other write there (as on
    /// config/mosquitto/), but not worth a warning.
    pub fn own_probe_topic(&self, p: &Prefixes, topic: &str) -> bool {
        matches!(self, Role::Node(n) if topic == format!("{}/v1/probe/{n}", p.topics))
    }

    /// Whether this client may subscribe to `filter` (a shared subscription's
    /// `$share/<group>/` taken off first).
    pub fn may_read(&self, p: &Prefixes, filter: &str) -> bool {
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((_, f)) => f,
                None => return false,
            },
            None => filter,
        };
        self.rules(p).0.iter().any(|p| covers(p, filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topics: &str) -> Prefixes {
        Prefixes {
            topics: topics.into(),
            discovery: "homeassistant".into(),
        }
    }

    fn fleet() -> Vec<FleetKey> {
        vec![FleetKey::from_bytes([7; 32])]
    }

    fn agent_id(node: &str) -> String {
        format!(
            "leakmon-agent-{node}-{}",
            fleet()[0].node_key(node).tag("mqtt client id")
        )
    }

    #[test]
    fn nodes_and_gateways_are_known_by_the_ids_their_keys_make() {
        let f = fleet();
        let id = |s: &str| identify(s, &f, &[], true);
        assert_eq!(id(&agent_id("edge-01")), Ok(Role::Node("edge-01".into())));
        let gw = format!("leakmon-gateway-gw-a-{}", f[0].tag("client id gw-a"));
        assert_eq!(id(&gw), Ok(Role::Gateway));
        assert_eq!(id(&format!("{gw}-liveness")), Ok(Role::Gateway));
        assert_eq!(id(&format!("{gw}-liveness-scrub")), Ok(Role::Gateway));
        let active = format!("leakmon-gateway-active-{}", f[0].tag("active session"));
        assert_eq!(id(&active), Ok(Role::Gateway));
        assert_eq!(id(&format!("{active}-scrub")), Ok(Role::Gateway));
        // the previous fleet key still counts during a rotation
        let rotated = [FleetKey::from_bytes([8; 32]), f[0].clone()];
        assert_eq!(
            identify(&agent_id("edge-01"), &rotated, &[], false),
            Ok(Role::Node("edge-01".into()))
        );
    }

    #[test]
    fn an_id_that_claims_a_node_or_gateway_without_its_key_is_refused() {
        let f = fleet();
        let other = FleetKey::from_bytes([9; 32]);
        let wrong = format!(
            "leakmon-agent-edge-01-{}",
            other.node_key("edge-01").tag("mqtt client id")
        );
        // another node's tag under this node's name
        let swapped = agent_id("edge-02").replace("edge-02", "edge-01");
        for id in [
            "leakmon-agent-edge-01".to_owned(),
            wrong,
            swapped,
            "leakmon-gateway-active".to_owned(),
            "leakmon-gateway-gw-a".to_owned(),
            format!("leakmon-gateway-gw-a-{}", other.tag("client id gw-a")),
            format!(
                "leakmon-agent-a/b-{}",
                f[0].node_key("a/b").tag("mqtt client id")
            ),
        ] {
            assert_eq!(
                identify(&id, &f, &[], true),
                Err(Refusal::Impostor(id.clone())),
                "{id}"
            );
        }
        // anything else reads, where readers are allowed
        assert_eq!(identify("nodered", &f, &[], true), Ok(Role::Reader));
        assert!(identify("nodered", &f, &[], false).is_err());
        // the gateway's own configured ids count as gateways
        let own = ["my-gateway".to_owned()];
        assert_eq!(identify("my-gateway", &f, &own, false), Ok(Role::Gateway));
        assert_eq!(
            identify("my-gateway-liveness", &f, &own, false),
            Ok(Role::Gateway)
        );
    }

    /// Each case: allowed or not, read or write, the topic prefix, the topic or filter.
    fn check(role: Role, cases: &[(bool, char, &str, &str)]) {
        for &(allowed, op, prefix, topic) in cases {
            let got = match op {
                'r' => role.may_read(&p(prefix), topic),
                _ => role.may_write(&p(prefix), topic),
            };
            assert_eq!(got, allowed, "{role:?} {op} {topic}");
        }
    }

    #[test]
    fn a_node_writes_only_its_own_topics_and_reads_only_its_probe_requests() {
        let cases = [
            (true, 'w', "leakmon", "leakmon/v1/nodes/edge-01/status"),
            (true, 'w', "leakmon", "leakmon/v1/nodes/edge-01/beat"),
            (false, 'w', "leakmon", "leakmon/v1/nodes/edge-02/status"),
            (false, 'w', "leakmon", "leakmon/v1/nodes/edge-01x/status"),
            (false, 'w', "leakmon", "leakmon/v1/probe/edge-01"),
            (false, 'w', "leakmon", "leakmon/v1/gateway/events"),
            (false, 'w', "leakmon", "leakmon/v1/nodes/edge-01/#"),
            (true, 'r', "leakmon", "leakmon/v1/probe/edge-01"),
            (true, 'r', "leakmon", "leakmon/v1/enroll/edge-01"),
            (false, 'r', "leakmon", "leakmon/v1/enroll/edge-02"),
            (false, 'r', "leakmon", "leakmon/v1/probe/+"),
            (false, 'r', "leakmon", "leakmon/v1/nodes/#"),
            (false, 'r', "leakmon", "#"),
            (true, 'w', "site1", "site1/v1/nodes/edge-01/host"),
            (false, 'w', "site1", "leakmon/v1/nodes/edge-01/host"),
        ];
        let n = Role::Node("edge-01".into());
        check(n.clone(), &cases);
        assert!(n.own_probe_topic(&p("leakmon"), "leakmon/v1/probe/edge-01"));
        assert!(!n.own_probe_topic(&p("leakmon"), "leakmon/v1/probe/edge-02"));
        assert!(!Role::Reader.own_probe_topic(&p("leakmon"), "leakmon/v1/probe/edge-01"));
    }

    #[test]
    fn gateways_and_readers_keep_config_mosquitto_s_rules() {
        let gateway = [
            (true, 'r', "leakmon", "leakmon/v1/nodes/+/status"),
            (true, 'r', "leakmon", "$share/gws/leakmon/v1/nodes/+/host"),
            (true, 'r', "leakmon", "leakmon/v1/gateway/events"),
            (true, 'r', "leakmon", "homeassistant/status"),
            (false, 'r', "leakmon", "leakmon/v1/#"),
            (false, 'r', "leakmon", "$share/gws"),
            (true, 'w', "leakmon", "leakmon/v1/probe/edge-01"),
            (true, 'w', "leakmon", "leakmon/v1/alerts"),
            (true, 'w', "leakmon", "homeassistant/sensor/x/config"),
            (false, 'w', "leakmon", "leakmon/v1/nodes/edge-01/status"),
        ];
        check(Role::Gateway, &gateway);
        let reader = [
            (true, 'r', "leakmon", "leakmon/v1/#"),
            (true, 'r', "leakmon", "leakmon/v1/nodes/+/host"),
            (true, 'r', "leakmon", "homeassistant/#"),
            (false, 'r', "leakmon", "#"),
            (false, 'r', "leakmon", "+/v1/nodes/x/host"),
            (false, 'r', "leakmon", "$SYS/#"),
            (true, 'w', "leakmon", "homeassistant/status"),
            (false, 'w', "leakmon", "homeassistant/sensor/x/config"),
            (false, 'w', "leakmon", "leakmon/v1/nodes/edge-01/status"),
            (false, 'w', "leakmon", "leakmon/v1/probe/edge-01"),
        ];
        check(Role::Reader, &reader);
    }

    #[test]
    fn wildcards_match_as_mqtt_says() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+/c", "a/+"));
    }
}
