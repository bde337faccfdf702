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
pub mod hf;
pub mod loss;
pub mod merge;
pub mod model;
pub mod optim;
pub mod params;
pub mod proxy;
pub mod rng;
pub mod trainer;

use std::path::{Path, PathBuf};

pub use config::{AttnKind, ModelConfig};
pub use model::Llama;

/// Errors from training, loading and evaluation, each naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Data(String),
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Corpus(#[from] corpus::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn format(path: &Path, message: impl Into<String>) -> Error {
        Error::Format { path: path.to_path_buf(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
