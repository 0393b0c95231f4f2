//! What the leakmon binaries share beyond the wire protocol: layered configuration
//! ([`config`]), the MQTT connection set-up with TLS ([`mqtt`]) and reconnect backoff
//! ([`backoff`]), and the disk spool of records both use while their peer is away ([`spool`]).

pub mod backoff;
pub mod cli;
pub mod config;
pub mod mqtt;
pub mod spool;
