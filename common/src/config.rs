//! Layered configuration: built-in defaults, then a TOML file, then environment variables.
//!
//! An environment variable `<PREFIX>__SECTION__KEY` (for example
//! `LEAKMON_AGENT__MQTT__URL`) overrides key `mqtt.url`. Its text goes into the TOML tree as
//! it is, and is typed by the key it lands on while the config is deserialized (`EnvText`):
//! it becomes a number, a boolean, a list or an absent option only when the key's type asks
//! for one. Typing by the key rather than by the text keeps a node named `123` a string, and
//! typing by the key rather than by its default lets an `Option<usize>` without a default take
//! `2`.
//!
//! Every error names the key it is about ([`ConfigError::key`]) and, when an environment
//! variable set it, the variable, so `--check-config` can tell the operator exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
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

/// The process environment as text. A variable that is not UTF-8 is read lossily rather than
/// panicking (`std::env::vars` would): a key set that way then fails its own type check.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// [`load`] with this process's environment.
pub fn load_with_process_env<T: DeserializeOwned>(
    path: &Path,
    required: bool,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    load(path, required, env_prefix, process_env())
}

/// The variable that sets `key` (`mqtt.url`, `alerts.webhook[0].url` -> the list's variable).
pub fn variable_for(env_prefix: &str, key: &str) -> String {
    let key = key.split('[').next().unwrap_or(key);
    let mut var = env_prefix.to_owned();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        var.push_str("__");
        var.push_str(&part.to_ascii_uppercase());
    }
    var
}

impl ConfigError {
    /// A check that refused a value (after loading) names the variable when one set the key,
    /// so an operator looks in the environment and not only in the file.
    pub fn blame_env(mut self, env_prefix: &str, env: &[(String, String)]) -> Self {
        if self.key.is_empty() {
            return self;
        }
        let var = variable_for(env_prefix, &self.key);
        if env.iter().any(|(k, _)| *k == var) && !self.message.contains(&format!("${var}")) {
            self.message = format!("{} (set by ${var})", self.message);
        }
        self
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
    T: DeserializeOwned,
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
    T: DeserializeOwned,
{
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        ConfigError::new(
            "",
            format!("{origin} is not valid TOML{at}: {}", e.message()),
        )
    })?;
    let marker = format!("{env_prefix}__");
    let mut overrides: Vec<(String, Vec<String>, String)> = env
        .into_iter()
        .filter_map(|(var, value)| {
            let path = var
                .strip_prefix(&marker)?
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            Some((var, path, value))
        })
        .collect();
    // Sorted by key, so the outcome does not depend on the environment's order, and a variable
    // setting a whole table (`APP__SUB`) comes before one reaching into it (`APP__SUB__N`),
    // which is then reported as the conflict it is.
    overrides.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    let mut root: BTreeMap<String, Node> =
        table.into_iter().map(|(k, v)| (k, Node::Toml(v))).collect();
    // (dotted key, variable) of every key an override set and every table it created, to
    // name the variable in errors.
    let mut sources: Vec<(String, String)> = Vec::new();
    for (var, path, value) in overrides {
        overlay(&mut root, &path, value, &var, &mut sources).map_err(|message| {
            ConfigError::new(path.join("."), format!("from ${var}: {message}"))
        })?;
    }
    serde_path_to_error::deserialize(Node::Table(root)).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        // `message()`, not `to_string()`, which adds a line break.
        let message = e.inner().message().to_owned();
        match set_by(&sources, &key, &message) {
            Some(var) => ConfigError::new(key, format!("from ${var}: {message}")),
            None => ConfigError::new(key, message),
        }
    })
}

/// Puts the text of variable `var` at `path`, opening up the file's tables on the way so the
/// file's other keys in them stay, and records in `sources` what it set or created.
fn overlay(
    root: &mut BTreeMap<String, Node>,
    path: &[String],
    text: String,
    var: &str,
    sources: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    if path.iter().any(|p| p.is_empty()) {
        return Err("empty key segment: separate the levels with exactly two underscores".into());
    }
    let who = |sources: &[(String, String)], at: &str| {
        sources
            .iter()
            .find(|(k, _)| k == at)
            .map_or("another variable".to_owned(), |(_, v)| format!("${v}"))
    };
    let mut table = root;
    for (i, p) in parents.iter().enumerate() {
        let at = path[..=i].join(".");
        let node = table.entry(p.clone()).or_insert_with(|| {
            sources.push((at.clone(), var.to_owned()));
            Node::Table(BTreeMap::new())
        });
        if let Node::Toml(toml::Value::Table(file)) = node {
            let opened = std::mem::take(file)
                .into_iter()
                .map(|(k, v)| (k, Node::Toml(v)))
                .collect();
            *node = Node::Table(opened);
        }
        table = match node {
            Node::Table(t) => t,
            Node::Env(_) => {
                return Err(format!(
                    "`{at}` is already set whole by {}; set it whole or key by key, not both",
                    who(sources, &at)
                ))
            }
            Node::Toml(_) => {
                return Err(format!(
                    "`{at}` is a value in the config file, not a table, so it has no keys"
                ))
            }
        };
    }
    let key = path.join(".");
    if let Some(Node::Env(_)) = table.get(last) {
        // The same key in two spellings (`APP__N` and `APP__n`).
        return Err(format!(
            "`{key}` is also set by {}; set it once",
            who(sources, &key)
        ));
    }
    table.insert(last.clone(), Node::Env(EnvText(text)));
    sources.push((key, var.to_owned()));
    Ok(())
}

/// The variable behind an error at `key`: the one that set `key`, a value `key` lies in or a
/// table it created at `key`, or the one that named an unknown key under `key`.
fn set_by<'a>(sources: &'a [(String, String)], key: &str, message: &str) -> Option<&'a str> {
    sources
        .iter()
        .find(|(k, _)| {
            let inside = key
                .strip_prefix(k.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
            let (parent, last) = k.rsplit_once('.').unwrap_or(("", k));
            let unknown = parent == key && message.contains(&format!("unknown field `{last}`"));
            inside || unknown
        })
        .map(|(_, var)| var.as_str())
}

type DeError = toml::de::Error;

/// The tree that is deserialized: the file's values as TOML typed them, environment text where
/// a variable set a key. Only the tables on the way to an environment key are opened up; the
/// rest of the file stays `toml::Value` and is deserialized by toml itself, so the file's
/// typing is exactly TOML's (`n = "9"` in a file is still an error for a number).
enum Node {
    Toml(toml::Value),
    Table(BTreeMap<String, Node>),
    Env(EnvText),
}

impl IntoDeserializer<'_, DeError> for Node {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// Each `deserialize_*` of [`Node`] hands the request to the node's own kind.
macro_rules! dispatch {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, DeError> {
            match self {
                Node::Toml(v) => v.$method($($arg,)* visitor),
                Node::Table(t) => TableDe(t).$method($($arg,)* visitor),
                Node::Env(e) => e.$method($($arg,)* visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Node {
    type Error = DeError;
    dispatch! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }
}

/// A table an environment variable reaches into: a map of nodes.
struct TableDe(BTreeMap<String, Node>);

impl<'de> Deserializer<'de> for TableDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let mut map = MapDeserializer::<_, DeError>::new(self.0.into_iter());
        let value = visitor.visit_map(&mut map)?;
        map.end()?;
        Ok(value)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The text of an environment variable, which becomes whatever the key's type asks for: a
/// number, a boolean, a list (`[1, 2]` in TOML syntax, or `1,2`), an absent option (empty
/// text), an enum variant, a table in TOML inline syntax (`{ a = 1 }`); anything else gets the
/// text itself, so strings, durations, sizes and paths parse as they do from the file.
struct EnvText(String);

impl IntoDeserializer<'_, DeError> for EnvText {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// What `visitor` wanted, for messages (`usize`, `a boolean`, ...).
fn expected<'de, V: Visitor<'de>>(visitor: &V) -> String {
    struct Exp<'a, V>(&'a V);
    impl<'de, V: Visitor<'de>> fmt::Display for Exp<'_, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
    }
    Exp(visitor).to_string()
}

/// One TOML value written out as text (`[1, 2]`, `{ a = 1 }`), for lists and tables.
fn toml_value(text: &str) -> Result<toml::Value, DeError> {
    let hint = "write it in TOML syntax, e.g. [2377, 7946], [\"a\", \"b\"] or { key = \"value\" }";
    let mut t: toml::Table = format!("v = {text}")
        .parse()
        .map_err(|e: toml::de::Error| {
            de::Error::custom(format!(
                "{text:?} is not valid TOML ({}); {hint}",
                e.message().trim()
            ))
        })?;
    match t.remove("v") {
        Some(v) if t.is_empty() => Ok(v),
        _ => Err(de::Error::custom(format!(
            "{text:?} is more than one TOML value; {hint}"
        ))),
    }
}

impl EnvText {
    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.0.trim();
        // Unsigned first so the whole u64 range parses; the visitor checks its own range
        // ("invalid value: integer `70000`, expected u16").
        if let Ok(n) = t.parse::<u64>() {
            visitor.visit_u64(n)
        } else if let Ok(n) = t.parse::<i64>() {
            visitor.visit_i64(n)
        } else {
            Err(de::Error::custom(format!(
                "{:?} is not a whole number (expected {})",
                self.0,
                expected(&visitor)
            )))
        }
    }

    fn float<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.trim().parse::<f64>() {
            Ok(x) => visitor.visit_f64(x),
            Err(_) => Err(de::Error::custom(format!(
                "{:?} is not a number (expected {})",
                self.0,
                expected(&visitor)
            ))),
        }
    }

    fn list<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.0.trim();
        if t.starts_with('[') {
            // TOML array syntax: the elements are typed by TOML, as in the file, and may
            // contain commas (`["a,b"]`) or be tables (`[{ url = "http://h" }]`).
            return toml_value(t)?.deserialize_seq(visitor);
        }
        // `a,b`: each element is environment text again, typed by the element type. Empty
        // elements are dropped, so an empty variable is an empty list and `a,b,` is `a,b`.
        let items: Vec<EnvText> = t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| EnvText(s.to_owned()))
            .collect();
        let mut seq = SeqDeserializer::<_, DeError>::new(items.into_iter());
        let value = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(value)
    }

    fn table<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.0.trim();
        if t.starts_with('{') {
            return toml_value(t)?.deserialize_map(visitor);
        }
        Err(de::Error::custom(format!(
            "{:?} is not a table (expected {}); set its keys one variable each, or write a TOML \
             inline table like {{ key = \"value\" }}",
            self.0,
            expected(&visitor)
        )))
    }

    /// Empty text is the unit value; anything else is not.
    fn unit<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.0.trim().is_empty() {
            visitor.visit_unit()
        } else {
            Err(de::Error::invalid_type(
                de::Unexpected::Str(&self.0),
                &visitor,
            ))
        }
    }

    fn newtype<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn ignore<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// Each listed `deserialize_*` of [`EnvText`] goes to the parser for that kind of value.
macro_rules! route {
    ($($to:ident: $($method:ident($($ty:ty),*)),*;)*) => {$($(
        fn $method<V: Visitor<'de>>(self, $(_: $ty,)* visitor: V) -> Result<V::Value, DeError> {
            self.$to(visitor)
        }
    )*)*};
}

impl<'de> Deserializer<'de> for EnvText {
    type Error = DeError;

    /// A type that does not say what it wants gets the text (`ByteSize` then parses "8MiB" or
    /// "8388608" itself).
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let t = self.0.trim();
        if t.eq_ignore_ascii_case("true") {
            visitor.visit_bool(true)
        } else if t.eq_ignore_ascii_case("false") {
            visitor.visit_bool(false)
        } else {
            Err(de::Error::custom(format!(
                "{:?} is not a boolean: write true or false",
                self.0
            )))
        }
    }

    route! {
        integer: deserialize_i8(), deserialize_i16(), deserialize_i32(), deserialize_i64(),
            deserialize_i128(), deserialize_u8(), deserialize_u16(), deserialize_u32(),
            deserialize_u64(), deserialize_u128();
        float: deserialize_f32(), deserialize_f64();
        list: deserialize_seq(), deserialize_tuple(usize),
            deserialize_tuple_struct(&'static str, usize);
        table: deserialize_map(),
            deserialize_struct(&'static str, &'static [&'static str]);
        unit: deserialize_unit(), deserialize_unit_struct(&'static str);
        newtype: deserialize_newtype_struct(&'static str);
        ignore: deserialize_ignored_any();
    }

    /// Empty text is an absent option: the only way to unset, from the environment, an
    /// optional key the file sets.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.0.trim().is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let t = self.0.trim();
        if t.starts_with('{') {
            return toml_value(t)?.deserialize_enum(name, variants, visitor);
        }
        // A unit variant by name; an unknown one is refused with the list of valid ones.
        let variant: de::value::StringDeserializer<DeError> = t.to_owned().into_deserializer();
        visitor.visit_enum(variant)
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf identifier
    }
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

/// A secret given inline (`key`) or in a file (`<key>_file`: a Docker secret under
/// /run/secrets, a systemd credential under $CREDENTIALS_DIRECTORY): the file's text without
/// its trailing newline. Both at once, an unreadable file or an empty one is an error naming
/// the key.
pub fn read_secret(
    inline: Option<&str>,
    file: Option<&Path>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(path) = file else {
        return Ok(inline.map(str::to_owned));
    };
    let file_key = format!("{key}_file");
    if inline.is_some() {
        return Err(ConfigError::new(
            file_key,
            format!("set either `{key}` or `{key}_file`, not both"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            file_key.clone(),
            format!(
                "cannot read {}: {e}; point it at a readable file holding the secret",
                path.display()
            ),
        )
    })?;
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(ConfigError::new(
            file_key,
            format!("{} is empty; it must hold the secret", path.display()),
        ));
    }
    Ok(Some(secret.to_owned()))
}

/// A URL safe to print or log: a password in it is masked; with `whole_path`, so are its path
/// and query (a webhook's path or query is often its token: Slack, Teams, ntfy), leaving the
/// scheme, host and port to tell which endpoint it is.
pub fn redact_url(url: &str, whole_path: bool) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:********@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = if whole_path && !tail.is_empty() && tail != "/" {
        "/********"
    } else {
        tail
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// Renders a config as TOML for `--print-config`.
pub fn to_toml<T: Serialize>(cfg: &T) -> String {
    toml::to_string_pretty(cfg).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

/// The text of a key file named by `key` (`auth.key_file`, `auth.fleet_key_file`): it must
/// exist and be readable by its owner alone (`chmod 600`), as ssh wants of its keys. `fix`
/// says how to make one.
pub fn read_key_file(path: &Path, key: &str, fix: &str) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(key, format!("cannot read {}: {e}; {fix}", path.display()))
    })?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            key,
            format!(
                "{} is readable by others (mode {:o}); `chmod 600` it (and `chown` it to the \
                 user the service runs as)",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_printed_without_their_secrets() {
        assert_eq!(
            redact_url("mqtt://broker:1883", false),
            "mqtt://broker:1883"
        );
        assert_eq!(
            redact_url("http://user:s3cret@db:8086/x", false),
            "http://user:********@db:8086/x"
        );
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/XXXX?x=1", true),
            "https://hooks.slack.com/********"
        );
        assert_eq!(redact_url("https://h:9/", true), "https://h:9/");
        assert_eq!(
            redact_url("https://a:b@h/?token=t", true),
            "https://a:********@h/********"
        );
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        name: Option<String>,
        interval: Dur,
        max: Option<usize>,
        heartbeat: Option<Dur>,
        mode: Mode,
        sub: Sub,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sub {
        url: String,
        size: ByteSize,
        n: u32,
        ratio: f64,
        on: bool,
        list: Vec<String>,
        ports: Vec<u16>,
        modes: Vec<Mode>,
        password: Option<String>,
        hooks: Vec<Hook>,
        inner: Inner,
    }
    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        depth: u32,
        label: String,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Hook {
        url: String,
        #[serde(default)]
        retries: u32,
    }
    #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Auto,
        NodeDown,
        Never,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                name: None,
                interval: Dur::secs(5),
                max: None,
                heartbeat: None,
                mode: Mode::Auto,
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
                ratio: 0.5,
                on: false,
                list: vec!["lo".into()],
                ports: vec![2377, 7946],
                modes: vec![Mode::Auto],
                password: None,
                hooks: Vec::new(),
                inner: Inner::default(),
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

    /// One key from the environment over an empty file.
    fn one(var: &str, value: &str) -> Result<Cfg, ConfigError> {
        parse("", &[(var, value)])
    }

    #[test]
    fn env_number() {
        assert_eq!(one("APP__SUB__N", "9").unwrap().sub.n, 9);
        assert_eq!(one("APP__SUB__N", " 12 ").unwrap().sub.n, 12);
        assert_eq!(one("APP__SUB__RATIO", "0.25").unwrap().sub.ratio, 0.25);
        assert_eq!(one("APP__SUB__RATIO", "2").unwrap().sub.ratio, 2.0);
        // Over the file's value.
        assert_eq!(
            parse("[sub]\nn = 7", &[("APP__SUB__N", "8")])
                .unwrap()
                .sub
                .n,
            8
        );
        // The key's own range check.
        let e = one("APP__SUB__N", "-1").unwrap_err();
        assert_eq!(e.key, "sub.n");
        assert!(e.message.contains("expected u32"), "{e}");
    }

    #[test]
    fn env_optional_number() {
        // No default to type it by: the key's type (Option<usize>) does.
        assert_eq!(one("APP__MAX", "2").unwrap().max, Some(2));
        // Empty unsets what the file set.
        assert_eq!(parse("max = 3", &[("APP__MAX", "")]).unwrap().max, None);
        assert_eq!(parse("max = 3", &[]).unwrap().max, Some(3));
    }

    #[test]
    fn env_list_of_numbers() {
        for text in [
            "2377,7946",
            "2377, 7946",
            "[2377, 7946]",
            " [ 2377,7946 ] ",
            "2377,7946,",
        ] {
            assert_eq!(
                one("APP__SUB__PORTS", text).unwrap().sub.ports,
                [2377, 7946],
                "{text}"
            );
        }
        assert_eq!(one("APP__SUB__PORTS", "22").unwrap().sub.ports, [22]);
        assert!(one("APP__SUB__PORTS", "").unwrap().sub.ports.is_empty());
        assert!(one("APP__SUB__PORTS", "[]").unwrap().sub.ports.is_empty());
        let e = one("APP__SUB__PORTS", "22,ssh").unwrap_err();
        assert_eq!(e.key, "sub.ports[1]");
        assert!(e.message.contains("\"ssh\" is not a whole number"), "{e}");
        assert!(e.message.contains("$APP__SUB__PORTS"), "{e}");
        let e = one("APP__SUB__PORTS", "[22, 70000]").unwrap_err();
        assert_eq!(e.key, "sub.ports[1]");
        assert!(e.message.contains("$APP__SUB__PORTS"), "{e}");
    }

    #[test]
    fn env_list_of_strings_and_enums() {
        let c = one("APP__SUB__LIST", "lo, docker0").unwrap();
        assert_eq!(c.sub.list, ["lo", "docker0"]);
        // TOML syntax for elements holding commas; numeric-looking elements stay strings.
        let c = one("APP__SUB__LIST", r#"["a,b", "c"]"#).unwrap();
        assert_eq!(c.sub.list, ["a,b", "c"]);
        assert_eq!(one("APP__SUB__LIST", "1,02").unwrap().sub.list, ["1", "02"]);
        let c = one("APP__SUB__MODES", "node_down,never").unwrap();
        assert_eq!(c.sub.modes, [Mode::NodeDown, Mode::Never]);
        let c = one("APP__SUB__MODES", r#"["never"]"#).unwrap();
        assert_eq!(c.sub.modes, [Mode::Never]);
        let e = one("APP__SUB__MODES", "node_down,sometimes").unwrap_err();
        assert_eq!(e.key, "sub.modes[1]");
        assert!(e.message.contains("unknown variant `sometimes`"), "{e}");
        assert!(
            e.message.contains("`node_down`"),
            "lists the valid ones: {e}"
        );
        // A list of tables, in TOML syntax.
        let c = one(
            "APP__SUB__HOOKS",
            r#"[{ url = "http://a" }, { url = "http://b", retries = 5 }]"#,
        )
        .unwrap();
        assert_eq!(c.sub.hooks.len(), 2);
        assert_eq!(c.sub.hooks[1].retries, 5);
        let e = one("APP__SUB__HOOKS", "[{ url = ").unwrap_err();
        assert_eq!(e.key, "sub.hooks");
        assert!(e.message.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn env_bool() {
        assert!(one("APP__SUB__ON", "true").unwrap().sub.on);
        assert!(one("APP__SUB__ON", "TRUE").unwrap().sub.on);
        assert!(
            !parse("[sub]\non = true", &[("APP__SUB__ON", "false")])
                .unwrap()
                .sub
                .on
        );
        let e = one("APP__SUB__ON", "yes").unwrap_err();
        assert_eq!(e.key, "sub.on");
        assert!(e.message.contains("write true or false"), "{e}");
    }

    #[test]
    fn env_duration() {
        assert_eq!(
            one("APP__INTERVAL", "500ms").unwrap().interval,
            Dur::millis(500)
        );
        assert_eq!(
            one("APP__INTERVAL", "1m 30s").unwrap().interval,
            Dur::secs(90)
        );
        assert_eq!(
            one("APP__HEARTBEAT", "2s").unwrap().heartbeat,
            Some(Dur::secs(2))
        );
        let e = one("APP__INTERVAL", "5").unwrap_err();
        assert_eq!(e.key, "interval");
        assert!(e.message.contains("e.g. \"5s\""), "{e}");
    }

    #[test]
    fn env_size() {
        assert_eq!(
            one("APP__SUB__SIZE", "64MiB").unwrap().sub.size,
            ByteSize::mib(64)
        );
        assert_eq!(
            one("APP__SUB__SIZE", "8388608").unwrap().sub.size,
            ByteSize::mib(8)
        );
    }

    #[test]
    fn env_numeric_looking_strings_stay_strings() {
        assert_eq!(
            one("APP__NAME", "123").unwrap().name.as_deref(),
            Some("123")
        );
        assert_eq!(one("APP__SUB__URL", "007").unwrap().sub.url, "007");
        assert_eq!(one("APP__SUB__URL", "true").unwrap().sub.url, "true");
        // Strings are taken verbatim, spaces and quotes included.
        assert_eq!(one("APP__SUB__URL", " \"x\" ").unwrap().sub.url, " \"x\" ");
    }

    #[test]
    fn env_optional_string() {
        let c = one("APP__SUB__PASSWORD", "1234").unwrap();
        assert_eq!(c.sub.password.as_deref(), Some("1234"));
        let c = parse("[sub]\npassword = \"p\"", &[("APP__SUB__PASSWORD", "")]).unwrap();
        assert_eq!(c.sub.password, None);
    }

    #[test]
    fn env_enum() {
        assert_eq!(one("APP__MODE", "node_down").unwrap().mode, Mode::NodeDown);
        assert_eq!(one("APP__MODE", " never ").unwrap().mode, Mode::Never);
        let e = one("APP__MODE", "raft").unwrap_err();
        assert_eq!(e.key, "mode");
        assert!(e.message.contains("unknown variant `raft`"), "{e}");
        assert!(e.message.contains("$APP__MODE"), "{e}");
    }

    #[test]
    fn env_nested_table_key() {
        // Beside the file's keys of the same tables, which stay.
        let c = parse(
            "[sub]\nn = 7\n[sub.inner]\nlabel = \"from-file\"\n",
            &[("APP__SUB__INNER__DEPTH", "5")],
        )
        .unwrap();
        assert_eq!(c.sub.inner.depth, 5);
        assert_eq!(c.sub.inner.label, "from-file");
        assert_eq!(c.sub.n, 7);
        // A table the file does not have.
        assert_eq!(
            one("APP__SUB__INNER__DEPTH", "6").unwrap().sub.inner.depth,
            6
        );
        // A whole table in TOML inline syntax.
        let c = one("APP__SUB__INNER", "{ depth = 2, label = \"x\" }").unwrap();
        assert_eq!(
            c.sub.inner,
            Inner {
                depth: 2,
                label: "x".into()
            }
        );
    }

    #[test]
    fn env_errors_name_the_key_and_the_variable() {
        let e = one("APP__MAX", "many").unwrap_err();
        assert_eq!(e.key, "max");
        assert_eq!(
            e.to_string(),
            "config key `max`: from $APP__MAX: \"many\" is not a whole number (expected usize)"
        );

        // An unknown key set by the environment.
        let e = one("APP__SUB__NN", "1").unwrap_err();
        assert!(e.key.starts_with("sub"), "{e:?}");
        assert!(e.message.contains("unknown field `nn`"), "{e}");
        assert!(e.message.contains("$APP__SUB__NN"), "{e}");

        // A file error beside an environment key is not blamed on the variable.
        let e = parse("[sub]\nn = \"9\"", &[("APP__SUB__URL", "u")]).unwrap_err();
        assert_eq!(e.key, "sub.n");
        assert!(!e.message.contains("$APP"), "{e}");

        // Reaching into a value, or into a table another variable set whole.
        let e = one("APP__INTERVAL__X", "1").unwrap_err();
        assert!(e.message.contains("$APP__INTERVAL__X"), "{e}");
        let e = parse("interval = \"5s\"", &[("APP__INTERVAL__X", "1")]).unwrap_err();
        assert_eq!(e.key, "interval.x");
        assert!(e.message.contains("not a table"), "{e}");
        let e = parse("", &[("APP__SUB__N", "1"), ("APP__SUB", "{ n = 2 }")]).unwrap_err();
        assert_eq!(e.key, "sub.n");
        assert!(e.message.contains("set whole by $APP__SUB;"), "{e}");
        let e = parse("", &[("APP__SUB__N", "1"), ("APP__sub__n", "2")]).unwrap_err();
        assert_eq!(e.key, "sub.n");
        assert!(e.message.contains("also set by $APP__SUB__N"), "{e}");
        let e = one("APP__NOPE", "1").unwrap_err();
        assert!(e.message.contains("unknown field `nope`"), "{e}");
        assert!(e.message.contains("from $APP__NOPE"), "{e}");
        let e = one("APP__SUB____N", "1").unwrap_err();
        assert!(e.message.contains("empty key segment"), "{e}");
        let e = one("APP__SUB", "x").unwrap_err();
        assert_eq!(e.key, "sub");
        assert!(e.message.contains("set its keys one variable each"), "{e}");
    }

    #[test]
    fn a_refused_value_names_the_variable_that_set_it() {
        assert_eq!(variable_for("APP", "sub.n"), "APP__SUB__N");
        assert_eq!(variable_for("APP", "hooks[2].url"), "APP__HOOKS");
        let env = vec![("APP__SUB__N".to_owned(), "0".to_owned())];
        let e = ConfigError::new("sub.n", "must be at least 1").blame_env("APP", &env);
        assert!(
            e.to_string()
                .contains("must be at least 1 (set by $APP__SUB__N)"),
            "{e}"
        );
        let e = ConfigError::new("sub.m", "must be at least 1").blame_env("APP", &env);
        assert!(!e.to_string().contains("set by"), "{e}");
    }
}
