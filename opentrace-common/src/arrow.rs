//! Field values as the buffers of Arrow arrays (the columnar layout Parquet files are written
//! from): a batch of events becomes one column per field without a Python object per value.
//!
//! The layouts are Arrow's own (<https://arrow.apache.org/docs/format/Columnar.html>): a validity
//! bitmap (bit `i` of byte `i / 8`, least significant first; 1 = a value) when some row has none,
//! then 64-bit little-endian integers, or 32-bit offsets (`rows + 1` of them) into the bytes.
use crate::schema::Value;

/// What a column's values are; the reader gives the array its final type (a cast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No row has a value.
    Null,
    /// 64-bit signed integers.
    Int,
    /// 64-bit unsigned integers.
    UInt,
    /// Bytes (text too, as its raw bytes): offsets and data.
    Bytes,
}

/// One column: the buffers of an Arrow array of `rows` rows.
#[derive(Debug, PartialEq, Eq)]
pub struct Column {
    pub kind: Kind,
    /// None when every row has a value.
    pub validity: Option<Vec<u8>>,
    /// The integers (8 bytes each; 0 where none), or the bytes of every row one after another.
    pub data: Vec<u8>,
    /// For [`Kind::Bytes`]: where each row's bytes begin, and the end (i32, little-endian).
    pub offsets: Option<Vec<u8>>,
}

/// Why a field cannot be a column.
#[derive(Debug, PartialEq, Eq)]
pub enum ColumnError {
    /// Integers and bytes in one field, or an array value (no open event field has one).
    Mixed,
    /// More than `i32::MAX` bytes in the column: split the batch.
    TooLarge,
}

impl core::fmt::Display for ColumnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ColumnError::Mixed => "a field holds both integers and bytes",
            ColumnError::TooLarge => "more than 2 GiB of bytes in one column: write smaller batches",
        })
    }
}

/// Rows taken at a time by [`columns`]: each column's values of one group, then the next column's,
/// while the group's rows stay in the cache (events are scattered objects; a whole batch per
/// column would read each from memory once per column).
const GROUP: usize = 256;

/// The columns of `fields`' values over `rows`; see [`column`].
pub fn columns<'v, T, G: Fn(&T) -> Value<'v>>(rows: &[T], fields: &[G]) -> Result<Vec<Column>, ColumnError> {
    let mut builders: Vec<Builder> = fields.iter().map(|_| Builder::new(rows.len())).collect();
    for group in rows.chunks(GROUP) {
        for (builder, get) in builders.iter_mut().zip(fields) {
            for row in group {
                builder.push(get(row))?;
            }
        }
    }
    Ok(builders.into_iter().map(Builder::finish).collect())
}

/// The column of `get`'s values over `rows`. Its kind is its first value's (integers of either
/// sign keep their 64 bits: the reader casts them to the field's type).
pub fn column<'v, T>(rows: &[T], get: impl Fn(&T) -> Value<'v>) -> Result<Column, ColumnError> {
    Ok(columns(rows, &[get])?.remove(0))
}

/// One column, a value at a time, of at most the `capacity` rows it was made for.
struct Builder {
    rows: usize,
    kind: Kind,
    validity: Vec<u8>,
    nulls: usize,
    data: Vec<u8>,
    offsets: Vec<u8>,
    capacity: usize,
}

impl Builder {
    fn new(capacity: usize) -> Builder {
        let validity = vec![0u8; capacity.div_ceil(8)];
        Builder {
            rows: 0,
            kind: Kind::Null,
            validity,
            nulls: 0,
            data: Vec::new(),
            offsets: Vec::new(),
            capacity,
        }
    }

    fn push(&mut self, value: Value<'_>) -> Result<(), ColumnError> {
        let i = self.rows;
        if self.kind == Kind::Null {
            // The first value: the rows before it had none.
            self.kind = match value {
                Value::None => {
                    self.rows += 1;
                    return Ok(());
                }
                Value::Int(_) => Kind::Int,
                Value::UInt(_) => Kind::UInt,
                Value::Text(_) | Value::Name(_) | Value::Bytes(_) => Kind::Bytes,
                Value::Array { .. } => return Err(ColumnError::Mixed),
            };
            self.nulls = i;
            if self.kind == Kind::Bytes {
                self.offsets.reserve((self.capacity + 1) * 4);
                self.offsets.resize((i + 1) * 4, 0);
            } else {
                self.data.reserve(self.capacity * 8);
                self.data.resize(i * 8, 0);
            }
        }
        match (value, self.kind) {
            // (Fixed-size copies for the integers: no call per value.)
            (Value::Int(n), Kind::Int | Kind::UInt) => self.data.extend_from_slice(&n.to_le_bytes()),
            (Value::UInt(n), Kind::Int | Kind::UInt) => self.data.extend_from_slice(&n.to_le_bytes()),
            (Value::None, Kind::Int | Kind::UInt) => self.data.extend_from_slice(&[0; 8]),
            (Value::Text(b) | Value::Bytes(b), Kind::Bytes) => self.push_bytes(b)?,
            (Value::Name(name), Kind::Bytes) => self.push_bytes(name.as_bytes())?,
            (Value::None, Kind::Bytes) => self.push_bytes(&[])?,
            _ => return Err(ColumnError::Mixed),
        }
        if matches!(value, Value::None) {
            self.nulls += 1;
        } else {
            self.validity[i / 8] |= 1 << (i % 8); // `columns` makes it for every row
        }
        self.rows += 1;
        Ok(())
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), ColumnError> {
        self.data.extend_from_slice(bytes);
        let end = i32::try_from(self.data.len()).map_err(|_| ColumnError::TooLarge)?;
        self.offsets.extend_from_slice(&end.to_le_bytes());
        Ok(())
    }

    fn finish(self) -> Column {
        let kind = self.kind;
        match kind {
            Kind::Null => Column { kind, validity: None, data: Vec::new(), offsets: None },
            _ => Column {
                kind,
                validity: (self.nulls > 0).then_some(self.validity),
                data: self.data,
                offsets: (kind == Kind::Bytes).then_some(self.offsets),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(bytes: &[u8]) -> Vec<i64> {
        bytes.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    }

    fn offsets(bytes: &[u8]) -> Vec<i32> {
        bytes.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn integers_with_and_without_nulls() {
        let rows = [Some(-2i64), None, Some(7), Some(i64::MAX)];
        let c = column(&rows, |r| Value::from(*r)).unwrap();
        assert_eq!(c.kind, Kind::Int);
        assert_eq!(ints(&c.data), [-2, 0, 7, i64::MAX]);
        assert_eq!(c.validity, Some(vec![0b1101]));
        assert_eq!(c.offsets, None);
        let full = column(&[1u64, u64::MAX], |r| Value::UInt(*r)).unwrap();
        assert_eq!((full.kind, full.validity), (Kind::UInt, None));
        assert_eq!(full.data[8..], u64::MAX.to_le_bytes());
    }

    #[test]
    fn bytes_text_and_names_as_offsets_and_data() {
        let rows: [Value<'_>; 4] =
            [Value::Text(b"/etc/\xffx"), Value::None, Value::Name("openat"), Value::Bytes(b"")];
        let c = column(&rows, |v| *v).unwrap();
        assert_eq!(c.kind, Kind::Bytes);
        assert_eq!(c.data, b"/etc/\xffxopenat");
        assert_eq!(offsets(c.offsets.as_deref().unwrap()), [0, 7, 7, 13, 13]);
        assert_eq!(c.validity, Some(vec![0b1101]));
    }

    #[test]
    fn rows_with_none_before_the_first_value() {
        let c = column(&[Value::None, Value::None, Value::Bytes(b"ab")], |v| *v).unwrap();
        assert_eq!((c.data.as_slice(), c.validity), (&b"ab"[..], Some(vec![0b100])));
        assert_eq!(offsets(c.offsets.as_deref().unwrap()), [0, 0, 0, 2]);
        let c = column(&[None, Some(5u16)], |r| Value::from(*r)).unwrap();
        assert_eq!((ints(&c.data), c.validity, c.kind), (vec![0, 5], Some(vec![0b10]), Kind::UInt));
    }

    #[test]
    fn a_validity_bitmap_past_eight_rows() {
        let rows: Vec<Option<u32>> = (0..10).map(|i| (i != 8).then_some(i)).collect();
        let c = column(&rows, |r| Value::from(*r)).unwrap();
        assert_eq!(c.validity, Some(vec![0xff, 0b10]));
    }

    #[test]
    fn no_value_at_all_is_a_null_column() {
        let c = column(&[(), ()], |_| Value::None).unwrap();
        assert_eq!(c, Column { kind: Kind::Null, validity: None, data: vec![], offsets: None });
        assert_eq!(column::<()>(&[], |_| Value::None).unwrap().kind, Kind::Null);
    }

    #[test]
    fn several_columns_over_several_groups() {
        let rows: Vec<u32> = (0..1000).collect();
        fn neg(r: &u32) -> Value<'static> {
            Value::Int(-i64::from(*r))
        }
        fn odd(r: &u32) -> Value<'static> {
            if r % 2 == 1 { Value::UInt(u64::from(*r)) } else { Value::None }
        }
        let getters: [fn(&u32) -> Value<'static>; 2] = [neg, odd];
        let [neg, odd] = <[Column; 2]>::try_from(columns(&rows, &getters).unwrap()).unwrap();
        assert_eq!(ints(&neg.data), (0..1000).map(|r| -r).collect::<Vec<i64>>());
        assert_eq!(neg.validity, None);
        assert_eq!(ints(&odd.data), (0..1000).map(|r| if r % 2 == 1 { r } else { 0 }).collect::<Vec<i64>>());
        assert_eq!(odd.validity, Some(vec![0b1010_1010; 125]));
    }

    #[test]
    fn mixed_values_are_refused() {
        let rows = [Value::Int(1), Value::Text(b"x")];
        assert_eq!(column(&rows, |v| *v), Err(ColumnError::Mixed));
        let array = [Value::Array { bytes: b"\x01", elem: 1, signed: false }];
        assert_eq!(column(&array, |v| *v), Err(ColumnError::Mixed));
    }
}
