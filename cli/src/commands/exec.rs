//! `docker-agent exec`: runs a command through the hub and the agent, streams stdout and stderr apart, forwards stdin and Ctrl-C, and exits with the remote exit code.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::exec_request::Msg;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::args::ExecArgs;
use crate::client::{Client, status_error};
use crate::views::{exit_code, failure_note};

// Linux's numbers (the agent and its tasks run on Linux): not worth a libc dependency for two constants.
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Writes output as it arrives, to the matching local stream.
pub struct OutputSink {
    /// Our own handle on standard output. Rust's `Stdout` is line-buffered: it would scan every chunk for
    /// its last newline, which costs as much as copying it when a task streams megabytes.
    stdout: Option<std::fs::File>,
    broken: bool,
}

impl OutputSink {
    pub fn new() -> Self {
        let stdout = std::io::stdout();
        // Anything printed before must come out first.
        let _ = stdout.lock().flush();
        Self {
            stdout: stdout
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(std::fs::File::from),
            broken: false,
        }
    }

    pub fn write(&mut self, chunk: &pb::OutputChunk) {
        if self.broken {
            return;
        }
        let result = if chunk.stream == pb::Stream::Stderr as i32 {
            let mut err = std::io::stderr().lock();
            err.write_all(&chunk.data).and_then(|_| err.flush())
        } else if let Some(out) = &mut self.stdout {
            out.write_all(&chunk.data)
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk.data).and_then(|_| out.flush())
        };
        // A closed pipe (`| head`) stops our output, not the remote task.
        if result.is_err() {
            self.broken = true;
        }
    }
}

/// Reads local stdin on a thread (stdin has no portable async form) and forwards it until EOF.
fn forward_stdin(tx: mpsc::Sender<pb::ExecRequest>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = pb::ExecRequest {
                        msg: Some(Msg::Stdin(tonic::codegen::Bytes::copy_from_slice(
                            &buf[..n],
                        ))),
                    };
                    if tx.blocking_send(msg).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.blocking_send(pb::ExecRequest {
            msg: Some(Msg::CloseStdin(pb::CloseStdin::default())),
        });
    });
}

/// Sends `signal` to the exec's task: by its own call once the hub has named the task (stdin the task
/// is not reading may hold the exec stream back), else on the stream if there is room.
fn signal(client: &Client, tx: &mpsc::Sender<pb::ExecRequest>, task_id: &str, signal: i32) {
    if task_id.is_empty() {
        let _ = tx.try_send(pb::ExecRequest {
            msg: Some(Msg::Signal(signal)),
        });
        return;
    }
    let (mut client, task_id) = (client.clone(), task_id.to_string());
    tokio::spawn(async move {
        let request = pb::SignalTaskRequest { task_id, signal };
        if let Err(status) = client.signal_task(request).await {
            tracing::debug!(error = %status, "signal not delivered");
        }
    });
}

/// Exactly one argument with whitespace in it is a command line for `/bin/sh -c`, as `ssh HOST "CMD"`
/// runs it; anything else is an argv, as `docker exec` takes it. Returns (argv, shell).
fn command_form(mut command: Vec<String>) -> (Vec<String>, String) {
    if command.len() == 1 && command[0].chars().any(char::is_whitespace) {
        (Vec::new(), command.remove(0))
    } else {
        (command, String::new())
    }
}

pub async fn run(mut client: Client, args: ExecArgs) -> Result<ExitCode> {
    let stdin = args.tty || args.interactive || !std::io::stdin().is_terminal();
    // Raw mode first: a refusal (no terminal) must come before anything runs remotely.
    let mut raw = if args.tty {
        Some(crate::terminal::RawMode::enter()?)
    } else {
        None
    };
    let pty = args
        .tty
        .then(|| crate::terminal::size().unwrap_or(pb::PtySize { rows: 24, cols: 80 }));
    let (argv, shell) = command_form(args.command);
    let spec = pb::TaskSpec {
        pty,
        argv,
        shell,
        env: args.env.into_iter().collect(),
        cwd: args.workdir.unwrap_or_default(),
        stdin,
        timeout_ms: args.timeout.map(|d| d.as_millis() as u64).unwrap_or(0),
        kind: "exec".into(),
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(64);
    let name = args.name.clone();
    let attach = args.attach.clone().unwrap_or_default();
    tx.send(pb::ExecRequest {
        msg: Some(Msg::Start(pb::ExecStart {
            agent: args.name,
            spec: (attach.is_empty()).then_some(spec),
            attach: attach.clone(),
            replay_bytes: 0,
        })),
    })
    .await?;
    // An attached session takes this terminal's size.
    if let (false, Some(size)) = (attach.is_empty(), pty) {
        tx.send(pb::ExecRequest {
            msg: Some(Msg::Resize(size)),
        })
        .await?;
    }
    // Signals go beside the stream, not on it: stdin the task is not reading holds the stream back.
    let signaller = client.clone();
    let mut events = client
        .exec(ReceiverStream::new(rx))
        .await
        .map_err(status_error)?
        .into_inner();
    if stdin {
        forward_stdin(tx.clone());
    }
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut sink = OutputSink::new();
    let mut task_id = String::new();
    let mut interrupts = 0;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = interrupt.recv() => {
                interrupts += 1;
                if interrupts > 1 {
                    // The first Ctrl-C went to the task; a second one gives the terminal back.
                    eprintln!("docker-agent: detached; the task may go on: `docker-agent task logs {task_id} --follow`");
                    return Ok(ExitCode::from(130));
                }
                signal(&signaller, &tx, &task_id, SIGINT);
                continue;
            }
            _ = terminate.recv() => {
                signal(&signaller, &tx, &task_id, SIGTERM);
                continue;
            }
            _ = resized.recv(), if raw.is_some() => {
                if let Some(size) = crate::terminal::size() {
                    // A size that does not fit behind queued stdin is dropped; the next one carries it.
                    let _ = tx.try_send(pb::ExecRequest { msg: Some(Msg::Resize(size)) });
                }
                continue;
            }
        };
        let event = match event {
            Some(Ok(e)) => e,
            Some(Err(status)) => return Err(status_error(status)),
            None if raw.is_some() => {
                drop(raw.take());
                return Err(anyhow!(
                    "lost the connection to the hub; the session goes on: `docker-agent shell {name} --attach {task_id}`"
                ));
            }
            None => {
                return Err(anyhow!(
                    "lost the connection to the hub; the task goes on: `docker-agent task logs {task_id} --follow`"
                ));
            }
        };
        match event.event {
            Some(pb::exec_event::Event::Output(chunk)) => sink.write(&chunk),
            Some(pb::exec_event::Event::Task(task)) => {
                // The first task event only announces the id; the outcome is always the last one.
                let first = task_id.is_empty();
                task_id = task.id.clone();
                let terminal = !first
                    && matches!(
                        pb::TaskState::try_from(task.state),
                        Ok(pb::TaskState::Finished
                            | pb::TaskState::Lost
                            | pb::TaskState::Cancelled)
                    );
                if terminal {
                    // The terminal comes back before anything is printed on it.
                    drop(raw.take());
                    if let Some(note) = failure_note(&task) {
                        eprintln!("docker-agent: {note}");
                    }
                    return Ok(ExitCode::from(exit_code(&task)));
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::command_form;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn one_argument_with_whitespace_is_a_command_line_and_anything_else_an_argv() {
        assert_eq!(
            command_form(words(&["npm --version"])),
            (vec![], "npm --version".to_string())
        );
        assert_eq!(
            command_form(words(&["npm", "--version"])),
            (words(&["npm", "--version"]), String::new())
        );
        assert_eq!(
            command_form(words(&["ls"])),
            (words(&["ls"]), String::new())
        );
        // Several arguments stay an argv even when one has a space, exactly as docker exec takes them.
        assert_eq!(
            command_form(words(&["echo", "a b"])),
            (words(&["echo", "a b"]), String::new())
        );
    }
}
