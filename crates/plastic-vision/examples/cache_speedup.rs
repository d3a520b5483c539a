//! The embedding cache's speed-up (docs/fsc.md §5.3) at CIFAR-FS sizes: the procedural set
//! (32×32 images), a frozen ProtoNet of width 64, an RNN with the gradient rule (H 512),
//! 64 episodes per batch, f32. Times full training steps (forward, backward, clip, AdamW)
//! with the frozen CNN run on every step's images (uncached) and with the features read from
//! the cache, interleaved (A, B, A, B, ...) so that both see the same machine load; also
//! times building the cache, and checks that both paths give the same losses.
//!
//! `cargo run --release -p plastic-vision --example cache_speedup -- [steps] [images per class] [extra key=value ...]`

use std::time::Instant;

use plastic::optim::{clip_grad_norm, AdamW, AdamWConfig};
use plastic_vision::run::{trainable_mask, FscData, FscLearner, FscRunModel, Silent};
use plastic_vision::FscConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.first().map_or(Ok(4), |s| s.parse())?;
    let images: usize = args.get(1).map_or(Ok(100), |s| s.parse())?;
    let mut overrides = vec![
        "image_dataset=procedural".to_string(),
        format!("procedural_images={images}"),
        "freeze_cnn=true".into(),
        "train_augment=false".into(),
    ];
    overrides.extend(args.iter().skip(2).cloned());
    let base = FscConfig::default().with_overrides(&overrides)?.resolved();
    let data = FscData::load(&base)?;
    let dir = std::env::temp_dir().join(format!("plastic-cache-speedup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut models = Vec::new();
    for cache in [false, true] {
        let c = base.with_overrides(&[format!("embedding_cache={cache}")])?;
        let mut m = FscRunModel::<f32>::new(&c)?;
        let t0 = Instant::now();
        m.prepare(&data, &dir, &mut Silent)?;
        if cache {
            let n: usize = [&data.train, &data.val, &data.test]
                .iter()
                .map(|s| s.dataset().len())
                .sum();
            let s = t0.elapsed().as_secs_f64();
            println!(
                "cache built: {n} images in {s:.1} s ({:.2} ms per image)",
                1e3 * s / n as f64
            );
        }
        let mask = trainable_mask(&m);
        let opt = AdamW::new(
            AdamWConfig {
                lr: c.lr,
                weight_decay: c.wdecay,
                ..Default::default()
            },
            mask.clone(),
        );
        models.push((m, opt, mask, Vec::new(), Vec::new()));
    }
    println!(
        "CIFAR-FS sizes: cnn {} width {}, {} {} H {}, batch {}, {} threads; {steps} timed steps each after 1 warm-up, interleaved",
        base.cnn,
        base.cnn_width,
        base.rnn,
        base.plasticity,
        base.hidden(),
        base.batch_size,
        rayon::current_num_threads()
    );
    for step in 0..=steps {
        let batch = data
            .train
            .batch::<f32>(base.seed, step as u64, base.batch_size);
        for (m, opt, mask, times, losses) in models.iter_mut() {
            let t0 = Instant::now();
            let mut r = m.train_step(&batch)?;
            clip_grad_norm(&mut r.grads, mask, base.grad_clip);
            opt.update(m.params_mut(), &r.grads);
            if step > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
            losses.push(r.loss);
        }
    }
    let median = |t: &[f64]| {
        let mut t = t.to_vec();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let (u, c) = (median(&models[0].3), median(&models[1].3));
    println!(
        "uncached (frozen CNN on every step): {:.0} ms/step (median; all: {:?})",
        1e3 * u,
        models[0]
            .3
            .iter()
            .map(|t| (1e3 * t).round())
            .collect::<Vec<_>>()
    );
    println!(
        "cached (projection + RNN only):      {:.0} ms/step (median; all: {:?})",
        1e3 * c,
        models[1]
            .3
            .iter()
            .map(|t| (1e3 * t).round())
            .collect::<Vec<_>>()
    );
    println!("speed-up {:.2}x", u / c);
    println!(
        "losses identical: {} (uncached {:?}, cached {:?})",
        models[0].4 == models[1].4,
        models[0].4,
        models[1].4
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
