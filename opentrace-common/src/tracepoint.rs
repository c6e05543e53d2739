//! Any tracepoint's records, decoded by its `format` file: what the generic program copies
//! ([`Schema::config`]) and how each field reads back ([`Schema::value`]). Over 400 lines with
//! its unit tests, which carry whole format files to decode.
use core::fmt::Write as _;

use crate::{
    abi::tracepoint::{
        TP_LOCS, TP_STRING_FAULT, TP_STRINGS, TRACEPOINT_HEADER_SIZE, TracepointConfig, TracepointHeader,
    },
    schema::{self, DICT, NoSet, REPR, Value, table},
    text::{Align, JsonObject, printable, push_array, push_int, push_uint},
    tracefs::{Field, Format},
};

/// How one field is read from a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An integer of `size` bytes (1, 2, 4 or 8), read as `size` bytes at the field's offset.
    /// A syscall argument's 8-byte slot holding a narrower C type is read as that type.
    Int { size: u8, signed: bool },
    /// `char name[N]`: text up to the first NUL.
    Chars,
    /// A fixed array of integers of `elem` bytes each.
    Array { elem: u8, signed: bool },
    /// `__data_loc`/`__rel_loc` (`rel`) data: text for `char[]`, else an array of `elem`-byte
    /// integers.
    Loc { rel: bool, text: bool, elem: u8, signed: bool },
    /// A pointer to a NUL-terminated string in the process, copied by the program: the index of
    /// the copy among the record's strings.
    UserString(u8),
    /// Anything else (a struct laid out in the record): its bytes, as an array of bytes.
    Bytes,
}

/// One field the user sees (the `common_*` ones are not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldReader {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub kind: Kind,
}

/// A tracepoint the generic program can stream, and how to read its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// `category:name`.
    pub name: String,
    pub id: u32,
    pub fields: Vec<FieldReader>,
    pub config: TracepointConfig,
}

/// The names syscall tracepoints give arguments that point to a NUL-terminated string (paths,
/// xattr and key names, mount's strings); never a buffer with a length beside it (`write`'s
/// `buf`).
const STRING_ARGS: &[&str] = &[
    "filename",
    "pathname",
    "oldname",
    "newname",
    "path",
    "name",
    "uname",
    "u_name",
    "to_pathname",
    "from_pathname",
    "dev_name",
    "dir_name",
    "type",
    "_type",
    "_description",
    "_callout_info",
    "_key",
    "specialfile",
    "special",
    "put_old",
    "new_root",
    "_fs_name",
];
/// Syscalls whose `name` is a buffer with a length, not a NUL-terminated string.
const NAME_IS_A_BUFFER: &[&str] = &["sys_enter_sethostname", "sys_enter_setdomainname"];

/// The C type without qualifiers: `const char *` -> `char *`.
fn bare(ty: &str) -> String {
    ty.split_whitespace().filter(|w| !matches!(*w, "const" | "volatile")).collect::<Vec<_>>().join(" ")
}

/// Width and signedness of the integer types syscall arguments are declared with (each in an
/// 8-byte slot); None for types not listed (read as the slot says).
fn c_integer(ty: &str) -> Option<(u8, bool)> {
    Some(match ty {
        "char" | "signed char" | "s8" | "__s8" => (1, true),
        "unsigned char" | "u8" | "__u8" | "bool" => (1, false),
        "short" | "s16" | "__s16" => (2, true),
        "unsigned short" | "u16" | "__u16" | "umode_t" => (2, false),
        "int" | "s32" | "__s32" | "pid_t" | "key_serial_t" | "mqd_t" | "timer_t" | "clockid_t" | "rwf_t"
        | "key_t" => (4, true),
        "unsigned" | "unsigned int" | "u32" | "__u32" | "uid_t" | "gid_t" | "qid_t" => (4, false),
        "long" | "long long" | "s64" | "__s64" | "loff_t" | "off_t" | "ssize_t" | "__kernel_old_time_t" => {
            (8, true)
        }
        "unsigned long" | "unsigned long long" | "u64" | "__u64" | "size_t" | "aio_context_t" => (8, false),
        ty if ty.starts_with("enum ") => (4, false),
        _ => return None,
    })
}

/// Size of an array element type, from its name.
fn element_size(ty: &str) -> Option<u8> {
    c_integer(ty).map(|(size, _)| size)
}

fn is_char(ty: &str) -> bool {
    ty == "char"
}

/// Reads `category:name`'s format into a schema; the error says why the program cannot use it.
pub fn schema(category: &str, format: &Format) -> Result<Schema, String> {
    let name = format!("{category}:{}", format.name);
    if format.id == 0 || format.id > u32::from(u16::MAX) {
        return Err(format!("its id {} is not a 16-bit record type", format.id));
    }
    let end = format.fields.iter().map(|f| f.offset + f.size).max().unwrap_or(0);
    if end > u32::from(u16::MAX) {
        return Err(format!("its record is {end} bytes long"));
    }
    let mut config = TracepointConfig { size: end as u16, ..TracepointConfig::default() };
    let syscall = category == "syscalls";
    let strings_allowed = syscall && format.name.starts_with("sys_enter_");
    let mut fields = Vec::new();
    for field in &format.fields {
        let ty = bare(&field.ty);
        let kind =
            if let Some(rest) = ty.strip_prefix("__data_loc ").or_else(|| ty.strip_prefix("__rel_loc ")) {
                let rel = ty.starts_with("__rel_loc");
                if field.size != 4 {
                    return Err(format!("its dynamic field {} is {} bytes, not 4", field.name, field.size));
                }
                let at = usize::from(config.n_locs);
                if at == TP_LOCS {
                    return Err(format!("it has more than {TP_LOCS} dynamic fields"));
                }
                config.locs[at] = field.offset as u16;
                config.loc_rel |= u8::from(rel) << at;
                config.n_locs += 1;
                let element = rest.trim_end_matches("[]").trim();
                let (elem, signed) = match c_integer(element) {
                    Some((size, signed)) => (size, signed),
                    None => (1, false),
                };
                Kind::Loc { rel, text: is_char(element), elem, signed }
            } else if let Some(open) = ty.find('[') {
                let element = ty[..open].trim();
                let count = ty[open + 1..].trim_end_matches(']').trim().parse::<u32>().unwrap_or(0);
                if is_char(element) {
                    Kind::Chars
                } else {
                    match (count, element_size(element)) {
                        (n, Some(elem)) if n > 0 && field.size == n * u32::from(elem) => {
                            Kind::Array { elem, signed: field.signed }
                        }
                        _ => Kind::Bytes,
                    }
                }
            } else if ty.ends_with('*') && !ty.ends_with("* *") && !ty.ends_with("**") {
                let string = strings_allowed
                    && field.size == 8
                    && ty == "char *"
                    && STRING_ARGS.contains(&field.name.as_str())
                    && !(field.name == "name" && NAME_IS_A_BUFFER.contains(&format.name.as_str()))
                    && usize::from(config.n_strings) < TP_STRINGS;
                if string {
                    config.strings[usize::from(config.n_strings)] = field.offset as u16;
                    config.n_strings += 1;
                    Kind::UserString(config.n_strings - 1)
                } else {
                    pointer(field)
                }
            } else if ty.contains('*') {
                pointer(field)
            } else {
                match field.size {
                    // A syscall argument: an 8-byte slot holding the C type it names.
                    8 if syscall => {
                        let (size, signed) = c_integer(&ty).unwrap_or((8, field.signed));
                        Kind::Int { size, signed }
                    }
                    1 | 2 | 4 | 8 => Kind::Int { size: field.size as u8, signed: field.signed },
                    _ => Kind::Bytes,
                }
            };
        if !field.name.starts_with("common_") {
            fields.push(FieldReader {
                name: field.name.clone(),
                offset: field.offset,
                size: field.size,
                kind,
            });
        }
    }
    Ok(Schema { name, id: format.id, fields, config })
}

/// A pointer is an unsigned integer (an address means nothing to the reader but as a number).
fn pointer(field: &Field) -> Kind {
    match field.size {
        1 | 2 | 4 | 8 => Kind::Int { size: field.size as u8, signed: false },
        _ => Kind::Bytes,
    }
}

/// Reads an integer of `size` bytes (1, 2, 4 or 8; little-endian) at `at`.
fn int_at(raw: &[u8], at: usize, size: u8, signed: bool) -> Option<Value<'_>> {
    let bytes = raw.get(at..at + usize::from(size))?;
    Value::Array { bytes, elem: size, signed }.ints().next()
}

/// Text up to the first NUL.
fn text(bytes: &[u8]) -> Value<'_> {
    Value::Text(&bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())])
}

impl Schema {
    /// The value of `field` in a record (`raw`, as copied) with its copied `strings` (None: could
    /// not be read). None when the record is too short for it (a truncated copy).
    pub fn value<'a>(&self, field: &FieldReader, raw: &'a [u8], strings: &[Option<&'a [u8]>]) -> Value<'a> {
        let at = field.offset as usize;
        let slice = || raw.get(at..at + field.size as usize);
        let value = match field.kind {
            Kind::Int { size, signed } => int_at(raw, at, size, signed),
            Kind::Chars => slice().map(text),
            Kind::Array { elem, signed } => slice().map(|bytes| Value::Array { bytes, elem, signed }),
            Kind::Bytes => slice().map(|bytes| Value::Array { bytes, elem: 1, signed: false }),
            Kind::UserString(index) => strings.get(usize::from(index)).copied().flatten().map(Value::Text),
            Kind::Loc { rel, text: is_text, elem, signed } => (|| {
                let Value::UInt(loc) = int_at(raw, at, 4, false)? else { return None };
                let (mut start, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
                if rel {
                    start += at + 4;
                }
                let bytes = raw.get(start..start + len)?;
                Some(if is_text { text(bytes) } else { Value::Array { bytes, elem, signed } })
            })(),
        };
        value.unwrap_or(Value::None)
    }
}

/// Why a tracepoint record could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short {
        len: usize,
    },
    /// No watched tracepoint has this id.
    Unknown(u16),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Short { len } => write!(f, "a {len}-byte tracepoint record is cut short"),
            DecodeError::Unknown(id) => write!(f, "a record of tracepoint id {id}, which is not watched"),
        }
    }
}

/// A tracepoint event, borrowed from a ring record (or from its owned copy).
#[derive(Clone, Copy)]
pub struct Event<'a> {
    pub schema: &'a Schema,
    pub head: &'a TracepointHeader,
    /// The tracepoint's record, as copied.
    pub raw: &'a [u8],
    /// The strings the program copied, in the order of the schema's [`Kind::UserString`]s.
    pub strings: Strings<'a>,
}

impl<'a> Event<'a> {
    pub fn comm(&self) -> &'a [u8] {
        let comm = &self.head.comm;
        &comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())]
    }

    /// Every field but the `common_*` ones, in file order.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + '_ {
        let schema: &'a Schema = self.schema;
        schema.fields.iter().map(move |f| (f.name.as_str(), schema.value(f, self.raw, &self.strings)))
    }

    pub fn field(&self, name: &str) -> Option<Value<'a>> {
        let schema: &'a Schema = self.schema;
        schema.fields.iter().find(|f| f.name == name).map(|f| schema.value(f, self.raw, &self.strings))
    }

    /// One JSON line: the attributes, then `"fields": {...}`.
    pub fn write_json(&self, out: &mut String) {
        let mut object = JsonObject::new(out);
        for attribute in ATTRIBUTES {
            object.field(attribute.name, (attribute.get)(*self));
        }
        object.key("fields");
        let mut fields = JsonObject::new(object.out());
        for (name, value) in self.fields() {
            fields.field(name, value);
        }
        fields.end();
        object.end();
        out.push('\n');
    }

    /// One CLI line: `TIME CPU PID COMM TRACEPOINT name=value ...` (TIME in seconds since
    /// `start_ns`, negative before it), values shown as the open lines show them.
    pub fn write_line(&self, start_ns: u64, out: &mut String) {
        let seconds = crate::text::seconds_since(self.head.timestamp_ns, start_ns);
        let _ = write!(out, "{seconds:<12.6} {:<3} ", self.head.cpu);
        push_uint(out, u64::from(self.head.pid), 7, Align::Left);
        out.push(' ');
        let start = out.len();
        printable(self.comm(), out);
        let used = out[start..].chars().count();
        out.extend(core::iter::repeat_n(' ', 16usize.saturating_sub(used)));
        out.push(' ');
        out.push_str(&self.schema.name);
        for (name, value) in self.fields() {
            out.push(' ');
            out.push_str(name);
            out.push('=');
            match value {
                Value::None => out.push('-'),
                Value::Int(n) => push_int(out, n, 0, Align::Left),
                Value::UInt(n) => push_uint(out, n, 0, Align::Left),
                Value::Text(bytes) | Value::Bytes(bytes) => printable(bytes, out),
                Value::Name(name) => printable(name.as_bytes(), out),
                array @ Value::Array { .. } => push_array(array, ",", out),
            }
        }
        out.push('\n');
    }
}

pub type Get = for<'a> fn(Event<'a>) -> Value<'a>;

table! {
    /// A tracepoint event's attributes besides `fields`, in the order `to_dict()` and the JSON
    /// lines give them (all of them in both; those marked `REPR` in `repr()`).
    pub static ATTRIBUTES: &[schema::Field<Get, NoSet>];
    /// An attribute of [`ATTRIBUTES`], by name.
    pub enum Attr {
        Tracepoint => schema::Field {
            name: "tracepoint",
            get: |e| Value::Text(e.schema.name.as_bytes()),
            set: None,
            show: DICT | REPR,
            member: None,
        },
        TimestampNs => schema::Field { name: "timestamp_ns", get: |e| Value::UInt(e.head.timestamp_ns), set: None, show: DICT, member: None },
        Cpu => schema::Field { name: "cpu", get: |e| Value::from(e.head.cpu), set: None, show: DICT, member: None },
        Pid => schema::Field { name: "pid", get: |e| Value::from(e.head.pid), set: None, show: DICT | REPR, member: None },
        Tid => schema::Field { name: "tid", get: |e| Value::from(e.head.tid), set: None, show: DICT | REPR, member: None },
        Uid => schema::Field { name: "uid", get: |e| Value::from(e.head.uid), set: None, show: DICT, member: None },
        Comm => schema::Field { name: "comm", get: |e| Value::Text(e.comm()), set: None, show: DICT | REPR, member: None },
    }
}

/// The header line of [`Event::write_line`]'s lines.
pub const LINE_HEADER: &str = "TIME(s)      CPU PID     COMM             TRACEPOINT FIELDS\n";

/// The strings of a record (None: not read).
pub type Strings<'a> = [Option<&'a [u8]>; TP_STRINGS];

/// Splits a [`crate::RecordKind::Tracepoint`] record: its header (with the tracepoint's id), the
/// tracepoint's record and its strings.
pub fn split(record: &[u8]) -> Result<(TracepointHeader, &[u8], Strings<'_>), DecodeError> {
    let short = DecodeError::Short { len: record.len() };
    let head = record.get(..TRACEPOINT_HEADER_SIZE).ok_or(DecodeError::Short { len: record.len() })?;
    // SAFETY: the length is checked; `TracepointHeader` is plain integers, read unaligned.
    let head = unsafe { head.as_ptr().cast::<TracepointHeader>().read_unaligned() };
    let raw_end = TRACEPOINT_HEADER_SIZE + usize::from(head.raw_len);
    let raw = record.get(TRACEPOINT_HEADER_SIZE..raw_end).ok_or(short)?;
    let mut strings = [None; TP_STRINGS];
    let mut at = raw_end;
    for string in strings.iter_mut().take(usize::from(head.n_strings)) {
        let len = record.get(at..at + 2).ok_or(DecodeError::Short { len: record.len() })?;
        let len = u16::from_le_bytes([len[0], len[1]]);
        at += 2;
        if len != TP_STRING_FAULT {
            let end = at + usize::from(len);
            *string = Some(record.get(at..end).ok_or(DecodeError::Short { len: record.len() })?);
            at = end;
        }
    }
    Ok((head, raw, strings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracefs::parse;

    const OPENAT: &str = "name: sys_enter_openat
ID: 700
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"dfd: 0x%08lx\"
";

    const FORK: &str = "name: sched_process_fork
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__rel_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:u8 addr[4];\toffset:20;\tsize:4;\tsigned:0;
\tfield:char comm[8];\toffset:24;\tsize:8;\tsigned:0;

print fmt: \"x\"
";

    fn values<'a>(s: &Schema, raw: &'a [u8], strings: &[Option<&'a [u8]>]) -> Vec<(String, Value<'a>)> {
        s.fields.iter().map(|f| (f.name.clone(), s.value(f, raw, strings))).collect()
    }

    #[test]
    fn syscall_slots_read_as_their_c_types_and_strings_are_copied() {
        let s = schema("syscalls", &parse(OPENAT).unwrap()).unwrap();
        assert_eq!(s.name, "syscalls:sys_enter_openat");
        assert_eq!((s.config.size, s.config.n_strings, s.config.strings[0]), (48, 1, 24));
        let mut raw = vec![0u8; 48];
        raw[8..12].copy_from_slice(&257i32.to_le_bytes());
        raw[16..24].copy_from_slice(&(-100i64 as u64 & 0xffff_ffff).to_le_bytes());
        raw[32..40].copy_from_slice(&0o2101u64.to_le_bytes());
        raw[40..48].copy_from_slice(&0xffff_0000_0000_01a4u64.to_le_bytes());
        let got = values(&s, &raw, &[Some(b"/etc/passwd")]);
        assert_eq!(
            got,
            [
                ("__syscall_nr".into(), Value::Int(257)),
                ("dfd".into(), Value::Int(-100)),
                ("filename".into(), Value::Text(b"/etc/passwd")),
                ("flags".into(), Value::Int(0o2101)),
                ("mode".into(), Value::UInt(0o644)),
            ]
        );
        // A string the program could not read.
        assert_eq!(values(&s, &raw, &[None])[2].1, Value::None);
    }

    #[test]
    fn dynamic_and_fixed_arrays() {
        let s = schema("sched", &parse(FORK).unwrap()).unwrap();
        assert_eq!((s.config.n_locs, s.config.locs[..2].to_vec(), s.config.loc_rel), (2, vec![8, 16], 0b10));
        let mut raw = vec![0u8; 32];
        raw[8..12].copy_from_slice(&(3u32 << 16 | 32).to_le_bytes()); // "sh\0" at 32
        raw[12..16].copy_from_slice(&42i32.to_le_bytes());
        raw[16..20].copy_from_slice(&(4u32 << 16 | 15).to_le_bytes()); // 20 + 15 = 35
        raw[20..24].copy_from_slice(&[10, 0, 0, 1]);
        raw[24..28].copy_from_slice(b"cat\0");
        raw.extend_from_slice(b"sh\0true");
        let got = values(&s, &raw, &[]);
        assert_eq!(got[0].1, Value::Text(b"sh"));
        assert_eq!(got[1].1, Value::Int(42));
        assert_eq!(got[2].1, Value::Text(b"true"));
        assert_eq!(got[3].1, Value::Array { bytes: &[10, 0, 0, 1], elem: 1, signed: false });
        assert_eq!(got[4].1, Value::Text(b"cat"));
        // Cut short: what lies beyond is None, never a part.
        assert_eq!(values(&s, &raw[..30], &[])[4].1, Value::None);
        assert_eq!(values(&s, &raw[..34], &[])[2].1, Value::None);
    }

    #[test]
    fn buffers_and_double_pointers_are_not_strings() {
        let text = OPENAT
            .replace("sys_enter_openat", "sys_enter_sethostname")
            .replace("const char * filename", "char * name")
            .replace("umode_t mode", "const char *const * argv");
        let s = schema("syscalls", &parse(&text).unwrap()).unwrap();
        assert_eq!(s.config.n_strings, 0);
        assert!(s.fields.iter().all(|f| !matches!(f.kind, Kind::UserString(_))));
        // Exit tracepoints and other categories never copy strings.
        let exit = OPENAT.replace("sys_enter_openat", "sys_exit_openat");
        assert_eq!(schema("syscalls", &parse(&exit).unwrap()).unwrap().config.n_strings, 0);
        assert_eq!(schema("other", &parse(OPENAT).unwrap()).unwrap().config.n_strings, 0);
    }

    #[test]
    fn a_ring_record_splits_and_shows_as_json_and_a_line() {
        let s = schema("syscalls", &parse(OPENAT).unwrap()).unwrap();
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"cat");
        let head = TracepointHeader {
            kind: crate::abi::RecordKind::Tracepoint as u8,
            n_strings: 1,
            cpu: 1,
            timestamp_ns: 2_500_000_000,
            pid: 7,
            tid: 8,
            uid: 0,
            raw_len: 48,
            id: 700,
            comm,
            ..TracepointHeader::default()
        };
        let mut raw = vec![0u8; 48];
        raw[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // dfd -1
        // SAFETY: the header is a live `#[repr(C)]` value of plain integers, TRACEPOINT_HEADER_SIZE
        // bytes long, and the slice does not outlive it.
        let mut record = unsafe {
            core::slice::from_raw_parts(
                (&head as *const TracepointHeader).cast::<u8>(),
                TRACEPOINT_HEADER_SIZE,
            )
        }
        .to_vec();
        record.extend_from_slice(&raw);
        record.extend_from_slice(&5u16.to_le_bytes());
        record.extend_from_slice(b"/a b\xff");
        let (head, raw, strings) = split(&record).unwrap();
        assert_eq!(head.id, 700);
        let event = Event { schema: &s, head: &head, raw, strings };
        let mut json = String::new();
        event.write_json(&mut json);
        assert_eq!(
            json,
            "{\"tracepoint\": \"syscalls:sys_enter_openat\", \"timestamp_ns\": 2500000000, \"cpu\": 1, \
             \"pid\": 7, \"tid\": 8, \"uid\": 0, \"comm\": \"cat\", \"fields\": {\"__syscall_nr\": 0, \
             \"dfd\": -1, \"filename\": \"/a b\\udcff\", \"filename_b64\": \"L2EgYv8=\", \"flags\": 0, \"mode\": 0}}\n"
        );
        let mut line = String::new();
        event.write_line(1_000_000_000, &mut line);
        assert_eq!(
            line,
            "1.500000     1   7       cat              syscalls:sys_enter_openat __syscall_nr=0 dfd=-1 \
             filename=/a b\\xff flags=0 mode=0\n"
        );
        line.clear();
        event.write_line(2_500_123_000, &mut line);
        assert!(line.starts_with("-0.000123    1   7 "), "{line}");
        // A string cut off from its record.
        assert!(split(&record[..record.len() - 1]).is_err());
        assert!(split(&record[..40]).is_err());
    }

    #[test]
    fn formats_the_program_cannot_use_say_why() {
        let locs: String = (0..9)
            .map(|i| format!("\tfield:__data_loc char[] s{i};\toffset:{};\tsize:4;\tsigned:0;\n", 8 + 4 * i))
            .collect();
        let text = format!("name: many\nID: 5\nformat:\n{locs}\nprint fmt: \"x\"\n");
        assert_eq!(schema("x", &parse(&text).unwrap()).unwrap_err(), "it has more than 8 dynamic fields");
        let wide = FORK.replace("parent_comm;\toffset:8;\tsize:4", "parent_comm;\toffset:8;\tsize:8");
        assert!(schema("x", &parse(&wide).unwrap()).unwrap_err().contains("is 8 bytes, not 4"));
        let big_id = FORK.replace("ID: 300", "ID: 70000");
        assert!(schema("x", &parse(&big_id).unwrap()).unwrap_err().contains("not a 16-bit"));
        // Odd sizes and unknown arrays decode as bytes, never fail.
        let odd = FORK.replace("u8 addr[4];\toffset:20;\tsize:4", "struct foo addr;\toffset:20;\tsize:3");
        let s = schema("x", &parse(&odd).unwrap()).unwrap();
        assert_eq!(s.fields[3].kind, Kind::Bytes);
    }

    /// Every format file of the running kernel: each parses, and a record of zeros of each decodes
    /// (strings missing) without a panic.
    #[test]
    fn every_format_of_the_running_kernel() {
        let root = std::path::Path::new("/sys/kernel/tracing/events");
        let Ok(categories) = std::fs::read_dir(root) else { return };
        let (mut seen, mut usable) = (0, 0);
        for category in categories.flatten().filter(|e| e.path().is_dir()) {
            for event in std::fs::read_dir(category.path()).into_iter().flatten().flatten() {
                let Ok(text) = std::fs::read_to_string(event.path().join("format")) else { continue };
                seen += 1;
                let format = parse(&text).unwrap_or_else(|e| panic!("{:?}: {e}", event.path()));
                let Ok(s) = schema(&category.file_name().to_string_lossy(), &format) else { continue };
                usable += 1;
                let raw = vec![0u8; usize::from(s.config.size)];
                for field in &s.fields {
                    s.value(field, &raw, &[]);
                }
                for short in [0, 1, 7] {
                    for field in &s.fields {
                        s.value(field, &raw[..short.min(raw.len())], &[]);
                    }
                }
            }
        }
        if seen > 0 {
            assert!(usable * 100 >= seen * 99, "{usable} of {seen} tracepoints usable");
        }
    }
}
