//! The bus: the gateway's one MQTT session and everything the tasks send through.
//!
//! [`Connection`] owns the MQTT connection: it connects with the client id and session kind
//! the control loop chose ([`Session`]), subscribes to what its [`Handler`] asks for, hands
//! every publish to that handler, publishes what the tasks queue, and reconnects with backoff.
//! [`Bus`] is the cheap handle the tasks hold: publish over MQTT, feed the alert engine, hand
//! lines to the database writer, and read the role and the connection's state.
//!
//! Ingest (the handler), control and alerts depend on this module and on pure modules, never on
//! each other: this is what keeps the gateway's module graph a DAG.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leakmon_common::mqtt::{Connector, Reconnect};
use leakmon_protocol::{ContainersReport, GatewayEvent, HostReport};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

use crate::acks::{AckQueue, Delivery, Durable};
use crate::outbox::Outbox;

pub use leakmon_common::buffer::Message;

/// Largest MQTT packet the gateway reads (or `mqtt.max_packet_size`, if larger). Brokers
/// should be set to refuse larger ones (mosquitto: `max_packet_size`).
pub const MAX_INCOMING_PACKET: usize = 16 << 20;

/// How often the handler's [`Handler::on_tick`] runs: silence is noticed within a quarter
/// second of `liveness.offline_after`.
const TICK: Duration = Duration::from_millis(250);

/// How the connection is made and whether this gateway writes: the control loop sets it from
/// the gateway's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Write points and notify (only the active gateway does).
    pub active: bool,
    pub client_id: String,
    /// A persistent session: the broker keeps messages for it while it is away.
    pub persistent: bool,
}

impl Session {
    /// Whether `other` is made on the same MQTT connection (the same client id and session
    /// kind): a change of role alone then needs no new connection.
    pub fn same_connection(&self, other: &Session) -> bool {
        self.client_id == other.client_id && self.persistent == other.persistent
    }
}

/// What the alert engine is fed.
#[derive(Debug)]
pub enum AlertInput {
    Host(String, Box<HostReport>),
    Containers(String, Box<ContainersReport>),
    /// An agent went offline (`false`, with why) or came back.
    Agent(String, bool, &'static str),
    Event(Box<GatewayEvent>),
    /// A node was forgotten: its open alerts resolve, its state goes.
    Forget(String),
    /// A node's clock is off by this many ms (`Some`: `clock_skew` fires) or right again.
    Clock(String, Option<i64>),
}

/// What the tasks send through, and what they read of the session. Clone it freely.
#[derive(Clone)]
pub struct Bus {
    mqtt: Arc<Outbox>,
    lines: Option<mpsc::Sender<Delivery>>,
    alerts: Option<mpsc::Sender<AlertInput>>,
    session: watch::Receiver<Session>,
    connected: watch::Receiver<bool>,
}

impl Bus {
    /// Queues a QoS 1 publish for the connection; `false` when the queue is full (the caller
    /// says what was lost).
    pub fn publish(&self, m: Message) -> bool {
        self.mqtt.push(m, false)
    }

    /// Queues a decision's event: never refused; when the queue is full the oldest other
    /// message makes room (counted).
    pub fn publish_decision(&self, m: Message) {
        self.mqtt.push(m, true);
    }

    /// Feeds the alert engine, when alerts are on; `false` when it is busy.
    pub fn alert(&self, i: AlertInput) -> bool {
        self.alerts.as_ref().is_none_or(|a| a.try_send(i).is_ok())
    }

    pub fn has_database(&self) -> bool {
        self.lines.is_some()
    }

    /// Hands line protocol to the database writer, waiting while it is busy (backpressure
    /// on the agents' data); `false` when the writer has stopped.
    /// `seq`: the number of the message the lines came from ([`crate::acks`]; 0: none).
    pub async fn write(&self, lines: String, seq: u64) -> bool {
        match &self.lines {
            Some(tx) => tx.send((lines, seq)).await.is_ok(),
            None => true,
        }
    }

    /// Hands line protocol to the database writer without waiting; `false` when it is busy.
    pub fn try_write(&self, lines: String) -> bool {
        self.lines
            .as_ref()
            .is_none_or(|tx| tx.try_send((lines, 0)).is_ok())
    }

    /// Whether this gateway is active (writes and notifies) now.
    pub fn active(&self) -> bool {
        self.session.borrow().active
    }

    /// Whether the broker connection is up.
    pub fn connected(&self) -> bool {
        *self.connected.borrow()
    }
}

/// What the connection hands incoming traffic to (ingest).
pub trait Handler {
    /// The topic filters to subscribe to on every connection.
    fn subscriptions(&self) -> Vec<String>;
    /// A new connection is up (its subscriptions are on their way).
    fn on_connected(&mut self);
    /// One publish; `active` is the role the connection was made in (what it received is
    /// written by it, also after the role moved on: nobody else gets those messages).
    /// `seq` numbers the message for [`crate::acks`] (0: not tracked); the answer says whether
    /// it gave the database writer lines (then it is acknowledged once they are durable).
    fn on_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        active: bool,
        seq: u64,
    ) -> impl Future<Output = bool>;
    /// Every [`TICK`], connected or not.
    fn on_tick(&mut self, active: bool) -> impl Future<Output = ()>;
}

/// The connection task.
pub struct Connection {
    connector: Connector,
    session: watch::Receiver<Session>,
    outgoing: Arc<Outbox>,
    connected: watch::Sender<bool>,
    /// Moves every tick: the systemd watchdog is fed only while it does.
    progress: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
    durable: Option<Durable>,
}

/// The bus: the handle for the tasks, the connection task, and the sender of the session the
/// control loop sets.
pub struct Wiring {
    pub bus: Bus,
    pub connection: Connection,
    pub session: watch::Sender<Session>,
}

/// Everything the bus is made of.
pub struct Parts {
    pub connector: Connector,
    /// The session to start in.
    pub session: Session,
    /// The database writer's input, when there is a database.
    pub lines: Option<mpsc::Sender<Delivery>>,
    /// With a spool: acknowledge messages once their lines are durable ([`crate::acks`]).
    pub durable: Option<Durable>,
    /// The alert engine's input, when alerts are on.
    pub alerts: Option<mpsc::Sender<AlertInput>>,
    pub progress: Arc<AtomicU64>,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where decision events wait for their PUBACK across restarts (`state_dir`).
    pub state_dir: Option<std::path::PathBuf>,
}

/// Queued publishes waiting for the connection, at most (a broker outage of minutes).
const OUTGOING: usize = 10_000;

/// Options for a connection that reads agents' messages. It reads packets well beyond the
/// payload limit, so an oversized payload is counted and dropped; a packet rumqttc refused
/// would break the connection, and the broker would redeliver it to a persistent session
/// forever.
pub fn reader_options(connector: &Connector, broker: usize, client_id: &str) -> MqttOptions {
    let mut opts = connector.options(broker, client_id, None);
    let out = usize::try_from(connector.settings().max_packet_size.0).unwrap_or(usize::MAX);
    opts.set_max_packet_size(out.max(MAX_INCOMING_PACKET), out);
    opts
}

/// A packet over this connection's limit cut it: clears it from broker `broker` (its retained
/// messages on `filters` with a clean session, or the queue of the persistent session
/// `client_id`), so the next connection is not cut the same way ([`crate::scrub`]).
pub async fn scrub_broker(
    connector: &Connector,
    broker: usize,
    client_id: &str,
    clean: bool,
    filters: &[String],
) {
    let out = usize::try_from(connector.settings().max_packet_size.0).unwrap_or(usize::MAX);
    let limit = out.max(MAX_INCOMING_PACKET);
    match crate::scrub::scrub(connector, broker, client_id, clean, filters, limit).await {
        Ok(s) => tracing::warn!(
            broker = %connector.url(broker),
            cleared = ?s.cleared,
            dropped = s.dropped,
            limit,
            "a message over the incoming packet limit cut the connection: retained ones over it \
             cleared, queued ones dropped"
        ),
        Err(e) => tracing::warn!(broker = %connector.url(broker), error = %e,
            "could not clear a message over the incoming packet limit from the broker"),
    }
}

/// The client's non-blocking QoS 1 publish; whether it took the message.
fn publish(client: &AsyncClient, m: &Message) -> bool {
    client
        .try_publish(
            m.topic.clone(),
            QoS::AtLeastOnce,
            m.retain,
            m.payload.clone(),
        )
        .is_ok()
}

pub fn wire(p: Parts) -> Wiring {
    let max_packet =
        usize::try_from(p.connector.settings().max_packet_size.0).unwrap_or(usize::MAX);
    let mqtt = Arc::new(Outbox::new(
        OUTGOING,
        max_packet,
        p.metrics,
        p.state_dir.as_deref(),
    ));
    let outgoing = mqtt.clone();
    let (session_tx, session) = watch::channel(p.session);
    let (connected_tx, connected) = watch::channel(false);
    Wiring {
        bus: Bus {
            mqtt,
            lines: p.lines,
            alerts: p.alerts,
            session: session.clone(),
            connected,
        },
        connection: Connection {
            connector: p.connector,
            session,
            outgoing,
            connected: connected_tx,
            progress: p.progress,
            shutdown: p.shutdown,
            durable: p.durable,
        },
        session: session_tx,
    }
}

enum Ended {
    Shutdown,
    /// The role changed: reconnect at once with the new client id.
    Switch,
    Lost(String),
}

/// What acknowledging `p` takes: its QoS and packet id (not its payload).
fn ack_of(p: &rumqttc::Publish) -> rumqttc::Publish {
    let mut a = rumqttc::Publish::new("", p.qos, Vec::new());
    a.pkid = p.pkid;
    a
}

/// Resolves when the writer's durable mark moved (never without a writer).
async fn durable_moved(d: &mut Option<Durable>) {
    let alive = match d {
        Some(d) => d.below.changed().await.is_ok(),
        None => false,
    };
    if !alive {
        std::future::pending::<()>().await;
    }
}

impl Connection {
    /// Acknowledges what is durable now, in order, and tells the writer how many wait.
    fn release(&self, client: &AsyncClient, acks: &mut AckQueue<rumqttc::Publish>) {
        let Some(d) = &self.durable else { return };
        let below = *d.below.borrow();
        acks.release(below, |p| client.try_ack(p).is_ok());
        let n = acks.pressure();
        d.pressure.send_if_modified(|v| {
            let changed = *v != n;
            *v = n;
            changed
        });
    }

    /// Sends DISCONNECT (and whatever is queued before it), waiting at most a second; messages
    /// still arriving meanwhile are handled (they are acknowledged already).
    async fn disconnect<H: Handler>(
        h: &mut H,
        client: &AsyncClient,
        el: &mut rumqttc::EventLoop,
        active: bool,
    ) {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // (not acknowledged: it comes again on the next connection)
                        h.on_publish(&p.topic, &p.payload, active, 0).await;
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    pub async fn run<H: Handler>(mut self, mut h: H) {
        let mut reconnect =
            Reconnect::new(&self.connector, leakmon_common::mqtt::GATEWAY_RECONNECT_MAX);
        let mut tick = tokio::time::interval(TICK);
        let mut acks: AckQueue<rumqttc::Publish> = AckQueue::default();
        loop {
            let broker = reconnect.current();
            let mut session = self.session.borrow_and_update().clone();
            // The active gateway uses a persistent session: while it is away (a restart, a
            // hand-over to another gateway) the broker keeps its QoS 1 messages.
            let mut opts = reader_options(&self.connector, broker, &session.client_id);
            opts.set_clean_session(!session.persistent);
            opts.set_inflight(100);
            // With a spool, the active gateway's persistent session acknowledges a message
            // only once its lines are durable (crate::acks).
            let manual = self.durable.is_some() && session.persistent;
            opts.set_manual_acks(manual);
            let (client, mut el) = AsyncClient::new(opts, 64);
            // When the broker accepted this connection; `None` while it has not.
            let mut accepted_at: Option<tokio::time::Instant> = None;
            let ended = loop {
                tokio::select! {
                    ev = el.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            reconnect.accepted();
                            accepted_at = Some(tokio::time::Instant::now());
                            self.connected.send_replace(true);
                            h.on_connected();
                            for t in h.subscriptions() {
                                if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                                    tracing::warn!(topic = %t, error = %e, "subscribe failed");
                                }
                            }
                            tracing::info!(broker = %self.connector.url(broker),
                                client_id = %session.client_id, active = session.active,
                                "connected; subscribed to agents");
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let seq = if manual { acks.next_seq() } else { 0 };
                            let lines = h.on_publish(&p.topic, &p.payload, session.active, seq).await;
                            if manual {
                                acks.handled(seq, lines, ack_of(&p));
                                self.release(&client, &mut acks);
                            }
                        }
                        Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                            self.outgoing.written(pkid);
                        }
                        Ok(Event::Incoming(Packet::PubAck(a))) => self.outgoing.acked(a.pkid),
                        Ok(_) => {}
                        Err(e) => break Ended::Lost(e.to_string()),
                    },
                    _ = durable_moved(&mut self.durable), if manual => {
                        self.release(&client, &mut acks);
                    }
                    _ = self.outgoing.notify.notified(), if accepted_at.is_some() => {
                        self.outgoing.drain(|m| publish(&client, m));
                    }
                    changed = self.session.changed() => {
                        let now = self.session.borrow().clone();
                        if changed.is_err() || !session.same_connection(&now) {
                            break Ended::Switch;
                        }
                        // the same session (a shared group's): only the role changed
                        session.active = now.active;
                    }
                    _ = tick.tick() => {
                        if accepted_at.is_some() {
                            // what the client could not take before
                            self.outgoing.drain(|m| publish(&client, m));
                            if manual {
                                self.release(&client, &mut acks);
                            }
                        }
                        self.progress.fetch_add(1, Ordering::Relaxed);
                        h.on_tick(session.active).await;
                    }
                    _ = self.shutdown.changed() => break Ended::Shutdown,
                }
            };
            self.connected.send_replace(false);
            // this connection's client is gone with what it had not had acknowledged
            self.outgoing.connection_lost();
            acks.connection_lost();
            if let Some(d) = &self.durable {
                d.pressure.send_replace(0);
            }
            match ended {
                Ended::Shutdown => {
                    Self::disconnect(&mut h, &client, &mut el, session.active).await;
                    return;
                }
                Ended::Switch => {
                    tracing::info!(
                        active = self.session.borrow().active,
                        "role changed: reconnecting"
                    );
                    Self::disconnect(&mut h, &client, &mut el, session.active).await;
                }
                Ended::Lost(e) => {
                    let d = reconnect.ended(accepted_at.map(|t| t.elapsed()));
                    tracing::warn!(broker = %self.connector.url(broker),
                        next = %self.connector.url(reconnect.current()), error = %e,
                        retry_in_ms = d.as_millis() as u64, "MQTT connection lost");
                    if crate::scrub::oversized(&e) {
                        let filters = h.subscriptions();
                        let own = format!("{}-scrub", session.client_id);
                        scrub_broker(&self.connector, broker, &own, true, &filters).await;
                        if session.persistent {
                            scrub_broker(&self.connector, broker, &session.client_id, false, &[])
                                .await;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.shutdown.changed() => return,
                    }
                }
            }
        }
    }
}
