//! Meta-training runs (docs/algorithm.md §4): a run is a folder with its resolved configuration
//! (`config.toml`), one log row per `log_every` steps (`progress.tsv`), the best parameters
//! so far (`best.safetensors`), a resumable checkpoint (`checkpoint.safetensors`) and the
//! final test metric (`test.json`).
//!
//! Every random number of a run comes from its seed: the data of training step `s` from an
//! independent stream numbered `s`, the `k`-th validation from stream `k`, and the test set
//! from a fixed seed shared by every run. A resumed run therefore continues exactly as an
//! uninterrupted one, on any number of threads.

pub mod config;
pub mod eval;
pub mod memory;
pub mod sweep;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use config::RunConfig;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::io::write_atomic;
use crate::network::Network;
use crate::optim::{clip_grad_norm, cosine_lr, AdamW, AdamWConfig};
use crate::params::{buffer_from_safetensors, safetensors_bytes, safetensors_metadata, Layout};
use crate::rng::Rng;

/// Seed of the test set, the same for every run (as the reference's fixed test seed).
pub const TEST_SEED: u64 = 0x7E57_5EED;

/// File names inside a run folder.
pub mod files {
    /// The resolved configuration.
    pub const CONFIG: &str = "config.toml";
    /// One row per log.
    pub const PROGRESS: &str = "progress.tsv";
    /// Best parameters so far.
    pub const BEST: &str = "best.safetensors";
    /// Resumable state.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// Final test metric.
    pub const TEST: &str = "test.json";
}

const PROGRESS_HEADER: &str = "step\ttrain_loss\tval_loss\tlr\telapsed_s";
const CHECKPOINT_FORMAT: &str = "plastic-checkpoint/1";

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of the training data of step `step`.
pub fn train_rng(seed: u64, step: usize) -> Rng {
    Rng::with_stream(splitmix(seed ^ 0x7261_696E), step as u64)
}

/// The generator of the `index`-th validation.
pub fn val_rng(seed: u64, index: usize) -> Rng {
    Rng::with_stream(splitmix(seed ^ 0x0076_616C), index as u64)
}

/// The generator of the test set (identical for every run).
pub fn test_rng() -> Rng {
    Rng::with_stream(TEST_SEED, 0)
}

/// One row of `progress.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// Training steps taken.
    pub step: usize,
    /// Mean training loss since the previous log (0 at step 0).
    pub train_loss: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Learning rate in force for the next steps.
    pub lr: f64,
    /// Wall-clock seconds of training so far.
    pub elapsed_s: f64,
}

impl LogRow {
    fn tsv(&self) -> String {
        format!(
            "{}\t{:.9e}\t{:.9e}\t{:.9e}\t{:.3}",
            self.step, self.train_loss, self.val_loss, self.lr, self.elapsed_s
        )
    }
}

/// Receives progress while a run trains (the CLI draws a progress bar from it).
pub trait Observer {
    /// Training runs from step `from` to `to`.
    fn start(&mut self, _from: usize, _to: usize) {}
    /// A training step finished with this loss.
    fn step(&mut self, _step: usize, _loss: f64) {}
    /// A log row was written.
    fn log(&mut self, _row: &LogRow) {}
    /// Something worth telling the user.
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// The result of a finished run (`test.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Test loss of the best parameters on the fixed test set.
    pub test_loss: f64,
    /// Number of test batches.
    pub test_batches: usize,
    /// Step of the best validation loss.
    pub best_step: usize,
    /// The best validation loss.
    pub best_val_loss: f64,
    /// Training steps.
    pub steps: usize,
    /// Wall-clock seconds of training.
    pub elapsed_s: f64,
}

/// How to start a run.
#[derive(Debug, Clone)]
pub enum Start {
    /// A new run with this configuration; an existing non-empty folder is refused unless
    /// `overwrite`.
    New {
        /// The configuration.
        config: Box<RunConfig>,
        /// Replace an existing run folder.
        overwrite: bool,
    },
    /// Continue the run in the folder from its checkpoint.
    Resume,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    format: String,
    dtype: String,
    step: usize,
    log_index: usize,
    best_step: usize,
    best_val: f64,
    train_loss_acc: f64,
    sched_epoch: usize,
    lr: f64,
    adam_step: u64,
    elapsed_s: f64,
    /// The generator of the next step's data (informational: it is a function of seed and step).
    next_data_rng: crate::rng::RngState,
    /// Checksum of `progress.tsv` as it was when this checkpoint was written (absent in
    /// checkpoints of older versions).
    #[serde(default)]
    progress_crc: Option<String>,
}

/// Reads a run's configuration.
pub fn read_config(dir: &Path) -> Result<RunConfig> {
    let path = dir.join(files::CONFIG);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    RunConfig::from_toml(&text).map_err(|e| Error::format(&path, e.to_string()))
}

/// Writes a run folder's configuration without training it (a sweep prepares its runs this
/// way; `Start::Resume` then starts them). A folder holding a different configuration is
/// refused rather than mixed.
pub fn prepare(dir: &Path, config: &RunConfig) -> Result<()> {
    config.validate()?;
    if dir.join(files::CONFIG).exists() {
        if read_config(dir)? != *config {
            return Err(Error::Config(format!(
                "{} holds a run with a different configuration; refusing to mix results \
                 (remove it or use another output folder)",
                dir.display()
            )));
        }
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join(files::CONFIG), config.to_toml().as_bytes())
}

/// Whether the run in `dir` has finished (has its test result).
pub fn is_finished(dir: &Path) -> bool {
    dir.join(files::TEST).exists()
}

/// `test.json` as written: the summary and a checksum of it.
#[derive(Serialize, Deserialize)]
struct StoredSummary {
    #[serde(flatten)]
    summary: Summary,
    checksum: String,
}

/// The checksum of a summary: of its JSON, which parses back to the same numbers and so to
/// the same JSON (serde_json's `float_roundtrip` reads every `f64` exactly).
fn summary_checksum(summary: &Summary) -> String {
    crc_text(&serde_json::to_string(summary).expect("serialisable"))
}

fn write_summary(path: &Path, summary: &Summary) -> Result<()> {
    let stored = StoredSummary {
        summary: summary.clone(),
        checksum: summary_checksum(summary),
    };
    let json = serde_json::to_string_pretty(&stored).expect("serialisable");
    write_atomic(path, json.as_bytes())
}

/// Reads a finished run's test result, verifying its checksum (files of older versions
/// have none and are read as they are).
pub fn read_summary(dir: &Path) -> Result<Summary> {
    let path = dir.join(files::TEST);
    let text = read_text(&path)?;
    let bad = |e: serde_json::Error| Error::format(&path, format!("corrupt: {e}"));
    let value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    if value.get("checksum").is_none() {
        return serde_json::from_value(value).map_err(bad);
    }
    let stored: StoredSummary = serde_json::from_value(value).map_err(bad)?;
    let found = summary_checksum(&stored.summary);
    if found != stored.checksum {
        return Err(Error::format(
            &path,
            format!(
                "corrupt: its content does not match its checksum (stored {}, computed \
                 {found}); the file was damaged or edited after it was written",
                stored.checksum
            ),
        ));
    }
    Ok(stored.summary)
}

/// A text file, with a clear error for bytes that are not UTF-8.
fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::format(path, "corrupt: not a UTF-8 text file".to_string()))
}

/// CRC-32 of a text, as stored in checkpoints and `test.json`.
fn crc_text(text: &str) -> String {
    format!("crc32:{:08x}", crc32fast::hash(text.as_bytes()))
}

/// `progress.tsv` as it was when the checkpoint at `step` was written: the header and the
/// rows up to `step`.
fn progress_until(text: &str, step: usize) -> String {
    let mut kept = vec![PROGRESS_HEADER];
    for line in text.lines().skip(1) {
        if let Some(s) = line
            .split('\t')
            .next()
            .and_then(|s| s.parse::<usize>().ok())
        {
            if s <= step {
                kept.push(line);
            }
        }
    }
    kept.join("\n") + "\n"
}

/// Checks `kept` (see [`progress_until`]) against the checksum in the checkpoint's state.
fn verify_progress(path: &Path, kept: &str, state: &CheckpointState) -> Result<()> {
    match &state.progress_crc {
        Some(expected) if *expected != crc_text(kept) => Err(Error::format(
            path,
            format!(
                "corrupt: its rows up to step {} do not match the checksum the checkpoint \
                 recorded; the file was damaged or edited after it was written",
                state.step
            ),
        )),
        _ => Ok(()),
    }
}

/// The training state in a run's checkpoint (checksum verified).
fn read_checkpoint_state(path: &Path) -> Result<CheckpointState> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let meta = safetensors_metadata(&bytes, path)?;
    let state = meta
        .get("state")
        .ok_or_else(|| Error::format(path, "corrupt or truncated checkpoint: no state"))?;
    serde_json::from_str(state)
        .map_err(|e| Error::format(path, format!("corrupt or truncated checkpoint: {e}")))
}

/// Trains a run (new or resumed) to the end and evaluates it on the test set.
///
/// Everything that can be checked is checked before the folder is touched: the configuration,
/// the memory the run needs against the memory available ([`memory::check`]), and the
/// network and optimiser are allocated. Only then does a new run with `overwrite` remove the
/// previous run's files. A resumed run needs its checkpoint: a folder with training progress
/// but no `checkpoint.safetensors` is refused rather than retrained from step 0 over it.
pub fn train(dir: &Path, start: Start, observer: &mut dyn Observer) -> Result<Summary> {
    let threads = rayon::current_num_threads();
    let (config, fresh) = match start {
        Start::New { config, overwrite } => {
            let config = *config;
            config.validate()?;
            check_new_dir(dir, overwrite)?;
            (config, Some(overwrite))
        }
        Start::Resume => {
            if !dir.join(files::CONFIG).exists() {
                return Err(Error::Config(format!(
                    "{} is not a run folder (no {}); nothing to resume",
                    dir.display(),
                    files::CONFIG
                )));
            }
            let config = read_config(dir)?;
            if is_finished(dir) {
                observer.note("this run has already finished; its test result is unchanged");
                return read_summary(dir);
            }
            if !dir.join(files::CHECKPOINT).exists() {
                refuse_resume_without_checkpoint(dir)?;
            }
            (config, None)
        }
    };
    memory::check(&config, threads, true)?;
    match config.train.dtype {
        config::Dtype::F64 => start_typed::<f64>(dir, config, fresh, observer),
        config::Dtype::F32 => start_typed::<f32>(dir, config, fresh, observer),
    }
}

/// Builds the trainer in memory, then prepares the folder (a new run: removes the previous
/// run if `fresh == Some(true)`; a resumed run: loads its checkpoint) and trains.
fn start_typed<F: Float>(
    dir: &Path,
    config: RunConfig,
    fresh: Option<bool>,
    observer: &mut dyn Observer,
) -> Result<Summary> {
    let mut trainer = Trainer::<F>::new(dir, config)?;
    match fresh {
        Some(overwrite) => {
            prepare_new(dir, overwrite)?;
            write_atomic(
                &dir.join(files::CONFIG),
                trainer.config.to_toml().as_bytes(),
            )?;
            write_atomic(
                &dir.join(files::PROGRESS),
                format!("{PROGRESS_HEADER}\n").as_bytes(),
            )?;
        }
        None => {
            let progress = dir.join(files::PROGRESS);
            if !progress.exists() {
                // a prepared folder (config only), e.g. by a sweep: start it
                write_atomic(&progress, format!("{PROGRESS_HEADER}\n").as_bytes())?;
            }
            if dir.join(files::CHECKPOINT).exists() {
                trainer.load_checkpoint()?;
            } else {
                // killed before its first checkpoint was complete (only the step-0 row can
                // exist, see refuse_resume_without_checkpoint): start again at step 0, so a
                // row logged before the kill is dropped, not repeated
                write_atomic(&progress, format!("{PROGRESS_HEADER}\n").as_bytes())?;
            }
        }
    }
    trainer.run(observer)
}

/// A run folder without a checkpoint can be started only if it has no training progress:
/// otherwise training from step 0 would append a second series to `progress.tsv` and
/// overwrite `best.safetensors`.
fn refuse_resume_without_checkpoint(dir: &Path) -> Result<()> {
    let progress = dir.join(files::PROGRESS);
    let rows: Vec<String> = match fs::read_to_string(&progress) {
        Ok(text) => text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&progress, e)),
    };
    // The first checkpoint is written right after the log at step 0: a run killed before
    // it was complete has at most that one row (and its best parameters), which a restart
    // from step 0 rewrites identically. Anything further is progress we would destroy.
    let only_step0 = rows.len() == 1 && rows[0].split('\t').next() == Some("0");
    if only_step0 {
        return Ok(());
    }
    let rows = rows.len();
    let best = dir.join(files::BEST).exists();
    if rows > 0 || best {
        let mut found = Vec::new();
        if rows > 0 {
            found.push(format!("{rows} logged rows in {}", files::PROGRESS));
        }
        if best {
            found.push(files::BEST.to_string());
        }
        return Err(Error::Run(format!(
            "cannot resume {}: it has training progress ({}) but no {}, so it cannot continue \
             where it stopped; refusing to retrain it from step 0 over its results. Restore \
             the checkpoint, or start the run again with --overwrite",
            dir.display(),
            found.join(" and "),
            files::CHECKPOINT
        )));
    }
    Ok(())
}

/// Refuses a non-empty folder for a new run unless `overwrite`; touches nothing.
fn check_new_dir(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Config(format!(
            "{} exists and is not a folder",
            dir.display()
        )));
    }
    if dir.exists() && !overwrite {
        let nonempty = fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_some();
        if nonempty {
            return Err(Error::Config(format!(
                "{} already exists; use --resume to continue it or --overwrite to replace it",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Removes the previous run's files (with `overwrite`) and creates the folder.
fn prepare_new(dir: &Path, overwrite: bool) -> Result<()> {
    check_new_dir(dir, overwrite)?;
    if dir.exists() && overwrite {
        for name in [
            files::CONFIG,
            files::PROGRESS,
            files::BEST,
            files::CHECKPOINT,
            files::TEST,
        ] {
            let p = dir.join(name);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

struct Trainer<F: Float> {
    dir: PathBuf,
    config: RunConfig,
    net: Network<F>,
    opt: AdamW<F>,
    mask: Vec<bool>,
    best: Vec<F>,
    state: CheckpointState,
}

impl<F: Float> Trainer<F> {
    fn new(dir: &Path, config: RunConfig) -> Result<Self> {
        let net = Network::<F>::new(config.network_config(), config.seed)?;
        let mask = net.layout().trainable_mask();
        let opt = AdamW::new(
            AdamWConfig {
                lr: config.train.lr,
                weight_decay: config.train.wdecay,
                ..Default::default()
            },
            mask.clone(),
        );
        let best = net.params().to_vec();
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT.into(),
            dtype: F::NAME.into(),
            step: 0,
            log_index: 0,
            best_step: 0,
            best_val: f64::INFINITY,
            train_loss_acc: 0.0,
            sched_epoch: 0,
            lr: config.train.lr,
            adam_step: 0,
            elapsed_s: 0.0,
            next_data_rng: train_rng(config.seed, 0).state(),
            progress_crc: None,
        };
        Ok(Trainer {
            dir: dir.to_path_buf(),
            config,
            net,
            opt,
            mask,
            best,
            state,
        })
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(files::CHECKPOINT)
    }

    fn save_checkpoint(&self) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert(
            "state".into(),
            serde_json::to_string(&self.state).expect("serialisable"),
        );
        meta.insert("config".into(), self.config.to_toml());
        let bytes = safetensors_bytes(
            self.net.layout(),
            &[
                ("param.", self.net.params()),
                ("best.", &self.best),
                ("adam_m.", &self.opt.m),
                ("adam_v.", &self.opt.v),
                ("adam_vmax.", &self.opt.v_max),
            ],
            meta,
        )?;
        write_atomic(&self.checkpoint_path(), &bytes)
    }

    fn load_checkpoint(&mut self) -> Result<()> {
        let path = self.checkpoint_path();
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let corrupt =
            |m: String| Error::format(&path, format!("corrupt or truncated checkpoint: {m}"));
        let meta = safetensors_metadata(&bytes, &path).map_err(|e| corrupt(e.to_string()))?;
        let state: CheckpointState = serde_json::from_str(
            meta.get("state")
                .ok_or_else(|| corrupt("no state".into()))?,
        )
        .map_err(|e| corrupt(e.to_string()))?;
        if state.format != CHECKPOINT_FORMAT {
            return Err(corrupt(format!(
                "format `{}`, expected {CHECKPOINT_FORMAT}",
                state.format
            )));
        }
        if state.dtype != F::NAME {
            return Err(corrupt(format!(
                "written in {}, but the run trains in {}",
                state.dtype,
                F::NAME
            )));
        }
        let saved = meta
            .get("config")
            .ok_or_else(|| corrupt("no config".into()))?;
        if RunConfig::from_toml(saved)? != self.config {
            return Err(Error::Config(format!(
                "{} was written by a different configuration than {}; refusing to mix them",
                path.display(),
                files::CONFIG
            )));
        }
        let layout: &Layout = self.net.layout();
        let read = |prefix: &str| buffer_from_safetensors::<F>(layout, &bytes, prefix, &path);
        let params = read("param.").map_err(|e| corrupt(e.to_string()))?;
        self.best = read("best.").map_err(|e| corrupt(e.to_string()))?;
        let (m, v, vmax) = (read("adam_m.")?, read("adam_v.")?, read("adam_vmax.")?);
        self.net.params_mut().copy_from_slice(&params);
        self.opt =
            AdamW::new(self.opt.config, self.mask.clone()).with_state(state.adam_step, m, v, vmax);
        self.opt.config.lr = state.lr;
        self.state = state;
        // keep progress.tsv consistent with the checkpoint (drop rows logged after it),
        // after checking that the rows it covers are those it was written with
        let progress = self.dir.join(files::PROGRESS);
        let text = read_text(&progress)?;
        let kept = progress_until(&text, self.state.step);
        verify_progress(&progress, &kept, &self.state)?;
        write_atomic(&progress, kept.as_bytes())?;
        self.write_best()?;
        Ok(())
    }

    fn write_best(&self) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("step".into(), self.state.best_step.to_string());
        meta.insert("val_loss".into(), format!("{:e}", self.state.best_val));
        meta.insert("config".into(), self.config.to_toml());
        let bytes = safetensors_bytes(self.net.layout(), &[("", &self.best)], meta)?;
        write_atomic(&self.dir.join(files::BEST), &bytes)
    }

    fn validate(&self, net: &Network<F>, index: usize) -> Result<f64> {
        let mut rng = val_rng(self.config.seed, index);
        let mut sum = 0.0;
        for _ in 0..self.config.train.test_batch {
            let ep = self
                .config
                .task
                .generate::<F>(&mut rng, self.config.train.batch_size);
            sum += net.forward(&ep, self.config.task.loss())?.loss.f64();
        }
        Ok(sum / self.config.train.test_batch as f64)
    }

    fn run(mut self, observer: &mut dyn Observer) -> Result<Summary> {
        let test_path = self.dir.join(files::TEST);
        if test_path.exists() {
            observer.note("this run has already finished; its test result is unchanged");
            return read_summary(&self.dir);
        }
        let tc = self.config.train.clone();
        let started = Instant::now();
        let elapsed0 = self.state.elapsed_s;
        // a checkpoint is written right after the log at its step: resume after that log
        let resumed = self.state.log_index > 0;
        let first = self.state.step;
        observer.start(first, tc.max_batch);
        let t_max = tc.max_batch / tc.log_every + 1;
        let mut step = first;
        loop {
            if step.is_multiple_of(tc.log_every) && !(resumed && step == first) {
                let val = self.validate(&self.net, self.state.log_index)?;
                let row = LogRow {
                    step,
                    train_loss: if step == 0 {
                        0.0
                    } else {
                        self.state.train_loss_acc / tc.log_every as f64
                    },
                    val_loss: val,
                    lr: self.opt.config.lr,
                    elapsed_s: elapsed0 + started.elapsed().as_secs_f64(),
                };
                if val <= self.state.best_val {
                    self.state.best_val = val;
                    self.state.best_step = step;
                    self.best.copy_from_slice(self.net.params());
                    self.write_best()?;
                }
                if step > 0 && tc.use_lr_scheduler {
                    self.state.sched_epoch += 1;
                    self.opt.config.lr =
                        cosine_lr(tc.lr, tc.lr / 10.0, t_max, self.state.sched_epoch);
                }
                self.state.lr = self.opt.config.lr;
                self.state.train_loss_acc = 0.0;
                self.state.log_index += 1;
                self.state.step = step;
                self.state.elapsed_s = row.elapsed_s;
                self.state.adam_step = self.opt.step;
                self.state.next_data_rng = train_rng(self.config.seed, step).state();
                let progress = self.dir.join(files::PROGRESS);
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(&progress)
                    .map_err(|e| Error::io(&progress, e))?;
                writeln!(f, "{}", row.tsv()).map_err(|e| Error::io(&progress, e))?;
                drop(f);
                self.state.progress_crc = Some(crc_text(&read_text(&progress)?));
                self.save_checkpoint()?;
                observer.log(&row);
            }
            if step >= tc.max_batch {
                break;
            }
            let ep = self
                .config
                .task
                .generate::<F>(&mut train_rng(self.config.seed, step), tc.batch_size);
            let mut g = self.net.loss_and_grad(&ep, self.config.task.loss())?;
            let loss = g.loss.f64();
            if !loss.is_finite() || g.grads.iter().any(|v| !v.is_finite()) {
                return Err(Error::Diverged(format!(
                    "non-finite loss or gradient at training step {step}; the last good checkpoint \
                     (step {}) is kept in {}",
                    self.state.step,
                    self.dir.display()
                )));
            }
            clip_grad_norm(&mut g.grads, &self.mask, tc.grad_clip);
            self.opt.update(self.net.params_mut(), &g.grads);
            self.state.train_loss_acc += loss;
            step += 1;
            observer.step(step, loss);
        }
        // reload the best parameters and evaluate them on the fixed test set
        let mut best = self.net.clone();
        best.params_mut().copy_from_slice(&self.best);
        let test_loss = test_loss(&self.config, &best)?;
        let summary = Summary {
            test_loss,
            test_batches: tc.test_batch,
            best_step: self.state.best_step,
            best_val_loss: self.state.best_val,
            steps: tc.max_batch,
            elapsed_s: elapsed0 + started.elapsed().as_secs_f64(),
        };
        write_summary(&test_path, &summary)?;
        Ok(summary)
    }
}

/// The mean loss of `net` over the fixed test set (`test_batch` batches of `batch_size`).
pub fn test_loss<F: Float>(config: &RunConfig, net: &Network<F>) -> Result<f64> {
    let mut rng = test_rng();
    let mut sum = 0.0;
    for _ in 0..config.train.test_batch {
        let ep = config.task.generate::<F>(&mut rng, config.train.batch_size);
        sum += net.forward(&ep, config.task.loss())?.loss.f64();
    }
    Ok(sum / config.train.test_batch as f64)
}

/// Reads `progress.tsv` rows.
///
/// When the run has a checkpoint, the rows it covers are checked against the checksum it
/// recorded: damaged or edited rows are an error, not silently different numbers.
pub fn read_progress(dir: &Path) -> Result<Vec<LogRow>> {
    let path = dir.join(files::PROGRESS);
    let text = read_text(&path)?;
    let checkpoint = dir.join(files::CHECKPOINT);
    if checkpoint.exists() {
        let state = read_checkpoint_state(&checkpoint)?;
        verify_progress(&path, &progress_until(&text, state.step), &state)?;
    }
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || {
            Error::format(
                &path,
                format!("line {}: expected 5 tab-separated numbers", n + 1),
            )
        };
        if f.len() != 5 {
            return Err(bad());
        }
        let num = |k: usize| f[k].parse::<f64>().map_err(|_| bad());
        rows.push(LogRow {
            step: f[0].parse().map_err(|_| bad())?,
            train_loss: num(1)?,
            val_loss: num(2)?,
            lr: num(3)?,
            elapsed_s: num(4)?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_json_round_trips_every_f64_through_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path();
        let mut rng = Rng::new(17);
        for _ in 0..300 {
            let mut x = || f64::from_bits((rng.uniform() * 2f64.powi(62)) as u64) * rng.uniform();
            let s = Summary {
                test_loss: x(),
                test_batches: 7,
                best_step: 3,
                best_val_loss: x(),
                steps: 9,
                elapsed_s: x(),
            };
            write_summary(&tmp.join(files::TEST), &s).unwrap();
            assert_eq!(read_summary(tmp).unwrap(), s);
        }
    }
}
