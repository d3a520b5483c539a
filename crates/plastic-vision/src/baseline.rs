//! The raw-pixel nearest-neighbour baseline: each query takes the label of the support
//! whose normalised pixels are nearest (Euclidean distance). Scored like the model: only
//! the first query step of each episode counts (`docs/fsc.md` §4).

use plastic::Float;

use crate::episodes::FscBatch;

/// Correct first queries out of the episodes scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Score {
    /// Episodes whose first query was classified correctly.
    pub correct: usize,
    /// Episodes scored.
    pub total: usize,
}

impl Score {
    /// Accuracy in percent (0 when nothing was scored).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }
}

/// The label the 1-nearest-neighbour rule gives the image of step `t` of episode `b`: the
/// label of the nearest support image (ties: the earlier support step).
pub fn nearest_support_label<F: Float>(batch: &FscBatch<F>, b: usize, t: usize) -> usize {
    let query = batch.image(b, t);
    let mut best = (f64::INFINITY, 0);
    for s in 0..batch.test_begin {
        let d: f64 = batch
            .image(b, s)
            .iter()
            .zip(query)
            .map(|(&x, &y)| {
                let e = x.f64() - y.f64();
                e * e
            })
            .sum();
        if d < best.0 {
            best = (d, batch.label(b, s));
        }
    }
    best.1
}

/// Scores the baseline on the first query of every episode of `batches`.
pub fn nearest_neighbour_score<F: Float>(batches: &[FscBatch<F>]) -> Score {
    let mut score = Score::default();
    for batch in batches {
        for b in 0..batch.batch() {
            let t = batch.test_begin;
            score.total += 1;
            if nearest_support_label(batch, b, t) == batch.label(b, t) {
                score.correct += 1;
            }
        }
    }
    score
}
