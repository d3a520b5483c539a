//! A procedural image data set for one-shot classification without the real data: CIFAR-FS
//! sized (32 × 32 RGB) images whose classes are shapes, not colours or positions.
//!
//! Each class is a prototype of three parts (strokes, ellipses, rings, striped discs) at
//! class-specific positions, sizes and orientations. Every image renders its class's
//! prototype with random part colours of the opposite lightness to a random plain background
//! (dark on light or light on dark, equally likely), shifted by up to ±4 px, under small pose
//! variation (rotation ±6°, scale ±5%, per-part jitter of 3% of the object's radius, ±2.6°
//! and ±3% size) and uniform pixel noise (standard deviation 0.03). Colour, lightness
//! polarity and position carry no class information, so nearest neighbour on raw pixels does
//! poorly (25% on 5-way 1-shot episodes, chance 20%), while the arrangement of shapes is the
//! same in every image of a class (`docs/fsc.md` §11; an
//! earlier, harder version with clutter strokes, colour gradients and four times the pose
//! variation stayed at chance in the demo's runs).
//!
//! Classes are split like the real data sets (by default 64 / 16 / 20 train / val / test
//! classes with distinct category ids 0..64, 64..80, 80..100), generation is seeded and
//! independent of the thread count, and the sets can be written in the CIFAR-FS file
//! layout ([`write_cifar_fs_layout`]) so that the whole loading path can run on them. They
//! use the CIFAR-FS normalisation constants (`docs/fsc.md` §2), which fit them closely
//! enough: the default set's training pixels have channel means 0.499, 0.500, 0.500
//! (CIFAR-FS: 0.507, 0.487, 0.441) and standard deviations 0.331, 0.330, 0.331 (CIFAR-FS:
//! 0.267, 0.257, 0.276), as printed by the example `procedural_preview`.

use std::path::Path;

use plastic::rng::Rng;
use plastic::{Error, Result};
use rayon::prelude::*;

use crate::dataset::{DatasetKind, ImageDataset, Phase};
use crate::pickle::write_dataset_pickle;

/// The image side (CIFAR-FS's).
const SIZE: usize = 32;

/// The size of a procedural data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProceduralConfig {
    /// Fixes every class prototype and every image.
    pub seed: u64,
    /// Classes of the train phase.
    pub train_classes: usize,
    /// Classes of the val phase.
    pub val_classes: usize,
    /// Classes of the test phase.
    pub test_classes: usize,
    /// Images per class.
    pub images_per_class: usize,
}

impl Default for ProceduralConfig {
    /// CIFAR-FS's class split, 600 images per class, seed 0.
    fn default() -> Self {
        ProceduralConfig {
            seed: 0,
            train_classes: 64,
            val_classes: 16,
            test_classes: 20,
            images_per_class: 600,
        }
    }
}

impl ProceduralConfig {
    /// The category ids of `phase`: consecutive ranges, train first.
    pub fn class_ids(&self, phase: Phase) -> std::ops::Range<usize> {
        let (a, b) = (self.train_classes, self.train_classes + self.val_classes);
        match phase {
            Phase::Train => 0..a,
            Phase::Val => a..b,
            Phase::Test => b..b + self.test_classes,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum PartKind {
    Stroke,
    Ellipse,
    Ring,
    Stripes,
}

/// One part of a class prototype, in the object's frame (units: the object's radius).
#[derive(Debug, Clone, Copy)]
struct Part {
    kind: PartKind,
    center: [f64; 2],
    /// Half-length (stroke), major radius (ellipse), radius (ring, stripes).
    size: f64,
    angle: f64,
    /// Half-width (stroke, ring), minor/major ratio (ellipse), stripe period (stripes).
    shape: f64,
}

/// A class: its three parts.
fn prototype(seed: u64, class: usize) -> [Part; 3] {
    let mut rng = Rng::with_stream(seed ^ 0x5eed_c1a5_5000_0000, class as u64);
    let mut part = || {
        let kind = [
            PartKind::Stroke,
            PartKind::Ellipse,
            PartKind::Ring,
            PartKind::Stripes,
        ][rng.below(4)];
        let center = [rng.uniform_in(-0.55, 0.55), rng.uniform_in(-0.55, 0.55)];
        let angle = rng.uniform_in(0.0, std::f64::consts::PI);
        let (size, shape) = match kind {
            PartKind::Stroke => (rng.uniform_in(0.3, 0.6), rng.uniform_in(0.06, 0.12)),
            PartKind::Ellipse => (rng.uniform_in(0.2, 0.4), rng.uniform_in(0.3, 0.8)),
            PartKind::Ring => (rng.uniform_in(0.2, 0.35), rng.uniform_in(0.05, 0.09)),
            PartKind::Stripes => (rng.uniform_in(0.3, 0.45), rng.uniform_in(0.18, 0.3)),
        };
        Part {
            kind,
            center,
            size,
            angle,
            shape,
        }
    };
    [part(), part(), part()]
}

/// Coverage in [0, 1] of a shape with signed distance `d` (negative inside), with an
/// anti-aliased edge one pixel (`px`) wide.
fn coverage(d: f64, px: f64) -> f64 {
    (0.5 - d / px).clamp(0.0, 1.0)
}

/// The coverage of `part` at point `q` of the object frame.
fn part_coverage(part: &Part, q: [f64; 2], px: f64) -> f64 {
    let (dx, dy) = (q[0] - part.center[0], q[1] - part.center[1]);
    let (s, c) = part.angle.sin_cos();
    // Coordinates along and across the part's orientation.
    let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
    match part.kind {
        PartKind::Stroke => {
            let along = u.clamp(-part.size, part.size);
            let d = ((u - along).powi(2) + v * v).sqrt() - part.shape;
            coverage(d, px)
        }
        PartKind::Ellipse => {
            let (a, b) = (part.size, part.size * part.shape);
            let r = ((u / a).powi(2) + (v / b).powi(2)).sqrt();
            coverage((r - 1.0) * b, px)
        }
        PartKind::Ring => {
            let d = ((dx * dx + dy * dy).sqrt() - part.size).abs() - part.shape;
            coverage(d, px)
        }
        PartKind::Stripes => {
            let disc = coverage((dx * dx + dy * dy).sqrt() - part.size, px);
            // Stripes across the orientation: inside where cos(2π u / period) > 0.
            let phase = std::f64::consts::TAU * u / part.shape;
            let d = -phase.cos() * part.shape / std::f64::consts::TAU;
            disc * coverage(d, px)
        }
    }
}

/// A random colour whose lightness is in `[lo, hi]`.
fn colour(rng: &mut Rng, lo: f64, hi: f64) -> [f64; 3] {
    let c = [rng.uniform(), rng.uniform(), rng.uniform()];
    let luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    let target = rng.uniform_in(lo, hi);
    // Shift toward the target lightness, keeping some of the hue.
    c.map(|v| (0.35 * v + 0.65 * target + 0.35 * (target - luma)).clamp(0.0, 1.0))
}

/// The radius, in the part's own units, of a disc around its centre that holds it.
fn reach(part: &Part) -> f64 {
    match part.kind {
        PartKind::Stroke => part.size + part.shape,
        PartKind::Ellipse | PartKind::Stripes => part.size,
        PartKind::Ring => part.size + part.shape,
    }
}

fn blend(pixel: &mut [f64; 3], c: [f64; 3], alpha: f64) {
    for k in 0..3 {
        pixel[k] += alpha * (c[k] - pixel[k]);
    }
}

/// Renders image `index` of class `class`, `32 × 32 × 3` bytes.
fn render(seed: u64, class: usize, parts: &[Part; 3], index: usize, out: &mut [u8]) {
    let stream = ((class as u64) << 32) | index as u64;
    let mut rng = Rng::with_stream(seed ^ 0x1a6e_5000_0000_0000, stream);
    let dark_background = rng.uniform() < 0.5;
    let (bg_range, fg_range) = if dark_background {
        ((0.0, 0.35), (0.6, 1.0))
    } else {
        ((0.65, 1.0), (0.0, 0.4))
    };
    let bg = colour(&mut rng, bg_range.0, bg_range.1);
    let part_colours = [
        colour(&mut rng, fg_range.0, fg_range.1),
        colour(&mut rng, fg_range.0, fg_range.1),
        colour(&mut rng, fg_range.0, fg_range.1),
    ];
    // The object's pose: pixels per object unit, rotation, centre.
    let scale = 13.0 * rng.uniform_in(0.95, 1.05);
    let rotation = rng.uniform_in(-0.1, 0.1);
    let centre = [
        16.0 + rng.uniform_in(-4.0, 4.0),
        16.0 + rng.uniform_in(-4.0, 4.0),
    ];
    let jittered: Vec<Part> = parts
        .iter()
        .map(|p| Part {
            center: [
                p.center[0] + rng.uniform_in(-0.024, 0.024),
                p.center[1] + rng.uniform_in(-0.024, 0.024),
            ],
            angle: p.angle + rng.uniform_in(-0.045, 0.045),
            size: p.size * rng.uniform_in(0.97, 1.03),
            ..*p
        })
        .collect();
    let (rs, rc) = rotation.sin_cos();
    let px = 1.0 / scale;
    // Pixel-space centre and reach (+ 1 px of edge) of every part, to skip far pixels.
    let bounds: Vec<([f64; 2], f64)> = jittered
        .iter()
        .map(|p| {
            let [u, v] = p.center;
            let c = [
                centre[0] + scale * (rc * u - rs * v),
                centre[1] + scale * (rs * u + rc * v),
            ];
            (c, scale * reach(p) + 1.0)
        })
        .collect();
    let near =
        |c: [f64; 2], r: f64, fx: f64, fy: f64| (fx - c[0]).powi(2) + (fy - c[1]).powi(2) <= r * r;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let mut pixel = bg;
            // Pixel → object frame: undo the shift, rotation and scale.
            let (dx, dy) = ((fx - centre[0]) / scale, (fy - centre[1]) / scale);
            let q = [rc * dx + rs * dy, -rs * dx + rc * dy];
            for ((part, c), &(pc, r)) in jittered.iter().zip(&part_colours).zip(&bounds) {
                if near(pc, r, fx, fy) {
                    blend(&mut pixel, *c, part_coverage(part, q, px));
                }
            }
            for k in 0..3 {
                // Uniform noise of standard deviation 0.03 (half-width 0.03·√3).
                let v = pixel[k] + 0.03 * 3f64.sqrt() * (2.0 * rng.uniform() - 1.0);
                out[(y * SIZE + x) * 3 + k] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// Generates the data set of `phase` in memory.
pub fn generate(config: &ProceduralConfig, phase: Phase) -> Result<ImageDataset> {
    let classes = config.class_ids(phase);
    if classes.is_empty() || config.images_per_class == 0 {
        return Err(Error::Config(format!(
            "a procedural {phase} set needs at least one class and one image per class (got \
             {} classes × {} images)",
            classes.len(),
            config.images_per_class
        )));
    }
    let per_image = SIZE * SIZE * 3;
    let n = classes.len() * config.images_per_class;
    let mut images = vec![0u8; n * per_image];
    let prototypes: Vec<[Part; 3]> = classes.clone().map(|c| prototype(config.seed, c)).collect();
    images
        .par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(i, out)| {
            let (k, index) = (i / config.images_per_class, i % config.images_per_class);
            render(config.seed, classes.start + k, &prototypes[k], index, out);
        });
    let labels: Vec<i64> = classes
        .flat_map(|c| (0..config.images_per_class).map(move |_| c as i64))
        .collect();
    ImageDataset::new(
        DatasetKind::CifarFs,
        format!("procedural {phase} (seed {})", config.seed),
        images,
        labels,
    )
}

/// Writes the three phases as CIFAR-FS files under `data_dir`
/// (`CIFAR_FS/CIFAR_FS_{train,val,test}.pickle`), so that
/// [`ImageDataset::load`]`(DatasetKind::CifarFs, data_dir, phase)` reads them back.
pub fn write_cifar_fs_layout(config: &ProceduralConfig, data_dir: &Path) -> Result<()> {
    let folder = data_dir.join(DatasetKind::CifarFs.folder());
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    for phase in Phase::ALL {
        let set = generate(config, phase)?;
        let path = data_dir.join(DatasetKind::CifarFs.episode_file(phase));
        let bytes = write_dataset_pickle(set.images(), [set.len(), SIZE, SIZE, 3], set.labels());
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
