//! Finite-difference checks of the meta-gradient in f64 on small random networks, over
//! {RNN, LSTM} × {gradient, hebbian, none} × modulation on/off × LayerNorm on/off, with
//! norm clipping active and inactive and weight clipping active, plus the α modes and the
//! cross-entropy loss.
//!
//! Each parameter tensor is compared on its own scale: the error of a tensor is
//! `max|g − fd| / max(max|fd|, FLOOR)` over that tensor's elements, so that the gradients of
//! α, of the modulation and of `out_weight`, orders of magnitude smaller than that of
//! `out.b`, are checked to the same relative precision.
//!
//! The differences are the 4-point central stencil (truncation O(h⁴)) at two steps,
//! `h = 1e-4` and `1e-6`, each with its rounding allowance (`1.5 · 8ε|L| / h`). An element
//! passes when either estimate agrees: the loss has kinks (the weight clip's clamp, the norm
//! clip's threshold) and a stencil that straddles one is wrong there, which spoils only
//! that step's estimate. The configurations with clipping must really clip: the norm clip
//! in at least one (episode, step), the weight clip so that the network without it computes
//! other outputs.

use plastic::rng::Rng;
use plastic::{
    CellKind, Episodes, Forward, InnerLrMode, Layout, Loss, Network, NetworkConfig, Rule,
};

/// Relative tolerance per tensor.
const TOLERANCE: f64 = 1e-6;
/// Scale floor: a tensor whose gradient is smaller than this is compared absolutely, to
/// `TOLERANCE · FLOOR` (the finite differences are exact to about 1e-12).
const FLOOR: f64 = 1e-5;
/// The steps of the 4-point stencil.
const STEPS: [f64; 2] = [1e-4, 1e-6];

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

/// One configuration's analytic gradient, its finite differences and its forward pass.
struct Checked {
    layout: Layout,
    analytic: Vec<f64>,
    /// The finite differences at each of [`STEPS`].
    fd: [Vec<f64>; 2],
    /// The rounding allowance of each of `fd`.
    noise: [f64; 2],
    forward: Forward<f64>,
    /// The forward pass of the same parameters without the weight clip.
    forward_without_weight_clip: Forward<f64>,
}

fn loss_at(config: &NetworkConfig, params: Vec<f64>, ep: &Episodes<f64>, loss: Loss) -> f64 {
    Network::from_params(config.clone(), params)
        .unwrap()
        .forward(ep, loss)
        .unwrap()
        .loss
}

fn gradients(config: NetworkConfig, seed: u64, loss: Loss) -> Checked {
    let mut rng = Rng::new(seed);
    let (b, t) = (2, 5);
    let ep = episodes(&mut rng, b, t, config.input_size, config.output_size, 1);
    let mut net = Network::<f64>::new(config.clone(), seed).unwrap();
    // larger-than-default α and weights so that plasticity matters within 5 steps
    for v in net.params_mut().iter_mut() {
        *v *= 1.5;
    }
    let analytic = net.loss_and_grad(&ep, loss).unwrap().grads;
    let base = net.params().to_vec();
    let fd = STEPS.map(|h| {
        (0..base.len())
            .map(|k| {
                let at = |d: f64| {
                    let mut p = base.clone();
                    p[k] += d;
                    loss_at(&config, p, &ep, loss)
                };
                (8.0 * (at(h) - at(-h)) - (at(2.0 * h) - at(-2.0 * h))) / (12.0 * h)
            })
            .collect()
    });
    let forward = net.forward(&ep, loss).unwrap();
    let noise = STEPS.map(|h| 1.5 * 8.0 * f64::EPSILON * forward.loss.abs() / h);
    let without = NetworkConfig {
        weight_clip: None,
        ..config.clone()
    };
    let forward_without_weight_clip = Network::from_params(without, base)
        .unwrap()
        .forward(&ep, loss)
        .unwrap();
    Checked {
        layout: net.layout().clone(),
        analytic,
        fd,
        noise,
        forward,
        forward_without_weight_clip,
    }
}

/// The worst tensor: `(error, description)`, the error per tensor as the module doc says.
fn worst_tensor(c: &Checked, analytic: &[f64]) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for info in c.layout.infos() {
        let r = info.range();
        let scale = c.fd[0][r.clone()]
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        for k in r {
            // the smaller excess over the rounding allowance of the two estimates
            let excess = (0..2)
                .map(|s| ((analytic[k] - c.fd[s][k]).abs() - c.noise[s]).max(0.0))
                .fold(f64::INFINITY, |m, e| if e.is_nan() { m } else { m.min(e) });
            let e = excess / scale.max(FLOOR);
            if e > worst.0 || e.is_nan() {
                worst = (
                    e,
                    format!(
                        "{}[{}] (tensor scale {scale:.2e}): analytic {:.12e}, fd {:.12e} (h {:e}), {:.12e} (h {:e})",
                        info.name,
                        k - info.offset,
                        analytic[k],
                        c.fd[0][k],
                        STEPS[0],
                        c.fd[1][k],
                        STEPS[1]
                    ),
                );
            }
        }
    }
    worst
}

/// The old measure: the error divided by the largest |fd| over all parameters.
fn global_error(analytic: &[f64], fd: &[f64]) -> f64 {
    let scale = fd.iter().fold(1e-8f64, |m, v| m.max(v.abs()));
    analytic
        .iter()
        .zip(fd)
        .fold(0.0f64, |m, (a, f)| m.max((a - f).abs() / scale))
}

/// (episode, step) pairs where the norm clip reduced the applied rate.
fn norm_clipped_steps(f: &Forward<f64>) -> usize {
    f.applied_rate
        .iter()
        .zip(&f.plasticity_rate)
        .filter(|(a, p)| a.abs() < p.abs() * (1.0 - 1e-9))
        .count()
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

/// How a configuration clips: inactive, the norm clip active, the weight clip active (with
/// the norm clip inactive).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Clipping {
    Off,
    Norm,
    Weight,
}

impl Clipping {
    /// `(inner_grad_clip, weight_clip)`.
    fn knobs(self) -> (f64, Option<f64>) {
        match self {
            Clipping::Off => (1e6, None),
            Clipping::Norm => (0.05, None),
            Clipping::Weight => (1e6, Some(0.02)),
        }
    }
}

#[test]
fn gradients_match_finite_differences_per_tensor() {
    let mut failures = Vec::new();
    let mut n = 0;
    let mut worst_overall = (0.0, String::new());
    for rnn in [CellKind::Rnn, CellKind::Lstm] {
        for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
            for modulation in [true, false] {
                for layernorm in [false, true] {
                    for clipping in [Clipping::Off, Clipping::Norm, Clipping::Weight] {
                        if rule == Rule::None && clipping != Clipping::Off {
                            continue;
                        }
                        let (clip, wclip) = clipping.knobs();
                        let cfg = NetworkConfig {
                            modulation,
                            layernorm,
                            inner_grad_clip: clip,
                            weight_clip: wclip,
                            ..base_config(rnn, rule)
                        };
                        n += 1;
                        let what = format!(
                            "{rnn} {rule} modulation={modulation} layernorm={layernorm} {clipping:?}"
                        );
                        let c = gradients(cfg, 11 + n, Loss::Mse);
                        let (err, at) = worst_tensor(&c, &c.analytic);
                        if !within(err) {
                            failures.push(format!("{what}: error {err:.2e} at {at}"));
                        }
                        if err > worst_overall.0 {
                            worst_overall = (err, format!("{what}: {at}"));
                        }
                        let clipped = norm_clipped_steps(&c.forward);
                        let weight_clip_changes =
                            c.forward.outputs != c.forward_without_weight_clip.outputs;
                        match clipping {
                            Clipping::Off | Clipping::Weight if clipped > 0 => failures.push(
                                format!("{what}: the norm clip is active at {clipped} steps"),
                            ),
                            Clipping::Norm if clipped == 0 => {
                                failures.push(format!("{what}: the norm clip is never active"))
                            }
                            Clipping::Weight if !weight_clip_changes => failures.push(format!(
                                "{what}: the weight clip is never active (same outputs without it)"
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    println!(
        "{n} configurations, worst per-tensor error {:.2e} ({})",
        worst_overall.0, worst_overall.1
    );
    assert!(
        failures.is_empty(),
        "{} of {n} configurations fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn other_inner_lr_modes_and_cross_entropy_match_finite_differences_per_tensor() {
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
            let c = gradients(cfg, 5, Loss::Mse);
            let (err, at) = worst_tensor(&c, &c.analytic);
            if !within(err) {
                failures.push(format!("inner_lr_mode={mode} {rule}: {err:.2e} at {at}"));
            }
        }
    }
    for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
        let cfg = base_config(CellKind::Rnn, rule);
        let c = gradients(cfg, 6, Loss::CrossEntropy);
        let (err, at) = worst_tensor(&c, &c.analytic);
        if !within(err) {
            failures.push(format!("cross-entropy {rule}: {err:.2e} at {at}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The per-tensor measure catches a 1% error in the gradient of the smallest tensors (α,
/// modulation, `out_weight`), which the old measure (scaled by the largest gradient of all
/// parameters) let pass.
#[test]
fn a_one_percent_error_in_a_small_tensor_fails() {
    let cfg = NetworkConfig {
        inner_grad_clip: 0.05,
        ..base_config(CellKind::Lstm, Rule::Gradient)
    };
    let c = gradients(cfg, 3, Loss::Mse);
    let largest = c.fd[0].iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut caught_only_per_tensor = 0;
    for info in c.layout.infos() {
        let scale = c.fd[0][info.range()]
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if scale < FLOOR {
            continue;
        }
        let mut wrong = c.analytic.clone();
        for k in info.range() {
            wrong[k] *= 1.01;
        }
        let (err, at) = worst_tensor(&c, &wrong);
        assert!(
            err > TOLERANCE,
            "a 1% error in d{} passes: {err:.2e} at {at}",
            info.name
        );
        let old = global_error(&wrong, &c.fd[0]);
        if old <= TOLERANCE {
            caught_only_per_tensor += 1;
        }
        println!(
            "1% error in d{} (scale {scale:.2e}, largest gradient {largest:.2e}): per-tensor {err:.2e}, old global {old:.2e}",
            info.name
        );
    }
    assert!(
        caught_only_per_tensor > 0,
        "expected some small tensor that the old global measure misses"
    );
}

/// `err <= TOLERANCE`, false for NaN.
fn within(err: f64) -> bool {
    err <= TOLERANCE
}
