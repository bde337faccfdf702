//! End-to-end tests of the `mixforge` binary on the bundled demo corpus and bad inputs.

mod common;
mod corpus_cli;
mod mix_cli;
mod shards_cli;
mod train_cli;
