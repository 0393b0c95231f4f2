//! `sink PORT`: a line-protocol sink for pricing the gateway apart from any database
//! (scripts/bench-fleet AGENTS sink). It answers InfluxDB's write APIs (`/write`, v1, and
//! `/api/v2/write`, gzip or not) at once with 204, parses every line it is sent (measurement,
//! tags, fields, timestamp; a line that does not parse is counted as bad) and counts: points,
//! bytes, requests; and for each `leakmon_agent` point (one per host report: `host` tag, `run`
//! and `seq` fields, the sample's time) which sequence numbers of which node arrived, and how
//! long after its sample time. A benchmark harness, not a mock: nothing is stored.
//!
//! `GET /stats`: `{"points":N,"bad":N,"requests":N,"bytes":N,"reports":N}` (running totals).
//! `GET /report?from=MS&to=MS`: latency percentiles of the host reports received in that
//! window (sample time to receipt), and over the whole run: reports, distinct (node, run, seq),
//! duplicates, and the seqs missing between each node's first and last (the load generator's
//! host reports have odd seqs, its containers reports the even ones).
//! `/query` (the gateway's `CREATE DATABASE`) and `/ping` answer as InfluxDB would.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Tally {
    points: u64,
    bad: u64,
    requests: u64,
    bytes: u64,
    reports: u64,
    /// (node, run) to the seqs received.
    seqs: HashMap<(String, u64), HashSet<u64>>,
    duplicates: u64,
    /// (received at, latency), ms.
    latency: Vec<(i64, i64)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Splits at the first unescaped `stop` byte outside double quotes (quotes count only where
/// `quotes`: in the field set).
fn split_at(s: &str, stop: u8, quotes: bool) -> (&str, &str) {
    let b = s.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' if quotes => quoted = !quoted,
            c if c == stop && !quoted => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
        i += 1;
    }
    (s, "")
}

/// A parsed line: measurement, tag set, field set, timestamp.
struct Line<'a> {
    measurement: &'a str,
    tags: &'a str,
    fields: &'a str,
    ts: i64,
}

fn parse(line: &str) -> Option<Line<'_>> {
    let (series, rest) = split_at(line, b' ', false);
    let (fields, ts) = split_at(rest, b' ', true);
    let (measurement, tags) = split_at(series, b',', false);
    let ts = ts.trim().parse().ok()?;
    if measurement.is_empty() || !fields.contains('=') {
        return None;
    }
    // every field `key=value`, the value a number, boolean or quoted string
    let mut f = fields;
    while !f.is_empty() {
        let (kv, rest) = split_at(f, b',', true);
        let (k, v) = kv.split_once('=')?;
        if k.is_empty() || v.is_empty() {
            return None;
        }
        f = rest;
    }
    Some(Line {
        measurement,
        tags,
        fields,
        ts,
    })
}

fn pair<'a>(set: &'a str, key: &str, quotes: bool) -> Option<&'a str> {
    let mut s = set;
    while !s.is_empty() {
        let (kv, rest) = split_at(s, b',', quotes);
        if let Some((k, v)) = kv.split_once('=') {
            if k == key {
                return Some(v);
            }
        }
        s = rest;
    }
    None
}

fn int(v: &str) -> Option<u64> {
    v.strip_suffix('i')
        .or_else(|| v.strip_suffix('u'))
        .unwrap_or(v)
        .parse()
        .ok()
}

fn take(t: &mut Tally, body: &str, at: i64) {
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(l) = parse(line) else {
            t.bad += 1;
            continue;
        };
        t.points += 1;
        if l.measurement != "leakmon_agent" {
            continue;
        }
        let (Some(node), Some(run), Some(seq)) = (
            pair(l.tags, "host", false),
            pair(l.fields, "run", true).and_then(int),
            pair(l.fields, "seq", true).and_then(int),
        ) else {
            t.bad += 1;
            continue;
        };
        t.reports += 1;
        if !t
            .seqs
            .entry((node.to_owned(), run))
            .or_default()
            .insert(seq)
        {
            t.duplicates += 1;
        }
        t.latency.push((at, at - l.ts));
    }
}

fn pct(v: &[i64], p: f64) -> i64 {
    if v.is_empty() {
        return -1;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(t: &Tally, from: i64, to: i64) -> String {
    let mut lat: Vec<i64> = t
        .latency
        .iter()
        .filter(|(at, _)| (from..=to).contains(at))
        .map(|(_, l)| *l)
        .collect();
    lat.sort_unstable();
    let mut distinct = 0u64;
    let mut missing = 0u64;
    for seqs in t.seqs.values() {
        distinct += seqs.len() as u64;
        let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
            continue;
        };
        // host reports every other seq
        let expected = (hi - lo) / 2 + 1;
        missing += expected.saturating_sub(seqs.len() as u64);
    }
    format!(
        "{{\"points\":{},\"bad\":{},\"reports\":{},\"distinct\":{distinct},\"duplicates\":{},\
         \"missing\":{missing},\"nodes\":{},\"window_reports\":{},\"latency_p50_ms\":{},\
         \"latency_p99_ms\":{},\"latency_max_ms\":{}}}",
        t.points,
        t.bad,
        t.reports,
        t.duplicates,
        t.seqs.len(),
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(-1)
    )
}

fn query_param(target: &str, key: &str) -> Option<i64> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn respond(w: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One connection: requests one after another (keep-alive), until the peer closes.
fn serve(stream: TcpStream, tally: Arc<Mutex<Tally>>) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut body = Vec::new();
    let mut text = String::new();
    loop {
        let mut request = String::new();
        if r.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (mut len, mut gzip, mut chunked) = (0usize, false, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "content-encoding" => gzip = v.eq_ignore_ascii_case("gzip"),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        if chunked {
            eprintln!("sink: a chunked request body; only Content-Length is read");
            respond(&mut w, "411 Length Required", "{}")?;
            return Ok(());
        }
        body.resize(len, 0);
        r.read_exact(&mut body)?;
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("POST", "/write") | ("POST", "/api/v2/write") => {
                let at = now_ms();
                text.clear();
                let ok = if gzip {
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_string(&mut text)
                        .is_ok()
                } else {
                    match std::str::from_utf8(&body) {
                        Ok(s) => {
                            text.push_str(s);
                            true
                        }
                        Err(_) => false,
                    }
                };
                {
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    t.requests += 1;
                    t.bytes += len as u64;
                    if ok {
                        take(&mut t, &text, at);
                    } else {
                        t.bad += 1;
                    }
                }
                if ok {
                    write!(w, "HTTP/1.1 204 No Content\r\n\r\n")?;
                } else {
                    respond(&mut w, "400 Bad Request", "{\"error\":\"unreadable body\"}")?;
                }
            }
            ("POST", "/query") | ("GET", "/query") => {
                respond(&mut w, "200 OK", "{\"results\":[{\"statement_id\":0}]}")?
            }
            (_, "/ping") | (_, "/health") => write!(w, "HTTP/1.1 204 No Content\r\n\r\n")?,
            ("GET", "/stats") => {
                let t = tally.lock().unwrap_or_else(|p| p.into_inner());
                let s = format!(
                    "{{\"points\":{},\"bad\":{},\"requests\":{},\"bytes\":{},\"reports\":{}}}",
                    t.points, t.bad, t.requests, t.bytes, t.reports
                );
                drop(t);
                respond(&mut w, "200 OK", &s)?
            }
            ("GET", "/report") => {
                let from = query_param(target, "from").unwrap_or(0);
                let to = query_param(target, "to").unwrap_or(i64::MAX);
                let s = report(&tally.lock().unwrap_or_else(|p| p.into_inner()), from, to);
                respond(&mut w, "200 OK", &s)?
            }
            _ => respond(&mut w, "404 Not Found", "{}")?,
        }
        w.flush()?;
    }
}

fn main() {
    let port = std::env::args().nth(1).unwrap_or_default();
    let listener = match TcpListener::bind(format!("127.0.0.1:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("usage: sink PORT ({e})");
            std::process::exit(2);
        }
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    for stream in listener.incoming().flatten() {
        let tally = tally.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, tally) {
                eprintln!("sink: connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_with_escapes_and_quoted_spaces() {
        let l = parse(r#"docker_container_status,container_name=a\ b,host=n1 state="up and running",pid=3i 1700000000000"#)
            .expect("parses");
        assert_eq!(l.measurement, "docker_container_status");
        assert_eq!(l.tags, r"container_name=a\ b,host=n1");
        assert_eq!(pair(l.fields, "pid", true).and_then(int), Some(3));
        assert_eq!(l.ts, 1_700_000_000_000);
        assert!(parse("cpu usage=1").is_none(), "no timestamp");
        assert!(parse("cpu 1700000000000").is_none(), "no field");
        let mut t = Tally::default();
        take(
            &mut t,
            "leakmon_agent,host=n1 run=1i,seq=1i 1000\nleakmon_agent,host=n1 run=1i,seq=5i 1000\n\
             leakmon_agent,host=n1 run=1i,seq=5i 1000\ngarbage\n",
            1250,
        );
        assert_eq!((t.points, t.bad, t.reports, t.duplicates), (3, 1, 3, 1));
        let r = report(&t, 0, 2000);
        assert!(r.contains("\"missing\":1"), "{r}");
        assert!(r.contains("\"latency_p50_ms\":250"), "{r}");
    }
}
