//! The agent's configuration (`/etc/leakmon/agent.toml`). Key names are a contract; every
//! key is documented in docs/config.md.

use std::path::PathBuf;
use std::time::Duration;

use leakmon_common::config::{ByteSize, ConfigError, Dur};
use leakmon_common::mqtt::{Connector, MqttSettings};
use leakmon_protocol::auth::NodeKey;
use serde::{Deserialize, Serialize};

pub const DEFAULT_PATH: &str = "/etc/leakmon/agent.toml";
pub const ENV_PREFIX: &str = "LEAKMON_AGENT";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Node name in topics and tags; default: the hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Sampling interval of host and container health.
    pub interval: Dur,
    /// Where the agent keeps its counters (run and connection sequence numbers).
    pub state_dir: PathBuf,
    pub host: HostConfig,
    pub mqtt: MqttSettings,
    pub docker: DockerConfig,
    pub buffer: BufferConfig,
    pub liveness: LivenessConfig,
    pub auth: AuthConfig,
}

/// Proof of which node sent a message (docs/operations.md, "Security"): every message is
/// sealed with this node's key, and probe requests must be sealed with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// This node's key: `leakmon-gateway keys node <node>` on a manager prints it. Without
    /// it (no file, or an empty one), the key enrolment got earlier (`<state_dir>/node.key`),
    /// else enrolment.
    pub key_file: PathBuf,
    /// Get the key from the gateways by proving this node's Swarm identity, when there is no
    /// key file ([`leakmon_protocol::enroll`]).
    pub enroll: bool,
    /// The Swarm node certificate and key this node's engine holds (enrolment's proof).
    pub swarm_cert_file: PathBuf,
    pub swarm_key_file: PathBuf,
    /// Send unsealed messages and take unsealed probe requests: only for a gateway that has
    /// `auth.insecure = true` too, on a broker no stranger can reach.
    pub insecure: bool,
}

/// Where the Docker engine keeps this node's Swarm certificate and key.
pub const SWARM_CERTS: &str = "/var/lib/docker/swarm/certificates";

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_file: "/etc/leakmon/node.key".into(),
            enroll: true,
            swarm_cert_file: format!("{SWARM_CERTS}/swarm-node.crt").into(),
            swarm_key_file: format!("{SWARM_CERTS}/swarm-node.key").into(),
            insecure: false,
        }
    }
}

/// What enrolment needs: the Swarm node certificate and key (PEM), and where the key it
/// gets is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub cert_pem: String,
    pub key_pem: String,
    pub save_to: PathBuf,
}

/// The text of a file, `None` when it is missing or blank (systemd's empty credential).
fn present(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .filter(|t| !t.trim().is_empty())
}

impl AuthConfig {
    /// Where the key enrolment got is kept.
    pub fn enrolled_key(state_dir: &std::path::Path) -> PathBuf {
        state_dir.join("node.key")
    }

    /// This node's key, or what enrolment needs, or neither with `insecure`; errors name
    /// the key and the fix.
    fn load(
        &self,
        node: &str,
        state_dir: &std::path::Path,
    ) -> Result<(Option<NodeKey>, Option<Enrollment>), ConfigError> {
        if self.insecure {
            return Ok((None, None));
        }
        let enrolled = Self::enrolled_key(state_dir);
        let path = match () {
            _ if present(&self.key_file).is_some() => &self.key_file,
            _ if present(&enrolled).is_some() => &enrolled,
            _ => {
                let swarm = self
                    .enroll
                    .then(|| present(&self.swarm_cert_file).zip(present(&self.swarm_key_file)))
                    .flatten();
                if let Some((cert_pem, key_pem)) = swarm {
                    return Ok((
                        None,
                        Some(Enrollment {
                            cert_pem,
                            key_pem,
                            save_to: enrolled,
                        }),
                    ));
                }
                &self.key_file
            }
        };
        let fix = format!(
            "on a Swarm node the agent enrolls by itself (auth.enroll, with the engine's \
             {} readable); else on a Swarm manager run `leakmon-gateway keys node {node} > \
             node.key` and copy it to {} (mode 600); or set auth.insecure = true on a broker no \
             stranger can reach",
            self.swarm_cert_file.display(),
            self.key_file.display()
        );
        let key_name = if path == &enrolled {
            "state_dir"
        } else {
            "auth.key_file"
        };
        let text = leakmon_common::config::read_key_file(path, key_name, &fix)?;
        let key = NodeKey::parse(&text)
            .and_then(|k| k.for_node(node))
            .map_err(|e| ConfigError::new(key_name, format!("{}: {e}; {fix}", path.display())))?;
        Ok((Some(key), None))
    }
}

/// An agent's default MQTT client id: with its key, a tag only that key makes (a stranger
/// who took the id would cut this agent's connection and fire its Will).
pub fn default_client_id(node: &str, key: Option<&NodeKey>) -> String {
    key.map_or_else(|| format!("leakmon-agent-{node}"), NodeKey::client_id)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Where the host's /proc is mounted (`/host/proc` in a container).
    pub proc_root: PathBuf,
    /// Where the host's /sys is mounted.
    pub sys_root: PathBuf,
    /// Where the host's root filesystem is mounted, to measure its filesystems (`/` natively).
    pub rootfs: PathBuf,
    /// Interfaces not reported; a trailing `*` matches a prefix.
    pub net_ignore: Vec<String>,
    /// Mount points not reported; a trailing `*` matches a prefix.
    pub disk_ignore: Vec<String>,
    /// Kernel network counters sent (Telegraf's `nstat` names, `TcpExtListenDrops`); a
    /// trailing `*` matches a prefix, `["*"]` sends all (about 400), `[]` none.
    pub nstat: Vec<String>,
    /// Count the host's TCP sockets by state and its UDP sockets (Telegraf's `netstat`, off
    /// in Telegraf's default config too), reading /proc/net/tcp, tcp6, udp and udp6 each
    /// sample. The kernel walks its whole TCP hash table for it, sized by RAM, however few the
    /// sockets: measured 4-5 ms of kernel time per read on a 24 GiB VM, most of the agent's
    /// CPU at a 1 s interval.
    pub sockets: bool,
    /// Send /proc/interrupts and /proc/softirqs (Telegraf's `interrupts`, off in Telegraf's
    /// default config too): one point per IRQ line and sample, about 80 bytes per line and
    /// CPU, often more than the rest of the host report.
    pub interrupts: bool,
}

/// The counters [`HostConfig::nstat`] sends by default: every one the Telegraf dashboards of
/// tests/telegraf.rs read, and node_exporter's default netstat set: 76 counters (1.7 KB of
/// JSON) on Linux 6.18, where all are 405 (9 KB).
pub const NSTAT_DEFAULT: &[&str] = &[
    "IpForwarding",
    "IpInReceives",
    "IpInDelivers",
    "IpOutRequests",
    "IpInDiscards",
    "IpOutDiscards",
    "IpInHdrErrors",
    "IpInAddrErrors",
    "IpInUnknownProtos",
    "IpOutNoRoutes",
    "IpExtInOctets",
    "IpExtOutOctets",
    "Ip6InReceives",
    "Ip6OutRequests",
    "Ip6InDiscards",
    "Ip6OutDiscards",
    "Ip6InHdrErrors",
    "Ip6InAddrErrors",
    "Ip6InUnknownProtos",
    "Ip6OutNoRoutes",
    "Ip6InOctets",
    "Ip6OutOctets",
    "IcmpInMsgs",
    "IcmpOutMsgs",
    "IcmpInErrors",
    "IcmpOutErrors",
    "IcmpInCsumErrors",
    "IcmpInEchos",
    "IcmpOutEchos",
    "IcmpInEchoReps",
    "IcmpOutEchoReps",
    "Icmp6InMsgs",
    "Icmp6OutMsgs",
    "Icmp6InErrors",
    "TcpActiveOpens",
    "TcpPassiveOpens",
    "TcpAttemptFails",
    "TcpEstabResets",
    "TcpCurrEstab",
    "TcpInSegs",
    "TcpOutSegs",
    "TcpRetransSegs",
    "TcpInErrs",
    "TcpOutRsts",
    "TcpInCsumErrors",
    "TcpExtListen*",
    "TcpExtSyncookies*",
    "TcpExtTCPAbort*",
    "TcpExtTCPSynRetrans",
    "TcpExtTCPTimeouts",
    "TcpExtTCPOFOQueue",
    "TcpExtTCPRcvQDrop",
    "TcpExtTCPMemoryPressures",
    "TcpExtTCPBacklogDrop",
    "UdpInDatagrams",
    "UdpOutDatagrams",
    "UdpNoPorts",
    "UdpInErrors",
    "UdpRcvbufErrors",
    "UdpSndbufErrors",
    "UdpInCsumErrors",
    "Udp6InDatagrams",
    "Udp6OutDatagrams",
    "Udp6NoPorts",
    "Udp6InErrors",
    "Udp6RcvbufErrors",
    "Udp6SndbufErrors",
    "Udp6InCsumErrors",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Set false on a host without Docker: container reports are then not sent.
    pub enabled: bool,
    /// `unix:///var/run/docker.sock` or `tcp://host:2375`.
    pub host: String,
    /// Time limit of one request to the engine.
    pub timeout: Dur,
    /// Read container CPU and memory from cgroup files (cheap); false asks the engine's
    /// stats endpoint for every container instead.
    pub read_cgroups: bool,
    /// Stats requests in flight at once. Each waits for the engine's next 1 s collection
    /// tick rather than working, so a sample of N containers takes about N / this seconds.
    pub stats_concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Memory the queue may hold while the broker is away; the oldest messages go first.
    pub max_bytes: ByteSize,
    /// With this set, messages queued while disconnected are kept on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Disk the spool may use; the oldest messages go first.
    pub spool_max_bytes: ByteSize,
    /// Data messages the broker acknowledged within this long are published again on every
    /// new connection (a broker that crashed lost what it held for the gateway; the gateway
    /// drops the copies it had); `0s`: none. At most 256 KiB of them are kept.
    pub resend_window: Dur,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// How often a liveness beat is sent while connected (QoS 0, never buffered); `0s`: none.
    pub beat_interval: Dur,
    /// Serve the gateway's probe requests: connect to a suspect node when asked, as a vantage
    /// point other than the gateway.
    pub probe: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: None,
            interval: Dur::secs(5),
            state_dir: "/var/lib/leakmon".into(),
            host: HostConfig::default(),
            mqtt: MqttSettings::default(),
            docker: DockerConfig::default(),
            buffer: BufferConfig::default(),
            liveness: LivenessConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            beat_interval: Dur::millis(250),
            probe: true,
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            rootfs: "/".into(),
            net_ignore: vec!["lo".into(), "veth*".into()],
            disk_ignore: vec!["/var/lib/docker/*".into(), "/run/*".into()],
            nstat: NSTAT_DEFAULT.iter().map(|&p| p.to_owned()).collect(),
            sockets: false,
            interrupts: false,
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            host: "unix:///var/run/docker.sock".into(),
            timeout: Dur::secs(5),
            read_cgroups: true,
            stats_concurrency: 32,
        }
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: ByteSize::mib(4),
            spool_dir: None,
            spool_max_bytes: ByteSize::mib(64),
            resend_window: Dur::secs(30),
        }
    }
}

/// The config after every check, with derived values filled in.
#[derive(Debug, Clone)]
pub struct Checked {
    pub cfg: Config,
    pub node: String,
    pub interval: Duration,
    pub mqtt: Connector,
    /// `liveness.beat_interval`, or `None` when beats are off.
    pub beat_interval: Option<Duration>,
    /// This node's key (`None`: `auth.insecure`, or enrolment pending).
    pub key: Option<NodeKey>,
    /// What enrolment needs, when the key is to come from the gateways.
    pub enroll: Option<Enrollment>,
}

impl Config {
    pub fn load(path: &std::path::Path, required: bool) -> Result<Config, ConfigError> {
        leakmon_common::config::load_with_process_env(path, required, ENV_PREFIX)
    }

    /// Semantic checks; `hostname` is the default node name.
    pub fn check(mut self, hostname: &str) -> Result<Checked, ConfigError> {
        let node = self.node.clone().unwrap_or_else(|| hostname.to_owned());
        leakmon_protocol::topics::validate_node(&node).map_err(|e| {
            ConfigError::new(
                "node",
                format!("{e}; set `node` to a name like \"edge-01\""),
            )
        })?;

        let interval = self.interval.0;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "interval",
                "must be between 100ms and 1h, e.g. \"5s\"",
            ));
        }
        let mqtt = self.mqtt.connector("mqtt")?;
        if self.mqtt.shared_group.is_some() {
            return Err(ConfigError::new(
                "mqtt.shared_group",
                "is a gateway setting; agents publish, they do not share subscriptions",
            ));
        }
        let d = &self.docker;
        leakmon_common::docker::check_host("docker.host", &d.host)?;
        if d.timeout.0.is_zero() {
            return Err(ConfigError::new("docker.timeout", "must be above zero"));
        }
        if !(1..=64).contains(&d.stats_concurrency) {
            return Err(ConfigError::new(
                "docker.stats_concurrency",
                "must be between 1 and 64",
            ));
        }
        if self.buffer.max_bytes.0 < 64 * 1024 {
            return Err(ConfigError::new(
                "buffer.max_bytes",
                "must be at least 64KiB (a few minutes of samples)",
            ));
        }
        if self.buffer.resend_window.0 > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "buffer.resend_window",
                "must be at most 10m (0s: resend nothing)",
            ));
        }
        if self.buffer.spool_dir.is_some() && self.buffer.spool_max_bytes.0 < 1 << 20 {
            return Err(ConfigError::new(
                "buffer.spool_max_bytes",
                "must be at least 1MiB",
            ));
        }
        let beat = self.liveness.beat_interval.0;
        let beat_interval = (!beat.is_zero()).then_some(beat);
        if beat_interval.is_some()
            && (beat < Duration::from_millis(100) || beat > Duration::from_secs(10))
        {
            // Faster than 100ms costs every node and the broker for nothing (the probes, not
            // the beats, are what tells a dead node from a lossy link); slower than 10s is no
            // quicker than the Will.
            return Err(ConfigError::new(
                "liveness.beat_interval",
                "must be between 100ms and 10s, e.g. \"250ms\", or \"0s\" for no beats",
            ));
        }
        for (key, p) in [
            ("host.proc_root", &self.host.proc_root),
            ("host.sys_root", &self.host.sys_root),
            ("host.rootfs", &self.host.rootfs),
            ("state_dir", &self.state_dir),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::new(key, "must be an absolute path"));
            }
        }
        let (key, enroll) = self.auth.load(&node, &self.state_dir)?;
        // (while enrolling, the id waits for the key: `run` sets it)
        if enroll.is_none() {
            self.mqtt
                .client_id
                .get_or_insert(default_client_id(&node, key.as_ref()));
        }
        Ok(Checked {
            cfg: self,
            node,
            interval,
            mqtt,
            beat_interval,
            key,
            enroll,
        })
    }

    /// The config for `--print-config`, with secrets masked.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if c.mqtt.password.is_some() {
            c.mqtt.password = Some("********".into());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `text` with `env`; without a key unless `text` or `env` sets `[auth]`.
    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Checked, ConfigError> {
        let mut env: Vec<_> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        if !text.contains("[auth]") && !env.iter().any(|(k, _)| k.contains("__AUTH__")) {
            env.push(("LEAKMON_AGENT__AUTH__INSECURE".into(), "true".into()));
        }
        leakmon_common::config::from_str_with_env::<Config>(text, "agent.toml", ENV_PREFIX, env)?
            .check("host-1")
    }

    #[test]
    fn without_a_key_file_the_agent_enrolls_once_and_keeps_the_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("swarm.crt"), dir.path().join("swarm.key"));
        std::fs::write(&crt, "CERT").unwrap();
        std::fs::write(&key, "KEY").unwrap();
        let state = dir.path().join("state");
        let cfg = |key_file: &str, enroll: bool| {
            format!(
                "state_dir = \"{}\"\n[auth]\nkey_file = \"{key_file}\"\nenroll = {enroll}\n\
                 swarm_cert_file = \"{}\"\nswarm_key_file = \"{}\"",
                state.display(),
                crt.display(),
                key.display()
            )
        };
        // no key file, or systemd's empty credential: enrolment, the client id waits for it
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        for missing in ["/nonexistent", empty.to_str().unwrap()] {
            let c = parse(&cfg(missing, true), &[]).unwrap();
            assert_eq!(c.key, None);
            let e = c.enroll.expect("enrolment");
            assert_eq!((e.cert_pem.as_str(), e.key_pem.as_str()), ("CERT", "KEY"));
            assert_eq!(e.save_to, state.join("node.key"));
            assert_eq!(c.cfg.mqtt.client_id, None);
        }
        // what enrolment saved is used next time
        let fleet = leakmon_protocol::auth::FleetKey::from_bytes([3; 32]);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("node.key"), fleet.node_key("host-1").to_text()).unwrap();
        std::fs::set_permissions(
            state.join("node.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let c = parse(&cfg("/nonexistent", true), &[]).unwrap();
        assert_eq!(c.key, Some(fleet.node_key("host-1")));
        assert!(c.enroll.is_none());
        std::fs::remove_file(state.join("node.key")).unwrap();
        // enrolment off: the error names both ways
        let e = parse(&cfg("/nonexistent", false), &[]).unwrap_err();
        assert_eq!(e.key, "auth.key_file");
        assert!(e.message.contains("enrolls by itself"), "{e}");
    }

    #[test]
    fn the_default_wants_this_nodes_key_and_says_how_to_make_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        // (no Swarm certificate: this machine's engine may have one)
        let with = |p: &std::path::Path| {
            parse(
                &format!(
                    "[auth]\nkey_file = \"{}\"\nswarm_cert_file = \"/nonexistent\"",
                    p.display()
                ),
                &[],
            )
        };
        let e = with(&path).unwrap_err();
        assert_eq!(e.key, "auth.key_file");
        assert!(
            e.message.contains("leakmon-gateway keys node host-1"),
            "{e}"
        );
        let fleet = leakmon_protocol::auth::FleetKey::from_bytes([3; 32]);
        std::fs::write(&path, fleet.node_key("host-1").to_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = with(&path).unwrap_err();
        assert!(e.message.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = with(&path).unwrap();
        assert_eq!(c.key, Some(fleet.node_key("host-1")));
        // a client id only this node's key makes: no stranger can take its session
        let id = c.cfg.mqtt.client_id.clone().unwrap();
        let tag = fleet.node_key("host-1").tag("mqtt client id");
        assert_eq!(id, format!("leakmon-agent-host-1-{tag}"));
        std::fs::write(&path, fleet.node_key("host-2").to_text()).unwrap();
        let e = with(&path).unwrap_err();
        assert!(e.message.contains("for `host-2`"), "{e}");
        let c = parse("[auth]\ninsecure = true", &[]).unwrap();
        assert_eq!(c.key, None);
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../config/agent.toml");
        // (its key file is this host's, not the test's)
        let c = parse(text, &[("LEAKMON_AGENT__AUTH__INSECURE", "true")]).unwrap();
        assert_eq!(c.cfg.auth.key_file, PathBuf::from("/etc/leakmon/node.key"));
        // `node` is commented out in the example (the packaged config): the hostname.
        assert_eq!(c.node, "host-1");
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.beat_interval, Some(Duration::from_millis(250)));
        assert!(c.cfg.liveness.probe);
    }

    #[test]
    fn liveness() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.beat_interval, Some(Duration::from_millis(250)));
        assert!(c.cfg.liveness.probe);
        let c = parse("[liveness]\nbeat_interval = \"0s\"\nprobe = false", &[]).unwrap();
        assert_eq!(c.beat_interval, None, "0s turns beats off");
        assert!(!c.cfg.liveness.probe);
        for ok in ["100ms", "1s", "10s"] {
            let c = parse(&format!("[liveness]\nbeat_interval = \"{ok}\""), &[]).unwrap();
            assert!(c.beat_interval.is_some(), "{ok}");
        }
        let c = parse("", &[("LEAKMON_AGENT__LIVENESS__BEAT_INTERVAL", "1s")]).unwrap();
        assert_eq!(c.beat_interval, Some(Duration::from_secs(1)));
        let e = parse("", &[("LEAKMON_AGENT__LIVENESS__BEAT_INTERVAL", "50ms")]).unwrap_err();
        assert_eq!(e.key, "liveness.beat_interval");
    }

    #[test]
    fn defaults_and_env() {
        let c = parse("", &[("LEAKMON_AGENT__MQTT__URL", "mqtt://10.0.0.1:1884")]).unwrap();
        assert_eq!(c.node, "host-1");
        assert_eq!(c.mqtt.primary().port, 1884);
        assert_eq!(
            c.cfg.mqtt.client_id.as_deref(),
            Some("leakmon-agent-host-1")
        );
    }

    #[test]
    fn bad_keys_are_named() {
        for (text, key) in [
            ("node = \"a/b\"", "node"),
            ("interval = \"10ms\"", "interval"),
            ("interval = 5", "interval"),
            ("[mqtt]\nurl = \"http://x\"", "mqtt.url"),
            ("[docker]\nhost = \"/var/run/docker.sock\"", "docker.host"),
            (
                "[docker]\nstats_concurrency = 0",
                "docker.stats_concurrency",
            ),
            ("[buffer]\nmax_bytes = \"1KiB\"", "buffer.max_bytes"),
            (
                "[liveness]\nbeat_interval = \"99ms\"",
                "liveness.beat_interval",
            ),
            (
                "[liveness]\nbeat_interval = \"11s\"",
                "liveness.beat_interval",
            ),
            ("[liveness]\nbeat_interval = 250", "liveness.beat_interval"),
            ("[liveness]\nprobe = \"yes\"", "liveness.probe"),
            ("[host]\nproc_root = \"proc\"", "host.proc_root"),
        ] {
            let e = parse(text, &[]).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        let e = parse("[mqttt]\nurl = \"x\"", &[]).unwrap_err();
        assert!(e.message.contains("unknown field `mqttt`"), "{e}");
    }

    #[test]
    fn redaction() {
        let c = parse("[mqtt]\nusername = \"u\"\npassword = \"secret\"", &[]).unwrap();
        let printed = leakmon_common::config::to_toml(&c.cfg.redacted());
        assert!(!printed.contains("secret"));
    }
}
