//! `Engine::loss_and_grad_with_outputs` returns the outputs of the forward pass its gradient
//! ran: bit for bit those of `Engine::forward`, with the same gradient as
//! `Engine::loss_and_grad_with`, on the per-episode path (plastic networks, and `none` on
//! `Engine::per_episode`) and on the batched path (`none`), in f64 and f32.

use plastic::rng::Rng;
use plastic::{CellKind, Engine, Episodes, Float, GradRequest, Loss, Network, NetworkConfig, Rule};

/// Bit-equal (f32 → f64 is exact).
fn same<F: Float>(a: F, b: F) -> bool {
    a.f64().to_bits() == b.f64().to_bits()
}

fn setup<F: Float>(config: &NetworkConfig, seed: u64) -> (Network<F>, Episodes<F>) {
    let mut rng = Rng::new(seed);
    let (b, t, i, o) = (5, 9, config.input_size, config.output_size);
    let input = (0..b * t * i)
        .map(|_| F::of(rng.uniform_in(-1.0, 1.0)))
        .collect();
    let mut target = vec![F::zero(); b * t * o];
    for row in target.chunks_mut(o) {
        row[rng.below(o)] = F::one();
    }
    let ep = Episodes::new(b, t, i, o, input, target, 4).unwrap();
    let mut net = Network::<F>::new(config.clone(), seed).unwrap();
    for v in net.params_mut().iter_mut() {
        *v *= F::of(1.5);
    }
    (net, ep)
}

fn check<F: Float>() {
    for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
        for rnn in [CellKind::Rnn, CellKind::Lstm] {
            let config = NetworkConfig {
                rnn,
                plasticity: rule,
                input_size: 6,
                hidden_size: 6,
                output_size: 3,
                extra_dim: 2,
                p_lr: 0.5,
                p_wd: 0.1,
                input_layer: false,
                ..Default::default()
            };
            let (net, ep) = setup::<F>(&config, 11);
            for (path, engine) in [
                ("default", Engine::<F>::new()),
                ("per-episode", Engine::<F>::per_episode()),
            ] {
                let what = format!("{rnn} {rule} {path} ({} bytes)", std::mem::size_of::<F>());
                let request = GradRequest { inputs: true };
                let forward = engine.forward(&net, &ep, Loss::CrossEntropy).unwrap();
                let plain = engine
                    .loss_and_grad_with(&net, &ep, Loss::CrossEntropy, request)
                    .unwrap();
                let (g, outputs) = engine
                    .loss_and_grad_with_outputs(&net, &ep, Loss::CrossEntropy, request)
                    .unwrap();
                assert_eq!(
                    outputs.len(),
                    ep.batch * ep.steps * ep.output_size,
                    "{what}"
                );
                assert!(
                    outputs
                        .iter()
                        .zip(&forward.outputs)
                        .all(|(a, b)| same(*a, *b)),
                    "{what}: the gradient pass's outputs differ from the forward pass's"
                );
                assert!(
                    same(g.loss, plain.loss)
                        && g.grads.iter().zip(&plain.grads).all(|(a, b)| same(*a, *b))
                        && g.input_grads == plain.input_grads,
                    "{what}: asking for the outputs changed the gradient"
                );
            }
        }
    }
}

#[test]
fn the_gradient_pass_returns_the_forward_pass_outputs_f64() {
    check::<f64>();
}

#[test]
fn the_gradient_pass_returns_the_forward_pass_outputs_f32() {
    check::<f32>();
}

#[test]
fn bad_episodes_are_an_error_not_a_panic() {
    let config = NetworkConfig {
        input_size: 4,
        hidden_size: 4,
        output_size: 2,
        input_layer: false,
        ..Default::default()
    };
    let net = Network::<f64>::new(config, 1).unwrap();
    let ep = Episodes::new(1, 3, 5, 2, vec![0.0; 15], vec![0.0; 6], 1).unwrap();
    let e = Engine::<f64>::new()
        .loss_and_grad_with_outputs(&net, &ep, Loss::Mse, GradRequest::default())
        .unwrap_err();
    assert!(e.to_string().contains("input size"), "{e}");
}
