//! Probing a suspect node for the gateway: this agent as one of SWIM's vantage points.
//!
//! When a node's beats stop, the gateway cannot tell from its own view whether the node died
//! or only its link to the gateway (or the broker) is lossy. So it asks a few other agents to
//! try TCP connects to the suspect during a confirmation window, and declares the node dead
//! only if none of them got an answer. Many independent attempts from several places are what
//! make "no answer" trustworthy on a lossy network (docs/protocol.md, "probe").
//!
//! This agent's part: take a request from `<prefix>/v1/probe/<node>`, connect to each of its
//! ports every `every` during `window`, and report how many attempts finished and how many
//! were answered, on its own `probe` channel: at the first answer (alive; probing stops), or
//! once nothing more can come (every round started and finished, or the window is over).
//!
//! Pure: [`admit`] (a payload decoded, checked, clamped to [`Limits`], counted against
//! [`MAX_RUNNING`]) and [`Probe`] (the schedule and the count; time passed in); what a
//! finished connect says is `leakmon_common::tcp`'s rule, shared with the gateway's own probe. Shell: [`Prober`] (the running probes as tokio tasks and
//! their reports) and [`run`] (one probe's sockets and timers).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use leakmon_protocol::{
    decode_request, DecodeError, ProbeReport, ProbeRequest, Topics, MAX_PROBE_PORTS,
    PROTOCOL_VERSION,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Probes running at once, at most; a request beyond this is dropped (and logged). A gateway
/// asks a few vantage points per suspect, so 8 covers several suspects at the same time
/// (a network split) without letting a flood of requests open sockets without bound.
pub const MAX_RUNNING: usize = 8;
/// Connects in flight per probe, at most: with a short `every` and a long `timeout`, rounds
/// would otherwise pile up (8 probes x this = 128 sockets at worst).
pub const MAX_INFLIGHT: usize = 16;
// A round always fits once the previous ones are done.
const _: () = assert!(MAX_INFLIGHT >= MAX_PROBE_PORTS);

/// Bounds the agent holds a request's timings to, whatever the gateway asked.
pub struct Limits;

impl Limits {
    /// Longest window: beyond this the gateway should have decided long ago.
    pub const MAX_WINDOW: Duration = Duration::from_secs(10);
    /// Shortest window and connect time limit: a connect cannot be judged in less.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
    /// Longest time limit of one connect: a SYN-ACK later than this is as good as none.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(2);
    /// Shortest period between rounds.
    pub const MIN_EVERY: Duration = Duration::from_millis(20);
}

/// A checked request with its timings clamped to [`Limits`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: u64,
    pub gateway: String,
    pub target: String,
    pub addr: String,
    /// Each port once, in the order asked.
    pub ports: Vec<u16>,
    pub window: Duration,
    pub every: Duration,
    /// At most `window`: every attempt of a round that starts can finish within the window.
    pub timeout: Duration,
}

impl Plan {
    fn new(r: ProbeRequest) -> Plan {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let window = ms(r.window_ms).clamp(Limits::MIN_TIMEOUT, Limits::MAX_WINDOW);
        let every = ms(r.every_ms).max(Limits::MIN_EVERY);
        let timeout = ms(r.timeout_ms)
            .clamp(Limits::MIN_TIMEOUT, Limits::MAX_TIMEOUT)
            .min(window);
        let mut ports = Vec::with_capacity(r.ports.len());
        for p in r.ports {
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        Plan {
            id: r.id,
            gateway: r.gateway,
            target: r.target,
            addr: r.addr,
            ports,
            window,
            every,
            timeout,
        }
    }

    /// Rounds start at 0, `every`, 2 x `every`, ... as long as a round started then ends
    /// (at its connects' time limit) within the window; the first round always.
    pub fn rounds(&self) -> u32 {
        let room = self.window.saturating_sub(self.timeout).as_nanos();
        u32::try_from(room / self.every.as_nanos().max(1))
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }
}

/// Why a request is not probed.
#[derive(Debug)]
pub enum Refused {
    /// Not a valid request (size, JSON, version, shape, or its own checks).
    Malformed(DecodeError),
    /// [`MAX_RUNNING`] probes are running already.
    Busy { id: u64, target: String },
}

/// Decodes and checks a request that arrived on this agent's probe topic, with `running`
/// probes under way: the plan to carry out, or why not.
pub fn admit(payload: &[u8], running: usize) -> Result<Plan, Refused> {
    let r: ProbeRequest = decode_request(payload).map_err(Refused::Malformed)?;
    if running >= MAX_RUNNING {
        return Err(Refused::Busy {
            id: r.id,
            target: r.target,
        });
    }
    Ok(Plan::new(r))
}

use leakmon_common::tcp::Outcome;
use leakmon_protocol::auth::NodeKey;

/// The count a report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Attempts that finished (answered or not).
    pub attempts: u32,
    pub answered: u32,
}

/// One probe's schedule and count, time passed in as the time since the probe started.
#[derive(Debug)]
pub struct Probe {
    ports: Vec<u16>,
    every: Duration,
    rounds: u32,
    /// Rounds started (or skipped because the shell was late).
    started: u32,
    inflight: usize,
    tally: Tally,
    /// Connects not started because [`MAX_INFLIGHT`] were in flight.
    skipped: u32,
    /// The report was handed out: nothing counts any more.
    over: bool,
}

impl Probe {
    pub fn new(plan: &Plan) -> Probe {
        Probe {
            ports: plan.ports.clone(),
            every: plan.every,
            rounds: plan.rounds(),
            started: 0,
            inflight: 0,
            tally: Tally::default(),
            skipped: 0,
            over: false,
        }
    }

    /// When the next round is due, from the probe's start; `None` once every round has
    /// started or the report is out.
    pub fn next_round(&self) -> Option<Duration> {
        (!self.over && self.started < self.rounds).then(|| self.every * self.started)
    }

    /// Starts the round due by `elapsed`: the ports to connect to now. Rounds the shell was
    /// too late for are not made up (the latest one due is started), so a stalled process
    /// does not fire a burst; connects that would exceed [`MAX_INFLIGHT`] are skipped.
    pub fn start_round(&mut self, elapsed: Duration) -> Vec<u16> {
        match self.next_round() {
            Some(at) if at <= elapsed => {}
            _ => return Vec::new(),
        }
        let latest_due = elapsed.as_nanos() / self.every.as_nanos().max(1);
        let latest_due = u32::try_from(latest_due).unwrap_or(u32::MAX);
        self.started = latest_due.min(self.rounds - 1) + 1;
        let n = self.ports.len().min(MAX_INFLIGHT - self.inflight);
        self.skipped += u32::try_from(self.ports.len() - n).unwrap_or(u32::MAX);
        self.inflight += n;
        self.ports[..n].to_vec()
    }

    /// An attempt finished. Returns the tally when the report is due: at the first answer, or
    /// when the last attempt of the last round is done.
    pub fn finished(&mut self, o: Outcome) -> Option<Tally> {
        if self.over {
            return None;
        }
        self.inflight = self.inflight.saturating_sub(1);
        self.tally.attempts += 1;
        if o == Outcome::Answered {
            self.tally.answered += 1;
        }
        if self.tally.answered > 0 || (self.inflight == 0 && self.next_round().is_none()) {
            self.over = true;
            return Some(self.tally);
        }
        None
    }

    /// The window is over (or the target could not even be looked up): the report, with the
    /// attempts finished so far; those still under way are not counted.
    pub fn expire(&mut self) -> Tally {
        self.over = true;
        self.tally
    }

    /// Connects not started because too many were in flight.
    pub fn skipped(&self) -> u32 {
        self.skipped
    }
}

/// The agent's probe service: requests in, at most [`MAX_RUNNING`] probes as tokio tasks,
/// reports out.
pub struct Prober {
    node: String,
    topic: String,
    tasks: JoinSet<ProbeReport>,
    malformed_total: u64,
    dropped_total: u64,
    /// This node's key: a request must be sealed with it (`None`: `auth.insecure`).
    key: Option<NodeKey>,
    unauthenticated_total: u64,
}

impl Prober {
    pub fn new(topics: &Topics, node: &str, key: Option<NodeKey>) -> Prober {
        Prober {
            node: node.to_owned(),
            topic: topics.probe_request(node),
            tasks: JoinSet::new(),
            malformed_total: 0,
            dropped_total: 0,
            key,
            unauthenticated_total: 0,
        }
    }

    /// The topic this agent's probe requests arrive on (to subscribe to).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A publish arrived: starts a probe when it is a valid request on this agent's topic and
    /// there is room; counts and logs it otherwise. Never fails: the payload is the network's.
    pub fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        if topic != self.topic {
            tracing::debug!(topic, "a message on a topic not subscribed to; ignored");
            return;
        }
        // Only a gateway holds this node's key (it derives it from the fleet key): anyone
        // else's request would have this node connect where a stranger says.
        if let Some(Err(e)) = self.key.as_ref().map(|k| k.check(topic, payload)) {
            self.unauthenticated_total += 1;
            tracing::warn!(
                error = %e,
                reason = e.reason(),
                unauthenticated_total = self.unauthenticated_total,
                "probe request not sealed with this node's key: ignored"
            );
            return;
        }
        match admit(payload, self.tasks.len()) {
            Ok(plan) => {
                tracing::debug!(
                    id = plan.id,
                    gateway = %plan.gateway,
                    target = %plan.target,
                    addr = %plan.addr,
                    ports = ?plan.ports,
                    window_ms = plan.window.as_millis() as u64,
                    every_ms = plan.every.as_millis() as u64,
                    timeout_ms = plan.timeout.as_millis() as u64,
                    "probing a suspect for the gateway"
                );
                self.tasks.spawn(run(self.node.clone(), plan));
            }
            Err(Refused::Malformed(e)) => {
                self.malformed_total += 1;
                tracing::warn!(
                    error = %e,
                    reason = e.reason(),
                    bytes = payload.len(),
                    malformed_total = self.malformed_total,
                    "malformed probe request dropped"
                );
            }
            Err(Refused::Busy { id, target }) => {
                self.dropped_total += 1;
                tracing::warn!(
                    id,
                    target = %target,
                    running = MAX_RUNNING,
                    dropped_total = self.dropped_total,
                    "probe request dropped: too many probes running"
                );
            }
        }
    }

    /// The next finished probe's report; pending while none is running.
    pub async fn next_report(&mut self) -> ProbeReport {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(r)) => return r,
                Some(Err(e)) => tracing::warn!(error = %e, "a probe task failed"),
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Drops the reports of probes that finished while there was no connection: the window
    /// they answer is over, the gateway has moved on. Returns how many.
    pub fn drop_finished(&mut self) -> usize {
        let mut n = 0;
        while self.tasks.try_join_next().is_some() {
            n += 1;
        }
        n
    }
}

/// Carries out one probe and returns its report.
pub async fn run(node: String, plan: Plan) -> ProbeReport {
    let start = Instant::now();
    let deadline = start + plan.window;
    let mut probe = Probe::new(&plan);
    let tally = match resolve(&plan.addr, deadline).await {
        Some(to) => probe_at(&mut probe, to, &plan, start, deadline).await,
        None => probe.expire(),
    };
    // Under a lossy link probes come often: only evidence against a node is worth an info line.
    if tally.answered == 0 {
        tracing::info!(
            id = plan.id,
            target = %plan.target,
            attempts = tally.attempts,
            skipped = probe.skipped(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "probe done: the suspect did not answer"
        );
    } else {
        tracing::debug!(
            id = plan.id,
            target = %plan.target,
            attempts = tally.attempts,
            answered = tally.answered,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "probe done: the suspect answered"
        );
    }
    ProbeReport {
        v: PROTOCOL_VERSION,
        node,
        id: plan.id,
        target: plan.target,
        attempts: tally.attempts,
        answered: tally.answered,
    }
}

/// The target's address (port 0), looked up once: an IP address as it is, a host name
/// through the resolver, bounded by the window.
async fn resolve(addr: &str, deadline: Instant) -> Option<SocketAddr> {
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    match tokio::time::timeout_at(deadline, tokio::net::lookup_host((addr, 0))).await {
        Ok(Ok(mut found)) => {
            let first = found.next();
            if first.is_none() {
                tracing::warn!(addr, "probe target has no address");
            }
            first
        }
        Ok(Err(e)) => {
            tracing::warn!(addr, error = %e, "probe target cannot be looked up");
            None
        }
        Err(_) => {
            tracing::warn!(addr, "probe target lookup took the whole window");
            None
        }
    }
}

/// Runs the rounds against `to` until the probe has its report or the window is over.
async fn probe_at(
    probe: &mut Probe,
    to: SocketAddr,
    plan: &Plan,
    start: Instant,
    deadline: Instant,
) -> Tally {
    let mut pending = FuturesUnordered::new();
    loop {
        let next = probe.next_round().map(|d| start + d);
        tokio::select! {
            _ = sleep_until(next) => {
                for port in probe.start_round(start.elapsed()) {
                    pending.push(attempt(to, port, plan.timeout));
                }
            }
            Some(o) = pending.next(), if !pending.is_empty() => {
                if let Some(t) = probe.finished(o) {
                    // Connects still under way are dropped here, which closes their sockets.
                    return t;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return probe.expire(),
        }
    }
}

/// Sleeps until `at`; forever without one (a `select!` arm that never fires).
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One TCP connect with a time limit ([`leakmon_common::tcp::attempt`]).
async fn attempt(mut to: SocketAddr, port: u16, timeout: Duration) -> Outcome {
    to.set_port(port);
    let o = leakmon_common::tcp::attempt(to, timeout).await;
    tracing::trace!(%to, outcome = ?o, "probe attempt");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::encode;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn request() -> ProbeRequest {
        ProbeRequest {
            v: PROTOCOL_VERSION,
            id: 7,
            gateway: "gw1".into(),
            target: "edge-01".into(),
            addr: "10.0.0.11".into(),
            ports: vec![22, 2377],
            window_ms: 1000,
            every_ms: 200,
            timeout_ms: 300,
        }
    }

    fn plan(f: impl FnOnce(&mut ProbeRequest)) -> Plan {
        let mut r = request();
        f(&mut r);
        admit(&encode(&r), 0).expect("a valid request")
    }

    #[test]
    fn a_valid_request_is_admitted_as_asked() {
        let p = plan(|_| {});
        assert_eq!(
            (p.id, p.target.as_str(), p.addr.as_str()),
            (7, "edge-01", "10.0.0.11")
        );
        assert_eq!(p.ports, vec![22, 2377]);
        assert_eq!((p.window, p.every, p.timeout), (MS(1000), MS(200), MS(300)));
        // Rounds at 0, 200, 400, 600: one at 800 would end at 1100, after the window.
        assert_eq!(p.rounds(), 4);
    }

    #[test]
    fn timings_are_clamped_to_sane_bounds() {
        let p = plan(|r| {
            r.window_ms = u32::MAX;
            r.every_ms = 1;
            r.timeout_ms = u32::MAX;
        });
        assert_eq!(p.window, Limits::MAX_WINDOW);
        assert_eq!(p.every, Limits::MIN_EVERY);
        assert_eq!(p.timeout, Limits::MAX_TIMEOUT);
        assert_eq!(p.rounds(), 401, "0, 20ms, ... 8s: the last ends at 10s");
        let p = plan(|r| {
            r.window_ms = 1;
            r.timeout_ms = 1;
        });
        assert_eq!((p.window, p.timeout), (MS(10), MS(10)));
        assert_eq!(p.rounds(), 1);
        let p = plan(|r| r.timeout_ms = 5000);
        assert_eq!(p.timeout, p.window, "a connect never outlasts the window");
        assert_eq!(p.rounds(), 1, "the first round always starts");
        let p = plan(|r| r.every_ms = 60_000);
        assert_eq!(p.rounds(), 1);
        let p = plan(|r| r.ports = vec![22, 80, 22, 80, 443]);
        assert_eq!(p.ports, vec![22, 80, 443], "each port once");
    }

    #[test]
    fn malformed_and_surplus_requests_are_refused() {
        for junk in [
            &b"not json"[..],
            b"{}",
            br#"{"v":1,"id":1}"#,
            br#"{"v":2,"id":1,"gateway":"g","target":"t","addr":"a","ports":[1],"window_ms":1,"every_ms":1,"timeout_ms":1}"#,
            br#"{"v":1,"id":1,"gateway":"g","target":"t/x","addr":"a","ports":[1],"window_ms":1,"every_ms":1,"timeout_ms":1}"#,
            br#"{"v":1,"id":-1,"gateway":"g","target":"t","addr":"a","ports":[1],"window_ms":1,"every_ms":1,"timeout_ms":1}"#,
        ] {
            assert!(
                matches!(admit(junk, 0), Err(Refused::Malformed(_))),
                "{}",
                String::from_utf8_lossy(junk)
            );
        }
        let ok = encode(&request());
        assert!(admit(&ok, MAX_RUNNING - 1).is_ok());
        match admit(&ok, MAX_RUNNING) {
            Err(Refused::Busy { id, target }) => assert_eq!((id, target.as_str()), (7, "edge-01")),
            other => panic!("{other:?}"),
        }
        // A malformed request is reported as such even when busy (it is never a probe).
        assert!(matches!(
            admit(b"{", MAX_RUNNING),
            Err(Refused::Malformed(_))
        ));
    }

    /// Drives a probe the way the shell does: rounds when due, then the outcomes `answer`
    /// gives each attempt (by round and port) after `latency`. Returns the tally and when it
    /// was reported.
    fn simulate(
        p: &Plan,
        latency: Duration,
        answer: impl Fn(u32, u16) -> Outcome,
    ) -> (Tally, Duration) {
        let mut probe = Probe::new(p);
        // (finishes at, outcome), kept sorted by time.
        let mut pending: Vec<(Duration, Outcome)> = Vec::new();
        let mut round = 0;
        loop {
            let next_round = probe.next_round();
            let next_done = pending.first().map(|(t, _)| *t);
            match (next_round, next_done) {
                (Some(r), d) if d.is_none_or(|d| r <= d) && r < p.window => {
                    for port in probe.start_round(r) {
                        pending.push((r + latency.min(p.timeout), answer(round, port)));
                    }
                    pending.sort_by_key(|(t, _)| *t);
                    round += 1;
                }
                (_, Some(d)) if d <= p.window => {
                    let (_, o) = pending.remove(0);
                    if let Some(t) = probe.finished(o) {
                        return (t, d);
                    }
                }
                _ => return (probe.expire(), p.window),
            }
        }
    }

    #[test]
    fn a_live_target_is_reported_at_the_first_answer() {
        let p = plan(|_| {});
        // Port 22 answers from the third round on (a lossy link), within 1 ms.
        let (t, at) = simulate(&p, MS(1), |round, port| {
            if round >= 2 && port == 22 {
                Outcome::Answered
            } else {
                Outcome::Silent
            }
        });
        assert_eq!(
            t,
            Tally {
                attempts: 5,
                answered: 1
            }
        );
        assert_eq!(
            at,
            MS(401),
            "early: the answer at 400 + 1 ms, not the window's end"
        );
    }

    /// Every attempt of the default plan (4 rounds x 2 ports), none answered.
    const NONE_OF_8: Tally = Tally {
        attempts: 8,
        answered: 0,
    };

    #[test]
    fn a_dead_target_is_reported_when_the_last_attempt_times_out() {
        let p = plan(|_| {});
        // Every connect runs into its 300 ms limit.
        let (t, at) = simulate(&p, Duration::MAX, |_, _| Outcome::Silent);
        assert_eq!(t, NONE_OF_8, "4 rounds x 2 ports");
        assert_eq!(at, MS(900), "the last round (600 ms) plus its time limit");
        assert!(at <= p.window);
    }

    #[test]
    fn fast_failures_still_run_every_round() {
        let p = plan(|_| {});
        // Unreachable at once (e.g. no route): the probe keeps trying until its last round.
        let (t, at) = simulate(&p, Duration::ZERO, |_, _| Outcome::Silent);
        assert_eq!(t, NONE_OF_8);
        assert_eq!(at, MS(600));
    }

    #[test]
    fn the_window_end_reports_what_finished() {
        let p = plan(|_| {});
        let mut probe = Probe::new(&p);
        assert_eq!(probe.start_round(MS(0)), vec![22, 2377]);
        assert_eq!(probe.finished(Outcome::Silent), None);
        // The shell wakes late, after the window: one attempt is still under way.
        assert_eq!(
            probe.expire(),
            Tally {
                attempts: 1,
                answered: 0
            }
        );
        assert_eq!(probe.next_round(), None);
        assert_eq!(probe.finished(Outcome::Answered), None, "reported once");
    }

    #[test]
    fn rounds_run_on_schedule_and_missed_ones_are_not_made_up() {
        let p = plan(|_| {});
        let mut probe = Probe::new(&p);
        assert_eq!(probe.next_round(), Some(MS(0)));
        assert_eq!(probe.start_round(MS(0)).len(), 2);
        assert_eq!(probe.next_round(), Some(MS(200)));
        assert!(probe.start_round(MS(199)).is_empty(), "not due yet");
        // The process was stopped for half a second: rounds 1 and 2 are gone, round 3 starts.
        assert_eq!(probe.start_round(MS(650)).len(), 2);
        assert_eq!(probe.next_round(), None, "round 3 was the last");
        assert!(probe.start_round(MS(5000)).is_empty());
    }

    #[test]
    fn connects_in_flight_are_bounded() {
        let p = plan(|r| {
            r.ports = (1..=12).collect();
            r.every_ms = 20;
            r.timeout_ms = 2000;
            r.window_ms = 10_000;
        });
        let mut probe = Probe::new(&p);
        assert_eq!(probe.start_round(MS(0)).len(), 12);
        assert_eq!(probe.start_round(MS(20)).len(), MAX_INFLIGHT - 12);
        assert!(probe.start_round(MS(40)).is_empty());
        assert_eq!(probe.skipped(), 8 + 12);
        for _ in 0..3 {
            assert_eq!(probe.finished(Outcome::Silent), None);
        }
        assert_eq!(probe.start_round(MS(60)).len(), 3);
    }
}
