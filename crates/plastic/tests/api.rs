//! The public API: construction, named parameters, files, bad input, and the edge cases
//! of docs/algorithm.md (no NaN at a zero update norm).

use std::collections::BTreeMap;

use plastic::{CellKind, Episodes, Error, Loss, Network, NetworkConfig, Rule};

fn small(rule: Rule, rnn: CellKind) -> NetworkConfig {
    NetworkConfig {
        rnn,
        plasticity: rule,
        input_size: 3,
        hidden_size: 5,
        output_size: 2,
        ..Default::default()
    }
}

#[test]
fn a_seed_fixes_a_network_and_names_match_the_fixtures() {
    let a = Network::<f64>::new(small(Rule::Gradient, CellKind::Lstm), 7).unwrap();
    let b = Network::<f64>::new(small(Rule::Gradient, CellKind::Lstm), 7).unwrap();
    let c = Network::<f64>::new(small(Rule::Gradient, CellKind::Lstm), 8).unwrap();
    assert_eq!(a.params(), b.params());
    assert_ne!(a.params(), c.params());
    let names = a.layout().names();
    for n in [
        "in.w",
        "in.b",
        "rec.w_h",
        "rec.b_h",
        "rec.w_i",
        "rec.b_i",
        "out.w",
        "out.b",
        "in.alpha_w",
        "out_weight",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    assert_eq!(a.layout().get("rec.w_h").unwrap().shape, vec![5, 20]);
    assert_eq!(a.layout().get("out.w").unwrap().shape, vec![5, 2 + 4 + 1]);
    // initialisation ranges (docs/algorithm.md §3)
    let k = 2.0 / (20f64).sqrt();
    assert!(a.param("rec.w_h").unwrap().iter().all(|v| v.abs() <= k));
    assert!(a.param("out_weight").unwrap().iter().all(|&v| v == 1.0));
    let none = Network::<f64>::new(small(Rule::None, CellKind::Rnn), 1).unwrap();
    assert!(none.layout().get("in.alpha_w").is_none());
}

#[test]
fn save_and_load_by_name() {
    let net = Network::<f32>::new(small(Rule::Hebbian, CellKind::Rnn), 3).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("p.safetensors");
    net.save(&path, BTreeMap::new()).unwrap();
    let back = Network::<f32>::load(net.config().clone(), &path).unwrap();
    assert_eq!(back.params(), net.params());
    // loading into a different shape names the parameter and the expected shape
    let mut other = net.config().clone();
    other.hidden_size = 6;
    let e = Network::<f32>::load(other, &path).unwrap_err().to_string();
    assert!(e.contains("in.w") && e.contains("[3, 6]"), "{e}");
}

#[test]
fn named_parameters_are_checked() {
    let cfg = small(Rule::Gradient, CellKind::Rnn);
    let net = Network::<f64>::new(cfg.clone(), 0).unwrap();
    let mut map = net.named_params();
    map.remove("rec.alpha_w_h");
    match Network::<f64>::from_named(cfg.clone(), &map) {
        Err(Error::MissingParam { name, expected }) => {
            assert_eq!(name, "rec.alpha_w_h");
            assert_eq!(expected, vec![5, 5]);
        }
        other => panic!("{other:?}"),
    }
    let mut map = net.named_params();
    map.get_mut("out.b").unwrap().shape = vec![3, 2];
    let e = Network::<f64>::from_named(cfg.clone(), &map)
        .unwrap_err()
        .to_string();
    assert!(e.contains("out.b") && e.contains("[7]"), "{e}");
    let mut map = net.named_params();
    map.insert("rec.w_x".into(), map["in.b"].clone());
    let e = Network::<f64>::from_named(cfg, &map)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rec.w_x") && e.contains("in.w"), "{e}");
}

#[test]
fn invalid_configurations_say_what_is_valid() {
    let e = NetworkConfig {
        hidden_size: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("hidden_size"), "{e}");
    let e = NetworkConfig {
        p_lr: -0.1,
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("p_lr") && e.contains(">= 0"), "{e}");
    let e = "gru".parse::<CellKind>().unwrap_err().to_string();
    assert!(e.contains("rnn, lstm"), "{e}");
    let e = "oja".parse::<Rule>().unwrap_err().to_string();
    assert!(e.contains("none, hebbian, gradient"), "{e}");
    assert!(Network::<f64>::new(
        NetworkConfig {
            inner_grad_clip: 0.0,
            ..Default::default()
        },
        0
    )
    .is_err());
}

#[test]
fn bad_episode_data_is_an_error_not_a_panic() {
    let net = Network::<f64>::new(small(Rule::Gradient, CellKind::Rnn), 0).unwrap();
    let e = Episodes::new(2, 3, 3, 2, vec![0.0; 5], vec![0.0; 12], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("input has 5 values"), "{e}");
    let e = Episodes::new(2, 3, 3, 2, vec![0.0; 18], vec![0.0; 12], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("test_begin"), "{e}");
    let ep = Episodes::new(2, 3, 4, 2, vec![0.0; 24], vec![0.0; 12], 0).unwrap();
    let e = net.loss_and_grad(&ep, Loss::Mse).unwrap_err().to_string();
    assert!(e.contains("input size 4") && e.contains("expects 3"), "{e}");
    let mut nan = vec![0.0; 18];
    nan[4] = f64::NAN;
    assert!(Episodes::new(2, 3, 3, 2, nan, vec![0.0; 12], 0).is_err());
}

#[test]
fn a_zero_update_norm_gives_no_nan() {
    // all-zero weights and inputs: every Δ is zero, so the norm is 0 (the reference: NaN)
    for rule in [Rule::Gradient, Rule::Hebbian] {
        let cfg = small(rule, CellKind::Rnn);
        let mut net = Network::<f64>::new(cfg, 0).unwrap();
        net.params_mut().iter_mut().for_each(|v| *v = 0.0);
        let ep = Episodes::new(2, 4, 3, 2, vec![0.0; 24], vec![0.5; 16], 0).unwrap();
        let f = net.forward(&ep, Loss::Mse).unwrap();
        assert!(f.update_norm.iter().all(|&n| n == 0.0));
        assert!(f.applied_rate.iter().all(|v| v.is_finite()));
        let g = net.loss_and_grad(&ep, Loss::Mse).unwrap();
        assert!(
            g.loss.is_finite() && g.grads.iter().all(|v| v.is_finite()),
            "{rule}"
        );
    }
}

#[test]
fn results_do_not_depend_on_threads_or_instruction_set() {
    // hidden 24 takes the kernels' scalar tails, 32 their full-width (and fused) paths
    for (hidden, rule, rnn) in [
        (24, Rule::Gradient, CellKind::Rnn),
        (32, Rule::Gradient, CellKind::Rnn),
        (32, Rule::Hebbian, CellKind::Rnn),
        (32, Rule::Gradient, CellKind::Lstm),
    ] {
        let cfg = NetworkConfig {
            input_size: 4,
            hidden_size: hidden,
            plasticity: rule,
            rnn,
            ..Default::default()
        };
        let mut net = Network::<f32>::new(cfg, 1).unwrap();
        let mut rng = plastic::rng::Rng::new(2);
        let (b, t) = (12, 9);
        let ep = Episodes::new(
            b,
            t,
            4,
            1,
            (0..b * t * 4).map(|_| rng.uniform() as f32).collect(),
            vec![0.3; b * t],
            0,
        )
        .unwrap();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let g1 = one.install(|| net.loss_and_grad(&ep, Loss::Mse).unwrap());
        let g3 = three.install(|| net.loss_and_grad(&ep, Loss::Mse).unwrap());
        assert_eq!(g1, g3, "thread count changed the result");
        let wide = net.loss_and_grad(&ep, Loss::Mse).unwrap();
        // the forward-only path (no fused updates) computes the same loss
        let fwd = net.forward(&ep, Loss::Mse).unwrap();
        assert!(
            (fwd.loss - wide.loss).abs() <= 1e-6 * wide.loss.abs(),
            "forward and training differ ({hidden})"
        );
        assert_eq!(fwd.outputs.len(), b * t);
        // checkpointed training (segments of P regenerated) gives the same bits
        net.set_snapshot_budget(1);
        let ck = net.loss_and_grad(&ep, Loss::Mse).unwrap();
        assert_eq!(ck, wide, "checkpointing changed the result");
        net.set_snapshot_budget(64 << 20);
        plastic::kernels::set_simd(plastic::kernels::Simd::Baseline);
        let base = net.loss_and_grad(&ep, Loss::Mse).unwrap();
        plastic::kernels::set_simd(plastic::kernels::Simd::Avx512);
        assert_eq!(wide, base, "the instruction set changed the result");
    }
}
