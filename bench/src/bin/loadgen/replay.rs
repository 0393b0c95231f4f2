//! `loadgen replay`: the traffic of `loadgen fleet` (see `fleet.rs`) at a fraction of its CPU.
//!
//! `fleet` runs one rumqttc client and tokio task per simulated agent and builds and encodes
//! every report from scratch: at a few thousand agents the load generator takes a large share
//! of the machine it is meant to measure. `replay` sends the same messages, so the broker and
//! the gateway cannot tell the two apart, but prepares almost all of the work once:
//!
//! - Each agent's host report and containers report (the same structs `fleet` builds) are
//!   encoded once, when the agent first connects, into a JSON template. Only the header's
//!   `seq` and `ts` change from one send to the next: they are written in place into
//!   fixed-width fields padded with spaces (`"seq":17        ,` is valid JSON). The counters
//!   inside the reports (CPU, network, ...) stay as they were when the template was made.
//! - Every payload is then sealed with the node's key (a keyed BLAKE3 MAC, the key derived once per node), as
//!   `fleet` and a real agent seal it, and framed as MQTT 3.1.1 by hand.
//! - One OS thread (two above 4,000 agents; not a task per agent) owns the connections and
//!   walks a time-ordered schedule (beats, reports, pings), sleeping until the next item is
//!   due. The sockets are non-blocking: what the kernel does not take at once is kept and
//!   written first the next time; what the broker sends back (CONNACK, PUBACKs, PINGRESPs) is
//!   read and thrown away every few seconds, so that the socket never fills up.
//!
//! Per agent, as `fleet`: one connection (client id = node name, clean session, keep alive
//! 5 s, a retained QoS 1 Will saying the node is lost), a retained QoS 1 birth once the broker
//! has accepted the connection, a QoS 0 beat every BEAT_MS, and every INTERVAL_MS (each node at
//! its own phase of the interval) a host report then a containers report, QoS 1. At the end
//! (SECONDS elapsed, or SIGTERM) a retained "shutdown" status, then DISCONNECT. A connection
//! that breaks is counted as an error and opened again (Will and birth again) after 500 ms;
//! beats and reports that fall due while an agent is disconnected are not sent and do not
//! advance its `n` or `seq` (the gateway sees no gap, only silence). With BEAT_MS = 0 (or more
//! than half the keep alive) the connection is kept alive with PINGREQ every 2.5 s instead.
//! REPORTS = 0: no reports at all, only births, beats, Wills and goodbyes.
//!
//! The templates take about 23 kB an agent with the default 20 containers (230 MB at 10,000
//! agents), about a third of what `fleet`'s runtime and clients take.
//!
//! Prints the line of `fleet`: `FLEET agents=N connected=N reports=N statuses=N beats=N late=N
//! publish_errors=N`, where reports, statuses and beats count the messages written completely
//! to the socket, and `late` the reports sent more than one interval after they were due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leakmon_protocol::auth::NodeKey;
use leakmon_protocol::{encode, Header, NodeState, OfflineReason};

use super::fleet::{containers_report, host_report, status, Plan};
use super::now_ms;

/// The keep alive of every connection (as `fleet` sets it).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a broken connection waits before it is opened again (as `fleet`).
const RECONNECT_AFTER: Duration = Duration::from_millis(500);
/// How long to wait for a CONNACK before the connection counts as broken.
const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TCP connect may block its thread.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many agents a thread takes, and at most how many threads there are. One thread is the
/// cheapest (2,000 agents: a third less CPU than two, which preempt each other and the
/// broker on the benchmark's 2 cores); a second one takes over half of a larger fleet, so
/// that one core's worth of work does not make its reports late.
const AGENTS_PER_THREAD: usize = 4000;
const MAX_THREADS: usize = 2;
/// Items due this close to now are done now, rather than sleeping for them: it bounds a
/// thread's wake-ups to about one a millisecond, whatever the size of the fleet.
const SLACK: Duration = Duration::from_millis(1);
/// How often what the broker sent on a connection is read (and thrown away): its PUBACKs
/// and PINGRESPs are 4 and 2 bytes, thousands fit in a socket's receive buffer.
const DRAIN_EVERY: Duration = Duration::from_secs(5);
/// How soon a connection whose socket was full is tried again.
const FLUSH_RETRY: Duration = Duration::from_millis(10);
/// A connection with more than this waiting for its socket drops new messages (counted as
/// errors) until the broker catches up.
const MAX_PENDING: usize = 4 << 20;
/// How long the goodbyes may take at the end.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);

/// The width of the `seq` field of a template (up to 9,999,999,999).
const SEQ_WIDTH: usize = 10;
/// The width of the `ts` field of a template (milliseconds: 13 digits until the year 2286).
const TS_WIDTH: usize = 13;
/// The `seq` a template is encoded with, to find where its field is: as wide as the field.
const SEQ_SENTINEL: u64 = 9_999_999_999;
/// The `ts` a template is encoded with, to find where its field is: as wide as the field.
const TS_SENTINEL: i64 = 9_999_999_999_999;

/// Set by SIGTERM: every thread says goodbye and stops.
static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    // Only an atomic store: nothing else is safe in a signal handler.
    TERM.store(true, Ordering::Relaxed);
}

/// What one thread counted, added up at the end.
#[derive(Default, Clone, Copy)]
struct Counts {
    connected: u64,
    reports: u64,
    statuses: u64,
    beats: u64,
    late: u64,
    errors: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.connected += o.connected;
        self.reports += o.reports;
        self.statuses += o.statuses;
        self.beats += o.beats;
        self.late += o.late;
        self.errors += o.errors;
    }

    /// A message of kind `what` was written completely to its socket.
    fn sent(&mut self, what: Sent) {
        match what {
            Sent::Report => self.reports += 1,
            Sent::Status => self.statuses += 1,
            Sent::Beat => self.beats += 1,
            Sent::Control => {}
        }
    }
}

/// What a message written to a socket was, for the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Report,
    Status,
    Beat,
    /// CONNECT, PINGREQ, DISCONNECT: not counted.
    Control,
}

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1 frames, written by hand.

/// Appends the "remaining length" of a fixed header: 7 bits a byte, low bits first, the top
/// bit set on every byte but the last (1 to 4 bytes).
fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends a length-prefixed string or binary field (at most 65,535 bytes: topics, client ids
/// and Will payloads are far shorter).
fn field(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// CONNECT: clean session, `keep_alive` seconds, and a retained QoS 1 Will.
fn connect_frame(
    client_id: &str,
    keep_alive: u16,
    will_topic: &str,
    will_payload: &[u8],
) -> Vec<u8> {
    // Protocol name (6), level (1), flags (1), keep alive (2), then the three fields.
    let len = 10 + 2 + client_id.len() + 2 + will_topic.len() + 2 + will_payload.len();
    let mut out = Vec::with_capacity(len + 5);
    out.push(0x10);
    remaining_length(len, &mut out);
    field(b"MQTT", &mut out);
    out.push(4);
    // Will retain (0x20), Will QoS 1 (0x08), Will flag (0x04), clean session (0x02).
    out.push(0x20 | 0x08 | 0x04 | 0x02);
    out.extend_from_slice(&keep_alive.to_be_bytes());
    field(client_id.as_bytes(), &mut out);
    field(will_topic.as_bytes(), &mut out);
    field(will_payload, &mut out);
    out
}

/// The header of a PUBLISH of `payload_len` bytes on `topic` (the payload follows it): QoS 1
/// with packet id `pid` when there is one, else QoS 0.
fn publish_header(
    topic: &str,
    pid: Option<u16>,
    retain: bool,
    payload_len: usize,
    out: &mut Vec<u8>,
) {
    let qos = if pid.is_some() { 0x02 } else { 0 };
    out.push(0x30 | qos | u8::from(retain));
    let id_len = if pid.is_some() { 2 } else { 0 };
    remaining_length(2 + topic.len() + id_len + payload_len, out);
    field(topic.as_bytes(), out);
    if let Some(pid) = pid {
        out.extend_from_slice(&pid.to_be_bytes());
    }
}

const PINGREQ: [u8; 2] = [0xC0, 0];
const DISCONNECT: [u8; 2] = [0xE0, 0];

// ---------------------------------------------------------------------------------------------
// Report templates.

/// A report encoded once, whose header `seq` and `ts` are written in place for each send.
struct Template {
    json: Vec<u8>,
    /// Where the digits of `seq` start.
    seq_at: usize,
    /// Where the digits of `ts` start.
    ts_at: usize,
}

impl Template {
    /// The template of a report encoded with `seq` = [`SEQ_SENTINEL`] and `ts` =
    /// [`TS_SENTINEL`]; `None` if either is not found exactly once.
    fn new(json: Vec<u8>) -> Option<Template> {
        let seq_key = format!("\"seq\":{SEQ_SENTINEL}");
        let ts_key = format!("\"ts\":{TS_SENTINEL}");
        let seq_at = find_once(&json, seq_key.as_bytes())? + seq_key.len() - SEQ_WIDTH;
        let ts_at = find_once(&json, ts_key.as_bytes())? + ts_key.len() - TS_WIDTH;
        Some(Template {
            json,
            seq_at,
            ts_at,
        })
    }

    /// Writes `seq` and `ts` into the template; false if either does not fit its field.
    fn fill(&mut self, seq: u64, ts: i64) -> bool {
        let Ok(ts) = u64::try_from(ts) else {
            return false;
        };
        put(&mut self.json[self.seq_at..self.seq_at + SEQ_WIDTH], seq)
            && put(&mut self.json[self.ts_at..self.ts_at + TS_WIDTH], ts)
    }

    fn bytes(&self) -> &[u8] {
        &self.json
    }
}

/// Where `needle` occurs in `hay`, if it occurs exactly once as a whole number (no digit
/// right after it).
fn find_once(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    // Where the whole needle is, and no digit after it. The rest is compared only where the
    // first two bytes match: a slice comparison at every position of a 20 kB report made the
    // templates slow to build.
    let whole = |at: usize| {
        let end = at + needle.len();
        hay.get(at + 1) == rest.first()
            && hay.get(at + 1..end) == Some(rest)
            && !hay.get(end).is_some_and(|b| b.is_ascii_digit())
    };
    let mut found = hay
        .iter()
        .enumerate()
        .filter(|&(at, &b)| b == first && whole(at))
        .map(|(at, _)| at);
    let at = found.next()?;
    found.next().is_none().then_some(at)
}

/// Writes `value` in decimal at the start of `field`, the rest of it spaces (JSON allows
/// whitespace after a number); false, and `field` untouched, if it does not fit.
fn put(field: &mut [u8], mut value: u64) -> bool {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    if n > field.len() {
        return false;
    }
    for (i, byte) in field.iter_mut().enumerate() {
        *byte = if i < n { digits[n - 1 - i] } else { b' ' };
    }
    true
}

/// Appends `value` in decimal.
fn push_decimal(value: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut width = 20;
    let _ = put(&mut digits, value);
    while digits[width - 1] == b' ' {
        width -= 1;
    }
    out.extend_from_slice(&digits[..width]);
}

/// The header a template is encoded with.
fn sentinel_header(node: &str, run: u64) -> Header {
    Header {
        v: 1,
        node: node.to_owned(),
        run,
        seq: SEQ_SENTINEL,
        ts: TS_SENTINEL,
        mono: None,
    }
}

/// The start of the JSON of a beat of `node` (`fleet`'s `Beat`, without `ts` and `mono`): the
/// beat number and `}` follow.
fn beat_prefix(node: &str, run: u64) -> Vec<u8> {
    // The node name is a valid node name (letters, digits, '-', '_'): nothing to escape.
    format!("{{\"v\":1,\"node\":\"{node}\",\"run\":{run},\"n\":").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// One open connection to the broker.
struct Conn {
    stream: TcpStream,
    /// When it was opened.
    opened: Instant,
    /// The CONNACK as far as it has been read.
    connack: [u8; 4],
    got: usize,
    /// The broker accepted the connection (CONNACK with return code 0).
    up: bool,
    /// Bytes the socket did not take yet, from `head` on: written before anything new.
    out: Vec<u8>,
    head: usize,
    /// Where each message queued in `out` ends, and what it is (counted once written).
    marks: VecDeque<(usize, Sent)>,
    /// A `Flush` item is in the schedule.
    flush_due: bool,
    /// The next packet id of a QoS 1 PUBLISH.
    pid: u16,
    /// When what the broker sent was last read.
    drained: Instant,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            opened: now,
            connack: [0; 4],
            got: 0,
            up: false,
            out: Vec::new(),
            head: 0,
            marks: VecDeque::new(),
            flush_due: false,
            pid: 1,
            drained: now,
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.head
    }

    /// The packet id of the next QoS 1 PUBLISH: 1 to 65535, then 1 again (0 is not an id).
    fn next_pid(&mut self) -> u16 {
        let pid = self.pid;
        self.pid = if pid == u16::MAX { 1 } else { pid + 1 };
        pid
    }

    /// Writes what is still waiting, as far as the socket takes it, counting the messages
    /// that are now written completely. An error: the connection is broken.
    fn flush(&mut self, counts: &mut Counts) -> std::io::Result<()> {
        while self.head < self.out.len() {
            match self.stream.write(&self.out[self.head..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.head += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while let Some(&(end, what)) = self.marks.front() {
            if end > self.head {
                break;
            }
            counts.sent(what);
            self.marks.pop_front();
        }
        if self.head == self.out.len() {
            // All written (the marks are empty): a large leftover buffer is given back.
            self.out.clear();
            self.head = 0;
            if self.out.capacity() > 1 << 16 {
                self.out = Vec::new();
            }
        } else if self.head >= 1 << 16 {
            self.out.drain(..self.head);
            for mark in &mut self.marks {
                mark.0 -= self.head;
            }
            self.head = 0;
        }
        Ok(())
    }

    /// Sends `head` then `body` as one message of kind `what`: after what is still waiting,
    /// as far as the socket takes it; the rest waits. Returns whether anything waits (the
    /// caller schedules a flush). An error: the connection is broken.
    fn send(
        &mut self,
        head: &[u8],
        body: &[u8],
        what: Sent,
        counts: &mut Counts,
    ) -> std::io::Result<bool> {
        self.flush(counts)?;
        if self.pending() > 0 {
            if self.pending() + head.len() + body.len() > MAX_PENDING {
                counts.errors += 1;
            } else {
                self.out.extend_from_slice(head);
                self.out.extend_from_slice(body);
                self.marks.push_back((self.out.len(), what));
            }
            return Ok(true);
        }
        // Nothing waits: straight from the caller's buffers, in one system call.
        let total = head.len() + body.len();
        let mut done = 0;
        while done < total {
            let written = if done < head.len() {
                self.stream
                    .write_vectored(&[IoSlice::new(&head[done..]), IoSlice::new(body)])
            } else {
                self.stream.write(&body[done - head.len()..])
            };
            match written {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if done == total {
            counts.sent(what);
            return Ok(false);
        }
        if done < head.len() {
            self.out.extend_from_slice(&head[done..]);
            self.out.extend_from_slice(body);
        } else {
            self.out.extend_from_slice(&body[done - head.len()..]);
        }
        self.marks.push_back((self.out.len(), what));
        Ok(true)
    }

    /// Reads (and forgets) what the broker sent: PUBACKs, PINGRESPs. An error, or the end of
    /// the stream: the connection is broken.
    fn drain(&mut self, scratch: &mut [u8], now: Instant) -> std::io::Result<()> {
        self.drained = now;
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                // A short read: the socket is empty (saves the read that would say so).
                Ok(n) if n < scratch.len() => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the CONNACK: its return code once it has come whole, `None` until then. Anything
    /// else first is an error.
    fn read_connack(&mut self) -> std::io::Result<Option<u8>> {
        while self.got < self.connack.len() {
            match self.stream.read(&mut self.connack[self.got..]) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        if self.connack[0] != 0x20 || self.connack[1] != 2 {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "the broker's first packet is not a CONNACK",
            ));
        }
        Ok(Some(self.connack[3]))
    }
}

// ---------------------------------------------------------------------------------------------
// Agents and their schedule.

/// One simulated agent.
struct Agent {
    /// Its index in the fleet: its name, `run` and phase.
    index: usize,
    node: String,
    key: NodeKey,
    run: u64,
    status_topic: String,
    beat_topic: String,
    host_topic: String,
    containers_topic: String,
    beat_prefix: Vec<u8>,
    /// Made on the first connection (none with REPORTS = 0).
    host: Option<Template>,
    containers: Option<Template>,
    conn: Option<Conn>,
    /// The broker accepted it once: counted as connected, its beats and reports scheduled.
    ever_up: bool,
    /// The `seq` of its last report and `n` of its last beat.
    seq: u64,
    n: u64,
}

impl Agent {
    fn new(prefix: &str, index: usize) -> Agent {
        let node = format!("{prefix}-{index:05}");
        let topic = |c: &str| format!("leakmon/v1/nodes/{node}/{c}");
        let run = 1 + index as u64;
        Agent {
            index,
            key: super::bench_fleet().node_key(&node),
            run,
            status_topic: topic("status"),
            beat_topic: topic("beat"),
            host_topic: topic("host"),
            containers_topic: topic("containers"),
            beat_prefix: beat_prefix(&node, run),
            host: None,
            containers: None,
            conn: None,
            ever_up: false,
            seq: 0,
            n: 0,
            node,
        }
    }

    /// Encodes its report templates, as `fleet` builds its reports (the counters as they are
    /// at `seq` 1).
    fn make_templates(&mut self, containers: usize) -> Option<()> {
        let header = sentinel_header(&self.node, self.run);
        self.host = Some(Template::new(encode(&host_report(header.clone(), 1)))?);
        self.containers = Some(Template::new(encode(&containers_report(
            header, 1, containers,
        )))?);
        Some(())
    }

    /// Its status (`fleet`'s), encoded and sealed; `reason` replaces the default reason of
    /// an offline status (lost, as in the Will).
    fn status(&self, plan: &Plan, state: NodeState, reason: Option<OfflineReason>) -> Vec<u8> {
        let mut s = status(&self.node, state, 1, plan.beat, plan.interval);
        if reason.is_some() {
            s.reason = reason;
        }
        self.key.seal(&self.status_topic, encode(&s))
    }
}

/// What falls due in the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Open the connection.
    Connect,
    /// Look for the CONNACK.
    Handshake,
    Beat,
    Report,
    Ping,
    /// Write what the socket did not take before.
    Flush,
}

/// The next time something that falls due every `period` from `due` on falls due after
/// `now`: the times missed are skipped (as tokio's `MissedTickBehavior::Skip` in `fleet`).
fn next_due(due: Instant, period: Duration, now: Instant) -> Instant {
    let next = due + period;
    if next > now {
        return next;
    }
    let behind = now.saturating_duration_since(due).as_nanos();
    let periods = behind / period.as_nanos().max(1) + 1;
    due + Duration::from_nanos((period.as_nanos() * periods).min(u64::MAX as u128) as u64)
}

/// One thread: its share of the fleet and their schedule.
struct Worker<'a> {
    plan: &'a Plan,
    reports: bool,
    addr: SocketAddr,
    agents: Vec<Agent>,
    /// (when, which agent of `agents`, what), earliest first.
    schedule: BinaryHeap<Reverse<(Instant, usize, Kind)>>,
    counts: Counts,
    /// For the MQTT header of a message.
    head: Vec<u8>,
    /// For the payload being sealed (kept to save an allocation a message).
    body: Vec<u8>,
    /// What is read from the broker and thrown away.
    scratch: Vec<u8>,
}

impl Worker<'_> {
    fn at(&mut self, when: Instant, slot: usize, kind: Kind) {
        self.schedule.push(Reverse((when, slot, kind)));
    }

    /// The connection of `slot` is broken: counted, and opened again soon.
    fn broken(&mut self, slot: usize, now: Instant) {
        self.counts.errors += 1;
        self.agents[slot].conn = None;
        self.at(now + RECONNECT_AFTER, slot, Kind::Connect);
    }

    /// After a send: a flush is scheduled if something waits.
    fn sent(&mut self, slot: usize, now: Instant, result: std::io::Result<bool>) -> bool {
        match result {
            Ok(waits) => {
                if waits {
                    if let Some(conn) = self.agents[slot].conn.as_mut() {
                        if !conn.flush_due {
                            conn.flush_due = true;
                            self.at(now + FLUSH_RETRY, slot, Kind::Flush);
                        }
                    }
                }
                true
            }
            Err(_) => {
                self.broken(slot, now);
                false
            }
        }
    }

    fn handle(&mut self, slot: usize, kind: Kind, due: Instant, now: Instant) {
        match kind {
            Kind::Connect => self.connect(slot, now),
            Kind::Handshake => self.handshake(slot, now),
            Kind::Flush => self.flush(slot, now),
            Kind::Beat => {
                self.at(next_due(due, self.plan.beat, now), slot, Kind::Beat);
                if self.ready(slot, now) {
                    self.beat(slot, now);
                }
            }
            Kind::Report => {
                self.at(next_due(due, self.plan.interval, now), slot, Kind::Report);
                if self.ready(slot, now) {
                    if now.saturating_duration_since(due) > self.plan.interval {
                        self.counts.late += 1;
                    }
                    self.report(slot, now);
                }
            }
            Kind::Ping => {
                self.at(next_due(due, KEEP_ALIVE / 2, now), slot, Kind::Ping);
                if self.ready(slot, now) {
                    let Some(conn) = self.agents[slot].conn.as_mut() else {
                        return;
                    };
                    let result = conn.send(&PINGREQ, &[], Sent::Control, &mut self.counts);
                    self.sent(slot, now, result);
                }
            }
        }
    }

    /// Whether the agent's connection is up and can take a message; reads what the broker
    /// sent if it is time to.
    fn ready(&mut self, slot: usize, now: Instant) -> bool {
        let Some(conn) = self.agents[slot].conn.as_mut() else {
            return false;
        };
        if !conn.up {
            return false;
        }
        if now.saturating_duration_since(conn.drained) >= DRAIN_EVERY
            && conn.drain(&mut self.scratch, now).is_err()
        {
            self.broken(slot, now);
            return false;
        }
        true
    }

    fn connect(&mut self, slot: usize, now: Instant) {
        let agent = &self.agents[slot];
        if agent.conn.is_some() {
            return;
        }
        let stream = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                self.counts.errors += 1;
                self.at(now + RECONNECT_AFTER, slot, Kind::Connect);
                return;
            }
        };
        // The Will, as `fleet` sets it: offline, lost; made again for each connection.
        let will = agent.status(self.plan, NodeState::Offline, None);
        let frame = connect_frame(
            &agent.node,
            KEEP_ALIVE.as_secs() as u16,
            &agent.status_topic,
            &will,
        );
        let mut conn = Conn::new(stream, now);
        let result = conn.send(&frame, &[], Sent::Control, &mut self.counts);
        self.agents[slot].conn = Some(conn);
        if self.sent(slot, now, result) {
            self.at(now + Duration::from_millis(1), slot, Kind::Handshake);
        }
    }

    fn handshake(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.agents[slot].conn.as_mut() else {
            return;
        };
        if conn.up {
            return;
        }
        match conn.read_connack() {
            Ok(None) => {
                let waited = now.saturating_duration_since(conn.opened);
                if waited > CONNACK_TIMEOUT {
                    self.broken(slot, now);
                } else {
                    // Soon at first, then less often while the broker is slow.
                    let wait =
                        (waited / 2).clamp(Duration::from_millis(1), Duration::from_millis(50));
                    self.at(now + wait, slot, Kind::Handshake);
                }
            }
            Ok(Some(0)) => {
                conn.up = true;
                conn.drained = now;
                if !self.agents[slot].ever_up {
                    self.first_up(slot, now);
                }
                // The birth, as `fleet`'s: retained, QoS 1.
                let agent = &mut self.agents[slot];
                let birth = agent.status(self.plan, NodeState::Online, None);
                let Some(conn) = agent.conn.as_mut() else {
                    return;
                };
                self.head.clear();
                publish_header(
                    &agent.status_topic,
                    Some(conn.next_pid()),
                    true,
                    birth.len(),
                    &mut self.head,
                );
                let result = conn.send(&self.head, &birth, Sent::Status, &mut self.counts);
                self.sent(slot, now, result);
            }
            // Refused (or not a CONNACK): tried again as any broken connection.
            Ok(Some(_)) | Err(_) => self.broken(slot, now),
        }
    }

    /// The first time the broker accepted the agent: counted, its templates made and its
    /// beats, reports and pings scheduled from now on, as `fleet` schedules them.
    fn first_up(&mut self, slot: usize, now: Instant) {
        self.counts.connected += 1;
        let agent = &mut self.agents[slot];
        agent.ever_up = true;
        if !self.plan.beat.is_zero() {
            self.schedule
                .push(Reverse((now + self.plan.beat, slot, Kind::Beat)));
        }
        if self.plan.beat.is_zero() || self.plan.beat > KEEP_ALIVE / 2 {
            self.schedule
                .push(Reverse((now + KEEP_ALIVE / 2, slot, Kind::Ping)));
        }
        if self.reports && !self.plan.interval.is_zero() {
            if agent.make_templates(self.plan.containers).is_none() {
                // A report whose seq or ts cannot be found: this program is wrong, not the run.
                eprintln!("replay: cannot make the report templates of {}", agent.node);
                std::process::exit(1);
            }
            // Each node at its own phase of the interval, as `fleet`.
            let phase = self
                .plan
                .interval
                .mul_f64((agent.index as f64 * 0.618_033_988_7).fract());
            self.schedule
                .push(Reverse((now + phase, slot, Kind::Report)));
        }
    }

    fn flush(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.agents[slot].conn.as_mut() else {
            return;
        };
        conn.flush_due = false;
        let result = conn.flush(&mut self.counts).map(|()| conn.pending() > 0);
        self.sent(slot, now, result);
    }

    fn beat(&mut self, slot: usize, now: Instant) {
        let agent = &mut self.agents[slot];
        let Some(conn) = agent.conn.as_mut() else {
            return;
        };
        agent.n += 1;
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        body.extend_from_slice(&agent.beat_prefix);
        push_decimal(agent.n, &mut body);
        body.push(b'}');
        let body = agent.key.seal(&agent.beat_topic, body);
        self.head.clear();
        publish_header(&agent.beat_topic, None, false, body.len(), &mut self.head);
        let result = conn.send(&self.head, &body, Sent::Beat, &mut self.counts);
        self.body = body;
        self.sent(slot, now, result);
    }

    /// A host report then a containers report, with the next two `seq` and the time now
    /// (the same for both).
    fn report(&mut self, slot: usize, now: Instant) {
        let ts = now_ms();
        // Both numbers are taken now, as `fleet` takes them: the host report's is odd, the
        // containers report's even, even if the connection breaks between the two.
        let first = self.agents[slot].seq + 1;
        self.agents[slot].seq += 2;
        for (seq, host) in [(first, true), (first + 1, false)] {
            let agent = &mut self.agents[slot];
            let Some(conn) = agent.conn.as_mut() else {
                return;
            };
            let (template, topic) = if host {
                (agent.host.as_mut(), &agent.host_topic)
            } else {
                (agent.containers.as_mut(), &agent.containers_topic)
            };
            let Some(template) = template else {
                return;
            };
            if !template.fill(seq, ts) {
                // (a seq of 11 digits, or a clock before 1970)
                self.counts.errors += 1;
                continue;
            }
            let mut body = std::mem::take(&mut self.body);
            body.clear();
            body.extend_from_slice(template.bytes());
            let body = agent.key.seal(topic, body);
            self.head.clear();
            publish_header(
                topic,
                Some(conn.next_pid()),
                false,
                body.len(),
                &mut self.head,
            );
            let result = conn.send(&self.head, &body, Sent::Report, &mut self.counts);
            self.body = body;
            if !self.sent(slot, now, result) {
                return;
            }
        }
    }

    /// The end: every connected agent sends its retained "shutdown" status and DISCONNECT,
    /// and each connection is closed once the broker has closed it (or after a while).
    fn goodbye(&mut self) {
        let deadline = Instant::now() + GOODBYE_TIMEOUT;
        for agent in &mut self.agents {
            // A clean goodbye, as `fleet`'s (offline, shutdown, retained), from those the broker
            // accepted.
            let bye = agent.conn.as_ref().is_some_and(|c| c.up).then(|| {
                agent.status(self.plan, NodeState::Offline, Some(OfflineReason::Shutdown))
            });
            let Some(conn) = agent.conn.as_mut() else {
                continue;
            };
            let mut ok = true;
            if let Some(bye) = bye {
                self.head.clear();
                publish_header(
                    &agent.status_topic,
                    Some(conn.next_pid()),
                    true,
                    bye.len(),
                    &mut self.head,
                );
                ok = conn
                    .send(&self.head, &bye, Sent::Status, &mut self.counts)
                    .is_ok();
            }
            // (a connection still waiting for its CONNACK says goodbye too, so its Will is not
            // published)
            ok = ok
                && conn
                    .send(&DISCONNECT, &[], Sent::Control, &mut self.counts)
                    .is_ok();
            if !ok {
                self.counts.errors += 1;
                agent.conn = None;
            }
        }
        // What the sockets did not take at once.
        while Instant::now() < deadline {
            let mut waiting = false;
            for agent in &mut self.agents {
                let Some(conn) = agent.conn.as_mut() else {
                    continue;
                };
                if conn.flush(&mut self.counts).is_err() {
                    self.counts.errors += 1;
                    agent.conn = None;
                } else if conn.pending() > 0 {
                    waiting = true;
                }
            }
            if !waiting {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Closed from this side, then read until the broker closes its side: closing a socket
        // with unread bytes would reset the connection, and the broker could lose the
        // goodbye and publish the Will.
        for agent in &mut self.agents {
            if let Some(conn) = agent.conn.as_ref() {
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut open = false;
            for agent in &mut self.agents {
                let Some(conn) = agent.conn.as_mut() else {
                    continue;
                };
                if conn.drain(&mut self.scratch, Instant::now()).is_err() {
                    // the end of the stream (or a reset): done with it
                    agent.conn = None;
                } else {
                    open = true;
                }
            }
            if !open {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One thread's share: the agents of `indices`, each connecting at `start` + its index over
/// the ramp rate, until `end` (or SIGTERM).
fn worker(plan: &Plan, reports: bool, indices: Vec<usize>, start: Instant, end: Instant) -> Counts {
    let gap = 1.0 / plan.ramp_per_s.max(1) as f64;
    let mut w = Worker {
        plan,
        reports,
        addr: SocketAddr::from(([127, 0, 0, 1], plan.port)),
        agents: indices
            .iter()
            .map(|&i| Agent::new(&plan.prefix, i))
            .collect(),
        schedule: BinaryHeap::new(),
        counts: Counts::default(),
        head: Vec::with_capacity(256),
        body: Vec::new(),
        scratch: vec![0; 16 << 10],
    };
    for (slot, &i) in indices.iter().enumerate() {
        let when = start + Duration::from_secs_f64(i as f64 * gap);
        w.at(when, slot, Kind::Connect);
    }
    loop {
        let now = Instant::now();
        if now >= end || TERM.load(Ordering::Relaxed) {
            break;
        }
        let Some(&Reverse((due, slot, kind))) = w.schedule.peek() else {
            std::thread::sleep((end - now).min(Duration::from_millis(100)));
            continue;
        };
        if due > now + SLACK {
            // (at most 100 ms, so that SIGTERM is seen soon)
            let wait = (due - now).min(end - now).min(Duration::from_millis(100));
            std::thread::sleep(wait);
            continue;
        }
        w.schedule.pop();
        w.handle(slot, kind, due, now);
    }
    w.goodbye();
    w.counts
}

pub fn run(plan: Plan, reports: bool) {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(plan.seconds);
    let threads = plan
        .agents
        .div_ceil(AGENTS_PER_THREAD)
        .clamp(1, MAX_THREADS);
    let mut total = Counts::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<usize> = (t..plan.agents).step_by(threads).collect();
                let plan = &plan;
                s.spawn(move || worker(plan, reports, mine, start, end))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(c) => total.add(&c),
                Err(_) => eprintln!("replay: a thread panicked; its counts are lost"),
            }
        }
    });
    println!(
        "FLEET agents={} connected={} reports={} statuses={} beats={} late={} publish_errors={}",
        plan.agents,
        total.connected,
        total.reports,
        total.statuses,
        total.beats,
        total.late,
        total.errors
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::{decode, Beat, ContainersReport, HostReport};

    /// The remaining length at `at` and the bytes it took.
    fn read_length(bytes: &[u8]) -> (usize, usize) {
        let (mut len, mut shift) = (0usize, 0);
        for (i, b) in bytes.iter().enumerate() {
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return (len, i + 1);
            }
            shift += 7;
        }
        panic!("unterminated remaining length");
    }

    fn length(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        remaining_length(len, &mut out);
        out
    }

    #[test]
    fn remaining_length_takes_one_to_four_bytes() {
        assert_eq!(length(0), [0x00]);
        assert_eq!(length(127), [0x7f]);
        assert_eq!(length(128), [0x80, 0x01]);
        assert_eq!(length(321), [0xc1, 0x02]);
        assert_eq!(length(16_383), [0xff, 0x7f]);
        assert_eq!(length(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(length(2_097_151), [0xff, 0xff, 0x7f]);
        assert_eq!(length(2_097_152), [0x80, 0x80, 0x80, 0x01]);
        for n in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            20_000,
            2_097_152,
            268_435_455,
        ] {
            assert_eq!(read_length(&length(n)), (n, length(n).len()));
        }
    }

    #[test]
    fn connect_frame_has_the_will_and_clean_session() {
        let f = connect_frame("n1", 5, "t/s", b"{}");
        let want: &[u8] = &[
            0x10, 23, // CONNECT, 23 bytes follow
            0, 4, b'M', b'Q', b'T', b'T', 4,    // MQTT 3.1.1
            0x2e, // Will retain, Will QoS 1, Will, clean session
            0, 5, // keep alive 5 s
            0, 2, b'n', b'1', // client id
            0, 3, b't', b'/', b's', // Will topic
            0, 2, b'{', b'}', // Will payload
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn connect_frame_with_a_long_will() {
        let will = vec![b'x'; 300];
        let f = connect_frame(
            "fleet-00001",
            5,
            "leakmon/v1/nodes/fleet-00001/status",
            &will,
        );
        let (len, at) = read_length(&f[1..]);
        assert_eq!(at, 2);
        assert_eq!(1 + at + len, f.len());
        assert!(f.ends_with(&will));
    }

    /// A PUBLISH as (flags, topic, packet id, payload).
    fn parse_publish(f: &[u8]) -> (u8, String, Option<u16>, Vec<u8>) {
        assert_eq!(f[0] >> 4, 3, "not a PUBLISH");
        let (len, at) = read_length(&f[1..]);
        let rest = &f[1 + at..];
        assert_eq!(rest.len(), len, "remaining length");
        let tlen = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let topic = String::from_utf8(rest[2..2 + tlen].to_vec()).expect("utf-8 topic");
        let mut p = 2 + tlen;
        let pid = (f[0] & 0x06 != 0).then(|| {
            p += 2;
            u16::from_be_bytes([rest[p - 2], rest[p - 1]])
        });
        (f[0] & 0x0f, topic, pid, rest[p..].to_vec())
    }

    fn publish(topic: &str, pid: Option<u16>, retain: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        publish_header(topic, pid, retain, payload.len(), &mut f);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn publish_frames_qos0_and_qos1() {
        let f = publish("a/b", None, false, b"hi");
        assert_eq!(f, [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']);
        let f = publish("a/b", Some(0x0102), true, b"hi");
        assert_eq!(f, [0x33, 9, 0, 3, b'a', b'/', b'b', 1, 2, b'h', b'i']);
        // two and three bytes of remaining length
        for size in [200, 16_000, 16_356, 16_357, 40_000] {
            let payload = vec![b'p'; size];
            let f = publish("leakmon/v1/nodes/n/host", Some(7), false, &payload);
            let (flags, topic, pid, body) = parse_publish(&f);
            assert_eq!(
                (flags, topic.as_str(), pid),
                (0x02, "leakmon/v1/nodes/n/host", Some(7))
            );
            assert_eq!(body, payload);
            let (len, at) = read_length(&f[1..]);
            assert_eq!(at, if len < 16_384 { 2 } else { 3 });
        }
    }

    #[test]
    fn packet_ids_skip_zero() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let mut c = Conn::new(stream, Instant::now());
        assert_eq!(c.next_pid(), 1);
        c.pid = u16::MAX;
        assert_eq!(c.next_pid(), u16::MAX);
        assert_eq!(c.next_pid(), 1);
    }

    #[test]
    fn find_once_wants_one_whole_number() {
        assert_eq!(find_once(b"{\"a\":1,\"seq\":99}", b"\"seq\":99"), Some(7));
        assert_eq!(find_once(b"{\"seq\":99,\"seq\":99}", b"\"seq\":99"), None);
        assert_eq!(find_once(b"{\"seq\":999}", b"\"seq\":99"), None);
        assert_eq!(
            find_once(b"{\"seq\":999,\"seq\":99}", b"\"seq\":99"),
            Some(11)
        );
        assert_eq!(find_once(b"{\"se", b"\"seq\":99"), None);
    }

    #[test]
    fn put_pads_with_spaces_and_refuses_what_does_not_fit() {
        let mut f = *b"xxxxx";
        assert!(put(&mut f, 42));
        assert_eq!(&f, b"42   ");
        assert!(put(&mut f, 0));
        assert_eq!(&f, b"0    ");
        assert!(put(&mut f, 99_999));
        assert_eq!(&f, b"99999");
        assert!(!put(&mut f, 100_000));
        assert_eq!(&f, b"99999");
        let mut v = Vec::new();
        push_decimal(1234, &mut v);
        push_decimal(0, &mut v);
        push_decimal(u64::MAX, &mut v);
        assert_eq!(v, format!("12340{}", u64::MAX).into_bytes());
    }

    #[test]
    fn patched_templates_decode_with_their_seq_and_ts_and_their_seal_verifies() {
        let mut a = Agent::new("fleet", 7);
        a.make_templates(20).expect("templates");
        let ts = 1_764_180_000_123;
        for seq in [1, 2, 17, 1_000_001, 9_999_999_998] {
            let host = a.host.as_mut().expect("host");
            assert!(host.fill(seq, ts));
            let sealed = a.key.seal(&a.host_topic, host.bytes().to_vec());
            a.key
                .check(&a.host_topic, &sealed)
                .expect("the seal verifies");
            let r: HostReport = decode(&a.node, &sealed).expect("decodes");
            assert_eq!((r.header.seq, r.header.ts, r.header.run), (seq, ts, 8));
            // the same report as `fleet` encodes, but for white space
            let want: serde_json::Value = serde_json::from_slice(&encode(&host_report(
                Header {
                    v: 1,
                    node: a.node.clone(),
                    run: 8,
                    seq,
                    ts,
                    mono: None,
                },
                1,
            )))
            .expect("json");
            let got: serde_json::Value = serde_json::from_slice(host.bytes()).expect("json");
            assert_eq!(got, want);

            let cont = a.containers.as_mut().expect("containers");
            assert!(cont.fill(seq + 1, ts + 1));
            let sealed = a.key.seal(&a.containers_topic, cont.bytes().to_vec());
            a.key
                .check(&a.containers_topic, &sealed)
                .expect("the seal verifies");
            let r: ContainersReport = decode(&a.node, &sealed).expect("decodes");
            assert_eq!((r.header.seq, r.header.ts), (seq + 1, ts + 1));
            assert_eq!(r.containers.len(), 20);
        }
        let host = a.host.as_mut().expect("host");
        assert!(
            !host.fill(10_000_000_000, ts),
            "an 11-digit seq does not fit"
        );
        assert!(!host.fill(1, -1), "nor a negative ts");
        assert!(std::str::from_utf8(host.bytes())
            .expect("utf-8")
            .contains("\"seq\":9999999998,"));
    }

    #[test]
    fn beats_are_encoded_as_fleet_encodes_them() {
        let a = Agent::new("fleet", 3);
        for n in [1, 9, 10, 123_456] {
            let mut body = a.beat_prefix.clone();
            push_decimal(n, &mut body);
            body.push(b'}');
            let want = Beat {
                v: 1,
                node: a.node.clone(),
                run: 4,
                n,
                ts: None,
                mono: None,
            };
            assert_eq!(body, encode(&want));
        }
    }

    #[test]
    fn missed_times_are_skipped() {
        let t = Instant::now();
        let p = Duration::from_millis(100);
        assert_eq!(next_due(t, p, t), t + p);
        assert_eq!(next_due(t, p, t + Duration::from_millis(50)), t + p);
        assert_eq!(next_due(t, p, t + Duration::from_millis(100)), t + 2 * p);
        assert_eq!(next_due(t, p, t + Duration::from_millis(350)), t + 4 * p);
    }

    /// The packets of one connection, as (first byte, whole packet).
    type Packets = Vec<(u8, Vec<u8>)>;

    /// A broker that accepts every connection, reads its packets and answers CONNECT with
    /// CONNACK, PUBLISH QoS 1 with PUBACK and PINGREQ with PINGRESP: the packets each
    /// connection sent, until its DISCONNECT.
    fn fake_broker(
        listener: std::net::TcpListener,
        connections: usize,
    ) -> std::thread::JoinHandle<Vec<Packets>> {
        std::thread::spawn(move || {
            let readers: Vec<_> = (0..connections)
                .map(|_| {
                    let (mut s, _) = listener.accept().expect("accept");
                    std::thread::spawn(move || {
                        let mut all = Vec::new();
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        loop {
                            let n = s.read(&mut chunk).unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            // whole packets off the front
                            while buf.len() >= 2 {
                                let Some(end) = buf[1..].iter().position(|b| b & 0x80 == 0) else {
                                    break;
                                };
                                let (len, at) = read_length(&buf[1..2 + end]);
                                if buf.len() < 1 + at + len {
                                    break;
                                }
                                let packet: Vec<u8> = buf.drain(..1 + at + len).collect();
                                let first = packet[0];
                                match first >> 4 {
                                    1 => s.write_all(&[0x20, 2, 0, 0]).expect("connack"),
                                    3 if first & 0x06 != 0 => {
                                        let (_, _, pid, _) = parse_publish(&packet);
                                        let pid = pid.expect("pid").to_be_bytes();
                                        s.write_all(&[0x40, 2, pid[0], pid[1]]).expect("puback");
                                    }
                                    12 => s.write_all(&[0xd0, 0]).expect("pingresp"),
                                    _ => {}
                                }
                                all.push((first, packet));
                                if first == 0xe0 {
                                    return all;
                                }
                            }
                        }
                        all
                    })
                })
                .collect();
            readers
                .into_iter()
                .map(|r| r.join().expect("reader"))
                .collect()
        })
    }

    #[test]
    fn a_small_fleet_against_a_fake_broker() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let broker = fake_broker(listener, 2);
        let plan = Plan {
            port,
            agents: 2,
            seconds: 1,
            interval: Duration::from_millis(300),
            containers: 3,
            beat: Duration::from_millis(100),
            prefix: "t".into(),
            ramp_per_s: 1000,
        };
        let start = Instant::now();
        let counts = worker(
            &plan,
            true,
            vec![0, 1],
            start,
            start + Duration::from_millis(1000),
        );
        let conns = broker.join().expect("broker");
        assert_eq!(counts.connected, 2);
        assert_eq!(counts.errors, 0);
        assert_eq!(counts.statuses, 4, "a birth and a goodbye each");
        let mut reports = 0;
        let mut beats = 0;
        for packets in &conns {
            // CONNECT first, DISCONNECT last, a retained birth second, a retained goodbye
            // before the DISCONNECT
            assert_eq!(packets[0].0, 0x10);
            assert_eq!(packets[packets.len() - 1].0, 0xe0);
            let publishes: Vec<_> = packets
                .iter()
                .filter(|(f, _)| f >> 4 == 3)
                .map(|(_, p)| parse_publish(p))
                .collect();
            let (flags, topic, _, _) = &publishes[0];
            assert_eq!(*flags, 0x03);
            assert!(topic.ends_with("/status"));
            let (flags, topic, _, bye) = &publishes[publishes.len() - 1];
            assert_eq!(*flags, 0x03);
            assert!(topic.ends_with("/status"));
            assert!(String::from_utf8_lossy(bye).contains("\"reason\":\"shutdown\""));
            let mut seqs = Vec::new();
            let mut pids: Vec<u16> = Vec::new();
            let mut n = 0;
            for (_, topic, pid, payload) in &publishes {
                let node = topic.split('/').nth(3).expect("node").to_owned();
                super::super::bench_fleet()
                    .node_key(&node)
                    .check(topic, payload)
                    .expect("sealed");
                pids.extend(pid);
                if topic.ends_with("/host") {
                    let r: HostReport = decode(&node, payload).expect("host");
                    assert_eq!(r.header.seq % 2, 1);
                    seqs.push(r.header.seq);
                    reports += 1;
                } else if topic.ends_with("/containers") {
                    let r: ContainersReport = decode(&node, payload).expect("containers");
                    assert_eq!(r.header.seq % 2, 0);
                    seqs.push(r.header.seq);
                    reports += 1;
                } else if topic.ends_with("/beat") {
                    let b: Beat = decode(&node, payload).expect("beat");
                    n += 1;
                    assert_eq!(b.n, n, "beats count up from 1");
                    beats += 1;
                }
            }
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
            assert_eq!(pids, (1..=pids.len() as u16).collect::<Vec<_>>());
        }
        assert_eq!(reports, counts.reports);
        assert_eq!(beats, counts.beats);
        assert!(reports >= 4, "{reports} reports");
        assert!(beats >= 10, "{beats} beats");
    }
}
