//! Corpus processing for mixforge: read documents from JSONL, Parquet and plain text (gzip or
//! zstd), measure them, apply quality rules, remove exact and near duplicates, and account for
//! every document.
//!
//! The entry point is [`pipeline::run`] with a [`config::PipelineConfig`]:
//!
//! ```no_run
//! use corpus::config::{DedupConfig, FilterConfig, PipelineConfig, SourceConfig, Stages};
//!
//! let config = PipelineConfig {
//!     sources: vec![SourceConfig::new("web", vec!["data/web/*.jsonl.zst".into()])],
//!     filter: FilterConfig::default(),
//!     dedup: DedupConfig::default(),
//!     decontam: None,
//!     stages: Stages::ALL,
//!     strict: false,
//!     out: "runs/web".into(),
//!     batch_docs: 4096,
//! };
//! let report = corpus::pipeline::run(&config, &corpus::pipeline::Silent)?;
//! assert!(report.manifest.accounting.balances());
//! # Ok::<(), corpus::Error>(())
//! ```
#![warn(missing_docs)]

pub mod accounting;
pub mod atomic;
pub mod chat;
pub mod config;
pub mod decontam;
pub mod dedup;
mod error;
pub mod filters;
pub mod hashing;
pub mod ids;
pub mod ingest;
pub mod instruct;
pub mod kept;
pub mod pipeline;
pub mod profile;
pub mod search;
pub mod shards;
pub mod signals;
pub mod summary;
pub mod tokenize;

pub use error::{Error, Result};
