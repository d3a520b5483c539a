//! ResNet-12 (docs/fsc.md §5.1) in f64 at small widths: the backward pass against finite
//! differences (every tensor, BatchNorm in training mode, with and without dropout and
//! DropBlock, including the gradient of the images), results independent of the thread
//! count, and DropBlock's statistics on their own.

use plastic::rng::Rng;
use plastic_vision::cnn::{
    drop_mask, dropblock_mask, Backbone, BackboneConfig, Noise, ResNet12Config,
};

struct Case {
    net: Backbone,
    config: ResNet12Config,
    images: Vec<f64>,
    readout: Vec<f64>,
    batch: usize,
    noise: Option<Noise>,
}

impl Case {
    fn new(config: ResNet12Config, batch: usize, seed: u64, noise: Option<Noise>) -> Case {
        let net = Backbone::new(BackboneConfig::ResNet12(config)).unwrap();
        let mut rng = Rng::new(seed);
        let images = (0..batch * config.image_len())
            .map(|_| rng.normal())
            .collect();
        let readout = (0..batch * config.feature_size())
            .map(|_| rng.normal())
            .collect();
        Case {
            net,
            config,
            images,
            readout,
            batch,
            noise,
        }
    }

    /// loss = Σ readout ⊙ cnn(images) (training mode, the same masks every call).
    fn loss(&self, params: &[f64], images: &[f64]) -> f64 {
        let (feat, _) = self
            .net
            .forward_train(params, images, self.batch, None, self.noise)
            .unwrap();
        feat.iter().zip(&self.readout).map(|(a, b)| a * b).sum()
    }

    fn grads(&self, params: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (_, tape) = self
            .net
            .forward_train(params, &self.images, self.batch, None, self.noise)
            .unwrap();
        let mut g = vec![0.0; params.len()];
        let mut d_images = vec![0.0; self.images.len()];
        self.net
            .backward(params, &tape, &self.readout, &mut g, Some(&mut d_images))
            .unwrap();
        (g, d_images)
    }

    fn params(&self, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let c = BackboneConfig::ResNet12(self.config);
        let mut p: Vec<f64> = c.init_params(&mut rng);
        // γ, β away from 1 and 0 so that every term of BatchNorm's backward counts
        for info in c.param_infos(0) {
            if info.name.contains("bn") {
                for v in &mut p[info.range()] {
                    *v += 0.5 * rng.normal();
                }
            }
        }
        p
    }
}

fn small(image_size: usize, drop_rate: f64) -> ResNet12Config {
    ResNet12Config {
        in_channels: 3,
        widths: [2, 3, 4, 5],
        image_size,
        drop_rate,
        dropblock_size: 2,
    }
}

fn check(case: &Case) {
    let params = case.params(11);
    let (g, d_images) = case.grads(&params);
    let h = 1e-6;
    let mut tensors: Vec<(String, std::ops::Range<usize>)> = BackboneConfig::ResNet12(case.config)
        .param_infos(0)
        .into_iter()
        .map(|i| (i.name.clone(), i.range()))
        .collect();
    tensors.push(("images".into(), 0..case.images.len()));
    for (name, range) in tensors {
        let is_images = name == "images";
        let analytic = if is_images { &d_images } else { &g };
        let scale = analytic[range.clone()]
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name}: gradient is all zeros");
        let step = (range.len() / 10).max(1);
        let mut worst = 0.0f64;
        for i in range.clone().step_by(step) {
            let (mut p_plus, mut p_minus) = (params.clone(), params.clone());
            let (mut x_plus, mut x_minus) = (case.images.clone(), case.images.clone());
            if is_images {
                x_plus[i] += h;
                x_minus[i] -= h;
            } else {
                p_plus[i] += h;
                p_minus[i] -= h;
            }
            let fd = (case.loss(&p_plus, &x_plus) - case.loss(&p_minus, &x_minus)) / (2.0 * h);
            worst = worst.max((fd - analytic[i]).abs() / scale);
        }
        assert!(
            worst < 1e-6,
            "{name}: finite differences differ from the backward pass by {worst:e} of the tensor's scale {scale:e}"
        );
    }
}

#[test]
fn resnet12_backward_matches_finite_differences() {
    check(&Case::new(small(16, 0.0), 3, 1, None));
}

#[test]
fn resnet12_backward_with_dropout_and_dropblock_matches_finite_differences() {
    // 32×32: DropBlock on 4×4 and 2×2 maps; a late call so that the keep rate is 0.7
    let noise = Noise {
        seed: 5,
        call: 1_000_000,
    };
    let config = small(32, 0.3);
    let case = Case::new(config, 2, 2, Some(noise));
    // the masks do drop something in every block
    for l in 0..4 {
        let m: Vec<f64> = drop_mask(&config, l, 2, noise);
        assert!(m.contains(&0.0), "block {l} drops nothing");
    }
    check(&case);
}

#[test]
fn odd_sizes_pool_like_pytorch_and_still_match() {
    // 20 → 10 → 5 → 2 (floor) → 1
    check(&Case::new(small(20, 0.0), 2, 3, None));
}

#[test]
fn resnet12_results_do_not_depend_on_the_thread_count() {
    let noise = Noise { seed: 9, call: 3 };
    let case = Case::new(small(64, 0.1), 5, 4, Some(noise));
    let params = case.params(12);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let (f, _) = case
                    .net
                    .forward_train(&params, &case.images, case.batch, None, case.noise)
                    .unwrap();
                (f, case.grads(&params))
            })
    };
    let one = run(1);
    for threads in [2, 3] {
        assert_eq!(run(threads), one, "{threads} threads differ from 1");
    }
}

#[test]
fn dropblock_drops_the_expected_fraction_and_is_seeded() {
    // A seed falls on each of the (f − bs + 1)² positions with probability γ; position
    // (r, c) of the map is dropped unless no seed falls in the windows covering it, so the
    // expected kept fraction is the mean over positions of (1 − γ)^(windows covering it).
    for (f, bs, keep_rate) in [
        (10usize, 5usize, 0.9f64),
        (5, 5, 0.9),
        (4, 2, 0.8),
        (2, 2, 0.95),
    ] {
        let config = ResNet12Config {
            dropblock_size: bs,
            drop_rate: 1.0 - keep_rate,
            ..ResNet12Config::reference(64, 84)
        };
        let gamma = config.gamma(keep_rate, f);
        let span = f + 1 - bs;
        let mut expected_kept = 0.0;
        for r in 0..f {
            for c in 0..f {
                let rows = (0..span).filter(|&i| i <= r && r < i + bs).count();
                let cols = (0..span).filter(|&j| j <= c && c < j + bs).count();
                expected_kept += (1.0 - gamma).powi((rows * cols) as i32);
            }
        }
        expected_kept /= (f * f) as f64;
        let maps = 40_000 / (f * f) + 2000;
        let mut rng = Rng::new(17);
        let mask: Vec<f64> = dropblock_mask(gamma, bs, maps, f, &mut rng);
        let kept = mask.iter().filter(|&&m| m > 0.0).count();
        let fraction = kept as f64 / mask.len() as f64;
        // binomial standard error over maps (positions of one map are correlated: use maps)
        let se = (expected_kept * (1.0 - expected_kept) / maps as f64).sqrt();
        assert!(
            (fraction - expected_kept).abs() < 5.0 * se + 1e-3,
            "f {f}, bs {bs}, keep {keep_rate}: kept {fraction}, expected {expected_kept} (se {se})"
        );
        // the reference's γ makes the expected dropped fraction close to 1 − keep_rate
        // (exactly so when windows do not overlap)
        assert!(
            (1.0 - expected_kept - (1.0 - keep_rate)).abs() < 0.5 * (1.0 - keep_rate),
            "f {f}, bs {bs}: expected dropped {} for drop rate {}",
            1.0 - expected_kept,
            1.0 - keep_rate
        );
        // kept positions are rescaled so that the mask's mean is 1
        let mean: f64 = mask.iter().sum::<f64>() / mask.len() as f64;
        assert!((mean - 1.0).abs() < 1e-9, "mean multiplier {mean}");
        // every dropped position is covered by a whole bs × bs window of drops
        for m in 0..maps.min(200) {
            let map = &mask[m * f * f..][..f * f];
            for r in 0..f {
                for c in 0..f {
                    if map[r * f + c] == 0.0 {
                        let covered = (0..span).any(|i| {
                            (0..span).any(|j| {
                                i <= r
                                    && r < i + bs
                                    && j <= c
                                    && c < j + bs
                                    && (i..i + bs)
                                        .all(|a| (j..j + bs).all(|b| map[a * f + b] == 0.0))
                            })
                        });
                        assert!(covered, "dropped ({r}, {c}) lies in no dropped window");
                    }
                }
            }
        }
        // same seed, same mask; another seed, another mask
        let again: Vec<f64> = dropblock_mask(gamma, bs, maps, f, &mut Rng::new(17));
        assert_eq!(again, mask);
        let other: Vec<f64> = dropblock_mask(gamma, bs, maps, f, &mut Rng::new(18));
        assert_ne!(other, mask);
    }
}

#[test]
fn keep_rate_follows_the_reference_schedule() {
    let c = ResNet12Config::reference(64, 32);
    assert_eq!(c.dropblock_size, 2);
    assert_eq!(ResNet12Config::reference(64, 84).dropblock_size, 5);
    assert_eq!(c.widths, [64, 160, 320, 640]);
    assert_eq!(c.keep_rate(0), 1.0);
    assert!((c.keep_rate(20_000) - 0.95).abs() < 1e-15);
    assert!((c.keep_rate(40_000) - 0.9).abs() < 1e-15);
    assert!((c.keep_rate(1_000_000) - 0.9).abs() < 1e-15);
    // γ = (1 − keep)/bs² · f²/(f − bs + 1)²
    assert!((c.gamma(0.9, 4) - 0.1 / 4.0 * 16.0 / 9.0).abs() < 1e-15);
}

#[test]
fn dropout_blocks_drop_at_the_drop_rate_and_rescale() {
    let config = small(32, 0.25);
    let noise = Noise { seed: 1, call: 7 };
    let m: Vec<f64> = drop_mask(&config, 0, 500, noise);
    let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
    let se = (0.25f64 * 0.75 / m.len() as f64).sqrt();
    assert!((dropped - 0.25).abs() < 5.0 * se, "dropped {dropped}");
    assert!(m
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-15));
    // seeded by (seed, call, block)
    assert_eq!(drop_mask::<f64>(&config, 0, 500, noise), m);
    assert_ne!(
        drop_mask::<f64>(&config, 0, 500, Noise { seed: 1, call: 8 }),
        m
    );
    assert_ne!(drop_mask::<f64>(&config, 1, 500, noise)[..1000], m[..1000]);
}

#[test]
fn bad_shapes_are_clear_errors() {
    let e = |c: ResNet12Config| {
        Backbone::new(BackboneConfig::ResNet12(c))
            .unwrap_err()
            .to_string()
    };
    let msg = e(ResNet12Config {
        dropblock_size: 5,
        ..ResNet12Config::reference(64, 32)
    });
    assert!(msg.contains("DropBlock's size must be in 1..=4"), "{msg}");
    let msg = e(ResNet12Config::reference(64, 8));
    assert!(msg.contains("at least 16×16"), "{msg}");
    let msg = e(ResNet12Config {
        drop_rate: 1.0,
        ..ResNet12Config::reference(64, 32)
    });
    assert!(msg.contains("[0, 1)"), "{msg}");
    let net = Backbone::new(BackboneConfig::ResNet12(small(16, 0.0))).unwrap();
    let p = vec![0.0f64; 3];
    let msg = net
        .forward_eval(&p, &[0.0; 10], 1, &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("parameters"), "{msg}");
}
