//! CNN pretraining (docs/fsc.md §8): a CNN learns on single images of the training classes,
//! either by classifying them (a linear head, cross-entropy) or by SimCLR (two augmented
//! views per image, a two-layer projection head, NT-Xent); the CNN it leaves can then start
//! an fsc run, frozen or fine-tuned (`cnn_from`, docs/fsc.md §5.3).
//!
//! - [`loss`]: the cross-entropy and NT-Xent losses with their hand-derived gradients;
//! - [`head`]: the classification and SimCLR heads;
//! - [`views`]: SimCLR's two-view augmentation.

pub mod head;
pub mod loss;
pub mod views;

pub use head::Head;
pub use loss::{cross_entropy, nt_xent, LossGrad, SIMCLR_TEMPERATURE};
pub mod config;
pub mod data;
pub mod model;
pub mod run;

pub use config::{PretrainConfig, PretrainKind};
pub use model::{PretrainModel, Target};
