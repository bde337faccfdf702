//! The `mixforge` command line without libtorch: parsing, recipes, and the corpus, simulator
//! and report commands. Commands that train or run models are in the `mixforge-torch`
//! executable (`torch/src/`), which `mixforge` hands them to as git does with `git-<command>`:
//! users type one command, and only those commands pay libtorch's load time and memory.

pub mod cli;
pub mod commands;
pub mod progress;
pub mod recipe;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command, MixCommand};
use tracing_subscriber::EnvFilter;

/// The executable that runs the commands needing libtorch, installed beside `mixforge`.
pub const TORCH_EXE: &str = "mixforge-torch";

/// Parses the command line, exiting with clap's message on bad flags. The matches stay at
/// hand: a resumed `train` must know which flags were given.
pub fn parse() -> (Cli, clap::ArgMatches) {
    let matches = Cli::command().get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, matches),
        Err(e) => e.exit(),
    }
}

/// Logging to stderr (`MIXFORGE_LOG`) and the global rayon pool sized by `--threads`.
pub fn init(threads: usize) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("MIXFORGE_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| anyhow::anyhow!("setting --threads {threads}: {e}"))?;
    }
    Ok(())
}

/// Whether the command trains or runs a model (or drives those that do), and so needs libtorch.
pub fn needs_libtorch(command: &Command) -> bool {
    match command {
        Command::Report(_) | Command::Corpus(_) | Command::Tokenizer(_) => false,
        Command::Mix(MixCommand::Swarm(_) | MixCommand::Loo(_)) => true,
        Command::Mix(_) => false,
        _ => true,
    }
}

/// Runs a command for which `needs_libtorch` is false.
pub fn run_without_libtorch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Report(args) => commands::report::report(&args.run),
        Command::Corpus(command) => commands::corpus::run(command),
        Command::Tokenizer(cli::TokenizerCommand::Bench(args)) => commands::tokenizer::bench(&args),
        Command::Mix(command) => commands::mix::run(command),
        _ => unreachable!("{TORCH_EXE} runs it (needs_libtorch)"),
    }
}

/// The exit status of a finished command, its error printed; a closed pipe (`| head`) is success.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
