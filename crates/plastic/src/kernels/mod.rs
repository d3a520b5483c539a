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

#[cfg(target_arch = "x86_64")]
mod avx512;
mod narrow;

/// `v` as `f32`; only called where `F` is `f32`.
#[cfg(target_arch = "x86_64")]
fn f32s<F: Float>(v: &[F]) -> &[f32] {
    F::as_f32(v).expect("an f32 slice")
}

/// `v` as mutable `f32`; only called where `F` is `f32`.
#[cfg(target_arch = "x86_64")]
fn f32s_mut<F: Float>(v: &mut [F]) -> &mut [f32] {
    F::as_f32_mut(v).expect("an f32 slice")
}

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

/// Sums the sixteen partial sums by halving (lanes `l` and `l + 8`, then `l + 4`, …): a
/// fixed order that compiles to a few extract-and-add instructions.
#[inline(always)]
fn reduce<F: Float>(acc: &[F; LANES]) -> F {
    let mut h = [F::zero(); 8];
    for l in 0..8 {
        h[l] = acc[l] + acc[l + 8];
    }
    let mut q = [F::zero(); 4];
    for l in 0..4 {
        q[l] = h[l] + h[l + 4];
    }
    (q[0] + q[2]) + (q[1] + q[3])
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
        if y.len() < LANES {
            return narrow::vec_mat(x, w, p, y);
        }
        #[cfg(target_arch = "x86_64")]
        if simd() == Simd::Avx512 {
            if let Some(y32) = F::as_f32_mut(y) {
                let f = f32s::<F>;
                // SAFETY: simd() reports AVX-512F only where the CPU has it.
                unsafe { avx512::vec_mat(f(x), f(w), p.map(f), y32) };
                return;
            }
        }
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

/// `x_r += Σ_j (W_rj + P_rj) v_j` for `R` consecutive rows starting at row `i0`; each row's
/// sum in the same fixed order as [`dot_body`]. Blocking rows shares the loads of `v` and
/// overlaps the rows' final reductions.
#[inline(always)]
fn mat_vec_rows<F: Float, const R: usize>(
    w: &[F],
    p: Option<&[F]>,
    v: &[F],
    x: &mut [F],
    i0: usize,
) {
    let cols = v.len();
    let (vc, vt) = v.as_chunks::<LANES>();
    let n = vc.len() * LANES;
    let wr: [&[F]; R] = std::array::from_fn(|r| &w[(i0 + r) * cols..(i0 + r + 1) * cols]);
    let wc: [&[[F; LANES]]; R] = std::array::from_fn(|r| &wr[r].as_chunks::<LANES>().0[..vc.len()]);
    let mut acc = [[F::zero(); LANES]; R];
    match p {
        Some(p) => {
            let pr: [&[F]; R] = std::array::from_fn(|r| &p[(i0 + r) * cols..(i0 + r + 1) * cols]);
            let pc: [&[[F; LANES]]; R] =
                std::array::from_fn(|r| &pr[r].as_chunks::<LANES>().0[..vc.len()]);
            for (c, vv) in vc.iter().enumerate() {
                for r in 0..R {
                    let (ww, pp) = (&wc[r][c], &pc[r][c]);
                    for k in 0..LANES {
                        acc[r][k] += vv[k] * (ww[k] + pp[k]);
                    }
                }
            }
            for r in 0..R {
                let mut tail = F::zero();
                for (j, &vj) in vt.iter().enumerate() {
                    tail += vj * (wr[r][n + j] + pr[r][n + j]);
                }
                x[i0 + r] += if n == 0 { tail } else { reduce(&acc[r]) + tail };
            }
        }
        None => {
            for (c, vv) in vc.iter().enumerate() {
                for r in 0..R {
                    let ww = &wc[r][c];
                    for k in 0..LANES {
                        acc[r][k] += vv[k] * ww[k];
                    }
                }
            }
            for r in 0..R {
                let mut tail = F::zero();
                for (j, &vj) in vt.iter().enumerate() {
                    tail += vj * wr[r][n + j];
                }
                x[i0 + r] += if n == 0 { tail } else { reduce(&acc[r]) + tail };
            }
        }
    }
}

kernel! {
    /// `x_i += Σ_j (W_ij + P_ij) v_j` (`W + P` times a column vector); `P` may be absent.
    pub fn mat_vec<F: Float>(w: &[F], p: Option<&[F]>, v: &[F], x: &mut [F]) {
        if v.len() < LANES {
            return narrow::mat_vec(w, p, v, x);
        }
        #[cfg(target_arch = "x86_64")]
        if simd() == Simd::Avx512 {
            if let Some(x32) = F::as_f32_mut(x) {
                let f = f32s::<F>;
                // SAFETY: simd() reports AVX-512F only where the CPU has it.
                unsafe { avx512::mat_vec(f(w), p.map(f), f(v), x32) };
                return;
            }
        }
        let rows = x.len();
        assert_eq!(w.len(), rows * v.len());
        if let Some(p) = p {
            assert_eq!(p.len(), w.len());
        }
        let mut i = 0;
        while i + 4 <= rows {
            mat_vec_rows::<F, 4>(w, p, v, x, i);
            i += 4;
        }
        while i < rows {
            mat_vec_rows::<F, 1>(w, p, v, x, i);
            i += 1;
        }
    }
}

/// The plastic update of one tensor (docs/algorithm.md §2.4–2.5), out of place:
/// `dst = clamp((1 − λ)·src + η·α ⊙ (pre ⊗ δ))`. For a bias pass `pre = [1]`; `δ = None`
/// means `Δ = 0` (a Hebbian bias), leaving only the decay. On AVX-512 in `f32` without
/// clipping and with a multiple of 16 columns, the hand-vectorised [`avx512::update`] (the
/// same operations, so the same bits).
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
    #[cfg(target_arch = "x86_64")]
    if let (Simd::Avx512, Some(d), None) = (simd(), delta, clip) {
        if d.len().is_multiple_of(LANES) && dst.len() == pre.len() * d.len() {
            if let Some(dst32) = F::as_f32_mut(dst) {
                let f = f32s::<F>;
                let keep = F::one() - lambda;
                let u = avx512::Update {
                    src: f(src),
                    alpha: f(alpha),
                    pre: f(pre),
                    delta: f(d),
                    eta: eta.f64() as f32,
                    keep: keep.f64() as f32,
                };
                // SAFETY: simd() reports AVX-512F only where the CPU has it.
                unsafe { avx512::update(dst32, u) };
                return;
            }
        }
    }
    plastic_update_portable(dst, src, alpha, pre, delta, eta, lambda, clip)
}

kernel! {
    /// [`plastic_update`] in portable code (compiled for each instruction set).
    pub fn plastic_update_portable<F: Float>(
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
        let cols = dst.len() / pre.len().max(1);
        if cols < LANES {
            if let (Some(delta), None) = (delta, clip) {
                return narrow::plastic_update(dst, src, alpha, pre, delta, eta, keep);
            }
        }
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

/// The plastic update of one tensor ([`plastic_update`]) followed by
/// `y += x·(W + dst)` ([`vec_mat`] on the updated weights), with the same results; on
/// AVX-512 in `f32` without clipping, one pass over the rows instead of two.
#[allow(clippy::too_many_arguments)]
pub fn plastic_update_vec_mat<F: Float>(
    dst: &mut [F],
    src: &[F],
    alpha: &[F],
    pre: &[F],
    delta: &[F],
    eta: F,
    lambda: F,
    clip: Option<F>,
    x: &[F],
    w: &[F],
    y: &mut [F],
) {
    #[cfg(target_arch = "x86_64")]
    if simd() == Simd::Avx512 && clip.is_none() && y.len().is_multiple_of(LANES) {
        if let Some(y32) = F::as_f32_mut(y) {
            let f = f32s::<F>;
            let keep = F::one() - lambda;
            let u = avx512::Update {
                src: f(src),
                alpha: f(alpha),
                pre: f(pre),
                delta: f(delta),
                eta: eta.f64() as f32,
                keep: keep.f64() as f32,
            };
            // SAFETY: simd() reports AVX-512F only where the CPU has it.
            unsafe { avx512::update_vec_mat(f32s_mut(dst), u, f(x), f(w), y32) };
            return;
        }
    }
    plastic_update(dst, src, alpha, pre, Some(delta), eta, lambda, clip);
    vec_mat(x, w, Some(dst), y);
}

/// What the backward sweep through one tensor's update returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateAdjoint<F> {
    /// `Σ α ⊙ Δ ⊙ dQ'`: the adjoint of η (before multiplying by anything).
    pub d_eta: F,
    /// `−Σ P ⊙ dQ'`: the adjoint of λ.
    pub d_lambda: F,
}

/// The adjoint `dQ` of an update's output, held lazily as `κ·S + Σ_k a_k ⊗ b_k`: `S` is the
/// stored part (the slice the backward sweep reads and overwrites), `κ` the decay factor of
/// the later update it came through, and the rank-1 terms are the step's own
/// contributions (`pre ⊗ δ` of the mat-vecs that read `P`), added in the same sweep instead
/// of in separate passes over the matrix.
#[derive(Debug, Clone, Copy)]
pub struct LazyAdjoint<'a, F> {
    /// `κ`.
    pub kappa: F,
    /// The left vectors `a_k` (one per row).
    pub a: &'a [&'a [F]],
    /// The right vectors `b_k` (one per column), as many as `a`; at most two terms.
    pub b: &'a [&'a [F]],
}

/// A deferred `dα` term of the next-later update: `η' pre'_i δ'_j S_ij`, with `S` as stored on
/// entry (that update's `dQ'`). Deferring lets two steps share one pass over `dα`.
#[derive(Debug, Clone, Copy)]
pub struct DeferredAlpha<'a, F> {
    /// `η'`.
    pub eta: F,
    /// `pre'` (one per row).
    pub pre: &'a [F],
    /// `δ'` (one per column).
    pub delta: &'a [F],
}

/// One row of [`plastic_update_backward`] without clipping: forms
/// `q = κ s + Σ_k a_k b_k`, accumulates `d_delta += ep α q`, `l += P q` (lane-wise, across
/// rows) and (with `DA`) `dα += pep δ' s + ep δ q`, stores `q`, and returns
/// `Σ_j α q δ` and the tail part of `Σ_j P q`. Rows have at least 16 columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn update_backward_row<F: Float, const DA: bool, const K: usize>(
    s: &mut [F],
    p: &[F],
    a: &[F],
    da: &mut [F],
    delta: &[F],
    d_delta: &mut [F],
    ep: F,
    kappa: F,
    la: [F; K],
    lb: [&[F]; K],
    pep: F,
    pdelta: &[F],
    l: &mut [F; LANES],
) -> (F, F) {
    let cols = s.len();
    let mut g = [F::zero(); LANES];
    let n = cols / LANES * LANES;
    for j0 in (0..n).step_by(LANES) {
        let sc: &mut [F; LANES] = (&mut s[j0..j0 + LANES]).try_into().unwrap();
        let pc: &[F; LANES] = p[j0..j0 + LANES].try_into().unwrap();
        let ac: &[F; LANES] = a[j0..j0 + LANES].try_into().unwrap();
        let ec: &[F; LANES] = delta[j0..j0 + LANES].try_into().unwrap();
        let ddc: &mut [F; LANES] = (&mut d_delta[j0..j0 + LANES]).try_into().unwrap();
        let mut bc = [[F::zero(); LANES]; K];
        for m in 0..K {
            bc[m] = lb[m][j0..j0 + LANES].try_into().unwrap();
        }
        let mut q = [F::zero(); LANES];
        for k in 0..LANES {
            q[k] = kappa * sc[k];
            for m in 0..K {
                q[k] += la[m] * bc[m][k];
            }
            let aq = ac[k] * q[k];
            l[k] += pc[k] * q[k];
            g[k] += aq * ec[k];
            ddc[k] += ep * aq;
        }
        if DA {
            let dac: &mut [F; LANES] = (&mut da[j0..j0 + LANES]).try_into().unwrap();
            let pc: &[F; LANES] = pdelta[j0..j0 + LANES].try_into().unwrap();
            for k in 0..LANES {
                dac[k] += pep * pc[k] * sc[k] + ep * ec[k] * q[k];
            }
        }
        *sc = q;
    }
    let (mut gt, mut lt) = (F::zero(), F::zero());
    for j in n..cols {
        let s0 = s[j];
        let mut q = kappa * s0;
        for m in 0..K {
            q += la[m] * lb[m][j];
        }
        let aq = a[j] * q;
        lt += p[j] * q;
        gt += aq * delta[j];
        d_delta[j] += ep * aq;
        if DA {
            da[j] += pep * pdelta[j] * s0 + ep * delta[j] * q;
        }
        s[j] = q;
    }
    (reduce(&g) + gt, lt)
}

/// What the rows of one backward sweep read (see [`plastic_update_backward`]), with `K`
/// lazy terms: `P`, `α`, the lazy form of `dQ` (`κ`, `a_k`, `b_k`), the deferred `dα`
/// term, `pre`, `δ` and `η`.
#[derive(Clone, Copy)]
struct Sweep<'a, F, const K: usize> {
    p: &'a [F],
    alpha: &'a [F],
    kappa: F,
    la: [&'a [F]; K],
    lb: [&'a [F]; K],
    deferred: Option<DeferredAlpha<'a, F>>,
    pre: &'a [F],
    delta: &'a [F],
    eta: F,
}

/// What the rows of one backward sweep write: the stored adjoint `S` (overwritten with
/// `dQ'`), `dα` (empty unless the sweep accumulates it), `d_pre` and `d_delta`.
struct SweepOut<'a, F> {
    s: &'a mut [F],
    d_alpha: &'a mut [F],
    d_pre: &'a mut [F],
    d_delta: &'a mut [F],
}

impl<'a, F: Float, const K: usize> Sweep<'a, F, K> {
    /// The sweep of [`plastic_update_backward`]'s arguments; `lazy` must have `K` terms.
    #[allow(clippy::too_many_arguments)]
    fn new(
        lazy: &LazyAdjoint<'a, F>,
        deferred: Option<&DeferredAlpha<'a, F>>,
        p: &'a [F],
        alpha: &'a [F],
        pre: &'a [F],
        delta: &'a [F],
        eta: F,
    ) -> Self {
        Sweep {
            p,
            alpha,
            kappa: lazy.kappa,
            la: std::array::from_fn(|m| lazy.a[m]),
            lb: std::array::from_fn(|m| lazy.b[m]),
            deferred: deferred.copied(),
            pre,
            delta,
            eta,
        }
    }

    /// The same sweep in `f32`; only called where `F` is `f32`.
    #[cfg(target_arch = "x86_64")]
    fn to_f32(self) -> Sweep<'a, f32, K> {
        let f = f32s::<F>;
        Sweep {
            p: f(self.p),
            alpha: f(self.alpha),
            kappa: self.kappa.f64() as f32,
            la: self.la.map(f),
            lb: self.lb.map(f),
            deferred: self.deferred.map(|d| DeferredAlpha {
                eta: d.eta.f64() as f32,
                pre: f(d.pre),
                delta: f(d.delta),
            }),
            pre: f(self.pre),
            delta: f(self.delta),
            eta: self.eta.f64() as f32,
        }
    }
}

/// All rows of [`plastic_update_backward`] without clipping; returns the adjoints of η and
/// λ. Matrices narrower than a vector go to [`narrow`], `f32` on AVX-512 to [`avx512`],
/// which repeat these operations in this order.
#[inline(always)]
fn update_backward_rows<F: Float, const DA: bool, const K: usize>(
    sw: Sweep<'_, F, K>,
    out: SweepOut<'_, F>,
) -> (F, F) {
    if sw.delta.len() < LANES {
        return narrow::update_backward_rows::<F, DA, K>(sw, out);
    }
    #[cfg(target_arch = "x86_64")]
    if simd() == Simd::Avx512 && F::as_f32(sw.p).is_some() {
        let f_mut = f32s_mut::<F>;
        let out32 = SweepOut {
            s: f_mut(out.s),
            d_alpha: f_mut(out.d_alpha),
            d_pre: f_mut(out.d_pre),
            d_delta: f_mut(out.d_delta),
        };
        // SAFETY: simd() reports AVX-512F only where the CPU has it.
        let (e, l) = unsafe { avx512::update_backward_rows::<DA, K>(sw.to_f32(), out32) };
        return (F::of(e as f64), F::of(l as f64));
    }
    let SweepOut {
        s,
        d_alpha,
        d_pre,
        d_delta,
    } = out;
    let cols = sw.delta.len();
    let mut d_eta = F::zero();
    let mut l = [F::zero(); LANES];
    let mut lt = F::zero();
    let none: &[F] = &[];
    for (i, &pi) in sw.pre.iter().enumerate() {
        let r = i * cols..(i + 1) * cols;
        let la: [F; K] = std::array::from_fn(|m| sw.la[m][i]);
        let (pep, pdelta) = match sw.deferred {
            Some(d) => (d.eta * d.pre[i], d.delta),
            None => (F::zero(), if DA { sw.delta } else { none }),
        };
        let da = if DA {
            &mut d_alpha[r.clone()]
        } else {
            &mut [][..]
        };
        let ep = sw.eta * pi;
        let (g, t) = update_backward_row::<F, DA, K>(
            &mut s[r.clone()],
            &sw.p[r.clone()],
            &sw.alpha[r],
            da,
            sw.delta,
            d_delta,
            ep,
            sw.kappa,
            la,
            sw.lb,
            pep,
            pdelta,
            &mut l,
        );
        lt += t;
        d_pre[i] += sw.eta * g;
        d_eta += pi * g;
    }
    (d_eta, -(reduce(&l) + lt))
}

kernel! {
    /// Backward sweep through `Q = clamp((1 − λ)P + η α ⊙ (pre ⊗ δ))` for one tensor.
    ///
    /// On entry `dp` holds the stored part `S` of `dL/dQ = κ S + Σ_k a_k ⊗ b_k` (see
    /// [`LazyAdjoint`]); on exit it holds `dQ' = mask ⊙ dL/dQ`, the mask being where the
    /// clamp passed the gradient. The part of `dL/dP` through the decay is then
    /// `(1 − λ)·dQ'`: the caller passes `κ = 1 − λ` to the next (earlier) sweep. Accumulates
    /// `d_pre_i += η Σ_j α_ij dQ'_ij δ_j`, `d_delta_j += η Σ_i α_ij dQ'_ij pre_i` and, when
    /// `d_alpha` is given, `dα += η (pre ⊗ δ) ⊙ dQ'` plus the `deferred` term; returns the
    /// adjoints of η and λ. `delta = None` means `Δ = 0` (then `d_alpha` and `deferred` are
    /// not used).
    pub fn plastic_update_backward<F: Float>(
        dp: &mut [F],
        lazy: &LazyAdjoint<'_, F>,
        p: &[F],
        alpha: &[F],
        d_alpha: Option<&mut [F]>,
        deferred: Option<&DeferredAlpha<'_, F>>,
        pre: &[F],
        delta: Option<&[F]>,
        d_pre: &mut [F],
        d_delta: &mut [F],
        eta: F,
        lambda: F,
        clip: Option<F>,
    ) -> UpdateAdjoint<F> {
        debug_assert!(lazy.a.len() == lazy.b.len() && lazy.a.len() <= 2);
        let keep = F::one() - lambda;
        let rows = pre.len();
        let cols = dp.len() / rows.max(1);
        let Some(delta) = delta else {
            // Δ = 0: only the decay; dQ' = dQ (the clamp of a decayed in-range value passes)
            let mut d_lambda = F::zero();
            for i in 0..rows {
                let r = i * cols..(i + 1) * cols;
                let (s, pr) = (&mut dp[r.clone()], &p[r]);
                let mut l = F::zero();
                for j in 0..cols {
                    let mut q = lazy.kappa * s[j];
                    for (a, b) in lazy.a.iter().zip(lazy.b) {
                        q += a[i] * b[j];
                    }
                    if let Some(c) = clip {
                        let v = keep * pr[j];
                        if !(v >= -c && v <= c) {
                            q = F::zero();
                        }
                    }
                    l += pr[j] * q;
                    s[j] = q;
                }
                d_lambda -= l;
            }
            return UpdateAdjoint { d_eta: F::zero(), d_lambda };
        };
        let mut d_alpha = d_alpha;
        if let Some(c) = clip {
            // Materialise dQ, take the deferred dα term from the stored S, then mask; the
            // rows below then run on dQ' with κ = 1 and no lazy terms.
            for i in 0..rows {
                let r = i * cols..(i + 1) * cols;
                let (s, pr, a) = (&mut dp[r.clone()], &p[r.clone()], &alpha[r.clone()]);
                if let (Some(da), Some(d)) = (d_alpha.as_deref_mut(), deferred) {
                    let pep = d.eta * d.pre[i];
                    for j in 0..cols {
                        da[i * cols + j] += pep * d.delta[j] * s[j];
                    }
                }
                for j in 0..cols {
                    let mut q = lazy.kappa * s[j];
                    for (la, lb) in lazy.a.iter().zip(lazy.b) {
                        q += la[i] * lb[j];
                    }
                    let v = keep * pr[j] + eta * pre[i] * a[j] * delta[j];
                    // torch.clamp passes the gradient where min <= x <= max.
                    s[j] = if v >= -c && v <= c { q } else { F::zero() };
                }
            }
        }
        // the rows, with DA (whether dα is accumulated) and K (lazy terms) as constants
        macro_rules! rows {
            ($da:literal, $k:literal, $d_alpha:expr, $lazy:expr, $deferred:expr) => {
                update_backward_rows::<F, $da, $k>(
                    Sweep::new($lazy, $deferred, p, alpha, pre, delta, eta),
                    SweepOut { s: dp, d_alpha: $d_alpha, d_pre, d_delta },
                )
            };
        }
        let (d_eta, d_lambda) = if clip.is_some() {
            let plain = LazyAdjoint { kappa: F::one(), a: &[], b: &[] };
            match d_alpha {
                Some(da) => rows!(true, 0, da, &plain, None),
                None => rows!(false, 0, &mut [], &plain, None),
            }
        } else {
            match (d_alpha, lazy.a.len()) {
                (Some(da), 0) => rows!(true, 0, da, lazy, deferred),
                (Some(da), 1) => rows!(true, 1, da, lazy, deferred),
                (Some(da), _) => rows!(true, 2, da, lazy, deferred),
                (None, 0) => rows!(false, 0, &mut [], lazy, None),
                (None, 1) => rows!(false, 1, &mut [], lazy, None),
                (None, _) => rows!(false, 2, &mut [], lazy, None),
            }
        };
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

    /// Runs the update and its backward sweep (in `F`) on the given data and returns every
    /// output: `dst`, `dp`, `dα`, `d_pre`, `d_delta`, `dη`, `dλ`.
    #[allow(clippy::type_complexity)]
    fn update_round_trip<F: Float>(
        data: &[Vec<f64>],
        (rows, cols): (usize, usize),
        k: usize,
        deferred: bool,
        clip: Option<f64>,
    ) -> (Vec<F>, Vec<F>, Vec<F>, Vec<F>, Vec<F>, F, F) {
        let c = |v: &Vec<f64>| v.iter().map(|&x| F::of(x)).collect::<Vec<F>>();
        let [src, alpha, pre, delta, dq, a0, a1, b0, b1, ppre, pdel] =
            std::array::from_fn(|i| c(&data[i]));
        let (eta, lambda) = (F::of(0.37), F::of(0.13));
        let clip = clip.map(F::of);
        let mut dst = vec![F::zero(); rows * cols];
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
        let la = [&a0[..], &a1[..]];
        let lb = [&b0[..], &b1[..]];
        let lazy = LazyAdjoint {
            kappa: F::of(0.9),
            a: &la[..k],
            b: &lb[..k],
        };
        let def = DeferredAlpha {
            eta: F::of(0.21),
            pre: &ppre,
            delta: &pdel,
        };
        let mut dp = dq.clone();
        let mut d_alpha = vec![F::zero(); rows * cols];
        let mut d_pre = vec![F::zero(); rows];
        let mut d_delta = vec![F::zero(); cols];
        let adj = plastic_update_backward(
            &mut dp,
            &lazy,
            &src,
            &alpha,
            Some(&mut d_alpha),
            deferred.then_some(&def),
            &pre,
            Some(&delta),
            &mut d_pre,
            &mut d_delta,
            eta,
            lambda,
            clip,
        );
        (dst, dp, d_alpha, d_pre, d_delta, adj.d_eta, adj.d_lambda)
    }

    fn update_data(rng: &mut Rng, rows: usize, cols: usize) -> Vec<Vec<f64>> {
        let n = rows * cols;
        [n, n, rows, cols, n, rows, rows, cols, cols, rows, cols]
            .iter()
            .map(|&len| rand_vec(rng, len))
            .collect()
    }

    #[test]
    fn update_and_its_backward_match_plain_loops() {
        let mut rng = Rng::new(3);
        for (rows, cols) in [(5, 11), (3, 37), (1, 16)] {
            let d = update_data(&mut rng, rows, cols);
            let (src, alpha, pre, delta, dq) = (&d[0], &d[1], &d[2], &d[3], &d[4]);
            let (la, lb) = ([&d[5], &d[6]], [&d[7], &d[8]]);
            let (ppre, pdel) = (&d[9], &d[10]);
            let (eta, lambda, kappa, peta) = (0.37, 0.13, 0.9, 0.21);
            for k in 0..=2 {
                for deferred in [false, true] {
                    for clip in [None, Some(0.3)] {
                        let (dst, dp, d_alpha, d_pre, d_delta, d_eta, d_lambda) =
                            update_round_trip::<f64>(&d, (rows, cols), k, deferred, clip);
                        let (mut e_eta, mut e_lam) = (0.0, 0.0);
                        let mut e_pre = vec![0.0; rows];
                        let mut e_delta = vec![0.0; cols];
                        for i in 0..rows {
                            for j in 0..cols {
                                let ix = i * cols + j;
                                let v =
                                    (1.0 - lambda) * src[ix] + eta * alpha[ix] * pre[i] * delta[j];
                                let c = clip.unwrap_or(f64::INFINITY);
                                assert!((dst[ix] - v.clamp(-c, c)).abs() < 1e-14);
                                // dQ = κ S + Σ a_k ⊗ b_k, masked where the clamp was active
                                let q = kappa * dq[ix]
                                    + (0..k).map(|m| la[m][i] * lb[m][j]).sum::<f64>();
                                let g = if v.abs() <= c { q } else { 0.0 };
                                assert!((dp[ix] - g).abs() < 1e-14);
                                let prev = if deferred {
                                    peta * ppre[i] * pdel[j] * dq[ix]
                                } else {
                                    0.0
                                };
                                let e_da = eta * pre[i] * delta[j] * g + prev;
                                assert!((d_alpha[ix] - e_da).abs() < 1e-14);
                                e_eta += alpha[ix] * pre[i] * delta[j] * g;
                                e_lam -= src[ix] * g;
                                e_pre[i] += eta * alpha[ix] * delta[j] * g;
                                e_delta[j] += eta * alpha[ix] * pre[i] * g;
                            }
                        }
                        assert!((d_eta - e_eta).abs() < 1e-12);
                        assert!((d_lambda - e_lam).abs() < 1e-12);
                        for i in 0..rows {
                            assert!((d_pre[i] - e_pre[i]).abs() < 1e-12);
                        }
                        for j in 0..cols {
                            assert!((d_delta[j] - e_delta[j]).abs() < 1e-12);
                        }
                    }
                }
            }
        }
    }

    /// Serialises the tests that switch the instruction set (a process-wide setting).
    static SIMD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Every output of every hand-written kernel on `d` (see [`update_data`]), as `f64` bits
    /// (exact for `f32`), each named: `dot`, `vec_mat` and `mat_vec` with and without `P`,
    /// the update (`dst`) with and without `Δ` and clipping, the fused update + mat-vec
    /// (`dst` and `y`) with and without clipping, and the backward sweep (every output) for
    /// 0–2 lazy terms, with and without the deferred `dα` term, clipping and `Δ`.
    fn every_kernel_output<F: Float>(
        d: &[Vec<f64>],
        (rows, cols): (usize, usize),
    ) -> Vec<(String, Vec<u64>)> {
        let c = |v: &Vec<f64>| v.iter().map(|&x| F::of(x)).collect::<Vec<F>>();
        let bits = |v: &[F]| v.iter().map(|x| x.f64().to_bits()).collect::<Vec<u64>>();
        let [w, p, x, v, dq, a0, a1, b0, b1, ppre, pdel] = std::array::from_fn(|i| c(&d[i]));
        let mut xz = x.clone();
        xz[0] = F::zero(); // a zero row is skipped
        let (eta, lambda) = (F::of(0.37), F::of(0.13));
        let mut out = Vec::new();
        out.push(("dot".to_string(), bits(&[dot(&w, &p)])));
        for (name, pm) in [("with P", Some(&p[..])), ("without P", None)] {
            let mut z = vec![F::of(0.5); rows];
            mat_vec(&w, pm, &v, &mut z);
            out.push((format!("mat_vec {name}"), bits(&z)));
            let mut y = vec![F::of(0.25); cols];
            vec_mat(&xz, &w, pm, &mut y);
            out.push((format!("vec_mat {name}"), bits(&y)));
        }
        // the update: α = p, pre = x, δ = v
        for clip in [None, Some(F::of(0.3))] {
            for with_delta in [true, false] {
                let mut dst = vec![F::zero(); rows * cols];
                let delta = with_delta.then_some(&v[..]);
                plastic_update(&mut dst, &w, &p, &x, delta, eta, lambda, clip);
                out.push((
                    format!("plastic_update dst (clip {clip:?}, Δ {with_delta})"),
                    bits(&dst),
                ));
            }
            // fused update + vec_mat: y += xr·(W2 + dst), xr of length rows
            let mut dst = vec![F::zero(); rows * cols];
            let mut y = vec![F::of(0.125); cols];
            plastic_update_vec_mat(
                &mut dst, &w, &p, &x, &v, eta, lambda, clip, &xz, &dq, &mut y,
            );
            out.push((
                format!("plastic_update_vec_mat dst (clip {clip:?})"),
                bits(&dst),
            ));
            out.push((
                format!("plastic_update_vec_mat y (clip {clip:?})"),
                bits(&y),
            ));
        }
        let la = [&a0[..], &a1[..]];
        let lb = [&b0[..], &b1[..]];
        let def = DeferredAlpha {
            eta: F::of(0.21),
            pre: &ppre,
            delta: &pdel,
        };
        for k in 0..=2 {
            let lazy = LazyAdjoint {
                kappa: F::of(0.9),
                a: &la[..k],
                b: &lb[..k],
            };
            for deferred in [false, true] {
                for clip in [None, Some(F::of(0.3))] {
                    for with_delta in [true, false] {
                        for with_alpha in [true, false] {
                            if !with_delta && (deferred || with_alpha) {
                                continue; // not used without Δ
                            }
                            let mut dp = dq.clone();
                            let mut d_alpha = vec![F::zero(); rows * cols];
                            let mut d_pre = vec![F::zero(); rows];
                            let mut d_delta = vec![F::zero(); cols];
                            let adj = plastic_update_backward(
                                &mut dp,
                                &lazy,
                                &w,
                                &p,
                                with_alpha.then_some(&mut d_alpha[..]),
                                deferred.then_some(&def),
                                &x,
                                with_delta.then_some(&v[..]),
                                &mut d_pre,
                                &mut d_delta,
                                eta,
                                lambda,
                                clip,
                            );
                            let name = format!(
                                "plastic_update_backward (lazy {k}, deferred {deferred}, clip {clip:?}, Δ {with_delta}, dα {with_alpha})"
                            );
                            out.push((format!("{name} dp"), bits(&dp)));
                            out.push((format!("{name} d_alpha"), bits(&d_alpha)));
                            out.push((format!("{name} d_pre"), bits(&d_pre)));
                            out.push((format!("{name} d_delta"), bits(&d_delta)));
                            out.push((
                                format!("{name} d_eta, d_lambda"),
                                bits(&[adj.d_eta, adj.d_lambda]),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// Every kernel gives the same bits at every instruction-set level the CPU has as at the
    /// baseline, in `f32` (where the AVX-512 paths are hand-written) and `f64`, on shapes
    /// narrower than a vector, with tails, and multiples of 16 (the fused AVX-512 update +
    /// mat-vec). A level the CPU lacks is reported as skipped in the output (`--nocapture`).
    #[test]
    fn every_kernel_is_identical_across_instruction_sets() {
        let _guard = SIMD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let levels = [Simd::Avx2, Simd::Avx512];
        let (available, skipped): (Vec<Simd>, Vec<Simd>) =
            levels.iter().partition(|&&l| l <= detect());
        let mut rng = Rng::new(4);
        let mut compared = 0;
        for (rows, cols) in [(5, 11), (9, 37), (8, 128), (3, 200), (1, 16), (4, 48)] {
            let d = update_data(&mut rng, rows, cols);
            let run = |level: Simd, f32: bool| {
                set_simd(level);
                assert_eq!(simd(), level);
                if f32 {
                    every_kernel_output::<f32>(&d, (rows, cols))
                } else {
                    every_kernel_output::<f64>(&d, (rows, cols))
                }
            };
            for f32 in [true, false] {
                let base = run(Simd::Baseline, f32);
                for &level in &available {
                    let other = run(level, f32);
                    assert_eq!(base.len(), other.len());
                    for ((name, b), (_, o)) in base.iter().zip(&other) {
                        assert!(
                            b == o,
                            "{name} ({rows}×{cols}, {}): {level:?} differs from the baseline",
                            if f32 { "f32" } else { "f64" }
                        );
                    }
                    compared += base.len();
                }
            }
        }
        set_simd(Simd::Avx512);
        println!(
            "kernel bit-identity: {compared} outputs compared with the baseline at {:?}; skipped (CPU lacks them): {} {:?}",
            available,
            skipped.len(),
            skipped
        );
        if !skipped.is_empty() {
            eprintln!(
                "warning: instruction sets {skipped:?} not available on this CPU: not compared"
            );
        }
        assert!(compared > 0 || available.is_empty());
    }
}
