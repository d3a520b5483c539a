//! Episodes as the network's input sequence (`docs/fsc.md` §3–§4): structure, labels,
//! relabelling, the evaluation path, and determinism on any thread count.

use std::sync::Arc;

use plastic_vision::augment::{normalize, to_tensor};
use plastic_vision::procedural::{generate, ProceduralConfig};
use plastic_vision::{EpisodeConfig, EpisodeSampler, FscBatch, ImageDataset, Phase};

fn dataset(phase: Phase) -> Arc<ImageDataset> {
    let config = ProceduralConfig {
        seed: 11,
        train_classes: 9,
        val_classes: 7,
        test_classes: 7,
        images_per_class: 5,
    };
    Arc::new(generate(&config, phase).unwrap())
}

fn sampler(phase: Phase, config: EpisodeConfig) -> EpisodeSampler {
    EpisodeSampler::new(dataset(phase), phase, config).unwrap()
}

/// Checks the structure every batch must have, whatever its configuration.
fn check_structure(batch: &FscBatch<f32>, ds: &ImageDataset, config: &EpisodeConfig) {
    let (way, steps) = (config.way, config.steps());
    let n_support = way * config.shot;
    assert_eq!(batch.test_begin, n_support);
    assert_eq!(batch.steps(), steps);
    assert_eq!(batch.way(), way);
    assert_eq!(batch.images.len(), batch.batch() * steps * 3 * 32 * 32);
    assert_eq!(batch.extra_input.len(), batch.batch() * steps * way);
    assert_eq!(batch.labels.len(), batch.batch() * steps);
    for b in 0..batch.batch() {
        let mut support_count = vec![0; way];
        let mut query_count = vec![0; way];
        for t in 0..steps {
            let label = batch.label(b, t);
            assert!(label < way);
            let extra = batch.extra(b, t);
            if t < n_support {
                // The one-hot label in the same step as its image.
                for (k, &v) in extra.iter().enumerate() {
                    assert_eq!(v, if k == label { 1.0 } else { 0.0 });
                }
                support_count[label] += 1;
            } else {
                assert!(extra.iter().all(|&v| v == 0.0));
                query_count[label] += 1;
            }
            // The label names the category of the image shown.
            let id = batch.image_ids[b * steps + t];
            assert_eq!(ds.labels()[id], batch.categories[b * way + label]);
        }
        assert!(
            support_count.iter().all(|&c| c == config.shot),
            "{support_count:?}"
        );
        assert!(
            query_count.iter().all(|&c| c == config.query),
            "{query_count:?}"
        );
        // No image is used twice in an episode (queries differ from their supports).
        let mut ids = batch.image_ids[b * steps..(b + 1) * steps].to_vec();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), steps);
        // Distinct categories.
        let mut cats = batch.categories[b * way..(b + 1) * way].to_vec();
        cats.sort_unstable();
        cats.dedup();
        assert_eq!(cats.len(), way);
    }
}

#[test]
fn five_way_one_shot_episodes_have_the_reference_structure() {
    for phase in Phase::ALL {
        let config = EpisodeConfig::fsc(phase);
        let s = sampler(phase, config.clone());
        for step in 0..5 {
            let batch = s.batch::<f32>(7, step, 16);
            check_structure(&batch, s.dataset(), &config);
            assert_eq!(batch.steps(), 10);
            assert_eq!(batch.test_begin, 5);
            // Class index k is the rank of its category among the episode's (sorted).
            for b in 0..batch.batch() {
                let cats = &batch.categories[b * 5..(b + 1) * 5];
                assert!(cats.windows(2).all(|w| w[0] < w[1]), "{cats:?}");
            }
        }
    }
}

#[test]
fn other_shapes_and_relabelling() {
    let config = EpisodeConfig {
        way: 3,
        shot: 2,
        query: 2,
        augment: true,
        randomize_train_order: true,
    };
    let s = sampler(Phase::Train, config.clone());
    check_structure(&s.batch::<f32>(1, 0, 8), s.dataset(), &config);
    // randomize_train_order = false: the j-th support has label j.
    let config = EpisodeConfig {
        randomize_train_order: false,
        ..EpisodeConfig::fsc(Phase::Val)
    };
    let s = sampler(Phase::Val, config.clone());
    let batch = s.batch::<f32>(1, 0, 32);
    check_structure(&batch, s.dataset(), &config);
    for b in 0..32 {
        for j in 0..5 {
            assert_eq!(batch.label(b, j), j);
        }
    }
    // It relabels the same episodes the default draws.
    let default = sampler(Phase::Val, EpisodeConfig::fsc(Phase::Val)).batch::<f32>(1, 0, 32);
    assert_eq!(default.image_ids, batch.image_ids);
    assert_eq!(default.images, batch.images);
    // ... and needs shot 1.
    let bad = EpisodeConfig {
        shot: 2,
        randomize_train_order: false,
        ..EpisodeConfig::fsc(Phase::Train)
    };
    let err = EpisodeSampler::new(dataset(Phase::Train), Phase::Train, bad).unwrap_err();
    assert!(err.to_string().contains("shot 1"), "{err}");
}

#[test]
fn labels_and_classes_are_uniform() {
    let s = sampler(Phase::Train, EpisodeConfig::fsc(Phase::Train));
    let mut first_query = [0usize; 5];
    let mut class_use = vec![0usize; s.dataset().classes().len()];
    let mut support_order = [[0usize; 5]; 5];
    let n = 4000;
    for step in 0..(n / 100) as u64 {
        let batch = s.batch::<f32>(0, step, 100);
        for b in 0..100 {
            first_query[batch.label(b, 5)] += 1;
            for t in 0..5 {
                support_order[t][batch.label(b, t)] += 1;
            }
            for &c in &batch.categories[b * 5..(b + 1) * 5] {
                class_use[s.dataset().classes().iter().position(|&x| x == c).unwrap()] += 1;
            }
        }
    }
    // Expected n/5 = 800 each (sd ≈ 25); 5·n/9 ≈ 2222 per class (sd ≈ 33).
    assert!(
        first_query.iter().all(|&c| (680..920).contains(&c)),
        "{first_query:?}"
    );
    assert!(
        support_order
            .iter()
            .flatten()
            .all(|&c| (680..920).contains(&c)),
        "{support_order:?}"
    );
    assert!(
        class_use.iter().all(|&c| (2060..2390).contains(&c)),
        "{class_use:?}"
    );
}

#[test]
fn evaluation_images_are_only_normalised() {
    let s = sampler(Phase::Test, EpisodeConfig::fsc(Phase::Test));
    let batch = s.batch::<f64>(5, 3, 4);
    for b in 0..4 {
        for t in 0..10 {
            let mut expected = vec![0.0f32; 3 * 32 * 32];
            to_tensor(
                s.dataset().image(batch.image_ids[b * 10 + t]),
                32,
                &mut expected,
            );
            normalize(&mut expected, s.dataset().kind());
            let got = batch.image(b, t);
            assert!(got.iter().zip(&expected).all(|(&g, &e)| g == e as f64));
        }
    }
    // step_images gathers step t of every episode.
    let step3 = batch.step_images(3);
    assert_eq!(&step3[2 * 3072..3 * 3072], batch.image(2, 3));
}

#[test]
fn training_images_are_augmented() {
    let s = sampler(Phase::Train, EpisodeConfig::fsc(Phase::Train));
    let plain = EpisodeSampler::new(
        dataset(Phase::Train),
        Phase::Train,
        EpisodeConfig {
            augment: false,
            ..EpisodeConfig::fsc(Phase::Train)
        },
    )
    .unwrap();
    let (a, p) = (s.batch::<f32>(2, 0, 8), plain.batch::<f32>(2, 0, 8));
    // Same episodes (augmentation draws come after the episode's sampling), other pixels.
    assert_eq!(a.image_ids, p.image_ids);
    assert_ne!(a.images, p.images);
}

#[test]
fn batches_are_deterministic_and_thread_count_independent() {
    let s = sampler(Phase::Train, EpisodeConfig::fsc(Phase::Train));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| s.batch::<f32>(42, 17, 12))
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_eq!(one, s.batch::<f32>(42, 17, 12));
    // Episode b does not depend on the batch size.
    let small = s.batch::<f32>(42, 17, 5);
    assert_eq!(small.image_ids[..], one.image_ids[..50]);
    assert_eq!(small.images[..], one.images[..small.images.len()]);
    // Other seeds, steps and phases give other batches.
    assert_ne!(one.image_ids, s.batch::<f32>(43, 17, 12).image_ids);
    assert_ne!(one.image_ids, s.batch::<f32>(42, 18, 12).image_ids);
    // f32 and f64 batches hold the same values.
    let wide = s.batch::<f64>(42, 17, 12);
    assert!(wide
        .images
        .iter()
        .zip(&one.images)
        .all(|(&w, &n)| w as f32 == n));
}

#[test]
fn retrieval_batches_show_each_query_its_supports_image() {
    let config = EpisodeConfig::fsc(Phase::Train);
    let s = sampler(Phase::Train, config.clone());
    let (plain, retrieval) = (
        s.batch::<f32>(5, 3, 6),
        s.batch_with_retrieval::<f32>(5, 3, 6, 6),
    );
    check_structure(&plain, s.dataset(), &config);
    let (steps, begin) = (config.steps(), config.test_begin());
    // Same classes, supports, labels and order as the ordinary batch.
    assert_eq!(retrieval.labels, plain.labels);
    assert_eq!(retrieval.categories, plain.categories);
    assert_eq!(retrieval.extra_input, plain.extra_input);
    for b in 0..6 {
        let ids = |batch: &FscBatch<f32>| batch.image_ids[b * steps..(b + 1) * steps].to_vec();
        let (p, r) = (ids(&plain), ids(&retrieval));
        assert_eq!(p[..begin], r[..begin]);
        for t in begin..steps {
            // the query is the support image of its label, not another image of the class
            let label = retrieval.label(b, t);
            let support = (0..begin)
                .find(|&j| retrieval.label(b, j) == label)
                .unwrap();
            assert_eq!(r[t], r[support]);
            assert_ne!(p[t], r[support]);
            // the very same input, augmentation included
            assert_eq!(retrieval.image(b, t), retrieval.image(b, support));
        }
    }
    // deterministic; a mixed batch has the retrieval episodes first, then ordinary ones
    assert_eq!(retrieval, s.batch_with_retrieval::<f32>(5, 3, 6, 6));
    let mixed = s.batch_with_retrieval::<f32>(5, 3, 6, 2);
    let per_episode = steps * 3 * 32 * 32;
    assert_eq!(
        mixed.images[..2 * per_episode],
        retrieval.images[..2 * per_episode]
    );
    assert_eq!(
        mixed.images[2 * per_episode..],
        plain.images[2 * per_episode..]
    );
    assert_eq!(s.batch_with_retrieval::<f32>(5, 3, 6, 0), plain);
}
