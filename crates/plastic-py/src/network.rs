//! `plastic._native.NativeNetwork`: a [`Network`] in `f32` or `f64` with the engine's entry
//! points on numpy arrays. Every argument is checked before the engine sees it; the GIL is
//! released while the engine computes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use numpy::Element;
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use plastic::run::config::Dtype;
use plastic::run::{files, read_config, RunConfig};
use plastic::{Engine, Episodes, Float, GradRequest, Loss, Network, NetworkConfig, Tape};

use crate::convert::{
    dict_to_table, dtype_name, guarded, network_config_dict, network_config_from_table, new_array,
    read_array, run_config_dict, run_config_from_table, to_py, Expect,
};

/// The network in the float type it computes in.
#[derive(Clone)]
enum Net {
    F32(Network<f32>),
    F64(Network<f64>),
}

/// Runs `$body` with `$n` bound to the typed network (`&Network<f32>` or `&Network<f64>`).
macro_rules! typed {
    ($net:expr, $n:ident => $body:expr) => {
        match $net {
            Net::F32($n) => $body,
            Net::F64($n) => $body,
        }
    };
}

/// A dtype name (`"f32"`, `"float32"`, `"f64"`, `"float64"`) as the run's [`Dtype`].
fn parse_dtype(s: &str) -> PyResult<Dtype> {
    match s {
        "f32" | "float32" => Ok(Dtype::F32),
        "f64" | "float64" => Ok(Dtype::F64),
        _ => Err(PyValueError::new_err(format!(
            "dtype must be \"float32\" or \"float64\", got {s:?}"
        ))),
    }
}

/// The loss by name.
fn parse_loss(s: &str) -> PyResult<Loss> {
    match s {
        "mse" => Ok(Loss::Mse),
        "cross_entropy" | "cross-entropy" => Ok(Loss::CrossEntropy),
        _ => Err(PyValueError::new_err(format!(
            "loss must be \"mse\" or \"cross_entropy\", got {s:?}"
        ))),
    }
}

/// Refuses a network whose parameters would not fit in memory (before anything is
/// allocated: an allocation that fails aborts the process).
fn check_network_size(c: &NetworkConfig, bytes_per_value: f64) -> PyResult<()> {
    let (i, h) = (c.input_size as f64, c.hidden_size as f64);
    let d = (c.output_size as f64) + (c.extra_dim as f64) + 1.0;
    let gh = c.gates() as f64 * h;
    let dims = [(i, h), (h, gh), (h, gh), (h, d)];
    let wb: f64 = dims.iter().map(|(r, cc)| r * cc + cc).sum();
    let max_w = dims.iter().map(|(r, cc)| r * cc).fold(0.0, f64::max);
    // parameters (α doubles them), the ones-buffer, and the copies a caller makes
    let bytes = (3.0 * wb + max_w + d + 2.0 * h) * bytes_per_value;
    check_bytes(bytes, "this network's parameters")
}

/// Refuses `bytes` when the machine does not have them available (unless the memory check
/// is turned off, as for runs) or when they cannot be reserved at all (always: the
/// allocation would abort the process), with the estimate in the message.
pub fn check_bytes(bytes: f64, what: &str) -> PyResult<()> {
    let gib = bytes / f64::from(1u32 << 30);
    let available = plastic::run::memory::available();
    let impossible = !bytes.is_finite() || bytes >= (isize::MAX as f64) / 2.0 || {
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(bytes as usize).is_err()
    };
    let too_much = available.is_some_and(|a| bytes > a) && !plastic::run::memory::check_skipped();
    if impossible || too_much {
        return Err(PyMemoryError::new_err(format!(
            "{what} need an estimated {gib:.2} GiB, more than this machine has available{}; \
             reduce the sizes{}",
            available
                .map(|a| format!(" ({:.2} GiB)", a / f64::from(1u32 << 30)))
                .unwrap_or_default(),
            if impossible {
                String::new()
            } else {
                format!(
                    " (or set {}=1 to try anyway)",
                    plastic::run::memory::SKIP_ENV
                )
            }
        )));
    }
    Ok(())
}

/// Refuses a forward or backward pass over `b` episodes of `t` steps that would not fit in
/// memory (the engine's records grow with B·T·H).
fn check_pass_size(c: &NetworkConfig, b: usize, t: usize, bytes_per_value: f64) -> PyResult<()> {
    let (i, h) = (c.input_size as f64, c.hidden_size as f64);
    let d = c.full_output_size() as f64;
    let gh = c.gates() as f64 * h;
    let (bf, tf) = (b as f64, t as f64);
    // the rank-1 records of every layer (two terms each at most), the per-step records of
    // one episode per thread, inputs, targets, outputs and their gradients
    let records = bf * tf * 2.0 * ((i + h) + 2.0 * (h + gh) + (h + d));
    let threads = rayon::current_num_threads() as f64;
    let stride = 10.0 * h + 3.0 * gh + 2.0 * d + 16.0;
    let plastic = if c.is_plastic() {
        i * h + 2.0 * h * gh + h * d
    } else {
        0.0
    };
    let snapshots = (tf.sqrt().ceil() + 2.0) * plastic * 2.0;
    let workspaces = threads.min(bf) * (tf * stride + snapshots + 40.0 * gh);
    let data = bf * tf * (3.0 * i + 3.0 * d + 8.0);
    check_bytes(
        (records + workspaces + data) * bytes_per_value,
        &format!("a pass over {b} episodes of {t} steps"),
    )
}

/// The parameters of a typed network as a dict of numpy arrays.
fn parameters_of<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
) -> PyResult<Bound<'py, PyDict>> {
    named_arrays(py, net, net.params())
}

/// A flat buffer in the network's layout as a dict of named numpy arrays.
fn named_arrays<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
    flat: &[F],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for info in net.layout().infos() {
        d.set_item(
            &info.name,
            new_array(py, flat[info.range()].to_vec(), &info.shape)?,
        )?;
    }
    Ok(d)
}

/// Sets some or all parameters from a dict of numpy arrays; nothing changes unless every
/// entry is valid.
fn set_parameters_of<F: Float + Element>(
    net: &mut Network<F>,
    values: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let mut updates = Vec::new();
    for (k, v) in values.iter() {
        let name: String = k
            .extract()
            .map_err(|_| PyValueError::new_err("parameter names must be strings"))?;
        let info = net.layout().require(&name).map_err(to_py)?.clone();
        let shape: Vec<Option<usize>> = info.shape.iter().map(|&s| Some(s)).collect();
        let axes = format!("{:?}", info.shape);
        let (_, data) = read_array::<F>(
            &v,
            &Expect {
                name: &format!("parameter `{name}`"),
                axes: &axes,
                shape: &shape,
            },
        )?;
        if data.iter().any(|x| !x.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "parameter `{name}` contains NaN or infinity"
            )));
        }
        updates.push((info.range(), data));
    }
    for (range, data) in updates {
        net.params_mut()[range].copy_from_slice(&data);
    }
    Ok(())
}

/// Inputs `(B, T, I)` and, if given, targets `(B, T, O)` as checked episodes (zeros for
/// missing targets).
fn episodes_of<F: Float + Element>(
    net: &Network<F>,
    inputs: &Bound<'_, PyAny>,
    targets: Option<&Bound<'_, PyAny>>,
    test_begin: usize,
) -> PyResult<Episodes<F>> {
    let c = net.config();
    let (shape, input) = read_array::<F>(
        inputs,
        &Expect {
            name: "inputs",
            axes: "(B, T, I)",
            shape: &[None, None, Some(c.input_size)],
        },
    )?;
    let (b, t) = (shape[0], shape[1]);
    if b == 0 || t == 0 {
        return Err(PyValueError::new_err(format!(
            "inputs has shape {shape:?}: at least one episode (B) of at least one step (T) is \
             needed"
        )));
    }
    let target = match targets {
        Some(y) => {
            read_array::<F>(
                y,
                &Expect {
                    name: "targets",
                    axes: "(B, T, O) with B and T of the inputs",
                    shape: &[Some(b), Some(t), Some(c.output_size)],
                },
            )?
            .1
        }
        None => vec![F::zero(); b * t * c.output_size],
    };
    if test_begin >= t {
        return Err(PyValueError::new_err(format!(
            "test_begin ({test_begin}) must be below the number of steps T = {t}"
        )));
    }
    check_pass_size(c, b, t, std::mem::size_of::<F>() as f64)?;
    Episodes::new(b, t, c.input_size, c.output_size, input, target, test_begin).map_err(to_py)
}

/// `forward` for a typed network.
fn forward_of<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
    inputs: &Bound<'py, PyAny>,
    targets: Option<&Bound<'py, PyAny>>,
    test_begin: usize,
    loss: Loss,
) -> PyResult<Bound<'py, PyDict>> {
    let ep = episodes_of(net, inputs, targets, test_begin)?;
    let f = py.detach(|| guarded(|| net.forward(&ep, loss).map_err(to_py)))?;
    let (b, t, o) = (ep.batch, ep.steps, ep.output_size);
    let d = PyDict::new(py);
    d.set_item("outputs", new_array(py, f.outputs, &[b, t, o])?)?;
    d.set_item(
        "plasticity_rate",
        new_array(py, f.plasticity_rate, &[b, t])?,
    )?;
    d.set_item("applied_rate", new_array(py, f.applied_rate, &[b, t])?)?;
    d.set_item("decay_rate", new_array(py, f.decay_rate, &[b, t])?)?;
    d.set_item("update_norm", new_array(py, f.update_norm, &[b, t])?)?;
    d.set_item("plastic_norm", new_array(py, f.plastic_norm, &[b, t])?)?;
    d.set_item("inner_loss", new_array(py, f.inner_loss, &[t])?)?;
    if targets.is_some() {
        d.set_item("loss", f.loss.f64())?;
    } else {
        d.set_item("loss", py.None())?;
    }
    Ok(d)
}

/// `(loss, grads, d_inputs or None)` as a Python tuple.
fn gradient_tuple<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
    g: plastic::Gradient<F>,
    input_shape: [usize; 3],
) -> PyResult<Bound<'py, PyTuple>> {
    let grads = named_arrays(py, net, &g.grads)?;
    let dx = match g.input_grads {
        Some(v) => new_array(py, v, &input_shape)?,
        None => py.None().into_bound(py),
    };
    PyTuple::new(
        py,
        [
            g.loss.f64().into_pyobject(py)?.into_any(),
            grads.into_any(),
            dx,
        ],
    )
}

/// `loss_and_grad` for a typed network.
fn loss_and_grad_of<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
    inputs: &Bound<'py, PyAny>,
    targets: &Bound<'py, PyAny>,
    test_begin: usize,
    loss: Loss,
    input_grad: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let ep = episodes_of(net, inputs, Some(targets), test_begin)?;
    let request = GradRequest { inputs: input_grad };
    let g = py.detach(|| guarded(|| net.loss_and_grad_with(&ep, loss, request).map_err(to_py)))?;
    gradient_tuple(py, net, g, [ep.batch, ep.steps, ep.input_size])
}

/// `vjp` for a typed network.
fn vjp_of<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
    inputs: &Bound<'py, PyAny>,
    d_outputs: &Bound<'py, PyAny>,
    input_grad: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let ep = episodes_of(net, inputs, None, 0)?;
    let (_, dy) = read_array::<F>(
        d_outputs,
        &Expect {
            name: "d_outputs",
            axes: "(B, T, O) with B and T of the inputs",
            shape: &[Some(ep.batch), Some(ep.steps), Some(ep.output_size)],
        },
    )?;
    if dy.iter().any(|v| !v.is_finite()) {
        return Err(PyValueError::new_err("d_outputs contains NaN or infinity"));
    }
    let request = GradRequest { inputs: input_grad };
    let g = py.detach(|| guarded(|| net.vjp(&ep, &dy, request).map_err(to_py)))?;
    gradient_tuple(py, net, g, [ep.batch, ep.steps, ep.input_size])
}

/// A tape of either float type.
enum AnyTape {
    F32(Tape<f32>),
    F64(Tape<f64>),
}

/// The bytes held by the tapes alive now (for the tests: a tape's memory goes when its
/// autograd graph goes).
static LIVE_TAPE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The records of one forward pass, kept for its backward pass (`NativeNetwork.forward_with_tape`,
/// then `NativeNetwork.vjp_with_tape`, any number of times). Its memory is given back when it
/// is deleted.
#[pyclass(module = "plastic._native", name = "NativeTape")]
pub struct NativeTape {
    /// `None` only while it is being dropped.
    tape: Option<AnyTape>,
    bytes: usize,
}

impl NativeTape {
    fn new(tape: AnyTape) -> Self {
        let bytes = match &tape {
            AnyTape::F32(t) => t.bytes(),
            AnyTape::F64(t) => t.bytes(),
        };
        LIVE_TAPE_BYTES.fetch_add(bytes, Ordering::Relaxed);
        NativeTape {
            tape: Some(tape),
            bytes,
        }
    }
}

impl Drop for NativeTape {
    fn drop(&mut self) {
        LIVE_TAPE_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
        // the shared engine keeps one tape's buffer for the next forward pass
        match self.tape.take() {
            Some(AnyTape::F32(t)) => Engine::<f32>::shared().recycle_tape(t),
            Some(AnyTape::F64(t)) => Engine::<f64>::shared().recycle_tape(t),
            None => {}
        }
    }
}

#[pymethods]
impl NativeTape {
    /// The memory the tape holds, in bytes.
    #[getter]
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn __repr__(&self) -> String {
        let (b, t, dtype) = match &self.tape {
            Some(AnyTape::F32(t)) => (t.batch(), t.steps(), "float32"),
            Some(AnyTape::F64(t)) => (t.batch(), t.steps(), "float64"),
            None => (0, 0, "none"),
        };
        format!(
            "NativeTape(batch={b}, steps={t}, dtype={dtype}, {:.1} MiB)",
            self.bytes as f64 / f64::from(1u32 << 20)
        )
    }
}

/// The bytes held by the tapes alive now.
#[pyfunction]
pub fn live_tape_bytes() -> usize {
    LIVE_TAPE_BYTES.load(Ordering::Relaxed)
}

/// `forward_with_tape` for a typed network: the outputs and the tape.
fn forward_with_tape_of<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
    inputs: &Bound<'py, PyAny>,
    wrap: fn(Tape<F>) -> AnyTape,
) -> PyResult<(Bound<'py, PyAny>, NativeTape)> {
    let ep = episodes_of(net, inputs, None, 0)?;
    let engine = Engine::<F>::shared();
    let bytes = engine.tape_bytes(net, ep.batch, ep.steps) as f64;
    check_bytes(
        bytes,
        &format!(
            "the records of a forward pass over {} episodes of {} steps",
            ep.batch, ep.steps
        ),
    )?;
    let (f, tape) =
        py.detach(|| guarded(|| engine.forward_with_tape(net, &ep, Loss::Mse).map_err(to_py)))?;
    let outputs = new_array(py, f.outputs, &[ep.batch, ep.steps, ep.output_size])?;
    Ok((outputs, NativeTape::new(wrap(tape))))
}

/// `vjp_with_tape` for a typed network.
fn vjp_with_tape_of<'py, F: Float + Element>(
    py: Python<'py>,
    net: &Network<F>,
    tape: &mut Tape<F>,
    d_outputs: &Bound<'py, PyAny>,
    input_grad: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let (b, t, o) = (tape.batch(), tape.steps(), net.config().output_size);
    let (_, dy) = read_array::<F>(
        d_outputs,
        &Expect {
            name: "d_outputs",
            axes: "(B, T, O) with B and T of the recorded inputs",
            shape: &[Some(b), Some(t), Some(o)],
        },
    )?;
    if dy.iter().any(|v| !v.is_finite()) {
        return Err(PyValueError::new_err("d_outputs contains NaN or infinity"));
    }
    let request = GradRequest { inputs: input_grad };
    let engine = Engine::<F>::shared();
    let g =
        py.detach(|| guarded(|| engine.vjp_with_tape(net, tape, &dy, request).map_err(to_py)))?;
    gradient_tuple(py, net, g, [b, t, net.config().input_size])
}

/// A seed from Python: a whole number in `0..=i64::MAX`.
fn parse_seed(seed: &Bound<'_, PyAny>) -> PyResult<u64> {
    match seed.extract::<i64>() {
        Ok(s) if s >= 0 => Ok(s as u64),
        _ => Err(PyValueError::new_err(format!(
            "seed must be a whole number from 0 to {}, got {}",
            i64::MAX,
            seed.repr()?
        ))),
    }
}

/// The engine's network, in float32 or float64 (use `plastic.Network`, which wraps it).
#[pyclass(module = "plastic._native", name = "NativeNetwork")]
pub struct NativeNetwork {
    net: Net,
    /// The run configuration the network came from (a `task` was given, or it was loaded
    /// from a run), if any.
    run: Option<RunConfig>,
}

impl NativeNetwork {
    fn build(config: NetworkConfig, seed: u64, dtype: Dtype) -> PyResult<Net> {
        let size = if dtype == Dtype::F64 { 8.0 } else { 4.0 };
        check_network_size(&config, size)?;
        Ok(match dtype {
            Dtype::F32 => Net::F32(Network::new(config, seed).map_err(to_py)?),
            Dtype::F64 => Net::F64(Network::new(config, seed).map_err(to_py)?),
        })
    }
}

#[pymethods]
impl NativeNetwork {
    /// A network from configuration keys (those of a run's `config.toml`; with `task`, that
    /// task's defaults fill the missing keys and define the input and output sizes),
    /// initialised from `seed`. `seed` and `dtype` default to the configuration's (a run's
    /// `seed` and `dtype` keys), else 0 and float32.
    #[new]
    #[pyo3(signature = (config, seed=None, dtype=None))]
    fn new(
        config: &Bound<'_, PyDict>,
        seed: Option<&Bound<'_, PyAny>>,
        dtype: Option<&str>,
    ) -> PyResult<Self> {
        guarded(|| {
            let table = dict_to_table(config)?;
            let (network, run) = if table.contains_key("task") {
                let run = run_config_from_table(&table)?;
                (run.network_config(), Some(run))
            } else {
                (network_config_from_table(&table)?, None)
            };
            let seed = match seed {
                Some(s) => parse_seed(s)?,
                None => run.as_ref().map_or(0, |r| r.seed),
            };
            let dtype = match dtype {
                Some(d) => parse_dtype(d)?,
                None => run.as_ref().map_or(Dtype::F32, |r| r.train.dtype),
            };
            Ok(NativeNetwork {
                net: Self::build(network, seed, dtype)?,
                run,
            })
        })
    }

    /// Loads a trained network: `path` is a run folder (its `config.toml` and
    /// `best.safetensors`) or a `best.safetensors` file (whose metadata holds the run's
    /// configuration). `dtype` defaults to the run's.
    #[staticmethod]
    #[pyo3(signature = (path, dtype=None))]
    fn load(path: PathBuf, dtype: Option<&str>) -> PyResult<Self> {
        guarded(|| {
            let (run, file) = if path.is_dir() {
                (read_config(&path).map_err(to_py)?, path.join(files::BEST))
            } else {
                (config_of_best(&path)?, path.clone())
            };
            if !file.exists() {
                return Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
                    "{} does not exist: the run has not saved its best parameters yet (train \
                     it first)",
                    file.display()
                )));
            }
            let dtype = match dtype {
                Some(d) => parse_dtype(d)?,
                None => run.train.dtype,
            };
            let config = run.network_config();
            let size = if dtype == Dtype::F64 { 8.0 } else { 4.0 };
            check_network_size(&config, size)?;
            let net = match dtype {
                Dtype::F32 => Net::F32(Network::load(config, &file).map_err(to_py)?),
                Dtype::F64 => Net::F64(Network::load(config, &file).map_err(to_py)?),
            };
            Ok(NativeNetwork {
                net,
                run: Some(run),
            })
        })
    }

    /// The numpy dtype name the network computes in: "float32" or "float64".
    #[getter]
    fn dtype(&self) -> &'static str {
        typed!(&self.net, n => dtype_name_of(n))
    }

    /// Every key of the network's configuration, as a dict.
    fn network_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        typed!(&self.net, n => network_config_dict(py, n.config()))
    }

    /// The run configuration (a dict of `config.toml`'s keys) if the network was made from
    /// a task or loaded from a run, else None.
    fn run_config<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.run
            .as_ref()
            .map(|r| run_config_dict(py, r))
            .transpose()
    }

    /// `[(name, shape, trainable)]` of every parameter, in the engine's order.
    fn parameter_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let infos = typed!(&self.net, n => n.layout().infos().to_vec());
        let items = infos
            .iter()
            .map(|i| {
                PyTuple::new(
                    py,
                    [
                        i.name.clone().into_pyobject(py)?.into_any(),
                        PyTuple::new(py, &i.shape)?.into_any(),
                        pyo3::types::PyBool::new(py, i.trainable)
                            .to_owned()
                            .into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Every parameter as a dict of new numpy arrays.
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guarded(|| typed!(&self.net, n => parameters_of(py, n)))
    }

    /// Sets the parameters named in `values` (a dict of numpy arrays of the network's
    /// dtype and each parameter's shape); all are checked before any is set.
    fn set_parameters(&mut self, values: &Bound<'_, PyDict>) -> PyResult<()> {
        guarded(|| match &mut self.net {
            Net::F32(n) => set_parameters_of(n, values),
            Net::F64(n) => set_parameters_of(n, values),
        })
    }

    /// The forward pass: a dict of outputs and per-step diagnostics.
    #[pyo3(signature = (inputs, targets=None, test_begin=0, loss="mse"))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        targets: Option<&Bound<'py, PyAny>>,
        test_begin: usize,
        loss: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let loss = parse_loss(loss)?;
        guarded(|| typed!(&self.net, n => forward_of(py, n, inputs, targets, test_begin, loss)))
    }

    /// The episode loss and its gradient: `(loss, grads, d_inputs or None)`.
    #[pyo3(signature = (inputs, targets, test_begin=0, loss="mse", input_grad=false))]
    fn loss_and_grad<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
        test_begin: usize,
        loss: &str,
        input_grad: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let loss = parse_loss(loss)?;
        guarded(
            || typed!(&self.net, n => loss_and_grad_of(py, n, inputs, targets, test_begin, loss, input_grad)),
        )
    }

    /// The vector-Jacobian product: `(sum(d_outputs * outputs), grads, d_inputs or None)`.
    #[pyo3(signature = (inputs, d_outputs, input_grad=true))]
    fn vjp<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        d_outputs: &Bound<'py, PyAny>,
        input_grad: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        guarded(|| typed!(&self.net, n => vjp_of(py, n, inputs, d_outputs, input_grad)))
    }

    /// The forward pass, keeping its records for `vjp_with_tape`: `(outputs, tape)`.
    fn forward_with_tape<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, NativeTape)> {
        guarded(|| match &self.net {
            Net::F32(n) => forward_with_tape_of(py, n, inputs, AnyTape::F32),
            Net::F64(n) => forward_with_tape_of(py, n, inputs, AnyTape::F64),
        })
    }

    /// The vector-Jacobian product from the records of `forward_with_tape` (the backward
    /// pass only): `(sum(d_outputs * outputs), grads, d_inputs or None)`.
    #[pyo3(signature = (tape, d_outputs, input_grad=true))]
    fn vjp_with_tape<'py>(
        &self,
        py: Python<'py>,
        mut tape: PyRefMut<'py, NativeTape>,
        d_outputs: &Bound<'py, PyAny>,
        input_grad: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        guarded(|| match (&self.net, &mut tape.tape) {
            (Net::F32(n), Some(AnyTape::F32(t))) => {
                vjp_with_tape_of(py, n, t, d_outputs, input_grad)
            }
            (Net::F64(n), Some(AnyTape::F64(t))) => {
                vjp_with_tape_of(py, n, t, d_outputs, input_grad)
            }
            (n, _) => Err(PyValueError::new_err(format!(
                "this tape was recorded in the other float type than this network's ({}); use \
                 it with the network that recorded it",
                typed!(n, n => dtype_name_of(n))
            ))),
        })
    }

    /// A copy of this network (parameters included).
    fn copy(&self) -> Self {
        NativeNetwork {
            net: self.net.clone(),
            run: self.run.clone(),
        }
    }

    /// A copy of this network in another dtype ("float32" or "float64").
    fn astype(&self, dtype: &str) -> PyResult<Self> {
        let want = parse_dtype(dtype)?;
        guarded(|| {
            let named = typed!(&self.net, n => n.named_params());
            let config = typed!(&self.net, n => n.config().clone());
            let net = match want {
                Dtype::F32 => Net::F32(Network::from_named(config, &named).map_err(to_py)?),
                Dtype::F64 => Net::F64(Network::from_named(config, &named).map_err(to_py)?),
            };
            Ok(NativeNetwork {
                net,
                run: self.run.clone(),
            })
        })
    }
}

fn dtype_name_of<F: Float>(_: &Network<F>) -> &'static str {
    dtype_name::<F>()
}

/// The run configuration stored in a `best.safetensors` file's metadata.
fn config_of_best(path: &Path) -> PyResult<RunConfig> {
    let bytes = std::fs::read(path).map_err(|e| to_py(plastic::Error::io(path, e)))?;
    let meta = plastic::params::safetensors_metadata(&bytes, path).map_err(to_py)?;
    let text = meta.get("config").ok_or_else(|| {
        PyValueError::new_err(format!(
            "{} has no run configuration in its metadata; load the run folder instead, or \
             make a plastic.Network with its configuration and set_parameters",
            path.display()
        ))
    })?;
    RunConfig::from_toml(text).map_err(|e| {
        PyValueError::new_err(format!(
            "{}: corrupt: its configuration: {e}",
            path.display()
        ))
    })
}
