//! The heads a CNN is pretrained with (docs/fsc.md §8), never used after pretraining:
//! - [`Head::Classifier`]: `Linear(F, classes)` (logits for the cross-entropy);
//! - [`Head::Simclr`]: `Linear(F, K) → ReLU → Linear(K, K)` (the embedding NT-Xent compares).
//!
//! Linear layers store `w` as (in, out), and start as PyTorch's `nn.Linear`: weight and bias
//! `U(−1/sqrt(in), 1/sqrt(in))`.

use plastic::params::ParamInfo;
use plastic::rng::Rng;
use plastic::{Error, Float, Result};

use crate::cnn::ops::matmul;

/// A pretraining head over `input` CNN features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `head.w` (F, classes), `head.b` (classes).
    Classifier {
        /// F.
        input: usize,
        /// Output logits.
        classes: usize,
    },
    /// `head.0.w` (F, K), `head.0.b` (K), ReLU, `head.1.w` (K, K), `head.1.b` (K).
    Simclr {
        /// F.
        input: usize,
        /// K, the projection's width.
        width: usize,
    },
}

/// What a head's forward pass keeps for its backward pass.
#[derive(Debug, Clone)]
pub struct HeadTape<F> {
    batch: usize,
    input: Vec<F>,
    /// The ReLU output of the SimCLR head's hidden layer.
    hidden: Vec<F>,
}

/// `(in, out)` of each linear layer.
fn layers(head: Head) -> Vec<(usize, usize)> {
    match head {
        Head::Classifier { input, classes } => vec![(input, classes)],
        Head::Simclr { input, width } => vec![(input, width), (width, width)],
    }
}

fn linear_forward<F: Float>(p: &[F], input: usize, out: usize, x: &[F], batch: usize) -> Vec<F> {
    let (w, b) = p.split_at(input * out);
    let mut y = vec![F::zero(); batch * out];
    for row in y.chunks_mut(out) {
        row.copy_from_slice(&b[..out]);
    }
    matmul(batch, out, input, &mut y, true, x, false, w, false);
    y
}

/// Adds `d/d(w, b)` to `g` and returns `dx`.
#[allow(clippy::too_many_arguments)]
fn linear_backward<F: Float>(
    p: &[F],
    input: usize,
    out: usize,
    x: &[F],
    dy: &[F],
    batch: usize,
    g: &mut [F],
) -> Vec<F> {
    let (gw, gb) = g.split_at_mut(input * out);
    matmul(input, out, batch, gw, true, x, true, dy, false);
    for row in dy.chunks(out) {
        for (a, &v) in gb.iter_mut().zip(row) {
            *a += v;
        }
    }
    let mut dx = vec![F::zero(); batch * input];
    matmul(
        batch,
        input,
        out,
        &mut dx,
        false,
        dy,
        false,
        &p[..input * out],
        true,
    );
    dx
}

impl Head {
    /// Input size F.
    pub fn input(&self) -> usize {
        match *self {
            Head::Classifier { input, .. } | Head::Simclr { input, .. } => input,
        }
    }

    /// Output size (classes or K).
    pub fn output(&self) -> usize {
        match *self {
            Head::Classifier { classes, .. } => classes,
            Head::Simclr { width, .. } => width,
        }
    }

    /// The parameters, named, from `offset` on.
    pub fn param_infos(&self, offset: usize) -> Vec<ParamInfo> {
        let ls = layers(*self);
        let mut infos = Vec::new();
        let mut at = offset;
        for (k, &(i, o)) in ls.iter().enumerate() {
            let prefix = if ls.len() == 1 {
                "head".to_string()
            } else {
                format!("head.{k}")
            };
            for (name, shape) in [("w", vec![i, o]), ("b", vec![o])] {
                let info = ParamInfo {
                    name: format!("{prefix}.{name}"),
                    shape,
                    offset: at,
                    trainable: true,
                };
                at += info.len();
                infos.push(info);
            }
        }
        infos
    }

    /// Number of parameters.
    pub fn param_len(&self) -> usize {
        layers(*self).iter().map(|&(i, o)| (i + 1) * o).sum()
    }

    /// Seeded initialisation as `nn.Linear`: weight and bias `U(±1/sqrt(in))`.
    pub fn init_params<F: Float>(&self, rng: &mut Rng) -> Vec<F> {
        let mut p = Vec::with_capacity(self.param_len());
        for (i, o) in layers(*self) {
            let k = 1.0 / (i as f64).sqrt();
            p.extend((0..(i + 1) * o).map(|_| F::of(rng.uniform_in(-k, k))));
        }
        p
    }

    /// The head's output (N, out) for `batch` rows of features (N, F), and its tape.
    pub fn forward<F: Float>(
        &self,
        params: &[F],
        features: &[F],
        batch: usize,
    ) -> Result<(Vec<F>, HeadTape<F>)> {
        if params.len() != self.param_len() || features.len() != batch * self.input() {
            return Err(Error::Data(format!(
                "pretraining head: {} parameters and {} features, expected {} and {} ({batch} rows)",
                params.len(),
                features.len(),
                self.param_len(),
                batch * self.input()
            )));
        }
        let mut tape = HeadTape {
            batch,
            input: features.to_vec(),
            hidden: Vec::new(),
        };
        let y = match *self {
            Head::Classifier { input, classes } => {
                linear_forward(params, input, classes, features, batch)
            }
            Head::Simclr { input, width } => {
                let (p0, p1) = params.split_at((input + 1) * width);
                let mut h = linear_forward(p0, input, width, features, batch);
                for v in &mut h {
                    if *v < F::zero() {
                        *v = F::zero();
                    }
                }
                let y = linear_forward(p1, width, width, &h, batch);
                tape.hidden = h;
                y
            }
        };
        Ok((y, tape))
    }

    /// Backward: adds `d loss / d params` to `grads` and returns `d loss / d features`.
    pub fn backward<F: Float>(
        &self,
        params: &[F],
        tape: &HeadTape<F>,
        d_out: &[F],
        grads: &mut [F],
    ) -> Result<Vec<F>> {
        let batch = tape.batch;
        if d_out.len() != batch * self.output() || grads.len() != self.param_len() {
            return Err(Error::Data(
                "pretraining head backward: output or parameter gradient of the wrong size".into(),
            ));
        }
        Ok(match *self {
            Head::Classifier { input, classes } => {
                linear_backward(params, input, classes, &tape.input, d_out, batch, grads)
            }
            Head::Simclr { input, width } => {
                let split = (input + 1) * width;
                let (p0, p1) = params.split_at(split);
                let (g0, g1) = grads.split_at_mut(split);
                let mut dh = linear_backward(p1, width, width, &tape.hidden, d_out, batch, g1);
                // ReLU: gradient only where the hidden output is positive
                for (d, &h) in dh.iter_mut().zip(&tape.hidden) {
                    if h <= F::zero() {
                        *d = F::zero();
                    }
                }
                linear_backward(p0, input, width, &tape.input, &dh, batch, g0)
            }
        })
    }
}
