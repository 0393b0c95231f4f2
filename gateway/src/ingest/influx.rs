//! The InfluxDB writer: batches lines by size and time, gzips each request, writes through the
//! v1 (`/write?db=`) or v2 (`/api/v2/write`) API, retries by [`policy`], and keeps what the
//! database has not taken in the [`Buffer`] (memory, then disk).
//!
//! The client is reqwest with rustls/ring rather than the `influxdb2` crate, which is stale
//! (reqwest 0.11, OpenSSL, no batching, no retries); the API itself is one POST.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::buffer::{Buffer, Origin};
use super::policy::{self, Outcome};
use crate::config::{Api, InfluxConfig};
use crate::metrics::Metrics;

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

/// One write; the status (None if no answer) and its Retry-After and body.
async fn write(
    client: &reqwest::Client,
    t: &Target,
    body: &str,
) -> (Option<u16>, Option<String>, String) {
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
            (Some(status), ra, text)
        }
        Err(e) => (None, None, e.to_string()),
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

struct Current {
    body: String,
    lines: usize,
    origin: Origin,
    attempt: u32,
}

impl Current {
    fn new(body: String, origin: Origin) -> Self {
        Current {
            lines: body.matches('\n').count(),
            body,
            origin,
            attempt: 0,
        }
    }
}

type Answer = (Option<u16>, Option<String>, String);

/// The writer task: lines in, batches out to the database.
pub async fn run(
    target: Target,
    cfg: WriterConfig,
    mut buffer: Buffer,
    mut rx: mpsc::Receiver<String>,
    metrics: Arc<Metrics>,
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
    let mut batch = String::new();
    let mut batch_lines = 0usize;
    let mut batch_started: Option<Instant> = None;
    // Batches to send before the buffer's: failed ones awaiting retry, halves of split ones.
    let mut again: VecDeque<Current> = VecDeque::new();
    // After a failure every new send waits: the database is likely down or overloaded.
    let mut retry_at: Option<Instant> = None;
    let mut closing = false;
    let mut inflight = FuturesUnordered::new();

    loop {
        let now = Instant::now();
        while !closing && inflight.len() < cfg.concurrency && retry_at.is_none_or(|t| t <= now) {
            retry_at = None;
            let next = again.pop_front().or_else(|| {
                buffer
                    .next()
                    .map(|(body, origin)| Current::new(body, origin))
            });
            let Some(mut c) = next else { break };
            c.attempt += 1;
            let (client, target) = (client.clone(), target.clone());
            inflight.push(async move {
                let answer: Answer = write(&client, &target, &c.body).await;
                (c, answer)
            });
        }
        metrics.set_buffer(
            buffer.mem_bytes() as u64,
            buffer.spool_bytes(),
            buffer.dropped_lines(),
        );
        let flush_at = batch_started.map(|t| t + cfg.flush_interval);
        tokio::select! {
            Some((c, (status, ra, text))) = inflight.next(), if !inflight.is_empty() => {
                match policy::classify(status, ra.as_deref(), c.lines, c.attempt, cfg.max_retry_delay) {
                    Outcome::Written => {
                        metrics.points_written(c.lines as u64);
                        buffer.done(c.origin);
                    }
                    Outcome::Retry(d) => {
                        metrics.write_error();
                        if c.attempt == 1 || c.attempt % 10 == 0 {
                            tracing::warn!(status = ?status, attempt = c.attempt, retry_in_ms = d.as_millis() as u64,
                                error = %text.trim(), "database write failed; keeping the points");
                        }
                        let at = Instant::now() + d;
                        retry_at = Some(retry_at.map_or(at, |t| t.max(at)));
                        again.push_front(c);
                    }
                    Outcome::Split => {
                        let (a, b) = policy::split_batch(&c.body);
                        again.push_front(Current::new(b, c.origin));
                        again.push_front(Current::new(a, Origin::Part));
                    }
                    Outcome::Rejected => {
                        metrics.lines_rejected(c.lines as u64);
                        tracing::warn!(status = ?status, line = %c.body.trim(), error = %text.trim(),
                            "the database rejected a line; dropped");
                        buffer.done(c.origin);
                    }
                }
            }
            line = rx.recv(), if !closing => match line {
                Some(l) => {
                    if batch.is_empty() {
                        batch_started = Some(Instant::now());
                    }
                    batch_lines += l.matches('\n').count();
                    batch.push_str(&l);
                    if batch_lines >= cfg.batch_size {
                        buffer.push(std::mem::take(&mut batch), std::time::Instant::now());
                        batch_lines = 0;
                        batch_started = None;
                    }
                }
                None => closing = true,
            },
            _ = tokio::time::sleep_until(flush_at.unwrap_or(now)), if flush_at.is_some() => {
                buffer.push(std::mem::take(&mut batch), std::time::Instant::now());
                batch_lines = 0;
                batch_started = None;
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or(now)), if retry_at.is_some() => {}
        }
        if closing && inflight.is_empty() {
            if !batch.is_empty() {
                buffer.push(std::mem::take(&mut batch), std::time::Instant::now());
            }
            let pending: Vec<(String, Origin)> =
                again.drain(..).map(|c| (c.body, c.origin)).collect();
            let lost = buffer.close(pending, std::time::Instant::now());
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
