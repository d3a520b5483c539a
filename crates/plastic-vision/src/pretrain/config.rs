//! The configuration of a pretraining run (docs/fsc.md §7–§8): every knob with the
//! reference's values for its kind, read from and written to TOML (headed by `task =
//! "pretrain-classification"` or `"pretrain-simclr"`) and overridable by `key=value`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use plastic::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::cnn::BackboneConfig;
use crate::config::{apply_overrides, backbone_config, shared_keys, ImageSource, SharedKeys};
use crate::procedural::ProceduralConfig;

/// The two kinds of pretraining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PretrainKind {
    /// Classify single images of the training classes (linear head, cross-entropy).
    Classification,
    /// SimCLR: two views per image, projection head, NT-Xent.
    Simclr,
}

impl PretrainKind {
    /// Both kinds.
    pub const ALL: [PretrainKind; 2] = [PretrainKind::Classification, PretrainKind::Simclr];

    /// The task name (`pretrain-classification`, `pretrain-simclr`).
    pub fn task(self) -> &'static str {
        match self {
            PretrainKind::Classification => "pretrain-classification",
            PretrainKind::Simclr => "pretrain-simclr",
        }
    }
}

impl FromStr for PretrainKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PretrainKind::ALL
            .into_iter()
            .find(|k| k.task() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown pretraining task `{s}`; valid: pretrain-classification, pretrain-simclr"
                ))
            })
    }
}

impl fmt::Display for PretrainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.task())
    }
}

/// Every 5th image of the training file (by index) is held out for validation, as the
/// reference's split (docs/fsc.md §8); unlike the reference, training never sees them and
/// they are evaluated without augmentation (docs/fsc.md §9.8).
pub const HOLDOUT_EVERY: usize = 5;

/// Everything that defines a pretraining run. Field names are the configuration keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Classification or SimCLR (the TOML's `task`).
    #[serde(skip)]
    pub kind: Option<PretrainKind>,
    /// Seed of every random number of the run (initialisation, batches, augmentation).
    pub seed: u64,
    /// `cifar_fs`, `mini_imagenet` or `procedural`; only the training classes are used.
    pub image_dataset: ImageSource,
    /// The folder holding `CIFAR_FS/` or `miniImageNet/`.
    pub data_dir: PathBuf,
    /// Seed of the procedural data set.
    pub procedural_seed: u64,
    /// Images per class of the procedural data set.
    pub procedural_images: usize,
    /// The CNN (as an fsc run's `cnn`).
    pub cnn: String,
    /// The CNN's width (as an fsc run's `cnn_width`).
    pub cnn_width: usize,
    /// A ResNet-12's dropout and DropBlock rate (as an fsc run's `resnet_drop_rate`).
    pub resnet_drop_rate: f64,
    /// Width K of the SimCLR projection head `F → K → K` (the configuration's 256, which
    /// the reference misspelt, docs/fsc.md §9.5); unused by classification.
    pub simclr_head_size: usize,
    /// NT-Xent temperature (SimCLR only).
    pub temperature: f64,
    /// Images per batch (SimCLR: two views each).
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub wdecay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// The last training step: `max_batch + 1` updates.
    pub max_batch: usize,
    /// Steps between logs (validation, checkpoint, schedule step).
    pub log_every: usize,
    /// Batches of held-out images per validation (at most the whole held-out split).
    pub test_batch: usize,
    /// Cosine schedule (`T_max = max_batch/log_every + 1`, floor lr/10), stepped at each log
    /// after the first.
    pub use_lr_scheduler: bool,
    /// Float type to train in: `f32` or `f64`.
    pub dtype: String,
}

impl PretrainConfig {
    /// The reference's configuration of `kind` on CIFAR-FS with a ProtoNet (docs/fsc.md §7):
    /// batch 128 images; classification 20 000 steps, lr 3·10⁻³, cosine to 3·10⁻⁴, logs every
    /// 500 with 100 validation batches; SimCLR 100 000 steps, lr 10⁻³ without schedule, logs
    /// every 200; weight decay 10⁻⁴ and clip 5 for both.
    pub fn new(kind: PretrainKind) -> Self {
        let classification = kind == PretrainKind::Classification;
        PretrainConfig {
            kind: Some(kind),
            seed: 0,
            image_dataset: ImageSource::CifarFs,
            data_dir: PathBuf::from("data"),
            procedural_seed: 0,
            procedural_images: 600,
            cnn: "protonet".into(),
            cnn_width: 64,
            resnet_drop_rate: 0.1,
            simclr_head_size: 256,
            temperature: crate::pretrain::SIMCLR_TEMPERATURE,
            batch_size: 128,
            lr: if classification { 3e-3 } else { 1e-3 },
            wdecay: 1e-4,
            grad_clip: 5.0,
            max_batch: if classification { 20000 } else { 100000 },
            log_every: if classification { 500 } else { 200 },
            test_batch: if classification { 100 } else { 10 },
            use_lr_scheduler: classification,
            dtype: "f32".into(),
        }
    }

    /// The kind (classification unless set).
    pub fn kind(&self) -> PretrainKind {
        self.kind.unwrap_or(PretrainKind::Classification)
    }

    /// The CNN (`cnn`, `cnn_width`, `resnet_drop_rate`) at the data set's image size.
    pub fn backbone(&self) -> BackboneConfig {
        backbone_config(
            &self.cnn,
            self.cnn_width,
            self.resnet_drop_rate,
            self.image_dataset.kind().image_size(),
        )
    }

    /// The procedural data set's size and seed.
    pub fn procedural_config(&self) -> ProceduralConfig {
        ProceduralConfig {
            seed: self.procedural_seed,
            images_per_class: self.procedural_images,
            ..ProceduralConfig::default()
        }
    }

    /// The keys this configuration shares with an fsc one.
    pub(crate) fn shared_keys(&self) -> SharedKeys {
        shared_keys!(self)
    }

    /// Checks every value; the error says what is valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        self.shared_keys().validate()?;
        if self.simclr_head_size == 0 {
            return bad("simclr_head_size must be at least 1, got 0".into());
        }
        if self.batch_size < 2 {
            return bad(format!(
                "batch_size must be at least 2 (BatchNorm statistics, SimCLR negatives), got {}",
                self.batch_size
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "temperature must be a finite number > 0, got {}",
                self.temperature
            ));
        }
        Ok(())
    }

    /// The TOML text, headed by `task = "pretrain-…"`.
    pub fn to_toml(&self) -> String {
        format!(
            "task = \"{}\"\n{}",
            self.kind(),
            toml::to_string(self).expect("a pretraining configuration always serialises")
        )
    }

    fn table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("a pretraining configuration always serialises")
    }

    /// Every configuration key, sorted.
    pub fn keys() -> Vec<String> {
        let mut k: Vec<String> = PretrainConfig::new(PretrainKind::Classification)
            .table()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }

    fn unknown_key(k: &str) -> Error {
        Error::Config(format!(
            "unknown key `{k}` for a pretraining task; valid: {}",
            Self::keys().join(", ")
        ))
    }

    /// Parses TOML with its `task = "pretrain-…"` line (missing keys take that kind's
    /// defaults); an unknown key is an error that lists the valid ones.
    pub fn from_toml(text: &str) -> Result<PretrainConfig> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        let kind = match table.remove("task") {
            Some(toml::Value::String(t)) => t.parse::<PretrainKind>()?,
            other => {
                return Err(Error::Config(format!(
                    "a pretraining configuration says task = \"pretrain-classification\" or \
                     \"pretrain-simclr\"; found {other:?}"
                )))
            }
        };
        Self::from_table(kind, table)
    }

    fn from_table(kind: PretrainKind, table: toml::Table) -> Result<PretrainConfig> {
        let keys = Self::keys();
        if let Some(k) = table.keys().find(|k| !keys.contains(k)) {
            return Err(Self::unknown_key(k));
        }
        let mut full = PretrainConfig::new(kind).table();
        full.extend(table);
        let mut config: PretrainConfig = toml::Value::Table(full)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.message().to_string()))?;
        config.kind = Some(kind);
        config.validate()?;
        Ok(config)
    }

    /// Applies `key=value` overrides (values in TOML syntax; bare words are strings).
    pub fn with_overrides<S: AsRef<str>>(&self, overrides: &[S]) -> Result<PretrainConfig> {
        let mut table = self.table();
        apply_overrides(
            &mut table,
            &PretrainConfig::new(self.kind()).table(),
            &Self::keys(),
            &[],
            &[],
            overrides,
            Self::unknown_key,
        )?;
        Self::from_table(self.kind(), table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_references_and_round_trip() {
        let c = PretrainConfig::new(PretrainKind::Classification);
        assert_eq!((c.batch_size, c.max_batch, c.log_every), (128, 20000, 500));
        assert_eq!((c.lr, c.wdecay, c.use_lr_scheduler), (3e-3, 1e-4, true));
        assert_eq!(PretrainConfig::from_toml(&c.to_toml()).unwrap(), c);
        let s = PretrainConfig::new(PretrainKind::Simclr);
        assert_eq!(
            (s.max_batch, s.lr, s.use_lr_scheduler),
            (100000, 1e-3, false)
        );
        assert_eq!((s.simclr_head_size, s.temperature), (256, 0.07));
        let back = PretrainConfig::from_toml(&s.to_toml()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.kind(), PretrainKind::Simclr);
    }

    #[test]
    fn bad_values_and_keys_are_errors_that_say_what_is_valid() {
        let c = PretrainConfig::new(PretrainKind::Simclr);
        let err = |o: &str| c.with_overrides(&[o]).unwrap_err().to_string();
        assert!(err("hidden_size=3").contains("unknown key `hidden_size`"));
        assert!(err("batch_size=1").contains("at least 2"));
        assert!(err("temperature=0").contains("temperature"));
        assert!(err("cnn=vgg").contains("valid: protonet, resnet12"));
        let e = PretrainConfig::from_toml("task = \"fsc\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pretrain-classification, pretrain-simclr"),
            "{e}"
        );
        let ok = c
            .with_overrides(&["lr=1", "image_dataset=procedural"])
            .unwrap();
        assert_eq!((ok.lr, ok.image_dataset), (1.0, ImageSource::Procedural));
    }
}
