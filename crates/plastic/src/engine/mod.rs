//! The episode engine: runs a [`Network`] forward (docs/algorithm.md §1–2) and backward
//! (the exact meta-gradient by backpropagation through time through the plastic updates,
//! second-order terms of the gradient rule included).
//!
//! A [`Network`] is plain data (configuration, layout, parameters); an [`Engine`] owns the
//! scratch memory (per-episode workspaces and the large reusable buffers) and computes
//! [`Engine::forward`], [`Engine::loss_and_grad`] and [`Engine::vjp`] for any network given
//! to it; [`Engine::forward_with_tape`] and [`Engine::vjp_with_tape`] split a VJP in two,
//! the forward pass keeping its records in a [`Tape`] for the backward pass (for autograd
//! frameworks, whose backward comes after a loss computed elsewhere). `Network::forward`, `Network::loss_and_grad`, `Network::loss_and_grad_with` and
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

use crate::config::NetworkConfig;
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

/// The records of one forward pass over a batch, kept for its backward pass
/// ([`Engine::forward_with_tape`], then [`Engine::vjp_with_tape`]; docs/algorithm.md §7.8,
/// §8): per episode, the vectors and scalars of every step and, for long episodes, the
/// checkpoints of the plastic weights (the backward pass regenerates the rest), or the
/// batched records of a network without plastic weights; and a copy of the episodes. An
/// owned value: it does not borrow the engine, and several may be outstanding at once.
pub struct Tape<F: Float> {
    /// The configuration of the network that recorded it.
    config: NetworkConfig,
    /// A fingerprint of that network's parameters (see [`params_fingerprint`]).
    params: u64,
    episodes: Episodes<F>,
    records: TapeRecords<F>,
}

/// What a [`Tape`] holds, by the route the network takes.
enum TapeRecords<F: Float> {
    /// Every episode's records and checkpoints, one after the other in `data` (each
    /// `sizes.rec + sizes.ckpt` values) and `scalars` (`T` each).
    PerEpisode {
        data: Vec<F>,
        scalars: Vec<Scalars<F>>,
        sizes: RecordSizes,
    },
    /// A network without plastic weights: the batched pass's records.
    Batched(Box<batched::Records<F>>),
}

impl<F: Float> Tape<F> {
    /// B, the number of episodes recorded.
    pub fn batch(&self) -> usize {
        self.episodes.batch
    }

    /// T, the number of steps of each episode.
    pub fn steps(&self) -> usize {
        self.episodes.steps
    }

    /// The memory the tape holds, in bytes.
    pub fn bytes(&self) -> usize {
        let f = std::mem::size_of::<F>();
        let records = match &self.records {
            TapeRecords::PerEpisode { data, scalars, .. } => {
                data.capacity() * f + scalars.capacity() * std::mem::size_of::<Scalars<F>>()
            }
            TapeRecords::Batched(rec) => rec.capacity() * f,
        };
        let ep = &self.episodes;
        records + (ep.input.capacity() + ep.target.capacity()) * f
    }

    /// Whether `net` is the network this tape was recorded with: same configuration
    /// (else the error lists the keys that differ) and same parameters.
    fn check_network(&self, net: &Network<F>) -> Result<()> {
        if net.config() != &self.config {
            let table = |c: &NetworkConfig| toml::Table::try_from(c).unwrap_or_default();
            let (rec, given) = (table(&self.config), table(net.config()));
            let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
            let mut keys: Vec<&String> = rec.keys().chain(given.keys()).collect();
            keys.sort();
            keys.dedup();
            let diffs: Vec<String> = keys
                .into_iter()
                .filter(|k| rec.get(*k) != given.get(*k))
                .map(|k| {
                    format!(
                        "{k} = {} (tape) vs {} (network)",
                        show(rec.get(k)),
                        show(given.get(k))
                    )
                })
                .collect();
            return Err(Error::Data(format!(
                "this tape was recorded by a network of another configuration ({}); use it with \
                 the network that recorded it",
                diffs.join(", ")
            )));
        }
        if params_fingerprint(net.params()) != self.params {
            return Err(Error::Data(
                "the network's parameters changed since the forward pass that recorded this \
                 tape; its backward pass needs the same parameters (run forward_with_tape \
                 again after changing them)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl<F: Float> std::fmt::Debug for Tape<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("batch", &self.batch())
            .field("steps", &self.steps())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

/// A fingerprint of a parameter buffer's bits (FNV-1a over the values): a tape's backward
/// pass refuses a network whose parameters changed since the forward pass.
fn params_fingerprint<F: Float>(params: &[F]) -> u64 {
    params.iter().fold(0xcbf2_9ce4_8422_2325, |h, v| {
        (h ^ v.f64().to_bits()).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Splits a tape's buffers into every episode's part.
fn episode_records<'a, F: Float>(
    data: &'a mut [F],
    scalars: &'a mut [Scalars<F>],
    sizes: &RecordSizes,
) -> Vec<Option<Taped<'a, F>>> {
    let per = sizes.rec + sizes.ckpt;
    data.chunks_mut(per)
        .zip(scalars.chunks_mut(sizes.steps))
        .map(|(d, sc)| {
            let (rec, ckpt) = d.split_at_mut(sizes.rec);
            Some(Taped {
                rec,
                scalars: sc,
                ckpt,
            })
        })
        .collect()
}

/// Checks an output adjoint against the episodes: (B, T, O) values, all finite.
fn check_d_outputs<F: Float>(ep: &Episodes<F>, d_outputs: &[F]) -> Result<()> {
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
    Ok(())
}

/// Where the backward pass's adjoint of the outputs comes from.
#[derive(Debug, Clone, Copy)]
enum Seed<'a, F> {
    /// The episode loss against the episodes' targets, at the steps from `test_begin`.
    Loss(Loss),
    /// Given by the caller, (B, T, O), at every step.
    OutputAdjoint(&'a [F]),
}

/// Scratch space one episode needs; pooled and reused across calls: its own records (for
/// a forward and backward run back to back) and the backward pass's scratch.
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
    scratch: EpisodeScratch<F>,
}

/// What one episode's passes need besides its records.
#[derive(Default)]
struct EpisodeScratch<F> {
    /// The adjoint of the plastic weights (the backward pass); `P_T` when a recorded
    /// forward pass reports the norm of the plastic weights.
    dp: Vec<F>,
    /// `h_0 = c_0 = 0`.
    zeros: Vec<F>,
    b: BackScratch<F>,
}

/// The sizes of one episode's records (docs/algorithm.md §8): the vectors and scalars of
/// every step, the slots that hold `P_t`, and the checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordSizes {
    steps: usize,
    rec: usize,
    arena: usize,
    ckpt: usize,
    /// The segment length `k` (training: `T` with snapshots, ≈ √T with checkpoints).
    seg_len: usize,
}

/// One episode's part of a [`Tape`]: what its backward pass reads besides the plastic
/// weights of the current segment, which it regenerates (docs/algorithm.md §8).
struct Taped<'a, F> {
    rec: &'a mut [F],
    scalars: &'a mut [Scalars<F>],
    ckpt: &'a mut [F],
}

/// Everything one episode's forward and backward pass work on: its records (a pooled
/// workspace's or a [`Tape`]'s), the slots of `P` and the scratch.
struct EpisodeState<'a, F> {
    rec: &'a mut [F],
    scalars: &'a mut [Scalars<F>],
    arena: &'a mut [F],
    ckpt: &'a mut [F],
    seg_len: usize,
    dp: &'a mut Vec<F>,
    zeros: &'a mut Vec<F>,
    b: &'a mut BackScratch<F>,
}

impl<F: Float> Workspace<F> {
    /// The state of an episode sized for `sizes`: recorded in this workspace, or in
    /// `taped`, a tape's part (the slots of `P` are always this workspace's).
    fn state<'a>(
        &'a mut self,
        sizes: &RecordSizes,
        taped: Option<Taped<'a, F>>,
    ) -> EpisodeState<'a, F> {
        // every element is written by the forward pass before it is read (slot 0 and the
        // first checkpoint are zeroed there)
        self.arena.resize(sizes.arena, F::zero());
        let t = match taped {
            Some(t) => t,
            None => {
                self.rec.resize(sizes.rec, F::zero());
                self.scalars.resize(sizes.steps, Default::default());
                self.ckpt.resize(sizes.ckpt, F::zero());
                Taped {
                    rec: &mut self.rec,
                    scalars: &mut self.scalars,
                    ckpt: &mut self.ckpt,
                }
            }
        };
        EpisodeState {
            rec: t.rec,
            scalars: t.scalars,
            arena: &mut self.arena,
            ckpt: t.ckpt,
            seg_len: sizes.seg_len,
            dp: &mut self.scratch.dp,
            zeros: &mut self.scratch.zeros,
            b: &mut self.scratch.b,
        }
    }
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
    /// The buffer of one recycled [`Tape`] ([`Engine::recycle_tape`]).
    spare_tape: Mutex<Option<Vec<F>>>,
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

    /// Segment length for the snapshots of an episode of `t` steps (docs/algorithm.md §8).
    fn segment_len(&self, t: usize) -> usize {
        let plen = self.layout().plastic_len.max(1);
        let slots = self.snapshot_budget() / (plen * std::mem::size_of::<F>());
        if slots >= t {
            t
        } else {
            ((t as f64).sqrt().ceil() as usize).clamp(1, t)
        }
    }

    /// The sizes of one episode's records for `t` steps: in training (`train`), what the
    /// backward pass needs (all `T` snapshots of `P` when they fit the snapshot budget,
    /// else `k` slots and the checkpoints, docs/algorithm.md §8); otherwise two alternating
    /// slots of `P`.
    fn record_sizes(&self, t: usize, train: bool) -> RecordSizes {
        let plen = self.layout().plastic_len;
        let plastic = plen > 0;
        let k = if train { self.segment_len(t) } else { 1 };
        let nseg = t.div_ceil(k);
        let slots = if train { k } else { 2 };
        RecordSizes {
            steps: t,
            rec: t * self.dims.stride(),
            arena: if plastic { slots * plen } else { 0 },
            ckpt: if plastic && train && nseg > 1 {
                nseg * plen
            } else {
                0
            },
            seg_len: k,
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
            spare_tape: Mutex::new(None),
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
        *self.spare_tape.lock().unwrap() = None;
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
        let sizes = pass.record_sizes(ep.steps, false);
        let mut records: Vec<Option<Taped<'_, F>>> = (0..ep.batch).map(|_| None).collect();
        Ok(self.forward_episodes(&pass, ep, loss, &sizes, &mut records, false))
    }

    /// The forward pass of every episode, and its diagnostics. An episode with `Some`
    /// records is recorded there (for a later backward pass, `train`), the others in a
    /// pooled workspace.
    fn forward_episodes(
        &self,
        pass: &Pass<'_, F>,
        ep: &Episodes<F>,
        loss: Loss,
        sizes: &RecordSizes,
        records: &mut [Option<Taped<'_, F>>],
        train: bool,
    ) -> Forward<F> {
        let (bsz, t_len, o) = (ep.batch, ep.steps, pass.dims.o);
        let chunk = chunk_size(bsz);
        let scale = F::one() / F::of((bsz * (t_len - ep.test_begin)) as f64);
        // per episode: outputs (T·O), then 6 (T) series: η0, η, λ, n, ‖P‖, inner
        let per = t_len * o + 6 * t_len;
        let mut out = vec![F::zero(); bsz * per];
        let losses: Vec<F> = out
            .par_chunks_mut(chunk * per)
            .zip(records.par_chunks_mut(chunk))
            .enumerate()
            .map(|(ci, (block, recs))| {
                let mut ws = self.take_workspace();
                let mut lsum = F::zero();
                let mut grad = vec![F::zero(); o];
                for (j, (e, r)) in block.chunks_mut(per).zip(recs.iter_mut()).enumerate() {
                    let b = ci * chunk + j;
                    let (outs, series) = e.split_at_mut(t_len * o);
                    let (head, pn) = series.split_at_mut(4 * t_len);
                    let (pn, inner) = pn.split_at_mut(t_len);
                    let mut st = ws.state(sizes, r.take());
                    pass.run_forward(ep, b, &mut st, train, pn);
                    for t in 0..t_len {
                        let v = StepView::at(st.rec, st.scalars, &pass.dims, t);
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
        f
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
        check_d_outputs(ep, d_outputs)?;
        self.backward(net, ep, Seed::OutputAdjoint(d_outputs), request, &mut [])
    }

    /// [`Self::forward`] that also keeps what the backward pass needs, for a later
    /// [`Self::vjp_with_tape`] that does not run the forward pass again (docs/algorithm.md
    /// §7.8, §8). The [`Forward`] is the same, bit for bit, as [`Self::forward`]'s.
    ///
    /// The [`Tape`] is an owned value, independent of the engine's scratch memory: any
    /// number of tapes may be outstanding, and each may be read by any number of backward
    /// passes. It holds every episode's per-step records (`O(T·H)`) and, for episodes whose
    /// `T` snapshots of `P` do not fit the network's snapshot budget, the checkpoints that
    /// [`Self::loss_and_grad`] keeps; not the `O(H²)` plastic weights of every step, which
    /// the backward pass regenerates exactly in the engine's workspace, from `P_0 = 0` or
    /// from the checkpoints (one update per step, no product or nonlinearity: cheaper than
    /// writing them to memory and reading them back, and `B·T` times less memory). A
    /// network without plastic weights keeps its batched records. [`Self::tape_bytes`]
    /// tells the size in advance.
    pub fn forward_with_tape(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        loss: Loss,
    ) -> Result<(Forward<F>, Tape<F>)> {
        check_episodes(net, ep)?;
        let (forward, records) = if self.takes_batched(net) {
            let (f, rec) = self.forward_batched_recorded(net, ep, loss);
            (f, TapeRecords::Batched(Box::new(rec)))
        } else {
            let pass = Pass::new(net);
            let sizes = pass.record_sizes(ep.steps, true);
            let mut data = self.take_tape_buffer(ep.batch * (sizes.rec + sizes.ckpt));
            let mut scalars = vec![Scalars::default(); ep.batch * ep.steps];
            let mut records = episode_records(&mut data, &mut scalars, &sizes);
            // the forward pass keeps only the checkpoints: two slots of P suffice
            let plen = net.layout().plastic_len;
            let forward_sizes = RecordSizes {
                arena: sizes.arena.min(2 * plen),
                ..sizes
            };
            let f = self.forward_episodes(&pass, ep, loss, &forward_sizes, &mut records, true);
            drop(records);
            let records = TapeRecords::PerEpisode {
                data,
                scalars,
                sizes,
            };
            (f, records)
        };
        let tape = Tape {
            config: net.config().clone(),
            params: params_fingerprint(net.params()),
            episodes: ep.clone(),
            records,
        };
        Ok((forward, tape))
    }

    /// The vector-Jacobian product of [`Self::vjp`] from the records of
    /// [`Self::forward_with_tape`]: the backward pass only, with the plastic weights
    /// regenerated from the records (docs/algorithm.md §7, §7.8, §8), bit-identical to
    /// [`Self::vjp`] on the same network and episodes.
    ///
    /// `net` must be the network the tape was recorded with, with the same parameters
    /// (an error says what differs otherwise). The tape's records are only read (a
    /// non-plastic network's tape also holds the buffers its adjoints are written to), so
    /// it may be used again, with the same or another `d_outputs`. Against
    /// [`Self::loss_and_grad`]'s backward pass, a plastic network's costs one update of the
    /// plastic weights per step more (the regeneration).
    pub fn vjp_with_tape(
        &self,
        net: &Network<F>,
        tape: &mut Tape<F>,
        d_outputs: &[F],
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        tape.check_network(net)?;
        check_d_outputs(&tape.episodes, d_outputs)?;
        let seed = Seed::OutputAdjoint(d_outputs);
        let ep = &tape.episodes;
        let g = match &mut tape.records {
            TapeRecords::Batched(rec) => self.vjp_batched_recorded(net, ep, rec, seed, request),
            TapeRecords::PerEpisode {
                data,
                scalars,
                sizes,
            } => {
                let pass = Pass::new(net);
                let mut records = episode_records(data, scalars, sizes);
                self.backward_episodes(&pass, ep, seed, request, sizes, &mut records, &mut [])
            }
        };
        Ok(g)
    }

    /// The memory in bytes a [`Tape`] of `batch` episodes of `steps` steps of `net` takes
    /// ([`Self::forward_with_tape`]), to check before recording one.
    pub fn tape_bytes(&self, net: &Network<F>, batch: usize, steps: usize) -> usize {
        let f = std::mem::size_of::<F>();
        let c = net.config();
        let episodes = batch * steps * (c.input_size + c.output_size) * f;
        if self.takes_batched(net) {
            let (h, gh, d) = (
                c.hidden_size,
                c.gates() * c.hidden_size,
                c.full_output_size(),
            );
            // u, act, c, tanh c, h', LayerNorm, h, h_prev, y, dy, dz, da_in, dh, loss
            let per_row = 2 * gh + 7 * h + 2 * d + 3;
            return batch * steps * per_row * f + episodes;
        }
        let pass = Pass::new(net);
        let sizes = pass.record_sizes(steps, true);
        let per = (sizes.rec + sizes.ckpt) * f + steps * std::mem::size_of::<Scalars<F>>();
        batch * per + episodes
    }

    /// Gives a tape's memory back to the engine, which keeps the buffer of one tape for
    /// the next [`Self::forward_with_tape`] (so that a training loop does not map fresh
    /// memory at every step; [`Self::release_memory`] frees it). Dropping a tape instead
    /// frees its memory.
    pub fn recycle_tape(&self, tape: Tape<F>) {
        match tape.records {
            TapeRecords::PerEpisode { data, .. } => *self.spare_tape.lock().unwrap() = Some(data),
            TapeRecords::Batched(rec) => self.return_records(*rec),
        }
    }

    /// A zeroed buffer of `n` values for a tape: the kept one if it is large enough.
    fn take_tape_buffer(&self, n: usize) -> Vec<F> {
        match self.spare_tape.lock().unwrap().take() {
            Some(mut v) if v.capacity() >= n => {
                // not zeroed: the forward pass writes every element before it is read
                v.truncate(n);
                v.resize(n, F::zero());
                v
            }
            _ => vec![F::zero(); n],
        }
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
        let sizes = pass.record_sizes(ep.steps, true);
        let mut records: Vec<Option<Taped<'_, F>>> = (0..ep.batch).map(|_| None).collect();
        Ok(self.backward_episodes(&pass, ep, seed, request, &sizes, &mut records, outputs))
    }

    /// The backward pass of every episode, seeded by `seed`: an episode with `Some`
    /// records was recorded there by [`Self::forward_episodes`] (and its plastic weights
    /// are regenerated from them); the others run forward first, in a pooled workspace,
    /// and copy their outputs (B, T, O) into `outputs` unless it is empty.
    #[allow(clippy::too_many_arguments)]
    fn backward_episodes(
        &self,
        pass: &Pass<'_, F>,
        ep: &Episodes<F>,
        seed: Seed<'_, F>,
        request: GradRequest,
        sizes: &RecordSizes,
        records: &mut [Option<Taped<'_, F>>],
        outputs: &mut [F],
    ) -> Gradient<F> {
        let net = pass.net;
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
            .zip(records.par_chunks_mut(chunk))
            .zip(out_per_ep.par_chunks_mut(chunk))
            .enumerate()
            .map(|(ci, (((eps, dxs), recs), outs))| {
                let mut ws = self.take_workspace();
                let mut grad = self.take_buffer(nparams, true);
                let mut lsum = F::zero();
                let episodes = eps.iter_mut().zip(dxs.iter_mut()).zip(recs.iter_mut());
                for (j, (((pairs, dx), r), out)) in episodes.zip(outs.iter_mut()).enumerate() {
                    let b = ci * chunk + j;
                    let recorded = r.is_some();
                    let mut st = ws.state(sizes, r.take());
                    if !recorded {
                        pass.run_forward(ep, b, &mut st, true, &mut []);
                        for t in 0..out.len() / o.max(1) {
                            let v = StepView::at(st.rec, st.scalars, &pass.dims, t);
                            out[t * o..(t + 1) * o].copy_from_slice(&v.y()[..o]);
                        }
                    }
                    let mut sinks = Sinks {
                        grad: &mut grad,
                        pairs,
                        dx: request.inputs.then_some(&mut **dx),
                    };
                    lsum += pass.run_backward(ep, b, seed, &mut st, &mut sinks, recorded);
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
        drop(out_per_ep);
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
        Gradient {
            loss: total,
            grads,
            input_grads: request.inputs.then_some(input_grads),
        }
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

    /// The forward pass, keeping its records for a later backward pass
    /// ([`Engine::forward_with_tape`]).
    pub fn forward_with_tape(&self, ep: &Episodes<F>, loss: Loss) -> Result<(Forward<F>, Tape<F>)> {
        Engine::shared().forward_with_tape(self, ep, loss)
    }

    /// The vector-Jacobian product from a tape of this network ([`Engine::vjp_with_tape`]).
    pub fn vjp_with_tape(
        &self,
        tape: &mut Tape<F>,
        d_outputs: &[F],
        request: GradRequest,
    ) -> Result<Gradient<F>> {
        Engine::shared().vjp_with_tape(self, tape, d_outputs, request)
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
