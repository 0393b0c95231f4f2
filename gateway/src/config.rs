//! The gateway's configuration (`/etc/leakmon/gateway.toml`). Key names are a contract; every
//! key is documented in docs/config.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use leakmon_common::config::{ByteSize, ConfigError, Dur};
use leakmon_common::mqtt::{Connector, MqttSettings};
use leakmon_protocol::auth::FleetKey;
use leakmon_protocol::{EventKind, Severity};

use serde::{Deserialize, Serialize};

pub const DEFAULT_PATH: &str = "/etc/leakmon/gateway.toml";
pub const ENV_PREFIX: &str = "LEAKMON_GATEWAY";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This gateway's name in logs and its MQTT client id; default: the hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where what must survive a restart is kept: decision events not yet acknowledged by the
    /// broker (`events.json`) and alerts not yet delivered to webhooks (`webhook-<n>.json`).
    /// None: memory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    pub mqtt: MqttSettings,
    pub influxdb: InfluxConfig,
    pub http: HttpConfig,
    pub liveness: LivenessConfig,
    pub broker: BrokerConfig,
    pub docker: DockerConfig,
    pub leader: LeaderConfig,
    pub reschedule: RescheduleConfig,
    pub alerts: AlertsConfig,
    pub homeassistant: HomeAssistantConfig,
    pub auth: AuthConfig,
}

/// The container labels written as tags by default (`influxdb.docker_label_include`): Swarm's
/// own (service, task, node: what the stock Telegraf dashboards group by) and the stack's and
/// Compose project's names. Any other label would make a series per value.
pub const DEFAULT_DOCKER_LABELS: &[&str] = &[
    "com.docker.swarm.*",
    "com.docker.stack.namespace",
    "com.docker.compose.project",
    "com.docker.compose.service",
];

/// Proof of which node sent what the gateway acts on (docs/operations.md, "Security").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The fleet key every node key derives from (`leakmon-gateway keys new` makes one); the
    /// same file on every gateway.
    pub fleet_key_file: PathBuf,
    /// During a rotation, the key being replaced: agents sealing with it are still believed
    /// until they have their new keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_fleet_key_file: Option<PathBuf>,
    /// Believe unsealed messages: anyone who can publish on the broker can then speak for any
    /// node. Logged loudly at start and shown in `/healthz`.
    pub insecure: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            fleet_key_file: "/etc/leakmon/fleet.key".into(),
            previous_fleet_key_file: None,
            insecure: false,
        }
    }
}

/// The fleet keys a gateway checks with: the current one and, during a rotation, the previous.
pub type FleetKeys = (FleetKey, Option<FleetKey>);

impl AuthConfig {
    /// The keys, or `None` with `insecure`; errors name the key and the fix.
    fn load(&self) -> Result<Option<FleetKeys>, ConfigError> {
        if self.insecure {
            return Ok(None);
        }
        let read = |path: &std::path::Path, key: &str| {
            let fix = format!(
                "make one with `leakmon-gateway keys new --out {}` (the same file on every \
                 gateway), or set auth.insecure = true on a broker no stranger can reach",
                path.display()
            );
            let text = leakmon_common::config::read_key_file(path, key, &fix)?;
            FleetKey::parse(&text)
                .map_err(|e| ConfigError::new(key, format!("{}: {e}; {fix}", path.display())))
        };
        let current = read(&self.fleet_key_file, "auth.fleet_key_file")?;
        let previous = match &self.previous_fleet_key_file {
            Some(p) => Some(read(p, "auth.previous_fleet_key_file")?),
            None => None,
        };
        Ok(Some((current, previous)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// A reminder of an alert still firing after this long; "0s": never.
    pub repeat_after: Dur,
    /// Gateway events that alert.
    pub events: Vec<EventKind>,
    /// Threshold rules; absent: the built-in ones (docs/config.md), `[]`: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Vec<Rule>>,
    pub webhook: Vec<WebhookConfig>,
    pub exec: Vec<ExecConfig>,
    /// Prometheus Alertmanagers (every one of a cluster gets every alert).
    pub alertmanager: Vec<AlertmanagerConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Its base URL (`http://alertmanager:9093`); alerts go to `<url>/api/v2/alerts`.
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Header values read from files: name -> path.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers_file: std::collections::BTreeMap<String, PathBuf>,
    /// Alerts still firing are posted again this often, each saying it holds for four more
    /// (Alertmanager resolves it by itself when they stop).
    #[serde(default = "one_min")]
    pub resend: Dur,
    #[serde(default = "ten_s")]
    pub timeout: Dur,
}

fn one_min() -> Dur {
    Dur::secs(60)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The leakmon alert JSON (docs/protocol.md).
    Json,
    /// `{"text": "..."}`, for Slack, Mattermost, Rocket.Chat and the like.
    Slack,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Header values read from files (a Docker secret, a systemd credential): name -> path.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers_file: std::collections::BTreeMap<String, PathBuf>,
    /// Only these alerts (rule names, event kinds, `agent_offline`); empty: all.
    #[serde(default)]
    pub alerts: Vec<String>,
    #[serde(default = "info")]
    pub min_severity: Severity,
    #[serde(default = "json")]
    pub format: WebhookFormat,
    #[serde(default = "five_s")]
    pub timeout: Dur,
    /// Retries after a failed delivery, with a backoff doubling from 1 s.
    #[serde(default = "three")]
    pub retries: u32,
    /// Alerts waiting for this receiver; beyond it the oldest are dropped (and counted).
    #[serde(default = "hundred")]
    pub queue: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Program and arguments (no shell unless you name one).
    pub command: Vec<String>,
    #[serde(default)]
    pub alerts: Vec<String>,
    #[serde(default = "info")]
    pub min_severity: Severity,
    #[serde(default = "ten_s")]
    pub timeout: Dur,
}

fn info() -> Severity {
    Severity::Info
}
fn json() -> WebhookFormat {
    WebhookFormat::Json
}
fn five_s() -> Dur {
    Dur::secs(5)
}
fn ten_s() -> Dur {
    Dur::secs(10)
}
fn three() -> u32 {
    3
}
fn hundred() -> usize {
    100
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            repeat_after: Dur::secs(4 * 3600),
            events: vec![
                EventKind::NodeDown,
                EventKind::AgentLost,
                EventKind::Failover,
                EventKind::FailoverImpossible,
                EventKind::Unconfirmed,
                EventKind::MassFailure,
                EventKind::Flapping,
                EventKind::ActionFailed,
                EventKind::ForceUpdate,
            ],
            rule: None,
            webhook: Vec::new(),
            alertmanager: Vec::new(),
            exec: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Publish Home Assistant MQTT discovery configs for every node.
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: false,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The local engine (a Swarm manager): `unix:///var/run/docker.sock` or `tcp://host:port`.
    pub host: String,
    /// Time limit of one request to the engine.
    pub timeout: Dur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaderMode {
    /// `swarm` when the engine answers as a Swarm member, `standalone` when there is no
    /// engine socket or the engine is in no Swarm.
    Auto,
    /// Active only while the local engine is the Swarm leader.
    Swarm,
    /// Always active (one gateway, no Swarm).
    Standalone,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderConfig {
    pub mode: LeaderMode,
    /// How often the local engine is asked who leads (and the Swarm's node list is read).
    pub poll_interval: Dur,
    /// MQTT client id of the active gateway's persistent session, the same on every gateway
    /// of a fleet: the broker keeps the agents' messages for it during a hand-over. Default:
    /// `leakmon-gateway-active-<tag>`, the tag made by the fleet key (so the same on every
    /// gateway, and no stranger's to take); `leakmon-gateway-active` with `auth.insecure`.
    /// Always set after [`Config::check`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RescheduleConfig {
    /// Decide and act on dead nodes and unhealthy tasks.
    pub enabled: bool,
    /// Publish every decision and action, carry none out.
    pub dry_run: bool,
    /// TCP ports probed on a node whose agent is gone; any answer (even a refusal) is life.
    pub probe_ports: Vec<u16>,
    pub probe_timeout: Dur,
    /// A node leakmon drained is set active after being back this long.
    pub reactivate_after: Dur,
    /// A Swarm task's container unhealthy this long has its service force-updated.
    pub unhealthy_after: Dur,
    /// At most one force-update per service this often.
    pub force_update_every: Dur,
    /// A node that dies again within this time of its reactivation is flapping and stays
    /// drained.
    pub cooldown: Dur,
    /// Most nodes drained by leakmon at once; default fewer than half the Swarm's nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_drained: Option<usize>,
    /// Force-update services whose replicas are unevenly spread after a node is reactivated.
    pub rebalance: bool,
    /// Opt-in: set the Swarm's dispatcher heartbeat period (Swarm's default 5s) when this
    /// gateway becomes active. Shorter makes Swarm itself notice dead nodes sooner, at the
    /// cost of more heartbeat traffic from every node to the managers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_heartbeat: Option<Dur>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: "unix:///var/run/docker.sock".into(),
            timeout: Dur::secs(5),
        }
    }
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            mode: LeaderMode::Auto,
            poll_interval: Dur::secs(1),
            session_id: None,
        }
    }
}

impl Default for RescheduleConfig {
    fn default() -> Self {
        RescheduleConfig {
            enabled: true,
            dry_run: false,
            probe_ports: vec![2377, 7946],
            probe_timeout: Dur::secs(1),
            reactivate_after: Dur::secs(60),
            unhealthy_after: Dur::secs(30),
            force_update_every: Dur::secs(300),
            cooldown: Dur::secs(600),
            max_drained: None,
            rebalance: false,
            swarm_heartbeat: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `never` (the default): the broker is a real service; `auto`: start an embedded broker
    /// when `mqtt.url` is on this machine and nothing answers there (`scripts/run`); `always`.
    pub embedded: Embedded,
}

/// `broker.embedded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Embedded {
    /// Start one when `mqtt.url` is a loopback address where nothing answers.
    Auto,
    /// Always start one on `mqtt.url`'s address.
    Always,
    /// Never: a gateway that starts while its broker is down waits for it rather than taking
    /// its port.
    #[default]
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Base URL; empty: no database, metrics are kept in memory for the HTTP API only.
    pub url: String,
    pub api: Api,
    /// v1: database and retention policy (empty: the database's default policy).
    pub database: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub retention_policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file holding the password instead (a Docker secret, a systemd credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// v2: token, organisation and bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    pub org: String,
    pub bucket: String,
    /// Lines per write request.
    pub batch_size: usize,
    /// Longest a point waits before its batch is sent.
    pub flush_interval: Dur,
    /// Time limit of one write request.
    pub timeout: Dur,
    /// Longest wait between retries of a failed write.
    pub max_retry_delay: Dur,
    /// Write requests in flight at once.
    pub concurrency: usize,
    /// gzip request bodies (about 8x smaller; costs CPU on both ends).
    pub gzip: bool,
    /// Memory held for points the database has not taken yet; beyond it they go to the spool
    /// (or, without one, the oldest are dropped).
    pub max_buffer_bytes: ByteSize,
    /// Disk spool for points while the database is down; survives gateway restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: ByteSize,
    /// Container labels written as tags (Telegraf's `docker_label_include`): keys, or prefixes
    /// ending in `*`; `["*"]`: all. Each value of a label is a series of its own.
    pub docker_label_include: Vec<String>,
    /// Labels never written, even when included.
    pub docker_label_exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of /healthz, /metrics and /api/v1/nodes; empty disables the server.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// A node silent this long is `stale`.
    pub offline_after: Dur,
    /// The failure detector: agents' beats, and a silent node probed from several vantage
    /// points (other agents) before it is declared dead. Off: a node is dead when Swarm says
    /// so, or when its agent is gone and this gateway's own probe gets no answer.
    pub detector: bool,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            url: String::new(),
            api: Api::V1,
            database: "leakmon".into(),
            retention_policy: String::new(),
            username: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
            org: String::new(),
            bucket: "leakmon".into(),
            batch_size: 5000,
            flush_interval: Dur::secs(1),
            timeout: Dur::secs(10),
            max_retry_delay: Dur::secs(30),
            concurrency: 4,
            gzip: true,
            max_buffer_bytes: ByteSize::mib(64),
            spool_dir: None,
            spool_max_bytes: ByteSize::mib(1024),
            docker_label_include: DEFAULT_DOCKER_LABELS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            docker_label_exclude: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9900".into(),
        }
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            offline_after: Dur::secs(15),
            detector: true,
        }
    }
}

/// The config after every check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub cfg: Config,
    pub name: String,
    pub mqtt: Connector,
    pub http: Option<SocketAddr>,
    pub offline_after: Duration,
    /// The fleet keys (`None`: `auth.insecure`).
    pub fleet_keys: Option<FleetKeys>,
}

impl AlertsConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rule.iter().flatten().enumerate() {
            let key = |k: &str| format!("alerts.rule[{i}].{k}");
            if r.name.is_empty() || r.name.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    key("name"),
                    "needs a name without spaces, e.g. disk_full",
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(ConfigError::new(
                    key("name"),
                    "is used by another rule: names must be unique",
                ));
            }
            if !r.above.is_finite() {
                return Err(ConfigError::new(key("above"), "must be a number"));
            }
            if r.clear_below.is_some_and(|c| !c.is_finite() || c > r.above) {
                return Err(ConfigError::new(
                    key("clear_below"),
                    "must be at or below `above` (it is the level that resolves the alert)",
                ));
            }
            if r.window.is_some() != (r.metric == Metric::Restarts) {
                return Err(ConfigError::new(
                    key("window"),
                    "is needed by metric = \"restarts\" (and only there), e.g. \"10m\"",
                ));
            }
        }
        for (i, w) in self.webhook.iter().enumerate() {
            let key = |k: &str| format!("alerts.webhook[{i}].{k}");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(ConfigError::new(
                    key("url"),
                    "must start with http:// or https://",
                ));
            }
            if w.headers.iter().any(|(k, v)| {
                k.is_empty() || k.contains([':', '\r', '\n', ' ']) || v.contains(['\r', '\n'])
            }) {
                return Err(ConfigError::new(key("headers"), "names without ':' or spaces, values on one line, e.g. { Authorization = \"Bearer ...\" }"));
            }
            if w.timeout.0.is_zero() {
                return Err(ConfigError::new(key("timeout"), "must be above zero"));
            }
            if !(1..=10_000).contains(&w.queue) {
                return Err(ConfigError::new(
                    key("queue"),
                    "must be between 1 and 10000 alerts",
                ));
            }
        }
        for (i, m) in self.alertmanager.iter().enumerate() {
            let key = |k: &str| format!("alerts.alertmanager[{i}].{k}");
            if !(m.url.starts_with("http://") || m.url.starts_with("https://")) {
                return Err(ConfigError::new(
                    key("url"),
                    "must start with http:// or https://, e.g. http://alertmanager:9093",
                ));
            }
            if m.headers.iter().any(|(k, v)| {
                k.is_empty() || k.contains([':', '\r', '\n', ' ']) || v.contains(['\r', '\n'])
            }) {
                return Err(ConfigError::new(
                    key("headers"),
                    "names without ':' or spaces, values on one line",
                ));
            }
            if m.resend.0 < std::time::Duration::from_secs(1) {
                return Err(ConfigError::new(
                    key("resend"),
                    "must be at least 1s (Prometheus uses 1m)",
                ));
            }
            if m.timeout.0.is_zero() {
                return Err(ConfigError::new(key("timeout"), "must be above zero"));
            }
        }
        for (i, x) in self.exec.iter().enumerate() {
            let key = |k: &str| format!("alerts.exec[{i}].{k}");
            if x.command.first().is_none_or(|c| c.is_empty()) {
                return Err(ConfigError::new(key("command"), "needs a program and its arguments, e.g. [\"/usr/local/bin/notify\", \"--quiet\"]"));
            }
            if x.timeout.0.is_zero() {
                return Err(ConfigError::new(key("timeout"), "must be above zero"));
            }
        }
        Ok(())
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<Rule> {
        self.rule.clone().unwrap_or_else(default_rules)
    }
}

impl Config {
    pub fn load(path: &std::path::Path, required: bool) -> Result<Config, ConfigError> {
        leakmon_common::config::load_with_process_env(path, required, ENV_PREFIX)
    }

    /// Reads every `*_file` secret into its key ([`leakmon_common::config::read_secret`]).
    fn load_secrets(&mut self) -> Result<(), ConfigError> {
        use leakmon_common::config::read_secret;
        let i = &mut self.influxdb;
        i.password = read_secret(
            i.password.as_deref(),
            i.password_file.as_deref(),
            "influxdb.password",
        )?;
        i.token = read_secret(
            i.token.as_deref(),
            i.token_file.as_deref(),
            "influxdb.token",
        )?;
        for (n, w) in self.alerts.webhook.iter_mut().enumerate() {
            for (name, path) in &w.headers_file {
                let key = format!("alerts.webhook[{n}].headers.{name}");
                let v = read_secret(w.headers.get(name).map(String::as_str), Some(path), &key)?;
                if let Some(v) = v {
                    w.headers.insert(name.clone(), v);
                }
            }
        }
        for (n, m) in self.alerts.alertmanager.iter_mut().enumerate() {
            for (name, path) in &m.headers_file {
                let key = format!("alerts.alertmanager[{n}].headers.{name}");
                let v = read_secret(m.headers.get(name).map(String::as_str), Some(path), &key)?;
                if let Some(v) = v {
                    m.headers.insert(name.clone(), v);
                }
            }
        }
        Ok(())
    }

    pub fn check(mut self, hostname: &str) -> Result<Checked, ConfigError> {
        let name = self.name.clone().unwrap_or_else(|| hostname.to_owned());
        let mqtt = self.mqtt.connector("mqtt")?;
        self.load_secrets()?;
        let i = &self.influxdb;
        for (key, list) in [
            ("influxdb.docker_label_include", &i.docker_label_include),
            ("influxdb.docker_label_exclude", &i.docker_label_exclude),
        ] {
            if list
                .iter()
                .any(|p| p.is_empty() || p.trim_end_matches('*').contains('*'))
            {
                return Err(ConfigError::new(
                    key,
                    "each entry a label key, or a prefix ending in `*` (e.g. \"com.docker.swarm.*\")",
                ));
            }
        }
        if !i.url.is_empty() {
            if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "influxdb.url",
                    "must start with http:// or https://, e.g. http://127.0.0.1:8086",
                ));
            }
            match i.api {
                Api::V1 if i.database.is_empty() => {
                    return Err(ConfigError::new(
                        "influxdb.database",
                        "the v1 API needs a database name",
                    ))
                }
                Api::V2 if i.bucket.is_empty() => {
                    return Err(ConfigError::new(
                        "influxdb.bucket",
                        "the v2 API needs a bucket",
                    ))
                }
                _ => {}
            }
            if i.password.is_some() && i.username.is_none() {
                return Err(ConfigError::new(
                    "influxdb.password",
                    "a password needs influxdb.username too",
                ));
            }
        }
        if !(1..=100_000).contains(&i.batch_size) {
            return Err(ConfigError::new(
                "influxdb.batch_size",
                "must be between 1 and 100000 lines",
            ));
        }
        if !(1..=64).contains(&i.concurrency) {
            return Err(ConfigError::new(
                "influxdb.concurrency",
                "must be between 1 and 64 requests",
            ));
        }
        if i.flush_interval.0.is_zero() || i.timeout.0.is_zero() {
            return Err(ConfigError::new(
                if i.flush_interval.0.is_zero() {
                    "influxdb.flush_interval"
                } else {
                    "influxdb.timeout"
                },
                "must be above zero",
            ));
        }
        if i.max_buffer_bytes.0 < 1 << 20 {
            return Err(ConfigError::new(
                "influxdb.max_buffer_bytes",
                "must be at least 1MiB",
            ));
        }
        let http = if self.http.listen.is_empty() {
            None
        } else {
            Some(self.http.listen.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "http.listen",
                    "must be an address and port like 127.0.0.1:9900 (empty disables it)",
                )
            })?)
        };
        let offline_after = self.liveness.offline_after.0;
        if offline_after < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "liveness.offline_after",
                "must be at least 1s (and longer than the agents' interval)",
            ));
        }
        leakmon_common::docker::check_host("docker.host", &self.docker.host)?;
        if self.docker.timeout.0.is_zero() {
            return Err(ConfigError::new("docker.timeout", "must be above zero"));
        }
        let l = &self.leader;
        if l.poll_interval.0 < Duration::from_millis(100)
            || l.poll_interval.0 > Duration::from_secs(5)
        {
            return Err(ConfigError::new(
                "leader.poll_interval",
                "must be between 100ms and 5s (a takeover waits up to one interval)",
            ));
        }
        if l.session_id.as_deref() == Some("") {
            return Err(ConfigError::new(
                "leader.session_id",
                "must not be empty: the same MQTT client id on every gateway of the fleet",
            ));
        }
        let r = &self.reschedule;
        if r.probe_ports.is_empty() || r.probe_ports.contains(&0) {
            return Err(ConfigError::new(
                "reschedule.probe_ports",
                "needs at least one port from 1 to 65535, e.g. [2377, 7946]",
            ));
        }
        if r.probe_timeout.0 < Duration::from_millis(50)
            || r.probe_timeout.0 > Duration::from_secs(30)
        {
            return Err(ConfigError::new(
                "reschedule.probe_timeout",
                "must be between 50ms and 30s",
            ));
        }
        for (key, d) in [
            ("reschedule.unhealthy_after", r.unhealthy_after.0),
            ("reschedule.force_update_every", r.force_update_every.0),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be above zero"));
            }
        }
        if r.reactivate_after.0 < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "reschedule.reactivate_after",
                "must be at least 1s",
            ));
        }
        if r.max_drained == Some(0) {
            return Err(ConfigError::new(
                "reschedule.max_drained",
                "must be at least 1 (or left out: fewer than half the nodes)",
            ));
        }
        if let Some(h) = r.swarm_heartbeat {
            if h.0 < Duration::from_secs(1) || h.0 > Duration::from_secs(60) {
                return Err(ConfigError::new(
                    "reschedule.swarm_heartbeat",
                    "must be between 1s and 60s (Swarm's default is 5s)",
                ));
            }
        }
        self.alerts.check()?;
        if self.homeassistant.discovery_prefix.is_empty()
            || self.homeassistant.discovery_prefix.contains(['+', '#'])
        {
            return Err(ConfigError::new(
                "homeassistant.discovery_prefix",
                "must be a topic prefix without wildcards, e.g. homeassistant",
            ));
        }
        let fleet_keys = self.auth.load()?;
        // Client ids no stranger can guess (taking one cuts that gateway's connection, or the
        // active session): tags only the fleet key makes.
        let fleet = fleet_keys.as_ref().map(|(k, _)| k);
        let own = fleet.map_or_else(
            || format!("leakmon-gateway-{name}"),
            |k| k.gateway_client_id(&name),
        );
        let _ = self.mqtt.client_id.get_or_insert(own);
        let session =
            fleet.map_or_else(|| "leakmon-gateway-active".to_owned(), FleetKey::session_id);
        let _ = self.leader.session_id.get_or_insert(session);
        Ok(Checked {
            cfg: self,
            name,
            mqtt,
            http,
            offline_after,
            fleet_keys,
        })
    }

    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for s in [
            &mut c.mqtt.password,
            &mut c.influxdb.password,
            &mut c.influxdb.token,
        ] {
            if s.is_some() {
                *s = Some("********".into());
            }
        }
        // webhook paths and queries often are the token; header values often hold one
        for w in &mut c.alerts.webhook {
            w.url = leakmon_common::config::redact_url(&w.url, true);
            for v in w.headers.values_mut() {
                *v = "********".into();
            }
        }
        for m in &mut c.alerts.alertmanager {
            m.url = leakmon_common::config::redact_url(&m.url, false);
            for v in m.headers.values_mut() {
                *v = "********".into();
            }
        }
        c.mqtt.url = c
            .mqtt
            .url
            .map(|u| leakmon_common::config::redact_url(u, false));
        c.influxdb.url = leakmon_common::config::redact_url(&c.influxdb.url, false);
        c
    }
}

/// What a threshold rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Per mount point, percent.
    DiskUsedPercent,
    /// Percent of memory used.
    MemUsedPercent,
    /// Per sensor, degrees Celsius.
    Temperature,
    /// 1-minute load average divided by the number of CPUs.
    LoadPerCpu,
    /// Per container: 1 while unhealthy.
    ContainerUnhealthy,
    /// Per container: 1 once the engine reports it OOM-killed.
    OomKilled,
    /// Per container: restarts within `window`.
    Restarts,
    /// Messages the agent's buffer dropped since its previous report.
    BufferDropped,
}

impl Metric {
    pub fn what(self) -> &'static str {
        match self {
            Metric::DiskUsedPercent => "disk used %",
            Metric::MemUsedPercent => "memory used %",
            Metric::Temperature => "temperature °C",
            Metric::LoadPerCpu => "load per CPU",
            Metric::ContainerUnhealthy => "unhealthy",
            Metric::OomKilled => "OOM-killed",
            Metric::Restarts => "restarts",
            Metric::BufferDropped => "messages dropped by the agent",
        }
    }
}

/// One threshold rule (`[[alerts.rule]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub metric: Metric,
    pub above: f64,
    /// Resolves at or below this (hysteresis); default `above`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_below: Option<f64>,
    /// How long the condition must hold (both ways).
    #[serde(rename = "for", default)]
    pub for_: leakmon_common::config::Dur,
    #[serde(default = "warning")]
    pub severity: Severity,
    /// For `restarts`: the window counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<leakmon_common::config::Dur>,
}

fn warning() -> Severity {
    Severity::Warning
}

/// The rules used when the config names none.
pub fn default_rules() -> Vec<Rule> {
    use leakmon_common::config::Dur;
    let r = |name: &str, metric, above, clear: Option<f64>, secs, severity| Rule {
        name: name.into(),
        metric,
        above,
        clear_below: clear,
        for_: Dur::secs(secs),
        severity,
        window: (metric == Metric::Restarts).then(|| Dur::secs(600)),
    };
    vec![
        r(
            "disk_full",
            Metric::DiskUsedPercent,
            90.0,
            Some(85.0),
            60,
            Severity::Warning,
        ),
        r(
            "memory_high",
            Metric::MemUsedPercent,
            95.0,
            Some(90.0),
            60,
            Severity::Warning,
        ),
        r(
            "temperature_high",
            Metric::Temperature,
            80.0,
            Some(75.0),
            60,
            Severity::Warning,
        ),
        r(
            "load_high",
            Metric::LoadPerCpu,
            4.0,
            Some(3.0),
            300,
            Severity::Warning,
        ),
        r(
            "container_unhealthy",
            Metric::ContainerUnhealthy,
            0.5,
            None,
            30,
            Severity::Warning,
        ),
        r(
            "container_oom_killed",
            Metric::OomKilled,
            0.5,
            None,
            0,
            Severity::Critical,
        ),
        r(
            "container_restarting",
            Metric::Restarts,
            2.5,
            Some(0.5),
            0,
            Severity::Warning,
        ),
        r(
            "agent_buffer_dropping",
            Metric::BufferDropped,
            0.5,
            None,
            0,
            Severity::Warning,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `toml`; without keys unless it sets `[auth]`.
    fn check(toml: &str) -> Result<Checked, ConfigError> {
        let env = (!toml.contains("[auth]")).then(|| {
            (
                "LEAKMON_GATEWAY__AUTH__INSECURE".to_owned(),
                "true".to_owned(),
            )
        });
        leakmon_common::config::from_str_with_env(toml, "test", ENV_PREFIX, env)
            .and_then(|c: Config| c.check("host1"))
    }

    #[test]
    fn the_default_wants_the_fleet_key_and_says_how_to_make_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        let with = |extra: &str| {
            check(&format!(
                "[auth]\nfleet_key_file = \"{}\"\n{extra}",
                path.display()
            ))
        };
        let e = with("").unwrap_err();
        assert_eq!(e.key, "auth.fleet_key_file");
        assert!(e.message.contains("leakmon-gateway keys new"), "{e}");
        let key = FleetKey::from_bytes([9; 32]);
        std::fs::write(&path, key.to_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(with("").unwrap_err().message.contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = with("").unwrap();
        assert_eq!(c.fleet_keys, Some((key.clone(), None)));
        // client ids only the fleet key makes: its own, and the active session's, the same
        // for every gateway of the fleet
        let own = c.cfg.mqtt.client_id.clone().unwrap();
        assert_eq!(
            own,
            format!("leakmon-gateway-host1-{}", key.tag("client id host1"))
        );
        let session = c.cfg.leader.session_id.clone().unwrap();
        assert_eq!(
            session,
            format!("leakmon-gateway-active-{}", key.tag("active session"))
        );
        let insecure = check("[auth]\ninsecure = true").unwrap();
        assert_eq!(
            insecure.cfg.leader.session_id.as_deref(),
            Some("leakmon-gateway-active")
        );
        let e = with("previous_fleet_key_file = \"/nonexistent\"").unwrap_err();
        assert_eq!(e.key, "auth.previous_fleet_key_file");
        std::fs::write(&path, "not a key").unwrap();
        assert!(with("")
            .unwrap_err()
            .message
            .contains("not a leakmon fleet key"));
        assert_eq!(check("[auth]\ninsecure = true").unwrap().fleet_keys, None);
    }

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let c = check("").unwrap();
        let r = &c.cfg.reschedule;
        assert!(r.enabled && !r.dry_run);
        assert_eq!(r.probe_ports, [2377, 7946]);
        assert_eq!(r.probe_timeout.0, Duration::from_secs(1));
        assert_eq!(r.reactivate_after.0, Duration::from_secs(60));
        assert_eq!(r.unhealthy_after.0, Duration::from_secs(30));
        assert_eq!(r.max_drained, None);
        assert_eq!(c.cfg.docker.host, "unix:///var/run/docker.sock");
        assert_eq!(c.cfg.leader.mode, LeaderMode::Auto);
    }

    #[test]
    fn print_config_shows_no_secret() {
        let c = check(
            "[mqtt]\nurl = \"mqtt://b:1883\"\nusername = \"gw\"\npassword = \"mqttpw\"\n\
             [influxdb]\nurl = \"http://u:dbpw@db:8086\"\ntoken = \"tok\"\n\
             [[alerts.webhook]]\nurl = \"https://hooks.example/services/SECRETPATH?k=SECRETQ\"\n\
             headers = { Authorization = \"Bearer SECRETHDR\" }\n",
        )
        .unwrap();
        let printed = leakmon_common::config::to_toml(&c.cfg.redacted());
        for secret in [
            "mqttpw",
            "dbpw",
            "tok\"",
            "SECRETPATH",
            "SECRETQ",
            "SECRETHDR",
        ] {
            assert!(!printed.contains(secret), "{secret} in:\n{printed}");
        }
        assert!(
            printed.contains("https://hooks.example/********"),
            "{printed}"
        );
    }

    #[test]
    fn secrets_come_from_files_and_bad_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let (mq, db, tok, hdr) = (
            f("mqtt", "mqttpw\n"),
            f("db", "dbpw"),
            f("tok", "tokv\r\n"),
            f("hdr", "Bearer SECRETHDR\n"),
        );
        let c = check(&format!(
            "[mqtt]\nusername = \"gw\"\npassword_file = \"{mq}\"\n\
             [influxdb]\nurl = \"http://db:8086\"\nusername = \"u\"\npassword_file = \"{db}\"\n\
             token_file = \"{tok}\"\n\
             [[alerts.webhook]]\nurl = \"https://hooks.example/x\"\n\
             headers_file = {{ Authorization = \"{hdr}\" }}\n"
        ))
        .unwrap();
        assert_eq!(c.mqtt.settings().password.as_deref(), Some("mqttpw"));
        assert_eq!(c.cfg.influxdb.password.as_deref(), Some("dbpw"));
        assert_eq!(c.cfg.influxdb.token.as_deref(), Some("tokv"));
        assert_eq!(
            c.cfg.alerts.webhook[0].headers["Authorization"],
            "Bearer SECRETHDR"
        );
        let printed = leakmon_common::config::to_toml(&c.cfg.redacted());
        for secret in ["mqttpw", "dbpw", "tokv", "SECRETHDR"] {
            assert!(!printed.contains(secret), "{secret} in:\n{printed}");
        }

        let empty = f("empty", "\n");
        for (toml, key) in [
            (
                "[mqtt]\nusername = \"gw\"\npassword_file = \"/nonexistent/pw\"".to_string(),
                "mqtt.password_file",
            ),
            (
                format!("[mqtt]\nusername = \"gw\"\npassword = \"x\"\npassword_file = \"{mq}\""),
                "mqtt.password_file",
            ),
            (
                format!("[influxdb]\nurl = \"http://db:8086\"\ntoken_file = \"{empty}\""),
                "influxdb.token_file",
            ),
        ] {
            let e = check(&toml)
                .err()
                .unwrap_or_else(|| panic!("accepted: {toml}"));
            assert_eq!(e.key, key, "{toml}: {e}");
        }
    }

    #[test]
    fn bad_control_settings_name_their_key() {
        for (toml, key) in [
            ("[reschedule]\nprobe_ports = []", "reschedule.probe_ports"),
            ("[reschedule]\nprobe_ports = [0]", "reschedule.probe_ports"),
            (
                "[reschedule]\nprobe_timeout = \"10ms\"",
                "reschedule.probe_timeout",
            ),
            ("[reschedule]\nmax_drained = 0", "reschedule.max_drained"),
            (
                "[reschedule]\nswarm_heartbeat = \"100ms\"",
                "reschedule.swarm_heartbeat",
            ),
            (
                "[reschedule]\nunhealthy_after = \"0s\"",
                "reschedule.unhealthy_after",
            ),
            ("[leader]\npoll_interval = \"10s\"", "leader.poll_interval"),
            ("[leader]\nsession_id = \"\"", "leader.session_id"),
            ("[docker]\nhost = \"/var/run/docker.sock\"", "docker.host"),
            ("[docker]\ntimeout = \"0s\"", "docker.timeout"),
            (
                "[reschedule]\nreactivate_after = \"0s\"",
                "reschedule.reactivate_after",
            ),
            ("[[alerts.webhook]]\nurl = \"x\"", "alerts.webhook[0].url"),
            (
                "[[alerts.webhook]]\nurl = \"http://h\"\nheaders = { \"a b\" = \"c\" }",
                "alerts.webhook[0].headers",
            ),
            (
                "[[alerts.webhook]]\nurl = \"http://h\"\nqueue = 0",
                "alerts.webhook[0].queue",
            ),
            (
                "[[alerts.exec]]\ncommand = [\"\"]",
                "alerts.exec[0].command",
            ),
            (
                "[[alerts.rule]]\nname = \"a\"\nmetric = \"restarts\"\nabove = 1",
                "alerts.rule[0].window",
            ),
            (
                "[[alerts.rule]]\nname = \"a\"\nmetric = \"oom_killed\"\nabove = 0\n\
                 [[alerts.rule]]\nname = \"a\"\nmetric = \"oom_killed\"\nabove = 0",
                "alerts.rule[1].name",
            ),
            (
                "[homeassistant]\ndiscovery_prefix = \"ha/#\"",
                "homeassistant.discovery_prefix",
            ),
        ] {
            let e = check(toml)
                .err()
                .unwrap_or_else(|| panic!("{toml} accepted"));
            assert_eq!(e.key, key, "{toml}: {e}");
        }
    }

    #[test]
    fn unknown_mode_and_keys_are_errors() {
        let e = check("[leader]\nmode = \"raft\"").expect_err("refused");
        assert!(e.to_string().contains("leader.mode"), "{e}");
        let e = check("[reschedule]\ndryrun = true").expect_err("refused");
        assert!(e.to_string().contains("dryrun"), "{e}");
    }
}
