//! The InfluxDB writer's shell: gzips each request, writes through the v1 (`/write?db=`) or v2
//! (`/api/v2/write`) API, and keeps what the database has not taken in the [`Buffer`] (memory,
//! then disk). When to send what (batching by size and time, retries by [`super::policy`], the
//! requests in flight, splitting, closing) is decided by the pure [`Writer`]; this only moves
//! lines, bodies and answers between it, the channel, the buffer and the database.
//!
//! The client is reqwest with rustls/ring rather than the `influxdb2` crate, which is stale
//! (reqwest 0.11, OpenSSL, no batching, no retries); the API itself is one POST.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::writer::{Closed, Settings, Settled, Writer};
use crate::acks::{self, Delivery, DurableWriter};
use crate::config::{Api, InfluxConfig};
use crate::metrics::Metrics;
use leakmon_common::buffer::{Buffer, Item, Origin, SyncJob};

/// A batch of line protocol as the store keeps it: its lines, and the number of the first
/// MQTT message whose lines it holds ([`crate::acks`]; 0: none to track, e.g. read back from
/// the spool, which is durable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    pub body: String,
    pub first: u64,
}

impl Item for Lines {
    fn cost(&self) -> usize {
        self.body.cost()
    }

    fn units(&self) -> u64 {
        self.body.units()
    }

    /// The lines alone (spool records are the same as before message numbers existed).
    fn to_record(&self) -> Vec<u8> {
        self.body.to_record()
    }

    fn from_record(body: Vec<u8>) -> Option<Lines> {
        String::from_record(body).map(|body| Lines { body, first: 0 })
    }

    /// Spilled, it is durable once forced to disk: until then its first message number holds
    /// the acknowledgements back.
    fn mark(&self) -> u64 {
        self.first
    }
}

/// The spool sync job running on a blocking thread, if any.
type Syncing = Option<tokio::task::JoinHandle<std::io::Result<()>>>;

/// The end of the sync job running.
async fn synced(s: &mut Syncing) -> std::io::Result<()> {
    match s {
        Some(job) => job.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        None => std::future::pending().await,
    }
}

/// What the writer keeps with a batch taken from the store: where it came from and its first
/// message number.
type Tag = (Origin, u64);

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct Target {
    pub write_url: String,
    pub auth: Auth,
    pub base: String,
    pub api: Api,
    pub database: String,
    /// Compress request bodies.
    pub gzip: bool,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Basic(String, String),
    Token(String),
}

fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Target {
    pub fn new(c: &InfluxConfig) -> Target {
        let base = c.url.trim_end_matches('/').to_owned();
        let (write_url, auth) = match c.api {
            Api::V1 => {
                let mut u = format!("{base}/write?db={}&precision=ms", enc(&c.database));
                if !c.retention_policy.is_empty() {
                    u.push_str(&format!("&rp={}", enc(&c.retention_policy)));
                }
                let auth = match &c.username {
                    Some(user) => Auth::Basic(user.clone(), c.password.clone().unwrap_or_default()),
                    None => Auth::None,
                };
                (u, auth)
            }
            Api::V2 => (
                format!(
                    "{base}/api/v2/write?org={}&bucket={}&precision=ms",
                    enc(&c.org),
                    enc(&c.bucket)
                ),
                match &c.token {
                    Some(t) => Auth::Token(t.clone()),
                    None => Auth::None,
                },
            ),
        };
        Target {
            write_url,
            auth,
            base,
            api: c.api,
            database: c.database.clone(),
            gzip: c.gzip,
        }
    }

    fn authorize(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => rb,
            Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Auth::Token(t) => rb.header("Authorization", format!("Token {t}")),
        }
    }
}

pub fn gzip(body: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = e.write_all(body.as_bytes());
    e.finish().unwrap_or_default()
}

/// One write.
async fn write(client: &reqwest::Client, t: &Target, body: &str) -> Answer {
    let rb = client
        .post(&t.write_url)
        .header("Content-Type", "text/plain; charset=utf-8");
    let rb = if t.gzip {
        rb.header("Content-Encoding", "gzip").body(gzip(body))
    } else {
        rb.body(body.to_owned())
    };
    match t.authorize(rb).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let ra = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = resp.text().await.unwrap_or_default();
            Answer {
                status: Some(status),
                retry_after: ra,
                text,
            }
        }
        Err(e) => Answer {
            status: None,
            retry_after: None,
            text: e.to_string(),
        },
    }
}

/// Creates the v1 database if it is missing (as Telegraf does); harmless when it exists.
pub async fn ensure_database(client: &reqwest::Client, t: &Target) {
    if t.api != Api::V1 {
        return;
    }
    let q = format!("CREATE DATABASE \"{}\"", t.database.replace('"', "\\\""));
    let rb = client
        .post(format!("{}/query", t.base))
        .form(&[("q", q.as_str())]);
    match t.authorize(rb).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            status = r.status().as_u16(),
            "could not create the database"
        ),
        Err(e) => tracing::warn!(error = %e, "could not create the database (is InfluxDB up?)"),
    }
}

/// Settings of the writer task.
pub struct WriterConfig {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
    pub max_retry_delay: Duration,
    /// Write requests in flight at once. Writes are idempotent (points carry their sample
    /// time), so their order does not matter to the database.
    pub concurrency: usize,
}

/// A write's answer: its status (`None`: no answer came), `Retry-After`, and its body or the
/// client's error, for the log.
struct Answer {
    status: Option<u16>,
    retry_after: Option<String>,
    text: String,
}

/// The store of batches the database has not taken. Every call the writer makes to the
/// [`Buffer`] is here, so that a different store changes this and nothing else.
struct Store {
    buf: Buffer<Lines>,
    /// The database is down (or slower than the agents): batches go to the spool.
    offline: bool,
    /// The lowest message number the spool sync job running makes durable.
    syncing: Option<u64>,
}

impl Store {
    fn new(buf: Buffer<Lines>) -> Store {
        Store {
            buf,
            offline: false,
            syncing: None,
        }
    }

    /// The database refuses or does not answer: with a spool, what waits in memory moves to
    /// disk, new batches go there too, and so do copies of the batches only the writer holds
    /// (`take_undurable`), so a crash during an outage loses of what the broker delivered
    /// only the lines still gathering for the next batch (at most `flush_interval`'s) and those
    /// on their way from ingest (the channel between them). Without a spool, nothing changes:
    /// memory holds what it can.
    fn database_down(&mut self, undurable: Vec<(String, Option<Tag>)>) {
        if !self.offline {
            self.offline = true;
            self.buf.set_offline(Vec::new());
            if self.buf.has_spool() {
                for (body, tag) in undurable {
                    let first = tag.map_or(0, |t| t.1);
                    self.push(Lines { body, first });
                }
            }
        }
    }

    /// The database took a batch: memory first again. With acknowledgements waiting for
    /// durability (`hold`), only once the spool is drained: a batch in memory behind a spool
    /// backlog would hold its messages' acknowledgements, and the broker's window, for as long
    /// as the backlog takes.
    fn database_up(&mut self, hold: bool) {
        if self.offline && (!hold || self.buf.spool_drained()) {
            self.offline = false;
            self.buf.set_online();
        }
    }

    /// Whether memory holds batches.
    #[cfg(test)]
    fn has_memory(&self) -> bool {
        self.buf.in_memory().next().is_some()
    }

    fn push(&mut self, batch: Lines) {
        self.buf.push(batch);
    }

    fn next(&mut self) -> Option<(String, Tag)> {
        self.buf
            .next_item()
            .map(|(l, origin)| (l.body, (origin, l.first)))
    }

    /// The first message numbers of the batches it holds that are not durable yet: in memory,
    /// or spilled and not yet forced to disk.
    fn not_durable(&self) -> impl Iterator<Item = u64> + '_ {
        self.buf
            .in_memory()
            .map(|l| l.first)
            .chain(Some(self.buf.unsynced_mark()).filter(|m| *m < u64::MAX))
            .chain(self.syncing.filter(|m| *m < u64::MAX))
    }

    /// A job forcing what was spilled since the last to disk, if one is due and none runs.
    fn start_sync(&mut self) -> Option<SyncJob> {
        if self.syncing.is_some() {
            return None;
        }
        let job = self.buf.start_sync()?;
        self.syncing = Some(job.mark);
        Some(job)
    }

    /// The job from [`Store::start_sync`] ended.
    fn sync_done(&mut self, result: std::io::Result<()>) {
        if let Some(mark) = self.syncing.take() {
            self.buf.sync_done(mark, result);
        }
    }

    /// A batch written or rejected. The first half of a split batch has no origin of its own
    /// (the second half carries the batch's), so it settles nothing.
    fn settle(&mut self, origin: Option<Tag>) {
        if let Some((o, _)) = origin {
            self.buf.ack(o);
        }
    }

    /// Keeps what the writer did not write, for the next run; returns the lines it could not.
    fn close(&mut self, closed: Closed<Tag>) -> u64 {
        if let Some(body) = closed.rest {
            self.push(Lines { body, first: 0 });
        }
        let unsettled = closed
            .unsettled
            .into_iter()
            // A part of a split batch that does not settle it is kept like an item from memory.
            .map(|(body, tag)| {
                let (origin, first) = tag.unwrap_or((Origin::Memory, 0));
                (Lines { body, first }, origin)
            })
            .collect();
        self.buf.close(unsettled)
    }

    fn report(&self, metrics: &Metrics) {
        let s = self.buf.stats();
        metrics.set_buffer(s.queued_bytes, s.spooled_bytes, s.dropped_total);
    }
}

/// How long the broker may wait for acknowledgements while every write request is busy before
/// what waits goes to the spool (see [`run`]).
const SPILL_AFTER: Duration = Duration::from_secs(1);

/// The writer's clock is tokio's, so that its deadlines and the sleeps agree.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The writer task: lines in, batches out to the database. The schedule (batching, retries,
/// concurrency, splitting, closing) is [`Writer`]'s; this moves lines, batches and answers
/// between it, the channel, the store and the database.
pub async fn run(
    target: Target,
    cfg: WriterConfig,
    buffer: Buffer<Lines>,
    mut rx: mpsc::Receiver<Delivery>,
    metrics: Arc<Metrics>,
    mut durable: Option<DurableWriter>,
) {
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; points are only buffered");
            reqwest::Client::new()
        }
    };
    ensure_database(&client, &target).await;
    // Spilled batches are forced to disk by one job at a time on a blocking thread, each
    // covering everything spilled before it started (a group commit): an fsync per spilled
    // batch on this task took a quarter of its time at 2,500 agents (500 a second, 0.5 ms
    // each, up to 75 ms) while the broker waited for the acknowledgements behind them.
    let mut store = Store::new(buffer.deferring_sync());
    let mut syncing: Syncing = None;
    let mut writer = Writer::new(Settings {
        batch_size: cfg.batch_size,
        flush_interval: cfg.flush_interval,
        max_retry_delay: cfg.max_retry_delay,
        concurrency: cfg.concurrency,
    });
    let mut in_flight = FuturesUnordered::new();
    // Message numbers: the first in the partial batch, the highest received.
    let mut partial_first = 0u64;
    let mut received_max = 0u64;

    // Since when the broker has waited for acknowledgements with every request slot busy.
    let mut stalled_since: Option<Instant> = None;
    loop {
        if let Some(d) = &mut durable {
            let waiting = *d.pressure.borrow_and_update() >= acks::FLUSH_AT;
            let slots_busy = writer.requests_in_flight() >= cfg.concurrency;
            // A database slower than the agents must not hold the broker's window: while it
            // is closed the broker queues everything for this gateway, beats (QoS 0) too, and
            // drops messages once `max_queued_messages` is reached (measured: a fleet of 1,000
            // agents starting against VictoriaMetrics, whose first writes of new series take
            // seconds, lost data at the broker within two minutes). So what waits goes to the
            // spool as during an outage, and the acknowledgements move at the disk's pace.
            stalled_since = match (waiting && slots_busy && !store.offline, stalled_since) {
                (false, _) => None,
                (true, None) => Some(Instant::now()),
                (true, Some(t)) if t.elapsed() >= SPILL_AFTER => {
                    tracing::warn!(
                        requests_in_flight = writer.requests_in_flight(),
                        "the database is slower than the agents: spooling what waits, so the broker's window keeps moving"
                    );
                    store.database_down(
                        writer.take_undurable(|o: &Tag| matches!(o.0, Origin::Spool(_))),
                    );
                    None
                }
                (true, t) => t,
            };
            // The broker waits for acknowledgements: send the partial batch now, when a request
            // can take it (flushing on every message while all the slots are busy made
            // single-message batches, measured at a ninth of the rate), or into the spool once
            // the database has been slower than the agents for `SPILL_AFTER` (above).
            if waiting && (!slots_busy || store.offline) {
                if let Some(body) = writer.flush() {
                    store.push(Lines {
                        body,
                        first: std::mem::take(&mut partial_first),
                    });
                }
            }
        }
        for req in writer.start(now(), || store.next()) {
            let (client, target) = (client.clone(), target.clone());
            in_flight.push(async move { (req.id, write(&client, &target, &req.body).await) });
        }
        store.report(&metrics);
        if let Some(job) = store.start_sync() {
            syncing = Some(tokio::task::spawn_blocking(move || job.run()));
        }
        // (a failed fsync freezes the mark: what was spilled since may not be on disk)
        if let Some(d) = durable.as_ref().filter(|_| !store.buf.sync_failed()) {
            let held = writer
                .held()
                .filter(|((o, _), copied)| *o == Origin::Memory && !copied)
                .map(|((_, first), _)| *first);
            let below = acks::durable_below(
                held.chain(store.not_durable()).chain([partial_first]),
                received_max,
            );
            d.below.send_if_modified(|b| {
                let changed = *b != below;
                *b = below;
                changed
            });
        }
        let wake = writer.deadline().map(Instant::from_std);
        let pressure = async {
            match &mut durable {
                Some(d) => d.pressure.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((id, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                let Answer { status, retry_after, text } = answer;
                match writer.on_answer(id, status, retry_after.as_deref(), now()) {
                    Some(Settled::Written { lines, origin }) => {
                        metrics.points_written(lines as u64);
                        store.settle(origin);
                        store.database_up(durable.is_some());
                    }
                    Some(Settled::Retry { attempt, delay, .. }) => {
                        metrics.write_error();
                        if !store.offline {
                            store.database_down(writer.take_undurable(|o| matches!(o.0, Origin::Spool(_))));
                        }
                        // The first failure and every tenth: an outage is visible without
                        // flooding the log.
                        if attempt == 1 || attempt % 10 == 0 {
                            tracing::warn!(status = ?status, attempt, retry_in_ms = delay.as_millis() as u64,
                                error = %text.trim(), "database write failed; keeping the points");
                        }
                    }
                    Some(Settled::Split) => {}
                    Some(Settled::Rejected { line, lines, origin }) => {
                        metrics.lines_rejected(lines as u64);
                        tracing::warn!(status = ?status, line = %line.trim(), error = %text.trim(),
                            "the database rejected a line; dropped");
                        store.settle(origin);
                    }
                    // Every request in flight came from the writer, which knows its id.
                    None => {}
                }
            }
            line = rx.recv(), if !writer.is_closing() => match line {
                Some((l, seq)) => {
                    if seq > 0 {
                        received_max = received_max.max(seq);
                        if partial_first == 0 {
                            partial_first = seq;
                        }
                    }
                    if let Some(body) = writer.on_lines(&l, now()) {
                        store.push(Lines { body, first: std::mem::take(&mut partial_first) });
                    }
                }
                None => writer.close(),
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                if let Some(body) = writer.tick(now()) {
                    store.push(Lines { body, first: std::mem::take(&mut partial_first) });
                }
            }
            alive = pressure => {
                if !alive {
                    durable = None;
                }
            }
            _ = tokio::time::sleep_until(stalled_since.map_or_else(Instant::now, |t| t + SPILL_AFTER)), if stalled_since.is_some() => {}
            result = synced(&mut syncing), if syncing.is_some() => {
                syncing = None;
                store.sync_done(result);
            }
        }
        if let Some(closed) = writer.closed() {
            // the job running must end first: closing forces only what no job has taken
            if syncing.is_some() {
                let result = synced(&mut syncing).await;
                store.sync_done(result);
            }
            let lost = store.close(closed);
            if lost > 0 {
                tracing::warn!(
                    lines = lost,
                    "exiting with points not written (no spool_dir)"
                );
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(first: u64) -> Lines {
        Lines {
            body: format!("m,host=a v={first}i 1\n"),
            first,
        }
    }

    /// A store with a spool, two batches written to it during an outage.
    fn after_an_outage() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = leakmon_common::spool::Spool::open(dir.path(), 1 << 20).expect("spool");
        let mut store = Store::new(Buffer::new(1 << 20, Some(spool)).deferring_sync());
        store.database_down(Vec::new());
        store.push(lines(1));
        store.push(lines(2));
        (dir, store)
    }

    #[test]
    fn with_acknowledgements_held_memory_comes_back_only_once_the_spool_is_drained() {
        let (_dir, mut store) = after_an_outage();
        assert!(!store.has_memory(), "an outage goes to disk");
        // the first write after the outage: the backlog is still on disk
        let (_, tag) = store.next().expect("backlog");
        store.settle(Some(tag));
        store.database_up(true);
        store.push(lines(3));
        assert!(
            !store.has_memory(),
            "behind a backlog, new batches stay on disk (durable: their messages are acknowledged)"
        );
        // drained: memory again
        while let Some((_, tag)) = store.next() {
            store.settle(Some(tag));
        }
        store.database_up(true);
        store.push(lines(4));
        assert!(store.has_memory());
        // without held acknowledgements, memory at the first write, as before
        let (_dir, mut store) = after_an_outage();
        store.database_up(false);
        store.push(lines(3));
        assert!(store.has_memory());
    }

    #[test]
    fn a_spilled_batch_holds_its_messages_back_until_the_spool_is_forced_to_disk() {
        let (_dir, mut store) = after_an_outage();
        let not_durable = |s: &Store| s.not_durable().filter(|m| *m > 0).min();
        assert_eq!(not_durable(&store), Some(1), "spilled, not yet forced");
        let job = store.start_sync().expect("a job");
        assert!(store.start_sync().is_none(), "one job at a time");
        store.push(lines(3));
        assert_eq!(not_durable(&store), Some(1), "the job runs");
        store.sync_done(job.run());
        assert_eq!(
            not_durable(&store),
            Some(3),
            "forced: 1 and 2 are durable, 3 waits"
        );
        let job = store.start_sync().expect("the next job");
        store.sync_done(job.run());
        assert_eq!(not_durable(&store), None);
    }
}
