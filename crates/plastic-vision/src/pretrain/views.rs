//! SimCLR's two-view augmentation (docs/fsc.md §2, §8): each view of an image is drawn on
//! its own by
//! 1. `RandomResizedCrop(S)`: a crop of area fraction `U(0.08, 1)` and aspect ratio
//!    `exp(U(ln 3/4, ln 4/3))` (10 tries, then the centre crop of the clamped ratio), resized
//!    back to `S × S` bilinearly (half-pixel centres, edges clamped: the crop is never larger
//!    than the image, so this only ever enlarges);
//! 2. a horizontal flip with probability ½;
//! 3. with probability 0.8, `ColorJitter(0.8, 0.8, 0.8, 0.2)`: brightness, contrast and
//!    saturation factors uniform in `[0.2, 1.8]`, a hue shift uniform in `[−0.2, 0.2]`, the
//!    four applied in a uniformly random order;
//! 4. with probability 0.2, grey-scale (ITU-R 601 luma in all three channels);
//! 5. always, a Gaussian blur with `2⌊⌊0.1 S⌋/2⌋ + 1` taps (3 for S = 32, 9 for S = 84),
//!    `σ ~ U(0.1, 2)`, reflection padding, separable and normalised;
//!
//! then the data set's normalisation. Like [`crate::augment`], it works on `[0, 1]` floats
//! with torchvision's tensor semantics (each colour step clamps to `[0, 1]`, nothing is
//! rounded to 8 bits in between), and reuses that module's colour adjustments, flip,
//! `ToTensor` and normalisation.

use plastic::rng::Rng;

use crate::augment::{self, ColorAdjustment, GRAY_WEIGHTS};
use crate::dataset::DatasetKind;

/// `ColorJitter`'s brightness, contrast and saturation strength for SimCLR.
pub const JITTER: f64 = 0.8;
/// `ColorJitter`'s hue strength for SimCLR.
pub const HUE: f64 = 0.2;
/// Probability of applying the colour jitter.
pub const JITTER_P: f64 = 0.8;
/// Probability of grey-scale.
pub const GRAY_P: f64 = 0.2;

/// One colour step of SimCLR's jitter: [`augment`]'s three, or a hue shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColorStep {
    /// Brightness, contrast or saturation with its factor.
    Adjust(ColorAdjustment, f32),
    /// Hue rotation by this fraction of a turn.
    Hue(f32),
}

/// The random choices of one view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewParams {
    /// Crop rows `top..top + height`.
    pub top: usize,
    /// Crop columns `left..left + width`.
    pub left: usize,
    /// Crop height.
    pub height: usize,
    /// Crop width.
    pub width: usize,
    /// Mirror left–right.
    pub flip: bool,
    /// The colour steps in order (empty when the jitter is not applied).
    pub jitter: Vec<ColorStep>,
    /// Convert to grey-scale.
    pub gray: bool,
    /// The blur's σ.
    pub sigma: f32,
}

/// Odd number of taps of the blur for image side `size`: `2⌊⌊0.1·size⌋/2⌋ + 1`.
pub fn blur_taps(size: usize) -> usize {
    2 * ((size / 10) / 2) + 1
}

impl ViewParams {
    /// Draws one view's choices for a `size × size` image (docs/fsc.md §2).
    pub fn draw(rng: &mut Rng, size: usize) -> Self {
        let (top, left, height, width) = resized_crop_box(rng, size);
        let flip = rng.uniform() < 0.5;
        let mut jitter = Vec::new();
        if rng.uniform() < JITTER_P {
            let mut f = || rng.uniform_in(1.0 - JITTER, 1.0 + JITTER) as f32;
            let (b, c, s) = (f(), f(), f());
            let h = rng.uniform_in(-HUE, HUE) as f32;
            jitter = vec![
                ColorStep::Adjust(ColorAdjustment::Brightness, b),
                ColorStep::Adjust(ColorAdjustment::Contrast, c),
                ColorStep::Adjust(ColorAdjustment::Saturation, s),
                ColorStep::Hue(h),
            ];
            for i in (1..4).rev() {
                let j = rng.below(i + 1);
                jitter.swap(i, j);
            }
        }
        let gray = rng.uniform() < GRAY_P;
        let sigma = rng.uniform_in(0.1, 2.0) as f32;
        ViewParams {
            top,
            left,
            height,
            width,
            flip,
            jitter,
            gray,
            sigma,
        }
    }
}

/// `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3).
fn resized_crop_box(rng: &mut Rng, size: usize) -> (usize, usize, usize, usize) {
    let area = (size * size) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.uniform_in(0.08, 1.0);
        let ratio = rng.uniform_in(lo, hi).exp();
        let w = (target * ratio).sqrt().round() as usize;
        let h = (target / ratio).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= size && h <= size {
            let top = rng.below(size - h + 1);
            let left = rng.below(size - w + 1);
            return (top, left, h, w);
        }
    }
    // a square image's ratio 1 is inside (3/4, 4/3): the whole image
    (0, 0, size, size)
}

/// The crop `(top, left, height, width)` of a `3 × S × S` image, resized to `S × S`
/// bilinearly (half-pixel centres, coordinates clamped to the crop).
pub fn resized_crop(
    image: &[f32],
    size: usize,
    (top, left, height, width): (usize, usize, usize, usize),
) -> Vec<f32> {
    let plane = size * size;
    let coord = |o: usize, extent: usize| -> (usize, usize, f32) {
        let c =
            ((o as f64 + 0.5) * extent as f64 / size as f64 - 0.5).clamp(0.0, (extent - 1) as f64);
        let c0 = c.floor() as usize;
        let c1 = (c0 + 1).min(extent - 1);
        (c0, c1, (c - c0 as f64) as f32)
    };
    let ys: Vec<_> = (0..size).map(|y| coord(y, height)).collect();
    let xs: Vec<_> = (0..size).map(|x| coord(x, width)).collect();
    let mut out = vec![0.0; 3 * plane];
    for c in 0..3 {
        let src = &image[c * plane..(c + 1) * plane];
        let at = |y: usize, x: usize| src[(top + y) * size + left + x];
        for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
            for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
                let a = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let b = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out[c * plane + y * size + x] = a * (1.0 - fy) + b * fy;
            }
        }
    }
    out
}

/// Rotates the hue of a `3 × S × S` image in `[0, 1]` by `shift` turns, through HSV as
/// torchvision's `adjust_hue` on tensors.
pub fn adjust_hue(image: &mut [f32], shift: f32) {
    let plane = image.len() / 3;
    for p in 0..plane {
        let (r, g, b) = (image[p], image[plane + p], image[2 * plane + p]);
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let cr = maxc - minc;
        let eq = maxc == minc;
        let s = cr / if eq { 1.0 } else { maxc };
        let div = if eq { 1.0 } else { cr };
        let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
        let h = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let h = (h / 6.0 + 1.0).rem_euclid(1.0);
        let h = (h + shift).rem_euclid(1.0);
        let v = maxc;
        let i6 = (h * 6.0).floor();
        let f = h * 6.0 - i6;
        let i = (i6 as i32).rem_euclid(6);
        let pp = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        let (r2, g2, b2) = match i {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        image[p] = r2;
        image[plane + p] = g2;
        image[2 * plane + p] = b2;
    }
}

/// Replaces every channel of a `3 × S × S` image by its luma.
pub fn grayscale(image: &mut [f32]) {
    let plane = image.len() / 3;
    for p in 0..plane {
        let l = GRAY_WEIGHTS[0] * image[p]
            + GRAY_WEIGHTS[1] * image[plane + p]
            + GRAY_WEIGHTS[2] * image[2 * plane + p];
        for c in 0..3 {
            image[c * plane + p] = l;
        }
    }
}

/// Separable Gaussian blur of a `3 × S × S` image with `taps` (odd) taps and `sigma`,
/// reflection padding (the edge pixel is not repeated), normalised weights.
pub fn gaussian_blur(image: &mut [f32], size: usize, taps: usize, sigma: f32) {
    let r = (taps / 2) as isize;
    let mut w: Vec<f32> = (-r..=r)
        .map(|x| (-((x * x) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = w.iter().sum();
    for v in &mut w {
        *v /= sum;
    }
    let reflect = |i: isize| -> usize {
        let n = size as isize;
        let mut i = i;
        // reflection without repeating the edge; taps ≤ S keeps one fold enough
        if i < 0 {
            i = -i;
        }
        if i >= n {
            i = 2 * (n - 1) - i;
        }
        i.clamp(0, n - 1) as usize
    };
    let plane = size * size;
    let mut tmp = vec![0.0f32; plane];
    for c in 0..3 {
        let ch = &mut image[c * plane..(c + 1) * plane];
        // rows
        for y in 0..size {
            for x in 0..size {
                let mut acc = 0.0;
                for (k, &wk) in w.iter().enumerate() {
                    acc += wk * ch[y * size + reflect(x as isize + k as isize - r)];
                }
                tmp[y * size + x] = acc;
            }
        }
        // columns
        for y in 0..size {
            for x in 0..size {
                let mut acc = 0.0;
                for (k, &wk) in w.iter().enumerate() {
                    acc += wk * tmp[reflect(y as isize + k as isize - r) * size + x];
                }
                ch[y * size + x] = acc;
            }
        }
    }
}

/// One view of an `S × S × 3` byte image with the choices `params`, normalised: `3 × S × S`.
pub fn render_view(image: &[u8], kind: DatasetKind, params: &ViewParams) -> Vec<f32> {
    let size = kind.image_size();
    let mut tensor = vec![0.0; 3 * size * size];
    augment::to_tensor(image, size, &mut tensor);
    let mut out = resized_crop(
        &tensor,
        size,
        (params.top, params.left, params.height, params.width),
    );
    if params.flip {
        augment::flip_horizontal(&mut out, size);
    }
    for step in &params.jitter {
        match *step {
            ColorStep::Adjust(a, f) => augment::adjust(&mut out, a, f),
            ColorStep::Hue(h) => adjust_hue(&mut out, h),
        }
    }
    if params.gray {
        grayscale(&mut out);
    }
    gaussian_blur(&mut out, size, blur_taps(size), params.sigma);
    augment::normalize(&mut out, kind);
    out
}

/// The two views of one image, each drawn from `rng` in turn.
pub fn two_views(image: &[u8], kind: DatasetKind, rng: &mut Rng) -> [Vec<f32>; 2] {
    let size = kind.image_size();
    let a = ViewParams::draw(rng, size);
    let b = ViewParams::draw(rng, size);
    [render_view(image, kind, &a), render_view(image, kind, &b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_taps_match_the_reference() {
        assert_eq!(blur_taps(32), 3);
        assert_eq!(blur_taps(84), 9);
    }

    #[test]
    fn whole_image_crop_is_the_identity_and_hue_zero_changes_nothing() {
        let img: Vec<f32> = (0..3 * 16).map(|i| (i % 7) as f32 / 7.0).collect();
        let out = resized_crop(&img, 4, (0, 0, 4, 4));
        for (a, b) in out.iter().zip(&img) {
            assert!((a - b).abs() < 1e-6);
        }
        let mut h = img.clone();
        adjust_hue(&mut h, 0.0);
        for (a, b) in h.iter().zip(&img) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        // a full turn of hue is the identity too, and a third of a turn maps red to green
        let mut red = vec![1.0, 0.0, 0.0];
        adjust_hue(&mut red, 1.0 / 3.0);
        assert!((red[0]).abs() < 1e-6 && (red[1] - 1.0).abs() < 1e-6 && red[2].abs() < 1e-6);
    }

    #[test]
    fn blur_keeps_a_constant_image_and_its_mean() {
        let mut img = vec![0.25f32; 3 * 64];
        gaussian_blur(&mut img, 8, 3, 1.3);
        assert!(img.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }
}
