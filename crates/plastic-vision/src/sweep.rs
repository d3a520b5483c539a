//! The paper's image experiments as sweeps (`docs/fsc.md` §6–§7): the factors crossed, the
//! seeds and the settings of the reference's `configs/experiments.py` (`fsc`), each run an
//! [`FscConfig`]; the hidden size per rule and cell follows from [`FscConfig::hidden`]
//! (`docs/fsc.md` §5.2). Also the data check a sweep makes before it starts, and estimates
//! of a run's time and peak memory.
//!
//! A sweep is one entry of [`FSC_SWEEPS`]; another image experiment (e.g. `fsc_resnet`) is
//! another entry beside `fsc`.

use std::collections::BTreeSet;
use std::path::Path;

use plastic::config::Rule;
use plastic::{Error, Result};

use crate::config::{FscConfig, ImageSource};
use crate::run::files;

/// A named image sweep.
#[derive(Debug, Clone)]
pub struct FscSweep {
    /// Name (`fsc`, ...).
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    /// Overrides of [`FscConfig::default`] common to every run.
    pub base: &'static [&'static str],
    /// The factors crossed, in the reference's order, and their values (configuration
    /// keys and values).
    pub factors: &'static [(&'static str, &'static [&'static str])],
    /// Seeds per configuration (0, 1, ...).
    pub seeds: usize,
}

/// The data sets of the paper's image experiments.
const DATASETS: &[&str] = &["cifar_fs", "mini_imagenet"];
const RULES: &[&str] = &["gradient", "hebbian", "none"];
const CELLS: &[&str] = &["rnn", "lstm"];

/// Every named image sweep.
pub const FSC_SWEEPS: &[FscSweep] = &[FscSweep {
    name: "fsc",
    about: "one-shot image classification, ProtoNet: data sets × rules × cells",
    base: &["cnn=protonet"],
    // the reference's order: its configuration index is (data set · 3 + rule) · 2 + cell
    factors: &[
        ("image_dataset", DATASETS),
        ("plasticity", RULES),
        ("rnn", CELLS),
    ],
    seeds: 4,
}];

/// The image sweep called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static FscSweep> {
    FSC_SWEEPS.iter().find(|s| s.name == name)
}

/// One run of an image sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct FscSweepRun {
    /// Folder name inside the sweep folder (factor values and seed).
    pub name: String,
    /// The factor values, as `(key, value)` pairs (seed excluded).
    pub factors: Vec<(String, String)>,
    /// The configuration (hidden size resolved).
    pub config: FscConfig,
}

impl FscSweep {
    /// Every run, with `seeds` seeds (default: the sweep's), `steps` as `max_batch`
    /// (default: the paper's) and `set` applied last to every run.
    pub fn runs<S: AsRef<str>>(
        &self,
        seeds: Option<usize>,
        steps: Option<usize>,
        set: &[S],
    ) -> Result<Vec<FscSweepRun>> {
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (key, values) in self.factors {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((key.to_string(), v.to_string()));
                        c
                    })
                })
                .collect();
        }
        let mut runs = Vec::new();
        for combo in combos {
            for seed in 0..seeds.unwrap_or(self.seeds) {
                let mut o: Vec<String> = self.base.iter().map(|s| s.to_string()).collect();
                o.extend(combo.iter().map(|(k, v)| format!("{k}={v}")));
                o.push(format!("seed={seed}"));
                o.extend(steps.map(|s| format!("max_batch={s}")));
                o.extend(set.iter().map(|s| s.as_ref().to_string()));
                let config = FscConfig::default().with_overrides(&o)?.resolved();
                let name = combo
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join("-");
                runs.push(FscSweepRun {
                    name: format!("{name}-s{seed}"),
                    factors: combo.clone(),
                    config,
                });
            }
        }
        Ok(runs)
    }
}

/// Checks, before anything starts, that the data files of every run's data set exist: one
/// error naming every missing file of every data set involved (the procedural set needs
/// none).
pub fn check_data<'a>(configs: impl IntoIterator<Item = &'a FscConfig>) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut messages = Vec::new();
    for c in configs {
        if c.image_dataset == ImageSource::Procedural {
            continue;
        }
        let kind = c.image_dataset.kind();
        if !seen.insert((kind.key(), c.data_dir.clone())) {
            continue;
        }
        match kind.check_files(&c.data_dir) {
            Ok(()) => {}
            Err(Error::Config(m)) => messages.push(m),
            Err(other) => return Err(other),
        }
    }
    if messages.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(messages.join("\n")))
    }
}

/// Whether the run in `dir` has finished (has its test result).
pub fn is_finished(dir: &Path) -> bool {
    dir.join(files::TEST).exists()
}

/// Makes `dir` a run folder of `config` (its `config.toml`), to be trained by resuming it;
/// a folder that already holds a run must hold the same configuration, so that a sweep
/// folder never mixes settings.
pub fn prepare(dir: &Path, config: &FscConfig) -> Result<()> {
    let config = config.resolved();
    config.validate()?;
    if dir.join(files::CONFIG).exists() {
        if crate::run::read_config(dir)? != config {
            return Err(Error::Config(format!(
                "{} holds a run with a different configuration; refusing to mix results \
                 (remove it or use another output folder)",
                dir.display()
            )));
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    plastic::io::write_atomic(&dir.join(files::CONFIG), config.to_toml().as_bytes())
}

/// Seconds per multiply-add of the CNN's convolutions in a training step (forward and both
/// backward products), and per plastic weight, episode and step of the RNN by rule: CPU
/// time of `plastic bench --fsc` and of the core's `plastic bench` divided by the 2 cores
/// (so, for an otherwise idle 2-core machine).
const CNN_S_PER_MAC: f64 = 4.2e-11;
const RNN_NS_PER_WEIGHT_STEP: [(Rule, f64); 3] = [
    (Rule::Gradient, 0.95),
    (Rule::Hebbian, 0.7),
    (Rule::None, 0.25),
];

/// Convolution multiply-adds per image of the ProtoNet forward pass.
fn cnn_macs_per_image(c: &FscConfig) -> f64 {
    let (mut side, mut cin, w) = (c.image_dataset.kind().image_size(), 3, c.cnn_width);
    let mut macs = 0.0;
    for _ in 0..crate::cnn::BLOCKS {
        macs += (cin * 9 * w * side * side) as f64;
        side /= 2;
        cin = w;
    }
    macs
}

/// The floats of the CNN's tape per image (each block's input and normalised output),
/// kept from the forward pass to the backward pass for every step of the episode.
fn cnn_tape_per_image(c: &FscConfig) -> f64 {
    let (mut side, mut cin, w) = (c.image_dataset.kind().image_size(), 3, c.cnn_width);
    let mut floats = 0.0;
    for _ in 0..crate::cnn::BLOCKS {
        floats += ((cin + w) * side * side) as f64;
        side /= 2;
        cin = w;
    }
    floats
}

/// Weights of the plastic RNN's maps without input layer (`rec.w_h`, `rec.w_i`, `out`).
fn rnn_weights(c: &FscConfig) -> f64 {
    let n = c.network_config();
    let (h, gh, d) = (
        n.hidden_size,
        n.gates() * n.hidden_size,
        n.full_output_size(),
    );
    (2 * h * gh + h * d) as f64
}

/// Images per phase of the data set (`docs/fsc.md` §1: 64/16/20 classes of 600 images;
/// the procedural set as configured).
fn dataset_images(c: &FscConfig) -> f64 {
    let per_class = match c.image_dataset {
        ImageSource::Procedural => c.procedural_images,
        _ => 600,
    };
    (100 * per_class) as f64
}

/// The estimated seconds of one training step (forward, backward, update) of `c`.
pub fn step_seconds(c: &FscConfig) -> f64 {
    let images = (c.batch_size * 2 * c.way) as f64;
    let cnn = 3.0 * cnn_macs_per_image(c) * images * CNN_S_PER_MAC;
    let ns = RNN_NS_PER_WEIGHT_STEP
        .iter()
        .find(|(r, _)| *r == c.plasticity)
        .map_or(1.0, |(_, ns)| *ns);
    let rnn = ns * 1e-9 * rnn_weights(c) * images;
    cnn + rnn
}

/// The estimated wall-clock seconds of a whole run of `c` on an otherwise idle 2-core
/// machine: `max_batch + 1` training steps, a validation of `test_batch` batches at every
/// log and the test (forward passes, about a third of a training step each).
pub fn estimate_seconds(c: &FscConfig) -> f64 {
    let logs = (c.max_batch / c.log_every + 2) as f64;
    step_seconds(c) * ((c.max_batch + 1) as f64 + logs * c.test_batch as f64 / 3.0)
}

/// The estimated peak memory of a run of `c` in bytes: the three phases' images (uint8),
/// the CNN's tape of one training step (all `T` steps' activations), the parameters with
/// gradient, best copy and AdamW moments, and the plastic RNN's per-thread workspaces and
/// records; `threads` worker threads.
pub fn estimate_memory_bytes(c: &FscConfig, threads: usize) -> f64 {
    let float = if c.dtype == "f64" { 8.0 } else { 4.0 };
    let s = c.image_dataset.kind().image_size() as f64;
    let images = (c.batch_size * 2 * c.way) as f64;
    let data = dataset_images(c) * s * s * 3.0;
    // the tape, and the step's images in the sampler's and the model's layout
    let cnn = images * (1.15 * cnn_tape_per_image(c) + 2.0 * 3.0 * s * s);
    let n = c.network_config();
    let (h, gh) = (n.hidden_size as f64, (n.gates() * n.hidden_size) as f64);
    let side = c.image_dataset.kind().image_size() >> crate::cnn::BLOCKS;
    let params = {
        let proj = (c.cnn_width * side * side * (n.hidden_size - c.way)) as f64;
        let cnn_params = 9.0 * (c.cnn_width * (3 + 3 * c.cnn_width)) as f64;
        // the RNN's weights and their α
        2.0 * rnn_weights(c) + proj + cnn_params
    };
    let plastic = if n.is_plastic() { rnn_weights(c) } else { 0.0 };
    let t = (2 * c.way) as f64;
    let rnn = threads.max(1) as f64 * (t + 2.0) * plastic + images * 8.0 * (h + gh);
    // params, gradient, best, AdamW m, v, v_max, the checkpoint's copies
    let base = 64e6;
    base + data + float * (cnn + 10.0 * params + rnn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsc_sweep_is_the_references_experiment() {
        let s = find("fsc").unwrap();
        let runs = s.runs::<&str>(None, None, &[]).unwrap();
        assert_eq!(runs.len(), 2 * 3 * 2 * 4);
        let hidden = |name: &str| {
            runs.iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("{name}"))
                .config
                .hidden_size
        };
        // docs/fsc.md §5.2
        assert_eq!(hidden("cifar_fs-gradient-rnn-s0"), Some(512));
        assert_eq!(hidden("cifar_fs-hebbian-lstm-s3"), Some(256));
        assert_eq!(hidden("mini_imagenet-none-rnn-s1"), Some(768));
        assert_eq!(hidden("mini_imagenet-none-lstm-s2"), Some(384));
        for r in &runs {
            let c = &r.config;
            assert_eq!(
                (c.max_batch, c.log_every, c.test_batch, c.batch_size),
                (40000, 1000, 200, 64)
            );
            assert_eq!((c.lr, c.wdecay, c.grad_clip), (1e-3, 5e-4, 5.0));
            assert_eq!(c.cnn, "protonet");
            assert_eq!(c.cnn_width, 64);
            assert!(r.name.starts_with(c.image_dataset.as_str()), "{}", r.name);
        }
        // the reference's order: (data set · 3 + rule) · 2 + cell, seeds innermost
        let order: Vec<&str> = runs.iter().step_by(4).map(|r| r.name.as_str()).collect();
        assert_eq!(order[0], "cifar_fs-gradient-rnn-s0");
        assert_eq!(order[1], "cifar_fs-gradient-lstm-s0");
        assert_eq!(order[2], "cifar_fs-hebbian-rnn-s0");
        assert_eq!(order[6], "mini_imagenet-gradient-rnn-s0");
        let names: BTreeSet<_> = runs.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names.len(), runs.len());
        // steps and overrides
        let short = s.runs(Some(1), Some(3), &["test_batch=2"]).unwrap();
        assert_eq!(short.len(), 12);
        assert!(short
            .iter()
            .all(|r| r.config.max_batch == 3 && r.config.test_batch == 2));
        assert!(s.runs(None, None, &["nonsense=1"]).is_err());
    }

    #[test]
    fn missing_data_is_one_error_for_all_runs() {
        let runs = find("fsc")
            .unwrap()
            .runs(None, None, &["data_dir=/nonexistent/fsc-data"])
            .unwrap();
        let e = check_data(runs.iter().map(|r| &r.config))
            .unwrap_err()
            .to_string();
        assert_eq!(e.matches("data files not found").count(), 2, "{e}");
        assert!(
            e.contains("CIFAR_FS_train.pickle")
                && e.contains("miniImageNet_category_split_test.pickle"),
            "{e}"
        );
        let procedural = FscConfig::default()
            .with_overrides(&["image_dataset=procedural", "data_dir=/nonexistent"])
            .unwrap();
        assert!(check_data([&procedural]).is_ok());
    }

    #[test]
    fn estimates_grow_with_image_size_and_plasticity() {
        let runs = find("fsc")
            .unwrap()
            .runs::<&str>(Some(1), None, &[])
            .unwrap();
        let get = |name: &str| &runs.iter().find(|r| r.name == name).unwrap().config;
        let (small, large) = (
            get("cifar_fs-gradient-rnn-s0"),
            get("mini_imagenet-gradient-rnn-s0"),
        );
        assert!(step_seconds(large) > 5.0 * step_seconds(small));
        assert!(estimate_memory_bytes(large, 2) > 3.0 * estimate_memory_bytes(small, 2));
        assert!(
            step_seconds(get("cifar_fs-none-rnn-s0")) < step_seconds(small),
            "the plastic RNN costs more than the plain one"
        );
        assert!(estimate_seconds(small) > 40001.0 * step_seconds(small));
    }
}
