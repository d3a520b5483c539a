//! The network: a configuration, its parameter layout and the meta-learned parameters.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::NetworkConfig;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::{self, LayerId, Layout, NamedTensor};
use crate::rng::Rng;

/// Default memory budget for the plastic-weight snapshots one episode keeps for its
/// backward pass; longer episodes switch to checkpointing (see [`Network::set_snapshot_budget`]).
pub const DEFAULT_SNAPSHOT_BUDGET: usize = 64 << 20;

/// A plastic (or standard) recurrent network: its configuration, parameter layout and
/// meta-learned parameters; plain data. An [`crate::engine::Engine`] runs it
/// (`Network::forward`, `Network::loss_and_grad`, ... are shorthands for the shared one).
#[derive(Clone)]
pub struct Network<F: Float> {
    config: NetworkConfig,
    layout: Layout,
    params: Vec<F>,
    /// α = 1 for `inner_lr_mode = none`, as long as the largest tensor.
    ones: Vec<F>,
    snapshot_budget: usize,
}

impl<F: Float> std::fmt::Debug for Network<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("config", &self.config)
            .field("params", &self.params.len())
            .finish()
    }
}

impl<F: Float> Network<F> {
    /// A network initialised from `seed` as docs/algorithm.md §3.
    pub fn new(config: NetworkConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let layout = Layout::new(&config);
        let params = params::init_params(&config, &layout, &mut Rng::new(seed));
        Ok(Self::assemble(config, layout, params))
    }

    /// A network with the given flat parameter buffer (in [`Layout`] order).
    pub fn from_params(config: NetworkConfig, params: Vec<F>) -> Result<Self> {
        config.validate()?;
        let layout = Layout::new(&config);
        if params.len() != layout.len() {
            return Err(Error::Config(format!(
                "parameter buffer has {} values, this configuration needs {}",
                params.len(),
                layout.len()
            )));
        }
        Ok(Self::assemble(config, layout, params))
    }

    /// A network whose parameters are given by name (every parameter must be present).
    pub fn from_named(config: NetworkConfig, map: &BTreeMap<String, NamedTensor>) -> Result<Self> {
        config.validate()?;
        let layout = Layout::new(&config);
        let params = params::params_from_map(&layout, map)?;
        Ok(Self::assemble(config, layout, params))
    }

    /// Loads parameters by name from a safetensors file (F32 or F64).
    pub fn load(config: NetworkConfig, path: &Path) -> Result<Self> {
        config.validate()?;
        let layout = Layout::new(&config);
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let params = params::buffer_from_safetensors(&layout, &bytes, "", path)?;
        Ok(Self::assemble(config, layout, params))
    }

    /// Saves the parameters by name as safetensors, atomically (temporary file, then rename).
    pub fn save(&self, path: &Path, metadata: BTreeMap<String, String>) -> Result<()> {
        let bytes = params::safetensors_bytes(&self.layout, &[("", &self.params)], metadata)?;
        crate::io::write_atomic(path, &bytes)
    }

    fn assemble(config: NetworkConfig, layout: Layout, params: Vec<F>) -> Self {
        let max = layout.layers.iter().map(|l| l.w_len()).max().unwrap_or(0);
        Network {
            config,
            layout,
            params,
            ones: vec![F::one(); max],
            snapshot_budget: DEFAULT_SNAPSHOT_BUDGET,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }
    /// The parameter layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The flat parameter buffer.
    pub fn params(&self) -> &[F] {
        &self.params
    }
    /// The flat parameter buffer, mutable (for optimisers).
    pub fn params_mut(&mut self) -> &mut [F] {
        &mut self.params
    }
    /// One parameter by name.
    pub fn param(&self, name: &str) -> Result<&[F]> {
        let info = self.layout.require(name)?;
        Ok(&self.params[info.range()])
    }
    /// All parameters as named `f64` tensors.
    pub fn named_params(&self) -> BTreeMap<String, NamedTensor> {
        params::params_to_map(&self.layout, &self.params)
    }
    /// Sets the memory (bytes) one episode may use for plastic-weight snapshots during the
    /// backward pass. Episodes whose `T` snapshots do not fit are processed in segments of
    /// about `sqrt(T)` steps from checkpoints, recomputing the snapshots of each segment
    /// (exactly: same arithmetic, same results).
    pub fn set_snapshot_budget(&mut self, bytes: usize) {
        self.snapshot_budget = bytes;
    }

    /// The snapshot budget in bytes (see [`Self::set_snapshot_budget`]).
    pub fn snapshot_budget(&self) -> usize {
        self.snapshot_budget
    }

    // Accessors used by the engine.
    #[inline]
    pub(crate) fn w(&self, id: LayerId) -> &[F] {
        let l = self.layout.layer(id);
        &self.params[l.w..l.w + l.w_len()]
    }
    #[inline]
    pub(crate) fn b(&self, id: LayerId) -> &[F] {
        let l = self.layout.layer(id);
        &self.params[l.b..l.b + l.cols]
    }
    #[inline]
    pub(crate) fn alpha_w(&self, id: LayerId) -> &[F] {
        let l = self.layout.layer(id);
        match l.alpha_w {
            Some(o) => &self.params[o..o + l.w_len()],
            None => &self.ones[..l.w_len()],
        }
    }
    #[inline]
    pub(crate) fn alpha_b(&self, id: LayerId) -> &[F] {
        let l = self.layout.layer(id);
        match l.alpha_b {
            Some(o) => &self.params[o..o + l.cols],
            None => &self.ones[..l.cols],
        }
    }
    #[inline]
    pub(crate) fn out_weight(&self) -> &[F] {
        let d = self.config.full_output_size();
        &self.params[self.layout.out_weight..self.layout.out_weight + d]
    }
    #[inline]
    pub(crate) fn ln_params(&self) -> Option<(&[F], &[F])> {
        let h = self.config.hidden_size;
        self.layout
            .layernorm
            .map(|(g, b)| (&self.params[g..g + h], &self.params[b..b + h]))
    }
}
