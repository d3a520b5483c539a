//! The fsc model (docs/fsc.md §4–§5): at every step a CNN embeds that step's image of each
//! episode, a projection + ReLU maps the features to H − E, the extra input (the one-hot
//! label at support steps, zeros at query steps) is appended, and the plastic RNN without
//! its input layer reads the resulting H-vector. The loss is the cross-entropy over the
//! query steps; the accuracy counts the first query step.
//!
//! All parameters live in one flat buffer, in the order CNN, projection, RNN (the RNN's own
//! [`plastic::Layout`] order), so that an optimiser can update them as one slice; the
//! gradient has the same layout.

use std::collections::BTreeMap;

use plastic::engine::{Engine, GradRequest};
use plastic::params::{NamedTensor, ParamInfo};
use plastic::rng::Rng;
use plastic::{Episodes, Error, Float, Loss, Network, NetworkConfig, Result};

use crate::cnn::{Backbone, BackboneConfig, BatchNormBuffers, CnnWorkspace, Noise, Projection};

/// The shape of an fsc model.
#[derive(Debug, Clone, PartialEq)]
pub struct FscConfig {
    /// The CNN.
    pub cnn: BackboneConfig,
    /// The plastic RNN; `input_layer` must be off and `input_size == hidden_size` (H).
    pub network: NetworkConfig,
    /// Size E of the extra input appended to the projection (the way, 5).
    pub extra_input_dim: usize,
}

impl FscConfig {
    /// Checks the pieces fit together.
    pub fn check(&self) -> Result<()> {
        self.cnn.check()?;
        self.network.validate()?;
        let h = self.network.hidden_size;
        if self.network.input_layer {
            return Err(Error::Config(
                "the fsc model feeds the RNN without its input layer: set input_layer = false"
                    .into(),
            ));
        }
        if self.extra_input_dim == 0 || self.extra_input_dim >= h {
            return Err(Error::Config(format!(
                "extra_input_dim must be in 1..hidden_size ({h}), got {}",
                self.extra_input_dim
            )));
        }
        Ok(())
    }

    /// The projection's output size H − E.
    pub fn proj_size(&self) -> usize {
        self.network.hidden_size - self.extra_input_dim
    }
}

/// One batch of episodes for the fsc model.
#[derive(Debug, Clone, PartialEq)]
pub struct FscBatch<F> {
    /// Episodes B.
    pub batch: usize,
    /// Steps T.
    pub steps: usize,
    /// First query step (the loss covers steps `test_begin..T`).
    pub test_begin: usize,
    /// Images (B, T, C, S, S).
    pub images: Vec<F>,
    /// Extra input (B, T, E).
    pub extra_input: Vec<F>,
    /// Class of each step's image (B, T), in `0..output_size`.
    pub labels: Vec<usize>,
}

/// What a forward pass computes, for inspection and tests.
#[derive(Debug, Clone)]
pub struct FscForward<F> {
    /// CNN features (B, T, F).
    pub cnn_features: Vec<F>,
    /// RNN input `[relu(proj(features)), extra_input]` (B, T, H).
    pub rnn_input: Vec<F>,
    /// The RNN's forward pass (outputs, η, λ, inner loss, loss).
    pub rnn: plastic::Forward<F>,
    /// Episodes whose first query step is classified correctly (argmax).
    pub correct_first_query: usize,
}

/// The loss, the accuracy count and the gradient of every parameter.
#[derive(Debug, Clone)]
pub struct FscGradient<F> {
    /// The episode loss.
    pub loss: F,
    /// Episodes whose first query step is classified correctly.
    pub correct_first_query: usize,
    /// `d loss / d parameter`, in [`FscModel::layout`] order.
    pub grads: Vec<F>,
}

/// CNN → projection → plastic RNN (docs/fsc.md §5).
#[derive(Debug)]
pub struct FscModel<F: Float> {
    config: FscConfig,
    cnn: Backbone,
    proj: Projection,
    layout: Vec<ParamInfo>,
    params: Vec<F>,
    buffers: Vec<BatchNormBuffers<F>>,
    /// The CNN's forward calls so far (training and evaluation), which set DropBlock's keep
    /// rate and, with `noise_seed`, its masks (docs/fsc.md §5.1).
    cnn_calls: u64,
    noise_seed: u64,
    /// A frozen CNN (docs/fsc.md §5.3): evaluation mode, no gradient, not trained.
    frozen_cnn: bool,
    net: Network<F>,
    /// The CNN's tapes (one per episode step, slot `t`) and transient buffers, kept from
    /// one training step to the next.
    cnn_work: CnnWorkspace<F>,
}

/// The CNN's forward calls before the first one of a new model: the reference's
/// construction probe counts as one (docs/fsc.md §5.1, §9).
const FIRST_CNN_CALL: u64 = 1;

/// The name of the CNN's forward-call counter among the buffers (CNNs with dropout only).
pub const CNN_CALLS_BUFFER: &str = "cnn.forward_calls";

/// Per-step quantities kept for the backward pass.
struct StepRecord<F> {
    features: Vec<F>,
    embedded: Vec<F>,
    /// Whether the CNN ran in training mode, its tape in the workspace's slot of the step.
    taped: bool,
}

impl<F: Float> FscModel<F> {
    /// A model with seeded initial parameters (CNN, then projection, then RNN, each from
    /// its own stream of `seed`) and fresh BatchNorm statistics.
    pub fn new(config: FscConfig, seed: u64) -> Result<Self> {
        config.check()?;
        let net = Network::<F>::new(config.network.clone(), seed)?;
        let (cnn, proj, layout) = Self::pieces(&config, net.layout().infos())?;
        let mut params = config
            .cnn
            .init_params::<F>(&mut Rng::with_stream(seed, 101));
        params.extend(proj.init_params::<F>(&mut Rng::with_stream(seed, 102)));
        params.extend_from_slice(net.params());
        Ok(FscModel {
            buffers: config.cnn.new_buffers(),
            cnn_calls: FIRST_CNN_CALL,
            noise_seed: seed,
            frozen_cnn: false,
            config,
            cnn,
            proj,
            layout,
            params,
            net,
            cnn_work: CnnWorkspace::new(),
        })
    }

    /// A model from named parameters (every parameter present with its shape) and named
    /// BatchNorm buffers (`cnn.{k}.bn.running_mean/running_var/num_batches_tracked`, the
    /// last a one-element tensor); missing buffers are an error.
    pub fn from_named(
        config: FscConfig,
        params: &BTreeMap<String, NamedTensor>,
        buffers: &BTreeMap<String, NamedTensor>,
    ) -> Result<Self> {
        config.check()?;
        let rnn: BTreeMap<String, NamedTensor> = params
            .iter()
            .filter(|(k, _)| !k.starts_with("cnn.") && !k.starts_with("proj."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let net = Network::<F>::from_named(config.network.clone(), &rnn)?;
        let (cnn, proj, layout) = Self::pieces(&config, net.layout().infos())?;
        let mut flat = vec![F::zero(); layout.last().map_or(0, |i| i.offset + i.len())];
        for info in &layout {
            let t = params.get(&info.name).ok_or_else(|| Error::MissingParam {
                name: info.name.clone(),
                expected: info.shape.clone(),
            })?;
            if t.shape != info.shape {
                return Err(Error::ParamShape {
                    name: info.name.clone(),
                    expected: info.shape.clone(),
                    found: t.shape.clone(),
                });
            }
            for (d, &s) in flat[info.range()].iter_mut().zip(&t.data) {
                *d = F::of(s);
            }
        }
        for name in params.keys() {
            if !layout.iter().any(|i| &i.name == name) {
                return Err(Error::UnknownParam {
                    name: name.clone(),
                    valid: layout
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let mut model = FscModel {
            buffers: config.cnn.new_buffers(),
            cnn_calls: FIRST_CNN_CALL,
            noise_seed: 0,
            frozen_cnn: false,
            config,
            cnn,
            proj,
            layout,
            params: flat,
            net,
            cnn_work: CnnWorkspace::new(),
        };
        model.set_named_buffers(buffers)?;
        Ok(model)
    }

    fn pieces(
        config: &FscConfig,
        rnn_infos: &[ParamInfo],
    ) -> Result<(Backbone, Projection, Vec<ParamInfo>)> {
        let cnn = Backbone::new(config.cnn)?;
        let proj = Projection {
            input: config.cnn.feature_size(),
            output: config.proj_size(),
        };
        let mut layout = config.cnn.param_infos(0);
        let cnn_len = config.cnn.param_len();
        layout.extend(proj.param_infos(cnn_len));
        let rnn_offset = cnn_len + proj.param_len();
        layout.extend(rnn_infos.iter().map(|i| ParamInfo {
            offset: i.offset + rnn_offset,
            ..i.clone()
        }));
        Ok((cnn, proj, layout))
    }

    /// Frees the memory the CNN's training-mode passes keep between training steps (the
    /// tapes of every episode step and the transient buffers; the next step allocates them
    /// again).
    pub fn release_memory(&mut self) {
        self.cnn_work.release();
    }

    /// Bytes the CNN's training-mode passes keep between training steps.
    pub fn workspace_bytes(&self) -> usize {
        self.cnn_work.bytes()
    }

    /// Seeds the CNN's dropout and DropBlock masks (a model from [`Self::new`] uses its
    /// initialisation seed; one from [`Self::from_named`] starts with 0).
    pub fn set_noise_seed(&mut self, seed: u64) {
        self.noise_seed = seed;
    }

    /// The configuration.
    pub fn config(&self) -> &FscConfig {
        &self.config
    }

    /// Every parameter's name, shape and place in [`Self::params`] (CNN, projection, RNN).
    pub fn layout(&self) -> &[ParamInfo] {
        &self.layout
    }

    /// All parameters as one flat buffer (the optimiser's view).
    pub fn params(&self) -> &[F] {
        &self.params
    }

    /// All parameters, mutable (the optimiser's view).
    pub fn params_mut(&mut self) -> &mut [F] {
        &mut self.params
    }

    /// Which entries of [`Self::params`] the optimiser updates (not a frozen CNN's).
    pub fn trainable_mask(&self) -> Vec<bool> {
        let mut mask = vec![!self.frozen_cnn; self.config.cnn.param_len()];
        mask.extend(vec![true; self.proj.param_len()]);
        mask.extend(self.net.layout().trainable_mask());
        mask
    }

    /// Freezes the CNN as the reference's `freeze_pretrained_cnn` (docs/fsc.md §5.3): it
    /// runs in evaluation mode (BatchNorm running statistics, unchanged; no dropout) in
    /// training too, gets no gradient, and its parameters are marked untrainable in
    /// [`Self::layout`]; or unfreezes it.
    pub fn set_frozen_cnn(&mut self, frozen: bool) {
        self.frozen_cnn = frozen;
        let cnn_len = self.config.cnn.param_len();
        for info in &mut self.layout {
            if info.offset < cnn_len {
                info.trainable = !frozen;
            }
        }
    }

    /// Whether the CNN is frozen.
    pub fn frozen_cnn(&self) -> bool {
        self.frozen_cnn
    }

    /// The CNN's parameters (the first part of [`Self::params`]).
    pub fn cnn_params(&self) -> &[F] {
        &self.params[..self.config.cnn.param_len()]
    }

    /// Replaces the CNN's parameters and BatchNorm buffers by named ones (a pretrained CNN,
    /// docs/fsc.md §5.3): every CNN parameter must be present with its shape, and every
    /// BatchNorm buffer; names of other parts are an error.
    pub fn load_cnn(
        &mut self,
        params: &BTreeMap<String, NamedTensor>,
        buffers: &BTreeMap<String, NamedTensor>,
    ) -> Result<()> {
        let infos = self.config.cnn.param_infos(0);
        for name in params.keys() {
            if !infos.iter().any(|i| &i.name == name) {
                return Err(Error::UnknownParam {
                    name: name.clone(),
                    valid: infos
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        for info in &infos {
            let t = params.get(&info.name).ok_or_else(|| Error::MissingParam {
                name: info.name.clone(),
                expected: info.shape.clone(),
            })?;
            if t.shape != info.shape || t.data.len() != info.len() {
                return Err(Error::ParamShape {
                    name: info.name.clone(),
                    expected: info.shape.clone(),
                    found: t.shape.clone(),
                });
            }
            for (d, &v) in self.params[info.range()].iter_mut().zip(&t.data) {
                *d = F::of(v);
            }
        }
        self.set_named_buffers(buffers)
    }

    /// The CNN's features of `count` images (N, C, S, S) in evaluation mode (running
    /// statistics, unchanged; no dropout): (N, F). What a frozen CNN gives every image,
    /// whatever batch it comes in (the embedding cache's entries).
    pub fn cnn_features_eval(&self, images: &[F], count: usize) -> Result<Vec<F>> {
        self.cnn
            .forward_eval(self.cnn_params(), images, count, &self.buffers)
    }

    /// The parameters by name (f64 copies).
    pub fn named_params(&self) -> BTreeMap<String, NamedTensor> {
        self.layout
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    NamedTensor {
                        shape: i.shape.clone(),
                        data: self.params[i.range()].iter().map(|v| v.f64()).collect(),
                    },
                )
            })
            .collect()
    }

    /// The BatchNorm running statistics.
    pub fn buffers(&self) -> &[BatchNormBuffers<F>] {
        &self.buffers
    }

    /// The BatchNorm buffers by name (`num_batches_tracked` as a one-element tensor) and,
    /// for a CNN with dropout, its forward-call count [`CNN_CALLS_BUFFER`].
    pub fn named_buffers(&self) -> BTreeMap<String, NamedTensor> {
        let mut map = BTreeMap::new();
        for ((prefix, _), b) in self.config.cnn.batch_norms().iter().zip(&self.buffers) {
            let c = b.running_mean.len();
            map.insert(
                format!("{prefix}.running_mean"),
                NamedTensor {
                    shape: vec![c],
                    data: b.running_mean.iter().map(|v| v.f64()).collect(),
                },
            );
            map.insert(
                format!("{prefix}.running_var"),
                NamedTensor {
                    shape: vec![c],
                    data: b.running_var.iter().map(|v| v.f64()).collect(),
                },
            );
            map.insert(
                format!("{prefix}.num_batches_tracked"),
                NamedTensor {
                    shape: vec![1],
                    data: vec![b.num_batches_tracked as f64],
                },
            );
        }
        if self.config.cnn.is_stochastic() {
            map.insert(
                CNN_CALLS_BUFFER.into(),
                NamedTensor {
                    shape: vec![1],
                    data: vec![self.cnn_calls as f64],
                },
            );
        }
        map
    }

    /// Sets the BatchNorm buffers from [`Self::named_buffers`]' names; every BatchNorm
    /// buffer must be present with its shape ([`CNN_CALLS_BUFFER`] may be absent: the count
    /// is then kept).
    pub fn set_named_buffers(&mut self, map: &BTreeMap<String, NamedTensor>) -> Result<()> {
        for (k, (prefix, c)) in self.config.cnn.batch_norms().into_iter().enumerate() {
            let get = |suffix: &str, len: usize| -> Result<&NamedTensor> {
                let name = format!("{prefix}.{suffix}");
                let t = map.get(&name).ok_or_else(|| Error::MissingParam {
                    name: name.clone(),
                    expected: vec![len],
                })?;
                if t.data.len() != len {
                    return Err(Error::ParamShape {
                        name,
                        expected: vec![len],
                        found: t.shape.clone(),
                    });
                }
                Ok(t)
            };
            let mean = get("running_mean", c)?;
            let var = get("running_var", c)?;
            let count = get("num_batches_tracked", 1)?.data[0];
            if !(count >= 0.0 && count.fract() == 0.0) {
                return Err(Error::Data(format!(
                    "{prefix}.num_batches_tracked must be a whole number >= 0, got {count}"
                )));
            }
            let b = &mut self.buffers[k];
            b.running_mean = mean.data.iter().map(|&v| F::of(v)).collect();
            b.running_var = var.data.iter().map(|&v| F::of(v)).collect();
            b.num_batches_tracked = count as u64;
        }
        if let Some(t) = map.get(CNN_CALLS_BUFFER) {
            let calls = t.data.first().copied().unwrap_or(-1.0);
            if t.data.len() != 1 || !(calls >= 0.0 && calls.fract() == 0.0) {
                return Err(Error::Data(format!(
                    "{CNN_CALLS_BUFFER} must be one whole number >= 0, got {:?}",
                    t.data
                )));
            }
            self.cnn_calls = calls as u64;
        }
        Ok(())
    }

    fn rnn_offset(&self) -> usize {
        self.config.cnn.param_len() + self.proj.param_len()
    }

    fn check_batch(&self, b: &FscBatch<F>) -> Result<()> {
        let (bs, t, e) = (b.batch, b.steps, self.config.extra_input_dim);
        let img = self.config.cnn.image_len();
        let o = self.config.network.output_size;
        let bad = |m: String| Err(Error::Data(m));
        if bs == 0 || t == 0 || b.test_begin >= t {
            return bad(format!(
                "an fsc batch needs B > 0, T > 0 and test_begin < T; got B {bs}, T {t}, test_begin {}",
                b.test_begin
            ));
        }
        if b.images.len() != bs * t * img {
            return bad(format!(
                "images: {} floats, expected B·T·C·S·S = {}",
                b.images.len(),
                bs * t * img
            ));
        }
        if b.extra_input.len() != bs * t * e {
            return bad(format!(
                "extra_input: {} floats, expected B·T·E = {}",
                b.extra_input.len(),
                bs * t * e
            ));
        }
        if b.labels.len() != bs * t {
            return bad(format!(
                "labels: {} entries, expected B·T = {}",
                b.labels.len(),
                bs * t
            ));
        }
        if let Some(l) = b.labels.iter().find(|&&l| l >= o) {
            return bad(format!("label {l} out of range; valid: 0..{o}"));
        }
        Ok(())
    }

    /// The images of step `t`, (B, C, S, S).
    fn step_images(&self, b: &FscBatch<F>, t: usize) -> Vec<F> {
        let img = self.config.cnn.image_len();
        let mut out = Vec::with_capacity(b.batch * img);
        for e in 0..b.batch {
            out.extend_from_slice(&b.images[(e * b.steps + t) * img..][..img]);
        }
        out
    }

    /// Runs the CNN and the projection over every step: training mode (batch statistics,
    /// running statistics updated once per step, tapes kept) or evaluation mode.
    ///
    /// With `cached` features (B, T, F) of a frozen CNN, the CNN is not run (nor its calls
    /// counted): the features are those it would give in evaluation mode.
    fn embed(
        &mut self,
        b: &FscBatch<F>,
        train: bool,
        cached: Option<&[F]>,
    ) -> Result<(Vec<StepRecord<F>>, Vec<F>)> {
        let h = self.config.network.hidden_size;
        let e = self.config.extra_input_dim;
        let p = self.proj.output;
        let cnn_len = self.config.cnn.param_len();
        let fsz = self.config.cnn.feature_size();
        if let Some(c) = cached {
            if !self.frozen_cnn || c.len() != b.batch * b.steps * fsz {
                return Err(Error::Data(format!(
                    "cached CNN features need a frozen CNN and B·T·F = {} values; got {} \
                     values, CNN {}",
                    b.batch * b.steps * fsz,
                    c.len(),
                    if self.frozen_cnn { "frozen" } else { "trained" }
                )));
            }
        }
        // a frozen CNN runs in evaluation mode in training too (docs/fsc.md §5.3)
        let train_cnn = train && !self.frozen_cnn;
        let mut records = Vec::with_capacity(b.steps);
        let mut rnn_input = vec![F::zero(); b.batch * b.steps * h];
        for t in 0..b.steps {
            let (cnn_params, rest) = self.params.split_at(cnn_len);
            let proj_params = &rest[..self.proj.param_len()];
            let (features, taped) = if let Some(c) = cached {
                let mut f = Vec::with_capacity(b.batch * fsz);
                for ep in 0..b.batch {
                    f.extend_from_slice(&c[(ep * b.steps + t) * fsz..][..fsz]);
                }
                (f, false)
            } else if train_cnn {
                let images = self.step_images(b, t);
                // the reference counts every forward call, training or evaluation
                self.cnn_calls += 1;
                let noise = Noise {
                    seed: self.noise_seed,
                    call: self.cnn_calls,
                };
                let f = self.cnn.forward_train_in(
                    cnn_params,
                    &images,
                    b.batch,
                    Some(&mut self.buffers),
                    Some(noise),
                    &mut self.cnn_work,
                    t,
                )?;
                (f, true)
            } else {
                let images = self.step_images(b, t);
                self.cnn_calls += 1;
                (
                    self.cnn
                        .forward_eval(cnn_params, &images, b.batch, &self.buffers)?,
                    false,
                )
            };
            let embedded = self.proj.forward(proj_params, &features, b.batch)?;
            for ep in 0..b.batch {
                let row = &mut rnn_input[(ep * b.steps + t) * h..][..h];
                row[..p].copy_from_slice(&embedded[ep * p..][..p]);
                row[p..].copy_from_slice(&b.extra_input[(ep * b.steps + t) * e..][..e]);
            }
            records.push(StepRecord {
                features,
                embedded,
                taped,
            });
        }
        Ok((records, rnn_input))
    }

    fn episodes(&self, b: &FscBatch<F>, rnn_input: Vec<F>) -> Result<Episodes<F>> {
        let o = self.config.network.output_size;
        let mut target = vec![F::zero(); b.batch * b.steps * o];
        for (k, &l) in b.labels.iter().enumerate() {
            target[k * o + l] = F::one();
        }
        Episodes::new(
            b.batch,
            b.steps,
            self.config.network.hidden_size,
            o,
            rnn_input,
            target,
            b.test_begin,
        )
    }

    fn sync_network(&mut self) {
        let off = self.rnn_offset();
        self.net.params_mut().copy_from_slice(&self.params[off..]);
    }

    /// Episodes whose first query step's prediction (argmax; the first maximum wins) is
    /// the label.
    fn count_correct(&self, b: &FscBatch<F>, outputs: &[F]) -> usize {
        let o = self.config.network.output_size;
        (0..b.batch)
            .filter(|&e| {
                let row = &outputs[(e * b.steps + b.test_begin) * o..][..o];
                let mut best = 0;
                for k in 1..o {
                    if row[k] > row[best] {
                        best = k;
                    }
                }
                best == b.labels[e * b.steps + b.test_begin]
            })
            .count()
    }

    /// The forward pass in training mode (BatchNorm batch statistics; the running
    /// statistics are updated T times) with every intermediate quantity.
    pub fn forward_train(&mut self, b: &FscBatch<F>) -> Result<FscForward<F>> {
        self.forward(b, true, None)
    }

    /// The forward pass in evaluation mode (BatchNorm running statistics, unchanged).
    pub fn forward_eval(&mut self, b: &FscBatch<F>) -> Result<FscForward<F>> {
        self.forward(b, false, None)
    }

    /// [`Self::forward_eval`] with the frozen CNN's features (B, T, F) given instead of
    /// computed (the embedding cache); `b`'s images are not read.
    pub fn forward_eval_cached(
        &mut self,
        b: &FscBatch<F>,
        features: &[F],
    ) -> Result<FscForward<F>> {
        self.forward(b, false, Some(features))
    }

    fn forward(
        &mut self,
        b: &FscBatch<F>,
        train: bool,
        cached: Option<&[F]>,
    ) -> Result<FscForward<F>> {
        self.check_batch(b)?;
        self.sync_network();
        let (records, rnn_input) = self.embed(b, train, cached)?;
        let ep = self.episodes(b, rnn_input.clone())?;
        let rnn = self.net.forward(&ep, Loss::CrossEntropy)?;
        let fsz = self.config.cnn.feature_size();
        let mut cnn_features = vec![F::zero(); b.batch * b.steps * fsz];
        for (t, r) in records.iter().enumerate() {
            for e in 0..b.batch {
                cnn_features[(e * b.steps + t) * fsz..][..fsz]
                    .copy_from_slice(&r.features[e * fsz..][..fsz]);
            }
        }
        let correct_first_query = self.count_correct(b, &rnn.outputs);
        Ok(FscForward {
            cnn_features,
            rnn_input,
            rnn,
            correct_first_query,
        })
    }

    /// One training step's loss and gradient (docs/fsc.md §4–§5): the CNN in training mode
    /// on each step's B images (batch statistics; the running statistics are updated T
    /// times), the projection, the RNN's exact meta-gradient including `d loss / d rnn
    /// input`, then back through the projection and the CNN step by step. Also counts the
    /// episodes whose first query is classified correctly.
    ///
    /// A frozen CNN runs in evaluation mode and gets no gradient (its entries are 0).
    pub fn loss_and_grad(&mut self, b: &FscBatch<F>) -> Result<FscGradient<F>> {
        self.loss_and_grad_inner(b, None)
    }

    /// [`Self::loss_and_grad`] with the frozen CNN's features (B, T, F) given instead of
    /// computed (the embedding cache); `b`'s images are not read.
    pub fn loss_and_grad_cached(
        &mut self,
        b: &FscBatch<F>,
        features: &[F],
    ) -> Result<FscGradient<F>> {
        self.loss_and_grad_inner(b, Some(features))
    }

    fn loss_and_grad_inner(
        &mut self,
        b: &FscBatch<F>,
        cached: Option<&[F]>,
    ) -> Result<FscGradient<F>> {
        self.check_batch(b)?;
        self.sync_network();
        let (records, rnn_input) = self.embed(b, true, cached)?;
        let ep = self.episodes(b, rnn_input)?;
        // the accuracy from the outputs of the forward pass the gradient runs
        let (g, outputs) = Engine::shared().loss_and_grad_with_outputs(
            &self.net,
            &ep,
            Loss::CrossEntropy,
            GradRequest { inputs: true },
        )?;
        let correct_first_query = self.count_correct(b, &outputs);
        let d_input = g.input_grads.ok_or_else(|| {
            Error::Data("the engine returned no input gradient although asked for it".into())
        })?;
        let mut grads = vec![F::zero(); self.params.len()];
        let rnn_off = self.rnn_offset();
        grads[rnn_off..].copy_from_slice(&g.grads);
        let cnn_len = self.config.cnn.param_len();
        let (h, p) = (self.config.network.hidden_size, self.proj.output);
        let (cnn_params, rest) = self.params.split_at(cnn_len);
        let proj_params = &rest[..self.proj.param_len()];
        let (cnn_grads, rest) = grads.split_at_mut(cnn_len);
        let proj_grads = &mut rest[..self.proj.param_len()];
        for (t, r) in records.iter().enumerate() {
            // d loss / d embedded (B, P): the first P entries of the step's RNN input
            let mut d_embedded = vec![F::zero(); b.batch * p];
            for e in 0..b.batch {
                d_embedded[e * p..][..p].copy_from_slice(&d_input[(e * b.steps + t) * h..][..p]);
            }
            let d_features = self.proj.backward(
                proj_params,
                &r.features,
                &r.embedded,
                &d_embedded,
                b.batch,
                proj_grads,
            )?;
            if self.frozen_cnn {
                continue;
            }
            if !r.taped {
                return Err(Error::Data(
                    "internal: a training step kept no CNN tape".into(),
                ));
            }
            self.cnn.backward_in(
                cnn_params,
                &mut self.cnn_work,
                t,
                &d_features,
                cnn_grads,
                None,
            )?;
        }
        Ok(FscGradient {
            loss: g.loss,
            correct_first_query,
            grads,
        })
    }
}
