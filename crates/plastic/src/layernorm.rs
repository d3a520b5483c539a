//! LayerNorm over the hidden state (docs/algorithm.md §1.3; eps 1e-5), with its backward and the
//! adjoint of its backward (needed by the gradient rule's second-order terms).

use crate::float::Float;

/// LayerNorm's epsilon.
pub const EPS: f64 = 1e-5;

/// `hn = γ ⊙ (x − μ)·r + β` with `r = 1/sqrt(var + eps)` (biased variance); returns `(μ, r)`.
pub fn forward<F: Float>(x: &[F], gamma: &[F], beta: &[F], out: &mut [F]) -> (F, F) {
    let n = F::of(x.len() as f64);
    let mu = x.iter().copied().sum::<F>() / n;
    let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<F>() / n;
    let r = F::one() / (var + F::of(EPS)).sqrt();
    for k in 0..x.len() {
        out[k] = gamma[k] * (x[k] - mu) * r + beta[k];
    }
    (mu, r)
}

/// Backward through LayerNorm for the input: `out = r (a − mean(a) − x̂ mean(a ⊙ x̂))` with
/// `a = γ ⊙ g` (pass `gamma = None` for γ = 1). Writes into `out`.
pub fn backward<F: Float>(x: &[F], mu: F, r: F, gamma: Option<&[F]>, g: &[F], out: &mut [F]) {
    let n = F::of(x.len() as f64);
    let a = |k: usize| gamma.map_or(g[k], |gm| gm[k] * g[k]);
    let xh = |k: usize| (x[k] - mu) * r;
    let mut sa = F::zero();
    let mut sax = F::zero();
    for k in 0..x.len() {
        sa += a(k);
        sax += a(k) * xh(k);
    }
    let (ma, max) = (sa / n, sax / n);
    for k in 0..x.len() {
        out[k] = r * (a(k) - ma - xh(k) * max);
    }
}

/// Adjoint of [`backward`] with respect to all its inputs. Given `dout` (adjoint of the
/// value `out` that `backward(x, μ, r, γ, g)` returned), accumulates `dg`, `dx` and `dγ`.
#[allow(clippy::too_many_arguments)]
pub fn backward_adjoint<F: Float>(
    x: &[F],
    mu: F,
    r: F,
    gamma: &[F],
    g: &[F],
    out: &[F],
    dout: &[F],
    dg: &mut [F],
    dx: &mut [F],
    dgamma: &mut [F],
) {
    let len = x.len();
    let n = F::of(len as f64);
    let xh: Vec<F> = x.iter().map(|&v| (v - mu) * r).collect();
    let a: Vec<F> = (0..len).map(|k| gamma[k] * g[k]).collect();
    let c = (0..len).map(|k| a[k] * xh[k]).sum::<F>() / n;
    // k = r·dout; da = k − mean(k) − x̂·mean(k ⊙ x̂)
    let kv: Vec<F> = dout.iter().map(|&d| r * d).collect();
    let mk = kv.iter().copied().sum::<F>() / n;
    let mkx = (0..len).map(|k| kv[k] * xh[k]).sum::<F>() / n;
    let mut dxh = vec![F::zero(); len];
    let mut d_r = F::zero();
    for k in 0..len {
        let da = kv[k] - mk - xh[k] * mkx;
        dgamma[k] += da * g[k];
        dg[k] += da * gamma[k];
        dxh[k] = -c * kv[k] - a[k] * mkx;
        d_r += dout[k] * out[k] / r;
    }
    // x̂ = (x − μ)·r, r = (var + eps)^(−1/2)
    d_r += (0..len).map(|k| dxh[k] * xh[k]).sum::<F>() / r;
    let two = F::one() + F::one();
    let d_var = -d_r * r * r * r / two;
    let mdxh = dxh.iter().copied().sum::<F>() / n;
    for k in 0..len {
        dx[k] += r * (dxh[k] - mdxh) + d_var * two * xh[k] / (r * n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn backward_adjoint_matches_finite_differences() {
        let n = 5;
        let mut rng = Rng::new(4);
        let mut v = |k: usize| -> Vec<f64> { (0..k).map(|_| rng.uniform_in(-1.0, 1.0)).collect() };
        let (x, gamma, g, w) = (v(n), v(n), v(n), v(n));
        let probe = |x: &[f64], gamma: &[f64], g: &[f64]| {
            let mut o = vec![0.0; n];
            let mut tmp = vec![0.0; n];
            let (mu, r) = forward(x, gamma, &vec![0.0; n], &mut tmp);
            backward(x, mu, r, Some(gamma), g, &mut o);
            o.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>()
        };
        let mut tmp = vec![0.0; n];
        let (mu, r) = forward(&x, &gamma, &vec![0.0; n], &mut tmp);
        let mut out = vec![0.0; n];
        backward(&x, mu, r, Some(&gamma), &g, &mut out);
        let (mut dg, mut dx, mut dgm) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        backward_adjoint(&x, mu, r, &gamma, &g, &out, &w, &mut dg, &mut dx, &mut dgm);
        let eps = 1e-6;
        for k in 0..n {
            let bump = |arr: &[f64], e: f64| {
                let mut a = arr.to_vec();
                a[k] += e;
                a
            };
            let fx = (probe(&bump(&x, eps), &gamma, &g) - probe(&bump(&x, -eps), &gamma, &g))
                / (2.0 * eps);
            let fg = (probe(&x, &gamma, &bump(&g, eps)) - probe(&x, &gamma, &bump(&g, -eps)))
                / (2.0 * eps);
            let fgm = (probe(&x, &bump(&gamma, eps), &g) - probe(&x, &bump(&gamma, -eps), &g))
                / (2.0 * eps);
            assert!((fx - dx[k]).abs() < 1e-7, "dx[{k}] {fx} vs {}", dx[k]);
            assert!((fg - dg[k]).abs() < 1e-7, "dg[{k}]");
            assert!((fgm - dgm[k]).abs() < 1e-7, "dgamma[{k}]");
        }
    }
}
