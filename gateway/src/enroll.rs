//! Enrolment, the gateway's checks (pure, time passed in): an agent's request
//! ([`leakmon_protocol::enroll`]) is believed only if its certificate chains to the Swarm's
//! own CA (the trust root every manager's API gives), is valid now, is a Swarm node
//! certificate (client authentication), and its key made the request's signature. What it
//! proves is the Swarm node id (the certificate's CN) and role (OU); the caller then asks
//! Swarm which name that node has, and answers only a request made under that name.

use std::time::Duration;

use leakmon_protocol::enroll::{cert_der, pem_blocks, sig_bytes, signed_bytes, EnrollRequest};
use rustls_pki_types::{CertificateDer, UnixTime};

/// How far a request's time may be from the gateway's clock (a Pi without a real-time clock
/// may boot an hour off: it enrolls once its clock is set).
pub const MAX_SKEW_MS: i64 = 10 * 60 * 1000;

/// What a request proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The Swarm node id (the certificate's CN).
    pub node_id: String,
    /// `swarm-manager` or `swarm-worker` (OU).
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a node certificate of this Swarm's CA: {0}")]
    Chain(String),
    #[error("the signature is not made by the certificate's key")]
    Signature,
    #[error("made {0} s away from this gateway's clock (at most 600)")]
    Stale(i64),
    #[error("the certificate names no Swarm node: {0}")]
    Subject(&'static str),
    #[error("{0}")]
    Encoding(String),
    #[error("no trust root from Swarm")]
    NoRoot,
}

/// Checks `r` against the Swarm's trust root(s) `roots_pem` at `now_ms`.
pub fn check(r: &EnrollRequest, roots_pem: &str, now_ms: i64) -> Result<Claim, Refused> {
    let skew = r.ts.saturating_sub(now_ms);
    if skew.abs() > MAX_SKEW_MS {
        return Err(Refused::Stale(skew / 1000));
    }
    let roots = pem_blocks(roots_pem, "CERTIFICATE");
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|d| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(d.as_slice()))
                .ok()
                .map(|a| a.to_owned())
        })
        .collect();
    if anchors.is_empty() {
        return Err(Refused::NoRoot);
    }
    let der = cert_der(r).map_err(|e| Refused::Encoding(e.to_string()))?;
    let sig = sig_bytes(r).map_err(|e| Refused::Encoding(e.to_string()))?;
    let cert = CertificateDer::from(der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&cert).map_err(|e| Refused::Chain(e.to_string()))?;
    let now = UnixTime::since_unix_epoch(Duration::from_millis(
        u64::try_from(now_ms).unwrap_or_default(),
    ));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| Refused::Chain(e.to_string()))?;
    ee.verify_signature(
        webpki::ring::ECDSA_P256_SHA256,
        &signed_bytes(&r.node, &r.cert, &r.public, r.ts),
        &sig,
    )
    .map_err(|_| Refused::Signature)?;
    subject(&der)
}

/// One DER element at the start of `b`: its tag, its contents, and what follows it.
fn element(b: &[u8]) -> Result<(u8, &[u8], &[u8]), Refused> {
    let bad = || Refused::Subject("not DER");
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const CN: &[u8] = &[0x55, 0x04, 0x03];
const OU: &[u8] = &[0x55, 0x04, 0x0B];

/// The CN and OU of a certificate's subject.
fn subject(cert: &[u8]) -> Result<Claim, Refused> {
    let (_, certificate, _) = element(cert)?;
    let (_, tbs, _) = element(certificate)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject
    let (tag, _, after) = element(rest)?;
    if tag == 0xA0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (tag, mut names, _) = element(rest)?;
    if tag != SEQUENCE {
        return Err(Refused::Subject("no subject"));
    }
    let (mut node_id, mut role) = (None, None);
    while !names.is_empty() {
        let (tag, set, next) = element(names)?;
        names = next;
        if tag != SET {
            return Err(Refused::Subject("a name that is not a set"));
        }
        let (_, pair, _) = element(set)?;
        let (_, oid, value) = element(pair)?;
        let (_, text, _) = element(value)?;
        let text = std::str::from_utf8(text)
            .map_err(|_| Refused::Subject("a name that is not text"))?
            .to_owned();
        if oid == CN {
            node_id = Some(text);
        } else if oid == OU {
            role = Some(text);
        }
    }
    Ok(Claim {
        node_id: node_id.ok_or(Refused::Subject("no CN"))?,
        role: role.ok_or(Refused::Subject("no OU"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::enroll::Enrolling;

    const ROOT: &str = include_str!("../../tests/data/swarm-certs/root-ca.crt");
    const WORKER: &str = include_str!("../../tests/data/swarm-certs/worker.crt");
    const WORKER_KEY: &str = include_str!("../../tests/data/swarm-certs/worker.key");
    const MANAGER: &str = include_str!("../../tests/data/swarm-certs/manager.crt");
    /// While the fixtures' certificates are valid (made 2026-12-07 by a Swarm of the rig,
    /// valid 90 days).
    const WHEN: i64 = 1_796_641_200_000;

    fn request(node: &str) -> EnrollRequest {
        Enrolling::start(node, WORKER, WORKER_KEY, WHEN).unwrap().1
    }

    #[test]
    fn a_swarm_node_certificate_proves_its_node_id() {
        let claim = check(&request("node2"), ROOT, WHEN).unwrap();
        assert_eq!(
            claim,
            Claim {
                node_id: "73v9vxbr7m5lqkx3ot2hdt356".into(),
                role: "swarm-worker".into()
            }
        );
        let der = &pem_blocks(MANAGER, "CERTIFICATE")[0];
        assert_eq!(subject(der).unwrap().role, "swarm-manager");
    }

    #[test]
    fn anything_else_is_refused() {
        // another Swarm's CA (the manager's certificate is no CA)
        assert!(matches!(
            check(&request("node2"), MANAGER, WHEN),
            Err(Refused::Chain(_))
        ));
        assert_eq!(check(&request("node2"), "", WHEN), Err(Refused::NoRoot));
        // the name, the key or the time changed after signing
        let mut r = request("node2");
        r.node = "node1".into();
        assert_eq!(check(&r, ROOT, WHEN), Err(Refused::Signature));
        let mut r = request("node2");
        r.public = "00".repeat(32);
        assert_eq!(check(&r, ROOT, WHEN), Err(Refused::Signature));
        // another certificate with this signature
        let mut r = request("node2");
        let (_, m) = Enrolling::start("node2", MANAGER, WORKER_KEY, WHEN).unwrap();
        r.cert = m.cert;
        assert_eq!(check(&r, ROOT, WHEN), Err(Refused::Signature));
        // too far from the clock; an expired certificate
        assert_eq!(
            check(&request("node2"), ROOT, WHEN + MAX_SKEW_MS + 1_000),
            Err(Refused::Stale(-601))
        );
        let later = WHEN + 200 * 86_400_000;
        let r = Enrolling::start("node2", WORKER, WORKER_KEY, later)
            .unwrap()
            .1;
        assert!(matches!(check(&r, ROOT, later), Err(Refused::Chain(_))));
    }

    #[test]
    fn der_that_is_not_a_certificate_is_an_error() {
        assert!(subject(&[]).is_err());
        assert!(subject(&[0x30, 0x82, 0xFF]).is_err());
        assert!(subject(&[0x30, 0x00]).is_err());
    }
}
