//! Runs a parsed command: each group of commands lives in its own file under `commands/`.

mod jobs;
mod logs;
mod metrics;
mod routes;
mod run;
mod status;
mod tasks;
mod tenants;
mod tokens;
mod top;

use clap::CommandFactory as _;

use crate::cli::{Cli, Command, GlobalArgs, NodeAction, Output};
use crate::client::{Client, TokenSource};

/// What every command may need: how to reach the server and how to print.
pub struct Ctx {
    pub server: String,
    pub token: Option<String>,
    pub output: Output,
}

impl Ctx {
    fn new(global: GlobalArgs) -> Ctx {
        Ctx {
            server: global.server,
            token: global.token,
            output: global.output,
        }
    }

    /// Connects to the server; only commands that need one call this.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let token = TokenSource::resolve(self.token.clone());
        Client::connect(&self.server, &token).await
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// Runs `cli.command` to the end.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(cli.global);
    match cli.command {
        Command::Up(args) => crate::up::run(args).await,
        Command::Server(args) => crate::server::run_server(args).await,
        Command::Agent(args) => {
            let token = TokenSource::resolve(ctx.token.clone());
            crate::server::run_agent(args, ctx.server.clone(), token).await
        }
        Command::Proxy(args) => {
            let token = TokenSource::resolve(ctx.token.clone());
            crate::edge::run(args, ctx.server.clone(), token).await
        }
        Command::Run { file, wait } => run::run(&ctx, &file, wait).await,
        Command::Validate { file } => run::validate(&ctx, &file),
        Command::Jobs => jobs::list(&ctx).await,
        Command::Job { job } => jobs::show(&ctx, &job).await,
        Command::Scale { job, instances } => jobs::scale(&ctx, &job, instances).await,
        Command::Kill { target } => jobs::kill(&ctx, &target).await,
        Command::Tasks { job } => tasks::list(&ctx, job.as_deref()).await,
        Command::Tenants { action } => tenants::run(&ctx, action).await,
        Command::Token { action } => tokens::token(&ctx, action).await,
        Command::Tokens => tokens::tokens(&ctx).await,
        Command::Metrics { action } => metrics::run(&ctx, action).await,
        Command::Route { action } => routes::route(&ctx, action).await,
        Command::Routes => routes::routes(&ctx).await,
        Command::Fault { action } => routes::fault(&ctx, action).await,
        Command::Faults => routes::faults(&ctx).await,
        Command::Top { job, once } => top::top(&ctx, job.as_deref(), once).await,
        Command::Logs {
            task,
            follow,
            stderr,
            tail,
        } => {
            logs::stream(
                &ctx,
                logs::LogsArgs {
                    task,
                    follow,
                    stderr,
                    tail,
                },
            )
            .await
        }
        Command::Nodes { action: None } => status::nodes(&ctx).await,
        Command::Nodes {
            action: Some(NodeAction::Drain { node, deadline }),
        } => status::drain(&ctx, &node, deadline, false).await,
        Command::Nodes {
            action: Some(NodeAction::Undrain { node }),
        } => status::drain(&ctx, &node, None, true).await,
        Command::Status => status::status(&ctx).await,
        Command::Completions { shell } => completions(shell),
        // `main` runs the shim before any of this exists; reaching here is a bug.
        Command::Shim { .. } => anyhow::bail!("__shim must be the first argument"),
    }
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "paved", &mut out);
    Ok(crate::output::print(&String::from_utf8_lossy(&out))?)
}
