//! The embedded broker's front: the address clients connect to, in front of rumqttd, which
//! listens on a loopback port of its own and lets in only the front (a password made at
//! start). For each connection the front reads the CONNECT, asks [`super::acl`] who the
//! client is (refused: CONNACK 5, "not authorized"), and then relays packets both ways,
//! reading only their headers and topics (payloads are streamed, never held):
//!
//! - a PUBLISH (or a Will) the client may not write is dropped, acknowledged to the client as
//!   mosquitto does (PUBACK, or PUBREC then PUBCOMP), and logged once per connection;
//! - a subscription the client may not read is refused in the SUBACK (0x80), the others are
//!   passed on;
//! - everything else passes unchanged.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leakmon_protocol::auth::FleetKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

use super::acl::{self, Prefixes, Role};
use crate::wire::{
    connack, header, packet, pass, puback, pubcomp, pubrec, put_str, read_n, skip, suback, Connect,
    Fields, Header, Malformed, CONNECT, PUBLISH, PUBREL, SUBACK, SUBSCRIBE,
};

/// The largest CONNECT or SUBSCRIBE the front reads whole (agents' are under 1 KiB).
const SMALL: usize = 64 * 1024;
/// How long a new connection has to send its CONNECT.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// The only user rumqttd lets in.
pub const INNER_USER: &str = "leakmon-front";

/// What the front needs to judge clients.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The fleet keys that make client ids (the current one, the previous during a rotation).
    pub fleet: Vec<FleetKey>,
    /// This gateway's configured client ids (gateways whatever they are).
    pub own: Vec<String>,
    pub prefixes: Prefixes,
    /// Whether other clients may connect as telemetry readers (only on a loopback address).
    pub readers: bool,
    /// rumqttd's address and the front's password there.
    pub inner: SocketAddr,
    pub inner_password: String,
}

/// Accepts connections for ever.
pub async fn serve(listener: TcpListener, rules: Arc<Rules>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "embedded broker: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let rules = rules.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(client, &rules).await {
                tracing::debug!(%peer, error = %e, "embedded broker: connection ended");
            }
        });
    }
}

type ClientWriter = tokio::sync::Mutex<BufWriter<OwnedWriteHalf>>;

/// What both directions of one connection share.
struct Link {
    client: ClientWriter,
    /// SUBSCRIBEs passed on with some filters taken out: packet id to which were kept.
    partial: Mutex<HashMap<u16, Vec<bool>>>,
}

impl Link {
    /// Sends `bytes` (whole packets) to the client, between the broker's packets.
    async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.client.lock().await;
        w.write_all(bytes).await?;
        w.flush().await
    }
}

async fn connection(client: TcpStream, rules: &Rules) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let mut cr = BufReader::new(cr);
    let mut cw = BufWriter::new(cw);
    let first = tokio::time::timeout(CONNECT_WAIT, async {
        let h = header(&mut cr).await?;
        if h.kind != CONNECT || h.len > SMALL {
            return Err(Malformed("no CONNECT first").into());
        }
        read_n(&mut cr, h.len).await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let refuse = |code: u8, mut cw: BufWriter<OwnedWriteHalf>| async move {
        cw.write_all(&connack(code)).await?;
        cw.flush().await
    };
    let mut connect = match Connect::parse(&first) {
        Ok(c) => c,
        Err(e) => {
            refuse(1, cw).await?;
            return Err(e.into());
        }
    };
    let role = match acl::identify(&connect.client_id, &rules.fleet, &rules.own, rules.readers) {
        Ok(r) => r,
        Err(refusal) => {
            tracing::warn!(%refusal, "embedded broker: connection refused");
            return refuse(5, cw).await;
        }
    };
    if let Some((topic, _)) = &connect.will {
        if !role.may_write(&rules.prefixes, topic) {
            tracing::warn!(client_id = %connect.client_id, %topic,
                "embedded broker: connection refused: a Will on a topic it may not write");
            return refuse(5, cw).await;
        }
    }
    connect.username = Some(INNER_USER.to_owned());
    connect.password = Some(rules.inner_password.as_bytes().to_vec());
    let broker = TcpStream::connect(rules.inner).await?;
    let _ = broker.set_nodelay(true);
    let (br, bw) = broker.into_split();
    let mut bw = BufWriter::new(bw);
    bw.write_all(&connect.to_bytes()).await?;
    bw.flush().await?;
    cw.flush().await?;
    let link = Link {
        client: tokio::sync::Mutex::new(cw),
        partial: Mutex::new(HashMap::new()),
    };
    let who = Judge {
        role,
        prefixes: &rules.prefixes,
        client_id: &connect.client_id,
        denied: 0,
    };
    let mut br = BufReader::new(br);
    tokio::select! {
        r = upstream(&mut cr, &mut bw, who, &link) => r,
        r = downstream(&mut br, &link) => r,
    }
}

/// One connection's client, and how much of what it sent was dropped.
struct Judge<'a> {
    role: Role,
    prefixes: &'a Prefixes,
    client_id: &'a str,
    denied: u64,
}

impl Judge<'_> {
    fn deny(&mut self, what: &str, topic: &str) {
        self.denied += 1;
        if self.denied == 1 {
            tracing::warn!(client_id = %self.client_id, role = ?self.role, %topic,
                "embedded broker: {what} not allowed (the ACL of config/mosquitto/); dropped, and so are its others on this connection");
        }
    }
}

/// A PUBLISH's variable header: topic and packet id.
struct Publish {
    topic: Vec<u8>,
    id: Option<u16>,
    /// Bytes of the body after them (the payload).
    rest: usize,
}

async fn read_publish<R: AsyncRead + Unpin>(r: &mut R, h: &Header) -> std::io::Result<Publish> {
    let n = read_n(r, 2).await?;
    let topic = read_n(r, usize::from(u16::from_be_bytes([n[0], n[1]]))).await?;
    let qos = (h.flags >> 1) & 3;
    let id = match qos {
        0 => None,
        _ => {
            let b = read_n(r, 2).await?;
            Some(u16::from_be_bytes([b[0], b[1]]))
        }
    };
    let used = 2 + topic.len() + if id.is_some() { 2 } else { 0 };
    let rest = h
        .len
        .checked_sub(used)
        .ok_or(Malformed("a PUBLISH shorter than its topic"))?;
    Ok(Publish { topic, id, rest })
}

/// The client to the broker.
async fn upstream<R, W>(
    r: &mut R,
    w: &mut BufWriter<W>,
    mut who: Judge<'_>,
    link: &Link,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // QoS 2 messages dropped: their PUBREL is answered here, not passed on
    let mut released = HashSet::new();
    loop {
        let h = header(r).await?;
        match h.kind {
            PUBLISH => {
                let p = read_publish(r, &h).await?;
                let topic = std::str::from_utf8(&p.topic).unwrap_or("\u{FFFD}");
                if who.role.may_write(who.prefixes, topic) {
                    w.write_all(&h.bytes()).await?;
                    let mut var = Vec::with_capacity(p.topic.len() + 4);
                    put_str(&mut var, &p.topic);
                    if let Some(id) = p.id {
                        var.extend_from_slice(&id.to_be_bytes());
                    }
                    w.write_all(&var).await?;
                    pass(r, w, p.rest).await?;
                    w.flush().await?;
                    continue;
                }
                skip(r, p.rest).await?;
                if p.rest == 0 && who.role.own_probe_topic(who.prefixes, topic) {
                    tracing::debug!(client_id = %who.client_id, %topic,
                        "embedded broker: the agent's clearing of its probe topic dropped");
                } else {
                    who.deny("a publish", topic);
                }
                match ((h.flags >> 1) & 3, p.id) {
                    (1, Some(id)) => link.send(&puback(id)).await?,
                    (2, Some(id)) => {
                        released.insert(id);
                        link.send(&pubrec(id)).await?;
                    }
                    _ => {}
                }
            }
            PUBREL if h.len == 2 => {
                let b = read_n(r, 2).await?;
                let id = u16::from_be_bytes([b[0], b[1]]);
                if released.remove(&id) {
                    link.send(&pubcomp(id)).await?;
                } else {
                    w.write_all(&h.bytes()).await?;
                    w.write_all(&b).await?;
                    w.flush().await?;
                }
            }
            // (a larger one is no client of ours: never passed on unread)
            SUBSCRIBE if h.len > SMALL => {
                return Err(Malformed("a SUBSCRIBE over 64 KiB").into());
            }
            SUBSCRIBE => {
                let body = read_n(r, h.len).await?;
                let (id, filters) = subscriptions(&body)?;
                let kept: Vec<bool> = filters
                    .iter()
                    .map(|(f, _)| {
                        let ok = who.role.may_read(who.prefixes, f);
                        if !ok {
                            who.deny("a subscription", f);
                        }
                        ok
                    })
                    .collect();
                if kept.iter().all(|&k| k) {
                    w.write_all(&h.bytes()).await?;
                    w.write_all(&body).await?;
                    w.flush().await?;
                } else if !kept.iter().any(|&k| k) {
                    link.send(&suback(id, &vec![0x80; kept.len()])).await?;
                } else {
                    let mut out = id.to_be_bytes().to_vec();
                    for ((f, qos), _) in filters.iter().zip(&kept).filter(|(_, &k)| k) {
                        put_str(&mut out, f.as_bytes());
                        out.push(*qos);
                    }
                    if let Ok(mut p) = link.partial.lock() {
                        p.insert(id, kept);
                    }
                    w.write_all(&packet(0x82, &out)).await?;
                    w.flush().await?;
                }
            }
            CONNECT => return Err(Malformed("a second CONNECT").into()),
            _ => {
                w.write_all(&h.bytes()).await?;
                pass(r, w, h.len).await?;
                w.flush().await?;
            }
        }
    }
}

/// A SUBSCRIBE's packet id and filters with their QoS.
fn subscriptions(body: &[u8]) -> Result<(u16, Vec<(String, u8)>), Malformed> {
    let mut f = Fields(body);
    let id = f.u16()?;
    let mut out = Vec::new();
    while !f.is_empty() {
        out.push((f.str()?.to_owned(), f.u8()?));
    }
    if out.is_empty() {
        return Err(Malformed("a SUBSCRIBE without filters"));
    }
    Ok((id, out))
}

/// The SUBACK the client gets when only the `kept` of its filters were passed on and the
/// broker answered `granted` for those.
fn merged_suback(id: u16, kept: &[bool], granted: &[u8]) -> Vec<u8> {
    let mut g = granted.iter();
    let codes: Vec<u8> = kept
        .iter()
        .map(|&k| {
            if k {
                g.next().copied().unwrap_or(0x80)
            } else {
                0x80
            }
        })
        .collect();
    suback(id, &codes)
}

/// The broker to the client.
async fn downstream<R: AsyncRead + Unpin>(r: &mut R, link: &Link) -> std::io::Result<()> {
    loop {
        let h = header(r).await?;
        if h.kind == SUBACK && (2..=SMALL).contains(&h.len) {
            let body = read_n(r, h.len).await?;
            let id = u16::from_be_bytes([body[0], body[1]]);
            let kept = link.partial.lock().ok().and_then(|mut p| p.remove(&id));
            match kept {
                Some(kept) => link.send(&merged_suback(id, &kept, &body[2..])).await?,
                None => {
                    let mut whole = h.bytes();
                    whole.extend_from_slice(&body);
                    link.send(&whole).await?;
                }
            }
            continue;
        }
        let mut w = link.client.lock().await;
        w.write_all(&h.bytes()).await?;
        pass(r, &mut *w, h.len).await?;
        w.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `upstream` for a client of `role` that sent `sent`: what reached the broker, what
    /// the front answered the client itself, and how it ended.
    async fn judge(role: Role, sent: Vec<u8>) -> (Vec<u8>, Vec<u8>, std::io::Result<()>) {
        use tokio::io::AsyncReadExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (_, w) = ours.into_split();
        let link = Link {
            client: tokio::sync::Mutex::new(BufWriter::new(w)),
            partial: Mutex::new(HashMap::new()),
        };
        let prefixes = Prefixes {
            topics: "leakmon".into(),
            discovery: "homeassistant".into(),
        };
        let who = Judge {
            role,
            prefixes: &prefixes,
            client_id: "test",
            denied: 0,
        };
        let mut broker = BufWriter::new(Vec::new());
        let end = upstream(&mut sent.as_slice(), &mut broker, who, &link).await;
        drop(link);
        let mut answered = Vec::new();
        client.read_to_end(&mut answered).await.unwrap();
        (broker.into_inner(), answered, end)
    }

    fn publish(topic: &str, id: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, topic.as_bytes());
        if let Some(id) = id {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        packet(if id.is_some() { 0x32 } else { 0x30 }, &body)
    }

    #[tokio::test]
    async fn what_a_client_may_not_send_never_reaches_the_broker() {
        let node = || Role::Node("n1".into());
        // its own topic passes unchanged
        let own = publish("leakmon/v1/nodes/n1/host", Some(7), b"{}");
        let (broker, answered, _) = judge(node(), own.clone()).await;
        assert_eq!((broker, answered), (own, vec![]));
        // another node's: dropped, and acknowledged to the client
        let other = publish("leakmon/v1/nodes/n2/host", Some(8), &[b'x'; 100_000]);
        let (broker, answered, _) = judge(node(), other).await;
        assert_eq!((broker, answered), (vec![], puback(8)));
        // a subscription it may not read: refused in the SUBACK
        let mut body = 3u16.to_be_bytes().to_vec();
        put_str(&mut body, b"leakmon/v1/nodes/#");
        body.push(1);
        let (broker, answered, _) = judge(node(), packet(0x82, &body)).await;
        assert_eq!((broker, answered), (vec![], suback(3, &[0x80])));
        // a SUBSCRIBE too large to read is the end of the connection, not passed on
        let mut big = 4u16.to_be_bytes().to_vec();
        for i in 0..5_000 {
            put_str(&mut big, format!("leakmon/v1/probe/n1/{i:08}").as_bytes());
            big.push(0);
        }
        assert!(big.len() > SMALL);
        let (broker, _, end) = judge(Role::Reader, packet(0x82, &big)).await;
        assert!(broker.is_empty() && end.is_err());
    }

    #[test]
    fn a_partial_suback_refuses_what_was_taken_out() {
        assert_eq!(
            merged_suback(4, &[true, false, true], &[1, 0]),
            suback(4, &[1, 0x80, 0])
        );
        // the broker answered fewer than were kept: the rest count as refused
        assert_eq!(merged_suback(4, &[true, true], &[1]), suback(4, &[1, 0x80]));
    }

    #[test]
    fn subscriptions_are_read_whole_or_refused() {
        let mut body = 9u16.to_be_bytes().to_vec();
        put_str(&mut body, b"a/+");
        body.push(1);
        put_str(&mut body, b"b");
        body.push(0);
        assert_eq!(
            subscriptions(&body),
            Ok((9, vec![("a/+".into(), 1), ("b".into(), 0)]))
        );
        assert!(subscriptions(&body[..body.len() - 1]).is_err());
        assert!(subscriptions(&9u16.to_be_bytes()).is_err());
    }
}
