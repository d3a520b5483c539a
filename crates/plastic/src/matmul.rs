//! The weight-gradient GEMM `dW = Σ_t preₜ ⊗ δₜ` (`dst = Aᵀ B`) with a summation order that
//! is a function of the problem only.
//!
//! Every element of `dst` is the sum of its `k` products taken strictly in order,
//! `((0 + a₀b₀) + a₁b₁) + …`, each product rounded and then added (a plain multiply and a
//! plain add, never fused: Rust does not contract `x + y * z` into an FMA). Blocking only
//! decides which elements are computed when, never how one element is summed: the running
//! sums are kept in `dst` between blocks of `k` and reloaded into registers, so the result
//! has the same bits for any tile size, block size, thread count, instruction set (x86-64
//! baseline, AVX2, AVX-512, or another architecture) and cache size. A tuned GEMM library
//! chooses its `k`-blocking from the cache sizes it detects and fuses multiply-adds when the
//! CPU has FMA, so its sums differ from one processor to another.

use rayon::prelude::*;

use crate::float::Float;
use crate::kernels::{simd, Simd};

/// How the work is cut: tile rows, `k` rows per block, and dst rows per parallel task.
/// Changing any of these must not change a single bit of the result (tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of `k` processed per pass over a block of `dst` (cache blocking).
    pub kc: usize,
    /// Rows of `dst` per parallel task.
    pub rows_per_task: usize,
}

impl Blocking {
    /// The blocking used by the engine for an `m × n` result.
    pub fn for_shape(m: usize, n: usize) -> Blocking {
        // a block of A and B (kc × (m + n)) of about 256 KiB in f32 stays in L2
        let kc = (65536 / (m + n).max(1)).clamp(16, 1024);
        Blocking {
            kc,
            rows_per_task: m.div_ceil(4).max(1),
        }
    }
}

static FORCED: std::sync::Mutex<Option<Blocking>> = std::sync::Mutex::new(None);

/// Forces every later [`gemm_at_b`] (the engine's too) to use `blocking` instead of
/// [`Blocking::for_shape`], or restores the default with `None`: a test hook to show that the
/// blocking changes no bit of a training step.
pub fn set_blocking(blocking: Option<Blocking>) {
    *FORCED.lock().unwrap_or_else(|e| e.into_inner()) = blocking;
}

/// `dst = Aᵀ B` with `A` (k × m) and `B` (k × n) row-major and `dst` (m × n) row-major, in
/// the fixed order described in the module documentation.
pub fn gemm_at_b<F: Float>(dst: &mut [F], a: &[F], b: &[F], m: usize, n: usize, k: usize) {
    let forced = *FORCED.lock().unwrap_or_else(|e| e.into_inner());
    let blocking = forced.unwrap_or_else(|| Blocking::for_shape(m, n));
    gemm_at_b_blocked(dst, a, b, m, n, k, blocking);
}

/// [`gemm_at_b`] with an explicit [`Blocking`] (for tests: every blocking gives the same bits).
pub fn gemm_at_b_blocked<F: Float>(
    dst: &mut [F],
    a: &[F],
    b: &[F],
    m: usize,
    n: usize,
    k: usize,
    blocking: Blocking,
) {
    assert_eq!(dst.len(), m * n, "dst must be m × n");
    assert!(
        a.len() >= k * m && b.len() >= k * n,
        "A must be k × m, B k × n"
    );
    dst.fill(F::zero());
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let kc = blocking.kc.max(1);
    let rows = blocking.rows_per_task.max(1);
    let level = simd();
    dst.par_chunks_mut(rows * n)
        .enumerate()
        .for_each(|(bi, d)| {
            let r0 = bi * rows;
            let mut k0 = 0;
            while k0 < k {
                let k1 = (k0 + kc).min(k);
                accumulate(level, d, a, b, m, n, r0, k0, k1);
                k0 = k1;
            }
        });
}

/// Adds the products of `k0..k1` to the rows `r0..` of `dst` held in `d`, on `level`.
#[allow(clippy::too_many_arguments)]
fn accumulate<F: Float>(
    level: Simd,
    d: &mut [F],
    a: &[F],
    b: &[F],
    m: usize,
    n: usize,
    r0: usize,
    k0: usize,
    k1: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn wide<F: Float>(
            d: &mut [F],
            a: &[F],
            b: &[F],
            m: usize,
            n: usize,
            r0: usize,
            k0: usize,
            k1: usize,
        ) {
            if let (Some(d), Some(a), Some(b)) = (as_f32_mut(d), as_f32(a), as_f32(b)) {
                // dst rows r0.. (held in `d`, n apart); A (i, kk) at kk·m + r0 + i
                let rows = d.len() / n;
                assert!(a.len() >= k1 * m && r0 + rows <= m && b.len() >= k1 * n);
                // SAFETY: the asserts bound every element the kernel reaches.
                return unsafe {
                    avx512_f32::gemm(
                        d.as_mut_ptr(),
                        n,
                        a.as_ptr().add(r0),
                        1,
                        m,
                        b.as_ptr(),
                        n,
                        rows,
                        n,
                        k0,
                        k1,
                    )
                };
            }
            tiles::<F, 4, 32>(d, a, b, m, n, r0, k0, k1)
        }
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn mid<F: Float>(
            d: &mut [F],
            a: &[F],
            b: &[F],
            m: usize,
            n: usize,
            r0: usize,
            k0: usize,
            k1: usize,
        ) {
            tiles::<F, 4, 16>(d, a, b, m, n, r0, k0, k1)
        }
        match level {
            // SAFETY: simd() only reports features the CPU has.
            Simd::Avx512 => return unsafe { wide(d, a, b, m, n, r0, k0, k1) },
            Simd::Avx2 => return unsafe { mid(d, a, b, m, n, r0, k0, k1) },
            Simd::Baseline => {}
        }
    }
    let _ = level;
    tiles::<F, 4, 8>(d, a, b, m, n, r0, k0, k1)
}

/// Tiles of `MR × NR` elements of `dst`, each summed over `k0..k1` in registers starting
/// from its value in `dst`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiles<F: Float, const MR: usize, const NR: usize>(
    d: &mut [F],
    a: &[F],
    b: &[F],
    m: usize,
    n: usize,
    r0: usize,
    k0: usize,
    k1: usize,
) {
    let mb = d.len() / n;
    let mut i0 = 0;
    while i0 < mb {
        let mr = MR.min(mb - i0);
        let mut j0 = 0;
        while j0 < n {
            let nr = NR.min(n - j0);
            if mr == MR && nr == NR {
                let mut acc = [[F::zero(); NR]; MR];
                for (r, row) in acc.iter_mut().enumerate() {
                    row.copy_from_slice(&d[(i0 + r) * n + j0..(i0 + r) * n + j0 + NR]);
                }
                for kk in k0..k1 {
                    let bv: &[F; NR] = b[kk * n + j0..kk * n + j0 + NR].try_into().unwrap();
                    let av: &[F; MR] = a[kk * m + r0 + i0..kk * m + r0 + i0 + MR]
                        .try_into()
                        .unwrap();
                    for r in 0..MR {
                        for c in 0..NR {
                            acc[r][c] += av[r] * bv[c];
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    d[(i0 + r) * n + j0..(i0 + r) * n + j0 + NR].copy_from_slice(row);
                }
            } else {
                // an edge tile: the same order for every element, with the tile's running
                // sums side by side (independent additions, not one chain at a time)
                let mut acc = [[F::zero(); NR]; MR];
                for (r, row) in acc.iter_mut().enumerate().take(mr) {
                    row[..nr].copy_from_slice(&d[(i0 + r) * n + j0..(i0 + r) * n + j0 + nr]);
                }
                for kk in k0..k1 {
                    let bv = &b[kk * n + j0..kk * n + j0 + nr];
                    let av = &a[kk * m + r0 + i0..kk * m + r0 + i0 + mr];
                    for (row, &x) in acc.iter_mut().zip(av) {
                        for (s, &y) in row[..nr].iter_mut().zip(bv) {
                            *s += x * y;
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate().take(mr) {
                    d[(i0 + r) * n + j0..(i0 + r) * n + j0 + nr].copy_from_slice(&row[..nr]);
                }
            }
            j0 += nr;
        }
        i0 += mr;
    }
}

/// `C += A·B` on one thread, in the fixed order of the module documentation: every element
/// is its value in `C` plus its `k` products added strictly in order, each product rounded
/// and then added. `A` is `m × k` with rows `lda` apart, `B` is `k × n` row-major
/// (contiguous), `C` is `m × n` with rows `ldc` apart. The tiling (register tiles of 8 or 4
/// rows, partial tiles at the edges) decides only which elements are computed when, so the
/// result is the same for any `m`, any split of the rows between calls and any instruction
/// set: the batched non-plastic engine relies on this to give each episode's rows the same
/// bits whatever chunk of the batch they are computed in.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nn<F: Float>(
    c: &mut [F],
    ldc: usize,
    a: &[F],
    lda: usize,
    b: &[F],
    m: usize,
    n: usize,
    k: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c.len() >= (m - 1) * ldc + n && ldc >= n,
        "C must be m × n with rows ldc apart"
    );
    assert!(
        k == 0 || (a.len() >= (m - 1) * lda + k && lda >= k),
        "A must be m × k with rows lda apart"
    );
    assert!(b.len() >= k * n, "B must be k × n");
    if k == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn wide<F: Float>(
            c: &mut [F],
            ldc: usize,
            a: &[F],
            lda: usize,
            b: &[F],
            m: usize,
            n: usize,
            k: usize,
        ) {
            if let (Some(c), Some(a), Some(b)) = (as_f32_mut(c), as_f32(a), as_f32(b)) {
                // SAFETY: gemm_nn's asserts bound every element the kernel reaches.
                return unsafe {
                    avx512_f32::gemm(
                        c.as_mut_ptr(),
                        ldc,
                        a.as_ptr(),
                        lda,
                        1,
                        b.as_ptr(),
                        n,
                        m,
                        n,
                        0,
                        k,
                    )
                };
            }
            nn_tiles::<F, 4, 32>(c, ldc, a, lda, b, m, n, k)
        }
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn mid<F: Float>(
            c: &mut [F],
            ldc: usize,
            a: &[F],
            lda: usize,
            b: &[F],
            m: usize,
            n: usize,
            k: usize,
        ) {
            nn_tiles::<F, 4, 16>(c, ldc, a, lda, b, m, n, k)
        }
        match simd() {
            // SAFETY: simd() only reports features the CPU has.
            Simd::Avx512 => return unsafe { wide(c, ldc, a, lda, b, m, n, k) },
            Simd::Avx2 => return unsafe { mid(c, ldc, a, lda, b, m, n, k) },
            Simd::Baseline => {}
        }
    }
    nn_tiles::<F, 4, 8>(c, ldc, a, lda, b, m, n, k)
}

/// The tiles of [`gemm_nn`]: columns in panels of `NR` (the panel of `B` stays in L1 while
/// every row tile uses it), rows in tiles of `MR`; partial tiles at the edges keep the
/// same per-element order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nn_tiles<F: Float, const MR: usize, const NR: usize>(
    c: &mut [F],
    ldc: usize,
    a: &[F],
    lda: usize,
    b: &[F],
    m: usize,
    n: usize,
    k: usize,
) {
    let mut j0 = 0;
    while j0 < n {
        let nr = NR.min(n - j0);
        let mut i0 = 0;
        while i0 < m {
            let mr = MR.min(m - i0);
            if mr == MR && nr == NR {
                let mut acc = [[F::zero(); NR]; MR];
                for (r, row) in acc.iter_mut().enumerate() {
                    row.copy_from_slice(&c[(i0 + r) * ldc + j0..(i0 + r) * ldc + j0 + NR]);
                }
                for kk in 0..k {
                    let bv: &[F; NR] = b[kk * n + j0..kk * n + j0 + NR].try_into().unwrap();
                    let mut av = [F::zero(); MR];
                    for (r, v) in av.iter_mut().enumerate() {
                        *v = a[(i0 + r) * lda + kk];
                    }
                    for r in 0..MR {
                        for cc in 0..NR {
                            acc[r][cc] += av[r] * bv[cc];
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    c[(i0 + r) * ldc + j0..(i0 + r) * ldc + j0 + NR].copy_from_slice(row);
                }
            } else {
                // an edge tile: the same order, with independent running sums per element
                let mut acc = [[F::zero(); NR]; MR];
                for (r, row) in acc.iter_mut().enumerate().take(mr) {
                    row[..nr].copy_from_slice(&c[(i0 + r) * ldc + j0..(i0 + r) * ldc + j0 + nr]);
                }
                for kk in 0..k {
                    let bv = &b[kk * n + j0..kk * n + j0 + nr];
                    for (r, row) in acc.iter_mut().enumerate().take(mr) {
                        let av = a[(i0 + r) * lda + kk];
                        for (s, &bb) in row[..nr].iter_mut().zip(bv) {
                            *s += av * bb;
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate().take(mr) {
                    c[(i0 + r) * ldc + j0..(i0 + r) * ldc + j0 + nr].copy_from_slice(&row[..nr]);
                }
            }
            i0 += mr;
        }
        j0 += nr;
    }
}

/// `x` as `f32`s, when `F` is `f32`.
fn as_f32<F: Float>(x: &[F]) -> Option<&[f32]> {
    (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>())
        // SAFETY: F is f32.
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
}

/// `x` as `f32`s, when `F` is `f32`.
fn as_f32_mut<F: Float>(x: &mut [F]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>())
        // SAFETY: F is f32.
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f32>(), x.len()) })
}

/// The `f32` AVX-512 kernel of both GEMMs, written with intrinsics so that the register
/// tile can be 8 rows × 32 columns (16 accumulators; the generic tiles above stay at 4 × 32,
/// larger arrays of accumulators are not kept in registers by the compiler). The order is
/// the module's: every element starts from its value in `C` and adds its products
/// `A[i, kk]·B[kk, j]` for `kk` in `k0..k1` in order, each product rounded (`vmulps`) and
/// then added (`vaddps`), exactly what the scalar `c += a * b` does; the last column panel
/// is masked, rows left over after the 8-row tiles go in tiles of 4 and 1.
#[cfg(target_arch = "x86_64")]
mod avx512_f32 {
    use std::arch::x86_64::*;

    /// `C[i, j] += Σ_{kk ∈ k0..k1} A[i, kk]·B[kk, j]` for `i < m`, `j < n`, with `C[i, j]`
    /// at `c + i·ldc + j`, `A[i, kk]` at `a + i·a_rs + kk·a_ks` and `B[kk, j]` at
    /// `b + kk·ldb + j`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and every element named above is in bounds.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        c: *mut f32,
        ldc: usize,
        a: *const f32,
        a_rs: usize,
        a_ks: usize,
        b: *const f32,
        ldb: usize,
        m: usize,
        n: usize,
        k0: usize,
        k1: usize,
    ) {
        let g = Panel {
            c,
            ldc,
            a,
            a_rs,
            a_ks,
            b,
            ldb,
            k0,
            k1,
        };
        let mut j0 = 0;
        while j0 < n {
            // panels of 64 columns (4 vectors per row), the last one masked
            let w = (n - j0).min(64);
            let masks: [__mmask16; 4] =
                std::array::from_fn(|v| lanes(w.saturating_sub(16 * v).min(16)));
            let mut i0 = 0;
            while i0 + 6 <= m {
                g.tile::<6>(i0, j0, &masks);
                i0 += 6;
            }
            if i0 + 4 <= m {
                g.tile::<4>(i0, j0, &masks);
                i0 += 4;
            }
            if i0 + 2 <= m {
                g.tile::<2>(i0, j0, &masks);
                i0 += 2;
            }
            if i0 < m {
                g.tile::<1>(i0, j0, &masks);
            }
            j0 += 64;
        }
    }

    /// The mask of the first `w` of 16 lanes.
    #[inline(always)]
    fn lanes(w: usize) -> __mmask16 {
        ((1u32 << w) - 1) as __mmask16
    }

    struct Panel {
        c: *mut f32,
        ldc: usize,
        a: *const f32,
        a_rs: usize,
        a_ks: usize,
        b: *const f32,
        ldb: usize,
        k0: usize,
        k1: usize,
    }

    impl Panel {
        /// Rows `i0..i0 + MR`, columns `j0..j0 + 64` (lanes masked by `masks`): `MR × 4`
        /// accumulators, each broadcast of `A` used for 4 products.
        #[inline(always)]
        unsafe fn tile<const MR: usize>(&self, i0: usize, j0: usize, masks: &[__mmask16; 4]) {
            let mut acc = [[_mm512_setzero_ps(); 4]; MR];
            for (r, row) in acc.iter_mut().enumerate() {
                let p = self.c.add((i0 + r) * self.ldc + j0);
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(masks[v], p.wrapping_add(16 * v));
                }
            }
            let mut ap = self.a.add(i0 * self.a_rs + self.k0 * self.a_ks);
            let mut bp = self.b.add(self.k0 * self.ldb + j0);
            for _ in self.k0..self.k1 {
                let bv: [__m512; 4] = std::array::from_fn(|v| {
                    _mm512_maskz_loadu_ps(masks[v], bp.wrapping_add(16 * v))
                });
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*ap.add(r * self.a_rs));
                    for (s, &b) in row.iter_mut().zip(&bv) {
                        *s = _mm512_add_ps(*s, _mm512_mul_ps(x, b));
                    }
                }
                ap = ap.wrapping_add(self.a_ks);
                bp = bp.wrapping_add(self.ldb);
            }
            for (r, row) in acc.iter().enumerate() {
                let p = self.c.add((i0 + r) * self.ldc + j0);
                for (v, &x) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(p.wrapping_add(16 * v), masks[v], x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..len).map(|_| rng.uniform_in(-1.0, 1.0) as f32).collect()
    }

    #[test]
    fn matches_a_plain_loop_bit_for_bit() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (8, 33, 100),
            (17, 2, 300),
            (128, 129, 40),
            (13, 130, 21),
            (7, 64, 5),
        ] {
            let (a, b) = (data(k * m, 1), data(k * n, 2));
            let mut dst = vec![0.0f32; m * n];
            gemm_at_b(&mut dst, &a, &b, m, n, k);
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0f32;
                    for kk in 0..k {
                        s += a[kk * m + i] * b[kk * n + j];
                    }
                    assert_eq!(
                        dst[i * n + j].to_bits(),
                        s.to_bits(),
                        "({m}, {n}, {k}) at ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_nn_matches_a_plain_loop_bit_for_bit() {
        use crate::kernels::{set_simd, Simd};
        for level in [Simd::Baseline, Simd::Avx2, Simd::Avx512] {
            set_simd(level);
            for &(m, n, k, lda, ldc) in &[
                (1, 1, 1, 1, 1),
                (3, 5, 7, 9, 6),
                (8, 32, 100, 100, 32),
                (17, 70, 33, 40, 75),
                (16, 192, 192, 3840, 192),
                (13, 130, 21, 25, 131),
                (11, 64, 3, 3, 64),
                (5, 17, 8, 8, 20),
            ] {
                let (a, b) = (data((m - 1) * lda + k, 3), data(k * n, 4));
                let init = data((m - 1) * ldc + n, 5);
                let mut c = init.clone();
                gemm_nn(&mut c, ldc, &a, lda, &b, m, n, k);
                for i in 0..m {
                    for j in 0..n {
                        let mut s = init[i * ldc + j];
                        for kk in 0..k {
                            s += a[i * lda + kk] * b[kk * n + j];
                        }
                        assert_eq!(
                            c[i * ldc + j].to_bits(),
                            s.to_bits(),
                            "({m},{n},{k}) ({i},{j})"
                        );
                    }
                }
                // any split of the rows gives the same bits
                let mut parts = init.clone();
                let cut = m / 3;
                gemm_nn(&mut parts, ldc, &a, lda, &b, cut, n, k);
                gemm_nn(
                    &mut parts[cut * ldc..],
                    ldc,
                    &a[cut * lda..],
                    lda,
                    &b,
                    m - cut,
                    n,
                    k,
                );
                assert_eq!(parts, c);
            }
        }
        set_simd(Simd::Avx512);
    }
}
