//! Memory a CNN's training-mode passes reuse from call to call: the tapes (what a forward
//! pass keeps for its backward pass), the block-sized buffers that live only inside one
//! pass, and the convolutions' per-chunk im2col and GEMM buffers. At 84×84 a ProtoNet
//! training step keeps ≈ 2 GB of tapes; allocated afresh every step, those pages would be
//! mapped and zero-filled by the kernel again each time, and the smaller buffers would be
//! zero-filled by the allocator although they are overwritten.
//!
//! Nothing here changes a result: every buffer taken from a workspace is written in full
//! before it is read, so its earlier contents never matter.

use std::sync::Mutex;

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

/// Buffers that the parallel tasks of an operation (one per chunk of images) take and give
/// back: as many as run at once, reused by the next chunks and the next calls. A buffer
/// only grows; which task gets which buffer does not matter (each writes what it reads).
#[derive(Debug)]
pub(crate) struct ChunkPool<F> {
    free: Mutex<Vec<Vec<F>>>,
}

impl<F> Default for ChunkPool<F> {
    fn default() -> Self {
        ChunkPool {
            free: Mutex::new(Vec::new()),
        }
    }
}

impl<F: Float> ChunkPool<F> {
    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<F>>> {
        // a panicking task leaves the list itself intact
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer (the largest free one) of unspecified length and values.
    pub(crate) fn take(&self) -> Vec<F> {
        self.free().pop().unwrap_or_default()
    }

    /// The first `n` elements of `v`, grown if it is shorter (unspecified values).
    pub(crate) fn fit<'a>(&self, v: &'a mut Vec<F>, n: usize) -> &'a mut [F] {
        at_least(v, n);
        &mut v[..n]
    }

    /// Gives a buffer back.
    pub(crate) fn put(&self, v: Vec<F>) {
        let mut free = self.free();
        // kept sorted by length, so that `take` hands out the largest
        let at = free.partition_point(|b| b.len() <= v.len());
        free.insert(at, v);
    }

    fn floats(&self) -> usize {
        self.free().iter().map(Vec::capacity).sum()
    }
}

/// Numbered buffers that one pass takes, uses and puts back. A buffer only grows; a pass
/// uses its first `n` elements and writes them before reading them.
#[derive(Debug)]
pub(crate) struct Scratch<F> {
    slots: Vec<Vec<F>>,
    /// The convolutions' per-chunk buffers.
    pub(crate) chunks: ChunkPool<F>,
}

impl<F> Default for Scratch<F> {
    fn default() -> Self {
        Scratch {
            slots: Vec::new(),
            chunks: ChunkPool::default(),
        }
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
            + self.scratch.slots.iter().map(Vec::capacity).sum::<usize>()
            + self.scratch.chunks.floats();
        floats * std::mem::size_of::<F>()
    }
}
