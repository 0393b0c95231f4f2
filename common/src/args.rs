//! The one command-line parser of every leakmon command and subcommand, on `lexopt`.
//!
//! A command describes itself with a [`Command`] (name, usage text, whether it has
//! `--version`) and parses its own flags in a closure given to [`parse`], matching the
//! [`Arg`]s that [`Flags::next`] yields. What is the same everywhere lives here, so every
//! command behaves alike:
//!
//! - `--help`/`-h` prints the command's usage on stdout, exit 0 (and `--version`/`-V` its
//!   version, where the command has one);
//! - `--opt=value` and `--opt value` both work for every option taking a value;
//! - an unknown flag, a missing value or an invalid one is an error naming the flag, printed on
//!   stderr with the command's usage lines, exit 2.
//!
//! ```
//! use leakmon_common::args::{self, Arg, Command};
//! const CMD: Command = Command { name: "demo", usage: "Usage: demo [--url URL]", version: None };
//! let url = args::parse(&CMD, ["--url=http://x".into()], |f| {
//!     let mut url = String::from("http://default");
//!     while let Some(arg) = f.next()? {
//!         match arg {
//!             Arg::Long("url") => url = f.value()?,
//!             other => return Err(other.unexpected()),
//!         }
//!     }
//!     Ok(url)
//! });
//! assert_eq!(url.ok().as_deref(), Some("http://x"));
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;

pub use lexopt::{Arg, Error};

/// What a command tells the parser about itself.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// As typed, with the subcommand: `leakmon-gateway status`. Starts every error message.
    pub name: &'a str,
    /// The whole `--help` text. Its lines from `Usage:` to the first blank line are also the
    /// hint printed under an error.
    pub usage: &'a str,
    /// `Some(version)`: the command answers `--version`/`-V` with `<name> <version>`.
    pub version: Option<&'a str>,
}

impl<'a> Command<'a> {
    /// A subcommand: its name as typed and its `--help` text; no `--version` of its own.
    pub const fn subcommand(name: &'a str, usage: &'a str) -> Self {
        Command {
            name,
            usage,
            version: None,
        }
    }
}

/// Why there is nothing to run: a question was answered, or the command line is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// `--help` or `--version`: this text goes to stdout, exit 0.
    #[error("{0}")]
    Answered(String),
    /// A bad command line: this message (the flag named, then the usage lines) goes to stderr,
    /// exit 2.
    #[error("{0}")]
    Invalid(String),
}

impl Stop {
    /// 0 for an answer, 2 for a bad command line (the code a bad config exits with, too).
    pub fn exit_code(&self) -> u8 {
        match self {
            Stop::Answered(_) => 0,
            Stop::Invalid(_) => 2,
        }
    }

    /// The message of a refusal (exit 2); `None` for an answer.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            Stop::Answered(_) => None,
            Stop::Invalid(text) => Some(text),
        }
    }

    /// Prints the answer on stdout or the error on stderr; returns the exit code.
    pub fn finish(&self) -> u8 {
        match self {
            Stop::Answered(text) => println!("{text}"),
            Stop::Invalid(text) => eprintln!("{text}"),
        }
        self.exit_code()
    }
}

/// The flags of one command line, as the command's closure sees them.
pub struct Flags {
    parser: lexopt::Parser,
    /// `--help`/`--version` text once asked for; parsing ends there.
    answer: Option<String>,
    /// The flag last returned by [`Flags::next`], for naming it in value errors.
    last: String,
    usage: String,
    name: String,
    version: Option<String>,
}

impl Flags {
    /// The next flag or positional argument; `None` at the end, and also once `--help` or
    /// `--version` was seen (whatever follows is not looked at: the answer wins).
    // Not an `Iterator`: each `Arg` borrows the parser, as lexopt's own `next` does.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Arg<'_>>, Error> {
        let arg = self.parser.next()?;
        match arg {
            Some(Arg::Long("help") | Arg::Short('h')) => {
                self.answer = Some(self.usage.clone());
                Ok(None)
            }
            Some(Arg::Long("version") | Arg::Short('V')) if self.version.is_some() => {
                let v = self.version.as_deref().unwrap_or_default();
                self.answer = Some(format!("{} {v}", self.name));
                Ok(None)
            }
            Some(Arg::Long(l)) => {
                self.last = format!("--{l}");
                Ok(arg)
            }
            Some(Arg::Short(c)) => {
                self.last = format!("-{c}");
                Ok(arg)
            }
            _ => Ok(arg),
        }
    }

    /// The value of the flag just returned, `--flag=value` or `--flag value`, parsed as `T`;
    /// an error names the flag.
    pub fn value<T: FromStr>(&mut self) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.raw_value()?;
        self.parse_value(raw)
    }

    /// The value of the flag just returned, as a path (which need not be UTF-8).
    pub fn path(&mut self) -> Result<PathBuf, Error> {
        self.raw_value().map(PathBuf::from)
    }

    /// An optional value: `--flag=value` (which must parse), or `--flag value` when the next
    /// argument parses as `T` (otherwise it is left for [`Flags::next`]), or `None`.
    pub fn optional_value<T: FromStr>(&mut self) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        if let Some(v) = self.parser.optional_value() {
            return self.parse_value(v).map(Some);
        }
        let taken = self.parser.try_raw_args().and_then(|mut raw| {
            raw.next_if(|a| a.to_str().is_some_and(|s| s.parse::<T>().is_ok()))
        });
        taken.map(|v| self.parse_value(v)).transpose()
    }

    /// Every value we take is a path, a URL or a number of seconds, none of which starts with
    /// `-`: a separate value that does (`--config --check-config`) is a forgotten value, not a
    /// file named `--check-config`. `--flag=-x` still passes one on purpose.
    fn raw_value(&mut self) -> Result<OsString, Error> {
        if let Some(v) = self.parser.optional_value() {
            return Ok(v);
        }
        let next = self.parser.try_raw_args().and_then(|mut raw| {
            raw.next_if(|a| {
                let b = a.as_encoded_bytes();
                !(b.len() > 1 && b[0] == b'-')
            })
        });
        next.ok_or_else(|| Error::MissingValue {
            option: Some(self.last.clone()),
        })
    }

    fn parse_value<T: FromStr>(&self, raw: OsString) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        let flag = &self.last;
        let s = raw
            .to_str()
            .ok_or_else(|| format!("the value of {flag} is not valid UTF-8: {raw:?}"))?;
        s.parse()
            .map_err(|e| format!("invalid value {s:?} for {flag}: {e}").into())
    }
}

/// Parses `argv` (without the program name) with `body`, which loops over [`Flags::next`],
/// returning `Err(arg.unexpected())` for anything it does not know. `--help` and `--version`
/// are answered here and win over whatever `body` returns.
pub fn parse<T>(
    cmd: &Command<'_>,
    argv: impl IntoIterator<Item = OsString>,
    body: impl FnOnce(&mut Flags) -> Result<T, Error>,
) -> Result<T, Stop> {
    let mut flags = Flags {
        parser: lexopt::Parser::from_args(argv),
        answer: None,
        last: String::new(),
        usage: cmd.usage.to_owned(),
        name: cmd.name.to_owned(),
        version: cmd.version.map(str::to_owned),
    };
    let result = body(&mut flags);
    if let Some(text) = flags.answer {
        return Err(Stop::Answered(text));
    }
    result.map_err(|e| Stop::Invalid(invalid(cmd, &e)))
}

/// `<name>: <error>`, the usage lines, and where the rest is.
fn invalid(cmd: &Command<'_>, e: &Error) -> String {
    let lines: Vec<&str> = cmd
        .usage
        .lines()
        .skip_while(|l| !l.starts_with("Usage:"))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let hint = if lines.is_empty() {
        cmd.usage.to_owned()
    } else {
        lines.join("\n")
    };
    format!(
        "{name}: {e}\n\n{hint}\nRun '{name} --help' for more.",
        name = cmd.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const USAGE: &str = "demo: a test command\n\nUsage: demo [--url URL] [--watch [SECONDS]] \
                         [--json] [--config PATH]\n\n  --url URL   where";
    const CMD: Command = Command {
        name: "demo",
        usage: USAGE,
        version: Some("1.2.3"),
    };

    #[derive(Debug, Default, PartialEq)]
    struct Demo {
        url: Option<String>,
        watch: Option<Duration>,
        json: bool,
        config: Option<PathBuf>,
    }

    /// A positive number of seconds, as `--watch` takes.
    struct Secs(f64);
    impl FromStr for Secs {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            match s.parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Ok(Secs(f)),
                _ => Err("not a positive number of seconds".into()),
            }
        }
    }

    fn demo(cmd: &Command<'_>, a: &[&str]) -> Result<Demo, Stop> {
        parse(cmd, a.iter().map(OsString::from), |f| {
            let mut d = Demo::default();
            while let Some(arg) = f.next()? {
                match arg {
                    Arg::Long("url") => d.url = Some(f.value()?),
                    Arg::Long("watch") => {
                        let s = f.optional_value::<Secs>()?.map_or(2.0, |s| s.0);
                        d.watch = Some(Duration::from_secs_f64(s));
                    }
                    Arg::Long("json") => d.json = true,
                    Arg::Long("config") | Arg::Short('c') => d.config = Some(f.path()?),
                    other => return Err(other.unexpected()),
                }
            }
            Ok(d)
        })
    }

    fn run(a: &[&str]) -> Result<Demo, Stop> {
        demo(&CMD, a)
    }

    fn invalid(a: &[&str]) -> String {
        match run(a) {
            Err(Stop::Invalid(e)) => e,
            other => panic!("{a:?} should be invalid: {other:?}"),
        }
    }

    #[test]
    fn help_is_an_answer_with_the_usage_and_exit_0() {
        for a in [&["--help"][..], &["-h"], &["--json", "--help", "--bogus"]] {
            let stop = run(a).expect_err("help");
            assert!(matches!(&stop, Stop::Answered(t) if t == USAGE), "{stop:?}");
            assert_eq!(stop.exit_code(), 0);
        }
    }

    #[test]
    fn version_only_where_the_command_has_one() {
        let stop = run(&["--version"]).expect_err("version");
        assert!(matches!(&stop, Stop::Answered(t) if t == "demo 1.2.3"));
        assert!(matches!(run(&["-V"]), Err(Stop::Answered(_))));
        let plain = Command {
            version: None,
            ..CMD
        };
        let e = demo(&plain, &["--version"]).expect_err("no --version");
        assert!(
            matches!(&e, Stop::Invalid(e) if e.contains("'--version'")),
            "{e:?}"
        );
    }

    #[test]
    fn values_attached_or_separate() {
        let want = Demo {
            url: Some("http://x:1".into()),
            config: Some("/a b.toml".into()),
            ..Demo::default()
        };
        assert_eq!(
            run(&["--url=http://x:1", "--config=/a b.toml"]).expect("="),
            want
        );
        assert_eq!(
            run(&["--url", "http://x:1", "--config", "/a b.toml"]).expect("space"),
            want
        );
        assert_eq!(
            run(&["--url", "http://x:1", "-c", "/a b.toml"]).expect("short"),
            want
        );
        assert_eq!(
            run(&["--url", "http://x:1", "-c/a b.toml"]).expect("short attached"),
            want
        );
        // An explicit `=` passes a value that starts with a dash.
        assert_eq!(
            run(&["--config=-odd"]).expect("=-").config,
            Some("-odd".into())
        );
    }

    #[test]
    fn unknown_flags_and_arguments_are_named() {
        let e = invalid(&["--json", "--bogus"]);
        assert!(e.starts_with("demo: invalid option '--bogus'"), "{e}");
        assert!(
            e.contains("\n\nUsage: demo [--url URL]"),
            "usage lines: {e}"
        );
        assert!(
            !e.contains("where"),
            "only the usage lines, not the whole help: {e}"
        );
        assert!(e.contains("demo --help"), "{e}");
        assert!(invalid(&["-x"]).contains("'-x'"));
        assert!(invalid(&["stray"]).contains("\"stray\""));
        let e = invalid(&["--json=yes"]);
        assert!(e.contains("'--json'") && e.contains("yes"), "{e}");
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        assert!(invalid(&["--url"]).contains("missing argument for option '--url'"));
        assert!(invalid(&["-c"]).contains("'-c'"));
        // The next flag is not taken as the value.
        let e = invalid(&["--config", "--json"]);
        assert!(e.contains("missing argument for option '--config'"), "{e}");
        let e = invalid(&["--watch=soon"]);
        assert!(
            e.contains("invalid value \"soon\" for --watch: not a positive number"),
            "{e}"
        );
        assert!(invalid(&["--watch=inf"]).contains("--watch"));
    }

    #[test]
    fn optional_value_of_watch() {
        let w = |a: &[&str]| run(a).expect("parses").watch;
        assert_eq!(w(&["--watch"]), Some(Duration::from_secs(2)));
        assert_eq!(w(&["--watch", "5"]), Some(Duration::from_secs(5)));
        assert_eq!(w(&["--watch=0.5"]), Some(Duration::from_millis(500)));
        assert_eq!(w(&[]), None);
        // A following flag is not its value.
        let d = run(&["--watch", "--json"]).expect("parses");
        assert_eq!(d.watch, Some(Duration::from_secs(2)));
        assert!(d.json);
        // Nor is a word that is not a number: it is an argument nobody takes.
        assert!(invalid(&["--watch", "later"]).contains("\"later\""));
    }
}
