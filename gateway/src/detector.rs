//! Which nodes are dead, told apart from nodes on a lossy link: a pure failure detector, time
//! passed in (no tokio, no clock, no I/O).
//!
//! Signals in: every agent's *beat* (a tiny MQTT message every `beat_interval`, 250 ms by
//! default), the *reports* of vantage points that probed a suspect directly (TCP connects to
//! its Swarm ports), the fleet ([`Member`]s) and the time. Out ([`Out`]): probe requests for
//! agents, `Suspect`, `Dead`, `Alive`, `NoVerdict` and local-health changes.
//!
//! # Why this mechanism
//! A gateway that only watches arrival times cannot tell "the node is dead" from "my path to it
//! is lossy": both look like silence. That is the limit of the phi-accrual detector
//! (Hayashibara, Défago, Yared, Katayama, "The φ Accrual Failure Detector", SRDS 2004): it
//! models *one observer's* inter-arrival times and turns silence into a suspicion level, so at
//! 40 % loss it either waits many seconds or accuses live nodes, and a gateway that is itself
//! cut off accuses everyone. SWIM (Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent
//! Infection-style Process Group Membership Protocol", DSN 2002) answers with *indirect
//! probes*: a suspect is probed by k other members over independent paths, and only their
//! common failure condemns it. Lifeguard (Dadgar, Phillips, Currey, "Lifeguard: Local Health
//! Awareness for More Accurate Failure Detection", arXiv:1707.00788), as hashicorp/memberlist
//! implements it (`awareness.go`: a score 0..max-1, timeouts scaled by score + 1, max 8),
//! makes a member that is itself in trouble (slow, cut off, lossy) stretch its timeouts and
//! withhold accusations. So here: silence only makes a *suspect* (rule 2); k vantage points
//! whose own beats are fresh make many TCP connect attempts each to the suspect (rule 3); one
//! answer, or one beat, refutes (rule 4); only many failed attempts from several vantage points
//! while the suspect stays silent condemn (rule 5); and a gateway that misses many members at
//! once, or its own reports, withholds verdicts (rule 7). Probing happens only on suspicion:
//! there is no gateway-to-every-node probing, and the beat stream is all a healthy fleet costs.
//!
//! # Rules (each has a unit test below)
//! 1. **Beats.** A beat makes a member alive at once: it refutes a suspicion and revokes a
//!    `Dead` verdict ([`Out::Alive`] with [`Refuted::Beat`]). Only members count
//!    ([`Detector::set_members`]); a member counts as heard when it joins.
//! 2. **Suspicion.** A member silent for `suspect_beats` of its beat intervals (times the
//!    local-health multiplier, rule 7) is [`Out::Suspect`], and a probe round starts at once.
//! 3. **Probe rounds.** A round asks up to `vantage_points` (k) vantage points: members other
//!    than the suspect, alive, whose own beats are fresh (heard within `fresh_beats` of their
//!    intervals); those not yet asked during this suspicion first, and among them those not
//!    suspected themselves for `steady_for` (a lossy vantage point's own loss adds to every
//!    attempt); walked from a start hashed from the seed, the suspect and the round number
//!    (deterministic, and spread over the fleet). Each gets an [`Out::Probe`] (one `id` per
//!    round). The round closes when every vantage point has reported and the window is over,
//!    or `report_grace` after the window.
//! 4. **Refutation.** A report with `answered > 0` (from a vantage point asked during this
//!    suspicion) refutes it: the host is up though its agent is silent ([`Out::Alive`] with
//!    [`Refuted::Answered`]; the control loop's `agent_lost`). Such a *quiet* node, and a dead
//!    one, is probed again every `recheck`, so a host that dies later is still caught and a
//!    dead one that answers again is seen.
//! 5. **Death.** A round that closes while, since the suspicion began (or the last answer),
//!    no beat and no answer arrived, at least `confirmations` (m) distinct vantage points
//!    reported failure, and they made at least m x [`Params::attempts`] failed attempts in all,
//!    gives [`Out::Dead`], unless verdicts are withheld (rule 7). Counting attempts rather
//!    than reports keeps the bound of [`promise`] whatever a vantage point reports.
//! 6. **No verdict.** A round that closes without that evidence gives [`Out::NoVerdict`]
//!    (`TooFewReports`) and another round at once, with other vantage points. No fresh vantage
//!    point: `NoVantagePoints`, tried again after a window. No address: `NoAddress`, until the
//!    member list gives one.
//! 7. **Local health (Lifeguard).** A score from 0 to `health_max - 1`: +1 for each round that
//!    closes with fewer than m reports (this gateway's requests or the answers got lost), -1
//!    for each round that closes with m or more (a vantage point's own lossy link leaves a
//!    report missing; it is not this gateway's trouble) and for each `health_decay` without
//!    trouble, and held at the top while more than half the members (of at least 3) are
//!    silent at once (*isolated*: this gateway is probably the one cut off; quiet members,
//!    whose host answered a vantage point, count on neither side of it). Suspicion
//!    timeouts are multiplied by score + 1. While isolated at most `isolated_rounds` rounds
//!    run at once, the longest waiting first (they find the quiet members that may be all
//!    that made it think itself cut off); while isolated or
//!    at a score of `health_block` or more, a round that has the evidence gives `NoVerdict`
//!    (`LocalHealth`) and another round, not `Dead`. Every change is told ([`Out::Health`]);
//!    [`Detector::health`] says whether a verdict is possible now.
//! 8. **Stray reports are ignored**: an unknown or non-suspect target, a round id from before
//!    the suspicion (or its last answer), a prober that was not asked, a second report from
//!    one prober in a round; a report's attempts count at most what was asked.
//!
//! # Cost
//! A beat is a hash lookup and two B-tree operations (the members' deadlines, ordered); a tick
//! visits the members whose deadline passed and the silent ones (suspect, quiet, dead), never
//! the whole fleet; per member the state is a name, an address, an interval, an instant and a
//! state. A round walks the members from its hashed start until it has k vantage points:
//! about k steps when most are fresh.
//!
//! # The shell's part
//! Feed beats and reports, then `tick`; tick again at [`Detector::next_wake`] (or every few
//! tens of milliseconds: the period adds to the detection time). A probe request goes to agent
//! `prober`, which starts a connect attempt to `addr` every `every` while the attempt can
//! finish within `window` (each given `timeout`; a SYN-ACK or a RST is an answer), and reports
//! once `window` has passed since it got the request: `(attempts, answered)`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// The detector's parameters. The defaults keep a cut link's detection near 2 s and a 40 %
/// lossy link's false-death probability near 1e-6 per node and hour ([`promise`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The fleet's beat interval, used by [`promise`] and for members that give none: 250 ms,
    /// a tiny message four times a second per node (thousands of nodes: tens of kB/s).
    pub beat_interval: Duration,
    /// Silent this many beat intervals: suspect. 4 (1 s at 250 ms): beats ride MQTT over TCP,
    /// so a lost segment is retransmitted after an RTO (at least 200 ms on Linux, doubling on
    /// each further loss): one or two losses in a row stall the stream 450-850 ms, which must
    /// not start a suspicion each time at 10 % loss; much longer and 2 s is out of reach
    /// (the window and the report still follow).
    pub suspect_beats: u32,
    /// A vantage point must have beaten within this many of its intervals (2: 500 ms): its
    /// link to the gateway works right now, so its request and report will travel.
    pub fresh_beats: u32,
    /// A vantage point not suspected itself for this long is preferred (60 s): a lossy one
    /// multiplies each attempt's odds by its own (1-p)^2 and weakens the promise.
    pub steady_for: Duration,
    /// k: vantage points asked per round (3, as memberlist's `IndirectChecks`).
    pub vantage_points: usize,
    /// m: distinct vantage points that must report failure (2): one vantage point's own bad
    /// path never condemns.
    pub confirmations: usize,
    /// From a vantage point's receipt of the request to its report (800 ms).
    pub window: Duration,
    /// A connect attempt starts this often (25 ms: 25 attempts per vantage point; at 40 % loss
    /// each fails with 0.64, and 50 failures in a row come once in 5e9; every 100 ms would give
    /// 7 attempts, 14 needed, and by the bound a false death per node about every hour at
    /// 40 % loss, see the tests).
    pub every: Duration,
    /// Each connect attempt's limit (200 ms): a SYN or SYN-ACK lost is not retransmitted
    /// before 1 s, so one attempt is one exchange. The path's RTT must stay well below it.
    pub timeout: Duration,
    /// How long after the window a round waits for reports (200 ms): the request's and the
    /// report's trip through the broker.
    pub report_grace: Duration,
    /// A quiet (answering but silent) or dead node is probed again this often (2 s).
    pub recheck: Duration,
    /// Lifeguard's multiplier cap: the score runs 0..health_max-1, timeouts x (score+1) (8, as
    /// memberlist's `AwarenessMaxMultiplier`).
    pub health_max: u32,
    /// From this score on, no `Dead` verdict (3: three rounds in a row without enough reports).
    pub health_block: u32,
    /// Rounds running at once while isolated (4): enough to find the quiet members that may
    /// be all that makes this gateway think itself cut off, few enough never to flood the
    /// broker from a gateway that really is.
    pub isolated_rounds: usize,
    /// The score drops by one after this long without trouble (2 s: longer than a round,
    /// window + grace = 1 s, so rounds failing back to back add up; after an isolation the
    /// timeouts are stretched for about 14 s and verdicts held for about 10 s, less as
    /// rounds with m reports come back).
    pub health_decay: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            beat_interval: Duration::from_millis(250),
            suspect_beats: 4,
            fresh_beats: 2,
            steady_for: Duration::from_secs(60),
            vantage_points: 3,
            confirmations: 2,
            window: Duration::from_millis(800),
            every: Duration::from_millis(25),
            timeout: Duration::from_millis(200),
            report_grace: Duration::from_millis(200),
            recheck: Duration::from_secs(2),
            health_max: 8,
            health_block: 3,
            isolated_rounds: 4,
            health_decay: Duration::from_secs(2),
        }
    }
}

impl Params {
    /// How long a member beating every `beat_interval` may be silent before it is suspect
    /// (with a healthy gateway).
    pub fn suspect_after(&self, beat_interval: Duration) -> Duration {
        beat_interval * self.suspect_beats
    }

    /// Connect attempts per vantage point and round: one every `every` from 0 for as long as
    /// the attempt can finish within the window ((800 - 200) / 25 + 1 = 25 by default).
    pub fn attempts(&self) -> u32 {
        let span = self.window.saturating_sub(self.timeout).as_nanos();
        let every = self.every.as_nanos().max(1);
        u32::try_from(span / every)
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    /// Failed attempts needed for a `Dead` verdict: m vantage points' worth.
    pub fn min_failed(&self) -> u32 {
        u32::try_from(self.confirmations.max(1))
            .unwrap_or(u32::MAX)
            .saturating_mul(self.attempts())
    }
}

/// A member of the fleet: a Swarm node that has an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The agent's node name (what beats and reports name).
    pub name: String,
    /// Where vantage points connect to probe it (empty: it cannot be probed).
    pub addr: String,
    /// Its agent's beat interval (zero: `Params::beat_interval`).
    pub beat_interval: Duration,
}

/// What the detector thinks of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Beating.
    Alive,
    /// Silent; being probed.
    Suspect,
    /// Silent, but its host answers (the agent is gone, not the node).
    Quiet,
    /// Silent and unreachable from several vantage points.
    Dead,
}

/// How a suspicion (or a death) was refuted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refuted {
    /// The member beat: its agent is back (or was only delayed).
    Beat,
    /// A vantage point reached the host; its agent is still silent.
    Answered { prober: String },
    /// The member beat again after a vantage point had already found its host up (the
    /// suspicion was refuted then; this only ends the quiet).
    Resumed,
}

/// Why a `Dead` verdict was given; `Display` makes the event's sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Since its last beat.
    pub silent_for: Duration,
    /// The vantage points whose attempts all failed.
    pub vantage_points: Vec<String>,
    pub failed_attempts: u32,
    /// Probe rounds since the suspicion began.
    pub rounds: u32,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no beat for {:.1} s and {} connect attempts from {} vantage points ({}) all unanswered",
            self.silent_for.as_secs_f64(),
            self.failed_attempts,
            self.vantage_points.len(),
            self.vantage_points.join(", ")
        )
    }
}

/// Why a round ended without a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoVerdict {
    /// Not enough evidence: reports missing (vantage points or this gateway cut off) or short.
    TooFewReports {
        asked: usize,
        reports: usize,
        /// Distinct vantage points that reported failure since the suspicion began.
        vantage_points: usize,
        failed_attempts: u32,
    },
    /// No member fresh enough to probe from.
    NoVantagePoints,
    /// The member has no address to probe.
    NoAddress,
    /// The evidence is there, but this gateway's own health forbids a verdict (rule 7).
    LocalHealth,
}

/// This gateway's own health (Lifeguard's local health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// 0 (healthy) ..= `health_max - 1`.
    pub score: u32,
    /// More than half the members silent at once (quiet ones left out).
    pub isolated: bool,
    /// Whether a `Dead` verdict is possible now.
    pub verdicts: bool,
    /// Members not beating (suspect, quiet or dead).
    pub silent: usize,
    pub members: usize,
}

impl Health {
    /// What suspicion timeouts are multiplied by.
    pub fn multiplier(&self) -> u32 {
        self.score + 1
    }
}

/// What the detector asks of the shell, or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Ask agent `prober` to probe `target` at `addr`; it answers with
    /// [`Detector::on_report`] and the same `id`.
    Probe {
        id: u64,
        prober: String,
        target: String,
        addr: String,
        window: Duration,
        every: Duration,
        timeout: Duration,
    },
    Suspect {
        node: String,
    },
    Dead {
        node: String,
        why: Evidence,
    },
    /// A suspect refuted, or a dead node heard again; also a quiet node beating again.
    Alive {
        node: String,
        how: Refuted,
    },
    NoVerdict {
        node: String,
        why: NoVerdict,
    },
    /// The local health changed (score or isolation).
    Health(Health),
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    addr: String,
    beat: Duration,
    /// Its last beat (or when it joined).
    last: Instant,
    status: Status,
    /// When it was last suspected.
    suspected: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Round {
    id: u64,
    asked: Vec<String>,
    reported: Vec<String>,
    /// Vantage points that reached the target in this round (also in `reported`).
    answered: Vec<String>,
    started: Instant,
}

/// A silent member's probing (suspect, quiet or dead).
#[derive(Debug, Clone)]
struct Suspicion {
    /// Its last beat.
    since: Instant,
    /// Reports of rounds before this id are about an earlier state: ignored.
    first_id: u64,
    round: Option<Round>,
    next_round: Option<Instant>,
    rounds: u32,
    /// Vantage points asked lately (the next round prefers others); bounded.
    used: Vec<String>,
    /// Evidence since the suspicion began or the last answer.
    failed_from: Vec<String>,
    failed_attempts: u32,
    no_addr_told: bool,
}

/// The shortest beat interval believed of an agent (its config's own bound).
pub const MIN_BEAT: Duration = Duration::from_millis(100);
/// The longest beat interval believed of an agent (its config's own bound): a member claiming
/// more is suspected after `suspect_beats` of these.
pub const MAX_BEAT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Detector {
    p: Params,
    seed: u64,
    /// Sorted by name.
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    /// (last beat + suspect_after, node) of every beating member.
    due: BTreeSet<(Instant, usize)>,
    suspects: BTreeMap<String, Suspicion>,
    silent: usize,
    next_id: u64,
    score: u32,
    decay_at: Option<Instant>,
    isolated: bool,
    told: (u32, bool),
    /// What beats and reports decided, handed out by the next tick.
    pending: Vec<Out>,
}

/// FNV-1a: a stable hash of a name (std's hasher is seeded per process).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads a seed over all bits.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Detector {
    /// `seed` makes the vantage-point choice repeatable (and different between gateways).
    pub fn new(params: Params, seed: u64) -> Self {
        Detector {
            p: params,
            seed,
            nodes: Vec::new(),
            index: HashMap::new(),
            due: BTreeSet::new(),
            suspects: BTreeMap::new(),
            silent: 0,
            next_id: 1,
            score: 0,
            decay_at: None,
            isolated: false,
            told: (0, false),
            pending: Vec::new(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// The fleet (Swarm's node list joined with the agents). A new member counts as heard at
    /// `now`; one that left is forgotten with its suspicion.
    pub fn set_members(&mut self, members: &[Member], now: Instant) {
        let mut list: Vec<&Member> = members.iter().filter(|m| !m.name.is_empty()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|a, b| a.name == b.name);
        let mut old: HashMap<String, Node> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        self.index.clear();
        self.due.clear();
        self.silent = 0;
        for (i, m) in list.into_iter().enumerate() {
            // The agent says how often it beats; what it says is held to what an agent's own
            // config allows, so no agent can keep itself "fresh" for longer than
            // `suspect_beats` x [`MAX_BEAT`] of silence.
            let beat = if m.beat_interval.is_zero() {
                self.p.beat_interval
            } else {
                m.beat_interval.clamp(MIN_BEAT, MAX_BEAT)
            };
            let n = match old.remove(&m.name) {
                Some(mut n) => {
                    n.addr.clone_from(&m.addr);
                    n.beat = beat;
                    n
                }
                None => Node {
                    name: m.name.clone(),
                    addr: m.addr.clone(),
                    beat,
                    last: now,
                    status: Status::Alive,
                    suspected: None,
                },
            };
            if n.status == Status::Alive {
                self.due.insert((n.last + self.p.suspect_after(beat), i));
            } else {
                self.silent += 1;
            }
            self.index.insert(n.name.clone(), i);
            self.nodes.push(n);
        }
        let (index, nodes) = (&self.index, &self.nodes);
        self.suspects.retain(|name, s| {
            let Some(&i) = index.get(name) else {
                return false;
            };
            // An address given at last: probe again.
            if s.round.is_none() && s.next_round.is_none() && !nodes[i].addr.is_empty() {
                s.next_round = Some(now);
                s.no_addr_told = false;
            }
            true
        });
    }

    /// A beat from `node`.
    pub fn on_beat(&mut self, node: &str, now: Instant) {
        let Some(&i) = self.index.get(node) else {
            return;
        };
        let n = &mut self.nodes[i];
        let after = self.p.suspect_after(n.beat);
        if n.status == Status::Alive {
            self.due.remove(&(n.last + after, i));
        } else {
            self.suspects.remove(node);
            self.silent -= 1;
            let how = if n.status == Status::Quiet {
                Refuted::Resumed
            } else {
                Refuted::Beat
            };
            n.status = Status::Alive;
            self.pending.push(Out::Alive {
                node: node.to_owned(),
                how,
            });
        }
        n.last = n.last.max(now);
        self.due.insert((n.last + after, i));
    }

    /// Vantage point `prober`'s report on round `id` about `target`: `attempts` connects made,
    /// `answered` of them answered.
    pub fn on_report(
        &mut self,
        prober: &str,
        id: u64,
        target: &str,
        attempts: u32,
        answered: u32,
        now: Instant,
    ) {
        let Some(&i) = self.index.get(target) else {
            return;
        };
        let Some(s) = self.suspects.get_mut(target) else {
            return;
        };
        if id < s.first_id || id >= self.next_id {
            return;
        }
        // Only the round under way counts, and only from a vantage point it asked: a report
        // naming an older round (a replay, or a liar's) is no evidence about now.
        let Some(r) = s.round.as_mut().filter(|r| r.id == id) else {
            return;
        };
        if !r.asked.iter().any(|a| a == prober) || r.reported.iter().any(|a| a == prober) {
            return;
        }
        r.reported.push(prober.to_owned());
        if answered > 0 {
            // One vantage point's word is not enough against the others': an answer refutes
            // at once when a second one agrees, else when the round closes, unless enough
            // others failed to reach it then (one liar cannot veto a death).
            r.answered.push(prober.to_owned());
            if r.answered.len() >= 2 {
                self.refute(i, target, prober, now);
            }
            return;
        }
        let attempts = attempts.min(self.p.attempts());
        if attempts > 0 {
            s.failed_attempts = s.failed_attempts.saturating_add(attempts);
            if !s.failed_from.iter().any(|a| a == prober) {
                s.failed_from.push(prober.to_owned());
            }
        }
    }

    /// A vantage point reached member `i` (`target`): its host is up, its agent silent.
    fn refute(&mut self, i: usize, target: &str, prober: &str, now: Instant) {
        if let Some(s) = self.suspects.get_mut(target) {
            s.round = None;
            s.first_id = self.next_id;
            s.failed_from.clear();
            s.failed_attempts = 0;
            s.next_round = Some(now + self.p.recheck);
        }
        let n = &mut self.nodes[i];
        if n.status != Status::Quiet {
            n.status = Status::Quiet;
            self.pending.push(Out::Alive {
                node: target.to_owned(),
                how: Refuted::Answered {
                    prober: prober.to_owned(),
                },
            });
        }
    }

    /// Advances the detector; returns what to do and tell now.
    pub fn tick(&mut self, now: Instant) -> Vec<Out> {
        let mut out = std::mem::take(&mut self.pending);
        self.decay(now);
        self.find_silent(now, &mut out);
        self.isolated = self.cut_off();
        if self.isolated {
            self.score = self.p.health_max.saturating_sub(1);
            self.decay_at = Some(now + self.p.health_decay);
        }
        if !self.suspects.is_empty() {
            let names: Vec<String> = self.suspects.keys().cloned().collect();
            for name in &names {
                self.close_round(name, now, &mut out);
            }
            // While isolated, a few rounds at a time, the longest waiting first: enough to
            // find the quiet members (hosts that answer) that may be all that makes this
            // gateway think itself cut off, never a flood from a gateway that really is.
            let mut budget = if self.isolated {
                let running = self.suspects.values().filter(|s| s.round.is_some()).count();
                self.p.isolated_rounds.saturating_sub(running)
            } else {
                usize::MAX
            };
            let mut due: Vec<(Instant, &String)> = names
                .iter()
                .filter_map(|n| {
                    let s = self.suspects.get(n)?;
                    let t = s.next_round.filter(|t| s.round.is_none() && *t <= now)?;
                    Some((t, n))
                })
                .collect();
            if self.isolated {
                due.sort();
            }
            for (_, name) in due {
                if budget == 0 {
                    break;
                }
                if self.start_round(name, now, &mut out) {
                    budget -= 1;
                }
            }
        }
        if self.told != (self.score, self.isolated) {
            self.told = (self.score, self.isolated);
            out.push(Out::Health(self.health()));
        }
        out
    }

    /// When `tick` next has something to do by the clock alone (beats and reports fed since
    /// the last tick call for a tick of their own).
    // The shell ticks on a fixed period (control::DETECT_TICK) rather than sleeping until here.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn next_wake(&self) -> Option<Instant> {
        let mult = self.score + 1;
        let mut best: Option<Instant> = None;
        let mut earlier = |t: Instant| best = Some(best.map_or(t, |b| b.min(t)));
        // Ordered by the unstretched deadline: once it passes the best stretched one, no
        // later member can be sooner.
        let mut first: Option<Instant> = None;
        for &(at, i) in &self.due {
            if first.is_some_and(|b| at >= b) {
                break;
            }
            let n = &self.nodes[i];
            let t = n.last + self.p.suspect_after(n.beat) * mult;
            first = Some(first.map_or(t, |b| b.min(t)));
        }
        if let Some(t) = first {
            earlier(t);
        }
        for s in self.suspects.values() {
            match &s.round {
                Some(r) if r.reported.len() >= r.asked.len() => earlier(r.started + self.p.window),
                Some(r) => earlier(r.started + self.p.window + self.p.report_grace),
                None => {
                    if let Some(t) = s.next_round {
                        earlier(t);
                    }
                }
            }
        }
        if let Some(t) = self.decay_at.filter(|_| self.score > 0) {
            earlier(t);
        }
        best
    }

    /// One member's status (the control loop reads them all, [`Detector::statuses`]).
    #[cfg(test)]
    pub fn status(&self, node: &str) -> Option<Status> {
        self.index.get(node).map(|&i| self.nodes[i].status)
    }

    /// Every member's status, by name.
    pub fn statuses(&self) -> impl Iterator<Item = (&str, Status)> {
        self.nodes.iter().map(|n| (n.name.as_str(), n.status))
    }

    /// More than half the members silent at once, as of the last tick: this gateway is
    /// probably the one cut off.
    pub fn isolated(&self) -> bool {
        self.isolated
    }

    /// Each member's last beat (or when it joined).
    pub fn last_beats(&self) -> impl Iterator<Item = (&str, Instant)> {
        self.nodes.iter().map(|n| (n.name.as_str(), n.last))
    }

    pub fn health(&self) -> Health {
        Health {
            score: self.score,
            isolated: self.isolated,
            verdicts: self.verdicts(),
            silent: self.silent,
            members: self.nodes.len(),
        }
    }

    /// More than half the members (of at least 3) silent at once, leaving out the quiet ones:
    /// a quiet member's host answered a vantage point whose report reached this gateway, so
    /// its silence is its agent's, no sign that this gateway is the one cut off.
    fn cut_off(&self) -> bool {
        let quiet = self
            .suspects
            .keys()
            .filter_map(|name| self.index.get(name))
            .filter(|&&i| self.nodes[i].status == Status::Quiet)
            .count();
        let expected = self.nodes.len().saturating_sub(quiet);
        let silent = self.silent.saturating_sub(quiet);
        expected >= 3 && silent * 2 > expected
    }

    fn verdicts(&self) -> bool {
        !self.isolated && self.score < self.p.health_block
    }

    fn bump(&mut self, now: Instant) {
        self.score = (self.score + 1).min(self.p.health_max.saturating_sub(1));
        self.decay_at = Some(now + self.p.health_decay);
    }

    fn decay(&mut self, now: Instant) {
        while self.score > 0 {
            match self.decay_at {
                Some(t) if now >= t => {
                    self.score -= 1;
                    self.decay_at = Some(t + self.p.health_decay);
                }
                _ => break,
            }
        }
        if self.score == 0 {
            self.decay_at = None;
        }
    }

    /// Beating members whose silence passed their (stretched) suspicion timeout.
    fn find_silent(&mut self, now: Instant, out: &mut Vec<Out>) {
        let mult = self.score + 1;
        let mut silent = Vec::new();
        for &(at, i) in &self.due {
            if at > now {
                break;
            }
            let n = &self.nodes[i];
            if now >= n.last + self.p.suspect_after(n.beat) * mult {
                silent.push((at, i));
            }
        }
        for (at, i) in silent {
            self.due.remove(&(at, i));
            let n = &mut self.nodes[i];
            n.status = Status::Suspect;
            n.suspected = Some(now);
            self.silent += 1;
            self.suspects.insert(
                n.name.clone(),
                Suspicion {
                    since: n.last,
                    first_id: self.next_id,
                    round: None,
                    next_round: Some(now),
                    rounds: 0,
                    used: Vec::new(),
                    failed_from: Vec::new(),
                    failed_attempts: 0,
                    no_addr_told: false,
                },
            );
            out.push(Out::Suspect {
                node: n.name.clone(),
            });
        }
    }

    fn close_round(&mut self, name: &str, now: Instant, out: &mut Vec<Out>) {
        let verdicts = self.verdicts();
        let m = self.p.confirmations.max(1);
        let min_failed = self.p.min_failed();
        let Some(&i) = self.index.get(name) else {
            return;
        };
        let Some(s) = self.suspects.get_mut(name) else {
            return;
        };
        let Some(r) = &s.round else {
            return;
        };
        let over = now >= r.started + self.p.window;
        let all_in = r.reported.len() >= r.asked.len();
        let late = now >= r.started + self.p.window + self.p.report_grace;
        if !(over && all_in || late) {
            return;
        }
        let Some(r) = s.round.take() else {
            return;
        };
        // One answer this round: it refutes unless at least `m` others failed to reach the
        // member in the same round (then it is one vantage point against several: a liar, or
        // a prober seeing something nobody else does).
        if let Some(first) = r.answered.first() {
            let failing = r.reported.len() - r.answered.len();
            if r.answered.len() >= 2 || failing < m {
                let first = first.clone();
                self.refute(i, name, &first, now);
                self.score = self.score.saturating_sub(1);
                out.append(&mut self.pending);
                return;
            }
        }
        let Some(s) = self.suspects.get_mut(name) else {
            return;
        };
        let too_few = r.reported.len() < m.min(r.asked.len());
        let enough = s.failed_from.len() >= m && s.failed_attempts >= min_failed;
        let status = self.nodes[i].status;
        if status == Status::Dead || (enough && verdicts) {
            s.next_round = Some(now + self.p.recheck);
            if status != Status::Dead {
                self.nodes[i].status = Status::Dead;
                out.push(Out::Dead {
                    node: name.to_owned(),
                    why: Evidence {
                        silent_for: now.saturating_duration_since(s.since),
                        vantage_points: s.failed_from.clone(),
                        failed_attempts: s.failed_attempts,
                        rounds: s.rounds,
                    },
                });
            }
            // A dead node's rechecks look only for an answer.
            s.failed_from.clear();
            s.failed_attempts = 0;
        } else {
            s.next_round = Some(now);
            let why = if enough {
                NoVerdict::LocalHealth
            } else {
                NoVerdict::TooFewReports {
                    asked: r.asked.len(),
                    reports: r.reported.len(),
                    vantage_points: s.failed_from.len(),
                    failed_attempts: s.failed_attempts,
                }
            };
            out.push(Out::NoVerdict {
                node: name.to_owned(),
                why,
            });
        }
        // m reports in show that this gateway's requests and answers get through; a missing
        // one is that vantage point's trouble (its own lossy link), not this gateway's.
        if too_few {
            self.bump(now);
        } else {
            self.score = self.score.saturating_sub(1);
        }
    }

    /// Starts a round about suspect `name` if one is due; whether it asked vantage points.
    fn start_round(&mut self, name: &str, now: Instant, out: &mut Vec<Out>) -> bool {
        let Some(&i) = self.index.get(name) else {
            return false;
        };
        let Some(s) = self.suspects.get(name) else {
            return false;
        };
        if s.round.is_some() || s.next_round.is_none_or(|t| now < t) {
            return false;
        }
        if self.nodes[i].addr.is_empty() {
            let tell = !s.no_addr_told;
            if let Some(s) = self.suspects.get_mut(name) {
                s.next_round = None;
                s.no_addr_told = true;
            }
            if tell {
                out.push(Out::NoVerdict {
                    node: name.to_owned(),
                    why: NoVerdict::NoAddress,
                });
            }
            return false;
        }
        let picked = self.pick(i, s.rounds, &s.used, now);
        let Some(s) = self.suspects.get_mut(name) else {
            return false;
        };
        if picked.is_empty() {
            s.next_round = Some(now + self.p.window);
            out.push(Out::NoVerdict {
                node: name.to_owned(),
                why: NoVerdict::NoVantagePoints,
            });
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        let asked: Vec<String> = picked.iter().map(|&j| self.nodes[j].name.clone()).collect();
        for a in &asked {
            if !s.used.contains(a) {
                s.used.push(a.clone());
            }
        }
        let keep = 4 * self.p.vantage_points.max(1);
        if s.used.len() > keep {
            let extra = s.used.len() - keep;
            s.used.drain(..extra);
        }
        for prober in &asked {
            out.push(Out::Probe {
                id,
                prober: prober.clone(),
                target: name.to_owned(),
                addr: self.nodes[i].addr.clone(),
                window: self.p.window,
                every: self.p.every,
                timeout: self.p.timeout,
            });
        }
        s.rounds += 1;
        s.next_round = None;
        s.round = Some(Round {
            id,
            asked,
            reported: Vec::new(),
            answered: Vec::new(),
            started: now,
        });
        true
    }

    /// Up to k vantage points for a round about member `target`: alive, fresh, not the
    /// target; those not in `used` first, and among them the steady ones. Walks the members
    /// from a start hashed from the seed, the target and the round.
    fn pick(&self, target: usize, round: u32, used: &[String], now: Instant) -> Vec<usize> {
        let len = self.nodes.len();
        let k = self.p.vantage_points;
        let mut picked: Vec<usize> = Vec::with_capacity(k);
        if len == 0 || k == 0 {
            return picked;
        }
        let h = mix(self.seed ^ fnv1a(&self.nodes[target].name) ^ mix(u64::from(round)));
        // The remainder is below len, a usize.
        let start = usize::try_from(h % len as u64).unwrap_or(0);
        let fresh = |n: &Node| {
            n.status == Status::Alive
                && now.saturating_duration_since(n.last) <= n.beat * self.p.fresh_beats
        };
        let steady = |n: &Node| {
            n.suspected
                .is_none_or(|t| now.saturating_duration_since(t) >= self.p.steady_for)
        };
        for (reuse, unsteady) in [(false, false), (false, true), (true, false), (true, true)] {
            for off in 0..len {
                if picked.len() >= k {
                    return picked;
                }
                let j = (start + off) % len;
                let n = &self.nodes[j];
                if j == target || picked.contains(&j) || !fresh(n) {
                    continue;
                }
                if (!reuse && used.contains(&n.name)) || (!unsteady && !steady(n)) {
                    continue;
                }
                picked.push(j);
            }
        }
        picked
    }
}

/// What the parameters promise for a node whose link loses `loss_one_way` of its packets in
/// each direction, on a path with round-trip time `rtt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Promise {
    /// A cut link to `Dead`: its last beat arrived just as the link was cut and one vantage
    /// point's report is missing, so the round runs to its deadline. `None`: `rtt` exceeds
    /// `report_grace`, reports come too late for their round, and probing gives no verdict.
    pub detection_time_max: Option<Duration>,
    /// The last beat half a beat interval before the cut, every report in one `rtt` after
    /// the window.
    pub detection_time_typical: Option<Duration>,
    pub attempts_per_vantage: u32,
    /// One connect attempt answered.
    pub attempt_success: f64,
    /// A live node's suspicion ending in `Dead` (the bound: `min_failed` attempts all fail).
    pub p_false_per_suspicion: f64,
    /// The bound used: one suspicion per `suspect_after` of the hour.
    pub suspicions_per_hour: f64,
    /// An estimate from TCP's retransmission backoff (the probing this node costs).
    pub suspicions_per_hour_tcp: f64,
    /// A live node declared dead at least once in an hour.
    pub p_false_dead_per_hour: f64,
}

/// The promise of `p` (issue 13, item 3). The maths:
///
/// - **Detection of a cut link.** The last beat arrives `rtt/2` after it left; the node is
///   suspect `suspect_after` later; the vantage points get the request, probe for `window`,
///   and their reports are in one `rtt` after the window, or the round closes at
///   `window + report_grace`. Max = rtt/2 + suspect_after + window + report_grace; typical =
///   rtt/2 + suspect_after - beat_interval/2 + window + rtt (the cut falls on average half a
///   beat interval after the last beat). The shell's tick period adds to both.
/// - **One attempt.** A TCP connect succeeds when its SYN and the SYN-ACK both get through:
///   (1-p)^2 with loss p each way, independently (Bernoulli loss, as iptables' `statistic`
///   module drops; bursty Wi-Fi or LTE loss is correlated and does worse), and only if the
///   RTT is below the attempt's `timeout` (a lost SYN is not resent before 1 s, beyond it).
///   The vantage points' own links are taken as clean.
/// - **One suspicion.** `Dead` needs `min_failed` = m x n failed attempts (n = attempts per
///   vantage point), whichever vantage points made them: (1 - (1-p)^2)^(m n). With all k
///   reports in there are k x n attempts and the odds are better, (1 - (1-p)^2)^(k n); the
///   bound takes the worst case that still gives a verdict.
/// - **Suspicions per hour.** Beats ride MQTT over TCP, so a lost beat is a TCP stall, not a
///   gap: a segment lost j times in a row is held rto (2^j - 1) (Linux: rto about rtt +
///   200 ms, doubling per loss), and later beats wait behind it. The bound used here is the
///   conservative one: every `suspect_after` of the hour becomes a suspicion (3600 at 1 s).
///   The estimate beside it counts beats per hour x p^j, j the fewest losses that stall the
///   stream for `suspect_after` (fast retransmit makes stalls rarer, reconnects make longer
///   ones: each is still one suspicion).
/// - **Beats silent too.** A false `Dead` also needs no beat for the whole round, which under
///   the TCP model has odds well below 1 (at 40 %: p per extra doubling of the stall); the
///   bound takes it as 1.
/// - **Per hour.** 1 - (1 - p_suspicion)^(suspicions per hour).
pub fn promise(p: &Params, loss_one_way: f64, rtt: Duration) -> Promise {
    let loss = loss_one_way.clamp(0.0, 1.0);
    let b = p.beat_interval;
    let s = p.suspect_after(b);
    let in_time = rtt <= p.report_grace;
    let max = rtt / 2 + s + p.window + p.report_grace;
    let typical = (rtt / 2 + s + p.window + rtt).saturating_sub(b / 2);
    let n = p.attempts();
    let attempt_success = if rtt < p.timeout {
        (1.0 - loss).powi(2)
    } else {
        0.0
    };
    let fail = 1.0 - attempt_success;
    // Dead needs `confirmations` vantage points failing `min_failed` attempts between them,
    // whatever one other may answer (one answer is outvoted then: a liar's word is worth no
    // more than an honest one's), so any `confirmations` of the `vantage_points` may be the
    // unlucky ones.
    let ways = binomial(p.vantage_points, p.confirmations.max(1));
    let p_false_per_suspicion = (ways * fail.powf(f64::from(p.min_failed()))).min(1.0);
    let s_secs = s.as_secs_f64().max(1e-3);
    let suspicions_per_hour = 3600.0 / s_secs;
    // The fewest losses in a row of one beat's segment that hold the stream silent for
    // suspect_after: the next beat is due b after the last one heard.
    let rto = rtt + Duration::from_millis(200);
    let mut j = 1u32;
    while j < 16 && b + rto * ((1u32 << j) - 1) < s {
        j += 1;
    }
    let beats_per_hour = 3600.0 / b.as_secs_f64().max(1e-3);
    let suspicions_per_hour_tcp = (beats_per_hour * loss.powi(j as i32)).min(suspicions_per_hour);
    // 1 - (1-x)^N without losing a small x to rounding.
    let p_false_dead_per_hour = -(suspicions_per_hour * (-p_false_per_suspicion).ln_1p()).exp_m1();
    Promise {
        detection_time_max: in_time.then_some(max),
        detection_time_typical: in_time.then_some(typical),
        attempts_per_vantage: n,
        attempt_success,
        p_false_per_suspicion,
        suspicions_per_hour,
        suspicions_per_hour_tcp,
        p_false_dead_per_hour,
    }
}

/// n choose k, as a float (small n).
fn binomial(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const MS: Duration = Duration::from_millis(1);
    /// The tests' tick period.
    const STEP: Duration = Duration::from_millis(10);

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            addr: format!("{name}:7946"),
            beat_interval: Duration::from_millis(250),
        }
    }

    /// A fleet n1..nN beating every 250 ms, ticked every 10 ms.
    struct Fleet {
        d: Detector,
        t0: Instant,
        /// Milliseconds since t0 of the last tick.
        now: u64,
        /// Members that do not beat.
        silent: Vec<String>,
        /// Everything the detector said, with its time in ms.
        log: Vec<(u64, Out)>,
        /// Probes asked by `run_reporting`: (report due at, id, prober, target).
        asked: Vec<(u64, u64, String, String)>,
    }

    impl Fleet {
        fn new(n: usize) -> Fleet {
            Fleet::with(n, Params::default(), 7)
        }
        fn with(n: usize, p: Params, seed: u64) -> Fleet {
            let t0 = Instant::now();
            let mut d = Detector::new(p, seed);
            let members: Vec<Member> = (1..=n).map(|i| member(&format!("n{i}"))).collect();
            d.set_members(&members, t0);
            Fleet {
                d,
                t0,
                now: 0,
                silent: Vec::new(),
                log: Vec::new(),
                asked: Vec::new(),
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + MS * u32::try_from(ms).unwrap()
        }
        fn names(&self) -> Vec<String> {
            self.d.nodes.iter().map(|n| n.name.clone()).collect()
        }
        fn hush(&mut self, node: &str) {
            self.silent.push(node.into());
        }
        fn speak(&mut self, node: &str) {
            self.silent.retain(|s| s != node);
        }
        /// Beats (every 250 ms from those not silent) and ticks up to `ms`; returns what was
        /// said meanwhile.
        fn run_to(&mut self, ms: u64) -> Vec<Out> {
            let mut said = Vec::new();
            while self.now < ms {
                self.now += 10;
                let now = self.at(self.now);
                if self.now % 250 == 0 {
                    for name in self.names() {
                        if !self.silent.contains(&name) {
                            self.d.on_beat(&name, now);
                        }
                    }
                }
                for o in self.d.tick(now) {
                    self.log.push((self.now, o.clone()));
                    said.push(o);
                }
            }
            said
        }
        /// Runs until a round is asked for (at most `limit` ms more); its probes.
        fn next_round(&mut self, limit: u64) -> Vec<(u64, String, String)> {
            let end = self.now + limit;
            while self.now < end {
                let ps = probes(&self.run_to(self.now + 10));
                if !ps.is_empty() {
                    return ps;
                }
            }
            Vec::new()
        }
        /// Runs to `ms` with every vantage point asked meanwhile reporting when its window is
        /// over, except `lossy` (its reports never arrive); a target in `up` answers.
        fn run_reporting(&mut self, ms: u64, lossy: &str, up: &[&str]) {
            let attempts = self.d.params().attempts();
            while self.now < ms {
                let now = self.now;
                for (id, prober, target) in probes(&self.run_to(now + 10)) {
                    self.asked.push((now + 800, id, prober, target));
                }
                let t = self.at(self.now);
                let due: Vec<_> = self.asked.iter().filter(|a| a.0 == now).cloned().collect();
                for (_, id, prober, target) in due.into_iter().filter(|a| a.2 != lossy) {
                    let answered = u32::from(up.contains(&target.as_str()));
                    self.d
                        .on_report(&prober, id, &target, attempts, answered, t);
                }
            }
        }
        /// When `node` was first declared dead.
        fn died(&self, node: &str) -> Option<u64> {
            when(
                &self.log,
                |o| matches!(o, Out::Dead { node: n, .. } if n == node),
            )
        }
        /// Every vantage point of round `id` reports now.
        fn report(&mut self, probes: &[(u64, String, String)], answered: &[u32]) {
            let now = self.at(self.now);
            for ((id, prober, target), a) in probes.iter().zip(answered) {
                self.d.on_report(prober, *id, target, 25, *a, now);
            }
        }
    }

    /// Six members; `node` falls silent at 1 s and is suspect by 2 s: the fleet, and the
    /// probe requests of its first round.
    fn suspect(node: &str) -> (Fleet, Vec<(u64, String, String)>) {
        let mut f = Fleet::new(6);
        f.run_to(1_000);
        f.hush(node);
        let ps = probes(&f.run_to(2_000));
        (f, ps)
    }

    fn probes(outs: &[Out]) -> Vec<(u64, String, String)> {
        outs.iter()
            .filter_map(|o| match o {
                Out::Probe {
                    id, prober, target, ..
                } => Some((*id, prober.clone(), target.clone())),
                _ => None,
            })
            .collect()
    }
    /// Three vantage points asked, one reported its 25 failed attempts.
    const ONE_REPORT_OF_THREE: NoVerdict = NoVerdict::TooFewReports {
        asked: 3,
        reports: 1,
        vantage_points: 1,
        failed_attempts: 25,
    };

    fn dead(outs: &[Out]) -> Vec<String> {
        pick(outs, |o| match o {
            Out::Dead { node, .. } => Some(node.clone()),
            _ => None,
        })
    }
    fn pick<T>(outs: &[Out], f: impl Fn(&Out) -> Option<T>) -> Vec<T> {
        outs.iter().filter_map(f).collect()
    }
    fn when(log: &[(u64, Out)], f: impl Fn(&Out) -> bool) -> Option<u64> {
        log.iter().find(|(_, o)| f(o)).map(|(t, _)| *t)
    }
    fn no_verdicts(outs: &[Out]) -> Vec<NoVerdict> {
        pick(outs, |o| match o {
            Out::NoVerdict { why, .. } => Some(why.clone()),
            _ => None,
        })
    }

    // Rules 2, 3, 5: a cut node.
    #[test]
    fn a_cut_node_is_dead_within_beat_phase_suspect_after_window_and_report_latency() {
        let mut f = Fleet::new(6);
        f.run_to(10_000);
        // Its last beat at 10.000 s; the link is cut at 10.200 s (the beat phase: 200 ms).
        f.hush("n3");
        let a = f.run_to(10_990);
        assert!(a.is_empty(), "{a:?}");
        let a = f.run_to(11_000);
        assert_eq!(a[0], Out::Suspect { node: "n3".into() });
        let ps = probes(&a);
        assert_eq!(ps.len(), 3, "k vantage points: {a:?}");
        assert!(ps.iter().all(|(id, _, t)| *id == ps[0].0 && t == "n3"));
        let Out::Probe {
            addr,
            window,
            every,
            timeout,
            ..
        } = &a[1]
        else {
            panic!("{a:?}")
        };
        assert_eq!(addr, "n3:7946");
        assert_eq!((*window, *every, *timeout), (800 * MS, 25 * MS, 200 * MS));
        // The reports, one trip through the broker after the window.
        let a = f.run_to(11_810);
        assert!(dead(&a).is_empty());
        f.report(&ps, &[0, 0, 0]);
        let a = f.run_to(11_820);
        assert_eq!(dead(&a), ["n3"]);
        let Some(Out::Dead { why, .. }) = a.iter().find(|o| matches!(o, Out::Dead { .. })) else {
            unreachable!()
        };
        assert_eq!(why.failed_attempts, 75);
        assert_eq!(why.vantage_points.len(), 3);
        assert!(why
            .to_string()
            .starts_with("no beat for 1.8 s and 75 connect attempts from 3 vantage points"));
        assert_eq!(f.d.status("n3"), Some(Status::Dead));
        // 1.62 s after the cut: phase (here -0.2 s) + suspect_after + window + latency.
        let cut = 10_200;
        let took = when(&f.log, |o| matches!(o, Out::Dead { .. })).unwrap() - cut;
        assert!(took <= 1_000 + 800 + 20, "{took} ms");
        assert!(quiet_for(&mut f, 12_500), "nothing more until the recheck");
    }

    fn quiet_for(f: &mut Fleet, to: u64) -> bool {
        f.run_to(to)
            .iter()
            .all(|o| !matches!(o, Out::Dead { .. } | Out::Suspect { .. }))
    }

    // Rule 5: one report missing, the round runs to its deadline; still within the promise.
    #[test]
    fn a_cut_node_with_one_vantage_point_silent_is_dead_at_the_rounds_deadline() {
        let mut f = Fleet::new(6);
        f.run_to(10_000);
        f.hush("n3");
        let ps = probes(&f.run_to(11_000));
        f.run_to(11_810);
        f.report(&ps[..2], &[0, 0]);
        assert!(dead(&f.run_to(11_990)).is_empty(), "waits for the third");
        assert_eq!(dead(&f.run_to(12_000)), ["n3"]);
        let max = promise(&Params::default(), 0.0, 10 * MS)
            .detection_time_max
            .unwrap();
        assert!(Duration::from_millis(12_000 - 10_000) <= max);
    }

    // Rule 4: a lossy node's suspicions are refuted.
    #[test]
    fn a_lossy_node_is_never_dead() {
        let mut f = Fleet::new(6);
        f.run_to(5_000);
        let mut refuted = 0;
        for cycle in 0..20u64 {
            let base = 5_000 + cycle * 3_000;
            // Beats stall for 1.5 s (TCP retransmissions), then come again.
            f.hush("n2");
            let a = f.run_to(base + 1_250);
            let ps = probes(&a);
            assert_eq!(ps.len(), 3, "{a:?}");
            f.run_to(base + 1_810);
            // One vantage point's attempts all lost, two got through.
            f.report(&ps, &[0, 1, 1]);
            let a = f.run_to(base + 2_100);
            assert!(a.contains(&Out::Alive {
                node: "n2".into(),
                how: Refuted::Answered {
                    prober: ps[2].1.clone()
                }
            }));
            refuted += 1;
            f.speak("n2");
            let a = f.run_to(base + 3_000);
            assert!(a.contains(&Out::Alive {
                node: "n2".into(),
                how: Refuted::Resumed
            }));
        }
        assert_eq!(refuted, 20);
        assert!(f.log.iter().all(|(_, o)| !matches!(o, Out::Dead { .. })));
    }

    // Rule 4: the agent died, the host answers: quiet, rechecked, dead only when it stops.
    #[test]
    fn a_silent_agent_on_a_host_that_answers_is_not_dead_but_rechecked() {
        let (mut f, ps) = suspect("n4");
        f.run_to(2_810);
        f.report(&ps, &[0, 3, 25]);
        let a = f.run_to(2_820);
        assert!(
            matches!(&a[..], [Out::Alive { node, how: Refuted::Answered { .. } }] if node == "n4"),
            "{a:?}"
        );
        assert_eq!(f.d.status("n4"), Some(Status::Quiet));
        // Rechecked 2 s after each answer, never dead while it answers.
        let mut answered = 2_810;
        for round in 0..10 {
            let ps = f.next_round(2_100);
            assert_eq!(ps.len(), 3, "round {round}");
            assert_eq!(f.now - answered, 2_000);
            f.run_to(f.now + 810);
            f.report(&ps, &[1, 2, 0]);
            answered = f.now;
            let next = f.now + 10;
            assert!(quiet_for(&mut f, next));
        }
        assert_eq!(f.d.status("n4"), Some(Status::Quiet));
        // The host dies too: the next recheck finds it.
        let ps = f.next_round(2_100);
        assert_eq!(ps.len(), 3);
        f.run_to(f.now + 810);
        f.report(&ps, &[0, 0, 0]);
        assert_eq!(dead(&f.run_to(f.now + 10)), ["n4"]);
    }

    // Rules 6 and 7: too few reports.
    #[test]
    fn too_few_reports_give_no_verdict_and_a_new_round_with_other_vantage_points() {
        let mut f = Fleet::new(9);
        f.run_to(1_000);
        f.hush("n5");
        let first = probes(&f.run_to(2_000));
        assert_eq!(first.len(), 3);
        // One report only (its failed attempts count), the rest lost.
        f.run_to(2_810);
        f.report(&first[..1], &[0]);
        assert!(f
            .run_to(2_990)
            .iter()
            .all(|o| !matches!(o, Out::NoVerdict { .. })));
        let a = f.run_to(3_000);
        assert_eq!(no_verdicts(&a), [ONE_REPORT_OF_THREE]);
        assert!(dead(&a).is_empty());
        let second = probes(&a);
        assert_eq!(second.len(), 3, "re-probed at once: {a:?}");
        assert!(second[0].0 > first[0].0, "a new round id");
        let asked_first: Vec<&String> = first.iter().map(|p| &p.1).collect();
        assert!(
            second.iter().all(|p| !asked_first.contains(&&p.1)),
            "other vantage points: {first:?} then {second:?}"
        );
        // Fewer reports than m: a local-health signal.
        assert!(a.contains(&Out::Health(Health {
            score: 1,
            isolated: false,
            verdicts: true,
            silent: 1,
            members: 9
        })));
        // The second round's two reports complete the evidence (3 vantage points, 75 attempts).
        f.run_to(3_810);
        f.report(&second[..2], &[0, 0]);
        assert_eq!(dead(&f.run_to(4_000)), ["n5"]);
    }

    // Rule 7: the gateway is cut off (more than half silent): nobody is accused.
    #[test]
    fn an_isolated_gateway_accuses_nobody_and_stretches_its_timeouts_after() {
        let mut f = Fleet::new(6);
        f.run_to(1_000);
        for n in ["n1", "n2", "n3", "n4"] {
            f.hush(n);
        }
        let a = f.run_to(2_000);
        assert_eq!(
            a.iter()
                .filter(|o| matches!(o, Out::Suspect { .. }))
                .count(),
            4
        );
        let rounds: BTreeSet<u64> = probes(&a).iter().map(|p| p.0).collect();
        assert_eq!(rounds.len(), 4, "isolated_rounds at once: {a:?}");
        assert!(a
            .iter()
            .any(|o| matches!(o, Out::Health(h) if h.isolated && !h.verdicts && h.score == 7)));
        assert!(!f.d.health().verdicts);
        // Nobody reports (this gateway is cut off): rounds, never more than 4 at once, and
        // no accusation.
        while f.now < 30_000 {
            let now = f.now;
            let a = f.run_to(now + 10);
            assert!(dead(&a).is_empty(), "{a:?}");
            let running = f.d.suspects.values().filter(|s| s.round.is_some()).count();
            assert!(running <= 4, "{running} rounds at {now} ms");
        }
        // Heard again: all alive, the score decays, timeouts stretched meanwhile.
        for n in ["n1", "n2", "n3", "n4"] {
            f.speak(n);
        }
        let a = f.run_to(30_250);
        assert_eq!(
            a.iter()
                .filter(|o| matches!(
                    o,
                    Out::Alive {
                        how: Refuted::Beat,
                        ..
                    }
                ))
                .count(),
            4
        );
        assert!(!f.d.health().isolated);
        assert_eq!(f.d.health().multiplier(), 8);
        // n6 falls silent now: with score 7 dropping by one every 2 s it is suspect only once
        // its silence reaches suspect_after x (score + 1): about 6 s here, not 1 s.
        f.hush("n6");
        assert!(f
            .run_to(34_000)
            .iter()
            .all(|o| !matches!(o, Out::Suspect { .. })));
        f.run_to(40_000);
        let t = when(
            &f.log,
            |o| matches!(o, Out::Suspect { node } if node == "n6"),
        )
        .unwrap();
        assert!((35_000..37_000).contains(&t), "{t}");
    }

    // Rule 7, from a chaos run (seed 1795937573785560; its gateway logs were not kept, this is
    // what the rules make of its history): a node's agent killed (its host answers: quiet),
    // the leader's node cut, and a third node's cable pulled for 1.8 s and then lossy.
    // Counting the quiet node, three of five were "silent": isolated, score 7, and with the
    // lossy node's reports late no round came back complete, so verdicts stayed withheld for
    // about 10 s and the cut node was not declared dead before its cable was back. A member
    // whose silence a vantage point explained is no sign that this gateway is cut off: it is
    // left out of the count.
    #[test]
    fn a_quiet_member_does_not_make_the_gateway_think_itself_cut_off() {
        let mut f = Fleet::new(5);
        f.run_to(1_000);
        // n3's agent is killed; its host answers the first round: quiet.
        f.hush("n3");
        let ps = probes(&f.run_to(2_000));
        assert!(ps.iter().all(|p| p.2 == "n3") && ps.len() == 3, "{ps:?}");
        f.run_to(2_810);
        f.report(&ps, &[1, 1, 1]);
        f.run_to(2_820);
        assert_eq!(f.d.status("n3"), Some(Status::Quiet));
        // n1 is cut, and n4's cable is out for 1.8 s soon after.
        f.hush("n1");
        f.run_to(3_000);
        f.hush("n4");
        // Reports come back after the window, but n4's (its link lossy) never do.
        f.run_reporting(4_800, "n4", &["n3", "n4"]);
        f.speak("n4");
        f.run_reporting(20_000, "n4", &["n3", "n4"]);
        assert!(
            f.log
                .iter()
                .all(|(_, o)| !matches!(o, Out::Health(h) if h.isolated)),
            "two of the four members whose silence nobody explained is not isolation: {:?}",
            f.log
        );
        // Suspect at 4 s; n4 is heard again at 4.8 s; the round that started then has n2's
        // and n5's reports: 2 vantage points, 2 x 25 failed attempts.
        let died = f.died("n1").expect("n1 never dead");
        assert!(died <= 6_000, "n1 dead only at {died} ms");
    }

    // Rule 7: four of seven agents crash at once (an agent update gone wrong), their hosts
    // up. Isolated at first; the rounds it still runs find the four quiet, which ends the
    // isolation, so another node's death is still judged (a gateway that ran no round while
    // isolated stayed blind for as long as the agents were down).
    #[test]
    fn an_isolation_made_of_quiet_members_ends_once_rounds_find_them() {
        let crashed = ["n1", "n2", "n3", "n4"];
        let mut f = Fleet::new(7);
        f.run_to(1_000);
        for n in crashed {
            f.hush(n);
        }
        f.run_reporting(2_010, "", &crashed);
        assert!(f.d.health().isolated);
        f.run_reporting(10_000, "", &crashed);
        for n in crashed {
            assert_eq!(f.d.status(n), Some(Status::Quiet), "{n}");
        }
        assert!(!f.d.health().isolated);
        f.hush("n7");
        f.run_reporting(30_000, "", &crashed);
        let died = f.died("n7").expect("n7 never dead");
        assert!(
            died <= 10_000 + 5_000,
            "n7 dead only at {died} ms: {:?}",
            f.log
        );
        assert!(crashed.iter().all(|n| f.died(n).is_none()));
    }

    // Rule 7: after an isolation, rounds with m reports bring the score down, though one
    // vantage point's reports never arrive (its own link lossy): in a small fleet it is asked
    // in every round, and counting only complete rounds held verdicts back for about 10 s.
    #[test]
    fn a_lossy_vantage_point_does_not_keep_the_gateway_from_recovering() {
        let mut f = Fleet::new(5);
        f.run_to(1_000);
        for n in ["n1", "n2", "n3"] {
            f.hush(n);
        }
        f.run_reporting(3_000, "n4", &[]);
        assert!(f.d.health().isolated);
        // n2 and n3 are heard again; n1 stays silent (cut).
        f.speak("n2");
        f.speak("n3");
        f.run_reporting(20_000, "n4", &[]);
        let died = f.died("n1").expect("n1 never dead");
        assert!(
            died <= 3_000 + 5_000,
            "n1 dead only {} ms after the fleet was heard again: {:?}",
            died - 3_000,
            f.log
        );
    }

    // Rule 7: rounds keep missing their reports: the evidence of the next one is withheld.
    #[test]
    fn low_local_health_withholds_dead() {
        let mut f = Fleet::new(9);
        f.run_to(1_000);
        f.hush("n7");
        f.run_to(2_000);
        // Three rounds without any report: score 3.
        f.run_to(3_000);
        f.run_to(4_000);
        let a = f.run_to(5_000);
        assert_eq!(f.d.health().score, 3);
        assert!(!f.d.health().verdicts);
        let ps = probes(&a);
        f.run_to(5_810);
        f.report(&ps, &[0, 0, 0]);
        let a = f.run_to(5_820);
        assert!(dead(&a).is_empty());
        assert_eq!(no_verdicts(&a), [NoVerdict::LocalHealth]);
        let ps = probes(&a);
        assert_eq!(ps.len(), 3, "probed again");
        // That round came back complete: the score is down to 2 and the next verdict stands.
        f.run_to(6_630);
        f.report(&ps, &[0, 0, 0]);
        let a = f.run_to(6_640);
        assert_eq!(dead(&a), ["n7"]);
    }

    // Rules 1 and 5: a beat during the window refutes; the round's reports then count for nothing.
    #[test]
    fn a_beat_during_the_window_refutes() {
        let (mut f, ps) = suspect("n1");
        f.run_to(2_400);
        f.d.on_beat("n1", f.at(2_405));
        let a = f.run_to(2_410);
        assert_eq!(
            a,
            [Out::Alive {
                node: "n1".into(),
                how: Refuted::Beat
            }]
        );
        f.run_to(2_810);
        f.report(&ps, &[0, 0, 0]);
        assert!(dead(&f.run_to(3_000)).is_empty());
        assert_eq!(f.d.status("n1"), Some(Status::Alive));
    }

    // One liar (issue 26): a single vantage point's word against the others'.
    #[test]
    fn one_lying_vantage_point_cannot_veto_a_death() {
        let (mut f, ps) = suspect("n2");
        // the liar answers at once; the other two find nothing
        f.run_to(2_100);
        f.d.on_report(&ps[0].1, ps[0].0, "n2", 1, 1, f.at(2_100));
        assert!(
            f.run_to(2_200).is_empty(),
            "one answer alone refutes nothing yet"
        );
        f.run_to(2_810);
        f.d.on_report(&ps[1].1, ps[1].0, "n2", 25, 0, f.at(2_810));
        f.d.on_report(&ps[2].1, ps[2].0, "n2", 25, 0, f.at(2_810));
        assert_eq!(dead(&f.run_to(2_820)), ["n2"], "outvoted: dead");
        // ... and on a dead node's recheck, the liar's answer alone does not revive it
        let ps = probes(&f.run_to(4_820));
        assert_eq!(ps.len(), 3);
        f.run_to(5_630);
        f.report(&ps, &[1, 0, 0]);
        let a = f.run_to(5_640);
        assert!(!a.iter().any(|o| matches!(o, Out::Alive { .. })), "{a:?}");
        assert_eq!(f.d.status("n2"), Some(Status::Dead));
    }

    #[test]
    fn a_single_answer_nobody_contradicts_still_refutes_at_the_rounds_end() {
        let (mut f, ps) = suspect("n2");
        f.run_to(2_100);
        f.d.on_report(&ps[0].1, ps[0].0, "n2", 1, 1, f.at(2_100));
        // the others' reports never come: one answer against no failure
        f.run_to(3_500);
        assert_eq!(f.d.status("n2"), Some(Status::Quiet));
        assert!(f.log.iter().all(|(_, o)| !matches!(o, Out::Dead { .. })));
    }

    #[test]
    fn a_report_on_an_earlier_round_or_from_one_not_asked_is_no_evidence() {
        let (mut f, ps) = suspect("n2");
        // nobody reports: no verdict, a new round with other vantage points
        let later = f.next_round(3_000);
        assert!(!later.is_empty(), "a new round");
        assert!(f.log.iter().all(|(_, o)| !matches!(o, Out::Dead { .. })));
        // a replayed answer for the old round, from vantage points asked then
        f.report(&ps, &[1, 1, 1]);
        assert_ne!(f.d.status("n2"), Some(Status::Quiet), "old round: ignored");
        // an answer from a member nobody asked
        let stranger = f
            .names()
            .into_iter()
            .find(|n| n != "n2" && !later.iter().any(|(_, p, _)| p == n))
            .expect("someone not asked");
        let id = later[0].0;
        let now = f.at(f.now);
        f.d.on_report(&stranger, id, "n2", 1, 1, now);
        f.d.on_report(&stranger, id, "n2", 1, 1, now);
        assert_ne!(f.d.status("n2"), Some(Status::Quiet), "not asked: ignored");
        // the same vantage point twice counts once
        f.d.on_report(&later[0].1, id, "n2", 1, 1, now);
        f.d.on_report(&later[0].1, id, "n2", 1, 1, now);
        f.run_to(f.now + 10);
        assert_ne!(f.d.status("n2"), Some(Status::Quiet), "one witness, twice");
    }

    #[test]
    fn a_beat_interval_an_agent_claims_is_held_to_an_agents_bounds() {
        let mut d = Detector::new(Params::default(), 7);
        let t0 = Instant::now();
        let liar = Member {
            name: "liar".into(),
            addr: "10.0.0.9".into(),
            beat_interval: Duration::from_secs(24 * 3600),
        };
        let others: Vec<Member> = (1..=4).map(|i| member(&format!("n{i}"))).collect();
        let mut all = others.clone();
        all.push(liar);
        d.set_members(&all, t0);
        let p = Params::default();
        let bound = p.suspect_after(MAX_BEAT);
        let mut t = t0;
        let mut suspected = None;
        while t < t0 + bound + Duration::from_secs(2) {
            t += Duration::from_millis(100);
            for m in &others {
                d.on_beat(&m.name, t);
            }
            if d.tick(t)
                .iter()
                .any(|o| matches!(o, Out::Suspect { node } if node == "liar"))
            {
                suspected = Some(t);
                break;
            }
        }
        let at = suspected.expect("suspected, whatever interval it claims");
        assert!(at.saturating_duration_since(t0) <= bound + Duration::from_millis(200));
    }

    // Rules 1 and 4: a dead node heard again.
    #[test]
    fn a_dead_node_beating_or_answering_again_is_alive() {
        let (mut f, ps) = suspect("n2");
        f.run_to(2_810);
        f.report(&ps, &[0, 0, 0]);
        assert_eq!(dead(&f.run_to(2_820)), ["n2"]);
        // The host answers a recheck (agent not yet up): quiet.
        let ps = probes(&f.run_to(4_820));
        assert_eq!(ps.len(), 3);
        f.run_to(5_630);
        f.report(&ps, &[0, 2, 1]);
        let a = f.run_to(5_640);
        assert!(
            matches!(
                &a[..],
                [Out::Alive {
                    how: Refuted::Answered { .. },
                    ..
                }]
            ),
            "{a:?}"
        );
        assert_eq!(f.d.status("n2"), Some(Status::Quiet));
        // Then its agent beats (the suspicion was refuted already: this ends the quiet).
        f.speak("n2");
        let a = f.run_to(5_750);
        assert_eq!(
            a,
            [Out::Alive {
                node: "n2".into(),
                how: Refuted::Resumed
            }]
        );
        // And a dead node that comes back beating at once.
        f.hush("n3");
        let ps = probes(&f.run_to(7_000));
        f.run_to(7_560);
        f.report(&ps, &[0, 0, 0]);
        assert_eq!(dead(&f.run_to(7_570)), ["n3"]);
        f.speak("n3");
        assert_eq!(
            f.run_to(8_000),
            [Out::Alive {
                node: "n3".into(),
                how: Refuted::Beat
            }]
        );
    }

    // Rule 3: the vantage points.
    #[test]
    fn vantage_points_exclude_the_suspect_and_stale_members_and_are_deterministic() {
        // Ten members joined at 0; those in `silent` never beat (suspect at 1 s); n1..n3 last
        // beat at 0.3 s (at 1 s: not yet suspect, but not fresh either); the rest at 1 s.
        let choose = |seed: u64, silent: &[&str], target: &str| -> Vec<String> {
            let t0 = Instant::now();
            let mut d = Detector::new(Params::default(), seed);
            let members: Vec<Member> = (1..=10).map(|i| member(&format!("n{i}"))).collect();
            d.set_members(&members, t0);
            for i in 1..=10u32 {
                let n = format!("n{i}");
                if !silent.contains(&n.as_str()) {
                    d.on_beat(&n, t0 + MS * if i <= 3 { 300 } else { 1_000 });
                }
            }
            probes(&d.tick(t0 + 1_000 * MS))
                .into_iter()
                .filter(|p| p.2 == target)
                .map(|p| p.1)
                .collect()
        };
        let a = choose(1, &["n4"], "n4");
        assert_eq!(a.len(), 3);
        for v in &a {
            assert!(
                !["n1", "n2", "n3", "n4"].contains(&v.as_str()),
                "{v} in {a:?}"
            );
        }
        assert_eq!(choose(1, &["n4"], "n4"), a, "same seed, same choice");
        assert!(
            (2..8).any(|seed| choose(seed, &["n4"], "n4") != a),
            "the seed moves the start"
        );
        // A member suspected lately (its own link may be lossy) is asked only when the steady
        // ones run out: n4 was suspect at 1 s and beats again; n1 falls silent then.
        let mut f = Fleet::new(10);
        f.hush("n4");
        f.run_to(1_000);
        assert_eq!(f.d.status("n4"), Some(Status::Suspect));
        f.speak("n4");
        f.hush("n1");
        let first = f.next_round(1_100);
        let second = f.next_round(1_100);
        assert_eq!(first.len() + second.len(), 6);
        assert!(
            first.iter().chain(&second).all(|p| p.1 != "n4"),
            "{first:?} {second:?}"
        );
        // Two suspects: neither probes the other.
        for t in ["n4", "n9"] {
            let b = choose(1, &["n4", "n9"], t);
            assert_eq!(b.len(), 3);
            for v in &b {
                assert!(
                    !["n1", "n2", "n3", "n4", "n9"].contains(&v.as_str()),
                    "{v} in {b:?}"
                );
            }
        }
    }

    // Rule 8: stray reports.
    #[test]
    fn reports_that_do_not_belong_are_ignored() {
        let (mut f, ps) = suspect("n6");
        let (id, p0) = (ps[0].0, ps[0].1.clone());
        let stranger = f
            .names()
            .into_iter()
            .find(|n| n != "n6" && !ps.iter().any(|p| &p.1 == n))
            .unwrap();
        let now = f.at(2_810);
        f.run_to(2_810);
        // A report from before the suspicion, one from a prober not asked (even answered),
        // one about a member not suspect, one with an id never issued.
        f.d.on_report(&p0, id - 1, "n6", 25, 0, now);
        f.d.on_report(&stranger, id, "n6", 25, 1, now);
        f.d.on_report(&p0, id, "n1", 25, 0, now);
        f.d.on_report(&p0, id + 7, "n6", 25, 0, now);
        // The same prober twice, and one claiming a million attempts.
        f.d.on_report(&p0, id, "n6", 1_000_000, 0, now);
        f.d.on_report(&p0, id, "n6", 25, 0, now);
        let a = f.run_to(3_010);
        assert_eq!(no_verdicts(&a), [ONE_REPORT_OF_THREE]);
        assert_eq!(f.d.status("n6"), Some(Status::Suspect));
    }

    // Rules 1 and 6: members come and go; one without an address cannot be probed.
    #[test]
    fn members_join_heard_leave_forgotten_and_need_an_address() {
        let mut f = Fleet::new(4);
        f.run_to(1_000);
        let mut ms: Vec<Member> = (1..=4).map(|i| member(&format!("n{i}"))).collect();
        ms.push(Member {
            addr: String::new(),
            ..member("n5")
        });
        f.d.set_members(&ms, f.at(1_000));
        f.hush("n5");
        // Joined at 1.0 s, never beat: suspect at 2.0 s, and nothing to probe.
        assert!(f.run_to(1_990).is_empty());
        let a = f.run_to(2_000);
        assert_eq!(a[0], Out::Suspect { node: "n5".into() });
        assert_eq!(no_verdicts(&a), [NoVerdict::NoAddress]);
        assert!(f.run_to(5_000).is_empty(), "told once");
        // Its address arrives: probed.
        ms[4].addr = "10.0.0.5:7946".into();
        f.d.set_members(&ms, f.at(5_000));
        let a = f.run_to(5_010);
        let Out::Probe { addr, target, .. } = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!((addr.as_str(), target.as_str()), ("10.0.0.5:7946", "n5"));
        // It leaves the fleet: forgotten, its beats ignored.
        ms.pop();
        f.d.set_members(&ms, f.at(5_010));
        assert_eq!(f.d.status("n5"), None);
        assert!(f.d.suspects.is_empty());
        f.d.on_beat("n5", f.at(5_020));
        assert!(f.run_to(8_000).is_empty());
        assert_eq!(f.d.health().silent, 0);
    }

    // The shell's wake-up: exact deadlines, so the tick period adds nothing.
    #[test]
    fn next_wake_is_the_next_deadline() {
        let mut f = Fleet::new(4);
        f.run_to(1_000);
        assert_eq!(
            f.d.next_wake(),
            Some(f.at(2_000)),
            "the last beats plus 1 s"
        );
        f.hush("n1");
        f.run_to(2_000);
        assert_eq!(
            f.d.next_wake(),
            Some(f.at(2_000 + 800 + 200)),
            "the round's deadline"
        );
        let ps = probes(&f.log.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>());
        f.run_to(2_810);
        f.report(&ps, &[0, 0, 0]);
        assert_eq!(
            f.d.next_wake(),
            Some(f.at(2_800)),
            "all in: the window's end"
        );
        f.run_to(2_820);
        assert_eq!(
            f.d.next_wake(),
            Some(f.at(3_750)),
            "the others' last beats plus 1 s"
        );
    }

    #[test]
    fn attempts_and_evidence_follow_the_parameters() {
        let p = Params::default();
        assert_eq!(p.attempts(), 25);
        assert_eq!(p.min_failed(), 50);
        assert_eq!(p.suspect_after(p.beat_interval), Duration::from_secs(1));
        let slow = Params {
            every: 100 * MS,
            ..Params::default()
        };
        assert_eq!(slow.attempts(), 7);
        let odd = Params {
            window: 100 * MS,
            every: Duration::ZERO,
            ..Params::default()
        };
        assert_eq!(
            odd.attempts(),
            1,
            "a window shorter than the timeout: one attempt"
        );
    }

    // ---- The promise ----

    const LOSSES: [f64; 4] = [0.10, 0.20, 0.30, 0.40];

    #[test]
    fn the_promise_for_a_cut_link() {
        let p = promise(&Params::default(), 0.0, 50 * MS);
        // 25 + 1000 + 800 + 200 ms; 25 + 1000 - 125 + 800 + 50 ms.
        assert_eq!(p.detection_time_max, Some(2_025 * MS));
        assert_eq!(p.detection_time_typical, Some(1_750 * MS));
        // Reports slower than the grace never make their round.
        assert_eq!(
            promise(&Params::default(), 0.0, 250 * MS).detection_time_max,
            None
        );
    }

    #[test]
    fn the_promise_numbers_at_10_20_30_40_percent_loss() {
        let d = Params::default();
        for loss in LOSSES {
            let p = promise(&d, loss, 50 * MS);
            let ok = (1.0 - loss) * (1.0 - loss);
            // any 2 of the 3 vantage points failing 50 attempts between them
            let per = 3.0 * (1.0 - ok).powi(50);
            assert_eq!(p.attempts_per_vantage, 25);
            assert!((p.attempt_success - ok).abs() < 1e-12);
            assert!((p.p_false_per_suspicion / per - 1.0).abs() < 1e-9);
            assert!((p.suspicions_per_hour - 3600.0).abs() < 1e-9);
            // Small: 1 - (1 - x)^N is N x.
            assert!(
                (p.p_false_dead_per_hour / (3600.0 * per) - 1.0).abs() < 1e-5,
                "{p:?}"
            );
            assert!(p.suspicions_per_hour_tcp <= p.suspicions_per_hour);
        }
        // The numbers the docs quote.
        let at = |loss| promise(&d, loss, 50 * MS).p_false_dead_per_hour;
        assert!(at(0.10) < 1e-30);
        assert!(at(0.20) < 1e-18);
        assert!(at(0.30) < 1e-10);
        assert!(at(0.40) < 3e-6, "{}", at(0.40));
        assert!(at(0.10) < at(0.20) && at(0.20) < at(0.30) && at(0.30) < at(0.40));
        // The TCP estimate: a 1 s stall takes two losses in a row (250 + 250 x 3 ms).
        let p = promise(&d, 0.40, 50 * MS);
        assert!((p.suspicions_per_hour_tcp - 14_400.0 * 0.16).abs() < 1e-6);
    }

    #[test]
    fn probing_every_100_ms_would_not_keep_the_promise() {
        let p = Params {
            every: 100 * MS,
            ..Params::default()
        };
        let at40 = promise(&p, 0.40, 50 * MS);
        assert_eq!(at40.attempts_per_vantage, 7);
        assert!(at40.p_false_dead_per_hour > 0.9, "{at40:?}");
        assert!(promise(&p, 0.30, 50 * MS).p_false_dead_per_hour > 1e-3);
    }

    #[test]
    fn a_round_trip_beyond_the_connect_timeout_voids_the_promise() {
        let p = promise(&Params::default(), 0.10, 200 * MS);
        assert_eq!(p.attempt_success, 0.0);
        assert_eq!(p.p_false_per_suspicion, 1.0);
        assert_eq!(p.p_false_dead_per_hour, 1.0);
    }

    /// `cargo test -p leakmon-gateway --bins detector::tests::promise_table -- --nocapture`
    #[test]
    fn promise_table() {
        let d = Params::default();
        let rtt = 50 * MS;
        let p0 = promise(&d, 0.0, rtt);
        let secs =
            |t: Option<Duration>| t.map_or("-".into(), |t| format!("{:.2} s", t.as_secs_f64()));
        let mut t = format!(
            "Defaults: beat {} ms, suspect after {} ms, k = {}, m = {}, window {} ms, attempt every {} ms \
             ({} per vantage point, {} failed needed), timeout {} ms, report grace {} ms.\n\
             Cut link (rtt {} ms): detected typically in {}, at most {}.\n\n\
             | loss each way | attempt answered | P(false) per suspicion | suspicions/h (bound; TCP estimate) | P(false dead) per node per hour |\n\
             |---|---|---|---|---|\n",
            d.beat_interval.as_millis(),
            d.suspect_after(d.beat_interval).as_millis(),
            d.vantage_points,
            d.confirmations,
            d.window.as_millis(),
            d.every.as_millis(),
            d.attempts(),
            d.min_failed(),
            d.timeout.as_millis(),
            d.report_grace.as_millis(),
            rtt.as_millis(),
            secs(p0.detection_time_typical),
            secs(p0.detection_time_max),
        );
        for loss in LOSSES {
            let p = promise(&d, loss, rtt);
            t += &format!(
                "| {:.0} % | {:.2} | {:.1e} | {:.0}; {:.0} | {:.1e} |\n",
                loss * 100.0,
                p.attempt_success,
                p.p_false_per_suspicion,
                p.suspicions_per_hour,
                p.suspicions_per_hour_tcp,
                p.p_false_dead_per_hour
            );
        }
        println!("{t}");
        assert!(t.contains("| 40 % | 0.36 |"));
    }

    // ---- Simulation: a fleet over TCP with loss, a seeded RNG, no sockets, no sleeping ----

    /// splitmix64.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(1);
            mix(self.0)
        }
        fn chance(&mut self, p: f64) -> bool {
            ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const ONE_WAY: Duration = Duration::from_millis(5);

    struct SimNode {
        name: String,
        /// Loss each way on its link.
        loss: f64,
        cut: Option<Instant>,
        next_beat: Instant,
        /// Beat arrival times, in order (TCP delivers in order).
        arrivals: VecDeque<Instant>,
        last_arrival: Option<Instant>,
        /// The TCP stream lost its way (a segment sent after the cut): nothing more arrives.
        broken: bool,
    }

    struct Report {
        at: Instant,
        prober: String,
        id: u64,
        target: String,
        attempts: u32,
        answered: u32,
    }

    struct Sim {
        d: Detector,
        rng: Rng,
        now: Instant,
        nodes: Vec<SimNode>,
        /// Loss each way on the gateway's own link (every stream and message crosses it).
        gateway_loss: f64,
        reports: Vec<Report>,
        log: Vec<(Instant, Out)>,
    }

    impl Sim {
        fn new(n: usize, seed: u64) -> Sim {
            let mut rng = Rng(seed);
            let t0 = Instant::now();
            let mut d = Detector::new(Params::default(), seed);
            let names: Vec<String> = (1..=n).map(|i| format!("n{i:02}")).collect();
            let members: Vec<Member> = names.iter().map(|s| member(s)).collect();
            d.set_members(&members, t0);
            let nodes = names
                .into_iter()
                .map(|name| SimNode {
                    name,
                    loss: 0.0,
                    cut: None,
                    next_beat: t0 + MS * u32::try_from(rng.below(250)).unwrap(),
                    arrivals: VecDeque::new(),
                    last_arrival: None,
                    broken: false,
                })
                .collect();
            Sim {
                d,
                rng,
                now: t0,
                nodes,
                gateway_loss: 0.0,
                reports: Vec::new(),
                log: Vec::new(),
            }
        }

        fn node(&self, name: &str) -> usize {
            self.nodes.iter().position(|n| n.name == name).unwrap()
        }

        /// When a message sent at `sent` over a TCP stream with loss `loss` arrives: each
        /// loss costs an RTO (250 ms, doubling); a transmission after the cut is lost.
        fn tcp(&mut self, sent: Instant, loss: f64, cut: Option<Instant>) -> Option<Instant> {
            let mut t = sent;
            let mut rto = Duration::from_millis(250);
            loop {
                if cut.is_some_and(|c| t >= c) {
                    return None;
                }
                if !self.rng.chance(loss) {
                    return Some(t + ONE_WAY);
                }
                t += rto;
                rto = (rto * 2).min(Duration::from_secs(10));
            }
        }

        /// Loss on the path between a node and the gateway.
        fn to_gateway(&self, i: usize) -> f64 {
            1.0 - (1.0 - self.nodes[i].loss) * (1.0 - self.gateway_loss)
        }

        fn step(&mut self) {
            self.now += STEP;
            let now = self.now;
            for i in 0..self.nodes.len() {
                while self.nodes[i].next_beat <= now {
                    let sent = self.nodes[i].next_beat;
                    self.nodes[i].next_beat += Duration::from_millis(250);
                    if self.nodes[i].broken {
                        continue;
                    }
                    let (loss, cut) = (self.to_gateway(i), self.nodes[i].cut);
                    match self.tcp(sent, loss, cut) {
                        Some(at) => {
                            let n = &mut self.nodes[i];
                            let at = n.last_arrival.map_or(at, |l| l.max(at));
                            n.last_arrival = Some(at);
                            n.arrivals.push_back(at);
                        }
                        None => self.nodes[i].broken = true,
                    }
                }
                while self.nodes[i].arrivals.front().is_some_and(|&a| a <= now) {
                    self.nodes[i].arrivals.pop_front();
                    let name = self.nodes[i].name.clone();
                    self.d.on_beat(&name, now);
                }
            }
            let (due, later): (Vec<Report>, Vec<Report>) = std::mem::take(&mut self.reports)
                .into_iter()
                .partition(|r| r.at <= now);
            self.reports = later;
            for r in due {
                self.d
                    .on_report(&r.prober, r.id, &r.target, r.attempts, r.answered, now);
            }
            for o in self.d.tick(now) {
                if let Out::Probe {
                    id,
                    prober,
                    target,
                    window,
                    every,
                    ..
                } = &o
                {
                    self.probe(*id, prober, target, *window, *every);
                }
                self.log.push((now, o));
            }
        }

        /// The vantage point gets the request over its stream, tries the connects, and
        /// reports over its stream.
        fn probe(
            &mut self,
            id: u64,
            prober: &str,
            target: &str,
            window: Duration,
            every: Duration,
        ) {
            let (v, t) = (self.node(prober), self.node(target));
            let (lv, cv) = (self.to_gateway(v), self.nodes[v].cut);
            let Some(got) = self.tcp(self.now, lv, cv) else {
                return;
            };
            let attempts = self.d.params().attempts();
            let ok = ((1.0 - self.nodes[t].loss) * (1.0 - self.nodes[v].loss)).powi(2);
            let cut = self.nodes[t].cut;
            let mut answered = 0;
            for a in 0..attempts {
                let at = got + every * a;
                if cut.is_none_or(|c| at < c) && self.rng.chance(ok) {
                    answered += 1;
                }
            }
            if let Some(at) = self.tcp(got + window, lv, cv) {
                self.reports.push(Report {
                    at,
                    prober: prober.into(),
                    id,
                    target: target.into(),
                    attempts,
                    answered,
                });
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.step();
            }
        }

        fn count(&self, f: impl Fn(&Out) -> bool) -> usize {
            self.log.iter().filter(|(_, o)| f(o)).count()
        }
    }

    /// An hour of simulated time, half of twelve nodes losing 40 % of their packets each way
    /// (beats stalled behind TCP retransmissions, probe attempts answered with 0.6^2, and
    /// 0.6^4 from a lossy vantage point): never a `Dead`.
    #[test]
    fn simulated_40_percent_loss_both_ways_for_an_hour_gives_no_death() {
        let mut s = Sim::new(12, 13);
        for i in [0, 2, 5, 6, 9, 11] {
            s.nodes[i].loss = 0.40;
        }
        let minutes = 60;
        s.run(Duration::from_secs(60 * minutes));
        let deaths = s.count(|o| matches!(o, Out::Dead { .. }));
        let suspicions = s.count(|o| matches!(o, Out::Suspect { .. }));
        let answered = s.count(|o| {
            matches!(
                o,
                Out::Alive {
                    how: Refuted::Answered { .. },
                    ..
                }
            )
        });
        let lossy = ["n01", "n03", "n06", "n07", "n10", "n12"];
        let lossy_suspicions =
            s.count(|o| matches!(o, Out::Suspect { node } if lossy.contains(&node.as_str())));
        println!(
            "{minutes} min at 40 %: {suspicions} suspicions ({lossy_suspicions} of the lossy nodes), \
             {answered} refuted by an answer, {deaths} deaths"
        );
        assert_eq!(deaths, 0);
        assert!(
            lossy_suspicions > 300,
            "the simulation suspected: {lossy_suspicions}"
        );
        assert!(answered > 100);
        // The promise's bound on suspicions holds in the simulation.
        let per_hour = lossy_suspicions as f64 / 6.0 * 60.0 / minutes as f64;
        assert!(per_hour <= promise(&Params::default(), 0.4, 10 * MS).suspicions_per_hour);
    }

    /// 10 simulated minutes with the gateway's own link losing 40 % each way: many members
    /// silent at once, reports late, but no accusation.
    #[test]
    fn simulated_lossy_gateway_accuses_nobody() {
        let mut s = Sim::new(12, 21);
        s.gateway_loss = 0.40;
        s.run(Duration::from_secs(600));
        assert_eq!(s.count(|o| matches!(o, Out::Dead { .. })), 0);
        assert!(s.count(|o| matches!(o, Out::Suspect { .. })) > 100);
    }

    /// A link cut at a random moment, 200 times: `Dead` every time, within the promise.
    #[test]
    fn simulated_cut_links_are_dead_every_time_within_the_bound() {
        let bound = promise(&Params::default(), 0.0, 2 * ONE_WAY)
            .detection_time_max
            .unwrap()
            + 2 * STEP;
        let mut total = Duration::ZERO;
        let mut worst = Duration::ZERO;
        let trials = 200;
        for trial in 0..trials {
            let mut s = Sim::new(10, 1_000 + trial);
            let warm = Duration::from_millis(3_000 + s.rng.below(1_000));
            s.run(warm);
            let cut = s.now + MS * u32::try_from(s.rng.below(10)).unwrap();
            let victim = usize::try_from(s.rng.below(10)).unwrap();
            s.nodes[victim].cut = Some(cut);
            let name = s.nodes[victim].name.clone();
            let mut took = None;
            while s.now < cut + Duration::from_secs(5) {
                s.step();
                if s.log
                    .iter()
                    .any(|(_, o)| matches!(o, Out::Dead { node, .. } if *node == name))
                {
                    took = Some(s.now.saturating_duration_since(cut));
                    break;
                }
            }
            let took = took.unwrap_or_else(|| panic!("trial {trial}: {name} never dead"));
            assert!(took <= bound, "trial {trial}: {took:?} > {bound:?}");
            assert_eq!(
                s.count(|o| matches!(o, Out::Dead { .. })),
                1,
                "trial {trial}: only the victim"
            );
            total += took;
            worst = worst.max(took);
        }
        let mean = total / u32::try_from(trials).unwrap();
        println!("cut link: mean {mean:?}, worst {worst:?}, bound {bound:?}");
        let typical = promise(&Params::default(), 0.0, 2 * ONE_WAY)
            .detection_time_typical
            .unwrap();
        assert!(mean.abs_diff(typical) < 60 * MS, "{mean:?} vs {typical:?}");
    }

    /// A node on a 30 % lossy link, then cut: caught every time, within a recheck and two
    /// rounds (it may have just been found quiet, answering, when the cut came).
    #[test]
    fn simulated_lossy_then_cut_links_are_dead_every_time() {
        let p = Params::default();
        let bound = p.window + p.report_grace + p.recheck + p.window + p.report_grace + 4 * STEP;
        for trial in 0..60 {
            let mut s = Sim::new(10, 5_000 + trial);
            s.nodes[4].loss = 0.30;
            let warm = Duration::from_millis(20_000 + s.rng.below(5_000));
            s.run(warm);
            let cut = s.now;
            s.nodes[4].cut = Some(cut);
            let before = s.count(|o| matches!(o, Out::Dead { .. }));
            assert_eq!(before, 0, "trial {trial}: a death before the cut");
            let mut took = None;
            while s.now < cut + Duration::from_secs(8) {
                s.step();
                if s.log
                    .iter()
                    .any(|(_, o)| matches!(o, Out::Dead { node, .. } if node == "n05"))
                {
                    took = Some(s.now.saturating_duration_since(cut));
                    break;
                }
            }
            let took = took.unwrap_or_else(|| panic!("trial {trial}: never dead"));
            assert!(took <= bound, "trial {trial}: {took:?} > {bound:?}");
        }
    }
}
