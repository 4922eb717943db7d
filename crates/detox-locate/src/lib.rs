//! # detox-locate
//!
//! The toxic-region locator of DINM ("Detoxifying Large Language Models via Knowledge Editing", Wang et al.,
//! ACL 2024): it contrasts the hidden states a model produces for a safe and an unsafe response, layer by layer,
//! and names the layer where they differ most as the toxic layer to edit.
#![deny(missing_docs)]
