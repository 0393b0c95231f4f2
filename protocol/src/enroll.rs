//! Enrolment (pure): an agent gets its node key from the gateways by proving, with the
//! certificate its Swarm gave its node, which Swarm node it runs on. No step by hand: every
//! Swarm node holds a certificate from the Swarm's own CA (CN = node id, OU = role) and its
//! key, and the managers know the CA.
//!
//! - **Request** (agent to the gateways, on `<prefix>/v1/nodes/<node>/enroll`): the node's
//!   certificate (DER, base64), a fresh X25519 public key, the time, and an ECDSA P-256
//!   signature of the three and the node's name with the certificate's key.
//! - **Reply** (the active gateway to the agent, on `<prefix>/v1/enroll/<node>`): the
//!   gateway's own fresh X25519 public key, and the node's key file sealed with
//!   ChaCha20-Poly1305 under a key both sides derive (HKDF-SHA256 of the X25519 secret, salted
//!   with both public keys). Only the holder of the request's private X25519 key can open it:
//!   a replayed request, or a reply read by anyone else, gives nothing away.
//!
//! The gateway's checks (the certificate chains to the Swarm's CA, the signature, the node's
//! name is the one Swarm gives that node id) live in the gateway; this module has what both
//! sides share.

use ring::{aead, agreement, hkdf, rand, signature};
use serde::{Deserialize, Serialize};

use crate::auth::{hex, NodeKey};

const SIGNED_LABEL: &[u8] = b"leakmon enroll request v1\0";
const KEY_LABEL: &[u8] = b"leakmon enroll key v1";

/// The largest enrolment message anyone reads (a Swarm node certificate is under 1 KiB).
pub const MAX_ENROLL_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub v: u32,
    pub node: String,
    /// The node's Swarm certificate, DER in base64.
    pub cert: String,
    /// The agent's fresh X25519 public key, hex.
    pub public: String,
    /// When it was made, ms since the epoch.
    pub ts: i64,
    /// ECDSA P-256 (ASN.1) of [`signed_bytes`] with the certificate's key, hex.
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollReply {
    pub v: u32,
    pub node: String,
    /// The gateway's fresh X25519 public key, hex.
    pub public: String,
    /// The node's key file, sealed (ChaCha20-Poly1305), hex.
    pub sealed: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    #[error("no {0} in the PEM text")]
    NoPem(&'static str),
    #[error("the Swarm node key is not a P-256 PKCS#8 key")]
    BadNodeKey,
    #[error("not hex or base64: {0}")]
    Encoding(&'static str),
    #[error("a reply for another request or node, or tampered with")]
    Unsealed,
    #[error("the sealed key is not this node's: {0}")]
    WrongKey(String),
    #[error("no randomness")]
    Random,
}

/// What the request's signature covers.
pub fn signed_bytes(node: &str, cert: &str, public: &str, ts: i64) -> Vec<u8> {
    let mut m = SIGNED_LABEL.to_vec();
    for part in [node, cert, public, &ts.to_string()] {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m
}

fn unhex(s: &str) -> Result<Vec<u8>, EnrollError> {
    let mut out = vec![0u8; s.len() / 2];
    crate::auth::unhex_into(s, &mut out).ok_or(EnrollError::Encoding("hex"))?;
    Ok(out)
}

/// A fresh X25519 key pair: the private key (used once) and the public key's bytes.
fn ephemeral(
    rng: &rand::SystemRandom,
) -> Result<(agreement::EphemeralPrivateKey, Vec<u8>), EnrollError> {
    let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, rng)
        .map_err(|_| EnrollError::Random)?;
    let public = private
        .compute_public_key()
        .map_err(|_| EnrollError::Random)?
        .as_ref()
        .to_vec();
    Ok((private, public))
}

/// The DER of every PEM block labelled `label` in `text` (header lines such as Swarm's
/// `kek-version: 0` are skipped).
pub fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == begin {
            body = Some(String::new());
        } else if line == end {
            if let Some(b) = body.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b) {
                    out.push(der);
                }
            }
        } else if let Some(b) = body.as_mut() {
            if !line.contains(':') {
                b.push_str(line);
            }
        }
    }
    out
}

/// The certificate of a request, DER.
pub fn cert_der(r: &EnrollRequest) -> Result<Vec<u8>, EnrollError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(&r.cert)
        .map_err(|_| EnrollError::Encoding("base64"))
}

/// The signature of a request, bytes.
pub fn sig_bytes(r: &EnrollRequest) -> Result<Vec<u8>, EnrollError> {
    unhex(&r.sig)
}

/// The key both sides seal the reply with.
fn reply_key(
    secret: &[u8],
    agent: &[u8],
    gateway: &[u8],
) -> Result<aead::LessSafeKey, EnrollError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &[agent, gateway].concat());
    let info = [KEY_LABEL];
    let prk = salt.extract(secret);
    let okm = prk
        .expand(&info, &aead::CHACHA20_POLY1305)
        .map_err(|_| EnrollError::Unsealed)?;
    let key = aead::UnboundKey::from(okm);
    Ok(aead::LessSafeKey::new(key))
}

/// An agent's enrolment under way: what opens the reply.
pub struct Enrolling {
    node: String,
    private: agreement::EphemeralPrivateKey,
    public: Vec<u8>,
}

impl Enrolling {
    /// A request for `node`, from the Swarm node certificate and key (PEM, as in
    /// `/var/lib/docker/swarm/certificates/`), at `now_ms`.
    pub fn start(
        node: &str,
        cert_pem: &str,
        key_pem: &str,
        now_ms: i64,
    ) -> Result<(Enrolling, EnrollRequest), EnrollError> {
        use base64::Engine as _;
        let rng = rand::SystemRandom::new();
        let cert = pem_blocks(cert_pem, "CERTIFICATE")
            .into_iter()
            .next()
            .ok_or(EnrollError::NoPem("CERTIFICATE"))?;
        let pkcs8 = pem_blocks(key_pem, "PRIVATE KEY")
            .into_iter()
            .next()
            .ok_or(EnrollError::NoPem("PRIVATE KEY"))?;
        let signer = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &rng,
        )
        .map_err(|_| EnrollError::BadNodeKey)?;
        let (private, public) = ephemeral(&rng)?;
        let cert = base64::engine::general_purpose::STANDARD.encode(cert);
        let public_hex = hex(&public);
        let sig = signer
            .sign(&rng, &signed_bytes(node, &cert, &public_hex, now_ms))
            .map_err(|_| EnrollError::Random)?;
        let request = EnrollRequest {
            v: 1,
            node: node.to_owned(),
            cert,
            public: public_hex,
            ts: now_ms,
            sig: hex(sig.as_ref()),
        };
        Ok((
            Enrolling {
                node: node.to_owned(),
                private,
                public,
            },
            request,
        ))
    }

    /// The node key a reply carries, if it is the reply to this request.
    pub fn finish(self, reply: &EnrollReply) -> Result<NodeKey, EnrollError> {
        if reply.node != self.node {
            return Err(EnrollError::Unsealed);
        }
        let gateway = unhex(&reply.public)?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, &gateway);
        let key = agreement::agree_ephemeral(self.private, &peer, |secret| {
            reply_key(secret, &self.public, &gateway)
        })
        .map_err(|_| EnrollError::Unsealed)??;
        let mut sealed = unhex(&reply.sealed)?;
        let text = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key([0; 12]),
                aead::Aad::from(self.node.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| EnrollError::Unsealed)?;
        let text = std::str::from_utf8(text).map_err(|_| EnrollError::Unsealed)?;
        NodeKey::parse(text)
            .and_then(|k| k.for_node(&self.node))
            .map_err(|e| EnrollError::WrongKey(e.to_string()))
    }
}

/// The gateway's reply to `request` (already checked: its certificate, signature and node
/// name), carrying `key`.
pub fn reply_for(request: &EnrollRequest, key: &NodeKey) -> Result<EnrollReply, EnrollError> {
    let rng = rand::SystemRandom::new();
    let agent = unhex(&request.public)?;
    let (private, public) = ephemeral(&rng)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, &agent);
    let sealer =
        agreement::agree_ephemeral(private, &peer, |secret| reply_key(secret, &agent, &public))
            .map_err(|_| EnrollError::Encoding("the request's X25519 key"))??;
    let mut text = key.to_text().into_bytes();
    sealer
        .seal_in_place_append_tag(
            // each key seals one message: its nonce may be fixed
            aead::Nonce::assume_unique_for_key([0; 12]),
            aead::Aad::from(request.node.as_bytes()),
            &mut text,
        )
        .map_err(|_| EnrollError::Random)?;
    Ok(EnrollReply {
        v: 1,
        node: request.node.clone(),
        public: hex(&public),
        sealed: hex(&text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::FleetKey;

    const CERT: &str = include_str!("../../tests/data/swarm-certs/worker.crt");
    const KEY: &str = include_str!("../../tests/data/swarm-certs/worker.key");

    #[test]
    fn a_reply_opens_only_for_its_request() {
        let fleet = FleetKey::from_bytes([3; 32]);
        let key = fleet.node_key("node2");
        let (enrolling, request) = Enrolling::start("node2", CERT, KEY, 1_000).unwrap();
        assert_eq!(request.node, "node2");
        assert_eq!(
            cert_der(&request).unwrap(),
            pem_blocks(CERT, "CERTIFICATE")[0]
        );
        let reply = reply_for(&request, &key).unwrap();
        // a second request's holder cannot open the first's reply
        let (other, _) = Enrolling::start("node2", CERT, KEY, 1_000).unwrap();
        assert_eq!(other.finish(&reply), Err(EnrollError::Unsealed));
        // tampered with
        let (e2, r2) = Enrolling::start("node2", CERT, KEY, 1_000).unwrap();
        let mut bad = reply_for(&r2, &key).unwrap();
        let flipped = if bad.sealed.starts_with("00") {
            "01"
        } else {
            "00"
        };
        bad.sealed.replace_range(0..2, flipped);
        assert_eq!(e2.finish(&bad), Err(EnrollError::Unsealed));
        assert_eq!(enrolling.finish(&reply).unwrap(), key);
    }

    #[test]
    fn a_key_for_another_node_is_refused() {
        let fleet = FleetKey::from_bytes([3; 32]);
        let (enrolling, request) = Enrolling::start("node2", CERT, KEY, 1_000).unwrap();
        let reply = reply_for(&request, &fleet.node_key("node3")).unwrap();
        assert!(matches!(
            enrolling.finish(&reply),
            Err(EnrollError::WrongKey(_))
        ));
    }

    #[test]
    fn pem_with_headers_and_bad_keys() {
        // Swarm's key file has a `kek-version: 0` header line
        assert_eq!(pem_blocks(KEY, "PRIVATE KEY").len(), 1);
        assert!(pem_blocks(KEY, "CERTIFICATE").is_empty());
        assert!(matches!(
            Enrolling::start("n", CERT, CERT, 0),
            Err(EnrollError::NoPem("PRIVATE KEY"))
        ));
        let not_p256 = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            Enrolling::start("n", CERT, not_p256, 0),
            Err(EnrollError::BadNodeKey)
        ));
    }
}
