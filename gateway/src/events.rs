//! `leakmon-gateway events`: tails the gateway events and alerts from the broker, one line
//! each (or the raw JSON with `--json`). Rendering is pure (`render`).

use std::io::IsTerminal;
use std::time::{Duration, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;

use crate::config::{Config, DEFAULT_PATH};

pub const USAGE: &str = "\
Usage: leakmon-gateway events [--config PATH] [--url MQTT_URL] [--json]

  --config PATH    read the broker settings (url, TLS, credentials, topic prefix) from this
                   gateway config (default /etc/leakmon/gateway.toml, if it exists)
  --url URL        the broker, overriding the config (e.g. mqtt://broker:1883)
  --json           print each message's JSON, one per line";

pub struct EventsArgs {
    pub config: Option<std::path::PathBuf>,
    pub url: Option<String>,
    pub json: bool,
}

pub fn parse(args: &[String]) -> Result<EventsArgs, String> {
    let mut out = EventsArgs {
        config: None,
        url: None,
        json: false,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--config" => {
                i += 1;
                out.config = Some(args.get(i).ok_or("--config needs a path")?.into());
            }
            "--url" => {
                i += 1;
                out.url = Some(args.get(i).ok_or("--url needs a URL")?.clone());
            }
            "--json" => out.json = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
        i += 1;
    }
    Ok(out)
}

fn time(ms: &Value) -> String {
    let ms = ms.as_u64().unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// One line for a gateway event (`alert = false`) or an alert.
pub fn render(v: &Value, alert: bool, color: bool) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
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
        cfg.mqtt.url = u.clone();
    }
    let connector = cfg
        .mqtt
        .connector("mqtt")
        .map_err(|e| format!("invalid configuration: {e}"))?;
    let topics =
        leakmon_protocol::Topics::new(&cfg.mqtt.topic_prefix).map_err(|e| e.to_string())?;
    let (events, alerts) = (topics.gateway_events(), topics.alerts());
    let id = format!("leakmon-events-{}", std::process::id());
    let (client, mut el) = AsyncClient::new(connector.options(&id, None), 16);
    let color = std::io::stdout().is_terminal() && !a.json;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
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
            Err(e) => {
                eprintln!("broker {}: {e}; retrying", cfg.mqtt.url);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
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
}
