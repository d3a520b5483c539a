//! The split vector-Jacobian product: `forward_with_tape` then `vjp_with_tape` gives, bit for
//! bit, what `forward` and `vjp` give (docs/algorithm.md §7.8, §8), over {gradient, hebbian,
//! none} × {RNN, LSTM} × {f32, f64}, with and without input gradients, with snapshots and
//! with checkpoints, on the batched and the per-episode route of `none`; tapes are
//! independent values (several outstanding, used in any order, used again); a tape given
//! the wrong network or a changed one is a clear error.

use plastic::rng::Rng;
use plastic::{
    CellKind, Engine, Episodes, Float, GradRequest, Gradient, Loss, Network, NetworkConfig, Rule,
};

fn config(rnn: CellKind, rule: Rule, input_layer: bool, layernorm: bool) -> NetworkConfig {
    NetworkConfig {
        rnn,
        plasticity: rule,
        input_size: if input_layer { 3 } else { 8 },
        hidden_size: 8,
        output_size: 2,
        extra_dim: 2,
        p_lr: 0.5,
        p_wd: 0.1,
        input_layer,
        layernorm,
        inner_grad_clip: if layernorm { 0.05 } else { 1.0 },
        weight_clip: layernorm.then_some(0.05),
        ..Default::default()
    }
}

/// Every cell × rule, each plain and once with LayerNorm, clipping and no input layer.
fn configs() -> Vec<NetworkConfig> {
    let mut v = Vec::new();
    for rule in [Rule::Gradient, Rule::Hebbian, Rule::None] {
        for rnn in [CellKind::Rnn, CellKind::Lstm] {
            v.push(config(rnn, rule, true, false));
            v.push(config(rnn, rule, false, true));
        }
    }
    v
}

fn setup<F: Float>(
    c: &NetworkConfig,
    batch: usize,
    steps: usize,
    seed: u64,
) -> (Network<F>, Episodes<F>) {
    let mut rng = Rng::new(seed);
    let (i, o) = (c.input_size, c.output_size);
    let input = (0..batch * steps * i)
        .map(|_| F::of(rng.uniform_in(-1.0, 1.0)))
        .collect();
    let target = (0..batch * steps * o)
        .map(|_| F::of(rng.uniform_in(-1.0, 1.0)))
        .collect();
    let ep = Episodes::new(batch, steps, i, o, input, target, 2).unwrap();
    let mut net = Network::<F>::new(c.clone(), seed).unwrap();
    for v in net.params_mut().iter_mut() {
        *v *= F::of(1.5);
    }
    (net, ep)
}

fn d_outputs<F: Float>(ep: &Episodes<F>, seed: u64) -> Vec<F> {
    let mut rng = Rng::new(seed + 1000);
    (0..ep.batch * ep.steps * ep.output_size)
        .map(|_| F::of(rng.uniform_in(-1.0, 1.0)))
        .collect()
}

fn bits<F: Float>(v: &[F]) -> Vec<u64> {
    v.iter().map(|x| x.f64().to_bits()).collect()
}

fn assert_same<F: Float>(a: &Gradient<F>, b: &Gradient<F>, what: &str) {
    assert_eq!(
        a.loss.f64().to_bits(),
        b.loss.f64().to_bits(),
        "{what}: loss"
    );
    assert!(
        bits(&a.grads) == bits(&b.grads),
        "{what}: parameter gradients differ"
    );
    match (&a.input_grads, &b.input_grads) {
        (Some(x), Some(y)) => assert!(bits(x) == bits(y), "{what}: input gradients differ"),
        (None, None) => {}
        _ => panic!("{what}: one has input gradients, the other not"),
    }
}

/// `forward_with_tape` + `vjp_with_tape` against `forward` + `vjp`, and the tape used again.
fn check<F: Float>(engine: &Engine<F>, net: &Network<F>, ep: &Episodes<F>, seed: u64, what: &str) {
    let dy = d_outputs(ep, seed);
    let plain = engine.forward(net, ep, Loss::Mse).unwrap();
    let (taped, mut tape) = engine.forward_with_tape(net, ep, Loss::Mse).unwrap();
    assert_eq!(
        bits(&plain.outputs),
        bits(&taped.outputs),
        "{what}: outputs"
    );
    assert!(
        plain == taped,
        "{what}: the recorded forward's diagnostics differ"
    );
    assert!(tape.batch() == ep.batch && tape.steps() == ep.steps);
    let estimate = engine.tape_bytes(net, ep.batch, ep.steps);
    assert!(
        tape.bytes() <= estimate && 2 * tape.bytes() >= estimate,
        "{what}: tape of {} bytes, estimated {estimate}",
        tape.bytes()
    );
    for inputs in [false, true] {
        let request = GradRequest { inputs };
        let want = engine.vjp(net, ep, &dy, request).unwrap();
        let got = engine.vjp_with_tape(net, &mut tape, &dy, request).unwrap();
        assert_same(&want, &got, &format!("{what}, input gradients {inputs}"));
    }
    // and once more from the same tape, with another adjoint
    let dy2: Vec<F> = dy.iter().map(|&v| v * F::of(-0.5)).collect();
    let want = engine
        .vjp(net, ep, &dy2, GradRequest { inputs: true })
        .unwrap();
    let got = engine
        .vjp_with_tape(net, &mut tape, &dy2, GradRequest { inputs: true })
        .unwrap();
    assert_same(&want, &got, &format!("{what}, third use"));
}

fn every_configuration<F: Float>() {
    for (k, c) in configs().iter().enumerate() {
        let seed = 10 + k as u64;
        let (mut net, ep) = setup::<F>(c, 5, 9, seed);
        let what = format!(
            "{} {} {} input_layer={}",
            F::NAME,
            c.rnn,
            c.plasticity,
            c.input_layer
        );
        // the batched route of `none` and the per-episode route of every rule
        check(&Engine::new(), &net, &ep, seed, &what);
        check(
            &Engine::per_episode(),
            &net,
            &ep,
            seed,
            &format!("{what}, per episode"),
        );
        // checkpoints: room for 2 snapshots of 9 steps, so segments of 3 and regeneration
        let plen = net.layout().plastic_len;
        if plen > 0 {
            net.set_snapshot_budget(2 * plen * std::mem::size_of::<F>());
            check(
                &Engine::new(),
                &net,
                &ep,
                seed,
                &format!("{what}, checkpoints"),
            );
        }
    }
}

#[test]
fn taped_vjp_is_bit_identical_to_vjp_f64() {
    every_configuration::<f64>();
}

#[test]
fn taped_vjp_is_bit_identical_to_vjp_f32() {
    every_configuration::<f32>();
}

#[test]
fn tapes_are_independent_values() {
    let c = config(CellKind::Lstm, Rule::Gradient, true, false);
    let engine = Engine::<f64>::new();
    let (net_a, ep_a) = setup::<f64>(&c, 4, 7, 1);
    let (net_b, ep_b) = setup::<f64>(&c, 3, 6, 2);
    let (dy_a, dy_b) = (d_outputs(&ep_a, 1), d_outputs(&ep_b, 2));
    let request = GradRequest { inputs: true };
    // two outstanding forwards (two networks, or two calls), then the backwards in reverse
    let (_, mut tape_a) = engine.forward_with_tape(&net_a, &ep_a, Loss::Mse).unwrap();
    let (_, mut tape_b) = engine.forward_with_tape(&net_b, &ep_b, Loss::Mse).unwrap();
    let got_b = engine
        .vjp_with_tape(&net_b, &mut tape_b, &dy_b, request)
        .unwrap();
    let got_a = engine
        .vjp_with_tape(&net_a, &mut tape_a, &dy_a, request)
        .unwrap();
    assert_same(
        &engine.vjp(&net_a, &ep_a, &dy_a, request).unwrap(),
        &got_a,
        "first",
    );
    assert_same(
        &engine.vjp(&net_b, &ep_b, &dy_b, request).unwrap(),
        &got_b,
        "second",
    );
    // a recycled tape's memory serves the next forward, with the same results
    engine.recycle_tape(tape_a);
    let (_, mut again) = engine.forward_with_tape(&net_a, &ep_a, Loss::Mse).unwrap();
    let got = engine
        .vjp_with_tape(&net_a, &mut again, &dy_a, request)
        .unwrap();
    assert_same(&got_a, &got, "recycled");
    // the shorthands on the shared engine
    let (_, mut tape) = net_a.forward_with_tape(&ep_a, Loss::Mse).unwrap();
    let got = net_a.vjp_with_tape(&mut tape, &dy_a, request).unwrap();
    assert_same(&got_a, &got, "shared engine");
}

#[test]
fn a_tape_refuses_another_network_or_changed_parameters() {
    let c = config(CellKind::Rnn, Rule::Hebbian, true, false);
    let engine = Engine::<f32>::new();
    let (net, ep) = setup::<f32>(&c, 2, 4, 3);
    let dy = d_outputs(&ep, 3);
    let (_, mut tape) = engine.forward_with_tape(&net, &ep, Loss::Mse).unwrap();
    let request = GradRequest::default();

    let other = NetworkConfig {
        hidden_size: 6,
        ..c.clone()
    };
    let (net2, _) = setup::<f32>(&other, 2, 4, 3);
    let e = engine
        .vjp_with_tape(&net2, &mut tape, &dy, request)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("another configuration") && e.contains("hidden_size = 8 (tape) vs 6 (network)"),
        "{e}"
    );

    let mut changed = net.clone();
    changed.params_mut()[0] += 1.0;
    let e = engine
        .vjp_with_tape(&changed, &mut tape, &dy, request)
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameters changed"), "{e}");

    let e = engine
        .vjp_with_tape(&net, &mut tape, &dy[1..], request)
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_outputs has"), "{e}");
    let mut bad = dy.clone();
    bad[0] = f32::NAN;
    let e = engine
        .vjp_with_tape(&net, &mut tape, &bad, request)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN"), "{e}");

    // none of the refusals spoiled the tape
    let want = engine.vjp(&net, &ep, &dy, request).unwrap();
    let got = engine.vjp_with_tape(&net, &mut tape, &dy, request).unwrap();
    assert_same(&want, &got, "after refusals");
}
