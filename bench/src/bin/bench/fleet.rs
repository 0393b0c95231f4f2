//! The fleet-scale scenario: scripts/bench-fleet at 1,000 to 10,000 simulated agents, into the
//! line-protocol sink (the gateway priced apart), into VictoriaMetrics and into InfluxDB 1.6.7,
//! and once without beats (what liveness costs).

use std::fmt::Write as _;
use std::path::Path;

use crate::measure::{self, Line};
use crate::{field, log, run_script};

/// Agents per run, smallest first.
pub const SIZES: [u32; 4] = [1000, 2500, 5000, 10000];

/// One `FLEETRUN` line, parsed.
struct Run {
    agents: f64,
    sink: String,
    beat_ms: f64,
    line: String,
}

impl Run {
    fn get(&self, key: &str) -> f64 {
        field(&self.line, key).unwrap_or(-1.0)
    }
}

fn one(agents: u32, sink: &str, secs: u64, beat_ms: u32) -> Option<Run> {
    run(agents, sink, secs, beat_ms, true)
}

fn run(agents: u32, sink: &str, secs: u64, beat_ms: u32, reports: bool) -> Option<Run> {
    let out = run_script(
        "bench-fleet",
        &[
            &agents.to_string(),
            sink,
            &secs.to_string(),
            &beat_ms.to_string(),
            if reports { "1" } else { "0" },
        ],
    )?;
    let line = out.lines().find(|l| l.starts_with("FLEETRUN"))?.to_owned();
    Some(Run {
        agents: agents as f64,
        sink: sink.to_owned(),
        beat_ms: beat_ms as f64,
        line,
    })
}

/// A latency for the table: 999999 stands for a report not visible 30 s after the window.
fn ms(v: f64) -> String {
    if v >= 999_999.0 {
        "not visible".to_owned()
    } else {
        format!("{v:.0}")
    }
}

/// Liveness alone at fleet scale: agents that beat (every 250 ms, the default) and send no
/// reports, 1,000 to 10,000 of them: what the beats cost the broker and the gateway, and what
/// the gateway holds per node.
pub fn liveness(secs: u64, md: &mut String) {
    let mut runs = Vec::new();
    for n in [1000, 5000, 10000] {
        log(&format!("liveness: {n} simulated agents, beats only"));
        match run(n, "victoria", secs, 250, false) {
            Some(r) => runs.push(r),
            None => {
                let _ = writeln!(
                    md,
                    "**scripts/bench-fleet {n} victoria {secs} 250 0 failed**\n"
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "### Liveness at fleet scale\n\n`scripts/bench-fleet N victoria {secs} 250 0`: N \
         simulated agents with retained birth and Will and a beat (about 75 bytes, QoS 0) \
         every 250 ms, and no reports, through one mosquitto into the release gateway: the \
         cost of liveness alone. Changed from the shipped settings, and why: as in \
         \"Fleet scale\", and `liveness.offline_after = \"1h\"` (without reports every node \
         would turn stale after 15 s). The gateway runs standalone, so its failure detector has \
         no Swarm members: each beat is received, decoded, counted and offered to the \
         detector, whose per-member bookkeeping (a hash lookup and two B-tree updates) is not \
         in these figures.\n\n\
         | agents | beats/s at the gateway | broker CPU % | broker RSS MiB | gateway CPU % | gateway RSS MiB | load generator CPU % | other messages (births, goodbyes, the latency probe's reports) published / received |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for r in &runs {
        let _ = writeln!(
            md,
            "| {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} |",
            r.agents,
            r.get("beats_per_s"),
            r.get("broker_cpu_pct"),
            r.get("broker_rss_mib"),
            r.get("gw_cpu_pct"),
            r.get("gw_rss_mib"),
            r.get("loadgen_cpu_pct"),
            r.get("messages_published"),
            r.get("messages_received"),
        );
    }
    if let (Some(lo), Some(hi)) = (runs.first(), runs.last()) {
        if hi.agents > lo.agents {
            let per_node =
                (hi.get("gw_rss_mib") - lo.get("gw_rss_mib")) * 1024.0 / (hi.agents - lo.agents);
            let _ = writeln!(
                md,
                "\nGateway memory per node tracked (RSS from {:.0} to {:.0} nodes): {per_node:.1} \
                 KiB. The gateway tracks at most 20,000 nodes (`nodes::MAX_NODES`; further new \
                 names are dropped and counted), so this part of its memory stays under about \
                 {:.0} MiB above its base.",
                lo.agents,
                hi.agents,
                per_node * 20_000.0 / 1024.0
            );
        }
    }
    let _ = writeln!(md);
}

/// Sizes of the gateway's pricing runs.
pub const PRICED: [u32; 3] = [1000, 2500, 10000];

/// The gateway priced apart from any database: into `sink` (bench/src/bin/sink.rs), per
/// point (agents without beats), per beat (agents without reports), and the whole fleet with
/// every host report's seq counted at the sink.
fn priced(secs: u64, md: &mut String) {
    let _ = writeln!(
        md,
        "### The gateway priced apart\n\n`scripts/bench-fleet N sink {secs} 0` (reports, no \
         beats: the gateway's CPU per point), `scripts/bench-fleet N sink {secs} 250 0` \
         (beats, no reports: per beat) and `scripts/bench-fleet N sink {secs}` (the whole \
         fleet): the fleet replayed by `loadgen replay` (pre-encoded messages) through one \
         mosquitto into the release gateway with config/gateway.toml (spool on, gzip on), \
         writing to `sink`, which parses every line and counts every host report's seq. \
         Changed from the shipped settings, and why: as in \"Fleet scale\", and in the \
         beats-only run `liveness.offline_after = \"1h\"` (without reports every node would \
         turn stale). Everything shares this machine's two cores: where the sum of the \
         processes' CPU nears 200 %, the gateway is starved and the broker drops what its \
         queue for the gateway cannot hold (`missing`).\n\n\
         | agents | points/s | us a point | beats/s | us a beat | whole fleet: gateway CPU % | gateway RSS MiB | host reports published / at the sink (missing, twice) | sample to sink p50 / p99 ms | broker CPU % | sink CPU % | load generator CPU % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for n in PRICED {
        log(&format!("fleet: {n} simulated agents into the sink"));
        let points = run(n, "sink", secs, 0, true);
        let beats = run(n, "sink", secs, 250, false);
        let all = one(n, "sink", secs, 250);
        let get = |r: &Option<Run>, k: &str| r.as_ref().map_or(-1.0, |r| r.get(k));
        let _ = writeln!(
            md,
            "| {n} | {:.0} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0} / {:.0} ({:.0}, {:.0}) | {} / {} | {:.1} | {:.1} | {:.1} |",
            get(&points, "points_per_s"),
            get(&points, "gw_us_per_point"),
            get(&beats, "beats_per_s"),
            get(&beats, "gw_us_per_beat"),
            get(&all, "gw_cpu_pct"),
            get(&all, "gw_rss_mib"),
            get(&all, "host_reports_published"),
            get(&all, "host_reports_at_sink"),
            get(&all, "missing"),
            get(&all, "duplicates"),
            ms(get(&all, "p50_ms")),
            ms(get(&all, "p99_ms")),
            get(&all, "broker_cpu_pct"),
            get(&all, "db_cpu_pct"),
            get(&all, "loadgen_cpu_pct"),
        );
    }
    let _ = writeln!(md);
}

pub fn fleet(secs: u64, md: &mut String, plots: &Path) {
    priced(secs, md);
    let mut runs = Vec::new();
    for sink in ["victoria", "influxdb"] {
        for n in SIZES {
            log(&format!("fleet: {n} simulated agents into {sink}"));
            match one(n, sink, secs, 250) {
                Some(r) => runs.push(r),
                None => {
                    let _ = writeln!(md, "**scripts/bench-fleet {n} {sink} failed**\n");
                }
            }
        }
    }
    log("fleet: 10000 simulated agents into victoria without beats");
    let off = one(10000, "victoria", secs, 0);
    let _ = writeln!(
        md,
        "### Fleet scale\n\n`scripts/bench-fleet N SINK {secs}` for N = 1,000 to 10,000: \
         N simulated agents, one MQTT connection each, with the agent's defaults (a host \
         report and a containers report of 20 containers every 10 s, a beat every 250 ms, \
         retained birth and Will), through one mosquitto into the release gateway running \
         config/gateway.toml (spool on: acknowledgements once durable), writing to \
         VictoriaMetrics or InfluxDB 1.6.7. Measured over {secs} s once the fleet's first \
         writes (its new series) are absorbed (`warm-up`). CPU in % of one core; RSS the \
         peak in the window. Latency: a probe node's host report every 500 ms, from its \
         sample time until its point answers a query. Changed from the shipped settings, \
         and why: the broker listens in plain MQTT without TLS and ACLs (10,000 client \
         certificates are not what is measured); `leader.mode = \"standalone\"` (no Swarm \
         here); InfluxDB with `index-version = \"tsi1\"` (its default in-memory index needs \
         about 3.8 GiB per 1,000 such nodes); VictoriaMetrics with \
         `-search.latencyOffset=0s` (it hides the last 30 s from queries by default).\n\n\
         | agents | database | points/s written | gateway CPU % | gateway RSS MiB | broker CPU % | broker RSS MiB | database CPU % | database RSS MiB | load generator CPU % | latency p50 / p99 ms | warm-up s | messages published / received | late reports |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs.iter().chain(off.iter()) {
        let beats = if r.beat_ms == 0.0 { " (no beats)" } else { "" };
        let _ = writeln!(
            md,
            "| {:.0}{beats} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {} / {} | {} | {:.0} / {:.0} | {:.0} |",
            r.agents,
            if r.sink == "victoria" { "VictoriaMetrics" } else { "InfluxDB 1.6.7" },
            r.get("points_per_s"),
            r.get("gw_cpu_pct"),
            r.get("gw_rss_mib"),
            r.get("broker_cpu_pct"),
            r.get("broker_rss_mib"),
            r.get("db_cpu_pct"),
            r.get("db_rss_mib"),
            r.get("loadgen_cpu_pct"),
            ms(r.get("p50_ms")),
            ms(r.get("p99_ms")),
            match r.get("warm_s") {
                w if w < 0.0 => "never: the backlog grows".to_owned(),
                w => format!("{w:.0}"),
            },
            r.get("messages_published"),
            r.get("messages_received"),
            r.get("late"),
        );
    }
    // What liveness costs at 10,000 nodes: the same run with and without beats.
    if let (Some(off), Some(on)) = (
        &off,
        runs.iter()
            .find(|r| r.sink == "victoria" && r.agents == 10000.0),
    ) {
        let _ = writeln!(
            md,
            "\nLiveness at 10,000 nodes (beats every 250 ms, the default): {:.0} beats/s \
             reach the gateway; gateway CPU {:.1} % with beats, {:.1} % without; broker CPU \
             {:.1} % with, {:.1} % without.{}",
            on.get("beats_per_s"),
            on.get("gw_cpu_pct"),
            off.get("gw_cpu_pct"),
            on.get("broker_cpu_pct"),
            off.get("broker_cpu_pct"),
            if on.get("warm_s") < 0.0 || off.get("warm_s") < 0.0 {
                " (Saturated runs, the backlog growing: these figures do not price liveness.)"
            } else {
                ""
            },
        );
    }
    let series = |sink: &str, key: &str, name: &str| Line {
        name: name.to_owned(),
        points: runs
            .iter()
            .filter(|r| r.sink == sink)
            .map(|r| (r.agents, r.get(key).max(0.0)))
            .collect(),
    };
    let cpu = [
        series("victoria", "gw_cpu_pct", "gateway (VictoriaMetrics)"),
        series("influxdb", "gw_cpu_pct", "gateway (InfluxDB)"),
        series(
            "victoria",
            "broker_cpu_pct",
            "mosquitto (VictoriaMetrics run)",
        ),
        series("influxdb", "broker_cpu_pct", "mosquitto (InfluxDB run)"),
    ];
    let rss = [
        series("victoria", "gw_rss_mib", "gateway (VictoriaMetrics)"),
        series("influxdb", "gw_rss_mib", "gateway (InfluxDB)"),
        series(
            "victoria",
            "broker_rss_mib",
            "mosquitto (VictoriaMetrics run)",
        ),
        series("influxdb", "broker_rss_mib", "mosquitto (InfluxDB run)"),
    ];
    for (file, title, y, lines) in [
        ("fleet-cpu.png", "CPU by fleet size", "% of one core", &cpu),
        ("fleet-rss.png", "RSS by fleet size", "MiB", &rss),
    ] {
        match measure::plot(&plots.join(file), title, "simulated agents", y, lines) {
            Ok(()) => {
                let _ = writeln!(md, "\n![{title}](bench/{file})");
            }
            Err(e) => eprintln!("plot failed: {e}"),
        }
    }
    let _ = writeln!(md);
}
