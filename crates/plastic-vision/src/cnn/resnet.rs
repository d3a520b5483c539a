//! ResNet-12 (docs/fsc.md §5.1): four residual blocks; block `l` maps `x` to
//! `maxpool2(lrelu(bn3(conv3(a2)) + bn_d(conv1x1(x))))` with `a1 = lrelu(bn1(conv1(x)))`,
//! `a2 = lrelu(bn2(conv2(a1)))` (3×3 convolutions with padding 1, no bias; LeakyReLU 0.1),
//! then dropout (blocks 1–2) or DropBlock (blocks 3–4) in training mode. The output is the
//! last feature map flattened in (C, H, W) order.
//!
//! DropBlock runs on the CPU with masks drawn sequentially from the run's seed and the
//! forward-call count ([`Noise`]), so they do not depend on the thread count; the keep-rate
//! schedule and window geometry are the reference's (docs/fsc.md §5.1, §9).

use plastic::params::ParamInfo;
use plastic::rng::Rng;
use plastic::{Error, Float, Result};
use rayon::prelude::*;

use super::backbone::Noise;
use super::ops::{self, ConvShape};
use super::protonet::{BatchNormBuffers, BN_EPS};
use super::workspace::{at_least, fit, Scratch};

/// Residual blocks.
pub const RESNET_BLOCKS: usize = 4;
/// The reference's block widths.
pub const RESNET_WIDTHS: [usize; RESNET_BLOCKS] = [64, 160, 320, 640];
/// LeakyReLU's negative slope.
pub const LEAKY_SLOPE: f64 = 0.1;
/// Forward calls over which DropBlock's keep rate ramps from 1 to `1 − drop_rate`
/// (the reference's `20·2000`).
pub const DROPBLOCK_RAMP_CALLS: f64 = 40_000.0;
/// BatchNorm layers per block: bn1, bn2, bn3 and the shortcut's.
const BNS_PER_BLOCK: usize = 4;
/// Key mixed into the run's seed for the dropout and DropBlock masks.
const NOISE_KEY: u64 = 0xD409_B10C_0000_0000;

/// The shape of a ResNet-12.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResNet12Config {
    /// Image channels (3).
    pub in_channels: usize,
    /// Output channels of the four blocks (the reference's 64, 160, 320, 640).
    pub widths: [usize; RESNET_BLOCKS],
    /// Image height = width (32 for CIFAR-FS, 84 for miniImageNet).
    pub image_size: usize,
    /// Dropout probability of blocks 1–2 and DropBlock's final drop rate in blocks 3–4
    /// (the reference's 0.1; 0 turns both off).
    pub drop_rate: f64,
    /// DropBlock's window side (the reference's 5 for 84×84 images, else 2).
    pub dropblock_size: usize,
}

impl ResNet12Config {
    /// The reference's ResNet-12 for `image_size`: widths `base·(1, 2.5, 5, 10)` (the
    /// reference's base is 64; `base` must be even), drop rate 0.1, DropBlock size 5 for
    /// 84×84 images and 2 otherwise.
    pub fn reference(base: usize, image_size: usize) -> Self {
        ResNet12Config {
            in_channels: 3,
            widths: [base, base * 5 / 2, base * 5, base * 10],
            image_size,
            drop_rate: 0.1,
            dropblock_size: if image_size == 84 { 5 } else { 2 },
        }
    }

    /// Checks the sizes and rates; the error says what is valid.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.in_channels == 0 || self.widths.contains(&0) {
            return bad(format!(
                "ResNet-12 needs at least one input channel and one channel per block, got {} and {:?}",
                self.in_channels, self.widths
            ));
        }
        if self.image_size < 16 {
            return bad(format!(
                "ResNet-12 images must be at least 16×16 (4 halvings), got {0}×{0}",
                self.image_size
            ));
        }
        if !(self.drop_rate.is_finite() && (0.0..1.0).contains(&self.drop_rate)) {
            return bad(format!(
                "the ResNet-12 drop rate must be in [0, 1), got {}",
                self.drop_rate
            ));
        }
        if self.drop_rate > 0.0 {
            for l in 2..RESNET_BLOCKS {
                let f = self.side(l + 1);
                if self.dropblock_size == 0 || self.dropblock_size > f {
                    return bad(format!(
                        "DropBlock's size must be in 1..={f} (block {}'s feature map is {f}×{f} for {}×{} images), got {}",
                        l + 1,
                        self.image_size,
                        self.image_size,
                        self.dropblock_size
                    ));
                }
                let gamma = self.gamma(1.0 - self.drop_rate, f);
                if gamma > 1.0 {
                    return bad(format!(
                        "DropBlock's seed probability would be {gamma} > 1 in block {} (drop rate {}, size {}, feature map {f}×{f}); lower the drop rate",
                        l + 1,
                        self.drop_rate,
                        self.dropblock_size
                    ));
                }
            }
        }
        Ok(())
    }

    /// Side of block `l`'s input (`l` from 0; `side(4)` is the output's).
    pub fn side(&self, l: usize) -> usize {
        self.image_size >> l
    }

    /// Input channels of block `l`.
    pub fn cin(&self, l: usize) -> usize {
        if l == 0 {
            self.in_channels
        } else {
            self.widths[l - 1]
        }
    }

    /// The flattened output size F = widths[3] · (S/16)².
    pub fn feature_size(&self) -> usize {
        let s = self.side(RESNET_BLOCKS);
        self.widths[RESNET_BLOCKS - 1] * s * s
    }

    /// Floats per image at the input.
    pub fn image_len(&self) -> usize {
        self.in_channels * self.image_size * self.image_size
    }

    /// The parameters, named as the reference fixtures: per block `l` = 1..4,
    /// `cnn.layer{l}.conv{j}.w` (C, Cin, 3, 3) and `cnn.layer{l}.bn{j}.gamma/beta` for
    /// j = 1..3, then `cnn.layer{l}.down.conv.w` (C, Cin, 1, 1) and
    /// `cnn.layer{l}.down.bn.gamma/beta`; from `offset` on.
    pub fn param_infos(&self, offset: usize) -> Vec<ParamInfo> {
        let mut infos = Vec::new();
        let mut at = offset;
        for l in 0..RESNET_BLOCKS {
            let (c, cin) = (self.widths[l], self.cin(l));
            let n = l + 1;
            let mut push = |name: String, shape: Vec<usize>| {
                let info = ParamInfo {
                    name,
                    shape,
                    offset: at,
                    trainable: true,
                };
                at += info.len();
                infos.push(info);
            };
            for j in 1..=3 {
                let input = if j == 1 { cin } else { c };
                push(format!("cnn.layer{n}.conv{j}.w"), vec![c, input, 3, 3]);
                push(format!("cnn.layer{n}.bn{j}.gamma"), vec![c]);
                push(format!("cnn.layer{n}.bn{j}.beta"), vec![c]);
            }
            push(format!("cnn.layer{n}.down.conv.w"), vec![c, cin, 1, 1]);
            push(format!("cnn.layer{n}.down.bn.gamma"), vec![c]);
            push(format!("cnn.layer{n}.down.bn.beta"), vec![c]);
        }
        infos
    }

    /// Number of parameters.
    pub fn param_len(&self) -> usize {
        self.param_infos(0).iter().map(ParamInfo::len).sum()
    }

    /// The BatchNorm layers' name prefixes and channels: per block bn1, bn2, bn3, down.bn.
    pub fn batch_norms(&self) -> Vec<(String, usize)> {
        let mut v = Vec::new();
        for l in 0..RESNET_BLOCKS {
            let n = l + 1;
            for name in ["bn1", "bn2", "bn3", "down.bn"] {
                v.push((format!("cnn.layer{n}.{name}"), self.widths[l]));
            }
        }
        v
    }

    /// Seeded initialisation (docs/fsc.md §5.1): convolutions `N(0, 2/(C_out·k²))`
    /// (Kaiming normal, fan out), BatchNorm γ = 1, β = 0.
    pub fn init_params<F: Float>(&self, rng: &mut Rng) -> Vec<F> {
        let mut p = vec![F::zero(); self.param_len()];
        for info in self.param_infos(0) {
            let dst = &mut p[info.range()];
            if info.name.ends_with(".w") {
                let k2 = info.shape[2] * info.shape[3];
                let std = (2.0 / (info.shape[0] * k2) as f64).sqrt();
                for v in dst {
                    *v = F::of(std * rng.normal());
                }
            } else if info.name.ends_with(".gamma") {
                dst.fill(F::one());
            }
        }
        p
    }

    /// Whether a training-mode forward draws dropout or DropBlock masks.
    pub fn is_stochastic(&self) -> bool {
        self.drop_rate > 0.0
    }

    /// DropBlock's keep rate at forward call `call` (counting from 1):
    /// `max(1 − drop_rate·call/40000, 1 − drop_rate)`.
    pub fn keep_rate(&self, call: u64) -> f64 {
        (1.0 - self.drop_rate * call as f64 / DROPBLOCK_RAMP_CALLS).max(1.0 - self.drop_rate)
    }

    /// DropBlock's seed probability on an `f × f` map:
    /// `(1 − keep)/bs² · f²/(f − bs + 1)²`.
    pub fn gamma(&self, keep_rate: f64, f: usize) -> f64 {
        let bs = self.dropblock_size as f64;
        let f = f as f64;
        (1.0 - keep_rate) / (bs * bs) * (f * f) / ((f - bs + 1.0) * (f - bs + 1.0))
    }

    /// Float count of the activations a training-mode forward keeps for the backward
    /// pass, per image: block inputs, four normalised BatchNorm inputs per block, dropout
    /// masks (the LeakyReLU outputs are recomputed from them).
    pub fn tape_floats_per_image(&self) -> usize {
        let mut kept = 0;
        for l in 0..RESNET_BLOCKS {
            let (s, c) = (self.side(l), self.widths[l]);
            kept += self.cin(l) * s * s + BNS_PER_BLOCK * c * s * s;
            if self.drop_rate > 0.0 {
                let h = self.side(l + 1);
                kept += c * h * h;
            }
        }
        kept
    }

    /// Offsets of block `l`'s twelve tensors (as [`Self::param_infos`]).
    fn block_offsets(&self, l: usize) -> [usize; 13] {
        let infos = self.param_infos(0);
        let mut o = [0; 13];
        for (i, info) in infos[l * 12..(l + 1) * 12].iter().enumerate() {
            o[i] = info.offset;
        }
        o[12] = infos[l * 12 + 11].offset + infos[l * 12 + 11].len();
        o
    }
}

/// Draws the dropout or DropBlock multipliers of block `l` (0-based) on its pooled output
/// `(batch, channels, f, f)`: 0 where dropped, the rescaling factor elsewhere.
pub fn drop_mask<F: Float>(
    config: &ResNet12Config,
    l: usize,
    batch: usize,
    noise: Noise,
) -> Vec<F> {
    let (c, f) = (config.widths[l], config.side(l + 1));
    let mut mask = vec![F::zero(); batch * c * f * f];
    fill_drop_mask(config, l, batch, noise, &mut mask);
    mask
}

/// [`drop_mask`] written into `mask` (`batch · channels · f²` values).
fn fill_drop_mask<F: Float>(
    config: &ResNet12Config,
    l: usize,
    batch: usize,
    noise: Noise,
    mask: &mut [F],
) {
    let c = config.widths[l];
    let f = config.side(l + 1);
    let mut rng = Rng::with_stream(noise.seed ^ NOISE_KEY, noise.call * 4 + l as u64);
    if l < 2 {
        // standard dropout: keep with probability 1 − p, scale 1/(1 − p)
        let p = config.drop_rate;
        let scale = F::of(1.0 / (1.0 - p));
        for m in mask.iter_mut() {
            *m = if rng.uniform() < p { F::zero() } else { scale };
        }
        return;
    }
    fill_dropblock_mask(
        config.gamma(config.keep_rate(noise.call), f),
        config.dropblock_size,
        batch * c,
        f,
        &mut rng,
        mask,
    );
}

/// DropBlock's multipliers on `maps` maps of `f × f`: seeds ~ Bernoulli(`gamma`) on the
/// `(f − bs + 1)²` positions of each map; a seed at (i, j) drops rows i..i+bs, columns
/// j..j+bs; the kept positions are scaled by `numel / kept` (0 when everything is dropped,
/// where the reference divides by zero).
pub fn dropblock_mask<F: Float>(
    gamma: f64,
    block: usize,
    maps: usize,
    f: usize,
    rng: &mut Rng,
) -> Vec<F> {
    let mut mask = vec![F::zero(); maps * f * f];
    fill_dropblock_mask(gamma, block, maps, f, rng, &mut mask);
    mask
}

/// [`dropblock_mask`] written into `mask` (`maps · f²` values).
fn fill_dropblock_mask<F: Float>(
    gamma: f64,
    block: usize,
    maps: usize,
    f: usize,
    rng: &mut Rng,
    mask: &mut [F],
) {
    let span = f + 1 - block;
    let mut keep = vec![true; maps * f * f];
    for m in 0..maps {
        let map = &mut keep[m * f * f..][..f * f];
        for i in 0..span {
            for j in 0..span {
                if rng.uniform() < gamma {
                    for a in i..i + block {
                        map[a * f + j..a * f + j + block].fill(false);
                    }
                }
            }
        }
    }
    let kept = keep.iter().filter(|&&k| k).count();
    let scale = if kept == 0 {
        F::zero()
    } else {
        F::of(keep.len() as f64 / kept as f64)
    };
    for (m, &k) in mask.iter_mut().zip(&keep) {
        *m = if k { scale } else { F::zero() };
    }
}

/// What one block's training-mode forward keeps.
#[derive(Debug, Clone)]
struct BlockTape<F> {
    input: Vec<F>,
    /// Normalised inputs of bn1, bn2, bn3, down.bn.
    xhat: [Vec<F>; BNS_PER_BLOCK],
    inv_std: [Vec<F>; BNS_PER_BLOCK],
    /// Dropout/DropBlock multipliers on the pooled output.
    drop: Option<Vec<F>>,
}

impl<F> Default for BlockTape<F> {
    fn default() -> Self {
        BlockTape {
            input: Vec::new(),
            xhat: Default::default(),
            inv_std: Default::default(),
            drop: None,
        }
    }
}

/// What a training-mode forward pass keeps for its backward pass.
#[derive(Debug, Clone)]
pub struct ResNet12Tape<F> {
    batch: usize,
    blocks: Vec<BlockTape<F>>,
}

impl<F> Default for ResNet12Tape<F> {
    /// An empty tape, to be filled by a forward pass.
    fn default() -> Self {
        ResNet12Tape {
            batch: 0,
            blocks: Vec::new(),
        }
    }
}

impl<F> ResNet12Tape<F> {
    /// Floats allocated (capacity).
    pub(crate) fn floats(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| {
                b.input.capacity()
                    + b.xhat
                        .iter()
                        .chain(&b.inv_std)
                        .map(Vec::capacity)
                        .sum::<usize>()
                    + b.drop.as_ref().map_or(0, Vec::capacity)
            })
            .sum()
    }
}

#[inline]
fn lrelu<F: Float>(v: F) -> F {
    if v > F::zero() {
        v
    } else {
        F::of(LEAKY_SLOPE) * v
    }
}

/// `lrelu(γ·x̂ + β)` over (N, C, plane).
fn affine_lrelu<F: Float>(xhat: &[F], gamma: &[F], beta: &[F], plane: usize) -> Vec<F> {
    let mut out = vec![F::zero(); xhat.len()];
    affine_lrelu_into(xhat, gamma, beta, plane, &mut out);
    out
}

/// [`affine_lrelu`] written into `out` (as long as `xhat`).
fn affine_lrelu_into<F: Float>(xhat: &[F], gamma: &[F], beta: &[F], plane: usize, out: &mut [F]) {
    let channels = gamma.len();
    out.par_chunks_mut(plane)
        .zip(xhat.par_chunks(plane))
        .enumerate()
        .for_each(|(nc, (row, xr))| {
            let c = nc % channels;
            for (v, &x) in row.iter_mut().zip(xr) {
                *v = lrelu(x * gamma[c] + beta[c]);
            }
        });
}

/// The block's output before pooling: `lrelu(γ3·x̂3 + β3 + γd·x̂d + βd)`.
fn residual_sum<F: Float>(
    x3: &[F],
    xd: &[F],
    bn3: (&[F], &[F]),
    bnd: (&[F], &[F]),
    plane: usize,
) -> Vec<F> {
    let mut out = vec![F::zero(); x3.len()];
    residual_sum_into(x3, xd, bn3, bnd, plane, &mut out);
    out
}

/// [`residual_sum`] written into `out` (as long as `x3`).
fn residual_sum_into<F: Float>(
    x3: &[F],
    xd: &[F],
    (g3, b3): (&[F], &[F]),
    (gd, bd): (&[F], &[F]),
    plane: usize,
    out: &mut [F],
) {
    let channels = g3.len();
    out.par_chunks_mut(plane)
        .zip(x3.par_chunks(plane).zip(xd.par_chunks(plane)))
        .enumerate()
        .for_each(|(nc, (row, (r3, rd)))| {
            let c = nc % channels;
            for ((o, &a), &b) in row.iter_mut().zip(r3).zip(rd) {
                *o = lrelu(a * g3[c] + b3[c] + (b * gd[c] + bd[c]));
            }
        });
}

/// BatchNorm with batch statistics, in place: `z` becomes x̂; returns 1/sqrt(var + ε) and
/// updates `buffer` once if given.
fn batch_norm_train<F: Float>(
    z: &mut [F],
    batch: usize,
    channels: usize,
    plane: usize,
    buffer: Option<&mut BatchNormBuffers<F>>,
) -> Vec<F> {
    let (mean, var) = ops::channel_stats(z, batch, channels, plane);
    if let Some(b) = buffer {
        b.update(&mean, &var, batch * plane);
    }
    let eps = F::of(BN_EPS);
    let inv_std: Vec<F> = var.iter().map(|&v| F::one() / (v + eps).sqrt()).collect();
    z.par_chunks_mut(plane).enumerate().for_each(|(nc, row)| {
        let c = nc % channels;
        for v in row {
            *v = (*v - mean[c]) * inv_std[c];
        }
    });
    inv_std
}

/// BatchNorm with running statistics, in place (z becomes x̂).
fn batch_norm_eval<F: Float>(z: &mut [F], buffer: &BatchNormBuffers<F>, plane: usize) {
    let channels = buffer.running_mean.len();
    let eps = F::of(BN_EPS);
    z.par_chunks_mut(plane).enumerate().for_each(|(nc, row)| {
        let c = nc % channels;
        let inv = F::one() / (buffer.running_var[c] + eps).sqrt();
        for v in row {
            *v = (*v - buffer.running_mean[c]) * inv;
        }
    });
}

/// Backward of `y = γ·x̂ + β` with batch statistics, in place: `dy` becomes `d z`;
/// `dγ += Σ dy·x̂`, `dβ += Σ dy`, `dz = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))`.
#[allow(clippy::too_many_arguments)]
fn batch_norm_backward<F: Float>(
    dy: &mut [F],
    xhat: &[F],
    gamma: &[F],
    inv_std: &[F],
    batch: usize,
    plane: usize,
    d_gamma: &mut [F],
    d_beta: &mut [F],
) {
    let channels = gamma.len();
    let count = F::of((batch * plane) as f64);
    let sums: Vec<(F, F)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (mut s_dy, mut s_dyx) = (0.0f64, 0.0f64);
            for n in 0..batch {
                let at = (n * channels + c) * plane;
                for (&g, &x) in dy[at..at + plane].iter().zip(&xhat[at..at + plane]) {
                    s_dy += g.f64();
                    s_dyx += g.f64() * x.f64();
                }
            }
            (F::of(s_dy), F::of(s_dyx))
        })
        .collect();
    for (c, &(s_dy, s_dyx)) in sums.iter().enumerate() {
        d_gamma[c] += s_dyx;
        d_beta[c] += s_dy;
    }
    dy.par_chunks_mut(plane)
        .zip(xhat.par_chunks(plane))
        .enumerate()
        .for_each(|(nc, (row, xr))| {
            let c = nc % channels;
            let (s_dy, s_dyx) = sums[c];
            let (m1, m2) = (s_dy / count, s_dyx / count);
            let scale = gamma[c] * inv_std[c];
            for (v, &x) in row.iter_mut().zip(xr) {
                *v = scale * (*v - m1 - x * m2);
            }
        });
}

/// `d ⊙ lrelu'` where `a` is the LeakyReLU's output (positive exactly where its input is).
fn lrelu_backward<F: Float>(d: &mut [F], a: &[F]) {
    let slope = F::of(LEAKY_SLOPE);
    d.par_iter_mut().zip(a.par_iter()).for_each(|(g, &v)| {
        if v <= F::zero() {
            *g *= slope;
        }
    });
}

/// The ResNet-12's computations over a parameter slice (see
/// [`ResNet12Config::param_infos`]).
#[derive(Debug, Clone, Copy)]
pub struct ResNet12 {
    /// The shape.
    pub config: ResNet12Config,
}

impl ResNet12 {
    /// A ResNet-12 of this shape (checked).
    pub fn new(config: ResNet12Config) -> Result<Self> {
        config.check()?;
        Ok(ResNet12 { config })
    }

    fn check_input<F: Float>(&self, params: &[F], images: &[F], batch: usize) -> Result<()> {
        let cfg = &self.config;
        if params.len() != cfg.param_len() {
            return Err(Error::Data(format!(
                "ResNet-12 has {} parameters, got {}",
                cfg.param_len(),
                params.len()
            )));
        }
        if batch == 0 || images.len() != batch * cfg.image_len() {
            return Err(Error::Data(format!(
                "ResNet-12 expects {batch} images of {}×{}×{} ({} floats), got {} floats",
                cfg.in_channels,
                cfg.image_size,
                cfg.image_size,
                batch * cfg.image_len(),
                images.len()
            )));
        }
        Ok(())
    }

    fn check_buffers<F: Float>(&self, buffers: &[BatchNormBuffers<F>]) -> Result<()> {
        let expected = self.config.batch_norms();
        if buffers.len() != expected.len()
            || buffers
                .iter()
                .zip(&expected)
                .any(|(b, (_, c))| b.running_mean.len() != *c || b.running_var.len() != *c)
        {
            return Err(Error::Data(format!(
                "ResNet-12 needs {} BatchNorm buffers of widths {:?}",
                expected.len(),
                self.config.widths
            )));
        }
        Ok(())
    }

    /// Training-mode forward of `batch` images (N, C, S, S): BatchNorm with the batch
    /// statistics (running statistics in `buffers` updated once each, if given); dropout
    /// and DropBlock if the drop rate is positive and `noise` is given. Returns the
    /// features (N, F) and the tape for [`Self::backward`].
    pub fn forward_train<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: Option<&mut [BatchNormBuffers<F>]>,
        noise: Option<Noise>,
    ) -> Result<(Vec<F>, ResNet12Tape<F>)> {
        let mut tape = ResNet12Tape::default();
        let features = self.forward_train_into(
            params,
            images,
            batch,
            buffers,
            noise,
            &mut tape,
            &mut Scratch::default(),
        )?;
        Ok((features, tape))
    }

    /// [`Self::forward_train`] into a reused `tape` (its buffers overwritten, grown if
    /// needed) with transient buffers from `scratch`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_train_into<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        mut buffers: Option<&mut [BatchNormBuffers<F>]>,
        noise: Option<Noise>,
        tape: &mut ResNet12Tape<F>,
        scratch: &mut Scratch<F>,
    ) -> Result<Vec<F>> {
        self.check_input(params, images, batch)?;
        if let Some(b) = buffers.as_deref() {
            self.check_buffers(b)?;
        }
        let cfg = self.config;
        tape.batch = batch;
        tape.blocks.resize_with(RESNET_BLOCKS, BlockTape::default);
        fit(&mut tape.blocks[0].input, images.len());
        tape.blocks[0].input.copy_from_slice(images);
        let mut features = Vec::new();
        for l in 0..RESNET_BLOCKS {
            let o = cfg.block_offsets(l);
            let (c, cin, side) = (cfg.widths[l], cfg.cin(l), cfg.side(l));
            let plane = side * side;
            let n = batch * c * plane;
            let p = |a: usize, b: usize| &params[o[a]..o[b]];
            let mut bn = |z: &mut [F], j: usize| {
                let buf = buffers
                    .as_deref_mut()
                    .map(|b| &mut b[l * BNS_PER_BLOCK + j]);
                batch_norm_train(z, batch, c, plane, buf)
            };
            let conv = |cin: usize| ConvShape {
                batch,
                cin,
                cout: c,
                side,
            };
            let (done, rest) = tape.blocks.split_at_mut(l + 1);
            let t = &mut done[l];
            for x in &mut t.xhat {
                fit(x, n);
            }
            let [z1, z2, z3, zd] = &mut t.xhat;
            // a1, a2 and the block's output before pooling, in turn
            let mut a_buf = scratch.take(0, n);
            let a = &mut a_buf[..n];
            ops::conv3x3_forward(conv(cin), &t.input, p(0, 1), z1);
            let inv1 = bn(z1, 0);
            affine_lrelu_into(z1, p(1, 2), p(2, 3), plane, a);
            ops::conv3x3_forward(conv(c), a, p(3, 4), z2);
            let inv2 = bn(z2, 1);
            affine_lrelu_into(z2, p(4, 5), p(5, 6), plane, a);
            ops::conv3x3_forward(conv(c), a, p(6, 7), z3);
            let inv3 = bn(z3, 2);
            ops::conv1x1_forward(conv(cin), &t.input, p(9, 10), zd);
            let invd = bn(zd, 3);
            residual_sum_into(z3, zd, (p(7, 8), p(8, 9)), (p(10, 11), p(11, 12)), plane, a);
            let half = side / 2;
            let pooled_len = batch * c * half * half;
            let pooled = match rest.first_mut() {
                Some(next) => {
                    fit(&mut next.input, pooled_len);
                    &mut next.input
                }
                None => {
                    features = vec![F::zero(); pooled_len];
                    &mut features
                }
            };
            ops::max_pool2_forward(a, batch * c, side, pooled);
            scratch.put(0, a_buf);
            t.drop = match noise {
                Some(n) if cfg.is_stochastic() => {
                    let mut mask = t.drop.take().unwrap_or_default();
                    fit(&mut mask, pooled_len);
                    fill_drop_mask(&cfg, l, batch, n, &mut mask);
                    pooled
                        .par_iter_mut()
                        .zip(mask.par_iter())
                        .for_each(|(v, &m)| *v *= m);
                    Some(mask)
                }
                _ => None,
            };
            t.inv_std = [inv1, inv2, inv3, invd];
        }
        Ok(features)
    }

    /// Evaluation-mode forward (running statistics, unchanged; no dropout): features (N, F).
    pub fn forward_eval<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: &[BatchNormBuffers<F>],
    ) -> Result<Vec<F>> {
        self.check_input(params, images, batch)?;
        self.check_buffers(buffers)?;
        let cfg = self.config;
        let mut x = images.to_vec();
        for l in 0..RESNET_BLOCKS {
            let o = cfg.block_offsets(l);
            let (c, cin, side) = (cfg.widths[l], cfg.cin(l), cfg.side(l));
            let plane = side * side;
            let bufs = &buffers[l * BNS_PER_BLOCK..][..BNS_PER_BLOCK];
            let conv = |cin: usize| ConvShape {
                batch,
                cin,
                cout: c,
                side,
            };
            let mut z = vec![F::zero(); batch * c * plane];
            ops::conv3x3_forward(conv(cin), &x, &params[o[0]..o[1]], &mut z);
            batch_norm_eval(&mut z, &bufs[0], plane);
            let a1 = affine_lrelu(&z, &params[o[1]..o[2]], &params[o[2]..o[3]], plane);
            ops::conv3x3_forward(conv(c), &a1, &params[o[3]..o[4]], &mut z);
            batch_norm_eval(&mut z, &bufs[1], plane);
            let a2 = affine_lrelu(&z, &params[o[4]..o[5]], &params[o[5]..o[6]], plane);
            ops::conv3x3_forward(conv(c), &a2, &params[o[6]..o[7]], &mut z);
            batch_norm_eval(&mut z, &bufs[2], plane);
            let mut zd = a2;
            ops::conv1x1_forward(conv(cin), &x, &params[o[9]..o[10]], &mut zd);
            batch_norm_eval(&mut zd, &bufs[3], plane);
            let out = residual_sum(
                &z,
                &zd,
                (&params[o[7]..o[8]], &params[o[8]..o[9]]),
                (&params[o[10]..o[11]], &params[o[11]..o[12]]),
                plane,
            );
            let half = side / 2;
            let mut pooled = vec![F::zero(); batch * c * half * half];
            ops::max_pool2_forward(&out, batch * c, side, &mut pooled);
            x = pooled;
        }
        Ok(x)
    }

    /// Backward of [`Self::forward_train`]: adds `d loss / d params` to `grads` given
    /// `d_features` (N, F); writes `d loss / d images` into `d_images` if given. BatchNorm's
    /// backward includes the batch statistics' dependence on the inputs; dropout and
    /// DropBlock masks are constants.
    pub fn backward<F: Float>(
        &self,
        params: &[F],
        tape: &ResNet12Tape<F>,
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

    /// [`Self::backward`] with transient buffers from `scratch`.
    pub(crate) fn backward_into<F: Float>(
        &self,
        params: &[F],
        tape: &ResNet12Tape<F>,
        d_features: &[F],
        grads: &mut [F],
        mut d_images: Option<&mut [F]>,
        scratch: &mut Scratch<F>,
    ) -> Result<()> {
        let cfg = self.config;
        let batch = tape.batch;
        if tape.blocks.len() != RESNET_BLOCKS || batch == 0 {
            return Err(Error::Data(
                "ResNet-12 backward: the tape holds no forward pass".into(),
            ));
        }
        if d_features.len() != batch * cfg.feature_size()
            || grads.len() != cfg.param_len()
            || params.len() != cfg.param_len()
            || d_images
                .as_deref()
                .is_some_and(|d| d.len() != batch * cfg.image_len())
        {
            return Err(Error::Data(format!(
                "ResNet-12 backward: expected {} feature gradients, {} parameters and parameter gradients and {} image gradients",
                batch * cfg.feature_size(),
                cfg.param_len(),
                batch * cfg.image_len()
            )));
        }
        // the gradient with respect to the current block's output (`d[..d_len]`) and to
        // its input (`dx`), swapped after every block
        let mut d_len = d_features.len();
        let mut d = scratch.take(5, d_len);
        d[..d_len].copy_from_slice(d_features);
        let mut dx = scratch.take(4, 0);
        for l in (0..RESNET_BLOCKS).rev() {
            let t = &tape.blocks[l];
            let o = cfg.block_offsets(l);
            let (c, cin, side) = (cfg.widths[l], cfg.cin(l), cfg.side(l));
            let plane = side * side;
            let n = batch * c * plane;
            let in_len = t.input.len();
            let p = |a: usize, b: usize| &params[o[a]..o[b]];
            if let Some(mask) = &t.drop {
                d[..d_len]
                    .par_iter_mut()
                    .zip(mask.par_iter())
                    .for_each(|(g, &m)| *g *= m);
            }
            // the block's output before pooling, later the main path's activations
            let mut out_buf = scratch.take(0, n);
            let out = &mut out_buf[..n];
            residual_sum_into(
                &t.xhat[2],
                &t.xhat[3],
                (p(7, 8), p(8, 9)),
                (p(10, 11), p(11, 12)),
                plane,
                out,
            );
            // the gradient of the main path's current pre-activation, and the next one's
            let mut d_z = scratch.take(1, n);
            let mut d_next = scratch.take(2, n);
            let d_out = &mut d_z[..n];
            ops::max_pool2_backward(out, batch * c, side, &d[..d_len], d_out);
            lrelu_backward(d_out, out);
            let conv = |cin: usize| ConvShape {
                batch,
                cin,
                cout: c,
                side,
            };
            let want_dx = l > 0 || d_images.is_some();
            // the shortcut: bn_d(conv1x1(x))
            let d_zd = &mut d_next[..n];
            d_zd.copy_from_slice(d_out);
            {
                let (dg, db) = grads[o[10]..o[12]].split_at_mut(c);
                batch_norm_backward(
                    d_zd,
                    &t.xhat[3],
                    p(10, 11),
                    &t.inv_std[3],
                    batch,
                    plane,
                    dg,
                    db,
                );
            }
            let mut dx_short = scratch.take(3, if want_dx { in_len } else { 0 });
            ops::conv1x1_backward(
                conv(cin),
                &t.input,
                p(9, 10),
                d_zd,
                &mut grads[o[9]..o[10]],
                if want_dx {
                    Some(&mut dx_short[..in_len])
                } else {
                    None
                },
            );
            // the main path, from bn3 back to conv1
            for j in (0..3).rev() {
                let (w, g, b) = (o[3 * j], o[3 * j + 1], o[3 * j + 2]);
                {
                    let (dg, db) = grads[g..b + c].split_at_mut(c);
                    batch_norm_backward(
                        &mut d_z[..n],
                        &t.xhat[j],
                        &params[g..b],
                        &t.inv_std[j],
                        batch,
                        plane,
                        dg,
                        db,
                    );
                }
                if j > 0 {
                    let (pg, pb) = (o[3 * j - 2], o[3 * j - 1]);
                    let a = &mut out_buf[..n];
                    affine_lrelu_into(
                        &t.xhat[j - 1],
                        &params[pg..pb],
                        &params[pb..pb + c],
                        plane,
                        a,
                    );
                    let d_a = &mut d_next[..n];
                    ops::conv3x3_backward(
                        conv(c),
                        a,
                        &params[w..g],
                        &d_z[..n],
                        &mut grads[w..g],
                        Some(&mut *d_a),
                    );
                    lrelu_backward(d_a, a);
                    std::mem::swap(&mut d_z, &mut d_next);
                } else {
                    if want_dx {
                        at_least(&mut dx, in_len);
                    }
                    ops::conv3x3_backward(
                        conv(cin),
                        &t.input,
                        &params[w..g],
                        &d_z[..n],
                        &mut grads[w..g],
                        if want_dx {
                            Some(&mut dx[..in_len])
                        } else {
                            None
                        },
                    );
                    if want_dx {
                        dx[..in_len]
                            .par_iter_mut()
                            .zip(dx_short[..in_len].par_iter())
                            .for_each(|(a, &b)| *a += b);
                        if l > 0 {
                            std::mem::swap(&mut d, &mut dx);
                            d_len = in_len;
                        } else if let Some(di) = d_images.as_deref_mut() {
                            di.copy_from_slice(&dx[..in_len]);
                        }
                    }
                }
            }
            scratch.put(0, out_buf);
            scratch.put(1, d_z);
            scratch.put(2, d_next);
            scratch.put(3, dx_short);
        }
        scratch.put(4, dx);
        scratch.put(5, d);
        Ok(())
    }
}
