//! Network configuration: cell, plasticity rule and every knob of docs/algorithm.md §1–2.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => [$($s:literal),+]),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $var),+ }
        impl $name {
            /// Every value, in canonical spelling.
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => [$($s),+][0]),+ }
            }
            /// The canonical spellings, comma separated (for error messages).
            pub fn valid() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }
        impl std::str::FromStr for $name {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                let lower = s.to_ascii_lowercase();
                $( if [$($s),+].contains(&lower.as_str()) { return Ok($name::$var); } )+
                Err($crate::error::Error::Config(format!("unknown value `{}`; valid: {}", s, Self::valid())))
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                // the message alone: the caller says which key it is
                s.parse().map_err(|_| serde::de::Error::custom(format!(
                    "unknown value `{}`; valid: {}", s, Self::valid()
                )))
            }
        }
    };
}
pub(crate) use named_enum;

named_enum!(
    /// The recurrent cell (docs/algorithm.md §1.2).
    CellKind {
        /// `h' = relu(h·W_h + b_h + u·W_i + b_i)`.
        Rnn => ["rnn"],
        /// An LSTM cell with gates in the order input, forget, cell, output.
        Lstm => ["lstm"],
    }
);

named_enum!(
    /// The plasticity rule (docs/algorithm.md §2.2).
    Rule {
        /// No plastic weights: the standard network.
        None => ["none"],
        /// `Δ_W = pre ⊗ post`.
        Hebbian => ["hebbian"],
        /// `Δ = ∂L_in/∂P`, the gradient of the network's own inner loss.
        Gradient => ["gradient"],
    }
);

named_enum!(
    /// How the per-connection plasticity coefficients α are initialised (docs/algorithm.md §2.4).
    InnerLrMode {
        /// α is the constant 1 and not a parameter.
        None => ["none"],
        /// α starts at 1.
        Uniform => ["uniform"],
        /// α starts at −1.
        NegUniform => ["neg_uniform"],
        /// α starts at `U(−1, 1)`.
        Random => ["random"],
    }
);

/// Everything that defines a network's shape and plasticity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `rnn` or `lstm`.
    pub rnn: CellKind,
    /// `gradient`, `hebbian` or `none`.
    pub plasticity: Rule,
    /// Input size I.
    pub input_size: usize,
    /// Hidden size H.
    pub hidden_size: usize,
    /// Task output size O.
    pub output_size: usize,
    /// Extra outputs E (default 4).
    pub extra_dim: usize,
    /// Whether the last output modulates the plasticity and decay rates (default on).
    pub modulation: bool,
    /// Plasticity rate `p_lr` (default 0.1).
    pub p_lr: f64,
    /// Plastic weight decay `p_wd` (default 0.1).
    pub p_wd: f64,
    /// Norm clip of the raw update (default 1).
    pub inner_grad_clip: f64,
    /// Optional clamp of the plastic weights to `[−c, c]` (absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_clip: Option<f64>,
    /// LayerNorm on the hidden state (default off).
    pub layernorm: bool,
    /// Initialisation of α (default `random`).
    pub inner_lr_mode: InnerLrMode,
    /// Keep the fixed weights at their initial values (only α, `out_weight`, ... train).
    pub random_network: bool,
    /// Whether the network has its input layer `in` (default on). Without it the input `x`
    /// goes straight into the recurrent cell as `u` (docs/fsc.md §5): there are no `in.*`
    /// parameters, `rec.w_i` is (H, gH) and `input_size` must equal `hidden_size`.
    #[serde(default = "default_true")]
    pub input_layer: bool,
}

fn default_true() -> bool {
    true
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            rnn: CellKind::Rnn,
            plasticity: Rule::Gradient,
            input_size: 16,
            hidden_size: 128,
            output_size: 1,
            extra_dim: 4,
            modulation: true,
            p_lr: 0.1,
            p_wd: 0.1,
            inner_grad_clip: 1.0,
            weight_clip: None,
            layernorm: false,
            inner_lr_mode: InnerLrMode::Random,
            random_network: false,
            input_layer: true,
        }
    }
}

impl NetworkConfig {
    /// Full output size `D = O + E + M`.
    pub fn full_output_size(&self) -> usize {
        self.output_size + self.extra_dim + usize::from(self.modulation)
    }

    /// Gate multiplicity `g`: 1 for the RNN, 4 for the LSTM.
    pub fn gates(&self) -> usize {
        match self.rnn {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
        }
    }

    /// Whether the network has plastic weights.
    pub fn is_plastic(&self) -> bool {
        self.plasticity != Rule::None
    }

    /// Whether α is a learned parameter.
    pub fn has_alpha(&self) -> bool {
        self.is_plastic() && self.inner_lr_mode != InnerLrMode::None
    }

    /// Checks every value; the error lists what is valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (name, v) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
            ("output_size", self.output_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1, got 0"));
            }
        }
        if !self.input_layer && self.input_size != self.hidden_size {
            return bad(format!(
                "without an input layer (input_layer = false) the input goes straight into the \
                 recurrent cell, so input_size must equal hidden_size; got input_size {} and \
                 hidden_size {}",
                self.input_size, self.hidden_size
            ));
        }
        for (name, v) in [("p_lr", self.p_lr), ("p_wd", self.p_wd)] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if !(self.inner_grad_clip.is_finite() && self.inner_grad_clip > 0.0) {
            return bad(format!(
                "inner_grad_clip must be a finite number > 0, got {}",
                self.inner_grad_clip
            ));
        }
        if let Some(c) = self.weight_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!(
                    "weight_clip must be a finite number > 0 (or absent for no clipping), got {c}"
                ));
            }
        }
        Ok(())
    }
}
