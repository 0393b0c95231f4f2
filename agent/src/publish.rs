//! The MQTT shell: connects with a Last Will, then moves bytes between rumqttc and the pure
//! [`Session`], which decides what is published when (birth first, the outbox through a
//! bounded window, goodbye and DISCONNECT on shutdown); reconnects with backoff and jitter.
//!
//! Each connection gets a fresh rumqttc client and event loop. rumqttc would otherwise replay
//! its own copy of unacknowledged messages and of requests still in its channel after a
//! reconnect, duplicating what the outbox resends; with a new event loop the outbox is the only
//! source of truth, and each connection can carry its own Will (whose `seq` changes).
//!
//! Beside the session, on the same client: liveness beats every `liveness.beat_interval` and
//! the reports of probes run for the gateway ([`crate::probe`]), both QoS 0 and handed
//! straight to the client, never to the outbox. A beat is only worth anything fresh: it must
//! not wait behind a backlog of data (at most the session's window of QoS 1 publishes is ever
//! ahead of it in rumqttc's queue), must not be replayed after an outage (a fresh event loop
//! per connection drops what the old one held), and is not sent while disconnected.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use leakmon_common::mqtt::{Connector, Reconnect};
use leakmon_protocol::auth::NodeKey;
use leakmon_protocol::{
    encode, encode_with_capacity, Beat, Channel, ContainersReport, EngineState, EventReport,
    Header, HostReport, Identity, NodeState, OfflineReason, ProbeReport, Status, Topics,
    PROTOCOL_VERSION,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, LastWill, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};

use crate::events::EngineEvent;
use crate::probe::Prober;
use crate::resend::Resend;
use crate::session::{Action, End, Session, Source, WINDOW};
use crate::state::State;
use leakmon_common::buffer::{Buffer, Message, Origin};

/// What the collectors hand to the publisher.
#[derive(Debug)]
pub enum Report {
    /// Filled by the host collector but for the header's numbering and the buffer state,
    /// which only the publisher knows.
    Host(Box<HostReport>),
    Containers {
        ts: i64,
        result: Result<Vec<leakmon_protocol::Container>, String>,
        /// The engine's `/info` figures of the sample.
        engine_info: Option<leakmon_protocol::EngineInfo>,
    },
    Event(EngineEvent),
}

pub use leakmon_common::now_ms;

/// Turns reports into messages with a header; the only place `seq` (and a beat's `n`) is
/// assigned.
/// Room kept in a packet for the MQTT header and the topic (topics are at most ~200 bytes).
const PACKET_OVERHEAD: u64 = 512;

pub struct Encoder {
    pub topics: Topics,
    pub node: String,
    pub run: u64,
    seq: u64,
    /// Beats made so far in this run.
    beats: u64,
    /// The largest payload the broker connection takes ([`Encoder::with_max_payload`]).
    max_payload: usize,
    /// Reports too large to send even after cutting them down, dropped.
    pub oversize_dropped: u64,
    /// This node's key: every message is sealed with it ([`leakmon_protocol::auth`]).
    key: Option<NodeKey>,
    /// The last host and containers payloads' lengths: the next one's buffer is made that
    /// large (and the seal's room) at once.
    last_len: [usize; 2],
}

impl Encoder {
    pub fn new(topics: Topics, node: String, run: u64) -> Self {
        Encoder {
            topics,
            node,
            run,
            seq: 0,
            beats: 0,
            max_payload: leakmon_protocol::codec::MAX_PAYLOAD,
            oversize_dropped: 0,
            key: None,
            last_len: [0; 2],
        }
    }

    /// Seals every message with `key` (`None`: `auth.insecure`).
    pub fn with_key(mut self, key: Option<NodeKey>) -> Self {
        self.key = key;
        self
    }

    /// Payloads stay within `mqtt.max_packet_size` (less room for the topic and the MQTT
    /// header), and never over the protocol's [`leakmon_protocol::codec::MAX_PAYLOAD`]: a packet
    /// the client refuses to send would drop the connection and come back from the outbox
    /// forever.
    pub fn with_max_payload(mut self, max_packet_size: u64) -> Self {
        let room =
            usize::try_from(max_packet_size.saturating_sub(PACKET_OVERHEAD)).unwrap_or(usize::MAX);
        self.max_payload = room.min(leakmon_protocol::codec::MAX_PAYLOAD);
        self
    }

    /// The next liveness beat (QoS 0, not retained). `n` counts every beat made, so a beat
    /// the client could not take shows as a gap, as one lost on the way would.
    pub fn beat(&mut self) -> Message {
        self.beats += 1;
        // The clocks ride on the first beat of a run and every 4th after (once a second at
        // the default interval): enough for the gateway to place samples, at a quarter of the
        // bytes.
        let clocks = self.beats % CLOCK_EVERY == 1;
        let b = Beat {
            v: PROTOCOL_VERSION,
            node: self.node.clone(),
            run: self.run,
            n: self.beats,
            ts: clocks.then(leakmon_common::now_ms),
            mono: mono_ms().filter(|_| clocks),
        };
        self.message(Channel::Beat, encode(&b), false)
    }

    /// A probe's report, on this node's `probe` channel (QoS 0, not retained).
    pub fn probe_report(&self, r: &ProbeReport) -> Message {
        self.message(Channel::Probe, encode(r), false)
    }

    fn header(&mut self, ts: i64) -> Header {
        self.seq += 1;
        // The monotonic clock when the data was sampled: now, less the little while since
        // (a report waits at most a moment between its collector and here; a wall clock set
        // meanwhile cannot push it back further than a minute).
        let since = u64::try_from(leakmon_common::now_ms().saturating_sub(ts))
            .unwrap_or(0)
            .min(60_000);
        Header {
            v: PROTOCOL_VERSION,
            node: self.node.clone(),
            run: self.run,
            seq: self.seq,
            ts,
            mono: mono_ms().map(|m| m.saturating_sub(since)),
        }
    }

    fn message(&self, channel: Channel, payload: Vec<u8>, retain: bool) -> Message {
        let topic = self.topics.node(&self.node, channel);
        let payload = match &self.key {
            Some(k) => k.seal(&topic, payload),
            None => payload,
        };
        Message {
            topic,
            payload,
            retain,
        }
    }

    /// The message of a report, bounded ([`leakmon_protocol::limits`]) and cut down further
    /// until it fits [`Encoder::with_max_payload`]; `None` (counted, logged) if it cannot.
    pub fn report(&mut self, r: Report, buffer: leakmon_protocol::BufferStats) -> Option<Message> {
        // room for the seal
        let seal = if self.key.is_some() {
            leakmon_protocol::auth::SEAL_OVERHEAD
        } else {
            0
        };
        let max = self.max_payload.saturating_sub(seal);
        let (channel, payload) = match r {
            Report::Host(mut msg) => {
                msg.header = self.header(msg.header.ts);
                msg.buffer = buffer;
                msg.bound();
                let payload = fit(&mut msg, max, &mut self.last_len[0], |m| {
                    // the least telling first: interrupt tables, network counters, one
                    // point per CPU or device; the mounts (disk space) last
                    let n = if !m.soft_interrupts.is_empty() {
                        cut_half(&mut m.soft_interrupts)
                    } else if !m.interrupts.is_empty() {
                        cut_half(&mut m.interrupts)
                    } else if let Some(c) = m.nstat.take() {
                        u32::try_from(c.len()).unwrap_or(u32::MAX)
                    } else if !m.cores.is_empty() {
                        cut_half(&mut m.cores)
                    } else if !m.diskio.is_empty() {
                        cut_half(&mut m.diskio)
                    } else if !m.temps.is_empty() {
                        cut_half(&mut m.temps)
                    } else if !m.net.is_empty() {
                        cut_half(&mut m.net)
                    } else {
                        cut_half(&mut m.disks)
                    };
                    m.cut = m.cut.saturating_add(n);
                    n > 0
                });
                (Channel::Host, payload)
            }
            Report::Containers {
                ts,
                result,
                engine_info,
            } => {
                let (engine, error, containers) = match result {
                    Ok(c) => (EngineState::Ok, None, c),
                    Err(e) => (EngineState::Unavailable, Some(e), Vec::new()),
                };
                let mut msg = ContainersReport {
                    header: self.header(ts),
                    engine,
                    error,
                    containers,
                    engine_info,
                    cut: 0,
                };
                msg.bound();
                let payload = fit(&mut msg, max, &mut self.last_len[1], |m| {
                    // cut from the end of what matters least
                    m.prioritize();
                    let n = cut_half(&mut m.containers);
                    m.cut = m.cut.saturating_add(n);
                    n > 0
                });
                (Channel::Containers, payload)
            }
            Report::Event(e) => {
                let mut msg = EventReport {
                    header: self.header(e.ts_ms),
                    action: e.action,
                    container_id: e.container_id,
                    container_name: e.container_name,
                    image: e.image,
                    exit_code: e.exit_code,
                    signal: e.signal,
                    health: e.health,
                    swarm_service: e.swarm_service,
                    swarm_task: e.swarm_task,
                };
                msg.bound();
                (Channel::Events, fit(&mut msg, max, &mut 0, |_| false))
            }
        };
        match payload {
            Some(p) => Some(self.message(channel, p, false)),
            None => {
                self.oversize_dropped += 1;
                tracing::error!(
                    channel = channel.as_str(),
                    max_payload = max,
                    dropped = self.oversize_dropped,
                    "a report does not fit mqtt.max_packet_size even cut down: dropped"
                );
                None
            }
        }
    }

    pub fn status(
        &self,
        state: NodeState,
        seq: u64,
        reason: Option<OfflineReason>,
        identity: Option<Identity>,
    ) -> Message {
        let s = Status {
            v: PROTOCOL_VERSION,
            node: self.node.clone(),
            state,
            seq,
            reason,
            ts: now_ms(),
            identity,
        };
        self.message(Channel::Status, encode(&s), true)
    }
}

/// Drops the second half of `v` (at least one item); how many were dropped.
fn cut_half<T>(v: &mut Vec<T>) -> u32 {
    let keep = v.len() / 2;
    let n = v.len() - keep;
    v.truncate(keep);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `msg` encoded, cut down by `shrink` (false: nothing left to cut) until it is at most
/// `max` bytes; `None` if it never is. `last_len`: the length of the last payload of its kind
/// (the buffer's first size, with room for the seal), updated.
fn fit<T: serde::Serialize>(
    msg: &mut T,
    max: usize,
    last_len: &mut usize,
    mut shrink: impl FnMut(&mut T) -> bool,
) -> Option<Vec<u8>> {
    loop {
        let room = *last_len + *last_len / 16 + leakmon_protocol::auth::TRAILER_LEN;
        let p = encode_with_capacity(&*msg, room.max(128));
        if p.len() <= max {
            *last_len = p.len();
            return Some(p);
        }
        if !shrink(msg) {
            return None;
        }
    }
}

/// The agent's outbox: the shared store-and-forward buffer (memory, then the disk spool).
pub type Outbox = Buffer<Message>;

/// What a connection sends after the birth: the copies to resend first (see
/// [`crate::resend`]), then the outbox. A copy in flight when the link drops goes back to the
/// outbox like any message from memory.
struct Feed<'a> {
    resend: &'a mut VecDeque<Message>,
    outbox: &'a mut Outbox,
}

impl Source for Feed<'_> {
    type Item = (Message, Origin);
    fn next(&mut self) -> Option<(Message, Origin)> {
        match self.resend.pop_front() {
            Some(m) => Some((m, Origin::Memory)),
            None => self.outbox.next_item(),
        }
    }
    fn is_empty(&self) -> bool {
        self.resend.is_empty() && Outbox::is_empty(self.outbox)
    }
}

impl Source for Outbox {
    type Item = (Message, Origin);
    fn next(&mut self) -> Option<(Message, Origin)> {
        self.next_item()
    }
    fn is_empty(&self) -> bool {
        Outbox::is_empty(self)
    }
}

pub struct Publisher {
    pub connector: Connector,
    pub client_id: String,
    pub encoder: Encoder,
    pub state: State,
    pub outbox: Outbox,
    pub reports: mpsc::Receiver<Report>,
    pub identity: watch::Receiver<Identity>,
    pub shutdown: watch::Receiver<bool>,
    /// Told once, after the first connection attempt has finished either way.
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// Reports taken so far: the systemd watchdog is fed only while this moves.
    pub progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `liveness.beat_interval`; `None`: no beats.
    pub beat_interval: Option<Duration>,
    /// Beats after the first of a connection fall on this grid, with the samplers' ticks
    /// ([`crate::collect::cadence::ticker`]).
    pub grid: tokio::time::Instant,
    /// With `liveness.probe`: serves the gateway's probe requests.
    pub prober: Option<Prober>,
    /// Data messages the broker acknowledged lately, sent again on every new connection.
    pub resend: Resend,
}

impl Publisher {
    fn take_report(&mut self, r: Report) {
        self.progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(m) = self.encoder.report(r, self.outbox.stats()) {
            self.outbox.push(m);
        }
    }

    fn signal_ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(());
        }
    }

    fn birth(&self, seq: u64) -> Message {
        let identity = self.identity.borrow().clone();
        self.encoder
            .status(NodeState::Online, seq, None, Some(identity))
    }

    fn goodbye(&self, seq: u64) -> Message {
        self.encoder
            .status(NodeState::Offline, seq, Some(OfflineReason::Shutdown), None)
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub async fn run(mut self) {
        let mut reconnect =
            Reconnect::new(&self.connector, leakmon_common::mqtt::AGENT_RECONNECT_MAX);
        loop {
            let seq = self.state.seq_for_attempt();
            let broker = reconnect.current();
            let (ended, inflight, connected_for) = self.connection(broker, seq).await;
            let was_connected = connected_for.is_some();
            self.signal_ready();
            match ended {
                End::Done => {
                    let lost = self.outbox.close(inflight);
                    if lost > 0 {
                        tracing::warn!(
                            lost,
                            "exiting with messages that could not be delivered (no spool_dir)"
                        );
                    }
                    return;
                }
                End::Lost(why) => {
                    self.outbox.set_offline(inflight);
                    if was_connected {
                        reconnect.accepted();
                    }
                    let delay = reconnect.ended(connected_for);
                    tracing::warn!(
                        broker = %self.connector.url(broker),
                        next = %self.connector.url(reconnect.current()),
                        error = %why,
                        retry_in_ms = delay.as_millis() as u64,
                        "MQTT connection lost; buffering"
                    );
                    if self.wait(delay).await {
                        let lost = self.outbox.close(Vec::new());
                        if lost > 0 {
                            tracing::warn!(
                                lost,
                                "exiting while disconnected: messages dropped (no spool_dir)"
                            );
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps while still taking reports; true if shutdown was asked for.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            if self.shutting_down() {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                r = self.reports.recv() => match r {
                    Some(r) => self.take_report(r),
                    None => return true,
                },
                _ = self.shutdown.changed() => {}
            }
        }
    }

    /// One connection, from CONNECT to its end. Returns how it ended, what was left in flight
    /// and how long it lasted since the broker accepted it (`None`: never accepted).
    async fn connection(
        &mut self,
        broker: usize,
        seq: u64,
    ) -> (End, Vec<(Message, Origin)>, Option<Duration>) {
        let mut accepted_at: Option<tokio::time::Instant> = None;
        let will_msg =
            self.encoder
                .status(NodeState::Offline, seq, Some(OfflineReason::Lost), None);
        let will = LastWill::new(will_msg.topic, will_msg.payload, QoS::AtLeastOnce, true);
        let mut opts = self.connector.options(broker, &self.client_id, Some(will));
        // Room beyond the window for the status messages, which it does not hold back (rumqttc
        // stops taking requests, QoS 0 ones too, once this many QoS 1 are unacknowledged: the
        // window keeps it from getting there, so a beat is never stuck behind data).
        opts.set_inflight(WINDOW as u16 + 4);
        // And in the request queue for beats, probe reports and the subscription too.
        opts.set_request_channel_capacity(WINDOW + 16);
        let (client, mut el) = AsyncClient::new(opts, WINDOW + 16);

        let mut session = Session::new();
        let mut identity_open = true;
        // Copies to send again once the broker accepts this connection.
        let mut resending: VecDeque<Message> = VecDeque::new();
        // Started at the CONNACK: no beats before the broker accepted the connection.
        let mut beat: Option<Beats> = None;
        let ended = 'conn: loop {
            while let Some(action) = session.next_action(&mut Feed {
                resend: &mut resending,
                outbox: &mut self.outbox,
            }) {
                let taken = match action {
                    Action::Birth => publish(&client, self.birth(seq), QoS::AtLeastOnce),
                    Action::Publish((m, _)) => publish(&client, m, QoS::AtLeastOnce),
                    Action::Goodbye => publish(&client, self.goodbye(seq), QoS::AtLeastOnce),
                    Action::Disconnect => client.try_disconnect().is_ok(),
                };
                if !taken {
                    if let Some(end) = session.refused() {
                        break 'conn end;
                    }
                }
            }
            let deadline = session.deadline();
            tokio::select! {
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != ConnectReturnCode::Success {
                            break End::Lost(format!("broker refused: {:?}", ack.code));
                        }
                        self.state.mark_connected();
                        self.outbox.set_online();
                        session.connected();
                        resending = self.resend.due(Instant::now());
                        if !resending.is_empty() {
                            tracing::debug!(
                                messages = resending.len(),
                                "sending again what the broker acknowledged lately (it may have lost it)"
                            );
                        }
                        accepted_at = Some(tokio::time::Instant::now());
                        tracing::info!(broker = %self.connector.url(broker), seq, "connected; birth published");
                        // The first beat right after the birth, then every interval on the
                        // grid; a stalled loop does not fire a burst of beats after.
                        beat = self.beat_interval.map(|every| {
                            let next = tokio::time::Instant::now() + Duration::from_nanos(1);
                            Beats {
                                now: true,
                                every: crate::collect::cadence::ticker(
                                    crate::collect::cadence::grid_after(self.grid, every, next),
                                    every,
                                ),
                            }
                        });
                        if let Some(p) = &mut self.prober {
                            let stale = p.drop_finished();
                            if stale > 0 {
                                tracing::debug!(stale, "probe reports from while disconnected dropped");
                            }
                            // A gateway never retains a request, so anything retained there is
                            // a stranger's: cleared before subscribing (the broker takes this
                            // connection's packets in order), so that a retained message over
                            // mqtt.max_packet_size cannot cut every connection as it is
                            // delivered on the subscription (a broker without a packet limit
                            // takes any; a locked broker's ACL drops this, harmlessly).
                            if client.try_publish(p.topic(), QoS::AtMostOnce, true, Vec::new()).is_err() {
                                tracing::warn!(topic = p.topic(), "cannot clear the probe topic: client queue full");
                            }
                            // QoS 0: a request that waited for an outage to end is stale.
                            if client.try_subscribe(p.topic(), QoS::AtMostOnce).is_err() {
                                tracing::warn!(topic = p.topic(), "cannot subscribe to probe requests: client queue full");
                            }
                        }
                        self.signal_ready();
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        // The only subscription is the probe topic's. Some brokers grant one
                        // their ACL forbids and then deliver nothing (mosquitto 2.0 does).
                        let topic = self.prober.as_ref().map(|p| p.topic()).unwrap_or_default();
                        if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                            tracing::warn!(
                                topic,
                                "the broker refused the subscription to probe requests (its ACL?): this agent will not probe for the gateway"
                            );
                        } else {
                            tracing::debug!(topic, "subscribed to probe requests");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(prober) = &mut self.prober {
                            prober.on_publish(&p.topic, &p.payload);
                        }
                    }
                    // QoS 0 publishes report id 0, which the session ignores (see there).
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => session.publish_assigned(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some((m, origin)) = session.puback(ack.pkid) {
                            self.outbox.ack(origin);
                            self.resend.acknowledged(Instant::now(), m);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        if let Some(end) = session.disconnect_sent() {
                            break end;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break session.link_down(e.to_string()),
                },
                changed = self.identity.changed(), if identity_open && session.takes_identity() => {
                    // The engine told us more (it came up, or the node joined a Swarm).
                    match changed {
                        Ok(()) => session.identity_changed(),
                        Err(_) => identity_open = false,
                    }
                },
                r = self.reports.recv(), if session.takes_reports() => match r {
                    Some(r) => self.take_report(r),
                    None => {
                        if let Some(end) = session.shutdown(Instant::now()) {
                            break end;
                        }
                    }
                },
                changed = self.shutdown.changed(), if session.takes_reports() => {
                    if changed.is_err() || self.shutting_down() {
                        // Take what the collectors already produced, then stop listening.
                        while let Ok(r) = self.reports.try_recv() {
                            self.take_report(r);
                        }
                        if let Some(end) = session.shutdown(Instant::now()) {
                            break end;
                        }
                    }
                },
                _ = next_beat(&mut beat), if session.takes_beats() => {
                    let m = self.encoder.beat();
                    if !publish(&client, m, QoS::AtMostOnce) {
                        tracing::debug!("beat skipped: the client's queue is full");
                    }
                },
                report = next_probe_report(&mut self.prober), if session.takes_beats() => {
                    let (id, target) = (report.id, report.target.clone());
                    if !publish(&client, self.encoder.probe_report(&report), QoS::AtMostOnce) {
                        tracing::warn!(id, target = %target, "probe report not sent: the client's queue is full");
                    }
                },
                _ = crate::probe::sleep_until(deadline.map(tokio::time::Instant::from_std)) => {
                    if let Some(end) = session.tick(Instant::now()) {
                        tracing::warn!("shutdown grace period over; closing with messages unsent");
                        break end;
                    }
                }
            }
        };
        let connected_for = accepted_at.map(|t| t.elapsed());
        (ended, session.into_unacked(), connected_for)
    }
}

/// Hands a message to the client; false if its request queue refused it. QoS 1 for what the
/// outbox and the session track (data, birth, goodbye); QoS 0 for beats and probe reports:
/// sent once now or never, no packet id, no PUBACK, nothing kept for a retry.
fn publish(client: &AsyncClient, msg: Message, qos: QoS) -> bool {
    client
        .try_publish(msg.topic, qos, msg.retain, msg.payload)
        .is_ok()
}

/// A connection's beats: one at once, then on the grid.
struct Beats {
    now: bool,
    every: tokio::time::Interval,
}

/// The next beat is due; never without beats. Cancel-safe: the first beat is taken only
/// when this future is polled, and it is ready at that poll.
async fn next_beat(beat: &mut Option<Beats>) {
    match beat {
        Some(b) => {
            if !std::mem::take(&mut b.now) {
                b.every.tick().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The next finished probe's report; never without a prober.
async fn next_probe_report(prober: &mut Option<Prober>) -> ProbeReport {
    match prober {
        Some(p) => p.next_report().await,
        None => std::future::pending().await,
    }
}

/// Beats that carry the agent's clock readings: the 1st, 5th, 9th, ... of a run.
const CLOCK_EVERY: u64 = 4;

/// The monotonic clock in milliseconds (`CLOCK_BOOTTIME`: it counts a suspend too, and no
/// one sets it, not NTP nor an operator), or `None` if the kernel will not tell.
pub fn mono_ms() -> Option<u64> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
    if r != 0 {
        return None;
    }
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u64::try_from(t.tv_nsec).ok()?;
    Some(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::{decode, BufferStats, Load, Memory, Swap};

    /// A host report as the collector hands it over: sampled at `ts`, not numbered yet.
    fn sample(ts: i64) -> HostReport {
        HostReport {
            header: Header::sampled_at(ts),
            hostname: "h".into(),
            uptime_s: 1,
            n_cpus: 2,
            cpu: None,
            load: Load::default(),
            mem: Memory::default(),
            swap: Swap::default(),
            disks: vec![],
            net: vec![],
            temps: vec![],
            cores: vec![],
            diskio: vec![],
            kernel: None,
            processes: None,
            files: None,
            nstat: None,
            sockets: None,
            conntrack: None,
            interrupts: Vec::new(),
            soft_interrupts: Vec::new(),
            buffer: BufferStats::default(),
            cut: 0,
        }
    }

    #[test]
    fn encoder_numbers_every_data_message_in_order() {
        let mut e = Encoder::new(Topics::new("leakmon").unwrap(), "n1".into(), 4);
        let stats = leakmon_protocol::BufferStats {
            dropped_total: 3,
            ..Default::default()
        };
        let h = e
            .report(Report::Host(Box::new(sample(10))), stats.clone())
            .expect("fits");
        assert_eq!(h.topic, "leakmon/v1/nodes/n1/host");
        let hr: HostReport = decode("n1", &h.payload).unwrap();
        assert_eq!((hr.header.run, hr.header.seq, hr.header.ts), (4, 1, 10));
        assert_eq!(hr.buffer.dropped_total, 3);
        let c = e
            .report(
                Report::Containers {
                    ts: 11,
                    result: Err("engine down".into()),
                    engine_info: None,
                },
                stats,
            )
            .expect("fits");
        let cr: ContainersReport = decode("n1", &c.payload).unwrap();
        assert_eq!(cr.header.seq, 2);
        assert_eq!(cr.engine, EngineState::Unavailable);
        assert_eq!(cr.error.as_deref(), Some("engine down"));
        assert!(!c.retain);
        let s = e.status(NodeState::Offline, 7, Some(OfflineReason::Lost), None);
        assert!(s.retain);
        assert_eq!(s.topic, "leakmon/v1/nodes/n1/status");
    }

    #[test]
    fn no_report_is_ever_larger_than_the_connection_takes() {
        let big = |n: usize| -> Vec<leakmon_protocol::Container> {
            (0..n)
                .map(|i| {
                    serde_json::from_value(serde_json::json!({
                        "id": format!("{i:064}"), "name": format!("c{i}-{}", "x".repeat(300)),
                        "image": "registry.example/some/long/image:tag", "state": "running",
                        "health": "healthy", "restart_count": 0, "oom_killed": false
                    }))
                    .expect("a container")
                })
                .collect()
        };
        // The containers report sent through an encoder limited to `max` bytes, decoded.
        // Sealed: the seal's bytes count too, and the payload still checks.
        let key = leakmon_protocol::auth::FleetKey::from_bytes([1; 32]).node_key("n1");
        let send = |max: Option<u64>, list| -> ContainersReport {
            let mut e = Encoder::new(Topics::new("leakmon").unwrap(), "n1".into(), 4)
                .with_key(Some(key.clone()));
            if let Some(max) = max {
                e = e.with_max_payload(max);
            }
            let m = e
                .report(
                    Report::Containers {
                        ts: 1,
                        result: Ok(list),
                        engine_info: None,
                    },
                    leakmon_protocol::BufferStats::default(),
                )
                .expect("cut down to fit");
            if let Some(max) = max {
                assert!(m.payload.len() as u64 <= max - 512, "{}", m.payload.len());
            }
            assert_eq!(key.check(&m.topic, &m.payload), Ok(()));
            decode("n1", &m.payload).unwrap()
        };
        // thousands of containers, a 64 KiB packet limit: sent, cut down, the cut counted
        let r = send(Some(64 * 1024), big(3000));
        assert!(r.cut as usize >= 3000 - r.containers.len(), "{}", r.cut);
        assert!(r.containers.len() > 10, "{}", r.containers.len());
        assert!(r.containers.iter().all(|c| c.name.len() <= 256));
        // 300 containers, 64 KiB: halved, the unhealthy one (listed last) kept
        let mut list = big(300);
        list[299].health = leakmon_protocol::Health::Unhealthy;
        let r = send(Some(64 * 1024), list);
        assert!(r.containers.len() < 300);
        assert_eq!(r.containers[0].health, leakmon_protocol::Health::Unhealthy);
        // the default limit: the protocol's 500, well within 1 MiB
        let r = send(None, big(3000));
        assert_eq!((r.containers.len(), r.cut), (500, 2500 + 500));
        // a limit nothing fits: dropped and counted, never queued
        let mut e =
            Encoder::new(Topics::new("leakmon").unwrap(), "n1".into(), 4).with_max_payload(600);
        let none = e.report(
            Report::Host(Box::new(sample(10))),
            leakmon_protocol::BufferStats::default(),
        );
        assert!(none.is_none());
        assert_eq!(e.oversize_dropped, 1);
    }

    #[test]
    fn a_host_report_sheds_interrupts_and_counters_before_what_matters() {
        let mut r = sample(10);
        let irq = |i: usize| leakmon_protocol::Irq {
            irq: i.to_string(),
            kind: "IR-PCI-MSI".into(),
            device: format!("{i}-edge eth0-rx-{i}"),
            cpus: vec![123_456_789; 8],
        };
        r.interrupts = (0..60).map(irq).collect();
        r.soft_interrupts = (0..10).map(irq).collect();
        let counters = (0..200)
            .map(|j| (format!("Counter{j}"), 1_234_567))
            .collect();
        r.nstat = Some(leakmon_protocol::NetCounters {
            netstat: [("TcpExt".to_owned(), counters)].into(),
            ..Default::default()
        });
        r.disks = vec![leakmon_protocol::Disk {
            path: "/".into(),
            ..Default::default()
        }];
        // the smallest packet limit the config takes
        let mut e =
            Encoder::new(Topics::new("leakmon").unwrap(), "n1".into(), 4).with_max_payload(4096);
        let m = e
            .report(Report::Host(Box::new(r)), BufferStats::default())
            .expect("cut down to fit");
        let hr: HostReport = decode("n1", &m.payload).unwrap();
        assert!(hr.interrupts.is_empty() && hr.soft_interrupts.is_empty() && hr.nstat.is_none());
        assert_eq!(hr.disks.len(), 1, "the mount is kept");
        assert_eq!(hr.cut, 60 + 10 + 200);
        assert_eq!(e.oversize_dropped, 0);
    }

    #[test]
    fn beats_count_apart_from_data_and_are_never_retained() {
        let mut e = Encoder::new(Topics::new("leakmon").unwrap(), "n1".into(), 4);
        let b1 = e.beat();
        e.report(
            Report::Host(Box::new(sample(10))),
            leakmon_protocol::BufferStats::default(),
        );
        let b2 = e.beat();
        assert_eq!(b1.topic, "leakmon/v1/nodes/n1/beat");
        assert!(!b1.retain && !b2.retain);
        let b1: Beat = decode("n1", &b1.payload).unwrap();
        let b2: Beat = decode("n1", &b2.payload).unwrap();
        assert_eq!((b1.run, b1.n, b2.n), (4, 1, 2), "data does not move n");
        let h = e
            .report(
                Report::Host(Box::new(sample(11))),
                leakmon_protocol::BufferStats::default(),
            )
            .expect("fits");
        let h: HostReport = decode("n1", &h.payload).unwrap();
        assert_eq!(h.header.seq, 2, "beats do not move seq");
        let r = e.probe_report(&ProbeReport {
            v: PROTOCOL_VERSION,
            node: "n1".into(),
            id: 9,
            target: "n2".into(),
            attempts: 3,
            answered: 0,
        });
        assert_eq!(r.topic, "leakmon/v1/nodes/n1/probe");
        assert!(!r.retain);
        let r: ProbeReport = decode("n1", &r.payload).unwrap();
        assert_eq!((r.id, r.attempts, r.answered), (9, 3, 0));
    }
}
