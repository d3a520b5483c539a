//! A pretraining run in a run folder (docs/fsc.md §7–§8), like every other task's:
//! `config.toml` (task `pretrain-classification` or `pretrain-simclr`), `progress.tsv`
//! (step, train loss, held-out loss and accuracy, learning rate, seconds; the columns of an
//! fsc run), `checkpoint.safetensors` (atomic, checksummed; resumable exactly),
//! `best.safetensors` (CNN and head parameters and the CNN's BatchNorm statistics, by name:
//! what `cnn_from` reads) and `result.json`.
//!
//! The protocol (the reference's optimiser and schedule, docs/fsc.md §7): AdamW with amsgrad
//! over every parameter, global gradient-norm clip, and for classification the cosine
//! schedule (`T_max = max_batch/log_every + 1`, floor lr/10, stepped at each log after the
//! first). At every multiple of `log_every` (before that step's update): log the mean
//! training loss, evaluate the held-out images (evaluation mode, no augmentation), keep the
//! best parameters, checkpoint. Updates run for steps `0..=max_batch`.
//!
//! Deliberate differences from the reference (docs/fsc.md §9.5, §9.6, §9.8): the held-out
//! fifth of the training file is never trained on and is evaluated without augmentation;
//! SimCLR trains on the other four fifths too and is evaluated on held-out views (NT-Xent,
//! and the share of views whose most similar other view is their partner); classification
//! keeps the best held-out accuracy, SimCLR the lowest held-out loss; the SimCLR head is
//! `F → 256 → 256`, as its configuration meant; the classifier has one output per training
//! class (the class's rank), not 100 outputs indexed by CIFAR-100 ids.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use plastic::params::{NamedTensor, ParamInfo};
use plastic::{Error, Float, Result};
use serde::{Deserialize, Serialize};

use super::config::{PretrainConfig, PretrainKind};
use super::data::PretrainData;
use super::head::Head;
use super::model::{PretrainModel, Target};
use crate::cnn::BackboneConfig;
use crate::config::SharedKeys;
use crate::runfiles;
use crate::trainer::{self, model_state_of, CheckpointState, FscObserver, RunKind, Trainer};

/// File names inside a pretraining run folder (those of an fsc run, and the result).
pub mod files {
    pub use crate::trainer::files::{BEST, CHECKPOINT, CONFIG, PROGRESS};
    /// The final result.
    pub const RESULT: &str = "result.json";
}

/// How to start a pretraining run: a new one with its configuration, or a resumed one.
pub type Start = trainer::Start<PretrainConfig>;

/// The result of a finished pretraining run (`result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainSummary {
    /// `pretrain-classification` or `pretrain-simclr`.
    pub task: String,
    /// Step of the kept parameters.
    pub best_step: usize,
    /// Their held-out loss.
    pub best_val_loss: f64,
    /// Their held-out accuracy, percent (classification: top-1 over the training classes;
    /// SimCLR: views whose most similar other view is their partner).
    pub best_val_acc: f64,
    /// Classes of the training file.
    pub classes: usize,
    /// Images trained on.
    pub train_images: usize,
    /// Images held out.
    pub holdout_images: usize,
    /// Updates made (`max_batch + 1`).
    pub updates: usize,
    /// Wall-clock seconds of training.
    pub elapsed_s: f64,
}

/// The CNN of a pretraining configuration, at its data set's image size.
pub fn cnn_config(config: &PretrainConfig) -> BackboneConfig {
    config.backbone()
}

/// The CNN in words, for error messages: name, widths, image size and features.
pub fn describe(config: &BackboneConfig) -> String {
    match config {
        BackboneConfig::ProtoNet(c) => format!(
            "protonet of width {} on {}×{} images ({} features)",
            c.channels,
            c.image_size,
            c.image_size,
            c.feature_size()
        ),
        BackboneConfig::ResNet12(c) => format!(
            "resnet12 of widths {:?} on {}×{} images ({} features)",
            c.widths,
            c.image_size,
            c.image_size,
            config.feature_size()
        ),
    }
}

/// The model of a configuration with `classes` training classes.
pub fn build_model<F: Float>(config: &PretrainConfig, classes: usize) -> Result<PretrainModel<F>> {
    let cnn = cnn_config(config);
    let input = cnn.feature_size();
    let head = match config.kind() {
        PretrainKind::Classification => Head::Classifier { input, classes },
        PretrainKind::Simclr => Head::Simclr {
            input,
            width: config.simclr_head_size,
        },
    };
    PretrainModel::new(cnn, head, config.seed)
}

/// Reads a pretraining run's configuration.
pub fn read_config(dir: &Path) -> Result<PretrainConfig> {
    trainer::read_config(dir)
}

/// Reads a finished run's result.
pub fn read_summary(dir: &Path) -> Result<PretrainSummary> {
    trainer::read_result(dir, files::RESULT)
}

/// Trains a pretraining run (new or resumed) to the end, in the configuration's float type.
pub fn train_pretrain(
    dir: &Path,
    start: Start,
    observer: &mut dyn FscObserver,
) -> Result<PretrainSummary> {
    let config = trainer::open_run(
        dir,
        start,
        &[
            files::CONFIG,
            files::PROGRESS,
            files::BEST,
            files::CHECKPOINT,
            files::RESULT,
        ],
    )?;
    let result = dir.join(files::RESULT);
    if result.exists() {
        observer.note("this run has already finished; its result is unchanged");
        return read_summary(dir);
    }
    let data = PretrainData::load(&config)?;
    if config.dtype == "f64" {
        Trainer::new(dir, PretrainRun::<f64>::new(config, data)?)?.run(observer)
    } else {
        Trainer::new(dir, PretrainRun::<f32>::new(config, data)?)?.run(observer)
    }
}

impl trainer::RunConfig for PretrainConfig {
    fn from_toml(text: &str) -> Result<Self> {
        PretrainConfig::from_toml(text)
    }
    fn to_toml(&self) -> String {
        PretrainConfig::to_toml(self)
    }
    fn for_new_run(self) -> Result<Self> {
        self.validate()?;
        Ok(self)
    }
    fn protocol(&self) -> SharedKeys {
        self.shared_keys()
    }
}

/// A pretraining run as the shared [`Trainer`] drives it: seeded batches of the training
/// images (classification: augmented images and labels; SimCLR: two views each), the CNN
/// with its head, validation on the held-out images.
struct PretrainRun<F: Float> {
    config: PretrainConfig,
    model: PretrainModel<F>,
    data: PretrainData,
}

impl<F: Float> PretrainRun<F> {
    fn new(config: PretrainConfig, data: PretrainData) -> Result<Self> {
        let model = build_model::<F>(&config, data.classes())?;
        Ok(PretrainRun {
            config,
            model,
            data,
        })
    }

    /// What the loss compares a batch with: its labels (classification) or its pairs of
    /// views (SimCLR).
    fn target<'a>(&self, labels: &'a [usize]) -> Target<'a> {
        match self.config.kind() {
            PretrainKind::Classification => Target::Labels(labels),
            PretrainKind::Simclr => Target::Views {
                temperature: self.config.temperature,
            },
        }
    }
}

impl<F: Float> RunKind<F> for PretrainRun<F> {
    type Config = PretrainConfig;
    type Summary = PretrainSummary;
    const CHECKPOINT_FORMAT: &'static str = "plastic-pretrain-checkpoint/1";
    const RESULT: &'static str = files::RESULT;
    const KEEPS_BEST_LOSS: bool = true;

    fn config(&self) -> &PretrainConfig {
        &self.config
    }
    model_state_of!(model);
    fn trainable_mask(&self) -> Vec<bool> {
        vec![true; self.model.params().len()]
    }
    /// DropBlock and dropout draw from the number of CNN calls: checkpointed.
    fn cnn_calls(&self) -> Option<u64> {
        Some(self.model.calls())
    }
    fn set_cnn_calls(&mut self, calls: u64) {
        self.model.set_calls(calls);
    }
    fn format_mismatch(format: &str, dtype: &str) -> Option<String> {
        (format != Self::CHECKPOINT_FORMAT || dtype != F::NAME).then(|| {
            format!(
                "format `{format}` in {dtype}, expected {} in {}",
                Self::CHECKPOINT_FORMAT,
                F::NAME
            )
        })
    }

    fn train_step(&mut self, step: usize) -> Result<(f64, Vec<F>)> {
        let c = &self.config;
        let ids = self.data.train_indices(c.seed, step as u64, c.batch_size);
        let key = PretrainData::step_key(c.seed, step as u64);
        let b = match c.kind() {
            PretrainKind::Classification => self.data.classification_batch::<F>(&ids, Some(key)),
            PretrainKind::Simclr => self.data.simclr_batch::<F>(&ids, key),
        };
        let target = self.target(&b.labels);
        let r = self.model.train_step(&b.images, b.rows, target)?;
        Ok((r.loss, r.grads))
    }

    /// Held-out loss (mean over rows) and accuracy (percent of rows).
    fn validate(&mut self, _index: usize) -> Result<(f64, f64)> {
        // the training step's buffers are not needed here nor by the checkpoint after it
        self.model.release_memory();
        let c = &self.config;
        let (mut loss, mut correct, mut rows) = (0.0, 0usize, 0usize);
        for j in 0..c.test_batch {
            let Some(ids) = self.data.holdout_indices(j, c.batch_size) else {
                break;
            };
            let b = match c.kind() {
                PretrainKind::Classification => self.data.classification_batch::<F>(&ids, None),
                PretrainKind::Simclr => {
                    if ids.len() < 2 {
                        break;
                    }
                    self.data
                        .simclr_batch::<F>(&ids, PretrainData::holdout_key(j))
                }
            };
            let target = self.target(&b.labels);
            let r = self.model.evaluate(&b.images, b.rows, target)?;
            loss += r.loss * r.rows as f64;
            correct += r.correct;
            rows += r.rows;
        }
        if rows == 0 {
            return Err(Error::Data(
                "no held-out images to validate on (the training file is too small)".into(),
            ));
        }
        Ok((loss / rows as f64, 100.0 * correct as f64 / rows as f64))
    }

    /// Classification keeps the best held-out accuracy, SimCLR the lowest held-out loss
    /// (a tie goes to the later).
    fn is_better(&self, best: &CheckpointState, val_loss: f64, val_acc: f64) -> bool {
        match self.config.kind() {
            PretrainKind::Classification => val_acc >= best.best_val_acc,
            PretrainKind::Simclr => val_loss <= best.best_val_loss.unwrap_or(f64::INFINITY),
        }
    }

    fn finish(
        &mut self,
        _best_params: &[F],
        _best_buffers: &[F],
        state: &CheckpointState,
        elapsed_s: f64,
    ) -> Result<PretrainSummary> {
        Ok(PretrainSummary {
            task: self.config.kind().task().into(),
            best_step: state.best_step,
            best_val_loss: state.best_val_loss.unwrap_or(f64::INFINITY),
            best_val_acc: state.best_val_acc,
            classes: self.data.classes(),
            train_images: self.data.train_len(),
            holdout_images: self.data.holdout_len(),
            updates: self.config.max_batch + 1,
            elapsed_s,
        })
    }
}

/// A pretrained CNN read from a pretraining run folder: its parameters (`cnn.*`) and
/// BatchNorm buffers by name, and the run's configuration.
#[derive(Debug, Clone)]
pub struct PretrainedCnn {
    /// The pretraining run's configuration.
    pub config: PretrainConfig,
    /// `cnn.*` parameters.
    pub params: BTreeMap<String, NamedTensor>,
    /// BatchNorm buffers (`….running_mean`, `….running_var`, `….num_batches_tracked`).
    pub buffers: BTreeMap<String, NamedTensor>,
}

fn named(infos: &[ParamInfo], data: &[f64]) -> BTreeMap<String, NamedTensor> {
    infos
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                NamedTensor {
                    shape: i.shape.clone(),
                    data: data[i.range()].to_vec(),
                },
            )
        })
        .collect()
}

/// Reads the CNN a pretraining run kept (`best.safetensors`) for a model whose CNN is
/// `expected`: the folder must hold a pretraining run (its `config.toml`) of the same CNN,
/// width and image size, and its file every CNN tensor with the right shape, uncorrupted;
/// anything else is an error saying what is wrong.
pub fn load_pretrained_cnn(dir: &Path, expected: BackboneConfig) -> Result<PretrainedCnn> {
    let what = format!("cnn_from = {}", dir.display());
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{what}: no such folder; give the folder of a finished pretraining run \
             (plastic train --task pretrain-classification or --task pretrain-simclr)"
        )));
    }
    let config_path = dir.join(files::CONFIG);
    if !config_path.is_file() {
        return Err(Error::Config(format!(
            "{what}: not a run folder (no {}); give the folder of a pretraining run",
            files::CONFIG
        )));
    }
    let config = read_config(dir)
        .map_err(|e| Error::Config(format!("{what}: not a pretraining run ({e})")))?;
    let found = cnn_config(&config);
    if found != expected {
        return Err(Error::Config(format!(
            "{what}: the pretrained CNN is {}, but this run needs {}; set cnn, cnn_width \
             and image_dataset to match, or pretrain that CNN",
            describe(&found),
            describe(&expected),
        )));
    }
    let path = dir.join(files::BEST);
    if !path.is_file() {
        return Err(Error::Config(format!(
            "{what}: {} is missing; the pretraining run has not logged yet (resume it, or \
             start it with `plastic train --task {}`)",
            path.display(),
            config.kind()
        )));
    }
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let st = plastic::params::parse_safetensors(&bytes, &path)?;
    let p_infos = expected.param_infos(0);
    let model = PretrainModel::<f64>::new(
        expected,
        Head::Classifier {
            input: expected.feature_size(),
            classes: 1,
        },
        0,
    )?;
    let b_infos = model.buffer_infos();
    let params = runfiles::tensors_read::<f64>(&st, "", &p_infos, &path)?;
    let buffers = runfiles::tensors_read::<f64>(&st, "", &b_infos, &path)?;
    Ok(PretrainedCnn {
        config,
        params: named(&p_infos, &params),
        buffers: named(&b_infos, &buffers),
    })
}
