//! The outer-loop optimiser (docs/algorithm.md §4): AdamW with amsgrad, as `torch.optim.AdamW`,
//! global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`, and the cosine
//! schedule as `CosineAnnealingLR`.

use crate::float::Float;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Use the running maximum of the second moment (amsgrad).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: true,
        }
    }
}

/// AdamW state over a flat parameter buffer; elements outside `mask` are never touched.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW<F> {
    /// Hyper-parameters (`lr` may be changed by a schedule between steps).
    pub config: AdamWConfig,
    /// Steps taken.
    pub step: u64,
    /// First moment.
    pub m: Vec<F>,
    /// Second moment.
    pub v: Vec<F>,
    /// Running maximum of the second moment (amsgrad).
    pub v_max: Vec<F>,
    mask: Vec<bool>,
}

impl<F: Float> AdamW<F> {
    /// Fresh state for `mask.len()` parameters.
    pub fn new(config: AdamWConfig, mask: Vec<bool>) -> Self {
        let n = mask.len();
        AdamW {
            config,
            step: 0,
            m: vec![F::zero(); n],
            v: vec![F::zero(); n],
            v_max: vec![F::zero(); n],
            mask,
        }
    }

    /// Restores saved moments.
    pub fn with_state(mut self, step: u64, m: Vec<F>, v: Vec<F>, v_max: Vec<F>) -> Self {
        assert!(m.len() == self.mask.len() && v.len() == m.len() && v_max.len() == m.len());
        self.step = step;
        self.m = m;
        self.v = v;
        self.v_max = v_max;
        self
    }

    /// One update of `params` with gradient `grad`:
    /// `p ← p(1 − lr·wd)`, `m ← β1 m + (1 − β1) g`, `v ← β2 v + (1 − β2) g²`,
    /// `v̂ = max(v̂, v)`, `p ← p − (lr / (1 − β1^t)) · m / (sqrt(v̂)/sqrt(1 − β2^t) + ε)`.
    pub fn update(&mut self, params: &mut [F], grad: &[F]) {
        assert_eq!(params.len(), self.mask.len());
        assert_eq!(grad.len(), self.mask.len());
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let decay = F::of(1.0 - c.lr * c.weight_decay);
        let (b1, b2) = (F::of(c.beta1), F::of(c.beta2));
        let (one_b1, one_b2) = (F::of(1.0 - c.beta1), F::of(1.0 - c.beta2));
        let step_size = F::of(c.lr / bc1);
        let (bc2_sqrt, eps) = (F::of(bc2_sqrt), F::of(c.eps));
        for k in 0..params.len() {
            if !self.mask[k] {
                continue;
            }
            let g = grad[k];
            params[k] *= decay;
            self.m[k] = b1 * self.m[k] + one_b1 * g;
            self.v[k] = b2 * self.v[k] + one_b2 * g * g;
            let v = if c.amsgrad {
                self.v_max[k] = self.v_max[k].max(self.v[k]);
                self.v_max[k]
            } else {
                self.v[k]
            };
            let denom = v.sqrt() / bc2_sqrt + eps;
            params[k] -= step_size * self.m[k] / denom;
        }
    }
}

/// Scales `grad` (restricted to `mask`) so that its global L2 norm is at most `max_norm`,
/// as `clip_grad_norm_`: `coef = max_norm / (norm + 1e-6)`, applied when below 1.
/// Returns the norm before clipping.
pub fn clip_grad_norm<F: Float>(grad: &mut [F], mask: &[bool], max_norm: f64) -> f64 {
    let norm = grad
        .iter()
        .zip(mask)
        .filter(|(_, &m)| m)
        .map(|(g, _)| g.f64() * g.f64())
        .sum::<f64>()
        .sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = F::of(coef);
        for (g, &m) in grad.iter_mut().zip(mask) {
            if m {
                *g *= c;
            }
        }
    }
    norm
}

/// `CosineAnnealingLR`: the learning rate after `epoch` scheduler steps, going from `base`
/// down to `floor` over `t_max` steps (and back up, periodically, past `t_max`).
pub fn cosine_lr(base: f64, floor: f64, t_max: usize, epoch: usize) -> f64 {
    floor
        + (base - floor) * (1.0 + (std::f64::consts::PI * epoch as f64 / t_max as f64).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_matches_the_update_formula() {
        let cfg = AdamWConfig {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::<f64>::new(cfg, vec![true, true, false]);
        let mut p = vec![1.0, -2.0, 3.0];
        let g = vec![0.5, -0.25, 7.0];
        opt.update(&mut p, &g);
        for k in 0..2 {
            let p0 = [1.0, -2.0][k];
            let g0: f64 = g[k];
            let m = 0.1 * g0;
            let v = 0.001 * g0 * g0;
            let m_hat = m / (1.0 - 0.9);
            let denom = (v.sqrt() / (1.0f64 - 0.999).sqrt()) + 1e-8;
            let expect = p0 * (1.0 - 0.01 * 0.1) - 0.01 * m_hat / denom;
            assert!((p[k] - expect).abs() < 1e-12, "{} vs {expect}", p[k]);
        }
        assert_eq!(p[2], 3.0, "masked parameters are frozen");
        // second step: amsgrad keeps the larger second moment
        opt.update(&mut p, &[0.0, 0.0, 0.0]);
        assert!(opt.v_max[0] > opt.v[0]);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = vec![3.0f64, 4.0, 100.0];
        let n = clip_grad_norm(&mut g, &[true, true, false], 1.0);
        assert!((n - 5.0).abs() < 1e-12);
        assert!(((g[0] * g[0] + g[1] * g[1]).sqrt() - 5.0 / (5.0 + 1e-6)).abs() < 1e-9);
        assert_eq!(g[2], 100.0);
        let mut small = vec![0.1f64, 0.1];
        clip_grad_norm(&mut small, &[true, true], 5.0);
        assert_eq!(small, vec![0.1, 0.1]);
    }

    #[test]
    fn cosine_goes_from_base_to_floor() {
        assert!((cosine_lr(1e-3, 1e-4, 10, 0) - 1e-3).abs() < 1e-15);
        assert!((cosine_lr(1e-3, 1e-4, 10, 10) - 1e-4).abs() < 1e-15);
        assert!(cosine_lr(1e-3, 1e-4, 10, 5) < 1e-3);
    }
}
