//! `docker-agent task`: submit JSON tasks, and get, follow, list or cancel tasks from any terminal.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use docker_agent_proto::v1 as pb;
use futures::StreamExt;

use super::exec::OutputSink;
use crate::args::{TaskCommand, TaskRunArgs};
use crate::client::{Client, status_error};
use crate::output::{ago, table};
use crate::views::{TaskView, exit_code, failure_note, task_state};

pub async fn run(client: Client, command: TaskCommand) -> Result<ExitCode> {
    match command {
        TaskCommand::Run(args) => submit(client, args).await,
        TaskCommand::Get { id, json } => get(client, id, json.json).await,
        TaskCommand::Logs { id, follow } => logs(client, id, follow).await,
        TaskCommand::List { name, limit, json } => list(client, name, limit, json.json).await,
        TaskCommand::Cancel { id } => cancel(client, id).await,
    }
}

/// Reads a task's stored (and, when following, live) output; returns the final task.
async fn watch(
    client: &mut Client,
    id: &str,
    follow: bool,
    mut on_chunk: impl FnMut(pb::OutputChunk),
) -> Result<pb::Task> {
    let mut events = client
        .watch_task(pb::WatchTaskRequest {
            task_id: id.to_string(),
            follow,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(event) = events.next().await {
        match event.map_err(status_error)?.event {
            Some(pb::task_event::Event::Output(chunk)) => on_chunk(chunk),
            Some(pb::task_event::Event::Task(task)) => return Ok(task),
            None => {}
        }
    }
    Err(anyhow!(
        "lost the connection to the hub while reading task {id}"
    ))
}

pub async fn submit(mut client: Client, args: TaskRunArgs) -> Result<ExitCode> {
    let spec = docker_agent_hub::task::json::parse(&args.task).map_err(|e| anyhow!(e))?;
    let task = client
        .submit_task(pb::SubmitTaskRequest {
            agent: args.name,
            spec: Some(spec),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.detach {
        if args.output.json {
            println!("{}", serde_json::json!({ "id": task.id }));
        } else {
            println!("{}", task.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.output.json {
        let (task, view) = collect(&mut client, &task.id, true).await?;
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::from(exit_code(&task)));
    }
    let mut sink = OutputSink::new();
    let task = watch(&mut client, &task.id, true, |c| sink.write(&c)).await?;
    if let Some(note) = failure_note(&task) {
        eprintln!("docker-agent: {note}");
    }
    Ok(ExitCode::from(exit_code(&task)))
}

/// The task with its whole output, as `--json` prints it.
async fn collect(client: &mut Client, id: &str, follow: bool) -> Result<(pb::Task, TaskView)> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let task = watch(client, id, follow, |c| {
        if c.stream == pb::Stream::Stderr as i32 {
            stderr.extend_from_slice(&c.data)
        } else {
            stdout.extend_from_slice(&c.data)
        }
    })
    .await?;
    let mut view = TaskView::from(&task);
    view.stdout = Some(String::from_utf8_lossy(&stdout).into_owned());
    view.stderr = Some(String::from_utf8_lossy(&stderr).into_owned());
    Ok((task, view))
}

async fn get(mut client: Client, id: String, json: bool) -> Result<ExitCode> {
    let (_, view) = collect(&mut client, &id, false).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = match (view.exit_code, view.signal, &view.error) {
        _ if view.oom_killed => "killed: out of memory".to_string(),
        (Some(c), _, _) => format!("exit code {c}"),
        (_, Some(s), _) => format!("killed by signal {s}"),
        (_, _, Some(e)) => e.clone(),
        _ => "-".into(),
    };
    println!("ID:       {}", view.id);
    println!("Agent:    {}", view.agent);
    println!("Command:  {}", view.argv.join(" "));
    println!("State:    {}", view.state);
    println!(
        "Outcome:  {outcome}{}",
        if view.timed_out { " (timed out)" } else { "" }
    );
    if let Some(ms) = view.duration_ms {
        println!(
            "Duration: {}",
            humantime::format_duration(std::time::Duration::from_millis(ms))
        );
    }
    println!("Created:  {}", view.created_at.unwrap_or_default());
    println!("--- stdout ({} bytes)", view.stdout_bytes);
    print!("{}", view.stdout.unwrap_or_default());
    println!("--- stderr ({} bytes)", view.stderr_bytes);
    print!("{}", view.stderr.unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

async fn logs(mut client: Client, id: String, follow: bool) -> Result<ExitCode> {
    let mut sink = OutputSink::new();
    watch(&mut client, &id, follow, |c| sink.write(&c)).await?;
    Ok(ExitCode::SUCCESS)
}

async fn list(
    mut client: Client,
    name: Option<String>,
    limit: u32,
    json: bool,
) -> Result<ExitCode> {
    let tasks = client
        .list_tasks(pb::ListTasksRequest {
            agent: name.unwrap_or_default(),
            limit,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .tasks;
    if json {
        let views: Vec<TaskView> = tasks.iter().map(TaskView::from).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let view = TaskView::from(t);
            let outcome = match (view.exit_code, view.signal) {
                (Some(c), _) => c.to_string(),
                (_, Some(s)) => format!("signal {s}"),
                _ => "-".into(),
            };
            let mut command = view.argv.join(" ");
            if command.chars().count() > 40 {
                command = command.chars().take(39).collect::<String>() + "…";
            }
            vec![
                t.id.clone(),
                t.agent.clone(),
                task_state(t.state),
                outcome,
                ago(t.created_at_ms),
                command,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "AGENT", "STATE", "EXIT", "CREATED", "COMMAND"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `kill TASK [--signal SIG]`: like `docker kill`, an error for a task that has already ended.
pub async fn kill(mut client: Client, args: crate::args::KillArgs) -> Result<ExitCode> {
    let task = client
        .get_task(pb::TaskRequest {
            task_id: args.task.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let ended = matches!(
        pb::TaskState::try_from(task.state),
        Ok(pb::TaskState::Finished | pb::TaskState::Lost | pb::TaskState::Cancelled)
    );
    if ended {
        anyhow::bail!(
            "task {} has already ended ({})",
            task.id,
            crate::views::task_state(task.state)
        );
    }
    match args.signal {
        None => {
            client
                .cancel_task(pb::TaskRequest {
                    task_id: task.id.clone(),
                })
                .await
                .map_err(status_error)?;
            println!(
                "{}: TERM sent to its process group (KILL follows after the grace period)",
                task.id
            );
        }
        Some(signal) => {
            client
                .signal_task(pb::SignalTaskRequest {
                    task_id: task.id.clone(),
                    signal,
                })
                .await
                .map_err(status_error)?;
            println!("{}: signal {signal} sent to its process group", task.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sessions NAME`: the agent's terminal tasks that still run.
pub async fn sessions(mut client: Client, args: crate::args::StatusArgs) -> Result<ExitCode> {
    let tasks = client
        .list_tasks(pb::ListTasksRequest {
            agent: args.name,
            limit: 1000,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .tasks;
    let live: Vec<&pb::Task> = tasks
        .iter()
        .filter(|t| t.spec.as_ref().is_some_and(|s| s.pty.is_some()))
        .filter(|t| {
            matches!(
                pb::TaskState::try_from(t.state),
                Ok(pb::TaskState::Queued | pb::TaskState::Dispatched | pb::TaskState::Running)
            )
        })
        .collect();
    if args.json.json {
        let views: Vec<TaskView> = live.iter().map(|t| TaskView::from(*t)).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = live
        .iter()
        .map(|t| {
            let view = TaskView::from(*t);
            vec![
                view.id.clone(),
                view.state.clone(),
                view.created_at.clone().unwrap_or_default(),
                view.argv.join(" "),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "STATE", "CREATED", "COMMAND"], &rows));
    Ok(ExitCode::SUCCESS)
}

async fn cancel(mut client: Client, id: String) -> Result<ExitCode> {
    let task = client
        .cancel_task(pb::TaskRequest { task_id: id })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "{}: cancel requested (now {})",
        task.id,
        task_state(task.state)
    );
    Ok(ExitCode::SUCCESS)
}
