//! The plasticity rules (docs/algorithm.md §2.2), each as one small piece: which `(pre, δ)`
//! pair forms each layer's raw update `Δ_W = pre ⊗ δ`, and whether biases change
//! (`Δ_b = δ`). Both directions follow from that choice: the forward pass computes each
//! [`Signal`] of a step, and the backward pass sends the adjoint of a signal to the quantity
//! it is (the adjoint of `pre = h_{t−1}` goes to `dh_{t−1}`, that of `δ = y` to `dy`, that of
//! an inner error back through the inner backward computation that made it). The shared
//! machinery (norm clipping, decay, α, the update and its adjoint) lives in the engine and
//! does not look at the rule.
//!
//! A new rule implements, as a new [`Rule`] variant (dispatched once per step and layer,
//! never per element):
//! - [`Rule::signals`]: its `(pre, δ)` for each [`LayerId`], from the existing [`Signal`]s;
//! - [`Rule::updates_bias`]: whether `Δ_b = δ` or biases only decay;
//! - [`Rule::is_second_order`]: whether `δ` is a gradient of the inner loss (then the
//!   forward pass records the inner errors and the backward pass differentiates through
//!   them); it must agree with [`Signal::is_inner_error`] of its `δ`s.
//!
//! A rule that needs a quantity no [`Signal`] names adds the variant here, its vector to the
//! engine's step record (`engine::record`), and its adjoint's destination to the backward
//! pass's `signal_adjoint`: one line each, the sweep itself stays as it is.

use crate::config::Rule;
use crate::params::LayerId;

/// Which quantity of a step a rule uses as `pre` or `δ` for a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The network input `x`.
    Input,
    /// The previous hidden state `h` (as carried between steps).
    HiddenPrev,
    /// The input layer's output `u` (the input `x` itself without an input layer).
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

impl Signal {
    /// Whether the signal is an inner error of the gradient rule (a derivative of the inner
    /// loss, whose adjoint flows through the inner backward computation).
    pub fn is_inner_error(self) -> bool {
        matches!(
            self,
            Signal::InnerErrorIn | Signal::InnerErrorCell | Signal::InnerErrorOut
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_order_rules_are_those_whose_deltas_are_inner_errors() {
        // `none` has no update, so its signals are never read
        for rule in Rule::ALL.iter().copied().filter(|&r| r != Rule::None) {
            let any_inner = LayerId::ALL
                .iter()
                .any(|&l| rule.signals(l).1.is_inner_error());
            assert_eq!(rule.is_second_order(), any_inner, "{rule}");
            assert!(LayerId::ALL
                .iter()
                .all(|&l| !rule.signals(l).0.is_inner_error()));
        }
    }
}
