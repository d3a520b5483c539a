//! The recurrent cells (docs/algorithm.md §1.2) and their derivatives.
//!
//! Besides the usual forward and backward, the gradient rule needs the cell's *inner*
//! backward (`g_z` from `g_h`, with the previous cell state held constant, §2.2) and the
//! meta-gradient needs the adjoint of that inner backward: the second-order terms.
//! Activations are kept as `act` (RNN: `relu(z)`; LSTM: the gates `[i, f, g, o]`).

use crate::float::Float;

#[inline(always)]
/// The logistic function `1 / (1 + e^{−x})`.
pub(crate) fn sigmoid<F: Float>(x: F) -> F {
    F::one() / (F::one() + (-x).exp())
}

/// `relu(z) = max(z, 0)`, but NaN stays NaN (`max` alone would map NaN to 0 and hide a
/// broken parameter or input); every other value gives exactly the bits of `z.max(0)`.
#[inline(always)]
pub fn relu<F: Float>(z: F) -> F {
    if z.is_nan() {
        z
    } else {
        z.max(F::zero())
    }
}

/// RNN forward: `act = h = relu(z)`.
pub fn rnn_forward<F: Float>(z: &[F], h: &mut [F]) {
    for (h, &z) in h.iter_mut().zip(z) {
        *h = relu(z);
    }
}

/// LSTM forward from pre-activations `z` (4H) and `c_prev`: gates `act`, new cell state `c`,
/// `tc = tanh(c)` and `h = o ⊙ tc`.
pub fn lstm_forward<F: Float>(
    z: &[F],
    c_prev: &[F],
    act: &mut [F],
    c: &mut [F],
    tc: &mut [F],
    h: &mut [F],
) {
    let n = c_prev.len();
    for k in 0..n {
        let i = sigmoid(z[k]);
        let f = sigmoid(z[n + k]);
        let g = z[2 * n + k].tanh();
        let o = sigmoid(z[3 * n + k]);
        act[k] = i;
        act[n + k] = f;
        act[2 * n + k] = g;
        act[3 * n + k] = o;
        c[k] = f * c_prev[k] + i * g;
        tc[k] = c[k].tanh();
        h[k] = o * tc[k];
    }
}

/// RNN inner backward: `g_z = g_h ⊙ 1[z > 0]`; also the standard backward (`dz` from `dh`).
pub fn rnn_backward<F: Float>(act: &[F], g_h: &[F], g_z: &mut [F]) {
    for k in 0..act.len() {
        g_z[k] = if act[k] > F::zero() {
            g_h[k]
        } else {
            F::zero()
        };
    }
}

/// LSTM inner backward: `g_z` (4H) from `g_h` with `c_prev` held constant.
pub fn lstm_inner_backward<F: Float>(act: &[F], c_prev: &[F], tc: &[F], g_h: &[F], g_z: &mut [F]) {
    let n = c_prev.len();
    let one = F::one();
    for k in 0..n {
        let (i, f, g, o) = (act[k], act[n + k], act[2 * n + k], act[3 * n + k]);
        let t = tc[k];
        let g_o = g_h[k] * t;
        let g_c = g_h[k] * o * (one - t * t);
        g_z[k] = g_c * g * i * (one - i);
        g_z[n + k] = g_c * c_prev[k] * f * (one - f);
        g_z[2 * n + k] = g_c * i * (one - g * g);
        g_z[3 * n + k] = g_o * o * (one - o);
    }
}

/// Adjoint of [`lstm_inner_backward`]: given `dg_z`, accumulates the adjoints of `g_h`, of
/// the gate activations `act` and of `c_prev`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_inner_adjoint<F: Float>(
    act: &[F],
    c_prev: &[F],
    tc: &[F],
    g_h: &[F],
    dg_z: &[F],
    dg_h: &mut [F],
    d_act: &mut [F],
    d_c_prev: &mut [F],
) {
    let n = c_prev.len();
    let (one, two) = (F::one(), F::one() + F::one());
    for k in 0..n {
        let (i, f, g, o) = (act[k], act[n + k], act[2 * n + k], act[3 * n + k]);
        let (t, gh, cp) = (tc[k], g_h[k], c_prev[k]);
        let dt = one - t * t;
        let g_o = gh * t;
        let g_c = gh * o * dt;
        let (g_i, g_f, g_g) = (g_c * g, g_c * cp, g_c * i);
        let (ai, af, ag, ao) = (dg_z[k], dg_z[n + k], dg_z[2 * n + k], dg_z[3 * n + k]);
        // g_z blocks = g_x ⊙ act'(x)
        let dg_i = ai * i * (one - i);
        let mut di = ai * g_i * (one - two * i);
        let dg_f = af * f * (one - f);
        let mut df = af * g_f * (one - two * f);
        let dg_g = ag * (one - g * g);
        let mut dg = ag * g_g * (-two * g);
        let dg_o = ao * o * (one - o);
        let mut d_o = ao * g_o * (one - two * o);
        // g_i = g_c·g, g_f = g_c·c_prev, g_g = g_c·i
        let dg_c = dg_i * g + dg_f * cp + dg_g * i;
        dg += dg_i * g_c;
        let mut dcp = dg_f * g_c;
        di += dg_g * g_c;
        // g_c = g_h·o·(1 − t²), g_o = g_h·t
        dg_h[k] += dg_c * o * dt + dg_o * t;
        d_o += dg_c * gh * dt;
        let d_t = dg_c * gh * o * (-two * t) + dg_o * gh;
        // t = tanh(c), c = f·c_prev + i·g
        let dc = d_t * dt;
        df += dc * cp;
        dcp += dc * f;
        di += dc * g;
        dg += dc * i;
        d_act[k] += di;
        d_act[n + k] += df;
        d_act[2 * n + k] += dg;
        d_act[3 * n + k] += d_o;
        d_c_prev[k] += dcp;
    }
}

/// LSTM standard backward: from `dh` (adjoint of `h`) and `dc_next` (adjoint of `c` from
/// the next step), accumulates the adjoints of `act` and of `c_prev`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward<F: Float>(
    act: &[F],
    c_prev: &[F],
    tc: &[F],
    dh: &[F],
    dc_next: &[F],
    d_act: &mut [F],
    d_c_prev: &mut [F],
) {
    let n = c_prev.len();
    let one = F::one();
    for k in 0..n {
        let (i, f, g, o) = (act[k], act[n + k], act[2 * n + k], act[3 * n + k]);
        let t = tc[k];
        let dc = dc_next[k] + dh[k] * o * (one - t * t);
        d_act[3 * n + k] += dh[k] * t;
        d_act[k] += dc * g;
        d_act[n + k] += dc * c_prev[k];
        d_act[2 * n + k] += dc * i;
        d_c_prev[k] += dc * f;
    }
}

/// LSTM: from the adjoints of the gate activations to the adjoints of `z`.
pub fn lstm_act_to_z<F: Float>(act: &[F], d_act: &[F], dz: &mut [F]) {
    let n = act.len() / 4;
    let one = F::one();
    for k in 0..act.len() {
        let a = act[k];
        dz[k] = if (2 * n..3 * n).contains(&k) {
            d_act[k] * (one - a * a)
        } else {
            d_act[k] * a * (one - a)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The inner backward's adjoint against central differences of a scalar probe.
    #[test]
    fn lstm_inner_adjoint_matches_finite_differences() {
        let n = 3;
        let mut rng = Rng::new(9);
        let mut v = |k: usize| -> Vec<f64> { (0..k).map(|_| rng.uniform_in(-1.5, 1.5)).collect() };
        let (z, cp, gh, w) = (v(4 * n), v(n), v(n), v(4 * n));
        // probe(z, c_prev, g_h) = w · inner_backward(...)
        let probe = |z: &[f64], cp: &[f64], gh: &[f64]| {
            let (mut act, mut c, mut tc, mut h) =
                (vec![0.0; 4 * n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            lstm_forward(z, cp, &mut act, &mut c, &mut tc, &mut h);
            let mut gz = vec![0.0; 4 * n];
            lstm_inner_backward(&act, cp, &tc, gh, &mut gz);
            gz.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>()
        };
        let (mut act, mut c, mut tc, mut h) =
            (vec![0.0; 4 * n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        lstm_forward(&z, &cp, &mut act, &mut c, &mut tc, &mut h);
        let (mut dgh, mut dact, mut dcp) = (vec![0.0; n], vec![0.0; 4 * n], vec![0.0; n]);
        lstm_inner_adjoint(&act, &cp, &tc, &gh, &w, &mut dgh, &mut dact, &mut dcp);
        let mut dz = vec![0.0; 4 * n];
        lstm_act_to_z(&act, &dact, &mut dz);
        let eps = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64| (f(eps) - f(-eps)) / (2.0 * eps);
        for k in 0..4 * n {
            let g = fd(&|e| {
                let mut z2 = z.clone();
                z2[k] += e;
                probe(&z2, &cp, &gh)
            });
            assert!((g - dz[k]).abs() < 1e-8, "dz[{k}]: fd {g} vs {}", dz[k]);
        }
        for k in 0..n {
            let g = fd(&|e| {
                let mut c2 = cp.clone();
                c2[k] += e;
                probe(&z, &c2, &gh)
            });
            assert!((g - dcp[k]).abs() < 1e-8, "dc_prev[{k}]");
            let g = fd(&|e| {
                let mut g2 = gh.clone();
                g2[k] += e;
                probe(&z, &cp, &g2)
            });
            assert!((g - dgh[k]).abs() < 1e-8, "dg_h[{k}]");
        }
    }
}
