//! `mixforge-torch`: the commands that train or run models, and so link libtorch. `mixforge`
//! hands these over (`mixforge train …` execs `mixforge-torch train …`); run directly, it takes
//! every command, the torch-free ones through the same library code.

mod commands;
mod run;

use std::process::ExitCode;

// The library's modules under their usual names, so `crate::cli::…` reads the same everywhere.
use mixforge::{cli, progress, recipe};

fn main() -> ExitCode {
    let (cli, matches) = mixforge::parse();
    if let Err(e) = mixforge::init(cli.threads) {
        return mixforge::exit_code(Err(e));
    }
    // libtorch's intra-op threads follow --threads too (its default is one per core).
    if cli.threads > 0 {
        tch::set_num_threads(cli.threads as i32);
    }
    if !mixforge::needs_libtorch(&cli.command) {
        return mixforge::exit_code(mixforge::run_without_libtorch(cli.command));
    }
    let threads = cli.threads;
    let stdout = || std::io::stdout().lock();
    let result = match cli.command {
        cli::Command::Run(args) => run::run(&args, threads),
        cli::Command::Mix(cli::MixCommand::Swarm(args)) => commands::swarm::swarm(&args, threads, &mut stdout()),
        cli::Command::Mix(cli::MixCommand::Loo(args)) => commands::sft::loo(&args, threads, &mut stdout()).map(|_| ()),
        cli::Command::Train(args) => {
            commands::train::train(&args, matches.subcommand_matches("train").expect("parsed as train"))
        }
        cli::Command::Sft(args) => commands::sft::sft(&args, &mut stdout()).map(|_| ()),
        cli::Command::Eval(args) => commands::train::eval(&args),
        cli::Command::Generate(args) => commands::train::generate(&args),
        cli::Command::Export(args) => commands::train::export(&args),
        cli::Command::Quantize(args) => commands::train::quantize(&args, &mut stdout()),
        cli::Command::Merge(args) => commands::train::merge(&args, &mut stdout()),
        cli::Command::Anneal(args) => commands::anneal::anneal(&args, threads, &mut stdout()),
        cli::Command::Teacher(cli::TeacherCommand::Cache(args)) => commands::train::teacher_cache(&args),
        cli::Command::Niah(cli::NiahCommand::Make(args)) => commands::niah::make(&args, &mut stdout()),
        cli::Command::Model(command) => commands::train::model(command),
        cli::Command::Doctor => commands::train::doctor(),
        cli::Command::Report(_) | cli::Command::Corpus(_) | cli::Command::Tokenizer(_) | cli::Command::Mix(_) => {
            unreachable!("run_without_libtorch runs it")
        }
    };
    mixforge::exit_code(result)
}
