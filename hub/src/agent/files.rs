//! A container's files over the agent's own link: `cp` where the hub's engine cannot reach the
//! container (on Swarm, only its node's engine can). Each call is an ordinary exec task of the agent
//! binary's `archive` command, through the one exec service, so it is stored, bounded, listed and
//! survives link drops like any task; its stdout or stdin is the tar stream.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::Stream;
use docker_agent_proto::v1::task_result::Outcome;
use futures::StreamExt;

use crate::core::Core;
use crate::driver::{ByteStream, PathStat};
use crate::error::{HubError, Result};
use crate::exec::{Exec, ExecEvent, ExecInput, ExecStart};
use crate::profile::AGENT_BINARY;
use crate::store::TaskRecord;

/// `archive stat`'s exit code when nothing is at the path.
const NOT_FOUND: i32 = 2;
/// What is kept of an archive command's stat reply, and of its stderr for an error message.
const KEPT: usize = 2048;

impl Core {
    /// Starts `docker-agent-agent archive ARGS` on agent `name`, which must be connected: a copy
    /// waiting in the queue for an agent that may never come back would hang its client.
    async fn open_archive(
        self: &Arc<Self>,
        name: &str,
        args: &[&str],
        stdin: bool,
    ) -> Result<Exec> {
        let agent = self.agent(name)?;
        if !self.registry.is_connected(&agent.id) {
            return Err(HubError::FailedPrecondition(format!(
                "agent {name:?} is {}: its files are reached through its agent on this driver, and it is not connected",
                agent.lifecycle.as_str()
            )));
        }
        let argv = [AGENT_BINARY, "archive"]
            .iter()
            .chain(args)
            .map(|a| (*a).to_string())
            .collect();
        let spec = pb::TaskSpec {
            argv,
            stdin,
            kind: "exec".into(),
            ..Default::default()
        };
        self.open_exec(name, ExecStart::Run(spec)).await
    }

    /// What is at `path` in agent `name`'s container (None: nothing).
    pub async fn stat_over_link(
        self: &Arc<Self>,
        name: &str,
        path: &str,
    ) -> Result<Option<PathStat>> {
        let mut exec = self.open_archive(name, &["stat", path], false).await?;
        let mut out = Output::default();
        let task = loop {
            match exec.events.recv().await {
                Some(Ok(ExecEvent::Output(chunk))) => out.take(chunk.stream, &chunk.data),
                Some(Ok(ExecEvent::Done(task))) => break task,
                Some(Err(e)) => return Err(e),
                None => return Err(HubError::Internal("the stat task's events ended".into())),
            }
        };
        match exit_code(&task) {
            Some(0) => parse_stat(&String::from_utf8_lossy(&out.stdout))
                .map(Some)
                .ok_or_else(|| HubError::Internal(format!("bad stat reply {:?}", out.stdout))),
            Some(NOT_FOUND) => Ok(None),
            _ => Err(out.failure(&task, "stat")),
        }
    }

    /// A tar stream of `path` in agent `name`'s container, entries under its base name. Fails the
    /// stream (never ends it early) if a byte went missing or the command failed.
    pub async fn download_over_link(
        self: &Arc<Self>,
        name: &str,
        path: &str,
    ) -> Result<ByteStream> {
        let exec = self.open_archive(name, &["create", path], false).await?;
        let state = (exec, 0u64, Output::default(), false);
        let stream =
            futures::stream::unfold(state, |(mut exec, mut at, mut out, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let item = match exec.events.recv().await {
                        Some(Ok(ExecEvent::Output(chunk))) if chunk.stream == Stream::Stdout => {
                            if chunk.offset != at {
                                Err(format!(
                                    "the copy lost bytes {at}..{} on the way",
                                    chunk.offset
                                ))
                            } else {
                                at += chunk.data.len() as u64;
                                Ok(chunk.data)
                            }
                        }
                        Some(Ok(ExecEvent::Output(chunk))) => {
                            out.take(chunk.stream, &chunk.data);
                            continue;
                        }
                        Some(Ok(ExecEvent::Done(task))) => {
                            if exit_code(&task) == Some(0) && task.output_dropped.is_none() {
                                return None;
                            }
                            Err(out.failure(&task, "copy").to_string())
                        }
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("the copy's events ended".into()),
                    };
                    let failed = item.is_err();
                    return Some((item.map_err(std::io::Error::other), (exec, at, out, failed)));
                }
            });
        Ok(Box::pin(stream))
    }

    /// Extracts the tar stream `tar` into the directory `dir` of agent `name`'s container.
    pub async fn upload_over_link(
        self: &Arc<Self>,
        name: &str,
        dir: &str,
        mut tar: ByteStream,
    ) -> Result<()> {
        let mut exec = self.open_archive(name, &["extract", dir], true).await?;
        let inputs = exec.inputs();
        let feed = async {
            while let Some(piece) = tar.next().await {
                let piece = piece.map_err(|e| format!("the upload failed: {e}"))?;
                if !inputs.send(ExecInput::Stdin(piece)).await {
                    // The command ended early; its result says why.
                    return Ok(());
                }
            }
            inputs.send(ExecInput::CloseStdin).await;
            Ok::<(), String>(())
        };
        let finish = async {
            let mut out = Output::default();
            loop {
                match exec.events.recv().await {
                    Some(Ok(ExecEvent::Output(chunk))) => out.take(chunk.stream, &chunk.data),
                    Some(Ok(ExecEvent::Done(task))) => return Ok((task, out)),
                    Some(Err(e)) => return Err(e),
                    None => return Err(HubError::Internal("the copy's events ended".into())),
                }
            }
        };
        tokio::pin!(finish);
        let (task, out) = tokio::select! {
            fed = feed => match fed {
                Ok(()) => finish.await?,
                Err(why) => {
                    // Half a tar must not stay half-extracted in silence: stop the command, say why.
                    inputs.send(ExecInput::Signal(9)).await;
                    let _ = finish.await;
                    return Err(HubError::FailedPrecondition(why));
                }
            },
            task = &mut finish => task?,
        };
        match exit_code(&task) {
            Some(0) => Ok(()),
            _ => Err(out.failure(&task, "copy")),
        }
    }
}

/// What an archive command wrote besides its tar stream.
#[derive(Default)]
struct Output {
    stdout: BytesMut,
    stderr: BytesMut,
}

impl Output {
    fn take(&mut self, stream: Stream, data: &Bytes) {
        let buf = match stream {
            Stream::Stderr => &mut self.stderr,
            _ => &mut self.stdout,
        };
        let room = KEPT.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// The error for a command that did not succeed: its own words when it said any.
    fn failure(&self, task: &TaskRecord, what: &str) -> HubError {
        let said = String::from_utf8_lossy(&self.stderr);
        let said = said.lines().next_back().unwrap_or("").trim();
        let why = if let Some(cap) = task.output_dropped {
            format!(
                "it passed the hub's output bound ({}); copy less at a time",
                cap.as_str()
            )
        } else if !said.is_empty() {
            said.to_string()
        } else {
            match task.result.as_ref().and_then(|r| r.outcome.clone()) {
                Some(Outcome::Error(e)) => e,
                Some(Outcome::Signal(s)) => format!("ended by signal {s}"),
                Some(Outcome::ExitCode(c)) => format!("exit code {c}"),
                None if !task.error.is_empty() => task.error.clone(),
                None => format!("it ended {}", task.state.as_str()),
            }
        };
        HubError::FailedPrecondition(format!("{what} failed: {why}"))
    }
}

fn exit_code(task: &TaskRecord) -> Option<i32> {
    match task.result.as_ref()?.outcome {
        Some(Outcome::ExitCode(c)) => Some(c),
        _ => None,
    }
}

/// `dir|file SIZE MODE` (mode in octal), as `archive stat` prints it.
fn parse_stat(line: &str) -> Option<PathStat> {
    let mut words = line.split_whitespace();
    let is_dir = match words.next()? {
        "dir" => true,
        "file" => false,
        _ => return None,
    };
    let size = words.next()?.parse().ok()?;
    let mode = u32::from_str_radix(words.next()?, 8).ok()?;
    Some(PathStat { is_dir, size, mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_replies_parse_and_garbage_does_not() {
        let dir = parse_stat("dir 4096 755\n").unwrap();
        assert!(dir.is_dir);
        assert_eq!((dir.size, dir.mode), (4096, 0o755));
        let file = parse_stat("file 12 644").unwrap();
        assert!(!file.is_dir);
        assert!(parse_stat("").is_none());
        assert!(parse_stat("socket 1 2").is_none());
        assert!(parse_stat("file x 644").is_none());
    }
}
