//! Times one fsc training step of [`FscModel`] (CNN + projection + plastic RNN forward and
//! backward, AdamW update) on random images: B = 64 episodes, T = 10 steps, the hidden sizes
//! of docs/fsc.md §5.2.
//!
//! `cargo run --release -p plastic-vision --example fsc_step -- [rnn|lstm] [gradient|hebbian|none] [32|84] [steps]`
//! (set `RAYON_NUM_THREADS` to fix the thread count). Prints each step's time and the median.

use std::time::Instant;

use plastic::optim::{AdamW, AdamWConfig};
use plastic::rng::Rng;
use plastic::{CellKind, NetworkConfig, Rule};
use plastic_vision::cnn::{BackboneConfig, ProtoNetConfig};
use plastic_vision::model::{FscBatch, FscConfig, FscModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let rnn: CellKind = arg(0, "rnn").parse()?;
    let rule: Rule = arg(1, "gradient").parse()?;
    let size: usize = arg(2, "32").parse()?;
    let steps: usize = arg(3, "5").parse()?;
    // docs/fsc.md §5.2: base 256, ×1.5 without plasticity, ×2 for the plain RNN
    let mut hidden = 256.0;
    if rule == Rule::None {
        hidden *= 1.5;
    }
    if rnn == CellKind::Rnn {
        hidden *= 2.0;
    }
    let hidden = hidden as usize;
    let config = FscConfig {
        cnn: BackboneConfig::ProtoNet(ProtoNetConfig {
            in_channels: 3,
            channels: 64,
            image_size: size,
        }),
        network: NetworkConfig {
            rnn,
            plasticity: rule,
            input_size: hidden,
            hidden_size: hidden,
            output_size: 5,
            input_layer: false,
            ..Default::default()
        },
        extra_input_dim: 5,
    };
    let mut model = FscModel::<f32>::new(config, 0)?;
    let (b, t, way) = (64, 10, 5);
    let mut rng = Rng::new(1);
    let images = (0..b * t * 3 * size * size)
        .map(|_| rng.normal() as f32)
        .collect();
    let mut labels = vec![0; b * t];
    let mut extra_input = vec![0.0f32; b * t * way];
    for e in 0..b {
        for s in 0..t {
            let l = s % way;
            labels[e * t + s] = l;
            if s < way {
                extra_input[(e * t + s) * way + l] = 1.0;
            }
        }
    }
    let batch = FscBatch {
        batch: b,
        steps: t,
        test_begin: way,
        images,
        extra_input,
        labels,
    };
    let mut opt = AdamW::new(
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 5e-4,
            ..Default::default()
        },
        model.trainable_mask(),
    );
    println!(
        "fsc step: {rnn:?} {rule:?} H {hidden}, {size}×{size}, B {b}, T {t}, {} parameters",
        model.params().len()
    );
    let mut times = Vec::new();
    for i in 0..steps + 1 {
        let start = Instant::now();
        let g = model.loss_and_grad(&batch)?;
        opt.update(model.params_mut(), &g.grads);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        println!("step {i}: {ms:.0} ms (loss {:.4})", g.loss);
        if i > 0 {
            times.push(ms);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "median {:.0} ms over {} steps (after 1 warm-up)",
        times[times.len() / 2],
        times.len()
    );
    Ok(())
}
