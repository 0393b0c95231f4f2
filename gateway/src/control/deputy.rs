//! Standing in for a deaf active gateway: the hand-over through the Swarm, pure (time passed
//! in). [`super::leader`] makes the gateway beside the Swarm leader the active one; this
//! machine keeps the fleet guarded when that gateway cannot hear the broker while another
//! gateway can, and makes sure two gateways never both act.
//!
//! Both sides see the Swarm's node labels (every gateway beside a manager polls the node list
//! each second), and Swarm writes them with a version check (an update made on an old version
//! is refused), so the labels are the hand-over's record:
//!
//! 1. **The deaf one stands down and says so.** The leader's gateway that has not heard the
//!    fleet for [`DEAF_AFTER`] (its broker connection down, or more than half the agents
//!    silent at once) stops acting (it already did the moment it stopped hearing: nothing is
//!    decided on silence) and writes `leakmon.gateway.deaf` on its own node. From then on it
//!    does not act, restarted or not, until it has heard the fleet for [`HEAR_AGAIN`] and
//!    removed that label, *and* no deputy's lease is alive.
//! 2. **One deputy takes a lease.** A gateway beside another manager that has heard the fleet
//!    for [`HEAR_AGAIN`] and sees the leader's node marked deaf writes
//!    `leakmon.gateway.deputy = "<its name> <n>"` on the leader's node, on the version it read:
//!    of two candidates, Swarm accepts one. It renews the lease each poll (a new `n`) and acts
//!    only while its last successful renewal was *sent* less than [`VALID`] ago.
//! 3. **Everyone else waits the lease out.** Any other gateway counts a deputy label alive
//!    until it has seen it unchanged for [`TERM`] (from its own first sight of that value, on
//!    its own clock) and does not act while one is. The deputy's last renewal was sent before
//!    the observer could see it, so the deputy has stopped ([`VALID`]) at least
//!    `TERM - VALID` before anyone else starts, whatever the poll delays.
//! 4. **Stepping down.** The deputy releases its lease (removes its label, on the version it
//!    read) as soon as the leader's node is not marked deaf any more, the leader changed, it
//!    stops hearing the fleet itself, or its renewal is refused; it stops acting before it
//!    writes. A deputy that dies leaves a label nobody renews: alive for [`TERM`], then stale
//!    (the active gateway removes stale labels).
//!
//! The leader's gateway, marked deaf, keeps its role and its persistent session until a
//! deputy stands in (then it goes on standby, on its own session: the broker keeps queueing
//! for the active session meanwhile); a broker down for everyone so costs no reconnection.
//! A deputy keeps its own clean broker session (no reconnection, so no pause before it may
//! act); the broker keeps queueing for the active gateway's persistent session, which the
//! leader's gateway reads again when it takes back its role (points written twice are the
//! same points: the database keeps one per series and time).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::models::Node;

use super::leader::Role;
use super::plan::Change;

/// On the leader's node: its gateway is deaf and stands down; the value is its name.
pub const LABEL_DEAF: &str = "leakmon.gateway.deaf";
/// On the leader's node: the lease of the gateway standing in, `"<name> <n>"`.
pub const LABEL_DEPUTY: &str = "leakmon.gateway.deputy";

/// How long the leader's gateway must have heard nothing before it writes that it is deaf.
pub const DEAF_AFTER: Duration = Duration::from_secs(1);
/// How long a gateway must have heard the fleet before it stands in, or takes its role back.
pub const HEAR_AGAIN: Duration = Duration::from_secs(2);
/// How often the deputy renews its lease.
pub const RENEW: Duration = Duration::from_secs(1);
/// The deputy acts only while its last successful renewal was sent less than this ago.
pub const VALID: Duration = Duration::from_secs(3);
/// Everyone else counts a lease alive until they saw it unchanged this long.
pub const TERM: Duration = Duration::from_secs(6);
/// How often the active gateway removes stale leases.
const TIDY_EVERY: Duration = Duration::from_secs(10);

/// The label owner's name: a lease's value is `"<name> <n>"`.
fn owner(value: &str) -> &str {
    value.split(' ').next().unwrap_or(value)
}

/// What one poll of the engine showed.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub self_id: &'a str,
    /// The leader's node id, when known.
    pub leader: Option<&'a str>,
    /// The Swarm makes this gateway the active one ([`super::leader::role`]).
    pub swarm_active: bool,
    /// Each node's id and labels.
    pub nodes: &'a [(String, HashMap<String, String>)],
}

impl View<'_> {
    fn label(&self, node: &str, key: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(id, _)| id == node)
            .and_then(|(_, l)| l.get(key))
            .map(String::as_str)
    }
}

/// A label write, made on the node as read just before, only if its condition still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// This gateway is deaf: its node says so.
    MarkDeaf { node: String, value: String },
    /// It hears again: the mark goes.
    ClearDeaf { node: String },
    /// Take (`expect` the label as last seen: none, or a stale lease) or renew (`expect` our
    /// own value) the lease on the deaf leader's node.
    Lease {
        node: String,
        expect: Option<String>,
        value: String,
    },
    /// Remove a lease with this value (our own, or a stale one), if it is still there.
    Release { node: String, value: String },
}

impl Op {
    /// The node this op writes.
    pub fn node(&self) -> &str {
        match self {
            Op::MarkDeaf { node, .. }
            | Op::ClearDeaf { node }
            | Op::Lease { node, .. }
            | Op::Release { node, .. } => node,
        }
    }

    /// The update to make on node `id` as just read: `Err` when the condition no longer holds
    /// (someone else wrote first), `Ok(None)` when there is nothing to change.
    pub fn change(&self, id: &str, current: &Node) -> Result<Option<Change>, String> {
        let mut spec = current.spec.clone().unwrap_or_default();
        let labels = spec.labels.get_or_insert_with(HashMap::new);
        match self {
            Op::MarkDeaf { value, .. } => {
                if labels.get(LABEL_DEAF) == Some(value) {
                    return Ok(None);
                }
                labels.insert(LABEL_DEAF.into(), value.clone());
            }
            Op::ClearDeaf { .. } => {
                if labels.remove(LABEL_DEAF).is_none() {
                    return Ok(None);
                }
            }
            Op::Lease { expect, value, .. } => {
                if !labels.contains_key(LABEL_DEAF) {
                    return Err("the leader's gateway no longer says it is deaf".into());
                }
                let now = labels.get(LABEL_DEPUTY);
                if now != expect.as_ref() {
                    return Err(format!(
                        "the lease changed: {} instead of {}",
                        now.map_or("none", String::as_str),
                        expect.as_deref().unwrap_or("none")
                    ));
                }
                labels.insert(LABEL_DEPUTY.into(), value.clone());
            }
            Op::Release { value, .. } => {
                if labels.get(LABEL_DEPUTY) != Some(value) {
                    return Ok(None);
                }
                labels.remove(LABEL_DEPUTY);
            }
        }
        Ok(Some(Change::Node {
            id: id.to_owned(),
            version: current.version.as_ref().and_then(|v| v.index).unwrap_or(0) as i64,
            spec,
        }))
    }
}

/// A lease this gateway holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    node: String,
    value: String,
    /// When its last successful write was sent.
    sent: Instant,
}

/// The hand-over machine of one gateway.
#[derive(Debug)]
pub struct Deputy {
    name: String,
    /// Whether this gateway hears the fleet, and since when (continuously).
    hearing: Option<(bool, Instant)>,
    /// Its node is marked deaf (by it, now or before a restart): it does not act.
    yielded: bool,
    lease: Option<Lease>,
    counter: u64,
    /// Deputy labels seen, by node: the value and when this gateway first saw it.
    seen: BTreeMap<String, (String, Instant)>,
    /// The leader's node when last polled.
    leader: Option<String>,
    swarm_active: bool,
    last_tidy: Option<Instant>,
}

impl Deputy {
    pub fn new(name: &str) -> Deputy {
        Deputy {
            name: name.to_owned(),
            hearing: None,
            yielded: false,
            lease: None,
            counter: 0,
            seen: BTreeMap::new(),
            leader: None,
            swarm_active: false,
            last_tidy: None,
        }
    }

    /// Whether this gateway hears the fleet now (its broker connection up and most agents
    /// heard); every tick.
    pub fn on_hearing(&mut self, hears: bool, now: Instant) {
        match self.hearing {
            Some((h, _)) if h == hears => {}
            _ => self.hearing = Some((hears, now)),
        }
    }

    /// How long it has (not) heard: `Some` only when its hearing is `hears`.
    fn for_how_long(&self, hears: bool, now: Instant) -> Option<Duration> {
        match self.hearing {
            Some((h, since)) if h == hears => Some(now.saturating_duration_since(since)),
            _ => None,
        }
    }

    fn heard_for(&self, d: Duration, now: Instant) -> bool {
        self.for_how_long(true, now).is_some_and(|t| t >= d)
    }

    /// A lease of another gateway's that may still be in use.
    fn foreign_alive(&self, now: Instant) -> Option<(&str, &str)> {
        self.seen
            .iter()
            .find(|(_, (v, since))| {
                owner(v) != self.name && now.saturating_duration_since(*since) < TERM
            })
            .map(|(n, (v, _))| (n.as_str(), owner(v)))
    }

    fn next_value(&mut self) -> String {
        self.counter += 1;
        format!("{} {}", self.name, self.counter)
    }

    /// One poll of the engine: the label write to make now, if any (the shell makes it on the
    /// node as it reads it then, and reports with [`Deputy::on_done`]).
    pub fn on_poll(&mut self, v: View<'_>, now: Instant) -> Option<Op> {
        self.leader = v.leader.map(str::to_owned);
        self.swarm_active = v.swarm_active;
        for (id, labels) in v.nodes {
            match labels.get(LABEL_DEPUTY) {
                Some(val) => {
                    if self.seen.get(id).is_none_or(|(s, _)| s != val) {
                        self.seen.insert(id.clone(), (val.clone(), now));
                    }
                }
                None => {
                    self.seen.remove(id);
                }
            }
        }
        self.seen
            .retain(|id, _| v.nodes.iter().any(|(n, _)| n == id));
        self.yielded = v.label(v.self_id, LABEL_DEAF).is_some();

        if let Some(l) = self.lease.clone() {
            let keep = !v.swarm_active
                && v.leader == Some(l.node.as_str())
                && v.label(&l.node, LABEL_DEAF).is_some()
                && v.label(&l.node, LABEL_DEPUTY) == Some(l.value.as_str())
                && self.heard_for(Duration::ZERO, now);
            if !keep {
                self.lease = None;
                return Some(Op::Release {
                    node: l.node,
                    value: l.value,
                });
            }
            if now.saturating_duration_since(l.sent) >= RENEW {
                let value = self.next_value();
                return Some(Op::Lease {
                    node: l.node,
                    expect: Some(l.value),
                    value,
                });
            }
            return None;
        }

        if self.yielded && self.heard_for(HEAR_AGAIN, now) {
            return Some(Op::ClearDeaf {
                node: v.self_id.to_owned(),
            });
        }
        if v.swarm_active {
            let deaf = self
                .for_how_long(false, now)
                .is_some_and(|t| t >= DEAF_AFTER);
            if !self.yielded && deaf {
                return Some(Op::MarkDeaf {
                    node: v.self_id.to_owned(),
                    value: self.name.clone(),
                });
            }
            if !self.yielded
                && self.heard_for(Duration::ZERO, now)
                && self.foreign_alive(now).is_none()
                && self
                    .last_tidy
                    .is_none_or(|t| now.saturating_duration_since(t) >= TIDY_EVERY)
            {
                if let Some((node, (value, _))) =
                    self.seen.iter().find(|(_, (v, _))| owner(v) != self.name)
                {
                    self.last_tidy = Some(now);
                    return Some(Op::Release {
                        node: node.clone(),
                        value: value.clone(),
                    });
                }
            }
            return None;
        }
        let leader = v.leader?;
        if leader == v.self_id
            || v.label(leader, LABEL_DEAF).is_none()
            || !self.heard_for(HEAR_AGAIN, now)
        {
            return None;
        }
        let current = v.label(leader, LABEL_DEPUTY).map(str::to_owned);
        let alive = self.seen.get(leader).is_some_and(|(val, since)| {
            owner(val) != self.name && now.saturating_duration_since(*since) < TERM
        });
        if alive {
            return None;
        }
        let value = self.next_value();
        Some(Op::Lease {
            node: leader.to_owned(),
            expect: current,
            value,
        })
    }

    /// The outcome of `op`, sent at `sent`: `ok` when the Swarm took it (or there was nothing
    /// to change).
    pub fn on_done(&mut self, op: &Op, ok: bool, sent: Instant) {
        match op {
            Op::MarkDeaf { .. } if ok => self.yielded = true,
            Op::ClearDeaf { .. } if ok => self.yielded = false,
            Op::Lease { node, value, .. } => {
                self.lease = ok.then(|| Lease {
                    node: node.clone(),
                    value: value.clone(),
                    sent,
                });
                if ok {
                    // our own label: never waited out by ourselves
                    self.seen.insert(node.clone(), (value.clone(), sent));
                }
            }
            _ => {}
        }
    }

    /// Whether this gateway may act on the Swarm now (with the role [`Deputy::role`] gave).
    pub fn may_act(&self, now: Instant) -> bool {
        if self.swarm_active {
            !self.yielded && self.foreign_alive(now).is_none()
        } else {
            self.holds(now)
        }
    }

    fn holds(&self, now: Instant) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|l| now.saturating_duration_since(l.sent) < VALID)
    }

    /// The role this gateway plays, from the one the Swarm gives it: the leader's gateway is
    /// on standby (on its own broker session) while a deputy's lease may be in use; a deputy
    /// is active (on its own session too) while its lease is valid.
    pub fn role(&self, swarm: Role, now: Instant) -> Role {
        if swarm.swarm_active() {
            // Marked deaf with nobody standing in (the broker down for everyone), it keeps its
            // role and its session (so it acts again as soon as it has cleared its mark, with
            // no reconnection), acting on nothing meanwhile ([`Deputy::may_act`]).
            if let Some((node, who)) = self.foreign_alive(now) {
                return Role::standby(format!(
                    "the local engine is the Swarm leader, but gateway {who} stands in (lease on node {node}) until it steps down"
                ));
            }
            return swarm;
        }
        match &self.lease {
            Some(l) if self.holds(now) => Role::deputy(format!(
                "standing in for the deaf gateway beside the Swarm leader (node {})",
                l.node
            )),
            _ => swarm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: &str = "m1";

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// The Swarm's labels, kept as the shell would write them.
    #[derive(Default, Clone)]
    struct Swarm {
        labels: BTreeMap<String, HashMap<String, String>>,
        leader: String,
    }

    impl Swarm {
        fn new() -> Swarm {
            let mut s = Swarm {
                leader: LEADER.into(),
                ..Default::default()
            };
            for n in ["m1", "m2", "m3"] {
                s.labels.insert(n.into(), HashMap::new());
            }
            s
        }
        fn nodes(&self) -> Vec<(String, HashMap<String, String>)> {
            self.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
        /// Applies `op` as the shell does: its condition checked on the labels as they are.
        fn apply(&mut self, op: &Op) -> bool {
            let node = Node {
                spec: Some(bollard::models::NodeSpec {
                    labels: Some(self.labels[op.node()].clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match op.change(op.node(), &node) {
                Ok(Some(Change::Node { spec, .. })) => {
                    self.labels
                        .insert(op.node().into(), spec.labels.unwrap_or_default());
                    true
                }
                Ok(_) => true,
                Err(_) => false,
            }
        }
    }

    /// One gateway: its machine and the node it runs beside.
    struct Gw {
        d: Deputy,
        node: &'static str,
    }

    impl Gw {
        fn new(name: &str, node: &'static str) -> Gw {
            Gw {
                d: Deputy::new(name),
                node,
            }
        }
        fn poll(&mut self, s: &mut Swarm, hears: bool, now: Instant) -> Option<Op> {
            self.d.on_hearing(hears, now);
            let nodes = s.nodes();
            let v = View {
                self_id: self.node,
                leader: Some(&s.leader),
                swarm_active: s.leader == self.node,
                nodes: &nodes,
            };
            let op = self.d.on_poll(v, now)?;
            let ok = s.apply(&op);
            self.d.on_done(&op, ok, now);
            Some(op)
        }
        fn acts(&self, now: Instant) -> bool {
            self.d.may_act(now)
        }
    }

    /// `a` and `b` hear until 3 s; then `a` is deaf and `b` hears until `until` s (polls every
    /// second): `b` stands in at 4 s.
    fn deaf_from_3(s: &mut Swarm, a: &mut Gw, b: &mut Gw, t0: Instant, until: u64) {
        for i in 0..until {
            let t = t0 + secs(i as f64);
            a.poll(s, i < 3, t);
            b.poll(s, true, t);
        }
    }

    /// The leader's gateway `a` turns deaf at 0 s; `b` and `c` hear. Polls every second.
    fn three() -> (Swarm, Gw, Gw, Gw, Instant) {
        (
            Swarm::new(),
            Gw::new("gwa", "m1"),
            Gw::new("gwb", "m2"),
            Gw::new("gwc", "m3"),
            Instant::now(),
        )
    }

    #[test]
    fn a_deaf_leader_gateway_stands_down_and_one_deputy_stands_in() {
        let (mut s, mut a, mut b, mut c, t0) = three();
        for i in 0..5 {
            let t = t0 + secs(i as f64);
            a.poll(&mut s, true, t);
            b.poll(&mut s, true, t);
            c.poll(&mut s, true, t);
            assert!(a.acts(t) && !b.acts(t) && !c.acts(t));
        }
        let mut handed = None;
        for i in 5..30 {
            let t = t0 + secs(i as f64);
            a.poll(&mut s, false, t);
            b.poll(&mut s, true, t);
            c.poll(&mut s, true, t + secs(0.1));
            let acting = [a.acts(t), b.acts(t), c.acts(t)]
                .iter()
                .filter(|x| **x)
                .count();
            assert!(acting <= 1, "at {i} s two gateways act");
            if i >= 6 {
                assert!(!a.acts(t), "deaf for {} s and still acting", i - 5);
            }
            if handed.is_none() && (b.acts(t) || c.acts(t)) {
                handed = Some(i - 5);
            }
        }
        assert_eq!(handed, Some(1), "the deputy stands in at the next poll");
        assert_eq!(
            s.labels["m1"].get(LABEL_DEAF).map(String::as_str),
            Some("gwa")
        );
        assert!(s.labels["m1"][LABEL_DEPUTY].starts_with("gwb "));
        let role = b.d.role(Role::standby("x"), t0 + secs(29.0));
        assert!(role.deputy && role.active, "{role:?}");
        assert!(!a.d.role(Role::active_swarm(), t0 + secs(29.0)).active);
    }

    #[test]
    fn the_leader_gateway_takes_its_role_back_only_after_the_deputy_stepped_down() {
        let (mut s, mut a, mut b, _, t0) = three();
        deaf_from_3(&mut s, &mut a, &mut b, t0, 10);
        assert!(b.acts(t0 + secs(9.5)));
        // a hears again at 10 s: stands down two seconds more, clears its mark, and waits
        // for the lease to go
        let mut back = None;
        for i in 10..30 {
            let t = t0 + secs(i as f64);
            a.poll(&mut s, true, t);
            assert!(!(a.acts(t) && b.acts(t)), "both act at {i} s");
            b.poll(&mut s, true, t + secs(0.5));
            assert!(!(a.acts(t + secs(0.5)) && b.acts(t + secs(0.5))));
            if back.is_none() && a.acts(t + secs(0.5)) {
                back = Some(i);
            }
        }
        assert!(back.is_some_and(|b| b <= 14), "back at {back:?}");
        assert!(s.labels["m1"].is_empty(), "{:?}", s.labels["m1"]);
        assert!(!b.acts(t0 + secs(29.0)));
    }

    #[test]
    fn a_deputy_that_dies_is_waited_out_for_the_term_and_its_label_tidied() {
        let (mut s, mut a, mut b, _, t0) = three();
        deaf_from_3(&mut s, &mut a, &mut b, t0, 8);
        let last = t0 + secs(7.0);
        assert!(b.acts(last));
        // b dies (no more polls); a hears again at 8 s
        let mut back = None;
        for i in 8..30 {
            let t = t0 + secs(i as f64);
            a.poll(&mut s, true, t);
            if a.acts(t) {
                assert!(!b.acts(t), "b's lease is still valid at {i} s");
                back.get_or_insert(i);
            }
        }
        let back = back.expect("a takes its role back");
        assert!(
            t0 + secs(back as f64) >= last + VALID,
            "a acts at {back} s, the lease was renewed at 7 s"
        );
        assert!(
            !s.labels["m1"].contains_key(LABEL_DEPUTY),
            "stale lease tidied"
        );
    }

    #[test]
    fn of_two_candidates_swarm_accepts_one() {
        let (mut s, mut a, mut b, mut c, t0) = three();
        for i in 0..3 {
            let t = t0 + secs(i as f64);
            for g in [&mut a, &mut b, &mut c] {
                g.poll(&mut s, true, t);
            }
        }
        let t = t0 + secs(3.0);
        a.poll(&mut s, false, t);
        let t = t0 + secs(4.5);
        a.poll(&mut s, false, t);
        assert!(s.labels["m1"].contains_key(LABEL_DEAF));
        // both read the same labels, both try: the second write finds the label changed
        let nodes = s.nodes();
        let view = |me: &'static str| View {
            self_id: me,
            leader: Some(LEADER),
            swarm_active: false,
            nodes: &nodes,
        };
        b.d.on_hearing(true, t);
        c.d.on_hearing(true, t);
        let ob = b.d.on_poll(view("m2"), t).expect("b tries");
        let oc = c.d.on_poll(view("m3"), t).expect("c tries");
        let (okb, okc) = (s.apply(&ob), s.apply(&oc));
        b.d.on_done(&ob, okb, t);
        c.d.on_done(&oc, okc, t);
        assert!(okb && !okc);
        assert!(b.acts(t) && !c.acts(t));
        // c sees b's lease and waits
        for i in 5..20 {
            let t = t0 + secs(i as f64);
            a.poll(&mut s, false, t);
            b.poll(&mut s, true, t);
            c.poll(&mut s, true, t);
            assert!(b.acts(t) && !c.acts(t) && !a.acts(t), "{i}");
        }
    }

    #[test]
    fn a_deputy_that_stops_hearing_or_sees_a_new_leader_steps_down_before_it_writes() {
        let (mut s, mut a, mut b, _, t0) = three();
        deaf_from_3(&mut s, &mut a, &mut b, t0, 7);
        assert!(b.acts(t0 + secs(6.0)));
        let op = b.poll(&mut s, false, t0 + secs(7.0));
        assert!(matches!(op, Some(Op::Release { .. })), "{op:?}");
        assert!(!b.acts(t0 + secs(7.0)));
        assert!(!s.labels["m1"].contains_key(LABEL_DEPUTY));
        // it hears again: stands in once more after hearing for HEAR_AGAIN
        b.poll(&mut s, true, t0 + secs(8.0));
        assert!(!b.acts(t0 + secs(8.0)));
        b.poll(&mut s, true, t0 + secs(10.0));
        assert!(b.acts(t0 + secs(10.0)));
        // a new leader (m3): b steps down at once
        s.leader = "m3".into();
        let op = b.poll(&mut s, true, t0 + secs(11.0));
        assert!(matches!(op, Some(Op::Release { .. })), "{op:?}");
        assert!(!b.acts(t0 + secs(11.0)));
    }

    #[test]
    fn a_deputy_whose_renewals_fail_stops_within_valid() {
        let (mut s, mut a, mut b, _, t0) = three();
        deaf_from_3(&mut s, &mut a, &mut b, t0, 6);
        let renewed = t0 + secs(5.0);
        assert!(b.acts(renewed));
        // the engine stops answering: no poll reaches the machine, the ticks go on
        assert!(b.acts(renewed + VALID - secs(0.01)));
        assert!(!b.acts(renewed + VALID));
    }

    #[test]
    fn a_restarted_leader_gateway_finds_its_mark_and_stays_down_until_it_hears() {
        let mut s = Swarm::new();
        s.labels
            .get_mut("m1")
            .map(|l| l.insert(LABEL_DEAF.into(), "gwa".into()));
        let mut a = Gw::new("gwa", "m1");
        let t0 = Instant::now();
        a.poll(&mut s, true, t0);
        assert!(!a.acts(t0));
        a.poll(&mut s, true, t0 + secs(1.0));
        assert!(!a.acts(t0 + secs(1.0)));
        a.poll(&mut s, true, t0 + secs(2.0));
        assert!(a.acts(t0 + secs(2.0)));
        assert!(s.labels["m1"].is_empty());
    }

    #[test]
    fn nobody_stands_in_while_the_leader_gateway_hears_or_nobody_else_does() {
        let (mut s, mut a, mut b, mut c, t0) = three();
        for i in 0..20 {
            let t = t0 + secs(i as f64);
            a.poll(&mut s, i < 5, t);
            b.poll(&mut s, i < 5, t);
            c.poll(&mut s, i < 5, t);
            // (at 5 s it does not hear: the shell lets nobody act; at 6 s it is marked deaf)
            if i >= 6 {
                assert!(!a.acts(t) && !b.acts(t) && !c.acts(t));
            }
        }
        assert!(!s.labels["m1"].contains_key(LABEL_DEPUTY));
        // the broker is back for everyone: the leader's gateway takes its role back
        for i in 20..24 {
            let t = t0 + secs(i as f64);
            a.poll(&mut s, true, t);
            b.poll(&mut s, true, t);
        }
        assert!(a.acts(t0 + secs(23.0)) && !b.acts(t0 + secs(23.0)));
    }

    #[test]
    fn lease_writes_check_what_they_were_made_on() {
        let mut labels = HashMap::from([(LABEL_DEAF.to_owned(), "gwa".to_owned())]);
        let node = |l: &HashMap<String, String>| Node {
            spec: Some(bollard::models::NodeSpec {
                labels: Some(l.clone()),
                ..Default::default()
            }),
            version: Some(bollard::models::ObjectVersion { index: Some(7) }),
            ..Default::default()
        };
        let take = Op::Lease {
            node: "m1".into(),
            expect: None,
            value: "gwb 1".into(),
        };
        match take.change("m1", &node(&labels)) {
            Ok(Some(Change::Node { version, spec, .. })) => {
                assert_eq!(version, 7);
                assert_eq!(spec.labels.unwrap_or_default()[LABEL_DEPUTY], "gwb 1");
            }
            other => panic!("{other:?}"),
        }
        labels.insert(LABEL_DEPUTY.into(), "gwc 4".into());
        assert!(take.change("m1", &node(&labels)).is_err(), "taken by gwc");
        labels.remove(LABEL_DEAF);
        let renew = Op::Lease {
            node: "m1".into(),
            expect: Some("gwc 4".into()),
            value: "gwc 5".into(),
        };
        assert!(
            renew.change("m1", &node(&labels)).is_err(),
            "no longer deaf"
        );
        let release = Op::Release {
            node: "m1".into(),
            value: "gwb 1".into(),
        };
        assert_eq!(release.change("m1", &node(&labels)), Ok(None), "not ours");
    }
}
