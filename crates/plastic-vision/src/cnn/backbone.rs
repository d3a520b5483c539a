//! The CNN of an fsc model behind one type (docs/fsc.md §5.1): ProtoNet conv4 or ResNet-12,
//! with the operations the model needs (parameters, BatchNorm buffers, training-mode forward
//! with a tape, evaluation-mode forward, backward).

use plastic::params::ParamInfo;
use plastic::rng::Rng;
use plastic::{Error, Float, Result};

use super::protonet::{BatchNormBuffers, ProtoNet, ProtoNetConfig, ProtoNetTape};
use super::resnet::{ResNet12, ResNet12Config, ResNet12Tape};
use super::workspace::CnnWorkspace;

/// The shape of one of the CNNs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackboneConfig {
    /// ProtoNet conv4 (docs/fsc.md §5.1).
    ProtoNet(ProtoNetConfig),
    /// ResNet-12 (docs/fsc.md §5.1).
    ResNet12(ResNet12Config),
}

impl BackboneConfig {
    /// Checks the shape (sizes that can be pooled, widths at least 1).
    pub fn check(&self) -> Result<()> {
        match self {
            BackboneConfig::ProtoNet(c) => c.check(),
            BackboneConfig::ResNet12(c) => c.check(),
        }
    }

    /// The configuration name of the CNN (`protonet`, `resnet12`).
    pub fn name(&self) -> &'static str {
        match self {
            BackboneConfig::ProtoNet(_) => "protonet",
            BackboneConfig::ResNet12(_) => "resnet12",
        }
    }

    /// Floats per input image (C·S·S).
    pub fn image_len(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => c.image_len(),
            BackboneConfig::ResNet12(c) => c.image_len(),
        }
    }

    /// Image height = width.
    pub fn image_size(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => c.image_size,
            BackboneConfig::ResNet12(c) => c.image_size,
        }
    }

    /// The flattened output size F.
    pub fn feature_size(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => c.feature_size(),
            BackboneConfig::ResNet12(c) => c.feature_size(),
        }
    }

    /// The parameters, named as the reference fixtures, from `offset` on.
    pub fn param_infos(&self, offset: usize) -> Vec<ParamInfo> {
        match self {
            BackboneConfig::ProtoNet(c) => c.param_infos(offset),
            BackboneConfig::ResNet12(c) => c.param_infos(offset),
        }
    }

    /// Number of parameters.
    pub fn param_len(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => c.param_len(),
            BackboneConfig::ResNet12(c) => c.param_len(),
        }
    }

    /// Seeded initialisation as the reference's (docs/fsc.md §5.1).
    pub fn init_params<F: Float>(&self, rng: &mut Rng) -> Vec<F> {
        match self {
            BackboneConfig::ProtoNet(c) => c.init_params(rng),
            BackboneConfig::ResNet12(c) => c.init_params(rng),
        }
    }

    /// Every BatchNorm layer: its name prefix (`cnn.0.bn`, `cnn.layer1.bn1`, ...; the buffers
    /// are `{prefix}.running_mean`, `.running_var`, `.num_batches_tracked`) and its
    /// channels, in the order of [`Self::new_buffers`].
    pub fn batch_norms(&self) -> Vec<(String, usize)> {
        match self {
            BackboneConfig::ProtoNet(c) => (0..super::BLOCKS)
                .map(|k| (format!("cnn.{k}.bn"), c.channels))
                .collect(),
            BackboneConfig::ResNet12(c) => c.batch_norms(),
        }
    }

    /// Fresh BatchNorm buffers (mean 0, variance 1), one per entry of
    /// [`Self::batch_norms`].
    pub fn new_buffers<F: Float>(&self) -> Vec<BatchNormBuffers<F>> {
        self.batch_norms()
            .into_iter()
            .map(|(_, c)| BatchNormBuffers::new(c))
            .collect()
    }

    /// Floats per image that a training-mode forward keeps for the backward pass.
    pub fn tape_floats_per_image(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => (0..super::BLOCKS)
                .map(|k| {
                    let s = c.side(k);
                    (c.cin(k) + c.channels) * s * s
                })
                .sum(),
            BackboneConfig::ResNet12(c) => c.tape_floats_per_image(),
        }
    }

    /// Floats that the workspace of a training step on `batch` images holds besides the
    /// tapes ([`super::CnnWorkspace`]): the largest block's arrays (ProtoNet: its ReLU
    /// output and that output's gradient; ResNet-12: three of them) and the largest
    /// gradient with respect to a block's input, twice (ResNet-12: three times, the
    /// shortcut's too).
    pub fn workspace_floats(&self, batch: usize) -> usize {
        let (copies, largest_block, largest_input) = match self {
            BackboneConfig::ProtoNet(c) => (
                2,
                (0..super::BLOCKS)
                    .map(|k| c.channels * c.side(k) * c.side(k))
                    .max(),
                (1..super::BLOCKS)
                    .map(|k| c.cin(k) * c.side(k) * c.side(k))
                    .max(),
            ),
            BackboneConfig::ResNet12(c) => (
                3,
                (0..super::RESNET_BLOCKS)
                    .map(|l| c.widths[l] * c.side(l) * c.side(l))
                    .max(),
                (1..super::RESNET_BLOCKS)
                    .map(|l| c.cin(l) * c.side(l) * c.side(l))
                    .max(),
            ),
        };
        batch * copies * (largest_block.unwrap_or(0) + largest_input.unwrap_or(0))
    }

    /// Every 3×3 convolution as (input channels, output channels, side), for memory
    /// estimates.
    pub fn convs(&self) -> Vec<(usize, usize, usize)> {
        match self {
            BackboneConfig::ProtoNet(c) => (0..super::BLOCKS)
                .map(|k| (c.cin(k), c.channels, c.side(k)))
                .collect(),
            BackboneConfig::ResNet12(c) => (0..super::RESNET_BLOCKS)
                .flat_map(|l| {
                    let (w, s) = (c.widths[l], c.side(l));
                    [(c.cin(l), w, s), (w, w, s), (w, w, s)]
                })
                .collect(),
        }
    }

    /// Whether a training-mode forward draws random numbers (dropout, DropBlock).
    pub fn is_stochastic(&self) -> bool {
        match self {
            BackboneConfig::ProtoNet(_) => false,
            BackboneConfig::ResNet12(c) => c.is_stochastic(),
        }
    }
}

/// Where a training-mode forward pass draws its dropout and DropBlock masks from: the
/// run's `seed` and the number `call` of this forward call of the CNN (counting from 1,
/// training and evaluation calls alike, as the reference; it also sets DropBlock's keep
/// rate, docs/fsc.md §5.1), so that a resumed run draws the same masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noise {
    /// The run's seed.
    pub seed: u64,
    /// This forward call's number (1 for the first).
    pub call: u64,
}

/// What a training-mode forward pass keeps for its backward pass.
#[derive(Debug, Clone)]
pub enum BackboneTape<F> {
    /// A ProtoNet's tape.
    ProtoNet(ProtoNetTape<F>),
    /// A ResNet-12's tape.
    ResNet12(ResNet12Tape<F>),
}

impl<F> BackboneTape<F> {
    /// Floats allocated (capacity).
    pub(crate) fn floats(&self) -> usize {
        match self {
            BackboneTape::ProtoNet(t) => t.floats(),
            BackboneTape::ResNet12(t) => t.floats(),
        }
    }
}

/// One of the CNNs, computing over a parameter slice laid out as
/// [`BackboneConfig::param_infos`].
#[derive(Debug, Clone, Copy)]
pub enum Backbone {
    /// ProtoNet conv4.
    ProtoNet(ProtoNet),
    /// ResNet-12.
    ResNet12(ResNet12),
}

impl Backbone {
    /// The CNN of this shape (checked).
    pub fn new(config: BackboneConfig) -> Result<Self> {
        match config {
            BackboneConfig::ProtoNet(c) => Ok(Backbone::ProtoNet(ProtoNet::new(c)?)),
            BackboneConfig::ResNet12(c) => Ok(Backbone::ResNet12(ResNet12::new(c)?)),
        }
    }

    /// Its shape.
    pub fn config(&self) -> BackboneConfig {
        match self {
            Backbone::ProtoNet(n) => BackboneConfig::ProtoNet(n.config),
            Backbone::ResNet12(n) => BackboneConfig::ResNet12(n.config),
        }
    }

    /// Training-mode forward of `batch` images (N, C, S, S): BatchNorm with batch
    /// statistics (the running statistics in `buffers`, if given, updated once each);
    /// dropout and DropBlock drawn from `noise` (none: no dropout). Returns the features
    /// (N, F) and the tape for [`Self::backward`].
    pub fn forward_train<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: Option<&mut [BatchNormBuffers<F>]>,
        noise: Option<Noise>,
    ) -> Result<(Vec<F>, BackboneTape<F>)> {
        match self {
            Backbone::ProtoNet(n) => {
                let (f, t) = n.forward_train(params, images, batch, buffers)?;
                Ok((f, BackboneTape::ProtoNet(t)))
            }
            Backbone::ResNet12(n) => {
                let (f, t) = n.forward_train(params, images, batch, buffers, noise)?;
                Ok((f, BackboneTape::ResNet12(t)))
            }
        }
    }

    /// [`Self::forward_train`] with the tape kept in `work`'s `slot` (any number: one per
    /// forward pass whose backward pass is still to come) and every buffer taken from
    /// `work`, reused from earlier calls (grown if needed); the same results. The tape
    /// stays there for [`Self::backward_in`] with the same slot, until the slot's next
    /// forward pass overwrites it.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_train_in<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: Option<&mut [BatchNormBuffers<F>]>,
        noise: Option<Noise>,
        work: &mut CnnWorkspace<F>,
        slot: usize,
    ) -> Result<Vec<F>> {
        if work.tapes.len() <= slot {
            work.tapes.resize_with(slot + 1, || self.empty_tape());
        }
        let tape = &mut work.tapes[slot];
        if std::mem::discriminant(tape) != std::mem::discriminant(&self.empty_tape::<F>()) {
            *tape = self.empty_tape();
        }
        match (self, tape) {
            (Backbone::ProtoNet(n), BackboneTape::ProtoNet(t)) => {
                n.forward_train_into(params, images, batch, buffers, t, &mut work.scratch)
            }
            (Backbone::ResNet12(n), BackboneTape::ResNet12(t)) => {
                n.forward_train_into(params, images, batch, buffers, noise, t, &mut work.scratch)
            }
            _ => Err(Error::Data(
                "internal: the workspace's tape is not this CNN's".into(),
            )),
        }
    }

    /// [`Self::backward`] of the forward pass whose tape [`Self::forward_train_in`] kept in
    /// `work`'s `slot`, with its transient buffers taken from `work`.
    pub fn backward_in<F: Float>(
        &self,
        params: &[F],
        work: &mut CnnWorkspace<F>,
        slot: usize,
        d_features: &[F],
        grads: &mut [F],
        d_images: Option<&mut [F]>,
    ) -> Result<()> {
        let tape = work.tapes.get(slot).ok_or_else(|| {
            Error::Data(format!(
                "the CNN's backward pass found no tape in slot {slot} (the workspace holds {})",
                work.tapes.len()
            ))
        })?;
        let scratch = &mut work.scratch;
        match (self, tape) {
            (Backbone::ProtoNet(n), BackboneTape::ProtoNet(t)) => {
                n.backward_into(params, t, d_features, grads, d_images, scratch)
            }
            (Backbone::ResNet12(n), BackboneTape::ResNet12(t)) => {
                n.backward_into(params, t, d_features, grads, d_images, scratch)
            }
            _ => Err(Error::Data(
                "the CNN's backward pass got the tape of another CNN".into(),
            )),
        }
    }

    /// An empty tape of this CNN.
    fn empty_tape<F>(&self) -> BackboneTape<F> {
        match self {
            Backbone::ProtoNet(_) => BackboneTape::ProtoNet(ProtoNetTape::default()),
            Backbone::ResNet12(_) => BackboneTape::ResNet12(ResNet12Tape::default()),
        }
    }

    /// Evaluation-mode forward (running statistics, unchanged; no dropout): features (N, F).
    pub fn forward_eval<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: &[BatchNormBuffers<F>],
    ) -> Result<Vec<F>> {
        match self {
            Backbone::ProtoNet(n) => n.forward_eval(params, images, batch, buffers),
            Backbone::ResNet12(n) => n.forward_eval(params, images, batch, buffers),
        }
    }

    /// Backward of [`Self::forward_train`]: adds `d loss / d params` to `grads` given
    /// `d_features` (N, F); writes `d loss / d images` into `d_images` if given.
    pub fn backward<F: Float>(
        &self,
        params: &[F],
        tape: &BackboneTape<F>,
        d_features: &[F],
        grads: &mut [F],
        d_images: Option<&mut [F]>,
    ) -> Result<()> {
        match (self, tape) {
            (Backbone::ProtoNet(n), BackboneTape::ProtoNet(t)) => {
                n.backward_with_images(params, t, d_features, grads, d_images)
            }
            (Backbone::ResNet12(n), BackboneTape::ResNet12(t)) => {
                n.backward(params, t, d_features, grads, d_images)
            }
            _ => Err(Error::Data(
                "the CNN's backward pass got the tape of another CNN".into(),
            )),
        }
    }
}
