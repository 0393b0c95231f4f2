//! `leakmon-gateway events`: tails the gateway events and alerts from the broker, one line
//! each (or the raw JSON with `--json`). Rendering is pure (`render`).

use std::io::IsTerminal;
use std::time::{Duration, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;

use leakmon_common::args::{self, Arg, Command, Stop};
use leakmon_common::mqtt::{BrokerUrls, Failover, Retry};

use crate::config::{Config, DEFAULT_PATH};

pub const USAGE: &str = "\
leakmon-gateway events: gateway events and alerts from the broker, as they come

Usage: leakmon-gateway events [--config PATH] [--url MQTT_URL] [--json]

  --config PATH    read the broker settings (url, TLS, credentials, topic prefix) from this
                   gateway config (default /etc/leakmon/gateway.toml, if it exists)
  --url URL        the broker, overriding the config (e.g. mqtt://broker:1883)
  --json           print each message's JSON, one per line
  --help           print this help and exit";

const COMMAND: Command = Command::subcommand("leakmon-gateway events", USAGE);

pub struct EventsArgs {
    pub config: Option<std::path::PathBuf>,
    pub url: Option<String>,
    pub json: bool,
}

/// `events`'s arguments (after the word `events`).
pub fn parse(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Result<EventsArgs, Stop> {
    args::parse(&COMMAND, argv, |f| {
        let mut out = EventsArgs {
            config: None,
            url: None,
            json: false,
        };
        while let Some(arg) = f.next()? {
            match arg {
                // `-c` as on the gateway itself.
                Arg::Long("config") | Arg::Short('c') => out.config = Some(f.path()?),
                Arg::Long("url") => out.url = Some(f.value()?),
                Arg::Long("json") => out.json = true,
                other => return Err(other.unexpected()),
            }
        }
        Ok(out)
    })
}

/// The latest time RFC 3339 can write (9999-12-31T23:59:59.999Z), in ms.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// An event's time; one past the year 9999 (or not a number) is shown as the raw value, not
/// formatted (the formatter would panic on it).
fn time(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) if ms <= LAST_RFC3339_MS => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => format!("ts={}", leakmon_common::cli::printable(&ms.to_string())),
    }
}

/// One line for a gateway event (`alert = false`) or an alert.
pub fn render(v: &Value, alert: bool, color: bool) -> String {
    // names and messages come from the network: printed, never interpreted
    let s = |k: &str| leakmon_common::cli::printable(v[k].as_str().unwrap_or("-"));
    let (what, code) = if alert {
        let state = s("state");
        let code = match (state.as_str(), v["severity"].as_str()) {
            ("resolved", _) => "32",
            (_, Some("critical")) => "31",
            (_, Some("warning")) => "33",
            _ => "0",
        };
        (
            format!(
                "ALERT {} {:<8} {}",
                state.to_uppercase(),
                s("severity"),
                s("alert")
            ),
            code,
        )
    } else {
        let kind = s("kind");
        let code = match kind.as_str() {
            "node_down" | "mass_failure" | "action_failed" | "failover_impossible" => "31",
            "node_up" | "reactivate" | "gateway_active" => "32",
            _ => "33",
        };
        let dry = if v["dry_run"] == true {
            " (dry run)"
        } else {
            ""
        };
        (format!("EVENT {kind}{dry}"), code)
    };
    let what = if color {
        format!("\x1b[{code}m{what}\x1b[0m")
    } else {
        what
    };
    let text = if alert { s("summary") } else { s("message") };
    format!("{}  {what}  {}  {text}", time(&v["ts"]), s("node"))
}

pub async fn run(a: EventsArgs) -> Result<(), String> {
    let path = a
        .config
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_PATH));
    let mut cfg = Config::load(&path, a.config.is_some())
        .map_err(|e| format!("invalid configuration: {e}"))?;
    if let Some(u) = &a.url {
        cfg.mqtt.url = BrokerUrls::from(u.as_str());
    }
    let connector = cfg
        .mqtt
        .connector("mqtt")
        .map_err(|e| format!("invalid configuration: {e}"))?;
    let topics =
        leakmon_protocol::Topics::new(&cfg.mqtt.topic_prefix).map_err(|e| e.to_string())?;
    let (events, alerts) = (topics.gateway_events(), topics.alerts());
    let id = format!("leakmon-events-{}", std::process::id());
    let color = leakmon_common::cli::color(std::io::stdout().is_terminal()) && !a.json;
    let mut failover = Failover::for_connector(&connector);
    loop {
        let broker = failover.current();
        let (client, mut el) = AsyncClient::new(connector.options(broker, &id, None), 16);
        let mut accepted_at = None;
        let e = loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    accepted_at = Some(std::time::Instant::now());
                    for t in [&events, &alerts] {
                        let _ = client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if a.json {
                        println!("{}", String::from_utf8_lossy(&p.payload));
                        continue;
                    }
                    match serde_json::from_slice::<Value>(&p.payload) {
                        Ok(v) => println!("{}", render(&v, p.topic == alerts, color)),
                        Err(_) => eprintln!("(not JSON on {})", p.topic),
                    }
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        eprintln!("broker {}: {e}; retrying", connector.url(broker));
        if failover.ended(accepted_at.map(|t| t.elapsed())) == Retry::Backoff {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_and_alert_lines() {
        let e = json!({"kind":"node_down","node":"w4","ts":0,"message":"node w4 is down","dry_run":true});
        assert_eq!(
            render(&e, false, false),
            "1970-01-01T00:00:00Z  EVENT node_down (dry run)  w4  node w4 is down"
        );
        let a = json!({"alert":"disk_full","state":"firing","severity":"warning","node":"w4","ts":0,"summary":"disk / at 93"});
        let line = render(&a, true, false);
        assert!(
            line.contains("ALERT FIRING warning  disk_full  w4  disk / at 93"),
            "{line}"
        );
        assert!(
            render(&a, true, true).contains("\x1b[33m"),
            "colour on a terminal"
        );
        assert!(!line.contains('\x1b'));
    }

    #[test]
    fn hostile_events_neither_panic_nor_drive_the_terminal() {
        // a time past the year 9999, a name with escape sequences and a newline
        let e = json!({"kind":"node_down","node":"w4\u{1b}[2J","ts":u64::MAX,"message":"a\nb"});
        let line = render(&e, false, false);
        assert!(line.starts_with(&format!("ts={}", u64::MAX)), "{line}");
        assert!(!line.contains('\x1b') && !line.contains('\n'), "{line}");
        let e = json!({"kind":"node_up","ts":"soon"});
        assert!(render(&e, false, false).starts_with("ts=\"soon\""));
        let e = json!({"kind":"node_up","ts":253_402_300_799_999u64});
        assert!(render(&e, false, false).starts_with("9999-12-31T23:59:59Z"));
    }

    fn parse_strs(a: &[&str]) -> Result<EventsArgs, Stop> {
        parse(a.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn args() {
        let a = parse_strs(&["--url", "mqtt://b:1883", "--json", "--config", "/g.toml"])
            .expect("space");
        assert_eq!(a.url.as_deref(), Some("mqtt://b:1883"));
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("/g.toml")));
        assert!(a.json);
        let a = parse_strs(&["--url=mqtt://c:1", "--config=/h.toml"]).expect("=");
        assert_eq!(a.url.as_deref(), Some("mqtt://c:1"));
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("/h.toml")));
        assert!(!a.json);
        let h = parse_strs(&["--help"]).err().expect("help");
        assert_eq!((h.exit_code(), h.to_string()), (0, USAGE.to_owned()));
        for (a, named) in [
            (&["--nope"][..], "'--nope'"),
            (&["--url"], "'--url'"),
            (&["--config", "--json"], "'--config'"),
            (&["--json=no"], "'--json'"),
        ] {
            let stop = parse_strs(a).err().expect("invalid");
            let e = stop.refusal().unwrap_or_default();
            let ok = e.starts_with("leakmon-gateway events: ") && e.contains(named);
            assert!(ok, "{a:?}: {e}");
        }
    }
}
