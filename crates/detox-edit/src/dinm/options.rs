//! The places where the paper and the reference implementation read differently, as named options.
//!
//! Every default is the reference implementation's behaviour, so that results compare with published runs of
//! it; the alternatives follow the paper's text.

use serde::{Deserialize, Serialize};

/// Which loss term `kl_factor` scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossWeighting {
    /// `kl_factor * L_edit + L_kl`: the reference (despite the factor's name, it scales the edit term).
    #[default]
    Reference,
    /// `L_edit + kl_factor * L_kl`: the paper's reading.
    Paper,
}

/// Whether the knowledge-constraint KL term carries gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlGradient {
    /// The reference evaluates the post-edit constraint logits under `no_grad`: the KL term enters the reported
    /// loss and the early-stop test but does not shape the update.
    #[default]
    Detached,
    /// Gradients flow through the KL term too, as the paper's objective describes.
    Differentiable,
}
