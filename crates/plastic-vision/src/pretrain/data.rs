//! The images pretraining reads (docs/fsc.md §8): the training file only, split by index
//! into a training part and a held-out part (every [`HOLDOUT_EVERY`]-th image, as the
//! reference's split), labels mapped to the rank of their class among the training classes.
//!
//! Batches are functions of (seed, step): step `s` takes its images from a permutation of
//! the training part drawn for its epoch (incomplete last batch dropped, as the reference's
//! `drop_last`), and each image's augmentation draws from its own stream, so a batch is the
//! same on any number of threads and a resumed run sees the batches it would have seen.

use std::sync::Arc;

use plastic::rng::Rng;
use plastic::{Error, Float, Result};
use rayon::prelude::*;

use super::config::{PretrainConfig, HOLDOUT_EVERY};
use super::views::two_views;
use crate::augment;
use crate::config::ImageSource;
use crate::dataset::{ImageDataset, Phase};
use crate::procedural;

/// Seed of the held-out views (SimCLR validation), the same at every validation.
const HOLDOUT_VIEW_SEED: u64 = 0x005E_ED0F_71E5;

/// A batch of images as the CNN reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch<F> {
    /// Normalised images (rows, 3, S, S); SimCLR: every image's first view, then every
    /// image's second view.
    pub images: Vec<F>,
    /// Rows (images, or 2 × images for SimCLR).
    pub rows: usize,
    /// Class rank of each row (classification; empty for SimCLR).
    pub labels: Vec<usize>,
}

/// The training file, split.
#[derive(Clone)]
pub struct PretrainData {
    set: Arc<ImageDataset>,
    train: Vec<usize>,
    holdout: Vec<usize>,
    ranks: Vec<usize>,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PretrainData {
    /// Loads (or generates) the training file of the configuration's data set.
    pub fn load(config: &PretrainConfig) -> Result<Self> {
        let set = match config.image_dataset {
            ImageSource::Procedural => {
                procedural::generate(&config.procedural_config(), Phase::Train)?
            }
            source => ImageDataset::load(source.kind(), &config.data_dir, Phase::Train)?,
        };
        Self::new(Arc::new(set), config.batch_size)
    }

    /// Splits `set`; the training part must fill at least one batch of `batch_size`.
    pub fn new(set: Arc<ImageDataset>, batch_size: usize) -> Result<Self> {
        let (holdout, train): (Vec<usize>, Vec<usize>) =
            (0..set.len()).partition(|i| i.is_multiple_of(HOLDOUT_EVERY));
        if train.len() < batch_size {
            return Err(Error::Data(format!(
                "{}: {} training images (after holding out every {HOLDOUT_EVERY}th) do not \
                 fill one batch of {batch_size}",
                set.name(),
                train.len()
            )));
        }
        let classes = set.classes();
        let ranks = set
            .labels()
            .iter()
            .map(|l| classes.binary_search(l).unwrap_or_default())
            .collect();
        Ok(PretrainData {
            set,
            train,
            holdout,
            ranks,
        })
    }

    /// The training classes (the classifier's outputs).
    pub fn classes(&self) -> usize {
        self.set.classes().len()
    }

    /// Images in the training part.
    pub fn train_len(&self) -> usize {
        self.train.len()
    }

    /// Images held out.
    pub fn holdout_len(&self) -> usize {
        self.holdout.len()
    }

    /// The data set.
    pub fn dataset(&self) -> &ImageDataset {
        &self.set
    }

    /// The training images of step `step`: batch `step mod E` of epoch `step div E`'s
    /// permutation, `E` = complete batches per epoch.
    pub fn train_indices(&self, seed: u64, step: u64, batch: usize) -> Vec<usize> {
        let per_epoch = (self.train.len() / batch) as u64;
        let (epoch, pos) = (step / per_epoch, (step % per_epoch) as usize);
        let mut rng = Rng::with_stream(mix(mix(seed) ^ epoch), 0x9e7);
        let mut perm = self.train.clone();
        for i in (1..perm.len()).rev() {
            let j = rng.below(i + 1);
            perm.swap(i, j);
        }
        perm[pos * batch..(pos + 1) * batch].to_vec()
    }

    /// The `j`-th batch of held-out images (in index order), `None` past the end.
    pub fn holdout_indices(&self, j: usize, batch: usize) -> Option<Vec<usize>> {
        let start = j * batch;
        (start < self.holdout.len())
            .then(|| self.holdout[start..(start + batch).min(self.holdout.len())].to_vec())
    }

    /// Classification batch of `ids`: with `augment_seed`, the fsc training augmentation
    /// (crop, colour jitter, flip; docs/fsc.md §2) from stream (seed key, row); without,
    /// normalisation only.
    pub fn classification_batch<F: Float>(
        &self,
        ids: &[usize],
        augment_seed: Option<u64>,
    ) -> ImageBatch<F> {
        let kind = self.set.kind();
        let len = 3 * kind.image_size() * kind.image_size();
        let mut images = vec![F::zero(); ids.len() * len];
        images
            .par_chunks_mut(len)
            .zip(ids.par_iter())
            .enumerate()
            .for_each(|(row, (out, &i))| {
                let mut buf = vec![0.0f32; len];
                let mut rng = augment_seed.map(|k| Rng::with_stream(k, row as u64));
                augment::preprocess(self.set.image(i), kind, rng.as_mut(), &mut buf);
                for (d, &s) in out.iter_mut().zip(&buf) {
                    *d = F::of(s as f64);
                }
            });
        ImageBatch {
            images,
            rows: ids.len(),
            labels: ids.iter().map(|&i| self.ranks[i]).collect(),
        }
    }

    /// SimCLR batch of `ids`: two views of each image (docs/fsc.md §2), image `r`'s from
    /// stream (key, r); rows `0..N` the first views, `N..2N` the second.
    pub fn simclr_batch<F: Float>(&self, ids: &[usize], key: u64) -> ImageBatch<F> {
        let kind = self.set.kind();
        let len = 3 * kind.image_size() * kind.image_size();
        let n = ids.len();
        let views: Vec<[Vec<f32>; 2]> = ids
            .par_iter()
            .enumerate()
            .map(|(r, &i)| {
                two_views(
                    self.set.image(i),
                    kind,
                    &mut Rng::with_stream(key, r as u64),
                )
            })
            .collect();
        let mut images = vec![F::zero(); 2 * n * len];
        for (r, [a, b]) in views.iter().enumerate() {
            for (v, view) in [a, b].into_iter().enumerate() {
                for (d, &s) in images[(v * n + r) * len..][..len].iter_mut().zip(view) {
                    *d = F::of(s as f64);
                }
            }
        }
        ImageBatch {
            images,
            rows: 2 * n,
            labels: Vec::new(),
        }
    }

    /// The augmentation key of training step `step`.
    pub fn step_key(seed: u64, step: u64) -> u64 {
        mix(mix(seed ^ 0xA06) ^ step)
    }

    /// The key of the held-out views of held-out batch `j` (the same at every validation).
    pub fn holdout_key(j: usize) -> u64 {
        mix(HOLDOUT_VIEW_SEED ^ j as u64)
    }
}
