//! `paved logs`: a task's stdout or stderr, streamed as raw bytes.

use std::io::Write as _;

use paved_api::v1::StreamLogsRequest;

use super::Ctx;
use crate::client::Answer as _;

/// What `paved logs` was asked for.
pub struct LogsArgs {
    pub task: String,
    pub follow: bool,
    pub stderr: bool,
    pub tail: Option<u64>,
}

/// Copies the log to stdout chunk by chunk, flushing each, so `-f` shows lines as they come.
pub async fn stream(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    let request = StreamLogsRequest {
        task: args.task,
        stream: if args.stderr { "stderr" } else { "stdout" }.to_owned(),
        follow: args.follow,
        tail_bytes: args.tail.unwrap_or(0),
    };
    let mut chunks = client.tasks().stream_logs(request).await.answer(&client)?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = chunks.message().await.map_err(|s| client.explain(s))? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}
