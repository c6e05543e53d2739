//! The CLI's two output forms, written from field values: columns (opensnoop-style) and JSON
//! lines. Formatting here, not in Python, lets the CLI keep up with an open storm without a
//! Python object per event. Over 400 lines with its unit tests (escapes checked against what
//! Python's `json.dumps(os.fsdecode(...))` gives).
use std::fmt::Write as _;

use crate::schema::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// How a column shows its field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Render {
    /// Numbers in decimal, text made printable, None as the column's placeholder.
    Plain,
    /// A CLOCK_MONOTONIC timestamp as seconds since `start_ns`, with milliseconds (negative
    /// before it).
    Seconds { start_ns: u64 },
    /// A number in octal, zero-padded to the width.
    Octal,
    /// A number, except this value, which shows as the placeholder (`dfd` other than AT_FDCWD).
    Except(i64),
    /// Text cut to its first N bytes (a short container id).
    Prefix(usize),
}

/// One column: a field of the event kind's table, shown `width` wide.
#[derive(Clone, Debug)]
pub struct Column {
    pub title: &'static str,
    /// Index of the field in the event kind's table.
    pub field: usize,
    pub width: usize,
    pub align: Align,
    pub render: Render,
    /// What a None value shows as (where `fallback` has none either).
    pub none: &'static str,
    pub fallback: Option<Fallback>,
}

/// What a column shows where its field is None: another field, after a mark, rendered its way
/// (the PATH column's path as passed for an unresolved full path; CONTAINER's short id for a
/// container whose name is not known).
#[derive(Clone, Copy, Debug)]
pub struct Fallback {
    pub field: usize,
    pub mark: &'static str,
    pub render: Render,
}

/// A line layout: columns separated by one space; the last one is not padded.
#[derive(Clone, Debug, Default)]
pub struct Columns(pub Vec<Column>);

impl Columns {
    pub fn header(&self) -> String {
        let mut out = String::new();
        for (i, column) in self.0.iter().enumerate() {
            let last = i + 1 == self.0.len();
            let fill = if last { 0 } else { column.width.saturating_sub(column.title.len()) };
            if column.align == Align::Right {
                pad(&mut out, fill);
            }
            out.push_str(column.title);
            if column.align == Align::Left {
                pad(&mut out, fill);
            }
            out.push(if last { '\n' } else { ' ' });
        }
        out
    }

    /// One line; `get(i)` is the value of field `i` of the event.
    pub fn write<'a>(&self, get: impl Fn(usize) -> Value<'a>, out: &mut String) {
        for (i, column) in self.0.iter().enumerate() {
            let last = i + 1 == self.0.len();
            let width = if last { 0 } else { column.width };
            let (value, render) = match (get(column.field), column.fallback) {
                (Value::None, Some(fallback)) => match get(fallback.field) {
                    Value::None => (Value::None, column.render),
                    value => {
                        out.push_str(fallback.mark);
                        (value, fallback.render)
                    }
                },
                (value, _) => (value, column.render),
            };
            cell(column, value, render, width, out);
            out.push(if last { '\n' } else { ' ' });
        }
    }
}

/// Seconds from `start_ns` to `ns`: negative for an event stamped before the start (the programs
/// run, and stamp events, before the CLI takes its start time), never clamped to 0.
pub fn seconds_since(ns: u64, start_ns: u64) -> f64 {
    (i128::from(ns) - i128::from(start_ns)) as f64 / 1e9
}

fn cell(column: &Column, value: Value<'_>, render: Render, width: usize, out: &mut String) {
    let start = out.len();
    match (value, render) {
        (Value::UInt(ns), Render::Seconds { start_ns }) => push_seconds(out, ns, start_ns),
        (Value::UInt(n), Render::Octal) => {
            let _ = write!(out, "{n:0width$o}");
        }
        (Value::Int(n), Render::Except(except)) if n == except => out.push_str(column.none),
        (Value::Int(n), _) => return push_int(out, n, width, column.align),
        (Value::UInt(n), _) => return push_uint(out, n, width, column.align),
        (Value::None, _) => out.push_str(column.none),
        (Value::Text(bytes), Render::Prefix(n)) => printable(&bytes[..bytes.len().min(n)], out),
        (Value::Text(bytes) | Value::Bytes(bytes), _) => printable(bytes, out),
        (Value::Name(name), _) => printable(name.as_bytes(), out),
        (array @ Value::Array { .. }, _) => push_array(array, ",", out),
    }
    let used = out[start..].chars().count();
    if used < width {
        match column.align {
            Align::Left => pad(out, width - used),
            Align::Right => {
                let text = out.split_off(start);
                pad(out, width - used);
                out.push_str(&text);
            }
        }
    }
}

/// `n` in at least `width` columns, as `{:<width}` / `{:>width}` would print it, without
/// core::fmt (which was a third of the CLI's time in an open storm).
pub fn push_int(out: &mut String, n: i64, width: usize, align: Align) {
    push_digits(out, n < 0, n.unsigned_abs(), width, align);
}

pub fn push_uint(out: &mut String, n: u64, width: usize, align: Align) {
    push_digits(out, false, n, width, align);
}

/// "00", "01", ... "99": two digits per division (a timestamp has 13 or more).
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
    5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

fn push_digits(out: &mut String, negative: bool, mut rest: u64, width: usize, align: Align) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while rest >= 100 {
        let pair = 2 * (rest % 100) as usize;
        rest /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        let pair = 2 * rest as usize;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + rest as u8;
    }
    let fill = width.saturating_sub(digits.len() - at + usize::from(negative));
    if align == Align::Right {
        pad(out, fill);
    }
    if negative {
        out.push('-');
    }
    // Pushed as one string: char by char was a tenth of the JSON writer's time.
    // SAFETY: ASCII digits, written above, are UTF-8.
    out.push_str(unsafe { core::str::from_utf8_unchecked(&digits[at..]) });
    if align == Align::Left {
        pad(out, fill);
    }
}

fn pad(out: &mut String, mut spaces: usize) {
    const SPACES: &str = "                                ";
    while spaces > 0 {
        let n = spaces.min(SPACES.len());
        out.push_str(&SPACES[..n]);
        spaces -= n;
    }
}

/// Seconds from `start_ns` to `ns` with three decimals, as `{:.3}` prints `seconds_since`: from
/// integers where that gives the same digits (float formatting was a sixth of the CLI's time with
/// `-T`). It does unless the time is before `start_ns`, over 10^6 seconds after it (where an f64
/// no longer tells nanoseconds apart), or exactly half a millisecond off (where the f64's own
/// rounding decides); closer than a nanosecond to a rounding boundary the f64 is never off by more.
fn push_seconds(out: &mut String, ns: u64, start_ns: u64) {
    const HALF_MS: u64 = 500_000;
    match ns.checked_sub(start_ns) {
        Some(diff) if diff < 1_000_000_000_000_000 && diff % (2 * HALF_MS) != HALF_MS => {
            let ms = (diff + HALF_MS) / (2 * HALF_MS);
            push_uint(out, ms / 1000, 0, Align::Left);
            let milli = ms % 1000;
            let digits =
                [b'.', b'0' + (milli / 100) as u8, b'0' + (milli / 10 % 10) as u8, b'0' + (milli % 10) as u8];
            // SAFETY: a dot and ASCII digits are UTF-8.
            out.push_str(unsafe { core::str::from_utf8_unchecked(&digits) });
        }
        _ => {
            let _ = write!(out, "{:.3}", seconds_since(ns, start_ns));
        }
    }
}

/// `bytes` on one terminal line: UTF-8 text as is; control characters as `\n`, `\t`, `\xNN`,
/// `\u{NNNN}`-style escapes; bytes that are not UTF-8 as `\xNN`.
pub fn printable(bytes: &[u8], out: &mut String) {
    // Nearly every path is printable ASCII: copy it whole.
    if bytes.iter().all(|b| (b' '..=b'~').contains(b)) {
        // SAFETY: printable ASCII, just checked, is UTF-8.
        out.push_str(unsafe { std::str::from_utf8_unchecked(bytes) });
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x100 && c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() || is_invisible(c) => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
}

/// Format and separator characters that would rearrange or hide text on a terminal.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Suffix of the key that carries a text field's exact bytes in base64, present only when they
/// are not UTF-8 (`"path_b64"`): the str form keeps them only for readers that undo Python's
/// surrogate escapes, and `jq` and most others turn those into U+FFFD.
pub const B64_SUFFIX: &str = "_b64";

/// A JSON object being written: `json.dumps(dict(fields))` byte for byte (ASCII only, Python's
/// separators), plus a `<name>_b64` key after each text field whose bytes are not UTF-8.
pub struct JsonObject<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> JsonObject<'o> {
    pub fn new(out: &'o mut String) -> JsonObject<'o> {
        out.push('{');
        JsonObject { out, first: true }
    }

    /// Writes `"name": ` (the value is the caller's to write, into [`JsonObject::out`]).
    pub fn key(&mut self, name: &str) {
        self.separate();
        json_str(name, self.out);
        self.out.push_str(": ");
    }

    /// Writes a key made by [`json_key`].
    fn written_key(&mut self, key: &str) {
        self.separate();
        self.out.push_str(key);
    }

    fn separate(&mut self) {
        if !self.first {
            self.out.push_str(", ");
        }
        self.first = false;
    }

    pub fn out(&mut self) -> &mut String {
        self.out
    }

    /// `"name": value` (nothing for `Value::Bytes`, which JSON cannot carry).
    pub fn field(&mut self, name: &str, value: Value<'_>) {
        self.field_as(name, None, value);
    }

    /// As [`JsonObject::field`], with the key as [`json_key`] made it beforehand (a writer of
    /// many objects with the same keys).
    #[inline(always)]
    pub fn field_keyed(&mut self, name: &str, key: &str, value: Value<'_>) {
        self.field_as(name, Some(key), value);
    }

    #[inline(always)]
    fn field_as(&mut self, name: &str, key: Option<&str>, value: Value<'_>) {
        if matches!(value, Value::Bytes(_)) {
            return;
        }
        match key {
            Some(key) => self.written_key(key),
            None => self.key(name),
        }
        match value {
            Value::Bytes(_) => {}
            Value::None => self.out.push_str("null"),
            Value::Int(n) => push_int(self.out, n, 0, Align::Left),
            Value::UInt(n) => push_uint(self.out, n, 0, Align::Left),
            Value::Name(text) => json_str(text, self.out),
            Value::Text(bytes) => {
                if !json_fsdecoded(bytes, self.out) {
                    self.key(&format!("{name}{B64_SUFFIX}"));
                    self.out.push('"');
                    base64(bytes, self.out);
                    self.out.push('"');
                }
            }
            array @ Value::Array { .. } => push_array(array, ", ", self.out),
        }
    }

    pub fn end(self) {
        self.out.push('}');
    }

    /// Ends the object and its line.
    pub fn end_line(self) {
        self.out.push_str("}\n");
    }
}

/// An array of integers: `[1,2,3]` as the CLI shows it (`separator` ","), `[1, 2, 3]` as Python's
/// `json.dumps` writes it (", ").
pub fn push_array(array: Value<'_>, separator: &str, out: &mut String) {
    out.push('[');
    for (i, n) in array.ints().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        match n {
            Value::Int(n) => push_int(out, n, 0, Align::Left),
            Value::UInt(n) => push_uint(out, n, 0, Align::Left),
            _ => {}
        }
    }
    out.push(']');
}

fn json_str(text: &str, out: &mut String) {
    json_fsdecoded(text.as_bytes(), out);
}

/// `"name": `, as [`JsonObject::key`] writes it, for [`JsonObject::field_keyed`].
pub fn json_key(name: &str) -> String {
    let mut key = String::new();
    json_str(name, &mut key);
    key.push_str(": ");
    key
}

/// A JSON string as Python's `json.dumps` writes `os.fsdecode(bytes)`: non-ASCII as `\uXXXX`
/// (astral characters as surrogate pairs), undecodable bytes as their surrogate escape `\udcXX`.
/// Returns whether `bytes` are UTF-8.
fn json_fsdecoded(bytes: &[u8], out: &mut String) -> bool {
    out.push('"');
    if bytes.iter().all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        // SAFETY: printable ASCII, just checked, is UTF-8 (validating it again was a tenth of
        // the JSON writer's time).
        out.push_str(unsafe { std::str::from_utf8_unchecked(bytes) });
        out.push('"');
        return true;
    }
    let mut utf8 = true;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                ' '..='~' => out.push(c),
                c => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
            }
        }
        for byte in chunk.invalid() {
            utf8 = false;
            let _ = write!(out, "\\udc{byte:02x}");
        }
    }
    out.push('"');
    utf8
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(title: &'static str, field: usize, width: usize, align: Align, render: Render) -> Column {
        Column { title, field, width, align, render, none: "-", fallback: None }
    }

    #[test]
    fn integers_are_written_as_format_writes_them() {
        let mut values: Vec<i64> =
            vec![0, 1, 9, 10, 99, 100, 101, 999, 1000, i64::MAX, i64::MIN, -1, -10, -99, -100];
        values.extend((0..100_000i64).map(|i| i.wrapping_mul(6_364_136_223_846_793_005) >> (i % 60)));
        for n in values {
            for (width, align) in [(0, Align::Left), (7, Align::Left), (7, Align::Right)] {
                let mut ours = String::new();
                push_int(&mut ours, n, width, align);
                let theirs =
                    if align == Align::Left { format!("{n:<width$}") } else { format!("{n:>width$}") };
                assert_eq!(ours, theirs);
            }
            let mut ours = String::new();
            push_uint(&mut ours, n as u64, 0, Align::Left);
            assert_eq!(ours, (n as u64).to_string());
        }
    }

    #[test]
    fn seconds_are_written_as_the_float_formatting_writes_them() {
        let start = 1_000_000_007;
        let mut diffs: Vec<u64> = vec![0, 1, 499_999, 500_000, 500_001, 999_999, 1_000_000, 1_499_999_999];
        diffs
            .extend((0..200_000u64).map(|i| i.wrapping_mul(6_364_136_223_846_793_005) % 100_000_000_000_000));
        diffs.extend((0..2000u64).map(|i| i * 1_000_000 + 500_000));
        diffs.extend([999_999_999_999_999, 1_000_000_000_000_000, 5_000_000_000_000_123]);
        for diff in diffs {
            for ns in [start + diff, start.saturating_sub(diff)] {
                let mut fast = String::new();
                push_seconds(&mut fast, ns, start);
                assert_eq!(fast, format!("{:.3}", seconds_since(ns, start)), "{ns} from {start}");
            }
        }
    }

    #[test]
    fn columns_align_titles_and_values_alike() {
        let columns = Columns(vec![
            column("TIME(s)", 0, 8, Align::Left, Render::Seconds { start_ns: 500_000_000 }),
            column("N", 1, 4, Align::Right, Render::Plain),
            column("FLAGS", 2, 8, Align::Left, Render::Octal),
            column("NAME", 3, 6, Align::Left, Render::Plain),
            column("PATH", 4, 0, Align::Left, Render::Plain),
        ]);
        assert_eq!(columns.header(), "TIME(s)     N FLAGS    NAME   PATH\n");
        let values = [
            Value::UInt(1_750_000_000),
            Value::Int(-1),
            Value::UInt(0o101),
            Value::None,
            Value::Text(b"/a b"),
        ];
        let mut out = String::new();
        columns.write(|i| values[i], &mut out);
        assert_eq!(out, "1.250      -1 00000101 -      /a b\n");
        // Before the start: a negative time, not 0.
        let early =
            [Value::UInt(250_000_000), Value::Int(3), Value::UInt(0), Value::None, Value::Text(b"/c")];
        out.clear();
        columns.write(|i| early[i], &mut out);
        assert_eq!(out, "-0.250      3 00000000 -      /c\n");
    }

    #[test]
    fn seconds_before_the_start_are_negative() {
        assert_eq!(seconds_since(1_500_000_000, 1_000_000_000), 0.5);
        assert_eq!(seconds_since(999_877_000, 1_000_000_000), -0.000123);
        assert_eq!(seconds_since(0, u64::MAX), -(u64::MAX as f64) / 1e9);
        assert_eq!(format!("{:.6}", seconds_since(999_877_000, 1_000_000_000)), "-0.000123");
    }

    #[test]
    fn integers_like_core_fmt() {
        for n in [0, 7, -1, -100, 4_194_304, i64::MAX, i64::MIN] {
            for width in [0, 3, 6, 25] {
                let (mut left, mut right) = (String::new(), String::new());
                push_int(&mut left, n, width, Align::Left);
                push_int(&mut right, n, width, Align::Right);
                assert_eq!(left, format!("{n:<width$}"));
                assert_eq!(right, format!("{n:>width$}"));
            }
        }
        let mut out = String::new();
        push_uint(&mut out, u64::MAX, 0, Align::Left);
        assert_eq!(out, u64::MAX.to_string());
    }

    #[test]
    fn printable_escapes_what_would_break_a_line() {
        let mut out = String::new();
        printable(b"a\nb\tc\x1b[0m\xff caf\xc3\xa9 \xe2\x80\xae", &mut out);
        assert_eq!(out, "a\\nb\\tc\\x1b[0m\\xff caf\u{e9} \\u202e");
    }

    #[test]
    fn json_escapes_like_python_and_keeps_the_bytes() {
        let mut out = String::new();
        let mut object = JsonObject::new(&mut out);
        for (name, value) in [
            ("n", Value::Int(-3)),
            ("none", Value::None),
            ("raw", Value::Bytes(b"skipped")),
            ("path", Value::Text(b"q\"b\\ caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\x01")),
            ("ok", Value::Text(b"/etc")),
        ] {
            // The CLI's writer's way: each key written out beforehand.
            object.field_keyed(name, &json_key(name), value);
        }
        object.end_line();
        assert_eq!(
            out,
            "{\"n\": -3, \"none\": null, \"path\": \"q\\\"b\\\\ caf\\u00e9 \\ud83d\\ude00 \\udcff\\u0001\", \
             \"path_b64\": \"cSJiXCBjYWbDqSDwn5iAIP8B\", \"ok\": \"/etc\"}\n"
        );
    }

    #[test]
    fn base64_like_rfc_4648() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ] {
            let mut out = String::new();
            base64(raw.as_bytes(), &mut out);
            assert_eq!(out, encoded);
        }
    }
}
