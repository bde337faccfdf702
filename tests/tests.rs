//! End-to-end tests of the `mixforge` binary on the bundled demo corpus and bad inputs.

mod architecture;
mod common;
mod corpus_cli;
mod determinism_cli;
mod fixtures_cli;
mod hardening_cli;
mod libtorch_split_cli;
mod long_context_cli;
mod merge_cli;
mod mix_cli;
mod qat_cli;
mod run_cli;
mod sft_cli;
mod sharded_cli;
mod shards_cli;
mod slurm_cli;
mod train_cli;
