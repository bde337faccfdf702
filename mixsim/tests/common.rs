//! Shared fixtures: paths to the RegMix 1M files and a scratch directory per test.

use std::path::{Path, PathBuf};

use mixsim::RunsTable;

/// The target the RegMix paper optimises.
pub const TARGET: &str = "the_pile_pile_cc_val_loss";

pub fn regmix_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/regmix")
}

pub fn train() -> mixsim::Result<RunsTable> {
    let dir = regmix_dir();
    RunsTable::import_regmix(&dir.join("train_mixture_1m.csv"), &dir.join("train_pile_loss_1m.csv"))
}

pub fn test() -> mixsim::Result<RunsTable> {
    let dir = regmix_dir();
    RunsTable::import_regmix(&dir.join("test_mixture_1m.csv"), &dir.join("test_pile_loss_1m.csv"))
}

/// A fresh empty directory under the target dir, named after the test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mixsim").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir is creatable");
    dir
}
