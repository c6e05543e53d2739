//! `TracepointEvent`: one record of any tracepoint, immutable. It keeps the record as copied and
//! decodes a field when it is asked for (`opentrace_common::tracepoint`), so a stream costs one
//! copy per event however many fields its tracepoint has.
use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use opentrace_common::{
    abi::tracepoint::{TP_STRINGS, TracepointHeader},
    schema::{DICT, REPR},
    tracepoint::{ATTRIBUTES, Event, Schema},
};
use pyo3::{
    exceptions::PyKeyError,
    prelude::*,
    types::{PyDict, PyString},
};

use crate::value::to_py;

#[pyclass(module = "opentrace", name = "TracepointEvent", frozen, eq, hash)]
pub struct TracepointEvent {
    schema: Arc<Schema>,
    head: TracepointHeader,
    /// The tracepoint's record, then the strings.
    data: Box<[u8]>,
    raw_len: usize,
    /// Where each string is in `data` (None: it could not be read).
    strings: [Option<(usize, usize)>; TP_STRINGS],
}

impl PartialEq for TracepointEvent {
    fn eq(&self, other: &Self) -> bool {
        self.schema.name == other.schema.name
            && self.head == other.head
            && self.data == other.data
            && self.strings == other.strings
    }
}

impl Hash for TracepointEvent {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&self.schema.name, &self.head, &self.data).hash(state);
    }
}

impl TracepointEvent {
    pub fn new(event: Event<'_>, schema: &Arc<Schema>) -> TracepointEvent {
        let mut data = Vec::with_capacity(
            event.raw.len() + event.strings.iter().flatten().map(|s| s.len()).sum::<usize>(),
        );
        data.extend_from_slice(event.raw);
        let strings = event.strings.map(|s| {
            s.map(|s| {
                data.extend_from_slice(s);
                (data.len() - s.len(), data.len())
            })
        });
        TracepointEvent {
            schema: Arc::clone(schema),
            head: *event.head,
            data: data.into(),
            raw_len: event.raw.len(),
            strings,
        }
    }

    pub fn view(&self) -> Event<'_> {
        Event {
            schema: &self.schema,
            head: &self.head,
            raw: &self.data[..self.raw_len],
            strings: self.strings.map(|s| s.map(|(start, end)| &self.data[start..end])),
        }
    }
}

#[pymethods]
impl TracepointEvent {
    /// Every field of the format but the `common_*` ones, in file order (a new dict each time).
    #[getter]
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.view().fields() {
            dict.set_item(name, to_py(py, value)?)?;
        }
        Ok(dict)
    }

    /// `ev["name"]` is `ev.fields["name"]`, decoding only that field.
    fn __getitem__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.view().field(name) {
            Some(value) => to_py(py, value),
            None => Err(PyKeyError::new_err(name.to_owned())),
        }
    }

    fn __contains__(&self, name: &str) -> bool {
        self.schema.fields.iter().any(|f| f.name == name)
    }

    /// Every attribute, `fields` as a dict; JSON-serialisable.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for attribute in ATTRIBUTES.iter().filter(|a| a.show & DICT != 0) {
            dict.set_item(PyString::intern(py, attribute.name), to_py(py, (attribute.get)(self.view()))?)?;
        }
        dict.set_item("fields", self.fields(py)?)?;
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::new();
        for attribute in ATTRIBUTES.iter().filter(|a| a.show & REPR != 0) {
            parts.push(format!("{}={}", attribute.name, to_py(py, (attribute.get)(self.view()))?.repr()?));
        }
        Ok(format!("TracepointEvent({}, fields={})", parts.join(", "), self.fields(py)?.repr()?))
    }
}
