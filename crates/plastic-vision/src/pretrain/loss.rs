//! The pretraining losses (docs/fsc.md §8), each with its gradient derived by hand and
//! checked against finite differences in f64 (`tests/pretrain_gradient.rs`).
//!
//! - [`cross_entropy`]: softmax cross-entropy of logits against class indices, mean over
//!   the batch (classification pretraining);
//! - [`nt_xent`]: SimCLR's normalised-temperature cross-entropy over `2N` embeddings whose
//!   rows `r` and `r + N` are the two views of one image.

use plastic::{Error, Float, Result};

/// SimCLR's temperature (docs/fsc.md §8).
pub const SIMCLR_TEMPERATURE: f64 = 0.07;

/// The value of a loss and its gradient with respect to its input.
#[derive(Debug, Clone, PartialEq)]
pub struct LossGrad<F> {
    /// The loss (a mean over rows).
    pub loss: f64,
    /// `d loss / d input`, the input's shape.
    pub grad: Vec<F>,
    /// Rows whose prediction is right: the argmax logit is the label (cross-entropy), or
    /// the most similar other row is the row's positive (NT-Xent).
    pub correct: usize,
}

/// `log Σ exp(x)` of a row, stable.
fn log_sum_exp(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + row.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

/// Index of the first maximum.
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for k in 1..row.len() {
        if row[k] > row[best] {
            best = k;
        }
    }
    best
}

/// Softmax cross-entropy of `logits` (N, C) against `labels` (N, each in `0..C`), mean over
/// the N rows: `L = (1/N) Σ_n (logsumexp(z_n) − z_n[y_n])`, so
/// `dL/dz_n = (softmax(z_n) − onehot(y_n)) / N`. Computed in f64.
pub fn cross_entropy<F: Float>(
    logits: &[F],
    labels: &[usize],
    classes: usize,
) -> Result<LossGrad<F>> {
    let n = labels.len();
    if n == 0 || classes == 0 || logits.len() != n * classes {
        return Err(Error::Data(format!(
            "cross-entropy: {} logits for {n} labels of {classes} classes; expected N·C = {}",
            logits.len(),
            n * classes
        )));
    }
    if let Some(&l) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::Data(format!(
            "cross-entropy: label {l} out of range; valid: 0..{classes}"
        )));
    }
    let mut loss = 0.0;
    let mut correct = 0;
    let mut grad = vec![F::zero(); logits.len()];
    let mut row = vec![0.0; classes];
    for (i, &y) in labels.iter().enumerate() {
        for (r, v) in row.iter_mut().zip(&logits[i * classes..(i + 1) * classes]) {
            *r = v.f64();
        }
        let lse = log_sum_exp(&row);
        loss += lse - row[y];
        if argmax(&row) == y {
            correct += 1;
        }
        for (k, g) in grad[i * classes..(i + 1) * classes].iter_mut().enumerate() {
            let p = (row[k] - lse).exp();
            *g = F::of((p - if k == y { 1.0 } else { 0.0 }) / n as f64);
        }
    }
    Ok(LossGrad {
        loss: loss / n as f64,
        grad,
        correct,
    })
}

/// NT-Xent over `z` (2N, K), rows `r` and `r + N` being the two views of image `r`
/// (docs/fsc.md §8). With `f_i = z_i / max(‖z_i‖, 1e-12)` and `S = f fᵀ`, row `i`'s positive
/// is `p(i) = (i + N) mod 2N`, its negatives the other `2N − 2` rows, and
///
/// `L = (1/2N) Σ_i [ log Σ_{j≠i} exp(S_ij/τ) − S_{i,p(i)}/τ ]`.
///
/// Gradient: `G_ij = dL/dS_ij = (softmax_{j≠i}(S_i·/τ)_j − [j = p(i)]) / (2N τ)` for
/// `j ≠ i`, 0 on the diagonal; `S = f fᵀ` gives `dL/df = (G + Gᵀ) f`; the normalisation
/// gives `dL/dz_i = (df_i − f_i (f_i · df_i)) / ‖z_i‖`. Computed in f64.
pub fn nt_xent<F: Float>(
    z: &[F],
    rows: usize,
    dim: usize,
    temperature: f64,
) -> Result<LossGrad<F>> {
    if rows < 2 || !rows.is_multiple_of(2) || dim == 0 || z.len() != rows * dim {
        return Err(Error::Data(format!(
            "NT-Xent needs an even number (≥ 2) of rows of equal size; got {} values for \
             {rows} rows of {dim}",
            z.len()
        )));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::Config(format!(
            "the NT-Xent temperature must be > 0, got {temperature}"
        )));
    }
    let half = rows / 2;
    let norms: Vec<f64> = z
        .chunks(dim)
        .map(|r| {
            r.iter()
                .map(|v| v.f64() * v.f64())
                .sum::<f64>()
                .sqrt()
                .max(1e-12)
        })
        .collect();
    let f: Vec<f64> = z
        .chunks(dim)
        .zip(&norms)
        .flat_map(|(r, &n)| r.iter().map(move |v| v.f64() / n))
        .collect();
    let dot = |i: usize, j: usize| -> f64 {
        f[i * dim..(i + 1) * dim]
            .iter()
            .zip(&f[j * dim..(j + 1) * dim])
            .map(|(a, b)| a * b)
            .sum()
    };
    let mut s = vec![0.0; rows * rows];
    for i in 0..rows {
        for j in i..rows {
            let v = dot(i, j);
            s[i * rows + j] = v;
            s[j * rows + i] = v;
        }
    }
    let mut loss = 0.0;
    let mut correct = 0;
    let mut g = vec![0.0; rows * rows];
    let scale = 1.0 / (rows as f64 * temperature);
    let mut logits = Vec::with_capacity(rows - 1);
    for i in 0..rows {
        let p = (i + half) % rows;
        logits.clear();
        logits.extend(
            (0..rows)
                .filter(|&j| j != i)
                .map(|j| s[i * rows + j] / temperature),
        );
        let lse = log_sum_exp(&logits);
        loss += lse - s[i * rows + p] / temperature;
        let others: Vec<usize> = (0..rows).filter(|&j| j != i).collect();
        if others[argmax(&logits)] == p {
            correct += 1;
        }
        for (&j, &l) in others.iter().zip(&logits) {
            let soft = (l - lse).exp();
            g[i * rows + j] = (soft - if j == p { 1.0 } else { 0.0 }) * scale;
        }
    }
    // dL/df = (G + Gᵀ) f, then back through the normalisation
    let mut grad = vec![F::zero(); z.len()];
    let mut df = vec![0.0; dim];
    for i in 0..rows {
        df.fill(0.0);
        for j in 0..rows {
            let w = g[i * rows + j] + g[j * rows + i];
            if w != 0.0 {
                for (d, &v) in df.iter_mut().zip(&f[j * dim..(j + 1) * dim]) {
                    *d += w * v;
                }
            }
        }
        let fi = &f[i * dim..(i + 1) * dim];
        let proj: f64 = fi.iter().zip(&df).map(|(a, b)| a * b).sum();
        for ((o, &d), &v) in grad[i * dim..(i + 1) * dim].iter_mut().zip(&df).zip(fi) {
            *o = F::of((d - v * proj) / norms[i]);
        }
    }
    Ok(LossGrad {
        loss: loss / rows as f64,
        grad,
        correct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_c() {
        let r = cross_entropy(&[0.0f64; 8], &[1, 3], 4).unwrap();
        assert!((r.loss - 4f64.ln()).abs() < 1e-15);
        let e = cross_entropy(&[0.0f64; 8], &[1, 4], 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 4 out of range; valid: 0..4"), "{e}");
    }

    #[test]
    fn nt_xent_of_identical_views_is_small_and_of_bad_shapes_an_error() {
        // two orthogonal images, each view equal to its partner: positives have S = 1
        let z = [1.0f64, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0];
        let r = nt_xent(&z, 4, 2, SIMCLR_TEMPERATURE).unwrap();
        assert_eq!(r.correct, 4);
        // row 0: positive 1/τ, negatives 0/τ (twice): loss = log(e^{1/τ} + 2) − 1/τ
        let t = SIMCLR_TEMPERATURE;
        let expected = ((1.0 / t).exp() + 2.0).ln() - 1.0 / t;
        assert!((r.loss - expected).abs() < 1e-12, "{} {expected}", r.loss);
        assert!(nt_xent(&z[..6], 3, 2, t).is_err());
        assert!(nt_xent(&z, 4, 2, 0.0).is_err());
    }
}
