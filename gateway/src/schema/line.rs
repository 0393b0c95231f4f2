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
    Int(i64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: &'static str,
    /// Sorted by key (InfluxDB's fast path; [`Point::tag`] inserts in order, equal keys in
    /// the order given). Keys are the schema's names, or a container's label keys (owned).
    pub tags: Vec<(std::borrow::Cow<'static, str>, String)>,
    /// The schema's names, or names the kernel gives (network counters, CPUs of an IRQ).
    pub fields: Vec<(std::borrow::Cow<'static, str>, Value)>,
    pub ts_ms: i64,
}

impl Point {
    pub fn new(measurement: &'static str, ts_ms: i64) -> Self {
        Point {
            measurement,
            // (sized for the schema's points: no growing on the way)
            tags: Vec::with_capacity(4),
            fields: Vec::with_capacity(16),
            ts_ms,
        }
    }

    pub fn tag(
        mut self,
        key: impl Into<std::borrow::Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Self {
        let v = value.into();
        let k = key.into();
        if !v.is_empty() && !k.is_empty() {
            let at = self.tags.partition_point(|(t, _)| *t <= k);
            self.tags.insert(at, (k, v));
        }
        self
    }

    pub fn tag_opt(self, key: &'static str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.tag(key, v),
            None => self,
        }
    }

    pub fn int(mut self, key: impl Into<std::borrow::Cow<'static, str>>, v: i64) -> Self {
        self.fields.push((key.into(), Value::Int(v)));
        self
    }

    /// Unsigned counters are stored as integers, saturating at i64::MAX (InfluxDB 1.x has
    /// no unsigned type).
    pub fn uint(self, key: impl Into<std::borrow::Cow<'static, str>>, v: u64) -> Self {
        self.int(key, i64::try_from(v).unwrap_or(i64::MAX))
    }

    pub fn boolean(mut self, key: &'static str, v: bool) -> Self {
        self.fields.push((key.into(), Value::Bool(v)));
        self
    }

    pub fn string(mut self, key: &'static str, v: impl Into<String>) -> Self {
        self.fields.push((key.into(), Value::Str(v.into())));
        self
    }

    /// Appends the point as one line (with a trailing newline); false if it has no fields.
    pub fn write_line(&self, out: &mut String) -> bool {
        let before = out.len();
        let mut tags: Vec<(&str, &str)> = self
            .tags
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_str()))
            .collect();
        let mut line = Line::new(
            out,
            self.measurement,
            &TagSet::default(),
            &mut tags,
            self.ts_ms,
        );
        for (k, v) in &self.fields {
            line = match v {
                Value::Int(n) => line.int(k, *n),
                Value::Bool(b) => line.boolean(k, *b),
                Value::Str(s) => line.string(k, s),
            };
        }
        drop(line);
        out.len() > before
    }

    #[cfg(test)]
    pub fn to_line(&self) -> String {
        let mut s = String::new();
        self.write_line(&mut s);
        s
    }
}

/// The special characters of a measurement, and of tag keys, tag values and field keys.
const MEASUREMENT: &[char] = &[',', ' '];
const KEY: &[char] = &[',', '=', ' '];

/// Tags rendered once (escaped, sorted by key) for the many lines of one node or one
/// container: `,k=v,k=v`.
#[derive(Debug, Default, Clone)]
pub struct TagSet {
    text: String,
    /// Where each tag starts (its `,`) and where its key ends, in `text`.
    at: Vec<(usize, usize)>,
}

impl TagSet {
    /// These tags, `(key, value)`: see [`TagSet::set`].
    pub fn new(tags: &mut [(&str, &str)]) -> TagSet {
        let mut t = TagSet::default();
        t.set(tags);
        t
    }

    /// Renders these tags in place of the ones held (its buffers kept): sorted by key (equal
    /// keys in the order given), a tag with an empty key or value left out (InfluxDB refuses
    /// them).
    pub fn set(&mut self, tags: &mut [(&str, &str)]) {
        tags.sort_by(|a, b| a.0.cmp(b.0));
        self.text.clear();
        self.at.clear();
        for (k, v) in tags.iter().filter(|(k, v)| !k.is_empty() && !v.is_empty()) {
            let start = self.text.len();
            let key_end = push_tag(&mut self.text, k, v);
            self.at.push((start, key_end));
        }
    }
}

/// Appends `,key=value`, escaped; returns where the key ends.
fn push_tag(out: &mut String, k: &str, v: &str) -> usize {
    out.push(',');
    escape(out, k, KEY);
    let key_end = out.len();
    out.push('=');
    escape(out, v, KEY);
    key_end
}

/// Lines written straight into one buffer, each sample's tags rendered once ([`TagSet`]):
/// what a report becomes without a [`Point`] per line.
#[derive(Debug, Default)]
pub struct Lines {
    out: String,
    /// Added to every line as `clock_offset_ms` (a sample placed at true time).
    offset: Option<i64>,
}

impl Lines {
    /// Every line with its fields and `clock_offset_ms` when `offset` is set.
    pub fn new(offset: Option<i64>) -> Lines {
        Lines {
            out: String::with_capacity(4096),
            offset,
        }
    }

    /// A line: its fields are added to what this returns, and it ends when that is dropped.
    pub fn line(
        &mut self,
        measurement: &str,
        tags: &TagSet,
        extra: &mut [(&str, &str)],
        ts_ms: i64,
    ) -> Line<'_> {
        let offset = self.offset;
        let mut l = Line::new(&mut self.out, measurement, tags, extra, ts_ms);
        l.offset = offset;
        l
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

/// One line being written: measurement and tags are in, fields are added (by value, so they
/// chain), and the timestamp ends it when it is dropped; a line left without fields is taken
/// back out (InfluxDB refuses it).
#[derive(Debug)]
pub struct Line<'o> {
    out: &'o mut String,
    start: usize,
    fields: usize,
    ts_ms: i64,
    offset: Option<i64>,
}

impl<'o> Line<'o> {
    /// The measurement and the tags: `tags` merged with `extra` (sorted here; after equal
    /// keys of `tags`), each tag with an empty key or value left out.
    pub fn new(
        out: &'o mut String,
        measurement: &str,
        tags: &TagSet,
        extra: &mut [(&str, &str)],
        ts_ms: i64,
    ) -> Line<'o> {
        let start = out.len();
        escape(out, measurement, MEASUREMENT);
        extra.sort_by(|a, b| a.0.cmp(b.0));
        let mut extra = extra
            .iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .peekable();
        for (i, &(at, key_end)) in tags.at.iter().enumerate() {
            let key = &tags.text[at + 1..key_end];
            while let Some((k, v)) = extra.next_if(|(k, _)| *k < key) {
                push_tag(out, k, v);
            }
            let end = tags.at.get(i + 1).map_or(tags.text.len(), |n| n.0);
            out.push_str(&tags.text[at..end]);
        }
        for (k, v) in extra {
            push_tag(out, k, v);
        }
        Line {
            out,
            start,
            fields: 0,
            ts_ms,
            offset: None,
        }
    }

    fn key(&mut self, k: &str) {
        self.out.push(if self.fields == 0 { ' ' } else { ',' });
        self.fields += 1;
        escape(self.out, k, KEY);
        self.out.push('=');
    }

    /// A float field; left out when not finite (InfluxDB cannot store it).
    pub fn float(mut self, k: &str, v: f64) -> Self {
        if v.is_finite() {
            self.key(k);
            let _ = write!(self.out, "{v}");
        }
        self
    }

    pub fn int(mut self, k: &str, v: i64) -> Self {
        self.key(k);
        self.out.push_str(itoa::Buffer::new().format(v));
        self.out.push('i');
        self
    }

    /// Unsigned counters are stored as integers, saturating at i64::MAX (InfluxDB 1.x has
    /// no unsigned type).
    pub fn uint(self, k: &str, v: u64) -> Self {
        self.int(k, i64::try_from(v).unwrap_or(i64::MAX))
    }

    pub fn boolean(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn string(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        self.out.push('"');
        // (nearly every value needs no escaping: copied whole)
        if v.bytes().any(|b| matches!(b, b'"' | b'\\' | b'\n' | b'\r')) {
            for c in v.chars() {
                match c {
                    '"' | '\\' => {
                        self.out.push('\\');
                        self.out.push(c);
                    }
                    '\n' | '\r' => self.out.push(' '),
                    c => self.out.push(c),
                }
            }
        } else {
            self.out.push_str(v);
        }
        self.out.push('"');
        self
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.fields == 0 {
            self.out.truncate(self.start);
            return;
        }
        if let Some(o) = self.offset.take() {
            self.key("clock_offset_ms");
            self.out.push_str(itoa::Buffer::new().format(o));
            self.out.push('i');
        }
        self.out.push(' ');
        self.out.push_str(itoa::Buffer::new().format(self.ts_ms));
        self.out.push('\n');
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
    // Nearly every name and value needs no escaping: copied whole (this function took a
    // sixth of the gateway's time at 1,000 agents going character by character).
    let eq = special.contains(&'=');
    if !s
        .bytes()
        .any(|b| matches!(b, b'\n' | b'\r' | b'\\' | b',' | b' ') || (eq && b == b'='))
    {
        out.push_str(s);
        return;
    }
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

/// One line read back ([`parse`]); string fields unquoted, other field values as written.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Parsed {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, String)>,
    pub ts_ms: i64,
}

/// Reads one line back as InfluxDB does: `\` escapes the token's special characters
/// (and nothing else: a backslash before anything else is itself); a string field is
/// quoted with `\"` and `\\` escaped.
#[cfg(test)]
pub(crate) fn parse(line: &str) -> Parsed {
    let c: Vec<char> = line.chars().collect();
    let mut i = 0;
    let token = |i: &mut usize, special: &[char], stop: &[char]| -> String {
        let mut t = String::new();
        while *i < c.len() && !stop.contains(&c[*i]) {
            if c[*i] == '\\' && *i + 1 < c.len() && special.contains(&c[*i + 1]) {
                t.push(c[*i + 1]);
                *i += 2;
            } else {
                t.push(c[*i]);
                *i += 1;
            }
        }
        t
    };
    let m = token(&mut i, &[',', ' '], &[',', ' ']);
    let mut tags = Vec::new();
    while c[i] == ',' {
        i += 1;
        let k = token(&mut i, &[',', '=', ' '], &['=']);
        i += 1;
        let v = token(&mut i, &[',', '=', ' '], &[',', ' ']);
        tags.push((k, v));
    }
    assert_eq!(c[i], ' ', "{line}");
    let mut fields = Vec::new();
    loop {
        i += 1;
        let k = token(&mut i, &[',', '=', ' '], &['=']);
        i += 1;
        let mut v = String::new();
        if c[i] == '"' {
            i += 1;
            while c[i] != '"' {
                if c[i] == '\\' && (c[i + 1] == '"' || c[i + 1] == '\\') {
                    i += 1;
                }
                v.push(c[i]);
                i += 1;
            }
            i += 1;
        } else {
            v = token(&mut i, &[], &[',', ' ']);
        }
        fields.push((k, v));
        if c[i] != ',' {
            break;
        }
    }
    assert_eq!(c[i], ' ', "{line}");
    let ts: String = c[i + 1..].iter().collect();
    Parsed {
        measurement: m,
        tags,
        fields,
        ts_ms: ts.trim_end().parse().expect("a timestamp"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the encoder promises a tag value reads back as: newlines as spaces, a backslash
    /// that would escape a special character (or the delimiter at the end) as U+29F5.
    fn expected_tag(v: &str) -> String {
        let c: Vec<char> = v.chars().collect();
        let mut out = String::new();
        for (i, ch) in c.iter().enumerate() {
            match ch {
                '\n' | '\r' => out.push(' '),
                '\\' => {
                    let next = c.get(i + 1);
                    if next.is_none_or(|n| [',', '=', ' ', '\n', '\r'].contains(n)) {
                        out.push(BACKSLASH_STANDIN);
                    } else {
                        out.push('\\');
                    }
                }
                ch => out.push(*ch),
            }
        }
        out
    }

    /// Property: any text as a tag value or string field gives one line that reads back as
    /// the text (with the documented stand-ins), every other tag and field intact.
    #[test]
    fn any_text_reads_back_from_its_line() {
        let alphabet = [
            'a', 'Z', '0', ',', '=', ' ', '\\', '"', '\n', '\r', '\t', 'é', '∑', '#', '\'',
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..20_000 {
            let (len_a, len_b) = (1 + (next() % 10) as usize, (next() % 10) as usize);
            let mut text = |n: usize| -> String {
                (0..n)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            let (tag, field) = (text(len_a), text(len_b));
            let p = Point::new("docker_container_status", 7)
                .tag("container_name", tag.clone())
                .tag("host", "edge-01")
                .string("status", field.clone())
                .int("n", 3);
            let line = p.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert!(line.ends_with('\n'));
            let Parsed {
                measurement: m,
                tags,
                fields,
                ts_ms: ts,
            } = parse(line.trim_end_matches('\n'));
            assert_eq!(m, "docker_container_status");
            assert_eq!(
                tags,
                [
                    ("container_name".to_owned(), expected_tag(&tag)),
                    ("host".to_owned(), "edge-01".to_owned())
                ],
                "{tag:?} -> {line:?}"
            );
            assert_eq!(
                fields,
                [
                    ("status".to_owned(), field.replace(['\n', '\r'], " ")),
                    ("n".to_owned(), "3i".to_owned())
                ],
                "{field:?} -> {line:?}"
            );
            assert_eq!(ts, 7);
        }
    }

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
            .int("n", -3)
            .uint("big", u64::MAX)
            .boolean("ok", true)
            .string("state", "online");
        assert_eq!(
            p.to_line(),
            "cpu,cpu=cpu-total,host=edge-01 n=-3i,big=9223372036854775807i,\
             ok=true,state=\"online\" 1700000000123\n"
        );
    }

    /// A set's tags and a line's own merge in key order (a line's own after a set's of the
    /// same key); empty keys and values are left out; the offset comes last of the fields.
    #[test]
    fn lines_merge_their_tags_in_order() {
        let set = TagSet::new(&mut [("host", "edge-01"), ("b", "2"), ("", "x"), ("e", "")]);
        let mut lines = Lines::new(Some(-40));
        lines
            .line(
                "m",
                &set,
                &mut [("z", "9"), ("a", "1"), ("host", "again"), ("c", "")],
                5,
            )
            .float("f", 98.5)
            .uint("u", 7);
        lines.line("m", &set, &mut [], 6).float("nan", f64::NAN);
        lines
            .line("m", &TagSet::default(), &mut [], 7)
            .boolean("ok", false);
        assert_eq!(
            lines.into_string(),
            "m,a=1,b=2,host=edge-01,host=again,z=9 f=98.5,u=7i,clock_offset_ms=-40i 5\n\
             m ok=false,clock_offset_ms=-40i 7\n"
        );
    }

    #[test]
    fn non_finite_and_empty() {
        let mut lines = Lines::new(None);
        lines
            .line("m", &TagSet::default(), &mut [], 1)
            .float("a", f64::NAN)
            .float("b", f64::INFINITY);
        assert!(lines.into_string().is_empty(), "no fields, no line");
        let mut lines = Lines::new(None);
        lines
            .line("m", &TagSet::default(), &mut [], 1)
            .float("a", f64::NAN)
            .float("b", 1.0);
        assert_eq!(lines.into_string(), "m b=1 1\n");
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
    fn newlines_never_split_a_line() {
        let p = Point::new("m", 1).tag("t", "a\nb").string("s", "x\ny");
        let l = p.to_line();
        assert_eq!(l.matches('\n').count(), 1);
        assert_eq!(l, "m,t=a\\ b s=\"x y\" 1\n");
    }
}
