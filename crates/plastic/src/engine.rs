//! The episode engine: the forward step (ALGORITHM.md §1), the plastic update (§2), and the
//! exact meta-gradient by backpropagation through time through the updates, including the
//! second-order terms of the gradient rule.
//!
//! Episodes are independent, so each one runs start to finish (forward, then backward) on
//! one thread with its own plastic state, which for the paper's sizes stays in cache. The
//! backward pass needs `P_t` at every step: an episode keeps all `T` snapshots when they fit
//! its budget, and otherwise keeps checkpoints every `k ≈ sqrt(T)` steps and regenerates each
//! segment's snapshots from the recorded `(pre, δ, η, λ)` with the same arithmetic. The
//! gradients of the shared weights `W` are sums of rank-1 terms `pre ⊗ dy` over episodes
//! and steps: those vectors are recorded and reduced at the end with one GEMM per layer.
//!
//! Work is split into a fixed number of episode chunks that depends only on the batch size,
//! and chunk results are summed in chunk order, so results do not depend on thread count.

use rayon::prelude::*;

use crate::cell;
use crate::config::{CellKind, Rule};
use crate::episode::{step_loss, Episodes, Loss};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::kernels::{self, mat_vec, vec_mat, DeferredAlpha, LazyAdjoint};
use crate::layernorm;
use crate::network::Network;
use crate::params::LayerId;
use crate::plasticity::Signal;

// Per-step record: vector fields, then scalars.
const A_IN: usize = 0;
const U: usize = 1;
const Z: usize = 2;
const ACT: usize = 3;
const C: usize = 4;
const TC: usize = 5;
const HR: usize = 6;
const HN: usize = 7;
const Y: usize = 8;
const GY: usize = 9;
const GHN: usize = 10;
const GHR: usize = 11;
const GZ: usize = 12;
const GU: usize = 13;
const GAIN: usize = 14;
const SC: usize = 15;
const NFIELDS: usize = 16;

// Scalars.
const S_SIG: usize = 0;
const S_ETA0: usize = 1;
const S_ETA: usize = 2;
const S_LAM: usize = 3;
const S_NORM: usize = 4;
const S_INNER: usize = 5;
const S_MU: usize = 6;
const S_RSTD: usize = 7;
const S_PRE2: usize = 8; // 4 values
const S_DEL2: usize = 12; // 4 values
const NSCALARS: usize = 16;

/// Sizes of one step's quantities.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    h: usize,
    gh: usize,
    d: usize,
    o: usize,
    lstm: bool,
    rule: Rule,
    off: [usize; NFIELDS],
    stride: usize,
}

impl Dims {
    fn new<F: Float>(net: &Network<F>) -> Dims {
        let c = net.config();
        let (h, gh, d) = (
            c.hidden_size,
            c.gates() * c.hidden_size,
            c.full_output_size(),
        );
        let lens = [h, h, gh, gh, h, h, h, h, d, d, h, h, gh, h, h, NSCALARS];
        let mut off = [0; NFIELDS];
        let mut acc = 0;
        for k in 0..NFIELDS {
            off[k] = acc;
            acc += lens[k];
        }
        Dims {
            h,
            gh,
            d,
            o: c.output_size,
            lstm: c.rnn == CellKind::Lstm,
            rule: c.plasticity,
            off,
            stride: acc,
        }
    }
    fn len(&self, field: usize) -> usize {
        if field == SC {
            NSCALARS
        } else {
            self.off.get(field + 1).copied().unwrap_or(self.stride) - self.off[field]
        }
    }
}

/// Read-only view of one step's record.
struct View<'a, F> {
    r: &'a [F],
    dims: Dims,
}

impl<'a, F: Float> View<'a, F> {
    #[inline]
    fn f(&self, field: usize) -> &'a [F] {
        let o = self.dims.off[field];
        &self.r[o..o + self.dims.len(field)]
    }
    #[inline]
    fn s(&self, k: usize) -> F {
        self.r[self.dims.off[SC] + k]
    }
}

/// Mutable access to one step's record, one field at a time.
struct RecMut<'a, F> {
    r: &'a mut [F],
    dims: Dims,
}

impl<F: Float> RecMut<'_, F> {
    #[inline]
    fn f(&mut self, field: usize) -> &mut [F] {
        let o = self.dims.off[field];
        let n = self.dims.len(field);
        &mut self.r[o..o + n]
    }
    /// Two distinct fields, the first read-only.
    #[inline]
    fn pair(&mut self, src: usize, dst: usize) -> (&[F], &mut [F]) {
        let (os, ns) = (self.dims.off[src], self.dims.len(src));
        let (od, nd) = (self.dims.off[dst], self.dims.len(dst));
        debug_assert_ne!(src, dst);
        if os < od {
            let (a, b) = self.r.split_at_mut(od);
            (&a[os..os + ns], &mut b[..nd])
        } else {
            let (a, b) = self.r.split_at_mut(os);
            (&b[..ns], &mut a[od..od + nd])
        }
    }
    /// The fields before `field` (read-only) and the record from `field` on (mutable).
    #[inline]
    fn split_at(&mut self, field: usize) -> (View<'_, F>, &mut [F]) {
        let (head, tail) = self.r.split_at_mut(self.dims.off[field]);
        (
            View {
                r: head,
                dims: self.dims,
            },
            tail,
        )
    }
    #[inline]
    fn view(&self) -> View<'_, F> {
        View {
            r: self.r,
            dims: self.dims,
        }
    }
    #[inline]
    fn set(&mut self, k: usize, v: F) {
        let o = self.dims.off[SC];
        self.r[o + k] = v;
    }
}

/// The vectors a signal refers to, at one step.
#[inline]
fn signal<'a, F: Float>(sig: Signal, x: &'a [F], h_prev: &'a [F], v: &View<'a, F>) -> &'a [F] {
    match sig {
        Signal::Input => x,
        Signal::HiddenPrev => h_prev,
        Signal::InputLayerOut => v.f(U),
        Signal::CellActivations => v.f(ACT),
        Signal::Hidden => v.f(HN),
        Signal::Output => v.f(Y),
        Signal::InnerErrorIn => v.f(GAIN),
        Signal::InnerErrorCell => v.f(GZ),
        Signal::InnerErrorOut => v.f(GY),
    }
}

#[inline]
fn sigmoid<F: Float>(x: F) -> F {
    F::one() / (F::one() + (-x).exp())
}

/// Scratch space one episode needs; pooled and reused across calls.
#[derive(Default)]
pub(crate) struct Workspace<F> {
    rec: Vec<F>,
    arena: Vec<F>,
    ckpt: Vec<F>,
    dp: Vec<F>,
    zeros: Vec<F>,
    b: BackScratch<F>,
}

#[derive(Default)]
struct BackScratch<F> {
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
    dgy: Vec<F>,
    dghn: Vec<F>,
    dghr: Vec<F>,
    dgz: Vec<F>,
    dgu: Vec<F>,
    dh: Vec<F>,
    dc: Vec<F>,
    dpre: [Vec<F>; 4],
    ddel: [Vec<F>; 4],
    one: Vec<F>,
    scalar: Vec<F>,
    pend: [Pending<F>; 4],
}

/// A recurrent-matrix update of step `t − 1` left for step `t` (see
/// [`Network::forward_step`]): its source `P_{t−1}` and what the rule needs from step `t − 1`.
struct FusedUpdate<'a, F> {
    src: &'a [F],
    x: &'a [F],
    h_prev: &'a [F],
    view: View<'a, F>,
}

impl<'a, F: Float> FusedUpdate<'a, F> {
    /// The rule's `(pre, δ)` of layer `id` at step `t − 1`.
    fn signals(&self, id: LayerId) -> (&'a [F], &'a [F]) {
        let (sp, sd) = self.view.dims.rule.signals(id);
        (
            signal(sp, self.x, self.h_prev, &self.view),
            signal(sd, self.x, self.h_prev, &self.view),
        )
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

fn resize<F: Float>(v: &mut Vec<F>, n: usize) {
    v.clear();
    v.resize(n, F::zero());
}

/// Recorded rank-1 terms `pre ⊗ da` of one layer, one row per term.
struct Pairs<'a, F> {
    pre: &'a mut [F],
    da: &'a mut [F],
    rows: usize,
    cols: usize,
    n: usize,
}

impl<F: Float> Pairs<'_, F> {
    #[inline]
    fn push(&mut self, pre: &[F], da: &[F]) {
        self.pre[self.n * self.rows..(self.n + 1) * self.rows].copy_from_slice(pre);
        self.da[self.n * self.cols..(self.n + 1) * self.cols].copy_from_slice(da);
        self.n += 1;
    }

    /// Zeroes the rows no term was recorded in.
    fn finish(&mut self) {
        self.pre[self.n * self.rows..].fill(F::zero());
        self.da[self.n * self.cols..].fill(F::zero());
    }
}

/// Per-step diagnostics of a forward pass, each (B, T) row-major unless noted.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward<F> {
    /// Predictions `y[0..O]`, (B, T, O).
    pub outputs: Vec<F>,
    /// The modulated plasticity rate η before norm clipping (ALGORITHM.md §2.1).
    pub plasticity_rate: Vec<F>,
    /// η after norm clipping: the rate actually applied.
    pub applied_rate: Vec<F>,
    /// The decay rate λ.
    pub decay_rate: Vec<F>,
    /// Norm of the raw update `Δ` (before clipping).
    pub update_norm: Vec<F>,
    /// Frobenius norm of all plastic weights after the step's update.
    pub plastic_norm: Vec<F>,
    /// The inner loss at every step, a batch mean, (T).
    pub inner_loss: Vec<F>,
    /// The episode loss (the same quantity [`Network::loss_and_grad`] returns).
    pub loss: F,
}

/// The episode loss and its gradient with respect to every parameter (and, when asked
/// for, to the inputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient<F> {
    /// The episode loss; for [`Network::vjp`], the scalar `Σ d_outputs ⊙ outputs` whose
    /// gradient the VJP is.
    pub loss: F,
    /// `d loss / d parameter`, in [`crate::params::Layout`] order.
    pub grads: Vec<F>,
    /// `d loss / d inputs`, (B, T, I) like [`Episodes::input`]: one vector per episode and
    /// step. `Some` only when [`GradRequest::inputs`] asked for it.
    pub input_grads: Option<Vec<F>>,
}

/// What a backward pass computes besides the parameter gradient; what is not asked for
/// costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GradRequest {
    /// Also return `d loss / d inputs` ([`Gradient::input_grads`]).
    pub inputs: bool,
}

/// Where the backward pass's adjoint of the outputs comes from.
#[derive(Debug, Clone, Copy)]
enum Seed<'a, F> {
    /// The episode loss against the episodes' targets, at the steps from `test_begin`.
    Loss(Loss),
    /// Given by the caller, (B, T, O), at every step.
    OutputAdjoint(&'a [F]),
}

impl<F: Float> Network<F> {
    fn check_episodes(&self, ep: &Episodes<F>) -> Result<()> {
        ep.check()?;
        let c = self.config();
        if ep.input_size != c.input_size || ep.output_size != c.output_size {
            return Err(Error::Data(format!(
                "episodes have input size {} and output size {}, the network expects {} and {}",
                ep.input_size, ep.output_size, c.input_size, c.output_size
            )));
        }
        Ok(())
    }

    fn take_workspace(&self) -> Workspace<F> {
        self.pool.lock().unwrap().pop().unwrap_or_default()
    }

    fn return_workspace(&self, ws: Workspace<F>) {
        self.pool.lock().unwrap().push(ws);
    }

    /// A buffer of length `n` from the pool; its contents are unspecified unless `zero`.
    fn take_buffer(&self, n: usize, zero: bool) -> Vec<F> {
        let mut v = {
            let mut pool = self.buffers.lock().unwrap();
            // the smallest buffer that holds n without reallocating, else the largest
            let fit = (0..pool.len())
                .filter(|&i| pool[i].capacity() >= n)
                .min_by_key(|&i| pool[i].capacity())
                .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
            fit.map(|i| pool.swap_remove(i)).unwrap_or_default()
        };
        if zero {
            v.clear();
        }
        v.resize(n, F::zero());
        v
    }

    fn return_buffers(&self, bufs: impl IntoIterator<Item = Vec<F>>) {
        let mut pool = self.buffers.lock().unwrap();
        pool.extend(bufs);
        pool.truncate(64);
    }

    /// Fixed partition of the batch into chunks (depends on B only).
    fn chunk_size(batch: usize) -> usize {
        batch.div_ceil(batch.min(16))
    }

    /// Segment length for the snapshots of an episode of `t` steps.
    fn segment_len(&self, t: usize) -> usize {
        let plen = self.layout().plastic_len.max(1);
        let slots = self.snapshot_budget / (plen * std::mem::size_of::<F>());
        if slots >= t {
            t
        } else {
            ((t as f64).sqrt().ceil() as usize).clamp(1, t)
        }
    }

    /// `out = b + P_b + x·(W + P_W)` for one layer.
    #[inline]
    fn linear(&self, id: LayerId, x: &[F], p: Option<&[F]>, out: &mut [F]) {
        let l = self.layout().layer(id);
        out.copy_from_slice(self.b(id));
        if let Some(p) = p {
            for (o, &pb) in out.iter_mut().zip(&p[l.pb..l.pb + l.cols]) {
                *o += pb;
            }
        }
        vec_mat(x, self.w(id), self.pw(id, p), out);
    }

    #[inline]
    fn pw<'a>(&self, id: LayerId, p: Option<&'a [F]>) -> Option<&'a [F]> {
        let l = self.layout().layer(id);
        p.map(|p| &p[l.pw..l.pw + l.w_len()])
    }

    /// One forward step (ALGORITHM.md §1 and §2.1–2.3): fills the record with every
    /// activation, the rates, the rule's `δ` vectors and the update norm. `p` is `P_t`.
    ///
    /// With `fused`, the recurrent matrices of `p` are not yet `P_t`: their update from
    /// `P_{t−1}` is done here, in the same pass as the step's mat-vec with them.
    #[allow(clippy::too_many_arguments)]
    fn forward_step(
        &self,
        x: &[F],
        h_prev: &[F],
        c_prev: &[F],
        p: Option<&mut [F]>,
        fused: Option<&FusedUpdate<'_, F>>,
        r: &mut RecMut<'_, F>,
        inv_bd: F,
    ) {
        let mut p = p;
        let dims = r.dims;
        let cfg = self.config();
        let two = F::one() + F::one();
        // 1. input layer, or `u = x` without one (docs/fsc.md §5)
        if cfg.input_layer {
            self.linear(LayerId::In, x, p.as_deref(), r.f(A_IN));
            let (a_in, u) = r.pair(A_IN, U);
            for (u, &a) in u.iter_mut().zip(a_in) {
                *u = a.max(F::zero());
            }
        } else {
            r.f(U).copy_from_slice(x);
        }
        // 2. recurrent cell
        {
            let l_h = self.layout().layer(LayerId::RecH);
            let l_i = self.layout().layer(LayerId::RecI);
            let z = r.f(Z);
            let (bh, bi) = (self.b(LayerId::RecH), self.b(LayerId::RecI));
            for ((z, &a), &b) in z.iter_mut().zip(bh).zip(bi) {
                *z = a + b;
            }
            if let Some(p) = p.as_deref() {
                let (ph, pi) = (&p[l_h.pb..l_h.pb + dims.gh], &p[l_i.pb..l_i.pb + dims.gh]);
                for ((z, &a), &b) in z.iter_mut().zip(ph).zip(pi) {
                    *z += a + b;
                }
            }
            self.recurrent_vec_mat(LayerId::RecH, h_prev, p.as_deref_mut(), fused, z);
            let (u, z) = r.pair(U, Z);
            self.recurrent_vec_mat(LayerId::RecI, u, p.as_deref_mut(), fused, z);
        }
        let p = p.as_deref();
        if dims.lstm {
            let (head, tail) = r.split_at(ACT);
            let z = head.f(Z);
            let (act, tail) = tail.split_at_mut(dims.gh);
            let (c, tail) = tail.split_at_mut(dims.h);
            let (tc, tail) = tail.split_at_mut(dims.h);
            cell::lstm_forward(z, c_prev, act, c, tc, &mut tail[..dims.h]);
        } else {
            let (z, act) = r.pair(Z, ACT);
            cell::rnn_forward(z, act);
            let (act, hr) = r.pair(ACT, HR);
            hr.copy_from_slice(act);
        }
        // 3. LayerNorm
        if let Some((g, b)) = self.ln_params() {
            let (hr, hn) = r.pair(HR, HN);
            let (mu, rstd) = layernorm::forward(hr, g, b, hn);
            r.set(S_MU, mu);
            r.set(S_RSTD, rstd);
        } else {
            let (hr, hn) = r.pair(HR, HN);
            hn.copy_from_slice(hr);
        }
        // 4. output layer
        {
            let (hn, y) = r.pair(HN, Y);
            self.linear(LayerId::Out, hn, p, y);
        }
        // inner loss and rates (§2.1)
        let s = self.out_weight();
        let y = r.f(Y);
        let inner: F = y.iter().zip(s).map(|(&y, &s)| (y * s) * (y * s)).sum::<F>() * inv_bd;
        let (sig, eta0, lam) = if cfg.modulation {
            let sig = sigmoid(y[dims.d - 1]);
            (
                sig,
                F::of(cfg.p_lr) * two * sig,
                F::of(cfg.p_wd) * two * sig,
            )
        } else {
            (F::zero(), F::of(cfg.p_lr), F::of(cfg.p_wd))
        };
        r.set(S_INNER, inner);
        r.set(S_SIG, sig);
        r.set(S_ETA0, eta0);
        r.set(S_LAM, lam);
        r.set(S_ETA, eta0);
        if p.is_none() {
            return;
        }
        // gradient rule: the inner errors (§2.2), with h, c from t−1 held constant
        if dims.rule.is_second_order() {
            {
                let (y, gy) = r.pair(Y, GY);
                for k in 0..dims.d {
                    gy[k] = two * inv_bd * s[k] * s[k] * y[k];
                }
            }
            {
                let (gy, ghn) = r.pair(GY, GHN);
                ghn.fill(F::zero());
                mat_vec(self.w(LayerId::Out), self.pw(LayerId::Out, p), gy, ghn);
            }
            {
                let (mu, rstd) = (r.view().s(S_MU), r.view().s(S_RSTD));
                let (head, tail) = r.split_at(GHR);
                let ghr = &mut tail[..dims.h];
                match self.ln_params() {
                    Some((g, _)) => {
                        layernorm::backward(head.f(HR), mu, rstd, Some(g), head.f(GHN), ghr)
                    }
                    None => ghr.copy_from_slice(head.f(GHN)),
                }
                let (head, tail) = r.split_at(GZ);
                let gz = &mut tail[..dims.gh];
                if dims.lstm {
                    cell::lstm_inner_backward(head.f(ACT), c_prev, head.f(TC), head.f(GHR), gz);
                } else {
                    cell::rnn_backward(head.f(ACT), head.f(GHR), gz);
                }
            }
            if cfg.input_layer {
                let (gz, gu) = r.pair(GZ, GU);
                gu.fill(F::zero());
                mat_vec(self.w(LayerId::RecI), self.pw(LayerId::RecI, p), gz, gu);
                let (head, tail) = r.split_at(GAIN);
                let (u, gu) = (head.f(U), head.f(GU));
                relu_mask(&mut tail[..dims.h], gu, u);
            }
        }
        // norm of the raw update (§2.3): Σ_l (‖pre‖² + [bias]) ‖δ‖², per layer factorised
        let bias = if dims.rule.updates_bias() {
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
                let (sp, sd) = dims.rule.signals(id);
                pre2[k] = kernels::sq_norm(signal(sp, x, h_prev, &view));
                del2[k] = kernels::sq_norm(signal(sd, x, h_prev, &view));
                n2 += (pre2[k] + bias) * del2[k];
            }
        }
        let n = n2.sqrt();
        let clip = F::of(cfg.inner_grad_clip);
        // quirk fix: the reference computes NaN at n = 0; there is nothing to clip there
        let eta = if n > clip { eta0 * clip / n } else { eta0 };
        r.set(S_NORM, n);
        r.set(S_ETA, eta);
        for k in 0..4 {
            r.set(S_PRE2 + k, pre2[k]);
            r.set(S_DEL2 + k, del2[k]);
        }
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
                let (pre, del) = f.signals(id);
                kernels::plastic_update_vec_mat(
                    &mut p[l.pw..l.pb],
                    &f.src[l.pw..l.pb],
                    self.alpha_w(id),
                    pre,
                    del,
                    f.view.s(S_ETA),
                    f.view.s(S_LAM),
                    self.config().weight_clip.map(F::of),
                    x,
                    self.w(id),
                    z,
                );
            }
            (p, _) => vec_mat(x, self.w(id), p.map(|p| &p[l.pw..l.pb]), z),
        }
    }

    /// The plastic update after a step (§2.4–2.5): `dst = clamp((1 − λ)src + η α ⊙ Δ)`.
    fn update(&self, x: &[F], h_prev: &[F], v: &View<'_, F>, src: &[F], dst: &mut [F]) {
        self.update_layers(x, h_prev, v, src, dst, false);
    }

    /// [`Self::update`]; with `defer_recurrent`, leaves the recurrent matrices to the next
    /// step's [`Self::recurrent_vec_mat`].
    fn update_layers(
        &self,
        x: &[F],
        h_prev: &[F],
        v: &View<'_, F>,
        src: &[F],
        dst: &mut [F],
        defer_recurrent: bool,
    ) {
        let dims = v.dims;
        let (eta, lam) = (v.s(S_ETA), v.s(S_LAM));
        let clip = self.config().weight_clip.map(F::of);
        let one = [F::one()];
        for &id in self.layout().layer_ids {
            let l = *self.layout().layer(id);
            let (sp, sd) = dims.rule.signals(id);
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
            let bias_delta = dims.rule.updates_bias().then_some(del);
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

    /// Runs the forward pass of one episode, recording every step into `ws.rec`. With
    /// `train`, snapshots/checkpoints of `P` are kept for the backward pass; otherwise the
    /// plastic norm after each step is written to `plastic_norm`.
    fn run_forward(
        &self,
        ep: &Episodes<F>,
        b: usize,
        ws: &mut Workspace<F>,
        train: bool,
        plastic_norm: &mut [F],
    ) {
        let dims = Dims::new(self);
        let t_len = ep.steps;
        let plen = self.layout().plastic_len;
        let plastic = plen > 0;
        let inv_bd = F::one() / F::of((ep.batch * dims.d) as f64);
        resize(&mut ws.rec, t_len * dims.stride);
        resize(&mut ws.zeros, dims.h);
        let k = if train { self.segment_len(t_len) } else { 1 };
        let nseg = t_len.div_ceil(k);
        // arena: k slots of P in training (slot t − s0 holds P_t), two ping-pong slots otherwise
        let slots = if train { k } else { 2 };
        // only P_0 must start at zero; every other slot is written before it is read
        ws.arena
            .resize(if plastic { slots * plen } else { 0 }, F::zero());
        ws.ckpt.resize(
            if plastic && train && nseg > 1 {
                nseg * plen
            } else {
                0
            },
            F::zero(),
        );
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
            let (prev, cur) = ws.rec.split_at_mut(t * dims.stride);
            let cur = &mut cur[..dims.stride];
            let (h_prev, c_prev) = if t == 0 {
                (&ws.zeros[..], &ws.zeros[..])
            } else {
                let pv = View {
                    r: &prev[(t - 1) * dims.stride..],
                    dims,
                };
                (pv.f(HN), pv.f(C))
            };
            let x = ep.x(b, t);
            let slot = if train { t % k } else { t % 2 };
            let mut rm = RecMut { r: cur, dims };
            if !plastic {
                self.forward_step(x, h_prev, c_prev, None, None, &mut rm, inv_bd);
                continue;
            }
            if pending {
                // P_t's recurrent matrices come from P_{t−1} (slot of t − 1) here
                let pslot = (t - 1) % k;
                let (src, dst) = if pslot < slot {
                    let (lo, hi) = ws.arena.split_at_mut(slot * plen);
                    (&lo[pslot * plen..(pslot + 1) * plen], &mut hi[..plen])
                } else {
                    let (lo, hi) = ws.arena.split_at_mut(pslot * plen);
                    (&hi[..plen], &mut lo[slot * plen..(slot + 1) * plen])
                };
                let h_pp = if t >= 2 {
                    View {
                        r: &prev[(t - 2) * dims.stride..],
                        dims,
                    }
                    .f(HN)
                } else {
                    &ws.zeros[..]
                };
                let fused = FusedUpdate {
                    src,
                    x: ep.x(b, t - 1),
                    h_prev: h_pp,
                    view: View {
                        r: &prev[(t - 1) * dims.stride..],
                        dims,
                    },
                };
                self.forward_step(x, h_prev, c_prev, Some(dst), Some(&fused), &mut rm, inv_bd);
                if slot == 0 {
                    // segment boundary: P_t is complete now; keep it as the checkpoint
                    let seg = t / k;
                    ws.ckpt[seg * plen..(seg + 1) * plen].copy_from_slice(&ws.arena[..plen]);
                }
                pending = false;
            } else {
                let p_t = &mut ws.arena[slot * plen..(slot + 1) * plen];
                self.forward_step(x, h_prev, c_prev, Some(p_t), None, &mut rm, inv_bd);
            }
            let view = View { r: &*cur, dims };
            if train {
                if t + 1 == t_len {
                    break; // P_T is never used
                }
                let next = (t + 1) % k;
                let (src, dst) = if slot < next {
                    let (lo, hi) = ws.arena.split_at_mut(next * plen);
                    (&lo[slot * plen..(slot + 1) * plen], &mut hi[..plen])
                } else {
                    let (lo, hi) = ws.arena.split_at_mut(slot * plen);
                    (&hi[..plen], &mut lo[next * plen..(next + 1) * plen])
                };
                self.update_layers(x, h_prev, &view, src, dst, true);
                pending = true;
            } else {
                let (lo, hi) = ws.arena.split_at_mut(plen);
                let (src, dst) = if slot == 0 {
                    (&*lo, &mut hi[..plen])
                } else {
                    (&hi[..plen], &mut lo[..])
                };
                let (src, dst): (&[F], &mut [F]) = (src, dst);
                self.update(x, h_prev, &view, src, dst);
                plastic_norm[t] = kernels::sq_norm(dst).sqrt();
            }
        }
    }

    /// Regenerates `P_{s0+1} .. P_{s0+len−1}` into arena slots 1.. from slot 0 and the records.
    fn regenerate(&self, ep: &Episodes<F>, b: usize, ws: &mut Workspace<F>, s0: usize, len: usize) {
        let dims = Dims::new(self);
        let plen = self.layout().plastic_len;
        for j in 0..len.saturating_sub(1) {
            let t = s0 + j;
            let h_prev = if t == 0 {
                &ws.zeros[..]
            } else {
                View {
                    r: &ws.rec[(t - 1) * dims.stride..],
                    dims,
                }
                .f(HN)
            };
            let view = View {
                r: &ws.rec[t * dims.stride..(t + 1) * dims.stride],
                dims,
            };
            let (lo, hi) = ws.arena.split_at_mut((j + 1) * plen);
            self.update(ep.x(b, t), h_prev, &view, &lo[j * plen..], &mut hi[..plen]);
        }
    }

    /// Forward pass only, with per-step diagnostics; no gradient bookkeeping.
    pub fn forward(&self, ep: &Episodes<F>, loss: Loss) -> Result<Forward<F>> {
        self.check_episodes(ep)?;
        let dims = Dims::new(self);
        let (bsz, t_len, o) = (ep.batch, ep.steps, dims.o);
        let chunk = Self::chunk_size(bsz);
        let scale = F::one() / F::of((bsz * (t_len - ep.test_begin)) as f64);
        // per episode: outputs (T·O), then 5 (T) series: η0, η, λ, n, ‖P‖, inner
        let per = t_len * o + 6 * t_len;
        let mut out = vec![F::zero(); bsz * per];
        let losses: Vec<F> = out
            .par_chunks_mut(chunk * per)
            .enumerate()
            .map(|(ci, block)| {
                let mut ws = self.take_workspace();
                let mut lsum = F::zero();
                let mut grad = vec![F::zero(); o];
                for (j, e) in block.chunks_mut(per).enumerate() {
                    let b = ci * chunk + j;
                    let (outs, series) = e.split_at_mut(t_len * o);
                    let (head, pn) = series.split_at_mut(4 * t_len);
                    let (pn, inner) = pn.split_at_mut(t_len);
                    self.run_forward(ep, b, &mut ws, false, pn);
                    for t in 0..t_len {
                        let v = View {
                            r: &ws.rec[t * dims.stride..(t + 1) * dims.stride],
                            dims,
                        };
                        let y = v.f(Y);
                        outs[t * o..(t + 1) * o].copy_from_slice(&y[..o]);
                        head[t] = v.s(S_ETA0);
                        head[t_len + t] = v.s(S_ETA);
                        head[2 * t_len + t] = v.s(S_LAM);
                        head[3 * t_len + t] = v.s(S_NORM);
                        inner[t] = v.s(S_INNER);
                        if t >= ep.test_begin {
                            lsum += step_loss(loss, &y[..o], ep.y(b, t), scale, &mut grad);
                        }
                    }
                }
                self.return_workspace(ws);
                lsum
            })
            .collect();
        let mut f = Forward {
            outputs: vec![F::zero(); bsz * t_len * o],
            plasticity_rate: vec![F::zero(); bsz * t_len],
            applied_rate: vec![F::zero(); bsz * t_len],
            decay_rate: vec![F::zero(); bsz * t_len],
            update_norm: vec![F::zero(); bsz * t_len],
            plastic_norm: vec![F::zero(); bsz * t_len],
            inner_loss: vec![F::zero(); t_len],
            loss: losses.into_iter().fold(F::zero(), |a, b| a + b),
        };
        for b in 0..bsz {
            let e = &out[b * per..(b + 1) * per];
            f.outputs[b * t_len * o..(b + 1) * t_len * o].copy_from_slice(&e[..t_len * o]);
            let s = &e[t_len * o..];
            let bt = b * t_len..(b + 1) * t_len;
            f.plasticity_rate[bt.clone()].copy_from_slice(&s[..t_len]);
            f.applied_rate[bt.clone()].copy_from_slice(&s[t_len..2 * t_len]);
            f.decay_rate[bt.clone()].copy_from_slice(&s[2 * t_len..3 * t_len]);
            f.update_norm[bt.clone()].copy_from_slice(&s[3 * t_len..4 * t_len]);
            f.plastic_norm[bt].copy_from_slice(&s[4 * t_len..5 * t_len]);
            for t in 0..t_len {
                f.inner_loss[t] += s[5 * t_len + t];
            }
        }
        Ok(f)
    }

    /// The episode loss and its exact gradient with respect to every parameter.
    pub fn loss_and_grad(&self, ep: &Episodes<F>, loss: Loss) -> Result<Gradient<F>> {
        self.loss_and_grad_with(ep, loss, GradRequest::default())
    }

    /// [`Self::loss_and_grad`], with the extra results of `request` (e.g. the gradient
    /// with respect to the inputs, for a network that feeds this one).
    pub fn loss_and_grad_with(
        &self,
        ep: &Episodes<F>,
        loss: Loss,
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        self.backward(ep, Seed::Loss(loss), request)
    }

    /// The vector-Jacobian product for any loss the caller computes from the outputs: given
    /// `d_outputs = dL/d outputs`, (B, T, O) like [`Forward::outputs`], returns `dL/d`
    /// every parameter (and, with `request.inputs`, `dL/d inputs`). The targets and
    /// `test_begin` of `ep` are not used. This is the same backward pass as
    /// [`Self::loss_and_grad`], which seeds it with its own loss's output adjoint.
    pub fn vjp(
        &self,
        ep: &Episodes<F>,
        d_outputs: &[F],
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        let n = ep.batch * ep.steps * ep.output_size;
        if d_outputs.len() != n {
            return Err(Error::Data(format!(
                "d_outputs has {} values, expected B·T·O = {}·{}·{} = {n}",
                d_outputs.len(),
                ep.batch,
                ep.steps,
                ep.output_size
            )));
        }
        if d_outputs.iter().any(|v| !v.is_finite()) {
            return Err(Error::Data("d_outputs contains NaN or infinity".into()));
        }
        self.backward(ep, Seed::OutputAdjoint(d_outputs), request)
    }

    /// The one backward pass: forward and backward of every episode, seeded by `seed`.
    fn backward(
        &self,
        ep: &Episodes<F>,
        seed: Seed<'_, F>,
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        self.check_episodes(ep)?;
        let dims = Dims::new(self);
        let (bsz, t_len) = (ep.batch, ep.steps);
        let second = self.config().is_plastic() && dims.rule.is_second_order();
        // rank-1 terms per layer and step: In 1, RecH 1, RecI 1(+1 with an input layer), Out 1(+1)
        let inner_rec_i = second && self.config().input_layer;
        let npairs = [1, 1, 1 + usize::from(inner_rec_i), 1 + usize::from(second)];
        let layers = self.layout().layers;
        // pooled, not zeroed: every episode fills its part (`Pairs::finish` zeroes what a
        // shorter recording leaves)
        let mut pre_bufs: Vec<Vec<F>> = (0..4)
            .map(|k| self.take_buffer(bsz * t_len * npairs[k] * layers[k].rows, false))
            .collect();
        let mut da_bufs: Vec<Vec<F>> = (0..4)
            .map(|k| self.take_buffer(bsz * t_len * npairs[k] * layers[k].cols, false))
            .collect();
        // split the pair buffers per episode
        let mut per_ep: Vec<Vec<Pairs<'_, F>>> = (0..bsz).map(|_| Vec::with_capacity(4)).collect();
        let ep_inputs = t_len * ep.input_size;
        let mut input_grads = vec![F::zero(); if request.inputs { bsz * ep_inputs } else { 0 }];
        let mut dx_per_ep: Vec<&mut [F]> = if request.inputs {
            input_grads.chunks_mut(ep_inputs).collect()
        } else {
            (0..bsz).map(|_| <&mut [F]>::default()).collect()
        };
        for (k, (pb, db)) in pre_bufs.iter_mut().zip(da_bufs.iter_mut()).enumerate() {
            let (rows, cols) = (layers[k].rows, layers[k].cols);
            let n = t_len * npairs[k];
            if n * rows * cols == 0 {
                // a layer the network does not have (no input layer)
                for pairs in per_ep.iter_mut() {
                    pairs.push(Pairs {
                        pre: &mut [],
                        da: &mut [],
                        rows,
                        cols,
                        n: 0,
                    });
                }
                continue;
            }
            for (e, (pre, da)) in pb
                .chunks_mut(n * rows)
                .zip(db.chunks_mut(n * cols))
                .enumerate()
            {
                per_ep[e].push(Pairs {
                    pre,
                    da,
                    rows,
                    cols,
                    n: 0,
                });
            }
        }
        let chunk = Self::chunk_size(bsz);
        let nparams = self.layout().len();
        let results: Vec<(F, Vec<F>)> = per_ep
            .par_chunks_mut(chunk)
            .zip(dx_per_ep.par_chunks_mut(chunk))
            .enumerate()
            .map(|(ci, (eps, dxs))| {
                let mut ws = self.take_workspace();
                let mut grad = self.take_buffer(nparams, true);
                let mut lsum = F::zero();
                for (j, (pairs, dx)) in eps.iter_mut().zip(dxs.iter_mut()).enumerate() {
                    let b = ci * chunk + j;
                    self.run_forward(ep, b, &mut ws, true, &mut []);
                    let dx = request.inputs.then_some(&mut **dx);
                    lsum += self.run_backward(ep, b, seed, &mut ws, &mut grad, pairs, dx);
                    for p in pairs.iter_mut() {
                        p.finish();
                    }
                }
                self.return_workspace(ws);
                (lsum, grad)
            })
            .collect();
        drop(per_ep);
        drop(dx_per_ep);
        let mut grads = vec![F::zero(); nparams];
        let mut total = F::zero();
        let mut spent = Vec::with_capacity(results.len() + 8);
        for (l, g) in results {
            total += l;
            spent.push(g);
        }
        // sum the chunks' gradients, in chunk order for every element, in parallel over
        // parameter ranges
        let part = nparams.div_ceil(8).max(1);
        grads
            .par_chunks_mut(part)
            .enumerate()
            .for_each(|(pi, dst)| {
                let r = pi * part..pi * part + dst.len();
                for g in &spent {
                    for (a, b) in dst.iter_mut().zip(&g[r.clone()]) {
                        *a += *b;
                    }
                }
            });
        // dW = Σ pre ⊗ da over episodes, steps and terms: one GEMM per layer
        for k in 0..4 {
            let l = layers[k];
            let rows_total = bsz * t_len * npairs[k];
            gemm_at_b(
                &mut grads[l.w..l.w + l.w_len()],
                &pre_bufs[k],
                &da_bufs[k],
                l.rows,
                l.cols,
                rows_total,
            );
        }
        spent.extend(pre_bufs);
        spent.extend(da_bufs);
        self.return_buffers(spent);
        Ok(Gradient {
            loss: total,
            grads,
            input_grads: request.inputs.then_some(input_grads),
        })
    }

    /// Backward pass of one episode whose forward is recorded in `ws`; returns its loss.
    /// With `dx`, writes `d loss / d x_t` of every step there, (T, I).
    #[allow(clippy::too_many_arguments)]
    fn run_backward(
        &self,
        ep: &Episodes<F>,
        b: usize,
        seed: Seed<'_, F>,
        ws: &mut Workspace<F>,
        grad: &mut [F],
        pairs: &mut [Pairs<'_, F>],
        mut dx: Option<&mut [F]>,
    ) -> F {
        let dims = Dims::new(self);
        let cfg = self.config();
        let t_len = ep.steps;
        let plen = self.layout().plastic_len;
        let plastic = plen > 0;
        let k = self.segment_len(t_len);
        let nseg = t_len.div_ceil(k);
        let inv_bd = F::one() / F::of((ep.batch * dims.d) as f64);
        let scale = F::one() / F::of((ep.batch * (t_len - ep.test_begin)) as f64);
        let two = F::one() + F::one();
        let ln = self.ln_params();
        let layout = self.layout();
        let (ow, ln_off) = (layout.out_weight, layout.layernorm);
        // scratch
        let bs = &mut ws.b;
        for (v, n) in [
            (&mut bs.dpred, dims.o),
            (&mut bs.dy, dims.d),
            (&mut bs.dhn, dims.h),
            (&mut bs.dhr, dims.h),
            (&mut bs.dact, dims.gh),
            (&mut bs.dz, dims.gh),
            (&mut bs.dcp, dims.h),
            (&mut bs.du, dims.h),
            (&mut bs.dhp, dims.h),
            (&mut bs.dain, dims.h),
            (&mut bs.dgy, dims.d),
            (&mut bs.dghn, dims.h),
            (&mut bs.dghr, dims.h),
            (&mut bs.dgz, dims.gh),
            (&mut bs.dgu, dims.h),
            (&mut bs.dh, dims.h),
            (&mut bs.dc, dims.h),
        ] {
            resize(v, n);
        }
        for (kk, id) in LayerId::ALL.into_iter().enumerate() {
            let l = layout.layer(id);
            resize(&mut bs.dpre[kk], l.rows);
            resize(&mut bs.ddel[kk], l.cols);
        }
        bs.one = vec![F::one()];
        resize(&mut bs.scalar, 1);
        resize(&mut ws.dp, plen);
        let mut total = F::zero();
        // the lazy form of dP_{t+1} (see `Pending`): its decay factor, and the step whose
        // dα term waits for the next sweep
        let mut kappa = F::zero();
        let mut deferred_from: Option<usize> = None;
        for pend in ws.b.pend.iter_mut() {
            pend.clear();
        }
        for seg in (0..nseg).rev() {
            let s0 = seg * k;
            let len = k.min(t_len - s0);
            if plastic && seg + 1 != nseg {
                ws.arena[..plen].copy_from_slice(&ws.ckpt[seg * plen..(seg + 1) * plen]);
                self.regenerate(ep, b, ws, s0, len);
            }
            for t in (s0..s0 + len).rev() {
                let bs = &mut ws.b;
                let v = View {
                    r: &ws.rec[t * dims.stride..(t + 1) * dims.stride],
                    dims,
                };
                let (h_prev, c_prev) = if t == 0 {
                    (&ws.zeros[..dims.h], &ws.zeros[..dims.h])
                } else {
                    let pv = View {
                        r: &ws.rec[(t - 1) * dims.stride..t * dims.stride],
                        dims,
                    };
                    (pv.f(HN), pv.f(C))
                };
                let x = ep.x(b, t);
                let p_t: Option<&[F]> =
                    plastic.then(|| &ws.arena[(t - s0) * plen..(t - s0 + 1) * plen]);
                let dp = &mut ws.dp[..];
                for vv in [
                    &mut bs.dy,
                    &mut bs.dhn,
                    &mut bs.dhr,
                    &mut bs.dact,
                    &mut bs.dz,
                    &mut bs.dcp,
                    &mut bs.du,
                    &mut bs.dhp,
                    &mut bs.dain,
                    &mut bs.dgy,
                    &mut bs.dghn,
                    &mut bs.dghr,
                    &mut bs.dgz,
                    &mut bs.dgu,
                ] {
                    vv.fill(F::zero());
                }
                for kk in 0..4 {
                    bs.dpre[kk].fill(F::zero());
                    bs.ddel[kk].fill(F::zero());
                }
                // loss, or the caller's adjoint of the outputs
                match seed {
                    Seed::Loss(loss) if t >= ep.test_begin => {
                        let y = &v.f(Y)[..dims.o];
                        total += step_loss(loss, y, ep.y(b, t), scale, &mut bs.dpred);
                        bs.dy[..dims.o].copy_from_slice(&bs.dpred);
                    }
                    Seed::Loss(_) => {}
                    Seed::OutputAdjoint(d) => {
                        let d = &d[(b * t_len + t) * dims.o..][..dims.o];
                        let y = &v.f(Y)[..dims.o];
                        total += d.iter().zip(y).map(|(&a, &y)| a * y).sum::<F>();
                        bs.dy[..dims.o].copy_from_slice(d);
                    }
                }
                if let Some(p_t) = p_t {
                    let (eta0, eta, lam, norm) = (v.s(S_ETA0), v.s(S_ETA), v.s(S_LAM), v.s(S_NORM));
                    // (a) backward through the update P_{t+1} = clamp((1 − λ)P_t + η α ⊙ Δ).
                    // dP_{t+1} = κ·dp + (step t+1's rank-1 terms, pending); the sweep leaves
                    // dQ' in dp. dα terms of every other step are deferred to the next sweep.
                    let clip = cfg.weight_clip.map(F::of);
                    let mut d_eta = F::zero();
                    let mut d_lam = F::zero();
                    if t + 1 < t_len {
                        let (use_da, prev) = match deferred_from.take() {
                            Some(tp) => (true, Some(tp)),
                            None if t > 0 => {
                                deferred_from = Some(t);
                                (false, None)
                            }
                            None => (true, None),
                        };
                        let pv = prev.map(|tp| {
                            let hp = View {
                                r: &ws.rec[(tp - 1) * dims.stride..tp * dims.stride],
                                dims,
                            }
                            .f(HN);
                            let vp = View {
                                r: &ws.rec[tp * dims.stride..(tp + 1) * dims.stride],
                                dims,
                            };
                            (ep.x(b, tp), hp, vp)
                        });
                        for &id in layout.layer_ids {
                            let kk = id as usize;
                            let l = *layout.layer(id);
                            let (sp, sd) = dims.rule.signals(id);
                            let (pre, del) = (signal(sp, x, h_prev, &v), signal(sd, x, h_prev, &v));
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
                                eta: vp.s(S_ETA),
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
                            let bias_delta = dims.rule.updates_bias().then_some(del);
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
                    }
                    for pend in bs.pend.iter_mut() {
                        pend.clear();
                    }
                    kappa = F::one() - lam;
                    // (b) norm clipping: η = η0·min(1, clip/n)
                    let c = F::of(cfg.inner_grad_clip);
                    let (d_eta0, d_norm) = if norm > c {
                        (d_eta * c / norm, -d_eta * eta0 * c / (norm * norm))
                    } else {
                        (d_eta, F::zero())
                    };
                    if d_norm != F::zero() {
                        let dn2 = d_norm / (two * norm);
                        let bias = if dims.rule.updates_bias() {
                            F::one()
                        } else {
                            F::zero()
                        };
                        for &id in layout.layer_ids {
                            let kk = id as usize;
                            let (sp, sd) = dims.rule.signals(id);
                            let (pre, del) = (signal(sp, x, h_prev, &v), signal(sd, x, h_prev, &v));
                            let (pre2, del2) = (v.s(S_PRE2 + kk), v.s(S_DEL2 + kk));
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
                    // (c) rates from the modulation output
                    if cfg.modulation {
                        let sig = v.s(S_SIG);
                        let dm = (d_eta0 * F::of(cfg.p_lr) + d_lam * F::of(cfg.p_wd))
                            * two
                            * sig
                            * (F::one() - sig);
                        bs.dy[dims.d - 1] += dm;
                    }
                    // (d) the rule's pre and δ back into the step
                    // pre: In → x (no parameter), RecH → h_prev, RecI → u, Out → hn
                    add_to(&mut bs.dhp, &bs.dpre[1]);
                    add_to(&mut bs.du, &bs.dpre[2]);
                    add_to(&mut bs.dhn, &bs.dpre[3]);
                    if dims.rule.is_second_order() {
                        self.inner_adjoint(
                            &v, c_prev, p_t, grad, pairs, bs, inv_bd, ln, ow, ln_off,
                        );
                    } else {
                        // Hebbian post: u, cell activations, y
                        add_to(&mut bs.du, &bs.ddel[0]);
                        let post = if dims.lstm { &mut bs.dact } else { &mut bs.dhr };
                        add_to(post, &bs.ddel[1]);
                        add_to(post, &bs.ddel[2]);
                        add_to(&mut bs.dy, &bs.ddel[3]);
                    }
                }
                // (e) standard backward through the step
                let ptw = |id: LayerId| self.pw(id, p_t);
                // output layer
                let hn = v.f(HN);
                if plastic {
                    bs.pend[3].push(hn, &bs.dy);
                    bs.pend[3].set_bias(&bs.dy);
                }
                add_to(&mut grad[layout.layer(LayerId::Out).b..][..dims.d], &bs.dy);
                pairs[3].push(hn, &bs.dy);
                mat_vec(self.w(LayerId::Out), ptw(LayerId::Out), &bs.dy, &mut bs.dhn);
                add_to(&mut bs.dhn, &bs.dh);
                // LayerNorm
                match (ln, ln_off) {
                    (Some((g, _)), Some((go, bo))) => {
                        let (mu, rstd) = (v.s(S_MU), v.s(S_RSTD));
                        let hr = v.f(HR);
                        for kk in 0..dims.h {
                            grad[go + kk] += bs.dhn[kk] * (hr[kk] - mu) * rstd;
                            grad[bo + kk] += bs.dhn[kk];
                        }
                        layernorm::backward(hr, mu, rstd, Some(g), &bs.dhn, &mut bs.dghr);
                        add_to(&mut bs.dhr, &bs.dghr);
                    }
                    _ => add_to(&mut bs.dhr, &bs.dhn),
                }
                // cell
                let act = v.f(ACT);
                if dims.lstm {
                    cell::lstm_backward(
                        act,
                        c_prev,
                        v.f(TC),
                        &bs.dhr,
                        &bs.dc,
                        &mut bs.dact,
                        &mut bs.dcp,
                    );
                    cell::lstm_act_to_z(act, &bs.dact, &mut bs.dz);
                } else {
                    cell::rnn_backward(act, &bs.dhr, &mut bs.dz);
                }
                // recurrent maps
                let u = v.f(U);
                for (kk, id, pre) in [(1, LayerId::RecH, h_prev), (2, LayerId::RecI, u)] {
                    if plastic {
                        bs.pend[kk].push(pre, &bs.dz);
                        bs.pend[kk].set_bias(&bs.dz);
                    }
                    add_to(&mut grad[layout.layer(id).b..][..dims.gh], &bs.dz);
                }
                pairs[1].push(h_prev, &bs.dz);
                pairs[2].push(u, &bs.dz);
                mat_vec(
                    self.w(LayerId::RecH),
                    ptw(LayerId::RecH),
                    &bs.dz,
                    &mut bs.dhp,
                );
                mat_vec(
                    self.w(LayerId::RecI),
                    ptw(LayerId::RecI),
                    &bs.dz,
                    &mut bs.du,
                );
                // input layer
                if cfg.input_layer {
                    relu_mask(&mut bs.dain, &bs.du, u);
                    if plastic {
                        bs.pend[0].push(x, &bs.dain);
                        bs.pend[0].set_bias(&bs.dain);
                    }
                    add_to(&mut grad[layout.layer(LayerId::In).b..][..dims.h], &bs.dain);
                    pairs[0].push(x, &bs.dain);
                }
                // d loss / d x: the input layer's `pre` and mat-vec, or `u = x` itself
                if let Some(dx) = dx.as_deref_mut() {
                    let dx = &mut dx[t * ep.input_size..(t + 1) * ep.input_size];
                    if cfg.input_layer {
                        dx.copy_from_slice(&bs.dpre[0]);
                        mat_vec(self.w(LayerId::In), ptw(LayerId::In), &bs.dain, dx);
                    } else {
                        dx.copy_from_slice(&bs.du);
                    }
                }
                // carry to step t − 1
                std::mem::swap(&mut bs.dh, &mut bs.dhp);
                std::mem::swap(&mut bs.dc, &mut bs.dcp);
            }
        }
        total
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

    /// Gradient rule: backpropagates the adjoints of the inner errors `δ` (in `bs.ddel`)
    /// through the inner backward computation that produced them — the second-order terms.
    #[allow(clippy::too_many_arguments)]
    fn inner_adjoint(
        &self,
        v: &View<'_, F>,
        c_prev: &[F],
        p_t: &[F],
        grad: &mut [F],
        pairs: &mut [Pairs<'_, F>],
        bs: &mut BackScratch<F>,
        inv_bd: F,
        ln: Option<(&[F], &[F])>,
        ow: usize,
        ln_off: Option<(usize, usize)>,
    ) {
        let dims = v.dims;
        let two = F::one() + F::one();
        let s = self.out_weight();
        bs.dgz.copy_from_slice(&bs.ddel[1]);
        add_to(&mut bs.dgz, &bs.ddel[2]);
        if self.config().input_layer {
            // g_ain = g_u ⊙ 1[a_in > 0]
            let u = v.f(U);
            relu_mask(&mut bs.dgu, &bs.ddel[0], u);
            // g_u = (W_i + P_i) g_z
            self.inner_matvec_adjoint(
                LayerId::RecI,
                &bs.dgu,
                v.f(GZ),
                p_t,
                &mut bs.pend[2],
                &mut pairs[2],
                &mut bs.dgz,
            );
        }
        // g_z from g_hr (cell, c_prev held constant)
        if dims.lstm {
            cell::lstm_inner_adjoint(
                v.f(ACT),
                c_prev,
                v.f(TC),
                v.f(GHR),
                &bs.dgz,
                &mut bs.dghr,
                &mut bs.dact,
                &mut bs.dcp,
            );
        } else {
            cell::rnn_backward(v.f(ACT), &bs.dgz, &mut bs.dghr);
        }
        // g_hr from g_hn (LayerNorm)
        match (ln, ln_off) {
            (Some((g, _)), Some((go, _))) => {
                let (mu, rstd) = (v.s(S_MU), v.s(S_RSTD));
                layernorm::backward_adjoint(
                    v.f(HR),
                    mu,
                    rstd,
                    g,
                    v.f(GHN),
                    v.f(GHR),
                    &bs.dghr,
                    &mut bs.dghn,
                    &mut bs.dhr,
                    &mut grad[go..go + dims.h],
                );
            }
            _ => bs.dghn.copy_from_slice(&bs.dghr),
        }
        // g_hn = (W_out + P_out) g_y
        bs.dgy.copy_from_slice(&bs.ddel[3]);
        self.inner_matvec_adjoint(
            LayerId::Out,
            &bs.dghn,
            v.f(GY),
            p_t,
            &mut bs.pend[3],
            &mut pairs[3],
            &mut bs.dgy,
        );
        // g_y = 2/(BD) s² ⊙ y
        let y = v.f(Y);
        for kk in 0..dims.d {
            let c = two * inv_bd * bs.dgy[kk];
            bs.dy[kk] += c * s[kk] * s[kk];
            grad[ow + kk] += c * two * s[kk] * y[kk];
        }
    }
}

/// `dst = src ⊙ 1[u > 0]` (the adjoint through a ReLU whose output is `u`).
#[inline]
fn relu_mask<F: Float>(dst: &mut [F], src: &[F], u: &[F]) {
    for ((d, &s), &u) in dst.iter_mut().zip(src).zip(u) {
        *d = if u > F::zero() { s } else { F::zero() };
    }
}

#[inline]
fn add_to<F: Float>(dst: &mut [F], src: &[F]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// `dst = Aᵀ B` with `A` (k × m) and `B` (k × n) row-major, `dst` (m × n) row-major.
fn gemm_at_b<F: Float>(dst: &mut [F], a: &[F], b: &[F], m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(F::zero());
        return;
    }
    debug_assert_eq!(a.len(), k * m);
    debug_assert_eq!(b.len(), k * n);
    // Row blocks of dst in parallel; each block is one single-threaded GEMM, so the
    // summation order is fixed whatever the number of threads.
    let block = m.div_ceil(4).max(1);
    dst.par_chunks_mut(block * n)
        .enumerate()
        .for_each(|(bi, d)| {
            let r0 = bi * block;
            let mb = d.len() / n;
            // SAFETY: pointers and strides describe in-bounds matrices: lhs (mb × k) is Aᵀ
            // restricted to rows r0.., read with row stride 1 and column stride m; rhs (k × n)
            // is B; dst (mb × n) is this block.
            unsafe {
                gemm::gemm(
                    mb,
                    n,
                    k,
                    d.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr().add(r0),
                    m as isize,
                    1,
                    b.as_ptr(),
                    1,
                    n as isize,
                    F::zero(),
                    F::one(),
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
}
