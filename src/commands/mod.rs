//! Command implementations: turn parsed flags into library configs and print results.

pub mod anneal;
pub mod corpus;
pub mod merge_search;
pub mod mix;
pub mod niah;
pub mod sft;
pub mod shards;
pub mod tokenizer;
pub mod train;
