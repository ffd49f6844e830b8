//! How a failure reaches the user: which exit code it gets and how it is printed.
//!
//! Exit codes: 0 ok, 1 the operation failed (server unreachable, job failed, not found),
//! 2 bad input or usage (a manifest with problems, an unreadable file, a malformed flag).

use std::fmt;
use std::io;

/// The operation was tried and failed.
pub const EXIT_FAILED: u8 = 1;
/// The input was wrong; the same command will fail again until it changes.
pub const EXIT_BAD_INPUT: u8 = 2;

/// An error caused by what the user passed in, so it exits with [`EXIT_BAD_INPUT`].
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// An `anyhow::Error` that exits with [`EXIT_BAD_INPUT`].
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    BadInput(message.into()).into()
}

/// The exit code for `err`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<BadInput>()) {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILED
    }
}

/// Whether `err` is stdout closing under us (`paved jobs | head -1`), which is not a failure.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// `error: <message>`, then one indented line per cause.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn bad_input_exits_2_even_under_context() {
        let err = Err::<(), _>(bad_input("no such file"))
            .context("reading web.toml")
            .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_BAD_INPUT);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), EXIT_FAILED);
    }

    #[test]
    fn render_lists_causes() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let err = anyhow::Error::new(io).context("cannot reach paved");
        assert_eq!(
            render(&err),
            "error: cannot reach paved\n  caused by: connection refused"
        );
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("x");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("x")));
    }
}
