//! Reference fixtures (`plastic-rnn-reference/1`): numbers recorded from the authors'
//! PyTorch implementation in float64, and the comparison used to check this engine
//! against them.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::NetworkConfig;
use crate::episode::Episodes;
use crate::error::{Error, Result};
use crate::params::NamedTensor;

/// A parsed fixture file.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The fixture's name.
    pub name: String,
    /// The network configuration.
    pub config: NetworkConfig,
    /// Batch size.
    pub batch: usize,
    /// Episode length.
    pub steps: usize,
    /// First step that counts in the loss.
    pub test_begin: usize,
    /// The meta-learned parameters.
    pub params: BTreeMap<String, NamedTensor>,
    /// Input (B, T, I).
    pub input: NamedTensor,
    /// Target (B, T, O).
    pub target: NamedTensor,
    /// Expected tensors: `outputs`, `plasticity_rate`, `decay_rate`, `inner_loss`.
    pub expected: BTreeMap<String, NamedTensor>,
    /// Expected loss.
    pub loss: f64,
    /// Expected gradients by parameter name.
    pub grads: BTreeMap<String, NamedTensor>,
}

/// Reads one fixture tensor (`{"shape": [...], "data": [...]}`); `what` names it in errors.
pub fn tensor(v: &Value, what: &str, path: &Path) -> Result<NamedTensor> {
    let bad = |m: &str| Error::format(path, format!("{what}: {m}"));
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing `shape`"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or_else(|| bad("shape entries must be integers"))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing `data`"))?
        .iter()
        .map(|d| {
            d.as_f64()
                .ok_or_else(|| bad("data entries must be numbers"))
        })
        .collect::<Result<Vec<_>>>()?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad(&format!("{} values for shape {shape:?}", data.len())));
    }
    Ok(NamedTensor { shape, data })
}

fn tensors(v: &Value, what: &str, path: &Path) -> Result<BTreeMap<String, NamedTensor>> {
    v.as_object()
        .ok_or_else(|| Error::format(path, format!("`{what}` must be an object")))?
        .iter()
        .map(|(k, t)| Ok((k.clone(), tensor(t, &format!("{what}.{k}"), path)?)))
        .collect()
}

fn config(v: &Value, path: &Path) -> Result<NetworkConfig> {
    let bad = |k: &str| Error::format(path, format!("config.{k} missing or of the wrong type"));
    let s = |k: &str| v.get(k).and_then(Value::as_str).ok_or_else(|| bad(k));
    let u = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| bad(k))
    };
    let f = |k: &str| v.get(k).and_then(Value::as_f64).ok_or_else(|| bad(k));
    let b = |k: &str| v.get(k).and_then(Value::as_bool).ok_or_else(|| bad(k));
    Ok(NetworkConfig {
        rnn: s("rnn")?.parse()?,
        plasticity: s("plasticity")?.parse()?,
        input_size: u("input_size")?,
        hidden_size: u("hidden_size")?,
        output_size: u("output_size")?,
        extra_dim: u("extra_dim")?,
        modulation: b("modulation")?,
        p_lr: f("p_lr")?,
        p_wd: f("p_wd")?,
        inner_grad_clip: f("inner_grad_clip")?,
        weight_clip: match v.get("weight_clip") {
            None | Some(Value::Null) => None,
            Some(x) => Some(x.as_f64().ok_or_else(|| bad("weight_clip"))?),
        },
        layernorm: b("layernorm")?,
        inner_lr_mode: s("inner_lr_mode")?.parse()?,
        random_network: v
            .get("random_network")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        input_layer: true,
    })
}

impl Fixture {
    /// Reads and parses a fixture file.
    pub fn load(path: &Path) -> Result<Fixture> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        let fmt = v.get("format").and_then(Value::as_str).unwrap_or("");
        if fmt != "plastic-rnn-reference/1" {
            return Err(Error::format(
                path,
                format!("format `{fmt}`; valid: plastic-rnn-reference/1"),
            ));
        }
        let get = |k: &str| {
            v.get(k)
                .ok_or_else(|| Error::format(path, format!("missing `{k}`")))
        };
        let usize_of = |k: &str| {
            get(k)?
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| Error::format(path, format!("`{k}` must be an integer")))
        };
        let expected = get("expected")?;
        let mut exp = BTreeMap::new();
        for k in ["outputs", "plasticity_rate", "decay_rate", "inner_loss"] {
            let t = expected
                .get(k)
                .ok_or_else(|| Error::format(path, format!("missing `expected.{k}`")))?;
            exp.insert(k.to_string(), tensor(t, &format!("expected.{k}"), path)?);
        }
        Ok(Fixture {
            name: v
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    path.file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                }),
            config: config(get("config")?, path)?,
            batch: usize_of("batch")?,
            steps: usize_of("steps")?,
            test_begin: usize_of("test_begin")?,
            params: tensors(get("params")?, "params", path)?,
            input: tensor(get("input")?, "input", path)?,
            target: tensor(get("target")?, "target", path)?,
            expected: exp,
            loss: expected
                .get("loss")
                .and_then(Value::as_f64)
                .ok_or_else(|| Error::format(path, "missing `expected.loss`"))?,
            grads: tensors(
                expected
                    .get("grads")
                    .ok_or_else(|| Error::format(path, "missing `expected.grads`"))?,
                "expected.grads",
                path,
            )?,
        })
    }

    /// Reads the recurrent part of an image-task fixture (`plastic-rnn-fsc/1`): the
    /// network without its input layer (docs/fsc.md §5), `expected.rnn_input` as the input
    /// and the one-hot `labels` as the target (the loss is the cross-entropy). The CNN and
    /// projection (`cnn.*`, `proj.*`) are left out of `params` and `grads`.
    pub fn load_fsc(path: &Path) -> Result<Fixture> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
        let fmt = v.get("format").and_then(Value::as_str).unwrap_or("");
        if fmt != "plastic-rnn-fsc/1" {
            return Err(Error::format(
                path,
                format!("format `{fmt}`; valid: plastic-rnn-fsc/1"),
            ));
        }
        let get = |k: &str| {
            v.get(k)
                .ok_or_else(|| Error::format(path, format!("missing `{k}`")))
        };
        let expected = get("expected")?;
        let exp_tensor = |k: &str| {
            let t = expected
                .get(k)
                .ok_or_else(|| Error::format(path, format!("missing `expected.{k}`")))?;
            tensor(t, &format!("expected.{k}"), path)
        };
        let mut config = config(get("config")?, path)?;
        config.input_layer = false;
        let rnn_part = |m: BTreeMap<String, NamedTensor>| -> BTreeMap<String, NamedTensor> {
            m.into_iter()
                .filter(|(k, _)| !k.starts_with("cnn.") && !k.starts_with("proj."))
                .collect()
        };
        let labels = tensor(get("labels")?, "labels", path)?;
        let o = config.output_size;
        let mut onehot = vec![0.0; labels.data.len() * o];
        for (k, &l) in labels.data.iter().enumerate() {
            if l < 0.0 || l.fract() != 0.0 || l as usize >= o {
                return Err(Error::format(
                    path,
                    format!("labels[{k}] = {l}; valid: integers 0..{o}"),
                ));
            }
            onehot[k * o + l as usize] = 1.0;
        }
        let mut fx = Fixture {
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            config,
            batch: 0,
            steps: 0,
            test_begin: 0,
            params: rnn_part(tensors(get("params")?, "params", path)?),
            input: exp_tensor("rnn_input")?,
            target: NamedTensor {
                shape: [labels.shape.as_slice(), &[o]].concat(),
                data: onehot,
            },
            expected: ["outputs", "plasticity_rate", "decay_rate", "inner_loss"]
                .into_iter()
                .map(|k| Ok((k.to_string(), exp_tensor(k)?)))
                .collect::<Result<_>>()?,
            loss: expected
                .get("loss")
                .and_then(Value::as_f64)
                .ok_or_else(|| Error::format(path, "missing `expected.loss`"))?,
            grads: BTreeMap::new(),
        };
        let grads = expected
            .get("grads")
            .ok_or_else(|| Error::format(path, "missing `expected.grads`"))?;
        fx.grads = rnn_part(tensors(grads, "expected.grads", path)?);
        for (field, k) in [
            (&mut fx.batch, "batch"),
            (&mut fx.steps, "steps"),
            (&mut fx.test_begin, "test_begin"),
        ] {
            *field = get(k)?
                .as_u64()
                .ok_or_else(|| Error::format(path, format!("`{k}` must be an integer")))?
                as usize;
        }
        Ok(fx)
    }

    /// The fixture's episodes in float type `F`.
    pub fn episodes<F: crate::Float>(&self) -> Result<Episodes<F>> {
        Episodes::new(
            self.batch,
            self.steps,
            self.config.input_size,
            self.config.output_size,
            self.input.data.iter().map(|&v| F::of(v)).collect(),
            self.target.data.iter().map(|&v| F::of(v)).collect(),
            self.test_begin,
        )
    }
}

/// The worst element of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mismatch {
    /// The error measure: `max|ours − expected| / max|expected|`, or the absolute error
    /// when `expected` is all zeros.
    pub error: f64,
    /// Whether `error` is absolute (expected all zeros).
    pub absolute: bool,
    /// Index of the worst element.
    pub index: usize,
    /// Our value there.
    pub ours: f64,
    /// The expected value there.
    pub expected: f64,
}

/// Compares tensor-wise as the fixtures' README defines.
pub fn compare(ours: &[f64], expected: &[f64]) -> Mismatch {
    assert_eq!(ours.len(), expected.len(), "compare: lengths differ");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst = Mismatch {
        error: 0.0,
        absolute: scale == 0.0,
        index: 0,
        ours: 0.0,
        expected: 0.0,
    };
    let mut max_abs = -1.0;
    for (k, (&a, &e)) in ours.iter().zip(expected).enumerate() {
        let d = if a.is_nan() || e.is_nan() {
            f64::INFINITY
        } else {
            (a - e).abs()
        };
        if d > max_abs {
            max_abs = d;
            worst.index = k;
            worst.ours = a;
            worst.expected = e;
        }
    }
    worst.error = if scale == 0.0 {
        max_abs.max(0.0)
    } else {
        max_abs / scale
    };
    worst
}
