//! Command implementations that train or run models, and so link libtorch.

pub mod anneal;
pub mod merge_search;
pub mod niah;
pub mod sft;
pub mod swarm;
pub mod train;

// The pipeline (`run`) also drives the torch-free commands.
pub use mixforge::commands::{corpus, mix, shards};
