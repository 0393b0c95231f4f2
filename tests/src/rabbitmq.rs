//! A 3-node RabbitMQ MQTT cluster (scripts/rabbitmq-cluster) for the clustered-broker suite and
//! benchmark: started fresh in a temp dir, nodes killed and restarted one at a time, stopped
//! on drop.

use std::process::Command;

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rabbitmq-cluster");

pub struct RabbitCluster {
    dir: tempfile::TempDir,
    /// MQTT ports of nodes 1, 2 and 3.
    pub ports: [u16; 3],
    bind: String,
}

impl RabbitCluster {
    /// A fresh cluster whose MQTT listeners bind `bind` (`0.0.0.0` for clients in the rig's
    /// network namespaces) on the script's ports (21883..21885).
    pub fn start(bind: &str) -> RabbitCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = crate::run_ok(
            Command::new(SCRIPT)
                .env("RMQ_CLUSTER_MQTT_BIND", bind)
                .arg("start")
                .arg(dir.path()),
        );
        let ports = out
            .lines()
            .find_map(|l| l.strip_prefix("MQTT_PORTS="))
            .map(|p| {
                p.split(',')
                    .filter_map(|x| x.trim().parse::<u16>().ok())
                    .collect::<Vec<_>>()
            })
            .and_then(|v| <[u16; 3]>::try_from(v).ok())
            .unwrap_or_else(|| panic!("no MQTT_PORTS=p1,p2,p3 in the script's output:\n{out}"));
        RabbitCluster {
            dir,
            ports,
            bind: bind.to_owned(),
        }
    }

    /// `mqtt://host:port` of node `n` (1..=3) as a client at `host` reaches it.
    pub fn url(&self, host: &str, n: usize) -> String {
        format!("mqtt://{host}:{}", self.ports[n - 1])
    }

    /// `url = [...]` (a config line) listing the three nodes from `first` (1..=3) on, as a
    /// client at `host` reaches them.
    pub fn url_list(&self, host: &str, first: usize) -> String {
        let list: Vec<String> = (0..3)
            .map(|i| format!("\"{}\"", self.url(host, (first - 1 + i) % 3 + 1)))
            .collect();
        format!("url = [{}]", list.join(", "))
    }

    /// The node (1..=3) a gateway's log says it last subscribed through as the active one.
    pub fn active_node_in(&self, host: &str, gateway_log: &str) -> Option<usize> {
        let line = gateway_log
            .lines()
            .rev()
            .find(|l| l.contains("connected; subscribed") && l.contains("active=true"))?;
        (1..=3).find(|&n| line.contains(&format!("broker={} ", self.url(host, n))))
    }

    /// SIGKILLs node `n`'s Erlang VM.
    pub fn kill(&self, n: usize) {
        self.script(&["kill", &self.dir(), &n.to_string()]);
    }

    /// Starts node `n` again and waits until it has rejoined.
    pub fn restart(&self, n: usize) {
        self.script(&["restart", &self.dir(), &n.to_string()]);
    }

    /// The last lines of every node's log, for a failing assertion.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=3 {
            let d = self.dir.path().join(format!("lm{n}/log"));
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for f in rd.flatten() {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                s.push_str(&format!("--- {}\n", f.path().display()));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }

    fn dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn script(&self, args: &[&str]) -> String {
        crate::run_ok(
            Command::new(SCRIPT)
                .env("RMQ_CLUSTER_MQTT_BIND", &self.bind)
                .args(args),
        )
    }
}

/// `cfg` (a config made for one broker) with its `[mqtt] url` line replaced by `urls`.
pub fn with_brokers(cfg: &str, urls: &str) -> String {
    cfg.lines()
        .map(|l| match l.starts_with("url = \"mqtt://") {
            true => urls.to_owned(),
            false => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
