//! The locked-down broker of config/mosquitto/ (TLS only, one credential per node, the agents'
//! listener with client id = username, the gateways' listener with their own password file),
//! made by scripts/broker-credentials and run by a real mosquitto; for tests/lockdown.rs and
//! tests/adversary.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, run_ok, wait_for, Service};

const S: fn(u64) -> Duration = Duration::from_secs;

/// The broker's directory and process; the process is killed when dropped.
pub struct LockedBroker {
    pub dir: tempfile::TempDir,
    /// The agents' and consumers' listener (client id = username).
    pub port: u16,
    /// The gateways' listener.
    pub gateway_port: u16,
    child: Child,
}

impl LockedBroker {
    /// The broker for these nodes, with the `telemetry` consumer and `readers`.
    pub fn start(nodes: &[&str]) -> LockedBroker {
        Self::start_with(nodes, &[])
    }

    pub fn start_with(nodes: &[&str], readers: &[&str]) -> LockedBroker {
        // Under /tmp itself: mosquitto drops to its own user and must reach the files.
        let dir = tempfile::Builder::new()
            .prefix("leakmon-lockdown-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let port = free_port();
        let gateway_port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/broker-credentials");
        let d = dir.path().display().to_string();
        run_ok(
            Command::new(script)
                .args(["--out", &d, "--port", &port.to_string()])
                .args(["--gateway-port", &gateway_port.to_string()])
                .args(readers.iter().flat_map(|r| ["--reader", r]))
                .args(["--san", "DNS:localhost,IP:127.0.0.1"])
                .args(["--url", &format!("mqtts://localhost:{port}")])
                .args(["--client-ca", &format!("{d}/ca.crt")])
                .args(nodes),
        );
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(dir.path().join("leakmon.conf"))
            .arg("-v")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("mosquitto (scripts/test installs it)");
        for p in [port, gateway_port] {
            wait_for(S(10), || {
                std::net::TcpStream::connect(("127.0.0.1", p)).ok()
            })
            .unwrap_or_else(|| panic!("the locked-down mosquitto did not listen on {p}"));
        }
        LockedBroker {
            dir,
            port,
            gateway_port,
            child,
        }
    }

    /// The `[mqtt]` section the script wrote for `name`.
    pub fn client_section(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("clients/{name}.toml")))
            .expect("client snippet")
    }

    pub fn password(&self, name: &str) -> String {
        self.client_section(name)
            .lines()
            .find_map(|l| l.strip_prefix("password = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("password in snippet")
            .to_owned()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The listener `user` belongs on: the gateways' for `gateway`, else the agents'.
    pub fn port_for(&self, user: &str) -> u16 {
        if user == "gateway" {
            self.gateway_port
        } else {
            self.port
        }
    }

    /// mosquitto_pub (MQTT 5, QoS 1) as `user` on its listener; (exit code, stderr).
    pub fn publish(
        &self,
        user: &str,
        password: &str,
        tls: bool,
        topic: &str,
        msg: &str,
    ) -> (i32, String) {
        self.publish_on(self.port_for(user), user, password, tls, &[], topic, msg)
    }

    /// mosquitto_pub (MQTT 5, QoS 1) on `port` with `extra` arguments; (exit code, stderr).
    #[allow(clippy::too_many_arguments)]
    pub fn publish_on(
        &self,
        port: u16,
        user: &str,
        password: &str,
        tls: bool,
        extra: &[&str],
        topic: &str,
        msg: &str,
    ) -> (i32, String) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
        ])
        .args(extra)
        .args(["-u", user, "-P", password, "-t", topic, "-m", msg]);
        if tls {
            cmd.arg("--cafile").arg(self.ca());
        }
        let out = cmd.output().expect("mosquitto_pub");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A `telemetry` subscriber to everything under the prefix, printing `topic payload` lines.
    pub fn watch(&self, file: &Path) -> Child {
        self.subscribe(
            "telemetry",
            &self.password("telemetry"),
            "leakmon/v1/#",
            file,
        )
    }

    /// mosquitto_sub (MQTT 5) as `user` to `filter`, printing `topic payload` lines to `file`
    /// as they come (line-buffered: it buffers its output when it is not a terminal).
    pub fn subscribe(&self, user: &str, password: &str, filter: &str, file: &Path) -> Child {
        let out = std::fs::File::create(file).expect("subscriber file");
        Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-V", "mqttv5", "-v"])
            .args(["-h", "localhost", "-p", &self.port_for(user).to_string()])
            .arg("--cafile")
            .arg(self.ca())
            .args(["-u", user, "-P", password, "-t", filter])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("stdbuf mosquitto_sub")
    }
}

impl Drop for LockedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn agent_config(broker: &LockedBroker, node: &str, credential: &str) -> String {
    format!(
        "node = \"{node}\"\ninterval = \"1s\"\n{}keep_alive = \"2s\"\nreconnect_max = \"1s\"\n\
         [docker]\nenabled = false\n",
        broker.client_section(credential)
    )
}

/// The payloads printed for `topic` in a subscriber's file, in order.
pub fn payloads(file: &Path, topic: &str) -> Vec<String> {
    let prefix = format!("{topic} ");
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

pub fn influx_count(db: &Service, q: &str) -> i64 {
    let v = db.influx_query("leakmon", q);
    v["results"][0]["series"][0]["values"][0][1]
        .as_i64()
        .unwrap_or(0)
}
