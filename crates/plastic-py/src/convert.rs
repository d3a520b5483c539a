//! Conversions at the Python boundary: configuration dicts to the library's configurations,
//! numpy arrays to checked buffers and back, library errors to Python exceptions, and the
//! guard that keeps any panic from crossing into Python.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::{
    Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{
    PyFileNotFoundError, PyMemoryError, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use plastic::run::RunConfig;
use plastic::{Error, Float, NetworkConfig};

/// A library error as the Python exception a caller would expect: bad values are
/// `ValueError`, a missing file `FileNotFoundError`, other I/O `OSError`, too little memory
/// `MemoryError`, a diverged run `RuntimeError`.
pub fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        Error::Io { .. } => PyOSError::new_err(message),
        Error::Memory(_) => PyMemoryError::new_err(message),
        Error::Diverged(_) => PyRuntimeError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// The text of a panic's payload.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

/// Runs `f`, turning a panic (a bug in the engine or in these bindings: every input is
/// checked before it gets there) into a `RuntimeError` instead of letting it unwind into
/// Python. A panic raised on purpose to stop a run from a progress callback carries a
/// Python exception, which is re-raised as it was.
pub fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<crate::run::Interrupted>() {
            Ok(stop) => Err(stop.0),
            Err(payload) => Err(PyRuntimeError::new_err(format!(
                "internal error in plastic (please report it with the call that caused it): {}",
                panic_text(&*payload)
            ))),
        },
    }
}

/// One configuration value as TOML; `None` for Python's `None` (a key left at its default,
/// or `weight_clip` off).
fn toml_value(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<toml::Value>> {
    if v.is_none() {
        return Ok(None);
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(Some(toml::Value::Boolean(v.extract::<bool>()?)));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(Some(toml::Value::String(v.extract::<String>()?)));
    }
    if v.is_instance_of::<PyInt>() || (!v.is_instance_of::<PyFloat>() && v.hasattr("__index__")?) {
        return match v.extract::<i64>() {
            Ok(i) => Ok(Some(toml::Value::Integer(i))),
            Err(_) => Err(PyValueError::new_err(format!(
                "`{key}`: {} does not fit a 64-bit integer",
                v.repr()?
            ))),
        };
    }
    if let Ok(f) = v.extract::<f64>() {
        return Ok(Some(toml::Value::Float(f)));
    }
    Err(PyTypeError::new_err(format!(
        "`{key}` must be a bool, a number or a string, got {} ({})",
        v.get_type().name()?,
        v.repr()?
    )))
}

/// A Python dict of configuration keys as a TOML table (values that are `None` left out).
pub fn dict_to_table(config: &Bound<'_, PyDict>) -> PyResult<toml::Table> {
    let mut table = toml::Table::new();
    for (k, v) in config.iter() {
        let key: String = k.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "configuration keys must be strings, got {}",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        if let Some(value) = toml_value(&key, &v)? {
            table.insert(key, value);
        }
    }
    Ok(table)
}

/// A TOML value as a Python object.
pub fn toml_to_py<'py>(py: Python<'py>, v: &toml::Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        toml::Value::String(s) => PyString::new(py, s).into_any(),
        toml::Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        toml::Value::Float(f) => f.into_pyobject(py)?.into_any(),
        toml::Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        toml::Value::Datetime(d) => PyString::new(py, &d.to_string()).into_any(),
        toml::Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| toml_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        toml::Value::Table(t) => table_to_dict(py, t)?.into_any(),
    })
}

/// A TOML table as a Python dict.
pub fn table_to_dict<'py>(py: Python<'py>, t: &toml::Table) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in t {
        d.set_item(k, toml_to_py(py, v)?)?;
    }
    Ok(d)
}

/// A run configuration as a Python dict (the keys of its `config.toml`).
pub fn run_config_dict<'py>(py: Python<'py>, c: &RunConfig) -> PyResult<Bound<'py, PyDict>> {
    let table: toml::Table = toml::from_str(&c.to_toml())
        .map_err(|e| PyRuntimeError::new_err(format!("internal error: {e}")))?;
    table_to_dict(py, &table)
}

/// A network configuration as a Python dict (every key of [`NetworkConfig`]).
pub fn network_config_dict<'py>(
    py: Python<'py>,
    c: &NetworkConfig,
) -> PyResult<Bound<'py, PyDict>> {
    let table = toml::Table::try_from(c)
        .map_err(|e| PyRuntimeError::new_err(format!("internal error: {e}")))?;
    table_to_dict(py, &table)
}

/// A run configuration from a table with a `task` key: the task's defaults with the given
/// keys (the library's own parser: unknown keys and bad values are errors naming the key).
pub fn run_config_from_table(table: &toml::Table) -> PyResult<RunConfig> {
    let text =
        toml::to_string(table).map_err(|e| PyValueError::new_err(format!("configuration: {e}")))?;
    RunConfig::from_toml(&text).map_err(to_py)
}

/// A network configuration from keys of [`NetworkConfig`] (missing keys take the defaults
/// of `NetworkConfig::default()`); unknown keys and bad values are `ValueError`s that name
/// the key and say what is valid.
pub fn network_config_from_table(given: &toml::Table) -> PyResult<NetworkConfig> {
    let defaults = toml::Table::try_from(NetworkConfig::default())
        .map_err(|e| PyRuntimeError::new_err(format!("internal error: {e}")))?;
    let mut valid: Vec<String> = defaults.keys().cloned().collect();
    valid.push("weight_clip".into());
    valid.sort();
    let mut full = defaults.clone();
    for (k, v) in given {
        if !valid.contains(k) {
            return Err(PyValueError::new_err(format!(
                "unknown configuration key `{k}`; valid: {} (or `task` with that task's keys, \
                 see plastic.defaults)",
                valid.join(", ")
            )));
        }
        // a whole number where a real number is expected means that number
        let v = match (defaults.get(k), v) {
            (Some(toml::Value::Float(_)) | None, toml::Value::Integer(i)) => {
                toml::Value::Float(*i as f64)
            }
            (_, v) => v.clone(),
        };
        full.insert(k.clone(), v);
    }
    let parse = |t: toml::Table| -> Result<NetworkConfig, String> {
        toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_string())
    };
    match parse(full) {
        Ok(c) => {
            c.validate().map_err(to_py)?;
            Ok(c)
        }
        Err(message) => {
            // name the key: the first given one that fails on its own
            let culprit = given.keys().find(|k| {
                let mut one = defaults.clone();
                one.insert((*k).clone(), given[k.as_str()].clone());
                parse(one).is_err()
            });
            Err(PyValueError::new_err(match culprit {
                Some(k) => format!("configuration key `{k}` = {}: {message}", given[k.as_str()]),
                None => format!("invalid configuration: {message}"),
            }))
        }
    }
}

/// What a numpy array argument must be.
pub struct Expect<'a> {
    /// The argument's name, for messages.
    pub name: &'a str,
    /// What its axes are called, e.g. `(B, T, I)`.
    pub axes: &'a str,
    /// The size each axis must have (`None`: any).
    pub shape: &'a [Option<usize>],
}

/// The numpy dtype name of `F`.
pub fn dtype_name<F: Float>() -> &'static str {
    if F::NAME == "f32" {
        "float32"
    } else {
        "float64"
    }
}

/// Copies a numpy array argument after checking that it is a numpy array of dtype `F`,
/// C-contiguous, with the expected number of axes and sizes; every failure is a `ValueError`
/// that says what was expected. Returns its shape and its values.
pub fn read_array<F: Float + Element>(
    obj: &Bound<'_, PyAny>,
    e: &Expect<'_>,
) -> PyResult<(Vec<usize>, Vec<F>)> {
    let py = obj.py();
    let want = dtype_name::<F>();
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyValueError::new_err(format!(
            "{} must be a numpy.ndarray of dtype {want} and shape {}, got {}",
            e.name,
            e.axes,
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "an object".into())
        ))
    })?;
    let dtype = arr.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<F>(py)) {
        return Err(PyValueError::new_err(format!(
            "{} must have dtype {want} (the network's dtype), got {}; convert it with \
             .astype(numpy.{want})",
            e.name,
            dtype.str().map(|s| s.to_string()).unwrap_or_default()
        )));
    }
    let shape = arr.shape().to_vec();
    if shape.len() != e.shape.len() {
        return Err(PyValueError::new_err(format!(
            "{} must have {} axes {}, got shape {shape:?}",
            e.name,
            e.shape.len(),
            e.axes
        )));
    }
    for (k, (&got, want)) in shape.iter().zip(e.shape).enumerate() {
        if let Some(w) = want {
            if got != *w {
                let expected: Vec<String> = e
                    .shape
                    .iter()
                    .map(|s| s.map_or("any".to_string(), |v| v.to_string()))
                    .collect();
                return Err(PyValueError::new_err(format!(
                    "{} has shape {shape:?}, expected {} = ({}): axis {k} must be {w}",
                    e.name,
                    e.axes,
                    expected.join(", ")
                )));
            }
        }
    }
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{} must be C-contiguous (row-major); pass numpy.ascontiguousarray({})",
            e.name, e.name
        )));
    }
    let typed = arr
        .cast::<PyArrayDyn<F>>()
        .map_err(|_| PyValueError::new_err(format!("{} must have dtype {want}", e.name)))?;
    let ro = typed.try_readonly().map_err(|_| {
        PyValueError::new_err(format!(
            "{} is being written to elsewhere and cannot be read",
            e.name
        ))
    })?;
    let data = ro
        .as_slice()
        .map_err(|_| {
            PyValueError::new_err(format!(
                "{} must be C-contiguous (row-major); pass numpy.ascontiguousarray({})",
                e.name, e.name
            ))
        })?
        .to_vec();
    Ok((shape, data))
}

/// A new numpy array of `shape` holding `data`.
pub fn new_array<'py, F: Float + Element>(
    py: Python<'py>,
    data: Vec<F>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(numpy::PyArray1::from_vec(py, data)
        .reshape(shape.to_vec())?
        .into_any())
}
