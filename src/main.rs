//! flamebpf: a CPU profiler for Linux. Perf events trigger a BPF program that
//! aggregates kernel and user stacks in the kernel; userspace symbolizes them and
//! writes flame graphs.

mod bpf;
mod cli;
mod command;
mod continuous;
mod convert;
mod dwarf;
mod events;
mod http;
mod list;
mod metrics;
mod outputs;
mod perf;
mod privilege;
mod progress;
mod query;
mod raw;
mod record;
mod ring;
mod sampling;
mod session;
mod store;
mod summary;
mod symbolize;
mod target;
mod tracking;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // clap's message spans several lines (tips, usage); the first says it all.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("flamebpf: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        cli::Command::Record(args) => record::run(*args),
        cli::Command::List => list::run().map(|()| 0),
        cli::Command::Convert(args) => convert::convert(args),
        cli::Command::Continuous(args) => continuous::run(*args),
        cli::Command::Query(args) => query::run(args),
        cli::Command::Diff(args) => convert::diff(args),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("flamebpf: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
