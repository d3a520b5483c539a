//! The paper's synthetic tasks (docs/algorithm.md §5) as seeded episode generators. Each defines
//! its inputs, targets and loss window (`test_begin`) exactly as the reference does.

use serde::{Deserialize, Serialize};

use crate::episode::{Episodes, Loss};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::rng::Rng;

/// A task that generates batches of independent episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum Task {
    /// Cue-reward association.
    CueReward(CueReward),
    /// Sequence reproduction after a delay.
    SeqReproduction(SeqReproduction),
    /// Few-shot regression.
    Regression(Regression),
}

/// Cue-reward association: per episode, `n_class` stimuli `~U(0,1)^(input_size−2)` and
/// rewards `~U(−1,1)`; each step shows a random class's stimulus plus Gaussian noise; the
/// first half of the steps also shows the reward and the second half a query flag. The
/// target at every step is that class's reward; the loss counts every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CueReward {
    /// Number of cue classes (5).
    pub n_class: usize,
    /// Input size: stimulus size + 2 (16).
    pub input_size: usize,
    /// Steps per episode (20).
    pub trial_length: usize,
    /// Standard deviation of the stimulus noise (0.1).
    pub input_noise: f64,
}

/// Sequence reproduction: `seq_length` values `~U(−1,1)^value_dim` shown as `[v, 1, 0]`, then
/// `delay` steps of zeros, then `seq_length` steps `[0, 0, 1]` in which the sequence must be
/// reproduced in order. The loss counts only the reproduction steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqReproduction {
    /// Sequence length L (20).
    pub seq_length: usize,
    /// Delay between presentation and recall (20).
    pub delay: usize,
    /// Dimension of each value (1).
    pub value_dim: usize,
}

crate::config::named_enum!(
    /// The function family of a regression episode.
    RegressionMode {
        /// A linear map of `n_var` variables.
        Linear => ["linear"],
        /// `n_var → 2`, tanh, `2 → 1`.
        Mlp => ["mlp"],
    }
);

/// Few-shot regression: a random function per episode (PyTorch's default `Linear` init,
/// `U(±1/sqrt(fan_in))`), `train_length + test_length` points `x ~ U(−1,1)^n_var`, values
/// normalised over the episode (zero mean, unit unbiased sd). Train steps show
/// `[x, value + noise, 1]`, test steps `[x, 0, 0]`; the target is the value at every step
/// and the loss counts every step, as in the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// `linear` or `mlp`.
    pub task_mode: RegressionMode,
    /// Number of input variables n (default 10: the reference's `input_shape (12,)` is
    /// n + 2).
    pub n_var: usize,
    /// Steps with the value shown (20).
    pub train_length: usize,
    /// Steps without it (20).
    pub test_length: usize,
    /// Standard deviation of the noise on shown values (0.1).
    pub input_noise: f64,
}

impl Task {
    /// The task's name as used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Task::CueReward(_) => "cue-reward",
            Task::SeqReproduction(_) => "seq-reproduction",
            Task::Regression(_) => "regression",
        }
    }

    /// The episode loss the task is trained and tested with (docs/algorithm.md §5): every
    /// synthetic task predicts values, so the mean squared error.
    pub fn loss(&self) -> Loss {
        match self {
            Task::CueReward(_) | Task::SeqReproduction(_) | Task::Regression(_) => Loss::Mse,
        }
    }

    /// Input size I of the episodes.
    pub fn input_size(&self) -> usize {
        match self {
            Task::CueReward(c) => c.input_size,
            Task::SeqReproduction(s) => s.value_dim + 2,
            Task::Regression(r) => r.n_var + 2,
        }
    }

    /// Output size O.
    pub fn output_size(&self) -> usize {
        match self {
            Task::CueReward(_) | Task::Regression(_) => 1,
            Task::SeqReproduction(s) => s.value_dim,
        }
    }

    /// Episode length T.
    pub fn steps(&self) -> usize {
        match self {
            Task::CueReward(c) => c.trial_length,
            Task::SeqReproduction(s) => 2 * s.seq_length + s.delay,
            Task::Regression(r) => r.train_length + r.test_length,
        }
    }

    /// First step that counts in the loss.
    pub fn test_begin(&self) -> usize {
        match self {
            Task::SeqReproduction(s) => s.seq_length + s.delay,
            _ => 0,
        }
    }

    /// Checks the task's parameters; the error says what is valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        match self {
            Task::CueReward(c) => {
                if c.n_class == 0 {
                    return bad("n_class must be at least 1".into());
                }
                if c.input_size < 3 {
                    return bad(format!(
                        "input_size must be at least 3 (stimulus + 2), got {}",
                        c.input_size
                    ));
                }
                if c.trial_length < 2 {
                    return bad(format!(
                        "trial_length must be at least 2, got {}",
                        c.trial_length
                    ));
                }
                if !(c.input_noise >= 0.0 && c.input_noise.is_finite()) {
                    return bad(format!("input_noise must be >= 0, got {}", c.input_noise));
                }
            }
            Task::SeqReproduction(s) => {
                if s.seq_length == 0 || s.value_dim == 0 {
                    return bad("seq_length and value_dim must be at least 1".into());
                }
            }
            Task::Regression(r) => {
                if r.n_var == 0 {
                    return bad("n_var must be at least 1".into());
                }
                if r.train_length + r.test_length < 2 {
                    return bad(
                        "train_length + test_length must be at least 2 (values are normalised)"
                            .into(),
                    );
                }
                if !(r.input_noise >= 0.0 && r.input_noise.is_finite()) {
                    return bad(format!("input_noise must be >= 0, got {}", r.input_noise));
                }
            }
        }
        Ok(())
    }

    /// A batch of `batch` episodes drawn from `rng`.
    pub fn generate<F: Float>(&self, rng: &mut Rng, batch: usize) -> Episodes<F> {
        let (t, i, o) = (self.steps(), self.input_size(), self.output_size());
        let mut input = vec![0.0f64; batch * t * i];
        let mut target = vec![0.0f64; batch * t * o];
        for b in 0..batch {
            let x = &mut input[b * t * i..(b + 1) * t * i];
            let y = &mut target[b * t * o..(b + 1) * t * o];
            match self {
                Task::CueReward(c) => cue_reward(c, rng, x, y),
                Task::SeqReproduction(s) => seq_reproduction(s, rng, x, y),
                Task::Regression(r) => regression(r, rng, x, y),
            }
        }
        Episodes {
            batch,
            steps: t,
            input_size: i,
            output_size: o,
            input: input.into_iter().map(F::of).collect(),
            target: target.into_iter().map(F::of).collect(),
            test_begin: self.test_begin(),
        }
    }
}

fn cue_reward(c: &CueReward, rng: &mut Rng, x: &mut [f64], y: &mut [f64]) {
    let (n, i, t) = (c.n_class, c.input_size, c.trial_length);
    let s = i - 2;
    let cls: Vec<usize> = (0..t).map(|_| rng.below(n)).collect();
    let stimuli: Vec<f64> = (0..n * s).map(|_| rng.uniform()).collect();
    let reward: Vec<f64> = (0..n).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    for step in 0..t {
        let k = cls[step];
        let row = &mut x[step * i..(step + 1) * i];
        for d in 0..s {
            row[d] = stimuli[k * s + d] + rng.normal() * c.input_noise;
        }
        let first_half = step < t / 2;
        row[s] = if first_half { reward[k] } else { 0.0 };
        row[s + 1] = if first_half { 0.0 } else { 1.0 };
        y[step] = reward[k];
    }
}

fn seq_reproduction(s: &SeqReproduction, rng: &mut Rng, x: &mut [f64], y: &mut [f64]) {
    let (l, dly, dim) = (s.seq_length, s.delay, s.value_dim);
    let i = dim + 2;
    let seq: Vec<f64> = (0..l * dim).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    for step in 0..l {
        let row = &mut x[step * i..(step + 1) * i];
        row[..dim].copy_from_slice(&seq[step * dim..(step + 1) * dim]);
        row[dim] = 1.0;
    }
    for k in 0..l {
        let step = l + dly + k;
        x[step * i + dim + 1] = 1.0;
        y[step * dim..(step + 1) * dim].copy_from_slice(&seq[k * dim..(k + 1) * dim]);
    }
}

fn regression(r: &Regression, rng: &mut Rng, x: &mut [f64], y: &mut [f64]) {
    let (n, tr) = (r.n_var, r.train_length);
    let t = r.train_length + r.test_length;
    let i = n + 2;
    let linear = |rng: &mut Rng, fan_in: usize, fan_out: usize| -> (Vec<f64>, Vec<f64>) {
        let k = 1.0 / (fan_in as f64).sqrt();
        let w = (0..fan_in * fan_out)
            .map(|_| rng.uniform_in(-k, k))
            .collect();
        let b = (0..fan_out).map(|_| rng.uniform_in(-k, k)).collect();
        (w, b)
    };
    type Function = Box<dyn Fn(&[f64]) -> f64>;
    let f: Function = match r.task_mode {
        RegressionMode::Linear => {
            let (w, b) = linear(rng, n, 1);
            Box::new(move |v: &[f64]| b[0] + v.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>())
        }
        RegressionMode::Mlp => {
            let (w1, b1) = linear(rng, n, 2);
            let (w2, b2) = linear(rng, 2, 1);
            Box::new(move |v: &[f64]| {
                let h: Vec<f64> = (0..2)
                    .map(|j| {
                        (b1[j] + (0..v.len()).map(|k| v[k] * w1[k * 2 + j]).sum::<f64>()).tanh()
                    })
                    .collect();
                b2[0] + h[0] * w2[0] + h[1] * w2[1]
            })
        }
    };
    let vars: Vec<f64> = (0..t * n).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let mut values: Vec<f64> = (0..t).map(|s| f(&vars[s * n..(s + 1) * n])).collect();
    let mean = values.iter().sum::<f64>() / t as f64;
    let sd = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (t - 1) as f64).sqrt();
    for v in &mut values {
        // a constant function has sd 0; leave its (zero) deviations unscaled
        *v = if sd > 0.0 {
            (*v - mean) / sd
        } else {
            *v - mean
        };
    }
    for s in 0..t {
        let row = &mut x[s * i..(s + 1) * i];
        row[..n].copy_from_slice(&vars[s * n..(s + 1) * n]);
        if s < tr {
            row[n] = values[s] + rng.normal() * r.input_noise;
            row[n + 1] = 1.0;
        }
        y[s] = values[s];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue() -> Task {
        Task::CueReward(CueReward {
            n_class: 5,
            input_size: 16,
            trial_length: 20,
            input_noise: 0.1,
        })
    }

    #[test]
    fn cue_reward_shapes_ranges_and_flags() {
        let ep: Episodes<f64> = cue().generate(&mut Rng::new(0), 8);
        assert_eq!(
            (
                ep.batch,
                ep.steps,
                ep.input_size,
                ep.output_size,
                ep.test_begin
            ),
            (8, 20, 16, 1, 0)
        );
        ep.check().unwrap();
        for b in 0..8 {
            for t in 0..20 {
                let x = ep.x(b, t);
                let y = ep.y(b, t)[0];
                assert!((-1.0..1.0).contains(&y));
                if t < 10 {
                    assert_eq!((x[14], x[15]), (y, 0.0));
                } else {
                    assert_eq!((x[14], x[15]), (0.0, 1.0));
                }
                assert!(x[..14].iter().all(|v| (-0.6..1.6).contains(v)));
            }
            // at most 5 distinct rewards per episode
            let mut r: Vec<f64> = (0..20).map(|t| ep.y(b, t)[0]).collect();
            r.sort_by(|a, b| a.partial_cmp(b).unwrap());
            r.dedup();
            assert!(r.len() <= 5);
        }
    }

    #[test]
    fn seq_reproduction_layout_and_loss_window() {
        let task = Task::SeqReproduction(SeqReproduction {
            seq_length: 4,
            delay: 3,
            value_dim: 1,
        });
        let ep: Episodes<f64> = task.generate(&mut Rng::new(1), 2);
        assert_eq!((ep.steps, ep.input_size, ep.test_begin), (11, 3, 7));
        for b in 0..2 {
            for k in 0..4 {
                let shown = ep.x(b, k);
                assert_eq!((shown[1], shown[2]), (1.0, 0.0));
                assert_eq!(ep.y(b, 7 + k)[0], shown[0]);
                assert_eq!(ep.x(b, 7 + k), &[0.0, 0.0, 1.0]);
                assert_eq!(ep.y(b, k)[0], 0.0);
            }
            for t in 4..7 {
                assert_eq!(ep.x(b, t), &[0.0, 0.0, 0.0]);
            }
        }
    }

    #[test]
    fn regression_is_normalised_and_shows_values_only_in_training_steps() {
        for mode in [RegressionMode::Linear, RegressionMode::Mlp] {
            let task = Task::Regression(Regression {
                task_mode: mode,
                n_var: 6,
                train_length: 10,
                test_length: 10,
                input_noise: 0.1,
            });
            let ep: Episodes<f64> = task.generate(&mut Rng::new(2), 4);
            assert_eq!((ep.steps, ep.input_size, ep.test_begin), (20, 8, 0));
            for b in 0..4 {
                let v: Vec<f64> = (0..20).map(|t| ep.y(b, t)[0]).collect();
                let mean = v.iter().sum::<f64>() / 20.0;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 19.0;
                assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-9);
                for t in 0..20 {
                    let x = ep.x(b, t);
                    if t < 10 {
                        assert_eq!(x[7], 1.0);
                        assert!((x[6] - v[t]).abs() < 0.6);
                    } else {
                        assert_eq!((x[6], x[7]), (0.0, 0.0));
                    }
                }
            }
        }
    }

    #[test]
    fn same_seed_same_batch() {
        let a: Episodes<f32> = cue().generate(&mut Rng::new(5), 3);
        let b: Episodes<f32> = cue().generate(&mut Rng::new(5), 3);
        let c: Episodes<f32> = cue().generate(&mut Rng::new(6), 3);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
