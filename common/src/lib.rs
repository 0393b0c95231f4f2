//! What the leakmon binaries share beyond the wire protocol: layered configuration
//! ([`config`]), the MQTT connection set-up with TLS ([`mqtt`]) and reconnect backoff
//! ([`backoff`]), and the disk spool of records both use while their peer is away ([`spool`]).

pub mod args;
pub mod backoff;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod docker;
pub mod mqtt;
pub mod notify;
pub mod spool;
pub mod tcp;

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
