//! Command implementations that need no libtorch: turn parsed flags into library configs and
//! print results. The libtorch ones are in `torch/src/commands`.

pub mod corpus;
pub mod mix;
pub mod report;
pub mod shards;
pub mod slurm;
pub mod tokenizer;
