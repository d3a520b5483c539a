//! One-shot image classification with plastic RNNs (the paper's `fsc` experiments): image
//! data sets (the MetaOptNet pickles and a procedural set), episode sampling and
//! augmentation, the CNNs, and the CNN → projection → plastic RNN model.
//!
//! The data side, in the order the data flows (`docs/fsc.md` §1–§4):
//! - [`pickle`]: a reader (and a small writer) for the data-set pickles;
//! - [`dataset`]: [`ImageDataset`], loaded from a `data_dir` per [`DatasetKind`] and
//!   [`Phase`], or built in memory;
//! - [`procedural`]: a procedural data set with the CIFAR-FS layout, for work without the
//!   real data;
//! - [`augment`]: the train-time augmentation and the normalisation;
//! - [`episodes`]: [`EpisodeSampler`], which draws seeded batches of episodes as the
//!   network's input sequence ([`FscBatch`]);
//! - [`baseline`]: the raw-pixel nearest-neighbour baseline.
//!
//! The model (`docs/fsc.md` §5): [`cnn`] (ProtoNet conv4 or ResNet-12 behind
//! [`cnn::Backbone`], projection) and [`model`]
//! (CNN → projection → plastic RNN).
//!
//! Training (`docs/fsc.md` §6–§7):
//! - [`config`]: [`FscConfig`], every knob of an `fsc` run, TOML and `key=value`;
//! - [`run`]: the meta-training protocol in a run folder, resume, test;
//! - [`trainer`]: the training loop that `run` and pretraining share (batch → step → loss →
//!   optimiser → logs, checkpoint, resume);
//! - [`memory`]: the memory a run needs, estimated from its configuration;
//! - [`sweep`]: the paper's image experiments (`fsc`, `fsc_resnet`) as sweeps of runs,
//!   the data check before they start and time estimates.
//! - [`cache`]: the embedding cache of a frozen CNN.
//!
//! Pretraining (`docs/fsc.md` §7–§8): [`pretrain`] (classification and SimCLR, their
//! losses, heads, augmentation and run folder; the CNN it leaves starts an fsc run with
//! `cnn_from`, frozen or fine-tuned).

pub mod augment;
pub mod baseline;
pub mod cache;
pub mod cnn;
pub mod config;
pub mod dataset;
pub mod episodes;
pub mod memory;
pub mod model;
pub mod pickle;
pub mod pretrain;
pub mod procedural;
pub mod run;
mod runfiles;
pub mod sweep;
pub mod trainer;

pub use config::{FscConfig, ImageSource};
pub use dataset::{DatasetKind, ImageDataset, Phase};
pub use episodes::{EpisodeConfig, EpisodeSampler, FscBatch};
