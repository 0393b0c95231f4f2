//! Which gateway is active: decided by the local engine (Swarm's own Raft), never by an
//! election of ours. Pure: the engine's answer in, the role out.

use std::path::Path;

use crate::config::LeaderMode;

use super::swarm::EngineView;

/// What the gateway does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Writes points, publishes events, acts on the Swarm.
    pub active: bool,
    /// `swarm` or `standalone`; why, when standby.
    pub mode: &'static str,
    pub reason: String,
    /// Standing in for the deaf gateway beside the leader ([`super::deputy`]): active, on
    /// its own broker session.
    pub deputy: bool,
}

impl Role {
    pub fn standby(reason: impl Into<String>) -> Role {
        Role {
            active: false,
            mode: "swarm",
            reason: reason.into(),
            deputy: false,
        }
    }
    /// Standing in for the deaf gateway beside the leader.
    pub fn deputy(reason: impl Into<String>) -> Role {
        Role {
            deputy: true,
            ..Role::active("swarm", reason)
        }
    }
    /// Active beside the Swarm leader.
    pub fn active_swarm() -> Role {
        Role::active("swarm", "the local engine is the Swarm leader")
    }
    fn active(mode: &'static str, reason: impl Into<String>) -> Role {
        Role {
            active: true,
            mode,
            reason: reason.into(),
            deputy: false,
        }
    }
    pub fn standalone() -> Role {
        Role::active("standalone", "leader.mode = standalone")
    }
    /// Whether the Swarm can be acted on (a Swarm leader, not a standalone gateway).
    pub fn swarm_active(&self) -> bool {
        self.active && self.mode == "swarm"
    }
}

/// In `auto` mode without an engine socket, there is no Swarm to follow.
pub fn no_engine(mode: LeaderMode, socket: Option<&Path>) -> bool {
    mode == LeaderMode::Auto && socket.is_some_and(|p| !p.exists())
}

/// The mode to judge the next answer by. `auto` stands for `swarm` from the first answer
/// that shows a Swarm on: an engine that restarts says `inactive` or `pending` for a moment,
/// and a gateway beside a manager must not take that for a machine without a Swarm (it would
/// turn itself active beside the real active gateway). To run standalone after the host left
/// its Swarm, restart the gateway.
pub fn settle_mode(mode: LeaderMode, view: &EngineView) -> LeaderMode {
    match (mode, view) {
        (
            LeaderMode::Auto,
            EngineView::Worker | EngineView::NoQuorum(_) | EngineView::Manager { .. },
        ) => LeaderMode::Swarm,
        _ => mode,
    }
}

/// The role for what the engine said.
pub fn role(mode: LeaderMode, view: &EngineView) -> Role {
    if mode == LeaderMode::Standalone {
        return Role::standalone();
    }
    match view {
        EngineView::Unreachable(e) => {
            Role::standby(format!("the local engine does not answer: {e}"))
        }
        EngineView::NoSwarm if mode == LeaderMode::Auto => {
            Role::active("standalone", "the local engine is in no Swarm")
        }
        EngineView::NoSwarm => {
            Role::standby("leader.mode = swarm but the local engine is in no Swarm")
        }
        EngineView::NotReady(state) => Role::standby(format!(
            "the local engine is not a working Swarm member yet ({state})"
        )),
        EngineView::Worker => {
            Role::standby("the local engine is a Swarm worker: run gateways beside managers")
        }
        EngineView::NoQuorum(e) => Role::standby(format!("the Swarm has no leader or quorum: {e}")),
        EngineView::Manager { self_id, nodes } => {
            if !nodes.iter().any(|n| &n.id == self_id && n.leader) {
                return Role::standby("the local engine is a Swarm manager, not the leader");
            }
            // A leader cut off from the others may still believe it leads for a while: act
            // only while it reaches a majority of the managers.
            let managers = nodes.iter().filter(|n| n.manager).count();
            let reachable = nodes
                .iter()
                .filter(|n| n.manager && (n.reachable || &n.id == self_id))
                .count();
            if reachable * 2 <= managers {
                Role::standby(format!(
                    "the local engine leads but reaches only {reachable} of {managers} managers"
                ))
            } else {
                Role::active_swarm()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::decide::{Availability, SwarmState};
    use crate::control::swarm::NodeFacts;

    fn mgr(id: &str, leader: bool) -> NodeFacts {
        NodeFacts {
            id: id.into(),
            hostname: id.into(),
            labels: Default::default(),
            state: SwarmState::Ready,
            availability: Availability::Active,
            addr: String::new(),
            leader,
            manager: true,
            reachable: true,
        }
    }

    #[test]
    fn a_leader_cut_off_from_most_managers_stands_by() {
        let mut nodes = vec![mgr("a", true), mgr("b", false), mgr("c", false)];
        let view = |nodes: &Vec<NodeFacts>| EngineView::Manager {
            self_id: "a".into(),
            nodes: nodes.clone(),
        };
        nodes[1].reachable = false;
        assert!(role(LeaderMode::Swarm, &view(&nodes)).active, "2 of 3");
        nodes[2].reachable = false;
        let r = role(LeaderMode::Swarm, &view(&nodes));
        assert!(!r.active, "1 of 3");
        assert!(r.reason.contains("1 of 3"), "{}", r.reason);
    }

    #[test]
    fn active_only_on_the_leader() {
        let view = |me: &str| EngineView::Manager {
            self_id: me.into(),
            nodes: vec![mgr("a", true), mgr("b", false)],
        };
        for mode in [LeaderMode::Auto, LeaderMode::Swarm] {
            assert!(role(mode, &view("a")).swarm_active());
            assert!(!role(mode, &view("b")).active);
        }
    }

    #[test]
    fn no_quorum_worker_or_dead_engine_is_standby() {
        for v in [
            EngineView::NoQuorum("503".into()),
            EngineView::Worker,
            EngineView::Unreachable("refused".into()),
        ] {
            for mode in [LeaderMode::Auto, LeaderMode::Swarm] {
                assert!(!role(mode, &v).active, "{v:?}");
            }
        }
    }

    #[test]
    fn outside_a_swarm_auto_is_standalone_and_swarm_waits() {
        let r = role(LeaderMode::Auto, &EngineView::NoSwarm);
        assert!(r.active && !r.swarm_active());
        assert!(!role(LeaderMode::Swarm, &EngineView::NoSwarm).active);
        assert!(role(LeaderMode::Standalone, &EngineView::Worker).active);
    }

    #[test]
    fn an_engine_rejoining_its_swarm_is_standby_in_every_mode_but_standalone() {
        for state in ["pending", "locked", "error: raft failed"] {
            let v = EngineView::NotReady(state.into());
            for mode in [LeaderMode::Auto, LeaderMode::Swarm] {
                let r = role(mode, &v);
                assert!(!r.active, "{mode:?} {state}");
                assert!(r.reason.contains(state), "{}", r.reason);
            }
        }
    }

    #[test]
    fn auto_once_in_a_swarm_never_turns_standalone() {
        // Found by the chaos suite: a manager's engine restarted, answered `inactive` for a
        // moment, and its gateway turned itself active beside the real one.
        let manager = EngineView::Manager {
            self_id: "b".into(),
            nodes: vec![mgr("a", true), mgr("b", false)],
        };
        let mut mode = LeaderMode::Auto;
        for v in [&manager, &EngineView::NoSwarm] {
            mode = settle_mode(mode, v);
            assert!(!role(mode, v).active, "{v:?}");
        }
        assert_eq!(mode, LeaderMode::Swarm);
        // never having seen one, it is standalone
        assert_eq!(
            settle_mode(LeaderMode::Auto, &EngineView::NoSwarm),
            LeaderMode::Auto
        );
        assert_eq!(
            settle_mode(LeaderMode::Standalone, &manager),
            LeaderMode::Standalone
        );
    }

    #[test]
    fn auto_without_a_socket_has_no_engine() {
        assert!(no_engine(
            LeaderMode::Auto,
            Some(Path::new("/nonexistent/docker.sock"))
        ));
        assert!(!no_engine(
            LeaderMode::Swarm,
            Some(Path::new("/nonexistent/docker.sock"))
        ));
        assert!(!no_engine(LeaderMode::Auto, None), "tcp:// host");
    }
}
