//! The per-step record of the forward pass: every vector of a step that the backward pass
//! reads (a [`Field`] each, lengths derived once from the configuration) and the step's
//! scalars ([`Scalars`]).

use crate::config::{CellKind, NetworkConfig, Rule};
use crate::float::Float;

/// The vectors one step records, in storage order (docs/algorithm.md §1–2 for the symbols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// Input layer pre-activation `a_in` (H).
    InputPre,
    /// Input layer output `u` (H); `x` itself without an input layer.
    InputOut,
    /// Cell pre-activation `z` (gH).
    CellPre,
    /// Cell activations: `h'` (RNN) or the gates `[i, f, g, o]` (LSTM) (gH).
    CellAct,
    /// LSTM cell state `c` (H).
    CellState,
    /// `tanh(c)` (H).
    CellStateTanh,
    /// Hidden state before LayerNorm (H).
    HiddenRaw,
    /// Hidden state after LayerNorm, fed to the output layer and the next step (H).
    Hidden,
    /// Full output `y` (D).
    Output,
    /// Gradient rule: `∂L_in/∂y` (D).
    InnerErrorOut,
    /// Gradient rule: `∂L_in/∂h` after LayerNorm (H).
    InnerErrorHidden,
    /// Gradient rule: `∂L_in/∂h` before LayerNorm (H).
    InnerErrorHiddenRaw,
    /// Gradient rule: `∂L_in/∂z` (gH).
    InnerErrorCell,
    /// Gradient rule: `∂L_in/∂u` (H).
    InnerErrorInputOut,
    /// Gradient rule: `∂L_in/∂a_in` (H).
    InnerErrorInputPre,
}

const NFIELDS: usize = 15;

/// The scalars of one step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scalars<F> {
    /// `σ(m)` of the modulation output (0 without modulation).
    pub sigmoid_m: F,
    /// Plasticity rate η before norm clipping.
    pub eta0: F,
    /// Plasticity rate η after norm clipping (the one applied).
    pub eta: F,
    /// Decay rate λ.
    pub lambda: F,
    /// Norm of the raw update Δ.
    pub update_norm: F,
    /// The inner loss of this episode's step (already divided by B·D).
    pub inner_loss: F,
    /// LayerNorm mean.
    pub ln_mean: F,
    /// LayerNorm reciprocal standard deviation.
    pub ln_rstd: F,
    /// `‖pre‖²` per layer (in `LayerId` order).
    pub pre_sq: [F; 4],
    /// `‖δ‖²` per layer.
    pub delta_sq: [F; 4],
}

/// Sizes of one step's quantities and where each [`Field`] lives in a step's vector record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordLayout {
    pub h: usize,
    pub gh: usize,
    pub d: usize,
    pub o: usize,
    pub lstm: bool,
    pub rule: Rule,
    /// Plastic with a rule whose `δ` is a gradient of the inner loss (second-order terms).
    pub second_order: bool,
    off: [usize; NFIELDS + 1],
}

impl RecordLayout {
    pub fn new(c: &NetworkConfig) -> RecordLayout {
        let (h, gh, d) = (
            c.hidden_size,
            c.gates() * c.hidden_size,
            c.full_output_size(),
        );
        // in `Field` order
        let lens = [h, h, gh, gh, h, h, h, h, d, d, h, h, gh, h, h];
        let mut off = [0; NFIELDS + 1];
        for k in 0..NFIELDS {
            off[k + 1] = off[k] + lens[k];
        }
        RecordLayout {
            h,
            gh,
            d,
            o: c.output_size,
            lstm: c.rnn == CellKind::Lstm,
            rule: c.plasticity,
            second_order: c.is_plastic() && c.plasticity.is_second_order(),
            off,
        }
    }

    /// Elements of one step's vector record.
    pub fn stride(&self) -> usize {
        self.off[NFIELDS]
    }

    #[inline]
    fn range(&self, f: Field) -> std::ops::Range<usize> {
        self.off[f as usize]..self.off[f as usize + 1]
    }
}

/// Read-only view of one step's record.
#[derive(Clone, Copy)]
pub(crate) struct StepView<'a, F> {
    v: &'a [F],
    /// The step's scalars.
    pub s: &'a Scalars<F>,
    layout: &'a RecordLayout,
}

impl<'a, F: Float> StepView<'a, F> {
    /// Step `t` of an episode's records.
    #[inline]
    pub fn at(
        vectors: &'a [F],
        scalars: &'a [Scalars<F>],
        layout: &'a RecordLayout,
        t: usize,
    ) -> Self {
        let n = layout.stride();
        StepView {
            v: &vectors[t * n..(t + 1) * n],
            s: &scalars[t],
            layout,
        }
    }
    /// One field.
    #[inline]
    pub fn get(&self, f: Field) -> &'a [F] {
        &self.v[self.layout.range(f)]
    }
    #[inline]
    pub fn u(&self) -> &'a [F] {
        self.get(Field::InputOut)
    }
    #[inline]
    pub fn act(&self) -> &'a [F] {
        self.get(Field::CellAct)
    }
    #[inline]
    pub fn c(&self) -> &'a [F] {
        self.get(Field::CellState)
    }
    #[inline]
    pub fn tanh_c(&self) -> &'a [F] {
        self.get(Field::CellStateTanh)
    }
    #[inline]
    pub fn h_raw(&self) -> &'a [F] {
        self.get(Field::HiddenRaw)
    }
    #[inline]
    pub fn h(&self) -> &'a [F] {
        self.get(Field::Hidden)
    }
    #[inline]
    pub fn y(&self) -> &'a [F] {
        self.get(Field::Output)
    }
}

/// Mutable access to one step's record, one field (or a disjoint pair) at a time.
pub(crate) struct StepMut<'a, F> {
    v: &'a mut [F],
    /// The step's scalars.
    pub s: &'a mut Scalars<F>,
    layout: &'a RecordLayout,
}

impl<'a, F: Float> StepMut<'a, F> {
    pub fn new(v: &'a mut [F], s: &'a mut Scalars<F>, layout: &'a RecordLayout) -> Self {
        StepMut { v, s, layout }
    }
    /// One field.
    #[inline]
    pub fn get(&mut self, f: Field) -> &mut [F] {
        let r = self.layout.range(f);
        &mut self.v[r]
    }
    /// Two distinct fields, the first read-only.
    #[inline]
    pub fn pair(&mut self, src: Field, dst: Field) -> (&[F], &mut [F]) {
        let (rs, rd) = (self.layout.range(src), self.layout.range(dst));
        debug_assert_ne!(src, dst);
        if rs.start < rd.start {
            let (a, b) = self.v.split_at_mut(rd.start);
            (&a[rs], &mut b[..rd.len()])
        } else {
            let (a, b) = self.v.split_at_mut(rs.start);
            (&b[..rs.len()], &mut a[rd])
        }
    }
    /// The fields before `f` (read-only) and field `f` (mutable).
    #[inline]
    pub fn before_and(&mut self, f: Field) -> (StepView<'_, F>, &mut [F]) {
        let r = self.layout.range(f);
        let (head, tail) = self.v.split_at_mut(r.start);
        (
            StepView {
                v: head,
                s: self.s,
                layout: self.layout,
            },
            &mut tail[..r.len()],
        )
    }
    /// The fields before `f` (read-only) and the record from `f` on (mutable).
    #[inline]
    pub fn before_and_rest(&mut self, f: Field) -> (StepView<'_, F>, &mut [F]) {
        let start = self.layout.range(f).start;
        let (head, tail) = self.v.split_at_mut(start);
        (
            StepView {
                v: head,
                s: self.s,
                layout: self.layout,
            },
            tail,
        )
    }
    /// The whole record, read-only.
    #[inline]
    pub fn view(&self) -> StepView<'_, F> {
        StepView {
            v: self.v,
            s: self.s,
            layout: self.layout,
        }
    }
}
