//! The two named semantics of a pruning call, and every rule in which they differ.
//!
//! `Reference` reproduces the authors' code (adekhovich/NNrelief @ 13a3f84) bit for bit, quirks
//! included; it is the default because it produced the paper's numbers. `Paper` is the algorithm
//! as the paper states it, with each quirk fixed:
//!
//! | rule | `Reference` | `Paper` |
//! | --- | --- | --- |
//! | threshold | drop every entry `<=` the pivot value `s[min(p+1, L-1)]`: ties with the prefix are dropped and the least important entry is always dropped | keep the shortest descending prefix reaching `alpha` plus everything tied with its last entry; nothing forced out; an all-zero row keeps nothing |
//! | scoring inputs | convolutions on the pre-pruning pass; fully connected layers on a second pass through the pruned feature extractor | every layer on the pre-pruning activations of one pass (Algorithm 1) |
//! | ResNet residual while scoring | shortcut mask ignored | shortcut mask applied (the model's real forward) |
//! | ResNet stem mask | computed, never applied to the weights | applied |
//! | BatchNorm of removed filters | zeroed for dead and backward-pruned filters only (ResNet: not the stem in backward pruning, not ratio-test filters) | every filter that lost all its entries has its BatchNorm zeroed and its gamma/beta masked, so it emits exactly 0 |
//! | fully connected masks across calls | rebuilt from ones each call | merged: masks only shrink |
//! | dead rule on the output layer | LeNet/VGG: yes (raw logits); ResNet: none on `linear` | hidden layers only |
//!
//! Both share: the importance formulas, L1 (LeNet) / L2 (VGG, ResNet) aggregation over output
//! positions, the dead-unit rule for hidden units, the ResNet residual ratio test and backward
//! pruning. Shapes are never hard-coded in either.

use serde::{Deserialize, Serialize};

/// Which behaviour a pruning call follows (module docs list every difference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Semantics {
    /// The authors' code, bit for bit (default).
    #[default]
    Reference,
    /// The paper's algorithm with the reference's quirks fixed.
    Paper,
}

impl std::str::FromStr for Semantics {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reference" => Ok(Self::Reference),
            "paper" => Ok(Self::Paper),
            other => Err(format!("unknown semantics `{other}` (expected reference or paper)")),
        }
    }
}

impl std::fmt::Display for Semantics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Reference => "reference",
            Self::Paper => "paper",
        })
    }
}
