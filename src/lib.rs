//! `opentrace._opentrace`: the compiled half of opentrace. The public API is the Python package;
//! the logic that needs neither the kernel nor Python lives in `opentrace-common`.
#![deny(clippy::undocumented_unsafe_blocks)]

mod attach;
mod cgroup;
mod command;
mod config;
mod containers;
mod counting;
mod decode;
mod detach;
mod diag;
mod error;
mod event;
mod follow;
mod layout;
mod loader;
mod lost;
mod merge;
mod output;
mod paths;
mod pidns;
mod reader;
mod ring;
mod ringbuf;
mod session;
mod sys;
mod tpevent;
mod tracefs;
mod value;

use pyo3::prelude::*;

#[pymodule]
mod _opentrace {
    use opentrace_common::{
        PATH_MAX, PID_MAX,
        abi::{DEFAULT_RING_SIZE, open::Syscall},
        comm::COMM_MAX,
    };
    use pyo3::prelude::*;

    use crate::tracefs;
    #[pymodule_export]
    use crate::{
        command::Suspended,
        containers::{
            cgroup_container_id, container_cgroups, container_learn, containers_forget, containers_known,
            containers_stop, containers_wanted,
        },
        event::{Attribute, OpenEvent, open_columns},
        output::{Formatter, summary},
        session::Session,
        tpevent::TracepointEvent,
    };

    /// Every tracepoint as "category:name", sorted.
    #[pyfunction]
    fn tracepoints(py: Python<'_>) -> PyResult<Vec<String>> {
        let names = py.detach(tracefs::list);
        crate::diag::emit(py)?;
        Ok(names?)
    }

    type RawFormat = (String, u32, Vec<(String, String, u32, u32, bool)>, String);

    fn raw(format: opentrace_common::tracefs::Format) -> RawFormat {
        let fields = format.fields.into_iter().map(|f| (f.name, f.ty, f.offset, f.size, f.signed)).collect();
        (format.name, format.id, fields, format.print_fmt)
    }

    /// (name, id, [(field, type, offset, size, signed)], print_fmt) of "category:name".
    #[pyfunction]
    fn tracepoint_format(py: Python<'_>, name: &str) -> PyResult<RawFormat> {
        let (category, event) = tracefs::split_name(name)?;
        let format = py.detach(|| tracefs::format(category, event));
        crate::diag::emit(py)?;
        Ok(raw(format?))
    }

    /// `raw` on one terminal line, escaped as the CLI's lines escape paths.
    #[pyfunction]
    fn printable(raw: &[u8]) -> String {
        let mut out = String::new();
        opentrace_common::text::printable(raw, &mut out);
        out
    }

    /// "no space left on device (ENOSPC)": an errno as every opentrace message words it.
    #[pyfunction]
    fn errno_text(code: i32) -> String {
        opentrace_common::errno::describe(code)
    }

    /// "ENOENT" for 2: an errno's name, or its number where it has none.
    #[pyfunction]
    fn errno_name(code: i32) -> String {
        opentrace_common::errno::name(code).map_or_else(|| code.to_string(), str::to_owned)
    }

    /// Parses the text of a `format` file; ValueError saying which line is wrong.
    #[pyfunction]
    fn parse_format(text: &str) -> PyResult<RawFormat> {
        opentrace_common::tracefs::parse(text).map(raw).map_err(pyo3::exceptions::PyValueError::new_err)
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // The one source of these facts for the Python side (watch()'s checks, the CLI's choices).
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("PATH_MAX", PATH_MAX)?;
        m.add("PID_MAX", PID_MAX)?;
        m.add("COMM_MAX", COMM_MAX)?;
        m.add("DEFAULT_RING_SIZE", DEFAULT_RING_SIZE)?;
        m.add("MAX_RING_SIZE", crate::config::MAX_RING_SIZE)?;
        m.add("MAX_RING_SHARDS", crate::config::MAX_RING_SHARDS)?;
        m.add("DEFAULT_LATENCY", crate::config::DEFAULT_LATENCY_S)?;
        m.add("MAX_LATENCY", crate::config::MAX_LATENCY_S)?;
        m.add("SYSCALLS", Syscall::ALL.map(Syscall::name))?;
        crate::event::add_attributes(m.py())?;
        Ok(())
    }
}
