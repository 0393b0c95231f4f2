//! Topic names. Every topic leakmon uses is built and parsed here.
//!
//! Layout: `<prefix>/v1/nodes/<node>/<channel>` (agents) and `<prefix>/v1/gateway/{status,events}`
//! (the active gateway) where channel is one of `status`, `host`, `containers`, `events`,
//! `beat`, `probe`; and `<prefix>/v1/probe/<node>`, the gateway's probe requests to one agent.
//! The `v1` segment is the topic-layout version; it changes only if the layout itself changes.
//!
//! Probe requests live outside `nodes/` on purpose: everything under `nodes/<node>/` is
//! written by that node and speaks for it (the ACL lets only that node write there, and a
//! payload must name the node of its topic); a request written by the gateway does not belong
//! there, and the agents' read permission stays apart from their write permission.

use std::fmt;
use std::str::FromStr;

/// The per-node channels an agent publishes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Retained birth / death certificate (also the MQTT Last Will).
    Status,
    /// Host health samples.
    Host,
    /// Container health samples.
    Containers,
    /// Docker engine events, one per message, published as they happen.
    Events,
    /// Liveness beats: small, frequent, QoS 0, never retained or buffered.
    Beat,
    /// The agent's reports of probes it ran for the gateway (QoS 0).
    Probe,
}

impl Channel {
    /// Every channel under `nodes/<node>/`.
    pub const ALL: [Channel; 6] = [
        Channel::Status,
        Channel::Host,
        Channel::Containers,
        Channel::Events,
        Channel::Beat,
        Channel::Probe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Status => "status",
            Channel::Host => "host",
            Channel::Containers => "containers",
            Channel::Events => "events",
            Channel::Beat => "beat",
            Channel::Probe => "probe",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| TopicError::UnknownChannel(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic does not start with `{0}/v1/nodes/`")]
    ForeignTopic(String),
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
    #[error("invalid node name `{name}`: {why}")]
    InvalidNode { name: String, why: &'static str },
    #[error("invalid topic prefix `{prefix}`: {why}")]
    InvalidPrefix { prefix: String, why: &'static str },
    #[error("topic is not `{0}/v1/probe/<node>`")]
    NotProbeRequest(String),
}

/// The longest node name accepted (it becomes part of topics and InfluxDB tags).
pub const MAX_NODE_LEN: usize = 128;

/// Checks that a node name can be a single MQTT topic level and a readable tag:
/// ASCII letters, digits, `.`, `_` and `-`, 1 to [`MAX_NODE_LEN`] characters.
pub fn validate_node(name: &str) -> Result<(), TopicError> {
    let bad = |why| {
        Err(TopicError::InvalidNode {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NODE_LEN {
        return bad("it is longer than 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("use only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Topic builder and parser for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// A prefix is one or more topic levels without wildcards, e.g. `leakmon` or `site3/leakmon`.
    pub fn new(prefix: &str) -> Result<Self, TopicError> {
        let bad = |why| {
            Err(TopicError::InvalidPrefix {
                prefix: prefix.to_owned(),
                why,
            })
        };
        if prefix.is_empty() {
            return bad("it is empty");
        }
        if prefix.contains(['+', '#', '\0']) {
            return bad("it must not contain MQTT wildcards '+' or '#'");
        }
        if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
            return bad("it must not start or end with '/' or have empty levels");
        }
        Ok(Topics {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/v1/nodes/<node>/<channel>`.
    pub fn node(&self, node: &str, channel: Channel) -> String {
        format!("{}/v1/nodes/{}/{}", self.prefix, node, channel.as_str())
    }

    /// The filter matching one channel of every node: `<prefix>/v1/nodes/+/<channel>`.
    pub fn all_nodes(&self, channel: Channel) -> String {
        format!("{}/v1/nodes/+/{}", self.prefix, channel.as_str())
    }

    /// `<prefix>/v1/gateway/status`: the retained record of the active gateway.
    pub fn gateway_status(&self) -> String {
        format!("{}/v1/gateway/status", self.prefix)
    }

    /// `<prefix>/v1/gateway/events`: every decision and action of the active gateway.
    pub fn gateway_events(&self) -> String {
        format!("{}/v1/gateway/events", self.prefix)
    }

    /// `<prefix>/v1/alerts`: every alert (firing and resolved) of the active gateway.
    pub fn alerts(&self) -> String {
        format!("{}/v1/alerts", self.prefix)
    }

    /// `<prefix>/v1/probe/<node>`: the gateway's probe requests to `node` (that agent
    /// subscribes to it; nobody else should read it).
    pub fn probe_request(&self, node: &str) -> String {
        format!("{}/v1/probe/{}", self.prefix, node)
    }

    /// The node a probe-request topic is addressed to.
    pub fn parse_probe_request<'t>(&self, topic: &'t str) -> Result<&'t str, TopicError> {
        let node = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix("/v1/probe/"))
            .ok_or_else(|| TopicError::NotProbeRequest(self.prefix.clone()))?;
        if node.contains('/') {
            return Err(TopicError::NotProbeRequest(self.prefix.clone()));
        }
        validate_node(node)?;
        Ok(node)
    }

    /// `<prefix>/v1/nodes/<node>/enroll`: an agent without its key asks for it
    /// ([`crate::enroll`]). Not a [`Channel`]: it carries no seal, and only enrolment reads it.
    pub fn enroll_request(&self, node: &str) -> String {
        format!("{}/v1/nodes/{}/enroll", self.prefix, node)
    }

    /// The filter of every node's enrolment requests.
    pub fn all_enroll_requests(&self) -> String {
        format!("{}/v1/nodes/+/enroll", self.prefix)
    }

    /// The node an enrolment request's topic names, if it is one.
    pub fn parse_enroll_request<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let node = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/v1/nodes/")?
            .strip_suffix("/enroll")?;
        validate_node(node).ok().map(|_| node)
    }

    /// `<prefix>/v1/enroll/<node>`: the gateway's answer to `node`'s enrolment request.
    pub fn enroll_reply(&self, node: &str) -> String {
        format!("{}/v1/enroll/{}", self.prefix, node)
    }

    /// Splits a node topic into its node name and channel.
    pub fn parse<'t>(&self, topic: &'t str) -> Result<(&'t str, Channel), TopicError> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix("/v1/nodes/"))
            .ok_or_else(|| TopicError::ForeignTopic(self.prefix.clone()))?;
        let (node, channel) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::UnknownChannel(String::new()))?;
        validate_node(node)?;
        Ok((node, channel.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_topics() {
        let t = Topics::new("leakmon").unwrap();
        assert_eq!(t.enroll_request("n1"), "leakmon/v1/nodes/n1/enroll");
        assert_eq!(
            t.parse_enroll_request("leakmon/v1/nodes/n1/enroll"),
            Some("n1")
        );
        assert_eq!(t.parse_enroll_request("leakmon/v1/nodes/n1/status"), None);
        assert_eq!(t.parse_enroll_request("leakmon/v1/nodes/a/b/enroll"), None);
        assert_eq!(t.enroll_reply("n1"), "leakmon/v1/enroll/n1");
        assert_eq!(t.all_enroll_requests(), "leakmon/v1/nodes/+/enroll");
    }

    #[test]
    fn builds_and_parses_every_channel() {
        let t = Topics::new("leakmon").unwrap();
        for c in Channel::ALL {
            let topic = t.node("edge-01", c);
            assert_eq!(topic, format!("leakmon/v1/nodes/edge-01/{c}"));
            assert_eq!(t.parse(&topic).unwrap(), ("edge-01", c));
        }
        assert_eq!(t.all_nodes(Channel::Host), "leakmon/v1/nodes/+/host");
        assert_eq!(t.gateway_status(), "leakmon/v1/gateway/status");
        assert_eq!(t.gateway_events(), "leakmon/v1/gateway/events");
        assert_eq!(t.alerts(), "leakmon/v1/alerts");
        assert!(t.parse(&t.gateway_events()).is_err(), "not a node topic");
        assert_eq!(t.all_nodes(Channel::Beat), "leakmon/v1/nodes/+/beat");
        assert_eq!(t.node("n", Channel::Probe), "leakmon/v1/nodes/n/probe");
        assert_eq!(
            t.parse("leakmon/v1/nodes/edge-01/beat").unwrap(),
            ("edge-01", Channel::Beat)
        );
    }

    #[test]
    fn probe_request_topics() {
        let t = Topics::new("site3/leakmon").unwrap();
        let topic = t.probe_request("edge-01");
        assert_eq!(topic, "site3/leakmon/v1/probe/edge-01");
        assert_eq!(t.parse_probe_request(&topic).unwrap(), "edge-01");
        assert!(t.parse(&topic).is_err(), "not under nodes/");
        for bad in [
            "site3/leakmon/v1/probe/",
            "site3/leakmon/v1/probe/a/b",
            "site3/leakmon/v1/probe/a+",
            "site3/leakmon/v1/probe",
            "leakmon/v1/probe/edge-01",
            "site3/leakmon/v1/nodes/edge-01/probe",
        ] {
            assert!(t.parse_probe_request(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            t.parse_probe_request("other/v1/probe/a"),
            Err(TopicError::NotProbeRequest(_))
        ));
        assert!(matches!(
            t.parse_probe_request("site3/leakmon/v1/probe/a b"),
            Err(TopicError::InvalidNode { .. })
        ));
    }

    #[test]
    fn multi_level_prefix() {
        let t = Topics::new("site3/leakmon").unwrap();
        assert_eq!(
            t.parse("site3/leakmon/v1/nodes/pi.4/events").unwrap(),
            ("pi.4", Channel::Events)
        );
        assert!(t.parse("leakmon/v1/nodes/pi/events").is_err());
    }

    #[test]
    fn rejects_bad_topics() {
        let t = Topics::new("leakmon").unwrap();
        assert!(matches!(
            t.parse("other/v1/nodes/a/host"),
            Err(TopicError::ForeignTopic(_))
        ));
        assert!(matches!(
            t.parse("leakmon/v1/nodes/a/cpu"),
            Err(TopicError::UnknownChannel(_))
        ));
        assert!(matches!(
            t.parse("leakmon/v1/nodes/a/host/extra"),
            Err(TopicError::UnknownChannel(_))
        ));
        assert!(matches!(
            t.parse("leakmon/v1/nodes/a"),
            Err(TopicError::UnknownChannel(_))
        ));
        assert!(matches!(
            t.parse("leakmon/v1/nodes/a b/host"),
            Err(TopicError::InvalidNode { .. })
        ));
    }

    #[test]
    fn node_names() {
        assert!(validate_node("edge-01").is_ok());
        assert!(validate_node("raspberrypi.local").is_ok());
        assert!(validate_node("").is_err());
        assert!(validate_node("a/b").is_err());
        assert!(validate_node("a+").is_err());
        assert!(validate_node("#").is_err());
        assert!(validate_node(&"x".repeat(129)).is_err());
    }

    #[test]
    fn prefixes() {
        assert!(Topics::new("leakmon").is_ok());
        assert!(Topics::new("a/b/c").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/+", "#"] {
            assert!(Topics::new(bad).is_err(), "{bad}");
        }
    }
}
