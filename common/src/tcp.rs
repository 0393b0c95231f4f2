//! What a TCP connect says about the host at the other end: the one rule the agent's prober
//! and the gateway's own probe share.

use std::io::ErrorKind;
use std::time::Duration;

/// What a finished connect says about the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target's TCP stack answered: it accepted, or it refused (or reset) the connection.
    Answered,
    /// No answer: timed out, host or network unreachable, or another error.
    Silent,
}

/// A connect's result (the error's kind; `TimedOut` for our own time limit) as an outcome.
/// A refusal is proof of life: only a running kernel at that address (or a firewall in
/// front of it) sends a RST or an ICMP port-unreachable. An unreachable host is not: that
/// is the prober's own stack or a router saying it cannot find the target.
pub fn outcome(result: Result<(), ErrorKind>) -> Outcome {
    match result {
        Ok(()) | Err(ErrorKind::ConnectionRefused) | Err(ErrorKind::ConnectionReset) => {
            Outcome::Answered
        }
        Err(_) => Outcome::Silent,
    }
}

/// One TCP connect to `to` within `timeout`, judged by [`outcome`]; the connection, if made,
/// is closed at once.
pub async fn attempt(to: impl tokio::net::ToSocketAddrs, timeout: Duration) -> Outcome {
    let r = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(to)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(e.kind()),
        Err(_) => Err(ErrorKind::TimedOut),
    };
    outcome(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_reset_are_answers_timeouts_and_unreachable_are_not() {
        assert_eq!(outcome(Ok(())), Outcome::Answered);
        assert_eq!(
            outcome(Err(ErrorKind::ConnectionRefused)),
            Outcome::Answered
        );
        assert_eq!(outcome(Err(ErrorKind::ConnectionReset)), Outcome::Answered);
        for silent in [
            ErrorKind::TimedOut,
            ErrorKind::HostUnreachable,
            ErrorKind::NetworkUnreachable,
            ErrorKind::AddrNotAvailable,
            ErrorKind::PermissionDenied,
            ErrorKind::Other,
        ] {
            assert_eq!(outcome(Err(silent)), Outcome::Silent, "{silent:?}");
        }
    }
}
