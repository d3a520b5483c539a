//! The CNN's reusable workspace (`CnnWorkspace`): forward and backward passes through one
//! workspace, reused across calls of different batch sizes and with several tapes alive at
//! once (as an fsc training step keeps one per episode step), give bit for bit the
//! features, BatchNorm statistics and gradients of fresh passes, for ProtoNet and ResNet-12
//! (with dropout and DropBlock), in f64 and f32. And the fsc model's training step, which
//! reuses its workspace from step to step and takes the accuracy from the gradient pass's
//! own RNN forward, gives the counts and gradients of fresh models and of a forward pass.

use plastic::rng::Rng;
use plastic::{CellKind, Float, NetworkConfig, Rule};
use plastic_vision::cnn::{
    Backbone, BackboneConfig, BatchNormBuffers, CnnWorkspace, Noise, ProtoNetConfig, ResNet12Config,
};
use plastic_vision::model::{FscBatch, FscConfig, FscModel};

/// Bit-equal slices (f32 → f64 is exact).
fn same<F: Float>(a: &[F], b: &[F]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.f64().to_bits() == y.f64().to_bits())
}

fn same_buffers<F: Float>(a: &[BatchNormBuffers<F>], b: &[BatchNormBuffers<F>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            same(&x.running_mean, &y.running_mean)
                && same(&x.running_var, &y.running_var)
                && x.num_batches_tracked == y.num_batches_tracked
        })
}

fn backbones() -> Vec<BackboneConfig> {
    vec![
        // 20 → 10 → 5 → 2 → 1: odd sides where max-pooling drops a row and a column
        BackboneConfig::ProtoNet(ProtoNetConfig {
            in_channels: 3,
            channels: 5,
            image_size: 20,
        }),
        BackboneConfig::ResNet12(ResNet12Config {
            widths: [4, 6, 8, 10],
            ..ResNet12Config::reference(4, 32)
        }),
        BackboneConfig::ResNet12(ResNet12Config {
            widths: [4, 6, 8, 10],
            drop_rate: 0.0,
            ..ResNet12Config::reference(4, 32)
        }),
    ]
}

fn random<F: Float>(n: usize, rng: &mut Rng) -> Vec<F> {
    (0..n).map(|_| F::of(rng.normal())).collect()
}

fn reuse_matches_fresh_passes<F: Float>() {
    for config in backbones() {
        let net = Backbone::new(config).unwrap();
        let mut rng = Rng::new(5);
        let params: Vec<F> = config.init_params(&mut rng);
        let mut fresh_buffers: Vec<BatchNormBuffers<F>> = config.new_buffers();
        let mut reused_buffers = fresh_buffers.clone();
        let mut work = CnnWorkspace::<F>::new();
        // rounds of calls of different batch sizes, each round's tapes alive together
        // (slot = index in the round), backward passes in reverse order
        for (round, batches) in [vec![4, 2, 5], vec![3], vec![5, 4, 1, 2]]
            .iter()
            .enumerate()
        {
            let call = |k: usize| Noise {
                seed: 9,
                call: (10 * round + k) as u64 + 2,
            };
            let inputs: Vec<(Vec<F>, Vec<F>)> = batches
                .iter()
                .map(|&b| {
                    (
                        random(b * config.image_len(), &mut rng),
                        random(b * config.feature_size(), &mut rng),
                    )
                })
                .collect();
            let mut fresh = Vec::new();
            for (k, (&b, (images, _))) in batches.iter().zip(&inputs).enumerate() {
                let f = net
                    .forward_train(&params, images, b, Some(&mut fresh_buffers), Some(call(k)))
                    .unwrap();
                let g = net
                    .forward_train_in(
                        &params,
                        images,
                        b,
                        Some(&mut reused_buffers),
                        Some(call(k)),
                        &mut work,
                        k,
                    )
                    .unwrap();
                assert!(
                    same(&f.0, &g),
                    "{config:?} round {round} call {k}: features"
                );
                fresh.push(f.1);
            }
            assert!(
                same_buffers(&fresh_buffers, &reused_buffers),
                "{config:?}: statistics"
            );
            for k in (0..batches.len()).rev() {
                let (images, d_features) = &inputs[k];
                let (mut g1, mut g2) =
                    (vec![F::zero(); params.len()], vec![F::zero(); params.len()]);
                // a dirty image-gradient buffer: it must be overwritten
                let (mut d1, mut d2) = (vec![F::one(); images.len()], vec![F::one(); images.len()]);
                net.backward(&params, &fresh[k], d_features, &mut g1, Some(&mut d1))
                    .unwrap();
                net.backward_in(&params, &mut work, k, d_features, &mut g2, Some(&mut d2))
                    .unwrap();
                assert!(
                    same(&g1, &g2),
                    "{config:?} round {round} call {k}: parameter gradient"
                );
                assert!(
                    same(&d1, &d2),
                    "{config:?} round {round} call {k}: image gradient"
                );
                assert!(
                    g1.iter().any(|v| *v != F::zero()),
                    "a gradient of zeros proves nothing"
                );
            }
        }
        assert!(work.bytes() > 0);
        work.release();
        assert_eq!(work.bytes(), 0);
        // a released workspace works again, and a slot never filled is an error
        let images = random::<F>(2 * config.image_len(), &mut rng);
        net.forward_train_in(&params, &images, 2, None, None, &mut work, 0)
            .unwrap();
        let mut g = vec![F::zero(); params.len()];
        let d = vec![F::one(); 2 * config.feature_size()];
        net.backward_in(&params, &mut work, 0, &d, &mut g, None)
            .unwrap();
        let e = net
            .backward_in(&params, &mut work, 3, &d, &mut g, None)
            .unwrap_err();
        assert!(e.to_string().contains("no tape in slot 3"), "{e}");
    }
}

#[test]
fn a_reused_workspace_gives_the_results_of_fresh_passes_f64() {
    reuse_matches_fresh_passes::<f64>();
}

#[test]
fn a_reused_workspace_gives_the_results_of_fresh_passes_f32() {
    reuse_matches_fresh_passes::<f32>();
}

fn model<F: Float>(cnn: BackboneConfig, rule: Rule) -> FscModel<F> {
    let h = 16;
    let network = NetworkConfig {
        rnn: CellKind::Rnn,
        plasticity: rule,
        input_size: h,
        hidden_size: h,
        output_size: 3,
        input_layer: false,
        ..Default::default()
    };
    let config = FscConfig {
        cnn,
        network,
        extra_input_dim: 3,
    };
    FscModel::new(config, 4).unwrap()
}

fn batch<F: Float>(cnn: &BackboneConfig, seed: u64) -> FscBatch<F> {
    let (b, t, e) = (6, 5, 3);
    let mut rng = Rng::new(seed);
    let labels: Vec<usize> = (0..b * t).map(|_| rng.below(3)).collect();
    let mut extra_input = vec![F::zero(); b * t * e];
    for (k, &l) in labels.iter().enumerate() {
        if k % t < 3 {
            extra_input[k * e + l] = F::one();
        }
    }
    FscBatch {
        batch: b,
        steps: t,
        test_begin: 3,
        images: random(b * t * cnn.image_len(), &mut rng),
        extra_input,
        labels,
    }
}

fn model_steps_match<F: Float>() {
    for cnn in backbones() {
        for rule in [Rule::Gradient, Rule::None] {
            // one model that keeps its workspace, one that frees it after every step, and
            // a twin that runs the forward pass alone
            let (mut kept, mut freed, mut twin) = (
                model::<F>(cnn, rule),
                model::<F>(cnn, rule),
                model::<F>(cnn, rule),
            );
            for step in 0..3 {
                let b = batch::<F>(&cnn, 20 + step);
                let g1 = kept.loss_and_grad(&b).unwrap();
                let g2 = freed.loss_and_grad(&b).unwrap();
                freed.release_memory();
                assert_eq!(freed.workspace_bytes(), 0);
                let f = twin.forward_train(&b).unwrap();
                let what = format!("{cnn:?} {rule} step {step}");
                assert!(same(&g1.grads, &g2.grads), "{what}: gradient");
                assert!(same(&[g1.loss], &[g2.loss]), "{what}: loss");
                assert_eq!(g1.correct_first_query, g2.correct_first_query, "{what}");
                assert_eq!(g1.correct_first_query, f.correct_first_query, "{what}");
                // the next step starts from the same parameters in all three
                let p = kept.params().to_vec();
                for m in [&mut kept, &mut freed, &mut twin] {
                    for (v, &u) in m.params_mut().iter_mut().zip(&p) {
                        *v = u - F::of(0.05) * u.signum();
                    }
                }
            }
            assert!(kept.workspace_bytes() > 0);
        }
    }
}

#[test]
fn the_model_step_reuses_its_workspace_and_counts_from_the_gradient_pass_f64() {
    model_steps_match::<f64>();
}

#[test]
fn the_model_step_reuses_its_workspace_and_counts_from_the_gradient_pass_f32() {
    model_steps_match::<f32>();
}
