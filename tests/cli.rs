//! End to end: the command lines of the real binaries, as an operator types them. Needs no
//! service: nothing here connects anywhere (every command either answers, checks a config or
//! refuses its arguments before doing anything).

use std::process::{Command, Output};

use leakmon_e2e::bin;

const AGENT_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.toml");
const GATEWAY_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml");

/// Runs a binary with `args`, with no LEAKMON_ variables of the caller's to change the answer.
fn run(name: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("LEAKMON_")) {
            cmd.env_remove(k);
        }
    }
    // the examples as an enrolled node and gateway have them
    cmd.envs(leakmon_e2e::auth_env(name, "", &[]));
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit code, stdout, stderr.
fn outcome(name: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(name, args);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn help_prints_usage_on_stdout_and_exits_0() {
    for (name, args, usage) in [
        ("leakmon-agent", &["--help"][..], "Usage: leakmon-agent"),
        ("leakmon-agent", &["-h"], "Usage: leakmon-agent"),
        ("leakmon-gateway", &["--help"], "Usage: leakmon-gateway"),
        (
            "leakmon-gateway",
            &["status", "--help"],
            "Usage: leakmon-gateway status",
        ),
        (
            "leakmon-gateway",
            &["status", "-h"],
            "Usage: leakmon-gateway status",
        ),
        (
            "leakmon-gateway",
            &["events", "--help"],
            "Usage: leakmon-gateway events",
        ),
    ] {
        let (code, out, err) = outcome(name, args);
        assert_eq!(code, Some(0), "{name} {args:?}: {err}");
        assert!(out.contains(usage), "{name} {args:?} stdout: {out}");
        assert!(err.is_empty(), "{name} {args:?} stderr: {err}");
    }
    // A subcommand's help is its own, not the gateway's.
    let (_, out, _) = outcome("leakmon-gateway", &["status", "--help"]);
    assert!(
        out.contains("--watch") && !out.contains("--check-config"),
        "{out}"
    );
}

#[test]
fn version_on_both_binaries() {
    for name in ["leakmon-agent", "leakmon-gateway"] {
        let (code, out, err) = outcome(name, &["--version"]);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert_eq!(out.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn config_with_equals_or_space_then_check_config() {
    for (name, path) in [
        ("leakmon-agent", AGENT_CONFIG),
        ("leakmon-gateway", GATEWAY_CONFIG),
    ] {
        let joined = format!("--config={path}");
        for args in [
            vec![joined.as_str(), "--check-config"],
            vec!["--check-config", "--config", path],
        ] {
            let (code, out, err) = outcome(name, &args);
            assert_eq!(code, Some(0), "{name} {args:?}: {err}");
            assert!(out.contains("configuration OK"), "{name} {args:?}: {out}");
        }
        // The flag really reads that path: a missing file named explicitly is an error.
        let (code, _, err) = outcome(
            name,
            &["--config=/nonexistent/leakmon.toml", "--check-config"],
        );
        assert_eq!(code, Some(2), "{name}: {err}");
    }
}

#[test]
fn unknown_flags_and_missing_values_exit_2_naming_the_flag() {
    for (name, args, named) in [
        ("leakmon-agent", &["--bogus"][..], "'--bogus'"),
        ("leakmon-agent", &["--config"], "'--config'"),
        ("leakmon-agent", &["--check-config=yes"], "'--check-config'"),
        ("leakmon-gateway", &["--bogus"], "'--bogus'"),
        ("leakmon-gateway", &["--config"], "'--config'"),
        ("leakmon-gateway", &["status", "--bogus"], "'--bogus'"),
        ("leakmon-gateway", &["status", "--url"], "'--url'"),
        ("leakmon-gateway", &["status", "--watch=soon"], "--watch"),
        ("leakmon-gateway", &["events", "--bogus"], "'--bogus'"),
        ("leakmon-gateway", &["events", "--url"], "'--url'"),
    ] {
        let (code, out, err) = outcome(name, args);
        assert_eq!(code, Some(2), "{name} {args:?}: {err}");
        assert!(err.contains(named), "{name} {args:?} stderr: {err}");
        assert!(err.contains("Usage: "), "the usage hint: {err}");
        assert!(out.is_empty(), "{name} {args:?} stdout: {out}");
    }
}
