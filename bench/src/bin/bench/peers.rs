//! The agents compared: leakmon-agent and the tools users would pick instead, each set up to
//! sample every second and deliver somewhere, as their own docs describe.
//!
//! - leakmon-agent: host and containers, published to mosquitto.
//! - collectd: cpu, memory, df, interface, load, published to mosquitto by its mqtt plugin.
//! - prometheus-node-exporter: its default collectors, scraped every second by the bench.
//! - netdata: a child trimmed as netdata's docs suggest for small devices (no database, no
//!   web server, no health, no ML, only the proc, diskspace and cgroups collectors), streaming
//!   to a parent (the parent, like the broker, is not measured).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leakmon_e2e::{free_port, http_get, wait_for};

pub const NETDATA_KEY: &str = "6f1c2e8a-6d7e-4c55-9a61-4b1f0d3e2a10";

/// A running process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (scripts/bench installs it)"));
        Proc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL; every descendant too.
    pub fn stop(&mut self) {
        let family = crate::measure::tree(self.pid());
        for p in &family {
            // SAFETY: kill(2) on pids we started (or their children); no memory effects.
            unsafe {
                libc::kill(*p as i32, libc::SIGTERM);
            }
        }
        let done = wait_for(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_))).then_some(())
        });
        if done.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for p in family {
            // SAFETY: as above.
            unsafe {
                libc::kill(p as i32, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
    }
}

pub fn leakmon(bin: &Path, dir: &Path, broker: u16, extra: &str) -> Proc {
    let conf = dir.join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "node = \"bench\"\ninterval = \"1s\"\nstate_dir = \"{}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\n{extra}",
            dir.join("state").display()
        ),
    )
    .expect("agent config");
    Proc::spawn(
        "leakmon-agent",
        Command::new(bin)
            .arg("--config")
            .arg(&conf)
            // sealing as shipped: the node's key
            .envs(leakmon_e2e::auth_env(
                "leakmon-agent",
                "node = \"bench\"",
                &[],
            ))
            .env("LEAKMON_LOG", "warn"),
        &dir.join("agent.log"),
    )
}

pub fn collectd(dir: &Path, broker: u16) -> Proc {
    let conf = dir.join("collectd.conf");
    std::fs::write(
        &conf,
        format!(
            "Hostname \"bench-collectd\"\nFQDNLookup false\nInterval 1\n\
             BaseDir \"{d}\"\nPIDFile \"{d}/collectd.pid\"\nPluginDir \"/usr/lib/collectd\"\n\
             TypesDB \"/usr/share/collectd/types.db\"\n\
             LoadPlugin cpu\nLoadPlugin memory\nLoadPlugin df\nLoadPlugin interface\n\
             LoadPlugin load\nLoadPlugin mqtt\n\
             <Plugin mqtt>\n  <Publish \"bench\">\n    Host \"127.0.0.1\"\n    Port {broker}\n\
             ClientId \"bench-collectd\"\n    Prefix \"collectd\"\n    QoS 1\n  </Publish>\n</Plugin>\n",
            d = dir.display()
        ),
    )
    .expect("collectd config");
    Proc::spawn(
        "collectd",
        Command::new("/usr/sbin/collectd")
            .arg("-f")
            .arg("-C")
            .arg(&conf),
        &dir.join("collectd.log"),
    )
}

/// node_exporter and a thread scraping it every second; the counter holds good scrapes.
pub struct NodeExporter {
    pub proc: Proc,
    pub scrapes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl NodeExporter {
    pub fn start(dir: &Path) -> NodeExporter {
        let port = free_port();
        let proc = Proc::spawn(
            "node_exporter",
            Command::new("/usr/bin/prometheus-node-exporter")
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            &dir.join("node_exporter.log"),
        );
        let scrapes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (scrapes.clone(), stop.clone());
        std::thread::spawn(move || {
            let url = format!("http://127.0.0.1:{port}/metrics");
            while !st.load(Ordering::Relaxed) {
                let next = std::time::Instant::now() + Duration::from_secs(1);
                if http_get(&url)
                    .is_ok_and(|(code, body)| code == 200 && body.contains("node_load1"))
                {
                    s.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(w) = next.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(w);
                }
            }
        });
        NodeExporter {
            proc,
            scrapes,
            stop,
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn netdata_dirs(root: &Path) -> PathBuf {
    for d in ["etc", "log", "cache", "lib", "run"] {
        std::fs::create_dir_all(root.join(d)).expect("netdata dir");
    }
    root.to_path_buf()
}

fn netdata_conf(root: &Path, hostname: &str, body: &str) -> PathBuf {
    let d = root.display();
    let conf = root.join("etc/netdata.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\n  hostname = {hostname}\n  update every = 1\n  run as user = root\n\
             [directories]\n  config = {d}/etc\n  stock config = /usr/lib/netdata/conf.d\n\
             log = {d}/log\n  cache = {d}/cache\n  lib = {d}/lib\n  home = {d}/lib\n\
             plugins = /usr/lib/netdata/plugins.d\n  web = /usr/share/netdata/web\n\
             [logs]\n  access = none\n  debug = none\n\
             [ml]\n  enabled = no\n[health]\n  enabled = no\n[statsd]\n  enabled = no\n\
             [registry]\n  enabled = no\n{body}"
        ),
    )
    .expect("netdata.conf");
    conf
}

/// Plugins a trimmed child keeps: proc (CPU, memory, load, network, disks I/O), diskspace,
/// cgroups (containers).
const CHILD_PLUGINS: &str = "[plugins]\n  proc = yes\n  diskspace = yes\n  cgroups = yes\n\
     tc = no\n  idlejitter = no\n  apps = no\n  charts.d = no\n  python.d = no\n  go.d = no\n\
     fping = no\n  ioping = no\n  perf = no\n  slabinfo = no\n  nfacct = no\n  cups = no\n\
     ebpf = no\n  timex = no\n  checks = no\n  enable running new plugins = no\n";

/// The parent the child streams to (not measured): its API answers on the returned port.
pub fn netdata_parent(dir: &Path) -> (Proc, u16) {
    let root = netdata_dirs(&dir.join("netdata-parent"));
    let port = free_port();
    let conf = netdata_conf(
        &root,
        "bench-netdata-parent",
        &format!(
            "[db]\n  mode = ram\n[web]\n  bind to = 127.0.0.1:{port}\n\
             {}",
            CHILD_PLUGINS.replace("= yes", "= no")
        ),
    );
    std::fs::write(
        root.join("etc/stream.conf"),
        format!("[stream]\n  enabled = no\n[{NETDATA_KEY}]\n  enabled = yes\n  default memory mode = ram\n"),
    )
    .expect("stream.conf");
    let p = Proc::spawn(
        "netdata parent",
        Command::new("/usr/sbin/netdata")
            .arg("-D")
            .arg("-c")
            .arg(&conf),
        &root.join("stdout.log"),
    );
    wait_for(Duration::from_secs(30), || {
        http_get(&format!("http://127.0.0.1:{port}/api/v1/info"))
            .ok()
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("the netdata parent did not answer on {port}"));
    (p, port)
}

pub fn netdata_child(dir: &Path, parent: u16) -> Proc {
    let root = netdata_dirs(&dir.join("netdata-child"));
    let conf = netdata_conf(
        &root,
        "bench-netdata-child",
        &format!("[db]\n  mode = none\n[web]\n  mode = none\n{CHILD_PLUGINS}"),
    );
    std::fs::write(
        root.join("etc/stream.conf"),
        format!(
            "[stream]\n  enabled = yes\n  destination = 127.0.0.1:{parent}\n  api key = {NETDATA_KEY}\n"
        ),
    )
    .expect("stream.conf");
    Proc::spawn(
        "netdata",
        Command::new("/usr/sbin/netdata")
            .arg("-D")
            .arg("-c")
            .arg(&conf),
        &root.join("stdout.log"),
    )
}

/// Whether the parent receives the child's stream.
pub fn netdata_streaming(parent: u16) -> bool {
    http_get(&format!("http://127.0.0.1:{parent}/api/v1/info"))
        .is_ok_and(|(_, b)| b.contains("bench-netdata-child"))
}

/// Installed size (KiB, from dpkg) of the named packages that are installed.
pub fn installed_kib(packages: &[&str]) -> u64 {
    packages
        .iter()
        .filter_map(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status} ${Installed-Size}", p])
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout).into_owned();
            s.contains("ok installed")
                .then(|| s.split_whitespace().last()?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
