//! Plastic recurrent networks with Hebbian and gradient-based plasticity, after Duan et
//! al., "Hebbian and Gradient-based Plasticity Enables Robust Memory and Rapid Learning in
//! RNNs" (ICLR 2023): the exact forward pass of the authors' reference and its exact
//! meta-gradient, with hand-written kernels, generic over `f32` and `f64`.
//!
//! The flow: a [`config::NetworkConfig`] and a seed make a [`Network`]; a batch of
//! [`Episodes`] runs through [`Network::forward`] (outputs and per-step diagnostics) or
//! [`Network::loss_and_grad`] (the loss and the gradient of every named parameter; with
//! [`Network::loss_and_grad_with`] also of the inputs, and [`Network::vjp`] for a loss of
//! the caller's). The [`Network`] is plain data; an [`Engine`] runs it (those methods use a
//! shared one; hold your own with [`Engine::new`]).
//!
//! ```
//! use plastic::{config::NetworkConfig, Episodes, Loss, Network};
//! let config = NetworkConfig { input_size: 3, hidden_size: 8, ..Default::default() };
//! let net = Network::<f64>::new(config, 0).unwrap();
//! let (b, t) = (2, 5);
//! let ep = Episodes::new(b, t, 3, 1, vec![0.5; b * t * 3], vec![0.1; b * t], 0).unwrap();
//! let g = net.loss_and_grad(&ep, Loss::Mse).unwrap();
//! assert_eq!(g.grads.len(), net.layout().len());
//! ```

// Index loops over several equal-length slices read more clearly than zipped iterators in
// the numerical kernels.
#![allow(clippy::needless_range_loop)]

pub mod cell;
pub mod config;
pub mod engine;
pub mod episode;
pub mod error;
#[doc(hidden)]
pub mod fixture;
pub mod float;
pub mod io;
pub mod kernels;
pub mod layernorm;
pub mod matmul;
pub mod network;
pub mod optim;
pub mod params;
pub mod plasticity;
pub mod rng;
pub mod run;
pub mod tasks;

pub use config::{CellKind, InnerLrMode, NetworkConfig, Rule};
pub use engine::{Engine, Forward, GradRequest, Gradient, Tape};
pub use episode::{Episodes, Loss};
pub use error::{Error, Result};
pub use float::Float;
pub use network::Network;
pub use params::{LayerId, Layout, NamedTensor};
