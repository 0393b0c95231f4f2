//! What the leakmon binaries share beyond the wire protocol: layered configuration
//! ([`config`]), the MQTT connection set-up with TLS ([`mqtt`]) and reconnect backoff
//! ([`backoff`]). Pure except where it reads the files a config names.

pub mod backoff;
pub mod config;
pub mod mqtt;
