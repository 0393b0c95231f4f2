//! `leakmon-gateway status`: the fleet as a table, read from a gateway's HTTP API.
//! Rendering is pure (`render`); the command fetches and prints, once or every few seconds.

use leakmon_common::cli::printable;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use serde_json::Value;

use leakmon_common::args::{self, Arg, Command, Stop};

pub const USAGE: &str = "\
leakmon-gateway status: the fleet as a table, from a gateway's HTTP API

Usage: leakmon-gateway status [--config PATH | --url URL] [--watch [SECONDS]] [--json]

  --config PATH    read the API's address (http.listen) from this gateway config (default
                   /etc/leakmon/gateway.toml, if it exists)
  --url URL        the gateway's HTTP API (default from the config, else
                   http://127.0.0.1:9900)
  --watch [SECS]   refresh every SECS seconds (default 2, at least 0.2) until Ctrl-C
  --json           print the API's JSON instead of a table
  --help           print this help and exit";

const COMMAND: Command = Command::subcommand("leakmon-gateway status", USAGE);

pub struct StatusArgs {
    /// `--url`, if given.
    pub url: Option<String>,
    pub config: Option<std::path::PathBuf>,
    pub watch: Option<Duration>,
    pub json: bool,
}

/// The `--watch` period: a finite, non-negative number of seconds, at least 0.2 so a typo
/// does not hammer the gateway. (Checked here: `Duration::from_secs_f64` panics on `inf`.)
struct Every(Duration);

impl std::str::FromStr for Every {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 => Ok(Every(Duration::from_secs_f64(f.max(0.2)))),
            _ => Err("expected a number of seconds"),
        }
    }
}

/// `status`'s arguments (after the word `status`).
pub fn parse(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Result<StatusArgs, Stop> {
    args::parse(&COMMAND, argv, |f| {
        let mut out = StatusArgs {
            url: None,
            config: None,
            watch: None,
            json: false,
        };
        while let Some(arg) = f.next()? {
            match arg {
                Arg::Long("url") => out.url = Some(f.value()?),
                Arg::Long("config") | Arg::Short('c') => out.config = Some(f.path()?),
                Arg::Long("watch") => {
                    let every = f.optional_value::<Every>()?;
                    out.watch = Some(every.map_or(Duration::from_secs(2), |e| e.0));
                }
                Arg::Long("json") => out.json = true,
                other => return Err(other.unexpected()),
            }
        }
        Ok(out)
    })
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|f| format!("{f:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn ago(now_ms: i64, then: &Value) -> String {
    match then.as_i64() {
        Some(t) if t > 0 => {
            let s = (now_ms - t).max(0) / 1000;
            if s < 120 {
                format!("{s}s ago")
            } else if s < 7200 {
                format!("{}m ago", s / 60)
            } else {
                format!("{}h ago", s / 3600)
            }
        }
        _ => "-".into(),
    }
}

fn bytes(v: &Value) -> String {
    match v.as_u64() {
        Some(b) if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{}K", b / 1024),
        None => "-".into(),
    }
}

/// Pads each column to its widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// The nodes table and, below it, every container.
pub fn render(api: &Value, now_ms: i64, color: bool) -> String {
    let paint = |state: &str| -> String {
        if !color {
            return state.to_owned();
        }
        let code = match state {
            "online" | "healthy" => "32",
            "stale" | "starting" => "33",
            "offline" | "unhealthy" => "31",
            _ => "0",
        };
        format!("\x1b[{code}m{state}\x1b[0m")
    };
    let empty = Vec::new();
    let nodes = api["nodes"].as_array().unwrap_or(&empty);
    let mut rows = vec![[
        "NODE",
        "STATE",
        "ROLE",
        "SWARM",
        "LAST SEEN",
        "CPU%",
        "MEM%",
        "DISK%",
        "TEMP",
        "LOAD",
        "CONTAINERS",
        "UNHEALTHY",
    ]
    .map(String::from)
    .to_vec()];
    let mut crows = vec![["CONTAINER", "NODE", "STATE", "HEALTH", "CPU%", "MEM"]
        .map(String::from)
        .to_vec()];
    for n in nodes {
        let h = &n["host"];
        let c = &n["containers"];
        let unhealthy: Vec<String> = c["unhealthy"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(printable)).collect())
            .unwrap_or_default();
        rows.push(vec![
            printable(n["node"].as_str().unwrap_or("?")),
            printable(n["state"].as_str().unwrap_or("?")),
            printable(n["swarm_role"].as_str().unwrap_or("-")),
            printable(n["swarm"].as_str().unwrap_or("-")),
            ago(now_ms, &n["last_seen"]),
            num(&h["cpu_busy_percent"], 1),
            num(&h["mem_used_percent"], 1),
            num(&h["disk_used_percent_max"], 1),
            num(&h["temp_max"], 1),
            num(&h["load1"], 2),
            match (c["running"].as_u64(), c["total"].as_u64()) {
                (Some(r), Some(t)) => format!("{r}/{t}"),
                _ => "-".into(),
            },
            if unhealthy.is_empty() {
                "-".into()
            } else {
                unhealthy.join(",")
            },
        ]);
        for k in c["list"].as_array().unwrap_or(&empty) {
            crows.push(vec![
                printable(k["name"].as_str().unwrap_or("?")),
                printable(n["node"].as_str().unwrap_or("?")),
                printable(k["state"].as_str().unwrap_or("?")),
                printable(k["health"].as_str().unwrap_or("-")),
                num(&k["cpu_percent"], 1),
                bytes(&k["mem_usage"]),
            ]);
        }
    }
    // Colour after padding, so escape codes do not skew the columns.
    let mut out = table(&rows);
    if crows.len() > 1 {
        out.push('\n');
        out.push_str(&table(&crows));
    }
    if color {
        for s in [
            "online",
            "offline",
            "stale",
            "unhealthy",
            "healthy",
            "starting",
        ] {
            out = out.replace(&format!(" {s} "), &format!(" {} ", paint(s)));
        }
    }
    out
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let u = format!("{}/api/v1/nodes", url.trim_end_matches('/'));
    let r = client
        .get(&u)
        .send()
        .await
        .map_err(|e| format!("{u}: {e}"))?;
    let body = r.text().await.map_err(|e| format!("{u}: {e}"))?;
    serde_json::from_str(&body).map_err(|e| format!("{u}: not the nodes API ({e})"))
}

/// The API's base URL for a gateway listening on `listen` (`http.listen`): a wildcard
/// address is reached on loopback. `None` when the server is off (empty) or `listen` is not
/// an address.
pub fn api_url(listen: &str) -> Option<String> {
    let addr: std::net::SocketAddr = listen.parse().ok()?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Some(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, addr.port())
    ))
}

/// `a` with its `url` settled ([`resolve_url`]).
pub fn resolve(mut a: StatusArgs) -> Result<StatusArgs, String> {
    a.url = Some(resolve_url(&a)?);
    Ok(a)
}

/// Where to ask: `--url`, else the config's `http.listen` (the given config, or the default
/// one if it exists), else the default address.
fn resolve_url(a: &StatusArgs) -> Result<String, String> {
    if let Some(u) = &a.url {
        return Ok(u.clone());
    }
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(crate::config::DEFAULT_PATH));
    if a.config.is_none() && !path.exists() {
        return Ok("http://127.0.0.1:9900".into());
    }
    let cfg = crate::config::Config::load(&path, true)
        .map_err(|e| format!("invalid configuration: {e}"))?;
    api_url(&cfg.http.listen).ok_or_else(|| {
        format!(
            "{}: http.listen is {:?}: the gateway's HTTP API is off; set http.listen (e.g. \"127.0.0.1:9900\") or pass --url",
            path.display(),
            cfg.http.listen
        )
    })
}

/// Runs the command (its `url` settled by [`resolve`]); exit code 0, or 1 if the gateway
/// cannot be reached (once mode).
pub async fn run(a: StatusArgs) -> u8 {
    let url = a
        .url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9900".into());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let tty = std::io::stdout().is_terminal();
    let color = leakmon_common::cli::color(tty);
    loop {
        let now = leakmon_common::now_ms();
        let text = match fetch(&client, &url).await {
            Ok(v) if a.json => format!("{v:#}\n"),
            Ok(v) => render(&v, now, color),
            Err(e) if a.watch.is_none() => {
                eprintln!("leakmon-gateway status: {e}");
                return 1;
            }
            Err(e) => format!("waiting for the gateway: {e}\n"),
        };
        match a.watch {
            None => {
                print!("{text}");
                return 0;
            }
            Some(every) => {
                if tty {
                    print!("\x1b[2J\x1b[H");
                }
                print!(
                    "leakmon fleet (from {}, every {:.0?}; Ctrl-C to stop)\n\n{text}",
                    url, every
                );
                tokio::time::sleep(every).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nodes_and_containers() {
        let api = serde_json::json!({"nodes": [{
            "node": "edge-01", "state": "online", "last_seen": 9_000, "swarm_role": "manager",
            "swarm": "ready/active",
            "host": {"cpu_busy_percent": 12.345, "mem_used_percent": 40.0,
                     "disk_used_percent_max": 71.2, "temp_max": 48.3, "load1": 0.5},
            "containers": {"running": 2, "total": 3, "unhealthy": ["db"],
                           "list": [{"name": "db", "state": "running", "health": "unhealthy",
                                     "cpu_percent": 1.5, "mem_usage": 73400320}]}
        }, {"node": "edge-02", "state": "stale", "last_seen": 0}]});
        let t = render(&api, 10_000, false);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"));
        assert!(lines[1].contains("edge-01") && lines[1].contains("online"));
        assert!(
            lines[1].contains("12.3") && lines[1].contains("2/3") && lines[1].contains("1s ago")
        );
        assert!(lines[1].contains("ready/active"));
        assert!(lines[2].contains("edge-02") && lines[2].contains("stale"));
        assert!(t.contains("CONTAINER"));
        assert!(t.contains("db") && t.contains("70.0M"));
        assert!(!t.contains('\x1b'), "no colour off a TTY");
        assert!(render(&api, 10_000, true).contains("\x1b[31munhealthy"));
    }

    fn parse_strs(a: &[&str]) -> Result<StatusArgs, Stop> {
        parse(a.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn hostile_names_are_shown_escaped() {
        let api = serde_json::json!({"nodes": [{
            "node": "edge\u{1b}]0;pwned\u{7}", "state": "online\n", "last_seen": 9_000,
            "containers": {"list": [{"name": "db\u{202e}", "state": "running"}]}
        }]});
        let out = render(&api, 10_000, false);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{202e}'));
        assert!(out.contains("edge\\u{1b}]0;pwned\\u{7}"), "{out}");
        assert!(out.contains("db\\u{202e}"), "{out}");
    }

    #[test]
    fn args() {
        let a = parse_strs(&["--watch", "5", "--url", "http://x:1"]).expect("space");
        assert_eq!(a.watch, Some(Duration::from_secs(5)));
        assert_eq!(a.url.as_deref(), Some("http://x:1"));
        let a = parse_strs(&["--watch=0.5", "--url=http://y:2", "--json"]).expect("=");
        assert_eq!(a.watch, Some(Duration::from_millis(500)));
        assert_eq!(a.url.as_deref(), Some("http://y:2"));
        assert!(a.json);
        let a = parse_strs(&["--watch", "--json"]).expect("watch without a value");
        assert_eq!(a.watch, Some(Duration::from_secs(2)));
        assert!(a.json);
        let a = parse_strs(&["--watch", "0"]).expect("clamped");
        assert_eq!(a.watch, Some(Duration::from_millis(200)));
        let a = parse_strs(&[]).expect("defaults");
        assert_eq!((a.url, a.watch, a.json), (None, None, false));
        let a = parse_strs(&["--config", "/g.toml"]).expect("config");
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("/g.toml")));
    }

    #[test]
    fn the_api_address_from_http_listen() {
        assert_eq!(
            api_url("127.0.0.1:9900").as_deref(),
            Some("http://127.0.0.1:9900")
        );
        assert_eq!(
            api_url("0.0.0.0:9911").as_deref(),
            Some("http://127.0.0.1:9911")
        );
        assert_eq!(api_url("[::]:9912").as_deref(), Some("http://[::1]:9912"));
        assert_eq!(
            api_url("10.0.0.5:80").as_deref(),
            Some("http://10.0.0.5:80")
        );
        assert_eq!(api_url(""), None, "the server is off");
    }

    #[test]
    fn a_config_names_where_to_ask_and_an_off_server_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "[http]\nlisten = \"0.0.0.0:9955\"\n").expect("write");
        let args = |config: &std::path::Path, url: Option<&str>| StatusArgs {
            url: url.map(str::to_owned),
            config: Some(config.to_owned()),
            watch: None,
            json: false,
        };
        assert_eq!(
            resolve_url(&args(&path, None)).as_deref(),
            Ok("http://127.0.0.1:9955")
        );
        assert_eq!(
            resolve_url(&args(&path, Some("http://x:1"))).as_deref(),
            Ok("http://x:1"),
            "--url wins"
        );
        std::fs::write(&path, "[http]\nlisten = \"\"\n").expect("write");
        let e = resolve_url(&args(&path, None)).expect_err("off");
        assert!(e.contains("http.listen"), "{e}");
        let e = resolve_url(&args(&dir.path().join("missing.toml"), None)).expect_err("missing");
        assert!(e.contains("invalid configuration"), "{e}");
    }

    #[test]
    fn help_and_bad_args() {
        let h = parse_strs(&["--help"]).err().expect("help");
        assert_eq!((h.exit_code(), h.to_string()), (0, USAGE.to_owned()));
        assert!(matches!(parse_strs(&["-h"]), Err(Stop::Answered(_))));
        for (a, named) in [
            (&["--nope"][..], "'--nope'"),
            (&["--url"], "'--url'"),
            (&["--url", "--json"], "'--url'"),
            (&["--watch=inf"], "--watch"),
            (&["--watch=soon"], "--watch"),
            (&["--json=1"], "'--json'"),
            (&["--version"], "'--version'"),
        ] {
            let stop = parse_strs(a).err().expect("invalid");
            let e = stop.refusal().unwrap_or_default();
            let ok = e.starts_with("leakmon-gateway status: ") && e.contains(named);
            assert!(ok, "{a:?}: {e}");
            assert!(e.contains("Usage: leakmon-gateway status"), "{e}");
        }
    }
}
