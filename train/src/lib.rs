//! The mixforge trainer: a Llama-style decoder with per-layer local/global attention on
//! libtorch (`tch`), a loader that samples domains of the corpus shards by mixture weight,
//! cross-entropy or logit-distillation training with exact resume, evaluation on validation
//! streams and task files, generation, Hugging Face export/import, and the proxy API the
//! mix simulator calls.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod int4;
pub mod loss;
pub mod merge;
pub mod model;
pub mod niah;
pub mod optim;
pub mod params;
pub mod proxy;
pub mod quant;
pub mod rng;
pub mod sft;
pub mod teacher_cache;
pub mod trainer;

use std::path::{Path, PathBuf};

pub use config::{AttnKind, ModelConfig};
pub use model::Llama;

/// Errors from training, loading and evaluation, each naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Data(String),
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Corpus(#[from] corpus::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, cause: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), cause }
    }

    pub(crate) fn format(path: &Path, message: impl Into<String>) -> Error {
        Error::Format { path: path.to_path_buf(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
