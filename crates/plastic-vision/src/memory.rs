//! How much memory an `fsc` training run needs, estimated from its configuration
//! (`docs/fsc.md` §5–§6): what one training step keeps for its backward pass (the CNN's
//! activations of all T steps of the batch, [`crate::cnn::BackboneConfig::tape_floats_per_image`]), the
//! largest block's transient buffers, the parameter-sized buffers of the trainer and its
//! checkpoint, the plastic RNN's per-thread workspace, and the image data set in memory.
//!
//! Checked against the peak resident memory `/usr/bin/time -v` reports, with the CNN's
//! buffers kept from step to step: a ResNet-12 run on the procedural set (32×32), batch
//! 16, f32, 2 threads, 3 updates, `test_batch = 2`: estimated 1,169,780 kB, measured
//! 1,202,348 kB; the same at batch 64 (the `fsc_resnet` CIFAR-FS size), 1 update,
//! `test_batch = 1`: estimated 2,465,799 kB, measured 2,447,012 kB. The training step
//! alone (`plastic bench --fsc`, whose process holds 40 images instead of a data set):
//! ProtoNet at 84×84, estimated 2.62 GB, measured 2.64 GB (2,577,580 kB); at 32×32, 571 MB
//! against 598 MB.

use std::fmt;

use crate::config::{FscConfig, ImageSource};

/// Estimated peak memory of an fsc training run, in bytes, by part.
#[derive(Debug, Clone, PartialEq)]
pub struct FscMemoryEstimate {
    /// The CNN activations one training step keeps for its backward pass (all T steps of
    /// the batch).
    pub cnn_tape: f64,
    /// The CNN's buffers besides the tapes: those the model keeps from one training step
    /// to the next (the largest block's outputs and gradients,
    /// [`crate::cnn::BackboneConfig::workspace_floats`]) and the im2col buffers of every
    /// thread.
    pub cnn_transient: f64,
    /// Parameters, gradient, best parameters, AdamW moments.
    pub parameters: f64,
    /// The checkpoint while it is serialised (at a log, not during a training step).
    pub checkpoint: f64,
    /// The plastic RNN's records and per-thread workspaces.
    pub rnn: f64,
    /// The images of the three phases (bytes) and one batch of episodes (floats).
    pub data: f64,
    /// The process itself (code, thread stacks, allocator).
    pub base: f64,
}

impl FscMemoryEstimate {
    /// The peak in bytes: what is always there, plus the larger of a training step's
    /// activations and the checkpoint being written.
    pub fn total(&self) -> f64 {
        let step = self.cnn_tape + self.cnn_transient + self.rnn;
        self.parameters + self.data + self.base + step.max(self.checkpoint)
    }
}

/// `bytes` in binary units (`1.5 GiB`).
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl fmt::Display for FscMemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (CNN activations kept for backward {}, CNN transient {}, parameters and \
             optimiser {}, checkpoint {}, plastic RNN {}, data {}, process {})",
            human_bytes(self.total()),
            human_bytes(self.cnn_tape),
            human_bytes(self.cnn_transient),
            human_bytes(self.parameters),
            human_bytes(self.checkpoint),
            human_bytes(self.rnn),
            human_bytes(self.data),
            human_bytes(self.base)
        )
    }
}

/// Images in memory for the three phases: the standard CIFAR-FS and miniImageNet files hold
/// 100 classes × 600 images (docs/fsc.md §1); the procedural set its configured count.
fn images_in_memory(config: &FscConfig) -> f64 {
    match config.image_dataset {
        ImageSource::Procedural => {
            let p = config.procedural_config();
            ((p.train_classes + p.val_classes + p.test_classes) * p.images_per_class) as f64
        }
        _ => 60_000.0,
    }
}

/// Estimates the peak memory of training `config` with `threads` worker threads.
pub fn estimate(config: &FscConfig, threads: usize) -> FscMemoryEstimate {
    let s = if config.dtype == "f64" { 8.0 } else { 4.0 };
    let cnn = config.backbone();
    let b = config.batch_size as f64;
    let t = (config.way * (config.shot + config.query)) as f64;
    let threads = threads.max(1) as f64;
    // one CNN call per step on B images; every step's tape lives until the backward pass
    let images = b * t;
    let cnn_tape = images * cnn.tape_floats_per_image() as f64 * s;
    // the CNN's workspace besides the tapes (kept from step to step: the largest block's
    // buffers), plus each busy thread's im2col columns and GEMM output for its chunk of
    // images (at most 8192 positions, docs/cnn-library.md) in the convolution that needs
    // the most
    let mut columns: f64 = 0.0;
    for (cin, cout, side) in cnn.convs() {
        let plane = (side * side) as f64;
        let per_chunk = (8192.0 / plane).floor().max(1.0).min(b);
        let chunks = (b / per_chunk).ceil();
        columns =
            columns.max(threads.min(chunks) * per_chunk * plane * (9.0 * cin as f64 + cout as f64));
    }
    let cnn_transient = (cnn.workspace_floats(config.batch_size) as f64 + columns) * s;
    // the model's parameters
    let net = config.network_config();
    let (h, d) = (net.hidden_size as f64, net.full_output_size() as f64);
    let gh = net.gates() as f64 * h;
    // rec.w_i, rec.w_h (H × gH each) and out (H × D), with biases; α doubles them
    let rnn_weights = 2.0 * (h * gh + gh) + h * d + d;
    let rnn_params = rnn_weights * if net.has_alpha() { 2.0 } else { 1.0 } + d;
    let f = cnn.feature_size() as f64;
    let p = cnn.param_len() as f64 + (f + 1.0) * (h - config.way as f64) + rnn_params;
    // params, gradient (and its copy in the step result), best, AdamW m, v, v_max; the
    // checkpoint holds seven parameter-sized groups and is built in memory before it is
    // written
    let parameters = p * 7.0 * s;
    let checkpoint = 7.0 * p * s;
    // the RNN (docs/algorithm.md §3): per episode and step a record of about 10 H + 3 gH +
    // 2 D floats and the plastic weights' snapshots, for the episodes a thread works on
    let plastic = if net.is_plastic() { rnn_weights } else { 0.0 };
    let stride = 10.0 * h + 3.0 * gh + 2.0 * d + 16.0;
    let workers = threads.min(b);
    // the engine splits the batch into at most 16 chunks of episodes, each summing its
    // gradient in its own parameter-sized buffer (kept in the engine's pool)
    let rnn = workers * (t * stride + (t + 1.0) * plastic + 40.0 * gh) * s
        + b.min(16.0) * rnn_params * s
        + b * t * (3.0 * (h + gh) + (h + d)) * s
        // the RNN input and its gradient, features and embeddings of every step
        + images * (2.0 * h + 2.0 * f) * s;
    let image_len = cnn.image_len() as f64;
    let data = images_in_memory(config) * image_len + 2.0 * images * image_len * s;
    FscMemoryEstimate {
        cnn_tape,
        cnn_transient,
        parameters,
        checkpoint,
        rnn,
        data,
        base: 16.0 * 1024.0 * 1024.0 + threads * 2.0 * 1024.0 * 1024.0,
    }
}

/// The memory the CNN of `config` needs per image for backward, in bytes (for tables).
pub fn cnn_tape_bytes_per_image(config: &FscConfig) -> f64 {
    let s = if config.dtype == "f64" { 8.0 } else { 4.0 };
    config.backbone().tape_floats_per_image() as f64 * s
}
