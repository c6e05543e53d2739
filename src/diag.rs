//! Diagnostics for the `opentrace` Python logger: notes gathered wherever they arise (often with
//! the GIL released, or inside the eBPF programs through aya-log) and emitted when we are back in
//! Python. Nothing here runs per event.
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;

/// Python's logging levels.
#[derive(Clone, Copy)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
}

static NOTES: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());

pub fn note(level: Level, message: String) {
    NOTES.lock().unwrap_or_else(PoisonError::into_inner).push((level, message));
}

/// Emits the gathered notes through `logging.getLogger("opentrace")`.
pub fn emit(py: Python<'_>) -> PyResult<()> {
    let notes = std::mem::take(&mut *NOTES.lock().unwrap_or_else(PoisonError::into_inner));
    if notes.is_empty() {
        return Ok(());
    }
    let logger = py.import("logging")?.call_method1("getLogger", ("opentrace",))?;
    for (level, message) in notes {
        logger.call_method1("log", (level as i32, message))?;
    }
    Ok(())
}

/// Receives the eBPF programs' aya-log records.
pub struct FromKernel;

impl log::Log for FromKernel {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error | log::Level::Warn => Level::Warning,
            log::Level::Info => Level::Info,
            log::Level::Debug | log::Level::Trace => Level::Debug,
        };
        note(level, format!("eBPF: {}", record.args()));
    }

    fn flush(&self) {}
}
