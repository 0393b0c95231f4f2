//! InfluxDB line protocol, written by hand: points are built by our own schema code, so the
//! encoder needs only escaping rules, not a parser. Timestamps are milliseconds (writes go out
//! with `precision=ms`).
//!
//! Rules (InfluxDB 1.x and 2.x alike): measurement escapes `,` and space; tag keys, tag values
//! and field keys escape `,`, `=` and space; string field values are quoted with `"` and `\`
//! escaped. Newlines cannot be escaped anywhere, so they become spaces. Empty tag values are
//! invalid and are left out; non-finite floats cannot be stored and are left out; a point left
//! without fields is not written at all.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: &'static str,
    /// Kept sorted by key when encoded (InfluxDB's fast path).
    pub tags: Vec<(&'static str, String)>,
    pub fields: Vec<(&'static str, Value)>,
    pub ts_ms: i64,
}

impl Point {
    pub fn new(measurement: &'static str, ts_ms: i64) -> Self {
        Point {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            ts_ms,
        }
    }

    pub fn tag(mut self, key: &'static str, value: impl Into<String>) -> Self {
        let v = value.into();
        if !v.is_empty() {
            self.tags.push((key, v));
        }
        self
    }

    pub fn tag_opt(self, key: &'static str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.tag(key, v),
            None => self,
        }
    }

    pub fn float(mut self, key: &'static str, v: f64) -> Self {
        if v.is_finite() {
            self.fields.push((key, Value::Float(v)));
        }
        self
    }

    pub fn int(mut self, key: &'static str, v: i64) -> Self {
        self.fields.push((key, Value::Int(v)));
        self
    }

    /// Unsigned counters are stored as integers, saturating at i64::MAX (InfluxDB 1.x has
    /// no unsigned type).
    pub fn uint(self, key: &'static str, v: u64) -> Self {
        self.int(key, i64::try_from(v).unwrap_or(i64::MAX))
    }

    pub fn boolean(mut self, key: &'static str, v: bool) -> Self {
        self.fields.push((key, Value::Bool(v)));
        self
    }

    pub fn string(mut self, key: &'static str, v: impl Into<String>) -> Self {
        self.fields.push((key, Value::Str(v.into())));
        self
    }

    /// Appends the point as one line (with a trailing newline); false if it has no fields.
    pub fn write_line(&self, out: &mut String) -> bool {
        if self.fields.is_empty() {
            return false;
        }
        escape(out, self.measurement, &[',', ' ']);
        let mut tags: Vec<&(&str, String)> = self.tags.iter().collect();
        tags.sort_by_key(|(k, _)| *k);
        for (k, v) in tags {
            out.push(',');
            escape(out, k, &[',', '=', ' ']);
            out.push('=');
            escape(out, v, &[',', '=', ' ']);
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            escape(out, k, &[',', '=', ' ']);
            out.push('=');
            match v {
                Value::Float(f) => {
                    let _ = write!(out, "{f}");
                }
                Value::Int(n) => {
                    let _ = write!(out, "{n}i");
                }
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Str(s) => {
                    out.push('"');
                    for c in s.chars() {
                        match c {
                            '"' | '\\' => {
                                out.push('\\');
                                out.push(c);
                            }
                            '\n' | '\r' => out.push(' '),
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
            }
        }
        let _ = writeln!(out, " {}", self.ts_ms);
        true
    }

    #[cfg(test)]
    pub fn to_line(&self) -> String {
        let mut s = String::new();
        self.write_line(&mut s);
        s
    }
}

/// Escapes `special` characters; newlines become escaped spaces (a space is special
/// wherever this is used). A backslash that would escape what follows it (a special
/// character, or the delimiter after the token's end: `host=edge\` would swallow the comma or
/// space after it and break the whole line) cannot be written at all: InfluxDB 1.x refuses an
/// escaped backslash there ("invalid tag format", tried on 1.6.7), so it becomes
/// [`BACKSLASH_STANDIN`].
pub const BACKSLASH_STANDIN: char = '\u{29f5}';

fn escape(out: &mut String, s: &str, special: &[char]) {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\r' => out.push_str("\\ "),
            '\\' => {
                let next = chars.peek().copied();
                if next.is_none_or(|n| special.contains(&n) || n == '\n' || n == '\r') {
                    out.push(BACKSLASH_STANDIN);
                } else {
                    out.push('\\');
                }
            }
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_backslash_does_not_swallow_the_delimiter() {
        let p = Point::new("docker_container_mem", 5)
            .tag("container_name", "c\\")
            .tag("host", "h")
            .int("usage", 1);
        // escaped backslash, then the comma still separates the tags
        assert_eq!(
            p.to_line(),
            "docker_container_mem,container_name=c\u{29f5},host=h usage=1i 5\n"
        );
        let p = Point::new("m", 5)
            .tag("t", "a\\,b")
            .tag("u", "x\\y")
            .int("f", 1);
        assert_eq!(p.to_line(), "m,t=a\u{29f5}\\,b,u=x\\y f=1i 5\n");
    }

    #[test]
    fn basic_point_with_sorted_tags() {
        let p = Point::new("cpu", 1_700_000_000_123)
            .tag("host", "edge-01")
            .tag("cpu", "cpu-total")
            .float("usage_idle", 98.5)
            .int("n", -3)
            .uint("big", u64::MAX)
            .boolean("ok", true)
            .string("state", "online");
        assert_eq!(
            p.to_line(),
            "cpu,cpu=cpu-total,host=edge-01 usage_idle=98.5,n=-3i,big=9223372036854775807i,\
             ok=true,state=\"online\" 1700000000123\n"
        );
    }

    #[test]
    fn escaping() {
        let p = Point::new("my meas,x", 1)
            .tag("path", "/mnt/my data,x=y")
            .tag("empty", "")
            .string("msg", "say \"hi\" \\ now\nplease");
        assert_eq!(
            p.to_line(),
            "my\\ meas\\,x,path=/mnt/my\\ data\\,x\\=y msg=\"say \\\"hi\\\" \\\\ now please\" 1\n"
        );
    }

    #[test]
    fn non_finite_and_empty() {
        let p = Point::new("m", 1)
            .float("a", f64::NAN)
            .float("b", f64::INFINITY);
        assert!(p.to_line().is_empty(), "no fields, no line");
        let p = Point::new("m", 1).float("a", f64::NAN).float("b", 1.0);
        assert_eq!(p.to_line(), "m b=1 1\n");
    }

    #[test]
    fn newlines_never_split_a_line() {
        let p = Point::new("m", 1).tag("t", "a\nb").string("s", "x\ny");
        let l = p.to_line();
        assert_eq!(l.matches('\n').count(), 1);
        assert_eq!(l, "m,t=a\\ b s=\"x y\" 1\n");
    }
}
