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
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if error::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", error::render(&err));
            ExitCode::from(error::exit_code(&err))
        }
    }
}

/// Logs (and, for `paved up --otlp-endpoint`, spans to OTLP) set up, then the command; the
/// span exporter sends what it has batched before the process ends.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let otlp = match &cli.command {
        Command::Up(args) => args.otlp_endpoint.clone(),
        _ => None,
    };
    let spans = init_tracing(
        cli.global.verbose,
        matches!(cli.command, Command::Up(_)),
        otlp.as_deref(),
    )?;
    let result = commands::dispatch(cli).await;
    if let Some(provider) = spans {
        // Flushing blocks on the exporter, which runs on this runtime: off a worker thread.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    result
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
fn init_tracing(
    verbose: u8,
    server: bool,
    otlp: Option<&str>,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    let level = match (verbose, server) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(color);
    let registry = tracing_subscriber::registry().with(filter).with(logs);
    match otlp {
        None => {
            registry.init();
            Ok(None)
        }
        Some(endpoint) => {
            let (provider, spans) = paved::traces::otlp(endpoint)?;
            registry.with(spans).init();
            Ok(Some(provider))
        }
    }
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
