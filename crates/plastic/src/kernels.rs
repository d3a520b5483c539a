//! The hot loops: per-episode mat-vecs with `W + P`, the plastic update, and the two
//! backward sweeps over the plastic matrices. Each is a plain function over slices, written
//! with independent accumulators so that it vectorises without `-C target-cpu=native`, and
//! with a fixed summation order so that results do not depend on the machine or on threads.
//!
//! Matrices are row-major `(rows, cols)`: element `(i, j)` is at `i·cols + j`.

use crate::float::Float;

const LANES: usize = 8;

/// `Σ_k a_k b_k`, summed in a fixed order (eight interleaved partial sums).
#[inline]
pub fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [F::zero(); LANES];
    let n = a.len() / LANES * LANES;
    for (ca, cb) in a[..n].chunks_exact(LANES).zip(b[..n].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut tail = F::zero();
    for k in n..a.len() {
        tail += a[k] * b[k];
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s + tail
}

/// `Σ_k a_k (b_k + c_k)`, summed in a fixed order.
#[inline]
pub fn dot_sum<F: Float>(a: &[F], b: &[F], c: &[F]) -> F {
    debug_assert!(a.len() == b.len() && a.len() == c.len());
    let mut acc = [F::zero(); LANES];
    let n = a.len() / LANES * LANES;
    for k0 in (0..n).step_by(LANES) {
        for l in 0..LANES {
            acc[l] += a[k0 + l] * (b[k0 + l] + c[k0 + l]);
        }
    }
    let mut tail = F::zero();
    for k in n..a.len() {
        tail += a[k] * (b[k] + c[k]);
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s + tail
}

/// `‖a‖²`.
#[inline]
pub fn sq_norm<F: Float>(a: &[F]) -> F {
    dot(a, a)
}

/// `y_j += Σ_i x_i (W_ij + P_ij)` (a row vector times `W + P`); `P` may be absent.
/// Rows with `x_i = 0` are skipped (exact: they add nothing).
pub fn vec_mat<F: Float>(x: &[F], w: &[F], p: Option<&[F]>, y: &mut [F]) {
    let cols = y.len();
    debug_assert_eq!(w.len(), x.len() * cols);
    match p {
        Some(p) => {
            for (i, &xi) in x.iter().enumerate() {
                if xi == F::zero() {
                    continue;
                }
                let wr = &w[i * cols..(i + 1) * cols];
                let pr = &p[i * cols..(i + 1) * cols];
                for j in 0..cols {
                    y[j] += xi * (wr[j] + pr[j]);
                }
            }
        }
        None => {
            for (i, &xi) in x.iter().enumerate() {
                if xi == F::zero() {
                    continue;
                }
                let wr = &w[i * cols..(i + 1) * cols];
                for j in 0..cols {
                    y[j] += xi * wr[j];
                }
            }
        }
    }
}

/// `x_i += Σ_j (W_ij + P_ij) v_j` (`W + P` times a column vector); `P` may be absent.
pub fn mat_vec<F: Float>(w: &[F], p: Option<&[F]>, v: &[F], x: &mut [F]) {
    let cols = v.len();
    debug_assert_eq!(w.len(), x.len() * cols);
    match p {
        Some(p) => {
            for (i, xi) in x.iter_mut().enumerate() {
                *xi += dot_sum(
                    v,
                    &w[i * cols..(i + 1) * cols],
                    &p[i * cols..(i + 1) * cols],
                );
            }
        }
        None => {
            for (i, xi) in x.iter_mut().enumerate() {
                *xi += dot(v, &w[i * cols..(i + 1) * cols]);
            }
        }
    }
}

/// `M_ij += a_i b_j` (a rank-1 update).
pub fn add_outer<F: Float>(m: &mut [F], a: &[F], b: &[F]) {
    let cols = b.len();
    debug_assert_eq!(m.len(), a.len() * cols);
    for (i, &ai) in a.iter().enumerate() {
        if ai == F::zero() {
            continue;
        }
        let row = &mut m[i * cols..(i + 1) * cols];
        for j in 0..cols {
            row[j] += ai * b[j];
        }
    }
}

/// The plastic update of one tensor (ALGORITHM.md §2.4–2.5), out of place:
/// `dst = clamp((1 − λ)·src + η·α ⊙ (pre ⊗ δ))`. For a bias pass `pre = [1]`; `δ = None`
/// means `Δ = 0` (a Hebbian bias), leaving only the decay.
#[allow(clippy::too_many_arguments)]
pub fn plastic_update<F: Float>(
    dst: &mut [F],
    src: &[F],
    alpha: &[F],
    pre: &[F],
    delta: Option<&[F]>,
    eta: F,
    lambda: F,
    clip: Option<F>,
) {
    let keep = F::one() - lambda;
    let cols = dst.len() / pre.len();
    for (i, &pi) in pre.iter().enumerate() {
        let r = i * cols..(i + 1) * cols;
        let (d, s, a) = (&mut dst[r.clone()], &src[r.clone()], &alpha[r]);
        match delta {
            Some(delta) => {
                let ep = eta * pi;
                for j in 0..cols {
                    d[j] = keep * s[j] + ep * a[j] * delta[j];
                }
            }
            None => {
                for j in 0..cols {
                    d[j] = keep * s[j];
                }
            }
        }
        if let Some(c) = clip {
            for v in d.iter_mut() {
                *v = v.max(-c).min(c);
            }
        }
    }
}

/// What the backward sweep through one tensor's update returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateAdjoint<F> {
    /// `Σ α ⊙ Δ ⊙ dQ`: the adjoint of η (before multiplying by anything).
    pub d_eta: F,
    /// `−Σ P ⊙ dQ`: the adjoint of λ.
    pub d_lambda: F,
}

/// Backward sweep through `Q = clamp((1 − λ)P + η α ⊙ (pre ⊗ δ))` for one tensor.
///
/// On entry `dp` holds `dL/dQ`; on exit it holds the part of `dL/dP` that flows through the
/// decay, `(1 − λ)·mask ⊙ dQ`. Accumulates `dα += η (pre ⊗ δ) ⊙ dQ'` (with `dQ' = mask ⊙ dQ`),
/// `d_pre_i += η Σ_j α_ij dQ'_ij δ_j` and `d_delta_j += η Σ_i α_ij dQ'_ij pre_i`, and returns
/// the adjoints of η and λ. `delta = None` means `Δ = 0`.
#[allow(clippy::too_many_arguments)]
pub fn plastic_update_backward<F: Float>(
    dp: &mut [F],
    p: &[F],
    alpha: &[F],
    mut d_alpha: Option<&mut [F]>,
    pre: &[F],
    delta: Option<&[F]>,
    d_pre: &mut [F],
    d_delta: &mut [F],
    eta: F,
    lambda: F,
    clip: Option<F>,
) -> UpdateAdjoint<F> {
    let keep = F::one() - lambda;
    let cols = dp.len() / pre.len();
    let mut d_eta = F::zero();
    let mut d_lambda = F::zero();
    for (i, &pi) in pre.iter().enumerate() {
        let r = i * cols..(i + 1) * cols;
        let (dq, pr, a) = (&mut dp[r.clone()], &p[r.clone()], &alpha[r.clone()]);
        if let Some(c) = clip {
            // torch.clamp passes the gradient where min <= x <= max.
            for j in 0..cols {
                let v = match delta {
                    Some(delta) => keep * pr[j] + eta * pi * a[j] * delta[j],
                    None => keep * pr[j],
                };
                if !(v >= -c && v <= c) {
                    dq[j] = F::zero();
                }
            }
        }
        let mut dl = [F::zero(); LANES];
        for (j0, chunk) in dq.chunks(LANES).enumerate() {
            for (l, &g) in chunk.iter().enumerate() {
                dl[l] += pr[j0 * LANES + l] * g;
            }
        }
        d_lambda -= dl.iter().copied().sum::<F>();
        if let Some(delta) = delta {
            let ep = eta * pi;
            let mut g_row = [F::zero(); LANES];
            for j0 in (0..cols).step_by(LANES) {
                let end = (j0 + LANES).min(cols);
                for j in j0..end {
                    let adq = a[j] * dq[j];
                    g_row[j - j0] += adq * delta[j];
                    d_delta[j] += eta * adq * pi;
                }
            }
            if let Some(da) = d_alpha.as_deref_mut() {
                let da = &mut da[r];
                for j in 0..cols {
                    da[j] += ep * delta[j] * dq[j];
                }
            }
            let g: F = g_row.iter().copied().sum();
            d_pre[i] += eta * g;
            d_eta += pi * g;
        }
        for v in dq.iter_mut() {
            *v *= keep;
        }
    }
    UpdateAdjoint { d_eta, d_lambda }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.uniform_in(-1.0, 1.0)).collect()
    }

    #[test]
    fn vec_mat_and_mat_vec_match_plain_loops() {
        let mut rng = Rng::new(1);
        for (rows, cols) in [(1, 1), (3, 5), (7, 17), (16, 33)] {
            let w = rand_vec(&mut rng, rows * cols);
            let p = rand_vec(&mut rng, rows * cols);
            let mut x = rand_vec(&mut rng, rows);
            x[0] = 0.0;
            let v = rand_vec(&mut rng, cols);
            let mut y = vec![0.5; cols];
            vec_mat(&x, &w, Some(&p), &mut y);
            for j in 0..cols {
                let e: f64 = 0.5
                    + (0..rows)
                        .map(|i| x[i] * (w[i * cols + j] + p[i * cols + j]))
                        .sum::<f64>();
                assert!((y[j] - e).abs() < 1e-12);
            }
            let mut y2 = vec![0.0; cols];
            vec_mat(&x, &w, None, &mut y2);
            for j in 0..cols {
                let e: f64 = (0..rows).map(|i| x[i] * w[i * cols + j]).sum();
                assert!((y2[j] - e).abs() < 1e-12);
            }
            let mut z = vec![0.0; rows];
            mat_vec(&w, Some(&p), &v, &mut z);
            for i in 0..rows {
                let e: f64 = (0..cols)
                    .map(|j| (w[i * cols + j] + p[i * cols + j]) * v[j])
                    .sum();
                assert!((z[i] - e).abs() < 1e-12);
            }
            let mut z2 = vec![1.0; rows];
            mat_vec(&w, None, &v, &mut z2);
            for i in 0..rows {
                let e: f64 = 1.0 + (0..cols).map(|j| w[i * cols + j] * v[j]).sum::<f64>();
                assert!((z2[i] - e).abs() < 1e-12);
            }
            let mut m = w.clone();
            add_outer(&mut m, &x, &v);
            for i in 0..rows {
                for j in 0..cols {
                    assert!((m[i * cols + j] - (w[i * cols + j] + x[i] * v[j])).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn dot_matches_plain_sum() {
        let mut rng = Rng::new(2);
        for n in [0, 1, 7, 8, 9, 31, 100] {
            let a = rand_vec(&mut rng, n);
            let b = rand_vec(&mut rng, n);
            let e: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - e).abs() < 1e-12);
        }
    }

    #[test]
    fn update_and_its_backward_match_plain_loops() {
        let mut rng = Rng::new(3);
        let (rows, cols) = (5, 11);
        let src = rand_vec(&mut rng, rows * cols);
        let alpha = rand_vec(&mut rng, rows * cols);
        let pre = rand_vec(&mut rng, rows);
        let delta = rand_vec(&mut rng, cols);
        let dq = rand_vec(&mut rng, rows * cols);
        let (eta, lambda) = (0.37, 0.13);
        for clip in [None, Some(0.3)] {
            let mut dst = vec![0.0; rows * cols];
            plastic_update(
                &mut dst,
                &src,
                &alpha,
                &pre,
                Some(&delta),
                eta,
                lambda,
                clip,
            );
            let mut dp = dq.clone();
            let mut d_alpha = vec![0.0; rows * cols];
            let mut d_pre = vec![0.0; rows];
            let mut d_delta = vec![0.0; cols];
            let adj = plastic_update_backward(
                &mut dp,
                &src,
                &alpha,
                Some(&mut d_alpha),
                &pre,
                Some(&delta),
                &mut d_pre,
                &mut d_delta,
                eta,
                lambda,
                clip,
            );
            let (mut e_eta, mut e_lam) = (0.0, 0.0);
            let mut e_pre = vec![0.0; rows];
            let mut e_delta = vec![0.0; cols];
            for i in 0..rows {
                for j in 0..cols {
                    let k = i * cols + j;
                    let v = (1.0 - lambda) * src[k] + eta * alpha[k] * pre[i] * delta[j];
                    let c = clip.unwrap_or(f64::INFINITY);
                    assert!((dst[k] - v.clamp(-c, c)).abs() < 1e-14);
                    let g = if v.abs() <= c { dq[k] } else { 0.0 };
                    assert!((dp[k] - (1.0 - lambda) * g).abs() < 1e-14);
                    assert!((d_alpha[k] - eta * pre[i] * delta[j] * g).abs() < 1e-14);
                    e_eta += alpha[k] * pre[i] * delta[j] * g;
                    e_lam -= src[k] * g;
                    e_pre[i] += eta * alpha[k] * delta[j] * g;
                    e_delta[j] += eta * alpha[k] * pre[i] * g;
                }
            }
            assert!((adj.d_eta - e_eta).abs() < 1e-12);
            assert!((adj.d_lambda - e_lam).abs() < 1e-12);
            for i in 0..rows {
                assert!((d_pre[i] - e_pre[i]).abs() < 1e-12);
            }
            for j in 0..cols {
                assert!((d_delta[j] - e_delta[j]).abs() < 1e-12);
            }
        }
    }
}
