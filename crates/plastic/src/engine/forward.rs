//! The forward pass of one episode: the step (docs/algorithm.md §1), the rates and the raw
//! update's norm (§2.1–2.3), the plastic update (§2.4–2.5), and the regeneration of the
//! plastic weights of a segment from its checkpoint.

use super::record::{Field, StepMut, StepView};
use super::{resize, signal, EpisodeState, Pass};
use crate::cell;
use crate::episode::Episodes;
use crate::float::Float;
use crate::kernels::{self, mat_vec, vec_mat};
use crate::layernorm;
use crate::params::LayerId;

/// A recurrent-matrix update of step `t − 1` left for step `t` (see [`Pass::forward_step`]):
/// its source `P_{t−1}` and what the rule needs from step `t − 1`.
pub(super) struct FusedUpdate<'a, F> {
    src: &'a [F],
    x: &'a [F],
    h_prev: &'a [F],
    view: StepView<'a, F>,
}

impl<'a, F: Float> FusedUpdate<'a, F> {
    /// The rule's `(pre, δ)` of layer `id` at step `t − 1`.
    fn signals(&self, id: LayerId, rule: crate::config::Rule) -> (&'a [F], &'a [F]) {
        let (sp, sd) = rule.signals(id);
        (
            signal(sp, self.x, self.h_prev, &self.view),
            signal(sd, self.x, self.h_prev, &self.view),
        )
    }
}

/// `dst = src ⊙ 1[u > 0]` (the adjoint through a ReLU whose output is `u`).
#[inline]
pub(super) fn relu_mask<F: Float>(dst: &mut [F], src: &[F], u: &[F]) {
    for ((d, &s), &u) in dst.iter_mut().zip(src).zip(u) {
        *d = if u > F::zero() { s } else { F::zero() };
    }
}

impl<F: Float> Pass<'_, F> {
    /// `out = b + P_b + x·(W + P_W)` for one layer.
    #[inline]
    pub(super) fn linear(&self, id: LayerId, x: &[F], p: Option<&[F]>, out: &mut [F]) {
        let l = self.layout().layer(id);
        out.copy_from_slice(self.b(id));
        if let Some(p) = p {
            for (o, &pb) in out.iter_mut().zip(&p[l.pb..l.pb + l.cols]) {
                *o += pb;
            }
        }
        vec_mat(x, self.w(id), self.pw(id, p), out);
    }

    /// One forward step (docs/algorithm.md §1 and §2.1–2.3): fills the record with every
    /// activation, the rates, the rule's `δ` vectors and the update norm. `p` is `P_t`.
    ///
    /// With `fused`, the recurrent matrices of `p` are not yet `P_t`: their update from
    /// `P_{t−1}` is done here, in the same pass as the step's mat-vec with them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_step(
        &self,
        x: &[F],
        h_prev: &[F],
        c_prev: &[F],
        mut p: Option<&mut [F]>,
        fused: Option<&FusedUpdate<'_, F>>,
        r: &mut StepMut<'_, F>,
        inv_bd: F,
    ) {
        self.input_layer(x, p.as_deref(), r);
        self.cell_pre_activation(h_prev, p.as_deref_mut(), fused, r);
        let p = p.as_deref();
        self.cell(c_prev, r);
        self.layer_norm(r);
        {
            let (hn, y) = r.pair(Field::Hidden, Field::Output);
            self.linear(LayerId::Out, hn, p, y);
        }
        self.inner_loss_and_rates(r, inv_bd);
        let Some(p) = p else { return };
        if self.dims.rule.is_second_order() {
            self.inner_errors(c_prev, p, r, inv_bd);
        }
        self.update_norm(x, h_prev, r);
    }

    /// Input layer `u = relu(x·(W + P) + b + P_b)`, or `u = x` without one (docs/fsc.md §5).
    fn input_layer(&self, x: &[F], p: Option<&[F]>, r: &mut StepMut<'_, F>) {
        if self.config().input_layer {
            self.linear(LayerId::In, x, p, r.get(Field::InputPre));
            let (a_in, u) = r.pair(Field::InputPre, Field::InputOut);
            for (u, &a) in u.iter_mut().zip(a_in) {
                *u = crate::cell::relu(a);
            }
        } else {
            r.get(Field::InputOut).copy_from_slice(x);
        }
    }

    /// `z = h_prev·(W_h + P_h) + u·(W_i + P_i) + biases`.
    fn cell_pre_activation(
        &self,
        h_prev: &[F],
        mut p: Option<&mut [F]>,
        fused: Option<&FusedUpdate<'_, F>>,
        r: &mut StepMut<'_, F>,
    ) {
        let gh = self.dims.gh;
        let l_h = self.layout().layer(LayerId::RecH);
        let l_i = self.layout().layer(LayerId::RecI);
        let z = r.get(Field::CellPre);
        let (bh, bi) = (self.b(LayerId::RecH), self.b(LayerId::RecI));
        for ((z, &a), &b) in z.iter_mut().zip(bh).zip(bi) {
            *z = a + b;
        }
        if let Some(p) = p.as_deref() {
            let (ph, pi) = (&p[l_h.pb..l_h.pb + gh], &p[l_i.pb..l_i.pb + gh]);
            for ((z, &a), &b) in z.iter_mut().zip(ph).zip(pi) {
                *z += a + b;
            }
        }
        self.recurrent_vec_mat(LayerId::RecH, h_prev, p.as_deref_mut(), fused, z);
        let (u, z) = r.pair(Field::InputOut, Field::CellPre);
        self.recurrent_vec_mat(LayerId::RecI, u, p, fused, z);
    }

    /// The cell's activations and hidden state from `z` (and `c_prev` for the LSTM).
    fn cell(&self, c_prev: &[F], r: &mut StepMut<'_, F>) {
        let (h, gh) = (self.dims.h, self.dims.gh);
        if self.dims.lstm {
            // act, c, tanh c and h_raw are consecutive fields
            let (head, tail) = r.before_and_rest(Field::CellAct);
            let z = head.get(Field::CellPre);
            let (act, tail) = tail.split_at_mut(gh);
            let (c, tail) = tail.split_at_mut(h);
            let (tc, tail) = tail.split_at_mut(h);
            cell::lstm_forward(z, c_prev, act, c, tc, &mut tail[..h]);
        } else {
            let (z, act) = r.pair(Field::CellPre, Field::CellAct);
            cell::rnn_forward(z, act);
            let (act, hr) = r.pair(Field::CellAct, Field::HiddenRaw);
            hr.copy_from_slice(act);
        }
    }

    /// LayerNorm of the hidden state (docs/algorithm.md §1.3), or a copy without it.
    fn layer_norm(&self, r: &mut StepMut<'_, F>) {
        let (hr, hn) = r.pair(Field::HiddenRaw, Field::Hidden);
        if let Some((g, b)) = self.ln_params() {
            let (mu, rstd) = layernorm::forward(hr, g, b, hn);
            r.s.ln_mean = mu;
            r.s.ln_rstd = rstd;
        } else {
            hn.copy_from_slice(hr);
        }
    }

    /// The inner loss and the (modulated) rates η0, λ (docs/algorithm.md §2.1); η = η0 until
    /// norm clipping.
    fn inner_loss_and_rates(&self, r: &mut StepMut<'_, F>, inv_bd: F) {
        let cfg = self.config();
        let two = F::one() + F::one();
        let s = self.out_weight();
        let y = r.get(Field::Output);
        let inner: F = y.iter().zip(s).map(|(&y, &s)| (y * s) * (y * s)).sum::<F>() * inv_bd;
        let (sig, eta0, lam) = if cfg.modulation {
            let sig = cell::sigmoid(y[self.dims.d - 1]);
            (
                sig,
                F::of(cfg.p_lr) * two * sig,
                F::of(cfg.p_wd) * two * sig,
            )
        } else {
            (F::zero(), F::of(cfg.p_lr), F::of(cfg.p_wd))
        };
        r.s.inner_loss = inner;
        r.s.sigmoid_m = sig;
        r.s.eta0 = eta0;
        r.s.lambda = lam;
        r.s.eta = eta0;
    }

    /// Gradient rule: the inner errors (docs/algorithm.md §2.2), with `h`, `c` from `t − 1`
    /// held constant.
    fn inner_errors(&self, c_prev: &[F], p: &[F], r: &mut StepMut<'_, F>, inv_bd: F) {
        let two = F::one() + F::one();
        let s = self.out_weight();
        {
            let (y, gy) = r.pair(Field::Output, Field::InnerErrorOut);
            for k in 0..self.dims.d {
                gy[k] = two * inv_bd * s[k] * s[k] * y[k];
            }
        }
        {
            let (gy, ghn) = r.pair(Field::InnerErrorOut, Field::InnerErrorHidden);
            ghn.fill(F::zero());
            mat_vec(
                self.w(LayerId::Out),
                self.pw(LayerId::Out, Some(p)),
                gy,
                ghn,
            );
        }
        {
            let (mu, rstd) = (r.s.ln_mean, r.s.ln_rstd);
            let (head, ghr) = r.before_and(Field::InnerErrorHiddenRaw);
            let ghn = head.get(Field::InnerErrorHidden);
            match self.ln_params() {
                Some((g, _)) => layernorm::backward(head.h_raw(), mu, rstd, Some(g), ghn, ghr),
                None => ghr.copy_from_slice(ghn),
            }
            let (head, gz) = r.before_and(Field::InnerErrorCell);
            let ghr = head.get(Field::InnerErrorHiddenRaw);
            if self.dims.lstm {
                cell::lstm_inner_backward(head.act(), c_prev, head.tanh_c(), ghr, gz);
            } else {
                cell::rnn_backward(head.act(), ghr, gz);
            }
        }
        if self.config().input_layer {
            let (gz, gu) = r.pair(Field::InnerErrorCell, Field::InnerErrorInputOut);
            gu.fill(F::zero());
            mat_vec(
                self.w(LayerId::RecI),
                self.pw(LayerId::RecI, Some(p)),
                gz,
                gu,
            );
            let (head, gain) = r.before_and(Field::InnerErrorInputPre);
            relu_mask(gain, head.get(Field::InnerErrorInputOut), head.u());
        }
    }

    /// Norm of the raw update (docs/algorithm.md §2.3), `Σ_l (‖pre‖² + [bias]) ‖δ‖²`
    /// factorised per layer, and the clipped rate η.
    fn update_norm(&self, x: &[F], h_prev: &[F], r: &mut StepMut<'_, F>) {
        let rule = self.dims.rule;
        let bias = if rule.updates_bias() {
            F::one()
        } else {
            F::zero()
        };
        let mut n2 = F::zero();
        let mut pre2 = [F::zero(); 4];
        let mut del2 = [F::zero(); 4];
        {
            let view = r.view();
            for &id in self.layout().layer_ids {
                let k = id as usize;
                let (sp, sd) = rule.signals(id);
                pre2[k] = kernels::sq_norm(signal(sp, x, h_prev, &view));
                del2[k] = kernels::sq_norm(signal(sd, x, h_prev, &view));
                n2 += (pre2[k] + bias) * del2[k];
            }
        }
        let n = n2.sqrt();
        let clip = F::of(self.config().inner_grad_clip);
        let eta0 = r.s.eta0;
        // quirk fix: the reference computes NaN at n = 0; there is nothing to clip there
        r.s.eta = if n > clip { eta0 * clip / n } else { eta0 };
        r.s.update_norm = n;
        r.s.pre_sq = pre2;
        r.s.delta_sq = del2;
    }

    /// `z += x·(W + P)` for a recurrent layer; with `fused`, first brings that layer's
    /// matrix in `p` from `P_{t−1}` to `P_t`, in the same pass.
    fn recurrent_vec_mat(
        &self,
        id: LayerId,
        x: &[F],
        p: Option<&mut [F]>,
        fused: Option<&FusedUpdate<'_, F>>,
        z: &mut [F],
    ) {
        let l = *self.layout().layer(id);
        match (p, fused) {
            (Some(p), Some(f)) => {
                let (pre, del) = f.signals(id, self.dims.rule);
                kernels::plastic_update_vec_mat(
                    &mut p[l.pw..l.pb],
                    &f.src[l.pw..l.pb],
                    self.alpha_w(id),
                    pre,
                    del,
                    f.view.s.eta,
                    f.view.s.lambda,
                    self.config().weight_clip.map(F::of),
                    x,
                    self.w(id),
                    z,
                );
            }
            (p, _) => vec_mat(x, self.w(id), p.map(|p| &p[l.pw..l.pb]), z),
        }
    }

    /// The plastic update after a step (docs/algorithm.md §2.4–2.5):
    /// `dst = clamp((1 − λ)src + η α ⊙ Δ)`; with `defer_recurrent`, leaves the recurrent
    /// matrices to the next step's [`Self::recurrent_vec_mat`].
    pub(super) fn update(
        &self,
        x: &[F],
        h_prev: &[F],
        v: &StepView<'_, F>,
        src: &[F],
        dst: &mut [F],
        defer_recurrent: bool,
    ) {
        let rule = self.dims.rule;
        let (eta, lam) = (v.s.eta, v.s.lambda);
        let clip = self.config().weight_clip.map(F::of);
        let one = [F::one()];
        for &id in self.layout().layer_ids {
            let l = *self.layout().layer(id);
            let (sp, sd) = rule.signals(id);
            let (pre, del) = (signal(sp, x, h_prev, v), signal(sd, x, h_prev, v));
            let (w, b) = (l.pw..l.pb, l.pb..l.pb + l.cols);
            let deferred = defer_recurrent && matches!(id, LayerId::RecH | LayerId::RecI);
            if !deferred {
                kernels::plastic_update(
                    &mut dst[w.clone()],
                    &src[w],
                    self.alpha_w(id),
                    pre,
                    Some(del),
                    eta,
                    lam,
                    clip,
                );
            }
            let bias_delta = rule.updates_bias().then_some(del);
            kernels::plastic_update(
                &mut dst[b.clone()],
                &src[b],
                self.alpha_b(id),
                &one,
                bias_delta,
                eta,
                lam,
                clip,
            );
        }
    }

    /// Runs the forward pass of one episode, recording every step into `ws` (sized by
    /// [`Pass::record_sizes`] for `train`). With `train`, snapshots/checkpoints of `P` are
    /// kept for the backward pass. The norm of the plastic weights after each step is
    /// written to `plastic_norm` unless it is empty (in training, where `P_T` is not kept,
    /// `P_T` is computed into the scratch for its norm).
    pub(super) fn run_forward(
        &self,
        ep: &Episodes<F>,
        b: usize,
        ws: &mut EpisodeState<'_, F>,
        train: bool,
        plastic_norm: &mut [F],
    ) {
        let dims = &self.dims;
        let stride = dims.stride();
        let t_len = ep.steps;
        let plen = self.layout().plastic_len;
        let plastic = plen > 0;
        let norms = !plastic_norm.is_empty();
        let inv_bd = F::one() / F::of((ep.batch * dims.d) as f64);
        debug_assert_eq!(ws.rec.len(), t_len * stride);
        ws.rec.fill(F::zero());
        ws.scalars.fill(Default::default());
        resize(ws.zeros, dims.h);
        // segments of k steps in training, checkpointed at their first step
        let k = if train { ws.seg_len } else { 1 };
        // the slots of P in the arena (sized by the caller): k in training (slot t − s0
        // holds P_t for the backward pass), or two when only the checkpoints are kept (a
        // tape's forward pass, docs/algorithm.md §8); two ping-pong slots otherwise
        let ring = if plastic { ws.arena.len() / plen } else { 1 };
        debug_assert!(ring == k || ring == 2);
        // only P_0 must start at zero; every other slot is written before it is read
        if plastic {
            ws.arena[..plen].fill(F::zero());
        }
        if !ws.ckpt.is_empty() {
            ws.ckpt[..plen].fill(F::zero());
        }
        // in training, the recurrent matrices' update after step t is done by step t + 1
        // together with its mat-vec (see `forward_step`)
        let mut pending = false;
        for t in 0..t_len {
            let (prev, cur) = ws.rec.split_at_mut(t * stride);
            let cur = &mut cur[..stride];
            let (sprev, scur) = ws.scalars.split_at_mut(t);
            let (h_prev, c_prev) = if t == 0 {
                (&ws.zeros[..], &ws.zeros[..])
            } else {
                let pv = StepView::at(prev, sprev, dims, t - 1);
                (pv.h(), pv.c())
            };
            let x = ep.x(b, t);
            let slot = if train { t % ring } else { t % 2 };
            let mut rm = StepMut::new(cur, &mut scur[0], dims);
            if !plastic {
                self.forward_step(x, h_prev, c_prev, None, None, &mut rm, inv_bd);
                continue;
            }
            if pending {
                // P_t's recurrent matrices come from P_{t−1} (slot of t − 1) here
                let (src, dst) = two_slots(ws.arena, plen, (t - 1) % ring, slot);
                let h_pp = if t >= 2 {
                    StepView::at(prev, sprev, dims, t - 2).h()
                } else {
                    &ws.zeros[..]
                };
                let fused = FusedUpdate {
                    src,
                    x: ep.x(b, t - 1),
                    h_prev: h_pp,
                    view: StepView::at(prev, sprev, dims, t - 1),
                };
                self.forward_step(x, h_prev, c_prev, Some(dst), Some(&fused), &mut rm, inv_bd);
                if t % k == 0 {
                    // segment boundary: P_t is complete now; keep it as the checkpoint
                    let seg = t / k;
                    let p_t = &ws.arena[slot * plen..(slot + 1) * plen];
                    ws.ckpt[seg * plen..(seg + 1) * plen].copy_from_slice(p_t);
                }
                if norms {
                    // P_t is complete now: the norm after step t − 1's update
                    let p_t = &ws.arena[slot * plen..(slot + 1) * plen];
                    plastic_norm[t - 1] = kernels::sq_norm(p_t).sqrt();
                }
                pending = false;
            } else {
                let p_t = &mut ws.arena[slot * plen..(slot + 1) * plen];
                self.forward_step(x, h_prev, c_prev, Some(p_t), None, &mut rm, inv_bd);
            }
            let view = StepView::at(&*cur, &*scur, dims, 0);
            if train {
                if t + 1 == t_len {
                    // P_T is never used by the backward pass; only its norm is asked for
                    if norms {
                        resize(ws.dp, plen);
                        let src = &ws.arena[slot * plen..(slot + 1) * plen];
                        self.update(x, h_prev, &view, src, ws.dp, false);
                        plastic_norm[t] = kernels::sq_norm(ws.dp).sqrt();
                    }
                    break;
                }
                let (src, dst) = two_slots(ws.arena, plen, slot, (t + 1) % ring);
                self.update(x, h_prev, &view, src, dst, true);
                pending = true;
            } else {
                let (src, dst) = two_slots(ws.arena, plen, slot, 1 - slot);
                self.update(x, h_prev, &view, src, dst, false);
                plastic_norm[t] = kernels::sq_norm(dst).sqrt();
            }
        }
    }

    /// Regenerates `P_{s0+1} .. P_{s0+len−1}` into arena slots 1.. from slot 0 and the records.
    pub(super) fn regenerate(
        &self,
        ep: &Episodes<F>,
        b: usize,
        ws: &mut EpisodeState<'_, F>,
        s0: usize,
        len: usize,
    ) {
        let dims = &self.dims;
        let plen = self.layout().plastic_len;
        for j in 0..len.saturating_sub(1) {
            let t = s0 + j;
            let h_prev = if t == 0 {
                &ws.zeros[..]
            } else {
                StepView::at(ws.rec, ws.scalars, dims, t - 1).h()
            };
            let view = StepView::at(ws.rec, ws.scalars, dims, t);
            let (lo, hi) = ws.arena.split_at_mut((j + 1) * plen);
            self.update(
                ep.x(b, t),
                h_prev,
                &view,
                &lo[j * plen..],
                &mut hi[..plen],
                false,
            );
        }
    }
}

/// Slot `src` (read-only) and slot `dst` (mutable) of an arena of `plen`-element slots.
fn two_slots<F>(arena: &mut [F], plen: usize, src: usize, dst: usize) -> (&[F], &mut [F]) {
    debug_assert_ne!(src, dst);
    if src < dst {
        let (lo, hi) = arena.split_at_mut(dst * plen);
        (&lo[src * plen..(src + 1) * plen], &mut hi[..plen])
    } else {
        let (lo, hi) = arena.split_at_mut(src * plen);
        (&hi[..plen], &mut lo[dst * plen..(dst + 1) * plen])
    }
}
