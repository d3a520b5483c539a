//! The projection after the CNN (docs/fsc.md §5): `e = relu(features · W + b)`, `W` stored
//! (in, out), never plastic.

use plastic::params::ParamInfo;
use plastic::rng::Rng;
use plastic::{Error, Float, Result};

use super::ops::matmul;

/// A linear map F → P followed by ReLU; parameters `proj.w` (F, P) then `proj.b` (P).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    /// Input size F (the CNN's features).
    pub input: usize,
    /// Output size P (H − the extra input's size).
    pub output: usize,
}

impl Projection {
    /// The parameters `proj.w` (in, out) and `proj.b` (out), from `offset` on.
    pub fn param_infos(&self, offset: usize) -> Vec<ParamInfo> {
        vec![
            ParamInfo {
                name: "proj.w".into(),
                shape: vec![self.input, self.output],
                offset,
                trainable: true,
            },
            ParamInfo {
                name: "proj.b".into(),
                shape: vec![self.output],
                offset: offset + self.input * self.output,
                trainable: true,
            },
        ]
    }

    /// Number of parameters.
    pub fn param_len(&self) -> usize {
        (self.input + 1) * self.output
    }

    /// Seeded initialisation: weight and bias `U(−1/sqrt(F), 1/sqrt(F))` (docs/fsc.md §5).
    pub fn init_params<F: Float>(&self, rng: &mut Rng) -> Vec<F> {
        let k = 1.0 / (self.input as f64).sqrt();
        (0..self.param_len())
            .map(|_| F::of(rng.uniform_in(-k, k)))
            .collect()
    }

    fn check<F: Float>(&self, params: &[F], x: &[F], batch: usize) -> Result<()> {
        if params.len() != self.param_len() || x.len() != batch * self.input {
            return Err(Error::Data(format!(
                "projection {}→{}: {} parameters and {} inputs, expected {} and {} ({batch} rows)",
                self.input,
                self.output,
                params.len(),
                x.len(),
                self.param_len(),
                batch * self.input
            )));
        }
        Ok(())
    }

    /// `relu(x · W + b)` for `batch` rows of `x` (N, F): (N, P).
    pub fn forward<F: Float>(&self, params: &[F], x: &[F], batch: usize) -> Result<Vec<F>> {
        self.check(params, x, batch)?;
        let (w, b) = params.split_at(self.input * self.output);
        let mut y = vec![F::zero(); batch * self.output];
        for row in y.chunks_mut(self.output) {
            row.copy_from_slice(b);
        }
        matmul(batch, self.output, self.input, &mut y, true, x, false, w, false);
        for v in &mut y {
            if *v < F::zero() {
                *v = F::zero();
            }
        }
        Ok(y)
    }

    /// Backward given the forward's input `x` and output `y` and `dy` (N, P): adds
    /// `d loss / d (W, b)` to `grads` and returns `d loss / d x` (N, F).
    pub fn backward<F: Float>(
        &self,
        params: &[F],
        x: &[F],
        y: &[F],
        dy: &[F],
        batch: usize,
        grads: &mut [F],
    ) -> Result<Vec<F>> {
        self.check(params, x, batch)?;
        if y.len() != batch * self.output || dy.len() != y.len() || grads.len() != params.len()
        {
            return Err(Error::Data(
                "projection backward: output, output gradient or parameter gradient of the wrong size".into(),
            ));
        }
        // ReLU: gradient only where the output is positive
        let dz: Vec<F> = dy
            .iter()
            .zip(y)
            .map(|(&g, &v)| if v > F::zero() { g } else { F::zero() })
            .collect();
        let (w, _) = params.split_at(self.input * self.output);
        let (gw, gb) = grads.split_at_mut(self.input * self.output);
        // dW += xᵀ · dz
        matmul(self.input, self.output, batch, gw, true, x, true, &dz, false);
        for row in dz.chunks(self.output) {
            for (g, &v) in gb.iter_mut().zip(row) {
                *g += v;
            }
        }
        // dx = dz · Wᵀ
        let mut dx = vec![F::zero(); batch * self.input];
        matmul(batch, self.input, self.output, &mut dx, false, &dz, false, w, true);
        Ok(dx)
    }
}
