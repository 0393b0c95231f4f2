//! Alerts and telemetry consumers end to end, against a real mosquitto: a threshold rule that
//! fires only after its duration, a real HTTP receiver getting the leakmon JSON and the
//! Slack-compatible body, an exec hook writing its stdin to a file, an agent going offline and
//! coming back (firing, then resolved), and Home Assistant discovery (retained, valid,
//! re-published when Home Assistant announces itself). Node deaths and their webhooks are in
//! the control suite (tests/control.rs), which needs the multi-node Swarm.

use std::time::{Duration as S, Instant};

use leakmon_e2e::{
    bin, mosquitto_pub, mosquitto_pub_retained, wait_for, Agent, Broker, Gateway, HttpReceiver,
    Subscriber,
};

fn secs(n: u64) -> S {
    S::from_secs(n)
}

#[test]
fn alerts_reach_a_real_alertmanager_stay_firing_and_resolve() {
    // Debian's prometheus-alertmanager, notifying a receiver of the test's own. An agent goes
    // offline (agent_offline fires), stays away past four of leakmon's resends (Alertmanager
    // would have resolved it by itself had leakmon stopped re-sending), then comes back.
    let broker = Broker::start();
    let receiver = HttpReceiver::start("127.0.0.1");
    let am = leakmon_e2e::Service::alertmanager(&receiver.url("/am"));
    let node = "e2e-am";
    let gw = Gateway::start(&format!(
        "[leader]\nmode = \"standalone\"\n\
         [mqtt]\nurl = \"{url}\"\n\
         [liveness]\noffline_after = \"3s\"\n\
         [alerts]\nrule = []\n\
         [[alerts.alertmanager]]\nurl = \"{am}\"\nresend = \"2s\"\n",
        url = broker.url(),
        am = am.url(),
    ));
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let agent_cfg = format!(
        "node = \"{node}\"\ninterval = \"1s\"\n[mqtt]\nurl = \"{}\"\nkeep_alive = \"1s\"\n",
        broker.url()
    );
    let mut agent = Agent::start_in(agent_dir, &agent_cfg);
    std::thread::sleep(secs(3));
    agent.kill9();
    let active = || -> Vec<serde_json::Value> {
        leakmon_e2e::http_get(&format!("{}/api/v2/alerts?active=true", am.url()))
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "agent_offline" && a["labels"]["node"] == node)
            .collect()
    };
    let fired = wait_for(secs(30), || active().into_iter().next()).unwrap_or_else(|| {
        panic!(
            "agent_offline never reached Alertmanager; gateway log:\n{}",
            gw.log()
        )
    });
    assert_eq!(fired["labels"]["severity"], "critical", "{fired}");
    assert_eq!(fired["labels"]["source"], "liveness", "{fired}");
    assert!(fired["labels"].get("gateway").is_none(), "{fired}");
    assert_eq!(fired["status"]["state"], "active", "{fired}");
    assert!(
        fired["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains(node)),
        "{fired}"
    );
    // Alertmanager's own notification, grouped and routed by it
    let notified = |status: &str| {
        receiver.all().into_iter().any(|r| {
            let v = r.json();
            v["status"] == status
                && v["alerts"].as_array().is_some_and(|l| {
                    l.iter().any(|a| {
                        a["labels"]["alertname"] == "agent_offline" && a["labels"]["node"] == node
                    })
                })
        })
    };
    wait_for(secs(15), || notified("firing").then_some(()))
        .unwrap_or_else(|| panic!("Alertmanager sent no firing notification"));
    // past four resends (8 s) it is still active: leakmon keeps it alive
    std::thread::sleep(secs(12));
    assert_eq!(
        active().len(),
        1,
        "still firing after 12 s; gateway log:\n{}",
        gw.log()
    );
    assert!(
        !notified("resolved"),
        "resolved while the agent is still away"
    );
    // back: resolved, and Alertmanager says so
    agent.spawn();
    wait_for(secs(30), || notified("resolved").then_some(()))
        .unwrap_or_else(|| panic!("no resolved notification; gateway log:\n{}", gw.log()));
    assert!(active().is_empty(), "{:?}", active());
}

/// Runs the discovery messages through Home Assistant's own code (tests/ha/check_discovery.py
/// in the venv scripts/test makes): its topic pattern and schemas, and its template engine on
/// the node's real status, host and containers payloads.
fn check_with_home_assistant<'a>(
    states: &Subscriber,
    configs: impl Iterator<Item = &'a leakmon_e2e::Received>,
) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = format!("{root}/target/ha-venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: scripts/test installs Home Assistant there (scripts/lib.sh \
         ensure_ha_venv)"
    );
    // the latest real payload of each of the node's topics, from the second sample on (the
    // first host report has no CPU usage yet)
    let got = wait_for(secs(15), || {
        let mut latest = std::collections::BTreeMap::new();
        for m in states.all() {
            latest.insert(
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            );
        }
        let host = latest
            .iter()
            .any(|(t, p)| t.ends_with("/host") && p.contains("\"cpu\""));
        let containers = latest.keys().any(|t| t.ends_with("/containers"));
        (host && containers && latest.keys().any(|t| t.ends_with("/status"))).then_some(latest)
    })
    .expect("status, host and containers payloads of the node");
    // a machine without temperature sensors (a VM) has nothing for that sensor to show
    let no_temps = got.iter().any(|(t, p)| {
        t.ends_with("/host")
            && serde_json::from_str::<serde_json::Value>(p)
                .is_ok_and(|v| v["temps"].as_array().is_some_and(|a| a.is_empty()))
    });
    let may_be_unknown: Vec<&str> = if no_temps {
        vec!["temperature"]
    } else {
        vec![]
    };
    let doc = serde_json::json!({
        "prefix": "homeassistant",
        "configs": configs
            .map(|m| serde_json::json!({
                "topic": m.topic,
                "payload": String::from_utf8_lossy(&m.payload),
            }))
            .collect::<Vec<_>>(),
        "may_be_unknown": may_be_unknown,
        "states": got,
    });
    let mut child = std::process::Command::new(&python)
        .arg(format!("{root}/tests/ha/check_discovery.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run Home Assistant's checks");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(doc.to_string().as_bytes())
            .expect("write the messages");
    }
    let out = child.wait_with_output().expect("Home Assistant's checks");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "Home Assistant refuses or misreads a discovery message:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches(": ok").count(), 7, "{text}");
}

#[test]
fn rules_hooks_offline_alert_and_home_assistant_discovery() {
    let broker = Broker::start();
    let hook = HttpReceiver::start("127.0.0.1");
    let slack = HttpReceiver::start("127.0.0.1");
    let dir = tempfile::tempdir().expect("tempdir");
    let exec_out = dir.path().join("exec.jsonl");
    let node = "e2e-alerts";
    let alerts = Subscriber::start(broker.port, "leakmon/v1/alerts", false);
    let host = Subscriber::start(broker.port, &format!("leakmon/v1/nodes/{node}/host"), false);
    let states = Subscriber::start(broker.port, &format!("leakmon/v1/nodes/{node}/+"), false);
    let gw = Gateway::start(&format!(
        "[leader]\nmode = \"standalone\"\n\
         [mqtt]\nurl = \"{url}\"\n\
         [liveness]\noffline_after = \"3s\"\n\
         [homeassistant]\nenabled = true\n\
         [[alerts.rule]]\nname = \"memory_in_use\"\nmetric = \"mem_used_percent\"\nabove = 0\nfor = \"3s\"\nseverity = \"info\"\n\
         [[alerts.webhook]]\nurl = \"{hook}\"\nheaders = {{ Authorization = \"Bearer s3cret\" }}\n\
         [[alerts.webhook]]\nurl = \"{slack}\"\nformat = \"slack\"\nalerts = [\"agent_offline\"]\n\
         [[alerts.exec]]\ncommand = [\"sh\", \"-c\", \"cat >> {out}; echo >> {out}\"]\n",
        url = broker.url(),
        hook = hook.url("/hook"),
        slack = slack.url("/slack"),
        out = exec_out.display(),
    ));
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let agent_cfg = format!(
        "node = \"{node}\"\ninterval = \"1s\"\n[mqtt]\nurl = \"{}\"\nkeep_alive = \"1s\"\n",
        broker.url()
    );
    let mut agent = Agent::start_in(agent_dir, &agent_cfg);

    // --- A threshold rule fires only after its duration: on MQTT, the webhook and exec.
    let first_sample = wait_for(secs(20), || host.all().first().map(|m| m.at))
        .expect("the agent's first host report");
    let fired = alerts
        .wait_json("alerts", secs(20), |a| a["alert"] == "memory_in_use")
        .unwrap_or_else(|| panic!("no memory_in_use alert; log:\n{}", gw.log()));
    assert!(
        fired.at.duration_since(first_sample) >= secs(3) - S::from_millis(200),
        "fired {:?} after the first sample: before its 3 s",
        fired.at.duration_since(first_sample)
    );
    let a = fired.json();
    assert_eq!(a["state"], "firing");
    assert_eq!(a["severity"], "info");
    assert_eq!(a["node"], node);
    assert_eq!(a["source"], "rule");
    assert!(
        a["ts"].as_i64().unwrap_or(0) - a["started"].as_i64().unwrap_or(0) >= 2_900,
        "{a}"
    );
    for key in [
        "v", "alert", "state", "severity", "node", "started", "ts", "summary", "gateway", "repeat",
    ] {
        assert!(a.get(key).is_some(), "documented field {key} in {a}");
    }
    std::thread::sleep(secs(3));
    assert_eq!(
        alerts
            .all()
            .iter()
            .filter(|m| m.json()["alert"] == "memory_in_use")
            .count(),
        1,
        "fires once"
    );
    let got = wait_for(secs(15), || {
        hook.all()
            .into_iter()
            .find(|r| r.json()["alert"] == "memory_in_use")
    })
    .expect("the webhook got the alert");
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/hook");
    assert_eq!(got.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.json()["state"], "firing");
    let line = wait_for(secs(15), || {
        std::fs::read_to_string(&exec_out).ok().and_then(|s| {
            s.lines()
                .find(|l| l.contains("memory_in_use"))
                .map(str::to_owned)
        })
    })
    .expect("the exec hook wrote its stdin");
    let v: serde_json::Value = serde_json::from_str(&line).expect("exec stdin is the alert JSON");
    assert_eq!(v["alert"], "memory_in_use");
    assert!(
        slack.all().is_empty(),
        "the slack hook only wants agent_offline"
    );

    // --- Home Assistant discovery: retained, valid, one device with its sensors and its
    // connectivity binary sensor.
    let ha = Subscriber::start(broker.port, "homeassistant/+/leakmon_e2e-alerts/#", false);
    let all = wait_for(secs(15), || {
        let m = ha.all();
        (m.len() >= 7).then_some(m)
    })
    .unwrap_or_else(|| panic!("discovery configs; log:\n{}", gw.log()));
    let (connectivity, configs): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|m| m.topic.starts_with("homeassistant/binary_sensor/"));
    assert_eq!(connectivity.len(), 1, "one connectivity sensor");
    let c = connectivity[0].json();
    assert_eq!(
        connectivity[0].topic,
        "homeassistant/binary_sensor/leakmon_e2e-alerts/connectivity/config"
    );
    assert_eq!(c["device_class"], "connectivity");
    assert_eq!(c["state_topic"], format!("leakmon/v1/nodes/{node}/status"));
    assert_eq!(configs.len(), 6, "six sensors");
    for m in &configs {
        assert!(m.retain, "retained: {}", m.topic);
        assert!(
            m.topic
                .starts_with("homeassistant/sensor/leakmon_e2e-alerts/"),
            "{}",
            m.topic
        );
        assert!(m.topic.ends_with("/config"), "{}", m.topic);
        let c = m.json();
        // Home Assistant's MQTT sensor schema: these keys, these types.
        for key in [
            "name",
            "unique_id",
            "state_topic",
            "value_template",
            "availability_topic",
        ] {
            assert!(c[key].is_string(), "{key} in {c}");
        }
        assert_eq!(c["payload_available"], "online");
        assert_eq!(c["payload_not_available"], "offline");
        assert_eq!(
            c["availability_topic"],
            format!("leakmon/v1/nodes/{node}/status")
        );
        assert!(c["device"]["identifiers"].is_array());
        assert!(
            c["device"]["sw_version"].is_string(),
            "the agent's version: {c}"
        );
        assert_eq!(c["origin"]["name"], "leakmon-gateway");
        assert!(c["expire_after"].as_u64().is_some_and(|s| s >= 10), "{c}");
        let uid = c["unique_id"].as_str().unwrap_or_default();
        assert_eq!(c["default_entity_id"], format!("sensor.{uid}"));
        assert_eq!(c["object_id"], uid);
        assert!(c["state_topic"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("leakmon/v1/nodes/{node}/")));
    }
    let ids: std::collections::HashSet<String> = configs
        .iter()
        .map(|m| m.json()["unique_id"].to_string())
        .collect();
    assert_eq!(ids.len(), configs.len(), "unique ids");
    check_with_home_assistant(&states, connectivity.iter().chain(&configs));
    // Home Assistant restarts and announces itself: the configs come again.
    let before = ha.all().len();
    mosquitto_pub(broker.port, "homeassistant/status", b"online");
    wait_for(secs(10), || (ha.all().len() >= before + 7).then_some(()))
        .expect("discovery re-published on homeassistant/status online");

    // --- The agent dies: agent_offline fires (every hook), and resolves when it is back;
    // `leakmon-gateway events` tails it.
    let mut tail = std::process::Command::new(bin("leakmon-gateway"))
        .args(["events", "--url", &broker.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("leakmon-gateway events");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    if let Some(out) = tail.stdout.take() {
        let lines = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut v) = lines.lock() {
                    v.push(l);
                }
            }
        });
    }
    std::thread::sleep(secs(1));
    let t0 = Instant::now();
    agent.kill9();
    let off = alerts
        .wait_json("alerts", secs(20), |a| {
            a["alert"] == "agent_offline" && a["state"] == "firing"
        })
        .unwrap_or_else(|| panic!("no agent_offline alert; log:\n{}", gw.log()));
    assert_eq!(off.json()["severity"], "critical");
    assert!(off.at.duration_since(t0) < secs(10));
    let text = wait_for(secs(15), || {
        slack
            .all()
            .into_iter()
            .find_map(|r| r.json()["text"].as_str().map(str::to_owned))
    })
    .expect("the slack-format hook got agent_offline");
    assert!(text.contains("FIRING") && text.contains(node), "{text}");
    let dir = agent.into_dir();
    let agent2 = Agent::start_in(dir, &agent_cfg);
    alerts
        .wait_json("alerts", secs(20), |a| {
            a["alert"] == "agent_offline" && a["state"] == "resolved"
        })
        .unwrap_or_else(|| panic!("agent_offline not resolved; log:\n{}", gw.log()));
    wait_for(secs(15), || {
        slack.all().into_iter().find(|r| {
            r.json()["text"]
                .as_str()
                .is_some_and(|t| t.contains("RESOLVED"))
        })
    })
    .expect("resolved reached the hook");
    let tailed = wait_for(secs(10), || {
        let v = lines.lock().ok()?.clone();
        v.iter()
            .any(|l| l.contains("ALERT RESOLVED") && l.contains("agent_offline"))
            .then_some(v)
    })
    .expect("events tail printed the alerts");
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        tailed
            .iter()
            .any(|l| l.contains("ALERT FIRING critical agent_offline") && l.contains(node)),
        "{tailed:?}"
    );
    assert!(
        !tailed.iter().any(|l| l.contains('\x1b')),
        "no colour off a terminal"
    );

    // --- The node is forgotten (its retained status cleared): its entities are removed, so
    // a Home Assistant that connects afterwards finds none of them.
    drop(agent2);
    let before = ha.all().len();
    assert!(mosquitto_pub_retained(
        broker.port,
        &format!("leakmon/v1/nodes/{node}/status"),
        b""
    ));
    let removed = wait_for(secs(10), || {
        let m = ha.all();
        let empty: Vec<String> = m[before.min(m.len())..]
            .iter()
            .filter(|m| m.payload.is_empty())
            .map(|m| m.topic.clone())
            .collect();
        (empty.len() >= 7).then_some(empty)
    })
    .unwrap_or_else(|| panic!("no removal of the entities; log:\n{}", gw.log()));
    assert_eq!(removed.len(), 7, "{removed:?}");
    let late = Subscriber::start(broker.port, "homeassistant/#", false);
    std::thread::sleep(secs(2));
    assert!(
        late.all().is_empty(),
        "retained configs left: {:?}",
        late.all().iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
}
