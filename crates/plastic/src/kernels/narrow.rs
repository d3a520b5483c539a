//! The kernels for matrices narrower than one vector (fewer than 16 columns, such as the
//! output layer's `hidden × outputs`), where the row-wise vector code would spend its time
//! on per-row overhead. Same operations and order as the general code's scalar tails, for
//! every instruction set.

use super::{Sweep, SweepOut};
use crate::float::Float;

/// `x_i += Σ_j (W_ij + P_ij) v_j`.
#[inline]
pub(super) fn mat_vec<F: Float>(w: &[F], p: Option<&[F]>, v: &[F], x: &mut [F]) {
    let cols = v.len();
    assert_eq!(w.len(), x.len() * cols);
    if cols == 0 {
        return;
    }
    match p {
        Some(p) => {
            assert_eq!(p.len(), w.len());
            for ((xi, wr), pr) in x
                .iter_mut()
                .zip(w.chunks_exact(cols))
                .zip(p.chunks_exact(cols))
            {
                let mut t = F::zero();
                for ((&vj, &wj), &pj) in v.iter().zip(wr).zip(pr) {
                    t += vj * (wj + pj);
                }
                *xi += t;
            }
        }
        None => {
            for (xi, wr) in x.iter_mut().zip(w.chunks_exact(cols)) {
                let mut t = F::zero();
                for (&vj, &wj) in v.iter().zip(wr) {
                    t += vj * wj;
                }
                *xi += t;
            }
        }
    }
}

/// `y_j += Σ_i x_i (W_ij + P_ij)`, rows with `x_i = 0` skipped.
#[inline]
pub(super) fn vec_mat<F: Float>(x: &[F], w: &[F], p: Option<&[F]>, y: &mut [F]) {
    let cols = y.len();
    assert_eq!(w.len(), x.len() * cols);
    if cols == 0 {
        return;
    }
    match p {
        Some(p) => {
            assert_eq!(p.len(), w.len());
            for ((&xi, wr), pr) in x.iter().zip(w.chunks_exact(cols)).zip(p.chunks_exact(cols)) {
                if xi == F::zero() {
                    continue;
                }
                for ((yj, &wj), &pj) in y.iter_mut().zip(wr).zip(pr) {
                    *yj += xi * (wj + pj);
                }
            }
        }
        None => {
            for (&xi, wr) in x.iter().zip(w.chunks_exact(cols)) {
                if xi == F::zero() {
                    continue;
                }
                for (yj, &wj) in y.iter_mut().zip(wr) {
                    *yj += xi * wj;
                }
            }
        }
    }
}

/// `dst = keep·src + (η pre_i α) δ`, without clipping.
#[inline]
pub(super) fn plastic_update<F: Float>(
    dst: &mut [F],
    src: &[F],
    alpha: &[F],
    pre: &[F],
    delta: &[F],
    eta: F,
    keep: F,
) {
    let cols = delta.len();
    assert!(dst.len() == pre.len() * cols && src.len() == dst.len() && alpha.len() == dst.len());
    if cols == 0 {
        return;
    }
    let rows = dst
        .chunks_exact_mut(cols)
        .zip(src.chunks_exact(cols))
        .zip(alpha.chunks_exact(cols))
        .zip(pre);
    for (((d, s), a), &pi) in rows {
        let ep = eta * pi;
        for (((dj, &sj), &aj), &ej) in d.iter_mut().zip(s).zip(a).zip(delta) {
            *dj = keep * sj + ep * aj * ej;
        }
    }
}

/// The update's backward sweep without clipping (see `super::update_backward_rows`);
/// returns the adjoints of η and λ.
#[inline]
pub(super) fn update_backward_rows<F: Float, const DA: bool, const K: usize>(
    sw: Sweep<'_, F, K>,
    out: SweepOut<'_, F>,
) -> (F, F) {
    // (indexing is bounds-checked; the caller passes matching lengths)
    let SweepOut {
        s,
        d_alpha,
        d_pre,
        d_delta,
    } = out;
    let (rows, cols) = (sw.pre.len(), sw.delta.len());
    let (mut d_eta, mut lt) = (F::zero(), F::zero());
    for i in 0..rows {
        let pi = sw.pre[i];
        let ep = sw.eta * pi;
        let (pep, pdelta) = match sw.deferred {
            Some(d) => (d.eta * d.pre[i], d.delta),
            None => (F::zero(), sw.delta),
        };
        let r = i * cols..(i + 1) * cols;
        let (sr, pr, ar) = (&mut s[r.clone()], &sw.p[r.clone()], &sw.alpha[r.clone()]);
        let (mut gt, mut ltr) = (F::zero(), F::zero());
        for j in 0..cols {
            let s0 = sr[j];
            let mut q = sw.kappa * s0;
            for m in 0..K {
                q += sw.la[m][i] * sw.lb[m][j];
            }
            let aq = ar[j] * q;
            ltr += pr[j] * q;
            gt += aq * sw.delta[j];
            d_delta[j] += ep * aq;
            if DA {
                d_alpha[i * cols + j] += pep * pdelta[j] * s0 + ep * sw.delta[j] * q;
            }
            sr[j] = q;
        }
        lt += ltr;
        d_pre[i] += sw.eta * gt;
        d_eta += pi * gt;
    }
    (d_eta, -lt)
}
