//! The reference's image experiments as named sweeps of `fsc` runs (`docs/fsc.md` §6–§7):
//! `fsc` (ProtoNet) and `fsc_resnet` (ResNet-12), each {CIFAR-FS, miniImageNet} ×
//! {gradient, Hebbian, none} × {RNN, LSTM}, 4 seeds, the hidden size matched as the
//! paper's (`FscConfig::hidden`, `docs/fsc.md` §5.2). Each run's folder is prepared with
//! its configuration, so `plastic train --resume DIR` (locally or in a Slurm array) trains
//! it, and a finished run (its `test.json`) is skipped. Also the data check a sweep makes
//! before it starts, and estimates of a run's time ([`estimate_seconds`]; memory:
//! [`crate::memory`]).

use std::collections::BTreeSet;
use std::path::Path;

use plastic::config::Rule;
use plastic::io::write_atomic;
use plastic::run::sweep::{factor_combinations, run_overrides};
use plastic::{Error, Result};

use crate::cnn::BackboneConfig;
use crate::config::{FscConfig, ImageSource};
use crate::memory::{self, FscMemoryEstimate};
use crate::run::{files, read_config};

/// A named sweep of fsc runs.
#[derive(Debug, Clone)]
pub struct FscSweep {
    /// Name (`fsc_resnet`).
    pub name: &'static str,
    /// One line on what it is.
    pub about: &'static str,
    /// Overrides of every run.
    base: &'static [&'static str],
    /// The factors crossed, in the reference's order.
    factors: &'static [(&'static str, &'static [&'static str])],
    /// Seeds per configuration.
    pub seeds: usize,
}

/// One run of an fsc sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct FscSweepRun {
    /// Folder name inside the sweep folder (factor values and seed).
    pub name: String,
    /// The factor values, as `(key, value)` pairs (seed excluded).
    pub factors: Vec<(String, String)>,
    /// The configuration.
    pub config: FscConfig,
}

/// The factors of the paper's image experiments, in the reference's order: its
/// configuration index is (data set · 3 + rule) · 2 + cell.
const FACTORS: &[(&str, &[&str])] = &[
    ("image_dataset", &["cifar_fs", "mini_imagenet"]),
    ("plasticity", &["gradient", "hebbian", "none"]),
    ("rnn", &["rnn", "lstm"]),
];

/// Every named fsc sweep of this crate.
pub const FSC_SWEEPS: &[FscSweep] = &[
    FscSweep {
        name: "fsc",
        about: "one-shot image classification, ProtoNet: data sets × rules × {RNN, LSTM}",
        base: &["cnn=protonet"],
        factors: FACTORS,
        seeds: 4,
    },
    FscSweep {
        name: "fsc_resnet",
        about: "one-shot image classification with ResNet-12: data sets × rules × {RNN, LSTM}",
        base: &["cnn=resnet12"],
        factors: FACTORS,
        seeds: 4,
    },
];

/// The fsc sweep called `name`, if this crate defines it.
pub fn find(name: &str) -> Option<&'static FscSweep> {
    FSC_SWEEPS.iter().find(|s| s.name == name)
}

impl FscSweep {
    /// The factors and their values, in order.
    pub fn factor_values(&self) -> &'static [(&'static str, &'static [&'static str])] {
        self.factors
    }

    /// Every run with `seeds` seeds (default: the sweep's), `steps` training steps (default:
    /// the paper's 40000) and the overrides `set` applied to every run.
    pub fn runs<S: AsRef<str>>(
        &self,
        seeds: Option<usize>,
        steps: Option<usize>,
        set: &[S],
    ) -> Result<Vec<FscSweepRun>> {
        let mut runs = Vec::new();
        for combo in factor_combinations(self.factors) {
            for seed in 0..seeds.unwrap_or(self.seeds) {
                let mut o = run_overrides(self.base, &combo, seed, steps);
                o.extend(set.iter().map(|s| s.as_ref().to_string()));
                let config = FscConfig::default().with_overrides(&o)?;
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

impl FscSweepRun {
    /// The estimated peak memory of training this run with `threads` threads.
    pub fn memory(&self, threads: usize) -> FscMemoryEstimate {
        memory::estimate(&self.config, threads)
    }

    /// Writes the run's configuration into `dir` (created if needed), so that `plastic
    /// train --resume DIR` trains it; a folder that already holds a different
    /// configuration is an error (a sweep folder never mixes settings).
    pub fn prepare(&self, dir: &Path) -> Result<()> {
        let resolved = self.config.resolved();
        if dir.join(files::CONFIG).exists() {
            let existing = read_config(dir)?;
            if existing != resolved {
                return Err(Error::Config(format!(
                    "{} holds a run with a different configuration than this sweep's; refusing to \
                     mix results (move it away or use another --out)",
                    dir.display()
                )));
            }
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(&dir.join(files::CONFIG), resolved.to_toml().as_bytes())
    }

    /// Whether the run in `dir` has finished (its test result is written).
    pub fn is_finished(dir: &Path) -> bool {
        dir.join(files::TEST).exists()
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

/// Seconds per multiply-add of the ProtoNet's convolutions in a training step (forward and
/// both backward products), and per plastic weight, episode and step of the RNN by rule: CPU
/// time of `plastic bench --fsc` and of the core's `plastic bench` divided by the 2 cores
/// (so, for an otherwise idle 2-core machine).
const CNN_S_PER_MAC: f64 = 4.2e-11;
/// Seconds per multiply-add of ResNet-12's 3×3 convolutions in a training step, likewise
/// (forward and both backward products, CPU time over 2 cores), measured on ResNet-12
/// itself rather than extrapolated from the ProtoNet's rate (which overestimated it 2.5×:
/// ResNet-12's wide layers on small maps make larger, faster matrix products). From
/// `plastic --threads 2 bench --fsc --only cifar_fs-resnet12 --steps 1 --fsc-warmup 1`
/// (2026-11-29, the sweep's configuration: batch 64, dropout and DropBlock at 0.1): 40.5 s
/// of CPU time per step, of which the RNN's share by [`RNN_NS_PER_WEIGHT_STEP`] is 0.6 s,
/// over 3 × 513.8 M multiply-adds × 640 images = 4.0e-11 CPU s each, halved for 2 cores.
/// Without dropout the same step took 41.8 s (4.2e-11 CPU s per multiply-add; 3.1–3.3e-11
/// at batches 8 and 16), and at miniImageNet size 3.3–3.6e-11 (batches 8 and 16; batch 64
/// does not fit the machine's memory), so this one rate serves both sizes within about 20%
/// (README, One-shot image classification; all measured under load, CPU times).
const RESNET_S_PER_MAC: f64 = 2.0e-11;
const RNN_NS_PER_WEIGHT_STEP: [(Rule, f64); 3] = [
    (Rule::Gradient, 0.95),
    (Rule::Hebbian, 0.7),
    (Rule::None, 0.25),
];

/// Multiply-adds per image of the CNN's forward pass (its 3×3 convolutions).
fn cnn_macs_per_image(c: &FscConfig) -> f64 {
    c.backbone()
        .convs()
        .iter()
        .map(|&(cin, cout, side)| (9 * cin * cout * side * side) as f64)
        .sum()
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

/// The estimated seconds of one training step (forward, backward, update) of `c`.
pub fn step_seconds(c: &FscConfig) -> f64 {
    let images = (c.batch_size * c.way * (c.shot + c.query)) as f64;
    let s_per_mac = match c.backbone() {
        BackboneConfig::ProtoNet(_) => CNN_S_PER_MAC,
        BackboneConfig::ResNet12(_) => RESNET_S_PER_MAC,
    };
    let cnn = 3.0 * cnn_macs_per_image(c) * images * s_per_mac;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsc_resnet_is_the_references_experiment() {
        let s = find("fsc_resnet").unwrap();
        let runs = s.runs::<&str>(None, None, &[]).unwrap();
        assert_eq!(runs.len(), 2 * 3 * 2 * 4);
        // the reference's order: data set × rule × cell, then seeds
        assert_eq!(runs[0].name, "cifar_fs-gradient-rnn-s0");
        assert_eq!(runs[4].name, "cifar_fs-gradient-lstm-s0");
        assert_eq!(runs[47].name, "mini_imagenet-none-lstm-s3");
        for r in &runs {
            let c = &r.config;
            assert_eq!((c.max_batch, c.batch_size, c.log_every), (40000, 64, 1000));
            let BackboneConfig::ResNet12(cnn) = c.backbone() else {
                panic!("{}: not ResNet-12", r.name)
            };
            assert_eq!(cnn.widths, [64, 160, 320, 640]);
            assert_eq!(cnn.drop_rate, 0.1);
            let size = c.image_dataset.kind().image_size();
            assert_eq!(cnn.dropblock_size, if size == 84 { 5 } else { 2 });
        }
        // the paper's hidden sizes (docs/fsc.md §5.2)
        let h: Vec<usize> = runs[..24]
            .iter()
            .step_by(4)
            .map(|r| r.config.hidden())
            .collect();
        assert_eq!(h, [512, 256, 512, 256, 768, 384]);
        let quick = s.runs(Some(1), Some(10), &["test_batch=2"]).unwrap();
        assert_eq!(quick.len(), 12);
        assert!(quick
            .iter()
            .all(|r| r.config.max_batch == 10 && r.config.test_batch == 2));
        assert!(s.runs(None, None, &["cnn_width=3"]).is_err());
    }

    #[test]
    fn parameter_counts_are_the_references() {
        // docs/fsc.md §5.1–§5.2: the CNN alone, then whole models (CNN, projection, RNN)
        let runs = find("fsc_resnet")
            .unwrap()
            .runs::<&str>(Some(1), None, &[])
            .unwrap();
        assert_eq!(runs[0].config.backbone().param_len(), 12_424_320);
        let total = |k: usize| {
            let c = &runs[k].config;
            let shape = crate::model::FscConfig {
                cnn: c.backbone(),
                network: c.network_config(),
                extra_input_dim: c.way,
            };
            let f = shape.cnn.feature_size();
            let rnn = plastic::Network::<f32>::new(shape.network.clone(), 0)
                .unwrap()
                .params()
                .len();
            shape.cnn.param_len() + (f + 1) * shape.proj_size() + rnn
        };
        // CIFAR-FS RNN/LSTM gradient, miniImageNet RNN/LSTM none
        assert_eq!(total(0), 14_783_641);
        assert_eq!(total(1), 14_124_953);
        assert_eq!(total(10), 25_821_967);
        assert_eq!(total(11), 19_675_279);
    }

    #[test]
    fn memory_grows_with_the_image_size_and_is_dominated_by_activations() {
        let runs = find("fsc_resnet")
            .unwrap()
            .runs::<&str>(Some(1), None, &[])
            .unwrap();
        let cifar = runs[0].memory(2);
        let mini = runs[6].memory(2);
        assert!(mini.total() > 3.0 * cifar.total(), "{cifar} vs {mini}");
        assert!(cifar.cnn_tape > cifar.rnn, "{cifar}");
        // 640 images × 617,984 floats × 4 bytes (docs/fsc.md §5.1 sizes)
        assert!(
            (cifar.cnn_tape - 640.0 * 617_984.0 * 4.0).abs() < 1.0,
            "{cifar}"
        );
    }

    #[test]
    fn prepared_folders_hold_the_configuration_and_refuse_another() {
        let dir = std::env::temp_dir().join(format!("plastic-fsc-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let runs = find("fsc_resnet")
            .unwrap()
            .runs::<&str>(Some(1), Some(3), &[])
            .unwrap();
        runs[0].prepare(&dir).unwrap();
        assert_eq!(read_config(&dir).unwrap(), runs[0].config.resolved());
        runs[0].prepare(&dir).unwrap();
        let e = runs[1].prepare(&dir).unwrap_err().to_string();
        assert!(e.contains("different configuration"), "{e}");
        assert!(!FscSweepRun::is_finished(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }

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
                .hidden()
        };
        // docs/fsc.md §5.2
        assert_eq!(hidden("cifar_fs-gradient-rnn-s0"), 512);
        assert_eq!(hidden("cifar_fs-hebbian-lstm-s3"), 256);
        assert_eq!(hidden("mini_imagenet-none-rnn-s1"), 768);
        assert_eq!(hidden("mini_imagenet-none-lstm-s2"), 384);
        for r in &runs {
            let c = &r.config;
            assert_eq!(
                (c.max_batch, c.log_every, c.test_batch, c.batch_size),
                (40000, 1000, 200, 64)
            );
            assert_eq!((c.lr, c.wdecay, c.grad_clip), (1e-3, 5e-4, 5.0));
            assert!(matches!(c.backbone(), BackboneConfig::ProtoNet(_)));
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
    fn time_estimates_grow_with_image_size_plasticity_and_the_cnn() {
        let fsc = find("fsc")
            .unwrap()
            .runs::<&str>(Some(1), None, &[])
            .unwrap();
        let resnet = find("fsc_resnet")
            .unwrap()
            .runs::<&str>(Some(1), None, &[])
            .unwrap();
        let get = |runs: &[FscSweepRun], name: &str| {
            runs.iter().find(|r| r.name == name).unwrap().config.clone()
        };
        let small = get(&fsc, "cifar_fs-gradient-rnn-s0");
        let large = get(&fsc, "mini_imagenet-gradient-rnn-s0");
        assert!(step_seconds(&large) > 5.0 * step_seconds(&small));
        assert!(
            step_seconds(&get(&fsc, "cifar_fs-none-rnn-s0")) < step_seconds(&small),
            "the plastic RNN costs more than the plain one"
        );
        assert!(
            step_seconds(&get(&resnet, "cifar_fs-gradient-rnn-s0")) > 10.0 * step_seconds(&small)
        );
        assert!(estimate_seconds(&small) > 40001.0 * step_seconds(&small));
    }

    /// The ResNet-12 step's estimate is the measured one it was calibrated from
    /// (`RESNET_S_PER_MAC`: 40.5 s of CPU time per step at CIFAR-FS size on 2 cores), and the
    /// miniImageNet step is its 6.7× (the multiply-adds of 84×84 against 32×32 images).
    #[test]
    fn resnet_step_estimate_is_the_measured_step() {
        let resnet = find("fsc_resnet")
            .unwrap()
            .runs::<&str>(Some(1), None, &[])
            .unwrap();
        let get = |name: &str| &resnet.iter().find(|r| r.name == name).unwrap().config;
        let cifar = step_seconds(get("cifar_fs-gradient-rnn-s0"));
        assert!((cifar - 40.5 / 2.0).abs() < 0.05 * 40.5 / 2.0, "{cifar}");
        let mini = step_seconds(get("mini_imagenet-gradient-rnn-s0"));
        assert!((6.0..7.5).contains(&(mini / cifar)), "{mini} vs {cifar}");
        assert!(
            (cnn_macs_per_image(get("cifar_fs-gradient-rnn-s0")) - 513.8e6).abs() < 0.1e6,
            "the multiply-adds the rate was divided by"
        );
    }
}
