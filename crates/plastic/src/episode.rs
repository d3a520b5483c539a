//! A batch of episodes (inputs, targets, loss window) and the episode loss (docs/algorithm.md §4).

use crate::error::{Error, Result};
use crate::float::Float;

/// The episode loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    /// Mean squared error over batch and outputs, averaged over the steps from `test_begin`.
    #[default]
    Mse,
    /// Cross-entropy of the predictions (logits) against the target distribution (one-hot
    /// or soft labels), averaged over batch and the steps from `test_begin`.
    CrossEntropy,
}

/// A batch of `B` episodes of `T` steps: inputs (B, T, I), targets (B, T, O), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Episodes<F> {
    /// B.
    pub batch: usize,
    /// T.
    pub steps: usize,
    /// I.
    pub input_size: usize,
    /// O.
    pub output_size: usize,
    /// (B, T, I).
    pub input: Vec<F>,
    /// (B, T, O).
    pub target: Vec<F>,
    /// First step that counts in the loss.
    pub test_begin: usize,
}

impl<F: Float> Episodes<F> {
    /// Checks that the sizes are consistent and builds the batch.
    pub fn new(
        batch: usize,
        steps: usize,
        input_size: usize,
        output_size: usize,
        input: Vec<F>,
        target: Vec<F>,
        test_begin: usize,
    ) -> Result<Self> {
        let e = Episodes {
            batch,
            steps,
            input_size,
            output_size,
            input,
            target,
            test_begin,
        };
        e.check()?;
        Ok(e)
    }

    /// Checks sizes: nonzero B and T, data lengths, `test_begin < T`, finite values.
    pub fn check(&self) -> Result<()> {
        if self.batch == 0 || self.steps == 0 {
            return Err(Error::Data(format!(
                "batch ({}) and steps ({}) must both be at least 1",
                self.batch, self.steps
            )));
        }
        let ni = self.batch * self.steps * self.input_size;
        let no = self.batch * self.steps * self.output_size;
        if self.input.len() != ni {
            return Err(Error::Data(format!(
                "input has {} values, expected B·T·I = {}·{}·{} = {ni}",
                self.input.len(),
                self.batch,
                self.steps,
                self.input_size
            )));
        }
        if self.target.len() != no {
            return Err(Error::Data(format!(
                "target has {} values, expected B·T·O = {}·{}·{} = {no}",
                self.target.len(),
                self.batch,
                self.steps,
                self.output_size
            )));
        }
        if self.test_begin >= self.steps {
            return Err(Error::Data(format!(
                "test_begin ({}) must be below the number of steps ({})",
                self.test_begin, self.steps
            )));
        }
        if self
            .input
            .iter()
            .chain(&self.target)
            .any(|v| !v.is_finite())
        {
            return Err(Error::Data(
                "input or target contains NaN or infinity".into(),
            ));
        }
        Ok(())
    }

    /// The input of episode `b` at step `t`.
    #[inline]
    pub fn x(&self, b: usize, t: usize) -> &[F] {
        let o = (b * self.steps + t) * self.input_size;
        &self.input[o..o + self.input_size]
    }

    /// The target of episode `b` at step `t`.
    #[inline]
    pub fn y(&self, b: usize, t: usize) -> &[F] {
        let o = (b * self.steps + t) * self.output_size;
        &self.target[o..o + self.output_size]
    }
}

/// The loss term of one step of one episode and its gradient with respect to the
/// prediction, both already divided by `B·(T − test_begin)` (and by O for the MSE).
pub fn step_loss<F: Float>(kind: Loss, pred: &[F], target: &[F], scale: F, grad: &mut [F]) -> F {
    match kind {
        Loss::Mse => {
            let s = scale / F::of(pred.len() as f64);
            let mut l = F::zero();
            for k in 0..pred.len() {
                let e = pred[k] - target[k];
                l += e * e;
                grad[k] = (e + e) * s;
            }
            l * s
        }
        Loss::CrossEntropy => {
            let m = pred.iter().copied().fold(F::neg_infinity(), F::max);
            let z: F = pred.iter().map(|&v| (v - m).exp()).sum();
            let lz = z.ln() + m;
            let tsum: F = target.iter().copied().sum();
            let mut l = F::zero();
            for k in 0..pred.len() {
                l -= target[k] * (pred[k] - lz);
                grad[k] = ((pred[k] - lz).exp() * tsum - target[k]) * scale;
            }
            l * scale
        }
    }
}
