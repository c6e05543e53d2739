//! `Formatter`: the CLI's output options, applied to events straight from ring records.
use opentrace_common::{
    counts::{self, FileCount},
    open::{self, Attr, ColumnOptions, FIELDS, Open},
    schema::DICT,
    text::{self, Columns},
    tracepoint::{self, Event},
};
use pyo3::prelude::*;

use crate::event::OpenEvent;

/// Columns (opensnoop-style) or JSON lines for opens; `name=value` lines or JSON lines for
/// tracepoints.
#[pyclass(module = "opentrace._opentrace", frozen)]
pub struct Formatter {
    json: bool,
    /// The JSON keys of the open's fields that `to_dict()` has, in `FIELDS`' order (as
    /// `text::json_key` writes them).
    json_keys: Vec<String>,
    columns: Columns,
    /// Tracepoint lines show their time from here (ns, CLOCK_MONOTONIC).
    start_ns: u64,
}

impl Formatter {
    /// Whether the output shows an event's cgroup (JSON, or the CONTAINER column).
    pub fn shows_cgroup(&self) -> bool {
        self.json || self.columns.0.iter().any(|c| c.field == Attr::ContainerName as usize)
    }

    pub fn write_tracepoint(&self, event: Event<'_>, out: &mut String) {
        if self.json {
            event.write_json(out);
        } else {
            event.write_line(self.start_ns, out);
        }
    }

    pub fn write(&self, event: Open<'_>, out: &mut String) {
        if self.json {
            // Each value goes from its getter straight to the writer: through an iterator of
            // (name, value) pairs, each was copied in pieces that waited on the getter's stores.
            let mut object = text::JsonObject::new(out);
            for (field, key) in FIELDS.iter().filter(|f| f.show & DICT != 0).zip(&self.json_keys) {
                object.field_keyed(field.name, key, (field.get)(event));
            }
            object.end_line();
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
        Formatter { json, json_keys: json_keys(), columns: open::columns(options), start_ns }
    }

    /// The formatter of `opentrace watch`: tracepoint records as `name=value` lines (their time
    /// in seconds from `start_ns`), or JSON lines.
    #[staticmethod]
    #[pyo3(signature = (*, json = false, start_ns = 0))]
    fn for_tracepoints(json: bool, start_ns: u64) -> Formatter {
        Formatter { json, json_keys: json_keys(), columns: Columns(Vec::new()), start_ns }
    }

    /// The column header line (empty for JSON).
    fn header(&self) -> String {
        match (self.json, self.columns.0.is_empty()) {
            (true, _) => String::new(),
            (false, true) => tracepoint::LINE_HEADER.to_owned(),
            (false, false) => self.columns.header(),
        }
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

/// The JSON keys of `Formatter::json_keys`.
fn json_keys() -> Vec<String> {
    FIELDS.iter().filter(|f| f.show & DICT != 0).map(|f| text::json_key(f.name)).collect()
}

/// One file's counts as Python passes them: (path, opens, failed, [(errno, count)]).
type Row = (Vec<u8>, u64, u64, Vec<(i32, u64)>);

/// `--summary`'s output: `rows`, most opened first, as aligned lines under a header or as JSON
/// lines.
#[pyfunction]
pub fn summary(rows: Vec<Row>, json: bool) -> String {
    let mut rows: Vec<FileCount> = rows
        .into_iter()
        .map(|(path, opens, failed, mut errors)| {
            errors.sort_unstable();
            FileCount { path, opens, failed, errors }
        })
        .collect();
    counts::sort(&mut rows);
    let mut out = if json { String::new() } else { counts::HEADER.to_owned() };
    for row in &rows {
        if json {
            counts::write_json(row, &mut out);
        } else {
            counts::write_line(row, &mut out);
        }
    }
    out
}
