//! The hot loops: per-episode mat-vecs with `W + P`, the plastic update, and the backward
//! sweep through it. Each is a plain function over slices with a fixed summation order
//! (sixteen interleaved partial sums), so results do not depend on the machine, the
//! instruction set or the number of threads.
//!
//! Vectorisation without `-C target-cpu=native`: every kernel is compiled three times, for
//! the x86-64 baseline, AVX2 and AVX-512, and the widest the CPU supports is picked at run
//! time (override with `PLASTIC_SIMD=baseline|avx2|avx512`). The code only uses plain
//! multiplies and adds, which LLVM never reorders or fuses, so all three give identical bits.
//!
//! Matrices are row-major `(rows, cols)`: element `(i, j)` is at `i·cols + j`.

use crate::float::Float;

const LANES: usize = 16;

/// The instruction sets the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// The x86-64 baseline (SSE2), or the only path on other architectures.
    Baseline = 0,
    /// AVX2.
    Avx2 = 1,
    /// AVX-512F.
    Avx512 = 2,
}

static SIMD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// The instruction set the kernels use: the widest the CPU has, unless `PLASTIC_SIMD`
/// (`baseline`, `avx2`, `avx512`) or [`set_simd`] chose a narrower one.
pub fn simd() -> Simd {
    let v = SIMD.load(std::sync::atomic::Ordering::Relaxed);
    if v != u8::MAX {
        return [Simd::Baseline, Simd::Avx2, Simd::Avx512][v as usize];
    }
    let detected = detect();
    let chosen = match std::env::var("PLASTIC_SIMD").ok().as_deref() {
        Some("baseline") => Simd::Baseline,
        Some("avx2") => detected.min(Simd::Avx2),
        _ => detected,
    };
    SIMD.store(chosen as u8, std::sync::atomic::Ordering::Relaxed);
    chosen
}

/// Restricts the kernels to `level` (or the widest available below it).
pub fn set_simd(level: Simd) {
    SIMD.store(
        level.min(detect()) as u8,
        std::sync::atomic::Ordering::Relaxed,
    );
}

fn detect() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Defines a kernel once and compiles it for each instruction set, dispatching at run time.
macro_rules! kernel {
    ($(#[$m:meta])* pub fn $name:ident<F: Float>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name<F: Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<F: Float>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide<F: Float>($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn mid<F: Float>($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match simd() {
                    // SAFETY: simd() only reports features the CPU has.
                    Simd::Avx512 => return unsafe { wide($($arg),*) },
                    Simd::Avx2 => return unsafe { mid($($arg),*) },
                    Simd::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}

#[inline(always)]
fn reduce<F: Float>(acc: &[F; LANES]) -> F {
    let mut h = [F::zero(); 8];
    for l in 0..8 {
        h[l] = acc[l] + acc[l + 8];
    }
    ((h[0] + h[4]) + (h[1] + h[5])) + ((h[2] + h[6]) + (h[3] + h[7]))
}

#[inline(always)]
fn dot_body<F: Float>(a: &[F], b: &[F]) -> F {
    let mut acc = [F::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = F::zero();
    for (x, y) in ra.iter().zip(rb) {
        tail += *x * *y;
    }
    reduce(&acc) + tail
}

#[inline(always)]
fn dot_sum_body<F: Float>(a: &[F], b: &[F], c: &[F]) -> F {
    let mut acc = [F::zero(); LANES];
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let (ra, rb, rc) = (ca.remainder(), cb.remainder(), cc.remainder());
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for l in 0..LANES {
            acc[l] += x[l] * (y[l] + z[l]);
        }
    }
    let mut tail = F::zero();
    for ((x, y), z) in ra.iter().zip(rb).zip(rc) {
        tail += *x * (*y + *z);
    }
    reduce(&acc) + tail
}

kernel! {
    /// `Σ_k a_k b_k`, summed in a fixed order.
    pub fn dot<F: Float>(a: &[F], b: &[F]) -> F {
        debug_assert_eq!(a.len(), b.len());
        dot_body(a, b)
    }
}

/// `‖a‖²`.
#[inline]
pub fn sq_norm<F: Float>(a: &[F]) -> F {
    dot(a, a)
}

kernel! {
    /// `y_j += Σ_i x_i (W_ij + P_ij)` (a row vector times `W + P`); `P` may be absent.
    /// Rows with `x_i = 0` are skipped (exact: they add nothing).
    pub fn vec_mat<F: Float>(x: &[F], w: &[F], p: Option<&[F]>, y: &mut [F]) {
        let cols = y.len();
        debug_assert_eq!(w.len(), x.len() * cols);
        for (i, &xi) in x.iter().enumerate() {
            if xi == F::zero() {
                continue;
            }
            let wr = &w[i * cols..(i + 1) * cols];
            match p {
                Some(p) => {
                    let pr = &p[i * cols..(i + 1) * cols];
                    for ((yj, &wj), &pj) in y.iter_mut().zip(wr).zip(pr) {
                        *yj += xi * (wj + pj);
                    }
                }
                None => {
                    for (yj, &wj) in y.iter_mut().zip(wr) {
                        *yj += xi * wj;
                    }
                }
            }
        }
    }
}

kernel! {
    /// `x_i += Σ_j (W_ij + P_ij) v_j` (`W + P` times a column vector); `P` may be absent.
    pub fn mat_vec<F: Float>(w: &[F], p: Option<&[F]>, v: &[F], x: &mut [F]) {
        let cols = v.len();
        debug_assert_eq!(w.len(), x.len() * cols);
        for (i, xi) in x.iter_mut().enumerate() {
            let wr = &w[i * cols..(i + 1) * cols];
            *xi += match p {
                Some(p) => dot_sum_body(v, wr, &p[i * cols..(i + 1) * cols]),
                None => dot_body(v, wr),
            };
        }
    }
}

kernel! {
    /// `M_ij += a_i b_j` (a rank-1 update).
    pub fn add_outer<F: Float>(m: &mut [F], a: &[F], b: &[F]) {
        let cols = b.len();
        debug_assert_eq!(m.len(), a.len() * cols);
        for (i, &ai) in a.iter().enumerate() {
            if ai == F::zero() {
                continue;
            }
            for (mj, &bj) in m[i * cols..(i + 1) * cols].iter_mut().zip(b) {
                *mj += ai * bj;
            }
        }
    }
}

kernel! {
    /// The plastic update of one tensor (ALGORITHM.md §2.4–2.5), out of place:
    /// `dst = clamp((1 − λ)·src + η·α ⊙ (pre ⊗ δ))`. For a bias pass `pre = [1]`; `δ = None`
    /// means `Δ = 0` (a Hebbian bias), leaving only the decay.
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
                    for (((dj, &sj), &aj), &ej) in d.iter_mut().zip(s).zip(a).zip(delta) {
                        *dj = keep * sj + ep * aj * ej;
                    }
                }
                None => {
                    for (dj, &sj) in d.iter_mut().zip(s) {
                        *dj = keep * sj;
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
}

/// What the backward sweep through one tensor's update returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateAdjoint<F> {
    /// `Σ α ⊙ Δ ⊙ dQ`: the adjoint of η (before multiplying by anything).
    pub d_eta: F,
    /// `−Σ P ⊙ dQ`: the adjoint of λ.
    pub d_lambda: F,
}

/// One row of [`plastic_update_backward`] with `Δ = pre_i δ`, `ep = η·pre_i`: scales `dq`
/// by `keep`, accumulates `d_delta` and (when `ALPHA`) `da`, and returns
/// `(Σ_j α dQ δ, Σ_j P dQ)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn update_backward_row<F: Float, const ALPHA: bool>(
    dq: &mut [F],
    p: &[F],
    a: &[F],
    da: &mut [F],
    delta: &[F],
    d_delta: &mut [F],
    ep: F,
    keep: F,
) -> (F, F) {
    let mut g = [F::zero(); LANES];
    let mut l = [F::zero(); LANES];
    let n = dq.len() / LANES * LANES;
    for j0 in (0..n).step_by(LANES) {
        let dqc: &mut [F; LANES] = (&mut dq[j0..j0 + LANES]).try_into().unwrap();
        let pc: &[F; LANES] = p[j0..j0 + LANES].try_into().unwrap();
        let ac: &[F; LANES] = a[j0..j0 + LANES].try_into().unwrap();
        let ec: &[F; LANES] = delta[j0..j0 + LANES].try_into().unwrap();
        let ddc: &mut [F; LANES] = (&mut d_delta[j0..j0 + LANES]).try_into().unwrap();
        let mut unused = [F::zero(); LANES];
        let dac: &mut [F; LANES] = if ALPHA {
            (&mut da[j0..j0 + LANES]).try_into().unwrap()
        } else {
            &mut unused
        };
        for k in 0..LANES {
            let q = dqc[k];
            let adq = ac[k] * q;
            l[k] += pc[k] * q;
            g[k] += adq * ec[k];
            ddc[k] += ep * adq;
            if ALPHA {
                dac[k] += ep * ec[k] * q;
            }
            dqc[k] = keep * q;
        }
    }
    let (mut gt, mut lt) = (F::zero(), F::zero());
    for j in n..dq.len() {
        let q = dq[j];
        let adq = a[j] * q;
        lt += p[j] * q;
        gt += adq * delta[j];
        d_delta[j] += ep * adq;
        if ALPHA {
            da[j] += ep * delta[j] * q;
        }
        dq[j] = keep * q;
    }
    (reduce(&g) + gt, reduce(&l) + lt)
}

kernel! {
    /// Backward sweep through `Q = clamp((1 − λ)P + η α ⊙ (pre ⊗ δ))` for one tensor.
    ///
    /// On entry `dp` holds `dL/dQ`; on exit it holds the part of `dL/dP` that flows through
    /// the decay, `(1 − λ)·mask ⊙ dQ`. Accumulates `dα += η (pre ⊗ δ) ⊙ dQ'` (with
    /// `dQ' = mask ⊙ dQ`), `d_pre_i += η Σ_j α_ij dQ'_ij δ_j` and
    /// `d_delta_j += η Σ_i α_ij dQ'_ij pre_i`, and returns the adjoints of η and λ.
    /// `delta = None` means `Δ = 0`.
    pub fn plastic_update_backward<F: Float>(
        dp: &mut [F],
        p: &[F],
        alpha: &[F],
        d_alpha: Option<&mut [F]>,
        pre: &[F],
        delta: Option<&[F]>,
        d_pre: &mut [F],
        d_delta: &mut [F],
        eta: F,
        lambda: F,
        clip: Option<F>,
    ) -> UpdateAdjoint<F> {
        let mut d_alpha = d_alpha;
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
            match delta {
                Some(delta) => {
                    let ep = eta * pi;
                    let (g, l) = match d_alpha.as_deref_mut() {
                        Some(da) => update_backward_row::<F, true>(dq, pr, a, &mut da[r], delta, d_delta, ep, keep),
                        None => update_backward_row::<F, false>(dq, pr, a, &mut [], delta, d_delta, ep, keep),
                    };
                    d_pre[i] += eta * g;
                    d_eta += pi * g;
                    d_lambda -= l;
                }
                None => {
                    let mut l = [F::zero(); LANES];
                    let mut lt = F::zero();
                    let n = cols / LANES * LANES;
                    for j0 in (0..n).step_by(LANES) {
                        for k in 0..LANES {
                            l[k] += pr[j0 + k] * dq[j0 + k];
                            dq[j0 + k] *= keep;
                        }
                    }
                    for j in n..cols {
                        lt += pr[j] * dq[j];
                        dq[j] *= keep;
                    }
                    d_lambda -= reduce(&l) + lt;
                }
            }
        }
        UpdateAdjoint { d_eta, d_lambda }
    }
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
