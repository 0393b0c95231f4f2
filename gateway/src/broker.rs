//! The embedded MQTT broker: when the configured broker is on this machine and nothing answers
//! there, the gateway starts rumqttd on that address, so a single command brings up a working
//! setup. A real deployment points `mqtt.url` at its broker (mosquitto, EMQX, ...) and this
//! never runs (`broker.embedded = "never"` makes sure).
//!
//! rumqttd is maintained by the rumqttc authors and embeds in a program; it brings about 90
//! crates the gateway would not need otherwise, so it sits behind the `embedded-broker` cargo
//! feature: on for `cargo build` (scripts/run), off in the packages and images, where a
//! configuration asking for it is refused at start with the fix named.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::Embedded;

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Decides and, if needed, starts the embedded broker; returns the address it listens on.
pub fn maybe_start(mode: Embedded, host: &str, port: u16) -> anyhow::Result<Option<SocketAddr>> {
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
    start(addr)
}

/// Starts rumqttd on `addr` and waits until it answers.
#[cfg(feature = "embedded-broker")]
fn start(addr: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    use crate::bus::MAX_INCOMING_PACKET;
    use std::collections::HashMap;
    let mut v4 = HashMap::new();
    v4.insert(
        "1".to_owned(),
        rumqttd::ServerSettings {
            name: "leakmon-embedded".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: MAX_INCOMING_PACKET,
                max_inflight_count: 500,
                auth: None,
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
    for _ in 0..50 {
        if answers(addr) {
            tracing::warn!(%addr, "no MQTT broker answered; started an embedded one (rumqttd) for this gateway and local agents");
            return Ok(Some(addr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("the embedded broker did not start listening on {addr}")
}

#[cfg(not(feature = "embedded-broker"))]
fn start(addr: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    anyhow::bail!(
        "broker.embedded: nothing answers on {addr} and this build has no embedded broker (built without the `embedded-broker` feature, as the packages are); run a broker there (mosquitto) and set broker.embedded = \"never\""
    )
}
