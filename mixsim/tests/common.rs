//! Shared fixtures: paths to the RegMix 1M files and a scratch directory per test.

use std::path::{Path, PathBuf};

use mixsim::RunsTable;

/// The target the RegMix paper optimises.
pub const TARGET: &str = "the_pile_pile_cc_val_loss";

pub fn regmix_dir() -> PathBuf {
    manifest_dir().join("../../shared/data/regmix")
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

/// The package folder as cargo gives it to the running test (not as it was when compiled: a
/// binary reused from another checkout sharing the target dir would point there).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
