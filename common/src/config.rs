//! Layered configuration: built-in defaults, then a TOML file, then environment variables.
//!
//! An environment variable `<PREFIX>__SECTION__KEY` (for example
//! `LEAKMON_AGENT__MQTT__URL`) overrides key `mqtt.url`. Values are taken as strings where the
//! default is a string or absent, and parsed as TOML (numbers, booleans, arrays) otherwise.
//!
//! Every error names the key it is about ([`ConfigError::key`]), so `--check-config` can tell
//! the operator exactly what to fix.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration problem, with the dotted key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", key_prefix(.key))]
pub struct ConfigError {
    /// Dotted path, e.g. `mqtt.keep_alive`; empty for file-level problems.
    pub key: String,
    pub message: String,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("config key `{key}`: ")
    }
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Loads `T` from defaults, the file at `path` (if it exists, or always if `required`) and the
/// environment variables in `env` that start with `env_prefix` + `__`.
pub fn load<T>(
    path: &Path,
    required: bool,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
        Err(e) => {
            return Err(ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            ))
        }
    };
    from_str_with_env(&text, &path.display().to_string(), env_prefix, env)
}

/// Like [`load`], from TOML text (`origin` names it in messages).
pub fn from_str_with_env<T>(
    text: &str,
    origin: &str,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        ConfigError::new(
            "",
            format!("{origin} is not valid TOML{at}: {}", e.message()),
        )
    })?;
    let defaults = toml::Table::try_from(T::default()).unwrap_or_default();
    let marker = format!("{env_prefix}__");
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&marker))
        .collect();
    overrides.sort();
    for (var, value) in overrides {
        let path: Vec<String> = var[marker.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        apply_override(&mut table, &defaults, &path, &value).map_err(|message| {
            ConfigError::new(path.join("."), format!("from ${var}: {message}"))
        })?;
    }
    let de = toml::Value::Table(table);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(key, e.inner().to_string())
    })
}

fn apply_override(
    table: &mut toml::Table,
    defaults: &toml::Table,
    path: &[String],
    raw: &str,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    if path.iter().any(|p| p.is_empty()) {
        return Err("empty key segment".into());
    }
    let mut t = table;
    let mut d = Some(defaults);
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section"))?;
        d = d.and_then(|d| d.get(p)).and_then(|v| v.as_table());
    }
    let default = d.and_then(|d| d.get(last));
    let value = match default {
        None | Some(toml::Value::String(_)) => toml::Value::String(raw.to_owned()),
        // A typed default: read the value as TOML (`9`, `true`, `["a"]`); what does not parse
        // stays a string, and the typed deserialisation names the key.
        Some(_) => format!("x = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("x"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
    };
    t.insert(last.clone(), value);
    Ok(())
}

/// A duration written as `"5s"`, `"250ms"`, `"1m 30s"` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write a number and a unit, e.g. \"5s\", \"250ms\", \"2m\""
            ))
        })
    }
}

/// A size in bytes, written as a number or as `"4MiB"`, `"512KiB"`, `"64MB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: it must start with a number"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" | "K" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" | "M" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" | "G" => 1 << 30,
            other => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {other:?}; use B, KiB, MiB, GiB, KB, MB or GB"
                ))
            }
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= size && b % size == 0 {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size: a number of bytes or a string like \"4MiB\"")
        })? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Renders a config as TOML for `--print-config`.
pub fn to_toml<T: Serialize>(cfg: &T) -> String {
    toml::to_string_pretty(cfg).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        name: Option<String>,
        interval: Dur,
        sub: Sub,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sub {
        url: String,
        size: ByteSize,
        n: u32,
        on: bool,
        list: Vec<String>,
        password: Option<String>,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                name: None,
                interval: Dur::secs(5),
                sub: Sub::default(),
            }
        }
    }
    impl Default for Sub {
        fn default() -> Self {
            Sub {
                url: "mqtt://x".into(),
                size: ByteSize::mib(4),
                n: 3,
                on: false,
                list: vec!["lo".into()],
                password: None,
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn parse(text: &str, e: &[(&str, &str)]) -> Result<Cfg, ConfigError> {
        from_str_with_env(text, "test.toml", "APP", env(e))
    }

    #[test]
    fn defaults_file_and_env_layer() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c, Cfg::default());
        let c = parse(
            "interval = \"1s\"\n[sub]\nsize = \"512KiB\"\nn = 7\n",
            &[
                ("APP__SUB__URL", "mqtts://broker:8883"),
                ("APP__SUB__N", "9"),
                ("APP__SUB__ON", "true"),
                ("APP__SUB__LIST", "[\"a\", \"b\"]"),
                ("APP__SUB__PASSWORD", "1234"),
                ("APP__NAME", "edge-01"),
                ("OTHER__SUB__N", "1"),
            ],
        )
        .unwrap();
        assert_eq!(c.interval, Dur::secs(1));
        assert_eq!(c.sub.size, ByteSize::kib(512));
        assert_eq!(c.sub.n, 9);
        assert!(c.sub.on);
        assert_eq!(c.sub.url, "mqtts://broker:8883");
        assert_eq!(c.sub.list, vec!["a", "b"]);
        assert_eq!(c.sub.password.as_deref(), Some("1234"));
        assert_eq!(c.name.as_deref(), Some("edge-01"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("interval = \"soon\"", &[]).unwrap_err();
        assert_eq!(e.key, "interval");
        assert!(e.message.contains("e.g. \"5s\""), "{e}");
        assert!(e.to_string().starts_with("config key `interval`"));

        let e = parse("[sub]\nn = \"many\"", &[]).unwrap_err();
        assert_eq!(e.key, "sub.n");

        let e = parse("[sub]\nurll = \"x\"", &[]).unwrap_err();
        assert!(e.key.starts_with("sub"), "{e:?}");
        assert!(e.message.contains("unknown field `urll`"), "{e}");
        assert!(e.message.contains("`url`"), "lists valid keys: {e}");

        let e = parse("", &[("APP__SUB__SIZE", "4 parsecs")]).unwrap_err();
        assert_eq!(e.key, "sub.size");
        assert!(e.message.contains("unknown unit"), "{e}");

        let e = parse("[sub\n", &[]).unwrap_err();
        assert!(e.message.contains("not valid TOML (line 1)"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("4MiB").unwrap(), ByteSize(4 << 20));
        assert_eq!(ByteSize::parse("64MB").unwrap(), ByteSize(64_000_000));
        assert_eq!(ByteSize::parse("1.5KiB").unwrap(), ByteSize(1536));
        assert_eq!(ByteSize::parse("100").unwrap(), ByteSize(100));
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(ByteSize::mib(4).to_string(), "4MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn print_round_trips() {
        let c = Cfg::default();
        let text = to_toml(&c);
        assert_eq!(parse(&text, &[]).unwrap(), c);
    }
}
