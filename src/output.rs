//! `Formatter`: the CLI's output options, applied to events straight from ring records.
use opentrace_common::{
    open::{self, ColumnOptions, FIELDS, Open},
    schema::DICT,
    text::{self, Columns},
};
use pyo3::prelude::*;

use crate::event::OpenEvent;

/// Columns (opensnoop-style) or JSON lines.
#[pyclass(module = "opentrace._opentrace", frozen)]
pub struct Formatter {
    json: bool,
    columns: Columns,
}

impl Formatter {
    /// Whether the output shows an event's cgroup (JSON, or the CONTAINER column).
    pub fn shows_cgroup(&self) -> bool {
        self.json || self.columns.0.iter().any(|c| FIELDS[c.field].name == "container_id")
    }

    pub fn write(&self, event: Open<'_>, out: &mut String) {
        if self.json {
            let fields = FIELDS.iter().filter(|f| f.show & DICT != 0).map(|f| (f.name, (f.get)(event)));
            text::write_json(fields, out);
        } else {
            self.columns.write(|i| (FIELDS[i].get)(event), out);
        }
    }
}

#[pymethods]
impl Formatter {
    #[new]
    #[pyo3(signature = (*, json = false, timestamp = false, uid = false, extended = false, full_path = false, container = false, start_ns = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        json: bool,
        timestamp: bool,
        uid: bool,
        extended: bool,
        full_path: bool,
        container: bool,
        start_ns: u64,
    ) -> Formatter {
        let options = ColumnOptions {
            timestamp_from: timestamp.then_some(start_ns),
            uid,
            extended,
            full_path,
            container,
        };
        Formatter { json, columns: open::columns(options) }
    }

    /// The column header line (empty for JSON).
    fn header(&self) -> String {
        if self.json { String::new() } else { self.columns.header() }
    }

    /// The lines of `events`, as the CLI prints them.
    fn format(&self, events: Vec<PyRef<'_, OpenEvent>>) -> String {
        let mut out = String::new();
        for event in &events {
            self.write(event.0.view(), &mut out);
        }
        out
    }
}
