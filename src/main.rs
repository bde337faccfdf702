//! `mixforge`: runs the corpus, simulator and report commands itself and hands those that
//! train or run models to `mixforge-torch`, so only they load libtorch.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mixforge::TORCH_EXE;

fn main() -> ExitCode {
    let (cli, _) = mixforge::parse();
    if mixforge::needs_libtorch(&cli.command) {
        return mixforge::exit_code(hand_over());
    }
    if let Err(e) = mixforge::init(cli.threads) {
        return mixforge::exit_code(Err(e));
    }
    mixforge::exit_code(mixforge::run_without_libtorch(cli.command))
}

/// Replaces this process with `mixforge-torch` and the same arguments (same pid, so signals,
/// exit status and a killed run behave as if it had run here). Returns only on failure.
fn hand_over() -> Result<()> {
    let exe = std::env::current_exe().context("finding the mixforge executable")?;
    let torch = exe.with_file_name(TORCH_EXE);
    if !torch.is_file() {
        bail!(
            "this command trains or runs a model, which needs libtorch and the `{TORCH_EXE}` executable, but {} \
             does not exist; build both with `source scripts/env.sh && cargo build --release`, or install them \
             side by side",
            torch.display()
        );
    }
    let err = std::process::Command::new(&torch).arg0("mixforge").args(std::env::args_os().skip(1)).exec();
    Err(err).with_context(|| format!("starting {}", torch.display()))
}
