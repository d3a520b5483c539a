//! Finite-difference checks (f64) of the gradient with respect to the inputs and of the
//! vector-Jacobian product, over {gradient, hebbian, none} × {RNN, LSTM} × input layer on/off,
//! each once plain and once with LayerNorm, norm clipping and weight clipping active.
//! Errors are per tensor: `max |analytic − fd| / max(max |fd|, floor)` over that tensor.

use plastic::rng::Rng;
use plastic::{CellKind, Episodes, GradRequest, Loss, Network, NetworkConfig, Rule};

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn configs() -> Vec<NetworkConfig> {
    let mut v = Vec::new();
    for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
        for rnn in [CellKind::Rnn, CellKind::Lstm] {
            for input_layer in [true, false] {
                for clipped in [false, true] {
                    v.push(NetworkConfig {
                        rnn,
                        plasticity: rule,
                        input_size: if input_layer { 3 } else { 4 },
                        hidden_size: 4,
                        output_size: 2,
                        extra_dim: 2,
                        p_lr: 0.5,
                        p_wd: 0.1,
                        input_layer,
                        layernorm: clipped,
                        inner_grad_clip: if clipped { 0.05 } else { 1e6 },
                        weight_clip: clipped.then_some(0.05),
                        ..Default::default()
                    });
                }
            }
        }
    }
    v
}

fn describe(c: &NetworkConfig) -> String {
    format!(
        "{} {} input_layer={} layernorm={} clip={} weight_clip={:?}",
        c.rnn, c.plasticity, c.input_layer, c.layernorm, c.inner_grad_clip, c.weight_clip
    )
}

/// A small network with larger-than-default weights and α, so that plasticity matters
/// within a few steps, and a batch of random episodes.
fn setup(config: &NetworkConfig, seed: u64) -> (Network<f64>, Episodes<f64>) {
    let mut rng = Rng::new(seed);
    let (b, t, i, o) = (2, 5, config.input_size, config.output_size);
    let input = (0..b * t * i).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let target = (0..b * t * o).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let ep = Episodes::new(b, t, i, o, input, target, 1).unwrap();
    let mut net = Network::<f64>::new(config.clone(), seed).unwrap();
    for v in net.params_mut().iter_mut() {
        *v *= 1.5;
    }
    (net, ep)
}

/// Central differences of `f` with respect to every element of `x`.
fn central_differences(x: &[f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut p = x.to_vec();
    (0..x.len())
        .map(|k| {
            p[k] = x[k] + EPS;
            let lp = f(&p);
            p[k] = x[k] - EPS;
            let lm = f(&p);
            p[k] = x[k];
            (lp - lm) / (2.0 * EPS)
        })
        .collect()
}

/// The per-tensor error; `floor` keeps tensors whose gradient is (nearly) zero from
/// dividing by round-off.
fn tensor_error(ours: &[f64], fd: &[f64], floor: f64) -> f64 {
    let scale = fd.iter().fold(floor, |m, v| m.max(v.abs()));
    ours.iter()
        .zip(fd)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f64::max)
}

/// Compares every parameter tensor and the input gradient with central differences of
/// `objective(params, inputs)`; returns the failures.
fn compare_all(
    what: &str,
    net: &Network<f64>,
    ep: &Episodes<f64>,
    grads: &[f64],
    input_grads: &[f64],
    objective: impl Fn(&[f64], &[f64]) -> f64,
) -> Vec<String> {
    let fd_params = central_differences(net.params(), |p| objective(p, &ep.input));
    let fd_inputs = central_differences(&ep.input, |x| objective(net.params(), x));
    let global = fd_params
        .iter()
        .chain(&fd_inputs)
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let floor = 1e-3 * global.max(1e-6);
    let mut failures = Vec::new();
    let mut tensors: Vec<(String, std::ops::Range<usize>)> = net
        .layout()
        .infos()
        .iter()
        .map(|i| (i.name.clone(), i.range()))
        .collect();
    tensors.push(("inputs".into(), 0..ep.input.len()));
    for (name, range) in tensors {
        let (ours, fd) = if name == "inputs" {
            (&input_grads[range.clone()], &fd_inputs[range])
        } else {
            (&grads[range.clone()], &fd_params[range])
        };
        let err = tensor_error(ours, fd, floor);
        if !(err < TOL) {
            failures.push(format!("{what}: d/d {name}: error {err:.2e}"));
        }
    }
    assert!(
        input_grads.iter().any(|&v| v != 0.0),
        "{what}: the input gradient is all zeros"
    );
    failures
}

#[test]
fn input_and_parameter_gradients_match_finite_differences() {
    let mut failures = Vec::new();
    for (n, config) in configs().into_iter().enumerate() {
        let (net, ep) = setup(&config, 100 + n as u64);
        let g = net
            .loss_and_grad_with(&ep, Loss::Mse, GradRequest { inputs: true })
            .unwrap();
        let dx = g
            .input_grads
            .as_ref()
            .expect("input gradient was asked for");
        assert_eq!(dx.len(), ep.input.len());
        let objective = |p: &[f64], x: &[f64]| {
            let net = Network::from_params(config.clone(), p.to_vec()).unwrap();
            let ep = Episodes {
                input: x.to_vec(),
                ..ep.clone()
            };
            net.forward(&ep, Loss::Mse).unwrap().loss
        };
        failures.extend(compare_all(
            &format!("loss, {}", describe(&config)),
            &net,
            &ep,
            &g.grads,
            dx,
            objective,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_vjp_matches_finite_differences_of_a_linear_functional_of_the_outputs() {
    let mut failures = Vec::new();
    for (n, config) in configs().into_iter().enumerate() {
        let (net, ep) = setup(&config, 200 + n as u64);
        let mut rng = Rng::new(300 + n as u64);
        let d_out: Vec<f64> = (0..ep.batch * ep.steps * ep.output_size)
            .map(|_| rng.uniform_in(-1.0, 1.0))
            .collect();
        let g = net.vjp(&ep, &d_out, GradRequest { inputs: true }).unwrap();
        let functional = |net: &Network<f64>, ep: &Episodes<f64>| {
            let y = net.forward(ep, Loss::Mse).unwrap().outputs;
            y.iter().zip(&d_out).map(|(a, b)| a * b).sum::<f64>()
        };
        let value = functional(&net, &ep);
        assert!(
            (g.loss - value).abs() <= 1e-12 * value.abs().max(1.0),
            "vjp value {} vs Σ d ⊙ y {value}",
            g.loss
        );
        let objective = |p: &[f64], x: &[f64]| {
            let net = Network::from_params(config.clone(), p.to_vec()).unwrap();
            let ep = Episodes {
                input: x.to_vec(),
                ..ep.clone()
            };
            functional(&net, &ep)
        };
        failures.extend(compare_all(
            &format!("vjp, {}", describe(&config)),
            &net,
            &ep,
            &g.grads,
            g.input_grads.as_ref().unwrap(),
            objective,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_loss_gradient_is_the_vjp_with_the_loss_adjoint_and_asking_for_inputs_changes_nothing() {
    for config in configs() {
        let (net, ep) = setup(&config, 7);
        let plain = net.loss_and_grad(&ep, Loss::Mse).unwrap();
        assert!(plain.input_grads.is_none());
        let with = net
            .loss_and_grad_with(&ep, Loss::Mse, GradRequest { inputs: true })
            .unwrap();
        assert_eq!(plain.grads, with.grads, "{}", describe(&config));
        assert_eq!(plain.loss, with.loss);
        // the MSE's own adjoint: 2 (y − target) / (B (T − test_begin) O) from test_begin
        let fwd = net.forward(&ep, Loss::Mse).unwrap();
        let (t, o) = (ep.steps, ep.output_size);
        let s = 1.0 / (ep.batch * (t - ep.test_begin)) as f64 / o as f64;
        let d_out: Vec<f64> = (0..fwd.outputs.len())
            .map(|k| {
                let step = (k / o) % t;
                let e = fwd.outputs[k] - ep.target[k];
                if step >= ep.test_begin {
                    (e + e) * s
                } else {
                    0.0
                }
            })
            .collect();
        let v = net.vjp(&ep, &d_out, GradRequest { inputs: true }).unwrap();
        assert_eq!(v.grads, with.grads, "{}", describe(&config));
        assert_eq!(v.input_grads, with.input_grads, "{}", describe(&config));
    }
}

#[test]
fn a_vjp_of_the_wrong_size_or_with_nan_is_an_error() {
    let (net, ep) = setup(&configs()[0], 1);
    let e = net
        .vjp(&ep, &[0.0; 3], GradRequest::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_outputs has 3 values, expected B·T·O"), "{e}");
    let mut d = vec![0.0; ep.batch * ep.steps * ep.output_size];
    d[1] = f64::NAN;
    let e = net
        .vjp(&ep, &d, GradRequest::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN"), "{e}");
}
