//! The leakmon wire protocol: MQTT topic names, message types and their JSON encoding.
//!
//! This crate is the only place that knows topic strings and payload shapes. It does no I/O
//! and knows nothing of tokio, MQTT clients or InfluxDB: agents encode with it, the gateway
//! decodes with it, and both agree because they share these types.
//!
//! - [`topics`]: building and parsing `<prefix>/v1/nodes/<node>/<channel>` and
//!   `<prefix>/v1/probe/<node>`.
//! - [`messages`]: the payloads (status, host, containers, event, beat, probe request and
//!   report) and [`PROTOCOL_VERSION`].
//! - [`codec`]: encoding and checked decoding with typed errors.
//! - [`auth`]: which node sent a message (a MAC with its node key, derived from the
//!   gateways' fleet key).
//! - [`limits`]: how much one report may carry (containers, disks, text lengths), applied by
//!   senders and receivers alike.

pub mod auth;
pub mod codec;
pub mod enroll;
pub mod json;
pub mod limits;
pub mod messages;
pub mod topics;

pub use codec::{decode, decode_request, encode, encode_with_capacity, DecodeError};
pub use messages::*;
pub use topics::{Channel, TopicError, Topics};

/// The version every payload carries in its `v` field. Consumers check it and drop what they
/// do not understand; additive changes (new optional fields) keep the version.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default topic prefix (`mqtt.topic_prefix`).
pub const DEFAULT_PREFIX: &str = "leakmon";
