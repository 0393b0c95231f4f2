//! Every kind of key set from the environment on the real binaries, with their real config
//! types: `--check-config` accepts it and `--print-config` shows it applied; a bad value exits
//! 2 naming the key and the variable. Needs only the built binaries (no services).

use std::path::Path;
use std::process::{Command, Output};

use leakmon_e2e::bin;

/// Runs `binary` with `args`, the config file `text` and exactly the `LEAKMON_*__` variables
/// in `env` (any inherited from the caller's environment are removed, so the outcome does not
/// depend on the shell the tests run from).
fn run(binary: &str, args: &[&str], text: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    let mut cmd = Command::new(bin(binary));
    cmd.args(args).arg("--config").arg(&path);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("LEAKMON_AGENT__") || k.starts_with("LEAKMON_GATEWAY__") {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.envs(env.iter().copied());
    let owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cmd.envs(leakmon_e2e::auth_env(binary, text, &owned));
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(binary).display()))
}

/// The printed config, after checking the run succeeded.
fn ok(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error message of a run that must exit 2.
fn refused(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// The value of `key` in `section` of printed TOML (`None` when absent), with arrays, which
/// the printer spreads over lines, joined onto one: `[2377, 7946]`.
fn value(toml: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = section.is_empty();
    let mut lines = toml.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') && !line.contains('=') {
            in_section = line == format!("[{section}]");
            continue;
        }
        let Some((k, v)) = line.split_once(" = ") else {
            continue;
        };
        if !in_section || k != key {
            continue;
        }
        if v == "[" {
            let items: Vec<&str> = lines
                .by_ref()
                .map(str::trim)
                .take_while(|l| *l != "]")
                .map(|l| l.trim_end_matches(','))
                .collect();
            return Some(format!("[{}]", items.join(", ")));
        }
        return Some(v.to_owned());
    }
    None
}

const GATEWAY_ENV: &[(&str, &str)] = &[
    // Option<usize> without a default.
    ("LEAKMON_GATEWAY__RESCHEDULE__MAX_DRAINED", "2"),
    // Vec<u16>, comma-separated.
    ("LEAKMON_GATEWAY__RESCHEDULE__PROBE_PORTS", "2377,7946,9100"),
    ("LEAKMON_GATEWAY__RESCHEDULE__DRY_RUN", "true"),
    // Option<Dur>.
    ("LEAKMON_GATEWAY__RESCHEDULE__SWARM_HEARTBEAT", "2s"),
    ("LEAKMON_GATEWAY__INFLUXDB__MAX_BUFFER_BYTES", "8MiB"),
    ("LEAKMON_GATEWAY__INFLUXDB__BATCH_SIZE", "1000"),
    ("LEAKMON_GATEWAY__LIVENESS__OFFLINE_AFTER", "20s"),
    // A numeric-looking string stays a string.
    ("LEAKMON_GATEWAY__NAME", "123"),
    // Enums, alone and in a list (TOML array syntax).
    ("LEAKMON_GATEWAY__LEADER__MODE", "standalone"),
    (
        "LEAKMON_GATEWAY__ALERTS__EVENTS",
        "[\"node_down\", \"failover\"]",
    ),
    // Option<String>.
    ("LEAKMON_GATEWAY__MQTT__SHARED_GROUP", "ingest"),
];

#[test]
fn gateway_keys_of_every_type_from_the_environment() {
    let out = ok(run(
        "leakmon-gateway",
        &["--check-config"],
        "",
        &[
            ("LEAKMON_GATEWAY__RESCHEDULE__MAX_DRAINED", "2"),
            ("LEAKMON_GATEWAY__RESCHEDULE__PROBE_PORTS", "2377,7946"),
            ("LEAKMON_GATEWAY__RESCHEDULE__DRY_RUN", "true"),
            ("LEAKMON_GATEWAY__INFLUXDB__MAX_BUFFER_BYTES", "8MiB"),
            ("LEAKMON_GATEWAY__LIVENESS__OFFLINE_AFTER", "20s"),
        ],
    ));
    assert!(out.contains("OK"), "{out}");

    let _ = ok(run("leakmon-gateway", &["--check-config"], "", GATEWAY_ENV));
    let printed = ok(run("leakmon-gateway", &["--print-config"], "", GATEWAY_ENV));
    for (section, key, want) in [
        ("", "name", "\"123\""),
        ("reschedule", "max_drained", "2"),
        ("reschedule", "probe_ports", "[2377, 7946, 9100]"),
        ("reschedule", "dry_run", "true"),
        ("reschedule", "swarm_heartbeat", "\"2s\""),
        ("influxdb", "max_buffer_bytes", "\"8MiB\""),
        ("influxdb", "batch_size", "1000"),
        ("liveness", "offline_after", "\"20s\""),
        ("leader", "mode", "\"standalone\""),
        ("alerts", "events", "[\"node_down\", \"failover\"]"),
        ("mqtt", "shared_group", "\"ingest\""),
    ] {
        assert_eq!(
            value(&printed, section, key).as_deref(),
            Some(want),
            "{section}.{key} in:\n{printed}"
        );
    }
}

#[test]
fn gateway_environment_over_the_file() {
    let file = "[reschedule]\nmax_drained = 3\nprobe_ports = [22]\n[alerts]\nevents = []\n";
    let printed = ok(run("leakmon-gateway", &["--print-config"], file, &[]));
    assert_eq!(
        value(&printed, "reschedule", "max_drained").as_deref(),
        Some("3")
    );
    let printed = ok(run(
        "leakmon-gateway",
        &["--print-config"],
        file,
        &[
            // Empty unsets an optional key the file sets.
            ("LEAKMON_GATEWAY__RESCHEDULE__MAX_DRAINED", ""),
            ("LEAKMON_GATEWAY__RESCHEDULE__PROBE_PORTS", "[2377]"),
            ("LEAKMON_GATEWAY__ALERTS__EVENTS", "agent_lost, flapping"),
        ],
    ));
    assert_eq!(value(&printed, "reschedule", "max_drained"), None);
    assert_eq!(
        value(&printed, "reschedule", "probe_ports").as_deref(),
        Some("[2377]")
    );
    assert_eq!(
        value(&printed, "alerts", "events").as_deref(),
        Some("[\"agent_lost\", \"flapping\"]")
    );
}

#[test]
fn gateway_bad_environment_values_name_the_key_and_the_variable() {
    for (var, value, key, says) in [
        (
            "LEAKMON_GATEWAY__RESCHEDULE__MAX_DRAINED",
            "many",
            "`reschedule.max_drained`",
            "is not a whole number",
        ),
        (
            "LEAKMON_GATEWAY__RESCHEDULE__PROBE_PORTS",
            "2377,swarm",
            "`reschedule.probe_ports[1]`",
            "is not a whole number",
        ),
        (
            "LEAKMON_GATEWAY__RESCHEDULE__PROBE_PORTS",
            "70000",
            "`reschedule.probe_ports[0]`",
            "expected u16",
        ),
        (
            "LEAKMON_GATEWAY__RESCHEDULE__DRY_RUN",
            "yes",
            "`reschedule.dry_run`",
            "write true or false",
        ),
        (
            "LEAKMON_GATEWAY__LEADER__MODE",
            "raft",
            "`leader.mode`",
            "unknown variant `raft`",
        ),
        (
            "LEAKMON_GATEWAY__INFLUXDB__MAX_BUFFER_BYTES",
            "8 parsecs",
            "`influxdb.max_buffer_bytes`",
            "unknown unit",
        ),
        (
            "LEAKMON_GATEWAY__RESCHEDULE__DRYRUN",
            "true",
            "`reschedule",
            "unknown field `dryrun`",
        ),
    ] {
        let err = refused(run(
            "leakmon-gateway",
            &["--check-config"],
            "",
            &[(var, value)],
        ));
        assert!(err.contains(key), "{var}={value}: {err}");
        assert!(
            err.contains(&format!("from ${var}:")),
            "{var}={value}: {err}"
        );
        assert!(err.contains(says), "{var}={value}: {err}");
    }
    // A semantic check on a value from the environment names the key and the variable.
    let err = refused(run(
        "leakmon-gateway",
        &["--check-config"],
        "",
        &[("LEAKMON_GATEWAY__RESCHEDULE__MAX_DRAINED", "0")],
    ));
    assert!(err.contains("`reschedule.max_drained`"), "{err}");
    assert!(
        err.contains("(set by $LEAKMON_GATEWAY__RESCHEDULE__MAX_DRAINED)"),
        "{err}"
    );
}

const AGENT_ENV: &[(&str, &str)] = &[
    ("LEAKMON_AGENT__NODE", "123"),
    ("LEAKMON_AGENT__INTERVAL", "2s"),
    ("LEAKMON_AGENT__DOCKER__ENABLED", "false"),
    ("LEAKMON_AGENT__DOCKER__STATS_CONCURRENCY", "8"),
    ("LEAKMON_AGENT__HOST__NET_IGNORE", "lo,docker0"),
    ("LEAKMON_AGENT__BUFFER__MAX_BYTES", "8MiB"),
    ("LEAKMON_AGENT__BUFFER__SPOOL_DIR", "/var/spool/leakmon"),
    ("LEAKMON_AGENT__MQTT__KEEP_ALIVE", "10s"),
    ("LEAKMON_AGENT__MQTT__USERNAME", "007"),
];

#[test]
fn agent_keys_from_the_environment() {
    let out = ok(run("leakmon-agent", &["--check-config"], "", AGENT_ENV));
    assert!(out.contains("OK"), "{out}");
    let printed = ok(run("leakmon-agent", &["--print-config"], "", AGENT_ENV));
    for (section, key, want) in [
        ("", "node", "\"123\""),
        ("", "interval", "\"2s\""),
        ("docker", "enabled", "false"),
        ("docker", "stats_concurrency", "8"),
        ("host", "net_ignore", "[\"lo\", \"docker0\"]"),
        ("buffer", "max_bytes", "\"8MiB\""),
        ("buffer", "spool_dir", "\"/var/spool/leakmon\""),
        ("mqtt", "keep_alive", "\"10s\""),
        ("mqtt", "username", "\"007\""),
    ] {
        assert_eq!(
            value(&printed, section, key).as_deref(),
            Some(want),
            "{section}.{key} in:\n{printed}"
        );
    }
    let err = refused(run(
        "leakmon-agent",
        &["--check-config"],
        "",
        &[("LEAKMON_AGENT__DOCKER__STATS_CONCURRENCY", "eight")],
    ));
    assert!(err.contains("`docker.stats_concurrency`"), "{err}");
    assert!(
        err.contains("from $LEAKMON_AGENT__DOCKER__STATS_CONCURRENCY:"),
        "{err}"
    );
}
