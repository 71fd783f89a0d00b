//! Running the host tools this crate drives (hermes, pass, gpg, systemd-creds, systemctl): one place that
//! sets stdin, enforces a timeout, kills on timeout, and turns failures into [`Error`]s that name the
//! command by program and arguments only — environment values never appear, and secrets travel on stdin.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, Result};

/// `program arg arg…` for error messages.
pub(crate) fn describe(command: &Command) -> String {
    let std = command.as_std();
    std::iter::once(std.get_program()).chain(std.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// Runs `command` to completion with `stdin` (or `/dev/null`) and returns its output if it exited 0.
pub(crate) async fn run(mut command: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    let output = run_unchecked(&mut command, stdin, timeout).await?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failure(&command, &output))
    }
}

/// Runs `command` and returns its output whatever the exit status (callers that read the status).
pub(crate) async fn run_unchecked(command: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| Error::Spawn { command: describe(command), source })?;
    let pipe = child.stdin.take();
    let feed = async move {
        if let (Some(bytes), Some(mut pipe)) = (stdin, pipe) {
            pipe.write_all(bytes).await?;
            pipe.shutdown().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    // Feeding and reading at once: a child that writes before it reads cannot deadlock us.
    let io = async {
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        match fed {
            // A child may exit without reading all of stdin; its exit status tells what happened.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
            _ => output,
        }
    };
    match tokio::time::timeout(timeout, io).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(source)) => Err(Error::Spawn { command: describe(command), source }),
        // Dropping the future drops the child, and kill_on_drop kills it.
        Err(_) => Err(Error::Timeout { command: describe(command), timeout }),
    }
}

/// The error for a finished command that failed.
pub(crate) fn failure(command: &Command, output: &Output) -> Error {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() { stdout.trim() } else { stderr.trim() };
    Error::Command { command: describe(command), status: output.status.to_string(), output: text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn feeds_stdin_and_reports_failures_without_environment() {
        let mut cat = Command::new("cat");
        cat.env("SHOULD_NOT_LEAK", "hunter2");
        let output = run(cat, Some(b"piped"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(output.stdout, b"piped");

        let mut sh = Command::new("sh");
        sh.args(["-c", "echo '  boom  ' >&2; exit 3"]).env("SHOULD_NOT_LEAK", "hunter2");
        let err = run(sh, None, Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(err.contains("boom") && err.contains("exit status: 3"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn kills_on_timeout() {
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let started = std::time::Instant::now();
        let err = run(sleep, None, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
