//! Integration tests of the corpus crate on real data from `../shared/data`.

mod common;
mod decontamination;
mod dedup_quality;
mod hardening;
mod ingest_formats;
mod piecewise_tokenizer;
mod pipeline_runs;
mod shards_and_search;
mod signals_reference;
