//! Compact JSON for [`serde::Serialize`] types, byte for byte what `serde_json::to_vec` writes,
//! written for the agent's once-a-second reports (see [`crate::codec::encode_with_capacity`]).
//!
//! Why not serde_json's own writer: it checks every byte of every string, field names
//! included, against a table, one at a time, and hands each piece of output (`,` `"` a name
//! `"` `:`) to `io::Write`. On the agent's two reports (18 KB a second, most of it names and
//! short values) that was the agent's largest cost in user space. Here a string is checked
//! eight bytes at a time (one word: is any byte a `"`, a `\` or a control character?), and the
//! output goes straight into a `Vec<u8>`. Numbers are formatted by the same crates serde_json
//! uses (`itoa`, `zmij`), so the text is the same; the tests compare both writers on every
//! message type and on strings and numbers chosen to find the edges.
//!
//! A map key that is not a string, a number, a bool or a unit variant is an error (as in
//! serde_json); [`crate::codec::encode_with_capacity`] then encodes with serde_json, so a
//! type this writer does not take is still sent.

use serde::ser::{self, Impossible};
use serde::Serialize;

/// Why a value could not be written: a map key serde_json would also refuse, or an error a
/// type's own `Serialize` raised.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(String);

impl ser::Error for Unsupported {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Unsupported(msg.to_string())
    }
}

/// Appends `value` as compact JSON to `out`. On an error `out` holds part of a document.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Unsupported> {
    value.serialize(&mut Json { out })
}

/// The writer: a serde `Serializer` into a `Vec<u8>`.
pub struct Json<'a> {
    out: &'a mut Vec<u8>,
}

/// What follows the `\\` of each byte's escape, 0 for bytes written as they are: `"`, `\\`
/// and the controls below 0x20 (`u` for `\\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` needs escaping. Each test is the exact word-wide
/// form of "some byte is below n" (n <= 128: bytes with the high bit set never count).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGHS;
    below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
        != 0
}

/// Appends the escape of `byte` (one with a non-zero [`ESCAPE`] entry `e`).
#[cold]
fn escape(out: &mut Vec<u8>, byte: u8, e: u8) {
    if e == b'u' {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]);
    } else {
        out.push(b'\\');
        out.push(e);
    }
}

/// Strings up to this long are copied a byte at a time (most are: field names, units, short
/// values); longer ones are checked a word at a time and copied in runs.
const SHORT: usize = 16;

/// Appends `s` as a JSON string, quoted and escaped as serde_json escapes it.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    if b.len() <= SHORT {
        for &byte in b {
            match ESCAPE[usize::from(byte)] {
                0 => out.push(byte),
                e => escape(out, byte, e),
            }
        }
    } else {
        long(out, b);
    }
    out.push(b'"');
}

/// The inside of a longer string: words without anything to escape are passed over, and each
/// clean run is copied at once.
fn long(out: &mut Vec<u8>, b: &[u8]) {
    let mut clean = 0; // start of the run not yet copied
    let mut at = 0;
    let mut words = b.chunks_exact(8);
    for word in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if word_needs_escape(u64::from_le_bytes(w)) {
            for (k, &byte) in word.iter().enumerate() {
                let e = ESCAPE[usize::from(byte)];
                if e != 0 {
                    out.extend_from_slice(&b[clean..at + k]);
                    clean = at + k + 1;
                    escape(out, byte, e);
                }
            }
        }
        at += 8;
    }
    for (k, &byte) in words.remainder().iter().enumerate() {
        let e = ESCAPE[usize::from(byte)];
        if e != 0 {
            out.extend_from_slice(&b[clean..at + k]);
            clean = at + k + 1;
            escape(out, byte, e);
        }
    }
    out.extend_from_slice(&b[clean..]);
}

/// Appends `b`: short pieces byte by byte (a call to a C `memcpy` for a few bytes costs more
/// than the copy, and musl's is byte-wise).
#[inline]
fn put(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() <= 8 {
        out.reserve(b.len());
        for &x in b {
            out.push(x);
        }
    } else {
        out.extend_from_slice(b);
    }
}

fn float<F: zmij::Float + Copy>(out: &mut Vec<u8>, v: F, finite: bool) {
    if finite {
        put(out, zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        put(out, b"null");
    }
}

impl<'a> Json<'a> {
    /// `{"variant":` and `open`: a tuple or struct variant's start; `close` ends it.
    fn variant<'s>(
        &'s mut self,
        variant: &str,
        open: u8,
        close: &'static [u8],
    ) -> Compound<'s, 'a> {
        self.out.push(b'{');
        string(self.out, variant);
        self.out.push(b':');
        self.out.push(open);
        Compound::new(self, close)
    }
}

macro_rules! integers {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<(), Unsupported> {
            put(self.out, itoa::Buffer::new().format(v).as_bytes());
            Ok(())
        }
    )*};
}

impl<'s, 'a> ser::Serializer for &'s mut Json<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Compound<'s, 'a>;
    type SerializeTuple = Compound<'s, 'a>;
    type SerializeTupleStruct = Compound<'s, 'a>;
    type SerializeTupleVariant = Compound<'s, 'a>;
    type SerializeMap = Compound<'s, 'a>;
    type SerializeStruct = Compound<'s, 'a>;
    type SerializeStructVariant = Compound<'s, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        put(self.out, if v { b"true" } else { b"false" });
        Ok(())
    }

    integers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_f32(self, v: f32) -> Result<(), Unsupported> {
        float(self.out, v, v.is_finite());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Unsupported> {
        float(self.out, v, v.is_finite());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        string(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        string(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unsupported> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }

    fn serialize_none(self) -> Result<(), Unsupported> {
        put(self.out, b"null");
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Unsupported> {
        v.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        string(self.out, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        v.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        self.out.push(b'{');
        string(self.out, variant);
        self.out.push(b':');
        v.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'s, 'a>, Unsupported> {
        self.out.push(b'[');
        Ok(Compound::new(self, b"]"))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'s, 'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'s, 'a>, Unsupported> {
        Ok(self.variant(variant, b'[', b"]}"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'s, 'a>, Unsupported> {
        self.out.push(b'{');
        Ok(Compound::new(self, b"}"))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'s, 'a>, Unsupported> {
        self.serialize_map(None)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'s, 'a>, Unsupported> {
        Ok(self.variant(variant, b'{', b"}}"))
    }
}

/// An array, object or variant being written: `close` ends it.
pub struct Compound<'s, 'a> {
    json: &'s mut Json<'a>,
    first: bool,
    close: &'static [u8],
}

impl<'s, 'a> Compound<'s, 'a> {
    fn new(json: &'s mut Json<'a>, close: &'static [u8]) -> Self {
        Compound {
            json,
            first: true,
            close,
        }
    }

    /// The separator before an element or key.
    fn next(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.json.out.push(b',');
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        self.next();
        v.serialize(&mut *self.json)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> Result<(), Unsupported> {
        self.next();
        string(self.json.out, key);
        self.json.out.push(b':');
        v.serialize(&mut *self.json)
    }

    fn close(self) -> Result<(), Unsupported> {
        put(self.json.out, self.close);
        Ok(())
    }
}

macro_rules! sequences {
    ($($trait:ident: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Unsupported;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
                self.element(v)
            }
            fn end(self) -> Result<(), Unsupported> {
                self.close()
            }
        }
    )*};
}
sequences!(SerializeSeq: serialize_element, SerializeTuple: serialize_element,
    SerializeTupleStruct: serialize_field, SerializeTupleVariant: serialize_field);

macro_rules! structs {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Unsupported;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), Unsupported> {
                self.field(key, v)
            }
            fn end(self) -> Result<(), Unsupported> {
                self.close()
            }
        }
    )*};
}
structs!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        self.next();
        key.serialize(Key(self.json.out))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Unsupported> {
        self.json.out.push(b':');
        v.serialize(&mut *self.json)
    }

    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

/// A map key: written as a string whatever its type, as serde_json writes keys.
struct Key<'a>(&'a mut Vec<u8>);

impl Key<'_> {
    fn quoted(self, text: &[u8]) -> Result<(), Unsupported> {
        self.0.push(b'"');
        put(self.0, text);
        self.0.push(b'"');
        Ok(())
    }
}

fn not_a_key() -> Unsupported {
    Unsupported("a map key must be a string, a number, a bool or a unit variant".into())
}

macro_rules! integer_keys {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<(), Unsupported> {
            self.quoted(itoa::Buffer::new().format(v).as_bytes())
        }
    )*};
}

macro_rules! refuse {
    ($($f:ident($($arg:ty),*) -> $ret:ty),*) => {$(
        fn $f(self, $(_: $arg),*) -> Result<$ret, Unsupported> {
            Err(not_a_key())
        }
    )*};
}

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Impossible<(), Unsupported>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Impossible<(), Unsupported>;
    type SerializeStruct = Impossible<(), Unsupported>;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    integer_keys!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.quoted(if v { b"true" } else { b"false" })
    }

    fn serialize_f32(self, v: f32) -> Result<(), Unsupported> {
        if !v.is_finite() {
            return Err(not_a_key());
        }
        self.quoted(zmij::Buffer::new().format_finite(v).as_bytes())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Unsupported> {
        if !v.is_finite() {
            return Err(not_a_key());
        }
        self.quoted(zmij::Buffer::new().format_finite(v).as_bytes())
    }

    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        string(self.0, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        string(self.0, v);
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        string(self.0, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        v.serialize(self)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Unsupported> {
        Err(not_a_key())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unsupported> {
        Err(not_a_key())
    }

    refuse!(
        serialize_bytes(&[u8]) -> (),
        serialize_none() -> (),
        serialize_unit() -> (),
        serialize_unit_struct(&'static str) -> (),
        serialize_seq(Option<usize>) -> Impossible<(), Unsupported>,
        serialize_tuple(usize) -> Impossible<(), Unsupported>,
        serialize_tuple_struct(&'static str, usize) -> Impossible<(), Unsupported>,
        serialize_tuple_variant(&'static str, u32, &'static str, usize)
            -> Impossible<(), Unsupported>,
        serialize_map(Option<usize>) -> Impossible<(), Unsupported>,
        serialize_struct(&'static str, usize) -> Impossible<(), Unsupported>,
        serialize_struct_variant(&'static str, u32, &'static str, usize)
            -> Impossible<(), Unsupported>
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::{BTreeMap, HashMap};

    fn same<T: Serialize + ?Sized>(v: &T) -> String {
        let mut ours = Vec::new();
        write(&mut ours, v).expect("our writer takes it");
        let theirs = serde_json::to_vec(v).expect("serde_json takes it");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        String::from_utf8(ours).expect("utf-8")
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é中\u{7f}\u{2028}🦀");
        same(&all);
        // every control, quote and backslash at every position of a word and across words
        for special in [
            "\"", "\\", "\n", "\t", "\u{0}", "\u{1f}", "\u{8}", "\u{c}", "\r",
        ] {
            for base in ["abc", "abcdefghijklmno", "abcdefghijklmnopqrst"] {
                for at in 0..=base.len() {
                    let mut s = base.to_owned();
                    s.insert_str(at, special);
                    same(&s);
                }
            }
        }
        for len in 0..40 {
            same(&"x".repeat(len));
            same(&"\"".repeat(len));
            same(&"é".repeat(len));
        }
        assert_eq!(same("a\"b\\c\u{1}"), r#""a\"b\\c\u0001""#);
    }

    #[test]
    fn a_word_with_any_escape_is_found_and_one_without_is_not() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut w = *b"abcdefgh";
                w[at] = b;
                let found = word_needs_escape(u64::from_le_bytes(w));
                assert_eq!(found, ESCAPE[usize::from(b)] != 0, "byte {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn numbers_and_the_rest_of_serdes_data_model() {
        same(&(
            i64::MIN,
            i64::MAX,
            u64::MAX,
            0u8,
            -1i8,
            i128::MIN,
            u128::MAX,
            true,
            false,
            (),
        ));
        for f in [
            0.0,
            -0.0,
            1.0,
            0.1,
            1e21,
            1e-7,
            123456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            same(&f);
            #[allow(clippy::cast_possible_truncation)]
            same(&(f as f32));
        }
        same(&Some('x'));
        same(&None::<u32>);
        same(&serde_bytes_like());
        same(&vec![Vec::<u32>::new(), vec![1, 2]]);
        let mut m = BTreeMap::new();
        m.insert(3u32, "three");
        m.insert(10, "ten");
        same(&m);
        let mut h = HashMap::new();
        h.insert(true, 1);
        same(&h);
        let mut fk = BTreeMap::new();
        fk.insert("k\n".to_owned(), BTreeMap::<String, i64>::new());
        same(&fk);
        same(&serde_json::json!({"a": [1, 2.5, null, {"b": "c"}], "d": {}}));
    }

    fn serde_bytes_like() -> impl Serialize {
        struct B;
        impl Serialize for B {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&[0, 1, 255])
            }
        }
        B
    }

    #[derive(Serialize)]
    enum E {
        Unit,
        New(u8),
        Tuple(u8, String),
        Struct { a: u8, b: Option<String> },
    }

    #[derive(Serialize)]
    struct Inner {
        x: u32,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    struct Outer {
        unit: E,
        new: E,
        tuple: E,
        r#struct: E,
        list: Vec<E>,
        #[serde(flatten)]
        inner: Inner,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        #[serde(rename = "we\"ird")]
        weird: (),
    }

    #[test]
    fn enums_flattened_and_skipped_fields() {
        let o = Outer {
            unit: E::Unit,
            new: E::New(1),
            tuple: E::Tuple(2, "t".into()),
            r#struct: E::Struct { a: 3, b: None },
            list: vec![E::Unit, E::New(4)],
            inner: Inner { x: 5 },
            skipped: None,
            weird: (),
        };
        same(&o);
    }

    #[test]
    fn a_key_serde_json_refuses_is_refused() {
        let mut m = BTreeMap::new();
        m.insert(vec![1u8], 1);
        let mut out = Vec::new();
        assert!(write(&mut out, &m).is_err());
        assert!(serde_json::to_vec(&m).is_err());
    }
}
