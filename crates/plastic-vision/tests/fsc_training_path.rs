//! The trainer's own path through the real model (`FscLearner` for `FscModel`, the flat
//! parameter buffer, `trainable_mask`, global-norm clipping and AdamW, as `run.rs` uses
//! them): its gradient is the finite difference of its loss (f64), and repeated updates on
//! one fixed batch fit that batch, in training and in evaluation mode (BatchNorm running
//! statistics). A wrong sign, layout, mask or buffer update fails here.

use plastic::optim::{clip_grad_norm, AdamW, AdamWConfig};
use plastic::rng::Rng;
use plastic_vision::run::{build_model, trainable_mask, FscData, FscLearner};
use plastic_vision::FscConfig;

fn tiny() -> FscConfig {
    FscConfig::default()
        .with_overrides(&[
            "image_dataset=procedural",
            "procedural_images=20",
            "cnn_width=4",
            "hidden_size=16",
            "batch_size=8",
            "randomize_train_order=false",
            "dtype=f64",
        ])
        .unwrap()
}

#[test]
fn the_trainers_gradient_is_the_finite_difference_of_its_loss() {
    let c = tiny();
    let data = FscData::load(&c).unwrap();
    let mut model = build_model::<f64>(&c).unwrap();
    let batch = data.train.batch::<f64>(c.seed, 0, c.batch_size);
    let grads = model.train_step(&batch).unwrap().grads;
    assert_eq!(grads.len(), model.params().len());
    let mut rng = Rng::new(7);
    let h = 1e-6;
    for info in model.param_infos() {
        // a few coordinates of every tensor
        for _ in 0..3 {
            let k =
                info.offset + ((rng.uniform() * info.len() as f64) as usize).min(info.len() - 1);
            let p0 = model.params()[k];
            model.params_mut()[k] = p0 + h;
            let up = model.train_step(&batch).unwrap().loss;
            model.params_mut()[k] = p0 - h;
            let down = model.train_step(&batch).unwrap().loss;
            model.params_mut()[k] = p0;
            let fd = (up - down) / (2.0 * h);
            let err = (grads[k] - fd).abs();
            assert!(
                err <= 1e-6 * grads[k].abs().max(1e-3),
                "{} [{}]: gradient {:e}, finite difference {fd:e}",
                info.name,
                k - info.offset,
                grads[k]
            );
        }
    }
}

#[test]
fn repeated_updates_on_one_batch_fit_it_in_both_modes() {
    let c = tiny();
    let data = FscData::load(&c).unwrap();
    let mut model = build_model::<f64>(&c).unwrap();
    let batch = data.train.batch::<f64>(c.seed, 0, c.batch_size);
    let mask = trainable_mask(&model);
    assert!(
        mask.iter().all(|&m| m),
        "a model built from scratch trains every parameter"
    );
    let mut opt = AdamW::new(
        AdamWConfig {
            lr: 3e-3,
            weight_decay: c.wdecay,
            ..Default::default()
        },
        mask.clone(),
    );
    let first = model.train_step(&batch).unwrap().loss;
    let mut last = first;
    for _ in 0..60 {
        let mut r = model.train_step(&batch).unwrap();
        last = r.loss;
        clip_grad_norm(&mut r.grads, &mask, c.grad_clip);
        opt.update(model.params_mut(), &r.grads);
    }
    let eval = model.evaluate(&batch).unwrap();
    // chance is ln 5 = 1.61
    assert!(first > 1.4, "initial loss {first}");
    assert!(last < 0.5 * first, "training loss {first} -> {last}");
    assert!(
        eval.loss < 0.7 * first,
        "evaluation loss {} (initial {first})",
        eval.loss
    );
}
