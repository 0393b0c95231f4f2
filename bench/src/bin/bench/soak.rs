//! The agent beside collectd for an hour: resident memory and CPU each minute, to show that
//! neither grows (`scripts/bench --only soak`, `--soak S` for another length).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use leakmon_e2e::{Broker, Subscriber};

use crate::measure::{self, cpu_s, rss_mib, Line, Spread};
use crate::peers::{self, Proc};
use crate::{agent_bin, containers, log};

/// One minute of one program: its RSS at the minute's end (MiB), its CPU over the minute (%).
#[derive(Clone, Copy)]
struct Minute {
    rss: f64,
    cpu: f64,
}

pub fn soak(seconds: u64, md: &mut String, plots: &Path) {
    log(&format!(
        "soak: leakmon-agent and collectd side by side for {} min, 20 containers",
        seconds / 60
    ));
    containers(1, 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port, "leakmon/v1/nodes/bench/host", false);
    let mut procs: Vec<Proc> = vec![
        peers::leakmon(&agent_bin(), dir.path(), broker.port, ""),
        peers::collectd(dir.path(), broker.port),
    ];
    let names = ["leakmon-agent", "collectd"];
    let pids: Vec<u32> = procs.iter().map(Proc::pid).collect();
    // settle as the footprint run does, then the first minute starts
    std::thread::sleep(Duration::from_secs(10));
    let t0 = Instant::now();
    let cpu_start: Vec<f64> = pids.iter().map(|p| cpu_s(*p)).collect();
    let reports_start = sub.all().len();
    let mut last_cpu = cpu_start.clone();
    let mut minutes: Vec<[Minute; 2]> = Vec::new();
    for m in 1..=seconds.div_ceil(60) {
        let until = Duration::from_secs(60 * m);
        std::thread::sleep(until.saturating_sub(t0.elapsed()));
        let mut row = [Minute { rss: 0.0, cpu: 0.0 }; 2];
        for (i, pid) in pids.iter().enumerate() {
            let cpu = cpu_s(*pid);
            row[i] = Minute {
                rss: rss_mib(*pid),
                cpu: 100.0 * (cpu - last_cpu[i]) / 60.0,
            };
            last_cpu[i] = cpu;
        }
        eprintln!(
            "  minute {m}: leakmon-agent {:.2} MiB {:.3} %, collectd {:.2} MiB {:.3} %",
            row[0].rss, row[0].cpu, row[1].rss, row[1].cpu
        );
        minutes.push(row);
    }
    let secs = t0.elapsed().as_secs_f64();
    let reports = (sub.all().len() - reports_start) as f64;
    let total_cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_start)
        .map(|(p, c0)| 100.0 * (cpu_s(*p) - c0) / secs)
        .collect();
    for p in procs.iter_mut() {
        p.stop();
    }
    let n = minutes.len();
    let sixth = (n / 6).max(1);
    let _ = writeln!(
        md,
        "### Soak: an hour beside collectd\n\n{} minutes, the agent (static, shipped defaults, 1 s \
         interval) and collectd side by side with the same 20 containers and broker; RSS read at \
         each minute's end, CPU over each minute (clock ticks, so about ±0.02 points a minute), \
         the whole run's CPU from the first to the last reading. The agent published {:.0} host \
         reports ({:.2} a second). First and last {} minutes compared (medians): growth is the \
         difference.\n",
        n,
        reports,
        reports / secs,
        sixth
    );
    let _ = writeln!(
        md,
        "| program | RSS first {sixth} min (MiB) | RSS last {sixth} min (MiB) | RSS min-max (MiB) | CPU first {sixth} min (%) | CPU last {sixth} min (%) | CPU whole run (%) |\n|---|---|---|---|---|---|---|"
    );
    for (i, name) in names.iter().enumerate() {
        let rss: Vec<f64> = minutes.iter().map(|r| r[i].rss).collect();
        let cpu: Vec<f64> = minutes.iter().map(|r| r[i].cpu).collect();
        let all = Spread::of(&rss);
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.2} | {:.2}-{:.2} | {:.3} | {:.3} | {:.3} |",
            Spread::of(&rss[..sixth]).median,
            Spread::of(&rss[n - sixth..]).median,
            all.min,
            all.max,
            Spread::of(&cpu[..sixth]).median,
            Spread::of(&cpu[n - sixth..]).median,
            total_cpu[i]
        );
    }
    let series = |f: fn(&Minute) -> f64| -> Vec<Line> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| Line {
                name: (*name).to_owned(),
                points: minutes
                    .iter()
                    .enumerate()
                    .map(|(m, r)| ((m + 1) as f64, f(&r[i])))
                    .collect(),
            })
            .collect()
    };
    for (file, title, y, lines) in [
        (
            "soak-rss.png",
            "Resident memory each minute",
            "RSS (MiB)",
            series(|m| m.rss),
        ),
        (
            "soak-cpu.png",
            "CPU each minute",
            "% of a core",
            series(|m| m.cpu),
        ),
    ] {
        match measure::plot(&plots.join(file), title, "minutes", y, &lines) {
            Ok(()) => {
                let _ = writeln!(md, "\n![{title}](bench/{file})");
            }
            Err(e) => eprintln!("plot failed: {e}"),
        }
    }
    let _ = writeln!(md);
}
