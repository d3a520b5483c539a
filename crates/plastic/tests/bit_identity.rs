//! "Results are bit-identical for any thread count and instruction set": the forward pass
//! and the loss and gradient of whole networks, in `f32` and `f64`, for every cell × rule
//! (with LayerNorm and the weight clip too), computed with 1, 2, 3 and 5 worker threads and
//! at every instruction-set level this CPU supports, all equal to the bit to one thread at
//! the x86-64 baseline. A level the CPU lacks is reported as skipped in the test's output
//! (`cargo test --release -p plastic --test bit_identity -- --nocapture`).

use plastic::kernels::{set_simd, simd, Simd};
use plastic::rng::Rng;
use plastic::{CellKind, Episodes, Float, Loss, Network, NetworkConfig, Rule};

/// Every number the network computes on `ep`, as `f64` bits (exact for `f32`).
fn everything<F: Float>(net: &Network<F>, ep: &Episodes<F>) -> Vec<u64> {
    let f = net.forward(ep, Loss::Mse).unwrap();
    let g = net.loss_and_grad(ep, Loss::Mse).unwrap();
    let mut v: Vec<F> = Vec::new();
    for part in [
        &f.outputs,
        &f.plasticity_rate,
        &f.applied_rate,
        &f.decay_rate,
        &f.update_norm,
        &f.plastic_norm,
        &f.inner_loss,
        &g.grads,
    ] {
        v.extend_from_slice(part);
    }
    v.push(f.loss);
    v.push(g.loss);
    v.iter().map(|x| x.f64().to_bits()).collect()
}

fn configs() -> Vec<NetworkConfig> {
    let mut v = Vec::new();
    for rnn in [CellKind::Rnn, CellKind::Lstm] {
        for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
            v.push(NetworkConfig {
                rnn,
                plasticity: rule,
                input_size: 5,
                // 32: wide enough for the 16-lane (AVX-512) paths, with an output layer
                // narrower than a vector (the narrow kernels)
                hidden_size: 32,
                ..Default::default()
            });
        }
    }
    v.push(NetworkConfig {
        plasticity: Rule::Gradient,
        input_size: 5,
        hidden_size: 37, // tails
        layernorm: true,
        weight_clip: Some(0.05),
        ..Default::default()
    });
    v
}

fn check<F: Float>(levels: &[Simd]) -> usize {
    let threads = [1, 2, 3, 5];
    let pools: Vec<rayon::ThreadPool> = threads
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        })
        .collect();
    let mut compared = 0;
    for (n, cfg) in configs().into_iter().enumerate() {
        let net = Network::<F>::new(cfg.clone(), n as u64).unwrap();
        let mut rng = Rng::new(100 + n as u64);
        let (b, t) = (7, 9);
        let ep = Episodes::new(
            b,
            t,
            cfg.input_size,
            cfg.output_size,
            (0..b * t * cfg.input_size)
                .map(|_| F::of(rng.uniform_in(-1.0, 1.0)))
                .collect(),
            (0..b * t * cfg.output_size)
                .map(|_| F::of(rng.uniform_in(-1.0, 1.0)))
                .collect(),
            2,
        )
        .unwrap();
        set_simd(Simd::Baseline);
        let reference = pools[0].install(|| everything(&net, &ep));
        for &level in levels {
            set_simd(level);
            assert_eq!(simd(), level);
            for (pool, &nt) in pools.iter().zip(&threads) {
                let got = pool.install(|| everything(&net, &ep));
                assert!(
                    got == reference,
                    "{} {} layernorm={} [{}]: {level:?} with {nt} threads differs from the baseline with 1 thread",
                    cfg.rnn,
                    cfg.plasticity,
                    cfg.layernorm,
                    F::NAME
                );
                compared += 1;
            }
        }
    }
    compared
}

#[test]
fn networks_are_identical_for_every_thread_count_and_instruction_set() {
    let all = [Simd::Baseline, Simd::Avx2, Simd::Avx512];
    // set_simd never goes above what the CPU has: a level it lowers is not available
    let (available, skipped): (Vec<Simd>, Vec<Simd>) = all.iter().partition(|&&l| {
        set_simd(l);
        simd() == l
    });
    let n32 = check::<f32>(&available);
    let n64 = check::<f64>(&available);
    set_simd(Simd::Avx512);
    println!(
        "bit-identity: {n32} f32 and {n64} f64 (configuration, level, thread count) runs equal to 1 thread at the baseline; levels compared {available:?}; skipped (CPU lacks them): {} {skipped:?}",
        skipped.len()
    );
    if !skipped.is_empty() {
        eprintln!("warning: instruction sets {skipped:?} not available on this CPU: not compared");
    }
    assert!(n32 > 0 && n64 > 0);
}
