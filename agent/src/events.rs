//! Docker engine events, turned into event reports the moment the engine sends them.

use std::collections::HashMap;

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use leakmon_protocol::Health;

use crate::collect::containers::{LABEL_SERVICE, LABEL_TASK};

/// The container actions the agent forwards.
pub const ACTIONS: [&str; 6] = ["die", "oom", "kill", "restart", "start", "health_status"];

/// The container actions the agent listens for: those it forwards, and those that change the
/// container list between its slow relistings (see `collect::containers::Invalidations`).
/// Not the `exec_*` of every health check.
pub const WATCHED: [&str; 13] = [
    "die",
    "oom",
    "kill",
    "restart",
    "start",
    "health_status",
    "create",
    "destroy",
    "stop",
    "pause",
    "unpause",
    "rename",
    "update",
];

/// An engine event, before it gets a header.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    pub ts_ms: i64,
    pub action: String,
    pub container_id: String,
    pub container_name: String,
    pub image: String,
    pub exit_code: Option<i64>,
    pub signal: Option<String>,
    pub health: Option<Health>,
    pub swarm_service: Option<String>,
    pub swarm_task: Option<String>,
}

/// Maps an engine message to an event; `None` for anything the agent does not forward.
pub fn from_message(m: &EventMessage, now_ms: i64) -> Option<EngineEvent> {
    let raw = m.action.as_deref()?;
    // Health events arrive as "health_status: healthy".
    let (action, health) = match raw.split_once(':') {
        Some(("health_status", h)) => (
            "health_status",
            Some(match h.trim() {
                "healthy" => Health::Healthy,
                "unhealthy" => Health::Unhealthy,
                "starting" => Health::Starting,
                _ => Health::None,
            }),
        ),
        Some(_) => return None,
        None => (raw, None),
    };
    if !ACTIONS.contains(&action) {
        return None;
    }
    let actor = m.actor.as_ref()?;
    let empty = HashMap::new();
    let attrs = actor.attributes.as_ref().unwrap_or(&empty);
    let attr = |k: &str| attrs.get(k).cloned();
    Some(EngineEvent {
        ts_ms: m
            .time_nano
            .map(|n| n / 1_000_000)
            .or(m.time.map(|s| s * 1000))
            .unwrap_or(now_ms),
        action: action.to_owned(),
        container_id: actor.id.clone()?,
        container_name: attr("name").unwrap_or_default(),
        image: attr("image").unwrap_or_default(),
        exit_code: attr("exitCode").and_then(|c| c.parse().ok()),
        signal: attr("signal"),
        health,
        swarm_service: attr(LABEL_SERVICE),
        swarm_task: attr(LABEL_TASK),
    })
}

/// The engine's event stream, filtered to container events of [`ACTIONS`].
pub fn stream(
    docker: &Docker,
) -> impl futures_util::Stream<Item = Result<EventMessage, bollard::errors::Error>> + '_ {
    let mut filters = HashMap::new();
    filters.insert("type".to_owned(), vec!["container".to_owned()]);
    filters.insert(
        "event".to_owned(),
        WATCHED.iter().map(|a| (*a).to_owned()).collect(),
    );
    docker
        .events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .fuse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forwarded_action_is_watched() {
        assert!(ACTIONS.iter().all(|a| WATCHED.contains(a)));
    }

    fn msg(action: &str, attrs: serde_json::Value) -> EventMessage {
        serde_json::from_value(serde_json::json!({
            "Type": "container", "Action": action, "timeNano": 1_764_180_000_123_456_789i64,
            "time": 1_764_180_000i64,
            "Actor": {"ID": "abc", "Attributes": attrs}
        }))
        .unwrap()
    }

    #[test]
    fn die_with_exit_code_and_swarm_labels() {
        let e = from_message(
            &msg(
                "die",
                serde_json::json!({"name": "web.1.x", "image": "nginx", "exitCode": "137",
                       "com.docker.swarm.service.name": "web"}),
            ),
            0,
        )
        .unwrap();
        assert_eq!(e.action, "die");
        assert_eq!(e.ts_ms, 1_764_180_000_123);
        assert_eq!(e.exit_code, Some(137));
        assert_eq!(e.container_name, "web.1.x");
        assert_eq!(e.swarm_service.as_deref(), Some("web"));
    }

    #[test]
    fn health_status_is_split() {
        let e = from_message(&msg("health_status: unhealthy", serde_json::json!({})), 0).unwrap();
        assert_eq!(e.action, "health_status");
        assert_eq!(e.health, Some(Health::Unhealthy));
    }

    #[test]
    fn other_actions_are_ignored() {
        assert!(from_message(&msg("exec_start: sh -c true", serde_json::json!({})), 0).is_none());
        assert!(from_message(&msg("attach", serde_json::json!({})), 0).is_none());
        let e = from_message(&msg("kill", serde_json::json!({"signal": "9"})), 0).unwrap();
        assert_eq!(e.signal.as_deref(), Some("9"));
    }
}
