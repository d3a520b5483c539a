//! CNN pretraining (docs/fsc.md §8): `plastic train --task pretrain-classification` and
//! `--task pretrain-simclr` (and `--resume DIR` of such a run), with a figure of the loss
//! and the held-out accuracy. The training itself is `plastic_vision::pretrain::run`; this
//! is argument handling, progress and the figure.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plastic_vision::pretrain::run::{self as pre_run, files, Start};
use plastic_vision::pretrain::{PretrainConfig, PretrainKind};
use plastic_vision::run::{read_progress, FscLogRow};

use crate::fsc::Progress;
use crate::{plot, progress};

/// The task names on the command line.
pub const TASKS: [&str; 2] = ["pretrain-classification", "pretrain-simclr"];

/// The pretraining kind a configuration file or run folder's `config.toml` names, if any.
pub fn kind_of_config(path: &Path) -> Option<PretrainKind> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("task").and_then(|v| v.as_str()).map(str::to_string))
        .and_then(|t| t.parse().ok())
}

/// Whether a `train` command is for pretraining: `--task pretrain-…`, `--config` of a
/// pretraining configuration, or `--resume DIR` of a pretraining run.
pub fn wants(task: Option<&str>, config: Option<&Path>, resume: Option<&Path>) -> bool {
    task.is_some_and(|t| TASKS.contains(&t))
        || config.is_some_and(|c| kind_of_config(c).is_some())
        || resume.is_some_and(|d| kind_of_config(&d.join(files::CONFIG)).is_some())
}

/// What `plastic train --task pretrain-…` was asked.
pub struct TrainRequest {
    /// `--task`.
    pub task: Option<String>,
    /// A TOML file to start from instead of the defaults.
    pub config: Option<PathBuf>,
    /// `--steps` (`max_batch`).
    pub steps: Option<usize>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--set key=value` overrides.
    pub set: Vec<String>,
    /// The run folder (default `runs/TASK-DATASET-CNN-sSEED`).
    pub out: Option<PathBuf>,
    /// Replace an existing run folder.
    pub overwrite: bool,
    /// Continue this run folder instead.
    pub resume: Option<PathBuf>,
    /// `--rnn` or `--plasticity` was given (meaningless here).
    pub rnn_options: bool,
}

fn resolve(req: &TrainRequest) -> Result<PretrainConfig> {
    let base = match (&req.config, &req.task) {
        (Some(path), task) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let c = PretrainConfig::from_toml(&text)
                .with_context(|| format!("in {}", path.display()))?;
            if let Some(t) = task {
                if t != c.kind().task() {
                    bail!(
                        "--task {t} disagrees with the configuration file's task {}",
                        c.kind()
                    );
                }
            }
            c
        }
        (None, Some(task)) => PretrainConfig::new(task.parse()?),
        (None, None) => bail!("give --task or --config"),
    };
    let mut overrides = Vec::new();
    overrides.extend(req.steps.map(|v| format!("max_batch={v}")));
    overrides.extend(req.seed.map(|v| format!("seed={v}")));
    overrides.extend(req.set.iter().cloned());
    Ok(base.with_overrides(&overrides)?)
}

/// `plastic train --task pretrain-…` and `plastic train --resume DIR` of a pretraining run.
pub fn train(req: TrainRequest) -> Result<()> {
    if req.rnn_options {
        bail!("--rnn and --plasticity do not apply to pretraining (it trains a CNN alone)");
    }
    let (dir, start) = match &req.resume {
        Some(dir) => (dir.clone(), Start::Resume),
        None => {
            let c = resolve(&req)?;
            let dir = req.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!(
                    "{}-{}-{}{}-s{}",
                    c.kind(),
                    c.image_dataset,
                    c.cnn,
                    c.cnn_width,
                    c.seed
                ))
            });
            let start = Start::New {
                config: Box::new(c),
                overwrite: req.overwrite,
            };
            (dir, start)
        }
    };
    let label = dir.display().to_string();
    let mut obs = Progress(progress::Progress::new(&label));
    let summary = pre_run::train_pretrain(&dir, start, &mut obs)?;
    obs.0.finish();
    let rows = read_progress(&dir)?;
    let (png, svg) = (dir.join("pretrain.png"), dir.join("pretrain.svg"));
    figure(&rows, &summary.task, &png, &svg)?;
    println!(
        "{label}: {}, kept step {} (held-out loss {:.4}, accuracy {:.2}%), {} classes, {} \
         training / {} held-out images, {:.0} s; CNN in {} (use it with --set cnn_from={}); \
         figure {}",
        summary.task,
        summary.best_step,
        summary.best_val_loss,
        summary.best_val_acc,
        summary.classes,
        summary.train_images,
        summary.holdout_images,
        summary.elapsed_s,
        dir.join(files::BEST).display(),
        dir.display(),
        png.display()
    );
    Ok(())
}

/// Training and held-out loss against step (`pretrain.png`), and the held-out accuracy in
/// a second figure (`pretrain_accuracy.png`) beside it.
fn figure(rows: &[FscLogRow], task: &str, png: &Path, svg: &Path) -> Result<()> {
    let after_first: Vec<&FscLogRow> = rows.iter().filter(|r| r.step > 0).collect();
    let loss = [
        plot::Series {
            label: "training loss (mean since the previous log)".into(),
            points: after_first
                .iter()
                .map(|r| (r.step as f64, r.train_loss))
                .collect(),
            band: None,
        },
        plot::Series {
            label: "held-out loss".into(),
            points: rows.iter().map(|r| (r.step as f64, r.val_loss)).collect(),
            band: None,
        },
    ];
    let title = format!("CNN pretraining ({task}): loss");
    plot::line_chart(
        &plot::LineChart {
            title: &title,
            x_label: "training step",
            y_label: if task.ends_with("simclr") {
                "NT-Xent loss (τ = 0.07)"
            } else {
                "cross-entropy"
            },
            series: &loss,
            log_x: false,
            log_y: false,
        },
        png,
        svg,
    )?;
    let acc = [plot::Series {
        label: if task.ends_with("simclr") {
            "held-out views whose nearest view is their partner".into()
        } else {
            "held-out images classified right (top-1)".into()
        },
        points: rows.iter().map(|r| (r.step as f64, r.val_acc)).collect(),
        band: None,
    }];
    let title = format!("CNN pretraining ({task}): held-out accuracy");
    plot::line_chart(
        &plot::LineChart {
            title: &title,
            x_label: "training step",
            y_label: "accuracy (%)",
            series: &acc,
            log_x: false,
            log_y: false,
        },
        &png.with_file_name("pretrain_accuracy.png"),
        &svg.with_file_name("pretrain_accuracy.svg"),
    )
}
