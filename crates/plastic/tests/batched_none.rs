//! The batched path of non-plastic networks (`plasticity = none`, `engine/batched.rs`):
//! - the same results as the per-episode path ([`Engine::per_episode`]) to rounding (f64
//!   within 1e-12, f32 within 1e-5, tensor-wise relative) on random configurations:
//!   RNN/LSTM × LayerNorm × input layer × extra outputs × modulation, batches that are not
//!   a multiple of the chunk size, the forward diagnostics, the loss gradient, the input
//!   gradient and the vector-Jacobian product;
//! - bit-identical results for 1, 2, 3 and 5 threads, every instruction set this CPU has
//!   and every blocking of the weight-gradient GEMM.
//!
//! (The reference fixtures of `none` and the finite-difference checks go through the
//! batched path too: `reference_parity.rs`, `fsc_rnn_parity.rs`, `gradient_check.rs`,
//! `input_gradient.rs`.)

use plastic::kernels::{set_simd, simd, Simd};
use plastic::matmul::{set_blocking, Blocking};
use plastic::rng::Rng;
use plastic::{CellKind, Engine, Episodes, Float, GradRequest, Loss, Network, NetworkConfig, Rule};

/// A random non-plastic configuration, batch size and loss.
fn random_case(rng: &mut Rng) -> (NetworkConfig, usize, Loss) {
    let pick =
        |rng: &mut Rng, n: usize| ((rng.uniform_in(0.0, 1.0) * n as f64) as usize).min(n - 1);
    let rnn = [CellKind::Rnn, CellKind::Lstm][pick(rng, 2)];
    let input_layer = pick(rng, 2) == 0;
    let hidden = [3, 16, 24, 37][pick(rng, 4)];
    let cfg = NetworkConfig {
        rnn,
        plasticity: Rule::None,
        input_size: if input_layer {
            1 + pick(rng, 20)
        } else {
            hidden
        },
        hidden_size: hidden,
        output_size: 2 + pick(rng, 3),
        extra_dim: pick(rng, 5),
        modulation: pick(rng, 2) == 0,
        layernorm: pick(rng, 2) == 0,
        input_layer,
        ..Default::default()
    };
    let batch = [1, 5, 16, 19, 37][pick(rng, 5)];
    let loss = [Loss::Mse, Loss::CrossEntropy][pick(rng, 2)];
    (cfg, batch, loss)
}

fn episodes<F: Float>(cfg: &NetworkConfig, batch: usize, seed: u64) -> Episodes<F> {
    let mut rng = Rng::new(seed);
    let t = 2 + (seed % 6) as usize;
    let (i, o) = (cfg.input_size, cfg.output_size);
    let mut r = |n: usize| -> Vec<F> { (0..n).map(|_| F::of(rng.uniform_in(-1.0, 1.0))).collect() };
    let input = r(batch * t * i);
    let target = r(batch * t * o);
    Episodes::new(batch, t, i, o, input, target, t / 3).unwrap()
}

/// `max |a − b| / max |b|` (0 for two zero tensors).
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    if scale == 0.0 {
        err
    } else {
        err / scale
    }
}

fn f64s<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|x| x.f64()).collect()
}

/// Every result of both engines on one case, compared tensor by tensor.
fn compare<F: Float>(cfg: &NetworkConfig, batch: usize, loss: Loss, seed: u64, tol: f64) -> f64 {
    let worst = std::cell::Cell::new(0.0f64);
    let net = Network::<F>::new(cfg.clone(), seed).unwrap();
    let ep = episodes::<F>(cfg, batch, seed);
    let (fast, slow) = (Engine::<F>::new(), Engine::<F>::per_episode());
    let what = format!(
        "{} layernorm={} input_layer={} H={} D={} B={} T={} {:?} [{}]",
        cfg.rnn,
        cfg.layernorm,
        cfg.input_layer,
        cfg.hidden_size,
        cfg.full_output_size(),
        batch,
        ep.steps,
        loss,
        F::NAME
    );
    let check = |name: &str, a: &[F], b: &[F]| {
        let e = rel(&f64s(a), &f64s(b));
        worst.set(worst.get().max(e));
        assert!(
            e <= tol,
            "{what}: {name} differs by {e:.3e} (limit {tol:.0e})"
        );
    };
    let (fa, fb) = (
        fast.forward(&net, &ep, loss).unwrap(),
        slow.forward(&net, &ep, loss).unwrap(),
    );
    check("outputs", &fa.outputs, &fb.outputs);
    check("plasticity_rate", &fa.plasticity_rate, &fb.plasticity_rate);
    check("applied_rate", &fa.applied_rate, &fb.applied_rate);
    check("decay_rate", &fa.decay_rate, &fb.decay_rate);
    check("update_norm", &fa.update_norm, &fb.update_norm);
    check("plastic_norm", &fa.plastic_norm, &fb.plastic_norm);
    check("inner_loss", &fa.inner_loss, &fb.inner_loss);
    check("forward loss", &[fa.loss], &[fb.loss]);
    let req = GradRequest { inputs: true };
    let (ga, gb) = (
        fast.loss_and_grad_with(&net, &ep, loss, req).unwrap(),
        slow.loss_and_grad_with(&net, &ep, loss, req).unwrap(),
    );
    check("loss", &[ga.loss], &[gb.loss]);
    check("forward loss = gradient's loss", &[ga.loss], &[fa.loss]);
    for info in net.layout().infos() {
        check(
            &format!("grad {}", info.name),
            &ga.grads[info.range()],
            &gb.grads[info.range()],
        );
    }
    check(
        "input grads",
        ga.input_grads.as_ref().unwrap(),
        gb.input_grads.as_ref().unwrap(),
    );
    // a VJP with a random output adjoint
    let mut rng = Rng::new(seed ^ 0x5eed);
    let d: Vec<F> = (0..fa.outputs.len())
        .map(|_| F::of(rng.uniform_in(-1.0, 1.0)))
        .collect();
    let (va, vb) = (
        fast.vjp(&net, &ep, &d, req).unwrap(),
        slow.vjp(&net, &ep, &d, req).unwrap(),
    );
    check("vjp value", &[va.loss], &[vb.loss]);
    check("vjp grads", &va.grads, &vb.grads);
    check(
        "vjp input grads",
        va.input_grads.as_ref().unwrap(),
        vb.input_grads.as_ref().unwrap(),
    );
    // the gradient is not trivially zero
    assert!(
        ga.grads.iter().any(|&g| g != F::zero()),
        "{what}: zero gradient"
    );
    worst.get()
}

#[test]
fn batched_and_per_episode_paths_agree_on_random_configurations() {
    let mut rng = Rng::new(2026);
    let (mut w64, mut w32) = (0.0f64, 0.0f64);
    for case in 0..40u64 {
        let (cfg, batch, loss) = random_case(&mut rng);
        w64 = w64.max(compare::<f64>(&cfg, batch, loss, case, 1e-12));
        w32 = w32.max(compare::<f32>(&cfg, batch, loss, case, 1e-5));
    }
    println!("batched vs per-episode, 40 random configurations: largest tensor-wise difference {w64:.2e} in f64, {w32:.2e} in f32");
}

/// Every number of a forward pass, a loss gradient with input gradients and a VJP, as bits.
fn everything<F: Float>(engine: &Engine<F>, net: &Network<F>, ep: &Episodes<F>) -> Vec<u64> {
    let req = GradRequest { inputs: true };
    let f = engine.forward(net, ep, Loss::Mse).unwrap();
    let g = engine.loss_and_grad_with(net, ep, Loss::Mse, req).unwrap();
    let d: Vec<F> = (0..f.outputs.len())
        .map(|k| F::of(((k * 37 % 11) as f64 - 5.0) / 7.0))
        .collect();
    let v = engine.vjp(net, ep, &d, req).unwrap();
    let mut all: Vec<F> = Vec::new();
    for part in [
        &f.outputs,
        &f.plasticity_rate,
        &f.decay_rate,
        &f.inner_loss,
        &g.grads,
        g.input_grads.as_ref().unwrap(),
        &v.grads,
        v.input_grads.as_ref().unwrap(),
    ] {
        all.extend_from_slice(part);
    }
    all.extend([f.loss, g.loss, v.loss]);
    all.iter().map(|x| x.f64().to_bits()).collect()
}

fn identical_everywhere<F: Float>() -> usize {
    let pools: Vec<(usize, rayon::ThreadPool)> = [1, 2, 3, 5]
        .into_iter()
        .map(|n| {
            (
                n,
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let levels: Vec<Simd> = [Simd::Baseline, Simd::Avx2, Simd::Avx512]
        .into_iter()
        .filter(|&l| {
            set_simd(l);
            simd() == l
        })
        .collect();
    let blockings = [
        None,
        Some(Blocking {
            kc: 7,
            rows_per_task: 3,
        }),
        Some(Blocking {
            kc: 4096,
            rows_per_task: 1000,
        }),
    ];
    let mut compared = 0;
    for (k, (rnn, layernorm, input_layer)) in [
        (CellKind::Rnn, false, true),
        (CellKind::Rnn, true, false),
        (CellKind::Lstm, true, true),
        (CellKind::Lstm, false, false),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = NetworkConfig {
            rnn,
            plasticity: Rule::None,
            input_size: if input_layer { 5 } else { 37 },
            hidden_size: 37,
            layernorm,
            input_layer,
            ..Default::default()
        };
        let net = Network::<F>::new(cfg.clone(), k as u64).unwrap();
        // 37 episodes: two full chunks of 16 rows and a partial one
        let ep = episodes::<F>(&cfg, 37, 3 + k as u64);
        let engine = Engine::<F>::new();
        set_simd(Simd::Baseline);
        let reference = pools[0].1.install(|| everything(&engine, &net, &ep));
        for &level in &levels {
            set_simd(level);
            for blocking in blockings {
                set_blocking(blocking);
                for (n, pool) in &pools {
                    let got = pool.install(|| everything(&engine, &net, &ep));
                    assert!(
                        got == reference,
                        "{rnn} layernorm={layernorm} input_layer={input_layer} [{}]: {level:?}, \
                         {blocking:?}, {n} threads differs from the baseline on 1 thread",
                        F::NAME
                    );
                    compared += 1;
                }
            }
            set_blocking(None);
        }
    }
    set_simd(Simd::Avx512);
    compared
}

#[test]
fn batched_results_are_identical_for_every_thread_count_instruction_set_and_blocking() {
    let n32 = identical_everywhere::<f32>();
    let n64 = identical_everywhere::<f64>();
    println!(
        "batched none: {n32} f32 and {n64} f64 runs bit-identical to 1 thread at the baseline"
    );
    assert!(n32 > 0 && n64 > 0);
}
