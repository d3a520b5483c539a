//! ProtoNet conv4 (docs/fsc.md §5.1): 4 × [conv 3×3 (padding 1, no bias) → BatchNorm2d →
//! ReLU → max-pool 2], output flattened in (C, H, W) order.

use plastic::params::ParamInfo;
use plastic::rng::Rng;
use plastic::{Error, Float, Result};
use rayon::prelude::*;

use super::ops::{self, ConvShape};
use super::workspace::{at_least, fit, Scratch};

/// BatchNorm2d's ε (docs/fsc.md §5.1).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm2d's momentum: `running ← (1 − m)·running + m·batch`.
pub const BN_MOMENTUM: f64 = 0.1;
/// Number of conv blocks.
pub const BLOCKS: usize = 4;

/// The shape of a ProtoNet: image channels and size, and the width of every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoNetConfig {
    /// Image channels (3).
    pub in_channels: usize,
    /// Output channels of every conv block (the reference's 64).
    pub channels: usize,
    /// Image height = width (32 for CIFAR-FS, 84 for miniImageNet).
    pub image_size: usize,
}

impl Default for ProtoNetConfig {
    fn default() -> Self {
        ProtoNetConfig {
            in_channels: 3,
            channels: 64,
            image_size: 32,
        }
    }
}

impl ProtoNetConfig {
    /// Checks that every block has something to pool.
    pub fn check(&self) -> Result<()> {
        if self.in_channels == 0 || self.channels == 0 {
            return Err(Error::Config(format!(
                "ProtoNet needs at least one input and one block channel, got {} and {}",
                self.in_channels, self.channels
            )));
        }
        if self.image_size < 16 {
            return Err(Error::Config(format!(
                "ProtoNet images must be at least 16×16 (4 halvings), got {0}×{0}",
                self.image_size
            )));
        }
        Ok(())
    }

    /// Side of block `k`'s input (before its pooling halves it).
    pub fn side(&self, k: usize) -> usize {
        self.image_size >> k
    }

    /// Input channels of block `k`.
    pub fn cin(&self, k: usize) -> usize {
        if k == 0 {
            self.in_channels
        } else {
            self.channels
        }
    }

    /// The flattened output size F = channels · (S/16)².
    pub fn feature_size(&self) -> usize {
        let s = self.side(BLOCKS);
        self.channels * s * s
    }

    /// Floats per image at the input.
    pub fn image_len(&self) -> usize {
        self.in_channels * self.image_size * self.image_size
    }

    /// The parameters, named as the reference fixtures (`cnn.{k}.conv.w` (out, in, 3, 3),
    /// `cnn.{k}.bn.gamma`, `cnn.{k}.bn.beta`), from `offset` on.
    pub fn param_infos(&self, offset: usize) -> Vec<ParamInfo> {
        let mut infos = Vec::new();
        let mut at = offset;
        for k in 0..BLOCKS {
            for (name, shape) in [
                ("conv.w", vec![self.channels, self.cin(k), 3, 3]),
                ("bn.gamma", vec![self.channels]),
                ("bn.beta", vec![self.channels]),
            ] {
                let info = ParamInfo {
                    name: format!("cnn.{k}.{name}"),
                    shape,
                    offset: at,
                    trainable: true,
                };
                at += info.len();
                infos.push(info);
            }
        }
        infos
    }

    /// Number of parameters.
    pub fn param_len(&self) -> usize {
        self.param_infos(0).iter().map(ParamInfo::len).sum()
    }

    /// Offsets of block `k`'s conv weight, γ and β within the CNN's parameters.
    fn block_offsets(&self, k: usize) -> (usize, usize, usize) {
        let mut at = 0;
        for j in 0..k {
            at += self.channels * self.cin(j) * 9 + 2 * self.channels;
        }
        let w_len = self.channels * self.cin(k) * 9;
        (at, at + w_len, at + w_len + self.channels)
    }

    /// Seeded initialisation (docs/fsc.md §5.1): conv weights `N(0, 2/(9·channels))`,
    /// γ = 1, β = 0.
    pub fn init_params<F: Float>(&self, rng: &mut Rng) -> Vec<F> {
        let mut p = vec![F::zero(); self.param_len()];
        let std = (2.0 / (9.0 * self.channels as f64)).sqrt();
        for k in 0..BLOCKS {
            let (w, g, b) = self.block_offsets(k);
            for v in &mut p[w..g] {
                *v = F::of(std * rng.normal());
            }
            p[g..b].fill(F::one());
        }
        p
    }
}

/// One BatchNorm2d's running statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormBuffers<F> {
    /// Running mean per channel.
    pub running_mean: Vec<F>,
    /// Running (unbiased) variance per channel.
    pub running_var: Vec<F>,
    /// Number of batch-statistics updates so far.
    pub num_batches_tracked: u64,
}

impl<F: Float> BatchNormBuffers<F> {
    /// Fresh statistics: mean 0, variance 1 (PyTorch's initial values).
    pub fn new(channels: usize) -> Self {
        BatchNormBuffers {
            running_mean: vec![F::zero(); channels],
            running_var: vec![F::one(); channels],
            num_batches_tracked: 0,
        }
    }

    /// `running ← 0.9·running + 0.1·batch`, the variance unbiased (× n/(n − 1)).
    pub(crate) fn update(&mut self, mean: &[F], biased_var: &[F], count: usize) {
        let m = F::of(BN_MOMENTUM);
        let keep = F::one() - m;
        let unbias = if count > 1 {
            F::of(count as f64 / (count - 1) as f64)
        } else {
            F::one()
        };
        for c in 0..mean.len() {
            self.running_mean[c] = keep * self.running_mean[c] + m * mean[c];
            self.running_var[c] = keep * self.running_var[c] + m * biased_var[c] * unbias;
        }
        self.num_batches_tracked += 1;
    }
}

/// What a training-mode forward pass keeps for its backward pass.
#[derive(Debug, Clone)]
pub struct ProtoNetTape<F> {
    batch: usize,
    /// Each block's input (N, Cin, S, S).
    inputs: Vec<Vec<F>>,
    /// Each block's normalised conv output x̂ (N, C, S, S).
    xhat: Vec<Vec<F>>,
    /// Each block's 1/sqrt(var + ε) per channel.
    inv_std: Vec<Vec<F>>,
}

impl<F> Default for ProtoNetTape<F> {
    /// An empty tape, to be filled by a forward pass.
    fn default() -> Self {
        ProtoNetTape {
            batch: 0,
            inputs: Vec::new(),
            xhat: Vec::new(),
            inv_std: Vec::new(),
        }
    }
}

impl<F> ProtoNetTape<F> {
    /// Floats allocated (capacity).
    pub(crate) fn floats(&self) -> usize {
        [&self.inputs, &self.xhat, &self.inv_std]
            .iter()
            .flat_map(|v| v.iter())
            .map(Vec::capacity)
            .sum()
    }
}

/// γ·x̂ + β, then ReLU, for one block, in place over (N, C, plane).
fn affine_relu<F: Float>(y: &mut [F], gamma: &[F], beta: &[F], plane: usize) {
    let channels = gamma.len();
    y.par_chunks_mut(plane).enumerate().for_each(|(nc, row)| {
        let c = nc % channels;
        for v in row {
            let a = *v * gamma[c] + beta[c];
            *v = if a > F::zero() { a } else { F::zero() };
        }
    });
}

/// The ProtoNet's computations over a parameter slice (see [`ProtoNetConfig::param_infos`]).
#[derive(Debug, Clone, Copy)]
pub struct ProtoNet {
    /// The shape.
    pub config: ProtoNetConfig,
}

impl ProtoNet {
    /// A ProtoNet of this shape.
    pub fn new(config: ProtoNetConfig) -> Result<Self> {
        config.check()?;
        Ok(ProtoNet { config })
    }

    fn check_input<F: Float>(&self, params: &[F], images: &[F], batch: usize) -> Result<()> {
        if params.len() != self.config.param_len() {
            return Err(Error::Data(format!(
                "ProtoNet has {} parameters, got {}",
                self.config.param_len(),
                params.len()
            )));
        }
        if batch == 0 || images.len() != batch * self.config.image_len() {
            return Err(Error::Data(format!(
                "ProtoNet expects {batch} images of {}×{}×{} ({} floats), got {} floats",
                self.config.in_channels,
                self.config.image_size,
                self.config.image_size,
                batch * self.config.image_len(),
                images.len()
            )));
        }
        Ok(())
    }

    /// Fresh BatchNorm buffers, one per block.
    pub fn new_buffers<F: Float>(&self) -> Vec<BatchNormBuffers<F>> {
        (0..BLOCKS)
            .map(|_| BatchNormBuffers::new(self.config.channels))
            .collect()
    }

    /// Training-mode forward of `batch` images (N, C, S, S): BatchNorm normalises with the
    /// batch statistics over (N, S, S) and, if `buffers` is given, updates the running
    /// statistics once. Returns the features (N, F) and the tape for [`Self::backward`].
    pub fn forward_train<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: Option<&mut [BatchNormBuffers<F>]>,
    ) -> Result<(Vec<F>, ProtoNetTape<F>)> {
        let mut tape = ProtoNetTape::default();
        let features = self.forward_train_into(
            params,
            images,
            batch,
            buffers,
            &mut tape,
            &mut Scratch::default(),
        )?;
        Ok((features, tape))
    }

    /// [`Self::forward_train`] into a reused `tape` (its buffers overwritten, grown if
    /// needed) with transient buffers from `scratch`.
    pub(crate) fn forward_train_into<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        mut buffers: Option<&mut [BatchNormBuffers<F>]>,
        tape: &mut ProtoNetTape<F>,
        scratch: &mut Scratch<F>,
    ) -> Result<Vec<F>> {
        self.check_input(params, images, batch)?;
        let cfg = self.config;
        tape.batch = batch;
        tape.inputs.resize_with(BLOCKS, Vec::new);
        tape.xhat.resize_with(BLOCKS, Vec::new);
        tape.inv_std.resize_with(BLOCKS, Vec::new);
        fit(&mut tape.inputs[0], images.len());
        tape.inputs[0].copy_from_slice(images);
        let mut features = Vec::new();
        for k in 0..BLOCKS {
            let (w, g, b) = cfg.block_offsets(k);
            let side = cfg.side(k);
            let plane = side * side;
            let shape = ConvShape {
                batch,
                cin: cfg.cin(k),
                cout: cfg.channels,
                side,
            };
            let n = batch * cfg.channels * plane;
            fit(&mut tape.xhat[k], n);
            let z = &mut tape.xhat[k];
            ops::conv3x3_forward(shape, &tape.inputs[k], &params[w..g], z);
            let (mean, var) = ops::channel_stats(z, batch, cfg.channels, plane);
            if let Some(bufs) = buffers.as_deref_mut() {
                bufs[k].update(&mean, &var, batch * plane);
            }
            let eps = F::of(BN_EPS);
            let inv_std: Vec<F> = var.iter().map(|&v| F::one() / (v + eps).sqrt()).collect();
            z.par_chunks_mut(plane).enumerate().for_each(|(nc, row)| {
                let c = nc % cfg.channels;
                for v in row {
                    *v = (*v - mean[c]) * inv_std[c];
                }
            });
            let mut a = scratch.take(0, n);
            a[..n].copy_from_slice(z);
            affine_relu(
                &mut a[..n],
                &params[g..b],
                &params[b..b + cfg.channels],
                plane,
            );
            let half = side / 2;
            let pooled_len = batch * cfg.channels * half * half;
            let pooled = if k + 1 < BLOCKS {
                fit(&mut tape.inputs[k + 1], pooled_len);
                &mut tape.inputs[k + 1]
            } else {
                features = vec![F::zero(); pooled_len];
                &mut features
            };
            ops::max_pool2_forward(&a[..n], batch * cfg.channels, side, pooled);
            scratch.put(0, a);
            tape.inv_std[k] = inv_std;
        }
        Ok(features)
    }

    /// Evaluation-mode forward (running statistics, no update): the features (N, F).
    pub fn forward_eval<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: &[BatchNormBuffers<F>],
    ) -> Result<Vec<F>> {
        self.check_input(params, images, batch)?;
        let cfg = self.config;
        let mut x = images.to_vec();
        for (k, buf) in buffers.iter().enumerate().take(BLOCKS) {
            let (w, g, b) = cfg.block_offsets(k);
            let side = cfg.side(k);
            let plane = side * side;
            let shape = ConvShape {
                batch,
                cin: cfg.cin(k),
                cout: cfg.channels,
                side,
            };
            let mut z = vec![F::zero(); batch * cfg.channels * plane];
            ops::conv3x3_forward(shape, &x, &params[w..g], &mut z);
            let eps = F::of(BN_EPS);
            z.par_chunks_mut(plane).enumerate().for_each(|(nc, row)| {
                let c = nc % cfg.channels;
                let inv = F::one() / (buf.running_var[c] + eps).sqrt();
                for v in row {
                    *v = (*v - buf.running_mean[c]) * inv;
                }
            });
            affine_relu(&mut z, &params[g..b], &params[b..b + cfg.channels], plane);
            let half = side / 2;
            let mut pooled = vec![F::zero(); batch * cfg.channels * half * half];
            ops::max_pool2_forward(&z, batch * cfg.channels, side, &mut pooled);
            x = pooled;
        }
        Ok(x)
    }

    /// Backward of [`Self::forward_train`]: adds `d loss / d params` to `grads` given
    /// `d_features = d loss / d features` (N, F). BatchNorm's backward includes the batch
    /// statistics' dependence on the inputs. The images get no gradient.
    pub fn backward<F: Float>(
        &self,
        params: &[F],
        tape: &ProtoNetTape<F>,
        d_features: &[F],
        grads: &mut [F],
    ) -> Result<()> {
        self.backward_with_images(params, tape, d_features, grads, None)
    }

    /// [`Self::backward`], also writing `d loss / d images` (N, C, S, S) into `d_images` if
    /// given.
    pub fn backward_with_images<F: Float>(
        &self,
        params: &[F],
        tape: &ProtoNetTape<F>,
        d_features: &[F],
        grads: &mut [F],
        d_images: Option<&mut [F]>,
    ) -> Result<()> {
        self.backward_into(
            params,
            tape,
            d_features,
            grads,
            d_images,
            &mut Scratch::default(),
        )
    }

    /// [`Self::backward_with_images`] with transient buffers from `scratch`.
    pub(crate) fn backward_into<F: Float>(
        &self,
        params: &[F],
        tape: &ProtoNetTape<F>,
        d_features: &[F],
        grads: &mut [F],
        mut d_images: Option<&mut [F]>,
        scratch: &mut Scratch<F>,
    ) -> Result<()> {
        let cfg = self.config;
        let batch = tape.batch;
        if tape.xhat.len() != BLOCKS || batch == 0 {
            return Err(Error::Data(
                "ProtoNet backward: the tape holds no forward pass".into(),
            ));
        }
        if let Some(d) = d_images.as_deref() {
            if d.len() != batch * cfg.image_len() {
                return Err(Error::Data(format!(
                    "ProtoNet backward: {} image gradients, expected {}",
                    d.len(),
                    batch * cfg.image_len()
                )));
            }
        }
        if d_features.len() != batch * cfg.feature_size() || grads.len() != cfg.param_len() {
            return Err(Error::Data(format!(
                "ProtoNet backward: {} feature gradients and {} parameter gradients, expected {} and {}",
                d_features.len(),
                grads.len(),
                batch * cfg.feature_size(),
                cfg.param_len()
            )));
        }
        // the gradient with respect to the current block's output (`d[..d_len]`; the last
        // block's is `d_features`) and to its input (`dx`), swapped after every block
        let mut d = scratch.take(2, 0);
        let mut dx = scratch.take(3, 0);
        let mut d_len = 0;
        for k in (0..BLOCKS).rev() {
            let (w, g, b) = cfg.block_offsets(k);
            let side = cfg.side(k);
            let plane = side * side;
            let gamma = &params[g..b];
            let beta = &params[b..b + cfg.channels];
            let xhat = &tape.xhat[k];
            let n = xhat.len();
            let d_out = if k + 1 == BLOCKS {
                d_features
            } else {
                &d[..d_len]
            };
            // the block's ReLU output, recomputed from x̂
            let mut a_buf = scratch.take(0, n);
            let a = &mut a_buf[..n];
            a.copy_from_slice(xhat);
            affine_relu(a, gamma, beta, plane);
            let mut da_buf = scratch.take(1, n);
            let da = &mut da_buf[..n];
            ops::max_pool2_backward(a, batch * cfg.channels, side, d_out, da);
            // ReLU: gradient only where the output is positive
            da.par_iter_mut().zip(a.par_iter()).for_each(|(g, &v)| {
                if v <= F::zero() {
                    *g = F::zero();
                }
            });
            // BatchNorm with batch statistics, per channel:
            // dγ = Σ dy·x̂, dβ = Σ dy, dz = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))
            let count = F::of((batch * plane) as f64);
            let sums: Vec<(F, F)> = (0..cfg.channels)
                .into_par_iter()
                .map(|c| {
                    // sums in f64: BatchNorm's backward subtracts them from dy
                    let (mut s_dy, mut s_dyx) = (0.0f64, 0.0f64);
                    for n in 0..batch {
                        let at = (n * cfg.channels + c) * plane;
                        for (&gv, &xv) in da[at..at + plane].iter().zip(&xhat[at..at + plane]) {
                            s_dy += gv.f64();
                            s_dyx += gv.f64() * xv.f64();
                        }
                    }
                    (F::of(s_dy), F::of(s_dyx))
                })
                .collect();
            for (c, &(s_dy, s_dyx)) in sums.iter().enumerate() {
                grads[g + c] += s_dyx;
                grads[b + c] += s_dy;
            }
            let inv_std = &tape.inv_std[k];
            da.par_chunks_mut(plane)
                .zip(xhat.par_chunks(plane))
                .enumerate()
                .for_each(|(nc, (row, xr))| {
                    let c = nc % cfg.channels;
                    let (s_dy, s_dyx) = sums[c];
                    let (m1, m2) = (s_dy / count, s_dyx / count);
                    let scale = gamma[c] * inv_std[c];
                    for (v, &xv) in row.iter_mut().zip(xr) {
                        *v = scale * (*v - m1 - xv * m2);
                    }
                });
            let shape = ConvShape {
                batch,
                cin: cfg.cin(k),
                cout: cfg.channels,
                side,
            };
            let input = &tape.inputs[k];
            if k > 0 {
                at_least(&mut dx, input.len());
                ops::conv3x3_backward(
                    shape,
                    input,
                    &params[w..g],
                    da,
                    &mut grads[w..g],
                    Some(&mut dx[..input.len()]),
                );
                std::mem::swap(&mut d, &mut dx);
                d_len = input.len();
            } else {
                ops::conv3x3_backward(
                    shape,
                    input,
                    &params[w..g],
                    da,
                    &mut grads[w..g],
                    d_images.as_deref_mut(),
                );
            }
            scratch.put(0, a_buf);
            scratch.put(1, da_buf);
        }
        scratch.put(2, d);
        scratch.put(3, dx);
        Ok(())
    }
}
