//! `sigil`: the one command-line program of Sigil (architecture.md §3). It parses the command
//! line, runs the command and maps failures to exit codes: 64 for bad usage or config, 1 for
//! anything else.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// Exit status for bad usage or a bad config (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    // One crypto provider for every rustls user in the process; it fails only when one is
    // installed already, which is then the same aws-lc-rs provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_logging();
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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal; a log file or journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
