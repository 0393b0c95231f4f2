//! The embedded MQTT broker: when the configured broker is on this machine and nothing answers
//! there, the gateway starts rumqttd on that address, so a single command brings up a working
//! setup. A real deployment points `mqtt.url` at its broker (mosquitto, EMQX, ...) and this
//! never runs (`broker.embedded = "never"` makes sure).
//!
//! rumqttd is maintained by the rumqttc authors and embeds in a program; it brings about 90
//! crates the gateway would not need otherwise, so it sits behind the `embedded-broker` cargo
//! feature: on for `cargo build` (scripts/run), off in the packages and images, where a
//! configuration asking for it is refused at start with the fix named.
//!
//! rumqttd has no ACL. With the fleet key (the default), clients do not reach it: it listens
//! on a loopback port of its own and lets in only the gateway's front ([`front`]), which
//! listens on the configured address and keeps the rules of config/mosquitto/ ([`acl`]).
//! With `auth.insecure` there is no front: anyone who reaches the address may do anything.

#[cfg(feature = "embedded-broker")]
pub mod acl;
#[cfg(feature = "embedded-broker")]
pub mod front;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use leakmon_protocol::auth::FleetKey;

use crate::config::Embedded;

/// Who may do what on an embedded broker (see [`acl`]); `None` with `auth.insecure`.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "embedded-broker"), allow(dead_code))]
pub struct Guard {
    /// The current fleet key, then the previous one during a rotation.
    pub fleet: Vec<FleetKey>,
    /// This gateway's own client ids.
    pub own: Vec<String>,
    /// `mqtt.topic_prefix`, `homeassistant.discovery_prefix`.
    pub topics: String,
    pub discovery: String,
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Decides and, if needed, starts the embedded broker; returns the address it listens on.
pub fn maybe_start(
    mode: Embedded,
    host: &str,
    port: u16,
    guard: Option<Guard>,
) -> anyhow::Result<Option<SocketAddr>> {
    if mode == Embedded::Never {
        return Ok(None);
    }
    let addr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    let Some(addr) = addr else {
        return Ok(None);
    };
    let wanted = match mode {
        Embedded::Always => true,
        Embedded::Auto => addr.ip().is_loopback() && !answers(addr),
        Embedded::Never => false,
    };
    if !wanted {
        return Ok(None);
    }
    start(addr, guard)
}

/// Starts rumqttd (behind the front, with a guard) on `addr` and waits until it answers.
#[cfg(feature = "embedded-broker")]
fn start(addr: SocketAddr, guard: Option<Guard>) -> anyhow::Result<Option<SocketAddr>> {
    use crate::bus::MAX_INCOMING_PACKET;
    use anyhow::Context;
    use std::collections::HashMap;
    let front = match guard {
        Some(g) => {
            // bound now, so that a taken address is an error at start
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
            let inner = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?;
            let mut secret = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| anyhow::anyhow!("no randomness for the embedded broker"))?;
            let rules = front::Rules {
                fleet: g.fleet,
                own: g.own,
                prefixes: acl::Prefixes {
                    topics: g.topics,
                    discovery: g.discovery,
                },
                readers: addr.ip().is_loopback(),
                inner,
                inner_password: secret.iter().map(|b| format!("{b:02x}")).collect(),
            };
            Some((listener, rules))
        }
        None => None,
    };
    let listen = front.as_ref().map_or(addr, |(_, r)| r.inner);
    let auth = front
        .as_ref()
        .map(|(_, r)| HashMap::from([(front::INNER_USER.to_owned(), r.inner_password.clone())]));
    let mut v4 = HashMap::new();
    v4.insert(
        "1".to_owned(),
        rumqttd::ServerSettings {
            name: "leakmon-embedded".into(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: MAX_INCOMING_PACKET,
                max_inflight_count: 500,
                auth,
                external_auth: None,
                dynamic_filters: true,
            },
        },
    );
    let config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(v4),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    let mut up = false;
    for _ in 0..50 {
        if answers(listen) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !up {
        anyhow::bail!("the embedded broker did not start listening on {listen}");
    }
    match front {
        Some((listener, rules)) => {
            let readers = rules.readers;
            listener.set_nonblocking(true)?;
            std::thread::Builder::new()
                .name("embedded-front".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "embedded broker's front stopped");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => front::serve(l, std::sync::Arc::new(rules)).await,
                            Err(e) => {
                                tracing::error!(error = %e, "embedded broker's front stopped");
                            }
                        }
                    });
                })?;
            tracing::warn!(%addr, readers, "no MQTT broker answered; started an embedded one (rumqttd) for this gateway and local agents, with the ACL of config/mosquitto/ (clients known by their client ids; others read only, on a loopback address)");
        }
        None => {
            tracing::error!(%addr, "no MQTT broker answered; started an embedded one (rumqttd) WITHOUT authentication or ACL (auth.insecure): anyone who reaches it may publish anything");
        }
    }
    Ok(Some(addr))
}

#[cfg(not(feature = "embedded-broker"))]
fn start(addr: SocketAddr, _guard: Option<Guard>) -> anyhow::Result<Option<SocketAddr>> {
    anyhow::bail!(
        "broker.embedded: nothing answers on {addr} and this build has no embedded broker (built without the `embedded-broker` feature, as the packages are); run a broker there (mosquitto) and set broker.embedded = \"never\""
    )
}
