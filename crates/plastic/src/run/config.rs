//! A run's configuration: every knob of docs/algorithm.md under the reference's names, with
//! the paper's defaults per task, read from and written to TOML, overridable by `key=value`.
//!
//! A run's TOML file is flat: the task's keys (`task = "cue-reward"`, `delay`, ...), the
//! network's knobs (every field of [`NetworkConfig`] but the input and output sizes, which
//! the task defines), the training knobs ([`TrainKnobs`]) and `seed`. Keys missing from a
//! file take the task's defaults, so files written before a knob existed still load.

use serde::{Deserialize, Serialize};

use crate::config::{named_enum, NetworkConfig};
use crate::error::{Error, Result};
use crate::tasks::{CueReward, Regression, RegressionMode, SeqReproduction, Task};

named_enum!(
    /// The synthetic tasks (docs/algorithm.md §5), by their command-line names.
    TaskKind {
        /// Cue-reward association.
        CueReward => ["cue-reward"],
        /// Sequence reproduction after a delay.
        SeqReproduction => ["seq-reproduction"],
        /// Few-shot regression.
        Regression => ["regression"],
    }
);

named_enum!(
    /// The float type a run trains and evaluates in.
    Dtype {
        /// 32-bit floats (training).
        F32 => ["f32"],
        /// 64-bit floats (verification).
        F64 => ["f64"],
    }
);

/// The task names accepted on the command line (the spellings of [`TaskKind::ALL`]).
pub const TASK_NAMES: [&str; 3] = ["cue-reward", "seq-reproduction", "regression"];

impl TaskKind {
    /// The kind of a task.
    pub fn of(task: &Task) -> TaskKind {
        match task {
            Task::CueReward(_) => TaskKind::CueReward,
            Task::SeqReproduction(_) => TaskKind::SeqReproduction,
            Task::Regression(_) => TaskKind::Regression,
        }
    }
}

/// The outer loop's knobs (docs/algorithm.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Float type to train in.
    pub dtype: Dtype,
}

/// Everything that defines a run. In TOML it is one flat table (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Seed of every random number of the run (initialisation, data).
    pub seed: u64,
    /// The task and its parameters.
    pub task: Task,
    /// The network's knobs. Its `input_size` and `output_size` are the task's: use
    /// [`RunConfig::network_config`], which always takes them from [`RunConfig::task`].
    pub network: NetworkConfig,
    /// Training knobs.
    pub train: TrainKnobs,
}

/// The keys of [`NetworkConfig`] that the task defines and a run's TOML therefore omits.
const TASK_DEFINED: [&str; 2] = ["input_size", "output_size"];
/// A key whose absence means "off" (so it is valid although the defaults omit it).
const OPTIONAL_KEYS: [&str; 1] = ["weight_clip"];

fn to_table<T: Serialize>(v: &T) -> toml::Table {
    toml::Table::try_from(v).expect("configuration parts always serialise to a table")
}

fn network_table(n: &NetworkConfig) -> toml::Table {
    let mut t = to_table(n);
    for k in TASK_DEFINED {
        t.remove(k);
    }
    t
}

/// The part of `full` whose keys are in `keys` (or are the optional keys, with
/// `optional`), with the `extra` entries added, deserialised.
fn part<T: serde::de::DeserializeOwned>(
    full: &toml::Table,
    keys: &toml::Table,
    optional: bool,
    extra: &[(&str, toml::Value)],
) -> std::result::Result<T, String> {
    let mut t: toml::Table = full
        .iter()
        .filter(|(k, _)| keys.contains_key(*k) || (optional && OPTIONAL_KEYS.contains(&k.as_str())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in extra {
        t.insert(k.to_string(), v.clone());
    }
    toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())
}

/// What a key whose default is `default` expects, for error messages.
fn expected(default: Option<&toml::Value>) -> String {
    match default {
        Some(toml::Value::Integer(i)) => format!("a whole number >= 0 (e.g. {i})"),
        Some(toml::Value::Float(f)) => format!("a number (e.g. {f})"),
        Some(toml::Value::Boolean(_)) => "true or false".into(),
        Some(toml::Value::String(s)) => format!("a name (e.g. {s})"),
        Some(_) => "a value of the default's type".into(),
        None => "a number, or none for off".into(),
    }
}

/// Checks that `value` has the TOML type of the key's default (`None`: an optional number);
/// integers are accepted where numbers are expected (`lr=1` means 1.0).
fn typed(key: &str, value: toml::Value, default: Option<&toml::Value>) -> Result<toml::Value> {
    use toml::Value as V;
    let ok = match (default, &value) {
        (Some(V::Float(_)) | None, V::Integer(i)) => return Ok(V::Float(*i as f64)),
        (Some(V::Float(_)) | None, V::Float(_)) => true,
        (Some(V::Integer(_)), V::Integer(i)) => *i >= 0,
        (Some(V::Boolean(_)), V::Boolean(_)) => true,
        (Some(V::String(_)), V::String(_)) => true,
        // a name spelled like a number or a boolean: let the name's check list the valid ones
        (Some(V::String(_)), V::Integer(_) | V::Float(_) | V::Boolean(_)) => {
            return Ok(V::String(value.to_string()))
        }
        _ => false,
    };
    if ok {
        return Ok(value);
    }
    let shown = match &value {
        V::String(s) => s.clone(),
        other => other.to_string(),
    };
    Err(Error::Config(format!(
        "`{key}` expects {}, got `{shown}`",
        expected(default)
    )))
}

impl RunConfig {
    /// The paper's defaults for a task (docs/algorithm.md §4–5 and the reference's configs).
    pub fn for_task(kind: TaskKind) -> RunConfig {
        let (task, max_batch) = match kind {
            TaskKind::CueReward => (
                Task::CueReward(CueReward {
                    n_class: 5,
                    input_size: 16,
                    trial_length: 20,
                    input_noise: 0.1,
                }),
                20000,
            ),
            TaskKind::SeqReproduction => (
                Task::SeqReproduction(SeqReproduction {
                    seq_length: 20,
                    delay: 20,
                    value_dim: 1,
                }),
                10000,
            ),
            TaskKind::Regression => (
                Task::Regression(Regression {
                    task_mode: RegressionMode::Linear,
                    // the reference's `input_shape (12,)`: n variables + value + flag
                    n_var: 10,
                    train_length: 20,
                    test_length: 20,
                    input_noise: 0.1,
                }),
                10000,
            ),
        };
        let network = NetworkConfig {
            input_size: task.input_size(),
            output_size: task.output_size(),
            ..NetworkConfig::default()
        };
        RunConfig {
            seed: 0,
            task,
            network,
            train: TrainKnobs {
                batch_size: 64,
                lr: 1e-3,
                wdecay: 0.0,
                grad_clip: 5.0,
                max_batch,
                log_every: 200,
                test_batch: 100,
                use_lr_scheduler: false,
                dtype: Dtype::F32,
            },
        }
    }

    /// The paper's defaults for the task called `task`; an unknown name is an error that
    /// lists the valid ones.
    pub fn defaults(task: &str) -> Result<RunConfig> {
        let kind: TaskKind = task.parse().map_err(|_| {
            Error::Config(format!(
                "unknown task `{task}`; valid: {}",
                TaskKind::valid()
            ))
        })?;
        Ok(Self::for_task(kind))
    }

    /// The network configuration this run trains: [`RunConfig::network`] with the input
    /// and output sizes of the task.
    pub fn network_config(&self) -> NetworkConfig {
        NetworkConfig {
            input_size: self.task.input_size(),
            output_size: self.task.output_size(),
            ..self.network.clone()
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        if i64::try_from(self.seed).is_err() {
            return Err(Error::Config(format!(
                "seed must be at most {}, got {}",
                i64::MAX,
                self.seed
            )));
        }
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
        Ok(())
    }

    /// The TOML text of this configuration: `seed` and `task`, then the task's keys, the
    /// network's and the training knobs, each group in alphabetical order.
    pub fn to_toml(&self) -> String {
        let mut task = to_table(&self.task);
        let mut head = toml::Table::new();
        head.insert("seed".into(), self.table()["seed"].clone());
        head.insert(
            "task".into(),
            task.remove("task").expect("a task is tagged"),
        );
        [
            head,
            task,
            network_table(&self.network),
            to_table(&self.train),
        ]
        .iter()
        .map(|t| toml::to_string(t).expect("a run configuration always serialises"))
        .collect()
    }

    /// Parses TOML; unknown keys, values of the wrong type and unknown names are errors that
    /// name the key and say what is valid.
    pub fn from_toml(text: &str) -> Result<RunConfig> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<RunConfig> {
        let kind = match table.get("task") {
            Some(toml::Value::String(s)) => s.parse::<TaskKind>().map_err(|_| {
                Error::Config(format!("unknown task `{s}`; valid: {}", TaskKind::valid()))
            })?,
            Some(other) => {
                return Err(Error::Config(format!(
                    "`task` must be a name, got `{other}`; valid: {}",
                    TaskKind::valid()
                )))
            }
            None => {
                return Err(Error::Config(format!(
                    "missing `task`; valid: {}",
                    TaskKind::valid()
                )))
            }
        };
        let defaults = Self::for_task(kind);
        // missing keys take the task's defaults
        let mut full = defaults.table();
        let valid = defaults.keys();
        let given: Vec<String> = table.keys().cloned().collect();
        for (k, v) in table {
            if !valid.contains(&k) {
                return Err(Error::Config(format!(
                    "unknown key `{k}` for task {kind}; valid: {}",
                    valid.join(", ")
                )));
            }
            let v = typed(&k, v, full.get(&k))?;
            full.insert(k, v);
        }
        let cfg = match Self::parse(&full, kind) {
            Ok(cfg) => cfg,
            Err(message) => {
                // name the key: the first one that fails on its own against the defaults
                let culprit = given.iter().find(|k| {
                    let mut one = defaults.table();
                    one.insert(k.to_string(), full[k.as_str()].clone());
                    Self::parse(&one, kind).is_err()
                });
                return Err(Error::Config(match culprit {
                    Some(k) => format!("`{k}`: {message}"),
                    None => message,
                }));
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration in a complete flat table of task `kind`.
    fn parse(full: &toml::Table, kind: TaskKind) -> std::result::Result<RunConfig, String> {
        let defaults = Self::for_task(kind);
        let task: Task = part(full, &to_table(&defaults.task), false, &[])?;
        let sizes = [
            ("input_size", toml::Value::Integer(task.input_size() as i64)),
            (
                "output_size",
                toml::Value::Integer(task.output_size() as i64),
            ),
        ];
        let network: NetworkConfig = part(full, &network_table(&defaults.network), true, &sizes)?;
        let train: TrainKnobs = part(full, &to_table(&defaults.train), false, &[])?;
        let seed = match full.get("seed") {
            Some(toml::Value::Integer(s)) if *s >= 0 => *s as u64,
            _ => return Err("seed must be a whole number >= 0".into()),
        };
        Ok(RunConfig {
            seed,
            task,
            network,
            train,
        })
    }

    /// The flat table of this configuration (`seed` must fit TOML's integers: checked by
    /// [`RunConfig::validate`]).
    fn table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert(
            "seed".into(),
            toml::Value::Integer(i64::try_from(self.seed).unwrap_or(i64::MAX)),
        );
        t.extend(to_table(&self.task));
        t.extend(network_table(&self.network));
        t.extend(to_table(&self.train));
        t
    }

    /// Every key this configuration's task accepts.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.table().keys().cloned().collect();
        for o in OPTIONAL_KEYS {
            if !k.iter().any(|x| x == o) {
                k.push(o.into());
            }
        }
        k.sort();
        k
    }

    /// Applies `key=value` overrides (values in TOML syntax; bare words are strings;
    /// `weight_clip=none` turns weight clipping off). The task cannot be changed here.
    pub fn with_overrides<S: AsRef<str>>(&self, overrides: &[S]) -> Result<RunConfig> {
        self.validate()?;
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
            if OPTIONAL_KEYS.contains(&k) && (v == "none" || v == "off") {
                table.remove(k);
                continue;
            }
            let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
                Ok(mut t) => t.remove("v").expect("parsed"),
                Err(_) => toml::Value::String(v.to_string()),
            };
            table.insert(k.to_string(), value);
        }
        Self::from_table(table)
    }
}

impl Serialize for RunConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.table().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RunConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        RunConfig::from_table(table).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CellKind, InnerLrMode, Rule};

    #[test]
    fn toml_round_trip_for_every_task() {
        assert_eq!(
            TASK_NAMES.to_vec(),
            TaskKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()
        );
        for t in TASK_NAMES {
            let c = RunConfig::defaults(t).unwrap();
            let text = c.to_toml();
            assert!(text.contains(&format!("task = \"{t}\"")), "{text}");
            assert!(!text.contains("output_size"), "{text}");
            assert_eq!(RunConfig::from_toml(&text).unwrap(), c);
            assert_eq!(c.network, c.network_config());
        }
    }

    #[test]
    fn files_written_before_the_single_knob_struct_still_load() {
        // a cue-reward config.toml as the earlier NetworkKnobs/NetworkConfig pair wrote it
        let old = "seed = 3\ntask = \"cue-reward\"\nn_class = 5\ninput_size = 16\n\
                   trial_length = 20\ninput_noise = 0.1\nrnn = \"lstm\"\nplasticity = \"hebbian\"\n\
                   hidden_size = 32\nextra_dim = 4\nmodulation = true\np_lr = 0.1\np_wd = 0.1\n\
                   inner_grad_clip = 1.0\nlayernorm = false\ninner_lr_mode = \"random\"\n\
                   random_network = false\nbatch_size = 64\nlr = 0.001\nwdecay = 0.0\n\
                   grad_clip = 5.0\nmax_batch = 100\nlog_every = 200\ntest_batch = 100\n\
                   use_lr_scheduler = false\ndtype = \"f32\"\n";
        let c = RunConfig::from_toml(old).unwrap();
        assert_eq!(
            (c.seed, c.network.rnn, c.network.hidden_size),
            (3, CellKind::Lstm, 32)
        );
        assert_eq!((c.network.input_size, c.network.output_size), (16, 1));
        assert_eq!(c.network.weight_clip, None);
        assert_eq!(RunConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn regression_defaults_to_the_references_input_size() {
        // the reference's `input_shape (12,)` is n_var + 2
        let c = RunConfig::for_task(TaskKind::Regression);
        assert_eq!(c.network_config().input_size, 12);
        match c.task {
            Task::Regression(r) => assert_eq!(r.n_var, 10),
            _ => unreachable!(),
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
        assert!(e.contains("`rnn`") && e.contains("rnn, lstm"), "{e}");
        assert!(!e.contains("CellKind") && e.matches("invalid configuration").count() == 1);
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
        let i = c.with_overrides(&["inner_lr_mode=neg_uniform", "plasticity=none"]);
        let i = i.unwrap();
        assert_eq!(
            (i.network.inner_lr_mode, i.network.plasticity),
            (InnerLrMode::NegUniform, Rule::None)
        );
    }

    #[test]
    fn wrongly_typed_values_name_the_key_and_the_type() {
        let c = RunConfig::defaults("cue-reward").unwrap();
        for (o, key, what) in [
            ("hidden_size=abc", "`hidden_size`", "whole number"),
            ("hidden_size=-3", "`hidden_size`", "whole number"),
            ("hidden_size=1.5", "`hidden_size`", "whole number"),
            ("lr=fast", "`lr`", "a number"),
            ("modulation=1", "`modulation`", "true or false"),
            ("weight_clip=big", "`weight_clip`", "none for off"),
            ("dtype=f16", "`dtype`", "f32, f64"),
            ("rnn=1", "`rnn`", "rnn, lstm"),
            ("plasticity=oja", "`plasticity`", "none, hebbian, gradient"),
        ] {
            let e = c.with_overrides(&[o]).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(what), "{o}: {e}");
        }
        let r = RunConfig::defaults("regression").unwrap();
        let e = r
            .with_overrides(&["task_mode=cubic"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`task_mode`") && e.contains("linear, mlp"),
            "{e}"
        );
        let e = RunConfig::from_toml("task = \"cue-reward\"\nlr = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`lr` expects a number"), "{e}");
    }
}
