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
    pub url: String,
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
            url: "mqtt://127.0.0.1:1883".into(),
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
    pub endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: MqttSettings,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl MqttSettings {
    /// Checks every key (naming it on error, under `section`) and loads TLS files.
    pub fn connector(&self, section: &str) -> Result<Connector, ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        let endpoint = parse_url(&self.url).map_err(|m| ConfigError::new(key("url"), m))?;
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
        if !endpoint.tls {
            if let Some((k, _)) = tls_keys.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    key(k),
                    "TLS files need a TLS url: use mqtts://host:8883",
                ));
            }
        }
        let tls = if endpoint.tls {
            Some(Arc::new(self.tls_config(&key)?))
        } else {
            None
        };
        let mut settings = self.clone();
        settings.password = password;
        Ok(Connector {
            endpoint,
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

    /// Options for one connection, with a clean session and, optionally, a Last Will.
    pub fn options(&self, client_id: &str, will: Option<LastWill>) -> MqttOptions {
        let s = &self.settings;
        let mut o = MqttOptions::new(client_id, &self.endpoint.host, self.endpoint.port);
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
