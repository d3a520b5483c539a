//! Meta-training an `fsc` run with the protocol of `docs/fsc.md` §6, in a run folder like
//! the other tasks': `config.toml` (resolved), `progress.tsv` (step, train loss, validation
//! loss and accuracy, learning rate, seconds), `best.safetensors` (parameters and BatchNorm
//! running statistics, by name), `checkpoint.safetensors` (parameters, buffers, AdamW
//! moments, best, step; written atomically) and `test.json` (the best parameters on the
//! fixed test episodes: accuracy with its 95% interval, loss, and the raw-pixel
//! nearest-neighbour baseline on the same episodes).
//!
//! The protocol: AdamW with amsgrad over every parameter (one group, decoupled weight
//! decay), global gradient-norm clip, the reference's cosine schedule (`T_max =
//! max_batch/log_every + 1`, floor lr/10, one step at each log after the first). At every
//! multiple of `log_every`, before that step's update: log the mean training loss, validate
//! on `test_batch` fresh validation batches (evaluation mode: BatchNorm running statistics,
//! no augmentation; accuracy = first query correct), keep the parameters whose validation
//! **accuracy** is at least the best so far (a tie goes to the later). Updates run for steps
//! `0..=max_batch`, i.e. `max_batch + 1` updates, as the reference; the last update is never
//! validated, so it cannot change the result. The loop, the checkpoint and the resume are
//! [`crate::trainer`]'s, shared with pretraining; this module is what is fsc's own.
//!
//! Randomness: the model's initialisation from the seed; the training batch of step `s`
//! from its own stream (seed, train phase, `s`); validation `k`'s batches from (seed, val
//! phase, `k·test_batch + j`); the test episodes from a fixed seed shared by every run. A
//! resumed run therefore continues bit-exactly, on any number of threads.

use std::fs;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use plastic::params::{NamedTensor, ParamInfo};
use plastic::{Error, Float, Result};
use serde::{Deserialize, Serialize};

use crate::baseline::nearest_neighbour_score;
use crate::cache::{CacheStatus, EmbeddingCache};
use crate::config::SharedKeys;
use crate::config::{FscConfig, ImageSource};
use crate::dataset::{ImageDataset, Phase};
use crate::episodes::{EpisodeSampler, FscBatch};
use crate::model::{self, FscModel};
use crate::procedural;
use crate::runfiles;
use crate::trainer::{self, model_state_of, CheckpointState, RunKind, Trainer};

/// Seed of the test episodes, the same for every run (as the reference's fixed test seed).
pub const TEST_SEED: u64 = 0x7E57_5EED;

pub use crate::trainer::{FscLogRow, FscObserver, Silent};

/// File names inside a run folder.
pub mod files {
    pub use crate::trainer::files::{BEST, CHECKPOINT, CONFIG, PROGRESS};
    /// Final test result.
    pub const TEST: &str = "test.json";
}

/// What one training step of a model returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult<F> {
    /// The batch's loss (mean over episodes and query steps).
    pub loss: f64,
    /// Episodes whose first query was classified correctly.
    pub correct: usize,
    /// The gradient of the loss with respect to every parameter, in parameter order.
    pub grads: Vec<F>,
}

/// What an evaluation-mode pass of a model returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// The batch's loss.
    pub loss: f64,
    /// Episodes whose first query was classified correctly.
    pub correct: usize,
}

/// What the trainer needs from a model: named parameters in one flat buffer, named state
/// buffers that are not trained (the BatchNorm running statistics), a training step that
/// returns the gradient (and updates the buffers, in training mode), and an evaluation-mode
/// pass.
pub trait FscLearner<F: Float> {
    /// Every parameter, named, in the order of [`FscLearner::params`].
    fn param_infos(&self) -> Vec<ParamInfo>;
    /// The parameters.
    fn params(&self) -> &[F];
    /// The parameters, to update.
    fn params_mut(&mut self) -> &mut [F];
    /// Every state buffer, named, in the order of [`FscLearner::buffers`].
    fn buffer_infos(&self) -> Vec<ParamInfo>;
    /// The state buffers, flat.
    fn buffers(&self) -> Vec<F>;
    /// Restores the state buffers from [`FscLearner::buffers`]'s layout.
    fn set_buffers(&mut self, values: &[F]) -> Result<()>;
    /// Loss, correct first queries and gradient on a training batch (training mode: batch
    /// statistics, running statistics updated).
    fn train_step(&mut self, batch: &FscBatch<F>) -> Result<StepResult<F>>;
    /// Loss and correct first queries in evaluation mode (running statistics, unchanged).
    fn evaluate(&mut self, batch: &FscBatch<F>) -> Result<EvalResult>;
    /// Frees the memory the model keeps from one training step to the next (the CNN's
    /// tapes and buffers), so that an evaluation and the checkpoint after it do not add to
    /// a training step's peak; the next step allocates it again. Nothing by default.
    fn release_memory(&mut self) {}
    /// Called once before training or testing starts, after a checkpoint was restored, with
    /// the run's data and folder (the embedding cache is built here). Nothing by default.
    fn prepare(
        &mut self,
        _data: &FscData,
        _dir: &Path,
        _observer: &mut dyn FscObserver,
    ) -> Result<()> {
        Ok(())
    }
}

/// The model an `fsc` run trains (`docs/fsc.md` §5): the CNN of [`FscConfig::backbone`] at
/// the data set's image size, projection to H − way, the plastic RNN without its input
/// layer; initialised from `config.seed`.
pub fn build_model<F: Float>(config: &FscConfig) -> Result<FscModel<F>> {
    let shape = model::FscConfig {
        cnn: config.backbone(),
        network: config.network_config(),
        extra_input_dim: config.way,
    };
    let mut model = FscModel::new(shape, config.seed)?;
    if let Some(dir) = &config.cnn_from {
        let cnn = crate::pretrain::run::load_pretrained_cnn(dir, config.backbone())?;
        model.load_cnn(&cnn.params, &cnn.buffers)?;
    }
    model.set_frozen_cnn(config.freeze_cnn);
    Ok(model)
}

/// The model an `fsc` run trains ([`build_model`]), reading a frozen CNN's features from
/// the embedding cache when the configuration asks for it
/// ([`FscConfig::uses_embedding_cache`], docs/fsc.md §5.3).
#[derive(Debug)]
pub struct FscRunModel<F: Float> {
    /// The model.
    pub model: FscModel<F>,
    use_cache: bool,
    cache: Option<EmbeddingCache<F>>,
}

impl<F: Float> FscRunModel<F> {
    /// The model of `config`; the cache is opened by [`FscLearner::prepare`].
    pub fn new(config: &FscConfig) -> Result<Self> {
        Ok(FscRunModel {
            model: build_model(config)?,
            use_cache: config.uses_embedding_cache(),
            cache: None,
        })
    }

    /// The cached features of a batch's images, (B, T, F), if the cache is in use.
    fn cached(&self, batch: &FscBatch<F>) -> Result<Option<Vec<F>>> {
        match (&self.cache, self.use_cache) {
            (Some(c), true) => c.features(batch.phase, &batch.image_ids).map(Some),
            (None, true) => Err(Error::Data(
                "internal: the embedding cache was not prepared before training".into(),
            )),
            _ => Ok(None),
        }
    }
}

impl<F: Float> FscLearner<F> for FscRunModel<F> {
    fn param_infos(&self) -> Vec<ParamInfo> {
        self.model.param_infos()
    }
    fn params(&self) -> &[F] {
        self.model.params()
    }
    fn params_mut(&mut self) -> &mut [F] {
        self.model.params_mut()
    }
    fn buffer_infos(&self) -> Vec<ParamInfo> {
        FscLearner::buffer_infos(&self.model)
    }
    fn buffers(&self) -> Vec<F> {
        FscLearner::buffers(&self.model)
    }
    fn set_buffers(&mut self, values: &[F]) -> Result<()> {
        self.model.set_buffers(values)
    }
    fn train_step(&mut self, batch: &FscBatch<F>) -> Result<StepResult<F>> {
        let Some(features) = self.cached(batch)? else {
            return self.model.train_step(batch);
        };
        let g = self
            .model
            .loss_and_grad_cached(&model_batch(batch), &features)?;
        Ok(StepResult {
            loss: g.loss.f64(),
            correct: g.correct_first_query,
            grads: g.grads,
        })
    }
    fn evaluate(&mut self, batch: &FscBatch<F>) -> Result<EvalResult> {
        let Some(features) = self.cached(batch)? else {
            return self.model.evaluate(batch);
        };
        let f = self
            .model
            .forward_eval_cached(&model_batch(batch), &features)?;
        Ok(EvalResult {
            loss: f.rnn.loss.f64(),
            correct: f.correct_first_query,
        })
    }
    fn release_memory(&mut self) {
        self.model.release_memory();
    }
    fn prepare(
        &mut self,
        data: &FscData,
        dir: &Path,
        observer: &mut dyn FscObserver,
    ) -> Result<()> {
        if !self.use_cache {
            return Ok(());
        }
        let sets = [
            data.train.dataset(),
            data.val.dataset(),
            data.test.dataset(),
        ];
        let (cache, status) = EmbeddingCache::open(dir, &self.model, sets)?;
        observer.note(&format!(
            "embedding cache {} ({} images, key {})",
            match status {
                CacheStatus::Loaded => "read from embeddings.safetensors",
                CacheStatus::Built => "built",
                CacheStatus::Rebuilt => "rebuilt (the CNN or the data changed)",
            },
            sets.iter().map(|s| s.len()).sum::<usize>(),
            cache.key()
        ));
        self.cache = Some(cache);
        Ok(())
    }
}

/// Which parameters the optimiser updates (all of them, for a model built from scratch).
pub fn trainable_mask<F: Float, M: FscLearner<F>>(model: &M) -> Vec<bool> {
    let mut mask = vec![false; model.params().len()];
    for info in model.param_infos() {
        mask[info.range()].fill(info.trainable);
    }
    mask
}

/// The model's view of a batch of episodes.
fn model_batch<F: Float>(b: &FscBatch<F>) -> model::FscBatch<F> {
    model::FscBatch {
        batch: b.batch(),
        steps: b.steps(),
        test_begin: b.test_begin,
        images: b.images.clone(),
        extra_input: b.extra_input.clone(),
        labels: b.labels.clone(),
    }
}

impl<F: Float> FscLearner<F> for FscModel<F> {
    fn param_infos(&self) -> Vec<ParamInfo> {
        self.layout().to_vec()
    }
    fn params(&self) -> &[F] {
        FscModel::params(self)
    }
    fn params_mut(&mut self) -> &mut [F] {
        FscModel::params_mut(self)
    }
    /// `cnn.{k}.bn.{num_batches_tracked, running_mean, running_var}` in name order.
    fn buffer_infos(&self) -> Vec<ParamInfo> {
        let mut offset = 0;
        self.named_buffers()
            .into_iter()
            .map(|(name, t)| {
                let info = ParamInfo {
                    name,
                    shape: t.shape,
                    offset,
                    trainable: false,
                };
                offset += info.len();
                info
            })
            .collect()
    }
    fn buffers(&self) -> Vec<F> {
        self.named_buffers()
            .into_values()
            .flat_map(|t| t.data)
            .map(F::of)
            .collect()
    }
    fn set_buffers(&mut self, values: &[F]) -> Result<()> {
        let map = self
            .buffer_infos()
            .into_iter()
            .map(|i| {
                let data = values[i.range()].iter().map(|v| v.f64()).collect();
                (
                    i.name,
                    NamedTensor {
                        shape: i.shape,
                        data,
                    },
                )
            })
            .collect();
        self.set_named_buffers(&map)
    }
    fn train_step(&mut self, batch: &FscBatch<F>) -> Result<StepResult<F>> {
        let g = self.loss_and_grad(&model_batch(batch))?;
        Ok(StepResult {
            loss: g.loss.f64(),
            correct: g.correct_first_query,
            grads: g.grads,
        })
    }
    fn evaluate(&mut self, batch: &FscBatch<F>) -> Result<EvalResult> {
        let f = self.forward_eval(&model_batch(batch))?;
        Ok(EvalResult {
            loss: f.rnn.loss.f64(),
            correct: f.correct_first_query,
        })
    }
    fn release_memory(&mut self) {
        FscModel::release_memory(self);
    }
}

/// Trains an `fsc` run (new or resumed) to the end and tests its best parameters: the
/// model of [`build_model`] in the configuration's float type.
pub fn train_fsc(dir: &Path, start: Start, observer: &mut dyn FscObserver) -> Result<FscSummary> {
    let dtype = match &start {
        Start::New { config, .. } => config.dtype.clone(),
        Start::Resume => match read_config(dir) {
            Ok(c) => c.dtype,
            // let the trainer report what is missing
            Err(_) => "f32".into(),
        },
    };
    if dtype == "f64" {
        train_with(dir, start, FscRunModel::<f64>::new, observer)
    } else {
        train_with(dir, start, FscRunModel::<f32>::new, observer)
    }
}

/// The result of a finished run (`test.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FscSummary {
    /// Test accuracy of the best parameters, percent of first queries correct.
    pub test_acc: f64,
    /// Half-width of its 95% interval, 1.96 × the standard error over episodes.
    pub test_acc_ci95: f64,
    /// Test loss (mean over the test batches).
    pub test_loss: f64,
    /// Test episodes.
    pub test_episodes: usize,
    /// The raw-pixel nearest-neighbour accuracy on the same test episodes, percent.
    pub nn_baseline_acc: f64,
    /// Chance accuracy, percent (100 / way).
    pub chance_acc: f64,
    /// Step of the best validation accuracy.
    pub best_step: usize,
    /// The best validation accuracy, percent.
    pub best_val_acc: f64,
    /// Updates made (`max_batch + 1`).
    pub updates: usize,
    /// Wall-clock seconds of training.
    pub elapsed_s: f64,
}

/// How to start an fsc run: a new one with its configuration, or a resumed one.
pub type Start = trainer::Start<FscConfig>;

/// How many of the `batch` training episodes of `step` are retrieval episodes under the
/// curriculum `retrieval_steps` = R (`docs/fsc.md` §11): all of them for the first R/2
/// steps, then a share falling linearly to none at step R (rounded up), none without the
/// curriculum.
pub fn retrieval_episodes(step: usize, retrieval_steps: usize, batch: usize) -> usize {
    if step >= retrieval_steps {
        return 0;
    }
    // share = min(1, 2 (R − step) / R)
    (2 * batch * (retrieval_steps - step))
        .div_ceil(retrieval_steps)
        .min(batch)
}

/// The episode samplers of the three phases.
#[derive(Debug, Clone)]
pub struct FscData {
    /// Training episodes (augmented).
    pub train: EpisodeSampler,
    /// Validation episodes.
    pub val: EpisodeSampler,
    /// Test episodes.
    pub test: EpisodeSampler,
}

impl FscData {
    /// Loads (or, for `procedural`, generates) the three phases' data sets.
    pub fn load(config: &FscConfig) -> Result<FscData> {
        let sets: Vec<ImageDataset> = match config.image_dataset {
            ImageSource::Procedural => {
                let pc = config.procedural_config();
                Phase::ALL
                    .iter()
                    .map(|&p| procedural::generate(&pc, p))
                    .collect::<Result<_>>()?
            }
            source => ImageDataset::load_all(source.kind(), &config.data_dir)?.into(),
        };
        let mut it = sets.into_iter().zip(Phase::ALL).map(|(set, phase)| {
            EpisodeSampler::new(Arc::new(set), phase, config.episode_config(phase))
        });
        let (train, val, test) = (
            it.next().expect("three phases")?,
            it.next().expect("three phases")?,
            it.next().expect("three phases")?,
        );
        Ok(FscData { train, val, test })
    }

    /// The fixed test episodes (the same for every run of this data and batch shape).
    pub fn test_batches<F: Float>(&self, config: &FscConfig) -> Vec<FscBatch<F>> {
        (0..config.test_batch)
            .map(|j| self.test.batch(TEST_SEED, j as u64, config.batch_size))
            .collect()
    }
}

/// Reads a run's configuration.
pub fn read_config(dir: &Path) -> Result<FscConfig> {
    trainer::read_config(dir)
}

/// Reads a finished run's test result.
pub fn read_summary(dir: &Path) -> Result<FscSummary> {
    trainer::read_result(dir, files::TEST)
}

/// Reads `progress.tsv` rows.
pub fn read_progress(dir: &Path) -> Result<Vec<FscLogRow>> {
    let path = dir.join(files::PROGRESS);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || {
            Error::format(
                &path,
                format!("line {}: expected 6 tab-separated numbers", n + 1),
            )
        };
        if f.len() != 6 {
            return Err(bad());
        }
        let num = |k: usize| f[k].parse::<f64>().map_err(|_| bad());
        rows.push(FscLogRow {
            step: f[0].parse().map_err(|_| bad())?,
            train_loss: num(1)?,
            val_loss: num(2)?,
            val_acc: num(3)?,
            lr: num(4)?,
            elapsed_s: num(5)?,
        });
    }
    Ok(rows)
}

/// Accuracy in percent and the half-width of its 95% interval (1.96 × the standard error
/// of the per-episode 0/1 scores, sample standard deviation as `np.std(ddof=1)`).
pub fn accuracy_ci95(correct: usize, total: usize) -> (f64, f64) {
    if total == 0 {
        return (0.0, 0.0);
    }
    let n = total as f64;
    let p = correct as f64 / n;
    let se = if total > 1 {
        (p * (1.0 - p) * n / (n - 1.0)).sqrt() / n.sqrt()
    } else {
        0.0
    };
    (100.0 * p, 100.0 * 1.96 * se)
}

/// Evaluates `model` on `batches` (evaluation mode): mean loss over batches, correct first
/// queries and episodes.
pub fn evaluate_batches<F: Float, M: FscLearner<F>>(
    model: &mut M,
    batches: impl IntoIterator<Item = FscBatch<F>>,
) -> Result<(f64, usize, usize)> {
    model.release_memory();
    let (mut loss, mut correct, mut total, mut n) = (0.0, 0, 0, 0);
    for b in batches {
        let r = model.evaluate(&b)?;
        loss += r.loss;
        correct += r.correct;
        total += b.batch();
        n += 1;
    }
    Ok((loss / n.max(1) as f64, correct, total))
}

/// Trains a run (new or resumed) with a model built by `build(config)` to the end, and
/// tests its best parameters. `build` must be a function of the configuration only (the
/// initialisation from `config.seed`), so that a resumed run rebuilds the same model.
pub fn train_with<F: Float, M: FscLearner<F>>(
    dir: &Path,
    start: Start,
    build: impl Fn(&FscConfig) -> Result<M>,
    observer: &mut dyn FscObserver,
) -> Result<FscSummary> {
    let config = trainer::open_run(
        dir,
        start,
        &[
            files::CONFIG,
            files::PROGRESS,
            files::BEST,
            files::CHECKPOINT,
            files::TEST,
            crate::cache::FILE,
        ],
    )?;
    if config.dtype != F::NAME {
        return Err(Error::Config(format!(
            "the run trains in {}, but this trainer is {}",
            config.dtype,
            F::NAME
        )));
    }
    let test_path = dir.join(files::TEST);
    if test_path.exists() {
        observer.note("this run has already finished; its test result is unchanged");
        return read_summary(dir);
    }
    let data = FscData::load(&config)?;
    let model = build(&config)?;
    let run = FscRun {
        config,
        model,
        data,
        float: PhantomData,
    };
    Trainer::new(dir, run)?.run(observer)
}

/// Loads a model's parameters and state buffers from a `best.safetensors` (or any file
/// written the same way, names without prefix).
pub fn load_best<F: Float, M: FscLearner<F>>(model: &mut M, path: &Path) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = plastic::params::parse_safetensors(&bytes, path)?;
    let params = runfiles::tensors_read::<F>(&st, "", &model.param_infos(), path)?;
    let buffers = runfiles::tensors_read::<F>(&st, "", &model.buffer_infos(), path)?;
    model.params_mut().copy_from_slice(&params);
    model.set_buffers(&buffers)
}

impl trainer::RunConfig for FscConfig {
    fn from_toml(text: &str) -> Result<Self> {
        FscConfig::from_toml(text)
    }
    fn to_toml(&self) -> String {
        FscConfig::to_toml(self)
    }
    fn for_new_run(self) -> Result<Self> {
        let config = self.resolved();
        config.validate()?;
        Ok(config)
    }
    fn protocol(&self) -> SharedKeys {
        self.shared_keys()
    }
}

/// An fsc run as the shared [`Trainer`] drives it: batches of episodes from the
/// configuration's seed, a learner, validation and test by first-query accuracy.
struct FscRun<F: Float, M: FscLearner<F>> {
    config: FscConfig,
    model: M,
    data: FscData,
    float: PhantomData<F>,
}

impl<F: Float, M: FscLearner<F>> RunKind<F> for FscRun<F, M> {
    type Config = FscConfig;
    type Summary = FscSummary;
    const CHECKPOINT_FORMAT: &'static str = "plastic-fsc-checkpoint/1";
    const RESULT: &'static str = files::TEST;
    const KEEPS_BEST_LOSS: bool = false;

    fn config(&self) -> &FscConfig {
        &self.config
    }
    model_state_of!(model);
    fn trainable_mask(&self) -> Vec<bool> {
        trainable_mask(&self.model)
    }
    fn prepare(&mut self, dir: &Path, observer: &mut dyn FscObserver) -> Result<()> {
        self.model.prepare(&self.data, dir, observer)
    }

    fn train_step(&mut self, step: usize) -> Result<(f64, Vec<F>)> {
        let c = &self.config;
        let retrieval = retrieval_episodes(step, c.retrieval_steps, c.batch_size);
        let batch =
            self.data
                .train
                .batch_with_retrieval::<F>(c.seed, step as u64, c.batch_size, retrieval);
        let r = self.model.train_step(&batch)?;
        Ok((r.loss, r.grads))
    }

    /// `test_batch` fresh validation batches.
    fn validate(&mut self, index: usize) -> Result<(f64, f64)> {
        let c = &self.config;
        let first = (index * c.test_batch) as u64;
        let val = &self.data.val;
        let batches = (0..c.test_batch as u64).map(|j| val.batch(c.seed, first + j, c.batch_size));
        let (loss, correct, total) = evaluate_batches(&mut self.model, batches)?;
        Ok((loss, 100.0 * correct as f64 / total as f64))
    }

    /// At least the best accuracy so far (a tie goes to the later).
    fn is_better(&self, best: &CheckpointState, _val_loss: f64, val_acc: f64) -> bool {
        val_acc >= best.best_val_acc
    }

    /// The best parameters on the fixed test episodes.
    fn finish(
        &mut self,
        best_params: &[F],
        best_buffers: &[F],
        state: &CheckpointState,
        elapsed_s: f64,
    ) -> Result<FscSummary> {
        // training is over: its buffers are not needed by the test below
        self.model.release_memory();
        let c = &self.config;
        self.model.params_mut().copy_from_slice(best_params);
        self.model.set_buffers(best_buffers)?;
        let tests = self.data.test_batches::<F>(c);
        let nn = nearest_neighbour_score(&tests);
        let (test_loss, correct, total) = evaluate_batches(&mut self.model, tests)?;
        let (test_acc, test_acc_ci95) = accuracy_ci95(correct, total);
        Ok(FscSummary {
            test_acc,
            test_acc_ci95,
            test_loss,
            test_episodes: total,
            nn_baseline_acc: nn.percent(),
            chance_acc: 100.0 / c.way as f64,
            best_step: state.best_step,
            best_val_acc: state.best_val_acc,
            updates: c.max_batch + 1,
            elapsed_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retrieval_share_holds_then_falls_linearly_to_none() {
        let share: Vec<usize> = [0, 1, 1500, 1501, 2250, 2999, 3000, 4000]
            .iter()
            .map(|&step| retrieval_episodes(step, 3000, 16))
            .collect();
        assert_eq!(share, [16, 16, 16, 16, 8, 1, 0, 0]);
        // off: never
        assert_eq!(retrieval_episodes(0, 0, 16), 0);
    }

    #[test]
    fn accuracy_interval_is_1_96_standard_errors() {
        let (acc, ci) = accuracy_ci95(3, 4);
        // scores 1,1,1,0: mean 0.75, sample std sqrt(0.25), se 0.25
        assert!((acc - 75.0).abs() < 1e-12);
        assert!((ci - 100.0 * 1.96 * 0.25).abs() < 1e-9, "{ci}");
        assert_eq!(accuracy_ci95(0, 0), (0.0, 0.0));
        assert_eq!(accuracy_ci95(5, 5).1, 0.0);
    }
}
