//! Finite-difference checks of the meta-gradient in f64 on small random networks, over
//! {RNN, LSTM} × {gradient, hebbian, none} × modulation on/off × LayerNorm on/off, with
//! norm clipping active and inactive and weight clipping on and off.

use plastic::rng::Rng;
use plastic::{CellKind, Episodes, InnerLrMode, Loss, Network, NetworkConfig, Rule};

fn episodes(
    rng: &mut Rng,
    b: usize,
    t: usize,
    i: usize,
    o: usize,
    test_begin: usize,
) -> Episodes<f64> {
    let input = (0..b * t * i).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let target = (0..b * t * o).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    Episodes::new(b, t, i, o, input, target, test_begin).unwrap()
}

/// Largest relative error between the analytic gradient and central differences,
/// `|g − fd| / max(|fd|∞, 1e-8)` over the whole gradient, with the worst parameter named.
fn check(config: NetworkConfig, seed: u64, loss: Loss) -> (f64, String) {
    let mut rng = Rng::new(seed);
    let (b, t) = (2, 5);
    let ep = episodes(&mut rng, b, t, config.input_size, config.output_size, 1);
    let mut net = Network::<f64>::new(config.clone(), seed).unwrap();
    // larger-than-default α and weights so that plasticity matters within 5 steps
    for v in net.params_mut().iter_mut() {
        *v *= 1.5;
    }
    let g = net.loss_and_grad(&ep, loss).unwrap();
    let base = net.params().to_vec();
    let eps = 1e-6;
    let mut fd = vec![0.0; base.len()];
    for k in 0..base.len() {
        let mut p = base.clone();
        p[k] = base[k] + eps;
        let lp = Network::from_params(config.clone(), p.clone())
            .unwrap()
            .forward(&ep, loss)
            .unwrap()
            .loss;
        p[k] = base[k] - eps;
        let lm = Network::from_params(config.clone(), p)
            .unwrap()
            .forward(&ep, loss)
            .unwrap()
            .loss;
        fd[k] = (lp - lm) / (2.0 * eps);
    }
    let scale = fd.iter().fold(1e-8f64, |m, v| m.max(v.abs()));
    let mut worst = (0.0, String::new());
    for info in net.layout().infos() {
        for k in info.range() {
            let e = (g.grads[k] - fd[k]).abs() / scale;
            if e > worst.0 {
                worst = (
                    e,
                    format!(
                        "{}[{}]: analytic {:.9e}, fd {:.9e}",
                        info.name,
                        k - info.offset,
                        g.grads[k],
                        fd[k]
                    ),
                );
            }
        }
    }
    worst
}

fn base_config(rnn: CellKind, rule: Rule) -> NetworkConfig {
    NetworkConfig {
        rnn,
        plasticity: rule,
        input_size: 3,
        hidden_size: 4,
        output_size: 2,
        extra_dim: 2,
        p_lr: 0.5,
        p_wd: 0.1,
        ..Default::default()
    }
}

#[test]
fn gradients_match_finite_differences() {
    let mut failures = Vec::new();
    let mut n = 0;
    for rnn in [CellKind::Rnn, CellKind::Lstm] {
        for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
            for modulation in [true, false] {
                for layernorm in [false, true] {
                    // (inner_grad_clip, weight_clip): clipping inactive / norm clipping active /
                    // weight clipping on
                    for (clip, wclip) in [(1e6, None), (0.05, None), (1e6, Some(0.02))] {
                        if rule == Rule::None && (clip != 1e6 || wclip.is_some()) {
                            continue;
                        }
                        let cfg = NetworkConfig {
                            modulation,
                            layernorm,
                            inner_grad_clip: clip,
                            weight_clip: wclip,
                            ..base_config(rnn, rule)
                        };
                        n += 1;
                        let (err, at) = check(cfg.clone(), 11 + n, Loss::Mse);
                        if !within(err) {
                            failures.push(format!(
                                "{rnn} {rule} modulation={modulation} layernorm={layernorm} clip={clip} weight_clip={wclip:?}: error {err:.2e} at {at}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} configurations fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn other_inner_lr_modes_and_cross_entropy_match_finite_differences() {
    let mut failures = Vec::new();
    for mode in [
        InnerLrMode::None,
        InnerLrMode::Uniform,
        InnerLrMode::NegUniform,
    ] {
        for rule in [Rule::Gradient, Rule::Hebbian] {
            let cfg = NetworkConfig {
                inner_lr_mode: mode,
                ..base_config(CellKind::Lstm, rule)
            };
            let (err, at) = check(cfg, 5, Loss::Mse);
            if !within(err) {
                failures.push(format!("inner_lr_mode={mode} {rule}: {err:.2e} at {at}"));
            }
        }
    }
    for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
        let cfg = base_config(CellKind::Rnn, rule);
        let (err, at) = check(cfg, 6, Loss::CrossEntropy);
        if !within(err) {
            failures.push(format!("cross-entropy {rule}: {err:.2e} at {at}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `err < 1e-6`, false for NaN.
fn within(err: f64) -> bool {
    err < 1e-6
}
