//! Memory a CNN's training-mode passes reuse from call to call: the tapes (what a forward
//! pass keeps for its backward pass) and the block-sized buffers that live only inside one
//! pass. At 84×84 a ProtoNet training step keeps ≈ 2 GB of tapes; allocated afresh every
//! step, those pages were mapped and zero-filled by the kernel again each time. (The
//! convolutions' per-chunk im2col buffers, a few MB each, stay per call: pooling them
//! measured no faster.)
//!
//! Nothing here changes a result: every buffer taken from a workspace is written in full
//! before it is read, so its earlier contents never matter.

use plastic::Float;

use super::backbone::BackboneTape;

/// Sets `v` to `n` elements for a caller that overwrites all of them: keeps the allocation
/// when it is large enough (no fill, except the tail when it grows within its capacity),
/// else replaces it by a fresh one (freeing the old one first).
pub(crate) fn fit<F: Float>(v: &mut Vec<F>, n: usize) {
    if v.capacity() >= n {
        if v.len() > n {
            v.truncate(n);
        } else {
            v.resize(n, F::zero());
        }
    } else {
        *v = Vec::new();
        *v = vec![F::zero(); n];
    }
}

/// Makes `v` at least `n` elements long, of unspecified values: kept if it is, else
/// replaced by a fresh buffer (zeroed by the allocator; nothing copied).
pub(crate) fn at_least<F: Float>(v: &mut Vec<F>, n: usize) {
    if v.len() < n {
        *v = Vec::new();
        *v = vec![F::zero(); n];
    }
}

/// Numbered buffers that one pass takes, uses and puts back. A buffer only grows; a pass
/// uses its first `n` elements and writes them before reading them.
#[derive(Debug)]
pub(crate) struct Scratch<F> {
    slots: Vec<Vec<F>>,
}

impl<F> Default for Scratch<F> {
    fn default() -> Self {
        Scratch { slots: Vec::new() }
    }
}

impl<F: Float> Scratch<F> {
    /// Buffer `slot`, taken out, with at least `n` elements (of unspecified values); give
    /// it back with [`Self::put`] (a buffer not given back is allocated again next time).
    pub(crate) fn take(&mut self, slot: usize, n: usize) -> Vec<F> {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Vec::new);
        }
        let mut v = std::mem::take(&mut self.slots[slot]);
        at_least(&mut v, n);
        v
    }

    /// Gives buffer `slot` back.
    pub(crate) fn put(&mut self, slot: usize, v: Vec<F>) {
        self.slots[slot] = v;
    }
}

/// The buffers a CNN's training-mode forward and backward passes reuse between calls: one
/// tape per slot (the forward calls whose backward pass is still to come: an fsc training
/// step keeps one per episode step, docs/fsc.md §5) and the passes' transient buffers. It
/// grows to what the largest call needed and keeps that memory until [`Self::release`]; a
/// model owns one and gives it to [`super::Backbone::forward_train_in`] and
/// [`super::Backbone::backward_in`].
#[derive(Debug)]
pub struct CnnWorkspace<F> {
    pub(crate) tapes: Vec<BackboneTape<F>>,
    pub(crate) scratch: Scratch<F>,
}

impl<F> Clone for CnnWorkspace<F> {
    /// An empty workspace: a clone of a model does not copy the buffers (nor a tape whose
    /// backward pass has not run).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<F> Default for CnnWorkspace<F> {
    fn default() -> Self {
        CnnWorkspace {
            tapes: Vec::new(),
            scratch: Scratch::default(),
        }
    }
}

impl<F: Float> CnnWorkspace<F> {
    /// An empty workspace (it allocates on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Frees every buffer (the next pass allocates again); the tapes of forward passes
    /// whose backward pass has not run are lost.
    pub fn release(&mut self) {
        *self = Self::default();
    }

    /// Bytes held (capacity of every tape and buffer).
    pub fn bytes(&self) -> usize {
        let floats: usize = self.tapes.iter().map(BackboneTape::floats).sum::<usize>()
            + self.scratch.slots.iter().map(Vec::capacity).sum::<usize>();
        floats * std::mem::size_of::<F>()
    }
}
