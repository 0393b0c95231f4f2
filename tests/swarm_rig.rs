//! The multi-node Swarm rig (tests/swarm/rig.sh) itself: five real engines in network
//! namespaces form one Swarm (3 managers, 2 workers), run a replicated service across the
//! nodes, and see a node go down when its cable is pulled. The control-loop suites build on it.

use std::process::Command;
use std::time::Duration;

use leakmon_e2e::wait_for;

const RIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/swarm/rig.sh");

fn rig(args: &[&str]) -> String {
    let out = Command::new(RIG).args(args).output().expect("run rig.sh");
    assert!(
        out.status.success(),
        "rig.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tears the rig down even when the test fails.
struct Rig;
impl Drop for Rig {
    fn drop(&mut self) {
        let _ = Command::new(RIG).arg("down").output();
    }
}

#[test]
fn five_node_swarm_comes_up_runs_a_service_and_sees_a_node_die() {
    let _rig = Rig;
    let ls = rig(&["up", "3", "2"]);
    assert_eq!(ls.matches("Ready").count(), 5, "{ls}");
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
    assert_eq!(ls.matches("Reachable").count(), 2, "{ls}");
    for n in 1..=5 {
        assert!(ls.contains(&format!("node{n}")), "distinct hostnames: {ls}");
    }

    rig(&[
        "docker",
        "1",
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "5",
        "--placement-pref",
        "spread=node.id",
        "leakmon-test/busybox",
        "sleep",
        "100000",
    ]);
    let running = |rig_out: &str| rig_out.lines().filter(|l| l.contains("Running")).count();
    let nodes = wait_for(Duration::from_secs(60), || {
        let ps = rig(&[
            "docker",
            "1",
            "service",
            "ps",
            "web",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ]);
        (running(&ps) == 5).then_some(ps)
    })
    .expect("5 replicas running");
    let distinct: std::collections::HashSet<&str> = nodes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        distinct.len() >= 4,
        "replicas spread over the nodes: {nodes}"
    );

    rig(&["cut", "5"]);
    wait_for(Duration::from_secs(60), || {
        rig(&[
            "docker",
            "1",
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}}",
        ])
        .contains("node5 Down")
        .then_some(())
    })
    .expect("Swarm marks the cut node down");
}
