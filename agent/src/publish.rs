//! The MQTT shell: connects with a Last Will, publishes birth, sends the outbox in order with
//! a bounded window of unacknowledged messages, reconnects with backoff and jitter, and says
//! goodbye on shutdown.
//!
//! Each connection gets a fresh rumqttc client and event loop. rumqttc would otherwise replay
//! its own copy of unacknowledged messages and of requests still in its channel after a
//! reconnect, duplicating what the outbox resends; with a new event loop the outbox is the only
//! source of truth, and each connection can carry its own Will (whose `seq` changes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use leakmon_common::backoff::{Backoff, Jitter};
use leakmon_common::mqtt::Connector;
use leakmon_protocol::{
    encode, Channel, ContainersReport, EngineState, EventReport, Header, HostReport, Identity,
    NodeState, OfflineReason, Status, Topics, PROTOCOL_VERSION,
};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, LastWill, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::collect::host::HostSample;
use crate::events::EngineEvent;
use crate::outbox::{Origin, Outbox};
use crate::queue::Message;
use crate::state::State;

/// Messages published and not yet acknowledged, at most.
pub const WINDOW: usize = 32;
/// How long a clean shutdown waits to deliver what is queued and say goodbye.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What the collectors hand to the publisher.
#[derive(Debug)]
pub enum Report {
    Host {
        ts: i64,
        sample: Box<HostSample>,
    },
    Containers {
        ts: i64,
        result: Result<Vec<leakmon_protocol::Container>, String>,
    },
    Event(EngineEvent),
}

pub use leakmon_common::now_ms;

/// Turns reports into messages with a header; the only place `seq` is assigned.
pub struct Encoder {
    pub topics: Topics,
    pub node: String,
    pub run: u64,
    seq: u64,
}

impl Encoder {
    pub fn new(topics: Topics, node: String, run: u64) -> Self {
        Encoder {
            topics,
            node,
            run,
            seq: 0,
        }
    }

    fn header(&mut self, ts: i64) -> Header {
        self.seq += 1;
        Header {
            v: PROTOCOL_VERSION,
            node: self.node.clone(),
            run: self.run,
            seq: self.seq,
            ts,
        }
    }

    fn message(&self, channel: Channel, payload: Vec<u8>, retain: bool) -> Message {
        Message {
            topic: self.topics.node(&self.node, channel),
            payload,
            retain,
        }
    }

    pub fn report(&mut self, r: Report, buffer: leakmon_protocol::BufferStats) -> Message {
        match r {
            Report::Host { ts, sample } => {
                let s = *sample;
                let msg = HostReport {
                    header: self.header(ts),
                    hostname: s.hostname,
                    uptime_s: s.uptime_s,
                    n_cpus: s.n_cpus,
                    cpu: s.cpu,
                    load: s.load,
                    mem: s.mem,
                    swap: s.swap,
                    disks: s.disks,
                    net: s.net,
                    temps: s.temps,
                    buffer,
                };
                self.message(Channel::Host, encode(&msg), false)
            }
            Report::Containers { ts, result } => {
                let (engine, error, containers) = match result {
                    Ok(c) => (EngineState::Ok, None, c),
                    Err(e) => (EngineState::Unavailable, Some(e), Vec::new()),
                };
                let msg = ContainersReport {
                    header: self.header(ts),
                    engine,
                    error,
                    containers,
                };
                self.message(Channel::Containers, encode(&msg), false)
            }
            Report::Event(e) => {
                let msg = EventReport {
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
                self.message(Channel::Events, encode(&msg), false)
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

struct InFlight {
    msg: Message,
    origin: Origin,
    pkid: Option<u16>,
}

enum Ended {
    /// The link failed; reconnect.
    Lost(String),
    /// Shutdown was asked for and has been carried out on this connection.
    Done,
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
}

impl Publisher {
    fn take_report(&mut self, r: Report) {
        self.progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let m = self.encoder.report(r, self.outbox.stats());
        self.outbox.push(m, Instant::now());
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

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub async fn run(mut self) {
        let s = self.connector.settings();
        let mut backoff = Backoff::new(s.reconnect_min.0, s.reconnect_max.0);
        let mut jitter = Jitter::from_entropy();
        loop {
            let seq = self.state.seq_for_attempt();
            let (ended, inflight, was_connected) = self.connection(seq).await;
            let now = Instant::now();
            self.signal_ready();
            match ended {
                Ended::Done => {
                    let lost = self.outbox.close(inflight, now);
                    if lost > 0 {
                        tracing::warn!(
                            lost,
                            "exiting with messages that could not be delivered (no spool_dir)"
                        );
                    }
                    return;
                }
                Ended::Lost(why) => {
                    self.outbox.set_offline(inflight, now);
                    if was_connected {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay(jitter.next_u64());
                    tracing::warn!(
                        broker = %self.connector.settings().url,
                        error = %why,
                        retry_in_ms = delay.as_millis() as u64,
                        "MQTT connection lost; buffering"
                    );
                    if self.wait(delay).await {
                        let lost = self.outbox.close(Vec::new(), Instant::now());
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
    /// and whether the broker accepted it.
    async fn connection(&mut self, seq: u64) -> (Ended, Vec<(Message, Origin)>, bool) {
        let will_msg =
            self.encoder
                .status(NodeState::Offline, seq, Some(OfflineReason::Lost), None);
        let will = LastWill::new(will_msg.topic, will_msg.payload, QoS::AtLeastOnce, true);
        let mut opts = self.connector.options(&self.client_id, Some(will));
        opts.set_inflight(WINDOW as u16 + 4);
        opts.set_request_channel_capacity(WINDOW + 8);
        let (client, mut el) = AsyncClient::new(opts, WINDOW + 8);

        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut connected = false;
        // Shutdown phases: drain the outbox, then the goodbye status, then DISCONNECT.
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut goodbye_sent = false;
        let mut disconnecting = false;
        let mut identity_open = true;

        let ended = loop {
            if connected && !disconnecting {
                if drain_until.is_some() && !goodbye_sent && self.outbox.is_empty() {
                    // Everything queued has been handed to the broker; the goodbye goes last.
                    let bye = self.encoder.status(
                        NodeState::Offline,
                        seq,
                        Some(OfflineReason::Shutdown),
                        None,
                    );
                    goodbye_sent = send(&client, &mut inflight, bye, Origin::Transient);
                }
                if goodbye_sent && inflight.is_empty() {
                    disconnecting = true;
                    if client.try_disconnect().is_err() {
                        break Ended::Done;
                    }
                }
                while !goodbye_sent && inflight.len() < WINDOW {
                    let Some((m, origin)) = self.outbox.next() else {
                        break;
                    };
                    if !send(&client, &mut inflight, m, origin) {
                        break;
                    }
                }
            }
            let deadline = drain_until
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400));
            tokio::select! {
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != ConnectReturnCode::Success {
                            break Ended::Lost(format!("broker refused: {:?}", ack.code));
                        }
                        connected = true;
                        self.state.mark_connected();
                        self.outbox.set_online();
                        send(&client, &mut inflight, self.birth(seq), Origin::Transient);
                        tracing::info!(broker = %self.connector.settings().url, seq, "connected; birth published");
                        self.signal_ready();
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(f) = inflight.iter_mut().find(|f| f.pkid.is_none()) {
                            f.pkid = Some(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(i) = inflight.iter().position(|f| f.pkid == Some(ack.pkid)) {
                            if let Some(f) = inflight.remove(i) {
                                self.outbox.ack(f.origin);
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        if disconnecting {
                            break Ended::Done;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if disconnecting {
                            break Ended::Done;
                        }
                        break Ended::Lost(e.to_string());
                    }
                },
                changed = self.identity.changed(), if connected && identity_open && drain_until.is_none() => {
                    if changed.is_err() {
                        identity_open = false;
                    } else {
                        // The engine told us more (it came up, or the node joined a Swarm):
                        // the retained birth is replaced, same seq.
                        send(&client, &mut inflight, self.birth(seq), Origin::Transient);
                    }
                },
                r = self.reports.recv(), if drain_until.is_none() => match r {
                    Some(r) => self.take_report(r),
                    None => {
                        let _ = self.shutdown_requested(connected, &mut drain_until);
                        if !connected { break Ended::Done; }
                    }
                },
                changed = self.shutdown.changed(), if drain_until.is_none() => {
                    if changed.is_err() || self.shutting_down() {
                        // Take what the collectors already produced, then stop listening.
                        while let Ok(r) = self.reports.try_recv() {
                            self.take_report(r);
                        }
                        if !self.shutdown_requested(connected, &mut drain_until) {
                            break Ended::Done;
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline), if drain_until.is_some() => {
                    tracing::warn!("shutdown grace period over; closing with messages unsent");
                    break Ended::Done;
                }
            }
        };
        let left = inflight
            .into_iter()
            .filter(|f| f.origin != Origin::Transient)
            .map(|f| (f.msg, f.origin))
            .collect();
        (ended, left, connected)
    }

    /// Starts the shutdown sequence; false if there is no connection to say goodbye on.
    fn shutdown_requested(
        &mut self,
        connected: bool,
        drain_until: &mut Option<tokio::time::Instant>,
    ) -> bool {
        if drain_until.is_none() {
            *drain_until = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
        }
        connected
    }
}

/// Hands a message to the client and tracks it as in flight. The message is tracked even if
/// the client's channel refused it (impossible while the window is below the channel's
/// capacity): it then comes back to the outbox when the connection ends, rather than being lost.
fn send(
    client: &AsyncClient,
    inflight: &mut VecDeque<InFlight>,
    msg: Message,
    origin: Origin,
) -> bool {
    let ok = client
        .try_publish(
            msg.topic.clone(),
            QoS::AtLeastOnce,
            msg.retain,
            msg.payload.clone(),
        )
        .is_ok();
    inflight.push_back(InFlight {
        msg,
        origin,
        pkid: None,
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::{decode, Load, Memory, Swap};

    fn sample() -> HostSample {
        HostSample {
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
        }
    }

    #[test]
    fn encoder_numbers_every_data_message_in_order() {
        let mut e = Encoder::new(Topics::new("leakmon").unwrap(), "n1".into(), 4);
        let stats = leakmon_protocol::BufferStats {
            dropped_total: 3,
            ..Default::default()
        };
        let h = e.report(
            Report::Host {
                ts: 10,
                sample: Box::new(sample()),
            },
            stats.clone(),
        );
        assert_eq!(h.topic, "leakmon/v1/nodes/n1/host");
        let hr: HostReport = decode("n1", &h.payload).unwrap();
        assert_eq!((hr.header.run, hr.header.seq, hr.header.ts), (4, 1, 10));
        assert_eq!(hr.buffer.dropped_total, 3);
        let c = e.report(
            Report::Containers {
                ts: 11,
                result: Err("engine down".into()),
            },
            stats,
        );
        let cr: ContainersReport = decode("n1", &c.payload).unwrap();
        assert_eq!(cr.header.seq, 2);
        assert_eq!(cr.engine, EngineState::Unavailable);
        assert_eq!(cr.error.as_deref(), Some("engine down"));
        assert!(!c.retain);
        let s = e.status(NodeState::Offline, 7, Some(OfflineReason::Lost), None);
        assert!(s.retain);
        assert_eq!(s.topic, "leakmon/v1/nodes/n1/status");
    }
}
