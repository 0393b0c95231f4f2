//! What no gateway connection can read, cleared from the broker.
//!
//! A broker without a packet limit (stock mosquitto, RabbitMQ) takes a message of any size
//! from anyone who may publish. Retained on a topic the gateway subscribes to (a node's
//! status), or queued for the active gateway's persistent session, one message over the
//! gateway's incoming limit ([`crate::bus::MAX_INCOMING_PACKET`]) is delivered on every
//! connection and cuts it, for ever: rumqttc must hold a whole packet, and refuses one over
//! its limit. When a connection ends that way, the bus and the beat connection call [`scrub`]
//! before they reconnect: an MQTT 3.1.1 connection of its own that reads each packet's header
//! and topic and streams the payload past (constant memory, whatever the size), then
//!
//! - with a clean session and the same subscriptions: publishes an empty retained message on
//!   every topic whose retained message was over the limit (no agent's message is ever that
//!   large), which clears it;
//! - with the persistent session (`clean = false`, the active gateway's client id): takes the
//!   messages the broker queued for it, acknowledges (drops) those over the limit and leaves
//!   the others unacknowledged, so the broker delivers them again to the gateway's next
//!   connection (MQTT 3.1.1, 4.4).
//!
//! The framing is pure ([`connect`], [`subscribe`], [`publish_empty_retained`], and
//! [`crate::wire`]); [`scrub`] is the shell.

use std::time::Duration;

use leakmon_common::mqtt::Connector;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::wire::{header, packet, puback, put_str, read_n, skip, CONNACK, DISCONNECT, PUBLISH};

/// How long a scrub listens once the broker is quiet, and at most in all. A clean scrub ends
/// sooner, at the first message that is not retained: a broker sends a subscription's retained
/// messages before anything published after it. The persistent session's queue comes right
/// after the CONNACK, at most the broker's in-flight window at a time (left unacknowledged,
/// the rest waits): quiet soon after.
const QUIET: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("cannot reach the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker refused the connection (CONNACK {0})")]
    Refused(u8),
    #[error("not an MQTT answer: {0}")]
    Protocol(&'static str),
}

/// CONNECT, MQTT 3.1.1, keep-alive 30 s.
pub fn connect(client_id: &str, clean: bool, user: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(4);
    let mut flags = if clean { 0x02 } else { 0 };
    if user.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    if let Some((u, p)) = user {
        put_str(&mut body, u.as_bytes());
        put_str(&mut body, p.as_bytes());
    }
    packet(0x10, &body)
}

/// SUBSCRIBE to `filters` at QoS 0 (packet id 1): deliveries come without acknowledgements.
pub fn subscribe(filters: &[String]) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    for f in filters {
        put_str(&mut body, f.as_bytes());
        body.push(0);
    }
    packet(0x82, &body)
}

/// An empty retained PUBLISH at QoS 0: clears `topic`'s retained message.
pub fn publish_empty_retained(topic: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    packet(0x31, &body)
}

/// What a scrub did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scrubbed {
    /// Retained messages over the limit, cleared (their topics).
    pub cleared: Vec<String>,
    /// Queued messages over the limit, acknowledged and dropped.
    pub dropped: usize,
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    client_id: &str,
    clean: bool,
    user: Option<(&str, &str)>,
    filters: &[String],
    limit: usize,
) -> Result<Scrubbed, ScrubError> {
    s.write_all(&connect(client_id, clean, user)).await?;
    let h = header(s).await?;
    let ack = read_n(s, h.len).await?;
    if h.kind != CONNACK || ack.len() != 2 {
        return Err(ScrubError::Protocol("no CONNACK"));
    }
    if ack[1] != 0 {
        return Err(ScrubError::Refused(ack[1]));
    }
    if clean {
        s.write_all(&subscribe(filters)).await?;
    }
    let mut done = Scrubbed::default();
    let end = tokio::time::Instant::now() + LONGEST;
    loop {
        let next = tokio::time::timeout_at(end.min(tokio::time::Instant::now() + QUIET), header(s));
        let Ok(h) = next.await else {
            break;
        };
        let h = h?;
        if h.kind != PUBLISH {
            skip(s, h.len).await?;
            continue;
        }
        let qos = (h.flags >> 1) & 3;
        let retained = h.flags & 1 == 1;
        let n = read_n(s, 2).await?;
        let topic_len = usize::from(u16::from_be_bytes([n[0], n[1]]));
        let topic = String::from_utf8_lossy(&read_n(s, topic_len).await?).into_owned();
        let mut used = 2 + topic_len;
        let id = if qos > 0 {
            used += 2;
            let b = read_n(s, 2).await?;
            Some(u16::from_be_bytes([b[0], b[1]]))
        } else {
            None
        };
        skip(s, h.len.saturating_sub(used)).await?;
        let over = h.size + h.len > limit;
        if clean && !retained {
            // live traffic: every retained message came before it
            break;
        }
        if over && retained && clean {
            done.cleared.push(topic);
        } else if over {
            done.dropped += 1;
            if let Some(id) = id {
                s.write_all(&puback(id)).await?;
            }
        }
        // under the limit: left unacknowledged, delivered again to the gateway itself
    }
    for t in &done.cleared {
        s.write_all(&publish_empty_retained(t)).await?;
    }
    s.write_all(&DISCONNECT).await?;
    s.flush().await?;
    Ok(done)
}

/// Clears from broker `broker` what is over `limit` bytes on `filters` (`clean`), or queued
/// for the persistent session `client_id` (not `clean`). See the module's text.
pub async fn scrub(
    connector: &Connector,
    broker: usize,
    client_id: &str,
    clean: bool,
    filters: &[String],
    limit: usize,
) -> Result<Scrubbed, ScrubError> {
    let ep = &connector.endpoints[broker % connector.endpoints.len()];
    let s = connector.settings();
    let user = s
        .username
        .as_deref()
        .map(|u| (u, s.password.as_deref().unwrap_or_default()));
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    match connector.tls() {
        None => {
            let mut tcp = tcp;
            run(&mut tcp, client_id, clean, user, filters, limit).await
        }
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                .map_err(|_| ScrubError::Protocol("the broker's host is not a TLS name"))?;
            let mut tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            run(&mut tls, client_id, clean, user, filters, limit).await
        }
    }
}

/// Whether a connection ended because a packet was over the client's limit.
pub fn oversized(error: &str) -> bool {
    error.contains("payload size limit exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn packets_are_what_mqtt_3_1_1_says() {
        assert_eq!(
            connect("ab", true, None),
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'a', b'b']
        );
        let c = connect("x", false, Some(("u", "p")));
        assert_eq!(c[9], 0xC0, "user and password, no clean session");
        assert!(c.ends_with(&[0, 1, b'u', 0, 1, b'p']));
        assert_eq!(
            subscribe(&["a/+".into()]),
            [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'+', 0]
        );
        assert_eq!(publish_empty_retained("t"), [0x31, 3, 0, 1, b't']);
        assert!(oversized(
            "I/O: MQTT state error: payload size limit exceeded: 20971520"
        ));
    }

    /// A broker's side of a scrub, scripted: CONNACK, then what `deliveries` holds.
    async fn against(deliveries: Vec<u8>, clean: bool) -> (Scrubbed, Vec<u8>) {
        let (mut ours, mut broker) = tokio::io::duplex(1 << 20);
        let srv = tokio::spawn(async move {
            let h = header(&mut broker).await.unwrap();
            let _ = read_n(&mut broker, h.len).await.unwrap();
            broker.write_all(&[0x20, 2, 0, 0]).await.unwrap();
            broker.write_all(&deliveries).await.unwrap();
            let mut rest = Vec::new();
            let _ = broker.read_to_end(&mut rest).await;
            rest
        });
        let filters = ["leakmon/v1/nodes/+/status".to_owned()];
        let done = run(&mut ours, "scrub", clean, None, &filters, 1000)
            .await
            .unwrap();
        drop(ours);
        (done, srv.await.unwrap())
    }

    fn delivery(topic: &str, retain: bool, id: Option<u16>, payload: usize) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, topic.as_bytes());
        if let Some(id) = id {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend(std::iter::repeat_n(b'x', payload));
        let first = 0x30 | u8::from(retain) | if id.is_some() { 0x02 } else { 0 };
        packet(first, &body)
    }

    #[tokio::test(start_paused = true)]
    async fn retained_messages_over_the_limit_are_cleared_and_the_rest_left_alone() {
        let mut d = delivery("leakmon/v1/nodes/x/status", true, None, 5000);
        d.extend(delivery("leakmon/v1/nodes/a/status", true, None, 100));
        // live traffic after the retained: the scrub ends there (a later one is not read)
        d.extend(delivery("leakmon/v1/nodes/a/status", false, None, 100));
        d.extend(delivery("leakmon/v1/nodes/y/status", true, None, 5000));
        let (done, sent) = against(d, true).await;
        assert_eq!(done.cleared, ["leakmon/v1/nodes/x/status"]);
        // it subscribed, cleared x only, and said goodbye
        let clear = publish_empty_retained("leakmon/v1/nodes/x/status");
        assert!(sent.windows(clear.len()).any(|w| w == clear.as_slice()));
        let other = publish_empty_retained("leakmon/v1/nodes/a/status");
        assert!(!sent.windows(other.len()).any(|w| w == other.as_slice()));
        assert!(sent.ends_with(&DISCONNECT));
    }

    #[tokio::test(start_paused = true)]
    async fn a_persistent_sessions_oversized_messages_are_acknowledged_and_the_rest_are_not() {
        let mut d = delivery("leakmon/v1/nodes/a/host", false, Some(7), 100);
        d.extend(delivery(
            "leakmon/v1/nodes/x/host",
            false,
            Some(8),
            1_000_000,
        ));
        let (done, sent) = against(d, false).await;
        assert_eq!(
            done,
            Scrubbed {
                cleared: vec![],
                dropped: 1
            }
        );
        assert!(sent.windows(4).any(|w| w == puback(8).as_slice()));
        assert!(!sent.windows(4).any(|w| w == puback(7).as_slice()));
        assert!(
            !sent.contains(&0x82),
            "no subscription on the persistent session"
        );
    }
}
