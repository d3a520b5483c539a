//! The paper's named experiments (ALGORITHM.md §6) as sweeps: the factors crossed, the
//! seeds, the model-size matching and the step counts of the reference's
//! `configs/experiments.py`.

use super::RunConfig;
use crate::config::{CellKind, InnerLrMode, Rule};
use crate::error::{Error, Result};

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRun {
    /// Folder name inside the sweep folder (factor values and seed).
    pub name: String,
    /// The factor values, as `(key, value)` pairs (seed excluded).
    pub factors: Vec<(String, String)>,
    /// The configuration.
    pub config: RunConfig,
}

/// A named sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Name (`cuereward_demo`, ...).
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    task: &'static str,
    base: &'static [&'static str],
    factors: &'static [(&'static str, &'static [&'static str])],
    /// Seeds per configuration.
    pub seeds: usize,
    /// 1.5× hidden for non-plastic networks and `inner_lr_mode = none`.
    scale_nonplastic: bool,
    /// 2× hidden for RNNs (against LSTMs).
    scale_rnn: bool,
    /// `p_wd` follows `p_lr`.
    equal_lr_wd: bool,
}

const RNNS: &[&str] = &["rnn", "lstm"];
const RULES: &[&str] = &["gradient", "hebbian", "none"];
const PLASTIC: &[&str] = &["gradient", "hebbian"];
const ONOFF: &[&str] = &["true", "false"];

/// Every named sweep.
pub const SWEEPS: &[Sweep] = &[
    Sweep {
        name: "cuereward_demo",
        about: "the reference's demo: RNN × rules, 5000 steps",
        task: "cue-reward",
        base: &["max_batch=5000"],
        factors: &[("rnn", &["rnn"]), ("plasticity", RULES)],
        seeds: 1,
        scale_nonplastic: true,
        scale_rnn: false,
        equal_lr_wd: false,
    },
    Sweep {
        name: "cuereward_large",
        about: "cue-reward, {RNN, LSTM} × rules",
        task: "cue-reward",
        base: &[],
        factors: &[("rnn", RNNS), ("plasticity", RULES)],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "cuereward_lr",
        about: "outer learning rate {0.01, 0.0003} × cells × rules",
        task: "cue-reward",
        base: &[],
        factors: &[
            ("lr", &["0.01", "0.0003"]),
            ("rnn", RNNS),
            ("plasticity", RULES),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "cuereward_plr",
        about: "plasticity rate p_lr = p_wd",
        task: "cue-reward",
        base: &[],
        factors: &[
            ("plasticity", PLASTIC),
            ("rnn", RNNS),
            ("p_lr", &["0", "0.025", "0.05", "0.1", "0.2"]),
        ],
        seeds: 4,
        scale_nonplastic: false,
        scale_rnn: true,
        equal_lr_wd: true,
    },
    Sweep {
        name: "cuereward_extradim",
        about: "extra outputs E",
        task: "cue-reward",
        base: &[],
        factors: &[
            ("plasticity", PLASTIC),
            ("rnn", RNNS),
            ("extra_dim", &["0", "4", "8", "16"]),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "cuereward_modulation",
        about: "neuromodulation on/off",
        task: "cue-reward",
        base: &[],
        factors: &[
            ("rnn", RNNS),
            ("plasticity", PLASTIC),
            ("modulation", ONOFF),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "cuereward_inner_lr_mode",
        about: "initialisation of α (inner_lr_mode)",
        task: "cue-reward",
        base: &[],
        factors: &[
            ("plasticity", PLASTIC),
            ("rnn", RNNS),
            (
                "inner_lr_mode",
                &["none", "uniform", "neg_uniform", "random"],
            ),
        ],
        seeds: 4,
        scale_nonplastic: false,
        scale_rnn: false,
        equal_lr_wd: false,
    },
    Sweep {
        name: "seqreproduction_long_compare_delay",
        about: "sequence reproduction, L 20, delay {0, 20, 40}",
        task: "seq-reproduction",
        base: &[],
        factors: &[
            ("delay", &["0", "20", "40"]),
            ("rnn", RNNS),
            ("plasticity", RULES),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "seqreproduction_delay",
        about: "L 5, delay {0, 10, 20, 40, 60}",
        task: "seq-reproduction",
        base: &["seq_length=5"],
        factors: &[
            ("delay", &["0", "10", "20", "40", "60"]),
            ("rnn", RNNS),
            ("plasticity", RULES),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "seqreproduction_seqlength",
        about: "delay 0, L {5, 10, 20, 30, 40}",
        task: "seq-reproduction",
        base: &["delay=0"],
        factors: &[
            ("seq_length", &["5", "10", "20", "30", "40"]),
            ("rnn", RNNS),
            ("plasticity", RULES),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "seqreproduction_modulation",
        about: "delay 40, modulation on/off",
        task: "seq-reproduction",
        base: &["delay=40"],
        factors: &[
            ("rnn", RNNS),
            ("plasticity", PLASTIC),
            ("modulation", ONOFF),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "seqreproduction_norm",
        about: "L 5, delay 40, inner_grad_clip {1, 100}",
        task: "seq-reproduction",
        base: &["delay=40", "seq_length=5"],
        factors: &[
            ("rnn", &["rnn"]),
            ("plasticity", PLASTIC),
            ("inner_grad_clip", &["1", "100"]),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "regression",
        about: "few-shot linear regression, n 12, train length {10, 20}",
        task: "regression",
        base: &["task_mode=linear", "n_var=12"],
        factors: &[
            ("train_length", &["10", "20"]),
            ("rnn", RNNS),
            ("plasticity", RULES),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "regression_mlp",
        about: "few-shot MLP regression, n 6, train length {10, 20}",
        task: "regression",
        base: &["task_mode=mlp", "n_var=6"],
        factors: &[
            ("train_length", &["10", "20"]),
            ("rnn", RNNS),
            ("plasticity", RULES),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "regression_mlp_modulation",
        about: "MLP regression, modulation on/off",
        task: "regression",
        base: &["task_mode=mlp", "n_var=6", "train_length=20"],
        factors: &[
            ("rnn", RNNS),
            ("plasticity", PLASTIC),
            ("modulation", ONOFF),
        ],
        seeds: 4,
        scale_nonplastic: true,
        scale_rnn: true,
        equal_lr_wd: false,
    },
    Sweep {
        name: "slurm_smoke",
        about: "a tiny sweep to check a local or cluster set-up (not in the paper)",
        task: "cue-reward",
        base: &[
            "hidden_size=8",
            "batch_size=4",
            "max_batch=20",
            "log_every=10",
            "test_batch=2",
        ],
        factors: &[("rnn", &["rnn"]), ("plasticity", PLASTIC)],
        seeds: 1,
        scale_nonplastic: false,
        scale_rnn: false,
        equal_lr_wd: false,
    },
];

/// The sweep called `name`, or an error listing the valid names.
pub fn find(name: &str) -> Result<&'static Sweep> {
    SWEEPS.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = SWEEPS.iter().map(|s| s.name).collect();
        Error::Config(format!(
            "unknown sweep `{name}`; valid: {}",
            names.join(", ")
        ))
    })
}

impl Sweep {
    /// The task of every run.
    pub fn task(&self) -> &'static str {
        self.task
    }

    /// The factor names, in order.
    pub fn factor_names(&self) -> Vec<&'static str> {
        self.factors.iter().map(|f| f.0).collect()
    }

    /// Every run, with `seeds` seeds (default: the sweep's) and `steps` training steps
    /// (default: the sweep's or the task's).
    pub fn runs(&self, seeds: Option<usize>, steps: Option<usize>) -> Result<Vec<SweepRun>> {
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
                if let Some(s) = steps {
                    o.push(format!("max_batch={s}"));
                }
                let mut cfg = RunConfig::defaults(self.task)?.with_overrides(&o)?;
                // size matching (the reference's scale_modelsize, then scale_rnn_modelsize)
                let n = &mut cfg.network;
                if self.scale_nonplastic
                    && (n.plasticity == Rule::None || n.inner_lr_mode == InnerLrMode::None)
                {
                    n.hidden_size = n.hidden_size * 3 / 2;
                }
                if self.scale_rnn && n.rnn == CellKind::Rnn {
                    n.hidden_size *= 2;
                }
                if self.equal_lr_wd {
                    n.p_wd = n.p_lr;
                }
                let name = combo
                    .iter()
                    .map(|(k, v)| format!("{}{v}", short(k)))
                    .collect::<Vec<_>>()
                    .join("-");
                runs.push(SweepRun {
                    name: format!("{name}-s{seed}"),
                    factors: combo.clone(),
                    config: cfg,
                });
            }
        }
        Ok(runs)
    }
}

/// Short prefix of a factor in folder names (`rnn` and `plasticity` values speak for themselves).
fn short(key: &str) -> &str {
    match key {
        "rnn" | "plasticity" => "",
        "seq_length" => "L",
        "train_length" => "train",
        "inner_grad_clip" => "clip",
        "inner_lr_mode" => "alpha_",
        "extra_dim" => "E",
        "modulation" => "mod_",
        "p_lr" => "plr",
        other => other,
    }
}

/// A rough estimate of a run's wall-clock seconds on a 2-core machine, from the measured
/// cost per plastic weight and step (`plastic bench`).
pub fn estimate_seconds(cfg: &RunConfig) -> f64 {
    let c = cfg.network_config();
    let (i, h, d) = (c.input_size, c.hidden_size, c.full_output_size());
    let gh = c.gates() * h;
    let weights = (i * h + 2 * h * gh + h * d) as f64;
    let ns = match c.plasticity {
        Rule::Gradient => 0.95,
        Rule::Hebbian => 0.7,
        Rule::None => 0.25,
    };
    let step = ns * 1e-9 * weights * (cfg.train.batch_size * cfg.task.steps()) as f64;
    let logs = (cfg.train.max_batch / cfg.train.log_every + 2) as f64;
    // validation and test: forward passes, about a third of a training step each
    step * (cfg.train.max_batch as f64 + logs * cfg.train.test_batch as f64 / 3.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_expand_with_size_matching() {
        let s = find("cuereward_large").unwrap();
        let runs = s.runs(None, None).unwrap();
        assert_eq!(runs.len(), 2 * 3 * 4);
        let hidden = |rnn: &str, rule: &str| {
            runs.iter()
                .find(|r| r.name == format!("{rnn}-{rule}-s0"))
                .map(|r| r.config.network.hidden_size)
                .unwrap()
        };
        assert_eq!(hidden("lstm", "gradient"), 128);
        assert_eq!(hidden("lstm", "none"), 192);
        assert_eq!(hidden("rnn", "gradient"), 256);
        assert_eq!(hidden("rnn", "none"), 384);
        let d = find("cuereward_demo").unwrap().runs(Some(4), None).unwrap();
        assert_eq!(d.len(), 12);
        assert_eq!(d[0].config.train.max_batch, 5000);
        let plr = find("cuereward_plr").unwrap().runs(None, Some(10)).unwrap();
        assert!(plr
            .iter()
            .all(|r| r.config.network.p_wd == r.config.network.p_lr
                && r.config.train.max_batch == 10));
        let names: std::collections::BTreeSet<_> = plr.iter().map(|r| r.name.clone()).collect();
        assert_eq!(names.len(), plr.len(), "run names are unique");
        assert!(find("nope")
            .unwrap_err()
            .to_string()
            .contains("cuereward_demo"));
        for s in SWEEPS {
            assert!(!s.runs(Some(1), Some(1)).unwrap().is_empty(), "{}", s.name);
        }
    }
}
