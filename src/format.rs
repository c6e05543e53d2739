//! One event as borrowed fields (`View`), and the CLI's two output formats written straight from
//! views: opensnoop-style columns and JSON lines. Formatting here, not in Python, lets the CLI keep
//! up with an open storm without building a Python object per event.
use std::fmt::Write as _;

use opentrace_common::{COMM_LEN, EventHeader, HEADER_SIZE, Syscall};
use pyo3::prelude::*;

/// The fields of one event, borrowed from a ring buffer record or an `OpenEvent`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub timestamp_ns: u64,
    pub ret: i64,
    pub flags: u64,
    pub mode: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub dfd: i32,
    pub syscall: Syscall,
    pub comm: &'a [u8],
    pub path: &'a [u8],
}

impl<'a> View<'a> {
    /// Parses one ring buffer record; `None` for a record this build does not understand.
    pub fn parse(record: &'a [u8]) -> Option<View<'a>> {
        if record.len() < HEADER_SIZE {
            return None;
        }
        // SAFETY: length checked; `EventHeader` is plain integers, read unaligned.
        let header = unsafe { record.as_ptr().cast::<EventHeader>().read_unaligned() };
        let path = record.get(HEADER_SIZE..HEADER_SIZE + usize::from(header.path_len))?;
        let comm_len = header.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        // The header was copied out; the comm bytes are re-borrowed from the record.
        let comm_at = core::mem::offset_of!(EventHeader, comm);
        Some(View {
            timestamp_ns: header.timestamp_ns,
            ret: header.ret,
            flags: header.flags,
            mode: header.mode,
            pid: header.pid,
            tid: header.tid,
            uid: header.uid,
            dfd: header.dfd,
            syscall: Syscall::from_u8(header.syscall)?,
            comm: &record[comm_at..comm_at + comm_len],
            path,
        })
    }
}

/// Output options of the CLI.
#[pyclass(module = "opentrace._opentrace", frozen)]
pub struct Formatter {
    json: bool,
    timestamp: bool,
    uid: bool,
    extended: bool,
    /// `TIME(s)` counts from here (CLOCK_MONOTONIC ns).
    start_ns: u64,
}

#[pymethods]
impl Formatter {
    #[new]
    #[pyo3(signature = (*, json = false, timestamp = false, uid = false, extended = false, start_ns = 0))]
    fn new(json: bool, timestamp: bool, uid: bool, extended: bool, start_ns: u64) -> Formatter {
        Formatter { json, timestamp, uid, extended, start_ns }
    }

    /// The column header line (empty for JSON).
    fn header(&self) -> String {
        if self.json {
            return String::new();
        }
        let mut out = String::new();
        if self.timestamp {
            out.push_str("TIME(s)  ");
        }
        if self.uid {
            out.push_str("UID     ");
        }
        out.push_str("PID    COMM              FD ERR ");
        if self.extended {
            out.push_str("FLAGS    ");
        }
        out.push_str("PATH\n");
        out
    }

    /// The lines of `events`, as the CLI prints them.
    fn format(&self, events: Vec<PyRef<'_, crate::event::OpenEvent>>) -> String {
        let mut out = String::new();
        for event in &events {
            self.write(&event.view(), &mut out);
        }
        out
    }
}

impl Formatter {
    pub fn write(&self, v: &View<'_>, out: &mut String) {
        if self.json {
            write_json(v, out);
        } else {
            self.write_columns(v, out);
        }
    }

    fn write_columns(&self, v: &View<'_>, out: &mut String) {
        // Writing into a String cannot fail.
        if self.timestamp {
            let seconds = v.timestamp_ns.saturating_sub(self.start_ns) as f64 / 1e9;
            let _ = write!(out, "{seconds:<8.3} ");
        }
        // The columns by hand: core::fmt was a third of the CLI's time in an open storm.
        if self.uid {
            push_int(out, v.uid.into(), 7, Align::Left);
            out.push(' ');
        }
        let (fd, err) = if v.ret >= 0 { (v.ret, 0) } else { (-1, -v.ret) };
        push_int(out, v.pid.into(), 6, Align::Left);
        out.push(' ');
        let start = out.len();
        printable(v.comm, out);
        let width = out[start..].chars().count();
        pad(out, 16 - width.min(16));
        out.push(' ');
        push_int(out, fd, 3, Align::Right);
        out.push(' ');
        push_int(out, err, 3, Align::Right);
        out.push(' ');
        if self.extended {
            let _ = write!(out, "{:08o} ", v.flags);
        }
        printable(v.path, out);
        out.push('\n');
    }
}

enum Align {
    Left,
    Right,
}

/// `n` in at least `width` columns, as `{:<width}` / `{:>width}` would print it.
fn push_int(out: &mut String, n: i64, width: usize, align: Align) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let sign = usize::from(n < 0);
    let fill = width.saturating_sub(digits.len() - at + sign);
    if let Align::Right = align {
        pad(out, fill);
    }
    if n < 0 {
        out.push('-');
    }
    // SAFETY: ASCII digits.
    out.push_str(unsafe { std::str::from_utf8_unchecked(&digits[at..]) });
    if let Align::Left = align {
        pad(out, fill);
    }
}

fn pad(out: &mut String, spaces: usize) {
    const SPACES: &str = "                ";
    let mut left = spaces;
    while left > 0 {
        let n = left.min(SPACES.len());
        out.push_str(&SPACES[..n]);
        left -= n;
    }
}

/// `bytes` on one terminal line: UTF-8 text as is; control characters as `\n`, `\t`, `\xNN`,
/// `\u{NNNN}`-style escapes; bytes that are not UTF-8 as `\xNN`.
pub fn printable(bytes: &[u8], out: &mut String) {
    // Nearly every path is printable ASCII: copy it whole.
    if bytes.iter().all(|b| (b' '..=b'~').contains(b)) {
        // SAFETY: ASCII is UTF-8.
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

/// `json.dumps(event.to_dict())`, byte for byte (ASCII only; the path decoded like `os.fsdecode`).
pub fn write_json(v: &View<'_>, out: &mut String) {
    let _ = write!(
        out,
        "{{\"timestamp_ns\": {}, \"pid\": {}, \"tid\": {}, \"uid\": {}, \"comm\": ",
        v.timestamp_ns, v.pid, v.tid, v.uid
    );
    json_string(v.comm, out);
    let _ = write!(out, ", \"syscall\": \"{}\", \"path\": ", v.syscall.name());
    json_string(v.path, out);
    let _ = write!(
        out,
        ", \"dfd\": {}, \"flags\": {}, \"mode\": {}, \"ret\": {}, ",
        v.dfd, v.flags, v.mode, v.ret
    );
    if v.ret >= 0 {
        let _ = writeln!(out, "\"fd\": {}, \"errno\": null}}", v.ret);
    } else {
        let _ = writeln!(out, "\"fd\": null, \"errno\": {}}}", -v.ret);
    }
}

/// A JSON string as Python's `json.dumps` writes `os.fsdecode(bytes)`: non-ASCII as `\uXXXX`
/// (astral characters as surrogate pairs), undecodable bytes as their surrogate escape `\udcXX`.
fn json_string(bytes: &[u8], out: &mut String) {
    out.push('"');
    if bytes.iter().all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        // SAFETY: ASCII is UTF-8.
        out.push_str(unsafe { std::str::from_utf8_unchecked(bytes) });
        out.push('"');
        return;
    }
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
            let _ = write!(out, "\\udc{byte:02x}");
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(comm: &'a [u8], path: &'a [u8], ret: i64) -> View<'a> {
        View {
            timestamp_ns: 1_500_000_000,
            ret,
            flags: 0o100101,
            mode: 0o644,
            pid: 42,
            tid: 43,
            uid: 1000,
            dfd: -100,
            syscall: Syscall::Openat,
            comm,
            path,
        }
    }

    #[test]
    fn columns_like_opensnoop() {
        let f = Formatter { json: false, timestamp: true, uid: true, extended: true, start_ns: 500_000_000 };
        let mut out = String::new();
        f.write(&view(b"cat", b"/etc/passwd", 3), &mut out);
        f.write(&view(b"cat", b"/nope", -2), &mut out);
        assert_eq!(
            out,
            "1.000    1000    42     cat                3   0 00100101 /etc/passwd\n\
             1.000    1000    42     cat               -1   2 00100101 /nope\n"
        );
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
    }

    #[test]
    fn printable_escapes_what_would_break_a_line() {
        let mut out = String::new();
        printable(b"a\nb\tc\x1b[0m\xff caf\xc3\xa9 \xe2\x80\xae", &mut out);
        assert_eq!(out, "a\\nb\\tc\\x1b[0m\\xff caf\u{e9} \\u202e");
    }

    #[test]
    fn json_escapes_like_python() {
        let mut out = String::new();
        json_string(b"q\"b\\ caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\x01", &mut out);
        assert_eq!(out, r#""q\"b\\ caf\u00e9 \ud83d\ude00 \udcff\u0001""#);
    }
}
