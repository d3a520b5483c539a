//! The paper's named experiments (docs/algorithm.md §6) as sweeps: the factors crossed, the
//! seeds, the model-size matching and the step counts of the reference's
//! `configs/experiments.py`; its evaluation experiments (`*_test`) as [`EvalSweep`]s over
//! a finished training sweep; and [`Only`], the selection of a subset of a sweep's runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::eval::{evaluate, EvalReport};
use super::RunConfig;
use crate::config::{CellKind, InnerLrMode, Rule};
use crate::error::{Error, Result};
use crate::io::write_atomic;

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
        Error::Config(format!(
            "unknown sweep `{name}`; valid: {}",
            all_names().join(", ")
        ))
    })
}

impl Sweep {
    /// The task of every run.
    pub fn task(&self) -> &'static str {
        self.task
    }

    /// The factors and their values, in order.
    pub fn factor_values(&self) -> &'static [(&'static str, &'static [&'static str])] {
        self.factors
    }

    /// The factor names, in order.
    pub fn factor_names(&self) -> Vec<&'static str> {
        self.factors.iter().map(|f| f.0).collect()
    }

    /// Every run, with `seeds` seeds (default: the sweep's) and `steps` training steps
    /// (default: the sweep's or the task's).
    pub fn runs(&self, seeds: Option<usize>, steps: Option<usize>) -> Result<Vec<SweepRun>> {
        let mut runs = Vec::new();
        for combo in factor_combinations(self.factors) {
            for seed in 0..seeds.unwrap_or(self.seeds) {
                let o = run_overrides(self.base, &combo, seed, steps);
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

/// A selection of a sweep's runs by factor values (`--only rnn=lstm --only
/// plasticity=gradient,hebbian`): a run is selected when, for every factor named, its value
/// is one of those listed. No factor named selects every run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Only {
    chosen: Vec<(String, Vec<String>)>,
}

impl Only {
    /// Parses `factor=v1,v2` items against the sweep's `factors` (name and values); an
    /// unknown factor or value is an error that lists the valid ones. The same factor named
    /// twice selects the union of its values.
    pub fn parse<S: AsRef<str>>(items: &[S], factors: &[(&str, &[&str])]) -> Result<Only> {
        let mut only = Only::default();
        let names = || factors.iter().map(|f| f.0).collect::<Vec<_>>().join(", ");
        for item in items {
            let item = item.as_ref();
            let (key, values) = item.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "--only `{item}` is not of the form factor=value[,value...]; factors: {}",
                    names()
                ))
            })?;
            let key = key.trim();
            let (_, valid) = factors.iter().find(|f| f.0 == key).ok_or_else(|| {
                Error::Config(format!(
                    "--only: this sweep has no factor `{key}`; its factors: {}",
                    names()
                ))
            })?;
            let slot = match only.chosen.iter().position(|c| c.0 == key) {
                Some(k) => k,
                None => {
                    only.chosen.push((key.to_string(), Vec::new()));
                    only.chosen.len() - 1
                }
            };
            for v in values.split(',').map(str::trim) {
                if !valid.contains(&v) {
                    return Err(Error::Config(format!(
                        "--only: `{v}` is not a value of factor `{key}` in this sweep; valid: {}",
                        valid.join(", ")
                    )));
                }
                if !only.chosen[slot].1.iter().any(|x| x == v) {
                    only.chosen[slot].1.push(v.to_string());
                }
            }
        }
        Ok(only)
    }

    /// Whether a run with these factor values is selected.
    pub fn selects(&self, factors: &[(String, String)]) -> bool {
        self.chosen.iter().all(|(key, values)| {
            factors
                .iter()
                .any(|(k, v)| k == key && values.iter().any(|x| x == v))
        })
    }

    /// Whether nothing is selected away.
    pub fn is_everything(&self) -> bool {
        self.chosen.is_empty()
    }
}

/// A named evaluation experiment, after the reference's `*_test` experiments: it reloads the
/// best parameters of some of a finished training sweep's runs, evaluates them on the fixed
/// test set (the task possibly changed, e.g. a longer delay) and keeps, at every step of the
/// episode, the mean and standard deviation over the test episodes of the plasticity rate
/// η(t) before norm clipping (docs/algorithm.md §2), for the paper's figures of η(t).
#[derive(Debug, Clone)]
pub struct EvalSweep {
    /// Name (`cuereward_large_test`, ...).
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    /// The training sweep whose runs it evaluates.
    pub trained: &'static str,
    /// Which of the training sweep's runs: the values kept of some of its factors.
    keep: &'static [(&'static str, &'static [&'static str])],
    /// A task key changed at evaluation: (factor name, task key, values).
    vary: Option<(&'static str, &'static str, &'static [&'static str])>,
}

/// Every named evaluation sweep.
pub const EVAL_SWEEPS: &[EvalSweep] = &[
    EvalSweep {
        name: "cuereward_large_test",
        about: "η(t) of cuereward_large's plastic runs on the test set",
        trained: "cuereward_large",
        keep: &[("plasticity", PLASTIC)],
        vary: None,
    },
    EvalSweep {
        name: "seqreproduction_long_compare_delay_test",
        about: "η(t) and test loss of the delay-40 plastic LSTMs at delays 0–80",
        trained: "seqreproduction_long_compare_delay",
        keep: &[
            ("delay", &["40"]),
            ("rnn", &["lstm"]),
            ("plasticity", PLASTIC),
        ],
        // The reference loops over `[40]`, the trained delay, so its version never tests
        // another delay; this does what the loop was for.
        vary: Some(("eval_delay", "delay", &["0", "20", "40", "60", "80"])),
    },
    EvalSweep {
        name: "regression_mlp_test",
        about: "η(t) of regression_mlp's plastic runs (train length 20) on the test set",
        trained: "regression_mlp",
        keep: &[("train_length", &["20"]), ("plasticity", PLASTIC)],
        vary: None,
    },
];

/// One evaluation of an [`EvalSweep`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRun {
    /// Folder name inside the evaluation sweep's folder.
    pub name: String,
    /// Folder name of the evaluated run inside the training sweep's folder.
    pub trained_run: String,
    /// The training run's factor values, then the evaluation's own (e.g. `eval_delay`).
    pub factors: Vec<(String, String)>,
    /// The overrides of the task applied at evaluation (as for `plastic eval --set`).
    pub overrides: Vec<String>,
    /// The configuration evaluated (the training run's, with the overrides).
    pub config: RunConfig,
}

/// What an evaluation sweep keeps of one evaluation (`eval.json` in its folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// The evaluated run's folder.
    pub trained_run: PathBuf,
    /// The factor values (training run's, then the evaluation's).
    pub factors: Vec<(String, String)>,
    /// The evaluation: test loss and, at every step, η(t) before clipping
    /// (`plasticity_rate`: mean and standard deviation over the test episodes) and more.
    pub report: EvalReport,
}

/// The file of an evaluation's result inside its folder.
pub const EVAL_RESULT: &str = "eval.json";

/// The evaluation sweep called `name`, if there is one.
pub fn find_eval(name: &str) -> Option<&'static EvalSweep> {
    EVAL_SWEEPS.iter().find(|s| s.name == name)
}

/// Every sweep name, training and evaluation (for error messages).
pub fn all_names() -> Vec<&'static str> {
    SWEEPS
        .iter()
        .map(|s| s.name)
        .chain(EVAL_SWEEPS.iter().map(|s| s.name))
        .collect()
}

impl EvalSweep {
    /// The training sweep it evaluates.
    pub fn trained_sweep(&self) -> &'static Sweep {
        find(self.trained).expect("every evaluation sweep names a training sweep")
    }

    /// Its factors and their values: the training sweep's (restricted to the kept values),
    /// then the evaluation's own.
    pub fn factor_values(&self) -> Vec<(&'static str, &'static [&'static str])> {
        let mut f: Vec<(&'static str, &'static [&'static str])> = self
            .trained_sweep()
            .factors
            .iter()
            .map(|&(k, values)| {
                let kept = self.keep.iter().find(|(key, _)| *key == k);
                (k, kept.map_or(values, |(_, v)| *v))
            })
            .collect();
        if let Some((name, _, values)) = self.vary {
            f.push((name, values));
        }
        f
    }

    /// Every evaluation, for the training sweep's runs with `seeds` seeds (default: the
    /// sweep's); `set` are further overrides of every evaluation (e.g. `test_batch=10`).
    pub fn runs(&self, seeds: Option<usize>, set: &[String]) -> Result<Vec<EvalRun>> {
        let trained = self.trained_sweep().runs(seeds, None)?;
        let mut runs = Vec::new();
        for t in trained {
            let kept = self.keep.iter().all(|(k, values)| {
                t.factors
                    .iter()
                    .any(|(key, v)| key == k && values.contains(&v.as_str()))
            });
            if !kept {
                continue;
            }
            let variants: Vec<Option<(&str, &str, &str)>> = match self.vary {
                None => vec![None],
                Some((name, key, values)) => values.iter().map(|v| Some((name, key, *v))).collect(),
            };
            for variant in variants {
                let mut factors = t.factors.clone();
                let mut overrides = Vec::new();
                let mut name = t.name.clone();
                if let Some((factor, key, v)) = variant {
                    factors.push((factor.to_string(), v.to_string()));
                    overrides.push(format!("{key}={v}"));
                    name = format!("{name}-{factor}{v}");
                }
                overrides.extend(set.iter().cloned());
                let config = t.config.with_overrides(&overrides)?;
                runs.push(EvalRun {
                    name,
                    trained_run: t.name.clone(),
                    factors,
                    overrides,
                    config,
                });
            }
        }
        Ok(runs)
    }
}

impl EvalRun {
    /// Whether this evaluation's result is in `dir` (with the same overrides).
    pub fn is_finished(&self, dir: &Path) -> bool {
        read_eval_result(dir).is_ok_and(|r| r.report.overrides == self.overrides)
    }

    /// Evaluates the best parameters of the training run in `trained_dir` and writes the
    /// result to `dir`/[`EVAL_RESULT`].
    pub fn evaluate(&self, trained_dir: &Path, dir: &Path) -> Result<EvalResult> {
        let report = evaluate(trained_dir, &self.overrides)?;
        let result = EvalResult {
            trained_run: trained_dir.to_path_buf(),
            factors: self.factors.clone(),
            report,
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(&result).expect("an evaluation serialises");
        write_atomic(&dir.join(EVAL_RESULT), json.as_bytes())?;
        Ok(result)
    }
}

/// Reads the result of an evaluation sweep's run.
pub fn read_eval_result(dir: &Path) -> Result<EvalResult> {
    let path = dir.join(EVAL_RESULT);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))
}

/// Every combination of the `factors`' values (the first factor varies slowest), as
/// `(key, value)` pairs in the factors' order.
pub fn factor_combinations(factors: &[(&str, &[&str])]) -> Vec<Vec<(String, String)>> {
    let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (key, values) in factors {
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
    combos
}

/// The `key=value` overrides of one run of a sweep: the sweep's `base`, the run's factor
/// values, its seed and, if given, its number of training steps (`max_batch`).
pub fn run_overrides(
    base: &[&str],
    combo: &[(String, String)],
    seed: usize,
    steps: Option<usize>,
) -> Vec<String> {
    let mut o: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    o.extend(combo.iter().map(|(k, v)| format!("{k}={v}")));
    o.push(format!("seed={seed}"));
    if let Some(s) = steps {
        o.push(format!("max_batch={s}"));
    }
    o
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

    #[test]
    fn only_selects_exactly_the_matching_runs() {
        let s = find("seqreproduction_delay").unwrap();
        let all = s.runs(None, None).unwrap();
        let only = Only::parse(
            &["rnn=lstm", "plasticity=gradient,hebbian", "delay=40"],
            s.factor_values(),
        )
        .unwrap();
        let picked: Vec<&SweepRun> = all.iter().filter(|r| only.selects(&r.factors)).collect();
        assert_eq!(picked.len(), 2 * 4);
        for r in &all {
            let f = |k: &str| {
                r.factors
                    .iter()
                    .find(|(key, _)| key == k)
                    .unwrap()
                    .1
                    .clone()
            };
            let expected = f("rnn") == "lstm" && f("plasticity") != "none" && f("delay") == "40";
            assert_eq!(only.selects(&r.factors), expected, "{}", r.name);
        }
        // the same factor twice: the union
        let twice = Only::parse(&["delay=0", "delay=10,0"], s.factor_values()).unwrap();
        assert_eq!(
            all.iter().filter(|r| twice.selects(&r.factors)).count(),
            2 * 6 * 4
        );
        assert!(Only::parse::<&str>(&[], s.factor_values())
            .unwrap()
            .is_everything());
        let e = Only::parse(&["cell=lstm"], s.factor_values())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`cell`") && e.contains("delay, rnn, plasticity"),
            "{e}"
        );
        let e = Only::parse(&["delay=30"], s.factor_values())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`30`") && e.contains("0, 10, 20, 40, 60"), "{e}");
        let e = Only::parse(&["delay"], s.factor_values())
            .unwrap_err()
            .to_string();
        assert!(e.contains("factor=value"), "{e}");
    }

    #[test]
    fn evaluation_sweeps_pick_the_references_runs() {
        let cue = find_eval("cuereward_large_test")
            .unwrap()
            .runs(None, &[])
            .unwrap();
        // {RNN, LSTM} x {gradient, hebbian} x 4 seeds, the trained task unchanged
        assert_eq!(cue.len(), 16);
        assert!(cue
            .iter()
            .all(|r| r.overrides.is_empty() && r.name == r.trained_run));
        let reg = find_eval("regression_mlp_test")
            .unwrap()
            .runs(None, &[])
            .unwrap();
        assert_eq!(reg.len(), 16);
        assert!(reg.iter().all(|r| r.trained_run.starts_with("train20-")));
        let seq = find_eval("seqreproduction_long_compare_delay_test").unwrap();
        let runs = seq.runs(Some(1), &["test_batch=3".to_string()]).unwrap();
        assert_eq!(runs.len(), 2 * 5);
        for r in &runs {
            assert!(
                r.trained_run.starts_with("delay40-lstm-"),
                "{}",
                r.trained_run
            );
            let d = r.factors.last().unwrap();
            assert_eq!(d.0, "eval_delay");
            assert_eq!(r.name, format!("{}-eval_delay{}", r.trained_run, d.1));
            match &r.config.task {
                crate::tasks::Task::SeqReproduction(t) => {
                    assert_eq!(t.delay.to_string(), d.1)
                }
                _ => unreachable!(),
            }
            assert_eq!(r.config.train.test_batch, 3);
        }
        let names: Vec<&str> = seq.factor_values().iter().map(|f| f.0).collect();
        assert_eq!(names, ["delay", "rnn", "plasticity", "eval_delay"]);
        assert_eq!(seq.factor_values()[1].1, &["lstm"]);
        for e in EVAL_SWEEPS {
            assert!(find(e.trained).is_ok() && find_eval(e.name).is_some());
        }
    }
}
