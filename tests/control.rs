//! The control loop on a real 5-node Swarm (tests/swarm/rig.sh: 3 managers, 2 workers, each
//! its own dockerd in its own network namespace): an agent on every node, a gateway beside
//! every manager, mosquitto and InfluxDB on the host side. Every assertion about the Swarm is
//! read back through the Swarm's own API (the docker CLI against a live manager).
//!
//! One test, scenarios in order (they share the Swarm): a worker's link cut; its link
//! restored; only an agent killed; a worker on a lossy link (nothing moved); the leader's link
//! cut and a worker death after it; dry run.

use std::time::Duration;

use leakmon_e2e::swarm::*;
use leakmon_e2e::{
    bin, http_get, now_ms, wait_for, Broker, Daemon, HttpReceiver, Service, Subscriber,
};
use serde_json::Value;

struct Fleet {
    _rig: Rig,
    broker: Broker,
    influx: Service,
    agents: Vec<Daemon>,
    gateways: Vec<Daemon>,
    events: Subscriber,
    status: Subscriber,
    /// A webhook receiver on the host side, subscribed to node_down alerts.
    hook: HttpReceiver,
}

impl Fleet {
    fn agent(&mut self, n: u32) -> &mut Daemon {
        &mut self.agents[(n - 1) as usize]
    }

    /// Events seen so far, as JSON.
    fn events(&self) -> Vec<Value> {
        events_of(&self.events)
    }

    fn wait_event(&self, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_event(&self.events, &self.gateways, secs, what, pred)
    }

    fn logs(&self) -> String {
        gateway_logs(&self.gateways)
    }

    /// The hostname of the active gateway, from the retained status.
    fn active(&self) -> Option<String> {
        self.status
            .all()
            .last()
            .map(|m| m.json()["hostname"].as_str().unwrap_or_default().to_owned())
    }
}

fn kind(e: &Value) -> &str {
    e["kind"].as_str().unwrap_or_default()
}
fn node_of(e: &Value) -> &str {
    e["node"].as_str().unwrap_or_default()
}

fn setup() -> Fleet {
    let rig_guard = Rig;
    let ls = rig(&["up", &MANAGERS.to_string(), &(NODES - MANAGERS).to_string()]);
    assert_eq!(ls.matches("Ready").count(), NODES as usize, "{ls}");
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
    assert_eq!(
        ls.matches("Reachable").count(),
        MANAGERS as usize - 1,
        "{ls}"
    );
    for n in 1..=NODES {
        assert!(ls.contains(&format!("node{n}")), "distinct hostnames: {ls}");
    }
    let broker = Broker::start_custom(|_| "listener {port} 0.0.0.0\nallow_anonymous true".into());
    let influx = Service::influxdb_on("0.0.0.0");
    let events = Subscriber::start(broker.port, "leakmon/v1/gateway/events", false);
    let status = Subscriber::start(broker.port, "leakmon/v1/gateway/status", false);

    create_services();
    wait_for(Duration::from_secs(90), || {
        (running_on(1, "web").len() == 5 && running_on(1, "db") == ["node4"]).then_some(())
    })
    .expect("web x5 and db on node4 running");
    let agents = start_agents(broker.port);
    let hook = HttpReceiver::start("172.30.0.1");
    let hook_cfg = format!(
        "[[alerts.webhook]]\nurl = \"{}\"\nalerts = [\"node_down\"]\n",
        hook.url("/alerts")
    );
    let gateways = start_gateways(broker.port, influx.port, Some(&hook_cfg));
    let f = Fleet {
        _rig: rig_guard,
        broker,
        influx,
        agents,
        gateways,
        events,
        status,
        hook,
    };
    assert!(bin("leakmon-gateway").exists());
    f
}

#[test]
fn control_loop_on_a_real_five_node_swarm() {
    let mut f = setup();

    // --- Leadership: exactly the gateway beside the Swarm leader is active.
    let leader = leader(1).expect("a leader");
    wait_for(Duration::from_secs(20), || {
        (f.active().as_deref() == Some(leader.as_str())).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "retained gateway status names {leader}: {:?}\n{}",
            f.active(),
            f.logs()
        )
    });
    let status = f.status.all().last().map(|m| m.json()).unwrap_or_default();
    assert_eq!(status["role"], "active");
    assert!(status["since"].as_i64().unwrap_or(0) > 0);
    assert!(f.status.all().last().map(|m| m.retain).unwrap_or(false) || f.status.all().len() == 1);
    let leader_n = node_number(&leader).expect("nodeN");
    // every agent is seen (birth through the gateways)
    wait_for(Duration::from_secs(30), || {
        let (_, body) = http_get(&format!("http://{}:9900/api/v1/nodes", addr(leader_n))).ok()?;
        (body.matches("\"state\":\"online\"").count() == NODES as usize).then_some(())
    })
    .unwrap_or_else(|| panic!("all agents online on the active gateway\n{}", f.logs()));
    // only the active gateway writes
    wait_for(Duration::from_secs(20), || {
        (gateway_metric(leader_n, "leakmon_gateway_points_written_total")? > 0.0).then_some(())
    })
    .expect("the active gateway writes points");
    for n in 1..=MANAGERS {
        let active = gateway_metric(n, "leakmon_gateway_active").expect("gateway metrics");
        let written =
            gateway_metric(n, "leakmon_gateway_points_written_total").expect("gateway metrics");
        if n == leader_n {
            assert_eq!(active, 1.0);
        } else {
            assert_eq!(
                (active, written),
                (0.0, 0.0),
                "gw{n} is standby and writes nothing"
            );
        }
    }

    // --- A worker's link cut: node_down, drained, web whole on live nodes, db on the standby.
    rig(&["cut", "4"]);
    let down = f.wait_event(30, "node_down node4", |e| {
        kind(e) == "node_down" && node_of(e) == "node4"
    });
    assert_eq!(down["gateway"], format!("gw{leader_n}"));
    assert_eq!(down["dry_run"], false);
    // Found by the failure detector (beats stopped, vantage points could not reach it), not
    // by the agent's Will, nor by Swarm, which takes 10 s or more.
    assert_eq!(
        down["details"]["reason"], "no beat, and no vantage point could reach it",
        "{down}"
    );
    let alert_for = |state: &'static str| {
        let hook = &f.hook;
        move || {
            hook.all()
                .into_iter()
                .map(|r| r.json())
                .find(|a| a["alert"] == "node_down" && a["node"] == "node4" && a["state"] == state)
        }
    };
    let fired = wait_for(Duration::from_secs(20), alert_for("firing"))
        .unwrap_or_else(|| panic!("webhook: node_down firing\n{}", f.logs()));
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["source"], "event");
    f.wait_event(30, "failover of db", |e| {
        kind(e) == "failover" && e["details"]["service"] == "db" && e["details"]["to"] == "node3"
    });
    wait_for(Duration::from_secs(30), || {
        (running_on(1, "db") == ["node3"]).then_some(())
    })
    .unwrap_or_else(|| panic!("db runs on the standby: {:?}", running_on(1, "db")));
    wait_for(Duration::from_secs(30), || {
        let on = running_on(1, "web");
        (on.iter().filter(|n| *n != "node4").count() >= 5).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "web at full strength on live nodes: {:?}",
            running_on(1, "web")
        )
    });
    // Swarm marks node4 down: the surge is settled, the node drained
    wait_for(Duration::from_secs(60), || {
        node_line(1, 4).starts_with("drain down").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "node4 drained by leakmon: {}\n{}",
            node_line(1, 4),
            f.logs()
        )
    });
    assert!(
        node_line(1, 4).split_whitespace().nth(2).is_some(),
        "leakmon's label on node4"
    );
    wait_for(Duration::from_secs(30), || {
        (replicas(1, "web") == "5").then_some(())
    })
    .unwrap_or_else(|| panic!("web settled back to 5 replicas: {}", replicas(1, "web")));
    wait_for(Duration::from_secs(20), || {
        let on = running_on(1, "web");
        (on.len() == 5 && !on.contains(&"node4".to_owned())).then_some(())
    })
    .unwrap_or_else(|| panic!("5 web tasks, none on node4: {:?}", running_on(1, "web")));
    let kinds: Vec<String> = f
        .events()
        .iter()
        .filter(|e| node_of(e) == "node4")
        .map(|e| kind(e).to_owned())
        .collect();
    for k in ["node_down", "drain", "surge", "failover", "settle"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let order = docker(
        1,
        &[
            "service",
            "inspect",
            "db",
            "--format",
            "{{.Spec.UpdateConfig.Order}}",
        ],
    );
    assert_eq!(
        order, "stop-first",
        "db's own update order restored once node4 is settled"
    );
    let db_labels = docker(
        1,
        &[
            "service",
            "inspect",
            "db",
            "--format",
            "{{json .Spec.Labels}}",
        ],
    );
    assert!(
        db_labels.contains("node.hostname==node4"),
        "original constraints kept: {db_labels}"
    );

    // --- Its link restored: node_up, reactivated after the delay; db stays on the standby.
    rig(&["restore", "4"]);
    f.wait_event(60, "node_up node4", |e| {
        kind(e) == "node_up" && node_of(e) == "node4"
    });
    let resolved = wait_for(Duration::from_secs(20), alert_for("resolved"))
        .unwrap_or_else(|| panic!("webhook: node_down resolved\n{}", f.logs()));
    assert_eq!(resolved["started"], fired["started"], "the same alert");
    assert_eq!(
        f.hook
            .all()
            .iter()
            .filter(|r| r.json()["node"] == "node4")
            .count(),
        2,
        "firing once, resolved once"
    );
    f.wait_event(40, "reactivate node4", |e| {
        kind(e) == "reactivate" && node_of(e) == "node4"
    });
    let line = node_line(1, 4);
    assert!(line.starts_with("active ready"), "{line}");
    assert_eq!(line.split_whitespace().count(), 2, "label removed: {line}");
    assert_eq!(
        running_on(1, "db"),
        ["node3"],
        "never fails back on its own"
    );

    // --- A Swarm task's container unhealthy: its service is force-updated, once.
    rig(&[
        "docker",
        "1",
        "service",
        "create",
        "--detach",
        "--name",
        "sick",
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--health-start-period",
        "0s",
        "leakmon-test/busybox",
        "sleep",
        "100000",
    ]);
    let forced = f.wait_event(60, "force_update of sick", |e| {
        kind(e) == "force_update" && e["details"]["service"] == "sick"
    });
    assert!(
        forced["details"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("unhealthy"),
        "{forced}"
    );
    let version = docker(
        1,
        &[
            "service",
            "inspect",
            "sick",
            "--format",
            "{{.Spec.TaskTemplate.ForceUpdate}}",
        ],
    );
    assert_eq!(version, "1", "force-updated through the Swarm API");
    std::thread::sleep(Duration::from_secs(8));
    let again = f
        .events()
        .iter()
        .filter(|e| kind(e) == "force_update" && e["details"]["service"] == "sick")
        .count();
    assert_eq!(again, 1, "rate-limited per service (force_update_every)");
    docker(1, &["service", "rm", "sick"]);

    // --- Only an agent killed: agent_lost, nothing drained.
    f.agent(2).kill9();
    f.wait_event(20, "agent_lost node2", |e| {
        kind(e) == "agent_lost" && node_of(e) == "node2"
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        node_line(1, 2).starts_with("active ready"),
        "{}",
        node_line(1, 2)
    );
    assert!(!f
        .events()
        .iter()
        .any(|e| node_of(e) == "node2" && kind(e) != "agent_lost"));
    f.agent(2).spawn();
    // node2's agent talks again (its samples are the hand-over check below)
    wait_for(Duration::from_secs(30), || {
        let (_, body) = http_get(&format!("http://{}:9900/api/v1/nodes", addr(leader_n))).ok()?;
        (body.matches("\"state\":\"online\"").count() == NODES as usize).then_some(())
    })
    .expect("node2's agent back online");
    std::thread::sleep(Duration::from_secs(8));

    // --- A live worker on a lossy link (Wi-Fi, LTE): never declared dead, nothing moved.
    // The detector sees beats go missing and asks vantage points, which still get through.
    let before_loss = f.events().len();
    let web_on_5 = || {
        running_on(1, "web")
            .iter()
            .filter(|n| *n == "node5")
            .count()
    };
    let web_before = web_on_5();
    for (share, dir, secs) in [("0.3", "both", 30), ("0.4", "in", 20), ("0.4", "out", 20)] {
        rig(&["loss", "5", share, dir]);
        std::thread::sleep(Duration::from_secs(secs));
    }
    rig(&["clear", "5"]);
    let accused: Vec<String> = f.events()[before_loss..]
        .iter()
        .filter(|e| node_of(e) == "node5" && kind(e) != "agent_lost" && kind(e) != "node_up")
        .map(|e| e.to_string())
        .collect();
    assert!(
        accused.is_empty(),
        "a lossy but live node5 was acted on:\n{}\n{}",
        accused.join("\n"),
        f.logs()
    );
    assert!(
        node_line(1, 5).starts_with("active ready"),
        "{}",
        node_line(1, 5)
    );
    assert_eq!(web_on_5(), web_before, "no task moved off node5");
    // Its agent talks again before the next scenario (a lost MQTT connection reconnects).
    wait_for(Duration::from_secs(30), || {
        let (_, body) = http_get(&format!("http://{}:9900/api/v1/nodes", addr(leader_n))).ok()?;
        (body.matches("\"state\":\"online\"").count() == NODES as usize).then_some(())
    })
    .expect("node5's agent online after the loss");

    // --- The leader's link cut: another gateway takes over and handles a worker's death.
    let before = f.events().len();
    let cut_at = now_ms();
    rig(&["cut", &leader_n.to_string()]);
    let via = (1..=MANAGERS)
        .find(|n| *n != leader_n)
        .expect("another manager");
    let took_over = f.wait_event(60, "gateway_active on another node", |e| {
        kind(e) == "gateway_active" && node_of(e) != leader
    });
    let new_gw = took_over["gateway"].as_str().unwrap_or_default().to_owned();
    wait_for(Duration::from_secs(10), || {
        (f.active().as_deref() != Some(leader.as_str())).then_some(())
    })
    .expect("retained status names the new active gateway");
    rig(&["cut", "5"]);
    let down5 = f.wait_event(40, "node_down node5", |e| {
        kind(e) == "node_down" && node_of(e) == "node5"
    });
    assert_eq!(down5["gateway"], new_gw);
    wait_for(Duration::from_secs(60), || {
        node_line(via, 5).starts_with("drain").then_some(())
    })
    .unwrap_or_else(|| panic!("node5 drained: {}\n{}", node_line(via, 5), f.logs()));
    wait_for(Duration::from_secs(40), || {
        let on = running_on(via, "web");
        (on.iter().filter(|n| *n != "node5" && **n != leader).count() >= 5).then_some(())
    })
    .unwrap_or_else(|| panic!("web whole on live nodes: {:?}", running_on(via, "web")));
    assert!(f.events()[before..]
        .iter()
        .all(|e| e["gateway"] == new_gw || kind(e) == "gateway_active"));

    // both come back; both reactivated
    rig(&["restore", &leader_n.to_string()]);
    rig(&["restore", "5"]);
    for n in [leader_n, 5] {
        wait_for(Duration::from_secs(90), || {
            node_line(via, n).starts_with("active ready").then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "node{n} reactivated: {}\n{}\n{}",
                node_line(via, n),
                node_diagnosis(via, n),
                f.logs()
            )
        });
    }
    // No point lost at the hand-over: node2's samples have no hole around the cut.
    std::thread::sleep(Duration::from_secs(5));
    // Every event is a leakmon_event point too, written once (by the active gateway).
    let r = f.influx.influx_query(
        "leakmon",
        "SELECT \"gateway\", \"message\" FROM leakmon_event WHERE \"kind\" = 'node_down' AND \"host\" = 'node5'",
    );
    let stored = r["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let published = f
        .events()
        .iter()
        .filter(|e| kind(e) == "node_down" && node_of(e) == "node5")
        .count();
    assert_eq!(stored.len(), published, "node_down points for node5: {r}");
    assert!(stored.iter().all(|p| p[1] == new_gw.as_str()), "{r}");
    // Telegraf's docker_swarm, from the active gateway: web's replicas as Swarm counts them
    let r = f.influx.influx_query(
        "leakmon",
        "SELECT last(\"tasks_desired\"), last(\"tasks_running\") FROM docker_swarm WHERE \"service_name\" = 'web' AND \"service_mode\" = 'replicated'",
    );
    let row = &r["results"][0]["series"][0]["values"][0];
    assert!(
        row[1].as_i64().is_some_and(|d| d >= 5) && row[2].as_i64().is_some_and(|n| n >= 1),
        "docker_swarm for web: {r}"
    );
    let q = format!(
        "SELECT load1 FROM system WHERE host = 'node2' AND time >= {}ms AND time <= {}ms",
        cut_at - 5_000,
        cut_at + 30_000
    );
    // The old active gateway writes what it took before the cut once its link is back, at its
    // next retry (its backoff grew during the cut, up to influxdb.max_retry_delay, 30 s): no
    // point may be lost, so the check waits that long for the hole to fill, no longer.
    let read = || {
        let r = f.influx.influx_query("leakmon", &q);
        let times: Vec<i64> = r["results"][0]["series"][0]["values"]
            .as_array()
            .map(|v| v.iter().filter_map(|p| p[0].as_i64()).collect())
            .unwrap_or_default();
        (r, times)
    };
    let whole = |t: &[i64]| t.len() >= 30 && t.windows(2).all(|w| w[1] - w[0] < 2_000);
    let _ = wait_for(Duration::from_secs(35), || whole(&read().1).then_some(()));
    let (r, times) = read();
    if times.len() < 30 {
        for (i, g) in f.gateways.iter().enumerate() {
            let _ = std::fs::write(format!("/tmp/lm-gw{}.log", i + 1), g.log());
        }
        let all = f.influx.influx_query(
            "leakmon",
            "SELECT count(load1) FROM system WHERE host = 'node2' GROUP BY time(5s)",
        );
        panic!(
            "node2's samples across the hand-over (cut at {cut_at}): {} ({r})\n{all}\n{}",
            times.len(),
            f.logs()
        );
    }
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    if worst >= 2_000 {
        let hole = times
            .windows(2)
            .find(|w| w[1] - w[0] == worst)
            .map(|w| w[0])
            .unwrap_or(0);
        for (i, g) in f.gateways.iter().enumerate() {
            let _ = std::fs::write(format!("/tmp/lm-gw{}.log", i + 1), g.log());
        }
        panic!(
            "a hole of {worst} ms in node2's samples across the hand-over, after the sample at {hole} ms (cut at {cut_at} ms; gateway logs in /tmp/lm-gw*.log)\n{}",
            f.logs()
        );
    }

    // --- Dry run: the same death is published, nothing is changed. Two agents were killed
    // just before it (node3's and node4's, their hosts up): three of five agents silent, but
    // two of them on hosts that answer, which is no sign that the gateway is the one cut off
    // (counting them, the gateway took itself for cut off and judged nobody).
    for (i, g) in f.gateways.iter_mut().enumerate() {
        let n = i as u32 + 1;
        g.terminate();
        g.set_config(&gateway_config(n, f.broker.port, f.influx.port, true));
        g.spawn();
    }
    let before = f.events().len();
    std::thread::sleep(Duration::from_secs(5));
    for n in [3, 4] {
        f.agent(n).kill9();
    }
    for n in ["node3", "node4"] {
        wait_for(Duration::from_secs(30), || {
            f.events()[before..]
                .iter()
                .find(|e| kind(e) == "agent_lost" && node_of(e) == n)
                .cloned()
        })
        .unwrap_or_else(|| panic!("agent_lost {n}\n{}", f.logs()));
    }
    rig(&["cut", "5"]);
    wait_for(Duration::from_secs(40), || {
        f.events()[before..]
            .iter()
            .find(|e| kind(e) == "node_down" && node_of(e) == "node5")
            .cloned()
    })
    .unwrap_or_else(|| panic!("dry-run node_down\n{}", f.logs()));
    wait_for(Duration::from_secs(30), || {
        f.events()[before..]
            .iter()
            .find(|e| kind(e) == "drain" && node_of(e) == "node5" && e["dry_run"] == true)
            .cloned()
    })
    .expect("the drain it would do, published as dry_run");
    wait_for(Duration::from_secs(40), || {
        node_line(via, 5).contains(" down").then_some(())
    })
    .expect("Swarm marks node5 down");
    std::thread::sleep(Duration::from_secs(3));
    let line = node_line(via, 5);
    assert!(
        line.starts_with("active down"),
        "dry run changes nothing: {line}"
    );
    assert_eq!(replicas(via, "web"), "5", "dry run adds no replicas");
    assert!(
        !f.events()[before..]
            .iter()
            .any(|e| kind(e) == "mass_failure"),
        "agents lost on hosts that answer made a mass_failure\n{}",
        f.logs()
    );
    rig(&["restore", "5"]);
    for n in [3, 4] {
        f.agent(n).spawn();
    }

    // --- The opt-in Swarm heartbeat: set by the gateway that becomes active.
    let heartbeat = || {
        docker(
            via,
            &[
                "info",
                "--format",
                "{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}",
            ],
        )
    };
    assert_eq!(heartbeat(), "5s", "Swarm's default, untouched so far");
    for (i, g) in f.gateways.iter_mut().enumerate() {
        let n = i as u32 + 1;
        g.terminate();
        let mut cfg = gateway_config(n, f.broker.port, f.influx.port, false);
        cfg.push_str("swarm_heartbeat = \"2s\"\n");
        g.set_config(&cfg);
        g.spawn();
    }
    wait_for(Duration::from_secs(20), || {
        (heartbeat() == "2s").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "reschedule.swarm_heartbeat applied: {}\n{}",
            heartbeat(),
            f.logs()
        )
    });
}
