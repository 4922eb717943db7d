//! # detox-locate
//!
//! The toxic-region locator of DINM ("Detoxifying Large Language Models via Knowledge Editing", Wang et al.,
//! ACL 2024): it contrasts the hidden states a model produces for a safe and an unsafe response, layer by layer,
//! and names the layer where they differ most as the toxic layer to edit.
//!
//! The reference implementation feeds the two responses alone (without the adversarial prompt) as one
//! left-padded batch and takes the Frobenius distance over the full `[sequence, hidden]` states, padding
//! included; those are the defaults here, and each alternative is a named option ([`LocateOptions`]). Every
//! layer's distance is reported, not only the winner, so that it can be plotted.
#![deny(missing_docs)]

mod contrast;
mod error;
mod options;
mod policy;
mod texts;

pub use contrast::{contrast_token_ids, LayerDistances, NEAR_TIE_RELATIVE};
pub use error::{LocateError, Result};
pub use options::{LocateInput, LocateOptions, PaddingPositions};
pub use policy::{LayerPolicy, LayerSelection};
pub use texts::{contrast_texts, ContrastTexts};
