//! The plasticity rules (ALGORITHM.md §2.2), as the small pieces that differ between them:
//! which `(pre, δ)` pair forms each layer's raw update `Δ_W = pre ⊗ δ`, whether biases
//! change (`Δ_b = δ`), and how the adjoints of `pre` and `δ` flow back into the step.
//! The shared machinery (norm clipping, decay, α, the update itself) lives in the engine.

use crate::config::Rule;
use crate::params::LayerId;

/// Which quantity of a step a rule uses as `pre` or `δ` for a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The network input `x`.
    Input,
    /// The previous hidden state `h` (as carried between steps).
    HiddenPrev,
    /// The input layer's output `u`.
    InputLayerOut,
    /// The cell's activations: `h'` (RNN) or the gates `[i, f, g, o]` (LSTM), before LayerNorm.
    CellActivations,
    /// The hidden state fed to the output layer (after LayerNorm).
    Hidden,
    /// The full output `y` (D entries).
    Output,
    /// Gradient rule: `∂L_in/∂a_in`, the inner error at the input layer's pre-activation.
    InnerErrorIn,
    /// Gradient rule: `∂L_in/∂z`, the inner error at the cell's pre-activation.
    InnerErrorCell,
    /// Gradient rule: `∂L_in/∂y`.
    InnerErrorOut,
}

impl Rule {
    /// The `(pre, δ)` signals of a layer's raw update `Δ_W = pre ⊗ δ`.
    pub fn signals(self, layer: LayerId) -> (Signal, Signal) {
        use Signal::*;
        let pre = match layer {
            LayerId::In => Input,
            LayerId::RecH => HiddenPrev,
            LayerId::RecI => InputLayerOut,
            LayerId::Out => Hidden,
        };
        let delta = match (self, layer) {
            (Rule::Hebbian, LayerId::In) => InputLayerOut,
            (Rule::Hebbian, LayerId::RecH | LayerId::RecI) => CellActivations,
            (Rule::Hebbian, LayerId::Out) => Output,
            (_, LayerId::In) => InnerErrorIn,
            (_, LayerId::RecH | LayerId::RecI) => InnerErrorCell,
            (_, LayerId::Out) => InnerErrorOut,
        };
        (pre, delta)
    }

    /// Whether biases change too (`Δ_b = δ`); a Hebbian bias only decays.
    pub fn updates_bias(self) -> bool {
        self == Rule::Gradient
    }

    /// Whether `δ` is itself a gradient of the inner loss (so that the meta-gradient has
    /// second-order terms).
    pub fn is_second_order(self) -> bool {
        self == Rule::Gradient
    }
}
