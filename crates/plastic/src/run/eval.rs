//! Evaluation of a trained run, possibly on a changed task (a longer delay, another
//! sequence length...): the test loss and, at every step of the episode, the modulated
//! plasticity rate η(t), the decay rate, the inner loss and the plastic-weight norm.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{files, read_config, test_rng, RunConfig};
use crate::episode::step_loss as step_loss_of;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::network::Network;

/// Mean and standard deviation over episodes, at every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Mean at each step.
    pub mean: Vec<f64>,
    /// Standard deviation at each step.
    pub sd: Vec<f64>,
}

/// What `plastic eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The overrides applied to the run's configuration.
    pub overrides: Vec<String>,
    /// The task as evaluated.
    pub task: crate::tasks::Task,
    /// Mean episode loss over the test set.
    pub test_loss: f64,
    /// Test batches.
    pub batches: usize,
    /// First step that counts in the loss.
    pub test_begin: usize,
    /// Loss at each step (the task's episode loss of that step, mean over episodes).
    pub step_loss: Vec<f64>,
    /// η before norm clipping.
    pub plasticity_rate: Series,
    /// η after norm clipping (the rate applied).
    pub applied_rate: Series,
    /// λ.
    pub decay_rate: Series,
    /// Norm of the raw update.
    pub update_norm: Series,
    /// Norm of the plastic weights after each step.
    pub plastic_norm: Series,
    /// Inner loss at each step (mean over batches of the batch mean).
    pub inner_loss: Vec<f64>,
}

/// Evaluates the best parameters of the run in `dir` on its task changed by `overrides`
/// (`key=value`, as for training). The network's shape must not change.
pub fn evaluate(dir: &Path, overrides: &[String]) -> Result<EvalReport> {
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a folder"
        } else {
            "does not exist, so it is not a folder"
        };
        return Err(Error::Run(format!(
            "{} {what}: give the folder of a trained run (what `plastic train --out DIR` wrote)",
            dir.display()
        )));
    }
    if !dir.join(files::CONFIG).exists() {
        return Err(Error::Run(format!(
            "{} is not a run folder (no {}): give the folder of a trained run",
            dir.display(),
            files::CONFIG
        )));
    }
    let base = read_config(dir)?;
    let config = base.with_overrides(overrides)?;
    if config.network_config() != base.network_config() {
        return Err(Error::Config(
            "these overrides change the network itself; eval can change only the task \
             (delay, seq_length, noise, lengths...) and the evaluation knobs"
                .into(),
        ));
    }
    super::memory::check(&config, rayon::current_num_threads(), false)?;
    match config.train.dtype {
        super::config::Dtype::F64 => run::<f64>(dir, &config, overrides),
        super::config::Dtype::F32 => run::<f32>(dir, &config, overrides),
    }
}

fn run<F: Float>(dir: &Path, config: &RunConfig, overrides: &[String]) -> Result<EvalReport> {
    let path = dir.join(files::BEST);
    if !path.exists() {
        return Err(Error::Run(format!(
            "{} has no {} yet: train it first",
            dir.display(),
            files::BEST
        )));
    }
    let net = Network::<F>::load(config.network_config(), &path)?;
    // the parameters must come from the run this folder's config.toml describes
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    if let Some(saved) = crate::params::safetensors_metadata(&bytes, &path)?.get("config") {
        let saved = RunConfig::from_toml(saved)
            .map_err(|e| Error::format(&path, format!("corrupt: its configuration: {e}")))?;
        if saved != read_config(dir)? {
            return Err(Error::Run(format!(
                "{} was trained with a different configuration than {}; the folder is \
                 damaged or was edited by hand (change the task with --set instead)",
                path.display(),
                dir.join(files::CONFIG).display()
            )));
        }
    }
    let (t, o) = (config.task.steps(), config.task.output_size());
    let mut rng = test_rng();
    let batches = config.train.test_batch;
    let mut loss = 0.0;
    let mut step_loss = vec![0.0; t];
    let mut inner = vec![0.0; t];
    let mut acc: Vec<[Vec<f64>; 2]> = (0..5).map(|_| [vec![0.0; t], vec![0.0; t]]).collect();
    let mut n = 0usize;
    let mut grad = vec![F::zero(); o];
    for _ in 0..batches {
        let ep = config.task.generate::<F>(&mut rng, config.train.batch_size);
        let f = net.forward(&ep, config.task.loss())?;
        loss += f.loss.f64();
        for b in 0..ep.batch {
            for s in 0..t {
                let k = b * t + s;
                for (a, v) in acc.iter_mut().zip([
                    &f.plasticity_rate,
                    &f.applied_rate,
                    &f.decay_rate,
                    &f.update_norm,
                    &f.plastic_norm,
                ]) {
                    let x = v[k].f64();
                    a[0][s] += x;
                    a[1][s] += x * x;
                }
                let (pred, target) = (&f.outputs[k * o..][..o], ep.y(b, s));
                step_loss[s] +=
                    step_loss_of(config.task.loss(), pred, target, F::one(), &mut grad).f64();
            }
            n += 1;
        }
        for s in 0..t {
            inner[s] += f.inner_loss[s].f64() / batches as f64;
        }
    }
    let series = |a: &[Vec<f64>; 2]| Series {
        mean: a[0].iter().map(|s| s / n as f64).collect(),
        sd: a[0]
            .iter()
            .zip(&a[1])
            .map(|(s, q)| {
                let m = s / n as f64;
                (q / n as f64 - m * m).max(0.0).sqrt()
            })
            .collect(),
    };
    Ok(EvalReport {
        overrides: overrides.to_vec(),
        task: config.task.clone(),
        test_loss: loss / batches as f64,
        batches,
        test_begin: config.task.test_begin(),
        step_loss: step_loss.iter().map(|v| v / n as f64).collect(),
        plasticity_rate: series(&acc[0]),
        applied_rate: series(&acc[1]),
        decay_rate: series(&acc[2]),
        update_norm: series(&acc[3]),
        plastic_norm: series(&acc[4]),
        inner_loss: inner,
    })
}
