//! Running as systemd services: the units pass `systemd-analyze verify` without a warning, and
//! both daemons speak the notification protocol to a real socket the way systemd expects:
//! READY once started, WATCHDOG pings only while alive (a stopped process stops pinging, so
//! systemd would restart it), STOPPING on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use leakmon_e2e::{bin, Broker, Daemon};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for name in ["leakmon-agent", "leakmon-gateway"] {
        let text = std::fs::read_to_string(format!("{UNITS}/{name}.service")).expect("unit");
        assert!(
            text.contains("Type=notify") && text.contains("WatchdogSec="),
            "{name}"
        );
        // verify checks that ExecStart's program exists: point it at the built binary
        let text = text.replace(
            &format!("/usr/bin/{name}"),
            &bin(name).display().to_string(),
        );
        let path = dir.path().join(format!("{name}.service"));
        std::fs::write(&path, text).expect("write unit");
        files.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("systemd-analyze (Debian's systemd; scripts/test installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    // It exits 0 even on unknown keys; any line about our units is a finding.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("leakmon-")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// Datagrams received on `sock` within `within`.
fn receive(sock: &UnixDatagram, within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

fn notify_socket() -> (tempfile::TempDir, UnixDatagram, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    let p = path.display().to_string();
    (dir, sock, p)
}

fn check_protocol(mut d: Daemon, sock: &UnixDatagram) {
    let got = receive(sock, Duration::from_secs(10));
    assert_eq!(
        got.first().map(String::as_str),
        Some("READY=1"),
        "{got:?}\n{}",
        d.log()
    );
    assert!(
        got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 10,
        "pings every 0.5 s: {got:?}"
    );
    // Hung: no pings.
    d.pause(true);
    let _ = receive(sock, Duration::from_millis(600)); // one may be in the socket already
    let hung = receive(sock, Duration::from_secs(3));
    d.pause(false);
    assert!(hung.is_empty(), "a stopped process pinged: {hung:?}");
    let back = receive(sock, Duration::from_secs(3));
    assert!(
        back.iter().any(|m| m == "WATCHDOG=1"),
        "pings resume: {back:?}"
    );
    assert_eq!(d.terminate(), Some(0));
    let bye = receive(sock, Duration::from_secs(2));
    assert!(bye.iter().any(|m| m == "STOPPING=1"), "{bye:?}");
}

#[test]
fn agent_speaks_the_systemd_notification_protocol() {
    let broker = Broker::start();
    let (_dir, sock, path) = notify_socket();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "node = \"e2e-notify\"\ninterval = \"1s\"\nstate_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[docker]\nenabled = false\n",
        dir.path().join("state").display(),
        broker.url()
    );
    let d = Daemon::start_env(
        "leakmon-agent",
        dir,
        &cfg,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    );
    check_protocol(d, &sock);
}

#[test]
fn gateway_speaks_the_systemd_notification_protocol() {
    let broker = Broker::start();
    let (_dir, sock, path) = notify_socket();
    let cfg = format!(
        "[leader]\nmode = \"standalone\"\n[mqtt]\nurl = \"{}\"\n[http]\nlisten = \"\"\n",
        broker.url()
    );
    let d = Daemon::start_env(
        "leakmon-gateway",
        tempfile::tempdir().expect("tempdir"),
        &cfg,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    );
    check_protocol(d, &sock);
}
