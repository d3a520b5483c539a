//! The non-plastic networks (`plasticity = none`) at GEMM speed: without plastic state the
//! episodes of a batch share every weight, so each time step is a matrix product over the
//! rows of the batch, `(rows × I)·(I × H)`, `(rows × H)·(H × gH)`, …, forward, and the
//! transposed products backward (backpropagation through time over the batch; the
//! step is docs/algorithm.md §1, LayerNorm §1.3).
//!
//! How the numbers are made the same everywhere: every product goes through
//! [`gemm_nn`] or [`gemm_at_b`], whose per-element summation order is fixed by the problem
//! (no fused multiply-add, no cache-dependent `k`-blocking), so the bits do not depend on
//! the CPU. The batch is cut into chunks of rows that run their whole forward and backward
//! on one thread; a row's values depend only on that row (a GEMM row never mixes with
//! another row), so the chunking does not change a bit either. What mixes rows (the weight
//! gradients, the bias, LayerNorm and loss sums) is done after all chunks, over the
//! records of every episode and step in one fixed order. Hence results do not depend on the
//! number of threads.
//!
//! What does not depend on the recurrence (the input layer, the output layer, and backward
//! `du = dz·W_iᵀ` with the input layer's ReLU and `d loss / d x`) is one product or pass over
//! all of a chunk's `rows · T` rows instead of one per step, with the same bits. The cell's
//! pre-activation `z = b_h + b_i + h_prev·W_h + u·W_i` stays one sum per step in that order,
//! the per-episode path's.
//!
//! The records are episode-major, `(B, T, len)` per quantity, like [`Episodes::input`]: a
//! chunk's rows are one contiguous block, and the weight-gradient GEMM reads every
//! quantity as one `(B·T) × len` matrix.
//!
//! What the per-episode path computes besides (the modulated rates η, λ and the inner
//! loss, docs/algorithm.md §2.1) changes nothing in a network without plastic weights; it
//! is computed for [`Forward`]'s diagnostics only, as the reference reports it.

use rayon::prelude::*;

use super::{Engine, Forward, GradRequest, Gradient, Seed};
use crate::cell;
use crate::episode::{step_loss, Episodes, Loss};
use crate::float::Float;
use crate::kernels;
use crate::layernorm;
use crate::matmul::{gemm_at_b, gemm_nn};
use crate::network::Network;
use crate::params::LayerId;

/// Rows of the batch per chunk (a chunk runs on one thread). Results do not depend on it.
const CHUNK_ROWS: usize = 16;

/// Sizes of one network and batch.
#[derive(Clone, Copy)]
struct Dims {
    /// Batch B and steps T.
    b: usize,
    t: usize,
    /// Input I, hidden H, gates·H, full output D, task output O.
    i: usize,
    h: usize,
    gh: usize,
    d: usize,
    o: usize,
    /// Input size of the recurrent input matrix (H with an input layer, else I).
    hin: usize,
    lstm: bool,
    ln: bool,
    input_layer: bool,
}

impl Dims {
    fn new<F: Float>(net: &Network<F>, ep: &Episodes<F>) -> Dims {
        let c = net.config();
        Dims {
            b: ep.batch,
            t: ep.steps,
            i: c.input_size,
            h: c.hidden_size,
            gh: c.gates() * c.hidden_size,
            d: c.full_output_size(),
            o: c.output_size,
            hin: net.layout().layer(LayerId::RecI).rows,
            lstm: c.rnn == crate::config::CellKind::Lstm,
            ln: c.layernorm,
            input_layer: c.input_layer,
        }
    }
}

/// The recorded quantities, one `(B, T, len)` buffer each (empty when not needed).
pub(super) struct Records<F> {
    /// Input-layer output `u` (with an input layer; otherwise `u` is the input itself).
    u: Vec<F>,
    /// Cell activations (`relu(z)` or the gates `[i, f, g, o]`).
    act: Vec<F>,
    /// LSTM cell state `c` and `tanh(c)`.
    c: Vec<F>,
    tc: Vec<F>,
    /// Hidden state before LayerNorm and LayerNorm's `(μ, r)` (with LayerNorm).
    hr: Vec<F>,
    ln: Vec<F>,
    /// Hidden state fed to the output layer, and the previous step's (zero at t = 0).
    hn: Vec<F>,
    hprev: Vec<F>,
    /// Outputs `y` (D) and their adjoint.
    y: Vec<F>,
    dy: Vec<F>,
    /// Adjoint of the cell pre-activation `z`, of the input layer's pre-activation, and of
    /// the hidden state after LayerNorm (with LayerNorm).
    dz: Vec<F>,
    dain: Vec<F>,
    dhn: Vec<F>,
    /// The loss term of every episode and step.
    loss: Vec<F>,
}

impl<F> Records<F> {
    /// The values the buffers hold.
    pub(super) fn capacity(&self) -> usize {
        [
            &self.u,
            &self.act,
            &self.c,
            &self.tc,
            &self.hr,
            &self.ln,
            &self.hn,
            &self.hprev,
            &self.y,
            &self.dy,
            &self.dz,
            &self.dain,
            &self.dhn,
            &self.loss,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum()
    }
}

/// One chunk's rows of every record.
struct ChunkRecords<'a, F> {
    b0: usize,
    rows: usize,
    u: &'a mut [F],
    act: &'a mut [F],
    c: &'a mut [F],
    tc: &'a mut [F],
    hr: &'a mut [F],
    ln: &'a mut [F],
    hn: &'a mut [F],
    hprev: &'a mut [F],
    y: &'a mut [F],
    dy: &'a mut [F],
    dz: &'a mut [F],
    dain: &'a mut [F],
    dhn: &'a mut [F],
    loss: &'a mut [F],
    dx: &'a mut [F],
}

/// Splits `buf` into the chunks' blocks of `rows_per_chunk · per_row` elements (empty
/// blocks for an empty buffer).
fn blocks<F>(
    buf: &mut [F],
    nchunks: usize,
    rows_per_chunk: usize,
    per_row: usize,
) -> Vec<&mut [F]> {
    if buf.is_empty() {
        return (0..nchunks).map(|_| <&mut [F]>::default()).collect();
    }
    buf.chunks_mut(rows_per_chunk * per_row).collect()
}

/// The next chunk's block.
fn next<'a, F>(it: &mut std::vec::IntoIter<&'a mut [F]>) -> &'a mut [F] {
    it.next().expect("one block per chunk")
}

/// The transposes of the weight matrices the backward pass multiplies by.
struct Transposes<F> {
    w_out: Vec<F>,
    w_h: Vec<F>,
    w_i: Vec<F>,
    w_in: Vec<F>,
}

fn transpose<F: Float>(w: &[F], rows: usize, cols: usize) -> Vec<F> {
    let mut t = vec![F::zero(); w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// Per-thread scratch of one chunk: `z` and the adjoints that are not recorded.
#[derive(Default)]
struct Scratch<F> {
    z: Vec<F>,
    dh: Vec<F>,
    dc: Vec<F>,
    dcp: Vec<F>,
    dhn: Vec<F>,
    dhr: Vec<F>,
    dact: Vec<F>,
    zeros: Vec<F>,
}

impl<F: Float> Scratch<F> {
    fn new(rows: usize, d: &Dims) -> Self {
        let z = |n: usize| vec![F::zero(); rows * n];
        Scratch {
            z: z(d.gh),
            dh: z(d.h),
            dc: z(d.h),
            dcp: z(d.h),
            dhn: z(d.h),
            dhr: z(d.h),
            dact: z(d.gh),
            zeros: vec![F::zero(); d.h],
        }
    }
}

/// One batched pass over a network.
struct Batch<'a, F: Float> {
    net: &'a Network<F>,
    ep: &'a Episodes<F>,
    d: Dims,
}

impl<F: Float> Batch<'_, F> {
    /// Offset of `(row r, step t)` in a chunk's record with `len` per row.
    #[inline]
    fn at(&self, r: usize, t: usize, len: usize) -> usize {
        (r * self.d.t + t) * len
    }

    /// Runs the chunk's rows forward through all steps, filling their records. `w_out_t` is
    /// `W_outᵀ`. The input layer and the output layer do not depend on the recurrence and
    /// are one pass each over all the chunk's `rows · T` rows; the cell's pre-activation
    /// stays step by step, so that its sum keeps the per-episode path's order.
    fn forward(&self, ch: &mut ChunkRecords<'_, F>, s: &mut Scratch<F>, w_out_t: &[F]) {
        let net = self.net;
        let d = self.d;
        let (rows, tl) = (ch.rows, d.t);
        let all = rows * tl;
        let x_all = &self.ep.input[ch.b0 * tl * d.i..(ch.b0 + rows) * tl * d.i];
        // input layer: u = relu(b + x·W_in), or u = x (docs/fsc.md §5)
        let u_all: &[F] = if d.input_layer {
            let b_in = net.b(LayerId::In);
            for u in ch.u.chunks_exact_mut(d.h) {
                u.copy_from_slice(b_in);
            }
            gemm_nn(ch.u, d.h, x_all, d.i, net.w(LayerId::In), all, d.h, d.i);
            for v in ch.u.iter_mut() {
                *v = cell::relu(*v);
            }
            &*ch.u
        } else {
            x_all
        };
        let bias_z: Vec<F> = net
            .b(LayerId::RecH)
            .iter()
            .zip(net.b(LayerId::RecI))
            .map(|(&a, &b)| a + b)
            .collect();
        for t in 0..tl {
            // z = b_h + b_i + h_prev·W_h + u·W_i, summed in that order (the per-episode
            // path's), in `act` until the cell replaces it by the activations; h_0 = 0
            for r in 0..rows {
                let oa = self.at(r, t, d.gh);
                ch.act[oa..oa + d.gh].copy_from_slice(&bias_z);
            }
            if t > 0 {
                gemm_nn(
                    &mut ch.act[t * d.gh..],
                    tl * d.gh,
                    &ch.hprev[t * d.h..],
                    tl * d.h,
                    net.w(LayerId::RecH),
                    rows,
                    d.gh,
                    d.h,
                );
            }
            gemm_nn(
                &mut ch.act[t * d.gh..],
                tl * d.gh,
                &u_all[t * d.hin..],
                tl * d.hin,
                net.w(LayerId::RecI),
                rows,
                d.gh,
                d.hin,
            );
            for r in 0..rows {
                let (oa, oh) = (self.at(r, t, d.gh), self.at(r, t, d.h));
                let act = &mut ch.act[oa..oa + d.gh];
                // the hidden state before LayerNorm goes to `hr` with LayerNorm, else to `hn`
                let h_raw = if d.ln {
                    &mut ch.hr[oh..oh + d.h]
                } else {
                    &mut ch.hn[oh..oh + d.h]
                };
                if d.lstm {
                    let z = &mut s.z[..d.gh];
                    z.copy_from_slice(act);
                    let (head, tail) = ch.c.split_at_mut(oh);
                    let c_prev = if t == 0 {
                        &s.zeros[..]
                    } else {
                        &head[oh - d.h..]
                    };
                    cell::lstm_forward(
                        z,
                        c_prev,
                        act,
                        &mut tail[..d.h],
                        &mut ch.tc[oh..oh + d.h],
                        h_raw,
                    );
                } else {
                    // act = h = relu(z), in place
                    for (a, h) in act.iter_mut().zip(h_raw.iter_mut()) {
                        *a = cell::relu(*a);
                        *h = *a;
                    }
                }
                if let Some((g, b)) = net.ln_params() {
                    let (mu, rstd) =
                        layernorm::forward(&ch.hr[oh..oh + d.h], g, b, &mut ch.hn[oh..oh + d.h]);
                    let ol = self.at(r, t, 2);
                    ch.ln[ol] = mu;
                    ch.ln[ol + 1] = rstd;
                }
                if t + 1 < tl {
                    let on = self.at(r, t + 1, d.h);
                    ch.hprev[on..on + d.h].copy_from_slice(&ch.hn[oh..oh + d.h]);
                }
            }
        }
        // y = b_out + hn·W_out for every step, as D dot products (D is narrower than a vector)
        let b_out = net.b(LayerId::Out);
        for (hn, y) in ch.hn.chunks_exact(d.h).zip(ch.y.chunks_exact_mut(d.d)) {
            for (j, y) in y.iter_mut().enumerate() {
                *y = b_out[j] + kernels::dot(hn, &w_out_t[j * d.h..(j + 1) * d.h]);
            }
        }
    }

    /// Backpropagates the chunk's rows through all steps (seeded by `seed`), recording the
    /// adjoints the weight gradients need and, if asked, `d loss / d x` into `ch.dx`.
    fn backward(
        &self,
        ch: &mut ChunkRecords<'_, F>,
        s: &mut Scratch<F>,
        seed: Seed<'_, F>,
        wt: &Transposes<F>,
        inputs: bool,
    ) {
        let net = self.net;
        let d = self.d;
        let (rows, tl) = (ch.rows, d.t);
        let ep = self.ep;
        let scale = F::one() / F::of((ep.batch * (ep.steps - ep.test_begin)) as f64);
        s.dh.fill(F::zero());
        s.dc.fill(F::zero());
        for t in (0..tl).rev() {
            // the output adjoint and this step's loss term
            for r in 0..rows {
                let b = ch.b0 + r;
                let o = self.at(r, t, d.d);
                let (y, dy) = (&ch.y[o..o + d.o], &mut ch.dy[o..o + d.d]);
                dy.fill(F::zero());
                let ol = self.at(r, t, 1);
                ch.loss[ol] = match seed {
                    Seed::Loss(loss) if t >= ep.test_begin => {
                        step_loss(loss, y, ep.y(b, t), scale, &mut dy[..d.o])
                    }
                    Seed::Loss(_) => F::zero(),
                    Seed::OutputAdjoint(g) => {
                        let g = &g[(b * tl + t) * d.o..][..d.o];
                        dy[..d.o].copy_from_slice(g);
                        g.iter().zip(y).map(|(&a, &y)| a * y).sum::<F>()
                    }
                };
            }
            // dhn = dh (from step t + 1) + dy·W_outᵀ
            s.dhn.copy_from_slice(&s.dh);
            gemm_nn(
                &mut s.dhn,
                d.h,
                &ch.dy[t * d.d..],
                tl * d.d,
                &wt.w_out,
                rows,
                d.h,
                d.d,
            );
            for r in 0..rows {
                let (oh, oa) = (self.at(r, t, d.h), self.at(r, t, d.gh));
                let dhn = &s.dhn[r * d.h..(r + 1) * d.h];
                let dhr = &mut s.dhr[r * d.h..(r + 1) * d.h];
                match net.ln_params() {
                    Some((g, _)) => {
                        ch.dhn[oh..oh + d.h].copy_from_slice(dhn);
                        let ol = self.at(r, t, 2);
                        let (mu, rstd) = (ch.ln[ol], ch.ln[ol + 1]);
                        layernorm::backward(&ch.hr[oh..oh + d.h], mu, rstd, Some(g), dhn, dhr);
                    }
                    None => dhr.copy_from_slice(dhn),
                }
                let act = &ch.act[oa..oa + d.gh];
                let dz = &mut ch.dz[oa..oa + d.gh];
                if d.lstm {
                    let c_prev = if t == 0 {
                        &s.zeros[..]
                    } else {
                        &ch.c[oh - d.h..oh]
                    };
                    let dact = &mut s.dact[r * d.gh..(r + 1) * d.gh];
                    dact.fill(F::zero());
                    let dcp = &mut s.dcp[r * d.h..(r + 1) * d.h];
                    dcp.fill(F::zero());
                    cell::lstm_backward(
                        act,
                        c_prev,
                        &ch.tc[oh..oh + d.h],
                        dhr,
                        &s.dc[r * d.h..(r + 1) * d.h],
                        dact,
                        dcp,
                    );
                    cell::lstm_act_to_z(act, dact, dz);
                } else {
                    cell::rnn_backward(act, dhr, dz);
                }
            }
            std::mem::swap(&mut s.dc, &mut s.dcp);
            // dh_prev = dz·W_hᵀ (to step t − 1)
            s.dh.fill(F::zero());
            if t > 0 {
                gemm_nn(
                    &mut s.dh,
                    d.h,
                    &ch.dz[t * d.gh..],
                    tl * d.gh,
                    &wt.w_h,
                    rows,
                    d.h,
                    d.gh,
                );
            }
        }
        // du = dz·W_iᵀ for every step (off the recurrence: one product over the chunk's
        // rows · T rows), then the input layer's ReLU, or d loss / d x = du
        if !(d.input_layer || inputs) {
            return;
        }
        let all = rows * tl;
        let du: &mut [F] = if d.input_layer {
            &mut *ch.dain
        } else {
            &mut *ch.dx
        };
        du.fill(F::zero());
        gemm_nn(du, d.hin, ch.dz, d.gh, &wt.w_i, all, d.hin, d.gh);
        if d.input_layer {
            // the ReLU's adjoint, in place: du where u > 0, else 0
            for (g, &u) in ch.dain.iter_mut().zip(ch.u.iter()) {
                *g = if u > F::zero() { *g } else { F::zero() };
            }
            if inputs {
                ch.dx.fill(F::zero());
                gemm_nn(ch.dx, d.i, ch.dain, d.h, &wt.w_in, all, d.i, d.h);
            }
        }
    }
}

impl<F: Float> Engine<F> {
    /// Allocates the records of a batched pass (pooled buffers).
    fn batched_records(&self, d: &Dims, train: bool) -> Records<F> {
        let bt = d.b * d.t;
        let buf = |n: usize, on: bool| self.take_buffer(if on { bt * n } else { 0 }, false);
        Records {
            u: buf(d.h, d.input_layer),
            act: buf(d.gh, true),
            c: buf(d.h, d.lstm),
            tc: buf(d.h, d.lstm),
            hr: buf(d.h, d.ln),
            ln: buf(2, d.ln),
            hn: buf(d.h, true),
            hprev: buf(d.h, true),
            y: buf(d.d, true),
            dy: buf(d.d, train),
            dz: buf(d.gh, train),
            dain: buf(d.h, train && d.input_layer),
            dhn: buf(d.h, train && d.ln),
            loss: buf(1, train),
        }
    }

    pub(super) fn return_records(&self, r: Records<F>) {
        self.return_buffers([
            r.u, r.act, r.c, r.tc, r.hr, r.ln, r.hn, r.hprev, r.y, r.dy, r.dz, r.dain, r.dhn,
            r.loss,
        ]);
    }

    /// Runs `work` on every chunk of rows of `rec` (and of `dx`, (B, T, I)), in parallel.
    fn for_chunks(
        &self,
        d: &Dims,
        rec: &mut Records<F>,
        dx: &mut [F],
        work: impl Fn(&mut ChunkRecords<'_, F>, &mut Scratch<F>) + Sync,
    ) {
        let rows = CHUNK_ROWS.min(d.b);
        let n = d.b.div_ceil(rows);
        let tl = d.t;
        let mut u = blocks(&mut rec.u, n, rows, tl * d.h).into_iter();
        let mut act = blocks(&mut rec.act, n, rows, tl * d.gh).into_iter();
        let mut c = blocks(&mut rec.c, n, rows, tl * d.h).into_iter();
        let mut tc = blocks(&mut rec.tc, n, rows, tl * d.h).into_iter();
        let mut hr = blocks(&mut rec.hr, n, rows, tl * d.h).into_iter();
        let mut ln = blocks(&mut rec.ln, n, rows, tl * 2).into_iter();
        let mut hn = blocks(&mut rec.hn, n, rows, tl * d.h).into_iter();
        let mut hprev = blocks(&mut rec.hprev, n, rows, tl * d.h).into_iter();
        let mut y = blocks(&mut rec.y, n, rows, tl * d.d).into_iter();
        let mut dy = blocks(&mut rec.dy, n, rows, tl * d.d).into_iter();
        let mut dz = blocks(&mut rec.dz, n, rows, tl * d.gh).into_iter();
        let mut dain = blocks(&mut rec.dain, n, rows, tl * d.h).into_iter();
        let mut dhn = blocks(&mut rec.dhn, n, rows, tl * d.h).into_iter();
        let mut loss = blocks(&mut rec.loss, n, rows, tl).into_iter();
        let mut dxs = blocks(dx, n, rows, tl * d.i).into_iter();
        let mut chunks = Vec::with_capacity(n);
        for ci in 0..n {
            let b0 = ci * rows;
            chunks.push(ChunkRecords {
                b0,
                rows: rows.min(d.b - b0),
                u: next(&mut u),
                act: next(&mut act),
                c: next(&mut c),
                tc: next(&mut tc),
                hr: next(&mut hr),
                ln: next(&mut ln),
                hn: next(&mut hn),
                hprev: next(&mut hprev),
                y: next(&mut y),
                dy: next(&mut dy),
                dz: next(&mut dz),
                dain: next(&mut dain),
                dhn: next(&mut dhn),
                loss: next(&mut loss),
                dx: next(&mut dxs),
            });
        }
        chunks.par_iter_mut().for_each(|ch| {
            let mut s = Scratch::new(ch.rows, d);
            // h_0 = 0
            for r in 0..ch.rows {
                let o = r * tl * d.h;
                ch.hprev[o..o + d.h].fill(F::zero());
            }
            work(ch, &mut s)
        });
    }

    /// [`Engine::forward`] of a network without plastic weights, batched.
    pub(super) fn forward_batched(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        loss: Loss,
    ) -> Forward<F> {
        let (f, rec) = self.forward_batched_records(net, ep, loss, false);
        self.return_records(rec);
        f
    }

    /// [`Engine::forward_with_tape`] of a network without plastic weights: the forward
    /// pass and its records, with the buffers the backward pass writes.
    pub(super) fn forward_batched_recorded(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        loss: Loss,
    ) -> (Forward<F>, Records<F>) {
        self.forward_batched_records(net, ep, loss, true)
    }

    fn forward_batched_records(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        loss: Loss,
        train: bool,
    ) -> (Forward<F>, Records<F>) {
        let d = Dims::new(net, ep);
        let pass = Batch { net, ep, d };
        let mut rec = self.batched_records(&d, train);
        let l = net.layout().layer(LayerId::Out);
        let w_out_t = transpose(net.w(LayerId::Out), l.rows, l.cols);
        self.for_chunks(&d, &mut rec, &mut [], |ch, s| pass.forward(ch, s, &w_out_t));
        (diagnostics(net, ep, &d, &rec, loss), rec)
    }

    /// The backward pass of a network without plastic weights, batched (see the module
    /// documentation).
    pub(super) fn backward_batched(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        seed: Seed<'_, F>,
        request: GradRequest,
        outputs: &mut [F],
    ) -> Gradient<F> {
        let d = Dims::new(net, ep);
        let pass = Batch { net, ep, d };
        let wt = transposes(net, &d);
        let mut rec = self.batched_records(&d, true);
        let mut input_grads = vec![F::zero(); if request.inputs { d.b * d.t * d.i } else { 0 }];
        self.for_chunks(&d, &mut rec, &mut input_grads, |ch, s| {
            pass.forward(ch, s, &wt.w_out);
            pass.backward(ch, s, seed, &wt, request.inputs);
        });
        let g = gradient(net, ep, &d, &rec, input_grads, request);
        // the forward pass's outputs, if asked for
        for row in 0..outputs.len() / d.o.max(1) {
            outputs[row * d.o..(row + 1) * d.o].copy_from_slice(&rec.y[row * d.d..][..d.o]);
        }
        self.return_records(rec);
        g
    }

    /// [`Engine::vjp_with_tape`] of a network without plastic weights: the backward pass
    /// over the records of [`Self::forward_batched_recorded`] (it overwrites only the
    /// adjoints, so the records may be used again).
    pub(super) fn vjp_batched_recorded(
        &self,
        net: &Network<F>,
        ep: &Episodes<F>,
        rec: &mut Records<F>,
        seed: Seed<'_, F>,
        request: GradRequest,
    ) -> Gradient<F> {
        let d = Dims::new(net, ep);
        let pass = Batch { net, ep, d };
        let wt = transposes(net, &d);
        let mut input_grads = vec![F::zero(); if request.inputs { d.b * d.t * d.i } else { 0 }];
        self.for_chunks(&d, rec, &mut input_grads, |ch, s| {
            pass.backward(ch, s, seed, &wt, request.inputs);
        });
        gradient(net, ep, &d, rec, input_grads, request)
    }
}

/// The transposes of the weight matrices of `net`.
fn transposes<F: Float>(net: &Network<F>, d: &Dims) -> Transposes<F> {
    let lay = net.layout();
    let t = |id: LayerId| {
        let l = lay.layer(id);
        transpose(net.w(id), l.rows, l.cols)
    };
    Transposes {
        w_out: t(LayerId::Out),
        w_h: t(LayerId::RecH),
        w_i: t(LayerId::RecI),
        w_in: if d.input_layer {
            t(LayerId::In)
        } else {
            Vec::new()
        },
    }
}

/// The forward pass's diagnostics from its records: the outputs, the episode loss, and
/// the rates and inner loss of docs/algorithm.md §2.1 as the per-episode path reports them.
fn diagnostics<F: Float>(
    net: &Network<F>,
    ep: &Episodes<F>,
    d: &Dims,
    rec: &Records<F>,
    loss: Loss,
) -> Forward<F> {
    let (bsz, tl, o) = (d.b, d.t, d.o);
    let cfg = net.config();
    let two = F::one() + F::one();
    let inv_bd = F::one() / F::of((bsz * d.d) as f64);
    let scale = F::one() / F::of((bsz * (tl - ep.test_begin)) as f64);
    let s = net.out_weight();
    let mut f = Forward {
        outputs: vec![F::zero(); bsz * tl * o],
        plasticity_rate: vec![F::zero(); bsz * tl],
        applied_rate: vec![F::zero(); bsz * tl],
        decay_rate: vec![F::zero(); bsz * tl],
        update_norm: vec![F::zero(); bsz * tl],
        plastic_norm: vec![F::zero(); bsz * tl],
        inner_loss: vec![F::zero(); tl],
        loss: F::zero(),
    };
    let mut grad = vec![F::zero(); o];
    for b in 0..bsz {
        for t in 0..tl {
            let row = b * tl + t;
            let y = &rec.y[row * d.d..(row + 1) * d.d];
            f.outputs[row * o..(row + 1) * o].copy_from_slice(&y[..o]);
            // the rates and the inner loss of docs/algorithm.md §2.1, as diagnostics
            let inner: F = y.iter().zip(s).map(|(&y, &s)| (y * s) * (y * s)).sum::<F>() * inv_bd;
            let (eta0, lam) = if cfg.modulation {
                let sig = cell::sigmoid(y[d.d - 1]);
                (F::of(cfg.p_lr) * two * sig, F::of(cfg.p_wd) * two * sig)
            } else {
                (F::of(cfg.p_lr), F::of(cfg.p_wd))
            };
            f.plasticity_rate[row] = eta0;
            f.applied_rate[row] = eta0;
            f.decay_rate[row] = lam;
            f.inner_loss[t] += inner;
            if t >= ep.test_begin {
                f.loss += step_loss(loss, &y[..o], ep.y(b, t), scale, &mut grad);
            }
        }
    }
    f
}

/// The gradient from the records of a backward pass: the weight gradients as one
/// fixed-order GEMM per layer, the biases, LayerNorm's parameters and the loss.
fn gradient<F: Float>(
    net: &Network<F>,
    ep: &Episodes<F>,
    d: &Dims,
    rec: &Records<F>,
    input_grads: Vec<F>,
    request: GradRequest,
) -> Gradient<F> {
    let lay = net.layout();
    let mut grads = vec![F::zero(); lay.len()];
    let bt = d.b * d.t;
    // dW = Σ over episodes and steps of pre ⊗ da: one fixed-order GEMM per layer
    let u: &[F] = if d.input_layer { &rec.u } else { &ep.input };
    let terms: [(LayerId, &[F], &[F]); 4] = [
        (LayerId::In, &ep.input, &rec.dain),
        (LayerId::RecH, &rec.hprev, &rec.dz),
        (LayerId::RecI, u, &rec.dz),
        (LayerId::Out, &rec.hn, &rec.dy),
    ];
    for (id, pre, da) in terms {
        let l = *lay.layer(id);
        if l.w_len() == 0 {
            continue;
        }
        let dw = &mut grads[l.w..l.w + l.w_len()];
        if l.cols < 16 {
            // a narrow layer (the output layer): dWᵀ = daᵀ·pre has full-width tiles;
            // the same products summed in the same order, so the same bits
            let mut dwt = vec![F::zero(); l.w_len()];
            gemm_at_b(&mut dwt, da, pre, l.cols, l.rows, bt);
            dw.copy_from_slice(&transpose(&dwt, l.cols, l.rows));
        } else {
            gemm_at_b(dw, pre, da, l.rows, l.cols, bt);
        }
        // the bias: Σ da over episodes and steps, in that order
        column_sums(&mut grads[l.b..l.b + l.cols], da, l.cols);
    }
    if let (Some((go, bo)), true) = (lay.layernorm, d.ln) {
        // dγ = Σ dhn ⊙ x̂, dβ = Σ dhn, with x̂ = (hr − μ)·r
        for row in 0..bt {
            let (mu, rstd) = (rec.ln[2 * row], rec.ln[2 * row + 1]);
            let hr = &rec.hr[row * d.h..(row + 1) * d.h];
            let dhn = &rec.dhn[row * d.h..(row + 1) * d.h];
            for k in 0..d.h {
                grads[go + k] += dhn[k] * (hr[k] - mu) * rstd;
                grads[bo + k] += dhn[k];
            }
        }
    }
    let loss = rec.loss.iter().fold(F::zero(), |a, &b| a + b);
    Gradient {
        loss,
        grads,
        input_grads: request.inputs.then_some(input_grads),
    }
}

/// `dst += Σ_rows m[row]`, rows of `cols` values taken in order.
fn column_sums<F: Float>(dst: &mut [F], m: &[F], cols: usize) {
    for row in m.chunks_exact(cols) {
        for (d, &v) in dst.iter_mut().zip(row) {
            *d += v;
        }
    }
}
