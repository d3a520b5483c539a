//! The raw-pixel nearest-neighbour baseline, on data where its answer is known.

use std::sync::Arc;

use plastic_vision::baseline::{nearest_neighbour_score, nearest_support_label, Score};
use plastic_vision::{DatasetKind, EpisodeConfig, EpisodeSampler, ImageDataset, Phase};

/// Six classes of uniform images: class k has brightness 40k + i (image i), so the nearest
/// support of any query is its own class's.
fn separable() -> ImageDataset {
    let per = 32 * 32 * 3;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for k in 0..6u8 {
        for i in 0..4u8 {
            images.extend(vec![40 * k + i; per]);
            labels.push(k as i64 + 10);
        }
    }
    ImageDataset::new(DatasetKind::CifarFs, "separable", images, labels).unwrap()
}

#[test]
fn nearest_neighbour_is_perfect_on_separable_classes() {
    let sampler = EpisodeSampler::new(
        Arc::new(separable()),
        Phase::Val,
        EpisodeConfig::fsc(Phase::Val),
    )
    .unwrap();
    let batches: Vec<_> = (0..3).map(|s| sampler.batch::<f64>(1, s, 32)).collect();
    assert_eq!(
        nearest_neighbour_score(&batches),
        Score {
            correct: 96,
            total: 96
        }
    );
    // Every query, not only the first, finds its class.
    for b in 0..32 {
        for t in 5..10 {
            assert_eq!(
                nearest_support_label(&batches[0], b, t),
                batches[0].label(b, t)
            );
        }
    }
    assert_eq!(
        Score {
            correct: 1,
            total: 4
        }
        .percent(),
        25.0
    );
    assert_eq!(Score::default().percent(), 0.0);
}

#[test]
fn nearest_neighbour_scores_only_the_first_query() {
    let sampler = EpisodeSampler::new(
        Arc::new(separable()),
        Phase::Val,
        EpisodeConfig::fsc(Phase::Val),
    )
    .unwrap();
    let mut batch = sampler.batch::<f32>(1, 0, 8);
    // Spoil the labels of the later queries: the score does not change.
    for b in 0..8 {
        for t in 6..10 {
            batch.labels[b * 10 + t] = (batch.labels[b * 10 + t] + 1) % 5;
        }
    }
    assert_eq!(nearest_neighbour_score(&[batch.clone()]).correct, 8);
    // Spoil the first query's label: every episode is wrong.
    for b in 0..8 {
        batch.labels[b * 10 + 5] = (batch.labels[b * 10 + 5] + 1) % 5;
    }
    assert_eq!(nearest_neighbour_score(&[batch]).correct, 0);
}
