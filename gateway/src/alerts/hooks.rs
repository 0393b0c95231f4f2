//! Where alerts go: MQTT (`<prefix>/v1/alerts`, QoS 1), webhooks (a bounded queue and a
//! worker per receiver, retries with backoff) and commands (the alert as JSON on stdin and
//! in environment variables, with a time limit). A dead receiver never blocks the gateway
//! nor grows its memory: its queue drops the oldest alert that is not a `node_down` or a
//! `mass_failure` (those are never pushed out by others; [`make_room`]).

use leakmon_common::config::redact_url;
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leakmon_protocol::{encode, Alert, AlertState};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::alerts::rules::make_room;
use crate::bus::{Bus, Message};
use crate::config::{AlertmanagerConfig, ExecConfig, WebhookConfig, WebhookFormat};
use crate::outbox::Journal;

fn wanted(alerts: &[String], min: leakmon_protocol::Severity, a: &Alert) -> bool {
    a.severity >= min && (alerts.is_empty() || alerts.iter().any(|x| x == &a.alert))
}

/// The `{"text": ...}` body of Slack-compatible receivers.
pub fn slack_text(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Firing if a.repeat => "STILL FIRING",
        AlertState::Firing => "FIRING",
        AlertState::Resolved => "RESOLVED",
    };
    format!("[{state}] [{}] {}", a.severity.as_str(), a.summary)
}

/// The environment an exec hook gets.
pub fn env_of(a: &Alert) -> Vec<(&'static str, String)> {
    // A NUL byte (a container name from the network may hold one) cannot be in an
    // environment variable: the command would not start at all. It becomes U+FFFD.
    let env = vec![
        ("LEAKMON_ALERT", a.alert.clone()),
        (
            "LEAKMON_ALERT_STATE",
            match a.state {
                AlertState::Firing => "firing".into(),
                AlertState::Resolved => "resolved".into(),
            },
        ),
        ("LEAKMON_ALERT_SEVERITY", a.severity.as_str().into()),
        ("LEAKMON_ALERT_NODE", a.node.clone()),
        (
            "LEAKMON_ALERT_SUBJECT",
            a.subject.clone().unwrap_or_default(),
        ),
        (
            "LEAKMON_ALERT_VALUE",
            a.value.map(|v| v.to_string()).unwrap_or_default(),
        ),
        ("LEAKMON_ALERT_SUMMARY", a.summary.clone()),
        ("LEAKMON_ALERT_STARTED", a.started.to_string()),
    ];
    env.into_iter()
        .map(|(k, v)| (k, v.replace('\0', "\u{fffd}")))
        .collect()
}

struct Queue {
    items: Mutex<VecDeque<Alert>>,
    notify: Notify,
    cap: usize,
    /// With a state directory, a webhook's queue is kept on disk until each alert is
    /// delivered (or given up), so a restart loses none. Saved by its own task
    /// ([`persist`]), off the alert engine's path and outside the lock; changes within
    /// [`PERSIST_EVERY`] are saved together.
    journal: Option<Journal>,
    changed: Notify,
}

/// After a save, how long further changes gather before the next one (a burst of alerts is
/// saved a few times, not once per alert). The first change after a quiet spell is saved at
/// once.
const PERSIST_EVERY: Duration = Duration::from_millis(50);

/// Saves a webhook queue whenever it changed (its own task).
async fn persist(queue: Arc<Queue>) {
    let Some(journal) = queue.journal.clone() else {
        return;
    };
    loop {
        queue.changed.notified().await;
        let items = queue.snapshot();
        let j = journal.clone();
        let _ = tokio::task::spawn_blocking(move || j.save(&items)).await;
        tokio::time::sleep(PERSIST_EVERY).await;
    }
}

/// A webhook's journal file, named by its URL (not its place in the list, which a config
/// edit can change): FNV-1a of the URL.
fn journal_name(url: &str) -> String {
    let h = url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("webhook-{h:016x}.json")
}

impl Queue {
    fn new(cap: usize, journal: Option<Journal>) -> Queue {
        let items: VecDeque<Alert> = journal
            .as_ref()
            .map(|j| j.load::<Alert>().into_iter().collect())
            .unwrap_or_default();
        if !items.is_empty() {
            tracing::info!(
                alerts = items.len(),
                "delivering alerts a previous run left"
            );
        }
        Queue {
            items: Mutex::new(items),
            notify: Notify::new(),
            cap,
            journal,
            changed: Notify::new(),
        }
    }

    fn snapshot(&self) -> Vec<Alert> {
        self.items
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Saves the queue now (at shutdown: what the journal task may not have saved yet).
    fn flush(&self) {
        if let Some(j) = &self.journal {
            j.save(&self.snapshot());
        }
    }

    /// The queue changed: its journal task saves it.
    fn mark(&self) {
        if self.journal.is_some() {
            self.changed.notify_one();
        }
    }

    /// Adds an alert; returns whether another had to go ([`make_room`]).
    fn push(&self, a: Alert) -> bool {
        let Ok(mut q) = self.items.lock() else {
            return false;
        };
        q.push_back(a);
        let dropped = make_room(&mut q, self.cap, |a| a.alert.as_str()).is_some();
        drop(q);
        self.mark();
        self.notify.notify_one();
        dropped
    }

    /// The oldest alert, left in the queue until [`Queue::done`].
    async fn peek(&self) -> Alert {
        loop {
            if let Some(a) = self.items.lock().ok().and_then(|q| q.front().cloned()) {
                return a;
            }
            self.notify.notified().await;
        }
    }

    /// Alert `a`, the oldest, is delivered (or given up): it leaves the queue (unless a
    /// full queue already dropped it meanwhile).
    fn done(&self, a: &Alert) {
        if let Ok(mut q) = self.items.lock() {
            if q.front() == Some(a) {
                q.pop_front();
                drop(q);
                self.mark();
            }
        }
    }

    async fn pop(&self) -> Alert {
        loop {
            if let Some(a) = self.items.lock().ok().and_then(|mut q| q.pop_front()) {
                return a;
            }
            self.notify.notified().await;
        }
    }
}

struct Webhook {
    cfg: WebhookConfig,
    queue: Arc<Queue>,
}

struct Exec {
    cfg: ExecConfig,
    queue: Arc<Queue>,
}

/// Alerts waiting for an exec hook, per hook: a burst (a flood of made-up nodes, a whole
/// fleet's disks filling) never starts thousands of processes; the oldest waiting go first.
const EXEC_QUEUE: usize = 256;
/// Runs of one exec hook at once.
const EXEC_CONCURRENCY: usize = 4;

pub struct Hooks {
    topic: String,
    bus: Bus,
    webhooks: Vec<Webhook>,
    execs: Vec<Exec>,
    alertmanagers: Vec<super::alertmanager::Sink>,
}

impl Hooks {
    /// Starts a delivery worker per webhook; with a state directory each webhook's queue is
    /// kept in `<dir>/webhook-<hash of its URL>.json` until delivered.
    pub fn start(
        topic: String,
        bus: Bus,
        webhooks: &[WebhookConfig],
        execs: &[ExecConfig],
        state_dir: Option<&std::path::Path>,
        alertmanagers: &[AlertmanagerConfig],
        gateway: &str,
    ) -> Hooks {
        let alertmanagers = alertmanagers
            .iter()
            .map(|c| super::alertmanager::Sink::start(c.clone(), bus.clone(), gateway.to_owned()))
            .collect();
        let webhooks = webhooks
            .iter()
            .map(|cfg| {
                let journal = state_dir.map(|d| Journal::new(d.join(journal_name(&cfg.url))));
                let queue = Arc::new(Queue::new(cfg.queue, journal));
                tokio::spawn(persist(queue.clone()));
                tokio::spawn(deliver(cfg.clone(), queue.clone()));
                Webhook {
                    cfg: cfg.clone(),
                    queue,
                }
            })
            .collect();
        let execs = execs
            .iter()
            .map(|cfg| {
                let queue = Arc::new(Queue::new(EXEC_QUEUE, None));
                tokio::spawn(exec_worker(cfg.clone(), queue.clone()));
                Exec {
                    cfg: cfg.clone(),
                    queue,
                }
            })
            .collect();
        Hooks {
            topic,
            bus,
            webhooks,
            execs,
            alertmanagers,
        }
    }

    /// Every alert the engine makes, active or not: Alertmanager must hear what fires from
    /// whichever gateway is active next.
    pub fn track(&self, a: &Alert) {
        for m in &self.alertmanagers {
            m.on_alert(a);
        }
    }

    /// Saves every webhook's queue now (on shutdown).
    pub fn flush(&self) {
        for w in &self.webhooks {
            w.queue.flush();
        }
    }

    pub fn notify(&self, a: &Alert) {
        let msg = Message {
            topic: self.topic.clone(),
            payload: encode(a),
            retain: false,
        };
        if !self.bus.publish(msg) {
            tracing::warn!(alert = %a.alert, "MQTT outbox full: alert not published");
        }
        for w in &self.webhooks {
            if wanted(&w.cfg.alerts, w.cfg.min_severity, a) && w.queue.push(a.clone()) {
                tracing::warn!(url = %redact_url(&w.cfg.url, true), "webhook queue full: oldest alert dropped");
            }
        }
        for x in &self.execs {
            if wanted(&x.cfg.alerts, x.cfg.min_severity, a) && x.queue.push(a.clone()) {
                tracing::warn!(command = %x.cfg.command.first().map(String::as_str).unwrap_or(""),
                    "alert command queue full: oldest alert dropped");
            }
        }
    }
}

/// Whether an alert whose attempt number `attempt` failed (with HTTP `status`, or none: no
/// answer) is given up. Ordinary alerts get `retries` more attempts; `node_down` and
/// `mass_failure` are tried until the receiver takes them (a receiver down for an hour still
/// hears of the deaths in it), unless it refused them for good (a 4xx but 408 and 429).
fn give_up(alert: &str, attempt: u32, retries: u32, status: Option<u16>) -> bool {
    let for_good = status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429);
    if crate::alerts::rules::VITAL.contains(&alert) && !for_good {
        return false;
    }
    attempt >= retries
}

async fn deliver(cfg: WebhookConfig, queue: Arc<Queue>) {
    let client = match reqwest::Client::builder().timeout(cfg.timeout.0).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %redact_url(&cfg.url, true), error = %e, "webhook client cannot be built; alerts to it are dropped");
            return;
        }
    };
    loop {
        let a = queue.peek().await;
        let body = match cfg.format {
            WebhookFormat::Json => encode(&a),
            WebhookFormat::Slack => encode(&serde_json::json!({ "text": slack_text(&a) })),
        };
        let mut delay = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            let mut req = client
                .post(&cfg.url)
                .header("content-type", "application/json")
                .body(body.clone());
            for (k, v) in &cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let status = match req.send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    tracing::warn!(url = %redact_url(&cfg.url, true), status = r.status().as_u16(), attempt,
                    alert = %a.alert, "webhook refused the alert");
                    Some(r.status().as_u16())
                }
                Err(e) => {
                    tracing::warn!(url = %redact_url(&cfg.url, true), error = %e, attempt, alert = %a.alert,
                    "webhook delivery failed");
                    None
                }
            };
            if give_up(&a.alert, attempt, cfg.retries, status) {
                tracing::error!(url = %redact_url(&cfg.url, true), alert = %a.alert, "alert dropped after retries");
                break;
            }
            if attempt == cfg.retries {
                tracing::error!(url = %redact_url(&cfg.url, true), alert = %a.alert, node = %a.node,
                    "webhook still failing: this alert is kept and tried until it is delivered (node_down and mass_failure are never given up)");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
            attempt = attempt.saturating_add(1);
        }
        queue.done(&a);
    }
}

/// Runs one exec hook's queued alerts, at most [`EXEC_CONCURRENCY`] at once.
async fn exec_worker(cfg: ExecConfig, queue: Arc<Queue>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(EXEC_CONCURRENCY));
    loop {
        let a = queue.pop().await;
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let cfg = cfg.clone();
        tokio::spawn(async move {
            run_exec(cfg, a).await;
            drop(permit);
        });
    }
}

async fn run_exec(x: ExecConfig, a: Alert) {
    let Some((program, args)) = x.command.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env_of(&a))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = %program, error = %e, "alert command could not start");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&encode(&a)).await;
    }
    match tokio::time::timeout(x.timeout.0, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {}
        Ok(Ok(out)) => tracing::warn!(command = %program, status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(), "alert command failed"),
        Ok(Err(e)) => tracing::warn!(command = %program, error = %e, "alert command failed"),
        Err(_) => tracing::warn!(command = %program, timeout = ?x.timeout.0,
            "alert command timed out and was killed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakmon_protocol::Severity;

    #[test]
    fn a_full_queue_never_drops_a_death_for_a_flood_of_others() {
        let mut q = VecDeque::new();
        q.push_back(alert("node_down", Severity::Critical));
        q.push_back(alert("mass_failure", Severity::Critical));
        for i in 0..500 {
            q.push_back(alert(
                &format!("container_unhealthy_{i}"),
                Severity::Critical,
            ));
            make_room(&mut q, 100, |a| a.alert.as_str());
        }
        assert_eq!(q.len(), 100);
        assert_eq!(q[0].alert, "node_down");
        assert_eq!(q[1].alert, "mass_failure");
        // the newest of the flood kept, the oldest gone
        assert_eq!(q[99].alert, "container_unhealthy_499");
        assert_eq!(q[2].alert, "container_unhealthy_402");
    }

    #[test]
    fn deaths_are_tried_until_delivered_and_the_rest_retries_times() {
        // no answer, or a server error: ordinary alerts give up after `retries`
        assert!(!give_up("disk_full", 2, 3, None));
        assert!(give_up("disk_full", 3, 3, None));
        assert!(give_up("disk_full", 3, 3, Some(503)));
        // deaths never, unless refused for good
        for attempt in [0, 3, 1_000] {
            assert!(!give_up("node_down", attempt, 3, None));
            assert!(!give_up("mass_failure", attempt, 3, Some(503)));
            assert!(!give_up("node_down", attempt, 3, Some(429)));
        }
        assert!(give_up("node_down", 3, 3, Some(400)));
        assert!(!give_up("node_down", 2, 3, Some(400)));
    }

    #[test]
    fn a_queue_of_deaths_alone_is_bounded_too() {
        let mut q = VecDeque::new();
        for _ in 0..1_000 {
            q.push_back(alert("node_down", Severity::Critical));
            make_room(&mut q, 10, |a| a.alert.as_str());
        }
        assert_eq!(q.len(), 40);
        // a lesser alert arriving then is the one that goes
        q.push_back(alert("cpu", Severity::Warning));
        assert_eq!(
            make_room(&mut q, 10, |a| a.alert.as_str()).map(|a| a.alert),
            Some("cpu".into())
        );
        assert_eq!(q.len(), 40);
    }

    fn alert(name: &str, sev: Severity) -> Alert {
        Alert {
            v: 1,
            alert: name.into(),
            state: AlertState::Firing,
            severity: sev,
            node: "n".into(),
            subject: None,
            value: Some(1.0),
            threshold: None,
            started: 0,
            ts: 0,
            summary: "s".into(),
            source: "rule".into(),
            gateway: "g".into(),
            repeat: false,
        }
    }

    #[test]
    fn filters_by_name_and_severity() {
        let a = alert("disk_full", Severity::Warning);
        assert!(wanted(&[], Severity::Info, &a));
        assert!(!wanted(&[], Severity::Critical, &a));
        assert!(wanted(&["disk_full".into()], Severity::Info, &a));
        assert!(!wanted(&["node_down".into()], Severity::Info, &a));
    }

    #[tokio::test]
    async fn a_webhooks_queue_survives_a_restart_until_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let j = || Some(Journal::new(dir.path().join(journal_name("http://h/x"))));
        let names = |q: &Queue| -> Vec<String> {
            q.items
                .lock()
                .unwrap()
                .iter()
                .map(|a| a.alert.clone())
                .collect()
        };
        let settle = || tokio::time::sleep(PERSIST_EVERY * 4);
        let q = Arc::new(Queue::new(10, j()));
        let saver = tokio::spawn(persist(q.clone()));
        q.push(alert("a", Severity::Info));
        q.push(alert("b", Severity::Info));
        settle().await;
        // "a" is being delivered when the gateway stops
        saver.abort();
        let q = Arc::new(Queue::new(10, j()));
        assert_eq!(names(&q), ["a", "b"]);
        let saver = tokio::spawn(persist(q.clone()));
        q.done(&alert("a", Severity::Info));
        // done with an alert that is no longer the oldest (dropped meanwhile): nothing
        q.done(&alert("zzz", Severity::Info));
        settle().await;
        saver.abort();
        assert_eq!(names(&Queue::new(10, j())), ["b"]);
        // another webhook's journal is another file
        assert_ne!(journal_name("http://h/x"), journal_name("http://h/y"));
    }

    #[test]
    fn bounded_queue_drops_the_oldest() {
        let q = Queue::new(2, None);
        assert!(!q.push(alert("a", Severity::Info)));
        assert!(!q.push(alert("b", Severity::Info)));
        assert!(q.push(alert("c", Severity::Info)));
        let names: Vec<String> = q
            .items
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.alert.clone())
            .collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn slack_text_and_env() {
        let a = alert("disk_full", Severity::Warning);
        assert_eq!(slack_text(&a), "[FIRING] [warning] s");
        let env = env_of(&a);
        assert!(env.contains(&("LEAKMON_ALERT", "disk_full".into())));
        assert!(env.contains(&("LEAKMON_ALERT_STATE", "firing".into())));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_nul_byte_in_a_name_does_not_stop_the_command() {
        let mut a = alert("container_unhealthy", Severity::Warning);
        a.subject = Some("db\0evil".into());
        let env = env_of(&a);
        assert!(env.contains(&("LEAKMON_ALERT_SUBJECT", "db\u{fffd}evil".into())));
        // and the command really starts with it
        let out = std::env::temp_dir().join(format!("lm-nul-{}.out", std::process::id()));
        let x = ExecConfig {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("printf %s \"$LEAKMON_ALERT_SUBJECT\" > {}", out.display()),
            ],
            alerts: vec![],
            min_severity: Severity::Info,
            timeout: leakmon_common::config::Dur::secs(10),
        };
        run_exec(x, a).await;
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        assert_eq!(got, "db\u{fffd}evil");
    }
}
