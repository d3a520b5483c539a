//! Runs from Python: training (the library's run code, so the folder is the CLI's), reading
//! a run folder back, the tasks' episode generators and their default configurations.

use std::path::PathBuf;

use numpy::PyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use plastic::run::config::Dtype;
use plastic::run::{self, files, LogRow, Observer, RunConfig, Start};
use plastic::Loss;

use crate::convert::{
    dict_to_table, guarded, new_array, run_config_dict, run_config_from_table, to_py,
};

/// The payload of the unwind that stops a training run when its progress callback raised
/// (or the user pressed Ctrl-C): the Python exception, re-raised by [`guarded`] at the
/// boundary. Everything the run had written stays as a killed run leaves it (resumable).
pub struct Interrupted(pub PyErr);

/// Forwards a run's progress to a Python callable, as dicts; checks for Ctrl-C at every
/// step.
struct PyObserver {
    callback: Option<Py<PyAny>>,
    total: usize,
}

impl PyObserver {
    /// Calls the callback with the dict `fill` makes (and checks for signals); an exception
    /// stops the run by unwinding to the boundary with it.
    fn send(&mut self, fill: impl FnOnce(&Bound<'_, PyDict>) -> PyResult<()>) {
        let result = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(cb) = &self.callback {
                let d = PyDict::new(py);
                fill(&d)?;
                cb.bind(py).call1((d,))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            std::panic::resume_unwind(Box::new(Interrupted(e)));
        }
    }
}

impl Observer for PyObserver {
    fn start(&mut self, from: usize, to: usize) {
        self.total = to;
        self.send(|d| {
            d.set_item("event", "start")?;
            d.set_item("step", from)?;
            d.set_item("total", to)
        });
    }
    fn step(&mut self, step: usize, loss: f64) {
        let total = self.total;
        self.send(|d| {
            d.set_item("event", "step")?;
            d.set_item("step", step)?;
            d.set_item("total", total)?;
            d.set_item("loss", loss)
        });
    }
    fn log(&mut self, row: &LogRow) {
        let total = self.total;
        self.send(|d| {
            d.set_item("event", "log")?;
            d.set_item("step", row.step)?;
            d.set_item("total", total)?;
            d.set_item("train_loss", row.train_loss)?;
            d.set_item("val_loss", row.val_loss)?;
            d.set_item("lr", row.lr)?;
            d.set_item("elapsed_s", row.elapsed_s)
        });
    }
    fn note(&mut self, message: &str) {
        self.send(|d| {
            d.set_item("event", "note")?;
            d.set_item("message", message)
        });
    }
}

/// A run's summary (`test.json`) as a dict.
fn summary_dict<'py>(py: Python<'py>, s: &run::Summary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("test_loss", s.test_loss)?;
    d.set_item("test_batches", s.test_batches)?;
    d.set_item("best_step", s.best_step)?;
    d.set_item("best_val_loss", s.best_val_loss)?;
    d.set_item("steps", s.steps)?;
    d.set_item("elapsed_s", s.elapsed_s)?;
    Ok(d)
}

/// The run configuration of a dict with a `task` key.
fn run_config(config: &Bound<'_, PyDict>) -> PyResult<RunConfig> {
    let table = dict_to_table(config)?;
    if !table.contains_key("task") {
        return Err(PyValueError::new_err(format!(
            "a run needs a task; valid: {}",
            plastic::run::config::TASK_NAMES.join(", ")
        )));
    }
    run_config_from_table(&table)
}

/// Trains a run into `out` (a new run from `config`, or with `resume` the run already
/// there) and returns its summary; `progress` (a callable or None) receives dicts.
#[pyfunction]
#[pyo3(signature = (config, out, overwrite=false, resume=false, progress=None))]
pub fn train<'py>(
    py: Python<'py>,
    config: &Bound<'py, PyDict>,
    out: PathBuf,
    overwrite: bool,
    resume: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    guarded(|| {
        let start = if resume {
            if !config.is_empty() {
                return Err(PyValueError::new_err(
                    "resume continues the run in `out` with its own configuration; give no \
                     configuration keys with resume=True",
                ));
            }
            Start::Resume
        } else {
            Start::New {
                config: Box::new(run_config(config)?),
                overwrite,
            }
        };
        let mut observer = PyObserver {
            callback: progress,
            total: 0,
        };
        // the GIL is released while training; the observer takes it for each callback
        let summary =
            py.detach(|| guarded(|| run::train(&out, start, &mut observer).map_err(to_py)))?;
        summary_dict(py, &summary)
    })
}

/// Reads a run folder: `{"config", "progress" (dict of numpy columns), "summary" (dict or
/// None)}`; the progress rows are verified against the checkpoint's checksum.
#[pyfunction]
pub fn read_run<'py>(py: Python<'py>, dir: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    guarded(|| {
        if !dir.is_dir() {
            return Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
                "{} is not a folder: give the folder of a run (what plastic.train(out=...) or \
                 `plastic train --out DIR` wrote)",
                dir.display()
            )));
        }
        let config = run::read_config(&dir).map_err(to_py)?;
        let rows = if dir.join(files::PROGRESS).exists() {
            run::read_progress(&dir).map_err(to_py)?
        } else {
            Vec::new()
        };
        let columns = PyDict::new(py);
        let step: Vec<i64> = rows.iter().map(|r| r.step as i64).collect();
        columns.set_item("step", PyArray1::from_vec(py, step))?;
        type Column = fn(&LogRow) -> f64;
        let fields: [(&str, Column); 4] = [
            ("train_loss", |r| r.train_loss),
            ("val_loss", |r| r.val_loss),
            ("lr", |r| r.lr),
            ("elapsed_s", |r| r.elapsed_s),
        ];
        for (name, get) in fields {
            let v: Vec<f64> = rows.iter().map(get).collect();
            columns.set_item(name, PyArray1::from_vec(py, v))?;
        }
        let d = PyDict::new(py);
        d.set_item("config", run_config_dict(py, &config)?)?;
        d.set_item("progress", columns)?;
        if run::is_finished(&dir) {
            let s = run::read_summary(&dir).map_err(to_py)?;
            d.set_item("summary", summary_dict(py, &s)?)?;
        } else {
            d.set_item("summary", py.None())?;
        }
        Ok(d)
    })
}

/// The full configuration of a task with `config`'s keys applied (every key of its
/// `config.toml`), as a dict.
#[pyfunction]
pub fn resolve_config<'py>(
    py: Python<'py>,
    config: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    guarded(|| run_config_dict(py, &run_config(config)?))
}

/// A batch of a task's episodes, exactly as a run draws them: `split` "train" is the data
/// of training step `index`, "validation" the `index`-th validation batch, "test" the
/// `index`-th batch of the fixed test set (the same for every seed). Returns `{"inputs",
/// "targets", "test_begin", "loss"}`.
#[pyfunction]
#[pyo3(signature = (config, split="train", index=0, batch=None))]
pub fn episodes<'py>(
    py: Python<'py>,
    config: &Bound<'py, PyDict>,
    split: &str,
    index: usize,
    batch: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    guarded(|| {
        let c = run_config(config)?;
        let batch = batch.unwrap_or(c.train.batch_size);
        if batch == 0 {
            return Err(PyValueError::new_err("batch must be at least 1"));
        }
        let mut rng = match split {
            "train" => run::train_rng(c.seed, index),
            "validation" => run::val_rng(c.seed, index),
            "test" => {
                let mut rng = run::test_rng();
                for _ in 0..index {
                    let _ = c.task.generate::<f64>(&mut rng, batch);
                }
                rng
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "split must be \"train\", \"validation\" or \"test\", got {split:?}"
                )))
            }
        };
        let values = (batch as f64) * (c.task.steps() as f64);
        let io = (c.task.input_size() + c.task.output_size()) as f64;
        // generated in f64, then converted: 16 bytes per value at the peak
        crate::network::check_bytes(values * io * 16.0, &format!("{batch} episodes"))?;
        let d = PyDict::new(py);
        let shape = |n: usize| [batch, c.task.steps(), n];
        match c.train.dtype {
            Dtype::F32 => {
                let ep = c.task.generate::<f32>(&mut rng, batch);
                d.set_item("inputs", new_array(py, ep.input, &shape(ep.input_size))?)?;
                d.set_item("targets", new_array(py, ep.target, &shape(ep.output_size))?)?;
            }
            Dtype::F64 => {
                let ep = c.task.generate::<f64>(&mut rng, batch);
                d.set_item("inputs", new_array(py, ep.input, &shape(ep.input_size))?)?;
                d.set_item("targets", new_array(py, ep.target, &shape(ep.output_size))?)?;
            }
        }
        d.set_item("test_begin", c.task.test_begin())?;
        d.set_item(
            "loss",
            match c.task.loss() {
                Loss::Mse => "mse",
                Loss::CrossEntropy => "cross_entropy",
            },
        )?;
        Ok(d)
    })
}

/// Panics inside the boundary's guard, to test that a panic becomes a `RuntimeError` and
/// the interpreter lives on.
#[pyfunction]
pub fn _panic_inside_guard_for_tests(py: Python<'_>) -> PyResult<()> {
    guarded(|| py.detach(|| guarded(|| panic!("a deliberate panic (test of the guard)"))))
}
