//! `OpenEvent`: one open, immutable, built in batches from ring buffer records.
use opentrace_common::{COMM_LEN, Syscall};
use pyo3::{
    ffi,
    prelude::*,
    sync::PyOnceLock,
    types::{PyBytes, PyDict, PyString, PyTuple},
};

use crate::{error::Error, format::View};

/// A path's bytes, kept inside the event when short (most are): no allocation per event.
enum PathBytes {
    Inline { len: u8, bytes: [u8; PathBytes::INLINE] },
    Heap(Box<[u8]>),
}

impl PathBytes {
    const INLINE: usize = 80;

    fn new(path: &[u8]) -> PathBytes {
        if path.len() <= Self::INLINE {
            let mut bytes = [0; Self::INLINE];
            bytes[..path.len()].copy_from_slice(path);
            PathBytes::Inline { len: path.len() as u8, bytes }
        } else {
            PathBytes::Heap(path.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            PathBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            PathBytes::Heap(bytes) => bytes,
        }
    }
}

#[pyclass(module = "opentrace", name = "OpenEvent", frozen)]
pub struct OpenEvent {
    timestamp_ns: u64,
    ret: i64,
    flags: u64,
    mode: u64,
    pid: u32,
    tid: u32,
    uid: u32,
    dfd: i32,
    syscall: Syscall,
    comm_len: u8,
    comm: [u8; COMM_LEN],
    path: PathBytes,
    /// `path` decoded on first use: most consumers never look at most paths.
    path_str: PyOnceLock<Py<PyString>>,
}

impl OpenEvent {
    pub fn from_view(v: &View<'_>) -> OpenEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..v.comm.len()].copy_from_slice(v.comm);
        OpenEvent {
            timestamp_ns: v.timestamp_ns,
            ret: v.ret,
            flags: v.flags,
            mode: v.mode,
            pid: v.pid,
            tid: v.tid,
            uid: v.uid,
            dfd: v.dfd,
            syscall: v.syscall,
            comm_len: v.comm.len() as u8,
            comm,
            path: PathBytes::new(v.path),
            path_str: PyOnceLock::new(),
        }
    }

    pub fn view(&self) -> View<'_> {
        View {
            timestamp_ns: self.timestamp_ns,
            ret: self.ret,
            flags: self.flags,
            mode: self.mode,
            pid: self.pid,
            tid: self.tid,
            uid: self.uid,
            dfd: self.dfd,
            syscall: self.syscall,
            comm: self.comm_bytes(),
            path: self.path.as_bytes(),
        }
    }

    fn comm_bytes(&self) -> &[u8] {
        &self.comm[..usize::from(self.comm_len)]
    }

    fn key<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (
            self.timestamp_ns,
            self.pid,
            self.tid,
            self.uid,
            self.comm_bytes(),
            self.syscall as u8,
            self.path.as_bytes(),
            self.dfd,
            self.flags,
            self.mode,
            self.ret,
        )
            .into_pyobject(py)
    }
}

/// `os.fsdecode` for bytes: the filesystem encoding with surrogateescape.
fn fsdecode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: the pointer and length describe `bytes`; the result is a new reference or NULL.
    unsafe {
        let obj =
            ffi::PyUnicode_DecodeFSDefaultAndSize(bytes.as_ptr().cast(), bytes.len() as ffi::Py_ssize_t);
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// `os.fsencode` for a str or bytes argument.
fn fsencode(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    let text = value.cast::<PyString>()?;
    // SAFETY: `text` is a str; the result is a new reference to bytes or NULL.
    let encoded =
        unsafe { Bound::from_owned_ptr_or_err(value.py(), ffi::PyUnicode_EncodeFSDefault(text.as_ptr()))? };
    Ok(encoded.cast_into::<PyBytes>()?.as_bytes().to_vec())
}

#[pymethods]
impl OpenEvent {
    /// Builds an event by hand (tests, replays, unpickling); the tracer makes its own.
    #[new]
    #[pyo3(signature = (*, timestamp_ns, pid, tid, uid, comm, syscall, path, dfd = -100, flags = 0, mode = 0, ret = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        timestamp_ns: u64,
        pid: u32,
        tid: u32,
        uid: u32,
        comm: &Bound<'_, PyAny>,
        syscall: &str,
        path: &Bound<'_, PyAny>,
        dfd: i32,
        flags: u64,
        mode: u64,
        ret: i64,
    ) -> PyResult<OpenEvent> {
        let comm_bytes = fsencode(comm)?;
        if comm_bytes.len() >= COMM_LEN || comm_bytes.contains(&0) {
            return Err(pyo3::exceptions::PyValueError::new_err("comm must be at most 15 bytes with no NUL"));
        }
        let mut comm = [0u8; COMM_LEN];
        comm[..comm_bytes.len()].copy_from_slice(&comm_bytes);
        Ok(OpenEvent {
            timestamp_ns,
            ret,
            flags,
            mode,
            pid,
            tid,
            uid,
            dfd,
            syscall: Syscall::from_name(syscall).ok_or_else(|| {
                Error::Invalid(format!(
                    "syscall must be one of open, openat, openat2, creat, not {syscall:?}"
                ))
            })?,
            comm_len: comm_bytes.len() as u8,
            comm,
            path: PathBytes::new(&fsencode(path)?),
            path_str: PyOnceLock::new(),
        })
    }

    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }
    #[getter]
    fn pid(&self) -> u32 {
        self.pid
    }
    #[getter]
    fn tid(&self) -> u32 {
        self.tid
    }
    #[getter]
    fn uid(&self) -> u32 {
        self.uid
    }
    #[getter]
    fn comm<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        fsdecode(py, self.comm_bytes())
    }
    #[getter]
    fn syscall<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        match self.syscall {
            Syscall::Open => pyo3::intern!(py, "open"),
            Syscall::Openat => pyo3::intern!(py, "openat"),
            Syscall::Openat2 => pyo3::intern!(py, "openat2"),
            Syscall::Creat => pyo3::intern!(py, "creat"),
        }
    }
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        let s =
            self.path_str.get_or_try_init(py, || fsdecode(py, self.path.as_bytes()).map(Bound::unbind))?;
        Ok(s.bind(py).clone())
    }
    #[getter]
    fn path_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.path.as_bytes())
    }
    #[getter]
    fn dfd(&self) -> i32 {
        self.dfd
    }
    #[getter]
    fn flags(&self) -> u64 {
        self.flags
    }
    #[getter]
    fn mode(&self) -> u64 {
        self.mode
    }
    #[getter]
    fn ret(&self) -> i64 {
        self.ret
    }
    #[getter]
    fn fd(&self) -> Option<i64> {
        (self.ret >= 0).then_some(self.ret)
    }
    #[getter]
    fn errno(&self) -> Option<i64> {
        (self.ret < 0).then(|| -self.ret)
    }

    /// Every field except `path_bytes`, JSON-serialisable.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("timestamp_ns", self.timestamp_ns)?;
        d.set_item("pid", self.pid)?;
        d.set_item("tid", self.tid)?;
        d.set_item("uid", self.uid)?;
        d.set_item("comm", self.comm(py)?)?;
        d.set_item("syscall", self.syscall(py))?;
        d.set_item("path", self.path(py)?)?;
        d.set_item("dfd", self.dfd)?;
        d.set_item("flags", self.flags)?;
        d.set_item("mode", self.mode)?;
        d.set_item("ret", self.ret)?;
        d.set_item("fd", self.fd())?;
        d.set_item("errno", self.errno())?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let result = match self.ret {
            ret if ret >= 0 => format!("fd={ret}"),
            ret => format!("errno={}", -ret),
        };
        Ok(format!(
            "OpenEvent(pid={}, tid={}, comm={}, syscall='{}', path={}, {result})",
            self.pid,
            self.tid,
            self.comm(py)?.repr()?,
            self.syscall.name(),
            self.path(py)?.repr()?,
        ))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match other.cast::<OpenEvent>() {
            Ok(other) => {
                Ok(self.key(py)?.eq(other.get().key(py)?)?.into_pyobject(py)?.to_owned().into_any().unbind())
            }
            Err(_) => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.key(py)?.hash()
    }

    /// Pickling goes through the keyword constructor.
    fn __getnewargs_ex__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        let kwargs = self.to_dict(py)?;
        kwargs.del_item("fd")?;
        kwargs.del_item("errno")?;
        kwargs.set_item("path", self.path_bytes(py))?;
        kwargs.set_item("comm", PyBytes::new(py, self.comm_bytes()))?;
        Ok((PyTuple::empty(py), kwargs))
    }
}
