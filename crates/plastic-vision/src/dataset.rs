//! Image data sets for one-shot classification: the CIFAR-FS and miniImageNet pickles of
//! `docs/fsc.md` §1, loaded per phase from a `data_dir`, or any images built in memory.

use std::fmt;
use std::path::{Path, PathBuf};

use plastic::{Error, Result};

use crate::pickle;

/// Where the real data sets come from, for error messages.
const DATA_SOURCE_HINT: &str = "The files are the standard CIFAR-FS and miniImageNet \
few-shot splits (64/16/20 classes) as pickled by MetaOptNet (Lee et al. 2019): follow the \
download links in the README of https://github.com/kjunelee/MetaOptNet and unpack them so \
that the files above exist, or use the procedural data set instead.";

/// Which of the two image data sets (their sizes, file names and normalisation constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// CIFAR-FS: 32 × 32 images, files `CIFAR_FS/CIFAR_FS_{train,val,test}.pickle`.
    CifarFs,
    /// miniImageNet: 84 × 84 images, files
    /// `miniImageNet/miniImageNet_category_split_{train_phase_train,val,test}.pickle`.
    MiniImageNet,
}

impl DatasetKind {
    /// The image side `S` (images are `S × S × 3`).
    pub fn image_size(self) -> usize {
        match self {
            DatasetKind::CifarFs => 32,
            DatasetKind::MiniImageNet => 84,
        }
    }

    /// The zero padding of the train-time random crop (`docs/fsc.md` §2).
    pub fn crop_padding(self) -> usize {
        match self {
            DatasetKind::CifarFs => 4,
            DatasetKind::MiniImageNet => 8,
        }
    }

    /// The per-channel (R, G, B) mean of `Normalize`, in [0, 1] units (`docs/fsc.md` §2).
    pub fn mean(self) -> [f64; 3] {
        let m = match self {
            DatasetKind::CifarFs => [129.37731888, 124.10583864, 112.47758569],
            DatasetKind::MiniImageNet => [120.39586422, 115.59361427, 104.54012653],
        };
        m.map(|v| v / 255.0)
    }

    /// The per-channel (R, G, B) standard deviation of `Normalize`, in [0, 1] units
    /// (`docs/fsc.md` §2).
    pub fn std(self) -> [f64; 3] {
        let s = match self {
            DatasetKind::CifarFs => [68.20947949, 65.43124043, 70.45866994],
            DatasetKind::MiniImageNet => [70.68188272, 68.27635443, 72.54505529],
        };
        s.map(|v| v / 255.0)
    }

    /// The data set's folder under `data_dir`.
    pub fn folder(self) -> &'static str {
        match self {
            DatasetKind::CifarFs => "CIFAR_FS",
            DatasetKind::MiniImageNet => "miniImageNet",
        }
    }

    /// The file, relative to `data_dir`, whose categories the episodes of `phase` are drawn
    /// from (`docs/fsc.md` §1's table: the train file, or the novel file of val/test).
    ///
    /// Deliberate difference from the reference: at val/test the reference also loads a
    /// "base" file (`CIFAR_FS_train.pickle`, `miniImageNet_category_split_train_phase_{val,test}.pickle`)
    /// and concatenates it in front of the novel images, but never samples from it
    /// (`nKbase = 0`). We do not load it: it cannot change an episode, and skipping it
    /// saves the time and memory of a whole training file.
    pub fn episode_file(self, phase: Phase) -> PathBuf {
        let name = match (self, phase) {
            (DatasetKind::CifarFs, Phase::Train) => "CIFAR_FS_train.pickle",
            (DatasetKind::CifarFs, Phase::Val) => "CIFAR_FS_val.pickle",
            (DatasetKind::CifarFs, Phase::Test) => "CIFAR_FS_test.pickle",
            (DatasetKind::MiniImageNet, Phase::Train) => {
                "miniImageNet_category_split_train_phase_train.pickle"
            }
            (DatasetKind::MiniImageNet, Phase::Val) => "miniImageNet_category_split_val.pickle",
            (DatasetKind::MiniImageNet, Phase::Test) => "miniImageNet_category_split_test.pickle",
        };
        Path::new(self.folder()).join(name)
    }

    /// Checks that the files of every phase exist under `data_dir` (without reading them);
    /// the error names every expected file and where the data sets come from.
    pub fn check_files(self, data_dir: &Path) -> Result<()> {
        if Phase::ALL
            .iter()
            .all(|&p| data_dir.join(self.episode_file(p)).is_file())
        {
            Ok(())
        } else {
            Err(missing_files_error(self, data_dir))
        }
    }

    /// The name used in configurations (`cifar_fs`, `mini_imagenet`).
    pub fn key(self) -> &'static str {
        match self {
            DatasetKind::CifarFs => "cifar_fs",
            DatasetKind::MiniImageNet => "mini_imagenet",
        }
    }

    /// Parses a configuration name (`cifar_fs` / `CIFAR_FS`, `mini_imagenet` /
    /// `miniImageNet`).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "cifar_fs" => Ok(DatasetKind::CifarFs),
            "mini_imagenet" | "miniimagenet" => Ok(DatasetKind::MiniImageNet),
            _ => Err(Error::Config(format!(
                "unknown image data set `{name}`; valid: cifar_fs, mini_imagenet"
            ))),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetKind::CifarFs => "CIFAR-FS",
            DatasetKind::MiniImageNet => "miniImageNet",
        })
    }
}

/// A phase of an experiment: which categories episodes are drawn from (`docs/fsc.md` §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Meta-training: the training categories, with augmentation.
    Train,
    /// Validation: the validation (novel) categories.
    Val,
    /// Test: the test (novel) categories.
    Test,
}

impl Phase {
    /// All phases, in order.
    pub const ALL: [Phase; 3] = [Phase::Train, Phase::Val, Phase::Test];

    /// A small number identifying the phase in random-stream derivations.
    pub(crate) fn index(self) -> u64 {
        match self {
            Phase::Train => 0,
            Phase::Val => 1,
            Phase::Test => 2,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Train => "train",
            Phase::Val => "val",
            Phase::Test => "test",
        })
    }
}

/// A labelled set of square RGB images, `uint8`, row-major `N × S × S × 3` (channel last,
/// as in the pickles), with the images of each class indexed.
#[derive(Clone)]
pub struct ImageDataset {
    kind: DatasetKind,
    name: String,
    images: Vec<u8>,
    labels: Vec<i64>,
    classes: Vec<i64>,
    by_class: Vec<Vec<usize>>,
}

impl ImageDataset {
    /// Builds a data set from raw parts, checking them: `images` holds
    /// `labels.len() × S × S × 3` bytes with `S = kind.image_size()`.
    pub fn new(
        kind: DatasetKind,
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<i64>,
    ) -> Result<Self> {
        let name = name.into();
        let s = kind.image_size();
        let per_image = s * s * 3;
        if labels.is_empty() {
            return Err(Error::Data(format!("{name}: the data set has no images")));
        }
        if images.len() != labels.len() * per_image {
            return Err(Error::Data(format!(
                "{name}: {} image bytes for {} labels; expected {} × {s} × {s} × 3 = {}",
                images.len(),
                labels.len(),
                labels.len(),
                labels.len() * per_image
            )));
        }
        let mut classes = labels.clone();
        classes.sort_unstable();
        classes.dedup();
        let mut by_class = vec![Vec::new(); classes.len()];
        for (i, label) in labels.iter().enumerate() {
            // `classes` is sorted and holds every label.
            let k = classes.binary_search(label).unwrap_or_default();
            by_class[k].push(i);
        }
        Ok(ImageDataset {
            kind,
            name,
            images,
            labels,
            classes,
            by_class,
        })
    }

    /// Loads the file whose categories the episodes of `phase` are drawn from
    /// ([`DatasetKind::episode_file`]) under `data_dir`.
    ///
    /// A missing file gives one error naming every file the three phases expect and where
    /// the data sets come from; a corrupt, truncated or wrongly shaped file an error naming
    /// the file and what was wrong.
    pub fn load(kind: DatasetKind, data_dir: &Path, phase: Phase) -> Result<Self> {
        let path = data_dir.join(kind.episode_file(phase));
        if !path.is_file() {
            return Err(missing_files_error(kind, data_dir));
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let contents = pickle::read_dataset_pickle(bytes).map_err(|e| Error::format(&path, e))?;
        let s = kind.image_size();
        let [n, h, w, c] = contents.shape;
        if h != s || w != s || c != 3 {
            return Err(Error::format(
                &path,
                format!(
                    "`data` has shape ({n}, {h}, {w}, {c}); {kind} images must be \
                     (N, {s}, {s}, 3) uint8 (height × width × RGB)"
                ),
            ));
        }
        if contents.labels.len() != n {
            return Err(Error::format(
                &path,
                format!(
                    "`data` holds {n} images but `labels` has {} entries; they must match",
                    contents.labels.len()
                ),
            ));
        }
        let name = format!("{kind} {phase} ({})", path.display());
        ImageDataset::new(kind, name, contents.data, contents.labels)
    }

    /// Loads the data set of every phase, checking that all the files exist first.
    pub fn load_all(kind: DatasetKind, data_dir: &Path) -> Result<[ImageDataset; 3]> {
        kind.check_files(data_dir)?;
        Ok([
            ImageDataset::load(kind, data_dir, Phase::Train)?,
            ImageDataset::load(kind, data_dir, Phase::Val)?,
            ImageDataset::load(kind, data_dir, Phase::Test)?,
        ])
    }

    /// The data set's kind (image size, normalisation).
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    /// A name for messages (data set, phase, file).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image side `S`.
    pub fn image_size(&self) -> usize {
        self.kind.image_size()
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set has no images (never true for a constructed data set).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`, `S × S × 3` bytes, row-major, channel last.
    pub fn image(&self, i: usize) -> &[u8] {
        let per_image = self.image_size() * self.image_size() * 3;
        &self.images[i * per_image..(i + 1) * per_image]
    }

    /// All images, `N × S × S × 3` bytes.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// The label of every image (global category ids as in the file).
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The distinct category ids, sorted.
    pub fn classes(&self) -> &[i64] {
        &self.classes
    }

    /// The indices of the images of the `k`-th class of [`ImageDataset::classes`], in file
    /// order.
    pub fn class_images(&self, k: usize) -> &[usize] {
        &self.by_class[k]
    }

    /// Checks that episodes of `way` classes with `per_class` images each can be drawn:
    /// more than `way` classes (the reference asserts `way < number of categories`,
    /// `docs/fsc.md` §1) and at least `per_class` images in every class.
    pub fn check_episodes(&self, way: usize, per_class: usize) -> Result<()> {
        if self.classes.len() <= way {
            return Err(Error::Data(format!(
                "{}: {} classes; {way}-way episodes need more than {way} classes",
                self.name,
                self.classes.len()
            )));
        }
        if let Some((k, imgs)) = self
            .by_class
            .iter()
            .enumerate()
            .find(|(_, imgs)| imgs.len() < per_class)
        {
            return Err(Error::Data(format!(
                "{}: class {} has {} image(s); episodes need at least shot + query = {per_class} \
                 per class",
                self.name,
                self.classes[k],
                imgs.len()
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for ImageDataset {
    /// The name and sizes only (the pixels can be gigabytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageDataset")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("images", &self.labels.len())
            .field("classes", &self.classes.len())
            .finish()
    }
}

/// The error for missing data files: every file the three phases expect, and the source.
fn missing_files_error(kind: DatasetKind, data_dir: &Path) -> Error {
    let mut message = format!(
        "{kind} data files not found under data_dir `{}`. Expected:",
        data_dir.display()
    );
    for phase in Phase::ALL {
        let path = data_dir.join(kind.episode_file(phase));
        let state = if path.is_file() { "present" } else { "MISSING" };
        message.push_str(&format!("\n  {} ({phase}, {state})", path.display()));
    }
    message.push('\n');
    message.push_str(DATA_SOURCE_HINT);
    Error::Config(message)
}
