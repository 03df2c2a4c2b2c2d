//! `sigil`: the one command-line program of Sigil (architecture.md §3). It parses the command
//! line, runs the command and maps failures to exit codes: 64 for bad usage or config, 1 for
//! anything else.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// Exit status for bad usage or a bad config (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(error) => {
            // clap exits 2 on usage errors; our contract says 64. Help and version are not
            // errors and go to stdout with status 0.
            let code = match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_USAGE),
            };
            // Printing help or the error can only fail if stdout/stderr are gone.
            let _ = error.print();
            return code;
        }
    };
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if cli::is_usage_error(&error) {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
