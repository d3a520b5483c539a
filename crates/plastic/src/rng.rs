//! Seeded random numbers: one ChaCha8 stream per purpose, so that a seed fixes every draw
//! and the state can be saved and restored exactly.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A seeded random number generator (ChaCha8).
#[derive(Debug, Clone)]
pub struct Rng {
    inner: ChaCha8Rng,
}

/// The exact position of an [`Rng`], for checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key, in hex.
    pub seed: String,
    /// The stream number.
    pub stream: u64,
    /// The word position, in decimal (a u128).
    pub word_pos: String,
}

impl Rng {
    /// A generator for `seed`, stream 0.
    pub fn new(seed: u64) -> Self {
        Rng::with_stream(seed, 0)
    }

    /// A generator for `seed` on an independent `stream` (one per purpose: initialisation,
    /// training data, validation data, ...).
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        Rng { inner }
    }

    /// A uniform draw in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.inner.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform draw in `[lo, hi)`.
    #[inline]
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A standard normal draw (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.inner.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// The generator's exact position.
    pub fn state(&self) -> RngState {
        let seed = self.inner.get_seed();
        RngState {
            seed: seed.iter().map(|b| format!("{b:02x}")).collect(),
            stream: self.inner.get_stream(),
            word_pos: self.inner.get_word_pos().to_string(),
        }
    }

    /// Restores a generator saved by [`Rng::state`].
    pub fn from_state(state: &RngState) -> Result<Self> {
        let bad = || Error::Config(format!("corrupt random-generator state {state:?}"));
        if state.seed.len() != 64 {
            return Err(bad());
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&state.seed[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        let pos: u128 = state.word_pos.parse().map_err(|_| bad())?;
        let mut inner = ChaCha8Rng::from_seed(seed);
        inner.set_stream(state.stream);
        inner.set_word_pos(pos);
        Ok(Rng { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_the_same_sequence() {
        let mut a = Rng::with_stream(7, 3);
        for _ in 0..13 {
            a.uniform();
        }
        let mut b = Rng::from_state(&a.state()).unwrap();
        for _ in 0..50 {
            assert_eq!(a.uniform().to_bits(), b.uniform().to_bits());
        }
    }

    #[test]
    fn streams_differ_and_draws_are_in_range() {
        let mut a = Rng::with_stream(1, 0);
        let mut b = Rng::with_stream(1, 1);
        assert_ne!(a.uniform(), b.uniform());
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = a.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += a.normal();
            assert!(a.below(5) < 5);
        }
        assert!((sum / 10_000.0).abs() < 0.05);
    }
}
