//! Stock Grafana dashboards built for Telegraf, run against what leakmon wrote.
//!
//! tests/data/telegraf-dashboards.txt holds every InfluxQL query (panel targets and template
//! variables) of the dashboards 928, 61 (host and Docker rows), 10585, 3056 and 1150, with the
//! public copy each came from. A real agent samples this machine and a container labelled as
//! a Swarm task, a real gateway writes into a real InfluxDB 1.6.7, and each query runs with
//! its variables filled in as Grafana fills them. Every panel must return data, except those
//! that ask for Telegraf's metrics about itself: those are listed in [`NOT_WRITTEN`] with why, and
//! the list is checked against the database, so it cannot name something that is written.

use std::collections::BTreeMap;
use std::time::Duration;

use leakmon_e2e::{docker, wait_for, Agent, Broker, Gateway, Service};

const S: fn(u64) -> Duration = Duration::from_secs;
const DASHBOARDS: &str = include_str!("data/telegraf-dashboards.txt");

/// Measurements (and fields, by prefix) that Telegraf writes and leakmon does not, so the
/// panels asking only for them stay empty; docs/schema.md says the same.
const NOT_WRITTEN: &[(&str, Option<&str>, &str)] = &[
    ("internal_agent", None, "Telegraf's metrics about itself"),
    ("internal_gather", None, "Telegraf's metrics about itself"),
    ("internal_write", None, "Telegraf's metrics about itself"),
];

#[derive(Debug, Default)]
struct Dashboard {
    id: String,
    source: String,
    vars: Vec<(String, String)>,
    /// (panel title, target ref, query)
    queries: Vec<(String, String, String)>,
}

fn parse(text: &str) -> Vec<Dashboard> {
    let mut out: Vec<Dashboard> = Vec::new();
    let mut panel = String::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (kind, rest) = line.split_once(' ').expect("`kind rest` lines");
        if kind == "dashboard" {
            out.push(Dashboard {
                id: rest.split(' ').next().unwrap_or_default().to_owned(),
                ..Dashboard::default()
            });
            continue;
        }
        let d = out.last_mut().expect("a dashboard line first");
        match kind {
            "source" => d.source = rest.to_owned(),
            "var" => {
                let (name, q) = rest.split_once(' ').expect("var NAME QUERY");
                d.vars.push((name.to_owned(), q.to_owned()));
            }
            "panel" => panel = rest.to_owned(),
            "query" => {
                let (r, q) = rest.split_once(' ').expect("query REF QUERY");
                d.queries.push((panel.clone(), r.to_owned(), q.to_owned()));
            }
            other => panic!("unknown line kind {other}"),
        }
    }
    out
}

/// Grafana's regex escaping of a variable's value inside `/.../`.
fn escape_regex(v: &str) -> String {
    let mut s = String::new();
    for c in v.chars() {
        if "\\^$.|?*+()[]{}/".contains(c) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Fills in Grafana's variables. Interval variables become 2 s: the dashboards' floor (10 s,
/// 30 s) would need minutes of data for a derivative, and the interval changes no query's
/// shape. Values inside a regex are escaped, as Grafana escapes them.
fn fill(q: &str, vars: &BTreeMap<String, String>) -> String {
    let mut q = q.replace("$timeFilter", "time > now() - 10m");
    for i in ["$__interval", "$interval", "$inter"] {
        q = q.replace(i, "2s");
    }
    // longest names first, so `$host` does not eat the start of `$hostname`
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let v = &vars[name];
        for pat in [format!("[[{name}]]"), format!("${name}")] {
            let mut out = String::new();
            let mut rest = q.as_str();
            while let Some(at) = rest.find(&pat) {
                out.push_str(&rest[..at]);
                // inside /.../ when an odd number of unescaped slashes came before on the line
                let in_regex = out.matches('/').count() % 2 == 1;
                out.push_str(&if in_regex { escape_regex(v) } else { v.clone() });
                rest = &rest[at + pat.len()..];
            }
            out.push_str(rest);
            q = out;
        }
    }
    q
}

/// Whether an answer holds at least one non-null value, and its error if any.
fn has_data(answer: &serde_json::Value) -> Result<bool, String> {
    let r = &answer["results"][0];
    if let Some(e) = r["error"].as_str() {
        return Err(e.to_owned());
    }
    if answer.is_null() {
        return Err("no answer".into());
    }
    Ok(r["series"].as_array().into_iter().flatten().any(|s| {
        s["values"].as_array().into_iter().flatten().any(|row| {
            row.as_array()
                .into_iter()
                .flatten()
                .skip(1)
                .any(|v| !v.is_null())
        })
    }))
}

/// The values a template variable query offers: the last column of each row (`SHOW TAG
/// VALUES` answers `key, value`; a `SELECT "host" FROM (...)` answers `time, host`).
fn values(answer: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for row in s["values"].as_array().into_iter().flatten() {
            if let Some(t) = row
                .as_array()
                .and_then(|r| r.last())
                .and_then(|v| v.as_str())
            {
                out.push(t.to_owned());
            }
        }
    }
    out
}

/// The measurement a query reads (`FROM "m"` or `FROM m`; a subquery's inner one).
fn measurement(q: &str) -> Option<String> {
    let at = q.rfind("FROM ").or_else(|| q.rfind("from "))? + 5;
    let rest = q[at..].trim_start();
    let name: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Why a query may come back empty, if it may.
fn why_empty(q: &str) -> Option<&'static str> {
    if q.contains("$Docker_Stack") {
        return Some("filters on `$Docker_Stack`, a variable dashboard 10585 never defines");
    }
    let m = measurement(q)?;
    NOT_WRITTEN
        .iter()
        .find(|(nm, field, _)| *nm == m && field.is_none_or(|f| q.contains(f)))
        .map(|(_, _, why)| *why)
}

#[test]
fn the_query_file_is_complete_and_parsed() {
    let ds = parse(DASHBOARDS);
    let ids: Vec<&str> = ds.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["928", "61", "10585", "3056", "1150"]);
    let n: Vec<usize> = ds.iter().map(|d| d.queries.len()).collect();
    assert_eq!(n, [86, 42, 18, 12, 11], "targets per dashboard");
    assert!(ds.iter().all(|d| d.source.contains(" @ ")));
    let vars: BTreeMap<String, String> = [("server".to_owned(), "edge.01".to_owned())].into();
    assert_eq!(
        fill(
            r#"SELECT last("uptime") FROM "system" WHERE host =~ /^$server$/ AND host = '$server' AND $timeFilter GROUP BY time($interval)"#,
            &vars
        ),
        r#"SELECT last("uptime") FROM "system" WHERE host =~ /^edge\.01$/ AND host = 'edge.01' AND time > now() - 10m GROUP BY time(2s)"#
    );
    assert_eq!(
        measurement(r#"SELECT "host" FROM (SELECT last("uptime") FROM "system" GROUP BY "host")"#)
            .as_deref(),
        Some("system")
    );
    assert!(why_empty(r#"SELECT mean("metrics_written") FROM "internal_write""#).is_some());
    assert!(why_empty(r#"SELECT mean("tcp_outrsts") FROM "net""#).is_none());
}

#[test]
fn stock_telegraf_dashboards_show_data_in_every_panel_leakmon_can_fill() {
    docker::ensure_test_image();
    let db = Service::influxdb();
    let broker = Broker::start();
    let node = "e2e-dash";
    let service = "e2e-dash-svc";
    let name = format!("{service}.1.e2etask{}", std::process::id());
    let container = docker::Container::run(
        &name,
        &[
            "--label",
            &format!("com.docker.swarm.service.name={service}"),
            "--label",
            "com.docker.swarm.task.id=e2etask",
            docker::TEST_IMAGE,
            "sleep",
            "600",
        ],
    );
    let engine_host = docker::run(&["info", "--format", "{{.Name}}"]);
    let gw = Gateway::start(&format!(
        "name = \"gw-dash\"\n[mqtt]\nurl = \"{}\"\n[influxdb]\nurl = \"{}\"\napi = \"v1\"\n\
         database = \"leakmon\"\nflush_interval = \"500ms\"\n",
        broker.url(),
        db.url()
    ));
    // The shipped defaults but the interval, `host.sockets` and `host.interrupts` (off by
    // default, as in Telegraf: 928's TCP state and interrupt panels need them).
    let _agent = Agent::start(&format!(
        "node = \"{node}\"\ninterval = \"1s\"\n[host]\nsockets = true\ninterrupts = true\n\
         [mqtt]\nurl = \"{}\"\n",
        broker.url()
    ));
    let q = |text: &str| db.influx_query("leakmon", text);
    // twelve samples: enough for a derivative over 2 s buckets in every series
    wait_for(S(60), || {
        let c = &q(&format!(
            "SELECT count(\"usage_total\") FROM \"docker_container_cpu\" WHERE \
             \"container_name\" = '{name}'"
        ))["results"][0]["series"][0]["values"][0][1];
        (c.as_u64().unwrap_or(0) >= 12).then_some(())
    })
    .unwrap_or_else(|| panic!("too few container samples; gateway log:\n{}", gw.log()));

    // NOT_WRITTEN names nothing leakmon writes
    for (m, field, _) in NOT_WRITTEN {
        let keys = values(&q(&format!("SHOW FIELD KEYS FROM \"{m}\"")));
        let written = match field {
            None => !keys.is_empty(),
            Some(f) => keys.iter().any(|k| k.starts_with(f)),
        };
        assert!(
            !written,
            "{m} {field:?} is written now: take it out of NOT_WRITTEN (and docs/schema.md)"
        );
    }

    let mut report = Vec::new();
    let mut failures = Vec::new();
    let (mut with_data, mut empty_by_design) = (0, 0);
    for d in parse(DASHBOARDS) {
        // the values a user picks in each dashboard's drop-downs
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for (var, _) in &d.vars {
            let v = match (d.id.as_str(), var.as_str()) {
                ("3056", "host") => engine_host.clone(),
                ("3056", "container") => service.to_owned(),
                (_, "server" | "host" | "Host") => node.to_owned(),
                (_, "container" | "Container") => name.clone(),
                (_, "mountpoint") => "/".to_owned(),
                (_, "cpu") => "cpu0".to_owned(),
                (_, "disk" | "netif") => String::new(), // from the drop-down's answer below
                (id, v) => panic!("dashboard {id}: no value chosen for ${v}"),
            };
            vars.insert(var.clone(), v);
        }
        // each drop-down's own query offers that value
        for (var, vq) in &d.vars {
            let offered = values(&q(&fill(vq, &vars)));
            let pick = match var.as_str() {
                // 928's regexes: `[a-z]d[\D]$|nvme[\d]n[\d]$` and `^(?!.*veth|all|tap).*$`
                "disk" => offered.iter().find(|n| {
                    let b = n.as_bytes();
                    (b.len() >= 3 && b[b.len() - 2] == b'd' && !b[b.len() - 1].is_ascii_digit())
                        || n.starts_with("nvme")
                }),
                "netif" => offered
                    .iter()
                    .find(|n| !n.contains("veth") && !n.contains("all") && !n.contains("tap")),
                _ => offered.iter().find(|o| **o == vars[var]),
            };
            match pick {
                Some(p) => {
                    vars.insert(var.clone(), p.clone());
                }
                None => failures.push(format!(
                    "dashboard {} variable ${var}: {vq} offers {offered:?}, not {:?}",
                    d.id, vars[var]
                )),
            }
        }
        for (panel, r, query) in &d.queries {
            let filled = fill(query, &vars);
            match (has_data(&q(&filled)), why_empty(query)) {
                (Ok(true), _) => with_data += 1,
                (Ok(false), Some(why)) => {
                    empty_by_design += 1;
                    report.push(format!("  {} {panel} {r}: empty: {why}", d.id));
                }
                (Ok(false), None) => failures.push(format!(
                    "dashboard {} panel {panel:?} target {r}: no data\n    {filled}",
                    d.id
                )),
                (Err(e), _) => failures.push(format!(
                    "dashboard {} panel {panel:?} target {r}: error {e}\n    {filled}",
                    d.id
                )),
            }
        }
    }
    eprintln!(
        "{with_data} targets with data, {empty_by_design} empty by design:\n{}",
        report.join("\n")
    );
    drop(container);
    assert!(
        failures.is_empty(),
        "{} of {} targets failed:\n{}\ngateway log:\n{}",
        failures.len(),
        with_data + empty_by_design + failures.len(),
        failures.join("\n"),
        gw.log()
    );
}
