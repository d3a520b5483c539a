//! The trainer shared by the image tasks: the fsc meta-training ([`crate::run`],
//! `docs/fsc.md` §6) and the CNN pretraining ([`crate::pretrain::run`], `docs/fsc.md` §7).
//! Both follow one protocol in one kind of run folder; what differs (the data, the model,
//! a step's batch, validation, which result is better, the final result) is a
//! [`RunKind`].
//!
//! The protocol, step by step: the run kind draws step `s`'s batch and returns the loss and
//! the gradient; the gradient is clipped to a global norm and AdamW (amsgrad, decoupled
//! weight decay) updates the parameters. At every multiple of `log_every`, before that
//! step's update: validate, keep the parameters (and state buffers) if better, step the
//! cosine schedule (`T_max = max_batch/log_every + 1`, floor lr/10) after the first log,
//! append the row to `progress.tsv` and write the checkpoint. Updates run for steps
//! `0..=max_batch`, then the run kind writes its result. A checkpoint is written right
//! after its step's log, so a resumed run continues after that log, bit-exactly.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use plastic::io::write_atomic;
use plastic::optim::{clip_grad_norm, cosine_lr, AdamW, AdamWConfig};
use plastic::params::ParamInfo;
use plastic::{Error, Float, Result};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::SharedKeys;
use crate::runfiles;

/// File names inside a run folder, of every image task.
pub mod files {
    /// The resolved configuration.
    pub const CONFIG: &str = "config.toml";
    /// One row per log.
    pub const PROGRESS: &str = "progress.tsv";
    /// Best parameters and BatchNorm statistics so far.
    pub const BEST: &str = "best.safetensors";
    /// Resumable state.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
}

/// The header of an image task's `progress.tsv`.
pub(crate) const PROGRESS_HEADER: &str = "step\ttrain_loss\tval_loss\tval_acc\tlr\telapsed_s";

/// One row of `progress.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct FscLogRow {
    /// Training steps taken (updates made) before this log.
    pub step: usize,
    /// Mean training loss since the previous log (0 at step 0).
    pub train_loss: f64,
    /// Validation loss (mean over the validation batches).
    pub val_loss: f64,
    /// Validation accuracy in percent (fsc: first query of each episode; pretraining: the
    /// held-out images, `docs/fsc.md` §8).
    pub val_acc: f64,
    /// Learning rate in force for the next steps.
    pub lr: f64,
    /// Wall-clock seconds of training so far.
    pub elapsed_s: f64,
}

impl FscLogRow {
    /// The row as `progress.tsv` writes it (numbers in their shortest exact form).
    pub(crate) fn tsv(&self) -> String {
        format!(
            "{}\t{:e}\t{:e}\t{}\t{:e}\t{:.3}",
            self.step, self.train_loss, self.val_loss, self.val_acc, self.lr, self.elapsed_s
        )
    }
}

/// Receives progress while a run trains (the CLI draws a progress bar from it).
pub trait FscObserver {
    /// Training runs from step `from` to step `to` (inclusive).
    fn start(&mut self, _from: usize, _to: usize) {}
    /// The update of `step` finished with this loss.
    fn step(&mut self, _step: usize, _loss: f64) {}
    /// A log row was written.
    fn log(&mut self, _row: &FscLogRow) {}
    /// Something worth telling the user.
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl FscObserver for Silent {}

/// How to start a run with a configuration of type `C`.
#[derive(Debug, Clone)]
pub enum Start<C> {
    /// A new run with this configuration; an existing non-empty folder is refused unless
    /// `overwrite`.
    New {
        /// The configuration.
        config: Box<C>,
        /// Replace an existing run folder.
        overwrite: bool,
    },
    /// Continue the run in the folder from its checkpoint.
    Resume,
}

/// What the trainer needs from a run's configuration.
pub(crate) trait RunConfig: Sized + PartialEq {
    /// Parses a `config.toml` (or a checkpoint's copy of it).
    fn from_toml(text: &str) -> Result<Self>;
    /// The text of `config.toml`.
    fn to_toml(&self) -> String;
    /// The configuration a new run keeps (derived values written out), validated.
    fn for_new_run(self) -> Result<Self>;
    /// The keys of the optimiser, the schedule and the logs (among others).
    fn protocol(&self) -> SharedKeys;
}

/// Reads a run folder's `config.toml`.
pub(crate) fn read_config<C: RunConfig>(dir: &Path) -> Result<C> {
    let path = dir.join(files::CONFIG);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    C::from_toml(&text).map_err(|e| Error::format(&path, e.to_string()))
}

/// Reads a finished run's result file `name` (JSON).
pub(crate) fn read_result<S: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<S> {
    let path = dir.join(name);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))
}

/// Checks or creates the run folder (a new run: its configuration and an empty
/// `progress.tsv`; the run files `names` of a previous run are removed with `overwrite`);
/// returns the configuration to train.
pub(crate) fn open_run<C: RunConfig>(dir: &Path, start: Start<C>, names: &[&str]) -> Result<C> {
    let header = format!("{PROGRESS_HEADER}\n");
    match start {
        Start::New { config, overwrite } => {
            let config = config.for_new_run()?;
            runfiles::prepare_new(dir, overwrite, names)?;
            write_atomic(&dir.join(files::CONFIG), config.to_toml().as_bytes())?;
            write_atomic(&dir.join(files::PROGRESS), header.as_bytes())?;
            Ok(config)
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
                write_atomic(&progress, header.as_bytes())?;
            }
            read_config(dir)
        }
    }
}

/// The trainer's state, stored as JSON in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    pub format: String,
    pub dtype: String,
    /// The step of the last log (the next update to make).
    pub step: usize,
    pub log_index: usize,
    pub best_step: usize,
    /// The best validation loss, for the run kinds that keep it ([`RunKind::KEEPS_BEST_LOSS`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub best_val_loss: Option<f64>,
    pub best_val_acc: f64,
    pub train_loss_acc: f64,
    pub sched_epoch: usize,
    pub lr: f64,
    pub adam_step: u64,
    pub elapsed_s: f64,
    /// Calls of the CNN's random layers so far, for the run kinds that count them
    /// ([`RunKind::cnn_calls`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cnn_calls: Option<u64>,
}

/// An optional field that, when present, must hold a value (not `null`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// One kind of image-task run, as the [`Trainer`] drives it: its configuration, model and
/// data, a training step, validation, which result is better, and the final result.
pub(crate) trait RunKind<F: Float> {
    /// The configuration.
    type Config: RunConfig;
    /// The final result (written as JSON to [`RunKind::RESULT`]).
    type Summary: Serialize;
    /// The format tag of the checkpoint's state.
    const CHECKPOINT_FORMAT: &'static str;
    /// The file of the final result.
    const RESULT: &'static str;
    /// Whether the best validation loss is kept (in the state and in `best.safetensors`).
    const KEEPS_BEST_LOSS: bool;

    /// The configuration.
    fn config(&self) -> &Self::Config;
    /// Every parameter of the model, named, in the order of [`RunKind::params`] (these
    /// six: [`model_state_of`]).
    fn param_infos(&self) -> Vec<ParamInfo>;
    /// The parameters.
    fn params(&self) -> &[F];
    /// The parameters, to update.
    fn params_mut(&mut self) -> &mut [F];
    /// Every state buffer (BatchNorm running statistics), named.
    fn buffer_infos(&self) -> Vec<ParamInfo>;
    /// The state buffers, flat.
    fn buffers(&self) -> Vec<F>;
    /// Restores the state buffers.
    fn set_buffers(&mut self, values: &[F]) -> Result<()>;
    /// Which parameters the optimiser updates.
    fn trainable_mask(&self) -> Vec<bool>;
    /// Calls of the CNN's random layers so far, if the kind checkpoints them.
    fn cnn_calls(&self) -> Option<u64> {
        None
    }
    /// Restores [`RunKind::cnn_calls`] from a checkpoint.
    fn set_cnn_calls(&mut self, _calls: u64) {}
    /// Called once before training, after a checkpoint was restored.
    fn prepare(&mut self, _dir: &Path, _observer: &mut dyn FscObserver) -> Result<()> {
        Ok(())
    }
    /// The error message for a checkpoint of another format or float type, if it is one.
    fn format_mismatch(format: &str, dtype: &str) -> Option<String> {
        if format != Self::CHECKPOINT_FORMAT {
            return Some(format!(
                "format `{format}`, expected {}",
                Self::CHECKPOINT_FORMAT
            ));
        }
        (dtype != F::NAME).then(|| format!("written in {dtype}, but the run trains in {}", F::NAME))
    }
    /// The loss and the gradient of training step `step` (its batch drawn from the run's
    /// seed and `step`).
    fn train_step(&mut self, step: usize) -> Result<(f64, Vec<F>)>;
    /// The `index`-th validation: loss and accuracy in percent.
    fn validate(&mut self, index: usize) -> Result<(f64, f64)>;
    /// Whether a validation result is better than the best so far (and is kept).
    fn is_better(&self, best: &CheckpointState, val_loss: f64, val_acc: f64) -> bool;
    /// The final result, from the best parameters and buffers (the model may take them:
    /// training is over).
    fn finish(
        &mut self,
        best_params: &[F],
        best_buffers: &[F],
        state: &CheckpointState,
        elapsed_s: f64,
    ) -> Result<Self::Summary>;
}

/// The [`RunKind`] methods that hand the trainer a run's model state (parameters and
/// state buffers, named), delegated to the model in the field `$model` (whose methods of
/// these names are an [`crate::run::FscLearner`]'s or a
/// [`crate::pretrain::model::PretrainModel`]'s).
macro_rules! model_state_of {
    ($model:ident) => {
        fn param_infos(&self) -> Vec<plastic::params::ParamInfo> {
            self.$model.param_infos()
        }
        fn params(&self) -> &[F] {
            self.$model.params()
        }
        fn params_mut(&mut self) -> &mut [F] {
            self.$model.params_mut()
        }
        fn buffer_infos(&self) -> Vec<plastic::params::ParamInfo> {
            self.$model.buffer_infos()
        }
        fn buffers(&self) -> Vec<F> {
            self.$model.buffers()
        }
        fn set_buffers(&mut self, values: &[F]) -> plastic::Result<()> {
            self.$model.set_buffers(values)
        }
    };
}
pub(crate) use model_state_of;

/// Trains a run of kind `K` in its folder: the model, the optimiser and the best so far.
pub(crate) struct Trainer<F: Float, K: RunKind<F>> {
    dir: PathBuf,
    kind: K,
    opt: AdamW<F>,
    mask: Vec<bool>,
    best_params: Vec<F>,
    best_buffers: Vec<F>,
    state: CheckpointState,
}

impl<F: Float, K: RunKind<F>> Trainer<F, K> {
    /// The trainer of the run in `dir`, its checkpoint restored if it has one.
    pub fn new(dir: &Path, kind: K) -> Result<Self> {
        let lr = kind.config().protocol().lr;
        let mask = kind.trainable_mask();
        let opt = AdamW::new(
            AdamWConfig {
                lr,
                weight_decay: kind.config().protocol().wdecay,
                ..Default::default()
            },
            mask.clone(),
        );
        let state = CheckpointState {
            format: K::CHECKPOINT_FORMAT.into(),
            dtype: F::NAME.into(),
            step: 0,
            log_index: 0,
            best_step: 0,
            best_val_loss: K::KEEPS_BEST_LOSS.then_some(f64::INFINITY),
            best_val_acc: f64::NEG_INFINITY,
            train_loss_acc: 0.0,
            sched_epoch: 0,
            lr,
            adam_step: 0,
            elapsed_s: 0.0,
            cnn_calls: kind.cnn_calls(),
        };
        let mut t = Trainer {
            dir: dir.to_path_buf(),
            best_params: kind.params().to_vec(),
            best_buffers: kind.buffers(),
            kind,
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
        let meta = runfiles::checkpoint_meta(&self.state, self.kind.config().to_toml());
        runfiles::write_checkpoint(
            &self.dir.join(files::CHECKPOINT),
            &self.kind.param_infos(),
            &self.kind.buffer_infos(),
            self.kind.params(),
            &self.kind.buffers(),
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
            &self.kind.param_infos(),
            &self.kind.buffer_infos(),
        )?;
        let (state, saved): (CheckpointState, &str) = runfiles::checkpoint_state(&ck.meta, &path)?;
        if let Some(m) = K::format_mismatch(&state.format, &state.dtype) {
            return Err(Error::format(
                &path,
                format!("corrupt or truncated checkpoint: {m}"),
            ));
        }
        if K::Config::from_toml(saved)? != *self.kind.config() {
            return Err(runfiles::config_mismatch(&path, files::CONFIG));
        }
        self.kind.params_mut().copy_from_slice(&ck.params);
        self.kind.set_buffers(&ck.buffers)?;
        if let Some(calls) = state.cnn_calls {
            self.kind.set_cnn_calls(calls);
        }
        self.best_params = ck.best_params;
        self.best_buffers = ck.best_buffers;
        let [m, v, vmax] = ck.moments;
        self.opt =
            AdamW::new(self.opt.config, self.mask.clone()).with_state(state.adam_step, m, v, vmax);
        self.opt.config.lr = state.lr;
        self.state = state;
        // keep progress.tsv consistent with the checkpoint (drop rows logged after it)
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
        if let Some(loss) = self.state.best_val_loss {
            meta.insert("val_loss".into(), format!("{loss}"));
        }
        meta.insert("val_acc".into(), format!("{}", self.state.best_val_acc));
        meta.insert("config".into(), self.kind.config().to_toml());
        runfiles::write_named(
            &self.dir.join(files::BEST),
            &self.kind.param_infos(),
            &self.best_params,
            &self.kind.buffer_infos(),
            &self.best_buffers,
            meta,
        )
    }

    /// The log before step `step`'s update: validation, best, schedule, progress row,
    /// checkpoint.
    fn log(&mut self, step: usize, elapsed_s: f64, observer: &mut dyn FscObserver) -> Result<()> {
        let p = self.kind.config().protocol();
        let (val_loss, val_acc) = self.kind.validate(self.state.log_index)?;
        if self.kind.is_better(&self.state, val_loss, val_acc) {
            self.state.best_val_acc = val_acc;
            if K::KEEPS_BEST_LOSS {
                self.state.best_val_loss = Some(val_loss);
            }
            self.state.best_step = step;
            self.best_params.copy_from_slice(self.kind.params());
            self.best_buffers = self.kind.buffers();
            self.write_best()?;
        }
        if step > 0 && p.use_lr_scheduler {
            self.state.sched_epoch += 1;
            let t_max = p.max_batch / p.log_every + 1;
            self.opt.config.lr = cosine_lr(p.lr, p.lr / 10.0, t_max, self.state.sched_epoch);
        }
        let row = FscLogRow {
            step,
            train_loss: if step == 0 {
                0.0
            } else {
                self.state.train_loss_acc / p.log_every as f64
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
        self.state.cnn_calls = self.kind.cnn_calls();
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

    /// Trains to the end and writes the run kind's result.
    pub fn run(mut self, observer: &mut dyn FscObserver) -> Result<K::Summary> {
        let p = self.kind.config().protocol();
        self.kind.prepare(&self.dir, observer)?;
        let started = Instant::now();
        let elapsed0 = self.state.elapsed_s;
        // a checkpoint is written right after the log of its step: resume after that log
        let resumed = self.state.log_index > 0;
        let first = self.state.step;
        observer.start(first, p.max_batch);
        for step in first..=p.max_batch {
            if step.is_multiple_of(p.log_every) && !(resumed && step == first) {
                let elapsed = elapsed0 + started.elapsed().as_secs_f64();
                self.log(step, elapsed, observer)?;
            }
            let (loss, mut grads) = self.kind.train_step(step)?;
            if !loss.is_finite() || grads.iter().any(|v| !v.is_finite()) {
                return Err(Error::Diverged(format!(
                    "non-finite loss or gradient at training step {step}; the last good \
                     checkpoint (step {}) is kept in {}",
                    self.state.step,
                    self.dir.display()
                )));
            }
            clip_grad_norm(&mut grads, &self.mask, p.grad_clip);
            self.opt.update(self.kind.params_mut(), &grads);
            self.state.train_loss_acc += loss;
            observer.step(step, loss);
        }
        let elapsed_s = elapsed0 + started.elapsed().as_secs_f64();
        let summary = self.kind.finish(
            &self.best_params,
            &self.best_buffers,
            &self.state,
            elapsed_s,
        )?;
        let json = serde_json::to_string_pretty(&summary).expect("serialisable");
        write_atomic(&self.dir.join(K::RESULT), json.as_bytes())?;
        Ok(summary)
    }
}
