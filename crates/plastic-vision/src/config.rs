//! The configuration of an `fsc` run (`docs/fsc.md` §6–§7): every knob under the
//! reference's name, with the paper's defaults, read from and written to TOML and
//! overridable by `key=value`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use plastic::config::{CellKind, InnerLrMode, NetworkConfig, Rule};
use plastic::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::cnn::{BackboneConfig, ProtoNetConfig, ResNet12Config};
use crate::dataset::DatasetKind;
use crate::episodes::EpisodeConfig;
use crate::procedural::ProceduralConfig;
use crate::Phase;

/// Where the images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// The CIFAR-FS pickles under `data_dir` (32 × 32).
    CifarFs,
    /// The miniImageNet pickles under `data_dir` (84 × 84).
    MiniImageNet,
    /// The procedural data set, generated in memory (32 × 32, CIFAR-FS layout).
    Procedural,
}

impl ImageSource {
    /// Every value, in canonical spelling.
    pub const ALL: [ImageSource; 3] = [
        ImageSource::CifarFs,
        ImageSource::MiniImageNet,
        ImageSource::Procedural,
    ];

    /// The canonical spelling (the configuration value).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::CifarFs => "cifar_fs",
            ImageSource::MiniImageNet => "mini_imagenet",
            ImageSource::Procedural => "procedural",
        }
    }

    /// The image layout (sizes, normalisation): the procedural set has CIFAR-FS's.
    pub fn kind(self) -> DatasetKind {
        match self {
            ImageSource::MiniImageNet => DatasetKind::MiniImageNet,
            _ => DatasetKind::CifarFs,
        }
    }
}

impl FromStr for ImageSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "cifar_fs" => Ok(ImageSource::CifarFs),
            "mini_imagenet" | "miniimagenet" => Ok(ImageSource::MiniImageNet),
            "procedural" => Ok(ImageSource::Procedural),
            _ => Err(Error::Config(format!(
                "unknown image_dataset `{s}`; valid: cifar_fs, mini_imagenet, procedural"
            ))),
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ImageSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ImageSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The CNNs this crate implements (`docs/fsc.md` §5.1), the values of `cnn`.
pub const CNN_NAMES: [&str; 2] = ["protonet", "resnet12"];

/// Everything that defines an `fsc` run. Field names are the configuration keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FscConfig {
    /// Seed of every random number of the run (initialisation, episodes, augmentation).
    pub seed: u64,
    /// `cifar_fs`, `mini_imagenet` or `procedural`.
    pub image_dataset: ImageSource,
    /// The folder holding `CIFAR_FS/` or `miniImageNet/` (`docs/fsc.md` §1).
    pub data_dir: PathBuf,
    /// Seed of the procedural data set (its classes and images; not the run's seed).
    pub procedural_seed: u64,
    /// Images per class of the procedural data set.
    pub procedural_images: usize,
    /// The CNN: `protonet` or `resnet12`.
    pub cnn: String,
    /// The CNN's width: channels of every ProtoNet block, or ResNet-12's first block (the
    /// others 2.5×, 5× and 10× that; even). The reference's 64 gives ResNet-12's
    /// 64/160/320/640.
    pub cnn_width: usize,
    /// ResNet-12's dropout probability (blocks 1–2) and final DropBlock drop rate (blocks
    /// 3–4); 0 turns both off (the reference's 0.1; `docs/fsc.md` §5.1).
    pub resnet_drop_rate: f64,
    /// `rnn` or `lstm`.
    pub rnn: CellKind,
    /// `gradient`, `hebbian` or `none`.
    pub plasticity: Rule,
    /// Hidden size H; absent: the paper's size for the cell and rule (`docs/fsc.md` §5.2),
    /// see [`FscConfig::hidden`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// Plasticity rate.
    pub p_lr: f64,
    /// Plastic weight decay.
    pub p_wd: f64,
    /// Norm clip of the raw plastic update.
    pub inner_grad_clip: f64,
    /// Extra outputs E.
    pub extra_dim: usize,
    /// Neuromodulation of the plasticity and decay rates.
    pub modulation: bool,
    /// Initialisation of α.
    pub inner_lr_mode: InnerLrMode,
    /// Clamp of the plastic weights (absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_clip: Option<f64>,
    /// LayerNorm on the hidden state.
    pub layernorm: bool,
    /// Classes per episode.
    pub way: usize,
    /// Support images per class.
    pub shot: usize,
    /// Query images per class.
    pub query: usize,
    /// Keep the drawn labels (the reference's default); false relabels supports in order.
    pub randomize_train_order: bool,
    /// Optional curriculum, off (0) by default and in every paper experiment: the first
    /// `retrieval_steps` training steps use retrieval episodes, whose queries show their
    /// supports' own images (augmented anew), so that the network learns to bind labels to
    /// images before it must generalise over a class (`docs/fsc.md` §11).
    #[serde(default)]
    pub retrieval_steps: usize,
    /// Episodes per batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub wdecay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// The last training step: the run makes `max_batch + 1` updates (`docs/fsc.md` §6).
    pub max_batch: usize,
    /// Steps between logs (validation, checkpoint, schedule step).
    pub log_every: usize,
    /// Batches per validation and per test.
    pub test_batch: usize,
    /// The cosine learning-rate schedule, stepped at each log after the first.
    pub use_lr_scheduler: bool,
    /// Float type to train in: `f32` or `f64`.
    pub dtype: String,
    /// A pretraining run folder whose CNN (parameters and BatchNorm statistics) this run
    /// starts from (`docs/fsc.md` §5.3); absent: a newly initialised CNN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnn_from: Option<PathBuf>,
    /// Freeze the CNN as the reference's `freeze_pretrained_cnn`: evaluation mode, no
    /// gradient, no update (`docs/fsc.md` §5.3).
    pub freeze_cnn: bool,
    /// Apply the train-time augmentation to training episodes (`docs/fsc.md` §2).
    pub train_augment: bool,
    /// With a frozen CNN and no train-time augmentation, embed every image once and keep
    /// the features in `embeddings.safetensors` in the run folder (rebuilt when the CNN or
    /// the data change); meta-training then runs only the projection and the RNN.
    pub embedding_cache: bool,
}

impl Default for FscConfig {
    /// The paper's `fsc` experiment on CIFAR-FS, RNN with the gradient rule, seed 0
    /// (`docs/fsc.md` §7).
    fn default() -> Self {
        FscConfig {
            seed: 0,
            image_dataset: ImageSource::CifarFs,
            data_dir: PathBuf::from("data"),
            procedural_seed: 0,
            procedural_images: 600,
            cnn: "protonet".into(),
            cnn_width: 64,
            resnet_drop_rate: 0.1,
            rnn: CellKind::Rnn,
            plasticity: Rule::Gradient,
            hidden_size: None,
            p_lr: 0.1,
            p_wd: 0.1,
            inner_grad_clip: 1.0,
            extra_dim: 4,
            modulation: true,
            inner_lr_mode: InnerLrMode::Random,
            weight_clip: None,
            layernorm: false,
            way: 5,
            shot: 1,
            query: 1,
            randomize_train_order: true,
            retrieval_steps: 0,
            batch_size: 64,
            lr: 1e-3,
            wdecay: 5e-4,
            grad_clip: 5.0,
            max_batch: 40000,
            log_every: 1000,
            test_batch: 200,
            use_lr_scheduler: true,
            dtype: "f32".into(),
            cnn_from: None,
            freeze_cnn: false,
            train_augment: true,
            embedding_cache: true,
        }
    }
}

/// Keys that may be absent (their value is then derived or off).
const OPTIONAL_KEYS: [&str; 3] = ["hidden_size", "weight_clip", "cnn_from"];

impl FscConfig {
    /// The hidden size: `hidden_size` if set, else the paper's (`docs/fsc.md` §5.2): base
    /// 256, × 1.5 without plasticity (or with `inner_lr_mode = none`), × 2 for the RNN.
    pub fn hidden(&self) -> usize {
        self.hidden_size.unwrap_or_else(|| {
            let mut h = 256;
            if self.plasticity == Rule::None || self.inner_lr_mode == InnerLrMode::None {
                h = h * 3 / 2;
            }
            if self.rnn == CellKind::Rnn {
                h *= 2;
            }
            h
        })
    }

    /// The same configuration with the hidden size written out (what a run folder keeps).
    pub fn resolved(&self) -> FscConfig {
        FscConfig {
            hidden_size: Some(self.hidden()),
            ..self.clone()
        }
    }

    /// The plastic RNN after the projection: no input layer, input size H (the projection's
    /// H − way outputs and the way-wide label input), outputs `way` (`docs/fsc.md` §5).
    pub fn network_config(&self) -> NetworkConfig {
        let h = self.hidden();
        NetworkConfig {
            rnn: self.rnn,
            plasticity: self.plasticity,
            input_size: h,
            hidden_size: h,
            output_size: self.way,
            extra_dim: self.extra_dim,
            modulation: self.modulation,
            p_lr: self.p_lr,
            p_wd: self.p_wd,
            inner_grad_clip: self.inner_grad_clip,
            weight_clip: self.weight_clip,
            layernorm: self.layernorm,
            inner_lr_mode: self.inner_lr_mode,
            random_network: false,
            input_layer: false,
        }
    }

    /// The CNN (`cnn`, `cnn_width`) at the data set's image size (`docs/fsc.md` §5.1).
    pub fn backbone(&self) -> BackboneConfig {
        backbone_config(
            &self.cnn,
            self.cnn_width,
            self.resnet_drop_rate,
            self.image_dataset.kind().image_size(),
        )
    }

    /// The episode shape of `phase` (augmentation in training only).
    pub fn episode_config(&self, phase: Phase) -> EpisodeConfig {
        EpisodeConfig {
            way: self.way,
            shot: self.shot,
            query: self.query,
            augment: phase == Phase::Train && self.train_augment,
            randomize_train_order: self.randomize_train_order,
        }
    }

    /// Whether meta-training reads the frozen CNN's features from the embedding cache: a
    /// frozen CNN, no train-time augmentation, and the cache on.
    pub fn uses_embedding_cache(&self) -> bool {
        self.freeze_cnn && !self.train_augment && self.embedding_cache
    }

    /// The procedural data set's size and seed.
    pub fn procedural_config(&self) -> ProceduralConfig {
        ProceduralConfig {
            seed: self.procedural_seed,
            images_per_class: self.procedural_images,
            ..ProceduralConfig::default()
        }
    }

    /// The keys this configuration shares with a pretraining one.
    pub(crate) fn shared_keys(&self) -> SharedKeys {
        shared_keys!(self)
    }

    /// Checks every value; the error says what is valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        self.shared_keys().validate()?;
        for (name, v) in [
            ("way", self.way),
            ("shot", self.shot),
            ("query", self.query),
            ("batch_size", self.batch_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1, got 0"));
            }
        }
        if self.cnn.eq_ignore_ascii_case("resnet12") && !self.cnn_width.is_multiple_of(2) {
            return bad(format!(
                "cnn_width must be even for resnet12 (its blocks are 1, 2.5, 5 and 10 times it), got {}",
                self.cnn_width
            ));
        }
        if self.hidden() <= self.way {
            return bad(format!(
                "hidden_size must exceed way ({}) so that the projection has outputs; got {}",
                self.way,
                self.hidden()
            ));
        }
        if !self.randomize_train_order && self.shot != 1 {
            return bad(format!(
                "randomize_train_order = false needs shot 1 (got shot {})",
                self.shot
            ));
        }
        self.network_config().validate()
    }

    /// The TOML text of this configuration, headed by `task = "fsc"` (so that a run
    /// folder says which task it is).
    pub fn to_toml(&self) -> String {
        format!(
            "task = \"fsc\"\n{}",
            toml::to_string(self).expect("an fsc configuration always serialises")
        )
    }

    fn table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("an fsc configuration always serialises")
    }

    /// Every configuration key, sorted.
    pub fn keys() -> Vec<String> {
        let mut k: Vec<String> = FscConfig::default().table().keys().cloned().collect();
        for o in OPTIONAL_KEYS {
            if !k.iter().any(|x| x == o) {
                k.push(o.into());
            }
        }
        k.sort();
        k
    }

    fn unknown_key(k: &str) -> Error {
        Error::Config(format!(
            "unknown key `{k}` for task fsc; valid: {}",
            Self::keys().join(", ")
        ))
    }

    /// Parses TOML (missing keys take the defaults); an unknown key is an error that lists
    /// the valid ones. A `task = "fsc"` entry is accepted and ignored.
    pub fn from_toml(text: &str) -> Result<FscConfig> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
        match table.remove("task") {
            None => {}
            Some(toml::Value::String(t)) if t == "fsc" => {}
            Some(other) => {
                return Err(Error::Config(format!(
                    "this is an fsc configuration, but it says task = {other}"
                )))
            }
        }
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<FscConfig> {
        let keys = Self::keys();
        if let Some(k) = table.keys().find(|k| !keys.contains(k)) {
            return Err(Self::unknown_key(k));
        }
        let mut full = FscConfig::default().table();
        full.extend(table);
        let config: FscConfig = toml::Value::Table(full)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `key=value` overrides (values in TOML syntax; bare words are strings;
    /// `hidden_size=auto` restores the paper's size, `weight_clip=none` turns clipping off).
    pub fn with_overrides<S: AsRef<str>>(&self, overrides: &[S]) -> Result<FscConfig> {
        let mut table = self.table();
        apply_overrides(
            &mut table,
            &FscConfig::default().table(),
            &Self::keys(),
            &OPTIONAL_KEYS,
            &["weight_clip"],
            overrides,
            Self::unknown_key,
        )?;
        Self::from_table(table)
    }
}

/// The keys that an fsc and a pretraining configuration share (data set, CNN, optimiser,
/// schedule, logging, float type): validated in one place for both, and what the shared
/// trainer ([`crate::trainer`]) reads.
pub(crate) struct SharedKeys {
    pub image_dataset: ImageSource,
    pub procedural_images: usize,
    pub cnn: String,
    pub cnn_width: usize,
    pub resnet_drop_rate: f64,
    pub lr: f64,
    pub wdecay: f64,
    pub grad_clip: f64,
    pub max_batch: usize,
    pub log_every: usize,
    pub test_batch: usize,
    pub use_lr_scheduler: bool,
    pub dtype: String,
}

/// The [`SharedKeys`] of a configuration (fsc or pretraining: the keys have the same names).
macro_rules! shared_keys {
    ($config:expr) => {
        $crate::config::SharedKeys {
            image_dataset: $config.image_dataset,
            procedural_images: $config.procedural_images,
            cnn: $config.cnn.clone(),
            cnn_width: $config.cnn_width,
            resnet_drop_rate: $config.resnet_drop_rate,
            lr: $config.lr,
            wdecay: $config.wdecay,
            grad_clip: $config.grad_clip,
            max_batch: $config.max_batch,
            log_every: $config.log_every,
            test_batch: $config.test_batch,
            use_lr_scheduler: $config.use_lr_scheduler,
            dtype: $config.dtype.clone(),
        }
    };
}
pub(crate) use shared_keys;

impl SharedKeys {
    /// Checks every shared value; the error says what is valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !CNN_NAMES.contains(&self.cnn.to_ascii_lowercase().as_str()) {
            return bad(format!(
                "unknown cnn `{}`; valid: {}",
                self.cnn,
                CNN_NAMES.join(", ")
            ));
        }
        for (name, v) in [
            ("cnn_width", self.cnn_width),
            ("log_every", self.log_every),
            ("test_batch", self.test_batch),
            ("procedural_images", self.procedural_images),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1, got 0"));
            }
        }
        for (k, v) in [
            ("lr", self.lr),
            ("wdecay", self.wdecay),
            ("grad_clip", self.grad_clip),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{k} must be a finite number >= 0, got {v}"));
            }
        }
        if !(self.resnet_drop_rate.is_finite() && (0.0..1.0).contains(&self.resnet_drop_rate)) {
            return bad(format!(
                "resnet_drop_rate must be in [0, 1), got {}",
                self.resnet_drop_rate
            ));
        }
        backbone_config(
            &self.cnn,
            self.cnn_width,
            self.resnet_drop_rate,
            self.image_dataset.kind().image_size(),
        )
        .check()?;
        if self.dtype != "f32" && self.dtype != "f64" {
            return bad(format!("unknown dtype `{}`; valid: f32, f64", self.dtype));
        }
        Ok(())
    }
}

/// The CNN named `cnn` (`protonet` or `resnet12`, any case) of width `width` (ResNet-12:
/// its first block's) for `image_size` images, with `drop_rate` for a ResNet-12
/// (`docs/fsc.md` §5.1); shared by the fsc and pretraining configurations.
pub fn backbone_config(
    cnn: &str,
    width: usize,
    drop_rate: f64,
    image_size: usize,
) -> BackboneConfig {
    if cnn.eq_ignore_ascii_case("resnet12") {
        BackboneConfig::ResNet12(ResNet12Config {
            drop_rate,
            ..ResNet12Config::reference(width, image_size)
        })
    } else {
        BackboneConfig::ProtoNet(ProtoNetConfig {
            in_channels: 3,
            channels: width,
            image_size,
        })
    }
}

/// Applies `key=value` overrides to a configuration table (shared by the image tasks'
/// configurations): values in TOML syntax, bare words are strings; a key of `optional`
/// set to `none`, `off` or `auto` is removed (its value is then derived or off); integers
/// where `defaults` has a float, or for a key of `optional_floats`, become floats, and
/// anything where `defaults` has a string becomes a string. An unknown key is `unknown(key)`.
pub(crate) fn apply_overrides<S: AsRef<str>>(
    table: &mut toml::Table,
    defaults: &toml::Table,
    keys: &[String],
    optional: &[&str],
    optional_floats: &[&str],
    overrides: &[S],
    unknown: impl Fn(&str) -> Error,
) -> Result<()> {
    for o in overrides {
        let o = o.as_ref();
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("`{o}` is not of the form key=value")))?;
        let (k, v) = (k.trim(), v.trim());
        if !keys.iter().any(|x| x == k) {
            return Err(unknown(k));
        }
        if optional.contains(&k) && matches!(v, "none" | "off" | "auto") {
            table.remove(k);
            continue;
        }
        let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
            Ok(mut t) => t.remove("v").expect("parsed"),
            Err(_) => toml::Value::String(v.to_string()),
        };
        // integers where floats are expected are fine (`lr=1` means 1.0), and so are
        // numbers where a string is expected (`data_dir=2024`)
        let value = match (defaults.get(k), value) {
            (_, toml::Value::Integer(i)) if optional_floats.contains(&k) => {
                toml::Value::Float(i as f64)
            }
            (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            (Some(toml::Value::String(_)), v) if !v.is_str() => toml::Value::String(v.to_string()),
            (_, v) => v,
        };
        table.insert(k.to_string(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_and_round_trip() {
        let c = FscConfig::default();
        assert_eq!(
            (c.batch_size, c.max_batch, c.log_every, c.test_batch),
            (64, 40000, 1000, 200)
        );
        assert_eq!((c.lr, c.wdecay, c.grad_clip), (1e-3, 5e-4, 5.0));
        assert_eq!(FscConfig::from_toml(&c.to_toml()).unwrap(), c);
        let r = c.resolved();
        assert_eq!(r.hidden_size, Some(512));
        assert_eq!(FscConfig::from_toml(&r.to_toml()).unwrap(), r);
        let n = c.network_config();
        assert!(!n.input_layer);
        assert_eq!((n.input_size, n.hidden_size, n.output_size), (512, 512, 5));
    }

    #[test]
    fn hidden_sizes_per_cell_and_rule() {
        let h = |rnn: &str, rule: &str| {
            FscConfig::default()
                .with_overrides(&[format!("rnn={rnn}"), format!("plasticity={rule}")])
                .unwrap()
                .hidden()
        };
        assert_eq!(h("rnn", "gradient"), 512);
        assert_eq!(h("rnn", "hebbian"), 512);
        assert_eq!(h("lstm", "gradient"), 256);
        assert_eq!(h("lstm", "hebbian"), 256);
        assert_eq!(h("rnn", "none"), 768);
        assert_eq!(h("lstm", "none"), 384);
        let set = FscConfig::default()
            .with_overrides(&["hidden_size=40"])
            .unwrap();
        assert_eq!(set.hidden(), 40);
        let auto = set.with_overrides(&["hidden_size=auto"]).unwrap();
        assert_eq!(auto.hidden(), 512);
    }

    #[test]
    fn overrides_apply_and_errors_list_the_valid_choices() {
        let c = FscConfig::default()
            .with_overrides(&[
                "image_dataset=procedural",
                "lr=1",
                "weight_clip=1",
                "data_dir=/tmp/x",
                "rnn=lstm",
            ])
            .unwrap();
        assert_eq!(c.image_dataset, ImageSource::Procedural);
        assert_eq!(c.lr, 1.0);
        assert_eq!(c.weight_clip, Some(1.0));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        let err = |o: &str| {
            FscConfig::default()
                .with_overrides(&[o])
                .unwrap_err()
                .to_string()
        };
        let e = err("delay=3");
        assert!(
            e.contains("unknown key `delay`") && e.contains("image_dataset"),
            "{e}"
        );
        let e = err("image_dataset=imagenet");
        assert!(e.contains("cifar_fs, mini_imagenet, procedural"), "{e}");
        let e = err("cnn=resnet");
        assert!(e.contains("valid: protonet, resnet12"), "{e}");
        let e = FscConfig::default()
            .with_overrides(&["cnn=resnet12", "cnn_width=5"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("even"), "{e}");
        let e = err("resnet_drop_rate=1.5");
        assert!(e.contains("[0, 1)"), "{e}");
        let e = err("rnn=gru");
        assert!(e.contains("rnn, lstm"), "{e}");
        let e = err("batch_size=0");
        assert!(e.contains("batch_size"), "{e}");
        let e = err("hidden_size=5");
        assert!(e.contains("exceed way"), "{e}");
        let e = err("lr=-1");
        assert!(e.contains("lr must be"), "{e}");
        let e = err("dtype=f16");
        assert!(e.contains("f32, f64"), "{e}");
        let e = err("plasticity");
        assert!(e.contains("key=value"), "{e}");
        let e = FscConfig::from_toml("task = \"cue-reward\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fsc"), "{e}");
        let e = FscConfig::from_toml("colour = 1").unwrap_err().to_string();
        assert!(e.contains("unknown key `colour`"), "{e}");
    }
}
