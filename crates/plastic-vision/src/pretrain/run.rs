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
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use plastic::io::write_atomic;
use plastic::optim::{clip_grad_norm, cosine_lr, AdamW, AdamWConfig};
use plastic::params::{NamedTensor, ParamInfo};
use plastic::{Error, Float, Result};
use serde::{Deserialize, Serialize};

use super::config::{PretrainConfig, PretrainKind};
use super::data::{ImageBatch, PretrainData};
use super::head::Head;
use super::model::{PretrainModel, Target};
use crate::cnn::BackboneConfig;
use crate::run::{FscLogRow, FscObserver};
use crate::runfiles;

/// File names inside a pretraining run folder.
pub mod files {
    /// The resolved configuration.
    pub const CONFIG: &str = "config.toml";
    /// One row per log.
    pub const PROGRESS: &str = "progress.tsv";
    /// Best parameters and BatchNorm statistics so far.
    pub const BEST: &str = "best.safetensors";
    /// Resumable state.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// The final result.
    pub const RESULT: &str = "result.json";
}

const PROGRESS_HEADER: &str = "step\ttrain_loss\tval_loss\tval_acc\tlr\telapsed_s";
const CHECKPOINT_FORMAT: &str = "plastic-pretrain-checkpoint/1";

/// How to start a run.
#[derive(Debug, Clone)]
pub enum Start {
    /// A new run; an existing non-empty folder is refused unless `overwrite`.
    New {
        /// The configuration.
        config: Box<PretrainConfig>,
        /// Replace an existing run folder.
        overwrite: bool,
    },
    /// Continue the run in the folder from its checkpoint.
    Resume,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    format: String,
    dtype: String,
    step: usize,
    log_index: usize,
    best_step: usize,
    best_val_loss: f64,
    best_val_acc: f64,
    train_loss_acc: f64,
    sched_epoch: usize,
    lr: f64,
    adam_step: u64,
    elapsed_s: f64,
    cnn_calls: u64,
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
    let path = dir.join(files::CONFIG);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    PretrainConfig::from_toml(&text).map_err(|e| Error::format(&path, e.to_string()))
}

/// Reads a finished run's result.
pub fn read_summary(dir: &Path) -> Result<PretrainSummary> {
    let path = dir.join(files::RESULT);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))
}

/// Trains a pretraining run (new or resumed) to the end, in the configuration's float type.
pub fn train_pretrain(
    dir: &Path,
    start: Start,
    observer: &mut dyn FscObserver,
) -> Result<PretrainSummary> {
    let config = open_run(dir, start)?;
    let result = dir.join(files::RESULT);
    if result.exists() {
        observer.note("this run has already finished; its result is unchanged");
        return read_summary(dir);
    }
    let data = PretrainData::load(&config)?;
    if config.dtype == "f64" {
        Trainer::<f64>::new(dir, config, data)?.run(observer)
    } else {
        Trainer::<f32>::new(dir, config, data)?.run(observer)
    }
}

fn open_run(dir: &Path, start: Start) -> Result<PretrainConfig> {
    match start {
        Start::New { config, overwrite } => {
            config.validate()?;
            runfiles::prepare_new(
                dir,
                overwrite,
                &[
                    files::CONFIG,
                    files::PROGRESS,
                    files::BEST,
                    files::CHECKPOINT,
                    files::RESULT,
                ],
            )?;
            write_atomic(&dir.join(files::CONFIG), config.to_toml().as_bytes())?;
            write_atomic(
                &dir.join(files::PROGRESS),
                format!("{PROGRESS_HEADER}\n").as_bytes(),
            )?;
            Ok(*config)
        }
        Start::Resume => {
            if !dir.join(files::CONFIG).exists() {
                return Err(Error::Config(format!(
                    "{} is not a run folder (no {}); nothing to resume",
                    dir.display(),
                    files::CONFIG
                )));
            }
            let progress = dir.join(files::PROGRESS);
            if !progress.exists() {
                write_atomic(&progress, format!("{PROGRESS_HEADER}\n").as_bytes())?;
            }
            read_config(dir)
        }
    }
}

struct Trainer<F: Float> {
    dir: PathBuf,
    config: PretrainConfig,
    model: PretrainModel<F>,
    data: PretrainData,
    opt: AdamW<F>,
    mask: Vec<bool>,
    best_params: Vec<F>,
    best_buffers: Vec<F>,
    state: CheckpointState,
}

impl<F: Float> Trainer<F> {
    fn new(dir: &Path, config: PretrainConfig, data: PretrainData) -> Result<Self> {
        let model = build_model::<F>(&config, data.classes())?;
        let mask = vec![true; model.params().len()];
        let opt = AdamW::new(
            AdamWConfig {
                lr: config.lr,
                weight_decay: config.wdecay,
                ..Default::default()
            },
            mask.clone(),
        );
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT.into(),
            dtype: F::NAME.into(),
            step: 0,
            log_index: 0,
            best_step: 0,
            best_val_loss: f64::INFINITY,
            best_val_acc: f64::NEG_INFINITY,
            train_loss_acc: 0.0,
            sched_epoch: 0,
            lr: config.lr,
            adam_step: 0,
            elapsed_s: 0.0,
            cnn_calls: 0,
        };
        let mut t = Trainer {
            dir: dir.to_path_buf(),
            best_params: model.params().to_vec(),
            best_buffers: model.buffers(),
            config,
            model,
            data,
            opt,
            mask,
            state,
        };
        if t.dir.join(files::CHECKPOINT).exists() {
            t.load_checkpoint()?;
        }
        Ok(t)
    }

    fn save_checkpoint(&self) -> Result<()> {
        let meta = runfiles::checkpoint_meta(&self.state, self.config.to_toml());
        runfiles::write_checkpoint(
            &self.dir.join(files::CHECKPOINT),
            &self.model.param_infos(),
            &self.model.buffer_infos(),
            self.model.params(),
            &self.model.buffers(),
            &self.best_params,
            &self.best_buffers,
            &self.opt,
            meta,
        )
    }

    fn load_checkpoint(&mut self) -> Result<()> {
        let path = self.dir.join(files::CHECKPOINT);
        let ck = runfiles::read_checkpoint::<F>(
            &path,
            &self.model.param_infos(),
            &self.model.buffer_infos(),
        )?;
        let corrupt =
            |m: String| Error::format(&path, format!("corrupt or truncated checkpoint: {m}"));
        let (state, saved): (CheckpointState, &str) = runfiles::checkpoint_state(&ck.meta, &path)?;
        if state.format != CHECKPOINT_FORMAT || state.dtype != F::NAME {
            return Err(corrupt(format!(
                "format `{}` in {}, expected {CHECKPOINT_FORMAT} in {}",
                state.format,
                state.dtype,
                F::NAME
            )));
        }
        if PretrainConfig::from_toml(saved)? != self.config {
            return Err(runfiles::config_mismatch(&path, files::CONFIG));
        }
        self.model.params_mut().copy_from_slice(&ck.params);
        self.model.set_buffers(&ck.buffers)?;
        self.model.set_calls(state.cnn_calls);
        self.best_params = ck.best_params;
        self.best_buffers = ck.best_buffers;
        let [m, v, vmax] = ck.moments;
        self.opt =
            AdamW::new(self.opt.config, self.mask.clone()).with_state(state.adam_step, m, v, vmax);
        self.opt.config.lr = state.lr;
        self.state = state;
        runfiles::trim_progress(
            &self.dir.join(files::PROGRESS),
            PROGRESS_HEADER,
            self.state.step,
        )?;
        self.write_best()
    }

    fn write_best(&self) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("step".into(), self.state.best_step.to_string());
        meta.insert("val_loss".into(), format!("{}", self.state.best_val_loss));
        meta.insert("val_acc".into(), format!("{}", self.state.best_val_acc));
        meta.insert("config".into(), self.config.to_toml());
        runfiles::write_named(
            &self.dir.join(files::BEST),
            &self.model.param_infos(),
            &self.best_params,
            &self.model.buffer_infos(),
            &self.best_buffers,
            meta,
        )
    }

    fn target(&self, batch: &ImageBatch<F>) -> Vec<usize> {
        batch.labels.clone()
    }

    /// Held-out loss (mean over rows) and accuracy (percent of rows).
    fn validate(&mut self) -> Result<(f64, f64)> {
        // the training step's buffers are not needed here nor by the checkpoint after it
        self.model.release_memory();
        let c = &self.config;
        let (mut loss, mut correct, mut rows) = (0.0, 0usize, 0usize);
        for j in 0..c.test_batch {
            let Some(ids) = self.data.holdout_indices(j, c.batch_size) else {
                break;
            };
            let r = match c.kind() {
                PretrainKind::Classification => {
                    let b = self.data.classification_batch::<F>(&ids, None);
                    self.model
                        .evaluate(&b.images, b.rows, Target::Labels(&b.labels))?
                }
                PretrainKind::Simclr => {
                    if ids.len() < 2 {
                        break;
                    }
                    let b = self
                        .data
                        .simclr_batch::<F>(&ids, PretrainData::holdout_key(j));
                    self.model.evaluate(
                        &b.images,
                        b.rows,
                        Target::Views {
                            temperature: c.temperature,
                        },
                    )?
                }
            };
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

    fn log(&mut self, step: usize, elapsed_s: f64, observer: &mut dyn FscObserver) -> Result<()> {
        let c = self.config.clone();
        let (val_loss, val_acc) = self.validate()?;
        let better = match c.kind() {
            PretrainKind::Classification => val_acc >= self.state.best_val_acc,
            PretrainKind::Simclr => val_loss <= self.state.best_val_loss,
        };
        if better {
            self.state.best_val_acc = val_acc;
            self.state.best_val_loss = val_loss;
            self.state.best_step = step;
            self.best_params.copy_from_slice(self.model.params());
            self.best_buffers = self.model.buffers();
            self.write_best()?;
        }
        if step > 0 && c.use_lr_scheduler {
            self.state.sched_epoch += 1;
            let t_max = c.max_batch / c.log_every + 1;
            self.opt.config.lr = cosine_lr(c.lr, c.lr / 10.0, t_max, self.state.sched_epoch);
        }
        let row = FscLogRow {
            step,
            train_loss: if step == 0 {
                0.0
            } else {
                self.state.train_loss_acc / c.log_every as f64
            },
            val_loss,
            val_acc,
            lr: self.opt.config.lr,
            elapsed_s,
        };
        self.state.lr = self.opt.config.lr;
        self.state.train_loss_acc = 0.0;
        self.state.log_index += 1;
        self.state.step = step;
        self.state.elapsed_s = elapsed_s;
        self.state.adam_step = self.opt.step;
        self.state.cnn_calls = self.model.calls();
        let progress = self.dir.join(files::PROGRESS);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&progress)
            .map_err(|e| Error::io(&progress, e))?;
        writeln!(f, "{}", row.tsv()).map_err(|e| Error::io(&progress, e))?;
        self.save_checkpoint()?;
        observer.log(&row);
        Ok(())
    }

    fn run(mut self, observer: &mut dyn FscObserver) -> Result<PretrainSummary> {
        let c = self.config.clone();
        let started = Instant::now();
        let elapsed0 = self.state.elapsed_s;
        let resumed = self.state.log_index > 0;
        let first = self.state.step;
        observer.start(first, c.max_batch);
        for step in first..=c.max_batch {
            if step.is_multiple_of(c.log_every) && !(resumed && step == first) {
                let elapsed = elapsed0 + started.elapsed().as_secs_f64();
                self.log(step, elapsed, observer)?;
            }
            let ids = self.data.train_indices(c.seed, step as u64, c.batch_size);
            let key = PretrainData::step_key(c.seed, step as u64);
            let mut r = match c.kind() {
                PretrainKind::Classification => {
                    let b = self.data.classification_batch::<F>(&ids, Some(key));
                    let labels = self.target(&b);
                    self.model
                        .train_step(&b.images, b.rows, Target::Labels(&labels))?
                }
                PretrainKind::Simclr => {
                    let b = self.data.simclr_batch::<F>(&ids, key);
                    self.model.train_step(
                        &b.images,
                        b.rows,
                        Target::Views {
                            temperature: c.temperature,
                        },
                    )?
                }
            };
            if !r.loss.is_finite() || r.grads.iter().any(|v| !v.is_finite()) {
                return Err(Error::Diverged(format!(
                    "non-finite loss or gradient at training step {step}; the last good \
                     checkpoint (step {}) is kept in {}",
                    self.state.step,
                    self.dir.display()
                )));
            }
            clip_grad_norm(&mut r.grads, &self.mask, c.grad_clip);
            self.opt.update(self.model.params_mut(), &r.grads);
            self.state.train_loss_acc += r.loss;
            observer.step(step, r.loss);
        }
        let summary = PretrainSummary {
            task: c.kind().task().into(),
            best_step: self.state.best_step,
            best_val_loss: self.state.best_val_loss,
            best_val_acc: self.state.best_val_acc,
            classes: self.data.classes(),
            train_images: self.data.train_len(),
            holdout_images: self.data.holdout_len(),
            updates: c.max_batch + 1,
            elapsed_s: elapsed0 + started.elapsed().as_secs_f64(),
        };
        let json = serde_json::to_string_pretty(&summary).expect("serialisable");
        write_atomic(&self.dir.join(files::RESULT), json.as_bytes())?;
        Ok(summary)
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
