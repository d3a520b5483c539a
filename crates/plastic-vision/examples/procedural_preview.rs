//! Generates the procedural data set, writes a contact sheet of its test classes (one row per
//! class, as a binary PPM image) and prints the raw-pixel nearest-neighbour accuracy on
//! fixed 5-way 1-shot test episodes.
//!
//! `cargo run --release -p plastic-vision --example procedural_preview -- OUT.ppm [IMAGES_PER_CLASS]`

use std::sync::Arc;
use std::time::Instant;

use plastic_vision::baseline::nearest_neighbour_score;
use plastic_vision::procedural::{generate, ProceduralConfig};
use plastic_vision::{EpisodeConfig, EpisodeSampler, Phase};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "procedural.ppm".into());
    let per_class: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(600);
    let config = ProceduralConfig {
        images_per_class: per_class,
        ..ProceduralConfig::default()
    };
    let start = Instant::now();
    let sets: Vec<_> = Phase::ALL
        .iter()
        .map(|&p| generate(&config, p))
        .collect::<Result<_, _>>()?;
    println!(
        "generated {} images in {:.2} s",
        sets.iter().map(|s| s.len()).sum::<usize>(),
        start.elapsed().as_secs_f64()
    );
    let test = &sets[2];
    let (cols, s) = (12usize, 32usize);
    let rows = test.classes().len();
    let (w, h) = (cols * s, rows * s);
    let mut ppm = format!("P6\n{w} {h}\n255\n").into_bytes();
    let mut pixels = vec![0u8; w * h * 3];
    for k in 0..rows {
        for (j, &i) in test.class_images(k).iter().take(cols).enumerate() {
            let img = test.image(i);
            for y in 0..s {
                let dst = ((k * s + y) * w + j * s) * 3;
                pixels[dst..dst + s * 3].copy_from_slice(&img[y * s * 3..(y + 1) * s * 3]);
            }
        }
    }
    ppm.extend(pixels);
    std::fs::write(&out, ppm)?;
    println!("wrote {out}");
    let sampler = EpisodeSampler::new(
        Arc::new(test.clone()),
        Phase::Test,
        EpisodeConfig::fsc(Phase::Test),
    )?;
    let batches: Vec<_> = (0..200)
        .map(|step| sampler.batch::<f32>(0, step, 64))
        .collect();
    let score = nearest_neighbour_score(&batches);
    println!(
        "raw-pixel 1-NN on {} test episodes: {:.2}% (chance 20%)",
        score.total,
        score.percent()
    );
    Ok(())
}
