//! The compiled part of the `plastic` Python package (`plastic._native`): the engine on numpy
//! arrays ([`network::NativeNetwork`]), training and reading runs ([`run`]). The package's
//! pure-Python part (`python/plastic/`) wraps it with the documented API (`plastic.Network`,
//! `plastic.train`, `plastic.load_run`, `plastic.torch`).
//!
//! At this boundary nothing from Python reaches the engine unchecked (array types, dtypes,
//! shapes, contiguity, finiteness, sizes against the available memory), every library error
//! becomes a Python exception, no panic unwinds into Python ([`convert::guarded`]), and the
//! GIL is released while the engine computes.

mod convert;
mod network;
mod run;

use pyo3::prelude::*;

/// The compiled core of `plastic` (use the `plastic` package, which documents it).
#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<network::NativeNetwork>()?;
    m.add_class::<network::NativeTape>()?;
    m.add_function(wrap_pyfunction!(network::live_tape_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(run::train, m)?)?;
    m.add_function(wrap_pyfunction!(run::read_run, m)?)?;
    m.add_function(wrap_pyfunction!(run::resolve_config, m)?)?;
    m.add_function(wrap_pyfunction!(run::episodes, m)?)?;
    m.add_function(wrap_pyfunction!(run::_panic_inside_guard_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(threads, m)?)?;
    Ok(())
}

/// The number of threads the engine computes on (set `RAYON_NUM_THREADS` before importing
/// plastic to change it; results do not depend on it).
#[pyfunction]
fn threads() -> usize {
    rayon::current_num_threads()
}
