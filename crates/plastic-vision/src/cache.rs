//! The embedding cache of an fsc run with a frozen CNN and no train-time augmentation
//! (`docs/fsc.md` §5.3): such a CNN gives every image the same features whenever it is
//! shown, so every image of the three phases is embedded once (evaluation mode, the
//! normalised image without augmentation) and meta-training runs only the projection and
//! the plastic RNN.
//!
//! The features are kept next to the run, in `embeddings.safetensors` (tensors `train`,
//! `val`, `test`, each (N, F), in the run's float type, checksummed), under a key: a 64-bit
//! FNV-1a hash of the CNN (its shape, parameters and BatchNorm statistics, as stored in
//! the run's float type) and of the data (each phase's kind, images and labels). A file
//! whose key differs (another CNN, other data), or that is damaged, is rebuilt.
//!
//! The cached features are bit-identical to what the frozen CNN computes on a training
//! step's images: the CNN's evaluation-mode output for an image does not depend on the other
//! images of its call (`tests/embedding_cache.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use plastic::params::ParamInfo;
use plastic::{Error, Float, Result};

use crate::augment;
use crate::dataset::{ImageDataset, Phase};
use crate::model::FscModel;
use crate::runfiles;

/// The cache's file name in a run folder.
pub const FILE: &str = "embeddings.safetensors";
const FORMAT: &str = "plastic-embeddings/1";
/// Images per CNN call while building.
const CHUNK: usize = 256;

/// 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
    fn floats<F: Float>(&mut self, v: &[F]) {
        self.u64(v.len() as u64);
        for x in v {
            if F::NAME == "f32" {
                self.bytes(&(x.f64() as f32).to_le_bytes());
            } else {
                self.bytes(&x.f64().to_le_bytes());
            }
        }
    }
}

/// How [`EmbeddingCache::open`] got its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Read from the file (same CNN, same data).
    Loaded,
    /// Computed: there was no file.
    Built,
    /// Computed: the file was for another CNN or other data, or damaged.
    Rebuilt,
}

/// The frozen CNN's features of every image of the three phases.
#[derive(Debug, Clone)]
pub struct EmbeddingCache<F> {
    features: [Vec<F>; 3],
    feature_size: usize,
    key: String,
}

/// The key of a frozen CNN and the three phases' data.
pub fn cache_key<F: Float>(model: &FscModel<F>, sets: [&ImageDataset; 3]) -> String {
    let mut h = Fnv::new();
    h.str(FORMAT);
    h.str(F::NAME);
    h.str(&format!("{:?}", model.config().cnn));
    h.floats(model.cnn_params());
    for (name, t) in model.named_buffers() {
        h.str(&name);
        h.floats(&t.data);
    }
    for set in sets {
        h.str(&set.kind().to_string());
        h.u64(set.len() as u64);
        h.bytes(set.images());
        for &l in set.labels() {
            h.u64(l as u64);
        }
    }
    format!("{:016x}", h.0)
}

impl<F: Float> EmbeddingCache<F> {
    /// Embeds every image of `sets` (train, val, test) with the model's CNN in evaluation
    /// mode, `CHUNK` images per call.
    pub fn build(model: &FscModel<F>, sets: [&ImageDataset; 3]) -> Result<Self> {
        let fsz = model.config().cnn.feature_size();
        let mut features: [Vec<F>; 3] = Default::default();
        for (out, set) in features.iter_mut().zip(sets) {
            let kind = set.kind();
            let len = 3 * kind.image_size() * kind.image_size();
            out.reserve_exact(set.len() * fsz);
            let mut buf = vec![0.0f32; len];
            for start in (0..set.len()).step_by(CHUNK) {
                let end = (start + CHUNK).min(set.len());
                let mut images = Vec::with_capacity((end - start) * len);
                for i in start..end {
                    augment::preprocess(set.image(i), kind, None, &mut buf);
                    images.extend(buf.iter().map(|&v| F::of(v as f64)));
                }
                out.extend(model.cnn_features_eval(&images, end - start)?);
            }
        }
        Ok(EmbeddingCache {
            features,
            feature_size: fsz,
            key: cache_key(model, sets),
        })
    }

    /// The cache of `model`'s CNN and `sets` in `dir`: read from [`FILE`] when its key
    /// matches, else built and written (atomically).
    pub fn open(
        dir: &Path,
        model: &FscModel<F>,
        sets: [&ImageDataset; 3],
    ) -> Result<(Self, CacheStatus)> {
        let path = dir.join(FILE);
        let key = cache_key(model, sets);
        let fsz = model.config().cnn.feature_size();
        let existed = path.exists();
        if existed {
            if let Some(c) = Self::read(&path, &key, fsz, sets) {
                return Ok((c, CacheStatus::Loaded));
            }
        }
        let cache = Self::build(model, sets)?;
        cache.write(&path)?;
        let status = if existed {
            CacheStatus::Rebuilt
        } else {
            CacheStatus::Built
        };
        Ok((cache, status))
    }

    fn infos(lens: [usize; 3], fsz: usize) -> Vec<ParamInfo> {
        let mut at = 0;
        Phase::ALL
            .iter()
            .zip(lens)
            .map(|(p, n)| {
                let i = ParamInfo {
                    name: p.to_string(),
                    shape: vec![n, fsz],
                    offset: at,
                    trainable: false,
                };
                at += n * fsz;
                i
            })
            .collect()
    }

    /// The file's features if it is intact, of this key and of these shapes.
    fn read(path: &Path, key: &str, fsz: usize, sets: [&ImageDataset; 3]) -> Option<Self> {
        let bytes = fs::read(path).ok()?;
        let st = plastic::params::parse_safetensors(&bytes, path).ok()?;
        let meta = runfiles::metadata(&bytes, path).ok()?;
        if meta.get("key").map(String::as_str) != Some(key)
            || meta.get("format").map(String::as_str) != Some(FORMAT)
        {
            return None;
        }
        let lens = sets.map(|s| s.len());
        let infos = Self::infos(lens, fsz);
        let flat = runfiles::tensors_read::<F>(&st, "", &infos, path).ok()?;
        let mut features: [Vec<F>; 3] = Default::default();
        for (f, i) in features.iter_mut().zip(&infos) {
            *f = flat[i.range()].to_vec();
        }
        Some(EmbeddingCache {
            features,
            feature_size: fsz,
            key: key.to_string(),
        })
    }

    fn write(&self, path: &Path) -> Result<()> {
        let lens = [0, 1, 2].map(|k| self.features[k].len() / self.feature_size.max(1));
        let infos = Self::infos(lens, self.feature_size);
        let flat: Vec<F> = self.features.concat();
        let mut meta = BTreeMap::new();
        meta.insert("key".into(), self.key.clone());
        meta.insert("format".into(), FORMAT.into());
        runfiles::write_named(path, &infos, &flat, &[], &[], meta)
    }

    /// The key of the CNN and data this cache belongs to.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The feature size F.
    pub fn feature_size(&self) -> usize {
        self.feature_size
    }

    /// The features of `phase`'s images `ids`, in order: (ids.len(), F).
    pub fn features(&self, phase: Phase, ids: &[usize]) -> Result<Vec<F>> {
        let all = &self.features[phase.index() as usize];
        let fsz = self.feature_size;
        let mut out = Vec::with_capacity(ids.len() * fsz);
        for &i in ids {
            let row = all.get(i * fsz..(i + 1) * fsz).ok_or_else(|| {
                Error::Data(format!(
                    "image {i} of the {phase} phase is not in the embedding cache ({} images)",
                    all.len() / fsz.max(1)
                ))
            })?;
            out.extend_from_slice(row);
        }
        Ok(out)
    }
}
