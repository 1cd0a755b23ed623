//! flamebpf: a CPU profiler for Linux. Perf events trigger a BPF program that
//! aggregates kernel and user stacks in the kernel; userspace symbolizes them and
//! writes flame graphs.
//!
//! The data flow is the module tree: [`cli`] parses, [`capture`] samples into a raw
//! profile, [`symbolize`] names its addresses, [`output`] writes the files and the
//! summary, [`daemon`] runs the continuous loop, its store and endpoint; the
//! [`commands`] put those stages together.

// The stages, in the order data flows through them.
mod capture;
mod cli;
mod commands;
mod daemon;
mod export;
mod labels;
mod memory;
mod output;
mod symbolize;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything raises them: the profiled command gets these back.
    capture::gated::remember_limits();
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
        cli::Command::Record(args) => commands::record::run(*args),
        cli::Command::List => commands::list::run().map(|()| 0),
        cli::Command::Convert(args) => commands::convert::convert(args),
        cli::Command::Continuous(args) => commands::continuous::run(*args),
        cli::Command::Query(args) => commands::query::run(args),
        cli::Command::Diff(args) => commands::convert::diff(args),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("flamebpf: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
