//! Every action watched to its effect: a pure state machine, time passed in.
//!
//! An action on the Swarm is a request, not a result: a failover re-pins a service, and the
//! task may still never run (the standby froze, its engine is stuck, the image is missing).
//! So each action the gateway makes is watched until Swarm shows its effect, within a bound:
//!
//! - a **failover** is done when the service's task (desired and actual state `running`)
//!   runs on the node it was pinned to ([`FAILOVER_BOUND`]). Past the bound, or as soon as
//!   that node is no longer fit to be a standby (its agent silent, the detector suspecting it,
//!   Swarm not reporting it ready and active), it is `unconfirmed` and the service moves on to
//!   the next fit standby (least loaded, chosen by the plan among those this module names);
//!   when none is left, `failover_impossible` (reason [`NO_ELIGIBLE_STANDBY`], naming every
//!   standby and why it is unfit), and the watch goes on: the service moves the moment a
//!   standby is fit again, or is confirmed when it runs where it is pinned (the standby thawed,
//!   or the dead node came back).
//! - a **surge** is done when the service's tasks running on nodes other than the dead one
//!   are as many as its replicas were before the surge ([`SURGE_BOUND`]); past it,
//!   `unconfirmed` once, and watched on until done or the dead node is back.
//!
//! Every step is an event (and so an InfluxDB point and an MQTT message): `failover` (the
//! re-pin, pending), `confirmed`, `unconfirmed`, `failover_impossible`.
//!
//! Inputs: what the shell started ([`Started`]), the tasks of watched services as Swarm lists
//! them ([`Confirm::on_tasks`]), which standbys are fit ([`Standbys`], from `decide`), time.
//! Outputs: [`Out`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use leakmon_protocol::EventKind;

/// A failed-over task must run on its standby within this. On the rig a re-pinned task runs
/// 0.3-0.5 s after the update (the image is on the node, start-first); a Raspberry Pi with an
/// SD card starts a container in 1-3 s; the rest is margin for a busy manager, while a
/// pinned database waiting longer than this for a standby that does not start it is an
/// outage worth moving on from.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(10);
/// A surge's replacements must run within this: the scheduler places them at once, each
/// starts as a failed-over task does, and several services are surged one after another.
pub const SURGE_BOUND: Duration = Duration::from_secs(15);
/// A standby that took a failover and did not start it within the bound is not chosen again
/// for the same service for this long while it looks fit (it may lack the image, or a
/// volume); after that it is tried again rather than leaving the service nowhere.
pub const TRIED_FOR: Duration = Duration::from_secs(60);
/// `failover_impossible`'s reason when every standby is unfit or already tried.
pub const NO_ELIGIBLE_STANDBY: &str = "no_eligible_standby";

/// What the shell did, for this module to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A pinned service was re-pinned to `to`.
    Failover {
        service_id: String,
        service: String,
        to_id: String,
        to_host: String,
    },
    /// A pinned service could not be moved (no standby Swarm would take): it stays pinned to
    /// node `pinned_to`.
    Stranded {
        service_id: String,
        service: String,
        pinned_to: String,
    },
    /// A replicated service was surged: `want` tasks should run on nodes other than the dead
    /// one (its replicas before the surge).
    Surge {
        service_id: String,
        service: String,
        want: u64,
    },
    /// A retarget found the service no longer pinned where it was (an operator changed it):
    /// no longer ours to watch.
    Gone { service_id: String },
}

impl Started {
    fn service_id(&self) -> &str {
        match self {
            Started::Failover { service_id, .. }
            | Started::Stranded { service_id, .. }
            | Started::Surge { service_id, .. }
            | Started::Gone { service_id } => service_id,
        }
    }
}

/// The standby nodes as `decide` judges them now: the fit ones, and why each other is not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standbys {
    /// Node id -> hostname of every standby fit to take a service now.
    pub fit: BTreeMap<String, String>,
    /// Node id -> (hostname, why not) of every other standby.
    pub unfit: BTreeMap<String, (String, String)>,
    /// The nodes dead now: a service left pinned to a dead node is moved only while that
    /// node is still dead (never off a node that came back).
    pub dead: BTreeSet<String>,
}

impl Standbys {
    fn host(&self, id: &str) -> String {
        self.fit
            .get(id)
            .cloned()
            .or_else(|| self.unfit.get(id).map(|(h, _)| h.clone()))
            .unwrap_or_else(|| id.to_owned())
    }

    fn why_not(&self, id: &str) -> String {
        self.unfit
            .get(id)
            .map(|(_, why)| why.clone())
            .unwrap_or_else(|| "it is no longer a standby".into())
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Event {
        kind: EventKind,
        /// The dead node's hostname (the event's node).
        node: String,
        message: String,
        details: Vec<(&'static str, String)>,
    },
    /// Answer with [`Confirm::on_started`].
    Retarget(Retarget),
}

/// Re-pin service `service_id`, pinned to node `from` now (the dead node, or a standby that did
/// not start it), to the least loaded of `to` (fit standbys, never empty), on behalf of dead
/// node `dead_id` (`dead_host`).
#[derive(Debug, Clone, PartialEq)]
pub struct Retarget {
    pub service_id: String,
    pub service: String,
    pub dead_id: String,
    pub dead_host: String,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Re-pinned to `to`; waiting for its task to run there.
    Pending { to: String },
    /// A retarget asked for; waiting for the shell's answer.
    Moving,
    /// Nowhere to go: waiting for a fit standby (`told`: `failover_impossible` said).
    Waiting { told: bool },
}

#[derive(Debug, Clone)]
enum What {
    Failover {
        /// The node its constraints pin it to now.
        pinned_to: String,
        stage: Stage,
        /// Standbys that did not start it within the bound, and when.
        tried: BTreeMap<String, Instant>,
    },
    Surge {
        want: u64,
        late_told: bool,
    },
}

#[derive(Debug, Clone)]
struct Watch {
    service: String,
    dead_id: String,
    dead_host: String,
    what: What,
    /// When the current stage began.
    since: Instant,
    /// Nodes running one of its tasks, one entry per task, as last read; `None` until read
    /// since the stage began.
    running_on: Option<Vec<String>>,
}

/// The watched actions, by service id.
#[derive(Debug, Default)]
pub struct Confirm {
    watches: BTreeMap<String, Watch>,
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl Confirm {
    pub fn new() -> Self {
        Self::default()
    }

    /// The services whose tasks the shell should read (every poll).
    pub fn services(&self) -> Vec<String> {
        self.watches.keys().cloned().collect()
    }

    /// Whether anything is being watched.
    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// Something the shell did for dead node `dead_id` (`dead_host`) at `now`.
    pub fn on_started(&mut self, dead_id: &str, dead_host: &str, s: Started, now: Instant) {
        let id = s.service_id().to_owned();
        let prev = self.watches.remove(&id);
        let tried = match &prev {
            Some(Watch {
                what: What::Failover { tried, .. },
                ..
            }) => tried.clone(),
            _ => BTreeMap::new(),
        };
        // A retarget keeps the death it serves.
        let (dead_id, dead_host) = match &prev {
            Some(w) => (w.dead_id.clone(), w.dead_host.clone()),
            None => (dead_id.to_owned(), dead_host.to_owned()),
        };
        let (service, what) = match s {
            Started::Failover { service, to_id, .. } => (
                service,
                What::Failover {
                    pinned_to: to_id.clone(),
                    stage: Stage::Pending { to: to_id },
                    tried,
                },
            ),
            Started::Stranded {
                service, pinned_to, ..
            } => (
                service,
                What::Failover {
                    pinned_to,
                    stage: Stage::Waiting { told: true },
                    tried,
                },
            ),
            Started::Surge { service, want, .. } => (
                service,
                What::Surge {
                    want,
                    late_told: false,
                },
            ),
            Started::Gone { .. } => return,
        };
        self.watches.insert(
            id,
            Watch {
                service,
                dead_id,
                dead_host,
                what,
                since: now,
                running_on: None,
            },
        );
    }

    /// The nodes running a task of service `service_id` (desired and actual state running),
    /// one entry per task, as Swarm lists them now.
    pub fn on_tasks(&mut self, service_id: &str, running_on: Vec<String>) {
        if let Some(w) = self.watches.get_mut(service_id) {
            w.running_on = Some(running_on);
        }
    }

    /// Whether a surge for dead node `dead_id` is still waiting for its replicas to run.
    pub fn surging(&self, dead_id: &str) -> bool {
        self.watches
            .values()
            .any(|w| w.dead_id == dead_id && matches!(w.what, What::Surge { .. }))
    }

    /// A service Swarm no longer lists: nothing left to watch.
    pub fn forget_service(&mut self, service_id: &str) {
        self.watches.remove(service_id);
    }

    /// Node `id` is alive again: its surges need no more watching (settling and Swarm take
    /// them from here). Failovers from it are watched on: a stranded service is confirmed
    /// when it runs there again.
    pub fn node_back(&mut self, id: &str) {
        self.watches
            .retain(|_, w| !(w.dead_id == id && matches!(w.what, What::Surge { .. })));
    }

    /// Advances every watch.
    pub fn tick(&mut self, standbys: &Standbys, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        let ids: Vec<String> = self.watches.keys().cloned().collect();
        for id in ids {
            let Some(mut w) = self.watches.remove(&id) else {
                continue;
            };
            let keep = match w.what {
                What::Surge { .. } => surge(&mut w, now, &mut out),
                What::Failover { .. } => failover(&id, &mut w, standbys, now, &mut out),
            };
            if keep {
                self.watches.insert(id, w);
            }
        }
        out
    }
}

fn event(w: &Watch, kind: EventKind, message: String, details: Vec<(&'static str, String)>) -> Out {
    let mut d = vec![("service", w.service.clone())];
    d.extend(details);
    Out::Event {
        kind,
        node: w.dead_host.clone(),
        message,
        details: d,
    }
}

/// A surge's watch; false once it is over.
fn surge(w: &mut Watch, now: Instant, out: &mut Vec<Out>) -> bool {
    let What::Surge { want, late_told } = &mut w.what else {
        return false;
    };
    let want = *want;
    let elapsed = now.saturating_duration_since(w.since);
    let live = w
        .running_on
        .as_ref()
        .map(|on| on.iter().filter(|n| **n != w.dead_id).count() as u64);
    if live.is_some_and(|l| l >= want) {
        let message = format!(
            "service {}: {want} replicas run on live nodes, {:.1} s after the surge for {}",
            w.service,
            elapsed.as_secs_f64(),
            w.dead_host
        );
        out.push(event(
            w,
            EventKind::Confirmed,
            message,
            vec![
                ("action", "surge".into()),
                ("running", want.to_string()),
                ("after_ms", ms(elapsed)),
            ],
        ));
        return false;
    }
    if elapsed >= SURGE_BOUND && !*late_told {
        *late_told = true;
        let running = live.unwrap_or(0);
        let message = format!(
            "service {}: {running} of {want} replicas run on live nodes {} s after the surge for {}; still watching",
            w.service,
            elapsed.as_secs(),
            w.dead_host
        );
        out.push(event(
            w,
            EventKind::Unconfirmed,
            message,
            vec![
                ("action", "surge".into()),
                ("running", running.to_string()),
                ("want", want.to_string()),
                ("after_ms", ms(elapsed)),
            ],
        ));
    }
    true
}

/// A failover's watch; false once it is over.
fn failover(
    id: &str,
    w: &mut Watch,
    standbys: &Standbys,
    now: Instant,
    out: &mut Vec<Out>,
) -> bool {
    let What::Failover {
        pinned_to,
        stage,
        tried,
    } = &mut w.what
    else {
        return false;
    };
    tried.retain(|_, at| now.saturating_duration_since(*at) < TRIED_FOR);
    let pinned = pinned_to.clone();
    let elapsed = now.saturating_duration_since(w.since);
    let runs_where_pinned = w.running_on.as_ref().is_some_and(|on| on.contains(&pinned));
    let service = w.service.clone();
    match stage.clone() {
        // The shell answers a retarget at once; one that got no answer (the role was lost
        // meanwhile) is asked again.
        Stage::Moving => {
            if elapsed >= FAILOVER_BOUND {
                set_stage(w, Stage::Waiting { told: true }, now);
            }
            true
        }
        _ if runs_where_pinned => {
            let host = standbys.host(&pinned);
            let host = if pinned == w.dead_id {
                w.dead_host.clone()
            } else {
                host
            };
            let message = if pinned == w.dead_id {
                format!(
                    "service {service} runs on {host} again (the node is back): no failover needed"
                )
            } else {
                format!(
                    "service {service} runs on {host}, {:.1} s after it was failed over from {}",
                    elapsed.as_secs_f64(),
                    w.dead_host
                )
            };
            out.push(event(
                w,
                EventKind::Confirmed,
                message,
                vec![
                    ("action", "failover".into()),
                    ("on", host),
                    ("after_ms", ms(elapsed)),
                ],
            ));
            false
        }
        Stage::Pending { to } => {
            let unfit = !standbys.fit.contains_key(&to);
            let late = elapsed >= FAILOVER_BOUND;
            if !unfit && !late {
                return true;
            }
            let host = standbys.host(&to);
            let why = if unfit {
                standbys.why_not(&to)
            } else {
                if let What::Failover { tried, .. } = &mut w.what {
                    tried.insert(to.clone(), now);
                }
                format!(
                    "its task did not run there within {} s",
                    FAILOVER_BOUND.as_secs()
                )
            };
            let message = format!(
                "service {service}: failover to {host} not confirmed after {:.1} s ({why}); moving it on",
                elapsed.as_secs_f64()
            );
            out.push(event(
                w,
                EventKind::Unconfirmed,
                message,
                vec![
                    ("action", "failover".into()),
                    ("to", host),
                    ("reason", why),
                    ("after_ms", ms(elapsed)),
                ],
            ));
            move_on(id, w, standbys, now, out)
        }
        Stage::Waiting { told } => {
            // The standby it is pinned to is fit again (thawed): its task may start there.
            if pinned != w.dead_id && standbys.fit.contains_key(&pinned) {
                set_stage(w, Stage::Pending { to: pinned }, now);
                return true;
            }
            let back = pinned == w.dead_id && !standbys.dead.contains(&pinned);
            if back || candidates(w, standbys).is_empty() {
                if !told && !back {
                    out.push(impossible(w, standbys));
                    set_told(w);
                }
                return true;
            }
            move_on(id, w, standbys, now, out)
        }
    }
}

fn set_stage(w: &mut Watch, s: Stage, now: Instant) {
    if let What::Failover { stage, .. } = &mut w.what {
        *stage = s;
    }
    w.since = now;
    w.running_on = None;
}

fn set_told(w: &mut Watch) {
    if let What::Failover { stage, .. } = &mut w.what {
        *stage = Stage::Waiting { told: true };
    }
}

/// Fit standbys the service may go to: not the dead node, not where it is pinned now, not
/// tried lately.
fn candidates(w: &Watch, standbys: &Standbys) -> Vec<String> {
    let What::Failover {
        pinned_to, tried, ..
    } = &w.what
    else {
        return Vec::new();
    };
    standbys
        .fit
        .keys()
        .filter(|n| **n != w.dead_id && *n != pinned_to && !tried.contains_key(*n))
        .cloned()
        .collect()
}

/// The service is to leave where it is pinned: to a fit standby, or it waits (said once).
fn move_on(id: &str, w: &mut Watch, standbys: &Standbys, now: Instant, out: &mut Vec<Out>) -> bool {
    let to = candidates(w, standbys);
    let What::Failover { pinned_to, .. } = &w.what else {
        return false;
    };
    if to.is_empty() {
        out.push(impossible(w, standbys));
        set_stage(w, Stage::Waiting { told: true }, now);
        return true;
    }
    out.push(Out::Retarget(Retarget {
        service_id: id.to_owned(),
        service: w.service.clone(),
        dead_id: w.dead_id.clone(),
        dead_host: w.dead_host.clone(),
        from: pinned_to.clone(),
        to,
    }));
    set_stage(w, Stage::Moving, now);
    true
}

/// `failover_impossible`: every standby, and why it cannot take the service.
fn impossible(w: &Watch, standbys: &Standbys) -> Out {
    let What::Failover {
        pinned_to, tried, ..
    } = &w.what
    else {
        return event(w, EventKind::FailoverImpossible, String::new(), vec![]);
    };
    let mut why: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for (id, (host, reason)) in &standbys.unfit {
        if *id != w.dead_id {
            seen.insert(id.clone());
            why.push(format!("{host}: {reason}"));
        }
    }
    for (id, host) in &standbys.fit {
        if seen.contains(id) || *id == w.dead_id {
            continue;
        }
        if tried.contains_key(id) {
            why.push(format!(
                "{host}: did not start it within {} s",
                FAILOVER_BOUND.as_secs()
            ));
        } else if id == pinned_to {
            why.push(format!("{host}: it is pinned there"));
        }
    }
    let list = if why.is_empty() {
        "no node carries leakmon.standby=true".to_owned()
    } else {
        why.join("; ")
    };
    let message = format!(
        "service {} cannot fail over: no standby is fit ({list}); it moves as soon as one is",
        w.service
    );
    event(
        w,
        EventKind::FailoverImpossible,
        message,
        vec![("reason", NO_ELIGIBLE_STANDBY.into()), ("standbys", list)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(out: &[Out]) -> Vec<EventKind> {
        out.iter()
            .filter_map(|o| match o {
                Out::Event { kind, .. } => Some(*kind),
                Out::Retarget(_) => None,
            })
            .collect()
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    fn web_surged(c: &mut Confirm, t0: Instant) {
        c.on_started(
            "d",
            "node5",
            Started::Surge {
                service_id: "web".into(),
                service: "web".into(),
                want: 3,
            },
            t0,
        );
    }

    #[test]
    fn a_surge_is_confirmed_once_its_replicas_run_on_live_nodes() {
        let t0 = Instant::now();
        let mut c = Confirm::new();
        web_surged(&mut c, t0);
        let s = Standbys::default();
        assert!(c.tick(&s, at(t0, 1)).is_empty(), "nothing read yet");
        // the dead node's task does not count
        c.on_tasks("web", vec!["a".into(), "b".into(), "d".into()]);
        assert!(c.tick(&s, at(t0, 2)).is_empty());
        c.on_tasks("web", vec!["a".into(), "b".into(), "b".into(), "d".into()]);
        assert_eq!(kinds(&c.tick(&s, at(t0, 3))), [EventKind::Confirmed]);
        assert!(c.is_empty());
    }

    #[test]
    fn a_late_surge_is_said_once_and_watched_on() {
        let t0 = Instant::now();
        let mut c = Confirm::new();
        web_surged(&mut c, t0);
        let s = Standbys::default();
        c.on_tasks("web", vec!["a".into()]);
        assert!(c.tick(&s, at(t0, 14)).is_empty());
        let out = c.tick(&s, at(t0, 15));
        assert_eq!(kinds(&out), [EventKind::Unconfirmed]);
        assert!(c.tick(&s, at(t0, 30)).is_empty(), "once");
        c.on_tasks("web", vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(kinds(&c.tick(&s, at(t0, 31))), [EventKind::Confirmed]);
        // the dead node back before it is done: no longer watched
        web_surged(&mut c, t0);
        c.node_back("d");
        assert!(c.is_empty());
    }

    #[test]
    fn a_service_swarm_no_longer_has_is_forgotten() {
        let t0 = Instant::now();
        let mut c = Confirm::new();
        c.on_started(
            "d",
            "node5",
            Started::Failover {
                service_id: "db".into(),
                service: "db".into(),
                to_id: "s".into(),
                to_host: "node3".into(),
            },
            t0,
        );
        assert_eq!(c.services(), ["db"]);
        c.forget_service("db");
        assert!(c.is_empty());
        c.on_started(
            "d",
            "node5",
            Started::Gone {
                service_id: "x".into(),
            },
            t0,
        );
        assert!(c.is_empty());
    }

    #[test]
    fn a_retarget_that_got_no_answer_is_asked_again() {
        let t0 = Instant::now();
        let mut c = Confirm::new();
        c.on_started(
            "d",
            "node5",
            Started::Stranded {
                service_id: "db".into(),
                service: "db".into(),
                pinned_to: "d".into(),
            },
            t0,
        );
        let mut s = Standbys::default();
        s.dead.insert("d".into());
        s.fit.insert("s".into(), "node3".into());
        let out = c.tick(&s, at(t0, 1));
        assert!(
            matches!(&out[..], [Out::Retarget(r)] if r.from == "d" && r.to == ["s".to_owned()])
        );
        assert!(c.tick(&s, at(t0, 5)).is_empty(), "waiting for the answer");
        assert!(c.tick(&s, at(t0, 11)).is_empty(), "given up waiting");
        assert_eq!(c.tick(&s, at(t0, 12)).len(), 1, "asked again");
    }
}
