//! Stands in for the `paved` binary where it is out of reach: this crate's tests and examples
//! run it as the shim (`paved-shim __shim <task-dir>`), and as a minimal agent to SIGKILL
//! (`paved-shim __agent <task-dir> <command>...`: starts the task, prints its record as one JSON
//! line, then waits to be killed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use paved_runtime::{ProcessRuntime, Runtime, TaskSpec};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [subcommand, dir] if subcommand == paved_runtime::process::SHIM_SUBCOMMAND => {
            let code = paved_runtime::shim_main(Path::new(dir));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        [subcommand] if subcommand == paved_runtime::launcher::LAUNCHER_SUBCOMMAND => {
            let code = paved_runtime::launcher::launcher_main();
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        [subcommand, dir, command @ ..] if subcommand == "__agent" && !command.is_empty() => {
            match agent(PathBuf::from(dir), command.to_vec()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("paved-shim agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: paved-shim __shim <task-dir> | __shim-launcher | __agent <task-dir> <command>..."
            );
            ExitCode::from(2)
        }
    }
}

fn agent(dir: PathBuf, command: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let runtime = ProcessRuntime::new(std::env::current_exe()?);
        let task_id = "agent-task".to_owned();
        let spec = TaskSpec {
            task_id,
            command,
            env: Default::default(),
            dir,
            log_limit_bytes: 0,
            ..TaskSpec::default()
        };
        let record = runtime.start(&spec).await?;
        println!("{}", serde_json::to_string(&record)?);
        std::future::pending::<()>().await;
        Ok(())
    })
}
