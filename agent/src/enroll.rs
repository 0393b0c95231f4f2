//! Enrolment, the agent's side: with no key file, the agent asks the gateways for its node
//! key, proving with its Swarm node certificate which node it is
//! ([`leakmon_protocol::enroll`]), keeps the key it gets (`<state_dir>/node.key`, mode 600),
//! and starts as usual. It asks again every few seconds (up to 20 s apart) until the
//! active gateway answers: a gateway not yet up, or a Swarm that does not know this node yet,
//! only delays it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use leakmon_common::mqtt::Connector;
use leakmon_common::notify::Notify;
use leakmon_protocol::auth::NodeKey;
use leakmon_protocol::codec::encode;
use leakmon_protocol::enroll::{EnrollReply, Enrolling};
use leakmon_protocol::topics::Topics;
use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::config::Enrollment;

/// How long one attempt waits for the gateway's answer.
const WAIT: Duration = Duration::from_secs(10);
/// The longest pause between attempts (a request costs a gateway a signature check).
const PAUSE_MAX: Duration = Duration::from_secs(20);

/// This node's key, from the gateways; saved to `e.save_to`.
pub async fn enroll(
    connector: &Connector,
    topics: &Topics,
    node: &str,
    e: &Enrollment,
    notify: &Notify,
) -> anyhow::Result<NodeKey> {
    let mut pause = Duration::from_secs(2);
    for attempt in 0usize.. {
        notify.watchdog();
        // a key the engine cannot sign with is no use asking again
        let (enrolling, request) =
            Enrolling::start(node, &e.cert_pem, &e.key_pem, leakmon_common::now_ms())
                .context("auth.swarm_key_file / auth.swarm_cert_file: enrolment cannot start")?;
        let broker = attempt % connector.endpoints.len().max(1);
        match once(
            connector,
            broker,
            topics,
            node,
            enrolling,
            &encode(&request),
        )
        .await
        {
            Ok(key) => {
                save(&e.save_to, &key)?;
                tracing::info!(%node, saved = %e.save_to.display(), "enrolled: this node's key came from the gateways");
                return Ok(key);
            }
            Err(why) => {
                tracing::warn!(%node, attempt, broker = %connector.url(broker), error = %why,
                "enrolment: no key yet (is the active gateway up, with a Swarm that knows this node?); asking again")
            }
        }
        // (systemd's watchdog is armed while enrolling: pinged at least every 10 s)
        let until = tokio::time::Instant::now() + pause;
        while tokio::time::Instant::now() < until {
            notify.watchdog();
            tokio::time::sleep_until(
                until.min(tokio::time::Instant::now() + Duration::from_secs(10)),
            )
            .await;
        }
        pause = (pause * 2).min(PAUSE_MAX);
    }
    unreachable!("the attempts never end")
}

/// One attempt: subscribe to the answer, send the request, wait for the answer.
async fn once(
    connector: &Connector,
    broker: usize,
    topics: &Topics,
    node: &str,
    enrolling: Enrolling,
    request: &[u8],
) -> anyhow::Result<NodeKey> {
    let id = format!(
        "leakmon-enroll-{node}-{}-{broker}-{}",
        std::process::id(),
        leakmon_common::now_ms() % 100_000
    );
    let (client, mut events) = AsyncClient::new(connector.options(broker, &id, None), 8);
    let reply_topic = topics.enroll_reply(node);
    client.subscribe(&reply_topic, QoS::AtLeastOnce).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut enrolling = Some(enrolling);
    let result = loop {
        let ev = match tokio::time::timeout_at(deadline, events.poll()).await {
            Err(_) => break Err(anyhow::anyhow!("no answer within {} s", WAIT.as_secs())),
            Ok(Err(e)) => break Err(anyhow::anyhow!("broker: {e}")),
            Ok(Ok(ev)) => ev,
        };
        match ev {
            // subscribed: the answer cannot be missed now
            Event::Incoming(Packet::SubAck(_)) => {
                client
                    .publish(
                        topics.enroll_request(node),
                        QoS::AtLeastOnce,
                        false,
                        request.to_vec(),
                    )
                    .await?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == reply_topic => {
                let Ok(reply) = serde_json::from_slice::<EnrollReply>(&p.payload) else {
                    continue;
                };
                if let Some(e) = enrolling.take() {
                    break e
                        .finish(&reply)
                        .map_err(|e| anyhow::anyhow!("the answer: {e}"));
                }
            }
            _ => {}
        }
    };
    let _ = client.disconnect().await;
    result
}

/// Writes the key file (mode 600) atomically.
fn save(path: &Path, key: &NodeKey) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(key.to_text().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
