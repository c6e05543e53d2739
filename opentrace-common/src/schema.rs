//! The machinery behind an event kind's one table of fields: every attribute, `to_dict()`, the
//! JSON lines, `repr`, pickling and the CLI's columns are driven by a `&[Field]` (see
//! [`crate::open::FIELDS`] and [`crate::tracepoint::ATTRIBUTES`]), so a new field is one row
//! there; [`table!`] names each row by a typed index for code that wants one field.

/// One field's value, borrowed from the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    None,
    Int(i64),
    UInt(u64),
    /// Bytes shown as `os.fsdecode(bytes)` would show them (paths, comms): a str that keeps
    /// non-UTF-8 bytes as surrogate escapes.
    Text(&'a [u8]),
    /// A fixed name (`"openat"`).
    Name(&'static str),
    /// Raw bytes (`path_bytes`).
    Bytes(&'a [u8]),
    /// An array of little-endian integers of `elem` bytes each (a tracepoint's `u8 addr[4]`),
    /// shown as a list of ints.
    Array {
        bytes: &'a [u8],
        elem: u8,
        signed: bool,
    },
}

impl Value<'_> {
    /// The integers of a [`Value::Array`] (none for other values).
    pub fn ints(self) -> impl Iterator<Item = Value<'static>> {
        let (bytes, elem, signed) = match self {
            Value::Array { bytes, elem, signed } if matches!(elem, 1 | 2 | 4 | 8) => (bytes, elem, signed),
            _ => (&[][..], 1, false),
        };
        let shift = 64 - 8 * u32::from(elem);
        bytes.chunks_exact(usize::from(elem)).map(move |chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let n = u64::from_le_bytes(word);
            if signed { Value::Int(((n << shift) as i64) >> shift) } else { Value::UInt(n) }
        })
    }
}

macro_rules! value_from {
    ($($int:ty => $variant:ident),*) => {$(
        impl From<$int> for Value<'_> {
            fn from(n: $int) -> Self {
                Value::$variant(n.into())
            }
        }
    )*};
}
value_from!(u16 => UInt, u32 => UInt, u64 => UInt, i32 => Int, i64 => Int);

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::None, Into::into)
    }
}

/// Where a field shows, besides being an attribute.
pub type Show = u8;
/// In `to_dict()` and the JSON lines.
pub const DICT: Show = 1 << 0;
/// In `repr()` (unless it is None).
pub const REPR: Show = 1 << 1;

/// A value given for a field when an event is built by hand (`OpenEvent(pid=1, ...)`, pickling).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    None,
    Int(i128),
    /// Bytes, or a str as `os.fsencode` encodes it.
    Bytes(&'a [u8]),
}

/// Why a field could not be set.
#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// The wrong kind of value (Python: TypeError).
    Type(String),
    /// The right kind, a bad value (Python: ValueError).
    Value(String),
}

impl<'a> Input<'a> {
    /// The integer, if it is one that fits `T`.
    pub fn int<T: TryFrom<i128>>(self, field: &str) -> Result<T, SetError> {
        let Input::Int(n) = self else { return Err(SetError::Type(format!("{field} must be an int"))) };
        T::try_from(n).map_err(|_| SetError::Value(format!("{field} is out of range: {n}")))
    }

    pub fn bytes(self, field: &str) -> Result<&'a [u8], SetError> {
        match self {
            Input::Bytes(bytes) => Ok(bytes),
            Input::Int(_) | Input::None => Err(SetError::Type(format!("{field} must be a str or bytes"))),
        }
    }
}

/// One row of an event kind's table. `G` reads the value from the kind's borrowed view; `S`, for
/// the fields an event can be built from, writes it into the kind's owned form.
pub struct Field<G, S> {
    pub name: &'static str,
    pub get: G,
    pub set: Option<S>,
    pub show: Show,
    /// For a plain integer of the kind's header, shown as it is: where it lies there (its
    /// attribute is then read by Python straight from the event, `get` serving the rest).
    pub member: Option<Member>,
}

/// A plain integer field's place in its event kind's header: its offset there, and its type.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub offset: usize,
    pub kind: MemberKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    I32,
    U32,
    I64,
    U64,
}

/// The integer types a [`Member`] can be.
pub trait MemberInt {
    const KIND: MemberKind;
}

impl MemberInt for i32 {
    const KIND: MemberKind = MemberKind::I32;
}

impl MemberInt for u32 {
    const KIND: MemberKind = MemberKind::U32;
}

impl MemberInt for i64 {
    const KIND: MemberKind = MemberKind::I64;
}

impl MemberInt for u64 {
    const KIND: MemberKind = MemberKind::U64;
}

/// The [`MemberKind`] of the header field that `field` reaches (the field's type decides it).
pub const fn member_kind<H, T: MemberInt>(_field: fn(&H) -> &T) -> MemberKind {
    T::KIND
}

/// The index of the field called `name`.
pub fn index<G, S>(fields: &[Field<G, S>], name: &str) -> Option<usize> {
    fields.iter().position(|f| f.name == name)
}

/// The setter of a table whose events cannot be built by hand.
pub enum NoSet {}

/// An event kind's table: `static TABLE: &[ROW]` with its rows in order, and `enum INDEX` with a
/// variant per row, whose value is the row's index (`INDEX::X.field()` is its row): code that
/// wants one field (a CLI column) names it by type, and the table stays the one list.
macro_rules! table {
    (
        $(#[$table_meta:meta])* pub static $table:ident: &[$row:ty];
        $(#[$index_meta:meta])* pub enum $index:ident { $($variant:ident => $field:expr,)+ }
    ) => {
        $(#[$index_meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $index {
            $($variant),+
        }

        impl $index {
            /// Every field, in the table's order.
            pub const ALL: &'static [$index] = &[$($index::$variant),+];

            /// This field's row of the table.
            pub fn field(self) -> &'static $row {
                &$table[self as usize]
            }
        }

        $(#[$table_meta])*
        pub static $table: &[$row] = &[$($field),+];
    };
}
pub(crate) use table;
