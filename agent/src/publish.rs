//! The MQTT shell: connects with a Last Will, then moves bytes between rumqttc and the pure
//! [`Session`], which decides what is published when (birth first, the outbox through a
//! bounded window, goodbye and DISCONNECT on shutdown); reconnects with backoff and jitter.
//!
//! Each connection gets a fresh rumqttc client and event loop. rumqttc would otherwise replay
//! its own copy of unacknowledged messages and of requests still in its channel after a
//! reconnect, duplicating what the outbox resends; with a new event loop the outbox is the only
//! source of truth, and each connection can carry its own Will (whose `seq` changes).

use std::time::{Duration, Instant};

use leakmon_common::backoff::{Backoff, Jitter};
use leakmon_common::mqtt::Connector;
use leakmon_protocol::{
    encode, Channel, ContainersReport, EngineState, EventReport, Header, HostReport, Identity,
    NodeState, OfflineReason, Status, Topics, PROTOCOL_VERSION,
};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, LastWill, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::events::EngineEvent;
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
            Report::Host(mut msg) => {
                msg.header = self.header(msg.header.ts);
                msg.buffer = buffer;
                self.message(Channel::Host, encode(&*msg), false)
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

/// The agent's outbox: the shared store-and-forward buffer (memory, then the disk spool).
pub type Outbox = Buffer<Message>;

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

    fn goodbye(&self, seq: u64) -> Message {
        self.encoder
            .status(NodeState::Offline, seq, Some(OfflineReason::Shutdown), None)
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
                End::Done => {
                    let lost = self.outbox.close(inflight, now);
                    if lost > 0 {
                        tracing::warn!(
                            lost,
                            "exiting with messages that could not be delivered (no spool_dir)"
                        );
                    }
                    return;
                }
                End::Lost(why) => {
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
    async fn connection(&mut self, seq: u64) -> (End, Vec<(Message, Origin)>, bool) {
        let will_msg =
            self.encoder
                .status(NodeState::Offline, seq, Some(OfflineReason::Lost), None);
        let will = LastWill::new(will_msg.topic, will_msg.payload, QoS::AtLeastOnce, true);
        let mut opts = self.connector.options(&self.client_id, Some(will));
        // Room beyond the window for the status messages, which it does not hold back.
        opts.set_inflight(WINDOW as u16 + 4);
        opts.set_request_channel_capacity(WINDOW + 8);
        let (client, mut el) = AsyncClient::new(opts, WINDOW + 8);

        let mut session = Session::new();
        let mut identity_open = true;
        let ended = 'conn: loop {
            while let Some(action) = session.next_action(&mut self.outbox) {
                let taken = match action {
                    Action::Birth => publish(&client, self.birth(seq)),
                    Action::Publish((m, _)) => publish(&client, m),
                    Action::Goodbye => publish(&client, self.goodbye(seq)),
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
                        tracing::info!(broker = %self.connector.settings().url, seq, "connected; birth published");
                        self.signal_ready();
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => session.publish_assigned(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some((_, origin)) = session.puback(ack.pkid) {
                            self.outbox.ack(origin);
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
                _ = sleep_until(deadline) => {
                    if let Some(end) = session.tick(Instant::now()) {
                        tracing::warn!("shutdown grace period over; closing with messages unsent");
                        break end;
                    }
                }
            }
        };
        let connected = session.was_connected();
        (ended, session.into_unacked(), connected)
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Hands a message to the client (QoS 1); false if its request queue refused it.
fn publish(client: &AsyncClient, msg: Message) -> bool {
    client
        .try_publish(msg.topic, QoS::AtLeastOnce, msg.retain, msg.payload)
        .is_ok()
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
            buffer: BufferStats::default(),
        }
    }

    #[test]
    fn encoder_numbers_every_data_message_in_order() {
        let mut e = Encoder::new(Topics::new("leakmon").unwrap(), "n1".into(), 4);
        let stats = leakmon_protocol::BufferStats {
            dropped_total: 3,
            ..Default::default()
        };
        let h = e.report(Report::Host(Box::new(sample(10))), stats.clone());
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
