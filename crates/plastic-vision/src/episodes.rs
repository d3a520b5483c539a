//! Few-shot episodes as the network's input sequence (`docs/fsc.md` §3–§4).
//!
//! An episode draws `way` classes, then for each class `query + shot` distinct images (the
//! first `query` are its queries, the next `shot` its supports), then shuffles the supports
//! and, independently, the queries. The network sees the `way·shot` supports first, each
//! with its one-hot label as extra input (the label in the same step as its image), then the
//! `way·query` queries with zero extra input. The loss is on the query steps; accuracy
//! counts the first query step only.
//!
//! Reproducibility: episode `b` of the batch drawn for (`seed`, phase, `step`) has its own
//! random stream, so a batch is the same whatever the thread count (episodes are built in
//! parallel with rayon).

use std::sync::Arc;

use plastic::rng::Rng;
use plastic::{Error, Float, Result};
use rayon::prelude::*;

use crate::augment;
use crate::dataset::{ImageDataset, Phase};

/// The shape of an episode and whether its images are augmented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodeConfig {
    /// Classes per episode (5).
    pub way: usize,
    /// Support images per class (1).
    pub shot: usize,
    /// Query images per class (1).
    pub query: usize,
    /// Apply the train-time augmentation (`docs/fsc.md` §2): true for the train phase,
    /// false for val/test.
    pub augment: bool,
    /// Keep the labels as drawn (the reference's default, used in every experiment); when
    /// false, relabel each episode so that its `j`-th support has label `j` (`shot` 1
    /// only, `docs/fsc.md` §4).
    pub randomize_train_order: bool,
}

impl EpisodeConfig {
    /// The paper's setting for `phase`: 5-way 1-shot 1-query, augmentation in training only,
    /// labels as drawn.
    pub fn fsc(phase: Phase) -> Self {
        EpisodeConfig {
            way: 5,
            shot: 1,
            query: 1,
            augment: phase == Phase::Train,
            randomize_train_order: true,
        }
    }

    /// Time steps per episode, `way·shot + way·query`.
    pub fn steps(&self) -> usize {
        self.way * (self.shot + self.query)
    }

    /// The first query step, `way·shot`.
    pub fn test_begin(&self) -> usize {
        self.way * self.shot
    }
}

/// A batch of episodes as the network's input sequence, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FscBatch<F> {
    /// Normalised images, `(B, T, C, S, S)`.
    pub images: Vec<F>,
    /// The extra input, `(B, T, way)`: the one-hot label at support steps, zeros at query
    /// steps.
    pub extra_input: Vec<F>,
    /// The class index (`0..way`) of every step's image, `(B, T)`.
    pub labels: Vec<usize>,
    /// The first query step (`way·shot`); the loss covers steps `test_begin..T` and the
    /// accuracy step `test_begin`.
    pub test_begin: usize,
    /// The data set's category id of each class index, `(B, way)`.
    pub categories: Vec<i64>,
    /// The data set index of every step's image, `(B, T)`.
    pub image_ids: Vec<usize>,
    /// The phase whose data set the images come from (with `image_ids`, where to find
    /// each image's cached embedding).
    pub phase: Phase,
    batch: usize,
    steps: usize,
    way: usize,
    image_size: usize,
}

impl<F: Float> FscBatch<F> {
    /// Episodes in the batch, `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Time steps per episode, `T`.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Classes per episode (the width of the extra input).
    pub fn way(&self) -> usize {
        self.way
    }

    /// Image channels, `C` (3).
    pub fn channels(&self) -> usize {
        3
    }

    /// The image side, `S`.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Floats per image, `C·S·S`.
    pub fn image_len(&self) -> usize {
        3 * self.image_size * self.image_size
    }

    /// The image of episode `b` at step `t`, `(C, S, S)`.
    pub fn image(&self, b: usize, t: usize) -> &[F] {
        let n = self.image_len();
        let at = (b * self.steps + t) * n;
        &self.images[at..at + n]
    }

    /// The images of every episode at step `t`, `(B, C, S, S)` (what the CNN sees per step).
    pub fn step_images(&self, t: usize) -> Vec<F> {
        let mut out = Vec::with_capacity(self.batch * self.image_len());
        for b in 0..self.batch {
            out.extend_from_slice(self.image(b, t));
        }
        out
    }

    /// The extra input of episode `b` at step `t`, `way` values.
    pub fn extra(&self, b: usize, t: usize) -> &[F] {
        let at = (b * self.steps + t) * self.way;
        &self.extra_input[at..at + self.way]
    }

    /// The label of episode `b` at step `t`.
    pub fn label(&self, b: usize, t: usize) -> usize {
        self.labels[b * self.steps + t]
    }
}

/// Draws batches of episodes from one data set and phase.
#[derive(Debug, Clone)]
pub struct EpisodeSampler {
    dataset: Arc<ImageDataset>,
    phase: Phase,
    config: EpisodeConfig,
}

/// One episode before its images are rendered: the data-set image and the label of every
/// step, and the category of every label.
struct EpisodePlan {
    images: Vec<usize>,
    labels: Vec<usize>,
    categories: Vec<i64>,
}

impl EpisodeSampler {
    /// A sampler for `phase` of `dataset`; checks that the data set can provide the
    /// episodes (more than `way` classes, `shot + query` images in every class) and that
    /// the configuration is valid.
    pub fn new(dataset: Arc<ImageDataset>, phase: Phase, config: EpisodeConfig) -> Result<Self> {
        if config.way == 0 || config.shot == 0 || config.query == 0 {
            return Err(Error::Config(format!(
                "episodes need way, shot and query ≥ 1 (got way {}, shot {}, query {})",
                config.way, config.shot, config.query
            )));
        }
        if !config.randomize_train_order && config.shot != 1 {
            return Err(Error::Config(format!(
                "randomize_train_order = false relabels supports in order and needs shot 1 \
                 (got shot {})",
                config.shot
            )));
        }
        dataset.check_episodes(config.way, config.shot + config.query)?;
        Ok(EpisodeSampler {
            dataset,
            phase,
            config,
        })
    }

    /// The data set episodes are drawn from.
    pub fn dataset(&self) -> &ImageDataset {
        &self.dataset
    }

    /// The phase (fixes the random streams together with the seed).
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The episode configuration.
    pub fn config(&self) -> &EpisodeConfig {
        &self.config
    }

    /// The random stream of episode `b` of the batch for (`seed`, phase, `step`).
    fn episode_rng(&self, seed: u64, step: u64, b: usize) -> Rng {
        let key = splitmix64(splitmix64(splitmix64(seed) ^ self.phase.index()) ^ step);
        Rng::with_stream(key, b as u64)
    }

    /// Draws one episode's classes and images (`docs/fsc.md` §3) and lays them out as the
    /// sequence of §4.
    /// With `retrieval`, each query shows the image of one of its class's supports instead of
    /// another image of the class (the retrieval curriculum, `docs/fsc.md` §11); the random
    /// draws are the same either way.
    fn plan(&self, rng: &mut Rng, retrieval: bool) -> EpisodePlan {
        let EpisodeConfig {
            way, shot, query, ..
        } = self.config;
        let ds = &self.dataset;
        // Classes: `way` distinct classes, sorted; class index k = rank among them.
        let mut classes = sample_without_replacement(rng, ds.classes().len(), way);
        classes.sort_unstable();
        let mut supports = Vec::with_capacity(way * shot);
        let mut queries = Vec::with_capacity(way * query);
        for (k, &class) in classes.iter().enumerate() {
            let pool = ds.class_images(class);
            let picked = sample_without_replacement(rng, pool.len(), query + shot);
            // The first `query` picks are queries, the next `shot` supports.
            for (j, &i) in picked[..query].iter().enumerate() {
                let i = if retrieval {
                    picked[query + j % shot]
                } else {
                    i
                };
                queries.push((pool[i], k));
            }
            for &i in &picked[query..] {
                supports.push((pool[i], k));
            }
        }
        shuffle(rng, &mut supports);
        shuffle(rng, &mut queries);
        let mut categories: Vec<i64> = classes.iter().map(|&c| ds.classes()[c]).collect();
        if !self.config.randomize_train_order {
            // shot 1: support j gets label j; queries follow their class (§4).
            let mut relabel = vec![0; way];
            let mut new_categories = vec![0; way];
            for (j, (_, k)) in supports.iter_mut().enumerate() {
                relabel[*k] = j;
                new_categories[j] = categories[*k];
                *k = j;
            }
            for (_, k) in queries.iter_mut() {
                *k = relabel[*k];
            }
            categories = new_categories;
        }
        let (images, labels) = supports.into_iter().chain(queries).unzip();
        EpisodePlan {
            images,
            labels,
            categories,
        }
    }

    /// The batch of `batch` episodes for (`seed`, phase, `step`): the same arguments give
    /// the same batch on any thread count.
    pub fn batch<F: Float>(&self, seed: u64, step: u64, batch: usize) -> FscBatch<F> {
        self.batch_with_retrieval(seed, step, batch, 0)
    }

    /// [`EpisodeSampler::batch`] with its first `retrieval` episodes (at most `batch`) turned
    /// into retrieval episodes: the same classes, supports, labels and order, but each query
    /// repeats the input of the support of its label exactly (the same image, the same
    /// augmentation), so that answering needs only recognising an input already seen, not
    /// generalising over a class (the optional curriculum `retrieval_steps`, `docs/fsc.md`
    /// §11). The other episodes are those of the ordinary batch.
    pub fn batch_with_retrieval<F: Float>(
        &self,
        seed: u64,
        step: u64,
        batch: usize,
        retrieval: usize,
    ) -> FscBatch<F> {
        let steps = self.config.steps();
        let way = self.config.way;
        let kind = self.dataset.kind();
        let image_len = 3 * kind.image_size() * kind.image_size();
        let mut images = vec![F::zero(); batch * steps * image_len];
        let plans: Vec<EpisodePlan> = images
            .par_chunks_mut(steps * image_len)
            .enumerate()
            .map(|(b, out)| {
                let mut rng = self.episode_rng(seed, step, b);
                let retrieval = b < retrieval;
                let plan = self.plan(&mut rng, retrieval);
                let mut buf = vec![0.0f32; image_len];
                let test_begin = self.config.test_begin();
                for (t, &i) in plan.images.iter().enumerate() {
                    if retrieval && t >= test_begin {
                        // the very tensor of the support of its label (`plan`: the same image)
                        let label = plan.labels[t];
                        let j = (0..test_begin)
                            .find(|&j| plan.labels[j] == label)
                            .expect("every label has a support");
                        out.copy_within(j * image_len..(j + 1) * image_len, t * image_len);
                        continue;
                    }
                    let rng = self.config.augment.then_some(&mut rng);
                    augment::preprocess(self.dataset.image(i), kind, rng, &mut buf);
                    let dst = &mut out[t * image_len..(t + 1) * image_len];
                    for (d, &s) in dst.iter_mut().zip(&buf) {
                        *d = F::of(s as f64);
                    }
                }
                plan
            })
            .collect();
        let test_begin = self.config.test_begin();
        let mut extra_input = vec![F::zero(); batch * steps * way];
        let mut labels = Vec::with_capacity(batch * steps);
        let mut categories = Vec::with_capacity(batch * way);
        let mut image_ids = Vec::with_capacity(batch * steps);
        for (b, plan) in plans.into_iter().enumerate() {
            for (t, &label) in plan.labels.iter().enumerate() {
                if t < test_begin {
                    extra_input[(b * steps + t) * way + label] = F::one();
                }
            }
            labels.extend(plan.labels);
            categories.extend(plan.categories);
            image_ids.extend(plan.images);
        }
        FscBatch {
            images,
            extra_input,
            labels,
            test_begin,
            categories,
            image_ids,
            phase: self.phase,
            batch,
            steps,
            way,
            image_size: kind.image_size(),
        }
    }
}

/// `k` distinct indices from `0..n`, uniformly, in the order drawn (partial Fisher–Yates).
fn sample_without_replacement(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + rng.below(n - i);
        pool.swap(i, j);
    }
    pool.truncate(k.min(n));
    pool
}

/// A uniformly random permutation in place (Fisher–Yates).
fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

/// SplitMix64's finaliser: mixes a 64-bit key into a well-spread one.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
