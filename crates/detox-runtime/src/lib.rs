//! # detox-runtime
//!
//! The libtorch-backed model runtime of the detox workspace (CPU and CUDA, through `tch`): decoder LLMs of the
//! Llama-2, Llama-3, Mistral, Qwen2, Qwen3, Gemma-2, Gemma-3, Phi-3 and OLMo-2 families (one decoder with
//! per-family options, `docs/models.md`) loaded from Hugging Face safetensors and `tokenizer.json`, chat
//! templates, full-sequence logits with the hidden states of every layer, access to any parameter by its Hugging
//! Face name for editing and exact restore, batched KV-cache generation, writing an edited model back as a
//! Hugging Face directory ([`CausalLm::save_pretrained`], [`export`]), and the RoBERTa sequence classifier used
//! as the SafeEdit safety judge.
//!
//! Start every program with [`backend::init`] (or [`backend::default_device`]) so that CUDA is available when the
//! machine has it.
#![deny(missing_docs)]

pub mod backend;
pub mod chat;
mod config;
pub mod digest;
mod dynlib;
mod error;
pub mod export;
mod generate;
pub mod gguf;
mod kv_cache;
pub mod load;
pub mod memory;
mod model;
pub mod padding;
mod refill;
pub mod roberta;
mod tokenizer;
pub mod weights;

pub use chat::{ChatTemplate, Message, PromptLayout, Role};
pub use config::{
    Activation, Architecture, Config, NormKind, NormPlacement, QkNorm, RopeScaling,
    SUPPORTED_MODEL_TYPES,
};
pub use error::{Error, Result};
pub use export::{SaveOptions, SavedModel};
pub use generate::{generate, FinishReason, Generated, GenerationConfig, Sampling, StopCheck};
pub use kv_cache::KvCache;
pub use load::{load_model, LoadedModel, ModelFormat};
pub use model::attention_check;
pub use model::{
    CausalLm, DeviceMap, ForwardOptions, ForwardOutput, FrozenPrefix, GradientFactors, LinearProbe,
    LogitsSelection, LowRank, PartSizes, PositionIds, ResumePoint, Snapshot,
};
pub use refill::generate_refill;
pub use tokenizer::{Tokenizer, Truncation};
pub use weights::SafetensorsFiles;
