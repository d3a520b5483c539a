//! AVX-512 `f32` versions of the two kernels with per-row horizontal sums (`mat_vec` and the
//! update's backward sweep), which the compiler vectorises poorly from the portable code.
//!
//! Each performs exactly the IEEE operations of the portable version, in the same order
//! (sixteen lane-wise partial sums, then the halving tree of [`super::reduce`]), with
//! separate multiplies and adds (no fused multiply-add), so the results are bit-identical.

use std::arch::x86_64::*;

use super::{Sweep, SweepOut, LANES};

/// [`super::reduce`] of one register: lanes `l + 8`, then `l + 4`, then `(0 + 2) + (1 + 3)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce(a: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
    let h = _mm256_add_ps(_mm512_castps512_ps256(a), hi);
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let r = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_shuffle_ps::<0b01>(r, r)))
}

/// Loads sixteen lanes from `s[j..j + 16]`.
///
/// # Safety
/// `j + 16 <= s.len()`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(s: &[f32], j: usize) -> __m512 {
    debug_assert!(j + LANES <= s.len());
    // SAFETY: in bounds by the caller's contract; unaligned loads are allowed.
    unsafe { _mm512_loadu_ps(s.as_ptr().add(j)) }
}

/// Stores sixteen lanes to `s[j..j + 16]`.
///
/// # Safety
/// `j + 16 <= s.len()`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store(s: &mut [f32], j: usize, v: __m512) {
    debug_assert!(j + LANES <= s.len());
    // SAFETY: in bounds by the caller's contract.
    unsafe { _mm512_storeu_ps(s.as_mut_ptr().add(j), v) }
}

/// `x_i += Σ_j (W_ij + P_ij) v_j`, four rows at a time; see [`super::mat_vec`].
#[target_feature(enable = "avx512f")]
pub(super) fn mat_vec(w: &[f32], p: Option<&[f32]>, v: &[f32], x: &mut [f32]) {
    let (rows, cols) = (x.len(), v.len());
    assert_eq!(w.len(), rows * cols);
    if let Some(p) = p {
        assert_eq!(p.len(), w.len());
    }
    let n = cols / LANES * LANES;
    const R: usize = 4;
    let row = |i: usize, acc: __m512| -> f32 {
        let o = i * cols;
        let mut tail = 0.0f32;
        for j in n..cols {
            tail += v[j]
                * match p {
                    Some(p) => w[o + j] + p[o + j],
                    None => w[o + j],
                };
        }
        if n == 0 {
            tail
        } else {
            reduce(acc) + tail
        }
    };
    let mut i = 0;
    while i + R <= rows {
        let mut acc = [_mm512_setzero_ps(); R];
        for j in (0..n).step_by(LANES) {
            // SAFETY: j + 16 <= n <= cols, and every row offset plus cols is within w, p.
            unsafe {
                let vv = load(v, j);
                for (r, a) in acc.iter_mut().enumerate() {
                    let o = (i + r) * cols + j;
                    let m = match p {
                        Some(p) => _mm512_add_ps(load(w, o), load(p, o)),
                        None => load(w, o),
                    };
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(vv, m));
                }
            }
        }
        for (r, &a) in acc.iter().enumerate() {
            x[i + r] += row(i + r, a);
        }
        i += R;
    }
    while i < rows {
        let mut acc = _mm512_setzero_ps();
        for j in (0..n).step_by(LANES) {
            // SAFETY: as above.
            unsafe {
                let o = i * cols + j;
                let m = match p {
                    Some(p) => _mm512_add_ps(load(w, o), load(p, o)),
                    None => load(w, o),
                };
                acc = _mm512_add_ps(acc, _mm512_mul_ps(load(v, j), m));
            }
        }
        x[i] += row(i, acc);
        i += 1;
    }
}

/// The rows of the update's backward sweep without clipping; see
/// [`super::update_backward_rows`], whose operations and order this repeats.
#[target_feature(enable = "avx512f")]
pub(super) fn update_backward_rows<const DA: bool, const K: usize>(
    sw: Sweep<'_, f32, K>,
    out: SweepOut<'_, f32>,
) -> (f32, f32) {
    let Sweep {
        p,
        alpha,
        kappa,
        la,
        lb,
        deferred,
        pre,
        delta,
        eta,
    } = sw;
    let SweepOut {
        s,
        d_alpha,
        d_pre,
        d_delta,
    } = out;
    let (rows, cols) = (pre.len(), delta.len());
    assert!(s.len() == rows * cols && p.len() == s.len() && alpha.len() == s.len());
    assert!(d_pre.len() == rows && d_delta.len() == cols);
    assert!(!DA || d_alpha.len() == s.len());
    for m in 0..K {
        assert!(la[m].len() == rows && lb[m].len() == cols);
    }
    if let Some(d) = deferred {
        assert!(d.pre.len() == rows && d.delta.len() == cols);
    }
    let n = cols / LANES * LANES;
    let vk = _mm512_set1_ps(kappa);
    let mut lacc = _mm512_setzero_ps();
    let mut lt = 0.0f32;
    let (mut d_eta, zero) = (0.0f32, _mm512_setzero_ps());
    for (i, &pi) in pre.iter().enumerate() {
        let ep = eta * pi;
        let vep = _mm512_set1_ps(ep);
        let (pep, pdelta) = match deferred {
            Some(d) => (d.eta * d.pre[i], d.delta),
            None => (0.0, delta),
        };
        let vpep = _mm512_set1_ps(pep);
        let vla: [__m512; K] = std::array::from_fn(|m| _mm512_set1_ps(la[m][i]));
        let mut gacc = zero;
        let o = i * cols;
        for j in (0..n).step_by(LANES) {
            // SAFETY: j + 16 <= n <= cols; o + cols <= s.len() = p.len() = alpha.len()
            // (= d_alpha.len() with DA); the vectors have length cols.
            unsafe {
                let s0 = load(s, o + j);
                let mut q = _mm512_mul_ps(vk, s0);
                for m in 0..K {
                    q = _mm512_add_ps(q, _mm512_mul_ps(vla[m], load(lb[m], j)));
                }
                let e = load(delta, j);
                let aq = _mm512_mul_ps(load(alpha, o + j), q);
                lacc = _mm512_add_ps(lacc, _mm512_mul_ps(load(p, o + j), q));
                gacc = _mm512_add_ps(gacc, _mm512_mul_ps(aq, e));
                let dd = _mm512_add_ps(load(d_delta, j), _mm512_mul_ps(vep, aq));
                store(d_delta, j, dd);
                if DA {
                    let t1 = _mm512_mul_ps(_mm512_mul_ps(vpep, load(pdelta, j)), s0);
                    let t2 = _mm512_mul_ps(_mm512_mul_ps(vep, e), q);
                    let da = _mm512_add_ps(load(d_alpha, o + j), _mm512_add_ps(t1, t2));
                    store(d_alpha, o + j, da);
                }
                store(s, o + j, q);
            }
        }
        let (mut gt, mut ltr) = (0.0f32, 0.0f32);
        for j in n..cols {
            let k = o + j;
            let s0 = s[k];
            let mut q = kappa * s0;
            for m in 0..K {
                q += la[m][i] * lb[m][j];
            }
            let aq = alpha[k] * q;
            ltr += p[k] * q;
            gt += aq * delta[j];
            d_delta[j] += ep * aq;
            if DA {
                d_alpha[k] += pep * pdelta[j] * s0 + ep * delta[j] * q;
            }
            s[k] = q;
        }
        lt += ltr;
        let g = if n == 0 { gt } else { reduce(gacc) + gt };
        d_pre[i] += eta * g;
        d_eta += pi * g;
    }
    let l = if n == 0 { lt } else { reduce(lacc) + lt };
    (d_eta, -l)
}

/// `y_j += x_i (W_ij + P_ij)` over all rows `i` in order, for the `NC` sixteen-lane column
/// chunks starting at column `j0`, the partial sums held in registers.
#[inline]
#[target_feature(enable = "avx512f")]
fn vec_mat_block<const NC: usize>(
    x: &[f32],
    w: &[f32],
    p: Option<&[f32]>,
    y: &mut [f32],
    j0: usize,
) {
    let cols = y.len();
    assert!(j0 + NC * LANES <= cols && w.len() == x.len() * cols);
    // SAFETY (all loads and stores below): j0 + NC·16 <= cols, so every row's block lies
    // within that row of w (and p, of w's length), and within y.
    let mut acc: [__m512; NC] = std::array::from_fn(|c| unsafe { load(y, j0 + c * LANES) });
    for (i, &xi) in x.iter().enumerate() {
        if xi == 0.0 {
            continue;
        }
        let vx = _mm512_set1_ps(xi);
        let o = i * cols + j0;
        for (c, a) in acc.iter_mut().enumerate() {
            let m = unsafe {
                match p {
                    Some(p) => _mm512_add_ps(load(w, o + c * LANES), load(p, o + c * LANES)),
                    None => load(w, o + c * LANES),
                }
            };
            *a = _mm512_add_ps(*a, _mm512_mul_ps(vx, m));
        }
    }
    for (c, &a) in acc.iter().enumerate() {
        unsafe { store(y, j0 + c * LANES, a) };
    }
}

/// `y_j += Σ_i x_i (W_ij + P_ij)`, column blocks of up to 128 held in registers; see
/// [`super::vec_mat`].
#[target_feature(enable = "avx512f")]
pub(super) fn vec_mat(x: &[f32], w: &[f32], p: Option<&[f32]>, y: &mut [f32]) {
    let cols = y.len();
    assert_eq!(w.len(), x.len() * cols);
    if let Some(p) = p {
        assert_eq!(p.len(), w.len());
    }
    let chunks = cols / LANES;
    let mut c = 0;
    while c < chunks {
        let (j0, step) = (c * LANES, block_width(chunks - c));
        match step {
            8 => vec_mat_block::<8>(x, w, p, y, j0),
            4 => vec_mat_block::<4>(x, w, p, y, j0),
            2 => vec_mat_block::<2>(x, w, p, y, j0),
            _ => vec_mat_block::<1>(x, w, p, y, j0),
        }
        c += step;
    }
    let j0 = chunks * LANES;
    if j0 < cols {
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let o = i * cols;
            for j in j0..cols {
                y[j] += xi
                    * match p {
                        Some(p) => w[o + j] + p[o + j],
                        None => w[o + j],
                    };
            }
        }
    }
}

/// [`vec_mat_block`] on the output of the plastic update (without clipping) of the same
/// rows: `dst = keep·src + (η pre_i α) δ`, then `y += x_i (W + dst)`, row by row.
#[inline]
#[target_feature(enable = "avx512f")]
fn update_vec_mat_block<const NC: usize>(
    dst: &mut [f32],
    u: &Update<'_>,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    j0: usize,
) {
    let Update {
        src,
        alpha,
        pre,
        delta,
        eta,
        keep,
    } = *u;
    let cols = y.len();
    assert!(j0 + NC * LANES <= cols && delta.len() == cols);
    assert!(pre.len() == x.len() && w.len() == x.len() * cols);
    assert!(dst.len() == w.len() && src.len() == w.len() && alpha.len() == w.len());
    // SAFETY (all loads and stores below): j0 + NC·16 <= cols, so every row's block lies
    // within that row of dst, src, alpha and w, and within y and delta.
    let mut acc: [__m512; NC] = std::array::from_fn(|c| unsafe { load(y, j0 + c * LANES) });
    let vkeep = _mm512_set1_ps(keep);
    for (i, (&xi, &pi)) in x.iter().zip(pre).enumerate() {
        let vep = _mm512_set1_ps(eta * pi);
        let vx = _mm512_set1_ps(xi);
        let o = i * cols + j0;
        for (c, a) in acc.iter_mut().enumerate() {
            let k = o + c * LANES;
            unsafe {
                let d = _mm512_add_ps(
                    _mm512_mul_ps(vkeep, load(src, k)),
                    _mm512_mul_ps(
                        _mm512_mul_ps(vep, load(alpha, k)),
                        load(delta, j0 + c * LANES),
                    ),
                );
                store(dst, k, d);
                if xi != 0.0 {
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(vx, _mm512_add_ps(load(w, k), d)));
                }
            }
        }
    }
    for (c, &a) in acc.iter().enumerate() {
        unsafe { store(y, j0 + c * LANES, a) };
    }
}

/// The plastic update without clipping, `dst = keep·src + (η pre_i α) δ`, row by row: the
/// same operations in the same order as the portable loop of [`super::plastic_update`]
/// (and as [`update_vec_mat`]'s update), so the same bits. `δ`'s length (the columns) must
/// be a multiple of 16.
#[target_feature(enable = "avx512f")]
pub(super) fn update(dst: &mut [f32], u: Update<'_>) {
    let Update {
        src,
        alpha,
        pre,
        delta,
        eta,
        keep,
    } = u;
    let cols = delta.len();
    assert!(cols.is_multiple_of(LANES));
    assert!(dst.len() == pre.len() * cols && src.len() == dst.len() && alpha.len() == dst.len());
    let vkeep = _mm512_set1_ps(keep);
    for (i, &pi) in pre.iter().enumerate() {
        let vep = _mm512_set1_ps(eta * pi);
        let o = i * cols;
        for j in (0..cols).step_by(LANES) {
            // SAFETY: j + 16 <= cols, so o + j + 16 <= dst.len() = src.len() = alpha.len(),
            // and j + 16 <= delta.len().
            unsafe {
                let k = o + j;
                let d = _mm512_add_ps(
                    _mm512_mul_ps(vkeep, load(src, k)),
                    _mm512_mul_ps(_mm512_mul_ps(vep, load(alpha, k)), load(delta, j)),
                );
                store(dst, k, d);
            }
        }
    }
}

/// The inputs of a plastic update without clipping: `dst = keep·src + (η pre_i α) δ`.
#[derive(Clone, Copy)]
pub(super) struct Update<'a> {
    pub src: &'a [f32],
    pub alpha: &'a [f32],
    pub pre: &'a [f32],
    pub delta: &'a [f32],
    pub eta: f32,
    pub keep: f32,
}

/// The column-block width, in sixteen-lane chunks, for `remaining` chunks: 8, 4, 2 or 1
/// (at most eight accumulators held in registers).
fn block_width(remaining: usize) -> usize {
    match remaining {
        n if n >= 8 => 8,
        n if n >= 4 => 4,
        n if n >= 2 => 2,
        _ => 1,
    }
}

/// The plastic update (no clipping, `Δ = pre ⊗ δ`) fused with `y += x·(W + dst)`; see
/// [`super::plastic_update_vec_mat`]. `cols` must be a multiple of 16.
#[target_feature(enable = "avx512f")]
pub(super) fn update_vec_mat(dst: &mut [f32], u: Update<'_>, x: &[f32], w: &[f32], y: &mut [f32]) {
    let chunks = y.len() / LANES;
    assert_eq!(chunks * LANES, y.len());
    let mut c = 0;
    while c < chunks {
        let (j0, step) = (c * LANES, block_width(chunks - c));
        let (d, yy) = (&mut *dst, &mut *y);
        match step {
            8 => update_vec_mat_block::<8>(d, &u, x, w, yy, j0),
            4 => update_vec_mat_block::<4>(d, &u, x, w, yy, j0),
            2 => update_vec_mat_block::<2>(d, &u, x, w, yy, j0),
            _ => update_vec_mat_block::<1>(d, &u, x, w, yy, j0),
        }
        c += step;
    }
}
