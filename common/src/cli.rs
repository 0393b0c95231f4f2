//! The command-line edge both binaries share: flags, logging set-up, the hostname, signals.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::args::{self, Arg, Command, Stop};

/// The common flags: `--config PATH`, `--check-config`, `--print-config`, and the switches a
/// binary adds ([`Stage::switches`]) that were given.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub config: Option<PathBuf>,
    pub check: bool,
    pub print: bool,
    pub switches: Vec<&'static str>,
}

/// Parses `args` (without the program name) with the shared parser ([`crate::args`]):
/// `--version` and `--help` come back as [`Stop::Answered`], anything wrong as
/// [`Stop::Invalid`] naming the flag.
pub fn parse_args(
    name: &str,
    usage: &str,
    switches: &[&'static str],
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Args, Stop> {
    let cmd = Command {
        name,
        usage,
        // Every crate of the workspace shares one version, so common's is the binary's.
        version: Some(env!("CARGO_PKG_VERSION")),
    };
    args::parse(&cmd, argv, |f| {
        let mut out = Args::default();
        while let Some(arg) = f.next()? {
            match arg {
                Arg::Long("config") | Arg::Short('c') => out.config = Some(f.path()?),
                Arg::Long("check-config") => out.check = true,
                Arg::Long("print-config") => out.print = true,
                Arg::Long(s) if switches.contains(&s) => {
                    if let Some(k) = switches.iter().find(|k| **k == s) {
                        out.switches.push(k);
                    }
                }
                other => return Err(other.unexpected()),
            }
        }
        Ok(out)
    })
}

/// What a binary's config type offers to [`configure`].
pub struct Stage<'a, K> {
    pub name: &'a str,
    pub usage: &'a str,
    pub default_path: &'a str,
    /// The environment prefix of the config's keys (`LEAKMON_AGENT`).
    pub env_prefix: &'a str,
    /// Loads and checks the config at a path (`required`: the path was given explicitly).
    pub load: &'a dyn Fn(&std::path::Path, bool) -> Result<K, crate::config::ConfigError>,
    /// The effective config as TOML, secrets masked (`--print-config`).
    pub print: &'a dyn Fn(&K) -> String,
    /// The one-line answer of `--check-config`.
    pub ok: &'a dyn Fn(&K) -> String,
    /// Long flags without a value this binary adds (`--once`).
    pub switches: &'a [&'static str],
}

/// Parses the flags and loads the config, answering `--version`, `--help`, `--check-config`
/// and `--print-config` itself. `Err` carries the exit code (0 when a flag was answered, 2 for
/// bad flags or config); `Ok` is the checked config to run with and the switches given.
pub fn configure<K>(
    stage: &Stage<'_, K>,
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(K, Vec<&'static str>), u8> {
    let args =
        parse_args(stage.name, stage.usage, stage.switches, argv).map_err(|stop| stop.finish())?;
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(stage.default_path), false),
    };
    let checked = (stage.load)(&path, required).map_err(|e| {
        let e = e.blame_env(stage.env_prefix, &crate::config::process_env());
        eprintln!("{}: invalid configuration: {e}", stage.name);
        2u8
    })?;
    if args.print {
        print!("{}", (stage.print)(&checked));
        return Err(0);
    }
    if args.check {
        println!("{}", (stage.ok)(&checked));
        return Err(0);
    }
    Ok((checked, args.switches))
}

/// This machine's hostname (the default node and gateway name).
/// Untrusted text (a node or container name, a message from the network) made safe to print
/// on a terminal: control characters (escape sequences, newlines, NUL) and the Unicode
/// controls that reorder text are shown escaped (`\u{1b}`), never interpreted.
pub fn printable(s: &str) -> String {
    let hostile = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(hostile) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if hostile(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether to colour output on a stream: only a terminal, and never with `NO_COLOR` set to
/// anything but the empty string (no-color.org).
pub fn color(is_terminal: bool) -> bool {
    color_with(is_terminal, std::env::var_os("NO_COLOR"))
}

fn color_with(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logging to stderr; `LEAKMON_LOG` is a level or a `target=level` list such as
/// `info,leakmon_agent::publish=debug` (parsed without a regex engine, to stay small).
pub fn init_logging(name: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("LEAKMON_LOG").unwrap_or_default();
    let filter = if spec.trim().is_empty() {
        // The gateway's embedded broker logs every connection at info; keep it quiet unless
        // asked for (LEAKMON_LOG=info,rumqttd=info).
        Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("rumqttd", LevelFilter::OFF)
    } else {
        spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("{name}: ignoring LEAKMON_LOG={spec:?} ({e}); logging at info");
            Targets::new().with_default(LevelFilter::INFO)
        })
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(color(std::io::stderr().is_terminal())),
        )
        .with(filter)
        .init();
}

/// Runs `fut` on a current-thread tokio runtime (with at most `max_blocking` blocking
/// threads, if given) and turns its outcome into the process exit code: an error is logged
/// with its whole chain and exits 1.
pub fn run_async<E: std::fmt::Display>(
    name: &str,
    max_blocking: Option<usize>,
    fut: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    if let Some(n) = max_blocking {
        b.max_blocking_threads(n);
    }
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Feeds the systemd watchdog every `every` while `progress` moves: the samplers report every
/// `interval`, so no progress for `interval` plus one watchdog period means the process is
/// hung, and the missing pings let systemd restart it. (A runtime that is stuck altogether
/// never runs this task: no pings either.)
pub async fn watchdog(
    notify: std::sync::Arc<crate::notify::Notify>,
    every: std::time::Duration,
    interval: std::time::Duration,
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last = progress.load(Relaxed);
    let mut moved_at = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = progress.load(Relaxed);
        if now != last {
            last = now;
            moved_at = tokio::time::Instant::now();
        }
        if moved_at.elapsed() <= interval + every * 2 {
            notify.watchdog();
        } else {
            tracing::error!(
                stalled_s = moved_at.elapsed().as_secs(),
                "no progress: not feeding the systemd watchdog"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_drive_the_terminal() {
        assert_eq!(printable("edge-01"), "edge-01");
        assert_eq!(printable("héllo wörld"), "héllo wörld");
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ny\0"), "x\\u{a}y\\u{0}");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
    }

    #[test]
    fn no_color_turns_colour_off_unless_empty() {
        assert!(color_with(true, None));
        assert!(!color_with(false, None));
        assert!(!color_with(true, Some("1".into())));
        assert!(color_with(true, Some("".into())), "empty counts as unset");
    }

    fn parse(a: &[&str]) -> Result<Args, Stop> {
        parse_args(
            "x",
            "Usage: x [--config PATH]",
            &["once"],
            a.iter().map(std::ffi::OsString::from),
        )
    }

    #[test]
    fn flags() {
        let want = |config: &str, check, print| Args {
            config: Some(config.into()),
            check,
            print,
            switches: Vec::new(),
        };
        assert_eq!(
            parse(&["--config", "/a.toml", "--check-config"]).expect("space"),
            want("/a.toml", true, false)
        );
        assert_eq!(
            parse(&["--config=/b.toml", "--print-config"]).expect("="),
            want("/b.toml", false, true)
        );
        assert_eq!(
            parse(&["-c", "/c.toml"]).expect("short"),
            want("/c.toml", false, false)
        );
        assert_eq!(parse(&[]).expect("none"), Args::default());
        assert_eq!(parse(&["--once"]).expect("switch").switches, ["once"]);
        assert!(
            parse(&["--twice"]).is_err(),
            "only the binary's own switches"
        );
    }

    #[test]
    fn answers_and_errors() {
        let v = parse(&["--version"]).expect_err("version");
        assert_eq!(v.to_string(), format!("x {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(v.exit_code(), 0);
        let h = parse(&["--check-config", "-h"]).expect_err("help");
        assert_eq!(h.to_string(), "Usage: x [--config PATH]");
        assert_eq!(h.exit_code(), 0);
        let e = parse(&["--config"]).expect_err("missing");
        assert!(e.to_string().contains("'--config'"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["--bogus"]).expect_err("unknown");
        assert!(
            e.to_string().starts_with("x: invalid option '--bogus'"),
            "{e}"
        );
        assert!(e.to_string().contains("Usage: x"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["--check-config=yes"]).expect_err("flag with a value");
        assert!(e.to_string().contains("'--check-config'"), "{e}");
    }
}
