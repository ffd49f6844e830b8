//! The `paved` binary: parses the command line and hands off; the work lives in libraries.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;
use paved::cli::{Cli, Command};
use paved::{commands, error};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The shim and its launcher must start nothing of their own: no runtime, no threads, no
    // logging (the launcher forks shims, which fork sandboxes), so they go before everything else.
    if let Some(dir) = shim_dir(std::env::args_os()) {
        run_shim(&dir);
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == paved_runtime::launcher::LAUNCHER_SUBCOMMAND)
    {
        std::process::exit(paved_runtime::launcher::launcher_main());
    }
    let cli = Cli::parse();
    if let Command::Shim { dir } = &cli.command {
        run_shim(dir);
    }
    init_tracing(cli.global.verbose, matches!(cli.command, Command::Up(_)));
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(commands::dispatch(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if error::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", error::render(&err));
            ExitCode::from(error::exit_code(&err))
        }
    }
}

/// `paved __shim DIR` exactly as the runtime starts it.
fn shim_dir(mut args: impl Iterator<Item = OsString>) -> Option<OsString> {
    let _program = args.next();
    if args.next()? != "__shim" {
        return None;
    }
    args.next()
}

fn run_shim(dir: impl AsRef<Path>) -> ! {
    std::process::exit(paved_runtime::shim_main(dir.as_ref()))
}

/// Logs go to stderr so they never mix with output. `paved up` is a server and says what it
/// does at info; other commands speak only for warnings unless asked with -v.
fn init_tracing(verbose: u8, server: bool) {
    let level = match (verbose, server) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_is_recognised_only_as_the_first_argument() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        assert_eq!(shim_dir(args(&["paved", "__shim", "/t/1"])), Some("/t/1".into()));
        assert_eq!(shim_dir(args(&["paved", "__shim"])), None);
        assert_eq!(shim_dir(args(&["paved", "jobs", "__shim"])), None);
        assert_eq!(shim_dir(args(&["paved"])), None);
    }
}
