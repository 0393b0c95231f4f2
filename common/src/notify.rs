//! systemd's service notification protocol (`sd_notify`), written here in a few lines instead
//! of linking libsystemd: `READY=1`, `WATCHDOG=1`, `STOPPING=1` and `STATUS=...` datagrams to
//! the socket systemd names in `$NOTIFY_SOCKET`. Without that variable (not started by systemd
//! with `Type=notify`) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notify {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notify {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for Linux's abstract namespace).
    pub fn from_env() -> Notify {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(s) if !s.is_empty() => Self::to(&s),
            _ => Notify { target: None },
        }
    }

    /// To a given socket address (`@name` for the abstract namespace).
    pub fn to(socket: &str) -> Notify {
        let addr = match socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => SocketAddr::from_pathname(socket),
        };
        let target = match (UnixDatagram::unbound(), addr) {
            (Ok(s), Ok(a)) => Some((s, a)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(socket, error = %e, "cannot use the systemd notification socket");
                None
            }
        };
        Notify { target }
    }

    fn send(&self, msg: &str) {
        if let Some((s, a)) = &self.target {
            if let Err(e) = s.send_to_addr(msg.as_bytes(), a) {
                tracing::debug!(error = %e, msg, "systemd notification not sent");
            }
        }
    }

    /// Start-up is done.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// Still alive (send at least every `WatchdogSec`).
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when systemd set it for this
/// process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_every() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_the_protocol_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notify::to(path.to_str().unwrap());
        n.ready();
        n.watchdog();
        n.status("connected\nto broker");
        n.stopping();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..4 {
            let k = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        }
        assert_eq!(
            got,
            [
                "READY=1",
                "WATCHDOG=1",
                "STATUS=connected to broker",
                "STOPPING=1"
            ]
        );
    }

    #[test]
    fn abstract_socket_and_no_socket() {
        let name = format!("leakmon-test-{}", std::process::id());
        let addr = {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notify::to(&format!("@{name}")).ready();
        let mut buf = [0u8; 16];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        Notify { target: None }.ready(); // nothing, no panic
    }
}
