//! The `mixforge` command line.

mod cli;
mod commands;
mod progress;
mod recipe;
mod run;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The matches stay at hand: a resumed `train` must know which flags were given.
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("MIXFORGE_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    if cli.threads > 0
        && let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(cli.threads).build_global()
    {
        eprintln!("error: setting --threads {}: {e}", cli.threads);
        return ExitCode::FAILURE;
    }
    // libtorch's intra-op threads follow --threads too (its default is one per core).
    if cli.threads > 0 {
        tch::set_num_threads(cli.threads as i32);
    }
    let result = match cli.command {
        cli::Command::Run(args) => run::run(&args, cli.threads),
        cli::Command::Report(args) => run::report(&args.run),
        cli::Command::Corpus(command) => commands::corpus::run(command),
        cli::Command::Tokenizer(cli::TokenizerCommand::Bench(args)) => commands::tokenizer::bench(&args),
        cli::Command::Mix(command) => commands::mix::run(command, cli.threads),
        cli::Command::Train(args) => {
            commands::train::train(&args, matches.subcommand_matches("train").expect("parsed as train"))
        }
        cli::Command::Sft(args) => commands::sft::sft(&args, &mut std::io::stdout().lock()).map(|_| ()),
        cli::Command::Eval(args) => commands::train::eval(&args),
        cli::Command::Generate(args) => commands::train::generate(&args),
        cli::Command::Export(args) => commands::train::export(&args),
        cli::Command::Quantize(args) => commands::train::quantize(&args, &mut std::io::stdout().lock()),
        cli::Command::Merge(args) => commands::train::merge(&args, &mut std::io::stdout().lock()),
        cli::Command::Anneal(args) => commands::anneal::anneal(&args, cli.threads, &mut std::io::stdout().lock()),
        cli::Command::Teacher(cli::TeacherCommand::Cache(args)) => commands::train::teacher_cache(&args),
        cli::Command::Niah(cli::NiahCommand::Make(args)) => commands::niah::make(&args, &mut std::io::stdout().lock()),
        cli::Command::Model(command) => commands::train::model(command),
        cli::Command::Doctor => commands::train::doctor(),
    };
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
