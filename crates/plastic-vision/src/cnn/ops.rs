//! The CNN's building blocks on `(N, C, H, W)` tensors, forward and backward: 3×3
//! convolution (padding 1, stride 1, no bias) as im2col + one GEMM per chunk of images,
//! BatchNorm2d, ReLU and 2×2 max-pooling (docs/fsc.md §5.1).
//!
//! Work is split into chunks of images whose size depends only on the shapes, and every sum
//! over images runs in chunk order, so results do not depend on the thread count.

use plastic::Float;
use rayon::prelude::*;

/// Image positions per chunk that the convolution's GEMMs aim for (bounds the im2col buffer).
const POSITIONS_PER_CHUNK: usize = 8192;

/// Images per chunk for a convolution over `side × side` images.
pub(crate) fn images_per_chunk(side: usize) -> usize {
    (POSITIONS_PER_CHUNK / (side * side).max(1)).max(1)
}

/// `dst (m×n, row-major) [+]= op(a) · op(b)`, with `op(a)` m×k and `op(b)` k×n; a matrix
/// marked transposed is stored as its transpose, row-major.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [F],
    accumulate: bool,
    a: &[F],
    a_transposed: bool,
    b: &[F],
    b_transposed: bool,
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(F::zero());
        }
        return;
    }
    let (a_rs, a_cs) = if a_transposed {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if b_transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the assert above bounds every index the strides reach: a (m×k), b (k×n) and
    // dst (m×n) with the row/column strides given.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            F::one(),
            F::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// im2col of `count` images `(C, S, S)`: `cols[(c·9 + a·3 + b), (n·S + i)·S + j] =
/// x[n, c, i + a − 1, j + b − 1]` (zero outside the image).
fn im2col<F: Float>(x: &[F], count: usize, channels: usize, side: usize, cols: &mut [F]) {
    let plane = side * side;
    let width = count * plane;
    for (row, out) in cols.chunks_mut(width).enumerate().take(channels * 9) {
        let (c, a, b) = (row / 9, (row % 9) / 3, row % 3);
        for img in 0..count {
            let src = &x[(img * channels + c) * plane..][..plane];
            for i in 0..side {
                let o = &mut out[img * plane + i * side..][..side];
                let si = i + a;
                if si < 1 || si > side {
                    o.fill(F::zero());
                    continue;
                }
                let srow = &src[(si - 1) * side..][..side];
                // o[j] = srow[j + b − 1]
                match b {
                    0 => {
                        o[0] = F::zero();
                        o[1..].copy_from_slice(&srow[..side - 1]);
                    }
                    1 => o.copy_from_slice(srow),
                    _ => {
                        o[..side - 1].copy_from_slice(&srow[1..]);
                        o[side - 1] = F::zero();
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`], accumulated into `dx` (`count` images `(C, S, S)`).
fn col2im_add<F: Float>(cols: &[F], count: usize, channels: usize, side: usize, dx: &mut [F]) {
    let plane = side * side;
    let width = count * plane;
    for img in 0..count {
        for c in 0..channels {
            let out = &mut dx[(img * channels + c) * plane..][..plane];
            for ab in 0..9 {
                let (a, b) = (ab / 3, ab % 3);
                let src = &cols[(c * 9 + ab) * width + img * plane..][..plane];
                for i in 0..side {
                    let si = i + a;
                    if si < 1 || si > side {
                        continue;
                    }
                    let orow = &mut out[(si - 1) * side..][..side];
                    let srow = &src[i * side..][..side];
                    match b {
                        0 => {
                            for j in 1..side {
                                orow[j - 1] += srow[j];
                            }
                        }
                        1 => {
                            for j in 0..side {
                                orow[j] += srow[j];
                            }
                        }
                        _ => {
                            for j in 0..side - 1 {
                                orow[j + 1] += srow[j];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Shapes of one 3×3 convolution layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    /// Images N.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Height = width of input and output.
    pub side: usize,
}

/// `y (N, Cout, S, S) = conv3x3(x (N, Cin, S, S), w (Cout, Cin, 3, 3))`, cross-correlation,
/// zero padding 1, no bias.
pub(crate) fn conv3x3_forward<F: Float>(s: ConvShape, x: &[F], w: &[F], y: &mut [F]) {
    let plane = s.side * s.side;
    let per = images_per_chunk(s.side);
    let k = s.cin * 9;
    y.par_chunks_mut(per * s.cout * plane)
        .zip(x.par_chunks(per * s.cin * plane))
        .for_each(|(yc, xc)| {
            let count = xc.len() / (s.cin * plane);
            let mut cols = vec![F::zero(); k * count * plane];
            im2col(xc, count, s.cin, s.side, &mut cols);
            let mut out = vec![F::zero(); s.cout * count * plane];
            matmul(
                s.cout,
                count * plane,
                k,
                &mut out,
                false,
                w,
                false,
                &cols,
                false,
            );
            // (Cout, n, plane) → (n, Cout, plane)
            for o in 0..s.cout {
                for img in 0..count {
                    yc[(img * s.cout + o) * plane..][..plane]
                        .copy_from_slice(&out[(o * count + img) * plane..][..plane]);
                }
            }
        });
}

/// Backward of [`conv3x3_forward`]: `dw += d loss / d w`; `dx = d loss / d x` if asked.
pub(crate) fn conv3x3_backward<F: Float>(
    s: ConvShape,
    x: &[F],
    w: &[F],
    dy: &[F],
    dw: &mut [F],
    dx: Option<&mut [F]>,
) {
    let plane = s.side * s.side;
    let per = images_per_chunk(s.side);
    let k = s.cin * 9;
    let chunks = s.batch.div_ceil(per);
    let mut dx_chunks: Vec<Option<&mut [F]>> = match dx {
        Some(d) => d.chunks_mut(per * s.cin * plane).map(Some).collect(),
        None => (0..chunks).map(|_| None).collect(),
    };
    let partial: Vec<Vec<F>> = dx_chunks
        .par_iter_mut()
        .enumerate()
        .map(|(ci, dxc)| {
            let first = ci * per;
            let count = per.min(s.batch - first);
            let xc = &x[first * s.cin * plane..][..count * s.cin * plane];
            let dyc = &dy[first * s.cout * plane..][..count * s.cout * plane];
            // dy in (Cout, n, plane)
            let mut g = vec![F::zero(); s.cout * count * plane];
            for o in 0..s.cout {
                for img in 0..count {
                    g[(o * count + img) * plane..][..plane]
                        .copy_from_slice(&dyc[(img * s.cout + o) * plane..][..plane]);
                }
            }
            let mut cols = vec![F::zero(); k * count * plane];
            im2col(xc, count, s.cin, s.side, &mut cols);
            let mut dw_part = vec![F::zero(); s.cout * k];
            // dw = g (Cout × P) · colsᵀ (P × K)
            matmul(
                s.cout,
                k,
                count * plane,
                &mut dw_part,
                false,
                &g,
                false,
                &cols,
                true,
            );
            if let Some(dxc) = dxc.as_deref_mut() {
                // dcols = wᵀ (K × Cout) · g (Cout × P)
                matmul(
                    k,
                    count * plane,
                    s.cout,
                    &mut cols,
                    false,
                    w,
                    true,
                    &g,
                    false,
                );
                dxc.fill(F::zero());
                col2im_add(&cols, count, s.cin, s.side, dxc);
            }
            dw_part
        })
        .collect();
    for part in &partial {
        for (d, &p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
}

/// Per-channel batch statistics of `x (N, C, plane)`: mean and biased variance over
/// (N, plane), each a sum in a fixed order.
pub(crate) fn channel_stats<F: Float>(
    x: &[F],
    batch: usize,
    channels: usize,
    plane: usize,
) -> (Vec<F>, Vec<F>) {
    // accumulated in f64 (the variance of a channel can be small next to its mean)
    let count = (batch * plane) as f64;
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let mut sum = 0.0f64;
            for n in 0..batch {
                for &v in &x[(n * channels + c) * plane..][..plane] {
                    sum += v.f64();
                }
            }
            let mean = sum / count;
            let mut sq = 0.0f64;
            for n in 0..batch {
                for &v in &x[(n * channels + c) * plane..][..plane] {
                    let d = v.f64() - mean;
                    sq += d * d;
                }
            }
            (F::of(mean), F::of(sq / count))
        })
        .unzip()
}

/// 2×2 max-pooling with stride 2 of `x (N·C, S, S)` (odd sizes drop the last row and
/// column, as PyTorch's floor mode); `y (N·C, S/2, S/2)`.
pub(crate) fn max_pool2_forward<F: Float>(x: &[F], maps: usize, side: usize, y: &mut [F]) {
    let half = side / 2;
    y.par_chunks_mut(half * half)
        .zip(x.par_chunks(side * side))
        .take(maps)
        .for_each(|(o, m)| {
            for i in 0..half {
                for j in 0..half {
                    o[i * half + j] = window_max(m, side, i, j).0;
                }
            }
        });
}

/// The maximum of the 2×2 window at (i, j) and its index in the map; the first maximum in
/// row-major order wins, as in PyTorch.
#[inline]
fn window_max<F: Float>(m: &[F], side: usize, i: usize, j: usize) -> (F, usize) {
    let mut at = 2 * i * side + 2 * j;
    let mut best = m[at];
    for idx in [at + 1, at + side, at + side + 1] {
        if m[idx] > best {
            best = m[idx];
            at = idx;
        }
    }
    (best, at)
}

/// Backward of [`max_pool2_forward`]: `dx` (zeroed here) receives `dy` at each window's
/// maximum of `x`.
pub(crate) fn max_pool2_backward<F: Float>(
    x: &[F],
    maps: usize,
    side: usize,
    dy: &[F],
    dx: &mut [F],
) {
    let half = side / 2;
    dx.par_chunks_mut(side * side)
        .zip(x.par_chunks(side * side))
        .zip(dy.par_chunks(half * half))
        .take(maps)
        .for_each(|((d, m), g)| {
            d.fill(F::zero());
            for i in 0..half {
                for j in 0..half {
                    let at = window_max(m, side, i, j).1;
                    d[at] += g[i * half + j];
                }
            }
        });
}

/// `y (N, Cout, S, S) = conv1x1(x (N, Cin, S, S), w (Cout, Cin))`, no bias: one GEMM per
/// image.
pub(crate) fn conv1x1_forward<F: Float>(s: ConvShape, x: &[F], w: &[F], y: &mut [F]) {
    let plane = s.side * s.side;
    y.par_chunks_mut(s.cout * plane)
        .zip(x.par_chunks(s.cin * plane))
        .for_each(|(yi, xi)| matmul(s.cout, plane, s.cin, yi, false, w, false, xi, false));
}

/// Backward of [`conv1x1_forward`]: `dw += d loss / d w` (summed over images in chunk
/// order); `dx = d loss / d x` if asked.
pub(crate) fn conv1x1_backward<F: Float>(
    s: ConvShape,
    x: &[F],
    w: &[F],
    dy: &[F],
    dw: &mut [F],
    dx: Option<&mut [F]>,
) {
    let plane = s.side * s.side;
    let per = images_per_chunk(s.side);
    if let Some(dx) = dx {
        dx.par_chunks_mut(s.cin * plane)
            .zip(dy.par_chunks(s.cout * plane))
            .for_each(|(dxi, dyi)| {
                // dx (Cin × P) = wᵀ (Cin × Cout) · dy (Cout × P)
                matmul(s.cin, plane, s.cout, dxi, false, w, true, dyi, false)
            });
    }
    let partial: Vec<Vec<F>> = x
        .par_chunks(per * s.cin * plane)
        .zip(dy.par_chunks(per * s.cout * plane))
        .map(|(xc, dyc)| {
            let mut part = vec![F::zero(); s.cout * s.cin];
            for (xi, dyi) in xc.chunks(s.cin * plane).zip(dyc.chunks(s.cout * plane)) {
                // dw (Cout × Cin) += dy (Cout × P) · xᵀ (P × Cin)
                matmul(s.cout, s.cin, plane, &mut part, true, dyi, false, xi, true);
            }
            part
        })
        .collect();
    for part in &partial {
        for (d, &p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
}
