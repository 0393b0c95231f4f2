//! The end-to-end harness: real services started per test, and the project's real binaries.
//!
//! - [`Broker`]: a mosquitto of its own on a free loopback port, with persistence, so it can
//!   be stopped and restarted like a real broker (a persistent subscriber session survives).
//! - [`Agent`]: the `leakmon-agent` binary built by `cargo build`, with a config of the test's.
//! - [`Subscriber`]: an MQTT client that records every message with its arrival time.
//! - [`docker`]: the local engine through the `docker` CLI (tests set the scene with it).
//!
//! Nothing here is mocked: if mosquitto or dockerd is missing, the tests fail loudly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the workspace's binaries are (`LEAKMON_BIN_DIR`, else `target/debug`).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("LEAKMON_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("debug")
        });
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` first (scripts/test does)",
        p.display()
    );
    p
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Runs `cmd` to its end; panics naming it, with its stdout and stderr, unless it succeeds.
/// Returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
/// Wall-clock time in ms since the Unix epoch.
/// An agent whose wall clock is `skew_s` seconds off (libfaketime; its monotonic clock left
/// alone, as a Pi's is when its wall clock boots wrong).
pub fn skewed_clock(skew_s: i64) -> Vec<String> {
    vec![
        "env".into(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
        "faketime".into(),
        "-f".into(),
        format!("{skew_s:+}"),
    ]
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// A mosquitto broker of the test's own.
pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Listener configuration; `None` for a plain anonymous listener on `port`.
    listener: Option<String>,
    /// Messages queued per client beyond those in flight (`max_queued_messages`), and those
    /// in flight (`max_inflight_messages`).
    queue: (usize, usize),
    /// `autosave_interval` (s): how often it saves its sessions and queues; 0: only when it
    /// stops cleanly.
    autosave: u32,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_on(free_port())
    }

    /// Starts on a given port (a port an agent was already told to use).
    pub fn start_on(port: u16) -> Broker {
        let mut b = Self::unstarted(port);
        b.launch();
        b
    }

    /// A plain broker that queues at most `max_queued` messages per client beyond the
    /// `max_inflight` unacknowledged ones, and drops what comes beyond (mosquitto's rule).
    pub fn start_with_queue(max_queued: usize, max_inflight: usize) -> Broker {
        let mut b = Self::unstarted(free_port());
        b.queue = (max_queued, max_inflight);
        b.launch();
        b
    }

    /// Starts with a listener configuration of the caller's (TLS, passwords, ACLs). `setup`
    /// gets the broker's directory (world-readable) to put certificates and files in, and
    /// returns the listener lines; `{port}` in them is replaced by the broker's port.
    pub fn start_custom(setup: impl FnOnce(&Path) -> String) -> Broker {
        let mut b = Self::unstarted(free_port());
        b.listener = Some(setup(b.dir.path()).replace("{port}", &b.port.to_string()));
        b.launch();
        b
    }

    /// A broker on `port` with the defaults, in a directory of its own, not yet started.
    fn unstarted(port: u16) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        // mosquitto started as root drops to its own user: let it save its sessions here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod broker dir");
        Broker {
            port,
            dir,
            child: None,
            listener: None,
            queue: (100_000, 20),
            autosave: 1,
        }
    }

    /// The URL agents use to reach this broker.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).expect("write mosquitto.conf");
        let listener = self
            .listener
            .clone()
            .unwrap_or_else(|| format!("listener {} 127.0.0.1\nallow_anonymous true", self.port));
        writeln!(
            f,
            "{listener}\npersistence true\n\
             persistence_location {}/\nautosave_interval {}\nlog_dest stderr\n\
             log_type error\nlog_type warning\nmax_queued_messages {}\nmax_inflight_messages {}",
            self.dir.path().display(),
            self.autosave,
            self.queue.0,
            self.queue.1,
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto: is it installed? (scripts/test installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("mosquitto did not start listening");
    }

    /// Stops the broker cleanly (it saves its sessions, as a service stop does).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, libc::SIGTERM);
            let _ = c.wait();
        }
    }

    /// SIGKILL: the broker dies as a crashed host's would, with no goodbye to anyone (and
    /// what it had not saved lost).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// From the next start on, saves its state only when stopped cleanly (`autosave_interval
    /// 0`): a SIGKILL then loses everything since, deterministically.
    pub fn save_only_on_stop(&mut self) {
        self.autosave = 0;
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fleet key of every test: each gateway reads it from a file, each agent gets its own
/// node's key derived from it (unless the test's config or environment sets `[auth]`).
pub fn test_fleet() -> leakmon_protocol::auth::FleetKey {
    leakmon_protocol::auth::FleetKey::from_bytes([0x5a; 32])
}

/// `payload` sealed as `node` seals it on `topic`: a message from a client holding that
/// node's key.
pub fn seal(node: &str, topic: &str, payload: &[u8]) -> Vec<u8> {
    test_fleet().node_key(node).seal(topic, payload.to_vec())
}

/// A key file of the tests (mode 600, in a directory of this user's under the temp dir),
/// written once (atomically: tests running at once write the same text).
pub fn key_file(name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("leakmon-e2e-keys-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.{}-{n}.tmp", std::process::id()));
        std::fs::write(&tmp, text).expect("write a key file");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::rename(&tmp, &path).expect("rename a key file");
    }
    path
}

/// The fleet key's file, for gateways.
pub fn fleet_key_file() -> PathBuf {
    key_file("fleet.key", &test_fleet().to_text())
}

/// The key file of `node`, for its agent.
pub fn node_key_file(node: &str) -> PathBuf {
    key_file(
        &format!("{node}.key"),
        &test_fleet().node_key(node).to_text(),
    )
}

/// The environment giving `binary` its key, as an operator's enrollment would: nothing when
/// the test's config or environment sets `[auth]` itself. An agent's node is its config's
/// top-level `node`, or `LEAKMON_AGENT__NODE`, or the hostname.
pub fn auth_env(binary: &str, config: &str, env: &[(String, String)]) -> Vec<(String, String)> {
    let sets_auth = config.lines().any(|l| l.trim_start().starts_with("[auth]"));
    if sets_auth || env.iter().any(|(k, _)| k.contains("__AUTH__")) {
        return Vec::new();
    }
    match binary {
        "leakmon-gateway" => vec![(
            "LEAKMON_GATEWAY__AUTH__FLEET_KEY_FILE".into(),
            fleet_key_file().display().to_string(),
        )],
        "leakmon-agent" => {
            let from_env = env
                .iter()
                .find(|(k, _)| k == "LEAKMON_AGENT__NODE")
                .map(|(_, v)| v.clone());
            let from_file = config
                .lines()
                .take_while(|l| !l.trim_start().starts_with('['))
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == "node").then(|| v.trim().trim_matches('"').to_owned())
                });
            let node = from_env.or(from_file).unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            });
            vec![(
                "LEAKMON_AGENT__AUTH__KEY_FILE".into(),
                node_key_file(&node).display().to_string(),
            )]
        }
        _ => Vec::new(),
    }
}

/// A command running `binary` with the key [`auth_env`] gives it for `config` and `env` (which
/// the caller still sets itself).
pub fn enrolled(binary: &str, config: &str, env: &[(&str, &str)]) -> Command {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut cmd = Command::new(bin(binary));
    cmd.envs(auth_env(binary, config, &env));
    cmd
}

/// One of the project's binaries, running with a config file in a directory of its own and
/// logging (at debug) to `<dir>/<binary>.log`. Killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    binary: &'static str,
    /// A command the binary is run under (e.g. `nsenter ...` to run it inside a node).
    wrapper: Vec<String>,
    /// Extra environment.
    env: Vec<(String, String)>,
}

impl Daemon {
    fn start(binary: &'static str, dir: tempfile::TempDir, config: &str) -> Daemon {
        Self::start_wrapped(binary, dir, config, Vec::new())
    }

    /// Starts `binary` under `wrapper` (which must exec it, keeping the pid).
    pub fn start_wrapped(
        binary: &'static str,
        dir: tempfile::TempDir,
        config: &str,
        wrapper: Vec<String>,
    ) -> Daemon {
        Self::launch(binary, dir, config, wrapper, Vec::new())
    }

    /// Starts `binary` with extra environment variables.
    pub fn start_env(
        binary: &'static str,
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch(binary, dir, config, Vec::new(), env)
    }

    fn launch(
        binary: &'static str,
        dir: tempfile::TempDir,
        config: &str,
        wrapper: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Daemon {
        let path = dir.path().join(format!("{binary}.toml"));
        std::fs::write(&path, config).expect("write config");
        let mut d = Daemon {
            child: None,
            dir,
            config: path,
            binary,
            wrapper,
            env,
        };
        d.spawn();
        d
    }

    /// SIGSTOP / SIGCONT: a hung process, and its recovery.
    pub fn pause(&self, stop: bool) {
        if let Some(c) = &self.child {
            signal(c, if stop { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// A new wrapper (a node's namespaces after its engine restarted); takes effect at the
    /// next [`Daemon::spawn`].
    pub fn set_wrapper(&mut self, wrapper: Vec<String>) {
        self.wrapper = wrapper;
    }

    /// Whether the process is running (it may be stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Writes a new config; takes effect at the next [`Daemon::spawn`].
    pub fn set_config(&self, config: &str) {
        std::fs::write(&self.config, config).expect("write config");
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", self.binary)))
            .expect("log file");
        let mut cmd = match self.wrapper.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(bin(self.binary));
                c
            }
            None => Command::new(bin(self.binary)),
        };
        let config = std::fs::read_to_string(&self.config).unwrap_or_default();
        let auth = auth_env(self.binary, &config, &self.env);
        let child = cmd
            .envs(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--config")
            .arg(&self.config)
            .env("LEAKMON_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary));
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.binary)))
            .unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: no goodbye, as in a crash or power loss of the process. A wrapper's children
    /// too (`faketime` forks the binary and waits for it): the binary itself must die.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            for pid in descendants(c.id()) {
                // SAFETY: kill(2) on a pid we read from /proc just now; no memory involved.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to 30 s); returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        signal(&c, libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every process below `pid` (children first found, then theirs), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten();
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids
                .split_whitespace()
                .filter_map(|k| k.parse::<u32>().ok())
            {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// A running `leakmon-agent`.
pub struct Agent(Daemon);

impl std::ops::Deref for Agent {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}

impl Agent {
    /// Starts the agent with `config` (TOML); `state_dir` is a temp dir of its own.
    pub fn start(config: &str) -> Agent {
        Self::start_in(tempfile::tempdir().expect("tempdir"), config)
    }

    /// Starts in an existing dir (to restart an agent with the same state and spool).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Agent {
        let full = format!(
            "state_dir = \"{}\"\n{config}",
            dir.path().join("state").display()
        );
        Agent(Daemon::start("leakmon-agent", dir, &full))
    }

    /// Starts the agent under `wrapper` (which must exec it), e.g. `faketime` for a wrong
    /// clock.
    pub fn start_wrapped(config: &str, wrapper: Vec<String>) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = format!(
            "state_dir = \"{}\"\n{config}",
            dir.path().join("state").display()
        );
        Agent(Daemon::start_wrapped("leakmon-agent", dir, &full, wrapper))
    }

    /// Gives back the directory (state and spool) for a restart.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.0.kill9();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.0.dir, dir)
    }
}

/// One received MQTT message.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }

    /// A data message of a node (host, containers, events: what carries `run`, `seq` and
    /// `ts`), not its status, beats or probe reports, which a `nodes/<node>/#` filter also gets.
    pub fn is_data(&self) -> bool {
        ["/host", "/containers", "/events"]
            .iter()
            .any(|c| self.topic.ends_with(c))
    }
}

/// An MQTT subscriber on its own thread, recording everything it receives.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to `filter` with QoS 1. With `persistent`, the session survives the
    /// subscriber's and the broker's restarts, so nothing published meanwhile is missed.
    pub fn start(port: u16, filter: &str, persistent: bool) -> Subscriber {
        let id = format!("e2e-sub-{}-{}", std::process::id(), free_port());
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(!persistent);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut conn) = rumqttc::Client::new(opts, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, s, filter) = (messages.clone(), stop.clone(), filter.to_owned());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            for ev in conn.iter() {
                if s.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if let Ok(mut v) = m.lock() {
                            v.push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                                at: Instant::now(),
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscriber did not get its SUBACK");
        Subscriber {
            messages,
            stop,
            thread: Some(thread),
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.messages.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Messages on topics ending in `/<suffix>`.
    pub fn on(&self, suffix: &str) -> Vec<Received> {
        let end = format!("/{suffix}");
        self.all()
            .into_iter()
            .filter(|m| m.topic.ends_with(&end))
            .collect()
    }

    /// `(run, seq)` of the host reports of `node` received.
    pub fn host_reports(&self, node: &str) -> BTreeSet<(u64, u64)> {
        self.on("host")
            .iter()
            .map(|m| m.json())
            .filter(|j| j["node"] == node)
            .filter_map(|j| Some((j["run"].as_u64()?, j["seq"].as_u64()?)))
            .collect()
    }

    /// Waits for a message on `suffix` whose JSON satisfies `pred`.
    pub fn wait_json(
        &self,
        suffix: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<Received> {
        wait_for(timeout, || {
            self.on(suffix).into_iter().find(|m| pred(&m.json()))
        })
    }
}

/// `(run, seq)` of host reports.
pub type Reports = BTreeSet<(u64, u64)>;

/// Waits up to `within` until InfluxDB 1.x (`db`) holds every host report of `node` that `sub`
/// received: `Ok((received, stored))`, or `Err` with the `(run, seq)` still missing.
pub fn host_reports_stored(
    sub: &Subscriber,
    db: &Service,
    node: &str,
    within: Duration,
) -> Result<(Reports, Reports), Vec<(u64, u64)>> {
    let both = || (sub.host_reports(node), db.stored_host_reports(node));
    wait_for(within, || {
        let (seen, stored) = both();
        seen.is_subset(&stored).then_some((seen, stored))
    })
    .ok_or_else(|| {
        let (seen, stored) = both();
        seen.difference(&stored).copied().collect()
    })
}

/// Checks a shared group's split of the agents' messages `sub` saw, given each gateway's
/// `leakmon_gateway_messages_total`: every gateway gets every status and event, each host and
/// containers report goes to one of them; each took a share, and together each report once.
pub fn assert_reports_split(sub: &Subscriber, totals: &[u64]) {
    let count = |suffix: &str| sub.on(suffix).len() as u64;
    let reports = count("host") + count("containers");
    let each = count("status") + count("events");
    let taken: Vec<u64> = totals.iter().map(|t| t.saturating_sub(each)).collect();
    assert!(
        taken.iter().all(|t| *t > 0),
        "every gateway takes a share: {taken:?} of {reports}"
    );
    assert_eq!(
        taken.iter().sum::<u64>(),
        reports,
        "each report ingested once: {taken:?} of {reports} reports"
    );
}

/// Per (node, run): the data-message seqs any of `subs` received (several subscribers on
/// several broker nodes: what one missed while its node was down, another saw).
pub fn data_seqs(subs: &[&Subscriber]) -> BTreeMap<(String, u64), BTreeSet<u64>> {
    let mut out: BTreeMap<(String, u64), BTreeSet<u64>> = BTreeMap::new();
    for m in subs.iter().flat_map(|s| s.all()).filter(Received::is_data) {
        let j = m.json();
        if let (Some(node), Some(run), Some(seq)) =
            (j["node"].as_str(), j["run"].as_u64(), j["seq"].as_u64())
        {
            out.entry((node.to_owned(), run)).or_default().insert(seq);
        }
    }
    out
}

/// The seqs missing between the lowest and the highest of `s`: messages of one agent's run
/// that no subscriber got.
pub fn seq_gaps(s: &BTreeSet<u64>) -> Vec<u64> {
    match (s.first(), s.last()) {
        (Some(&lo), Some(&hi)) => (lo..=hi).filter(|q| !s.contains(q)).collect(),
        _ => Vec::new(),
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The thread ends at its next event (keep-alive at the latest); do not wait for it.
        drop(self.thread.take());
    }
}

/// The local Docker engine, driven through its CLI.
pub mod docker {
    use std::process::Command;

    pub const TEST_IMAGE: &str = "leakmon-test/busybox:latest";

    /// Runs `docker <args>`; panics with its output on failure.
    pub fn run(args: &[&str]) -> String {
        crate::run_ok(Command::new("docker").args(args))
            .trim()
            .to_owned()
    }

    /// True if the engine answers.
    pub fn available() -> bool {
        Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Builds a tiny image from the static busybox (no registry needed).
    pub fn ensure_test_image() {
        assert!(
            available(),
            "the Docker engine does not answer: scripts/test starts dockerd"
        );
        let have = Command::new("docker")
            .args(["image", "inspect", TEST_IMAGE])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if have {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("busybox-static is not installed (scripts/test installs it)");
        std::fs::copy(busybox, dir.path().join("busybox")).expect("copy busybox");
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"/bin/sh\"]\n",
        )
        .expect("write Dockerfile");
        let out = Command::new("docker")
            .args(["build", "-q", "-t", TEST_IMAGE])
            .arg(dir.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("docker build");
        assert!(
            out.status.success(),
            "building the test image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Removes a container if it exists.
    pub fn remove(name: &str) {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
    }

    /// A detached container, `docker run -d --name NAME ARGS...` (a leftover of that name
    /// removed first), removed when dropped: also when the test fails.
    pub struct Container(pub String);

    impl Container {
        pub fn run(name: &str, args: &[&str]) -> Container {
            remove(name);
            let mut all = vec!["run", "-d", "--name", name];
            all.extend_from_slice(args);
            run(&all);
            Container(name.to_owned())
        }
    }

    impl Drop for Container {
        fn drop(&mut self) {
            remove(&self.0);
        }
    }
}

/// A throwaway certificate authority for TLS tests, made with the openssl CLI.
pub mod rabbitmq;
pub mod swarm;

pub mod chaos;

pub mod lockdown;

pub mod pki {
    use std::path::Path;
    use std::process::Command;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("cannot run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes `ca.pem`, and `<name>.pem` / `<name>.key` signed by it for each of `names`
    /// (the first is the server, valid for IP 127.0.0.1); all world-readable.
    pub fn make(dir: &Path, names: &[&str]) {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=leakmon-test-ca",
            ],
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.ext");
        for name in names {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                ],
            );
        }
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir).expect("read pki dir").flatten() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644));
        }
    }
}

/// A process the test started, killed when dropped.
pub struct Service {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    program: String,
}

impl Service {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("service.log"))
            .expect("service log");
        let log2 = log.try_clone().expect("log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (scripts/test installs it)",
                    self.program
                )
            });
        self.child = Some(child);
    }

    fn wait_http(&self, path: &str) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        wait_for(Duration::from_secs(30), || {
            http_get(&url).ok().filter(|(s, _)| *s < 500).map(|_| ())
        })
        .unwrap_or_else(|| {
            panic!(
                "{} did not answer on {url}; log:\n{}",
                self.program,
                std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
            )
        });
    }

    /// SIGSTOP / SIGCONT: a database that still accepts connections but answers nothing
    /// (its kernel keeps accepting), then again.
    pub fn pause(&self, stop: bool) {
        if let Some(c) = &self.child {
            signal(c, if stop { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Kills the process (SIGKILL): the database is suddenly gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn start_again(&mut self, ready_path: &str) {
        assert!(self.child.is_none());
        self.spawn();
        self.wait_http(ready_path);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// InfluxDB 1.x (Debian's influxd), with its data in a temp dir.
    pub fn influxdb() -> Service {
        Self::influxdb_on("127.0.0.1")
    }

    /// InfluxDB 1.x with its HTTP API on `ip` (`0.0.0.0` for clients in other namespaces).
    pub fn influxdb_on(ip: &str) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let rpc = free_port();
        let d = dir.path().display();
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  enabled = true\n  bind-address = \"{ip}:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).expect("write influxdb.conf");
        let mut s = Service {
            port,
            args: vec![
                "-config".into(),
                dir.path().join("influxdb.conf").display().to_string(),
            ],
            dir,
            child: None,
            program: "influxd".into(),
        };
        s.spawn();
        s.wait_http("/ping");
        s
    }

    /// VictoriaMetrics (serves InfluxDB's /api/v2/write), with its data in a temp dir.
    pub fn victoria_metrics() -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut s = Service {
            port,
            args: vec![
                format!("-storageDataPath={}", dir.path().join("data").display()),
                format!("-httpListenAddr=127.0.0.1:{port}"),
                "-retentionPeriod=100y".into(),
                "-search.latencyOffset=0s".into(),
            ],
            dir,
            child: None,
            program: "victoria-metrics".into(),
        };
        s.spawn();
        s.wait_http("/health");
        s
    }

    /// Prometheus Alertmanager (Debian's `prometheus-alertmanager`), clustering off, notifying
    /// `webhook` (a URL) at once: group_wait and group_interval 1 s, resolved notices on.
    pub fn alertmanager(webhook: &str) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = format!(
            "route:\n  receiver: hook\n  group_by: [alertname, node]\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: '{webhook}'\n        \
             send_resolved: true\n"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), conf).expect("write alertmanager.yml");
        let mut s = Service {
            port,
            args: vec![
                format!(
                    "--config.file={}",
                    dir.path().join("alertmanager.yml").display()
                ),
                format!("--storage.path={}", dir.path().join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
            ],
            dir,
            child: None,
            program: "prometheus-alertmanager".into(),
        };
        s.spawn();
        s.wait_http("/-/ready");
        s
    }

    /// `(run, seq)` of the host reports of `node` in InfluxDB 1.x (database `leakmon`, the
    /// `leakmon_agent` measurement).
    pub fn stored_host_reports(&self, node: &str) -> BTreeSet<(u64, u64)> {
        let r = self.influx_query(
            "leakmon",
            &format!("SELECT run, seq FROM leakmon_agent WHERE host = '{node}'"),
        );
        r["results"][0]["series"][0]["values"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|p| Some((p[1].as_u64()?, p[2].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// InfluxQL query against InfluxDB 1.x; the JSON answer.
    pub fn influx_query(&self, db: &str, q: &str) -> serde_json::Value {
        let url = format!(
            "http://127.0.0.1:{}/query?db={}&epoch=ms&q={}",
            self.port,
            db,
            urlencode(q)
        );
        http_get(&url)
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A minimal HTTP/1.0 GET on loopback: status and body.
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(hostport)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// A running `leakmon-gateway` with a config of the test's (and an HTTP port of its own).
pub struct Gateway {
    daemon: Daemon,
    pub http_port: u16,
}

impl std::ops::Deref for Gateway {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Gateway {
    pub fn start(config: &str) -> Gateway {
        Self::start_in(tempfile::tempdir().expect("tempdir"), config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Gateway {
        let http_port = free_port();
        let full = format!("{config}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n");
        let g = Gateway {
            daemon: Daemon::start("leakmon-gateway", dir, &full),
            http_port,
        };
        g.wait_ready();
        g
    }

    fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/healthz", self.http_port);
        wait_for(Duration::from_secs(15), || http_get(&url).ok().map(|_| ()))
            .unwrap_or_else(|| panic!("gateway did not serve /healthz; log:\n{}", self.log()));
    }

    pub fn get(&self, path: &str) -> String {
        http_get(&format!("http://127.0.0.1:{}{path}", self.http_port))
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// SIGTERM: the gateway must stop by itself (its writer spooling what it holds) and exit
    /// 0, within [`Daemon::terminate`]'s 30 s, as systemd's stop waits for it.
    pub fn terminate(&mut self) {
        let code = self.daemon.terminate();
        assert_eq!(
            code,
            Some(0),
            "the gateway did not exit 0 on SIGTERM (None: it was still running after 30 s and was killed):\n{}",
            self.log()
        );
    }

    /// SIGTERM, then start again with the same config and directory (spool).
    pub fn restart(&mut self) {
        self.terminate();
        self.daemon.spawn();
        self.wait_ready();
    }

    /// SIGKILL (a crash, nothing saved); [`Gateway::start_again`] brings it back.
    pub fn crash(&mut self) {
        self.daemon.kill9();
    }

    /// Starts it again with the same config and directory.
    pub fn start_again(&mut self) {
        self.daemon.spawn();
        self.wait_ready();
    }

    /// SIGKILL (a crash, nothing saved), then start again with the same config and directory.
    pub fn crash_and_start(&mut self) {
        self.daemon.kill9();
        self.daemon.spawn();
        self.wait_ready();
    }
}

/// Publishes one message with mosquitto_pub (for bad-input tests).
pub fn mosquitto_pub(port: u16, topic: &str, payload: &[u8]) {
    let _ = pub_stdin(port, topic, &["-s"], payload);
}

/// The node a `<prefix>/v1/nodes/<node>/<channel>` topic names.
fn topic_node(topic: &str) -> &str {
    topic.split('/').nth(3).unwrap_or_default()
}

/// `payload` sealed on `topic` with the key of the node the topic names: what its agent, or
/// whoever holds its key, sends there.
pub fn seal_on(topic: &str, payload: &[u8]) -> Vec<u8> {
    seal(topic_node(topic), topic, payload)
}

/// Publishes one message as its topic's node would, sealed with that node's key: a client
/// holding the node's identity.
pub fn mosquitto_pub_sealed(port: u16, topic: &str, payload: &[u8]) {
    mosquitto_pub(port, topic, &seal_on(topic, payload));
}

/// [`mosquitto_pub_retained`] sealed with the topic's node's key.
pub fn mosquitto_pub_retained_sealed(port: u16, topic: &str, payload: &[u8]) -> bool {
    mosquitto_pub_retained(port, topic, &seal_on(topic, payload))
}

/// Publishes one retained message with mosquitto_pub; whether the broker took it.
pub fn mosquitto_pub_retained(port: u16, topic: &str, payload: &[u8]) -> bool {
    pub_stdin(port, topic, &["-r", "-s"], payload)
}

/// Publishes each of `payloads` as one message, over one connection (mosquitto_pub -l).
pub fn mosquitto_pub_lines(port: u16, topic: &str, payloads: &[Vec<u8>]) {
    let _ = pub_stdin(port, topic, &["-l"], &payloads.join(&b"\n"[..]));
}

/// mosquitto_pub at QoS 1, its message(s) on stdin (`-s`: all of it, `-l`: a line each).
/// An empty message goes as `-n` (mosquitto_pub refuses a zero-length `-s`).
fn pub_stdin(port: u16, topic: &str, mode: &[&str], input: &[u8]) -> bool {
    use std::io::Write as _;
    let mode: Vec<&str> = mode
        .iter()
        .map(|m| {
            if *m == "-s" && input.is_empty() {
                "-n"
            } else {
                m
            }
        })
        .collect();
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(&mode)
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (mosquitto-clients)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
        if mode == ["-l"] {
            let _ = stdin.write_all(b"\n");
        }
    }
    child.wait().is_ok_and(|s| s.success())
}

/// A real HTTP server of the test's own that records every request (webhook receiver).
pub struct HttpReceiver {
    pub addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
}

#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl HttpReceiver {
    /// Listens on `ip` (a free port) and answers every request `204 No Content`.
    pub fn start(ip: &str) -> HttpReceiver {
        Self::serve(std::net::TcpListener::bind((ip, 0)).expect("bind the receiver"))
    }

    /// Listens on `addr` (a receiver that comes up where a gateway already points).
    pub fn start_on(addr: std::net::SocketAddr) -> HttpReceiver {
        Self::serve(std::net::TcpListener::bind(addr).expect("bind the receiver"))
    }

    fn serve(listener: std::net::TcpListener) -> HttpReceiver {
        use std::io::{BufRead, BufReader, Read, Write as _};
        let addr = listener.local_addr().expect("receiver address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let r = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_lowercase(), v.trim().to_owned()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                if let Ok(mut v) = r.lock() {
                    v.push(ReceivedRequest {
                        method,
                        path,
                        headers,
                        body,
                    });
                }
                let mut s = reader.into_inner();
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        HttpReceiver { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn all(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
