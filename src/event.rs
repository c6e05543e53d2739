//! `OpenEvent`: one open, immutable. Its attributes, `to_dict()`, `repr()`, pickling and the
//! keyword constructor all come from the one table of fields, `opentrace_common::open::FIELDS`;
//! [`Attribute`], the descriptor behind each attribute, serves `TracepointEvent`'s table too.
use std::{
    hash::{Hash as _, Hasher as _},
    sync::Arc,
};

use opentrace_common::{
    arrow,
    open::{FIELDS, Get, Open, OwnedOpen, Set},
    schema::{DICT, Field, Member, MemberKind, REPR, SetError},
    tracepoint,
};
use pyo3::{
    exceptions::{PyAttributeError, PyTypeError, PyValueError},
    ffi,
    prelude::*,
    types::{PyBytes, PyDict, PyString, PyTuple, PyType},
};

use crate::{
    tpevent::TracepointEvent,
    value::{from_py, to_py, to_py_exact},
};

// `freelist`: a storm makes and drops an event per open; the objects of one drain are reused by
// the next instead of going back to the allocator. Equality and hashing are methods, not the
// `eq`/`hash` options: pyo3 0.30.1 generates invalid code for those beside `freelist`.
#[pyclass(module = "opentrace", name = "OpenEvent", frozen, freelist = FREE_EVENTS)]
pub struct OpenEvent(pub OwnedOpen);

/// Events kept for reuse: two drains' worth (`reader::EVENT_BATCH`).
const FREE_EVENTS: usize = 1024;

impl OpenEvent {
    /// `cgroup` is `open.cgroup`, already shared (the events of one cgroup share its name).
    #[inline(always)]
    pub fn new(open: Open<'_>, cgroup: Option<Arc<[u8]>>) -> OpenEvent {
        OpenEvent(OwnedOpen::new(open, cgroup))
    }
}

#[pymethods]
impl OpenEvent {
    /// Builds an event by hand (tests, replays, unpickling): any of the `to_dict()` keys that are
    /// not derived from others (`errno` comes from `ret`; `fd`, if given, is `ret`, or None for an
    /// io_uring open into a fixed-file slot); str or bytes for text.
    #[new]
    #[pyo3(signature = (**fields))]
    fn py_new(fields: Option<&Bound<'_, PyDict>>) -> PyResult<OpenEvent> {
        let mut owned = OwnedOpen::default();
        let mut fd_given = None;
        for (key, value) in fields.into_iter().flatten() {
            let name: String = key.extract()?;
            let Some(field) = FIELDS.iter().find(|f| f.name == name) else {
                return Err(PyTypeError::new_err(format!(
                    "OpenEvent() got an unexpected keyword argument {name:?}"
                )));
            };
            let Some(set) = field.set else {
                return Err(PyTypeError::new_err(format!(
                    "{name} is derived from other fields; it cannot be given"
                )));
            };
            let mut scratch = None;
            set(&mut owned, from_py(&value, &mut scratch)?).map_err(|e| match e {
                SetError::Type(m) => PyTypeError::new_err(m),
                SetError::Value(m) => PyValueError::new_err(m),
            })?;
            if name == "fd" {
                fd_given = Some(value.extract::<Option<i64>>()?);
            }
        }
        if let Some(fd) = fd_given
            && fd != owned.view().fd()
        {
            return Err(PyValueError::new_err(format!(
                "fd must be ret ({}) when ret >= 0 and None when it is not, or None for an open into an \
                 io_uring fixed-file slot; not {fd:?}",
                owned.head.ret
            )));
        }
        Ok(OpenEvent(owned))
    }

    fn __eq__(&self, other: PyRef<'_, Self>) -> bool {
        self.0 == other.0
    }

    /// (Of its own: derived from `__eq__`, `!=` with another type would ask that type's `==`.)
    fn __ne__(&self, other: PyRef<'_, Self>) -> bool {
        self.0 != other.0
    }

    fn __hash__(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.0.hash(&mut hasher);
        hasher.finish()
    }

    /// Every field except the raw bytes, JSON-serialisable.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let view = self.0.view();
        for field in FIELDS.iter().filter(|f| f.show & DICT != 0) {
            dict.set_item(PyString::intern(py, field.name), to_py(py, (field.get)(view))?)?;
        }
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let view = self.0.view();
        let mut parts = Vec::new();
        for field in FIELDS.iter().filter(|f| f.show & REPR != 0) {
            let value = to_py(py, (field.get)(view))?;
            if !value.is_none() {
                parts.push(format!("{}={}", field.name, value.repr()?));
            }
        }
        Ok(format!("OpenEvent({})", parts.join(", ")))
    }

    /// Every field is read-only (the plain integers' member descriptors would only say
    /// "readonly attribute").
    fn __setattr__(&self, name: &str, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(not_settable(name))
    }

    fn __delattr__(&self, name: &str) -> PyResult<()> {
        Err(not_settable(name))
    }

    /// Pickling goes through the keyword constructor, with text as its exact bytes.
    fn __getnewargs_ex__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        let kwargs = PyDict::new(py);
        let view = self.0.view();
        for field in FIELDS.iter().filter(|f| f.set.is_some()) {
            kwargs.set_item(field.name, to_py_exact(py, (field.get)(view))?)?;
        }
        Ok((PyTuple::empty(py), kwargs))
    }
}

fn not_settable(name: &str) -> PyErr {
    if FIELDS.iter().any(|f| f.name == name) {
        PyAttributeError::new_err(format!("OpenEvent is immutable: {name} cannot be set"))
    } else {
        PyAttributeError::new_err(format!("'OpenEvent' object has no attribute '{name}'"))
    }
}

/// Which event kind's table an [`Attribute`] reads.
#[derive(Clone, Copy)]
pub enum Table {
    Open,
    Tracepoint,
}

/// The attribute for one row of an event kind's table (a read-only data descriptor).
#[pyclass(module = "opentrace._opentrace", frozen)]
pub struct Attribute {
    table: Table,
    index: usize,
}

impl Attribute {
    fn name(&self) -> &'static str {
        match self.table {
            Table::Open => FIELDS[self.index].name,
            Table::Tracepoint => tracepoint::ATTRIBUTES[self.index].name,
        }
    }
}

#[pymethods]
impl Attribute {
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        event: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(event) = event else { return Ok(slf.clone().into_any()) };
        let this = slf.get();
        let value = match this.table {
            Table::Open => (FIELDS[this.index].get)(event.cast::<OpenEvent>()?.get().0.view()),
            Table::Tracepoint => {
                (tracepoint::ATTRIBUTES[this.index].get)(event.cast::<TracepointEvent>()?.get().view())
            }
        };
        to_py(slf.py(), value)
    }

    fn __set__(&self, event: &Bound<'_, PyAny>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyAttributeError::new_err(format!(
            "{} is immutable: {} cannot be set",
            event.get_type().name()?,
            self.name()
        )))
    }
}

/// Gives `OpenEvent` and `TracepointEvent` one attribute per row of their tables: a plain header
/// integer is a member descriptor, which Python reads straight from the event (no call into this
/// module: a third of what `ev.pid` cost), every other row an [`Attribute`].
pub fn add_attributes(py: Python<'_>) -> PyResult<()> {
    let open = py.get_type::<OpenEvent>();
    // Where an event's header lies in its Python object (the same in every one).
    let probe = Py::new(py, OpenEvent(OwnedOpen::default()))?;
    let header_at = (&raw const probe.get().0.head) as usize - probe.as_ptr() as usize;
    for (index, field) in FIELDS.iter().enumerate() {
        match field.member {
            Some(member) => {
                open.setattr(field.name, member_descriptor(&open, field.name, header_at, member)?)?
            }
            None => open.setattr(field.name, Attribute { table: Table::Open, index })?,
        }
    }
    let tracepoint = py.get_type::<TracepointEvent>();
    for (index, attribute) in tracepoint::ATTRIBUTES.iter().enumerate() {
        tracepoint.setattr(attribute.name, Attribute { table: Table::Tracepoint, index })?;
    }
    Ok(())
}

/// A read-only member descriptor of `owner` for the header integer `member` (the header lying
/// `header_at` bytes into each object).
fn member_descriptor<'py>(
    owner: &Bound<'py, PyType>,
    name: &'static str,
    header_at: usize,
    member: Member,
) -> PyResult<Bound<'py, PyAny>> {
    let type_code = match member.kind {
        MemberKind::I32 => ffi::Py_T_INT,
        MemberKind::U32 => ffi::Py_T_UINT,
        MemberKind::I64 => ffi::Py_T_LONGLONG,
        MemberKind::U64 => ffi::Py_T_ULONGLONG,
    };
    // The descriptor keeps pointers to its definition and name: both live as long as the module.
    let name = Box::leak(std::ffi::CString::new(name)?.into_boxed_c_str());
    let definition = Box::leak(Box::new(ffi::PyMemberDef {
        name: name.as_ptr(),
        type_code,
        offset: (header_at + member.offset) as ffi::Py_ssize_t,
        flags: ffi::Py_READONLY,
        doc: std::ptr::null(),
    }));
    // SAFETY: `owner` is a live type whose every instance holds an `OpenHeader` `header_at`
    // bytes in, with an integer of `type_code`'s type `member.offset` bytes into that (offset_of!,
    // and the type, from the table's row); the definition outlives the descriptor (leaked above).
    unsafe {
        Bound::from_owned_ptr_or_err(owner.py(), ffi::PyDescr_NewMember(owner.as_type_ptr(), definition))
    }
}

/// One column's Arrow buffers: (kind: "null", "int", "uint" or "bytes", validity bitmap or None,
/// data, offsets or None); see `opentrace_common::arrow`.
pub type RawColumn<'py> =
    (&'static str, Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>);

/// The named fields of `events` as Arrow columns' buffers (what the Parquet writers make their
/// tables of), built without the GIL and without a Python object per value.
#[pyfunction]
pub fn open_columns<'py>(
    py: Python<'py>,
    events: Vec<PyRef<'py, OpenEvent>>,
    names: Vec<String>,
) -> PyResult<Vec<RawColumn<'py>>> {
    let fields = fields_named(&names)?;
    let views: Vec<Open<'_>> = events.iter().map(|e| e.0.view()).collect();
    raw_columns(py, &views, &fields)
}

/// The fields of `FIELDS` of these names, in this order.
pub fn fields_named(names: &[String]) -> PyResult<Vec<&'static Field<Get, Set>>> {
    names
        .iter()
        .map(|name| {
            FIELDS
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| PyValueError::new_err(format!("OpenEvent has no field {name:?}")))
        })
        .collect()
}

/// `fields` of the events `views` as Arrow columns' buffers (see `open_columns`).
pub fn raw_columns<'py>(
    py: Python<'py>,
    views: &[Open<'_>],
    fields: &[&Field<Get, Set>],
) -> PyResult<Vec<RawColumn<'py>>> {
    let columns = py.detach(|| fields_as_columns(views, fields));
    let columns =
        columns.map_err(|e| PyValueError::new_err(format!("the events do not make Arrow columns: {e}")))?;
    let bytes = |b: Option<Vec<u8>>| b.map(|b| PyBytes::new(py, &b));
    Ok(columns
        .into_iter()
        .map(|c| {
            let kind = match c.kind {
                arrow::Kind::Null => "null",
                arrow::Kind::Int => "int",
                arrow::Kind::UInt => "uint",
                arrow::Kind::Bytes => "bytes",
            };
            (kind, bytes(c.validity), PyBytes::new(py, &c.data), bytes(c.offsets))
        })
        .collect())
}

fn fields_as_columns<'a>(
    views: &[Open<'a>],
    fields: &[&Field<Get, Set>],
) -> Result<Vec<arrow::Column>, arrow::ColumnError> {
    let getters: Vec<_> = fields.iter().map(|field| move |open: &Open<'a>| (field.get)(*open)).collect();
    arrow::columns(views, &getters)
}
