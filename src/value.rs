//! Field values to and from Python objects.
use opentrace_common::schema::{Input, Value};
use pyo3::{
    ffi,
    prelude::*,
    types::{PyBytes, PyInt, PyString},
};

/// `os.fsdecode` for bytes: the filesystem encoding with surrogateescape.
pub fn fsdecode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: the pointer and length describe `bytes`; the result is a new reference or NULL.
    unsafe {
        let obj =
            ffi::PyUnicode_DecodeFSDefaultAndSize(bytes.as_ptr().cast(), bytes.len() as ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// `os.fsencode` for a str.
pub fn fsencode<'py>(text: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: `text` is a str; the result is a new reference to bytes or NULL.
    let encoded =
        unsafe { Bound::from_owned_ptr_or_err(text.py(), ffi::PyUnicode_EncodeFSDefault(text.as_ptr()))? };
    Ok(encoded.cast_into::<PyBytes>()?)
}

/// The Python object for a value: int, str (fsdecoded for `Text`), bytes, a list of ints or None.
pub fn to_py<'py>(py: Python<'py>, value: Value<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::None => py.None().into_bound(py),
        Value::Int(n) => n.into_pyobject(py)?.into_any(),
        Value::UInt(n) => n.into_pyobject(py)?.into_any(),
        Value::Text(bytes) => fsdecode(py, bytes)?.into_any(),
        Value::Name(name) => PyString::intern(py, name).into_any(),
        Value::Bytes(bytes) => PyBytes::new(py, bytes).into_any(),
        array @ Value::Array { .. } => {
            let list = pyo3::types::PyList::empty(py);
            for n in array.ints() {
                list.append(to_py(py, n)?)?;
            }
            list.into_any()
        }
    })
}

/// As [`to_py`], but text as its raw bytes: what rebuilding an event needs to be exact.
pub fn to_py_exact<'py>(py: Python<'py>, value: Value<'_>) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::Text(bytes) => Ok(PyBytes::new(py, bytes).into_any()),
        other => to_py(py, other),
    }
}

/// A keyword argument as an [`Input`]: an int, or bytes (a str is fsencoded into `scratch`).
pub fn from_py<'a, 'py>(
    value: &'a Bound<'py, PyAny>,
    scratch: &'a mut Option<Bound<'py, PyBytes>>,
) -> PyResult<Input<'a>> {
    if value.is_none() {
        return Ok(Input::None);
    }
    if let Ok(int) = value.cast::<PyInt>() {
        return Ok(Input::Int(int.extract()?));
    }
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Input::Bytes(bytes.as_bytes()));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Input::Bytes(scratch.insert(fsencode(text)?).as_bytes()));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "expected an int, str or bytes, not {}",
        value.get_type().name()?
    )))
}
