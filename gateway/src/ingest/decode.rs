//! Checks everything that arrives from MQTT before it is believed: the topic, the size, the
//! JSON, the protocol version, that the payload's node is the topic's, that its timestamp is
//! not absurd, and that its values are plausible. Pure; `now_ms` is passed in.

use leakmon_protocol::{
    decode, Beat, Channel, ContainersReport, DecodeError, EventReport, Header, HostReport,
    ProbeReport, Status, Topics,
};

use crate::keyring::Keyring;

/// Data older than this is refused (an agent's spool holds hours, not weeks).
pub const MAX_AGE_MS: i64 = 30 * 24 * 3600 * 1000;
/// Clocks ahead by more than this are refused.
pub const MAX_AHEAD_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Status(Status),
    Host(Box<HostReport>),
    Containers(ContainersReport),
    Event(EventReport),
    /// A liveness beat, for the failure detector.
    Beat(Beat),
    /// A vantage point's probe report, for the failure detector.
    Probe(ProbeReport),
    /// The node's retained status was cleared (an empty retained message): the operator's way
    /// to say a host is gone for good. The gateway forgets it.
    Cleared,
}

impl Incoming {
    /// The header of a data message (host, containers or event report).
    pub fn header(&self) -> Option<&Header> {
        match self {
            Incoming::Host(r) => Some(&r.header),
            Incoming::Containers(r) => Some(&r.header),
            Incoming::Event(e) => Some(&e.header),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The node named by the topic, when the topic could be read.
    pub node: Option<String>,
    /// Stable label: `bad_topic`, `unauthenticated`, `too_large`, `malformed`, `version`,
    /// `node_mismatch`, `bad_timestamp`, `absurd_value`.
    pub reason: &'static str,
    pub detail: String,
}

fn reject(node: Option<&str>, reason: &'static str, detail: impl Into<String>) -> Reject {
    Reject {
        node: node.map(str::to_owned),
        reason,
        detail: detail.into(),
    }
}

fn from_decode(node: &str, e: DecodeError) -> Reject {
    reject(Some(node), e.reason(), e.to_string())
}

fn check_ts(node: &str, ts: i64, now_ms: i64) -> Result<(), Reject> {
    if ts < now_ms - MAX_AGE_MS || ts > now_ms + MAX_AHEAD_MS {
        return Err(reject(
            Some(node),
            "bad_timestamp",
            format!("ts {ts} is more than 30 days old or 1 day ahead of {now_ms}"),
        ));
    }
    Ok(())
}

fn in_range(node: &str, what: &str, v: f64, lo: f64, hi: f64) -> Result<(), Reject> {
    if !(lo..=hi).contains(&v) {
        return Err(reject(
            Some(node),
            "absurd_value",
            format!("{what} = {v} is outside {lo}..{hi}"),
        ));
    }
    Ok(())
}

fn check_host(node: &str, r: &HostReport) -> Result<(), Reject> {
    if let Some(c) = &r.cpu {
        for (name, v) in [
            ("cpu.user", c.user),
            ("cpu.system", c.system),
            ("cpu.idle", c.idle),
            ("cpu.iowait", c.iowait),
        ] {
            in_range(node, name, v, 0.0, 100.5)?;
        }
    }
    in_range(node, "mem.used_percent", r.mem.used_percent, 0.0, 100.5)?;
    in_range(node, "load.load1", r.load.load1, 0.0, 1e6)?;
    for d in &r.disks {
        in_range(node, "disks.used_percent", d.used_percent, 0.0, 100.5)?;
    }
    for t in &r.temps {
        in_range(node, "temps.temp", t.temp, -100.0, 250.0)?;
    }
    Ok(())
}

fn check_containers(node: &str, r: &ContainersReport) -> Result<(), Reject> {
    for c in &r.containers {
        if let Some(p) = c.cpu_percent {
            in_range(node, "containers.cpu_percent", p, 0.0, 100.0 * 4096.0)?;
        }
    }
    Ok(())
}

/// [`decode_message`] of a message its node sealed with its key (`keys`; `None`:
/// `auth.insecure`, anything is believed). An unsealed or wrongly sealed message is rejected
/// as `unauthenticated`. An empty retained status cannot be sealed: it passes as
/// [`Incoming::Cleared`], which ingest believes only of a node that is not online.
pub fn decode_sealed(
    topics: &Topics,
    keys: Option<&mut Keyring>,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<(String, Incoming), Reject> {
    if let Some(keys) = keys {
        let (node, channel) = topics
            .parse(topic)
            .map_err(|e| reject(None, "bad_topic", format!("{topic}: {e}")))?;
        let cleared = channel == Channel::Status && payload.is_empty();
        // the size first: a payload too large to be anything is not worth a MAC
        if payload.len() > leakmon_protocol::codec::MAX_PAYLOAD {
            return Err(from_decode(node, DecodeError::TooLarge(payload.len())));
        }
        if !cleared {
            keys.check(node, topic, payload)
                .map_err(|e| reject(Some(node), "unauthenticated", e.to_string()))?;
        }
    }
    decode_message(topics, topic, payload, now_ms)
}

/// Decodes one MQTT message into the node it is about and what it says.
pub fn decode_message(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<(String, Incoming), Reject> {
    let (node, channel) = topics
        .parse(topic)
        .map_err(|e| reject(None, "bad_topic", format!("{topic}: {e}")))?;
    let msg = match channel {
        Channel::Status if payload.is_empty() => Incoming::Cleared,
        Channel::Status => {
            let s: Status = decode(node, payload).map_err(|e| from_decode(node, e))?;
            Incoming::Status(s)
        }
        Channel::Host => {
            let r: HostReport = decode(node, payload).map_err(|e| from_decode(node, e))?;
            check_ts(node, r.header.ts, now_ms)?;
            check_host(node, &r)?;
            Incoming::Host(Box::new(r))
        }
        Channel::Containers => {
            let r: ContainersReport = decode(node, payload).map_err(|e| from_decode(node, e))?;
            check_ts(node, r.header.ts, now_ms)?;
            check_containers(node, &r)?;
            Incoming::Containers(r)
        }
        Channel::Events => {
            let r: EventReport = decode(node, payload).map_err(|e| from_decode(node, e))?;
            check_ts(node, r.header.ts, now_ms)?;
            Incoming::Event(r)
        }
        Channel::Beat => Incoming::Beat(decode(node, payload).map_err(|e| from_decode(node, e))?),
        Channel::Probe => Incoming::Probe(decode(node, payload).map_err(|e| from_decode(node, e))?),
    };
    Ok((node.to_owned(), msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_719_774_000;

    fn topics() -> Topics {
        Topics::new("leakmon").unwrap()
    }

    fn host_json(node: &str, ts: i64) -> serde_json::Value {
        serde_json::json!({
            "v": 1, "node": node, "run": 1, "seq": 1, "ts": ts, "hostname": node,
            "uptime_s": 5, "n_cpus": 2,
            "load": {"load1": 0.1, "load5": 0.1, "load15": 0.1},
            "mem": {"total": 10, "available": 5, "used": 5, "free": 5, "buffers": 0,
                    "cached": 0, "used_percent": 50.0, "available_percent": 50.0},
            "swap": {"total": 0, "used": 0, "free": 0, "used_percent": 0.0},
            "buffer": {"queued": 0, "queued_bytes": 0, "spooled_bytes": 0, "dropped_total": 0}
        })
    }

    fn run(topic: &str, v: &serde_json::Value) -> Result<(String, Incoming), Reject> {
        decode_message(&topics(), topic, &serde_json::to_vec(v).unwrap(), NOW)
    }

    #[test]
    fn with_keys_only_what_the_node_sealed_is_believed() {
        use leakmon_protocol::auth::FleetKey;
        let fleet = FleetKey::from_bytes([5; 32]);
        let mut keys = Keyring::new(fleet.clone(), None);
        let topic = "leakmon/v1/nodes/a/host";
        let body = serde_json::to_vec(&host_json("a", NOW)).unwrap();
        let d = |keys: Option<&mut Keyring>, t: &str, p: &[u8]| {
            decode_sealed(&topics(), keys, t, p, NOW).map_err(|r| r.reason)
        };
        assert_eq!(
            d(Some(&mut keys), topic, &body).unwrap_err(),
            "unauthenticated"
        );
        let own = fleet.node_key("a").seal(topic, body.clone());
        assert!(matches!(
            d(Some(&mut keys), topic, &own),
            Ok((_, Incoming::Host(_)))
        ));
        // another node's key, or the right one for another topic
        let other = fleet.node_key("b").seal(topic, body.clone());
        assert_eq!(
            d(Some(&mut keys), topic, &other).unwrap_err(),
            "unauthenticated"
        );
        let moved = fleet
            .node_key("a")
            .seal("leakmon/v1/nodes/a/containers", body.clone());
        assert_eq!(
            d(Some(&mut keys), topic, &moved).unwrap_err(),
            "unauthenticated"
        );
        // an empty status cannot be sealed: ingest judges it
        let cleared = d(Some(&mut keys), "leakmon/v1/nodes/a/status", b"");
        assert!(matches!(cleared, Ok((_, Incoming::Cleared))));
        // auth.insecure: anything decodes as before
        assert!(d(None, topic, &body).is_ok());
        assert_eq!(
            d(Some(&mut keys), "elsewhere", &own).unwrap_err(),
            "bad_topic"
        );
    }

    #[test]
    fn good_host_report() {
        let (node, m) = run("leakmon/v1/nodes/a/host", &host_json("a", NOW)).unwrap();
        assert_eq!(node, "a");
        assert!(matches!(m, Incoming::Host(_)));
    }

    #[test]
    fn an_empty_status_is_a_cleared_retained_status_and_nothing_else_is() {
        let d = |t: &str| decode_message(&topics(), t, b"", NOW);
        assert_eq!(
            d("leakmon/v1/nodes/a/status").unwrap(),
            ("a".into(), Incoming::Cleared)
        );
        assert_eq!(
            d("leakmon/v1/nodes/a/host").unwrap_err().reason,
            "malformed"
        );
    }

    #[test]
    fn each_reject_reason() {
        let r = |t: &str, v: &serde_json::Value| run(t, v).unwrap_err().reason;
        assert_eq!(r("other/x", &host_json("a", NOW)), "bad_topic");
        assert_eq!(
            r("leakmon/v1/nodes/a/host", &host_json("b", NOW)),
            "node_mismatch"
        );
        let mut v = host_json("a", NOW);
        v["v"] = 9.into();
        assert_eq!(r("leakmon/v1/nodes/a/host", &v), "version");
        assert_eq!(
            r(
                "leakmon/v1/nodes/a/host",
                &host_json("a", NOW - MAX_AGE_MS - 1)
            ),
            "bad_timestamp"
        );
        assert_eq!(
            r(
                "leakmon/v1/nodes/a/host",
                &host_json("a", NOW + MAX_AHEAD_MS + 1)
            ),
            "bad_timestamp"
        );
        let mut v = host_json("a", NOW);
        v["mem"]["used_percent"] = 1e300.into();
        assert_eq!(r("leakmon/v1/nodes/a/host", &v), "absurd_value");
        let e =
            decode_message(&topics(), "leakmon/v1/nodes/a/host", b"{\"v\":1,", NOW).unwrap_err();
        assert_eq!((e.reason, e.node.as_deref()), ("malformed", Some("a")));
        let big = vec![b' '; leakmon_protocol::codec::MAX_PAYLOAD + 1];
        let e = decode_message(&topics(), "leakmon/v1/nodes/a/host", &big, NOW).unwrap_err();
        assert_eq!(e.reason, "too_large");
        let beat = serde_json::json!({"v": 1, "node": "b", "run": 1, "n": 1});
        assert_eq!(r("leakmon/v1/nodes/a/beat", &beat), "node_mismatch");
    }

    /// Property: whatever bytes arrive on whatever topic, decoding returns (never panics), and
    /// a rejection carries one of the documented reasons.
    #[test]
    fn arbitrary_input_never_panics() {
        let reasons = [
            "bad_topic",
            "too_large",
            "malformed",
            "version",
            "node_mismatch",
            "bad_timestamp",
            "absurd_value",
        ];
        let good = serde_json::to_vec(&host_json("a", NOW)).unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let topics_list = [
            "leakmon/v1/nodes/a/host",
            "leakmon/v1/nodes/a/containers",
            "leakmon/v1/nodes/a/events",
            "leakmon/v1/nodes/a/status",
            "leakmon/v1/nodes//host",
            "leakmon/v1/nodes/a",
        ];
        for i in 0..20_000 {
            let mut p = good.clone();
            // Mutate: flip bytes, truncate, or splice random bytes.
            match next() % 3 {
                0 => {
                    for _ in 0..(next() % 8 + 1) {
                        let at = (next() as usize) % p.len();
                        p[at] = next() as u8;
                    }
                }
                1 => p.truncate((next() as usize) % p.len()),
                _ => {
                    let at = (next() as usize) % p.len();
                    let junk: Vec<u8> = (0..next() % 16).map(|_| next() as u8).collect();
                    p.splice(at..at, junk);
                }
            }
            let topic = topics_list[i % topics_list.len()];
            if let Err(e) = decode_message(&topics(), topic, &p, NOW) {
                assert!(reasons.contains(&e.reason), "{}", e.reason);
            }
        }
    }
}
