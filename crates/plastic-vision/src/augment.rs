//! Image preprocessing (`docs/fsc.md` §2): the meta-training augmentation (random crop with
//! zero padding, colour jitter, horizontal flip) and `ToTensor` + `Normalize`.
//!
//! Images come in as `S × S × 3` bytes (channel last) and leave as normalised `3 × S × S`
//! floats (channel first). The augmentation works on `[0, 1]` floats with torchvision's
//! tensor semantics: each colour adjustment clamps to `[0, 1]` and nothing is rounded to
//! 8 bits between them (the reference applies them to PIL images, which rounds to `uint8`
//! after each adjustment: a difference below 1/255 per pixel and step).

use plastic::rng::Rng;

use crate::dataset::DatasetKind;

/// Grayscale weights (ITU-R 601 luma), as torchvision and PIL use: `0.299 R + 0.587 G +
/// 0.114 B`.
pub const GRAY_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];

/// The colour-jitter strength: each factor is uniform in `[1 − 0.4, 1 + 0.4]`
/// (`ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)`).
pub const JITTER: f64 = 0.4;

/// One colour adjustment of `ColorJitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorAdjustment {
    /// `x ← clamp(f·x)`.
    Brightness,
    /// `x ← clamp(f·x + (1 − f)·mean(gray(image)))`.
    Contrast,
    /// `x ← clamp(f·x + (1 − f)·gray(pixel))`.
    Saturation,
}

/// The random choices of one augmented image (drawn by [`AugmentParams::draw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentParams {
    /// Top-left corner of the crop in the padded image, `0..=2·padding` each.
    pub crop_top: usize,
    /// See `crop_top`.
    pub crop_left: usize,
    /// The three adjustments in the order they are applied, with their factors.
    pub jitter: [(ColorAdjustment, f32); 3],
    /// Whether the image is mirrored left–right.
    pub flip: bool,
}

impl AugmentParams {
    /// Draws the choices for one image: crop offsets uniform, factors uniform in
    /// `[0.6, 1.4]`, a uniformly random order of the three adjustments, a fair coin for the
    /// flip (`docs/fsc.md` §2).
    pub fn draw(rng: &mut Rng, padding: usize) -> Self {
        let crop_top = rng.below(2 * padding + 1);
        let crop_left = rng.below(2 * padding + 1);
        let mut factor = || rng.uniform_in(1.0 - JITTER, 1.0 + JITTER) as f32;
        let (b, c, s) = (factor(), factor(), factor());
        let mut jitter = [
            (ColorAdjustment::Brightness, b),
            (ColorAdjustment::Contrast, c),
            (ColorAdjustment::Saturation, s),
        ];
        // Fisher–Yates shuffle of the order.
        for i in (1..3).rev() {
            let j = rng.below(i + 1);
            jitter.swap(i, j);
        }
        let flip = rng.uniform() < 0.5;
        AugmentParams {
            crop_top,
            crop_left,
            jitter,
            flip,
        }
    }

    /// The choices that leave an image unchanged (centre crop, factors 1, no flip).
    pub fn identity(padding: usize) -> Self {
        AugmentParams {
            crop_top: padding,
            crop_left: padding,
            jitter: [
                (ColorAdjustment::Brightness, 1.0),
                (ColorAdjustment::Contrast, 1.0),
                (ColorAdjustment::Saturation, 1.0),
            ],
            flip: false,
        }
    }
}

/// `ToTensor`: `S × S × 3` bytes → `3 × S × S` floats in `[0, 1]`.
pub fn to_tensor(image: &[u8], size: usize, out: &mut [f32]) {
    let plane = size * size;
    debug_assert_eq!(image.len(), 3 * plane);
    debug_assert_eq!(out.len(), 3 * plane);
    for p in 0..plane {
        for c in 0..3 {
            out[c * plane + p] = image[3 * p + c] as f32 / 255.0;
        }
    }
}

/// The random crop: the `3 × S × S` image zero-padded by `padding` on each side, then the
/// `S × S` window at (`top`, `left`) of the padded image.
pub fn crop(image: &[f32], size: usize, padding: usize, top: usize, left: usize) -> Vec<f32> {
    let plane = size * size;
    let mut out = vec![0.0; 3 * plane];
    for c in 0..3 {
        for y in 0..size {
            // Row y of the output is row y + top − padding of the input.
            let Some(sy) = (y + top).checked_sub(padding).filter(|&r| r < size) else {
                continue;
            };
            for x in 0..size {
                if let Some(sx) = (x + left).checked_sub(padding).filter(|&r| r < size) {
                    out[c * plane + y * size + x] = image[c * plane + sy * size + sx];
                }
            }
        }
    }
    out
}

/// One colour adjustment with factor `f`, in place on a `3 × S × S` image in `[0, 1]`.
pub fn adjust(image: &mut [f32], adjustment: ColorAdjustment, f: f32) {
    let plane = image.len() / 3;
    let gray = |img: &[f32], p: usize| {
        GRAY_WEIGHTS[0] * img[p]
            + GRAY_WEIGHTS[1] * img[plane + p]
            + GRAY_WEIGHTS[2] * img[2 * plane + p]
    };
    match adjustment {
        ColorAdjustment::Brightness => {
            for v in image.iter_mut() {
                *v = (f * *v).clamp(0.0, 1.0);
            }
        }
        ColorAdjustment::Contrast => {
            let mean = (0..plane).map(|p| gray(image, p)).sum::<f32>() / plane as f32;
            for v in image.iter_mut() {
                *v = (f * *v + (1.0 - f) * mean).clamp(0.0, 1.0);
            }
        }
        ColorAdjustment::Saturation => {
            for p in 0..plane {
                let g = gray(image, p);
                for c in 0..3 {
                    let v = &mut image[c * plane + p];
                    *v = (f * *v + (1.0 - f) * g).clamp(0.0, 1.0);
                }
            }
        }
    }
}

/// Mirrors a `3 × S × S` image left–right, in place.
pub fn flip_horizontal(image: &mut [f32], size: usize) {
    for row in image.chunks_mut(size) {
        row.reverse();
    }
}

/// The train-time augmentation of one image: crop, colour jitter, flip (`docs/fsc.md` §2);
/// returns `3 × S × S` floats in `[0, 1]`.
pub fn augment(image: &[u8], size: usize, padding: usize, params: &AugmentParams) -> Vec<f32> {
    let mut tensor = vec![0.0; 3 * size * size];
    to_tensor(image, size, &mut tensor);
    let mut out = crop(&tensor, size, padding, params.crop_top, params.crop_left);
    for &(adjustment, f) in &params.jitter {
        adjust(&mut out, adjustment, f);
    }
    if params.flip {
        flip_horizontal(&mut out, size);
    }
    out
}

/// `Normalize`: `(x − mean_c) / std_c` per channel with the data set's constants, in place.
pub fn normalize(image: &mut [f32], kind: DatasetKind) {
    let plane = image.len() / 3;
    let (mean, std) = (kind.mean(), kind.std());
    for c in 0..3 {
        let (m, s) = (mean[c] as f32, std[c] as f32);
        for v in &mut image[c * plane..(c + 1) * plane] {
            *v = (*v - m) / s;
        }
    }
}

/// The whole preprocessing of one image into `out` (`3 × S × S`): with `rng`, the
/// train-time augmentation then normalisation; without, normalisation only (val/test).
pub fn preprocess(image: &[u8], kind: DatasetKind, rng: Option<&mut Rng>, out: &mut [f32]) {
    let size = kind.image_size();
    match rng {
        Some(rng) => {
            let params = AugmentParams::draw(rng, kind.crop_padding());
            out.copy_from_slice(&augment(image, size, kind.crop_padding(), &params));
        }
        None => to_tensor(image, size, out),
    }
    normalize(out, kind);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(size: usize) -> Vec<u8> {
        (0..size * size * 3)
            .map(|i| ((i * 37 + 11) % 256) as u8)
            .collect()
    }

    #[test]
    fn identity_params_leave_the_image_unchanged() {
        let img = test_image(8);
        let mut t = vec![0.0; 3 * 64];
        to_tensor(&img, 8, &mut t);
        let out = augment(&img, 8, 2, &AugmentParams::identity(2));
        assert_eq!(out, t);
    }

    #[test]
    fn crop_shifts_and_pads_with_zeros() {
        let img = test_image(4);
        let mut t = vec![0.0; 48];
        to_tensor(&img, 4, &mut t);
        // top = 0, left = 0 with padding 1: output (y, x) = input (y − 1, x − 1).
        let out = crop(&t, 4, 1, 0, 0);
        assert_eq!(out.len(), 48);
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..4 {
                    let v = out[c * 16 + y * 4 + x];
                    if y == 0 || x == 0 {
                        assert_eq!(v, 0.0);
                    } else {
                        assert_eq!(v, t[c * 16 + (y - 1) * 4 + x - 1]);
                    }
                }
            }
        }
    }
}
