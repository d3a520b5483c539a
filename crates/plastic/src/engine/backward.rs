//! The backward pass of one episode: backpropagation through time through the steps and
//! the plastic updates, including the second-order terms of the gradient rule
//! (docs/algorithm.md §2, §5).
//!
//! Per step, from the last to the first: the output adjoint (the loss's or the caller's),
//! the adjoint of the update that made `P_{t+1}` ([`Pass::update_backward`]), of norm
//! clipping and of the modulated rates ([`Pass::rates_backward`]), the rule's signal
//! adjoints routed to their sources ([`Pass::route_signal_adjoints`]), and the standard
//! backward through the step ([`Pass::step_backward`]).

use super::forward::relu_mask;
use super::record::{Field, StepView};
use super::{add_to, resize, signal, EpisodeState, Pass, Seed};
use crate::cell;
use crate::episode::{step_loss, Episodes};
use crate::float::Float;
use crate::kernels::{self, mat_vec, vec_mat, DeferredAlpha, LazyAdjoint};
use crate::layernorm;
use crate::params::LayerId;
use crate::plasticity::Signal;

/// Adjoint vectors of one step (zeroed at every step), and what carries between steps.
#[derive(Default)]
pub(super) struct BackScratch<F> {
    dpred: Vec<F>,
    dy: Vec<F>,
    dhn: Vec<F>,
    dhr: Vec<F>,
    dact: Vec<F>,
    dz: Vec<F>,
    dcp: Vec<F>,
    du: Vec<F>,
    dhp: Vec<F>,
    dain: Vec<F>,
    dx: Vec<F>,
    /// Adjoints of the inner errors (gradient rule).
    dgy: Vec<F>,
    dghn: Vec<F>,
    dghr: Vec<F>,
    dgz: Vec<F>,
    dgu: Vec<F>,
    dgain: Vec<F>,
    /// Carried to step t − 1: the adjoints of `h` and `c`.
    dh: Vec<F>,
    dc: Vec<F>,
    /// Per layer: the adjoints of the rule's `pre` and `δ`.
    dpre: [Vec<F>; 4],
    ddel: [Vec<F>; 4],
    one: Vec<F>,
    scalar: Vec<F>,
    pend: [Pending<F>; 4],
}

impl<F: Float> BackScratch<F> {
    /// Sizes every vector for `pass` and clears the pending terms.
    fn prepare(&mut self, pass: &Pass<'_, F>, input_size: usize) {
        let d = &pass.dims;
        for (v, n) in [
            (&mut self.dpred, d.o),
            (&mut self.dy, d.d),
            (&mut self.dhn, d.h),
            (&mut self.dhr, d.h),
            (&mut self.dact, d.gh),
            (&mut self.dz, d.gh),
            (&mut self.dcp, d.h),
            (&mut self.du, d.h),
            (&mut self.dhp, d.h),
            (&mut self.dain, d.h),
            (&mut self.dx, input_size),
            (&mut self.dgy, d.d),
            (&mut self.dghn, d.h),
            (&mut self.dghr, d.h),
            (&mut self.dgz, d.gh),
            (&mut self.dgu, d.h),
            (&mut self.dgain, d.h),
            (&mut self.dh, d.h),
            (&mut self.dc, d.h),
        ] {
            resize(v, n);
        }
        for id in LayerId::ALL {
            let l = pass.layout().layer(id);
            resize(&mut self.dpre[id as usize], l.rows);
            resize(&mut self.ddel[id as usize], l.cols);
        }
        self.one = vec![F::one()];
        resize(&mut self.scalar, 1);
        for pend in self.pend.iter_mut() {
            pend.clear();
        }
    }

    /// Zeroes the adjoints of one step (not those carried from step t + 1).
    fn zero_step(&mut self) {
        for v in [
            &mut self.dy,
            &mut self.dhn,
            &mut self.dhr,
            &mut self.dact,
            &mut self.dz,
            &mut self.dcp,
            &mut self.du,
            &mut self.dhp,
            &mut self.dain,
            &mut self.dx,
            &mut self.dgy,
            &mut self.dghn,
            &mut self.dghr,
            &mut self.dgz,
            &mut self.dgu,
            &mut self.dgain,
        ] {
            v.fill(F::zero());
        }
        for k in 0..4 {
            self.dpre[k].fill(F::zero());
            self.ddel[k].fill(F::zero());
        }
    }

    /// The adjoint accumulator of a signal's source (where `d pre` or `d δ` goes).
    fn signal_adjoint(&mut self, sig: Signal, lstm: bool) -> &mut [F] {
        match sig {
            Signal::Input => &mut self.dx,
            Signal::HiddenPrev => &mut self.dhp,
            Signal::InputLayerOut => &mut self.du,
            Signal::CellActivations if lstm => &mut self.dact,
            Signal::CellActivations => &mut self.dhr,
            Signal::Hidden => &mut self.dhn,
            Signal::Output => &mut self.dy,
            Signal::InnerErrorIn => &mut self.dgain,
            Signal::InnerErrorCell => &mut self.dgz,
            Signal::InnerErrorOut => &mut self.dgy,
        }
    }
}

/// The rank-1 contributions one step makes to a layer's `dP` (`pre ⊗ δ` of each mat-vec that
/// read `P`, and the bias's `δ`), held as vectors until the backward sweep through the
/// earlier update reads `dP` (see [`LazyAdjoint`]): one pass over the matrix instead of one
/// per term.
#[derive(Default)]
struct Pending<F> {
    a: [Vec<F>; 2],
    b: [Vec<F>; 2],
    k: usize,
    bias: Vec<F>,
    has_bias: bool,
}

impl<F: Float> Pending<F> {
    fn clear(&mut self) {
        self.k = 0;
        self.has_bias = false;
    }

    /// Adds the term `a ⊗ b` to the matrix part.
    fn push(&mut self, a: &[F], b: &[F]) {
        let k = self.k;
        assert!(k < 2, "at most two pending rank-1 terms per layer");
        self.a[k].clear();
        self.a[k].extend_from_slice(a);
        self.b[k].clear();
        self.b[k].extend_from_slice(b);
        self.k += 1;
    }

    /// Sets the bias part's term.
    fn set_bias(&mut self, b: &[F]) {
        self.bias.clear();
        self.bias.extend_from_slice(b);
        self.has_bias = true;
    }
}

/// Recorded rank-1 terms `pre ⊗ da` of one layer, one row per term; reduced into `dW` with
/// one GEMM per layer after all episodes.
pub(super) struct Pairs<'a, F> {
    pub pre: &'a mut [F],
    pub da: &'a mut [F],
    pub rows: usize,
    pub cols: usize,
    pub n: usize,
}

impl<F: Float> Pairs<'_, F> {
    #[inline]
    fn push(&mut self, pre: &[F], da: &[F]) {
        self.pre[self.n * self.rows..(self.n + 1) * self.rows].copy_from_slice(pre);
        self.da[self.n * self.cols..(self.n + 1) * self.cols].copy_from_slice(da);
        self.n += 1;
    }

    /// Zeroes the rows no term was recorded in.
    pub fn finish(&mut self) {
        self.pre[self.n * self.rows..].fill(F::zero());
        self.da[self.n * self.cols..].fill(F::zero());
    }
}

/// What one step's backward reads: its record, its inputs and `P_t`.
struct StepInputs<'a, F> {
    t: usize,
    v: StepView<'a, F>,
    x: &'a [F],
    h_prev: &'a [F],
    c_prev: &'a [F],
    p_t: Option<&'a [F]>,
}

/// Carried between steps of the sweep: the step whose dα term waits for the next sweep
/// through an update (two steps share one pass over α).
struct Carry {
    deferred_from: Option<usize>,
}

/// Where the gradient of one episode goes.
pub(super) struct Sinks<'s, 'p, F> {
    /// The parameter gradient (this chunk's).
    pub grad: &'s mut [F],
    /// The rank-1 terms of `dW`, per layer.
    pub pairs: &'s mut [Pairs<'p, F>],
    /// `d loss / d x`, (T, I), if asked for.
    pub dx: Option<&'s mut [F]>,
}

impl<F: Float> Pass<'_, F> {
    /// Backward pass of one episode whose forward is recorded in `ws`; returns its loss
    /// (or, for an output adjoint, `Σ d_outputs ⊙ outputs`).
    ///
    /// The slots hold the last segment's `P_t` as the forward pass left them, unless
    /// `regenerate_all` (the records come from a [`super::Tape`], which keeps no plastic
    /// weights): then every segment is regenerated, the first from `P_0 = 0`, the others
    /// from their checkpoints (docs/algorithm.md §8).
    pub(super) fn run_backward(
        &self,
        ep: &Episodes<F>,
        b: usize,
        seed: Seed<'_, F>,
        ws: &mut EpisodeState<'_, F>,
        sinks: &mut Sinks<'_, '_, F>,
        regenerate_all: bool,
    ) -> F {
        let t_len = ep.steps;
        let plen = self.layout().plastic_len;
        let plastic = plen > 0;
        let k = ws.seg_len;
        let nseg = t_len.div_ceil(k);
        ws.b.prepare(self, ep.input_size);
        resize(ws.dp, plen);
        resize(ws.zeros, self.dims.h);
        let mut total = F::zero();
        let mut kappa = F::zero();
        let mut carry = Carry {
            deferred_from: None,
        };
        for seg in (0..nseg).rev() {
            let s0 = seg * k;
            let len = k.min(t_len - s0);
            if plastic && (seg + 1 != nseg || regenerate_all) {
                if seg == 0 {
                    ws.arena[..plen].fill(F::zero()); // P_0, the first checkpoint
                } else {
                    ws.arena[..plen].copy_from_slice(&ws.ckpt[seg * plen..(seg + 1) * plen]);
                }
                self.regenerate(ep, b, ws, s0, len);
            }
            for t in (s0..s0 + len).rev() {
                let dims = &self.dims;
                let (h_prev, c_prev) = if t == 0 {
                    (&ws.zeros[..dims.h], &ws.zeros[..dims.h])
                } else {
                    let pv = StepView::at(ws.rec, ws.scalars, dims, t - 1);
                    (pv.h(), pv.c())
                };
                let step = StepInputs {
                    t,
                    v: StepView::at(ws.rec, ws.scalars, dims, t),
                    x: ep.x(b, t),
                    h_prev,
                    c_prev,
                    p_t: plastic.then(|| &ws.arena[(t - s0) * plen..(t - s0 + 1) * plen]),
                };
                let bs = &mut *ws.b;
                bs.zero_step();
                total += self.seed_output_adjoint(ep, b, &step, seed, bs);
                if let Some(p_t) = step.p_t {
                    let (d_eta, d_lam) = if t + 1 < t_len {
                        let (rec, scalars) = (&ws.rec[..], &ws.scalars[..]);
                        let earlier = |tp: usize| {
                            (
                                ep.x(b, tp),
                                StepView::at(rec, scalars, dims, tp - 1).h(),
                                StepView::at(rec, scalars, dims, tp),
                            )
                        };
                        self.update_backward(
                            &step, p_t, kappa, &mut carry, earlier, ws.dp, sinks.grad, bs,
                        )
                    } else {
                        (F::zero(), F::zero())
                    };
                    for pend in bs.pend.iter_mut() {
                        pend.clear();
                    }
                    kappa = F::one() - step.v.s.lambda;
                    self.rates_backward(&step, d_eta, d_lam, bs);
                    self.route_signal_adjoints(&step, p_t, sinks, bs, ep.batch);
                }
                self.step_backward(&step, sinks, bs);
                if let Some(dx) = sinks.dx.as_deref_mut() {
                    let dx = &mut dx[t * ep.input_size..(t + 1) * ep.input_size];
                    self.input_gradient(&step, bs, dx);
                }
                // carry to step t − 1
                std::mem::swap(&mut bs.dh, &mut bs.dhp);
                std::mem::swap(&mut bs.dc, &mut bs.dcp);
            }
        }
        total
    }

    /// Sets `dy[0..O]` from the loss at this step (returning its term) or from the caller's
    /// output adjoint (returning `d ⊙ y`).
    fn seed_output_adjoint(
        &self,
        ep: &Episodes<F>,
        b: usize,
        step: &StepInputs<'_, F>,
        seed: Seed<'_, F>,
        bs: &mut BackScratch<F>,
    ) -> F {
        let (o, t) = (self.dims.o, step.t);
        let y = &step.v.y()[..o];
        match seed {
            Seed::Loss(loss) if t >= ep.test_begin => {
                let scale = F::one() / F::of((ep.batch * (ep.steps - ep.test_begin)) as f64);
                let l = step_loss(loss, y, ep.y(b, t), scale, &mut bs.dpred);
                bs.dy[..o].copy_from_slice(&bs.dpred);
                l
            }
            Seed::Loss(_) => F::zero(),
            Seed::OutputAdjoint(d) => {
                let d = &d[(b * ep.steps + t) * o..][..o];
                bs.dy[..o].copy_from_slice(d);
                d.iter().zip(y).map(|(&a, &y)| a * y).sum::<F>()
            }
        }
    }

    /// Backward through the update `P_{t+1} = clamp((1 − λ)P_t + η α ⊙ Δ)` of every layer
    /// (docs/algorithm.md §2.4–2.5): `dP_{t+1} = κ·dp + (step t+1's pending rank-1 terms)`;
    /// the sweep leaves `dP_t`'s update part in `dp`, adds `d pre`, `d δ` of the rule's
    /// signals and the dα terms (those of every other step deferred to the next sweep, which
    /// then serves two steps). Returns `(dη, dλ)`.
    #[allow(clippy::too_many_arguments)]
    fn update_backward<'e>(
        &self,
        step: &StepInputs<'_, F>,
        p_t: &[F],
        kappa: F,
        carry: &mut Carry,
        earlier: impl Fn(usize) -> (&'e [F], &'e [F], StepView<'e, F>),
        dp: &mut [F],
        grad: &mut [F],
        bs: &mut BackScratch<F>,
    ) -> (F, F)
    where
        F: 'e,
    {
        let (t, v, x, h_prev) = (step.t, &step.v, step.x, step.h_prev);
        let rule = self.dims.rule;
        let clip = self.config().weight_clip.map(F::of);
        let (eta, lam) = (v.s.eta, v.s.lambda);
        let (use_da, prev) = match carry.deferred_from.take() {
            Some(tp) => (true, Some(tp)),
            None if t > 0 => {
                carry.deferred_from = Some(t);
                (false, None)
            }
            None => (true, None),
        };
        let pv = prev.map(earlier);
        let (mut d_eta, mut d_lam) = (F::zero(), F::zero());
        for &id in self.layout().layer_ids {
            let kk = id as usize;
            let l = *self.layout().layer(id);
            let (sp, sd) = rule.signals(id);
            let (pre, del) = (signal(sp, x, h_prev, v), signal(sd, x, h_prev, v));
            let (w, bb) = (l.pw..l.pb, l.pb..l.pb + l.cols);
            let (dpw, dpb) = dp[l.pw..l.pb + l.cols].split_at_mut(l.w_len());
            let (ga_w, ga_b) = match (l.alpha_w, l.alpha_b, use_da) {
                (Some(aw), Some(ab), true) => {
                    let (lo, hi) = grad.split_at_mut(ab);
                    (Some(&mut lo[aw..aw + l.w_len()]), Some(&mut hi[..l.cols]))
                }
                _ => (None, None),
            };
            let deferred = pv.as_ref().map(|(xp, hp, vp)| DeferredAlpha {
                eta: vp.s.eta,
                pre: signal(sp, xp, hp, vp),
                delta: signal(sd, xp, hp, vp),
            });
            let pend = &bs.pend[kk];
            let (la, lb) = (
                [&pend.a[0][..], &pend.a[1][..]],
                [&pend.b[0][..], &pend.b[1][..]],
            );
            let lazy = LazyAdjoint {
                kappa,
                a: &la[..pend.k],
                b: &lb[..pend.k],
            };
            let adj = kernels::plastic_update_backward(
                dpw,
                &lazy,
                &p_t[w],
                self.alpha_w(id),
                ga_w,
                deferred.as_ref(),
                pre,
                Some(del),
                &mut bs.dpre[kk],
                &mut bs.ddel[kk],
                eta,
                lam,
                clip,
            );
            d_eta += adj.d_eta;
            d_lam += adj.d_lambda;
            let bias_delta = rule.updates_bias().then_some(del);
            let (one, bias) = ([&bs.one[..]], [&pend.bias[..]]);
            let n_bias = usize::from(pend.has_bias);
            let lazy = LazyAdjoint {
                kappa,
                a: &one[..n_bias],
                b: &bias[..n_bias],
            };
            let deferred = deferred.map(|d| DeferredAlpha {
                eta: d.eta,
                pre: &bs.one,
                delta: d.delta,
            });
            let adj = kernels::plastic_update_backward(
                dpb,
                &lazy,
                &p_t[bb],
                self.alpha_b(id),
                ga_b,
                deferred.as_ref(),
                &bs.one,
                bias_delta,
                &mut bs.scalar,
                &mut bs.ddel[kk],
                eta,
                lam,
                clip,
            );
            d_eta += adj.d_eta;
            d_lam += adj.d_lambda;
        }
        (d_eta, d_lam)
    }

    /// Backward through norm clipping `η = η0·min(1, clip/n)` (docs/algorithm.md §2.3), into
    /// `d pre` and `d δ`, and through the modulated rates into the modulation output (§2.1).
    fn rates_backward(
        &self,
        step: &StepInputs<'_, F>,
        d_eta: F,
        d_lam: F,
        bs: &mut BackScratch<F>,
    ) {
        let cfg = self.config();
        let (v, x, h_prev) = (&step.v, step.x, step.h_prev);
        let two = F::one() + F::one();
        let (eta0, norm) = (v.s.eta0, v.s.update_norm);
        let c = F::of(cfg.inner_grad_clip);
        let (d_eta0, d_norm) = if norm > c {
            (d_eta * c / norm, -d_eta * eta0 * c / (norm * norm))
        } else {
            (d_eta, F::zero())
        };
        if d_norm != F::zero() {
            let rule = self.dims.rule;
            let dn2 = d_norm / (two * norm);
            let bias = if rule.updates_bias() {
                F::one()
            } else {
                F::zero()
            };
            for &id in self.layout().layer_ids {
                let kk = id as usize;
                let (sp, sd) = rule.signals(id);
                let (pre, del) = (signal(sp, x, h_prev, v), signal(sd, x, h_prev, v));
                let (pre2, del2) = (v.s.pre_sq[kk], v.s.delta_sq[kk]);
                let cp = dn2 * two * del2;
                for (d, &p) in bs.dpre[kk].iter_mut().zip(pre) {
                    *d += cp * p;
                }
                let cd = dn2 * two * (pre2 + bias);
                for (d, &q) in bs.ddel[kk].iter_mut().zip(del) {
                    *d += cd * q;
                }
            }
        }
        if cfg.modulation {
            let sig = v.s.sigmoid_m;
            let dm =
                (d_eta0 * F::of(cfg.p_lr) + d_lam * F::of(cfg.p_wd)) * two * sig * (F::one() - sig);
            bs.dy[self.dims.d - 1] += dm;
        }
    }

    /// The adjoints of the rule's `pre` and `δ` back to the quantities they are
    /// (see [`Signal`]); for inner errors, through the inner backward computation that
    /// produced them (the second-order terms).
    fn route_signal_adjoints(
        &self,
        step: &StepInputs<'_, F>,
        p_t: &[F],
        sinks: &mut Sinks<'_, '_, F>,
        bs: &mut BackScratch<F>,
        batch: usize,
    ) {
        let (rule, lstm) = (self.dims.rule, self.dims.lstm);
        for &id in self.layout().layer_ids {
            let (sp, _) = rule.signals(id);
            let d = std::mem::take(&mut bs.dpre[id as usize]);
            add_to(bs.signal_adjoint(sp, lstm), &d);
            bs.dpre[id as usize] = d;
        }
        for &id in self.layout().layer_ids {
            let (_, sd) = rule.signals(id);
            let d = std::mem::take(&mut bs.ddel[id as usize]);
            add_to(bs.signal_adjoint(sd, lstm), &d);
            bs.ddel[id as usize] = d;
        }
        if self.dims.second_order {
            let inv_bd = F::one() / F::of((batch * self.dims.d) as f64);
            self.inner_adjoint(step, p_t, sinks, bs, inv_bd);
        }
    }

    /// Adjoint of an inner-gradient mat-vec `g_in = (W + P_t) g_out` of one layer: given
    /// `dg_in`, adds `(W + P_t)ᵀ dg_in` to `dg_out` and the rank-1 term `dg_in ⊗ g_out` to
    /// the layer's pending `dP_t` terms (recording it for `dW`).
    #[allow(clippy::too_many_arguments)]
    fn inner_matvec_adjoint(
        &self,
        id: LayerId,
        dg_in: &[F],
        g_out: &[F],
        p_t: &[F],
        pend: &mut Pending<F>,
        pairs: &mut Pairs<'_, F>,
        dg_out: &mut [F],
    ) {
        let l = self.layout().layer(id);
        vec_mat(dg_in, self.w(id), Some(&p_t[l.pw..l.pb]), dg_out);
        pend.push(dg_in, g_out);
        pairs.push(dg_in, g_out);
    }

    /// Gradient rule: backpropagates the adjoints of the inner errors (`dgain`, `dgz`,
    /// `dgy`) through the inner backward computation that produced them.
    fn inner_adjoint(
        &self,
        step: &StepInputs<'_, F>,
        p_t: &[F],
        sinks: &mut Sinks<'_, '_, F>,
        bs: &mut BackScratch<F>,
        inv_bd: F,
    ) {
        let (v, c_prev) = (&step.v, step.c_prev);
        let two = F::one() + F::one();
        let s = self.out_weight();
        let grad = &mut *sinks.grad;
        if self.config().input_layer {
            // g_ain = g_u ⊙ 1[a_in > 0]
            relu_mask(&mut bs.dgu, &bs.dgain, v.u());
            // g_u = (W_i + P_i) g_z
            self.inner_matvec_adjoint(
                LayerId::RecI,
                &bs.dgu,
                v.get(Field::InnerErrorCell),
                p_t,
                &mut bs.pend[2],
                &mut sinks.pairs[2],
                &mut bs.dgz,
            );
        }
        // g_z from g_hr (cell, c_prev held constant)
        if self.dims.lstm {
            cell::lstm_inner_adjoint(
                v.act(),
                c_prev,
                v.tanh_c(),
                v.get(Field::InnerErrorHiddenRaw),
                &bs.dgz,
                &mut bs.dghr,
                &mut bs.dact,
                &mut bs.dcp,
            );
        } else {
            cell::rnn_backward(v.act(), &bs.dgz, &mut bs.dghr);
        }
        // g_hr from g_hn (LayerNorm)
        match (self.ln_params(), self.layout().layernorm) {
            (Some((g, _)), Some((go, _))) => {
                layernorm::backward_adjoint(
                    v.h_raw(),
                    v.s.ln_mean,
                    v.s.ln_rstd,
                    g,
                    v.get(Field::InnerErrorHidden),
                    v.get(Field::InnerErrorHiddenRaw),
                    &bs.dghr,
                    &mut bs.dghn,
                    &mut bs.dhr,
                    &mut grad[go..go + self.dims.h],
                );
            }
            _ => bs.dghn.copy_from_slice(&bs.dghr),
        }
        // g_hn = (W_out + P_out) g_y
        self.inner_matvec_adjoint(
            LayerId::Out,
            &bs.dghn,
            v.get(Field::InnerErrorOut),
            p_t,
            &mut bs.pend[3],
            &mut sinks.pairs[3],
            &mut bs.dgy,
        );
        // g_y = 2/(BD) s² ⊙ y
        let y = v.y();
        let ow = self.layout().out_weight;
        for kk in 0..self.dims.d {
            let c = two * inv_bd * bs.dgy[kk];
            bs.dy[kk] += c * s[kk] * s[kk];
            grad[ow + kk] += c * two * s[kk] * y[kk];
        }
    }

    /// The standard backward through the step (docs/algorithm.md §1), output layer first;
    /// every layer's `dW` term is recorded, and in a plastic network also left pending for
    /// the sweep through the previous update.
    fn step_backward(
        &self,
        step: &StepInputs<'_, F>,
        sinks: &mut Sinks<'_, '_, F>,
        bs: &mut BackScratch<F>,
    ) {
        self.output_layer_backward(step, sinks, bs);
        self.layer_norm_backward(step, sinks.grad, bs);
        self.cell_backward(step, bs);
        self.recurrent_backward(step, sinks, bs);
        if self.config().input_layer {
            self.input_layer_backward(step, sinks, bs);
        }
    }

    fn output_layer_backward(
        &self,
        step: &StepInputs<'_, F>,
        sinks: &mut Sinks<'_, '_, F>,
        bs: &mut BackScratch<F>,
    ) {
        let hn = step.v.h();
        if step.p_t.is_some() {
            bs.pend[3].push(hn, &bs.dy);
            bs.pend[3].set_bias(&bs.dy);
        }
        add_to(
            &mut sinks.grad[self.layout().layer(LayerId::Out).b..][..self.dims.d],
            &bs.dy,
        );
        sinks.pairs[3].push(hn, &bs.dy);
        mat_vec(
            self.w(LayerId::Out),
            self.pw(LayerId::Out, step.p_t),
            &bs.dy,
            &mut bs.dhn,
        );
        add_to(&mut bs.dhn, &bs.dh);
    }

    fn layer_norm_backward(
        &self,
        step: &StepInputs<'_, F>,
        grad: &mut [F],
        bs: &mut BackScratch<F>,
    ) {
        let v = &step.v;
        match (self.ln_params(), self.layout().layernorm) {
            (Some((g, _)), Some((go, bo))) => {
                let (mu, rstd) = (v.s.ln_mean, v.s.ln_rstd);
                let hr = v.h_raw();
                for kk in 0..self.dims.h {
                    grad[go + kk] += bs.dhn[kk] * (hr[kk] - mu) * rstd;
                    grad[bo + kk] += bs.dhn[kk];
                }
                layernorm::backward(hr, mu, rstd, Some(g), &bs.dhn, &mut bs.dghr);
                add_to(&mut bs.dhr, &bs.dghr);
            }
            _ => add_to(&mut bs.dhr, &bs.dhn),
        }
    }

    fn cell_backward(&self, step: &StepInputs<'_, F>, bs: &mut BackScratch<F>) {
        let act = step.v.act();
        if self.dims.lstm {
            cell::lstm_backward(
                act,
                step.c_prev,
                step.v.tanh_c(),
                &bs.dhr,
                &bs.dc,
                &mut bs.dact,
                &mut bs.dcp,
            );
            cell::lstm_act_to_z(act, &bs.dact, &mut bs.dz);
        } else {
            cell::rnn_backward(act, &bs.dhr, &mut bs.dz);
        }
    }

    fn recurrent_backward(
        &self,
        step: &StepInputs<'_, F>,
        sinks: &mut Sinks<'_, '_, F>,
        bs: &mut BackScratch<F>,
    ) {
        let u = step.v.u();
        for (kk, id, pre) in [(1, LayerId::RecH, step.h_prev), (2, LayerId::RecI, u)] {
            if step.p_t.is_some() {
                bs.pend[kk].push(pre, &bs.dz);
                bs.pend[kk].set_bias(&bs.dz);
            }
            add_to(
                &mut sinks.grad[self.layout().layer(id).b..][..self.dims.gh],
                &bs.dz,
            );
        }
        sinks.pairs[1].push(step.h_prev, &bs.dz);
        sinks.pairs[2].push(u, &bs.dz);
        mat_vec(
            self.w(LayerId::RecH),
            self.pw(LayerId::RecH, step.p_t),
            &bs.dz,
            &mut bs.dhp,
        );
        mat_vec(
            self.w(LayerId::RecI),
            self.pw(LayerId::RecI, step.p_t),
            &bs.dz,
            &mut bs.du,
        );
    }

    fn input_layer_backward(
        &self,
        step: &StepInputs<'_, F>,
        sinks: &mut Sinks<'_, '_, F>,
        bs: &mut BackScratch<F>,
    ) {
        relu_mask(&mut bs.dain, &bs.du, step.v.u());
        if step.p_t.is_some() {
            bs.pend[0].push(step.x, &bs.dain);
            bs.pend[0].set_bias(&bs.dain);
        }
        add_to(
            &mut sinks.grad[self.layout().layer(LayerId::In).b..][..self.dims.h],
            &bs.dain,
        );
        sinks.pairs[0].push(step.x, &bs.dain);
    }

    /// `d loss / d x_t`: the rule's uses of `x` plus the input layer's mat-vec, or the adjoint
    /// of `u = x` without an input layer.
    fn input_gradient(&self, step: &StepInputs<'_, F>, bs: &BackScratch<F>, dx: &mut [F]) {
        if self.config().input_layer {
            dx.copy_from_slice(&bs.dx);
            mat_vec(
                self.w(LayerId::In),
                self.pw(LayerId::In, step.p_t),
                &bs.dain,
                dx,
            );
        } else {
            dx.copy_from_slice(&bs.du);
            add_to(dx, &bs.dx);
        }
    }
}
