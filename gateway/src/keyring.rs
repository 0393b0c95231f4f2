//! Which node sent what the gateway acts on (pure): each node's key, derived from the fleet
//! key ([`leakmon_protocol::auth`]) the first time the node speaks and kept.
//!
//! During a rotation the previous fleet key is also accepted, so agents can be given their
//! new keys one by one; what the gateway seals (probe requests) uses the current one.

use std::collections::HashMap;

use leakmon_protocol::auth::{AuthError, FleetKey, NodeKey, Seal};

/// How many nodes' keys are kept (as many as the gateway tracks nodes); past it the cache
/// starts over: a flood of made-up node names costs a key derivation and a MAC each, never memory.
const MAX_CACHED: usize = 20_000;

#[derive(Debug, Clone)]
pub struct Keyring {
    /// The current fleet key first, then the previous one during a rotation.
    fleet: Vec<FleetKey>,
    /// Each node's keys, in the order of `fleet`.
    nodes: HashMap<String, Vec<NodeKey>>,
}

impl Keyring {
    pub fn new(current: FleetKey, previous: Option<FleetKey>) -> Keyring {
        Keyring {
            fleet: std::iter::once(current).chain(previous).collect(),
            nodes: HashMap::new(),
        }
    }

    fn keys(&mut self, node: &str) -> &[NodeKey] {
        if !self.nodes.contains_key(node) {
            if self.nodes.len() >= MAX_CACHED {
                self.nodes.clear();
            }
            let keys = self.fleet.iter().map(|f| f.node_key(node)).collect();
            self.nodes.insert(node.to_owned(), keys);
        }
        self.nodes.get(node).map_or(&[], Vec::as_slice)
    }

    /// Whether `payload` on `topic` was sealed with `node`'s key.
    pub fn check(&mut self, node: &str, topic: &str, payload: &[u8]) -> Result<(), AuthError> {
        // the field read once, checked with each key
        let seal = Seal::of(payload).ok_or(AuthError::Unsealed)?;
        // (a node already known costs one lookup: 4 of every node's messages a second)
        let made = match self.nodes.get(node) {
            Some(keys) => keys.iter().any(|k| k.made(topic, &seal)),
            None => self.keys(node).iter().any(|k| k.made(topic, &seal)),
        };
        if made {
            Ok(())
        } else {
            Err(AuthError::BadMac)
        }
    }

    /// `payload` for `node` on `topic`, sealed with its current key (a probe request: only
    /// that node takes it).
    pub fn seal(&mut self, node: &str, topic: &str, payload: Vec<u8>) -> Vec<u8> {
        match self.keys(node).first() {
            Some(k) => k.seal(topic, payload),
            None => payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(b: u8) -> FleetKey {
        FleetKey::from_bytes([b; 32])
    }

    const TOPIC: &str = "leakmon/v1/nodes/a/beat";

    #[test]
    fn a_node_keys_seal_checks_and_nothing_else_does() {
        let mut ring = Keyring::new(fleet(1), None);
        let sealed = fleet(1).node_key("a").seal(TOPIC, br#"{"v":1}"#.to_vec());
        assert_eq!(ring.check("a", TOPIC, &sealed), Ok(()));
        assert_eq!(ring.check("b", TOPIC, &sealed), Err(AuthError::BadMac));
        assert_eq!(
            ring.check("a", TOPIC, br#"{"v":1}"#),
            Err(AuthError::Unsealed)
        );
        let other = fleet(2).node_key("a").seal(TOPIC, br#"{"v":1}"#.to_vec());
        assert_eq!(ring.check("a", TOPIC, &other), Err(AuthError::BadMac));
        // what the gateway seals for a node, that node's key checks
        let req = ring.seal("a", TOPIC, br#"{"v":1,"id":2}"#.to_vec());
        assert_eq!(fleet(1).node_key("a").check(TOPIC, &req), Ok(()));
    }

    #[test]
    fn during_a_rotation_both_keys_check_and_the_new_one_seals() {
        let mut ring = Keyring::new(fleet(2), Some(fleet(1)));
        for f in [fleet(1), fleet(2)] {
            let sealed = f.node_key("a").seal(TOPIC, br#"{"v":1}"#.to_vec());
            assert_eq!(ring.check("a", TOPIC, &sealed), Ok(()));
        }
        let req = ring.seal("a", TOPIC, br#"{"v":1}"#.to_vec());
        assert_eq!(fleet(2).node_key("a").check(TOPIC, &req), Ok(()));
        assert!(fleet(1).node_key("a").check(TOPIC, &req).is_err());
    }

    #[test]
    fn made_up_names_never_grow_the_cache_past_its_bound() {
        let mut ring = Keyring::new(fleet(1), None);
        let junk = format!(r#"{{"v":1,"mac":"{}"}}"#, "0".repeat(64));
        for i in 0..MAX_CACHED + 10 {
            let _ = ring.check(&format!("n{i}"), TOPIC, junk.as_bytes());
        }
        assert!(ring.nodes.len() <= MAX_CACHED);
    }
}
