//! The episode engine: runs a [`Network`] forward (docs/algorithm.md §1–2) and backward
//! (the exact meta-gradient by backpropagation through time through the plastic updates,
//! second-order terms of the gradient rule included).
//!
//! A [`Network`] is plain data (configuration, layout, parameters); an [`Engine`] owns the
//! scratch memory (per-episode workspaces and the large reusable buffers) and computes
//! [`Engine::forward`], [`Engine::loss_and_grad`] and [`Engine::vjp`] for any network given
//! to it. `Network::forward`, `Network::loss_and_grad`, `Network::loss_and_grad_with` and
//! `Network::vjp` (defined in this module, so that `network.rs` does not depend on the
//! engine) are shorthands that use a process-wide engine per float type
//! ([`Engine::shared`]).
//!
//! How it computes: episodes are independent, so each one runs start to finish (forward,
//! then backward) on one thread with its own plastic state, which for the paper's sizes
//! stays in cache. The backward pass needs `P_t` at every step: an episode keeps all `T`
//! snapshots when they fit the network's snapshot budget, and otherwise keeps checkpoints
//! every `k ≈ sqrt(T)` steps and regenerates each segment's snapshots from the recorded
//! `(pre, δ, η, λ)` with the same arithmetic. The gradients of the shared weights `W` are
//! sums of rank-1 terms `pre ⊗ dy` over episodes and steps: those vectors are recorded and
//! reduced at the end with one GEMM per layer. Work is split into a fixed number of
//! episode chunks that depends only on the batch size, and chunk results are summed in
//! chunk order, so results do not depend on thread count.
//!
//! Networks without plastic weights (`plasticity = none`) take another route: nothing is
//! per-episode there, so `batched` runs each time step as matrix products over the whole
//! batch (same results to rounding, several times faster; [`Engine::per_episode`] keeps the
//! per-episode route reachable for comparison).
//!
//! The parts: `record` (the typed per-step record), `forward` (the step, the rates, the
//! plastic update), `backward` (the sweep back through steps and updates). The
//! plasticity rule enters only through [`crate::plasticity`]'s signals.
//!
//! A second backend (e.g. a GPU engine) would be another type with the same three entry
//! points taking `&Network<F>` and `&Episodes<F>` and returning [`Forward`] and
//! [`Gradient`]: it reads the parameters through [`Network::params`] and
//! [`Network::layout`] (named tensors, the plastic layers in `Layout::layer_ids`), keeps its
//! own device buffers, and is checked by the same reference fixtures and finite-difference
//! tests. Nothing in `Network` would change.

mod backward;
mod batched;
mod forward;
mod record;

use std::any::Any;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::episode::{step_loss, Episodes, Loss};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::matmul::gemm_at_b;
use crate::network::Network;
use crate::params::LayerId;
use crate::plasticity::Signal;
use backward::{BackScratch, Pairs, Sinks};
use record::{RecordLayout, Scalars, StepView};

/// Per-step diagnostics of a forward pass, each (B, T) row-major unless noted.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward<F> {
    /// Predictions `y[0..O]`, (B, T, O).
    pub outputs: Vec<F>,
    /// The modulated plasticity rate η before norm clipping (docs/algorithm.md §2.1).
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
    /// The episode loss (the same quantity [`Engine::loss_and_grad`] returns).
    pub loss: F,
}

/// The episode loss and its gradient with respect to every parameter (and, when asked
/// for, to the inputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient<F> {
    /// The episode loss; for [`Engine::vjp`], the scalar `Σ d_outputs ⊙ outputs` whose
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

/// Scratch space one episode needs; pooled and reused across calls.
#[derive(Default)]
struct Workspace<F> {
    /// The per-step vector records, (T, stride).
    rec: Vec<F>,
    /// The per-step scalars, (T).
    scalars: Vec<Scalars<F>>,
    /// Plastic-weight slots.
    arena: Vec<F>,
    /// Checkpoints of `P` at segment starts.
    ckpt: Vec<F>,
    /// The adjoint of the plastic weights.
    dp: Vec<F>,
    /// `h_0 = c_0 = 0`.
    zeros: Vec<F>,
    b: BackScratch<F>,
}

/// The CPU engine: scratch memory reused across calls (so that a training step does not
/// map fresh memory), and the forward and backward passes. Any number of threads may use
/// one engine at once; results do not depend on which engine or how many threads.
pub struct Engine<F: Float> {
    pool: Mutex<Vec<Workspace<F>>>,
    /// Reusable large buffers (pair records, per-chunk gradients).
    buffers: Mutex<Vec<Vec<F>>>,
    /// Whether networks without plastic weights take the batched path (`batched.rs`).
    batched: bool,
}

impl<F: Float> Default for Engine<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> std::fmt::Debug for Engine<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// One pass over a network: the network and its record layout (derived once).
struct Pass<'a, F: Float> {
    net: &'a Network<F>,
    dims: RecordLayout,
}

impl<F: Float> Deref for Pass<'_, F> {
    type Target = Network<F>;
    fn deref(&self) -> &Network<F> {
        self.net
    }
}

impl<'a, F: Float> Pass<'a, F> {
    fn new(net: &'a Network<F>) -> Self {
        Pass {
            net,
            dims: RecordLayout::new(net.config()),
        }
    }

    /// Segment length for the snapshots of an episode of `t` steps.
    fn segment_len(&self, t: usize) -> usize {
        let plen = self.layout().plastic_len.max(1);
        let slots = self.snapshot_budget() / (plen * std::mem::size_of::<F>());
        if slots >= t {
            t
        } else {
            ((t as f64).sqrt().ceil() as usize).clamp(1, t)
        }
    }

    /// A layer's plastic matrix `P_W` inside a plastic state.
    #[inline]
    fn pw<'p>(&self, id: LayerId, p: Option<&'p [F]>) -> Option<&'p [F]> {
        let l = self.layout().layer(id);
        p.map(|p| &p[l.pw..l.pw + l.w_len()])
    }
}

/// The vector a signal refers to, at one step.
#[inline]
fn signal<'a, F: Float>(sig: Signal, x: &'a [F], h_prev: &'a [F], v: &StepView<'a, F>) -> &'a [F] {
    use record::Field;
    match sig {
        Signal::Input => x,
        Signal::HiddenPrev => h_prev,
        Signal::InputLayerOut => v.u(),
        Signal::CellActivations => v.act(),
        Signal::Hidden => v.h(),
        Signal::Output => v.y(),
        Signal::InnerErrorIn => v.get(Field::InnerErrorInputPre),
        Signal::InnerErrorCell => v.get(Field::InnerErrorCell),
        Signal::InnerErrorOut => v.get(Field::InnerErrorOut),
    }
}

/// Fixed partition of the batch into chunks (depends on B only).
fn chunk_size(batch: usize) -> usize {
    batch.div_ceil(batch.min(16))
}

fn check_episodes<F: Float>(net: &Network<F>, ep: &Episodes<F>) -> Result<()> {
    ep.check()?;
    let c = net.config();
    if ep.input_size != c.input_size || ep.output_size != c.output_size {
        return Err(Error::Data(format!(
            "episodes have input size {} and output size {}, the network expects {} and {}",
            ep.input_size, ep.output_size, c.input_size, c.output_size
        )));
    }
    Ok(())
}

impl<F: Float> Engine<F> {
    /// An engine with empty pools.
    pub fn new() -> Self {
        Engine {
            pool: Mutex::new(Vec::new()),
            buffers: Mutex::new(Vec::new()),
            batched: true,
        }
    }

    /// An engine that runs every network episode by episode, the non-plastic ones too,
    /// instead of as per-step GEMMs over the batch: the path plastic networks take. For
    /// comparisons (tests, benchmarks); it gives the same results to rounding, slower.
    pub fn per_episode() -> Self {
        Engine {
            batched: false,
            ..Self::new()
        }
    }

    /// Whether `net` takes the batched path: no plastic weights, and not [`Self::per_episode`].
    fn takes_batched(&self, net: &Network<F>) -> bool {
        self.batched && !net.config().is_plastic()
    }

    /// The process-wide engine for `F` that the `Network` shorthands use.
    pub fn shared() -> Arc<Engine<F>> {
        type Registry = Mutex<Vec<Arc<dyn Any + Send + Sync>>>;
        static REGISTRY: Registry = Mutex::new(Vec::new());
        let mut registry = REGISTRY.lock().unwrap();
        for e in registry.iter() {
            if let Ok(e) = e.clone().downcast::<Engine<F>>() {
                return e;
            }
        }
        let e = Arc::new(Engine::new());
        registry.push(e.clone());
        e
    }

    /// Frees the pooled scratch memory (it is allocated again as needed).
    pub fn release_memory(&self) {
        self.pool.lock().unwrap().clear();
        self.buffers.lock().unwrap().clear();
    }

    fn take_workspace(&self) -> Workspace<F> {
        self.pool.lock().unwrap().pop().unwrap_or_default()
    }

    fn return_workspace(&self, ws: Workspace<F>) {
        let mut pool = self.pool.lock().unwrap();
        pool.push(ws);
        pool.truncate(64);
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

    /// Forward pass only, with per-step diagnostics; no gradient bookkeeping.
    pub fn forward(&self, net: &Network<F>, ep: &Episodes<F>, loss: Loss) -> Result<Forward<F>> {
        check_episodes(net, ep)?;
        if self.takes_batched(net) {
            return Ok(self.forward_batched(net, ep, loss));
        }
        let pass = Pass::new(net);
        let (bsz, t_len, o) = (ep.batch, ep.steps, pass.dims.o);
        let chunk = chunk_size(bsz);
        let scale = F::one() / F::of((bsz * (t_len - ep.test_begin)) as f64);
        // per episode: outputs (T·O), then 6 (T) series: η0, η, λ, n, ‖P‖, inner
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
                    pass.run_forward(ep, b, &mut ws, false, pn);
                    for t in 0..t_len {
                        let v = StepView::at(&ws.rec, &ws.scalars, &pass.dims, t);
                        let y = v.y();
                        outs[t * o..(t + 1) * o].copy_from_slice(&y[..o]);
                        head[t] = v.s.eta0;
                        head[t_len + t] = v.s.eta;
                        head[2 * t_len + t] = v.s.lambda;
                        head[3 * t_len + t] = v.s.update_norm;
                        inner[t] = v.s.inner_loss;
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
    pub fn loss_and_grad(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        loss: Loss,
    ) -> Result<Gradient<F>> {
        self.loss_and_grad_with(net, ep, loss, GradRequest::default())
    }

    /// [`Self::loss_and_grad`], with the extra results of `request` (e.g. the gradient
    /// with respect to the inputs, for a network that feeds this one).
    pub fn loss_and_grad_with(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        loss: Loss,
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        self.backward(net, ep, Seed::Loss(loss), request, &mut [])
    }

    /// [`Self::loss_and_grad_with`], also returning the outputs (B, T, O) of the forward
    /// pass the gradient ran: the same values as [`Forward::outputs`] of [`Self::forward`],
    /// without running the forward pass a second time.
    pub fn loss_and_grad_with_outputs(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        loss: Loss,
        request: GradRequest,
    ) -> Result<(Gradient<F>, Vec<F>)> {
        check_episodes(net, ep)?;
        let mut outputs = vec![F::zero(); ep.batch * ep.steps * ep.output_size];
        let g = self.backward(net, ep, Seed::Loss(loss), request, &mut outputs)?;
        Ok((g, outputs))
    }

    /// The vector-Jacobian product for any loss the caller computes from the outputs: given
    /// `d_outputs = dL/d outputs`, (B, T, O) like [`Forward::outputs`], returns `dL/d`
    /// every parameter (and, with `request.inputs`, `dL/d inputs`). The targets and
    /// `test_begin` of `ep` are not used. This is the same backward pass as
    /// [`Self::loss_and_grad`], which seeds it with its own loss's output adjoint.
    pub fn vjp(
        &self,
        net: &Network<F>,
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
        self.backward(net, ep, Seed::OutputAdjoint(d_outputs), request, &mut [])
    }

    /// The one backward pass: forward and backward of every episode, seeded by `seed`;
    /// the forward pass's outputs (B, T, O) are copied into `outputs` unless it is empty.
    fn backward(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        seed: Seed<'_, F>,
        request: GradRequest,
        outputs: &mut [F],
    ) -> Result<Gradient<F>> {
        check_episodes(net, ep)?;
        if self.takes_batched(net) {
            return Ok(self.backward_batched(net, ep, seed, request, outputs));
        }
        let pass = Pass::new(net);
        let (bsz, t_len) = (ep.batch, ep.steps);
        let second = pass.dims.second_order;
        // rank-1 terms per layer and step: In 1, RecH 1, RecI 1(+1 with an input layer), Out 1(+1)
        let inner_rec_i = second && net.config().input_layer;
        let npairs = [1, 1, 1 + usize::from(inner_rec_i), 1 + usize::from(second)];
        let layers = net.layout().layers;
        // pooled, not zeroed: every episode fills its part (`Pairs::finish` zeroes what a
        // shorter recording leaves)
        let mut pre_bufs: Vec<Vec<F>> = (0..4)
            .map(|k| self.take_buffer(bsz * t_len * npairs[k] * layers[k].rows, false))
            .collect();
        let mut da_bufs: Vec<Vec<F>> = (0..4)
            .map(|k| self.take_buffer(bsz * t_len * npairs[k] * layers[k].cols, false))
            .collect();
        let ep_inputs = t_len * ep.input_size;
        let mut input_grads = vec![F::zero(); if request.inputs { bsz * ep_inputs } else { 0 }];
        let mut per_ep =
            split_per_episode(&mut pre_bufs, &mut da_bufs, &layers, &npairs, bsz, t_len);
        let mut dx_per_ep: Vec<&mut [F]> = if request.inputs {
            input_grads.chunks_mut(ep_inputs).collect()
        } else {
            (0..bsz).map(|_| <&mut [F]>::default()).collect()
        };
        let o = pass.dims.o;
        let mut out_per_ep: Vec<&mut [F]> = if outputs.is_empty() {
            (0..bsz).map(|_| <&mut [F]>::default()).collect()
        } else {
            outputs.chunks_mut(t_len * o).collect()
        };
        let chunk = chunk_size(bsz);
        let nparams = net.layout().len();
        let results: Vec<(F, Vec<F>)> = per_ep
            .par_chunks_mut(chunk)
            .zip(dx_per_ep.par_chunks_mut(chunk))
            .zip(out_per_ep.par_chunks_mut(chunk))
            .enumerate()
            .map(|(ci, ((eps, dxs), outs))| {
                let mut ws = self.take_workspace();
                let mut grad = self.take_buffer(nparams, true);
                let mut lsum = F::zero();
                for (j, ((pairs, dx), out)) in
                    eps.iter_mut().zip(dxs.iter_mut()).zip(outs).enumerate()
                {
                    let b = ci * chunk + j;
                    pass.run_forward(ep, b, &mut ws, true, &mut []);
                    for t in 0..out.len() / o.max(1) {
                        let v = StepView::at(&ws.rec, &ws.scalars, &pass.dims, t);
                        out[t * o..(t + 1) * o].copy_from_slice(&v.y()[..o]);
                    }
                    let mut sinks = Sinks {
                        grad: &mut grad,
                        pairs,
                        dx: request.inputs.then_some(&mut **dx),
                    };
                    lsum += pass.run_backward(ep, b, seed, &mut ws, &mut sinks);
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
        sum_in_chunk_order(&mut grads, &spent);
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
}

/// Splits the pair buffers of every layer into one [`Pairs`] per episode.
fn split_per_episode<'a, F: Float>(
    pre_bufs: &'a mut [Vec<F>],
    da_bufs: &'a mut [Vec<F>],
    layers: &[crate::params::LayerLayout; 4],
    npairs: &[usize; 4],
    bsz: usize,
    t_len: usize,
) -> Vec<Vec<Pairs<'a, F>>> {
    let mut per_ep: Vec<Vec<Pairs<'a, F>>> = (0..bsz).map(|_| Vec::with_capacity(4)).collect();
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
    per_ep
}

/// `dst = Σ_chunks g`, in chunk order for every element, in parallel over parameter ranges.
fn sum_in_chunk_order<F: Float>(dst: &mut [F], chunks: &[Vec<F>]) {
    let part = dst.len().div_ceil(8).max(1);
    dst.par_chunks_mut(part).enumerate().for_each(|(pi, dst)| {
        let r = pi * part..pi * part + dst.len();
        for g in chunks {
            for (a, b) in dst.iter_mut().zip(&g[r.clone()]) {
                *a += *b;
            }
        }
    });
}

/// Shorthands on the process-wide engine ([`Engine::shared`]).
impl<F: Float> Network<F> {
    /// Forward pass only, with per-step diagnostics ([`Engine::forward`]).
    pub fn forward(&self, ep: &Episodes<F>, loss: Loss) -> Result<Forward<F>> {
        Engine::shared().forward(self, ep, loss)
    }

    /// The episode loss and its exact gradient ([`Engine::loss_and_grad`]).
    pub fn loss_and_grad(&self, ep: &Episodes<F>, loss: Loss) -> Result<Gradient<F>> {
        Engine::shared().loss_and_grad(self, ep, loss)
    }

    /// [`Self::loss_and_grad`] with extra results ([`Engine::loss_and_grad_with`]).
    pub fn loss_and_grad_with(
        &self,
        ep: &Episodes<F>,
        loss: Loss,
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        Engine::shared().loss_and_grad_with(self, ep, loss, request)
    }

    /// The vector-Jacobian product for a loss of the caller's ([`Engine::vjp`]).
    pub fn vjp(
        &self,
        ep: &Episodes<F>,
        d_outputs: &[F],
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        Engine::shared().vjp(self, ep, d_outputs, request)
    }
}

#[inline]
fn add_to<F: Float>(dst: &mut [F], src: &[F]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

fn resize<F: Float>(v: &mut Vec<F>, n: usize) {
    v.clear();
    v.resize(n, F::zero());
}
