//! A run's configuration: every knob of ALGORITHM.md under the reference's names, with the
//! paper's defaults per task, read from and written to TOML, overridable by `key=value`.

use serde::{Deserialize, Serialize};

use crate::config::{CellKind, InnerLrMode, NetworkConfig, Rule};
use crate::error::{Error, Result};
use crate::tasks::{CueReward, Regression, RegressionMode, SeqReproduction, Task};

/// The task names accepted on the command line.
pub const TASK_NAMES: [&str; 3] = ["cue-reward", "seq-reproduction", "regression"];

/// The network's knobs (the input and output sizes come from the task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkKnobs {
    /// `rnn` or `lstm`.
    pub rnn: CellKind,
    /// `gradient`, `hebbian` or `none`.
    pub plasticity: Rule,
    /// Hidden size.
    pub hidden_size: usize,
    /// Extra outputs E.
    pub extra_dim: usize,
    /// Neuromodulation of the plasticity and decay rates.
    pub modulation: bool,
    /// Plasticity rate.
    pub p_lr: f64,
    /// Plastic weight decay.
    pub p_wd: f64,
    /// Norm clip of the raw update.
    pub inner_grad_clip: f64,
    /// Clamp of the plastic weights (absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_clip: Option<f64>,
    /// LayerNorm on the hidden state.
    pub layernorm: bool,
    /// Initialisation of α.
    pub inner_lr_mode: InnerLrMode,
    /// Train only α, `out_weight` (and LayerNorm), keeping the random fixed weights.
    pub random_network: bool,
}

impl From<&NetworkConfig> for NetworkKnobs {
    fn from(c: &NetworkConfig) -> Self {
        NetworkKnobs {
            rnn: c.rnn,
            plasticity: c.plasticity,
            hidden_size: c.hidden_size,
            extra_dim: c.extra_dim,
            modulation: c.modulation,
            p_lr: c.p_lr,
            p_wd: c.p_wd,
            inner_grad_clip: c.inner_grad_clip,
            weight_clip: c.weight_clip,
            layernorm: c.layernorm,
            inner_lr_mode: c.inner_lr_mode,
            random_network: c.random_network,
        }
    }
}

/// The outer loop's knobs (ALGORITHM.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainKnobs {
    /// Episodes per training batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub wdecay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Training steps.
    pub max_batch: usize,
    /// Steps between logs (validation, checkpoint).
    pub log_every: usize,
    /// Batches per validation and per test.
    pub test_batch: usize,
    /// Cosine-annealing schedule, stepped at each log.
    pub use_lr_scheduler: bool,
    /// Float type to train in: `f32` or `f64`.
    pub dtype: String,
}

/// Everything that defines a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Seed of every random number of the run (initialisation, data).
    pub seed: u64,
    /// The task and its parameters (`task = "cue-reward"`, ...).
    #[serde(flatten)]
    pub task: Task,
    /// Network knobs.
    #[serde(flatten)]
    pub network: NetworkKnobs,
    /// Training knobs.
    #[serde(flatten)]
    pub train: TrainKnobs,
}

impl RunConfig {
    /// The paper's defaults for a task (ALGORITHM.md §4–5 and the reference's configs).
    pub fn defaults(task: &str) -> Result<RunConfig> {
        let (task, max_batch) = match task {
            "cue-reward" => (
                Task::CueReward(CueReward {
                    n_class: 5,
                    input_size: 16,
                    trial_length: 20,
                    input_noise: 0.1,
                }),
                20000,
            ),
            "seq-reproduction" => (
                Task::SeqReproduction(SeqReproduction {
                    seq_length: 20,
                    delay: 20,
                    value_dim: 1,
                }),
                10000,
            ),
            "regression" => (
                Task::Regression(Regression {
                    task_mode: RegressionMode::Linear,
                    n_var: 12,
                    train_length: 20,
                    test_length: 20,
                    input_noise: 0.1,
                }),
                10000,
            ),
            other => {
                return Err(Error::Config(format!(
                    "unknown task `{other}`; valid: {}",
                    TASK_NAMES.join(", ")
                )))
            }
        };
        Ok(RunConfig {
            seed: 0,
            task,
            network: NetworkKnobs::from(&NetworkConfig::default()),
            train: TrainKnobs {
                batch_size: 64,
                lr: 1e-3,
                wdecay: 0.0,
                grad_clip: 5.0,
                max_batch,
                log_every: 200,
                test_batch: 100,
                use_lr_scheduler: false,
                dtype: "f32".into(),
            },
        })
    }

    /// The network configuration this run trains.
    pub fn network_config(&self) -> NetworkConfig {
        let n = &self.network;
        NetworkConfig {
            rnn: n.rnn,
            plasticity: n.plasticity,
            input_size: self.task.input_size(),
            hidden_size: n.hidden_size,
            output_size: self.task.output_size(),
            extra_dim: n.extra_dim,
            modulation: n.modulation,
            p_lr: n.p_lr,
            p_wd: n.p_wd,
            inner_grad_clip: n.inner_grad_clip,
            weight_clip: n.weight_clip,
            layernorm: n.layernorm,
            inner_lr_mode: n.inner_lr_mode,
            random_network: n.random_network,
            input_layer: true,
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        self.task.validate()?;
        self.network_config().validate()?;
        let t = &self.train;
        if t.batch_size == 0 || t.log_every == 0 || t.test_batch == 0 {
            return Err(Error::Config(
                "batch_size, log_every and test_batch must be at least 1".into(),
            ));
        }
        for (k, v) in [
            ("lr", t.lr),
            ("wdecay", t.wdecay),
            ("grad_clip", t.grad_clip),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Config(format!(
                    "{k} must be a finite number >= 0, got {v}"
                )));
            }
        }
        if t.dtype != "f32" && t.dtype != "f64" {
            return Err(Error::Config(format!(
                "unknown dtype `{}`; valid: f32, f64",
                t.dtype
            )));
        }
        Ok(())
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run configuration always serialises")
    }

    /// Parses TOML; unknown keys are an error that lists the valid ones.
    pub fn from_toml(text: &str) -> Result<RunConfig> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<RunConfig> {
        let task = match table.get("task") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => {
                return Err(Error::Config(format!(
                    "missing `task`; valid: {}",
                    TASK_NAMES.join(", ")
                )))
            }
        };
        let valid = Self::defaults(&task)?.keys();
        for k in table.keys() {
            if !valid.iter().any(|v| v == k) {
                return Err(Error::Config(format!(
                    "unknown key `{k}` for task {task}; valid: {}",
                    valid.join(", ")
                )));
            }
        }
        // missing keys take the task's defaults
        let mut full = Self::defaults(&task)?.table();
        for (k, v) in table {
            full.insert(k, v);
        }
        let cfg: RunConfig = toml::Value::Table(full)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.message().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("a run configuration always serialises")
    }

    /// Every key this configuration's task accepts.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.table().keys().cloned().collect();
        if !k.iter().any(|x| x == "weight_clip") {
            k.push("weight_clip".into());
        }
        k.sort();
        k
    }

    /// Applies `key=value` overrides (values in TOML syntax; bare words are strings;
    /// `weight_clip=none` turns weight clipping off). The task cannot be changed here.
    pub fn with_overrides<S: AsRef<str>>(&self, overrides: &[S]) -> Result<RunConfig> {
        let mut table = self.table();
        for o in overrides {
            let o = o.as_ref();
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("`{o}` is not of the form key=value")))?;
            let (k, v) = (k.trim(), v.trim());
            if k == "task" && v != self.task.name() {
                return Err(Error::Config(
                    "the task cannot be changed with --set; use --task".into(),
                ));
            }
            if !self.keys().iter().any(|x| x == k) {
                return Err(Error::Config(format!(
                    "unknown key `{k}` for task {}; valid: {}",
                    self.task.name(),
                    self.keys().join(", ")
                )));
            }
            if k == "weight_clip" && (v == "none" || v == "off") {
                table.remove(k);
                continue;
            }
            let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
                Ok(mut t) => t.remove("v").expect("parsed"),
                Err(_) => toml::Value::String(v.to_string()),
            };
            // integers where floats are expected are fine: `lr=1` means 1.0
            let value = match (table.get(k), value) {
                (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => {
                    toml::Value::Float(i as f64)
                }
                (_, v) => v,
            };
            table.insert(k.to_string(), value);
        }
        Self::from_table(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_for_every_task() {
        for t in TASK_NAMES {
            let c = RunConfig::defaults(t).unwrap();
            let text = c.to_toml();
            assert!(text.contains(&format!("task = \"{t}\"")), "{text}");
            assert_eq!(RunConfig::from_toml(&text).unwrap(), c);
        }
    }

    #[test]
    fn overrides_apply_and_errors_list_valid_choices() {
        let c = RunConfig::defaults("seq-reproduction").unwrap();
        let d = c
            .with_overrides(&["delay=60", "lr=1", "weight_clip=0.5", "rnn=lstm"])
            .unwrap();
        assert_eq!(d.train.lr, 1.0);
        assert_eq!(d.network.weight_clip, Some(0.5));
        assert_eq!(d.network.rnn, CellKind::Lstm);
        match &d.task {
            Task::SeqReproduction(s) => assert_eq!(s.delay, 60),
            _ => unreachable!(),
        }
        let off = d.with_overrides(&["weight_clip=none"]).unwrap();
        assert_eq!(off.network.weight_clip, None);
        let e = c.with_overrides(&["n_class=3"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown key `n_class`") && e.contains("delay"),
            "{e}"
        );
        let e = c.with_overrides(&["rnn=gru"]).unwrap_err().to_string();
        assert!(e.contains("rnn, lstm"), "{e}");
        let e = c
            .with_overrides(&["hidden_size=0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden_size"), "{e}");
        let e = RunConfig::defaults("maze").unwrap_err().to_string();
        assert!(
            e.contains("cue-reward, seq-reproduction, regression"),
            "{e}"
        );
        let e = c.with_overrides(&["plasticity"]).unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
    }
}
