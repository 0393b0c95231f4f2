//! Which node sent a message: a MAC (BLAKE3 in keyed mode) over the topic and the payload,
//! with a key only that node and the gateways hold.
//!
//! The gateways hold the **fleet key** (32 random bytes, `leakmon-gateway keys new`). Each
//! node's key is derived from it and the node's name ([`FleetKey::node_key`],
//! `leakmon-gateway keys node NAME`): the agent holds its own node's key only, so a stolen
//! node key speaks for that one node. The gateway derives a node's key once and keeps it.
//!
//! A sealed payload is the JSON object with one more field at its end, `"mac"`: 64 hex digits
//! of the keyed BLAKE3 hash of `topic`, a zero byte and the payload as it was before the
//! field was added, keyed with the node's seal key (BLAKE3's `derive_key` of the node key,
//! context [`SEAL_CONTEXT`]). The derivations and the client-id tags are HMAC-SHA256.
//! Every JSON reader still reads it (consumers ignore the field); checking it takes no
//! re-encoding: the last [`TRAILER_LEN`] bytes are the field.
//!
//! Pure: no I/O, no randomness (the key's bytes are passed in).

use ring::hmac;

/// `,"mac":"`, the start of the field a sealed payload ends with.
const FIELD: &[u8] = b",\"mac\":\"";
/// The keys' and the MACs' length (HMAC-SHA256's and BLAKE3's).
const MAC_LEN: usize = 32;
/// BLAKE3's context string for deriving a node's seal key from its key.
const SEAL_CONTEXT: &str = "leakmon 2026-12-07 node seal v1";
/// How many bytes sealing adds: the field, 64 hex digits, `"` (the object's `}` was there).
pub const SEAL_OVERHEAD: usize = FIELD.len() + 2 * MAC_LEN + 1;
/// How long the end of a sealed payload that is the field is: [`SEAL_OVERHEAD`] and the `}`.
pub const TRAILER_LEN: usize = SEAL_OVERHEAD + 1;

/// Labels the derivation, so a node key is never any other key of this scheme.
const NODE_KEY_LABEL: &[u8] = b"leakmon node key v1\0";
/// Labels a [`FleetKey::tag`] or [`NodeKey::tag`].
const TAG_LABEL: &[u8] = b"leakmon tag v1\0";

/// 12 hex digits of the HMAC of `label` with `key`: a name no one without the key can guess.
fn tag(key: &hmac::Key, label: &str) -> String {
    let mut c = hmac::Context::with_key(key);
    c.update(TAG_LABEL);
    c.update(label.as_bytes());
    hex(&c.sign().as_ref()[..6])
}
const FLEET_KEY_HEADER: &str = "leakmon-fleet-key v1";
const NODE_KEY_HEADER: &str = "leakmon-node-key v1";

/// A key file or text that is not a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a leakmon {0} key: expected `{1} ...`")]
    Header(&'static str, &'static str),
    #[error("the key is not 64 hexadecimal digits")]
    Hex,
    #[error("the node key is for `{0}`, not for this node")]
    OtherNode(String),
    #[error("the node name: {0}")]
    Node(String),
}

/// Why a payload is not proven to come from its node.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum AuthError {
    /// No `mac` field at its end (a client without a key; an agent with auth off).
    #[error("not sealed: no `mac` field at the end of the payload")]
    Unsealed,
    /// A `mac` field that the node's key did not make.
    #[error("the `mac` is not the node's: forged, altered or made with another key")]
    BadMac,
}

impl AuthError {
    /// A stable label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Unsealed => "unsealed",
            AuthError::BadMac => "bad_mac",
        }
    }
}

/// The gateways' secret, from which every node key is derived.
#[derive(Clone, PartialEq, Eq)]
pub struct FleetKey([u8; MAC_LEN]);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

impl FleetKey {
    pub fn from_bytes(bytes: [u8; MAC_LEN]) -> FleetKey {
        FleetKey(bytes)
    }

    /// Reads the text of a fleet key file: `leakmon-fleet-key v1 <64 hex digits>`.
    pub fn parse(text: &str) -> Result<FleetKey, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(FLEET_KEY_HEADER)
            .ok_or(KeyError::Header("fleet", FLEET_KEY_HEADER))?;
        Ok(FleetKey(unhex(rest.trim()).ok_or(KeyError::Hex)?))
    }

    /// The text of its key file.
    pub fn to_text(&self) -> String {
        format!("{FLEET_KEY_HEADER} {}\n", hex(&self.0))
    }

    /// A name for `label` that only holders of the fleet key can know: the suffix of the
    /// gateways' MQTT client ids, so that no stranger can take their sessions.
    pub fn tag(&self, label: &str) -> String {
        tag(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), label)
    }

    /// The default MQTT client id of the gateway named `name`: nobody without the fleet key
    /// can take its session.
    pub fn gateway_client_id(&self, name: &str) -> String {
        format!(
            "leakmon-gateway-{name}-{}",
            self.tag(&format!("client id {name}"))
        )
    }

    /// The default client id of the active gateway's persistent session (the same on every
    /// gateway of the fleet).
    pub fn session_id(&self) -> String {
        format!("leakmon-gateway-active-{}", self.tag("active session"))
    }

    /// The key of the node named `node`.
    pub fn node_key(&self, node: &str) -> NodeKey {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut c = hmac::Context::with_key(&k);
        c.update(NODE_KEY_LABEL);
        c.update(node.as_bytes());
        let mut bytes = [0u8; MAC_LEN];
        bytes.copy_from_slice(c.sign().as_ref());
        NodeKey::new(node, bytes)
    }
}

/// One node's key: it seals what the node sends, and what the gateways send it.
#[derive(Clone)]
pub struct NodeKey {
    node: String,
    bytes: [u8; MAC_LEN],
    key: hmac::Key,
    /// The key of the seal, derived from `bytes` (one key for one purpose).
    seal_key: [u8; MAC_LEN],
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({}, ..)", self.node)
    }
}

impl PartialEq for NodeKey {
    fn eq(&self, other: &NodeKey) -> bool {
        self.node == other.node && self.bytes == other.bytes
    }
}

impl NodeKey {
    fn new(node: &str, bytes: [u8; MAC_LEN]) -> NodeKey {
        NodeKey {
            node: node.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            seal_key: blake3::derive_key(SEAL_CONTEXT, &bytes),
            bytes,
        }
    }

    /// A name for `label` that only this node and the gateways can know: the suffix of its
    /// agent's MQTT client id.
    pub fn tag(&self, label: &str) -> String {
        tag(&self.key, label)
    }

    /// The default MQTT client id of this node's agent: nobody without its key can take its
    /// session.
    pub fn client_id(&self) -> String {
        format!("leakmon-agent-{}-{}", self.node, self.tag("mqtt client id"))
    }

    /// The node it is for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Reads the text of a node key file: `leakmon-node-key v1 <node> <64 hex digits>`.
    pub fn parse(text: &str) -> Result<NodeKey, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(NODE_KEY_HEADER)
            .ok_or(KeyError::Header("node", NODE_KEY_HEADER))?;
        let mut words = rest.split_whitespace();
        let (Some(node), Some(key), None) = (words.next(), words.next(), words.next()) else {
            return Err(KeyError::Header("node", NODE_KEY_HEADER));
        };
        crate::topics::validate_node(node).map_err(|e| KeyError::Node(e.to_string()))?;
        Ok(NodeKey::new(node, unhex(key).ok_or(KeyError::Hex)?))
    }

    /// The text of its key file.
    pub fn to_text(&self) -> String {
        format!("{NODE_KEY_HEADER} {} {}\n", self.node, hex(&self.bytes))
    }

    /// The key, checked to be `node`'s.
    pub fn for_node(self, node: &str) -> Result<NodeKey, KeyError> {
        if self.node == node {
            Ok(self)
        } else {
            Err(KeyError::OtherNode(self.node))
        }
    }

    /// BLAKE3 in keyed mode (a PRF, so a MAC) over the topic, a zero byte and the body.
    /// Not HMAC-SHA256 as the other tags here: every message of every node is sealed and
    /// checked, and a Raspberry Pi 4 has no SHA-2 instructions (HMAC-SHA256 took 40 % of the
    /// agent's instructions per sample without them); BLAKE3 takes a fraction of that there,
    /// and on the gateway's x86 its SIMD beats SHA's instructions too.
    fn mac(&self, topic: &str, body: &[&[u8]]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.seal_key);
        h.update(topic.as_bytes());
        h.update(&[0]);
        for part in body {
            h.update(part);
        }
        h.finalize()
    }

    /// `payload` (a JSON object, as [`crate::encode`] makes it) with its `mac` field for
    /// `topic`. A payload that is not a non-empty object is returned unchanged (nothing this
    /// protocol sends).
    pub fn seal(&self, topic: &str, mut payload: Vec<u8>) -> Vec<u8> {
        if payload.len() < 3 || payload.first() != Some(&b'{') || payload.last() != Some(&b'}') {
            return payload;
        }
        let tag = self.mac(topic, &[&payload]);
        payload.pop();
        payload.reserve(SEAL_OVERHEAD + 1);
        payload.extend_from_slice(FIELD);
        payload.extend_from_slice(hex(tag.as_bytes()).as_bytes());
        payload.extend_from_slice(b"\"}");
        payload
    }

    /// Whether `payload` on `topic` was sealed with this key.
    pub fn check(&self, topic: &str, payload: &[u8]) -> Result<(), AuthError> {
        let seal = Seal::of(payload).ok_or(AuthError::Unsealed)?;
        if self.made(topic, &seal) {
            Ok(())
        } else {
            Err(AuthError::BadMac)
        }
    }

    /// Whether this key made `seal` for `topic` (a payload's seal read once, checked with
    /// several keys: a gateway during a rotation).
    pub fn made(&self, topic: &str, seal: &Seal<'_>) -> bool {
        let tag = self.mac(topic, &[seal.body, b"}"]);
        equal(tag.as_bytes(), &seal.mac)
    }
}

/// A payload's `mac` field, read (sealed by someone; not yet whether rightly).
#[derive(Debug, Clone, Copy)]
pub struct Seal<'a> {
    /// The payload before the field.
    body: &'a [u8],
    mac: [u8; MAC_LEN],
}

impl<'a> Seal<'a> {
    /// The seal `payload` ends with, if it ends with one.
    pub fn of(payload: &'a [u8]) -> Option<Seal<'a>> {
        let at = payload.len().checked_sub(TRAILER_LEN)?;
        let (body, trailer) = payload.split_at(at);
        let digits = trailer.strip_prefix(FIELD)?.strip_suffix(b"\"}")?;
        let mac = unhex(std::str::from_utf8(digits).ok()?)?;
        (body.first() == Some(&b'{')).then_some(Seal { body, mac })
    }
}

/// Compares in time that does not depend on where they differ.
/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex(text: &str) -> Option<[u8; MAC_LEN]> {
    let mut out = [0u8; MAC_LEN];
    unhex_into(text, &mut out)?;
    Some(out)
}

/// Reads `text`, exactly twice as many hex digits as `out` has bytes, into `out`.
pub(crate) fn unhex_into(text: &str, out: &mut [u8]) -> Option<()> {
    let t = text.as_bytes();
    if t.len() != 2 * out.len() {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    for (o, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(b: u8) -> FleetKey {
        FleetKey::from_bytes([b; MAC_LEN])
    }

    const TOPIC: &str = "leakmon/v1/nodes/pi1/beat";

    #[test]
    fn a_sealed_payload_is_still_the_same_json_with_a_mac_field() {
        let k = fleet(1).node_key("pi1");
        let p = br#"{"v":1,"node":"pi1","run":3,"n":9}"#.to_vec();
        let sealed = k.seal(TOPIC, p.clone());
        assert_eq!(sealed.len(), p.len() + SEAL_OVERHEAD);
        let v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(v["run"], 3);
        assert_eq!(v["mac"].as_str().unwrap().len(), 64);
        assert_eq!(k.check(TOPIC, &sealed), Ok(()));
        assert!(Seal::of(&sealed).is_some());
    }

    #[test]
    fn another_node_topic_or_byte_fails_and_no_mac_is_unsealed() {
        let f = fleet(1);
        let k = f.node_key("pi1");
        let sealed = k.seal(TOPIC, br#"{"v":1,"node":"pi1"}"#.to_vec());
        // another node's key, another fleet's, another topic
        assert_eq!(
            f.node_key("pi2").check(TOPIC, &sealed),
            Err(AuthError::BadMac)
        );
        assert_eq!(
            fleet(2).node_key("pi1").check(TOPIC, &sealed),
            Err(AuthError::BadMac)
        );
        assert_eq!(
            k.check("leakmon/v1/nodes/pi1/status", &sealed),
            Err(AuthError::BadMac)
        );
        // every byte of the body and of the mac counts
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                k.check(TOPIC, &bad).is_err(),
                "byte {i} flipped still checks"
            );
        }
        assert_eq!(
            k.check(TOPIC, br#"{"v":1,"node":"pi1"}"#),
            Err(AuthError::Unsealed)
        );
        assert_eq!(k.check(TOPIC, b""), Err(AuthError::Unsealed));
        assert_eq!(k.check(TOPIC, &sealed[1..]), Err(AuthError::Unsealed));
    }

    #[test]
    fn node_keys_differ_by_node_and_fleet_and_read_back_from_their_text() {
        let f = fleet(7);
        assert_ne!(f.node_key("a"), f.node_key("b"));
        assert_ne!(f.node_key("a"), fleet(8).node_key("a"));
        assert_eq!(f.node_key("a"), f.node_key("a"));
        let text = f.node_key("pi-3").to_text();
        assert!(text.starts_with("leakmon-node-key v1 pi-3 "));
        let k = NodeKey::parse(&text).unwrap();
        assert_eq!(k, f.node_key("pi-3"));
        assert_eq!(
            k.clone().for_node("pi-4"),
            Err(KeyError::OtherNode("pi-3".into()))
        );
        assert!(k.for_node("pi-3").is_ok());
        assert_eq!(FleetKey::parse(&f.to_text()).unwrap(), f);
        // the key is not in its debug text
        assert!(!format!("{f:?}{:?}", f.node_key("a")).contains("0707"));
    }

    #[test]
    fn bad_key_texts_say_what_is_wrong() {
        assert_eq!(
            FleetKey::parse("hello"),
            Err(KeyError::Header("fleet", FLEET_KEY_HEADER))
        );
        assert_eq!(
            FleetKey::parse("leakmon-fleet-key v1 abc"),
            Err(KeyError::Hex)
        );
        let zz = format!("leakmon-fleet-key v1 {}", "zz".repeat(32));
        assert_eq!(FleetKey::parse(&zz), Err(KeyError::Hex));
        assert!(NodeKey::parse(&fleet(1).to_text()).is_err());
        let bad_node = format!("leakmon-node-key v1 a/b {}", "00".repeat(32));
        assert!(matches!(NodeKey::parse(&bad_node), Err(KeyError::Node(_))));
        assert!(NodeKey::parse("leakmon-node-key v1 a").is_err());
    }

    #[test]
    fn tags_are_the_keys_own_and_stable() {
        let f = fleet(1);
        assert_eq!(f.tag("x"), f.tag("x"));
        assert_eq!(f.tag("x").len(), 12);
        assert_ne!(f.tag("x"), f.tag("y"));
        assert_ne!(f.tag("x"), fleet(2).tag("x"));
        let k = f.node_key("a");
        assert_eq!(k.tag("x"), f.node_key("a").tag("x"));
        assert_ne!(k.tag("x"), f.node_key("b").tag("x"));
        assert_ne!(k.tag("x"), f.tag("x"));
    }

    #[test]
    fn what_is_not_an_object_is_not_sealed() {
        let k = fleet(1).node_key("a");
        assert_eq!(k.seal(TOPIC, b"{}".to_vec()), b"{}");
        assert_eq!(k.seal(TOPIC, b"[1]".to_vec()), b"[1]");
    }
}
