//! The command-line edge both binaries share: flags, logging set-up, the hostname, signals.

use std::io::IsTerminal;
use std::path::PathBuf;

/// The common flags: `--config PATH`, `--check-config`, `--print-config`.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub config: Option<PathBuf>,
    pub check: bool,
    pub print: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Args),
    /// `--version` or `--help` was answered; exit 0.
    Done,
}

/// Parses `args` (without the program name). `--version` and `--help` print and return
/// `Done`; anything unknown is an error carrying the usage text.
pub fn parse_args(
    name: &str,
    usage: &str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Parsed, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config" | "-c") => {
                out.config = Some(it.next().ok_or("--config needs a path")?.into());
            }
            Some(s) if s.starts_with("--config=") => {
                out.config = Some(s["--config=".len()..].into());
            }
            Some("--check-config") => out.check = true,
            Some("--print-config") => out.print = true,
            Some("--version" | "-V") => {
                println!("{name} {}", env!("CARGO_PKG_VERSION"));
                return Ok(Parsed::Done);
            }
            Some("--help" | "-h") => {
                println!("{usage}");
                return Ok(Parsed::Done);
            }
            _ => return Err(format!("unknown argument {a:?}\n\n{usage}")),
        }
    }
    Ok(Parsed::Run(out))
}

/// What a binary's config type offers to [`configure`].
pub struct Stage<'a, K> {
    pub name: &'a str,
    pub usage: &'a str,
    pub default_path: &'a str,
    /// Loads and checks the config at a path (`required`: the path was given explicitly).
    pub load: &'a dyn Fn(&std::path::Path, bool) -> Result<K, crate::config::ConfigError>,
    /// The effective config as TOML, secrets masked (`--print-config`).
    pub print: &'a dyn Fn(&K) -> String,
    /// The one-line answer of `--check-config`.
    pub ok: &'a dyn Fn(&K) -> String,
}

/// Parses the flags and loads the config, answering `--version`, `--help`, `--check-config`
/// and `--print-config` itself. `Err` carries the exit code (0 when a flag was answered, 2 for
/// bad flags or config); `Ok` is the checked config to run with.
pub fn configure<K>(
    stage: &Stage<'_, K>,
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<K, u8> {
    let args = match parse_args(stage.name, stage.usage, argv) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Done) => return Err(0),
        Err(e) => {
            eprintln!("{e}");
            return Err(2);
        }
    };
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(stage.default_path), false),
    };
    let checked = (stage.load)(&path, required).map_err(|e| {
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
    Ok(checked)
}

/// This machine's hostname (the default node and gateway name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
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
                .with_ansi(std::io::stderr().is_terminal()),
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

    fn parse(a: &[&str]) -> Result<Parsed, String> {
        parse_args("x", "usage", a.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn flags() {
        assert_eq!(
            parse(&["--config", "/a.toml", "--check-config"]).unwrap(),
            Parsed::Run(Args {
                config: Some("/a.toml".into()),
                check: true,
                print: false
            })
        );
        assert_eq!(
            parse(&["--config=/b.toml", "--print-config"]).unwrap(),
            Parsed::Run(Args {
                config: Some("/b.toml".into()),
                check: false,
                print: true
            })
        );
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["--bogus"]).unwrap_err().contains("usage"));
    }
}
