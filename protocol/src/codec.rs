//! JSON encoding and checked decoding.
//!
//! [`decode`] is what a consumer should call on anything that arrives from the network: it
//! bounds the size, parses, checks the version and that the payload's node matches the topic's.
//! [`decode_request`] does the same for what the gateway sends one agent on a topic of its
//! own (a probe request): there is no node in the payload to compare, so the payload's own
//! [`Request::validate`] is checked instead.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Header, Status, PROTOCOL_VERSION};

/// Payloads larger than this are refused without parsing. An agent's largest message (a
/// containers report of a few hundred containers) stays well below it.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("malformed JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("protocol version {0} is not supported (this build speaks {PROTOCOL_VERSION})")]
    Version(u32),
    #[error("payload names node `{payload}` but was published under node `{topic}`")]
    NodeMismatch { topic: String, payload: String },
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// A short stable label, for counters and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Version(_) => "version",
            DecodeError::NodeMismatch { .. } => "node_mismatch",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

/// Messages that know their version and node, so [`decode`] can check them.
pub trait Versioned {
    fn version(&self) -> u32;
    fn node(&self) -> &str;
}

impl Versioned for Status {
    fn version(&self) -> u32 {
        self.v
    }
    fn node(&self) -> &str {
        &self.node
    }
}

macro_rules! versioned_by_header {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> u32 { self.header.v }
            fn node(&self) -> &str { &self.header.node }
        }
    )*};
}
versioned_by_header!(
    crate::HostReport,
    crate::ContainersReport,
    crate::EventReport
);

macro_rules! versioned_by_fields {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> u32 { self.v }
            fn node(&self) -> &str { &self.node }
        }
    )*};
}
versioned_by_fields!(crate::Beat, crate::ProbeReport);

/// Payloads sent to one agent on a topic that names it (gateway -> agent), checked by
/// [`decode_request`].
pub trait Request {
    /// Whether the payload makes sense beyond its shape; the reason when it does not.
    fn validate(&self) -> Result<(), String>;
}

impl Request for crate::ProbeRequest {
    fn validate(&self) -> Result<(), String> {
        crate::ProbeRequest::validate(self)
    }
}

impl Versioned for Header {
    fn version(&self) -> u32 {
        self.v
    }
    fn node(&self) -> &str {
        &self.node
    }
}

/// Encodes a message as compact JSON.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    encode_with_capacity(msg, 128)
}

/// [`encode`] into a buffer of `capacity` bytes to begin with: a sender that knows about how
/// long its message will be (the last one's length) spares the buffer's doublings and copies.
pub fn encode_with_capacity<T: Serialize>(msg: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    if crate::json::write(&mut out, msg).is_ok() {
        return out;
    }
    // A type the fast writer does not take (a map key that is no string): serde_json's text,
    // which is the same wherever both take a value. Serialising these plain structs cannot
    // fail there either: no maps with non-string keys, no custom serialisers that error.
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Decodes a payload that arrived on `topic_node`'s topic, checking size, version and node.
pub fn decode<T: DeserializeOwned + Versioned>(
    topic_node: &str,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let msg: T = decode_versioned(payload)?;
    if msg.node() != topic_node {
        return Err(DecodeError::NodeMismatch {
            topic: topic_node.to_owned(),
            payload: msg.node().to_owned(),
        });
    }
    Ok(msg)
}

/// Decodes a request to this agent (the topic it came on was the agent's own), checking size,
/// version and the request's own validity.
pub fn decode_request<T: DeserializeOwned + Request>(payload: &[u8]) -> Result<T, DecodeError> {
    let msg: T = decode_versioned(payload)?;
    msg.validate().map_err(DecodeError::Invalid)?;
    Ok(msg)
}

/// How every message of this version that `encode` writes begins (`v` is the first field of
/// every message; a test checks it).
const VERSION_PREFIX: &str = "{\"v\":1,";

/// Size, version, shape.
fn decode_versioned<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    // Check the version before the full shape, so a future version with a changed shape is
    // reported as a version problem rather than as malformed. What `encode` writes starts
    // with this version's field: then that is the version, without a first pass over the
    // whole payload: one parse of it, not two.
    #[derive(serde::Deserialize)]
    struct V {
        v: u32,
    }
    if !payload.starts_with(VERSION_PREFIX.as_bytes()) {
        let v: V = serde_json::from_slice(payload)?;
        if v.v != PROTOCOL_VERSION {
            return Err(DecodeError::Version(v.v));
        }
    }
    Ok(serde_json::from_slice(payload)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::*;

    /// [`encode`], checked to be byte for byte what serde_json writes (see [`crate::json`]).
    fn encoded<T: Serialize>(msg: &T) -> Vec<u8> {
        let ours = encode(msg);
        let theirs = serde_json::to_vec(msg).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        ours
    }

    fn header(seq: u64) -> Header {
        Header {
            v: PROTOCOL_VERSION,
            node: "edge-01".into(),
            run: 3,
            seq,
            ts: 1_764_180_000_123,
            mono: None,
        }
    }

    pub(crate) fn host() -> HostReport {
        HostReport {
            header: header(1),
            hostname: "edge-01".into(),
            uptime_s: 1234,
            n_cpus: 4,
            cpu: Some(CpuUsage {
                user: 12.5,
                system: 3.0,
                idle: 84.5,
                ..Default::default()
            }),
            load: Load {
                load1: 0.5,
                load5: 0.25,
                load15: 0.125,
            },
            mem: Memory {
                total: 4 << 30,
                available: 3 << 30,
                used: 1 << 30,
                free: 2 << 30,
                buffers: 1 << 20,
                cached: 1 << 29,
                used_percent: 25.0,
                available_percent: 75.0,
            },
            swap: Swap::default(),
            disks: vec![Disk {
                path: "/".into(),
                device: "/dev/sda1".into(),
                fstype: "ext4".into(),
                total: 100,
                used: 40,
                free: 60,
                used_percent: 40.0,
                inodes_total: 10,
                inodes_used: 1,
                inodes_free: 9,
            }],
            net: vec![NetIf {
                interface: "eth0".into(),
                bytes_recv: 1,
                ..Default::default()
            }],
            temps: vec![Temperature {
                sensor: "cpu_thermal".into(),
                temp: 48.3,
            }],
            cores: vec![CoreUsage {
                cpu: "cpu0".into(),
                usage: CpuUsage {
                    idle: 90.5,
                    ..Default::default()
                },
            }],
            diskio: vec![DiskIo {
                name: "mmcblk0".into(),
                reads: 12,
                read_bytes: 6144,
                ..Default::default()
            }],
            kernel: None,
            processes: None,
            files: None,
            nstat: Some(NetCounters {
                snmp: [(
                    "Tcp".to_owned(),
                    [("ActiveOpens".to_owned(), 12), ("MaxConn".to_owned(), -1)].into(),
                )]
                .into(),
                snmp6: [("Ip6InReceives".to_owned(), 40)].into(),
                ..Default::default()
            }),
            sockets: Some(Sockets {
                tcp_listen: 3,
                udp_socket: 1,
                ..Default::default()
            }),
            conntrack: Some(Conntrack {
                count: 24,
                max: 262_144,
            }),
            interrupts: vec![Irq {
                irq: "24".into(),
                kind: "GICv2".into(),
                device: "30 Level arch_timer".into(),
                cpus: vec![1, 2],
            }],
            soft_interrupts: Vec::new(),
            buffer: BufferStats {
                dropped_total: 7,
                ..Default::default()
            },
            cut: 0,
        }
    }

    #[test]
    fn host_round_trip() {
        let h = host();
        let bytes = encoded(&h);
        let back: HostReport = decode("edge-01", &bytes).unwrap();
        assert_eq!(back, h);
        // Flat header fields at the top level, as documented.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["seq"], 1);
        assert_eq!(v["ts"], 1_764_180_000_123i64);
        assert_eq!(v["mem"]["used_percent"], 25.0);
    }

    #[test]
    fn status_round_trip_birth_and_will() {
        let birth = Status {
            v: 1,
            node: "edge-01".into(),
            state: NodeState::Online,
            seq: 9,
            reason: None,
            ts: 5,
            identity: Some(Identity {
                hostname: "edge-01".into(),
                agent_version: "0.1.0".into(),
                arch: "aarch64".into(),
                interval_ms: 5000,
                swarm_node_id: Some("abc".into()),
                swarm_role: Some(SwarmRole::Manager),
                engine_version: Some("20.10.24".into()),
                engine_name: Some("edge-01".into()),
                beat_interval_ms: Some(250),
            }),
        };
        let bytes = encoded(&birth);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["state"], "online");
        assert_eq!(v["swarm_role"], "manager");
        assert_eq!(v["beat_interval_ms"], 250);
        assert!(v.get("reason").is_none());
        assert_eq!(decode::<Status>("edge-01", &bytes).unwrap(), birth);

        let will = Status {
            v: 1,
            node: "edge-01".into(),
            state: NodeState::Offline,
            seq: 9,
            reason: Some(OfflineReason::Lost),
            ts: 5,
            identity: None,
        };
        let bytes = encoded(&will);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"node":"edge-01","state":"offline","seq":9,"reason":"lost","ts":5}"#
        );
        assert_eq!(decode::<Status>("edge-01", &bytes).unwrap(), will);
    }

    #[test]
    fn containers_and_event_round_trip() {
        let c = ContainersReport {
            header: header(2),
            engine: EngineState::Ok,
            error: None,
            containers: vec![Container {
                id: "a".repeat(64),
                name: "db".into(),
                image: "postgres:16".into(),
                state: "running".into(),
                health: Health::Unhealthy,
                failing_streak: 3,
                restart_count: 2,
                exit_code: Some(0),
                oom_killed: false,
                started_at: Some(1),
                swarm_service: Some("db".into()),
                swarm_task: Some("db.1.x".into()),
                swarm_node_id: Some("n".into()),
                cpu_percent: Some(12.5),
                mem_usage: Some(1000),
                mem_limit: Some(2000),
                labels: [("com.docker.stack.namespace".to_owned(), "app".to_owned())].into(),
                cpu_time: Some(ContainerCpu {
                    total_ns: 1,
                    user_ns: 2,
                    kernel_ns: 3,
                    periods: 4,
                    throttled_periods: 5,
                    throttled_ns: 6,
                }),
                net: Some(ContainerNet {
                    rx_bytes: 7,
                    tx_dropped: 8,
                    ..ContainerNet::default()
                }),
                blkio: Some(ContainerBlkio {
                    read_bytes: 9,
                    writes: 10,
                    ..ContainerBlkio::default()
                }),
            }],
            engine_info: None,
            cut: 0,
        };
        assert_eq!(
            decode::<ContainersReport>("edge-01", &encoded(&c)).unwrap(),
            c
        );
        let e = EventReport {
            header: header(3),
            action: "die".into(),
            container_id: "b".repeat(64),
            container_name: "web".into(),
            image: "nginx".into(),
            exit_code: Some(137),
            signal: None,
            health: None,
            swarm_service: None,
            swarm_task: None,
        };
        assert_eq!(decode::<EventReport>("edge-01", &encoded(&e)).unwrap(), e);
    }

    #[test]
    fn decode_rejects_with_reasons() {
        let h = encoded(&host());
        assert_eq!(
            decode::<HostReport>("other", &h).unwrap_err().reason(),
            "node_mismatch"
        );
        assert_eq!(
            decode::<HostReport>("edge-01", b"{not json")
                .unwrap_err()
                .reason(),
            "malformed"
        );
        let mut v: serde_json::Value = serde_json::from_slice(&h).unwrap();
        v["v"] = 2.into();
        assert_eq!(
            decode::<HostReport>("edge-01", &serde_json::to_vec(&v).unwrap())
                .unwrap_err()
                .reason(),
            "version"
        );
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(
            decode::<HostReport>("edge-01", &big).unwrap_err().reason(),
            "too_large"
        );
    }

    /// Reports and beats take the short way past the version check, and a payload written
    /// otherwise (spaces, another order) is still checked the long way.
    #[test]
    fn encoded_messages_start_with_their_version() {
        assert_eq!(VERSION_PREFIX, format!("{{\"v\":{PROTOCOL_VERSION},"));
        for bytes in [
            encoded(&host()),
            encoded(&beat(4)),
            encoded(&probe_request()),
        ] {
            assert!(bytes.starts_with(VERSION_PREFIX.as_bytes()));
        }
        let pretty = serde_json::to_vec_pretty(&host()).unwrap();
        assert!(!pretty.starts_with(VERSION_PREFIX.as_bytes()));
        assert_eq!(decode::<HostReport>("edge-01", &pretty).unwrap(), host());
        let mut v: serde_json::Value = serde_json::from_slice(&pretty).unwrap();
        v["v"] = 2.into();
        let e = decode::<HostReport>("edge-01", &serde_json::to_vec_pretty(&v).unwrap());
        assert_eq!(e.unwrap_err().reason(), "version");
    }

    fn beat(n: u64) -> Beat {
        Beat {
            v: PROTOCOL_VERSION,
            node: "edge-01".into(),
            run: 3,
            n,
            ts: None,
            mono: None,
        }
    }

    #[test]
    fn beat_round_trip_and_size() {
        let b = beat(17);
        let bytes = encoded(&b);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"node":"edge-01","run":3,"n":17}"#
        );
        // Tiny on purpose: every node sends 4 a second (docs/protocol.md has the bytes per second).
        assert_eq!(bytes.len(), 39);
        assert_eq!(decode::<Beat>("edge-01", &bytes).unwrap(), b);
        assert_eq!(
            decode::<Beat>("edge-02", &bytes).unwrap_err().reason(),
            "node_mismatch"
        );
        // A day at 4 a second still fits in about 40 bytes.
        assert!(encoded(&beat(345_600)).len() <= 43);
        assert_eq!(
            decode::<Beat>("edge-01", br#"{"v":2,"node":"edge-01","run":3,"n":1}"#)
                .unwrap_err()
                .reason(),
            "version"
        );
        assert_eq!(
            decode::<Beat>("edge-01", br#"{"v":1,"node":"edge-01","run":3}"#)
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }

    fn probe_request() -> ProbeRequest {
        ProbeRequest {
            v: PROTOCOL_VERSION,
            id: 42,
            gateway: "gw1".into(),
            target: "edge-01".into(),
            addr: "10.0.0.11".into(),
            ports: vec![22, 2377],
            window_ms: 3000,
            every_ms: 200,
            timeout_ms: 500,
        }
    }

    #[test]
    fn probe_request_round_trip() {
        let r = probe_request();
        let bytes = encoded(&r);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"id":42,"gateway":"gw1","target":"edge-01","addr":"10.0.0.11","ports":[22,2377],"window_ms":3000,"every_ms":200,"timeout_ms":500}"#
        );
        assert_eq!(decode_request::<ProbeRequest>(&bytes).unwrap(), r);
        for addr in ["fd00::5", "fe80::1%eth0", "edge-01.lan", "EDGE_01"] {
            let ok = ProbeRequest {
                addr: addr.into(),
                ..probe_request()
            };
            assert_eq!(decode_request::<ProbeRequest>(&encoded(&ok)).unwrap(), ok);
        }
    }

    #[test]
    fn probe_request_is_checked() {
        let bad = |f: &dyn Fn(&mut ProbeRequest)| {
            let mut r = probe_request();
            f(&mut r);
            decode_request::<ProbeRequest>(&encoded(&r)).unwrap_err()
        };
        for e in [
            bad(&|r| r.target = "a/b".into()),
            bad(&|r| r.target = String::new()),
            bad(&|r| r.gateway = String::new()),
            bad(&|r| r.gateway = "gw\n1".into()),
            bad(&|r| r.addr = String::new()),
            bad(&|r| r.addr = "10.0.0.1; rm -rf /".into()),
            bad(&|r| r.addr = "a".repeat(254)),
            bad(&|r| r.ports = vec![]),
            bad(&|r| r.ports = vec![22, 0]),
            bad(&|r| r.ports = (1..=17).collect()),
            bad(&|r| r.window_ms = 0),
            bad(&|r| r.every_ms = 0),
            bad(&|r| r.timeout_ms = 0),
        ] {
            assert_eq!(e.reason(), "invalid", "{e}");
        }
        let mut v: serde_json::Value = serde_json::from_slice(&encoded(&probe_request())).unwrap();
        v["v"] = 7.into();
        let e = decode_request::<ProbeRequest>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(e.reason(), "version");
        v["v"] = 1.into();
        v["ports"] = serde_json::json!([70000]);
        let e = decode_request::<ProbeRequest>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(e.reason(), "malformed", "a port above 65535");
        for junk in [&b"{"[..], b"null", b"[]", b"{\"v\":1}", b"\xff\xfe"] {
            let e = decode_request::<ProbeRequest>(junk).unwrap_err();
            assert_eq!(e.reason(), "malformed", "{junk:?}");
        }
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(
            decode_request::<ProbeRequest>(&big).unwrap_err().reason(),
            "too_large"
        );
    }

    #[test]
    fn probe_report_round_trip() {
        let r = ProbeReport {
            v: PROTOCOL_VERSION,
            node: "edge-02".into(),
            id: 42,
            target: "edge-01".into(),
            attempts: 3,
            answered: 1,
        };
        let bytes = encoded(&r);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"node":"edge-02","id":42,"target":"edge-01","attempts":3,"answered":1}"#
        );
        assert_eq!(decode::<ProbeReport>("edge-02", &bytes).unwrap(), r);
        assert_eq!(
            decode::<ProbeReport>("edge-01", &bytes)
                .unwrap_err()
                .reason(),
            "node_mismatch",
            "a report speaks for its prober, whose topic it is on"
        );
    }

    #[test]
    fn unknown_fields_are_accepted_for_forward_compatibility() {
        let mut v: serde_json::Value = serde_json::from_slice(&encoded(&host())).unwrap();
        v["some_future_field"] = 1.into();
        assert!(decode::<HostReport>("edge-01", &serde_json::to_vec(&v).unwrap()).is_ok());
    }
}
