//! The model a CNN is pretrained in (docs/fsc.md §8): the CNN, then a head (a linear
//! classifier or SimCLR's two-layer projection), with one flat parameter buffer (CNN first,
//! then head) and the CNN's BatchNorm running statistics.

use plastic::params::ParamInfo;
use plastic::rng::Rng;
use plastic::{Error, Float, Result};

use super::head::Head;
use super::loss::{cross_entropy, nt_xent};
use crate::cnn::{Backbone, BackboneConfig, BatchNormBuffers, CnnWorkspace, Noise};

/// What the loss compares the head's outputs with.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// One class index per image (classification).
    Labels(&'a [usize]),
    /// Rows `r` and `r + N` are two views of one image (SimCLR), with this temperature.
    Views {
        /// NT-Xent temperature.
        temperature: f64,
    },
}

/// The loss, the count of right predictions and (for a training step) the gradient.
#[derive(Debug, Clone)]
pub struct PretrainStep<F> {
    /// Mean loss over the batch's rows.
    pub loss: f64,
    /// Rows predicted right (top-1 class, or the positive as the most similar row).
    pub correct: usize,
    /// Rows in the batch (images, or views for SimCLR).
    pub rows: usize,
    /// `d loss / d params` (empty in evaluation).
    pub grads: Vec<F>,
}

/// CNN + pretraining head.
#[derive(Debug, Clone)]
pub struct PretrainModel<F: Float> {
    cnn: Backbone,
    cnn_config: BackboneConfig,
    head: Head,
    layout: Vec<ParamInfo>,
    params: Vec<F>,
    buffers: Vec<BatchNormBuffers<F>>,
    seed: u64,
    calls: u64,
    /// The CNN's tape and transient buffers, kept from one training step to the next.
    cnn_work: CnnWorkspace<F>,
}

impl<F: Float> PretrainModel<F> {
    /// A model with seeded initial parameters: the CNN from the same stream of `seed` as an
    /// fsc model's CNN, the head from its own stream; fresh BatchNorm statistics.
    pub fn new(cnn_config: BackboneConfig, head: Head, seed: u64) -> Result<Self> {
        cnn_config.check()?;
        if head.input() != cnn_config.feature_size() {
            return Err(Error::Config(format!(
                "the head reads {} features but the CNN gives {}",
                head.input(),
                cnn_config.feature_size()
            )));
        }
        let cnn = Backbone::new(cnn_config)?;
        let cnn_len = cnn_config.param_len();
        let mut layout = cnn_config.param_infos(0);
        layout.extend(head.param_infos(cnn_len));
        let mut params = cnn_config.init_params::<F>(&mut Rng::with_stream(seed, 101));
        params.extend(head.init_params::<F>(&mut Rng::with_stream(seed, 103)));
        Ok(PretrainModel {
            cnn,
            cnn_config,
            head,
            layout,
            params,
            buffers: cnn_config.new_buffers(),
            seed,
            calls: 1,
            cnn_work: CnnWorkspace::new(),
        })
    }

    /// The CNN's shape.
    pub fn cnn_config(&self) -> BackboneConfig {
        self.cnn_config
    }

    /// The head.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Every parameter's name, shape and place (CNN, then head).
    pub fn param_infos(&self) -> Vec<ParamInfo> {
        self.layout.clone()
    }

    /// All parameters.
    pub fn params(&self) -> &[F] {
        &self.params
    }

    /// All parameters, mutable (the optimiser's view).
    pub fn params_mut(&mut self) -> &mut [F] {
        &mut self.params
    }

    /// Frees the memory the CNN's training-mode passes keep between training steps (the
    /// next step allocates it again).
    pub fn release_memory(&mut self) {
        self.cnn_work.release();
    }

    /// The CNN's forward calls so far, training and evaluation, counting the reference's
    /// construction probe as the first (they set a ResNet-12's DropBlock keep rate and,
    /// with the seed, its masks; docs/fsc.md §5.1).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Restores the count of forward calls (from a checkpoint).
    pub fn set_calls(&mut self, calls: u64) {
        self.calls = calls;
    }

    /// The BatchNorm buffers' names and shapes, flat: for each BatchNorm layer,
    /// `{prefix}.running_mean`, `{prefix}.running_var`, `{prefix}.num_batches_tracked` (the
    /// names an fsc model's CNN has).
    pub fn buffer_infos(&self) -> Vec<ParamInfo> {
        let mut infos = Vec::new();
        let mut offset = 0;
        for (prefix, c) in self.cnn_config.batch_norms() {
            for (name, len) in [
                ("running_mean", c),
                ("running_var", c),
                ("num_batches_tracked", 1),
            ] {
                infos.push(ParamInfo {
                    name: format!("{prefix}.{name}"),
                    shape: vec![len],
                    offset,
                    trainable: false,
                });
                offset += len;
            }
        }
        infos
    }

    /// The BatchNorm buffers, flat in [`Self::buffer_infos`] order.
    pub fn buffers(&self) -> Vec<F> {
        let mut out = Vec::new();
        for b in &self.buffers {
            out.extend_from_slice(&b.running_mean);
            out.extend_from_slice(&b.running_var);
            out.push(F::of(b.num_batches_tracked as f64));
        }
        out
    }

    /// Restores the buffers from [`Self::buffers`]' layout.
    pub fn set_buffers(&mut self, values: &[F]) -> Result<()> {
        let total: usize = self.buffer_infos().iter().map(ParamInfo::len).sum();
        if values.len() != total {
            return Err(Error::Data(format!(
                "BatchNorm buffers: {} values, expected {total}",
                values.len()
            )));
        }
        let mut at = 0;
        for b in &mut self.buffers {
            let c = b.running_mean.len();
            b.running_mean.copy_from_slice(&values[at..at + c]);
            b.running_var.copy_from_slice(&values[at + c..at + 2 * c]);
            let n = values[at + 2 * c].f64();
            if !(n >= 0.0 && n.fract() == 0.0) {
                return Err(Error::Data(format!(
                    "num_batches_tracked must be a whole number >= 0, got {n}"
                )));
            }
            b.num_batches_tracked = n as u64;
            at += 2 * c + 1;
        }
        Ok(())
    }

    fn check(&self, images: &[F], rows: usize, target: Target<'_>) -> Result<()> {
        if rows == 0 || images.len() != rows * self.cnn_config.image_len() {
            return Err(Error::Data(format!(
                "pretraining batch: {} floats for {rows} images of {} floats",
                images.len(),
                self.cnn_config.image_len()
            )));
        }
        if let Target::Labels(l) = target {
            if l.len() != rows {
                return Err(Error::Data(format!(
                    "pretraining batch: {} labels for {rows} images",
                    l.len()
                )));
            }
        }
        Ok(())
    }

    fn loss(&self, out: &[F], rows: usize, target: Target<'_>) -> Result<super::LossGrad<F>> {
        match target {
            Target::Labels(labels) => cross_entropy(out, labels, self.head.output()),
            Target::Views { temperature } => nt_xent(out, rows, self.head.output(), temperature),
        }
    }

    /// One training step on `rows` images (N, C, S, S): the CNN in training mode (batch
    /// statistics over the whole batch, running statistics updated once), the head, the
    /// loss, and the gradient of every parameter.
    pub fn train_step(
        &mut self,
        images: &[F],
        rows: usize,
        target: Target<'_>,
    ) -> Result<PretrainStep<F>> {
        self.check(images, rows, target)?;
        let cnn_len = self.cnn_config.param_len();
        // numbered from 1 like an fsc model's calls (the reference's construction probe is
        // call 1), evaluation calls included
        self.calls += 1;
        let noise = Noise {
            seed: self.seed,
            call: self.calls,
        };
        let (cnn_params, head_params) = self.params.split_at(cnn_len);
        let features = self.cnn.forward_train_in(
            cnn_params,
            images,
            rows,
            Some(&mut self.buffers),
            Some(noise),
            &mut self.cnn_work,
            0,
        )?;
        let (out, head_tape) = self.head.forward(head_params, &features, rows)?;
        let lg = self.loss(&out, rows, target)?;
        let mut grads = vec![F::zero(); self.params.len()];
        let (g_cnn, g_head) = grads.split_at_mut(cnn_len);
        let d_features = self
            .head
            .backward(head_params, &head_tape, &lg.grad, g_head)?;
        self.cnn
            .backward_in(cnn_params, &mut self.cnn_work, 0, &d_features, g_cnn, None)?;
        Ok(PretrainStep {
            loss: lg.loss,
            correct: lg.correct,
            rows,
            grads,
        })
    }

    /// The loss and right predictions in evaluation mode (running statistics, unchanged).
    pub fn evaluate(
        &self,
        images: &[F],
        rows: usize,
        target: Target<'_>,
    ) -> Result<PretrainStep<F>> {
        self.check(images, rows, target)?;
        let cnn_len = self.cnn_config.param_len();
        let (cnn_params, head_params) = self.params.split_at(cnn_len);
        let features = self
            .cnn
            .forward_eval(cnn_params, images, rows, &self.buffers)?;
        let (out, _) = self.head.forward(head_params, &features, rows)?;
        let lg = self.loss(&out, rows, target)?;
        Ok(PretrainStep {
            loss: lg.loss,
            correct: lg.correct,
            rows,
            grads: Vec::new(),
        })
    }
}
