//! `opentrace._opentrace`: the compiled half of opentrace. The public API is the Python package.
mod diag;
mod error;
mod event;
mod format;
mod loader;
mod ring;
mod session;
mod tracefs;

use pyo3::prelude::*;

#[pymodule]
mod _opentrace {
    use pyo3::prelude::*;

    use crate::tracefs;
    #[pymodule_export]
    use crate::{event::OpenEvent, format::Formatter, session::Session};

    /// Every tracepoint as "category:name", sorted.
    #[pyfunction]
    fn tracepoints(py: Python<'_>) -> PyResult<Vec<String>> {
        let names = py.detach(tracefs::list);
        crate::diag::emit(py)?;
        Ok(names?)
    }

    type RawFormat = (String, u32, Vec<(String, String, u32, u32, bool)>, String);

    fn raw(format: tracefs::Format) -> RawFormat {
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

    /// Parses the text of a `format` file; ValueError saying which line is wrong.
    #[pyfunction]
    fn parse_format(text: &str) -> PyResult<RawFormat> {
        tracefs::parse(text).map(raw).map_err(pyo3::exceptions::PyValueError::new_err)
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("PATH_MAX", opentrace_common::PATH_MAX)?;
        Ok(())
    }
}
