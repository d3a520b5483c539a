//! Times one ProtoNet conv4 training step with one candidate CNN library (chosen by cargo
//! feature): `candle`, `burn` (ndarray backend + autodiff) or `gemm` (a hand-written
//! im2col + `gemm` path). `torch_step.py` times the same step on torch.
//!
//! The step is the CNN's share of an fsc training step: 10 calls of the CNN (one per time
//! step) on 64 images of 3×S×S each, BatchNorm in training mode (batch statistics per call),
//! loss = Σ_t mean(features_t ⊙ readout_t), backward, AdamW update. f32.
//!
//! Usage: `cargo run --release --features candle -- [--steps 20] [--warmup 3] [--size 32]`
//! (run with `RAYON_NUM_THREADS=2`). Prints one line per timed step and the median.

use std::time::Instant;

/// Command-line settings shared by every candidate.
#[derive(Clone, Copy, Debug)]
struct Settings {
    steps: usize,
    warmup: usize,
    size: usize,
    batch: usize,
    calls: usize,
    channels: usize,
}

fn parse_settings() -> Settings {
    let mut s = Settings {
        steps: 20,
        warmup: 3,
        size: 32,
        batch: 64,
        calls: 10,
        channels: 64,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v: usize = args[i + 1].parse().expect("a number after each flag");
        match args[i].as_str() {
            "--steps" => s.steps = v,
            "--warmup" => s.warmup = v,
            "--size" => s.size = v,
            "--batch" => s.batch = v,
            "--calls" => s.calls = v,
            "--channels" => s.channels = v,
            other => panic!("unknown flag {other}; valid: --steps --warmup --size --batch --calls --channels"),
        }
        i += 2;
    }
    s
}

/// Deterministic pseudo-normal numbers (sum of uniforms), so every candidate sees the same kind
/// of data without a random-number dependency.
fn pseudo_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += ((state >> 40) as f32) / ((1u64 << 24) as f32);
            }
            (acc - 2.0) * 1.7
        })
        .collect()
}

fn feature_size(s: &Settings) -> usize {
    let mut side = s.size;
    for _ in 0..4 {
        side /= 2;
    }
    s.channels * side * side
}

fn report(name: &str, s: &Settings, mut step: impl FnMut() -> f32) {
    let mut times = Vec::new();
    for i in 0..s.warmup + s.steps {
        let start = Instant::now();
        let loss = step();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if i >= s.warmup {
            println!("step {} {:.1} ms (loss {loss:.5})", i - s.warmup, ms);
            times.push(ms);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name} median {:.1} ms", times[times.len() / 2]);
}

#[cfg(feature = "candle")]
mod with_candle {
    use super::*;
    use candle_core::{DType, Device, Tensor, Var, D};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    fn batch_norm(x: &Tensor, gamma: &Var, beta: &Var) -> candle_core::Result<Tensor> {
        let c = x.dim(1)?;
        let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let xhat = centred.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        xhat.broadcast_mul(&gamma.as_tensor().reshape((1, c, 1, 1))?)?
            .broadcast_add(&beta.as_tensor().reshape((1, c, 1, 1))?)
    }

    pub fn run(s: &Settings) -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut convs = Vec::new();
        let mut gammas = Vec::new();
        let mut betas = Vec::new();
        let mut cin = 3;
        for _ in 0..4 {
            let std = (2.0 / (9.0 * s.channels as f64)).sqrt();
            convs.push(Var::randn(0f32, std as f32, (s.channels, cin, 3, 3), &dev)?);
            gammas.push(Var::ones(s.channels, DType::F32, &dev)?);
            betas.push(Var::zeros(s.channels, DType::F32, &dev)?);
            cin = s.channels;
        }
        let vars: Vec<Var> = convs
            .iter()
            .chain(&gammas)
            .chain(&betas)
            .cloned()
            .collect();
        let mut opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: 1e-3,
                weight_decay: 5e-4,
                ..Default::default()
            },
        )?;
        let per_call = s.batch * 3 * s.size * s.size;
        let f = feature_size(s);
        let images: Vec<Tensor> = (0..s.calls)
            .map(|t| {
                Tensor::from_vec(
                    pseudo_normal(per_call, t as u64),
                    (s.batch, 3, s.size, s.size),
                    &dev,
                )
            })
            .collect::<candle_core::Result<_>>()?;
        let readouts: Vec<Tensor> = (0..s.calls)
            .map(|t| Tensor::from_vec(pseudo_normal(s.batch * f, 100 + t as u64), (s.batch, f), &dev))
            .collect::<candle_core::Result<_>>()?;
        report("candle", s, || {
            let mut loss: Option<Tensor> = None;
            for t in 0..s.calls {
                let mut x = images[t].clone();
                for k in 0..4 {
                    x = x.conv2d(convs[k].as_tensor(), 1, 1, 1, 1).unwrap();
                    x = batch_norm(&x, &gammas[k], &betas[k]).unwrap();
                    x = x.relu().unwrap().max_pool2d(2).unwrap();
                }
                let feat = x.flatten_from(1).unwrap();
                let l = (feat * &readouts[t]).unwrap().mean_all().unwrap();
                loss = Some(match loss {
                    None => l,
                    Some(acc) => (acc + l).unwrap(),
                });
            }
            let loss = loss.unwrap();
            opt.backward_step(&loss).unwrap();
            loss.to_scalar::<f32>().unwrap()
        });
        let _ = D::Minus1;
        Ok(())
    }
}

#[cfg(feature = "burn")]
mod with_burn {
    use super::*;
    use burn::module::Module;
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
    use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::{Device, Tensor, TensorData};

    #[derive(Module, Debug)]
    pub struct Conv4 {
        convs: Vec<Conv2d>,
        norms: Vec<BatchNorm>,
        pool: MaxPool2d,
    }

    impl Conv4 {
        fn forward(&self, mut x: Tensor<4>) -> Tensor<2> {
            for k in 0..self.convs.len() {
                x = self.convs[k].forward(x);
                x = self.norms[k].forward(x);
                x = burn::tensor::activation::relu(x);
                x = self.pool.forward(x);
            }
            x.flatten(1, 3)
        }
    }

    pub fn run(s: &Settings) {
        let device = Device::ndarray().autodiff();
        let mut cin = 3;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for _ in 0..4 {
            convs.push(
                Conv2dConfig::new([cin, s.channels], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .init(&device),
            );
            norms.push(BatchNormConfig::new(s.channels).init(&device));
            cin = s.channels;
        }
        let mut model = Conv4 {
            convs,
            norms,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        };
        let mut opt = AdamWConfig::new()
            .with_weight_decay(5e-4)
            .with_epsilon(1e-8)
            .with_amsgrad(true)
            .init();
        let per_call = s.batch * 3 * s.size * s.size;
        let f = feature_size(s);
        let images: Vec<Tensor<4>> = (0..s.calls)
            .map(|t| {
                Tensor::<4>::from_data(
                    TensorData::new(pseudo_normal(per_call, t as u64), [s.batch, 3, s.size, s.size]),
                    &device,
                )
            })
            .collect();
        let readouts: Vec<Tensor<2>> = (0..s.calls)
            .map(|t| {
                Tensor::<2>::from_data(
                    TensorData::new(pseudo_normal(s.batch * f, 100 + t as u64), [s.batch, f]),
                    &device,
                )
            })
            .collect();
        report("burn", s, || {
            let mut loss: Option<Tensor<1>> = None;
            for t in 0..s.calls {
                let feat = model.forward(images[t].clone());
                let l = (feat * readouts[t].clone()).mean();
                loss = Some(match loss {
                    None => l,
                    Some(acc) => acc + l,
                });
            }
            let loss = loss.unwrap();
            let value: f32 = loss.clone().into_scalar().elem();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(1e-3, model.clone(), grads);
            value
        });
    }
    use burn::tensor::ElementConversion;
}

#[cfg(feature = "gemm")]
mod handwritten {
    //! im2col + `gemm` convolutions, activations laid out (C, N, H, W) so that each layer is
    //! one GEMM and BatchNorm reduces over contiguous rows.
    use super::*;
    use rayon::prelude::*;

    /// dst (m×n, row-major) = [dst +] op(a) · op(b); op(a) is m×k, op(b) is k×n.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [f32],
        accumulate: bool,
        a: &[f32],
        a_transposed: bool,
        b: &[f32],
        b_transposed: bool,
    ) {
        let (a_rs, a_cs) = if a_transposed { (1, m as isize) } else { (k as isize, 1) };
        let (b_rs, b_cs) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
        assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
        // SAFETY: the asserts above bound every index the strides reach.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }

    /// cols[(c·9 + a·3 + b), (n, i, j)] = x[c, n, i + a − 1, j + b − 1] (zero outside).
    fn im2col(x: &[f32], _channels: usize, n: usize, side: usize, cols: &mut [f32]) {
        let plane = n * side * side;
        cols.par_chunks_mut(plane).enumerate().for_each(|(row, out)| {
            let (ch, a, b) = (row / 9, (row % 9) / 3, row % 3);
            let src = &x[ch * plane..(ch + 1) * plane];
            for img in 0..n {
                for i in 0..side {
                    let si = i as isize + a as isize - 1;
                    let o = &mut out[(img * side + i) * side..(img * side + i + 1) * side];
                    if si < 0 || si >= side as isize {
                        o.fill(0.0);
                        continue;
                    }
                    let srow = &src[(img * side + si as usize) * side..][..side];
                    for j in 0..side {
                        let sj = j as isize + b as isize - 1;
                        o[j] = if sj < 0 || sj >= side as isize { 0.0 } else { srow[sj as usize] };
                    }
                }
            }
        });
    }

    /// The adjoint of `im2col`: dx[c, n, i', j'] = Σ over the (a, b) that read it.
    fn col2im(cols: &[f32], _channels: usize, n: usize, side: usize, dx: &mut [f32]) {
        let plane = n * side * side;
        dx.par_chunks_mut(plane).enumerate().for_each(|(ch, out)| {
            out.fill(0.0);
            for ab in 0..9 {
                let (a, b) = (ab / 3, ab % 3);
                let src = &cols[(ch * 9 + ab) * plane..][..plane];
                for img in 0..n {
                    for i in 0..side {
                        let si = i as isize + a as isize - 1;
                        if si < 0 || si >= side as isize {
                            continue;
                        }
                        let orow = &mut out[(img * side + si as usize) * side..][..side];
                        let srow = &src[(img * side + i) * side..][..side];
                        for j in 0..side {
                            let sj = j as isize + b as isize - 1;
                            if sj >= 0 && sj < side as isize {
                                orow[sj as usize] += srow[j];
                            }
                        }
                    }
                }
            }
        });
    }

    struct Adam {
        m: Vec<f32>,
        v: Vec<f32>,
        vmax: Vec<f32>,
        t: i32,
    }

    impl Adam {
        fn new(n: usize) -> Self {
            Adam { m: vec![0.0; n], v: vec![0.0; n], vmax: vec![0.0; n], t: 0 }
        }
        fn step(&mut self, p: &mut [f32], g: &[f32]) {
            self.t += 1;
            let (lr, wd, b1, b2, eps) = (1e-3f32, 5e-4f32, 0.9f32, 0.999f32, 1e-8f32);
            let c1 = 1.0 - b1.powi(self.t);
            let c2 = 1.0 - b2.powi(self.t);
            for i in 0..p.len() {
                p[i] *= 1.0 - lr * wd;
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
                self.vmax[i] = self.vmax[i].max(self.v[i]);
                p[i] -= lr * (self.m[i] / c1) / ((self.vmax[i] / c2).sqrt() + eps);
            }
        }
    }

    /// What one layer keeps from its forward pass for the backward pass.
    struct Saved {
        cols: Vec<f32>,
        xhat: Vec<f32>,
        inv_std: Vec<f32>,
        relu_pos: Vec<bool>,
        argmax: Vec<u32>,
    }

    pub fn run(s: &Settings) {
        let ch = s.channels;
        let n = s.batch;
        let mut w: Vec<Vec<f32>> = Vec::new();
        let mut cins = Vec::new();
        let mut cin = 3;
        for k in 0..4 {
            let std = (2.0 / (9.0 * ch as f32)).sqrt();
            w.push(pseudo_normal(ch * cin * 9, 1000 + k).iter().map(|x| x * std).collect());
            cins.push(cin);
            cin = ch;
        }
        let mut gamma = vec![vec![1.0f32; ch]; 4];
        let mut beta = vec![vec![0.0f32; ch]; 4];
        let mut adam_w: Vec<Adam> = w.iter().map(|x| Adam::new(x.len())).collect();
        let mut adam_g: Vec<Adam> = (0..4).map(|_| Adam::new(ch)).collect();
        let mut adam_b: Vec<Adam> = (0..4).map(|_| Adam::new(ch)).collect();
        let f = feature_size(s);
        // images stored (C, N, H, W)
        let images: Vec<Vec<f32>> =
            (0..s.calls).map(|t| pseudo_normal(n * 3 * s.size * s.size, t as u64)).collect();
        let readouts: Vec<Vec<f32>> =
            (0..s.calls).map(|t| pseudo_normal(n * f, 100 + t as u64)).collect();
        report("gemm", s, || {
            let mut gw: Vec<Vec<f32>> = w.iter().map(|x| vec![0.0; x.len()]).collect();
            let mut gg = vec![vec![0.0f32; ch]; 4];
            let mut gb = vec![vec![0.0f32; ch]; 4];
            let mut total = 0.0f32;
            let mut saved_all: Vec<Vec<Saved>> = Vec::new();
            // forward, every call
            for t in 0..s.calls {
                let mut x = images[t].clone();
                let mut side = s.size;
                let mut saved = Vec::new();
                for k in 0..4 {
                    let p = n * side * side;
                    let mut cols = vec![0.0f32; cins[k] * 9 * p];
                    im2col(&x, cins[k], n, side, &mut cols);
                    let mut y = vec![0.0f32; ch * p];
                    matmul(ch, p, cins[k] * 9, &mut y, false, &w[k], false, &cols, false);
                    let mut inv_std = vec![0.0f32; ch];
                    let mut relu_pos = vec![false; ch * p];
                    y.par_chunks_mut(p)
                        .zip(inv_std.par_iter_mut())
                        .zip(relu_pos.par_chunks_mut(p))
                        .enumerate()
                        .for_each(|(c, ((row, is), pos))| {
                            let mean = row.iter().sum::<f32>() / p as f32;
                            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / p as f32;
                            *is = 1.0 / (var + 1e-5).sqrt();
                            for (v, q) in row.iter_mut().zip(pos.iter_mut()) {
                                *v = (*v - mean) * *is;
                                *q = *v * gamma[k][c] + beta[k][c] > 0.0;
                            }
                        });
                    let xhat = y;
                    let half = side / 2;
                    let mut pooled = vec![0.0f32; ch * n * half * half];
                    let mut argmax = vec![0u32; pooled.len()];
                    pooled
                        .par_chunks_mut(n * half * half)
                        .zip(argmax.par_chunks_mut(n * half * half))
                        .enumerate()
                        .for_each(|(c, (out, am))| {
                            for img in 0..n {
                                for i in 0..half {
                                    for j in 0..half {
                                        let mut best = 0.0f32; // ReLU output ≥ 0
                                        let mut at = 0u32;
                                        for (di, dj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                                            let idx = c * p + (img * side + 2 * i + di) * side + 2 * j + dj;
                                            let v = (xhat[idx] * gamma[k][c] + beta[k][c]).max(0.0);
                                            if (di, dj) == (0, 0) || v > best {
                                                best = v;
                                                at = idx as u32;
                                            }
                                        }
                                        let o = (img * half + i) * half + j;
                                        out[o] = best;
                                        am[o] = at;
                                    }
                                }
                            }
                        });
                    saved.push(Saved { cols, xhat, inv_std, relu_pos, argmax });
                    x = pooled;
                    side = half;
                }
                // loss: mean over (N, F) of feat ⊙ readout, feat[n, c·s² + q] = x[c, n, q]
                let sq = side * side;
                for c in 0..ch {
                    for img in 0..n {
                        for q in 0..sq {
                            total += x[(c * n + img) * sq + q] * readouts[t][img * f + c * sq + q];
                        }
                    }
                }
                saved_all.push(saved);
            }
            total /= (n * f) as f32;
            // backward, every call
            for (t, saved) in saved_all.iter().enumerate() {
                let mut side = s.size >> 4;
                let sq = side * side;
                let mut dx = vec![0.0f32; ch * n * sq];
                for c in 0..ch {
                    for img in 0..n {
                        for q in 0..sq {
                            dx[(c * n + img) * sq + q] = readouts[t][img * f + c * sq + q] / (n * f) as f32;
                        }
                    }
                }
                for k in (0..4).rev() {
                    let sv = &saved[k];
                    let full = side * 2;
                    let p = n * full * full;
                    let mut dy = vec![0.0f32; ch * p];
                    for (o, &at) in sv.argmax.iter().enumerate() {
                        dy[at as usize] = dx[o];
                    }
                    // ReLU and BatchNorm backward, per channel
                    let mut dg = vec![0.0f32; ch];
                    let mut db = vec![0.0f32; ch];
                    dy.par_chunks_mut(p)
                        .zip(dg.par_iter_mut().zip(db.par_iter_mut()))
                        .enumerate()
                        .for_each(|(c, (row, (g, b)))| {
                            let xh = &sv.xhat[c * p..(c + 1) * p];
                            let pos = &sv.relu_pos[c * p..(c + 1) * p];
                            let (mut sum_dy, mut sum_dyx) = (0.0f32, 0.0f32);
                            for i in 0..p {
                                if !pos[i] {
                                    row[i] = 0.0;
                                }
                                sum_dy += row[i];
                                sum_dyx += row[i] * xh[i];
                            }
                            *g = sum_dyx;
                            *b = sum_dy;
                            let scale = gamma[k][c] * sv.inv_std[c];
                            let (m1, m2) = (sum_dy / p as f32, sum_dyx / p as f32);
                            for i in 0..p {
                                row[i] = scale * (row[i] - m1 - xh[i] * m2);
                            }
                        });
                    for c in 0..ch {
                        gg[k][c] += dg[c];
                        gb[k][c] += db[c];
                    }
                    let kk = cins[k] * 9;
                    matmul(ch, kk, p, &mut gw[k], true, &dy, false, &sv.cols, true);
                    if k > 0 {
                        let mut dcols = vec![0.0f32; kk * p];
                        matmul(kk, p, ch, &mut dcols, false, &w[k], true, &dy, false);
                        dx = vec![0.0f32; cins[k] * p];
                        col2im(&dcols, cins[k], n, full, &mut dx);
                    }
                    side = full;
                }
            }
            for k in 0..4 {
                adam_w[k].step(&mut w[k], &gw[k]);
                adam_g[k].step(&mut gamma[k], &gg[k]);
                adam_b[k].step(&mut beta[k], &gb[k]);
            }
            total
        });
    }
}

fn main() {
    let s = parse_settings();
    #[cfg(feature = "candle")]
    with_candle::run(&s).expect("candle step");
    #[cfg(feature = "burn")]
    with_burn::run(&s);
    #[cfg(feature = "gemm")]
    handwritten::run(&s);
    let _ = &s;
}
