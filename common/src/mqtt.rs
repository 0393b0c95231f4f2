//! The MQTT connection settings both binaries share (`[mqtt]`), checked once at start-up and
//! turned into `rumqttc` options per connection.
//!
//! TLS is rustls with the `ring` provider: it cross-compiles to aarch64 and armv7 without
//! cmake or a C++ toolchain (aws-lc does not build for armv7 here).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::config::{ByteSize, ConfigError, Dur};

/// `[mqtt]` keys common to the agent and the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS). Default port 1883, or 8883 for TLS.
    /// Several (a list) are tried in order: see [`Failover`].
    pub url: BrokerUrls,
    /// MQTT keep-alive; the broker publishes the Last Will about 1.5 x this after the link dies.
    pub keep_alive: Dur,
    /// First level(s) of every topic.
    pub topic_prefix: String,
    /// Defaults to `leakmon-<role>-<node>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file holding the password instead (a Docker secret, a systemd credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the broker's certificate; default: the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `client_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// First reconnect delay; doubles per failed attempt (with jitter) up to `reconnect_max`.
    pub reconnect_min: Dur,
    /// Longest delay between attempts; unset: the binary's own default
    /// ([`AGENT_RECONNECT_MAX`], [`GATEWAY_RECONNECT_MAX`]): see [`MqttSettings::reconnect_max`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_max: Option<Dur>,
    /// Largest MQTT packet sent or accepted.
    pub max_packet_size: ByteSize,
    /// Gateway only: share the data topics among the gateways of this group (MQTT shared
    /// subscriptions, `$share/<group>/...`), so each message is ingested by one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_group: Option<String>,
}

/// An agent's longest reconnect delay: a fleet of thousands must not storm a broker that
/// comes back.
pub const AGENT_RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A gateway's: a few per fleet, and every second it is away is a second no death is
/// handled, so it is back within about 2 s of its broker.
pub const GATEWAY_RECONNECT_MAX: Duration = Duration::from_secs(2);

impl MqttSettings {
    /// The longest reconnect delay: the configured one, or `default` (the binary's own).
    pub fn reconnect_max(&self, default: Duration) -> Duration {
        self.reconnect_max
            .map(|d| d.0)
            .unwrap_or(default)
            .max(self.reconnect_min.0)
    }
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            url: BrokerUrls::from("mqtt://127.0.0.1:1883"),
            keep_alive: Dur::secs(5),
            topic_prefix: leakmon_protocol::DEFAULT_PREFIX.into(),
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            reconnect_min: Dur::millis(500),
            reconnect_max: None,
            max_packet_size: ByteSize::mib(1),
            shared_group: None,
        }
    }
}

/// `mqtt.url`: one broker address, or several tried in order (a TOML list, or one string
/// with commas, as an environment variable gives it). Written back as it was given: a string
/// for one, a list for several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrls(Vec<String>);

impl BrokerUrls {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `i`th address (wrapping), for logs.
    pub fn get(&self, i: usize) -> &str {
        match self.0.len() {
            0 => "",
            n => &self.0[i % n],
        }
    }

    /// Each address through `f` (to redact them).
    pub fn map(&self, f: impl Fn(&str) -> String) -> BrokerUrls {
        BrokerUrls(self.0.iter().map(|u| f(u)).collect())
    }
}

impl From<&str> for BrokerUrls {
    /// Commas separate addresses (a URL of a broker has none); a TOML list written in one
    /// string (an environment variable) is read the same.
    fn from(s: &str) -> Self {
        let s = s.trim();
        let s = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        BrokerUrls(
            s.split(',')
                .map(|u| u.trim().trim_matches(['"', '\'']).trim())
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

impl std::fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl Serialize for BrokerUrls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BrokerUrls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BrokerUrls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a broker URL or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BrokerUrls, E> {
                Ok(BrokerUrls::from(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BrokerUrls, A::Error> {
                let mut out = Vec::new();
                while let Some(u) = seq.next_element::<String>()? {
                    out.push(u);
                }
                Ok(BrokerUrls(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which of `mqtt.url`'s brokers the next connection goes to: a pure state machine, time
/// passed in.
///
/// Every reconnect walks the list from the first address, so a fleet returns to its preferred
/// broker whenever it reconnects, and never leaves a broker that works (no fail-back churn).
/// A broker that refuses, does not answer, or drops the connection before it has lasted
/// `settle` (an overloaded broker, a one-way partition, a kick) passes the turn to the next
/// one at once; only when the whole list has failed does the caller wait its backoff. One
/// address behaves as before: every failure backs off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    n: usize,
    next: usize,
    settle: Duration,
}

/// What to do after a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try the next broker of the list now.
    Next,
    /// Wait the backoff, then start again from the first.
    Backoff,
}

/// A connection loop's way through the broker list: [`Failover`], and the jittered
/// [`crate::backoff::Backoff`] it waits once a whole round has failed (`mqtt.reconnect_min`
/// up to `mqtt.reconnect_max`, or the binary's `default_max`).
#[derive(Debug)]
pub struct Reconnect {
    failover: Failover,
    backoff: crate::backoff::Backoff,
    jitter: crate::backoff::Jitter,
}

impl Reconnect {
    pub fn new(c: &Connector, default_max: Duration) -> Self {
        Reconnect {
            failover: Failover::for_connector(c),
            backoff: crate::backoff::Backoff::new(
                c.settings.reconnect_min.0,
                c.settings.reconnect_max(default_max),
            ),
            jitter: crate::backoff::Jitter::from_entropy(),
        }
    }

    /// The index in `mqtt.url` of the broker to connect to.
    pub fn current(&self) -> usize {
        self.failover.current()
    }

    /// A broker accepted the connection: the backoff starts again from its least.
    pub fn accepted(&mut self) {
        self.backoff.reset();
    }

    /// The connection ended ([`Failover::ended`]): how long to wait before the next attempt,
    /// none for the next broker of the list.
    pub fn ended(&mut self, connected_for: Option<Duration>) -> Duration {
        match self.failover.ended(connected_for) {
            Retry::Next => Duration::ZERO,
            Retry::Backoff => self.backoff.next_delay(self.jitter.next_u64()),
        }
    }
}

impl Failover {
    /// `n` brokers; a connection counts as working once it has lasted `settle` (two
    /// keep-alives: [`Failover::for_settings`]).
    pub fn new(n: usize, settle: Duration) -> Self {
        Failover {
            n: n.max(1),
            next: 0,
            settle,
        }
    }

    /// For the brokers of `c`, settling after two keep-alives.
    pub fn for_connector(c: &Connector) -> Self {
        Self::new(c.endpoints.len(), c.settings.keep_alive.0 * 2)
    }

    /// The index in `mqtt.url` of the broker to connect to.
    pub fn current(&self) -> usize {
        self.next
    }

    /// The connection to [`Self::current`] ended; `connected_for`: how long it had been up
    /// since the broker accepted it (`None`: never accepted).
    pub fn ended(&mut self, connected_for: Option<Duration>) -> Retry {
        if connected_for.is_some_and(|d| d >= self.settle) {
            self.next = 0;
            return Retry::Backoff;
        }
        self.next += 1;
        if self.next < self.n {
            Retry::Next
        } else {
            self.next = 0;
            Retry::Backoff
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parses `mqtt://host[:port]`, `mqtts://host[:port]` (also `tcp://`, `ssl://`), IPv6 in brackets.
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let hint = "write it as mqtt://host:1883 or mqtts://host:8883";
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} has no scheme; {hint}"))?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => return Err(format!("unsupported scheme {other:?}; {hint}")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(format!(
            "{url:?} must be only scheme, host and port (credentials go in username/password)"
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '[' in IPv6 address"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("{url:?}: unexpected text after ']'")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host; {hint}"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{url:?}: port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// Validated settings, with TLS material loaded: build per-connection options from it.
#[derive(Clone)]
pub struct Connector {
    /// One per address of `mqtt.url`, in its order.
    pub endpoints: Vec<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: MqttSettings,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl MqttSettings {
    /// Checks every key (naming it on error, under `section`) and loads TLS files.
    pub fn connector(&self, section: &str) -> Result<Connector, ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        if self.url.is_empty() {
            return Err(ConfigError::new(
                key("url"),
                "no broker address; write it as mqtt://host:1883, or a list of them",
            ));
        }
        let endpoints = self
            .url
            .iter()
            .map(|u| {
                parse_url(u).map_err(|m| match self.url.len() {
                    1 => ConfigError::new(key("url"), m),
                    _ => ConfigError::new(key("url"), format!("{u:?}: {m}")),
                })
            })
            .collect::<Result<Vec<Endpoint>, _>>()?;
        let any_tls = endpoints.iter().any(|e| e.tls);
        if any_tls && endpoints.iter().any(|e| !e.tls) {
            // a blocked TLS port would move credentials to a plain-text broker
            return Err(ConfigError::new(
                key("url"),
                "mixes mqtts:// and mqtt:// brokers; list only TLS brokers (mqtts://) or only \
                 plain ones, so that a failover never sends credentials in clear text",
            ));
        }
        let ka = self.keep_alive.0;
        if ka < Duration::from_secs(1) || ka > Duration::from_secs(65535) {
            return Err(ConfigError::new(
                key("keep_alive"),
                "must be between 1s and 65535s (MQTT counts it in whole seconds)",
            ));
        }
        leakmon_protocol::Topics::new(&self.topic_prefix)
            .map_err(|e| ConfigError::new(key("topic_prefix"), e.to_string()))?;
        let password = crate::config::read_secret(
            self.password.as_deref(),
            self.password_file.as_deref(),
            &key("password"),
        )?;
        if password.is_some() && self.username.is_none() {
            return Err(ConfigError::new(
                key("password"),
                "a password needs a username; set mqtt.username too",
            ));
        }
        if self.reconnect_min.0.is_zero()
            || self
                .reconnect_max
                .is_some_and(|max| self.reconnect_min > max)
        {
            return Err(ConfigError::new(
                key("reconnect_min"),
                "must be above zero and not above reconnect_max",
            ));
        }
        if self.max_packet_size.0 < 4096 || self.max_packet_size.0 > 256 << 20 {
            return Err(ConfigError::new(
                key("max_packet_size"),
                "must be between 4KiB and 256MiB",
            ));
        }
        if let Some(g) = &self.shared_group {
            if g.is_empty() || g.contains(['/', '+', '#']) {
                return Err(ConfigError::new(
                    key("shared_group"),
                    "must be a non-empty name without '/', '+' or '#'",
                ));
            }
        }
        let tls_keys = [
            ("ca_file", self.ca_file.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
        ];
        if !any_tls {
            if let Some((k, _)) = tls_keys.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    key(k),
                    "TLS files need a TLS url: use mqtts://host:8883",
                ));
            }
        }
        let tls = if any_tls {
            Some(Arc::new(self.tls_config(&key)?))
        } else {
            None
        };
        let mut settings = self.clone();
        settings.password = password;
        Ok(Connector {
            endpoints,
            tls,
            settings,
        })
    }

    fn tls_config(
        &self,
        key: &dyn Fn(&str) -> String,
    ) -> Result<rustls::ClientConfig, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs = read_certs(path).map_err(|m| ConfigError::new(key("ca_file"), m))?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| ConfigError::new(key("ca_file"), e.to_string()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // A single unparsable system root must not stop the agent.
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(ConfigError::new(
                        key("ca_file"),
                        "no system CA certificates found; set mqtt.ca_file to the broker's CA",
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(key("url"), e.to_string()))?
        .with_root_certificates(roots);
        match (&self.client_cert, &self.client_key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(k)) => {
                let chain =
                    read_certs(cert).map_err(|m| ConfigError::new(key("client_cert"), m))?;
                let pk = PrivateKeyDer::from_pem_file(k).map_err(|e| {
                    ConfigError::new(
                        key("client_key"),
                        format!("cannot read a PEM private key from {}: {e}", k.display()),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, pk)
                    .map_err(|e| ConfigError::new(key("client_key"), e.to_string()))
            }
            (Some(_), None) => Err(ConfigError::new(
                key("client_key"),
                "client_cert is set; set client_key to its private key too",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                key("client_cert"),
                "client_key is set; set client_cert to its certificate too",
            )),
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

impl Connector {
    pub fn settings(&self) -> &MqttSettings {
        &self.settings
    }

    /// The TLS client config, when the broker is reached over TLS.
    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The first broker: the preferred one.
    pub fn primary(&self) -> &Endpoint {
        // `connector` refuses an empty list
        &self.endpoints[0]
    }

    /// The address of broker `i` as configured (for logs).
    pub fn url(&self, i: usize) -> &str {
        self.settings.url.get(i)
    }

    /// Options for one connection to broker `i` of `mqtt.url` (wrapping), with a clean session
    /// and, optionally, a Last Will.
    pub fn options(&self, i: usize, client_id: &str, will: Option<LastWill>) -> MqttOptions {
        let s = &self.settings;
        let ep = &self.endpoints[i % self.endpoints.len()];
        let mut o = MqttOptions::new(client_id, &ep.host, ep.port);
        o.set_keep_alive(s.keep_alive.0);
        o.set_clean_session(true);
        let max = usize::try_from(s.max_packet_size.0).unwrap_or(usize::MAX);
        o.set_max_packet_size(max, max);
        if let Some(user) = &s.username {
            o.set_credentials(user, s.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        if let Some(w) = will {
            o.set_last_will(w);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(parse_url("mqtts://broker").unwrap().port, 8883);
        assert!(parse_url("mqtts://broker").unwrap().tls);
        assert_eq!(parse_url("tcp://[::1]:1884").unwrap().host, "::1");
        assert_eq!(parse_url("mqtt://[::1]").unwrap().port, 1883);
        for bad in [
            "broker:1883",
            "http://b",
            "mqtt://",
            "mqtt://b:0",
            "mqtt://b:x",
            "mqtt://u:p@b",
            "mqtt://b/x",
            "mqtt://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failover_walks_the_list_from_the_first_and_backs_off_after_a_round() {
        let s = Duration::from_secs;
        let mut f = Failover::new(3, s(10));
        assert_eq!(f.current(), 0);
        assert_eq!(f.ended(None), Retry::Next);
        assert_eq!(f.current(), 1);
        assert_eq!(f.ended(None), Retry::Next);
        assert_eq!(f.current(), 2);
        assert_eq!(f.ended(None), Retry::Backoff, "the whole list failed");
        assert_eq!(f.current(), 0);
        f.ended(None);
        // the second works for a while; when that connection is lost, the first is tried again
        assert_eq!(f.current(), 1);
        assert_eq!(f.ended(Some(s(60))), Retry::Backoff);
        assert_eq!(f.current(), 0);
        // the first accepts and drops at once, again and again: it is passed over
        assert_eq!(f.ended(Some(s(1))), Retry::Next);
        assert_eq!(f.current(), 1);
        let mut one = Failover::new(1, s(10));
        assert_eq!(one.ended(None), Retry::Backoff);
        assert_eq!(one.ended(Some(s(1))), Retry::Backoff);
        assert_eq!(one.ended(Some(s(60))), Retry::Backoff);
        assert_eq!(one.current(), 0);
    }

    #[test]
    fn the_next_broker_is_tried_at_once_and_the_whole_list_again_after_the_backoff() {
        let c = MqttSettings {
            url: "mqtt://a:1883,mqtt://b:1883".into(),
            reconnect_min: Dur(Duration::from_secs(1)),
            ..Default::default()
        };
        let connector = c.connector("mqtt").expect("two brokers");
        let mut r = Reconnect::new(&connector, Duration::from_secs(30));
        assert_eq!(r.current(), 0);
        assert_eq!(r.ended(None), Duration::ZERO, "the next broker at once");
        assert_eq!(r.current(), 1);
        let d = r.ended(None);
        assert!(
            d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
            "the whole list failed: the first backoff, {d:?}"
        );
        assert_eq!(r.current(), 0, "then from the first again");
    }

    #[test]
    fn broker_urls_from_a_string_a_list_or_commas() {
        #[derive(Deserialize, Serialize)]
        struct T {
            url: BrokerUrls,
        }
        let one: T = toml::from_str(r#"url = "mqtt://a:1""#).unwrap();
        assert_eq!(one.url.iter().collect::<Vec<_>>(), ["mqtt://a:1"]);
        assert_eq!(
            toml::to_string(&one).unwrap().trim(),
            r#"url = "mqtt://a:1""#
        );
        let two: T = toml::from_str(r#"url = ["mqtt://a:1", "mqtts://b"]"#).unwrap();
        assert_eq!(two.url.len(), 2);
        assert_eq!(two.url.get(3), "mqtts://b");
        assert_eq!(
            toml::to_string(&two).unwrap().trim(),
            r#"url = ["mqtt://a:1", "mqtts://b"]"#
        );
        assert_eq!(BrokerUrls::from("mqtt://a:1, mqtt://b:2,").len(), 2);
        assert_eq!(
            BrokerUrls::from(r#"["mqtt://a:1", 'mqtt://b:2']"#),
            BrokerUrls::from("mqtt://a:1,mqtt://b:2")
        );
        assert!(toml::from_str::<T>("url = 3").is_err());
        assert_eq!(two.url.to_string(), "mqtt://a:1, mqtts://b");
    }

    #[test]
    fn several_urls_are_each_checked_and_never_mix_tls_and_plain() {
        let s = MqttSettings {
            url: BrokerUrls::from("mqtt://a:1883,mqtt://b:x"),
            ..Default::default()
        };
        let e = s.connector("mqtt").unwrap_err();
        assert_eq!(e.key, "mqtt.url");
        assert!(e.message.contains("mqtt://b:x"), "{}", e.message);
        let s = MqttSettings {
            url: BrokerUrls::from(""),
            ..Default::default()
        };
        assert_eq!(s.connector("mqtt").unwrap_err().key, "mqtt.url");
        let s = MqttSettings {
            url: BrokerUrls::from("mqtt://a:1883,mqtt://[::1]:1884"),
            ..Default::default()
        };
        let c = s.connector("mqtt").unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(
            c.options(1, "x", None).broker_address(),
            ("::1".to_owned(), 1884)
        );
        assert_eq!(
            c.options(2, "x", None).broker_address(),
            ("a".to_owned(), 1883)
        );
        assert_eq!(c.url(1), "mqtt://[::1]:1884");
        let s = MqttSettings {
            url: BrokerUrls::from("mqtts://a,mqtt://b"),
            ..Default::default()
        };
        let e = s.connector("mqtt").unwrap_err();
        assert!(
            e.key == "mqtt.url" && e.message.contains("clear text"),
            "{e}"
        );
    }

    #[test]
    fn connector_checks_keys() {
        let ok = MqttSettings::default();
        assert!(ok.connector("mqtt").is_ok());

        let s = MqttSettings {
            keep_alive: Dur::millis(500),
            ..Default::default()
        };
        assert_eq!(s.connector("mqtt").unwrap_err().key, "mqtt.keep_alive");

        let s = MqttSettings {
            ca_file: Some("/x.pem".into()),
            ..Default::default()
        };
        let e = s.connector("mqtt").unwrap_err();
        assert_eq!(e.key, "mqtt.ca_file");
        assert!(e.message.contains("mqtts://"));

        let s = MqttSettings {
            url: "mqtts://b".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(s.connector("mqtt").unwrap_err().key, "mqtt.ca_file");

        let s = MqttSettings {
            password: Some("p".into()),
            ..Default::default()
        };
        assert_eq!(s.connector("mqtt").unwrap_err().key, "mqtt.password");

        let s = MqttSettings {
            topic_prefix: "a/#".into(),
            ..Default::default()
        };
        assert_eq!(s.connector("mqtt").unwrap_err().key, "mqtt.topic_prefix");
    }
}
